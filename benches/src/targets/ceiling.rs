//! The ceiling: an HTTP server that does nothing but answer, and its client.
//!
//! Every request gets 200 and the same fixed body, after the request body was read. It
//! runs on the same stack as quorumkv (axum on hyper and tokio, HTTP/1.1 keep-alive), in a
//! process of its own on the same machine, so a run against it measures what the load
//! generator, the kernel's loopback and one HTTP round trip cost here: no HTTP store can
//! go faster on this machine, and the ratio of a store's throughput to this one says how
//! much of the machine the store's own work takes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes as AxumBytes;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use hyper::Method;

use super::http::HttpClient;
use super::{body_if, ErrorKind, Found, ReadOk};
use crate::workloads::key_name;

/// A client of the ceiling server.
#[derive(Debug)]
pub struct Ceiling {
    client: HttpClient,
}

impl Ceiling {
    /// A client of the servers `client` sends to.
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }

    fn path(key: u64) -> String {
        // The same path shape as a quorumkv key, so that building it costs the same.
        format!("/v1/buckets/bench/keys/{}", key_name(key))
    }

    /// A `GET`.
    pub async fn read(&self, endpoint: usize, key: u64) -> Result<ReadOk, ErrorKind> {
        let reply = self
            .client
            .send(endpoint, Method::GET, &Self::path(key), &[], Bytes::new())
            .await?;
        body_if(reply, &[200])?;
        Ok(ReadOk {
            found: Found::Value,
            context: None,
        })
    }

    /// A `PUT` of `value`.
    pub async fn write(&self, endpoint: usize, key: u64, value: &Bytes) -> Result<(), ErrorKind> {
        let reply = self
            .client
            .send(endpoint, Method::PUT, &Self::path(key), &[], value.clone())
            .await?;
        body_if(reply, &[200]).map(drop)
    }
}

/// Serves the ceiling on `listen` until `lifetime` has passed (a bound, so that a server
/// whose parent died does not linger), answering every request with `body`.
pub async fn serve(listen: SocketAddr, body: Bytes, lifetime: Duration) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("ceiling: listening on {}", listener.local_addr()?);
    let app = Router::new().fallback(move |request: AxumBytes| {
        let body = body.clone();
        async move {
            // The request body is already read by the extractor; answering is all.
            drop(request);
            body
        }
    });
    // Nagle off, as quorumkv's listener does: small answers would otherwise wait for
    // delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(tokio::time::sleep(lifetime))
        .await?;
    Ok(())
}
