// The one k6 script of `make bench` (cargo xtask bench): GET $URL, with
// `Authorization: Bearer $KEY` when KEY is set, either exactly ITERATIONS requests as fast as
// 16 VUs go, or RATE requests per second for DURATION seconds. Its summary goes to $OUT
// (JSON), which the bench reads.
import http from 'k6/http';
import { check } from 'k6';

const scenario = __ENV.ITERATIONS
  ? {
      executor: 'shared-iterations',
      vus: 16,
      iterations: Number(__ENV.ITERATIONS),
      maxDuration: '120s',
    }
  : {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE),
      timeUnit: '1s',
      duration: `${__ENV.DURATION}s`,
      preAllocatedVUs: 50,
      maxVUs: 200,
    };

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  scenarios: { load: scenario },
};

const params = __ENV.KEY ? { headers: { Authorization: `Bearer ${__ENV.KEY}` } } : {};

export default function () {
  const response = http.get(__ENV.URL, params);
  check(response, { 'status 200': (r) => r.status === 200 });
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data) };
}
