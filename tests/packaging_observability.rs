//! The shipped monitoring files: `packaging/grafana/poolhub.json` (Grafana dashboard) and
//! `packaging/prometheus/poolhub-alerts.yml` (alert rules) are well-formed, and every metric
//! they query is one that a running hub really exports.
//!
//! There is no YAML parser among the dependencies, so the rules file is checked line by line.
//! It is written in a deliberately plain shape that this check understands: block mappings
//! indented with spaces, one rule per `- alert:` item, `expr` on a single line.
//! `promtool check rules` and `promtool test rules packaging/prometheus/poolhub-alerts.test.yml`
//! check it fully where promtool is installed.

mod common;

use common::{addr, Api};
use hyper::StatusCode;
use poolhub::config::Config;
use poolhub::server::TestHub;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn repo_file(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every `poolhub_*` identifier in a PromQL expression.
fn poolhub_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            // Skip identifiers inside label values and strings ("..." after `=~` etc.).
            let in_string = expr[..start].matches('"').count() % 2 == 1;
            if word.starts_with("poolhub_") && !in_string {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The series names a hub exports after traffic that touches every labelled family:
/// family name → type, and the set of names a query may use (histograms add
/// `_bucket`, `_sum`, `_count`).
async fn exported() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    let hub = TestHub::start(cfg).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let a = addr(7);
    let token = api.register(&a, &["llama3.2"], 16384, 4).await;
    assert_eq!(api.heartbeat(&a, &token, 0).await.status, StatusCode::OK);
    let r = api.match_model("llama3.2", 3).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["match_id"].as_str().expect("match_id").to_string();
    let o = api.outcome(&id, &a, true, 250.0).await;
    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
    assert_eq!(api.get("/health").await.status, StatusCode::OK);

    let text = Api::new(hub.metrics_addr).get("/metrics").await.text;
    hub.stop().await;

    let mut families = BTreeMap::new();
    let mut names = BTreeSet::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut it = l["# TYPE ".len()..].split_whitespace();
        let name = it.next().expect("name").to_string();
        let kind = it.next().expect("type").to_string();
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.clone());
        }
        families.insert(name, kind);
    }
    assert!(families.len() >= 15, "too few families: {families:?}");
    (families, names)
}

/// The family a series name belongs to.
fn family_of<'a>(series: &'a str, families: &BTreeMap<String, String>) -> &'a str {
    if families.contains_key(series) {
        return series;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if families.contains_key(base) {
                return base;
            }
        }
    }
    series
}

// ---------------------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Rule {
    alert: String,
    line: usize,
    /// Top-level keys of the rule item and their inline values.
    keys: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

fn key_value(l: &str) -> (String, String) {
    let t = l.trim().trim_start_matches("- ");
    let (k, v) = t
        .split_once(':')
        .unwrap_or_else(|| panic!("not a `key: value` line: {l:?}"));
    (k.trim().to_string(), v.trim().to_string())
}

/// Strips one level of YAML quoting from a scalar.
fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// A line-based reading of the rules file in the shape described at the top of this file.
fn parse_rules(text: &str) -> (Vec<String>, Vec<Rule>) {
    assert!(!text.contains('\t'), "tabs in the rules file");
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end()))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(
        lines.first().map(|(_, l)| *l),
        Some("groups:"),
        "must start with `groups:`"
    );
    let mut groups = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut rule_indent = None;
    // Which nested mapping of the current rule we are in, with its indentation.
    let mut section: Option<(String, usize)> = None;
    for &(n, l) in &lines[1..] {
        let t = l.trim_start();
        let ind = indent(l);
        if t.starts_with("- name:") {
            groups.push(unquote(&key_value(t).1));
            rule_indent = None;
            section = None;
            continue;
        }
        if t == "rules:" {
            continue;
        }
        if t.starts_with("- alert:") || t.starts_with("- record:") {
            assert!(
                t.starts_with("- alert:"),
                "line {n}: only alerting rules here"
            );
            rule_indent = Some(ind + 2);
            section = None;
            rules.push(Rule {
                alert: unquote(&key_value(t).1),
                line: n,
                ..Rule::default()
            });
            continue;
        }
        let rule = rules
            .last_mut()
            .unwrap_or_else(|| panic!("line {n}: content outside a rule: {l:?}"));
        let ri = rule_indent.expect("inside a rule");
        if let Some((name, si)) = &section {
            if ind > *si {
                let (k, v) = key_value(t);
                assert!(!v.is_empty(), "line {n}: empty {name}.{k}");
                let target = if name == "labels" {
                    &mut rule.labels
                } else {
                    &mut rule.annotations
                };
                assert!(
                    target.insert(k.clone(), unquote(&v)).is_none(),
                    "line {n}: duplicate {name}.{k}"
                );
                continue;
            }
            section = None;
        }
        assert_eq!(
            ind, ri,
            "line {n}: expected a rule key at indent {ri}: {l:?}"
        );
        let (k, v) = key_value(t);
        if (k == "labels" || k == "annotations") && v.is_empty() {
            section = Some((k.clone(), ind));
        } else {
            assert!(
                !v.is_empty() && v != "|" && v != ">" && !v.starts_with("|-"),
                "line {n}: `{k}` must be a one-line value"
            );
        }
        assert!(
            rule.keys.insert(k.clone(), v).is_none(),
            "line {n}: duplicate key {k}"
        );
    }
    (groups, rules)
}

fn valid_duration(d: &str) -> bool {
    let d = d.trim();
    !d.is_empty()
        && d.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse::<u64>()
            .is_ok()
        && matches!(
            d.trim_start_matches(|c: char| c.is_ascii_digit()),
            "ms" | "s" | "m" | "h" | "d" | "w" | "y"
        )
}

#[tokio::test]
async fn alert_rules_are_well_formed_and_use_exported_metrics() {
    let text = repo_file("packaging/prometheus/poolhub-alerts.yml");
    let (groups, rules) = parse_rules(&text);
    assert_eq!(groups, ["poolhub"]);

    let mut seen = BTreeSet::new();
    for r in &rules {
        assert!(seen.insert(r.alert.clone()), "duplicate alert {}", r.alert);
        let at = format!("{} (line {})", r.alert, r.line);
        assert!(
            r.alert.starts_with("Poolhub") && r.alert.chars().all(|c| c.is_ascii_alphanumeric()),
            "{at}: alert names are PoolhubCamelCase"
        );
        for k in r.keys.keys() {
            assert!(
                ["expr", "for", "labels", "annotations", "keep_firing_for"].contains(&k.as_str()),
                "{at}: unknown key {k}"
            );
        }
        let expr = r
            .keys
            .get("expr")
            .unwrap_or_else(|| panic!("{at}: no expr"));
        assert_eq!(
            expr.matches('(').count(),
            expr.matches(')').count(),
            "{at}: unbalanced parentheses"
        );
        let d = r.keys.get("for").unwrap_or_else(|| panic!("{at}: no for"));
        assert!(valid_duration(d), "{at}: bad duration {d:?}");
        let sev = r
            .labels
            .get("severity")
            .unwrap_or_else(|| panic!("{at}: no labels.severity"));
        assert!(
            ["critical", "warning", "info"].contains(&sev.as_str()),
            "{at}: severity {sev}"
        );
        for a in ["summary", "description"] {
            let v = r
                .annotations
                .get(a)
                .unwrap_or_else(|| panic!("{at}: no annotations.{a}"));
            assert!(v.len() > 10, "{at}: annotations.{a} too short");
            assert_eq!(
                v.matches("{{").count(),
                v.matches("}}").count(),
                "{at}: unbalanced template in {a}"
            );
        }
    }

    // The alerts the issue asks for, with their thresholds.
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r.alert == name)
            .unwrap_or_else(|| panic!("alert {name} missing"))
    };
    let expr = |name: &str| rule(name).keys["expr"].clone();
    let r#for = |name: &str| rule(name).keys["for"].clone();
    assert_eq!(expr("PoolhubDown"), "up{job=~\"poolhub.*\"} == 0");
    assert_eq!(r#for("PoolhubDown"), "1m");
    let e = expr("PoolhubMatchLatencyHigh");
    assert!(e.contains("histogram_quantile(0.99,"), "{e}");
    assert!(e.contains("poolhub_match_duration_bucket[5m]"), "{e}");
    assert!(e.ends_with("> 0.05"), "{e}");
    assert_eq!(r#for("PoolhubMatchLatencyHigh"), "10m");
    let e = expr("PoolhubHighErrorRate");
    assert!(e.contains("status=~\"5..\""), "{e}");
    assert!(e.ends_with("> 0.01"), "{e}");
    assert_eq!(r#for("PoolhubHighErrorRate"), "5m");
    let e = expr("PoolhubOnlineMinersDropping");
    assert!(
        e.contains("0.5 * max_over_time(poolhub_miners_online[1h])"),
        "{e}"
    );
    assert_eq!(r#for("PoolhubOnlineMinersDropping"), "10m");
    assert!(expr("PoolhubNoOnlineMiners").contains("poolhub_miners_online == 0"));
    assert_eq!(
        expr("PoolhubStorageErrors"),
        "increase(poolhub_store_errors_total[5m]) > 0"
    );
    let e = expr("PoolhubStorageCommitSlow");
    assert!(
        e.contains("poolhub_store_commit_duration_seconds_bucket") && e.ends_with("> 0.25"),
        "{e}"
    );

    // Every metric an expression uses is exported by a real hub.
    let (families, names) = exported().await;
    for r in &rules {
        let expr = &r.keys["expr"];
        for n in poolhub_names(expr) {
            assert!(
                names.contains(&n),
                "{}: {n} is not exported (exported: {names:?})",
                r.alert
            );
            // Histograms are queried through their buckets (or _sum/_count), never bare.
            assert!(
                families.get(&n).map(String::as_str) != Some("histogram"),
                "{}: bare histogram name {n}",
                r.alert
            );
        }
        // `up` is the one series Prometheus adds itself; only the hub-down alert needs it.
        if expr.contains("up{") || expr.starts_with("up") {
            assert_eq!(r.alert, "PoolhubDown", "only PoolhubDown uses `up`");
        }
    }
}

#[test]
fn example_prometheus_config_scrapes_the_hub_and_loads_the_rules() {
    let text = repo_file("packaging/prometheus/prometheus.yml");
    assert!(!text.contains('\t'));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(lines.contains(&"rule_files:"));
    assert!(lines.contains(&"- poolhub-alerts.yml"));
    assert!(lines.contains(&"scrape_configs:"));
    assert!(lines.contains(&"- job_name: poolhub"));
    assert!(lines.contains(&"metrics_path: /metrics"));
    assert!(lines.contains(&"- targets: [\"localhost:9090\"]"));
}

// ---------------------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------------------

fn all_panels(panels: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(all_panels(inner));
        }
    }
    out
}

fn uses_datasource_variable(ds: &Value) -> bool {
    ds["uid"] == "${datasource}" && ds["type"] == "prometheus"
}

#[tokio::test]
async fn dashboard_imports_cleanly_and_uses_exported_metrics() {
    let text = repo_file("packaging/grafana/poolhub.json");
    let d: Value = serde_json::from_str(&text).expect("dashboard is JSON");

    assert_eq!(d["title"], "poolhub");
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["id"].is_null(), "id must be null so import creates it");
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["__inputs"].is_array());
    for input in d["__inputs"].as_array().unwrap() {
        let name = input["name"].as_str().expect("input name");
        assert!(
            text.contains(&format!("${{{name}}}")),
            "input {name} unused"
        );
    }

    // Template variables: a Prometheus datasource picker and an instance selector.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name} missing"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let inst = var("instance");
    assert_eq!(inst["type"], "query");
    assert!(uses_datasource_variable(&inst["datasource"]));
    let q = inst["query"]["query"]
        .as_str()
        .or_else(|| inst["query"].as_str())
        .expect("instance query");
    assert_eq!(q, "label_values(poolhub_build_info, instance)");
    assert_eq!(inst["definition"], q);

    // Panels: unique ids, a grid position each, the datasource variable everywhere.
    let panels = all_panels(d["panels"].as_array().expect("panels"));
    assert!(panels.len() >= 15, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    let mut titles = BTreeSet::new();
    for p in &panels {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without id: {p}"));
        assert!(ids.insert(id), "duplicate panel id {id}");
        let title = p["title"].as_str().expect("title").to_string();
        assert!(!title.is_empty());
        assert!(p["type"].is_string(), "{title}: no type");
        let g = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(g[k].is_u64(), "{title}: gridPos.{k} missing");
        }
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(w >= 1 && x + w <= 24, "{title}: outside the 24-column grid");
        assert!(
            uses_datasource_variable(&p["datasource"]),
            "{title}: datasource is not ${{datasource}}: {}",
            p["datasource"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(titles.insert(title.clone()), "duplicate title {title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                t["datasource"].is_null() || uses_datasource_variable(&t["datasource"]),
                "{title}: target datasource {}",
                t["datasource"]
            );
            assert!(refs.insert(t["refId"].to_string()), "{title}: refId twice");
            let e = t["expr"].as_str().expect("expr").to_string();
            assert!(
                e.contains("instance=~\"$instance\""),
                "{title}: {e} ignores $instance"
            );
            assert_eq!(
                e.matches('(').count(),
                e.matches(')').count(),
                "{title}: unbalanced parentheses in {e}"
            );
            exprs.push((title.clone(), e));
        }
    }
    // No two panels overlap.
    let boxes: Vec<(u64, u64, u64, u64, &str)> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
                p["title"].as_str().unwrap(),
            )
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let overlap = a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3;
            assert!(!overlap, "panels {:?} and {:?} overlap", a.4, b.4);
        }
    }

    // What the issue asks the dashboard to show.
    let all: String = exprs
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "rate(poolhub_api_requests_total",
        "status=~\"5..\"",
        "status=~\"4..\"",
        "histogram_quantile(0.5, sum by (le) (rate(poolhub_match_duration_bucket",
        "histogram_quantile(0.9, sum by (le) (rate(poolhub_match_duration_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(poolhub_match_duration_bucket",
        "histogram_quantile(0.99, sum by (route, le) (rate(poolhub_http_request_duration_seconds_bucket",
        "poolhub_miners_total",
        "poolhub_miners_online",
        "poolhub_miners_available",
        "poolhub_miners_cooled_down",
        "poolhub_reservations_in_flight",
        "quantile(0.5, poolhub_miner_score",
        "bottomk(10, poolhub_miner_score",
        "poolhub_job_outcomes_total",
        "sum by (result) (rate(poolhub_match_requests_total",
        "histogram_quantile(0.5, sum by (le) (rate(poolhub_store_commit_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(poolhub_store_commit_duration_seconds_bucket",
        "poolhub_store_commit_batch_size",
        "sum by (backend) (increase(poolhub_store_errors_total",
        "poolhub_build_info",
        // The resources row: memory and disk against their bounds.
        "process_resident_memory_bytes",
        "process_open_fds",
        "poolhub_store_file_bytes",
        "poolhub_outcomes_stored",
    ] {
        assert!(all.contains(needle), "no panel queries {needle}");
    }

    // Every metric queried is exported, and every exported family is on the dashboard.
    let (families, names) = exported().await;
    let mut used = BTreeSet::new();
    for (title, e) in &exprs {
        for n in poolhub_names(e) {
            assert!(names.contains(&n), "{title}: {n} is not exported");
            assert!(
                families.get(&n).map(String::as_str) != Some("histogram"),
                "{title}: bare histogram name {n}"
            );
            used.insert(family_of(&n, &families).to_string());
        }
    }
    // The hub's own families; of the process collector's standard ones, the panels above.
    for f in families.keys().filter(|f| f.starts_with("poolhub_")) {
        assert!(used.contains(f), "exported family {f} is on no panel");
    }
}

#[tokio::test]
async fn readme_documents_every_exported_metric() {
    let readme = repo_file("README.md");
    let start = readme
        .find("## Monitoring")
        .expect("README has a Monitoring section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let (families, _) = exported().await;
    for (f, kind) in &families {
        let row = section
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{f}`")))
            .unwrap_or_else(|| panic!("README Monitoring table has no row for {f}"));
        assert!(
            row.contains(kind.as_str()),
            "README row for {f} lacks its type {kind}"
        );
    }
    for f in [
        "packaging/grafana/poolhub.json",
        "packaging/prometheus/poolhub-alerts.yml",
    ] {
        assert!(section.contains(f), "README does not mention {f}");
    }
}
