//! The four attacks on a public pool (issue 8: squat, drain, defame, self-boost), tried as an
//! outsider would against the built binary with the production trust settings:
//! `POOLHUB_CLIENT_AUTH=keys`, `POOLHUB_MINER_IDENTITY=signature`, an admin secret, and a
//! per-key reservation cap. Every attack must fail and leave the victim's record untouched.

mod common;

use common::{personal_sign, registration, rt, Api, Served};
use hyper::StatusCode;
use serde_json::{json, Value};

/// Hardhat's accounts #0 and #1: well-known test keys, never real ones.
const OWNER_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OWNER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const ATTACKER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const ATTACKER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
const ADMIN: &str = "attack-test-admin-secret-0001";

/// Registers `address` with a signature by `key` over a fresh challenge.
async fn signed_registration(api: &Api, address: &str, key: &str) -> common::Resp {
    let c = api
        .post(
            &format!("/api/v1/miners/{address}/challenge"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    let mut body = registration(address, &["llama3.2"], 16384, 4);
    body["signature"] = json!(personal_sign(key, c.json["message"].as_str().expect("msg")));
    api.post("/api/v1/miners/register", &body, None).await
}

async fn client_key(api: &Api, name: &str) -> String {
    let r = api
        .post(
            "/api/v1/admin/keys",
            &json!({"name": name, "role": "client"}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["key"].as_str().expect("key").to_string()
}

async fn match_with(api: &Api, key: Option<&str>) -> common::Resp {
    api.post(
        "/api/v1/match",
        &json!({"model": "llama3.2", "limit": 1}),
        key,
    )
    .await
}

async fn outcome_with(api: &Api, match_id: &str, success: bool, key: Option<&str>) -> u16 {
    api.post(
        "/api/v1/outcomes",
        &json!({"match_id": match_id, "address": OWNER, "success": success, "latency_ms": 100.0}),
        key,
    )
    .await
    .status
    .as_u16()
}

async fn owner_record(api: &Api) -> Value {
    let r = api.get(&format!("/api/v1/miners/{OWNER}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

#[test]
fn squat_drain_defame_and_self_boost_all_fail_against_the_built_binary() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("hub.toml"),
        "[auth]\nmax_reservations_per_client = 2\n",
    )
    .expect("config");
    let hub = Served::start(
        dir.path(),
        &["--config", "hub.toml", "--ephemeral", "--port", "0"],
        &[
            ("POOLHUB_CLIENT_AUTH", "keys"),
            ("POOLHUB_MINER_IDENTITY", "signature"),
            ("POOLHUB_ADMIN_TOKEN", ADMIN),
        ],
        std::process::Stdio::null(),
    );
    let api = hub.api();
    rt().block_on(async {
        // Squat: registering the owner's address without its key fails, signed or not.
        let unsigned = api
            .post(
                "/api/v1/miners/register",
                &registration(OWNER, &["llama3.2"], 16384, 4),
                None,
            )
            .await;
        assert_eq!(
            unsigned.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            unsigned.text
        );
        let forged = signed_registration(&api, OWNER, ATTACKER_KEY).await;
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.text);
        assert_eq!(forged.json["error"]["code"], "bad_signature");
        // The owner registers with its own signature; the attacker registers its own miner.
        let owner = signed_registration(&api, OWNER, OWNER_KEY).await;
        assert_eq!(owner.status, StatusCode::CREATED, "{}", owner.text);
        let owner_token = owner.json["token"].as_str().expect("token").to_string();
        let attacker = signed_registration(&api, ATTACKER, ATTACKER_KEY).await;
        assert_eq!(attacker.status, StatusCode::CREATED, "{}", attacker.text);
        let attacker_token = attacker.json["token"].as_str().expect("token").to_string();
        for (a, t) in [(OWNER, &owner_token), (ATTACKER, &attacker_token)] {
            let r = api.heartbeat(a, t, 0).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        let coordinator = client_key(&api, "coordinator-1").await;
        let other_client = client_key(&api, "coordinator-2").await;

        // Drain: anonymous and miner-token matches are refused; a key's reservations stop at
        // its cap, and another key still reserves.
        assert_eq!(
            match_with(&api, None).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            match_with(&api, Some(&attacker_token)).await.status,
            StatusCode::FORBIDDEN
        );
        let mut reserved = Vec::new();
        let mut owner_match = None;
        for _ in 0..4 {
            let m = match_with(&api, Some(&coordinator)).await;
            assert_eq!(m.status, StatusCode::OK, "{}", m.text);
            reserved.push(m.json["reserved"] == true);
            if m.json["miners"][0]["address"] == json!(OWNER) {
                owner_match = m.json["match_id"].as_str().map(str::to_string);
            }
        }
        assert_eq!(reserved, [true, true, false, false], "cap of 2 per key");
        let m = match_with(&api, Some(&other_client)).await;
        assert_eq!(
            m.json["reserved"], true,
            "another key is not drained: {}",
            m.text
        );
        let match_id = owner_match.expect("a match offered the owner's miner");

        // Defame and self-boost: outcomes for the coordinator's match from anyone else fail,
        // and count for nothing.
        let before = owner_record(&api).await;
        assert_eq!(outcome_with(&api, &match_id, false, None).await, 401);
        assert_eq!(
            outcome_with(&api, &match_id, false, Some(&attacker_token)).await,
            403
        );
        assert_eq!(
            outcome_with(&api, &match_id, true, Some(&owner_token)).await,
            403,
            "a miner cannot report its own success"
        );
        assert_eq!(
            outcome_with(&api, &match_id, false, Some(&other_client)).await,
            403,
            "not_your_match"
        );
        let after = owner_record(&api).await;
        assert_eq!(before["stats"], after["stats"], "no forged outcome counted");
        assert_eq!(before["score"], after["score"]);
        // The coordinator's own report is accepted, once.
        assert_eq!(
            outcome_with(&api, &match_id, true, Some(&coordinator)).await,
            201
        );
        assert_eq!(owner_record(&api).await["stats"]["jobs_total"], 1);
    });
    hub.sigterm();
}
