//! The status page (`GET /`) and the readiness probe (`GET /v1/ready`).
//!
//! # The status page
//!
//! One self-contained HTML document, compiled into the binary (`status.html`): its CSS,
//! JavaScript and the SVG of the ring are inline, and it loads nothing from elsewhere, so
//! it works on a network that reaches only the nodes. The response's
//! `Content-Security-Policy` holds it to that: the page may only fetch from the node that
//! served it. Every two seconds the page reads `GET /v1/cluster` and `GET /metrics` of that
//! node and draws:
//!
//! - the members with their `up`/`down` status as this node's failure detector sees them;
//! - the ring: each member's share of the partitions it owns as primary owner, as arcs of
//!   a circle, from the `ownership` field of `/v1/cluster`;
//! - hints pending (`quorumkv_hints_pending`), peers down (`quorumkv_nodes_down`), and the
//!   pending transfers of a membership change (`quorumkv_transfers_pending`);
//! - request rates per route and method, from the deltas of
//!   `quorumkv_http_requests_total` between two polls (this node's requests only).
//!
//! Every value is written into the page as text, never as markup, so a node id cannot
//! inject anything.
//!
//! # Readiness
//!
//! `GET /v1/ready` answers 200 once the node has formed its ring (it knows the id of every
//! seed) and, while it is joining, once it has received every partition it gains; 503
//! `not_ready` otherwise, with the reason: the seeds it still waits for, how many of its
//! partitions it has received, or that it is leaving. It is what a load balancer or an
//! orchestrator's readiness probe should ask; `GET /v1/health` only says the process
//! answers.

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::admin::method_not_allowed;
use crate::error::ApiError;
use crate::params::parse_query;
use crate::AppState;

/// The status page, served as is.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// What the page may load: only what is inline, and requests to the node that served it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The routes of this module: `GET /` and `GET /v1/ready`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page).fallback(method_not_allowed))
        .route("/v1/ready", get(ready).fallback(method_not_allowed))
}

/// `GET /`: the status page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

/// `GET /v1/ready`: 200 when the node should take client traffic, 503 `not_ready` with
/// the reason before (see the module docs).
pub async fn ready(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    match state.coordinator.unready_reason() {
        None => Ok(
            Json(json!({ "status": "ready", "node": state.coordinator.node() })).into_response(),
        ),
        Some(reason) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason,
        )),
    }
}
