// The auth hot path: GET /api/v1/auth/verify at a constant arrival rate with valid project
// keys spread over several organizations and projects (every key is in the auth cache, as
// in steady state: a key is cached when created).
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... load-tests/auth-hot-path.js
//
// Environment (defaults are the `make load` smoke):
//   RATE=200              verify requests per second (constant arrival rate)
//   DURATION=15s          how long to hold the rate
//   ORGS=2                organizations created in setup()
//   PROJECTS_PER_ORG=2    projects per organization (the default one + extra ones)
//   KEYS_PER_PROJECT=10   project keys per project
//   VUS / MAX_VUS         pre-allocated / maximum VUs (default from RATE)
//   P99_MS=5              the p99 latency threshold, in milliseconds
//
// Thresholds: p99 of verify < P99_MS; errors (anything but 200 {valid: true}) < 0.1 %;
// iterations k6 could not start on time (dropped_iterations) < 1 % of the rate.

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import {
    BASE_URL, auth, checkServer, createKeys, createOrganization, createProject, envDuration,
    envInt, isValid, runTag,
} from './lib/gateway.js';

const RATE = envInt('RATE', 200);
const DURATION = envDuration('DURATION', '15s');
const ORGS = envInt('ORGS', 2);
const PROJECTS_PER_ORG = envInt('PROJECTS_PER_ORG', 2);
const KEYS_PER_PROJECT = envInt('KEYS_PER_PROJECT', 10);
const VUS = envInt('VUS', Math.max(5, Math.ceil(RATE / 100)));
const MAX_VUS = envInt('MAX_VUS', VUS * 10);
const P99_MS = envInt('P99_MS', 5);

if (PROJECTS_PER_ORG * KEYS_PER_PROJECT > 999) {
    throw new Error('PROJECTS_PER_ORG * KEYS_PER_PROJECT must stay under keys.max_active_per_org (1000, master key included)');
}

const errors = new Rate('errors');

export const options = {
    setupTimeout: '180s',
    scenarios: {
        verify: {
            executor: 'constant-arrival-rate',
            rate: RATE,
            timeUnit: '1s',
            duration: DURATION,
            preAllocatedVUs: VUS,
            maxVUs: MAX_VUS,
        },
    },
    thresholds: {
        'http_req_duration{endpoint:verify}': [`p(99)<${P99_MS}`],
        errors: ['rate<0.001'],
        dropped_iterations: [`rate<${RATE / 100}`],
    },
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
    checkServer();
    const tag = runTag();
    const keys = [];
    for (let o = 0; o < ORGS; o++) {
        const org = createOrganization(`k6 hot path ${tag} org ${o}`);
        const projects = [org.projectId];
        for (let p = 1; p < PROJECTS_PER_ORG; p++) {
            projects.push(createProject(org.masterKey, `k6 hot path ${tag} project ${p}`));
        }
        for (const projectId of projects) {
            keys.push(...createKeys(org.masterKey, projectId, KEYS_PER_PROJECT, `k6-hot-${tag}`));
        }
    }
    console.log(`auth-hot-path: ${keys.length} keys in ${ORGS} organizations; ${RATE} req/s for ${DURATION}`);
    return { keys };
}

const VERIFY_URL = `${BASE_URL}/api/v1/auth/verify`;

export default function (data) {
    const key = data.keys[exec.scenario.iterationInTest % data.keys.length];
    const res = http.get(VERIFY_URL, auth(key, { endpoint: 'verify' }));
    const ok = check(res, {
        'verify: 200': (r) => r.status === 200,
        'verify: valid is true': (r) => isValid(r),
    });
    errors.add(!ok);
}
