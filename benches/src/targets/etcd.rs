//! The etcd client: the v3 JSON gateway that every etcd member serves on its client port.
//!
//! Keys and values travel base64-encoded in JSON bodies (`POST /v3/kv/put`,
//! `/v3/kv/range`). Reads are etcd's default, linearizable ones (served through the
//! leader's read index), unless `serializable` is set, which lets any member answer from
//! its own state. Writes always go through Raft and an fsync of the leader's and a
//! majority's WAL: etcd has no setting that acknowledges before the fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::Method;
use serde::Deserialize;
use serde_json::json;

use super::http::HttpClient;
use super::{body_if, ErrorKind, Found, ReadOk};
use crate::workloads::key_name;

/// Puts per transaction when preloading; etcd refuses more than 128 by default.
const PRELOAD_BATCH: u64 = 100;
/// Bytes of values per preload transaction, below etcd's default request limit of 1.5 MiB.
const PRELOAD_BATCH_BYTES: u64 = 1 << 20;

/// Headers of every request: the gateway takes JSON.
const JSON: [(HeaderName, HeaderValue); 1] =
    [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];

/// An etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    client: HttpClient,
    prefix: String,
    serializable: bool,
    /// The value last written, base64-encoded once rather than per request.
    encoded_value: std::sync::Mutex<Option<(Bytes, Arc<str>)>>,
}

impl Etcd {
    /// A client of the members `client` sends to, keys under `prefix/`.
    pub fn new(client: HttpClient, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_string(),
            serializable: false,
            encoded_value: std::sync::Mutex::new(None),
        }
    }

    /// Serves reads from any member's local state instead of linearizable ones.
    pub fn set_serializable(&mut self, serializable: bool) {
        self.serializable = serializable;
    }

    /// `POST`s `body` as JSON to `path` and returns the answer's body if it is a 200.
    async fn post(
        &self,
        endpoint: usize,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, ErrorKind> {
        let body = serde_json::to_vec(body).map_err(|_| ErrorKind::new("request"))?;
        let reply = self
            .client
            .send(endpoint, Method::POST, path, &JSON, body.into())
            .await?;
        body_if(reply, &[200])
    }

    fn key(&self, key: u64) -> String {
        STANDARD.encode(format!("{}/{}", self.prefix, key_name(key)))
    }

    fn encode_value(&self, value: &Bytes) -> Arc<str> {
        let mut cached = self.encoded_value.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((bytes, encoded)) if bytes == value => Arc::clone(encoded),
            _ => {
                let encoded: Arc<str> = STANDARD.encode(value).into();
                *cached = Some((value.clone(), Arc::clone(&encoded)));
                encoded
            }
        }
    }

    /// `POST /v3/kv/range` of one key.
    pub async fn read(&self, endpoint: usize, key: u64) -> Result<ReadOk, ErrorKind> {
        #[derive(Deserialize)]
        struct Range {
            #[serde(default)]
            kvs: Vec<serde::de::IgnoredAny>,
        }
        let body = json!({ "key": self.key(key), "serializable": self.serializable });
        let body = self.post(endpoint, "/v3/kv/range", &body).await?;
        let range: Range = serde_json::from_slice(&body).map_err(|_| ErrorKind::new("body"))?;
        let found = if range.kvs.is_empty() {
            Found::Nothing
        } else {
            Found::Value
        };
        Ok(ReadOk {
            found,
            context: None,
        })
    }

    /// `POST /v3/kv/put`.
    pub async fn write(&self, endpoint: usize, key: u64, value: &Bytes) -> Result<(), ErrorKind> {
        let body = json!({ "key": self.key(key), "value": &*self.encode_value(value) });
        self.post(endpoint, "/v3/kv/put", &body).await.map(drop)
    }

    /// Writes keys `0..count` in transactions of up to [`PRELOAD_BATCH`] puts and
    /// [`PRELOAD_BATCH_BYTES`] of values.
    pub async fn preload(&self, count: u64, value: &Bytes, clients: usize) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let value = self.encode_value(value);
        let batch = (PRELOAD_BATCH_BYTES / (value.len() as u64 + 64)).clamp(1, PRELOAD_BATCH);
        let writers = (0..clients.max(1)).map(|client| {
            let next = Arc::clone(&next);
            let value = Arc::clone(&value);
            async move {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= count {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let puts: Vec<_> = (first..count.min(first + batch))
                        .map(|key| json!({ "requestPut": { "key": self.key(key), "value": &*value } }))
                        .collect();
                    self.post(client, "/v3/kv/txn", &json!({ "success": puts }))
                        .await
                        .map_err(|e| anyhow::anyhow!("preload from {}: {}", key_name(first), e.0))?;
                }
            }
        });
        futures::future::try_join_all(writers).await?;
        Ok(())
    }
}
