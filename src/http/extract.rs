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
///
/// A number written with a zero fraction (`5.0`) is an integer, as JSON Schema (and so the
/// OpenAPI document) says: a body that fails only for that is read again with such numbers
/// as integers. Only failed bodies pay for the second reading.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object: serde would also take a struct written as an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "the body must be a JSON object",
            ));
        }
    } else if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if integral_floats_to_integers(&mut value) {
            return serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                data_error(path, e.into_inner())
            });
        }
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
            Category::Data => data_error(path, inner),
        }
    })
}

/// `#[serde(deserialize_with = "object")]`: a nested struct that must be written as a JSON
/// object (serde alone also takes an array of its fields in order).
pub(super) fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Only<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Only(std::marker::PhantomData))
}

/// A body that is JSON but not the expected shape: 400 naming the field at `path`.
fn data_error(path: String, inner: serde_json::Error) -> ApiError {
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

/// Rewrites every number with a zero fraction that fits an `i64` or a `u64` as that
/// integer; true when it changed anything.
fn integral_floats_to_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) else {
                return false;
            };
            // 2^64 and -2^63 are exact doubles: the bounds are tested exactly.
            let as_int = if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                Some(serde_json::Number::from(f as u64))
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                Some(serde_json::Number::from(f as i64))
            } else {
                None
            };
            match as_int {
                Some(i) => {
                    *n = i;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, i| integral_floats_to_integers(i) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, i| integral_floats_to_integers(i) | changed),
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Body {
        n: u32,
        f: f64,
        list: Vec<i64>,
    }

    #[test]
    fn a_zero_fraction_is_an_integer() {
        let b: Body = parse_json(br#"{"n": 27.0, "f": 2.0, "list": [-3.0, 4]}"#).expect("parses");
        assert_eq!(
            b,
            Body {
                n: 27,
                f: 2.0,
                list: vec![-3, 4]
            }
        );
    }

    #[test]
    fn a_real_fraction_is_still_refused_and_named() {
        let e = parse_json::<Body>(br#"{"n": 27.5, "f": 1, "list": []}"#).expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("n"));
        let e = parse_json::<Body>(br#"{"n": 1.0, "f": 1, "list": [1e30]}"#).expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("list[0]"));
        let e = parse_json::<Body>(br#"{"n": 1e10, "f": 1, "list": []}"#).expect_err("too big");
        assert_eq!(e.field.as_deref(), Some("n"));
    }

    #[test]
    fn broken_json_is_named_as_such() {
        let e = parse_json::<Body>(br#"{"n": 1,"#).expect_err("refused");
        assert_eq!(e.code, "invalid_json");
    }
}
