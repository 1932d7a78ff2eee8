//! Extractors that turn requests into domain values or a clear 4xx [`ApiError`].

use super::error::ApiError;
use crate::domain::Address;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body. Unlike `axum::Json` it does not insist on a Content-Type (curl's `-d` sends
/// a form type), and its errors name the offending field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                payload_too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", r.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The 413 answer to a body over `server.max_body_bytes`.
fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the configured limit (server.max_body_bytes)",
    )
}

/// Reads a whole body within `max` bytes, for the code that reads bodies before or without
/// the router's extractors (the registration limit, `http::fast`): 413 beyond the limit, as
/// [`ApiJson`] answers, and 400 when the body cannot be read.
pub(super) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(payload_too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// Parses JSON, naming the field at fault.
///
/// A good body is parsed once, by serde_json alone. Only a bad one is parsed again, through
/// `serde_path_to_error`, to name the field: tracking the path costs on every field, and
/// good bodies are nearly all of the traffic.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            ),
            Category::Data => {
                let field = if path == "." { None } else { Some(path) };
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_field",
                    message: match &field {
                        Some(f) => format!("{f}: {inner}"),
                        None => inner.to_string(),
                    },
                    field,
                }
            }
        }
    })
}

/// The bearer token, if the request carries one.
pub struct Bearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(bearer(&parts.headers).map(str::to_string)))
    }
}

/// The bearer token of `Authorization: Bearer <token>`, borrowed: the rate-limit layer reads
/// it on every match without allocating, and the same rules apply as for [`Bearer`].
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
}

/// A miner named in a path: `0x…` is an address (refused when malformed); anything else is
/// the name of a miner registered by name (AITBC's `miner_id`), found at its derived address.
pub(super) fn miner_in_path(raw: &str) -> Result<Address, crate::domain::Invalid> {
    if raw.starts_with("0x") || raw.starts_with("0X") {
        return raw.parse();
    }
    crate::domain::profile::validate_miner_id(raw)?;
    Ok(Address::for_miner_id(raw))
}

/// The `{address}` path segment: an address, or a miner's name (see [`miner_in_path`]).
pub struct AddressPath(pub Address);

impl<S: Send + Sync> FromRequestParts<S> for AddressPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text())
                })?;
        miner_in_path(&raw)
            .map(AddressPath)
            .map_err(ApiError::invalid)
    }
}
