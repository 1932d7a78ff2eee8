//! Miner identity over HTTP: challenges, signed registrations, takeovers of squatted
//! addresses, lost-token recovery and the `"signature"` mode.
//!
//! Signatures are made here with `k256` (the hub's own dependency) the way a wallet's
//! `personal_sign` makes them (EIP-191 over the challenge's message), with the Hardhat test
//! key #0; `src/domain/identity.rs` checks the verifier against eth-account's vectors.

mod common;

use common::{registration, Api};
use hyper::StatusCode;
use k256::ecdsa::SigningKey;
use poolhub::config::{Config, MinerIdentity};
use poolhub::domain::identity::personal_message_hash;
use poolhub::server::TestHub;
use serde_json::{json, Value};

/// Hardhat's account #0: a well-known test key, never a real one.
const OWNER_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OWNER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// Hardhat's account #1, for a signer that does not own `OWNER`.
const OTHER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn key(hex_key: &str) -> SigningKey {
    let bytes = hex::decode(hex_key).expect("hex");
    SigningKey::from_slice(&bytes).expect("key")
}

/// `personal_sign(message)` as a wallet returns it: `0x` + r || s || v (v = 27/28).
fn sign(hex_key: &str, message: &str) -> String {
    let hash = personal_message_hash(message.as_bytes());
    let (sig, recid) = key(hex_key).sign_prehash_recoverable(&hash).expect("sign");
    let mut out = sig.to_bytes().to_vec();
    out.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(out))
}

async fn start(identity: MinerIdentity) -> TestHub {
    let mut cfg = Config::default();
    cfg.storage.ephemeral = true;
    cfg.auth.miner_identity = identity;
    TestHub::start(cfg).await.expect("hub")
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
