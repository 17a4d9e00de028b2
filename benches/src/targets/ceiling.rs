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

use super::{body_if, ErrorKind, Found, ReadOk};
use crate::workloads::key_name;

/// A client of the ceiling server.
#[derive(Debug)]
pub struct Ceiling {
    client: reqwest::Client,
    endpoints: Vec<String>,
}

impl Ceiling {
    /// A client of the servers at `endpoints`.
    pub fn new(client: reqwest::Client, endpoints: Vec<String>) -> Self {
        Self { client, endpoints }
    }

    fn url(&self, endpoint: usize, key: u64) -> String {
        // The same path shape as a quorumkv key, so that URL handling costs the same.
        format!(
            "{}/v1/buckets/bench/keys/{}",
            self.endpoints[endpoint % self.endpoints.len()],
            key_name(key)
        )
    }

    /// A `GET`.
    pub async fn read(&self, endpoint: usize, key: u64) -> Result<ReadOk, ErrorKind> {
        let response = self
            .client
            .get(self.url(endpoint, key))
            .send()
            .await
            .map_err(|e| ErrorKind::from_reqwest(&e))?;
        body_if(response, &[200]).await?;
        Ok(ReadOk {
            found: Found::Value,
            context: None,
        })
    }

    /// A `PUT` of `value`.
    pub async fn write(&self, endpoint: usize, key: u64, value: &Bytes) -> Result<(), ErrorKind> {
        let response = self
            .client
            .put(self.url(endpoint, key))
            .body(value.clone())
            .send()
            .await
            .map_err(|e| ErrorKind::from_reqwest(&e))?;
        body_if(response, &[200]).await.map(drop)
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
