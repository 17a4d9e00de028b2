//! The HTTP face of quorumkv: client, admin and internode routes on one listener.
//!
//! # What this crate does
//!
//! It turns HTTP requests into calls on the coordinator and the answers back into HTTP,
//! and it provides the HTTP implementation of the coordinator's transport. It decides
//! nothing about replication: every rule about quorums, versions and placement lives below.
//!
//! # The contract
//!
//! Routes, parameters, headers, status codes and error codes are a public contract,
//! described in `openapi.json` (served at `GET /v1/openapi.json`) and checked against the
//! router by a test. Every error is JSON, `{"error": "<code>", "message": "..."}`, mapped in
//! one place ([`error`]). Input is validated completely before anything is stored: a request
//! that fails validation changes nothing.
//!
//! A value whose declared length is over the limit is refused before its body is read, and
//! the node's [`Edge`] checks credentials and bounds a request as a whole, so that a slow
//! client cannot hold a task forever; the listener's own limits (head size and time,
//! connections) are set where it is served.
//!
//! # Layout
//!
//! [`keys`] serves the key routes, [`admin`] bucket properties, health, cluster view,
//! metrics and the OpenAPI document, [`internode`] the internode route and transport,
//! [`edge`] what every request passes first: [`browser`] (what a web page may make a
//! browser send) and [`auth`] (tokens, admin tokens, the cluster secret),
//! [`params`] the strict parsing of raw paths and query strings, [`observe`] the request
//! metrics, [`status`] the status page (`GET /`) and the readiness probe.

pub mod admin;
pub mod auth;
pub mod browser;
pub mod current;
pub mod edge;
pub mod error;
pub mod fault;
pub mod internode;
pub mod keys;
pub mod observe;
pub mod params;
mod peers;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use quorumkv_coordinator::{ContextKey, Coordinator};

use crate::observe::QuorumSeries;

pub use auth::Credentials;
pub use browser::BrowserGuard;
pub use current::Current;
pub use edge::Edge;
pub use error::ApiError;
pub use internode::HttpTransport;

/// The header that carries the causal context token.
pub const CONTEXT_HEADER: &str = "x-causal-context";

/// The largest internode body: a merged object may carry several siblings of the largest
/// value size.
const MAX_INTERNODE_BODY: usize = 256 * 1024 * 1024;

/// What every route needs.
#[derive(Clone)]
pub struct AppState {
    /// The request path of this node.
    pub coordinator: Arc<Coordinator>,
    /// Renders `/metrics`; `None` serves an empty page (tests that install no recorder).
    pub metrics: Option<PrometheusHandle>,
    /// The largest value a PUT may carry.
    pub max_value_bytes: usize,
    /// Signs the causal context tokens this node issues and checks those it is sent;
    /// replaced when the cluster secret is read again.
    pub context_key: Current<ContextKey>,
    /// Whether the node serves the fault-injection routes (`--fault-injection`): shown in
    /// `GET /v1/cluster`, so that nobody mistakes a test node for a production one.
    pub fault_injection: bool,
    /// The latency histograms of client key requests, kept once registered.
    quorum_series: Arc<QuorumSeries>,
}

impl AppState {
    /// The state of a node's routes: its coordinator, the handle that renders `/metrics`
    /// (`None` serves an empty page, for tests that install no recorder) and the largest
    /// value a PUT may carry.
    pub fn new(
        coordinator: Arc<Coordinator>,
        metrics: Option<PrometheusHandle>,
        max_value_bytes: usize,
    ) -> Self {
        Self {
            coordinator,
            metrics,
            max_value_bytes,
            // A node's own key until the server gives the cluster's: tokens then stay good
            // at this process only, which is all an in-process router needs.
            context_key: Current::new(ContextKey::random()),
            fault_injection: false,
            quorum_series: Arc::default(),
        }
    }

    /// Signs and checks causal context tokens with `key`, the cluster's (see
    /// [`ContextKey`]), as it is whenever a request comes.
    pub fn with_context_key(mut self, key: Current<ContextKey>) -> Self {
        self.context_key = key;
        self
    }

    /// Says in `GET /v1/cluster` whether this node serves the fault-injection routes.
    pub fn with_fault_injection(mut self, on: bool) -> Self {
        self.fault_injection = on;
        self
    }

    /// The request's timeout, checked against the node's limit.
    pub(crate) fn timeout(&self, timeout: Option<Duration>) -> Result<Option<Duration>, ApiError> {
        timeout
            .map(|t| self.coordinator.check_timeout(t))
            .transpose()
            .map_err(ApiError::from)
    }
}

/// The router of one node: client and admin routes under `/v1`, `/metrics`, and the
/// internode route.
pub fn router(state: AppState) -> Router {
    let client = Router::new()
        .route(
            "/v1/buckets/{bucket}/keys/{*key}",
            get(keys::get_key)
                .put(keys::put_key)
                .delete(keys::delete_key)
                .fallback(admin::method_not_allowed),
        )
        .route("/v1/buckets/{bucket}/keys/", any(keys::empty_key))
        .route(
            "/v1/buckets/{bucket}/props",
            get(admin::get_props)
                .put(admin::put_props)
                .fallback(admin::method_not_allowed),
        )
        .route(
            "/v1/health",
            get(admin::health).fallback(admin::method_not_allowed),
        )
        .route(
            "/v1/cluster",
            get(admin::cluster).fallback(admin::method_not_allowed),
        )
        .route(
            "/v1/cluster/leave",
            post(admin::leave).fallback(admin::method_not_allowed),
        )
        .route(
            "/v1/cluster/remove",
            post(admin::remove).fallback(admin::method_not_allowed),
        )
        .route(
            "/v1/cluster/cleanup",
            post(admin::cleanup).fallback(admin::method_not_allowed),
        )
        .route(
            "/v1/openapi.json",
            get(admin::openapi).fallback(admin::method_not_allowed),
        )
        .route(
            "/metrics",
            get(admin::metrics).fallback(admin::method_not_allowed),
        )
        // The limit is checked against Content-Length up front and while streaming otherwise;
        // one byte of slack lets the handler tell "at the limit" from "over it".
        .layer(DefaultBodyLimit::max(
            state.max_value_bytes.saturating_add(1),
        ));
    let internode = Router::new()
        .route(
            internode::RPC_PATH,
            post(internode::rpc).fallback(admin::method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_INTERNODE_BODY));
    client
        .merge(internode)
        .merge(status::router())
        .route_layer(observe::TrackLayer::default())
        .fallback(admin::unknown_route)
        .with_state(state)
}
