//! The dashboard at `GET /` and `GET /ui`: one HTML page compiled into the binary (no CDN,
//! no build step, works offline). It reads the public API and follows the event stream; see
//! `ui/index.html`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page, embedded at build time.
pub const PAGE: &str = include_str!("ui/index.html");

/// What the page may load: itself and its own inline script and style; nothing from
/// elsewhere, and it may not be framed.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

#[utoipa::path(get, path = "/", tag = "operations",
    responses(
        (status = 200, description = "The dashboard (also at /ui)", content_type = "text/html", body = String),
    ))]
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}
