//! `GET /api/v1/openapi.json` as a client sees it: an OpenAPI 3.1 document of this hub, and
//! requests the document describes are answered as it says (a few by hand here; the
//! schemathesis run in tests/fuzz/run.sh does it by the thousand).

mod common;

use common::{addr, Api};
use hyper::StatusCode;
use poolhub::config::{ClientAuth, Config};
use poolhub::server::TestHub;
use serde_json::{json, Value};

fn cfg() -> Config {
    let mut c = Config::default();
    c.storage.ephemeral = true;
    c
}

async fn document(api: &Api) -> Value {
    let r = api.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

#[tokio::test]
async fn the_document_describes_this_hub() {
    let hub = TestHub::start(cfg()).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let doc = document(&api).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for (path, method) in [
        ("/api/v1/miners/register", "post"),
        ("/api/v1/miners/{address}/status", "post"),
        ("/api/v1/match", "post"),
        ("/api/v1/match/explain", "post"),
        ("/api/v1/outcomes", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/admin/keys", "post"),
        ("/api/v1/openapi.json", "get"),
        ("/health", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    // Open clients (the built-in default): the client key is optional.
    assert_eq!(
        doc["paths"]["/api/v1/match"]["post"]["security"],
        json!([{}, {"client_key": []}])
    );
    // The error shape every route answers with.
    let err = &doc["components"]["schemas"]["Error"];
    assert_eq!(err["required"], json!(["error"]));
}

#[tokio::test]
async fn with_client_keys_the_document_requires_them() {
    let mut c = cfg();
    c.auth.clients = ClientAuth::Keys;
    let hub = TestHub::start(c).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let doc = document(&api).await;
    assert_eq!(
        doc["paths"]["/api/v1/match"]["post"]["security"],
        json!([{"client_key": []}])
    );
    // And the hub does what it says: no key, 401 in the documented shape.
    let r = api.match_model("m", 1).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(doc["paths"]["/api/v1/match"]["post"]["responses"]["401"].is_object());
    assert!(r.json["error"]["code"].is_string());
}

#[tokio::test]
async fn bodies_are_objects_all_the_way_down() {
    let hub = TestHub::start(cfg()).await.expect("hub");
    let api = Api::new(hub.api_addr);
    // A struct written as an array: serde would take it; the document does not.
    let r = api
        .post(
            "/api/v1/match",
            &json!({"model": "m", "requirements": [1, null]}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["error"]["field"], "requirements");
    let r = api.post_raw("/api/v1/match", br#"["m", null, {}]"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("JSON object"), "{}", r.text);
    // An integer written with a zero fraction is an integer (JSON Schema's reading).
    let r = api
        .post("/api/v1/match", &json!({"model": "m", "limit": 3.0}), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .post("/api/v1/match", &json!({"model": "m", "limit": 3.5}), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn deregistering_needs_credentials_before_anything_else() {
    let hub = TestHub::start(cfg()).await.expect("hub");
    let api = Api::new(hub.api_addr);
    let token = api.register(&addr(1), &["m"], 8192, 1).await;
    // No token: 401, whether or not the miner exists.
    for a in [addr(1), addr(2)] {
        let r = api.delete(&format!("/api/v1/miners/{a}"), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
    // With a token: 404 for no such miner, 403 for a token that is not this miner's.
    let r = api
        .delete(&format!("/api/v1/miners/{}", addr(2)), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = api
        .delete(&format!("/api/v1/miners/{}", addr(1)), Some("not-a-token"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = api
        .delete(&format!("/api/v1/miners/{}", addr(1)), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
