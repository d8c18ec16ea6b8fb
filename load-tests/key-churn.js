// Key churn across many organizations: each iteration creates a project key, uses it,
// lists the organization's keys, revokes the key and checks it is refused. Every key an
// iteration creates is revoked by the same iteration, so an organization never holds more
// active keys than iterations in flight, far below keys.max_active_per_org (1000).
//
// A second scenario, `limit`, races the per-organization limit itself: setup() fills one
// organization to LIMIT - LIMIT_MARGIN active keys, then LIMIT_RACE concurrent creates must
// yield exactly LIMIT_MARGIN keys (201) and 409 conflict for the rest; after one revoke,
// one more create must succeed.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... load-tests/key-churn.js
//
// Environment (defaults are the `make load` smoke):
//   RATE=20          churn iterations per second (5 requests each)
//   DURATION=15s     how long to hold the rate
//   ORGS=10          organizations the churn is spread over (each with 2 projects)
//   VUS / MAX_VUS    pre-allocated / maximum VUs
//   LIMIT=1000       the server's keys.max_active_per_org; LIMIT_CHECK=0 skips `limit`
//   LIMIT_MARGIN=5   free slots left before the race; LIMIT_RACE=15 concurrent creates
//   WRITE_P95_MS=100 p95 threshold for create/list/revoke, in milliseconds
//
// Thresholds: errors (any unexpected status or body) < 0.1 %; p95 of create, list and
// revoke < WRITE_P95_MS; limit_violations (wrong outcome of the limit race) == 0.

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import {
    BASE_URL, auth, checkServer, createKeys, createOrganization, createProject, envDuration,
    envInt, errorCode, isValid, keyId, runTag,
} from './lib/gateway.js';

const RATE = envInt('RATE', 20);
const DURATION = envDuration('DURATION', '15s');
const ORGS = envInt('ORGS', 10);
const VUS = envInt('VUS', Math.max(4, Math.ceil(RATE / 5)));
const MAX_VUS = envInt('MAX_VUS', VUS * 5);
const LIMIT = envInt('LIMIT', 1000);
const LIMIT_CHECK = __ENV.LIMIT_CHECK !== '0';
const LIMIT_MARGIN = envInt('LIMIT_MARGIN', 5);
const LIMIT_RACE = envInt('LIMIT_RACE', 15);
const WRITE_P95_MS = envInt('WRITE_P95_MS', 100);

if (LIMIT_RACE <= LIMIT_MARGIN) {
    throw new Error('LIMIT_RACE must exceed LIMIT_MARGIN, or the race never reaches the limit');
}

const errors = new Rate('errors');
const limitViolations = new Counter('limit_violations');
const keysChurned = new Counter('keys_churned');

const scenarios = {
    churn: {
        executor: 'constant-arrival-rate',
        exec: 'churn',
        rate: RATE,
        timeUnit: '1s',
        duration: DURATION,
        preAllocatedVUs: VUS,
        maxVUs: MAX_VUS,
    },
};
if (LIMIT_CHECK) {
    scenarios.limit = {
        executor: 'per-vu-iterations',
        exec: 'limitRace',
        vus: 1,
        iterations: 1,
        maxDuration: '60s',
    };
}

export const options = {
    setupTimeout: '300s',
    // The limit race sends LIMIT_RACE requests at once.
    batch: LIMIT_RACE,
    batchPerHost: LIMIT_RACE,
    scenarios,
    thresholds: {
        errors: ['rate<0.001'],
        'http_req_duration{endpoint:create}': [`p(95)<${WRITE_P95_MS}`],
        'http_req_duration{endpoint:list}': [`p(95)<${WRITE_P95_MS}`],
        'http_req_duration{endpoint:revoke}': [`p(95)<${WRITE_P95_MS}`],
        limit_violations: ['count==0'],
    },
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

// 401 is an expected answer here (verify after revoke, limit race 409 too).
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 401, 409));

export function setup() {
    checkServer();
    const tag = runTag();
    const orgs = [];
    for (let o = 0; o < ORGS; o++) {
        const org = createOrganization(`k6 churn ${tag} org ${o}`);
        const extra = createProject(org.masterKey, `k6 churn ${tag} project`);
        orgs.push({ masterKey: org.masterKey, projects: [org.projectId, extra] });
    }
    let limit = null;
    if (LIMIT_CHECK) {
        const org = createOrganization(`k6 churn ${tag} limit`);
        // Active keys after this: the master key + LIMIT - LIMIT_MARGIN - 1 project keys.
        const fill = LIMIT - LIMIT_MARGIN - 1;
        const keys = createKeys(org.masterKey, org.projectId, fill, `k6-limit-${tag}`, 32);
        limit = { masterKey: org.masterKey, projectId: org.projectId, revokable: keys[0] };
    }
    console.log(`key-churn: ${ORGS} organizations; ${RATE} iterations/s for ${DURATION}` +
        (LIMIT_CHECK ? `; limit race on ${LIMIT} keys` : ''));
    return { tag, orgs, limit };
}

const KEYS_URL = `${BASE_URL}/api/v1/keys`;
const VERIFY_URL = `${BASE_URL}/api/v1/auth/verify`;

/** POST /api/v1/keys as an http.batch() entry. */
function createKeyRequest(masterKey, projectId, name) {
    return ['POST', KEYS_URL, JSON.stringify({ project_id: projectId, type: 'project', name }),
        auth(masterKey, { endpoint: 'create' })];
}

function createKey(masterKey, projectId, name) {
    const [, url, body, params] = createKeyRequest(masterKey, projectId, name);
    return http.post(url, body, params);
}

export function churn(data) {
    const n = exec.scenario.iterationInTest;
    const org = data.orgs[n % data.orgs.length];
    const projectId = org.projects[Math.floor(n / data.orgs.length) % org.projects.length];
    const name = `k6-churn-${data.tag}-${n}`;

    const created = createKey(org.masterKey, projectId, name);
    const createdOk = check(created, {
        'create: 201': (r) => r.status === 201,
        'create: key returned': (r) => r.status === 201 && typeof r.json('key') === 'string',
    });
    errors.add(!createdOk);
    if (!createdOk) {
        return;
    }
    const key = created.json('key');

    const used = http.get(VERIFY_URL, auth(key, { endpoint: 'verify' }));
    const usedOk = check(used, {
        'verify new key: 200 valid': (r) => r.status === 200 && isValid(r),
    });
    errors.add(!usedOk);
    if (!usedOk) {
        return;
    }
    const id = used.json('key_id');

    const listed = http.get(KEYS_URL, auth(org.masterKey, { endpoint: 'list' }));
    errors.add(!check(listed, {
        'list: 200': (r) => r.status === 200,
        'list: new key active': (r) => r.status === 200 &&
            (r.json('keys') || []).some((k) => k.id === id && k.revokedAt === null),
    }));

    const revoked = http.del(`${KEYS_URL}/${id}`, null, auth(org.masterKey, { endpoint: 'revoke' }));
    const revokedOk = check(revoked, {
        'revoke: 200 revoked': (r) => r.status === 200 && r.json('revoked') === true,
    });
    errors.add(!revokedOk);

    const refused = http.get(VERIFY_URL, auth(key, { endpoint: 'verify_revoked' }));
    errors.add(!check(refused, {
        'verify revoked key: 401 key_revoked': (r) => r.status === 401 && errorCode(r) === 'key_revoked',
    }));
    if (revokedOk) {
        keysChurned.add(1);
    }
}

export function limitRace(data) {
    const { masterKey, projectId, revokable } = data.limit;
    const requests = [];
    for (let i = 0; i < LIMIT_RACE; i++) {
        requests.push(createKeyRequest(masterKey, projectId, `k6-limit-race-${data.tag}-${i}`));
    }
    const results = http.batch(requests);
    const created = results.filter((r) => r.status === 201).length;
    const conflicts = results.filter((r) => r.status === 409 && errorCode(r) === 'conflict').length;
    const raceOk = check(null, {
        [`limit race: exactly ${LIMIT_MARGIN} of ${LIMIT_RACE} created`]: () => created === LIMIT_MARGIN,
        'limit race: the others are 409 conflict': () => conflicts === LIMIT_RACE - LIMIT_MARGIN,
    });
    if (!raceOk) {
        console.error(`limit race: ${created} created, ${conflicts} conflicts, statuses ` +
            JSON.stringify(results.map((r) => r.status)));
    }
    limitViolations.add(raceOk ? 0 : 1);

    // At the limit: one revoke frees exactly one slot.
    const id = keyId(revokable);
    const revoked = http.del(`${KEYS_URL}/${id}`, null, auth(masterKey, { endpoint: 'revoke' }));
    const again = createKey(masterKey, projectId, `k6-limit-after-${data.tag}`);
    const full = createKey(masterKey, projectId, `k6-limit-full-${data.tag}`);
    const slotOk = check(null, {
        'limit: revoke at the limit: 200': () => revoked.status === 200,
        'limit: one create after the revoke: 201': () => again.status === 201,
        'limit: the next one: 409 conflict': () => full.status === 409 && errorCode(full) === 'conflict',
    });
    limitViolations.add(slotOk ? 0 : 1);
}
