#!/usr/bin/env python3
"""Which statuses each operation answered during a fuzz run, from the gateway's JSON log.

    fuzz_reached.py LOG FROM_LINE OPENAPI [METHOD PATH]...

Reads LOG (LOGSTITCH__LOG__FORMAT=json: one line per request with method, route, status)
from line FROM_LINE on, prints one line per operation, and exits 1 when one of the operations
named (default: every operation in OPENAPI) never answered 2xx: the fuzzer never got past
authentication or validation there, so the run proved little about it. Used by fuzz.sh.
"""

import collections
import json
import sys


def main() -> int:
    log, start, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    wanted = list(zip(sys.argv[4::2], sys.argv[5::2]))
    if not wanted:
        with open(spec, encoding="utf-8") as f:
            paths = json.load(f)["paths"]
        wanted = [(method.upper(), path) for path, ops in paths.items() for method in ops]

    seen: dict = collections.defaultdict(collections.Counter)
    with open(log, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if number < start or not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "status" in event and "route" in event and "method" in event:
                seen[(event["method"], event["route"])][event["status"]] += 1

    missing = []
    for method, path in sorted(wanted, key=lambda op: (op[1], op[0])):
        statuses = seen.get((method, path), collections.Counter())
        shown = " ".join(f"{status}x{count}" for status, count in sorted(statuses.items()))
        print(f"  {method:6} {path:26} {shown or 'no request'}")
        if not any(200 <= status < 300 for status in statuses):
            missing.append(f"{method} {path}")
    if missing:
        print("never answered 2xx: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
