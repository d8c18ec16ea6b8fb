#!/usr/bin/env python3
"""The Python half of scripts/check-dashboards.sh (standard library + PyYAML).

  check_dashboards.py lint DASHBOARD RULES_OUT
      Structure of the Grafana dashboard (importable as is: datasource and $instance
      variables, a unit on every panel, unique ids, the $instance filter on every selector),
      then every PromQL expression in it, with the Grafana variables replaced by concrete
      values, written to RULES_OUT as recording rules for `promtool check rules`.

  check_dashboards.py names DASHBOARD ALERTS SCRAPE
      Every metric name used by the dashboard and the alerting rules appears in SCRAPE, a
      /metrics exposition taken from a live gateway after real traffic.
"""

import json
import re
import sys

import yaml

# Grafana's variables, as concrete values PromQL accepts.
VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "instance": ".+",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")

# Series Prometheus makes itself, which no /metrics exposition contains.
SYNTHETIC = {"up"}

# Words in PromQL that look like metric names but are not.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
    # aggregation operators, which may stand before `by (...)` rather than `(`
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}

errors = []


def error(message):
    errors.append(message)


def panels_of(dashboard):
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr, where):
    def replace(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in VARIABLES:
            error(f"{where}: unknown Grafana variable ${name} in: {expr}")
            return match.group(0)
        return VARIABLES[name]

    return VARIABLE.sub(replace, expr)


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names, label values, durations or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        before = text[match.start() - 1] if match.start() > 0 else " "
        if before.isdigit() or before == ".":  # 5m, 1e3, 0.5e-3
            continue
        if text[match.end():].lstrip().startswith("("):  # a function call
            continue
        if token.lower() in KEYWORDS:
            continue
        names.add(token)
    return names


def dashboard_exprs(dashboard):
    """(record name, where, expression) for every query of every panel."""
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f'panel {panel.get("id")} "{panel.get("title")}" query {target.get("refId")}'
                record = "dashboard:" + re.sub(r"\W", "_", f'panel_{panel.get("id")}_{target.get("refId")}')
                yield record, where, target["expr"]


def variable_metric_names(dashboard):
    names = set()
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        match = re.match(r"\s*label_values\(\s*([^,()]+?)\s*,", query)
        if match:
            names |= metric_names(match.group(1))
        elif re.match(r"\s*(query_result|metrics)\(", query):
            inner = query[query.index("(") + 1:query.rindex(")")]
            names |= metric_names(inner)
    return names


def lint(dashboard_path, rules_out):
    with open(dashboard_path) as f:
        dashboard = json.load(f)

    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dashboard:
            error(f"dashboard: missing top-level {key!r}")
    if dashboard.get("id") is not None:
        error("dashboard: `id` must be null (an exported id clashes on import)")

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds_names = {name for name, v in variables.items()
                if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    ds_names |= {i.get("name") for i in dashboard.get("__inputs", [])
                 if i.get("type") == "datasource" and i.get("pluginId") == "prometheus"}
    if not ds_names:
        error("dashboard: no Prometheus datasource variable (type datasource) nor __inputs entry")
    allowed_ds = {f"${{{name}}}" for name in ds_names} | {f"${name}" for name in ds_names}

    instance = variables.get("instance")
    if instance is None:
        error("dashboard: no `instance` variable")
    else:
        query = instance.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        if re.sub(r"\s", "", query) != "label_values(logstitch_build_info,instance)":
            error(f"dashboard: $instance must be label_values(logstitch_build_info, instance), is {query!r}")
        if instance.get("datasource", {}).get("uid") not in allowed_ds:
            error("dashboard: $instance must query the datasource variable")

    ids = set()
    for panel in panels_of(dashboard):
        where = f'panel {panel.get("id")} "{panel.get("title")}"'
        if panel.get("id") in ids:
            error(f"{where}: duplicate id")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            error(f"{where}: no gridPos")
        if panel.get("type") == "row":
            continue
        if not panel.get("title"):
            error(f"{where}: no title")
        if panel.get("datasource", {}).get("uid") not in allowed_ds:
            error(f"{where}: datasource must be one of {sorted(allowed_ds)}, is {panel.get('datasource')}")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            error(f"{where}: no unit (fieldConfig.defaults.unit)")
        targets = panel.get("targets", [])
        if not targets:
            error(f"{where}: no queries")
        for target in targets:
            if target.get("datasource", {}).get("uid") not in allowed_ds | {None}:
                error(f"{where} query {target.get('refId')}: foreign datasource {target.get('datasource')}")

    rules = []
    for record, where, expr in dashboard_exprs(dashboard):
        # Every selector of a gateway metric must follow the $instance picker.
        for match in re.finditer(r"\b(logstitch_[A-Za-z0-9_:]*)(\{[^}]*\})?", expr):
            if not match.group(2) or "$instance" not in match.group(2):
                error(f"{where}: selector {match.group(0)!r} lacks instance=~\"$instance\"")
        for name in metric_names(expr):
            if not name.startswith("logstitch_"):
                error(f"{where}: metric {name!r} is not the gateway's (logstitch_*)")
        rules.append({"record": record, "expr": substitute(expr, where),
                      "labels": {"panel": where}})
    if not rules:
        error("dashboard: no PromQL expressions found")

    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-expressions", "rules": rules}]}, f,
                       sort_keys=False, width=1000)
    print(f"dashboard: {len(list(panels_of(dashboard)))} panels, {len(rules)} expressions -> {rules_out}")


def names(dashboard_path, alerts_path, scrape_path):
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    with open(alerts_path) as f:
        alerts = yaml.safe_load(f)
    with open(scrape_path) as f:
        scrape = f.read()

    used = {}  # metric name -> where it is used
    for _, where, expr in dashboard_exprs(dashboard):
        for name in metric_names(substitute(expr, where)):
            used.setdefault(name, where)
    for name in variable_metric_names(dashboard):
        used.setdefault(name, "dashboard variable")
    for group in alerts.get("groups", []):
        for rule in group.get("rules", []):
            where = f'rule {rule.get("alert") or rule.get("record")}'
            for name in metric_names(str(rule.get("expr", ""))):
                used.setdefault(name, where)

    samples = set()
    families = {}
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(None, 3)
            families[family] = kind
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    if not samples:
        error(f"{scrape_path}: no samples")

    def present(name):
        if name in samples:
            return True
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return families.get(base) in ("histogram", "summary")

    for name, where in sorted(used.items()):
        if name in SYNTHETIC:
            continue
        if not present(name):
            error(f"{where}: metric {name!r} is not in the live /metrics scrape")

    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used} | set(used)
    unused = sorted(f for f in families if f not in shown)
    print(f"metric names: {len(used)} used by the dashboard and alerts, all checked against "
          f"{len(families)} families in the scrape")
    if unused:
        print("note: exported but on no panel nor alert: " + ", ".join(unused))


def main(argv):
    if len(argv) == 4 and argv[1] == "lint":
        lint(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "names":
        names(argv[2], argv[3], argv[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for message in errors:
        print(f"ERROR: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
