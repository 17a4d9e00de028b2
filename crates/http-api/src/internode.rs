//! The internode route and the HTTP transport that calls it.
//!
//! Nodes talk over the same listener as clients, on `POST /internal/v1/rpc`, with the
//! compact binary framing of `quorumkv_coordinator::message`. The client side keeps pooled
//! keep-alive connections to every peer and disables Nagle's algorithm: small request and
//! response bodies would otherwise wait on delayed ACKs, adding tens of milliseconds.
//!
//! With TLS ([`HttpTransport::https`]) every call goes to `https://<advertised addr>`
//! and the peer's certificate is checked against the given CA certificates only, never
//! against a system store: the nodes of a cluster are vouched for by its operator, and a
//! certificate some public authority issued for a peer's name must not pass. The peer's
//! advertised host is the name checked, so each node's certificate names it (a DNS name
//! or an IP address among its subject alternative names).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use quorumkv_coordinator::message::{self, Request};
use quorumkv_coordinator::{Transport, TransportError};

use crate::error::ApiError;
use crate::fault::FaultSwitch;
use crate::AppState;

/// The path of the internode route.
pub const RPC_PATH: &str = "/internal/v1/rpc";
/// The content type of internode bodies.
pub const RPC_CONTENT_TYPE: &str = "application/x-quorumkv-rpc";

/// `POST /internal/v1/rpc`.
pub async fn rpc(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "invalid_body", r.body_text()))?;
    let request: Request = message::decode(&body)
        .map_err(|e| ApiError::bad_request("invalid_message", e.to_string()))?;
    let response = state.coordinator.handle(request).await;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, RPC_CONTENT_TYPE)],
        message::encode(&response),
    )
        .into_response())
}

/// Reaches peers over HTTP/1.1 with pooled keep-alive connections.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
    faults: Arc<FaultSwitch>,
    /// Sent on every request when the cluster has a secret (see [`crate::auth`]).
    cluster_secret: Option<axum::http::HeaderValue>,
    /// `http` or `https`: every node of a cluster serves one of the two.
    scheme: &'static str,
}

impl HttpTransport {
    /// A transport with its own connection pool. Its connections leave from `source_ip`,
    /// or from the address the OS picks when it is `None`.
    pub fn new(source_ip: Option<IpAddr>) -> Result<Self, TransportError> {
        Self::with_roots(Vec::new(), "http", source_ip)
    }

    /// A transport that calls its peers over HTTPS and trusts the certificates of
    /// `ca_pem` (PEM, one or more) to vouch for them, and nothing else. Its connections
    /// leave from `source_ip`, as with [`HttpTransport::new`].
    pub fn https(ca_pem: &[u8], source_ip: Option<IpAddr>) -> Result<Self, TransportError> {
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| TransportError::Protocol(format!("unusable CA certificates: {e}")))?;
        Self::with_roots(roots, "https", source_ip)
    }

    fn with_roots(
        roots: Vec<reqwest::Certificate>,
        scheme: &'static str,
        source_ip: Option<IpAddr>,
    ) -> Result<Self, TransportError> {
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .https_only(scheme == "https");
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .tcp_nodelay(true)
            // Below the 10 s after which a peer closes an idle connection (its header
            // timeout): a request must never go out on a connection the peer is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(2))
            // A node with several addresses must call from the one its peers know it by:
            // otherwise a cut between two addresses (a firewall rule, a route) would not
            // separate the nodes it is meant to separate.
            .local_address(source_ip)
            .build()
            .map_err(|e| TransportError::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            faults: Arc::default(),
            cluster_secret: None,
            scheme,
        })
    }

    /// Sends `secret` with every request, as the peers' internode routes require.
    pub fn with_cluster_secret(mut self, secret: Option<&str>) -> Result<Self, TransportError> {
        self.cluster_secret = secret
            .map(|s| {
                let mut value = axum::http::HeaderValue::from_str(s).map_err(|_| {
                    TransportError::Protocol("the cluster secret is not a header value".into())
                })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(self)
    }

    /// The switch that cuts this transport's sends (fault injection in tests).
    pub fn faults(&self) -> Arc<FaultSwitch> {
        Arc::clone(&self.faults)
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<message::Response, TransportError> {
        if self.faults.blocks(addr) {
            return Err(TransportError::Unreachable(format!(
                "{addr} is cut off (fault injection)"
            )));
        }
        let url = format!("{}://{addr}{RPC_PATH}", self.scheme);
        let mut builder = self.client.post(url);
        if let Some(secret) = &self.cluster_secret {
            builder = builder.header(crate::auth::CLUSTER_SECRET_HEADER, secret.clone());
        }
        let sent = builder
            .header(header::CONTENT_TYPE, RPC_CONTENT_TYPE)
            .body(message::encode(request))
            .timeout(timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = sent.status();
        let body = sent.bytes().await.map_err(classify)?;
        if !status.is_success() {
            return Err(TransportError::Protocol(format!(
                "peer answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        message::decode(&body).map_err(|e| TransportError::Protocol(e.to_string()))
    }
}

fn classify(error: reqwest::Error) -> TransportError {
    if error.is_timeout() {
        TransportError::Timeout
    } else if error.is_connect() {
        TransportError::Unreachable(error.to_string())
    } else {
        TransportError::Protocol(error.to_string())
    }
}
