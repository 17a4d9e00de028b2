//! The internode route and the HTTP transport that calls it.
//!
//! Nodes talk over the same listener as clients, on `POST /internal/v1/rpc`, with the
//! compact binary framing of `quorumkv_coordinator::message`. The client side keeps
//! keep-alive connections to every peer, with Nagle's algorithm off (the `peers` module).
//! A connection that cannot be opened means the peer is unreachable, unless opening it
//! timed out (a timeout, as any other); a connection that fails in the middle of an
//! exchange, or a peer that answers other than 2xx, is a protocol error.
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
use http_body_util::Full;
use quorumkv_coordinator::message::{self, Request};
use quorumkv_coordinator::{Transport, TransportError};

use crate::current::Current;
use crate::error::ApiError;
use crate::fault::FaultSwitch;
use crate::peers::{ExchangeError, Peers};
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
    message::validate(&request).map_err(|why| ApiError::bad_request("invalid_message", why))?;
    let response = state.coordinator.handle(request).await;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, RPC_CONTENT_TYPE)],
        message::encode(&response),
    )
        .into_response())
}

/// Reaches peers over HTTP/1.1 with keep-alive connections.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    peers: Arc<Peers>,
    faults: Arc<FaultSwitch>,
    /// Sent on every request when the cluster has a secret (see [`crate::auth`]);
    /// replaced when the secret file is read again.
    cluster_secret: Current<Option<axum::http::HeaderValue>>,
}

impl HttpTransport {
    /// A transport with its own connections. They leave from `source_ip`, or from the
    /// address the OS picks when it is `None`.
    pub fn new(source_ip: Option<IpAddr>) -> Result<Self, TransportError> {
        Ok(Self::with_peers(Peers::plain(source_ip)))
    }

    /// A transport that calls its peers over HTTPS and trusts the certificates of
    /// `ca_pem` (PEM, one or more) to vouch for them, and nothing else. Its connections
    /// leave from `source_ip`, as with [`HttpTransport::new`].
    pub fn https(ca_pem: &[u8], source_ip: Option<IpAddr>) -> Result<Self, TransportError> {
        let peers = Peers::tls(ca_pem, source_ip).map_err(TransportError::Protocol)?;
        Ok(Self::with_peers(peers))
    }

    fn with_peers(peers: Peers) -> Self {
        Self {
            peers: Arc::new(peers),
            faults: Arc::default(),
            cluster_secret: Current::new(None),
        }
    }

    /// Sends `secret` with every request, as the peers' internode routes require.
    pub fn with_cluster_secret(self, secret: Option<&str>) -> Result<Self, TransportError> {
        self.set_cluster_secret(secret)?;
        Ok(self)
    }

    /// Sends `secret` from now on, in place of the one this transport sent: a rotation
    /// of the cluster secret without a restart.
    pub fn set_cluster_secret(&self, secret: Option<&str>) -> Result<(), TransportError> {
        let secret = secret
            .map(|s| {
                let mut value = axum::http::HeaderValue::from_str(s).map_err(|_| {
                    TransportError::Protocol("the cluster secret is not a header value".into())
                })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        self.cluster_secret.set(secret);
        Ok(())
    }

    /// The switch that cuts this transport's sends (fault injection in tests).
    pub fn faults(&self) -> Arc<FaultSwitch> {
        Arc::clone(&self.faults)
    }

    fn http_request(
        &self,
        addr: &str,
        request: &Request,
    ) -> Result<axum::http::Request<Full<Bytes>>, TransportError> {
        let mut builder = axum::http::Request::post(RPC_PATH)
            .header(header::HOST, addr)
            .header(header::CONTENT_TYPE, RPC_CONTENT_TYPE);
        if let Some(secret) = self.cluster_secret.get().as_ref() {
            builder = builder.header(crate::auth::CLUSTER_SECRET_HEADER, secret.clone());
        }
        builder
            .body(Full::new(Bytes::from(message::encode(request))))
            .map_err(|e| {
                TransportError::Protocol(format!("cannot make the request to {addr}: {e}"))
            })
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
        let http = self.http_request(addr, request)?;
        let exchange = self.peers.exchange(addr, http, crate::MAX_INTERNODE_BODY);
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(ExchangeError::Connect(message))) => {
                return Err(TransportError::Unreachable(message))
            }
            Ok(Err(ExchangeError::Exchange(message))) => {
                return Err(TransportError::Protocol(message))
            }
            Ok(Err(ExchangeError::ConnectTimeout)) | Err(_) => return Err(TransportError::Timeout),
        };
        if !status.is_success() {
            return Err(TransportError::Protocol(format!(
                "peer answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        message::decode(&body).map_err(|e| TransportError::Protocol(e.to_string()))
    }
}
