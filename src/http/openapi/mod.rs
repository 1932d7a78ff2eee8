//! The API as an OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`.
//!
//! Generated, not written: the schemas come from the request and response types themselves
//! (`#[derive(ToSchema)]`), and each operation from the `#[utoipa::path]` annotation on its
//! handler, beside the code it describes. What depends on the configuration is settled when
//! the router is built ([`document`]): the AITBC routes and `/metrics` appear only when they
//! are served, and the client key is required only under `auth.clients = "keys"`. A test
//! ([`tests::every_route_is_documented`]) fails when the router serves a route the document
//! lacks.

mod schemas;

pub use schemas::{Name, OwnAddress, NAME_PATTERN};

use crate::config::{ClientAuth, Config};
use std::borrow::Cow;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr};
use utoipa::{OpenApi, PartialSchema, ToSchema};

/// The path of the document itself.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "poolhub",
        description = "Pool hub for decentralized GPU inference: miners register and report \
                       their status, clients ask which miners should run a job, and the hub \
                       scores every miner from its track record. Every error is JSON: \
                       `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    paths(
        super::ui::page,
        super::handlers::health,
        super::handlers::status,
        super::handlers::metrics,
        super::handlers::list_miners,
        super::handlers::register,
        super::handlers::get_miner,
        super::handlers::delete_miner,
        super::handlers::update_status,
        super::identity::challenge,
        super::identity::reissue_token,
        super::identity::list_bans,
        super::identity::create_ban,
        super::identity::delete_ban,
        super::handlers::match_job,
        super::explain::explain,
        super::events::events,
        super::handlers::report_outcome,
        super::admin::create_key,
        super::admin::list_keys,
        super::admin::revoke_key,
        super::admin::backup,
        super::admin::replay,
        super::aitbc::register,
        super::aitbc::heartbeat,
        super::aitbc::match_job,
        super::aitbc::sla_status,
        openapi_json,
    ),
    components(schemas(MinerRef)),
    tags(
        (name = "miners", description = "Registration, status and lookup"),
        (name = "identity", description = "Proving an address with its key (EIP-4361)"),
        (name = "matching", description = "Matches, outcomes, explanations and the event stream"),
        (name = "admin", description = "Client keys, bans, backup and what-if replay"),
        (name = "operations", description = "Health, status, metrics and the dashboard"),
        (name = "aitbc", description = "AITBC's pool-hub API (compat.aitbc)"),
    )
)]
struct ApiDoc;

/// This document, as JSON.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub async fn openapi_json(
    axum::extract::State(doc): axum::extract::State<std::sync::Arc<bytes::Bytes>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes::Bytes::clone(&doc),
    )
        .into_response()
}

/// The document for a hub running `cfg`, as JSON.
pub fn document(cfg: &Config) -> serde_json::Value {
    let mut doc = serde_json::to_value(typed_document(cfg)).unwrap_or_default();
    links(&mut doc);
    let client_optional = cfg.auth.clients == ClientAuth::Open;
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths
            .values_mut()
            .filter_map(|i| i.as_object_mut())
            .flat_map(|i| i.values_mut())
        {
            if client_optional {
                make_client_key_optional(op);
            }
            let params = op.get_mut("parameters").and_then(|p| p.as_array_mut());
            for p in params.into_iter().flatten() {
                if let Some(schema) = p.get_mut("schema") {
                    not_null(schema);
                }
            }
        }
    }
    doc
}

/// How one answer feeds the next request (OpenAPI links): a match's id and first miner
/// make an outcome report; a registration's address names the miner for the routes that
/// take one. Clients and stateful fuzzers follow them.
fn links(doc: &mut serde_json::Value) {
    use serde_json::json;
    let mut link = |path: &str, method: &str, status: &str, name: &str, link: serde_json::Value| {
        if let Some(r) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('/', "~1")
            ))
            .and_then(|r| r.as_object_mut())
        {
            let links = r.entry("links").or_insert_with(|| json!({}));
            links[name] = link;
        }
    };
    link(
        "/api/v1/match",
        "post",
        "200",
        "ReportOutcome",
        json!({
            "operationId": "report_outcome",
            "description": "Report how the job went on the first miner offered",
            "requestBody": {
                "match_id": "$response.body#/match_id",
                "address": "$response.body#/miners/0/address",
                "success": true,
                "latency_ms": 250.0
            }
        }),
    );
    for path in ["/api/v1/miners/register", "/v1/miners/register"] {
        link(
            path,
            "post",
            "201",
            "GetMiner",
            json!({
                "operationId": "get_miner",
                "parameters": {"address": "$response.body#/address"}
            }),
        );
    }
}

/// Under `auth.clients = "open"` a client key is optional: the requirement list gains an
/// empty alternative, which OpenAPI reads as "no credentials needed".
fn make_client_key_optional(op: &mut serde_json::Value) {
    if let Some(security) = op.get_mut("security").and_then(|s| s.as_array_mut()) {
        if security.iter().any(|r| r.get("client_key").is_some()) {
            security.insert(0, serde_json::json!({}));
        }
    }
}

/// A parameter travels as text, where `null` cannot be told from the word "null": an
/// optional parameter is absent, never null. Drops the null alternative utoipa gives
/// `Option<T>`.
fn not_null(schema: &mut serde_json::Value) {
    use serde_json::Value;
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema["type"] = only;
        }
    }
    if let Some(Value::Array(alternatives)) = schema.get_mut("oneOf") {
        alternatives.retain(|a| a.get("type").is_none_or(|t| t != "null"));
        if alternatives.len() == 1 {
            let only = alternatives.remove(0);
            *schema = only;
        }
    }
}

fn typed_document(cfg: &Config) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let paths = &mut doc.paths.paths;
    if !cfg.compat.aitbc {
        paths.retain(|p, _| !p.starts_with("/v1/"));
    }
    if !cfg.server.metrics_on_api_port {
        paths.remove("/metrics");
    }
    // The dashboard answers at both paths; the annotation names one.
    if let Some(mut ui) = paths.get("/").cloned() {
        if let Some(op) = ui.get.as_mut() {
            op.operation_id = Some("page_ui".into());
        }
        paths.insert("/ui".to_string(), ui);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    security_schemes(components);
    components
        .responses
        .insert("Error".into(), RefOr::T(error_response("An error")));
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            common_errors(op);
        }
    }
    doc
}

/// The document as the bytes the route answers.
pub fn document_bytes(cfg: &Config) -> bytes::Bytes {
    // Cannot fail: the document is plain data with string keys.
    serde_json::to_vec(&document(cfg))
        .unwrap_or_default()
        .into()
}

fn security_schemes(c: &mut utoipa::openapi::Components) {
    let bearer = |what: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build(),
        )
    };
    c.add_security_scheme(
        "miner_token",
        bearer(
            "The miner's token, answered once by its registration (or by POST \
             /api/v1/miners/{address}/token): `Authorization: Bearer <token>`.",
        ),
    );
    c.add_security_scheme(
        "client_key",
        bearer(
            "A client key (`poolhub keys create`, or POST /api/v1/admin/keys): required for \
             matches, outcomes, explanations and events when auth.clients = \"keys\".",
        ),
    );
    c.add_security_scheme(
        "admin_key",
        bearer("The operator's admin token (auth.admin_token / admin_token_file) or an admin-role key."),
    );
    c.add_security_scheme(
        "aitbc_api_key",
        bearer("An AITBC miner's api_key, as its registration gave it."),
    );
    c.add_security_scheme(
        "aitbc_api_key_header",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Api-Key",
            "An AITBC miner's api_key, in AITBC's own header.",
        ))),
    );
}

/// Every operation of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(super::error::ErrorBody::schema())),
        )
        .build()
}

/// The answers any route may give, whatever it does: named here once rather than on every
/// annotation.
fn common_errors(op: &mut Operation) {
    let has_body = op.request_body.is_some();
    let mut add = |code: &str, r: Response| {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert(RefOr::T(r));
    };
    add(
        "400",
        error_response("Invalid input: a field (named in `field`), the path or the query"),
    );
    if has_body {
        add(
            "413",
            error_response("The body is larger than server.max_body_bytes"),
        );
    }
    add(
        "408",
        error_response("The request took longer than server.request_timeout"),
    );
    let mut too_many = error_response(
        "Over a rate limit (auth.rate_limits): per client key, miner or source address",
    );
    too_many.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(u64::schema())
            .description(Some("Seconds until a retry can succeed (at least 1)"))
            .build(),
    );
    add("429", too_many);
    add(
        "500",
        error_response("A handler failed unexpectedly (a bug: please report it)"),
    );
    add(
        "503",
        error_response("Storage is unavailable: nothing was changed"),
    );
}

/// The `{address}` segment: an address, or the miner_id of a miner registered by name.
pub struct MinerRef;

impl PartialSchema for MinerRef {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Address::schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("A named miner's miner_id"))
                    .max_length(Some(128))
                    .pattern(Some(
                        r"^[^\s\x00-\x1f\x7f-\x9f/0]([^\x00-\x1f\x7f-\x9f/]*[^\s\x00-\x1f\x7f-\x9f/])?$",
                    )),
            )
            .into()
    }
}
impl ToSchema for MinerRef {}

use crate::domain::Address;

/// AITBC's `base_price`: a non-negative decimal, as a string or a number.
pub struct Price;

impl PartialSchema for Price {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0)),
            )
            .into()
    }
}
impl ToSchema for Price {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Price")
    }
}

/// An AITBC tag's value: text (at most 512 characters), a number or a boolean.
pub struct TagValue;

impl PartialSchema for TagValue {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(512))
                    .pattern(Some(r"^[^\x00-\x1f\x7f-\x9f]*$")),
            )
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .into()
    }
}
impl ToSchema for TagValue {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TagValue")
    }
}

/// AITBC's `tags`: at most 64, each named like a model, with a [`TagValue`].
pub struct Tags;

impl PartialSchema for Tags {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(128))
                    .pattern(Some(NAME_PATTERN)),
            ))
            .additional_properties(Some(TagValue::schema()))
            .max_properties(Some(64))
            .into()
    }
}
impl ToSchema for Tags {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Tags")
    }
}

#[cfg(test)]
mod tests;
