// Helpers shared by the k6 scripts in load-tests/: environment, admin-API provisioning,
// request parameters. Provisioning runs in setup(); its requests carry the tag
// `phase: setup` and no `endpoint` tag, so the thresholds (all filtered on `endpoint`)
// measure only the scenario's own traffic.

import http from 'k6/http';
import { fail } from 'k6';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || '';

/** A positive integer from the environment, or `fallback`. */
export function envInt(name, fallback) {
    const raw = __ENV[name];
    if (raw === undefined || raw === '') {
        return fallback;
    }
    const value = Number(raw);
    if (!Number.isInteger(value) || value <= 0) {
        throw new Error(`${name} must be a positive integer, got '${raw}'`);
    }
    return value;
}

/** A k6 duration string (e.g. 15s, 2m) from the environment, or `fallback`. */
export function envDuration(name, fallback) {
    const raw = __ENV[name];
    if (raw === undefined || raw === '') {
        return fallback;
    }
    if (!/^(\d+(ms|s|m|h))+$/.test(raw)) {
        throw new Error(`${name} must be a k6 duration such as 30s or 2m, got '${raw}'`);
    }
    return raw;
}

/** Seconds in a k6 duration string such as 90s or 1m30s. */
export function seconds(duration) {
    const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
    let total = 0;
    for (const [, amount, unit] of duration.matchAll(/(\d+)(ms|s|m|h)/g)) {
        total += Number(amount) * units[unit];
    }
    return total;
}

/** A short token that makes names from this run unique (runs may share a database). */
export function runTag() {
    return `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

const SETUP_TAGS = { phase: 'setup' };

function json(res, what) {
    try {
        return res.json();
    } catch (error) {
        return fail(`${what}: HTTP ${res.status}, body is not JSON: ${String(res.body).slice(0, 200)}`);
    }
}

function expectStatus(res, status, what) {
    if (res.status !== status) {
        fail(`${what}: expected HTTP ${status}, got ${res.status}: ${String(res.body).slice(0, 300)}`);
    }
    return json(res, what);
}

/** Request parameters that authenticate with `key`; `tags` mark the measured requests. */
export function auth(key, tags) {
    return {
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        tags: tags || {},
    };
}

function setupParams(key) {
    return auth(key, SETUP_TAGS);
}

/** Fails setup early, with a clear message, when the server is not there. */
export function checkServer() {
    if (!ADMIN_TOKEN) {
        fail('ADMIN_TOKEN is not set: pass -e ADMIN_TOKEN=... (the server\'s LOGSTITCH_ADMIN_TOKEN)');
    }
    const res = http.get(`${BASE_URL}/healthz`, { tags: SETUP_TAGS });
    if (res.status !== 200) {
        fail(`${BASE_URL}/healthz answered ${res.status} (error: ${res.error || 'none'}); is the gateway running?`);
    }
}

/** POST /admin/v1/organizations: {organizationId, projectId, masterKey}. */
export function createOrganization(name) {
    const res = http.post(`${BASE_URL}/admin/v1/organizations`, JSON.stringify({ name }),
        setupParams(ADMIN_TOKEN));
    const body = expectStatus(res, 201, `create organization ${name}`);
    return {
        organizationId: body.organization_id,
        projectId: body.project_id,
        masterKey: body.master_key,
    };
}

/** POST /api/v1/projects with the organization's master key: the new project's id. */
export function createProject(masterKey, name) {
    const res = http.post(`${BASE_URL}/api/v1/projects`, JSON.stringify({ name }),
        setupParams(masterKey));
    return expectStatus(res, 201, `create project ${name}`).id;
}

/**
 * Creates `count` project keys in `projectId` (POST /api/v1/keys), `parallel` at a time.
 * Returns their secrets. Mind keys.max_active_per_org (1000, master key included).
 */
export function createKeys(masterKey, projectId, count, namePrefix, parallel) {
    const chunk = parallel || 16;
    const keys = [];
    for (let start = 0; start < count; start += chunk) {
        const batch = [];
        for (let i = start; i < Math.min(count, start + chunk); i++) {
            batch.push(['POST', `${BASE_URL}/api/v1/keys`,
                JSON.stringify({ project_id: projectId, type: 'project', name: `${namePrefix}-${i}` }),
                setupParams(masterKey)]);
        }
        for (const res of http.batch(batch)) {
            keys.push(expectStatus(res, 201, `create key ${namePrefix}`).key);
        }
    }
    return keys;
}

/** GET /api/v1/auth/verify as part of setup: the key's id. */
export function keyId(key) {
    const res = http.get(`${BASE_URL}/api/v1/auth/verify`, setupParams(key));
    return expectStatus(res, 200, 'verify a fresh key').key_id;
}

/** The error code of an error envelope, or undefined. */
export function errorCode(res) {
    try {
        const body = res.json();
        return body && body.error ? body.error.code : undefined;
    } catch (error) {
        return undefined;
    }
}

/** True when the body is JSON with a `valid: true` field. */
export function isValid(res) {
    try {
        return res.json('valid') === true;
    } catch (error) {
        return false;
    }
}
