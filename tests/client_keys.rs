//! Issue 8, "Clients: keys with roles", black-box over HTTP: with `auth.clients = "keys"` the
//! drain, defame and self-boost attacks fail; keys are created, listed and revoked through
//! the admin API and `poolhub keys`; two hubs sharing PostgreSQL (+ Redis) agree on keys
//! within a second; no key reaches the log.

mod backends;
mod common;

use common::eventually;

use common::{addr, Api, Resp};
use hyper::StatusCode;
use poolhub::config::{ClientAuth, Config};
use poolhub::server::TestHub;
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN: &str = "operator-secret-0123456789";

fn keys_config() -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    c.auth.clients = ClientAuth::Keys;
    c.auth.admin_token = ADMIN.into();
    c
}

fn match_body() -> Value {
    json!({"model": "llama3.2", "limit": 1})
}

async fn create_key(api: &Api, name: &str, role: &str) -> (String, String) {
    let r = api
        .post(
            "/api/v1/admin/keys",
            &json!({"name": name, "role": role}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.json["id"].as_str().expect("id").to_string(),
        r.json["key"].as_str().expect("key").to_string(),
    )
}

async fn match_with(api: &Api, key: Option<&str>) -> Resp {
    api.post("/api/v1/match", &match_body(), key).await
}

async fn outcome_with(api: &Api, match_id: &str, miner: &str, ok: bool, key: Option<&str>) -> Resp {
    api.post(
        "/api/v1/outcomes",
        &json!({"match_id": match_id, "address": miner, "success": ok, "latency_ms": 100}),
        key,
    )
    .await
}

fn code(r: &Resp) -> &str {
    r.json["error"]["code"].as_str().unwrap_or("")
}

/// The attacks of the issue, against a hub with `auth.clients = "keys"`.
#[tokio::test]
async fn drain_defame_and_self_boost_fail_with_client_keys() {
    let mut cfg = keys_config();
    cfg.auth.max_reservations_per_client = 2;
    let hub = TestHub::start(cfg).await.expect("hub");
    let api = Api::new(hub.api_addr);
    // A victim miner with 8 slots, and the attacker's own miner.
    let victim = addr(1);
    let token = api.register(&victim, &["llama3.2"], 16384, 8).await;
    assert_eq!(
        api.heartbeat(&victim, &token, 0).await.status,
        StatusCode::OK
    );

    // Anonymous: no match, no outcome (drain and defame as an outsider).
    let r = match_with(&api, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let fake_id = format!("{:032x}", 1);
    let r = outcome_with(&api, &fake_id, &victim, false, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    // A miner's token is not a client key.
    let r = match_with(&api, Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = outcome_with(&api, &fake_id, &victim, false, Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    let (_, honest) = create_key(&api, "coordinator-1", "client").await;
    let (attacker_id, attacker) = create_key(&api, "mallory", "client").await;

    // Defame / self-boost: the honest client's match, reported by another key.
    let m = match_with(&api, Some(&honest)).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    let match_id = m.json["match_id"].as_str().expect("id").to_string();
    assert_eq!(m.json["miners"][0]["address"], victim.as_str());
    for ok in [false, true] {
        let r = outcome_with(&api, &match_id, &victim, ok, Some(&attacker)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(code(&r), "not_your_match");
    }
    // The forged reports claimed nothing: the owner's own report is accepted.
    let r = outcome_with(&api, &match_id, &victim, true, Some(&honest)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = api.get(&format!("/api/v1/miners/{victim}")).await;
    let stats = &r.json["stats"];
    assert_eq!(
        (&stats["jobs_total"], &stats["jobs_failed"]),
        (&json!(1), &json!(0)),
        "only the owner's outcome counted: {}",
        r.text
    );

    // Drain: the attacker's reservations stop at the cap; its matches are still answered,
    // unreserved, and the victim keeps free slots for everyone else.
    let mut reserved = Vec::new();
    for _ in 0..5 {
        let r = match_with(&api, Some(&attacker)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["miners"].as_array().map(Vec::len), Some(1));
        reserved.push(r.json["reserved"].as_bool().expect("reserved"));
    }
    assert_eq!(reserved, [true, true, false, false, false]);
    let r = match_with(&api, Some(&honest)).await;
    assert_eq!(r.json["reserved"], true, "{}", r.text);

    // A revoked key is refused at once.
    let r = api
        .delete(&format!("/api/v1/admin/keys/{attacker_id}"), Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = match_with(&api, Some(&attacker)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    hub.stop().await;
}

#[tokio::test]
async fn the_admin_api_creates_lists_and_revokes_keys_and_checks_its_input() {
    let hub = TestHub::start(keys_config()).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let r = api
        .post(
            "/api/v1/admin/keys",
            &json!({"name": "coordinator-1", "role": "client"}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for f in ["id", "key", "name", "role", "created_at"] {
        assert!(!r.json[f].is_null(), "{f} in {}", r.text);
    }
    assert_eq!(r.json["name"], "coordinator-1");
    assert_eq!(r.json["role"], "client");
    let id = r.json["id"].as_str().expect("id").to_string();
    let secret = r.json["key"].as_str().expect("key").to_string();
    assert_eq!(id.len(), 16);
    assert!(secret.starts_with("phk_"));
    let (admin_id, admin_key) = create_key(&api, "ops", "admin").await;

    let list = api
        .send(hyper::Method::GET, "/api/v1/admin/keys", None, Some(ADMIN))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let keys = list.json["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[1]["role"], "admin");
    assert!(keys.iter().all(|k| k.get("key").is_none()));
    assert!(!list.text.contains(&secret) && !list.text.contains(&admin_key));
    // An admin-role key may use the admin API; a client key may not; nobody without a key.
    let by_admin_key = api
        .send(
            hyper::Method::GET,
            "/api/v1/admin/keys",
            None,
            Some(&admin_key),
        )
        .await;
    assert_eq!(by_admin_key.status, StatusCode::OK);
    let by_client = api
        .post("/api/v1/admin/keys", &json!({"name": "x"}), Some(&secret))
        .await;
    assert_eq!(by_client.status, StatusCode::FORBIDDEN);
    let anonymous = api
        .post("/api/v1/admin/keys", &json!({"name": "x"}), None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Bad input: 400 naming the field.
    for (body, field) in [
        (json!({"name": "", "role": "client"}), "name"),
        (json!({"name": "x".repeat(65), "role": "client"}), "name"),
        (json!({"role": "client"}), "name"),
        (json!({"name": "x", "role": "root"}), "role"),
        (json!({"name": "x", "role": 7}), "role"),
    ] {
        let r = api.post("/api/v1/admin/keys", &body, Some(ADMIN)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.json["error"]["field"], field, "{body}: {}", r.text);
    }
    assert_eq!(
        api.delete("/api/v1/admin/keys/nonsense", Some(ADMIN))
            .await
            .json["error"]["field"],
        "id"
    );

    // Revoke: 204, then the key is refused and gone from the list; again 404.
    let r = api
        .delete(&format!("/api/v1/admin/keys/{id}"), Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        match_with(&api, Some(&secret)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api
        .delete(&format!("/api/v1/admin/keys/{id}"), Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(code(&r), "key_not_found");
    let list = api
        .send(hyper::Method::GET, "/api/v1/admin/keys", None, Some(ADMIN))
        .await;
    assert_eq!(list.json["keys"][0]["id"], admin_id.as_str());
    assert_eq!(list.json["keys"].as_array().map(Vec::len), Some(1));
    hub.stop().await;
}

/// Open mode (the built-in default) keeps the seed's behaviour: anonymous matches and
/// outcomes work; a match made with a key is still that key's.
#[tokio::test]
async fn open_mode_keeps_anonymous_matches_and_outcomes() {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    cfg.auth.admin_token = ADMIN.into();
    let hub = TestHub::start(cfg).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let m = addr(2);
    let token = api.register(&m, &["llama3.2"], 16384, 4).await;
    api.heartbeat(&m, &token, 0).await;
    let r = match_with(&api, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["match_id"].as_str().expect("id").to_string();
    let r = outcome_with(&api, &id, &m, true, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let (_, key) = create_key(&api, "c", "client").await;
    let r = match_with(&api, Some(&key)).await;
    let id = r.json["match_id"].as_str().expect("id").to_string();
    let r = outcome_with(&api, &id, &m, true, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(code(&r), "not_your_match");
    let r = outcome_with(&api, &id, &m, true, Some(&key)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    hub.stop().await;
}

fn cli(base: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("keys").args(args).args(["--hub", base]);
    cmd.env_remove("POOLHUB_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("POOLHUB_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run poolhub keys")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `poolhub keys create|list|revoke` against the built binary in keys mode, and the hub's
/// log (at debug) never holds a key or the admin secret.
#[test]
fn the_cli_manages_keys_and_no_key_reaches_the_log() {
    let rt = common::rt();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("hub.log");
    let file = std::fs::File::create(&log).expect("log file");
    let served = common::Served::start(
        dir.path(),
        &["--ephemeral", "--port", "0", "--host", "127.0.0.1"],
        &[
            ("POOLHUB_CLIENT_AUTH", "keys"),
            ("POOLHUB_ADMIN_TOKEN", ADMIN),
            ("LOG_LEVEL", "debug"),
        ],
        std::process::Stdio::from(file),
    );
    let base = served.base.clone();
    let api = served.api();

    let created = cli(&base, Some(ADMIN), &["create", "--name", "coordinator-1"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let out = stdout(&created);
    let line = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    let (key, id) = (line("key"), line("id"));
    assert!(key.starts_with("phk_"), "{out}");
    assert_eq!(line("role"), "client");
    let admin = cli(
        &base,
        Some(ADMIN),
        &["create", "--name", "ops", "--role", "admin"],
    );
    assert!(admin.status.success(), "{}", stderr(&admin));
    let admin_key = stdout(&admin)
        .lines()
        .find_map(|l| l.strip_prefix("key: ").map(str::to_string))
        .expect("admin key");

    rt.block_on(async {
        let r = match_with(&api, Some(&key)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = match_with(&api, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    });

    // An admin key works for the CLI as the operator's secret does.
    let listed = cli(&base, Some(&admin_key), &["list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    assert!(
        table.contains(&id) && table.contains("coordinator-1"),
        "{table}"
    );
    assert!(!table.contains(&key), "list never shows a key");

    let revoked = cli(&base, Some(ADMIN), &["revoke", &id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    rt.block_on(async {
        let r = match_with(&api, Some(&key)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    });

    // Errors: exit 1 with the reason.
    let again = cli(&base, Some(ADMIN), &["revoke", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("404"), "{}", stderr(&again));
    let wrong = cli(&base, Some("not-the-admin-secret"), &["list"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("POOLHUB_ADMIN_TOKEN"),
        "{}",
        stderr(&wrong)
    );
    let unset = cli(&base, None, &["list"]);
    assert_eq!(unset.status.code(), Some(1));
    assert!(stderr(&unset).contains("POOLHUB_ADMIN_TOKEN"));
    let bad = cli(&base, Some(ADMIN), &["create", "--name", ""]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("name"), "{}", stderr(&bad));
    let down = cli("http://127.0.0.1:9", Some(ADMIN), &["list"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(stderr(&down).contains("127.0.0.1:9"), "{}", stderr(&down));

    assert!(served.sigterm().success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("client key created"),
        "debug log written: {text}"
    );
    for secret in [key.as_str(), admin_key.as_str(), ADMIN] {
        assert!(!text.contains(secret), "a secret is in the log");
    }
}

fn shared_config(pg: &str, schema: &str, redis: Option<(&str, &str)>) -> Config {
    let mut c = keys_config();
    backends::use_shared(&mut c, Some((pg, schema)), redis);
    c
}

/// A key created on A works on B within a second; revoked on A, it fails on B within a
/// second. With `redis` the hubs share its bus; without, only B's periodic reload of the
/// keys carries the change (the path that covers a lost event).
async fn keys_reach_the_other_hub_within_a_second(redis: Option<(String, String)>) {
    let pg = backends::database_url();
    let schema = backends::fresh_name("poolhub_test_");
    let redis = redis.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let hub_a = TestHub::start(shared_config(&pg, &schema, redis))
        .await
        .expect("hub A");
    let hub_b = TestHub::start(shared_config(&pg, &schema, redis))
        .await
        .expect("hub B");
    let (a, b) = (Api::new(hub_a.api_addr), Api::new(hub_b.api_addr));
    // Let B's subscription come up before A publishes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Duration::from_secs(1);

    let (id, key) = create_key(&a, "coordinator-1", "client").await;
    eventually(second, "a key created on A works on B", || {
        let (b, key) = (b.clone(), key.clone());
        async move { match_with(&b, Some(&key)).await.status == StatusCode::OK }
    })
    .await;
    let r = a
        .delete(&format!("/api/v1/admin/keys/{id}"), Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    eventually(second, "a key revoked on A fails on B", || {
        let (b, key) = (b.clone(), key.clone());
        async move { match_with(&b, Some(&key)).await.status == StatusCode::FORBIDDEN }
    })
    .await;
    // And B lists what A did (from the shared store).
    let list = b
        .send(hyper::Method::GET, "/api/v1/admin/keys", None, Some(ADMIN))
        .await;
    assert_eq!(
        list.json["keys"].as_array().map(Vec::len),
        Some(0),
        "{}",
        list.text
    );
    hub_a.stop().await;
    hub_b.stop().await;
    let store = poolhub::store::postgres::PostgresStore::connect(
        poolhub::store::postgres::PgOptions {
            url: pg.clone(),
            schema: schema.clone(),
            max_connections: 1,
            startup_timeout: Duration::from_secs(5),
        },
        None,
    )
    .await
    .expect("connect to drop the schema");
    store.drop_schema().await.expect("drop schema");
}

#[tokio::test]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
async fn two_hubs_sharing_postgres_and_redis_agree_on_keys_within_a_second() {
    let rd = backends::redis_url();
    let prefix = backends::fresh_name("test:") + ":";
    keys_reach_the_other_hub_within_a_second(Some((rd, prefix))).await;
}

/// Without a shared bus no event reaches B: the periodic reload alone must do it.
#[tokio::test]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL"]
async fn without_events_the_periodic_reload_carries_keys_within_a_second() {
    keys_reach_the_other_hub_within_a_second(None).await;
}

/// The start-up warning: once when clients are open on a non-loopback address, never when
/// they need keys (or the hub listens on loopback only).
#[test]
fn open_clients_on_a_public_address_are_warned_about_once() {
    let warning = "auth.clients = \"open\" on a non-loopback address";
    let run = |host: &str, envs: &[(&str, &str)]| {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("hub.log");
        let file = std::fs::File::create(&log).expect("log file");
        let served = common::Served::start(
            dir.path(),
            &["--ephemeral", "--port", "0", "--host", host],
            envs,
            std::process::Stdio::from(file),
        );
        assert!(served.sigterm().success());
        std::fs::read_to_string(&log).expect("log")
    };
    let open_public = run("0.0.0.0", &[]);
    assert_eq!(open_public.matches(warning).count(), 1, "{open_public}");
    let open_local = run("127.0.0.1", &[]);
    assert!(!open_local.contains(warning), "{open_local}");
    let keys_public = run(
        "0.0.0.0",
        &[
            ("POOLHUB_CLIENT_AUTH", "keys"),
            ("POOLHUB_ADMIN_TOKEN", ADMIN),
        ],
    );
    assert!(!keys_public.contains(warning), "{keys_public}");
    assert!(
        !keys_public.contains("no admin secret and no key"),
        "{keys_public}"
    );
    let locked_out = run("127.0.0.1", &[("POOLHUB_CLIENT_AUTH", "keys")]);
    assert!(
        locked_out.contains("no admin secret and no key"),
        "{locked_out}"
    );
}
