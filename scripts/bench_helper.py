#!/usr/bin/env python3
"""Helpers for scripts/bench.sh (`make bench`); standard library only.

Subcommands:
  free-port                      print a free TCP port on 127.0.0.1
  db-url URL NAME                print URL with its database replaced by NAME
  create-key BASE MASTER PROJECT create one project key, print it
  revoke A B MASTER PROJECT N    revoke-to-refused delay across two instances (JSON on stdout)
  log-statements LOG DB FROM TO  statements the Postgres log shows for DB in a time window
  summary DIR OUT                read the raw results in DIR, write the Markdown table to OUT
"""

import http.client
import json
import math
import os
import re
import socket
import sys
import time
import urllib.parse


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        print(sock.getsockname()[1])


def db_url(url, name):
    parts = urllib.parse.urlsplit(url)
    print(urllib.parse.urlunsplit(parts._replace(path="/" + name)))


class Client:
    """One keep-alive HTTP/1.1 connection to base (http://host:port)."""

    def __init__(self, base):
        parsed = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        self.conn.connect()
        # Small requests back to back: don't let Nagle delay them.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method, path, key, body=None):
        headers = {"Authorization": "Bearer " + key}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data


def create_key(client, master, project, name):
    status, data = client.call(
        "POST",
        "/api/v1/keys",
        master,
        {"project_id": project, "type": "project", "name": name},
    )
    if status != 201:
        raise SystemExit(f"creating a key failed: {status} {data[:300]!r}")
    return json.loads(data)["key"]


def create_key_cmd(base, master, project):
    print(create_key(Client(base), master, project, "bench throughput key"))


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def revoke(base_a, base_b, master, project, count):
    """For each of `count` keys: create it through A, warm it on B (miss, then hit), revoke
    it through A, then poll B's verify back to back and time DELETE-answered -> first 401."""
    a, b = Client(base_a), Client(base_b)
    keys = [create_key(a, master, project, f"bench revoke {i}") for i in range(count)]
    delays_ms, polls, delete_ms = [], [], []
    for key in keys:
        key_id = None
        for _ in range(2):  # first use on B is a miss (DB lookup), the second a cache hit
            status, data = b.call("GET", "/api/v1/auth/verify", key)
            if status != 200:
                raise SystemExit(f"warming a key on B failed: {status} {data[:300]!r}")
            key_id = json.loads(data)["key_id"]
        sent = time.perf_counter()
        status, data = a.call("DELETE", f"/api/v1/keys/{key_id}", master)
        answered = time.perf_counter()
        if status not in (200, 204):
            raise SystemExit(f"revoking through A failed: {status} {data[:300]!r}")
        delete_ms.append((answered - sent) * 1000)
        deadline = answered + 5.0  # bounded: a key still accepted after 5 s is a failure
        n = 0
        while True:
            n += 1
            status, data = b.call("GET", "/api/v1/auth/verify", key)
            if status == 401:
                refused = time.perf_counter()
                break
            if status != 200:
                raise SystemExit(f"unexpected answer from B while polling: {status} {data[:300]!r}")
            if time.perf_counter() > deadline:
                raise SystemExit(f"B still accepts a key revoked 5 s ago (key id {key_id})")
        delays_ms.append((refused - answered) * 1000)
        polls.append(n)
    delays_ms.sort()
    delete_ms.sort()
    result = {
        "revokes": count,
        "p50_ms": percentile(delays_ms, 50),
        "p99_ms": percentile(delays_ms, 99),
        "max_ms": delays_ms[-1],
        "mean_ms": sum(delays_ms) / len(delays_ms),
        "refused_on_first_poll": sum(1 for n in polls if n == 1),
        "max_polls": max(polls),
        "delete_p50_ms": percentile(delete_ms, 50),
        "delete_p99_ms": percentile(delete_ms, 99),
    }
    print(json.dumps(result))


# --- summary -------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk_parse(path):
    """Requests/sec, latency percentiles (ms) and error counts from `wrk --latency` output."""
    text = open(path).read()
    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        out[f"p{pct}_ms"] = float(match.group(1)) * UNITS[match.group(2)] if match else None
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors:(.*)", text)
    out["socket_errors"] = match.group(1).strip() if match else ""
    match = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    out["requests"] = int(match.group(1)) if match else None
    # Appended by bench.sh: server A's CPU time during the run.
    match = re.search(r"server_cpu_ticks=(\d+) clk_tck=(\d+)", text)
    out["server_cpu_s"] = int(match.group(1)) / int(match.group(2)) if match else None
    return out


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def k6_parse(path):
    """The JSON that the k6 scripts' handleSummary writes (durations in ms)."""
    metrics = json.load(open(path))["metrics"]

    def values(name):
        return metrics.get(name, {}).get("values", {})

    duration = values("http_req_duration")
    return {
        "p50_ms": duration.get("med"),
        "p90_ms": duration.get("p(90)"),
        "p99_ms": duration.get("p(99)"),
        "max_ms": duration.get("max"),
        "requests": values("http_reqs").get("count"),
        "rate": values("http_reqs").get("rate"),
        "dropped": values("dropped_iterations").get("count", 0),
        "check_fails": values("checks").get("fails", 0),
    }


def criterion_ns(root, name):
    path = os.path.join(root, "auth_path", name, "new", "estimates.json")
    try:
        estimates = json.load(open(path))
    except OSError:
        return None
    return {
        "median": estimates["median"]["point_estimate"],
        "mean": estimates["mean"]["point_estimate"],
    }


def fmt_ms(value):
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def met(ok):
    return "**met**" if ok else "**NOT met**"


def summary(raw, out):
    env = dict(
        line.split("=", 1) for line in open(os.path.join(raw, "env.txt")).read().splitlines() if "=" in line
    )
    rounds = int(env["ROUNDS"])
    health = [wrk_parse(os.path.join(raw, f"wrk-healthz-{r}.txt")) for r in range(1, rounds + 1)]
    verify = [wrk_parse(os.path.join(raw, f"wrk-verify-{r}.txt")) for r in range(1, rounds + 1)]
    health_rps = sum(h["rps"] for h in health) / rounds
    verify_rps = sum(v["rps"] for v in verify) / rounds
    ratios = [v["rps"] / h["rps"] for h, v in zip(health, verify)]
    # Judged on the median of the paired rounds: one round disturbed by a neighbour's build
    # does not decide it either way. All rounds are shown.
    ratio = median(ratios)
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    errors = sum(v["non2xx"] for v in verify) + sum(h["non2xx"] for h in health)
    sat_v, sat_h = verify[-1], health[-1]
    duration_s = float(env["DURATION"])

    def cpu_us(runs):
        return 1e6 * sum(r["server_cpu_s"] for r in runs) / sum(r["requests"] for r in runs)

    def busy(runs):
        return sum(r["server_cpu_s"] for r in runs) / (duration_s * len(runs))

    have_cpu = all(r["server_cpu_s"] is not None for r in health + verify)

    fixed_v = k6_parse(os.path.join(raw, "k6-fixed-verify.json"))
    fixed_h = k6_parse(os.path.join(raw, "k6-fixed-healthz.json"))

    xact = json.load(open(os.path.join(raw, "xact.json")))
    try:
        statements = json.load(open(os.path.join(raw, "statements.json")))
    except OSError:
        statements = {"log": None}
    if statements.get("log"):
        statements_text = f"{statements['statements']}: " + ", ".join(
            f"{kind} ×{n}" for kind, n in sorted(statements["by_kind"].items(), key=lambda kv: -kv[1])
        )
    else:
        statements_text = "n/a (the Postgres log is not readable here)"
    revoke = json.load(open(os.path.join(raw, "revoke.json")))

    memory = {}
    for line in open(os.path.join(raw, "cache_memory.txt")):
        if line.startswith("RESULT "):
            memory = dict(field.split("=", 1) for field in line.split()[1:])
    rss_mb = int(memory["rss_after_kib"]) * 1024 / 1e6
    grown_mb = (int(memory["rss_after_kib"]) - int(memory["rss_before_kib"])) * 1024 / 1e6

    crit_root = env["CRITERION_DIR"]
    round_robin = sorted(env["ROUND_ROBIN_BENCHES"].split(), key=lambda name: int(name.split("_")[1]))
    parts = {
        name: criterion_ns(crit_root, name)
        for name in ["check_format", "sha256", "cache_hit", "full"] + round_robin
    }
    full = parts["full"]

    conn = env["CONNECTIONS"]
    dur = env["DURATION"]
    rows = [
        (
            f"verify ÷ healthz throughput (wrk -t1 -c{conn}, {rounds}×{dur} s each, alternating)",
            f"**{ratio:.3f}** (median of rounds: {per_round}; ratio of means {verify_rps / health_rps:.3f}) — "
            f"verify {verify_rps:,.0f} req/s, healthz {health_rps:,.0f} req/s; non-2xx: {errors}",
            "≥ 0.9",
            met(ratio >= 0.9 and errors == 0),
        ),
    ]
    if have_cpu:
        rows.append(
            (
                "… server CPU per request, same runs (utime+stime of server A ÷ requests)",
                f"verify {cpu_us(verify):.1f} µs, healthz {cpu_us(health):.1f} µs "
                f"(ratio {cpu_us(health) / cpu_us(verify):.3f}); server busy {busy(verify):.0%} / {busy(health):.0%} "
                "of one core",
                "report",
                "—",
            )
        )
    rows += [

        (
            f"verify latency at a fixed {env['RATE']} req/s (k6 constant-arrival-rate, {env['FIXED_DURATION']} s)",
            f"p50 {fmt_ms(fixed_v['p50_ms'])}, p99 {fmt_ms(fixed_v['p99_ms'])}, max {fmt_ms(fixed_v['max_ms'])} "
            f"({fixed_v['requests']} req, {fixed_v['dropped']} dropped, {fixed_v['check_fails']} non-200) — "
            f"healthz same rate: p50 {fmt_ms(fixed_h['p50_ms'])}, p99 {fmt_ms(fixed_h['p99_ms'])}",
            "report",
            "—",
        ),
        (
            f"verify latency at saturation (wrk --latency, -c{conn}, last round)",
            f"p50 {fmt_ms(sat_v['p50_ms'])}, p99 {fmt_ms(sat_v['p99_ms'])} at {sat_v['rps']:,.0f} req/s — "
            f"healthz: p50 {fmt_ms(sat_h['p50_ms'])}, p99 {fmt_ms(sat_h['p99_ms'])}",
            "report",
            "—",
        ),
        (
            "DB transactions per 10,000 verifies, warm cache (pg_stat_database delta)",
            f"**{xact['xacts']}** in a window of {xact['run_s']:.1f} s of load + {xact['settle_s']} s settle "
            f"(gateway A's counters: {xact['db_lookups']} auth DB lookups, {xact['last_used_flushes']} lastUsedAt "
            f"flushes; pool connections {xact.get('pool_size_start', '?')} → {xact.get('pool_size_end', '?')}; "
            f"autovacuum in the window: {xact.get('autovacuum') or 'none'}); "
            f"idle control, same length without load: {xact['idle_xacts']}",
            "≤ 1",
            met(xact["xacts"] <= 1),
        ),
        (
            "… statements on the bench database in that window (Postgres log, log_statement=all)",
            statements_text,
            "report",
            "—",
        ),
        (
            f"revoke → refused on the other instance ({revoke['revokes']} revokes)",
            f"p50 {fmt_ms(revoke['p50_ms'])}, **p99 {fmt_ms(revoke['p99_ms'])}**, max {fmt_ms(revoke['max_ms'])} "
            f"(refused on B's first request after the DELETE answered: {revoke['refused_on_first_poll']}/{revoke['revokes']}; "
            f"DELETE itself p50 {fmt_ms(revoke['delete_p50_ms'])})",
            "p99 ≤ 10 ms",
            met(revoke["p99_ms"] <= 10),
        ),
        (
            f"resident memory, {int(memory['entries']):,} cached keys (benches/cache_memory.rs)",
            f"**{rss_mb:.0f} MB** process RSS ({grown_mb:.0f} MB for the cache, "
            f"{memory['bytes_per_entry']} B/key; re-resolve misses: {memory['extra_lookups']})",
            "≤ 400 MB",
            met(rss_mb <= 400 and int(memory["extra_lookups"]) == 0),
        ),
        (
            "in-process auth path: check_format + SHA-256 + cache hit (criterion, median)",
            f"**{full['median']:.0f} ns**" if full else "n/a",
            "≤ 1 µs",
            met(full is not None and full["median"] <= 1000),
        ),
    ]
    for name, label in [
        ("check_format", "… check_format (length, tag, base62, CRC32)"),
        ("sha256", "… KeyHash::of (SHA-256)"),
        ("cache_hit", "… AuthCache::resolve, hit"),
    ] + [(name, f"… whole path, each call another of {int(name.split('_')[1]):,} cached keys") for name in round_robin]:
        value = parts[name]
        rows.append((label, f"{value['median']:.0f} ns" if value else "n/a", "part", "—"))

    lines = [
        f"# make bench — {env['DATE']}",
        "",
        f"Machine: {env['NPROC']} cores, {env['CPU']}, {env['MEM']} memory. "
        f"Server: release build, LOGSTITCH__SERVER__WORKERS=1, RUST_LOG={env['SERVER_RUST_LOG']}; "
        "load generators pinned to 1 thread (wrk -t1, k6 with GOMAXPROCS=1). "
        f"Load average before/after the throughput runs: {env.get('LOADAVG_BEFORE', '?')} / "
        f"{env.get('LOADAVG_AFTER', '?')} (other work on the box shows here).",
        "",
        "| Measure | Result | Target | |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append("")
    text = "\n".join(lines)
    with open(out, "w") as handle:
        handle.write(text)
    print(text)


LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\b.*?@(\S+) .*?LOG:\s+(statement|execute [^:]*): ?(.*)$"
)


def log_statements(path, database, start, end):
    """Statements logged for `database` between two log timestamps (inclusive), by kind."""
    kinds = {}
    total = 0
    with open(path, errors="replace") as log:
        for line in log:
            match = LOG_LINE.match(line)
            if not match or match.group(2) != database:
                continue
            stamp = match.group(1)[: len(start)]
            if not start <= stamp <= end:
                continue
            text = " ".join(match.group(4).split())
            kind = (text[:60] or "(empty query)")
            kinds[kind] = kinds.get(kind, 0) + 1
            total += 1
    print(json.dumps({"log": path, "from": start, "to": end, "statements": total, "by_kind": kinds}))


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "free-port":
        free_port()
    elif command == "db-url":
        db_url(*args)
    elif command == "create-key":
        create_key_cmd(*args)
    elif command == "revoke":
        revoke(args[0], args[1], args[2], args[3], int(args[4]))
    elif command == "log-statements":
        log_statements(*args)
    elif command == "summary":
        summary(*args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
