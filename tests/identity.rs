//! Miner identity over HTTP: challenges, signed registrations, takeovers of squatted
//! addresses, lost-token recovery and the `"signature"` mode.
//!
//! Signatures are made here with `k256` (the hub's own dependency) the way a wallet's
//! `personal_sign` makes them (EIP-191 over the challenge's message), with the Hardhat test
//! key #0; `src/domain/identity.rs` checks the verifier against eth-account's vectors.

mod backends;
mod common;

use common::eventually;

use common::{personal_sign as sign, registration, Api};
use hyper::{Method, StatusCode};
use poolhub::config::{Config, MinerIdentity};
use poolhub::server::TestHub;
use serde_json::{json, Value};
use std::time::Duration;

/// Hardhat's account #0: a well-known test key, never a real one.
const OWNER_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OWNER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// Hardhat's account #1, for a signer that does not own `OWNER`.
const OTHER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// The operator's secret in these tests.
const ADMIN: &str = "test-admin-secret-0123456789";

async fn start(identity: MinerIdentity) -> TestHub {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    cfg.auth.miner_identity = identity;
    cfg.auth.admin_token = ADMIN.into();
    TestHub::start(cfg).await.expect("hub")
}

/// A hub on PostgreSQL (schema `schema`) and Redis (key prefix `prefix`).
fn shared_config(pg: &str, schema: &str, redis: &str, prefix: &str) -> Config {
    let mut c = Config::default();
    backends::use_shared(&mut c, Some((pg, schema)), Some((redis, prefix)));
    c.auth.admin_token = ADMIN.into();
    c
}

async fn challenge(api: &Api, address: &str) -> Value {
    let r = api
        .post(
            &format!("/api/v1/miners/{address}/challenge"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

/// A fresh challenge for `address`, signed with `hex_key`.
async fn signed(api: &Api, address: &str, hex_key: &str) -> String {
    let c = challenge(api, address).await;
    sign(hex_key, c["message"].as_str().expect("message"))
}

fn with_signature(mut body: Value, signature: &str) -> Value {
    body["signature"] = json!(signature);
    body
}

fn owner_registration() -> Value {
    registration(OWNER, &["llama3.2"], 16384, 4)
}

async fn register(api: &Api, body: &Value, token: Option<&str>) -> common::Resp {
    api.post("/api/v1/miners/register", body, token).await
}

fn error_code(r: &common::Resp) -> &str {
    r.json["error"]["code"].as_str().unwrap_or("")
}

/// Builds some history for `address`: one match and one successful outcome.
async fn one_job(api: &Api, address: &str, token: &str) {
    assert_eq!(
        api.heartbeat(address, token, 0).await.status,
        StatusCode::OK
    );
    let m = api.match_model("llama3.2", 1).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text);
    let id = m.json["match_id"].as_str().expect("match id").to_string();
    let o = api.outcome(&id, address, true, 200.0).await;
    assert_eq!(o.status, StatusCode::CREATED, "{}", o.text);
}

async fn jobs_total(api: &Api, address: &str) -> u64 {
    let r = api.get(&format!("/api/v1/miners/{address}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["miner"]["stats"]["jobs_total"]
        .as_u64()
        .or_else(|| r.json["stats"]["jobs_total"].as_u64())
        .expect("jobs_total")
}

#[tokio::test]
async fn a_challenge_names_this_hub_and_a_fresh_nonce_for_one_address() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    let before = poolhub::hub::now_ms();
    let c = challenge(&api, OWNER).await;
    let host = hub.api_addr.to_string();
    let message = c["message"].as_str().expect("message");
    let nonce = c["nonce"].as_str().expect("nonce");
    assert!(
        message.starts_with(&format!(
            "{host} wants you to sign in with your Ethereum account:\n0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n"
        )),
        "{message}"
    );
    assert!(message.contains(&format!("URI: http://{host}/api/v1/miners/register\n")));
    assert!(message.contains(&format!("Nonce: {nonce}\n")));
    assert!(nonce.len() >= 16 && nonce.chars().all(|c| c.is_ascii_alphanumeric()));
    let expires = c["expires_at"].as_u64().expect("expires_at");
    assert!(expires >= before + 300_000 && expires <= poolhub::hub::now_ms() + 300_000);
    let again = challenge(&api, OWNER).await;
    assert_ne!(
        again["nonce"], c["nonce"],
        "each challenge has its own nonce"
    );

    let bad = api
        .post("/api/v1/miners/0x1234/challenge", &json!({}), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
}

#[tokio::test]
async fn the_owner_takes_over_a_squatted_address_and_the_squatter_loses_it() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    // The squatter registers the owner's address without a signature (the seed's way).
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["miner"]["proven"], false, "{}", r.text);
    let squatter = r.json["token"].as_str().expect("token").to_string();
    one_job(&api, OWNER, &squatter).await;
    assert_eq!(jobs_total(&api, OWNER).await, 1);

    // A signature by another key proves nothing and changes nothing.
    let forged = signed(&api, OWNER, OTHER_KEY).await;
    let r = register(&api, &with_signature(owner_registration(), &forged), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(error_code(&r), "bad_signature");
    assert_eq!(
        api.heartbeat(OWNER, &squatter, 0).await.status,
        StatusCode::OK
    );

    // The owner signs: a new token and a fresh record.
    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let owner = r.json["token"].as_str().expect("token").to_string();
    assert_ne!(owner, squatter);
    assert_eq!(
        jobs_total(&api, OWNER).await,
        0,
        "the squatter's history is gone"
    );
    let shown = api.get(&format!("/api/v1/miners/{OWNER}")).await;
    assert_eq!(shown.json["proven"], true, "{}", shown.text);
    let r = api.heartbeat(OWNER, &squatter, 0).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "old token: {}", r.text);
    assert_eq!(api.heartbeat(OWNER, &owner, 0).await.status, StatusCode::OK);

    // The squatter cannot get it back: unsigned with or without its old token.
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = register(&api, &owner_registration(), Some(&squatter)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Nor by replaying the owner's spent signature.
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(error_code(&r), "bad_signature");
    assert_eq!(api.heartbeat(OWNER, &owner, 0).await.status, StatusCode::OK);

    // The owner re-registers with its token (no signature needed once proven).
    let mut changed = owner_registration();
    changed["stake"] = json!(42);
    let r = register(&api, &changed, Some(&owner)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json.get("token").is_none());
}

#[tokio::test]
async fn a_challenge_works_once_and_bad_signatures_are_refused() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    // No challenge requested at all.
    let sig = sign(OWNER_KEY, "not a challenge");
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(error_code(&r), "bad_signature");
    assert_eq!(r.json["error"]["field"], "signature");

    // Malformed.
    for bad in ["0x1234", "nothex", &format!("0x{}", "zz".repeat(65))] {
        let r = register(&api, &with_signature(owner_registration(), bad), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}: {}", r.text);
        assert_eq!(error_code(&r), "bad_signature");
    }

    // Only the latest challenge counts.
    let old = challenge(&api, OWNER).await;
    let _newer = challenge(&api, OWNER).await;
    let sig = sign(OWNER_KEY, old["message"].as_str().expect("message"));
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "older challenge: {}",
        r.text
    );

    // A good one works once, and a wrong one spends the challenge too.
    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().expect("token").to_string();
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "reused: {}", r.text);
    assert_eq!(error_code(&r), "bad_signature");
    assert_eq!(
        api.heartbeat(OWNER, &token, 0).await.status,
        StatusCode::OK,
        "nothing changed"
    );

    // A proven record: a fresh signature without the token re-registers and reissues.
    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reissued = r.json["token"].as_str().expect("token").to_string();
    assert_eq!(
        api.heartbeat(OWNER, &token, 0).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.heartbeat(OWNER, &reissued, 0).await.status,
        StatusCode::OK
    );
}

/// An unsigned registrant that proves the key while holding the record's token is the
/// owner all along: the record becomes proven in place, keeping its token and history.
#[tokio::test]
async fn the_token_holder_who_signs_keeps_the_record() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    let token = api.register(OWNER, &["llama3.2"], 16384, 4).await;
    one_job(&api, OWNER, &token).await;
    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = register(
        &api,
        &with_signature(owner_registration(), &sig),
        Some(&token),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json.get("token").is_none(),
        "the token is kept: {}",
        r.text
    );
    assert_eq!(jobs_total(&api, OWNER).await, 1, "history kept");
    assert_eq!(api.heartbeat(OWNER, &token, 0).await.status, StatusCode::OK);
    // Proven now: an unsigned registration cannot take it, even in the default mode.
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

#[tokio::test]
async fn signature_mode_refuses_unsigned_registrations() {
    let hub = start(MinerIdentity::Signature).await;
    let api = Api::new(hub.api_addr);
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(error_code(&r), "signature_required");
    let r = api.get(&format!("/api/v1/miners/{OWNER}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing was registered");

    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json["token"].as_str().expect("token").to_string();
    // The proven owner updates with its token alone.
    let r = register(&api, &owner_registration(), Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Anybody else is refused.
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
}

#[tokio::test]
async fn a_lost_token_is_replaced_with_a_signature_and_the_history_is_kept() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    let token = api.register(OWNER, &["llama3.2"], 16384, 4).await;
    one_job(&api, OWNER, &token).await;

    let path = format!("/api/v1/miners/{OWNER}/token");
    let forged = signed(&api, OWNER, OTHER_KEY).await;
    let r = api.post(&path, &json!({"signature": forged}), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(error_code(&r), "bad_signature");
    assert_eq!(api.heartbeat(OWNER, &token, 0).await.status, StatusCode::OK);

    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = api.post(&path, &json!({"signature": sig}), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["address"], OWNER);
    let new = r.json["token"].as_str().expect("token").to_string();
    assert_ne!(new, token);
    assert_eq!(
        api.heartbeat(OWNER, &token, 0).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(api.heartbeat(OWNER, &new, 0).await.status, StatusCode::OK);
    assert_eq!(jobs_total(&api, OWNER).await, 1, "history kept");

    let r = api.post(&path, &json!({"signature": sig}), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "reused: {}", r.text);
    let r = api.post(&path, &json!({}), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // An address nobody registered.
    let nobody = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
    let sig = signed(&api, nobody, OTHER_KEY).await;
    let r = api
        .post(
            &format!("/api/v1/miners/{nobody}/token"),
            &json!({"signature": sig}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

async fn ban(api: &Api, address: &str, bearer: Option<&str>) -> common::Resp {
    api.post(
        "/api/v1/admin/bans",
        &json!({"address": address, "reason": "forged outcomes"}),
        bearer,
    )
    .await
}

async fn matched(api: &Api, address: &str) -> bool {
    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "llama3.2", "limit": 10, "reserve": false}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["miners"]
        .as_array()
        .expect("miners")
        .iter()
        .any(|m| m["address"] == address)
}

#[tokio::test]
async fn a_banned_address_cannot_register_and_is_never_matched() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    let token = api.register(OWNER, &["llama3.2"], 16384, 4).await;
    assert_eq!(api.heartbeat(OWNER, &token, 0).await.status, StatusCode::OK);
    assert!(matched(&api, OWNER).await);

    // Only the admin bans.
    assert_eq!(
        ban(&api, OWNER, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ban(&api, OWNER, Some(&token)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api
        .post(
            "/api/v1/admin/bans",
            &json!({"address": "0x12"}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"]["field"], "address");

    let r = ban(&api, OWNER, Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["address"], OWNER);
    assert_eq!(r.json["reason"], "forged outcomes");
    assert!(!matched(&api, OWNER).await, "never matched");
    let r = api.get(&format!("/api/v1/miners/{OWNER}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "its miner is gone");
    assert_eq!(
        api.heartbeat(OWNER, &token, 0).await.status,
        StatusCode::NOT_FOUND
    );

    // Registering again is refused, signed or not.
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(error_code(&r), "banned");
    let sig = signed(&api, OWNER, OWNER_KEY).await;
    let r = register(&api, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(error_code(&r), "banned");

    let r = api
        .send(Method::GET, "/api/v1/admin/bans", None, Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["bans"][0]["address"], OWNER);
    assert_eq!(r.json["bans"].as_array().map(Vec::len), Some(1));
    let r = api
        .send(Method::GET, "/api/v1/admin/bans", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Lifted: the address registers again, as a new miner.
    let path = format!("/api/v1/admin/bans/{OWNER}");
    assert_eq!(
        api.delete(&path, Some(&token)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.delete(&path, Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = api.delete(&path, Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(error_code(&r), "not_banned");
    let r = register(&api, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn the_admin_deregisters_any_miner() {
    let hub = start(MinerIdentity::Token).await;
    let api = Api::new(hub.api_addr);
    let token = api.register(OWNER, &["llama3.2"], 16384, 4).await;
    let path = format!("/api/v1/miners/{OWNER}");
    assert_eq!(
        api.delete(&path, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.delete(&path, Some("ph_wrong")).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.delete(&path, Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.heartbeat(OWNER, &token, 0).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete(&path, Some(ADMIN)).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Two hubs sharing PostgreSQL and Redis: a challenge fetched from one is answered through
/// the other (and only once), a takeover on one locks the squatter out of both, and a ban
/// placed on one holds on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs POOLHUB_TEST_DATABASE_URL and POOLHUB_TEST_REDIS_URL"]
async fn identity_and_bans_hold_on_two_hubs_sharing_postgres_and_redis() {
    let (pg, rd) = (backends::database_url(), backends::redis_url());
    let schema = backends::fresh_name("poolhub_test_");
    let prefix = backends::fresh_name("test:") + ":";
    let cfg = shared_config(&pg, &schema, &rd, &prefix);
    let hub_a = TestHub::start(cfg.clone()).await.expect("hub A");
    let hub_b = TestHub::start(cfg).await.expect("hub B");
    let (a, b) = (Api::new(hub_a.api_addr), Api::new(hub_b.api_addr));
    let second = Duration::from_secs(1);

    // The squatter registers through A; B learns of it.
    let squatter = a.register(OWNER, &["llama3.2"], 16384, 4).await;
    eventually(second, "registration reaches B", || {
        let (b, squatter) = (b.clone(), squatter.clone());
        async move { b.heartbeat(OWNER, &squatter, 0).await.status == StatusCode::OK }
    })
    .await;

    // The owner's challenge comes from A, its answer goes to B, and works once.
    let sig = signed(&a, OWNER, OWNER_KEY).await;
    let r = register(&b, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let owner = r.json["token"].as_str().expect("token").to_string();
    let r = register(&a, &with_signature(owner_registration(), &sig), None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "reused on the other hub: {}",
        r.text
    );
    assert_eq!(error_code(&r), "bad_signature");

    // A hears of the takeover: the squatter's token stops working there too.
    eventually(second, "takeover reaches A", || {
        let (a, squatter) = (a.clone(), squatter.clone());
        async move { a.heartbeat(OWNER, &squatter, 0).await.status == StatusCode::FORBIDDEN }
    })
    .await;
    assert_eq!(a.heartbeat(OWNER, &owner, 0).await.status, StatusCode::OK);

    // A lost token reissued through A stops working on B.
    let sig = signed(&b, OWNER, OWNER_KEY).await;
    let r = a
        .post(
            &format!("/api/v1/miners/{OWNER}/token"),
            &json!({"signature": sig}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reissued = r.json["token"].as_str().expect("token").to_string();
    eventually(second, "reissued token reaches B", || {
        let (b, owner) = (b.clone(), owner.clone());
        async move { b.heartbeat(OWNER, &owner, 0).await.status == StatusCode::FORBIDDEN }
    })
    .await;
    assert_eq!(
        b.heartbeat(OWNER, &reissued, 0).await.status,
        StatusCode::OK
    );

    // Banned on A: B stops matching it and refuses its registration at once.
    eventually(second, "the miner is matchable on B", || {
        let b = b.clone();
        async move { matched(&b, OWNER).await }
    })
    .await;
    assert_eq!(
        ban(&a, OWNER, Some(ADMIN)).await.status,
        StatusCode::CREATED
    );
    // At once, even before B's index hears of it: the shared store refuses the record
    // (with the owner's token: 404, the record is gone; without: 401 or 403).
    let r = register(&b, &owner_registration(), Some(&reissued)).await;
    assert!(!r.status.is_success(), "{}", r.text);
    let r = register(&b, &owner_registration(), None).await;
    assert!(!r.status.is_success(), "{}", r.text);
    eventually(second, "the ban reaches B's index", || {
        let b = b.clone();
        async move { !matched(&b, OWNER).await }
    })
    .await;
    let r = register(&b, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(error_code(&r), "banned");
    let r = b
        .send(Method::GET, "/api/v1/admin/bans", None, Some(ADMIN))
        .await;
    assert_eq!(r.json["bans"][0]["address"], OWNER, "{}", r.text);
    // Lifted on B: A lets it register.
    let r = b
        .delete(&format!("/api/v1/admin/bans/{OWNER}"), Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = register(&a, &owner_registration(), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    hub_a.stop().await;
    hub_b.stop().await;
    backends::drop_schema(&pg, &schema).await;
}

/// The whole identity flow against the built binary at trace level: no token, signature or
/// admin secret appears in its log.
#[test]
fn trace_logs_never_contain_a_signature_token_or_admin_secret() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("dir");
    let stderr = dir.path().join("stderr.log");
    let file = std::fs::File::create(&stderr).expect("stderr file");
    let served = common::Served::start(
        dir.path(),
        &["--ephemeral", "--host", "127.0.0.1", "--port", "0"],
        &[("LOG_LEVEL", "trace"), ("POOLHUB_ADMIN_TOKEN", ADMIN)],
        Stdio::from(file),
    );
    let api = served.api();
    let (secrets, signatures) = common::rt().block_on(async {
        let squatter = api.register(OWNER, &["llama3.2"], 16384, 4).await;
        let sig1 = signed(&api, OWNER, OWNER_KEY).await;
        let r = register(&api, &with_signature(owner_registration(), &sig1), None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let owner = r.json["token"].as_str().expect("token").to_string();
        // A reused signature is refused (and its refusal logged without it).
        let r = register(&api, &with_signature(owner_registration(), &sig1), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let sig2 = signed(&api, OWNER, OWNER_KEY).await;
        let r = api
            .post(
                &format!("/api/v1/miners/{OWNER}/token"),
                &json!({"signature": sig2}),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let reissued = r.json["token"].as_str().expect("token").to_string();
        assert_eq!(
            ban(&api, OWNER, Some(ADMIN)).await.status,
            StatusCode::CREATED
        );
        (
            vec![squatter, owner, reissued, ADMIN.to_string()],
            vec![sig1, sig2],
        )
    });
    let status = served.sigterm();
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&stderr).expect("log");
    assert!(
        log.contains("unproven registration taken over") && log.contains("address banned"),
        "the identity events are logged:\n{log}"
    );
    for secret in secrets.iter().chain(&signatures) {
        let bare = secret.trim_start_matches("0x").trim_start_matches("ph_");
        assert!(
            !log.contains(bare),
            "a secret appears in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(bare))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    for t in &secrets[..3] {
        assert!(
            !log.contains(&poolhub::hub::hash_token(t)),
            "a token hash is logged"
        );
    }
    assert!(
        !log.to_ascii_lowercase().contains("bearer"),
        "an Authorization header is logged"
    );
}
