//! One error type for every handler, mapped to a status code and a JSON body once.
//!
//! Body: `{"error":{"code":"...","message":"..."}}`, plus `"field"` when one field is to blame.

use crate::domain::Invalid;
use crate::hub::views::public_reason;
use crate::hub::HubError;
use crate::store::{ClaimError, StoreError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// Every error's body: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// A stable, machine-readable code (`invalid_field`, `miner_not_found`, ...).
    code: &'a str,
    /// What went wrong, for a person.
    message: &'a str,
    /// The offending field's dotted path, when one field is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(e: Invalid) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::invalid(e)
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let msg = e.to_string();
        match e {
            HubError::Invalid(i) => Self::invalid(i),
            HubError::Unauthorized => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", msg),
            HubError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", msg),
            HubError::MinerNotFound(_) => Self::new(StatusCode::NOT_FOUND, "miner_not_found", msg),
            HubError::KeyNotFound(_) => Self::new(StatusCode::NOT_FOUND, "key_not_found", msg),
            HubError::BadSignature(_) => Self {
                field: Some("signature".into()),
                ..Self::new(StatusCode::UNAUTHORIZED, "bad_signature", msg)
            },
            HubError::SignatureRequired => Self {
                field: Some("signature".into()),
                ..Self::new(StatusCode::UNAUTHORIZED, "signature_required", msg)
            },
            HubError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", msg),
            HubError::KeyInUse => Self::new(StatusCode::CONFLICT, "key_in_use", msg),
            HubError::NamedRegistrationRefused => {
                Self::new(StatusCode::FORBIDDEN, "signature_required", msg)
            }
            HubError::UnknownKey => Self::new(StatusCode::UNAUTHORIZED, "unknown_key", msg),
            HubError::NotBanned(_) => Self::new(StatusCode::NOT_FOUND, "not_banned", msg),
            HubError::ReservedAddress => Self {
                field: Some("address".into()),
                ..Self::new(StatusCode::FORBIDDEN, "reserved_address", msg)
            },
            HubError::Claim(c) => match c {
                ClaimError::UnknownMatch => Self::new(StatusCode::NOT_FOUND, "unknown_match", msg),
                ClaimError::NotOffered => {
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "not_offered", msg)
                }
                ClaimError::AlreadyReported => {
                    Self::new(StatusCode::CONFLICT, "already_reported", msg)
                }
                ClaimError::NotYourMatch => Self::new(StatusCode::FORBIDDEN, "not_your_match", msg),
                ClaimError::Store(s) => Self::from(HubError::Store(s)),
            },
            HubError::Store(s) => match s {
                StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", msg),
                StoreError::AlreadyExists => Self::new(StatusCode::CONFLICT, "conflict", msg),
                StoreError::TokenMismatch => Self::new(StatusCode::FORBIDDEN, "forbidden", msg),
                StoreError::Banned => Self::new(
                    StatusCode::FORBIDDEN,
                    "banned",
                    "this address is banned from the pool: it cannot register",
                ),
                StoreError::Unavailable { backend, .. } | StoreError::Corrupt { backend, .. } => {
                    // The detail (the backend's own error and its causes) can name hosts,
                    // users or paths: the hub logged it (Hub::store_error), the client learns
                    // only the backend.
                    tracing::debug!(backend, "answering 503: storage failed");
                    Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        format!("the change was not stored: {}", public_reason(&s)),
                    )
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}
