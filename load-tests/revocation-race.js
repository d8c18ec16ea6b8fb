// Revocation race: once DELETE /api/v1/keys/{id} has returned, no request with that key may
// succeed, however hard the key is being hammered while it is revoked.
//
// k6 VUs share no memory, so "after the revoke returned" is judged inside one iteration of
// the `revoke` scenario, which owns one key from setup():
//   1. WARM verifies (in parallel): the key works and sits in the auth cache;
//   2. the DELETE together with DURING verifies in flight (http.batch): these race the
//      revoke, so either answer is fine (counted in verify_during_revoke_ok/_refused);
//   3. after the DELETE returned, AFTER verifies (in parallel): each success counts in
//      `success_after_revoke`, whose threshold is count == 0.
// Meanwhile the `hammer` scenario verifies, from other VUs and connections, the keys the
// revoke scenario is revoking right now (index from the elapsed time), so the cache entry
// is being read and refilled concurrently with the invalidation. Those answers may be 200
// or 401 key_revoked; anything else is an error.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... load-tests/revocation-race.js
//
// Environment (defaults are the `make load` smoke):
//   REVOKE_RATE=10     keys revoked per second (one iteration of `revoke` each)
//   DURATION=10s       how long both scenarios run
//   HAMMER_RATE=150    background verify requests per second on the keys being revoked
//   WARM=4 DURING=8 AFTER=8   verifies per revoke, before / racing / after the DELETE
//   KEYS_PER_ORG=500   keys per organization (stay under keys.max_active_per_org, 1000)
//   WRITE_P95_MS=100   p95 threshold of the DELETE (and p99 of the verifies after it), in ms
//
// Thresholds: success_after_revoke == 0; errors (unexpected status or body) < 0.1 %;
// revoke p95 and after-revoke verify p99 < WRITE_P95_MS (sanity bounds, not targets).

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import {
    BASE_URL, auth, checkServer, createKeys, createOrganization, createProject, envDuration,
    envInt, errorCode, isValid, runTag, seconds,
} from './lib/gateway.js';

const REVOKE_RATE = envInt('REVOKE_RATE', 10);
const DURATION = envDuration('DURATION', '10s');
const HAMMER_RATE = envInt('HAMMER_RATE', 150);
const WARM = envInt('WARM', 4);
const DURING = envInt('DURING', 8);
const AFTER = envInt('AFTER', 8);
const KEYS_PER_ORG = envInt('KEYS_PER_ORG', 500);
const WRITE_P95_MS = envInt('WRITE_P95_MS', 100);
// One key per revoke iteration, plus slack for the VUs that start as the time runs out.
const KEYS = Math.ceil(REVOKE_RATE * seconds(DURATION)) + 20;

if (KEYS_PER_ORG > 999) {
    throw new Error('KEYS_PER_ORG must stay under keys.max_active_per_org (1000, master key included)');
}

const errors = new Rate('errors');
const successAfterRevoke = new Counter('success_after_revoke');
const duringOk = new Counter('verify_during_revoke_ok');
const duringRefused = new Counter('verify_during_revoke_refused');
const keysRevoked = new Counter('keys_revoked');
const unusedKeys = new Counter('revoke_skipped_no_key');

export const options = {
    setupTimeout: '300s',
    batch: Math.max(WARM, DURING + 1, AFTER),
    batchPerHost: Math.max(WARM, DURING + 1, AFTER),
    scenarios: {
        revoke: {
            executor: 'constant-arrival-rate',
            exec: 'revoke',
            rate: REVOKE_RATE,
            timeUnit: '1s',
            duration: DURATION,
            preAllocatedVUs: Math.max(2, Math.ceil(REVOKE_RATE / 5)),
            maxVUs: Math.max(10, REVOKE_RATE * 2),
        },
        hammer: {
            executor: 'constant-arrival-rate',
            exec: 'hammer',
            rate: HAMMER_RATE,
            timeUnit: '1s',
            duration: DURATION,
            preAllocatedVUs: Math.max(4, Math.ceil(HAMMER_RATE / 100)),
            maxVUs: Math.max(20, Math.ceil(HAMMER_RATE / 10)),
        },
    },
    thresholds: {
        success_after_revoke: ['count==0'],
        errors: ['rate<0.001'],
        'http_req_duration{endpoint:revoke}': [`p(95)<${WRITE_P95_MS}`],
        'http_req_duration{endpoint:after}': [`p(99)<${WRITE_P95_MS}`],
    },
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

// 401 key_revoked is the expected answer for most verifies here.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 401));

export function setup() {
    checkServer();
    const tag = runTag();
    const keys = [];
    for (let o = 0; keys.length < KEYS; o++) {
        const org = createOrganization(`k6 revocation race ${tag} org ${o}`);
        const projectId = createProject(org.masterKey, `k6 revocation race ${tag} project`);
        const count = Math.min(KEYS_PER_ORG, KEYS - keys.length);
        for (const key of createKeys(org.masterKey, projectId, count, `k6-race-${tag}`, 32)) {
            keys.push({ key, master: org.masterKey });
        }
    }
    // The DELETE needs each key's id: GET /auth/verify answers it (in parallel, 32 at a time).
    for (let start = 0; start < keys.length; start += 32) {
        const slice = keys.slice(start, start + 32);
        const ids = http.batch(slice.map((k) => ['GET', `${BASE_URL}/api/v1/auth/verify`, null,
            auth(k.key, { phase: 'setup' })]));
        ids.forEach((res, i) => {
            if (res.status !== 200) {
                throw new Error(`setup: verify of a fresh key answered ${res.status}`);
            }
            slice[i].id = res.json('key_id');
        });
    }
    console.log(`revocation-race: ${keys.length} keys; revoking ${REVOKE_RATE}/s for ${DURATION}` +
        ` while hammering at ${HAMMER_RATE} req/s`);
    return { keys };
}

const VERIFY_URL = `${BASE_URL}/api/v1/auth/verify`;

function verifies(key, count, endpoint) {
    const requests = [];
    for (let i = 0; i < count; i++) {
        requests.push(['GET', VERIFY_URL, null, auth(key, { endpoint })]);
    }
    return requests;
}

// Failures logged by this VU (the first few are enough to investigate).
let reported = 0;

const refusedAsRevoked = (r) => r.status === 401 && errorCode(r) === 'key_revoked';

export function revoke(data) {
    const n = exec.scenario.iterationInTest;
    if (n >= data.keys.length) {
        unusedKeys.add(1);
        return;
    }
    const { key, id, master } = data.keys[n];

    for (const res of http.batch(verifies(key, WARM, 'warm'))) {
        errors.add(!check(res, { 'before revoke: 200 valid': (r) => r.status === 200 && isValid(r) }));
    }

    const raced = http.batch([
        ['DELETE', `${BASE_URL}/api/v1/keys/${id}`, null, auth(master, { endpoint: 'revoke' })],
        ...verifies(key, DURING, 'during'),
    ]);
    const revokedOk = check(raced[0], {
        'revoke: 200 revoked': (r) => r.status === 200 && r.json('revoked') === true,
    });
    errors.add(!revokedOk);
    for (const res of raced.slice(1)) {
        if (res.status === 200 && isValid(res)) {
            duringOk.add(1);
        } else if (refusedAsRevoked(res)) {
            duringRefused.add(1);
        } else {
            errors.add(true);
            if (reported++ < 5) {
                console.error(`verify racing the revoke: unexpected ${res.status}: ${String(res.body).slice(0, 200)}`);
            }
        }
    }
    if (!revokedOk) {
        return; // nothing to assert about a revoke that did not happen
    }
    keysRevoked.add(1);

    // The DELETE has returned: from here on the key must be refused, every time.
    for (const res of http.batch(verifies(key, AFTER, 'after'))) {
        const succeeded = res.status >= 200 && res.status < 300;
        successAfterRevoke.add(succeeded ? 1 : 0);
        if (succeeded && reported++ < 5) {
            console.error(`key ${id}: verify succeeded after its revoke returned: ${res.body}`);
        }
        errors.add(!check(res, { 'after revoke: 401 key_revoked': refusedAsRevoked }));
    }
}

export function hammer(data) {
    // The key the revoke scenario is on now, give or take two.
    const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
    const current = Math.floor(elapsed * REVOKE_RATE) + Math.floor(Math.random() * 5) - 2;
    const k = data.keys[Math.min(data.keys.length - 1, Math.max(0, current))];
    const res = http.get(VERIFY_URL, auth(k.key, { endpoint: 'hammer' }));
    errors.add(!check(res, {
        'hammer: 200 valid or 401 key_revoked': (r) => (r.status === 200 && isValid(r)) || refusedAsRevoked(r),
    }));
}
