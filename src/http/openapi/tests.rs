use super::*;

/// Every configuration-dependent route switched on.
fn everything() -> Config {
    let mut cfg = Config::default();
    cfg.compat.aitbc = true;
    cfg.server.metrics_on_api_port = true;
    cfg
}

fn operation<'a>(
    doc: &'a serde_json::Value,
    path: &str,
    method: &str,
) -> Option<&'a serde_json::Value> {
    doc.get("paths")?
        .get(path)?
        .get(method.to_ascii_lowercase())
}

#[test]
fn every_route_is_documented() {
    for cfg in [Config::default(), everything()] {
        let doc = serde_json::to_value(document(&cfg)).expect("json");
        let routes = crate::http::routes(&cfg);
        assert!(routes.len() >= 24, "the route table lost routes");
        for r in &routes {
            assert!(
                operation(&doc, r.path, r.method.as_str()).is_some(),
                "{} {} is served but not in the OpenAPI document",
                r.method,
                r.path
            );
        }
        // And the other way: the document promises nothing the router lacks.
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for method in item.as_object().expect("item").keys() {
                if method == "parameters" {
                    continue;
                }
                assert!(
                    routes
                        .iter()
                        .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                    "the document names {method} {path}, which the router does not serve"
                );
            }
        }
    }
}

#[test]
fn the_document_is_openapi_3_1_with_security_schemes() {
    let mut cfg = Config::default();
    cfg.auth.clients = ClientAuth::Keys;
    let doc = serde_json::to_value(document(&cfg)).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("schemes");
    for s in ["miner_token", "client_key", "admin_key", "aitbc_api_key"] {
        assert!(schemes.contains_key(s), "{s} missing");
    }
    // Client keys required: no empty alternative.
    let sec = &operation(&doc, "/api/v1/match", "post").expect("match")["security"];
    assert_eq!(sec, &serde_json::json!([{"client_key": []}]));
    let admin = &operation(&doc, "/api/v1/admin/keys", "post").expect("keys")["security"];
    assert_eq!(admin, &serde_json::json!([{"admin_key": []}]));
}

#[test]
fn open_clients_make_the_client_key_optional() {
    let mut cfg = Config::default();
    cfg.auth.clients = ClientAuth::Open;
    let doc = serde_json::to_value(document(&cfg)).expect("json");
    let sec = &operation(&doc, "/api/v1/match", "post").expect("match")["security"];
    assert_eq!(sec, &serde_json::json!([{}, {"client_key": []}]));
    // Admin routes stay guarded.
    let admin = &operation(&doc, "/api/v1/admin/bans", "get").expect("bans")["security"];
    assert_eq!(admin, &serde_json::json!([{"admin_key": []}]));
}

#[test]
fn every_operation_documents_the_error_shape_and_rate_limits() {
    let doc = serde_json::to_value(document(&everything())).expect("json");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let r = &op["responses"];
            for code in ["400", "408", "429", "500", "503"] {
                assert!(r.get(code).is_some(), "{method} {path} lacks {code}");
            }
            assert!(
                r["429"]["headers"].get("Retry-After").is_some(),
                "{method} {path}: 429 without Retry-After"
            );
            if op.get("requestBody").is_some() {
                assert!(r.get("413").is_some(), "{method} {path} lacks 413");
            }
        }
    }
}

#[test]
fn configuration_dependent_routes_follow_the_configuration() {
    let mut cfg = Config::default();
    cfg.compat.aitbc = false;
    cfg.server.metrics_on_api_port = false;
    let doc = serde_json::to_value(document(&cfg)).expect("json");
    assert!(doc["paths"].get("/v1/match").is_none());
    assert!(doc["paths"].get("/metrics").is_none());
    let doc = serde_json::to_value(document(&everything())).expect("json");
    assert!(doc["paths"].get("/v1/match").is_some());
    assert!(doc["paths"].get("/metrics").is_some());
    assert!(doc["paths"].get("/ui").is_some());
}

#[test]
fn schemas_carry_the_validation_rules() {
    let doc = serde_json::to_value(document(&Config::default())).expect("json");
    let s = &doc["components"]["schemas"];
    assert_eq!(s["Address"]["pattern"], "^0[xX][0-9a-fA-F]{40}$");
    assert_eq!(
        s["Capabilities"]["properties"]["gpu_memory"]["maximum"],
        16777216
    );
    assert_eq!(s["Name"]["maxLength"], 128);
    let name = regex_lite_match(NAME_PATTERN);
    assert!(name("llama3.2") && name("a b") && !name(" lead") && !name("tail ") && !name(""));
}

/// A tiny check of [`NAME_PATTERN`]'s meaning without a regex engine: the same rules as
/// `validate_name`, phrased as the pattern phrases them.
fn regex_lite_match(_pattern: &str) -> impl Fn(&str) -> bool {
    |s: &str| {
        let ctl = |c: char| (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32));
        let edge = |c: Option<char>| c.is_some_and(|c| !c.is_whitespace() && !ctl(c));
        !s.is_empty()
            && edge(s.chars().next())
            && edge(s.chars().last())
            && !s.chars().any(ctl)
            && crate::domain::miner::validate_name("n", s).is_ok()
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = document(&everything());
    let mut seen = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(seen.insert(id.to_string()), "{method} {path}: {id} twice");
        }
    }
}
