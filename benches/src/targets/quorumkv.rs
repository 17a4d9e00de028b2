//! The quorumkv client: the v1 key routes, with a cache of causal contexts.
//!
//! A write without a context is concurrent with whatever the key holds, so quorumkv keeps
//! both as siblings: a benchmark of blind writes over a fixed key set would grow every
//! object with each pass and end up measuring sibling explosion. A well-behaved client
//! writes with the context of what it last saw, and so does this one: every response's
//! `X-Causal-Context` (reads and writes alike) is kept per key, and the next write of the
//! key sends it. Concurrent writes of one key still make siblings, as they should, but the
//! next write that saw them resolves them, so objects stay small. Read-modify-write sends
//! the context of its own read instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;

use super::http::HttpClient;
use super::{body_if, ErrorKind, Found, ReadOk};
use crate::workloads::key_name;

/// The causal context header.
const CONTEXT_HEADER: HeaderName = HeaderName::from_static("x-causal-context");

/// A quorumkv cluster.
#[derive(Debug)]
pub struct Quorumkv {
    client: HttpClient,
    bucket: String,
    contexts: ContextCache,
}

impl Quorumkv {
    /// A client of the cluster `client` sends to, using bucket `bucket` with keys
    /// `0..keys`.
    pub fn new(client: HttpClient, bucket: &str, keys: u64) -> Self {
        Self {
            client,
            bucket: bucket.to_string(),
            contexts: ContextCache::new(keys),
        }
    }

    fn path(&self, key: u64, query: &str) -> String {
        format!("/v1/buckets/{}/keys/{}?{query}", self.bucket, key_name(key))
    }

    /// `GET` with read quorum `r`: 200, 300 (siblings) and 404 are answers, not errors.
    pub async fn read(&self, endpoint: usize, key: u64, r: &str) -> Result<ReadOk, ErrorKind> {
        let path = self.path(key, &format!("r={r}"));
        let reply = self
            .client
            .send(endpoint, Method::GET, &path, &[], Bytes::new())
            .await?;
        // Other statuses are errors, which `body_if` below reports.
        let found = match reply.status.as_u16() {
            200 => Found::Value,
            300 => Found::Siblings,
            _ => Found::Nothing,
        };
        let context = context_of(reply.headers.get(CONTEXT_HEADER));
        body_if(reply, &[200, 300, 404])?;
        if let Some(context) = &context {
            self.contexts.store(key, context);
        }
        Ok(ReadOk { found, context })
    }

    /// `PUT` with write quorum `w`, sending `context` or else the cached one.
    pub async fn write(
        &self,
        endpoint: usize,
        key: u64,
        value: &Bytes,
        context: Option<String>,
        w: &str,
    ) -> Result<(), ErrorKind> {
        let path = self.path(key, &format!("w={w}"));
        let sent = context.or_else(|| self.contexts.load(key));
        let headers = match sent.map(HeaderValue::try_from) {
            Some(Ok(context)) => vec![(CONTEXT_HEADER, context)],
            Some(Err(_)) => return Err(ErrorKind::new("request")),
            None => Vec::new(),
        };
        let reply = self
            .client
            .send(endpoint, Method::PUT, &path, &headers, value.clone())
            .await?;
        let context = context_of(reply.headers.get(CONTEXT_HEADER));
        body_if(reply, &[200, 204])?;
        if let Some(context) = &context {
            self.contexts.store(key, context);
        }
        Ok(())
    }

    /// Writes keys `0..count` once each at `w=all`, so that every replica holds them before
    /// the measured runs start.
    pub async fn preload(&self, count: u64, value: &Bytes, clients: usize) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let quorum = "all";
        let writers = (0..clients.max(1)).map(|client| {
            let next = Arc::clone(&next);
            async move {
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= count {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let endpoint = usize::try_from(key).unwrap_or(0).wrapping_add(client);
                    self.write(endpoint, key, value, None, quorum)
                        .await
                        .map_err(|e| anyhow::anyhow!("preload of {}: {}", key_name(key), e.0))?;
                }
            }
        });
        futures::future::try_join_all(writers).await?;
        Ok(())
    }
}

fn context_of(header: Option<&HeaderValue>) -> Option<String> {
    header
        .and_then(|h| h.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The last causal context seen for each key, one slot per key.
///
/// A std mutex per slot: held only to clone or replace a short string, never across an
/// await, and contention is per key.
#[derive(Debug)]
pub struct ContextCache {
    slots: Vec<Mutex<Option<String>>>,
}

impl ContextCache {
    /// A cache for keys `0..keys`.
    pub fn new(keys: u64) -> Self {
        let keys = usize::try_from(keys).unwrap_or(usize::MAX);
        Self {
            slots: (0..keys).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The context last stored for `key`.
    pub fn load(&self, key: u64) -> Option<String> {
        let slot = self.slots.get(usize::try_from(key).ok()?)?;
        slot.lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Remembers `context` for `key` (keys outside the cache are not remembered).
    pub fn store(&self, key: u64, context: &str) {
        let Some(slot) = usize::try_from(key).ok().and_then(|k| self.slots.get(k)) else {
            return;
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(context.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_last_context_per_key() {
        let cache = ContextCache::new(3);
        assert_eq!(cache.load(1), None);
        cache.store(1, "a");
        cache.store(1, "b");
        assert_eq!(cache.load(1).as_deref(), Some("b"));
        assert_eq!(cache.load(0), None);
        cache.store(7, "ignored");
        assert_eq!(cache.load(7), None);
    }
}
