//! Observability: what the hub logs (levels, formats, and never a token) and what its
//! `/metrics` says after real traffic.

mod common;

use common::{addr, rt, Api, Served};
use hyper::StatusCode;
use poolhub::config::Config;
use poolhub::server::TestHub;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

// ---------------------------------------------------------------------------------------
// Logs: the built binary, as an operator runs it.
// ---------------------------------------------------------------------------------------

/// `poolhub serve --ephemeral --host 127.0.0.1 --port 0` with stderr captured in a file.
struct Proc {
    served: Served,
    stderr: std::path::PathBuf,
}

impl Proc {
    fn start(dir: &Path, envs: &[(&str, &str)]) -> Self {
        let stderr = dir.join("stderr.log");
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let served = Served::start(
            dir,
            &["--ephemeral", "--host", "127.0.0.1", "--port", "0"],
            envs,
            Stdio::from(file),
        );
        Self { served, stderr }
    }

    /// SIGTERM, wait for a clean exit, and return everything written to stderr.
    fn stop(self) -> String {
        let status = self.served.sigterm();
        assert!(status.success(), "exit status {status}");
        std::fs::read_to_string(&self.stderr).expect("read stderr")
    }
}

/// The requests both log tests send, as (method, route template, status), in order.
type Sent = Vec<(&'static str, &'static str, u16)>;

/// Registers a miner, sends status with its token, re-registers with it, reads it, tries
/// another miner's token, and deregisters. Returns the tokens and what was sent.
async fn miner_lifecycle(api: &Api) -> (Vec<String>, Sent) {
    let a = addr(1);
    let b = addr(2);
    let mut sent: Sent = Vec::new();

    let token = api.register(&a, &["llama3.2"], 16384, 4).await;
    sent.push(("POST", "/api/v1/miners/register", 201));
    let other = api.register(&b, &["llama3.2"], 16384, 4).await;
    sent.push(("POST", "/api/v1/miners/register", 201));

    let r = api.heartbeat(&a, &token, 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    sent.push(("POST", "/api/v1/miners/{address}/status", 200));

    let r = api
        .post(
            "/api/v1/miners/register",
            &common::registration(&a, &["llama3.2", "mistral"], 16384, 4),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    sent.push(("POST", "/api/v1/miners/register", 200));

    // Another miner's token is refused (and must not be logged either).
    let r = api.heartbeat(&a, &other, 1).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    sent.push(("POST", "/api/v1/miners/{address}/status", 403));

    let r = api.get(&format!("/api/v1/miners/{a}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    sent.push(("GET", "/api/v1/miners/{address}", 200));

    let r = api
        .delete(&format!("/api/v1/miners/{a}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    sent.push(("DELETE", "/api/v1/miners/{address}", 200));

    (vec![token, other], sent)
}

/// No token, no token without its prefix, and no token hash anywhere in the log.
fn assert_no_secrets(log: &str, tokens: &[String]) {
    for t in tokens {
        assert!(t.len() > 32, "unexpected token shape {t}");
        let hex_part = t.trim_start_matches("ph_");
        let hash = poolhub::hub::hash_token(t);
        for (what, secret) in [
            ("token", t.as_str()),
            ("token hex", hex_part),
            ("hash", &hash),
        ] {
            assert!(
                !log.contains(secret),
                "the {what} appears in the log:\n{}",
                log.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert!(
        !log.to_ascii_lowercase().contains("bearer"),
        "an Authorization header appears in the log"
    );
}

#[test]
fn trace_level_text_logs_never_contain_a_token() {
    let dir = tempfile::tempdir().unwrap();
    // Client keys (issue 8): the admin secret, a key created with it and used for a match
    // and an outcome, then revoked, must not reach the log either (nor their digests).
    let admin = "admin-secret-for-the-log-test-0123456789";
    let p = Proc::start(
        dir.path(),
        &[("LOG_LEVEL", "trace"), ("POOLHUB_ADMIN_TOKEN", admin)],
    );
    let api = p.served.api();
    let (mut tokens, _) = rt().block_on(miner_lifecycle(&api));
    rt().block_on(async {
        let r = api
            .post("/api/v1/admin/keys", &json!({"name": "c1"}), Some(admin))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let key = r.json["key"].as_str().expect("key").to_string();
        let id = r.json["id"].as_str().expect("id").to_string();
        let m = api
            .post("/api/v1/match", &json!({"model": "llama3.2"}), Some(&key))
            .await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.text);
        let r = api
            .delete(&format!("/api/v1/admin/keys/{id}"), Some(admin))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        tokens.push(key);
    });
    tokens.push(admin.to_string());
    let log = p.stop();

    assert_no_secrets(&log, &tokens);
    let a = addr(1);
    let line_with = |msg: &str| {
        log.lines()
            .find(|l| l.contains(msg) && l.contains(&a))
            .unwrap_or_else(|| panic!("no {msg:?} line for {a} in:\n{log}"))
            .to_string()
    };
    for msg in [
        "miner registered",
        "miner re-registered",
        "miner deregistered",
    ] {
        let l = line_with(msg);
        assert!(l.contains(" INFO "), "{msg} is not at info: {l}");
    }
    // The configuration is logged at start-up, and the request lines are there at trace.
    assert!(
        log.lines()
            .any(|l| l.contains("starting poolhub") && l.contains(" INFO ")),
        "no start-up line:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" DEBUG ") && l.contains(" request ")),
        "no request line:\n{log}"
    );
    // Text logs on a pipe carry no colour codes.
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a non-terminal log"
    );
}

#[test]
fn json_logs_at_debug_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), &[("LOG_FORMAT", "json"), ("RUST_LOG", "debug")]);
    let api = p.served.api();
    let (tokens, sent) = rt().block_on(miner_lifecycle(&api));
    let log = p.stop();

    assert_no_secrets(&log, &tokens);
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"));
            assert!(v.is_object(), "not a JSON object: {l}");
            assert!(v["level"].is_string(), "no level: {l}");
            assert!(v["timestamp"].is_string(), "no timestamp: {l}");
            v
        })
        .collect();
    assert!(!lines.is_empty());

    let msg = |v: &Value| v["fields"]["message"].as_str().unwrap_or("").to_string();
    // One "request" line per request, at debug, with method, route and status.
    let requests: Vec<(String, String, u64)> = lines
        .iter()
        .filter(|v| msg(v) == "request")
        .map(|v| {
            assert_eq!(v["level"], "DEBUG", "{v}");
            let f = &v["fields"];
            assert!(f["micros"].is_u64(), "{v}");
            (
                f["method"].as_str().expect("method").to_string(),
                f["route"].as_str().expect("route").to_string(),
                f["status"].as_u64().expect("status"),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = sent
        .iter()
        .map(|(m, r, s)| (m.to_string(), r.to_string(), u64::from(*s)))
        .collect();
    assert_eq!(requests, expected);

    let a = addr(1);
    for wanted in [
        "miner registered",
        "miner re-registered",
        "miner deregistered",
    ] {
        let v = lines
            .iter()
            .find(|v| msg(v) == wanted && v["fields"]["address"] == a.as_str())
            .unwrap_or_else(|| panic!("no {wanted:?} line for {a}"));
        assert_eq!(v["level"], "INFO", "{v}");
    }
    assert!(
        lines
            .iter()
            .any(|v| msg(v) == "starting poolhub" && v["level"] == "INFO"),
        "no start-up line"
    );
}

// ---------------------------------------------------------------------------------------
// Metrics after real traffic, against an in-process hub.
// ---------------------------------------------------------------------------------------

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (enough of it for poolhub's output).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let name = &line[..open];
                let mut labels = BTreeMap::new();
                let mut chars = line[open + 1..].char_indices();
                let mut key = String::new();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '}' => {
                            end = Some(open + 1 + i + 1);
                            break;
                        }
                        ',' | ' ' => {}
                        '=' => {
                            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                            let mut val = String::new();
                            loop {
                                match chars.next().map(|(_, c)| c) {
                                    Some('\\') => match chars.next().map(|(_, c)| c) {
                                        Some('n') => val.push('\n'),
                                        Some(c) => val.push(c),
                                        None => panic!("bad escape: {line}"),
                                    },
                                    Some('"') => break,
                                    Some(c) => val.push(c),
                                    None => panic!("unterminated label value: {line}"),
                                }
                            }
                            labels.insert(std::mem::take(&mut key), val);
                        }
                        c => key.push(c),
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated labels: {line}"));
                (name, labels, &line[end..])
            }
            None => {
                let sp = line.find(' ').unwrap_or_else(|| panic!("no value: {line}"));
                (&line[..sp], BTreeMap::new(), &line[sp..])
            }
        };
        let value = rest.split_whitespace().next().expect("value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value {v:?} ({e}): {line}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// The samples named `name` whose labels include every pair in `want`.
    fn find<'a>(&'a self, name: &'a str, want: &'a [(&str, &str)]) -> Vec<&'a Sample> {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with labels `want` (0 when absent).
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert!(found.len() <= 1, "{name} {want:?} matches {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }

    fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        !self.find(name, want).is_empty()
    }

    fn requests(&self, method: &str, route: &str, status: &str) -> f64 {
        self.value(
            "poolhub_api_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    }
}

async fn scrape(api: &Api) -> Scrape {
    let r = api.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.content_type.starts_with("text/plain"),
        "content type {}",
        r.content_type
    );
    Scrape(parse_exposition(&r.text))
}

fn cfg() -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    c
}

#[tokio::test]
async fn metrics_move_with_real_traffic() {
    let hub = TestHub::start(cfg()).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let metrics = Api::new(hub.metrics_addr);

    let m = scrape(&metrics).await;
    assert_eq!(m.value("poolhub_miners_total", &[]), 0.0);
    assert_eq!(m.value("poolhub_jobs_matched_total", &[]), 0.0);
    assert_eq!(m.value("poolhub_match_duration_count", &[]), 0.0);
    assert_eq!(
        m.value(
            "poolhub_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(m.find("poolhub_miner_score", &[]).is_empty());

    // Three miners; the third reports itself unavailable.
    let mut tokens = Vec::new();
    for i in 0..3 {
        let a = addr(i);
        let t = api.register(&a, &["llama3.2"], 16384, 4).await;
        let r = api
            .post(
                &format!("/api/v1/miners/{a}/status"),
                &json!({"available": i != 2, "current_load": 0}),
                Some(&t),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        tokens.push((a, t));
    }
    let m = scrape(&metrics).await;
    assert_eq!(m.value("poolhub_miners_total", &[]), 3.0);
    assert_eq!(m.value("poolhub_miners_online", &[]), 3.0);
    assert_eq!(m.value("poolhub_miners_available", &[]), 2.0);
    assert_eq!(m.value("poolhub_miners_cooled_down", &[]), 0.0);
    assert_eq!(m.value("poolhub_reservations_in_flight", &[]), 0.0);
    assert_eq!(
        m.requests("POST", "/api/v1/miners/register", "201"),
        3.0,
        "register"
    );
    assert_eq!(
        m.requests("POST", "/api/v1/miners/{address}/status", "200"),
        3.0
    );
    for (a, _) in &tokens {
        let s = m.value("poolhub_miner_score", &[("address", a)]);
        assert!(s > 0.0 && s <= 1.0, "score of {a}: {s}");
    }
    assert_eq!(m.find("poolhub_miner_score", &[]).len(), 3);
    // Registrations are durable commits.
    assert!(m.value("poolhub_store_commit_batch_size_count", &[]) > 0.0);
    assert!(m.value("poolhub_store_commit_duration_seconds_count", &[]) > 0.0);
    assert_eq!(
        m.value("poolhub_store_commit_batch_size_count", &[]),
        m.value("poolhub_store_commit_duration_seconds_count", &[])
    );
    assert!(m.value("poolhub_store_commit_batch_size_sum", &[]) >= 3.0);
    assert_eq!(
        m.value("poolhub_store_errors_total", &[("backend", "redb")]),
        0.0
    );

    // A match that finds miners reserves a slot on the first one.
    let r = api.match_model("llama3.2", 5).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["miners"].as_array().unwrap().len(), 2, "{}", r.text);
    assert_eq!(r.json["reserved"], true);
    let id = r.json["match_id"].as_str().unwrap().to_string();
    let first = r.json["miners"][0]["address"].as_str().unwrap().to_string();
    // A match for a model nobody serves.
    let r = api.match_model("no-such-model", 5).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json["miners"].as_array().unwrap().is_empty());

    let m = scrape(&metrics).await;
    assert_eq!(m.value("poolhub_match_duration_count", &[]), 2.0);
    assert!(m.value("poolhub_match_duration_sum", &[]) > 0.0);
    assert_eq!(
        m.value("poolhub_match_duration_bucket", &[("le", "+Inf")]),
        2.0
    );
    assert_eq!(m.value("poolhub_jobs_matched_total", &[]), 1.0);
    assert_eq!(
        m.value("poolhub_match_requests_total", &[("result", "matched")]),
        1.0
    );
    assert_eq!(
        m.value("poolhub_match_requests_total", &[("result", "empty")]),
        1.0
    );
    assert_eq!(
        m.value("poolhub_match_requests_total", &[("result", "panic")]),
        0.0
    );
    assert_eq!(m.value("poolhub_reservations_in_flight", &[]), 1.0);
    assert_eq!(m.requests("POST", "/api/v1/match", "200"), 2.0);
    assert_eq!(
        m.value(
            "poolhub_http_request_duration_seconds_count",
            &[("route", "/api/v1/match")]
        ),
        2.0
    );
    assert_eq!(
        m.value("poolhub_job_outcomes_total", &[("result", "failure")]),
        0.0
    );

    // The job failed: the outcome releases the reservation.
    let o = api.outcome(&id, &first, false, 1200.0).await;
    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
    let again = api.outcome(&id, &first, false, 1200.0).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    let m = scrape(&metrics).await;
    assert_eq!(
        m.value("poolhub_job_outcomes_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        m.value("poolhub_job_outcomes_total", &[("result", "success")]),
        0.0
    );
    assert_eq!(m.value("poolhub_reservations_in_flight", &[]), 0.0);
    assert_eq!(m.requests("POST", "/api/v1/outcomes", "201"), 1.0);
    assert_eq!(m.requests("POST", "/api/v1/outcomes", "409"), 1.0);

    // Deregistering removes the miner's score series.
    let (gone, gone_token) = &tokens[0];
    let r = api
        .delete(&format!("/api/v1/miners/{gone}"), Some(gone_token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let m = scrape(&metrics).await;
    assert!(!m.has("poolhub_miner_score", &[("address", gone)]));
    for (a, _) in &tokens[1..] {
        assert!(m.has("poolhub_miner_score", &[("address", a)]), "{a}");
    }
    assert_eq!(m.find("poolhub_miner_score", &[]).len(), 2);
    assert_eq!(m.value("poolhub_miners_total", &[]), 2.0);
    assert_eq!(m.value("poolhub_miners_online", &[]), 2.0);
    assert_eq!(m.requests("DELETE", "/api/v1/miners/{address}", "200"), 1.0);

    // Every request so far is counted exactly once.
    let total: f64 = m
        .find("poolhub_api_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 3.0 + 3.0 + 2.0 + 2.0 + 1.0);

    hub.stop().await;
}

#[tokio::test]
async fn raw_paths_never_become_labels() {
    let hub = TestHub::start(cfg()).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let metrics = Api::new(hub.metrics_addr);

    let n = 40u32;
    for i in 0..n {
        let a = addr(1000 + i);
        let r = api.get(&format!("/api/v1/miners/{a}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = api
            .post(
                &format!("/api/v1/miners/{a}/status"),
                &json!({"available": true}),
                Some("ph_nope"),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        // Paths no route matches.
        let r = api.get(&format!("/api/v2/miners/{a}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = api.get(&format!("/{a}?x={i}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    }
    // Not addresses at all still land on the template.
    let r = api.get("/api/v1/miners/0xnot-an-address").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let m = scrape(&metrics).await;
    assert_eq!(
        m.requests("GET", "/api/v1/miners/{address}", "404"),
        f64::from(n)
    );
    assert_eq!(m.requests("GET", "/api/v1/miners/{address}", "400"), 1.0);
    assert_eq!(
        m.requests("POST", "/api/v1/miners/{address}/status", "404"),
        f64::from(n)
    );

    let templates = [
        "/health",
        "/api/v1/status",
        "/api/v1/miners",
        "/api/v1/miners/register",
        "/api/v1/miners/{address}",
        "/api/v1/miners/{address}/status",
        "/api/v1/match",
        "/api/v1/outcomes",
        "/metrics",
        "unmatched",
    ];
    let mut routes = std::collections::BTreeSet::new();
    for s in m.0.iter().filter(|s| {
        s.name == "poolhub_api_requests_total"
            || s.name.starts_with("poolhub_http_request_duration_seconds")
    }) {
        let route = s.labels.get("route").expect("route label");
        assert!(templates.contains(&route.as_str()), "raw route label {s:?}");
        for v in s.labels.values() {
            assert!(!v.contains("0x"), "an address became a label: {s:?}");
        }
        routes.insert(route.clone());
    }
    assert!(routes.len() <= 4, "{routes:?}");
    // 40 × 2 unmatched paths share one series.
    let unmatched: f64 = m
        .find("poolhub_api_requests_total", &[("route", "unmatched")])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(unmatched, f64::from(2 * n));
    // The series count stays small however many addresses were requested.
    assert!(
        m.find("poolhub_api_requests_total", &[]).len() <= 5,
        "{:?}",
        m.find("poolhub_api_requests_total", &[])
    );

    hub.stop().await;
}

#[tokio::test]
async fn metrics_on_the_api_port_only_when_configured() {
    // Default: not on the API port.
    let hub = TestHub::start(cfg()).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let r = api.get("/metrics").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(!r.text.contains("poolhub_"), "{}", r.text);
    // The metrics port serves it, and nothing else.
    let metrics = Api::new(hub.metrics_addr);
    assert_eq!(metrics.get("/metrics").await.status, StatusCode::OK);
    assert_eq!(metrics.get("/health").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        metrics.get("/api/v1/status").await.status,
        StatusCode::NOT_FOUND
    );
    hub.stop().await;

    // Opted in: served on both ports, with the same families.
    let mut c = cfg();
    c.server.metrics_on_api_port = true;
    let hub = TestHub::start(c).await.expect("hub starts");
    let api = Api::new(hub.api_addr);
    let on_api = scrape(&api).await;
    assert!(on_api.has("poolhub_build_info", &[]));
    assert!(on_api.has("poolhub_miners_total", &[]));
    let on_metrics = scrape(&Api::new(hub.metrics_addr)).await;
    let names = |s: &Scrape| {
        s.0.iter()
            .map(|x| x.name.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // The API-port scrape itself is a request: counted under the /metrics route.
    assert_eq!(on_metrics.requests("GET", "/metrics", "200"), 1.0);
    assert!(names(&on_api).is_subset(&names(&on_metrics)));
    hub.stop().await;
}

#[tokio::test]
async fn every_metric_has_help_and_type() {
    let hub = TestHub::start(cfg()).await.expect("hub starts");
    let metrics = Api::new(hub.metrics_addr);
    let text = metrics.get("/metrics").await.text;
    let mut families = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut it = l["# TYPE ".len()..].split_whitespace();
        let (name, kind) = (it.next().unwrap(), it.next().unwrap());
        // The hub's own, and the process collector's standard `process_*` family.
        assert!(
            name.starts_with("poolhub_") || name.starts_with("process_"),
            "{l}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        match kind {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "histogram" | "gauge" => {
                assert!(!name.ends_with("_total") || name == "poolhub_miners_total")
            }
            other => panic!("unexpected type {other} for {name}"),
        }
        families.push(name.to_string());
    }
    for seed in [
        "poolhub_miners_total",
        "poolhub_jobs_matched_total",
        "poolhub_match_duration",
    ] {
        assert!(families.iter().any(|f| f == seed), "{seed} missing");
    }
    // Families labelled by request (api_requests_total, miner_score, ...) appear with their
    // first series; the other tests check them after traffic.
    // The match histogram resolves 10 µs.
    assert!(text.contains("poolhub_match_duration_bucket{le=\"0.00001\"} "));
    hub.stop().await;
}
