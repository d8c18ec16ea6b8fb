//! dashboards/ against promtool and a live scrape (`make dashboards` runs only these; `make
//! test` runs them with the rest):
//! - the alerting rules, their unit tests and the scrape example pass promtool;
//! - the Grafana dashboard imports as is (datasource and $instance variables, a unit on every
//!   panel, unique ids, the $instance filter on every selector) and every PromQL expression
//!   in it parses (written as recording rules, Grafana variables replaced, for promtool);
//! - every metric name the dashboard and the rules use is in a live /metrics scrape of a
//!   gateway after real traffic.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::external::{self, WorkDir};
use crate::helpers::{eventually, spawn_app_with, TestApp, TestDatabase};
use logstitch_gateway::configuration::ProviderSettings;

const DASHBOARD: &str = "dashboards/logstitch-gateway.json";
const ALERTS: &str = "dashboards/alerts.yml";

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

// ---- PromQL and Grafana text ----

/// Grafana's variables, as concrete values PromQL accepts.
fn variable_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "__rate_interval" | "__interval" => "1m",
        "__interval_ms" => "60000",
        "__range" => "1h",
        "__range_s" => "3600",
        "__range_ms" => "3600000",
        "instance" => ".+",
        _ => return None,
    })
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Replaces `${name}`, `${name:format}`, `$name` and `[[name]]` by concrete values; an
/// unknown variable is an error.
fn substitute(expr: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, used) = if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
            (inner[..end].split(':').next().unwrap_or(""), end + 3)
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) => (inner[..end].split(':').next().unwrap_or(""), end + 4),
                None => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner.find(|c| !is_word(c)).unwrap_or(inner.len());
            (&inner[..end], end + 1)
        } else {
            ("", 0)
        };
        if used == 0 || name.is_empty() {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        }
        out.push_str(
            variable_value(name)
                .ok_or_else(|| format!("unknown Grafana variable ${name} in: {expr}"))?,
        );
        rest = &tail[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Drops string literals, label matchers `{…}` and ranges `[…]`: what is left holds the
/// metric names, functions, keywords and numbers.
fn without_strings_labels_and_ranges(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for next in chars.by_ref() {
                    if next == c && !escaped {
                        break;
                    }
                    escaped = next == '\\' && !escaped && c != '`';
                }
                out.push_str("\"\"");
            }
            '{' => {
                chars.by_ref().find(|&next| next == '}');
            }
            '[' => {
                chars.by_ref().find(|&next| next == ']');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Words in PromQL that look like metric names but are not.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names in a PromQL expression: identifiers that are not functions, keywords, label
/// names, label values, durations or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text: Vec<char> = without_strings_labels_and_ranges(expr).chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && (is_word(text[i]) || text[i] == ':') {
            i += 1;
        }
        let token: String = text[start..i].iter().collect();
        // 5m, 1e3, 0.5e-3
        if start > 0 && (text[start - 1].is_ascii_digit() || text[start - 1] == '.') {
            continue;
        }
        let mut next = i;
        while next < text.len() && text[next].is_whitespace() {
            next += 1;
        }
        let called = next < text.len() && text[next] == '(';
        let lower = token.to_ascii_lowercase();
        if called && LABEL_LISTS.contains(&lower.as_str()) {
            while i < text.len() && text[i] != ')' {
                i += 1;
            }
            continue;
        }
        if called || KEYWORDS.contains(&lower.as_str()) {
            continue;
        }
        names.insert(token);
    }
    names
}

#[test]
fn promql_text_helpers() {
    assert_eq!(
        substitute(
            "rate(x{instance=~\"$instance\"}[$__rate_interval]) ${instance:regex} [[__range]]"
        )
        .unwrap(),
        "rate(x{instance=~\".+\"}[1m]) .+ 1h"
    );
    assert!(substitute("$nope").is_err());
    assert_eq!(substitute("a[5m] $ 1").unwrap(), "a[5m] $ 1");
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le, route) (rate(logstitch_x_bucket{a=\"b_c\"}[5m] offset 1h))) \
         / ignoring(kind) logstitch_y > 1e3 and on(instance) up",
    );
    let expected: BTreeSet<String> = ["logstitch_x_bucket", "logstitch_y", "up"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
}

// ---- the dashboard ----

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn query_text(value: &Value) -> &str {
    value["query"]
        .as_str()
        .or_else(|| value["query"]["query"].as_str())
        .unwrap_or("")
}

/// (record name, where, expression) for every query of every panel.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str().filter(|e| !e.is_empty()) else {
                continue;
            };
            let (id, title, ref_id) = (
                &panel["id"],
                panel["title"].as_str().unwrap_or(""),
                target["refId"].as_str().unwrap_or(""),
            );
            let record: String = format!("panel_{id}_{ref_id}")
                .chars()
                .map(|c| if is_word(c) { c } else { '_' })
                .collect();
            exprs.push((
                format!("dashboard:{record}"),
                format!("panel {id} \"{title}\" query {ref_id}"),
                expr.to_owned(),
            ));
        }
    }
    exprs
}

/// Structure problems of the dashboard, and its expressions as promtool recording rules.
fn lint(dashboard: &Value) -> (Vec<String>, Value) {
    let mut errors = Vec::new();
    for key in ["title", "uid", "panels", "templating", "schemaVersion"] {
        if dashboard.get(key).is_none() {
            errors.push(format!("dashboard: missing top-level {key:?}"));
        }
    }
    if !dashboard["id"].is_null() {
        errors.push("dashboard: `id` must be null (an exported id clashes on import)".to_owned());
    }
    let variables: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut datasources: BTreeSet<String> = variables
        .iter()
        .filter(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    datasources.extend(
        dashboard["__inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus")
            .filter_map(|i| i["name"].as_str().map(str::to_owned)),
    );
    if datasources.is_empty() {
        errors.push(
            "dashboard: no Prometheus datasource variable (type datasource) nor __inputs entry"
                .to_owned(),
        );
    }
    let allowed: BTreeSet<String> = datasources
        .iter()
        .flat_map(|name| [format!("${{{name}}}"), format!("${name}")])
        .collect();
    let uses_allowed = |value: &Value| {
        value["uid"]
            .as_str()
            .is_some_and(|uid| allowed.contains(uid))
    };
    match variables.iter().find(|v| v["name"] == "instance") {
        None => errors.push("dashboard: no `instance` variable".to_owned()),
        Some(instance) => {
            let query: String = query_text(instance)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if query != "label_values(logstitch_build_info,instance)" {
                errors.push(format!("dashboard: $instance must be label_values(logstitch_build_info, instance), is {query:?}"));
            }
            if !uses_allowed(&instance["datasource"]) {
                errors.push("dashboard: $instance must query the datasource variable".to_owned());
            }
        }
    }
    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let place = format!(
            "panel {} {:?}",
            panel["id"],
            panel["title"].as_str().unwrap_or("")
        );
        if !ids.insert(panel["id"].to_string()) {
            errors.push(format!("{place}: duplicate id"));
        }
        if panel.get("gridPos").is_none() {
            errors.push(format!("{place}: no gridPos"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["title"].as_str().is_none_or(str::is_empty) {
            errors.push(format!("{place}: no title"));
        }
        if !uses_allowed(&panel["datasource"]) {
            errors.push(format!(
                "{place}: datasource must be one of {allowed:?}, is {}",
                panel["datasource"]
            ));
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            errors.push(format!("{place}: no unit (fieldConfig.defaults.unit)"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            errors.push(format!("{place}: no queries"));
        }
        for target in &targets {
            if !target["datasource"].is_null() && !uses_allowed(&target["datasource"]) {
                errors.push(format!(
                    "{place} query {}: foreign datasource {}",
                    target["refId"], target["datasource"]
                ));
            }
        }
    }
    let mut rules = Vec::new();
    for (record, place, expr) in dashboard_exprs(dashboard) {
        // Every selector of a gateway metric must follow the $instance picker.
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("logstitch_") {
            let boundary = at == 0 || !is_word(rest[..at].chars().last().unwrap_or(' '));
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(is_word(c) || c == ':'))
                .unwrap_or(tail.len());
            let labels = tail[end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
                .map(|(l, _)| l);
            if boundary && !labels.is_some_and(|labels| labels.contains("$instance")) {
                errors.push(format!(
                    "{place}: selector {} lacks instance=~\"$instance\"",
                    &tail[..end]
                ));
            }
            rest = &tail[end..];
        }
        for name in metric_names(&expr) {
            if !name.starts_with("logstitch_") {
                errors.push(format!(
                    "{place}: metric {name:?} is not the gateway's (logstitch_*)"
                ));
            }
        }
        match substitute(&expr) {
            Ok(concrete) => {
                rules.push(json!({"record": record, "expr": concrete, "labels": {"panel": place}}))
            }
            Err(error) => errors.push(format!("{place}: {error}")),
        }
    }
    if rules.is_empty() {
        errors.push("dashboard: no PromQL expressions found".to_owned());
    }
    (
        errors,
        json!({"groups": [{"name": "dashboard-expressions", "rules": rules}]}),
    )
}

// ---- the alerting rules ----

/// (rule name, expr) of every rule in alerts.yml. Only the shapes the file uses are read: a
/// one-line `expr:` (plain or quoted) or a block scalar (`expr: |`, `>`); anything else
/// fails. promtool validates the file itself; the test compares the count with promtool's.
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let (mut rules, mut name) = (Vec::new(), String::new());
    for (i, line) in lines.iter().enumerate() {
        let item = line.trim_start().trim_start_matches("- ");
        if let Some(value) = item
            .strip_prefix("alert:")
            .or_else(|| item.strip_prefix("record:"))
        {
            name = value.trim().to_owned();
        }
        let Some(value) = item.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        // Lines indented deeper than `expr:` continue it (a block or a folded plain scalar).
        let continued: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|next| next.trim().is_empty() || indent(next) > indent(line))
            .map(|next| next.trim())
            .collect();
        let expr = if value.starts_with(['|', '>']) {
            continued.join("\n")
        } else if let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') {
            assert!(
                value.len() > 1 && value.ends_with(quote) && continued.iter().all(|l| l.is_empty()),
                "{ALERTS}: rule {name}: a quoted expr must stay on one line here"
            );
            value[1..value.len() - 1].to_owned()
        } else {
            std::iter::once(value)
                .chain(continued)
                .collect::<Vec<_>>()
                .join(" ")
        };
        rules.push((name.clone(), expr.trim().to_owned()));
    }
    rules
}

#[test]
fn alert_exprs_are_read_in_each_shape_the_file_uses() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 2m\n\
                \x20     - alert: B\n        expr: |\n          sum(x)\n          > 1\n        labels: {}\n\
                \x20     - record: c:d\n        expr: \"y > 0\"\n";
    assert_eq!(
        alert_exprs(yaml),
        [("A", "up == 0"), ("B", "sum(x)\n> 1"), ("c:d", "y > 0")]
            .map(|(n, e)| (n.to_owned(), e.to_owned()))
    );
}

// ---- the live scrape ----

/// Metric names of every sample, and the TYPE of every family.
fn scrape_names(scrape: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let (mut samples, mut families) = (BTreeSet::new(), BTreeMap::new());
    for line in scrape.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut words = declared.split_whitespace();
            if let (Some(family), Some(kind)) = (words.next(), words.next()) {
                families.insert(family.to_owned(), kind.to_owned());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line
                .find(|c: char| !(is_word(c) || c == ':'))
                .unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, families)
}

/// Metric names a Grafana query variable reads.
fn variable_metric_names(query: &str) -> BTreeSet<String> {
    let query = query.trim();
    if let Some(args) = query.strip_prefix("label_values(") {
        // label_values(SELECTOR, label): only the selector names metrics; label_values(label)
        // names none.
        return args
            .rsplit_once(',')
            .map(|(selector, _)| metric_names(selector))
            .unwrap_or_default();
    }
    for function in ["query_result(", "metrics("] {
        if let Some(args) = query.strip_prefix(function) {
            return metric_names(args.rsplit_once(')').map_or(args, |(inner, _)| inner));
        }
    }
    BTreeSet::new()
}

/// Drives the traffic that makes every labelled series appear: keys made, verified (valid,
/// missing, invalid, revoked), listed and revoked, an unmatched route, a forwarded route
/// whose upstream is down, a per-key rate limit.
async fn drive_traffic(app: &TestApp) {
    let call = |method: Method,
                path: &'static str,
                token: Option<String>,
                body: Option<Value>,
                expected: StatusCode| async move {
        let reply = app
            .request(method.clone(), path, token.as_deref(), body.as_ref())
            .await;
        assert_eq!(reply.status, expected, "{method} {path}: {reply:?}");
        reply
    };
    let org = app.create_org("dashboards check").await;
    let master = Some(org.master_key.clone());
    call(
        Method::POST,
        "/api/v1/projects",
        master.clone(),
        Some(json!({"name": "second project"})),
        StatusCode::CREATED,
    )
    .await;
    let (key_id, key) = app.new_project_key(&org).await;
    app.new_project_key(&org).await;
    for _ in 0..5 {
        call(
            Method::GET,
            "/api/v1/auth/verify",
            Some(key.clone()),
            None,
            StatusCode::OK,
        )
        .await;
    }
    call(
        Method::GET,
        "/api/v1/keys",
        Some(key.clone()),
        None,
        StatusCode::OK,
    )
    .await;
    call(
        Method::GET,
        "/api/v1/keys",
        master.clone(),
        None,
        StatusCode::OK,
    )
    .await;
    call(
        Method::GET,
        "/api/v1/auth/verify",
        None,
        None,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    call(
        Method::GET,
        "/api/v1/auth/verify",
        Some("not-a-key".into()),
        None,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let revoked = app.revoke_key(&org.master_key, &key_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    call(
        Method::GET,
        "/api/v1/auth/verify",
        Some(key),
        None,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    call(
        Method::GET,
        "/no/such/route",
        None,
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    let (_, limited) = app.new_project_key(&org).await;
    call(
        Method::GET,
        "/api/v1/events/x",
        Some(limited.clone()),
        None,
        StatusCode::BAD_GATEWAY,
    )
    .await;
    call(
        Method::GET,
        "/api/v1/events/x",
        Some(limited),
        None,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
}

#[actix_web::test]
async fn dashboards_and_alert_rules_pass_promtool_and_use_only_metrics_a_live_gateway_exports() {
    let Some(promtool) = external::program("promtool", "dashboards check") else {
        return;
    };
    let checked = external::run_ok(&promtool, &["check", "rules", ALERTS]);
    external::run_ok(&promtool, &["test", "rules", "dashboards/alerts.test.yml"]);
    external::run_ok(
        &promtool,
        &["check", "config", "dashboards/prometheus-scrape.yml"],
    );

    let dashboard = dashboard();
    let (problems, rules) = lint(&dashboard);
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
    let work = WorkDir::new("dashboards");
    // JSON is YAML, so promtool reads the rules as written.
    let rules_file = work.path("dashboard-rules.yml");
    std::fs::write(&rules_file, rules.to_string()).unwrap();
    external::run_ok(&promtool, &["check", "rules", rules_file.to_str().unwrap()]);

    let alerts = alert_exprs(&read(ALERTS));
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "promtool counts other rules than the {} read here: {checked}",
        alerts.len()
    );
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for (_, place, expr) in dashboard_exprs(&dashboard) {
        for name in metric_names(&substitute(&expr).unwrap()) {
            used.entry(name).or_insert_with(|| place.clone());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
    {
        for name in variable_metric_names(query_text(variable)) {
            used.entry(name)
                .or_insert_with(|| format!("variable {}", variable["name"]));
        }
    }
    for (rule, expr) in &alerts {
        for name in metric_names(expr) {
            used.entry(name).or_insert_with(|| format!("rule {rule}"));
        }
    }
    assert!(
        used.contains_key("logstitch_build_info"),
        "the $instance variable's metric is among those checked"
    );

    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        // Labelled counters appear in /metrics only once counted: a forwarded route to an
        // upstream that is down (nothing listens on port 9) and a per-key burst of 1.
        settings.rate_limit.requests_per_second = 0.01;
        settings.rate_limit.burst = std::num::NonZeroU32::MIN;
        settings.gateway.routes = vec![crate::gateway::route(
            "/api/v1/events",
            "http://127.0.0.1:9",
            &["project"],
            2000,
        )];
        // Secret-scanning series are labelled by provider: they exist (at zero) once one is
        // configured. Its keys document is never fetched here.
        settings.secret_scanning.providers = vec![ProviderSettings {
            name: "github".into(),
            keys_url: None,
            key_id_header: None,
            signature_header: None,
        }];
    })
    .await;
    drive_traffic(&app).await;
    // Some series come later: lastUsedAt is written in batches, the revocation comes back on
    // the LISTEN channel. Absent ones are named once this gives up.
    let missing = || async {
        let scrape = app.request(Method::GET, "/metrics", None, None).await.text;
        let (samples, families) = scrape_names(&scrape);
        let present = |name: &str| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            samples.contains(name)
                || matches!(
                    families.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
        };
        used.iter()
            // `up` is made by Prometheus itself; no exposition contains it.
            .filter(|(name, _)| *name != "up" && !present(name))
            .map(|(name, place)| {
                format!("{place}: metric {name:?} is not in the live /metrics scrape")
            })
            .collect::<Vec<_>>()
    };
    eventually(std::time::Duration::from_secs(10), || async {
        missing().await.is_empty()
    })
    .await;
    let missing = missing().await;
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
