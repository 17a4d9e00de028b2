//! What the load is sent to: a quorumkv cluster, an etcd cluster, or a bare HTTP server.
//!
//! The three targets use the same HTTP client ([`http`]: HTTP/1.1 keep-alive on hyper's
//! connection API, Nagle off), each its own instance, and have one shape: read a key,
//! write a key, preload keys. That keeps the comparison about the servers: every target
//! pays the same client cost per request.
//!
//! - [`quorumkv`]: `GET`/`PUT /v1/buckets/{bucket}/keys/{key}` with `r`/`w`, the causal
//!   context carried by the `X-Causal-Context` header.
//! - [`etcd`]: etcd's v3 JSON gateway (`POST /v3/kv/range`, `/v3/kv/put`, base64 keys and
//!   values), the usual reference for a replicated store that is consistent by consensus.
//! - [`ceiling`]: a server that answers every request with 200 and a fixed body; what one
//!   HTTP round trip costs here, so the upper bound of any HTTP store on this machine.
//!
//! Errors are counted by kind, with the server's own error code where it gives one
//! (`quorum_unavailable`, `not_ready`), so a run that fails says why.

pub mod ceiling;
pub mod etcd;
pub mod http;
pub mod quorumkv;

use std::time::Duration;

use bytes::Bytes;
use clap::ValueEnum;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use self::http::{HttpClient, Reply};

/// Which kind of server a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A quorumkv cluster.
    Quorumkv,
    /// An etcd cluster, through its v3 JSON gateway.
    Etcd,
    /// The bare HTTP server of `quorumkv-bench serve-ceiling`.
    Ceiling,
}

impl TargetKind {
    /// The name used in results and tables.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Quorumkv => "quorumkv",
            TargetKind::Etcd => "etcd",
            TargetKind::Ceiling => "ceiling",
        }
    }
}

/// What a successful read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// One value.
    Value,
    /// Concurrent siblings (quorumkv's 300).
    Siblings,
    /// Nothing (404, or an empty range).
    Nothing,
}

impl Found {
    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Found::Value => "found",
            Found::Siblings => "siblings",
            Found::Nothing => "not_found",
        }
    }
}

/// A successful read.
#[derive(Clone, Debug)]
pub struct ReadOk {
    /// What it found.
    pub found: Found,
    /// The causal context to write back with (quorumkv only).
    pub context: Option<String>,
}

/// Why a request failed, as counted in the results.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ErrorKind(pub String);

impl ErrorKind {
    /// An error of kind `kind`.
    pub fn new(kind: &str) -> Self {
        ErrorKind(kind.to_string())
    }

    /// An HTTP status the target does not answer on success, with the server's error code
    /// when the body carries one (`{"error": "<code>"}` in quorumkv, `{"code": n}` in etcd).
    pub fn from_status(status: StatusCode, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: Option<serde_json::Value>,
            code: Option<serde_json::Value>,
        }
        let code = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|b| match (b.error, b.code) {
                (Some(serde_json::Value::String(code)), _) => Some(code),
                (_, Some(code)) => Some(format!("code_{code}")),
                _ => None,
            });
        match code {
            Some(code) if !code.is_empty() && code.len() <= 64 => {
                ErrorKind(format!("http_{}:{code}", status.as_u16()))
            }
            _ => ErrorKind(format!("http_{}", status.as_u16())),
        }
    }
}

/// The read and write quorums sent to quorumkv (ignored by the other targets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Read quorum (`1`, `2`, `quorum`, ...).
    pub r: String,
    /// Write quorum.
    pub w: String,
}

/// A server to send load to, with the client state it needs.
#[derive(Debug)]
pub enum Target {
    /// A quorumkv cluster.
    Quorumkv(quorumkv::Quorumkv),
    /// An etcd cluster.
    Etcd(etcd::Etcd),
    /// The ceiling server.
    Ceiling(ceiling::Ceiling),
}

impl Target {
    /// A target of `kind` at `endpoints` (base URLs, `http://host:port`), each request
    /// bounded by `timeout`. `namespace` separates data sets on the same server (quorumkv
    /// bucket, etcd key prefix); `keys` sizes the client's cache of causal contexts.
    pub fn new(
        kind: TargetKind,
        endpoints: &[String],
        namespace: &str,
        keys: u64,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "{} needs an endpoint", kind.name());
        let client = HttpClient::new(endpoints, timeout)?;
        Ok(match kind {
            TargetKind::Quorumkv => {
                Target::Quorumkv(quorumkv::Quorumkv::new(client, namespace, keys))
            }
            TargetKind::Etcd => Target::Etcd(etcd::Etcd::new(client, namespace)),
            TargetKind::Ceiling => Target::Ceiling(ceiling::Ceiling::new(client)),
        })
    }

    /// Which kind of server this is.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Quorumkv(_) => TargetKind::Quorumkv,
            Target::Etcd(_) => TargetKind::Etcd,
            Target::Ceiling(_) => TargetKind::Ceiling,
        }
    }

    /// Reads key `key` through endpoint `endpoint` (taken modulo the endpoint count).
    pub async fn read(
        &self,
        endpoint: usize,
        key: u64,
        quorum: &Quorum,
    ) -> Result<ReadOk, ErrorKind> {
        match self {
            Target::Quorumkv(t) => t.read(endpoint, key, &quorum.r).await,
            Target::Etcd(t) => t.read(endpoint, key).await,
            Target::Ceiling(t) => t.read(endpoint, key).await,
        }
    }

    /// Writes `value` to key `key`. `context` is what a preceding read returned; without
    /// one, quorumkv writes carry the context the client last saw for the key.
    pub async fn write(
        &self,
        endpoint: usize,
        key: u64,
        value: &Bytes,
        context: Option<String>,
        quorum: &Quorum,
    ) -> Result<(), ErrorKind> {
        match self {
            Target::Quorumkv(t) => t.write(endpoint, key, value, context, &quorum.w).await,
            Target::Etcd(t) => t.write(endpoint, key, value).await,
            Target::Ceiling(t) => t.write(endpoint, key, value).await,
        }
    }

    /// Writes keys `0..count` once each, with `clients` concurrent writers, as fast as the
    /// target takes them (etcd in transactions of many puts).
    pub async fn preload(&self, count: u64, value: &Bytes, clients: usize) -> anyhow::Result<()> {
        match self {
            Target::Quorumkv(t) => t.preload(count, value, clients).await,
            Target::Etcd(t) => t.preload(count, value, clients).await,
            Target::Ceiling(_) => Ok(()),
        }
    }
}

/// The body of `reply` if its status is one of `ok`, else the error kind.
fn body_if(reply: Reply, ok: &[u16]) -> Result<Bytes, ErrorKind> {
    if ok.contains(&reply.status.as_u16()) {
        Ok(reply.body)
    } else {
        Err(ErrorKind::from_status(reply.status, &reply.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_carry_the_servers_code() {
        let quorum = br#"{"error":"quorum_unavailable","message":"1 of 2"}"#;
        assert_eq!(
            ErrorKind::from_status(StatusCode::SERVICE_UNAVAILABLE, quorum).0,
            "http_503:quorum_unavailable"
        );
        let etcd = br#"{"error":"etcdserver: too many requests","code":14}"#;
        assert_eq!(
            ErrorKind::from_status(StatusCode::SERVICE_UNAVAILABLE, etcd).0,
            "http_503:etcdserver: too many requests"
        );
        assert_eq!(
            ErrorKind::from_status(StatusCode::BAD_GATEWAY, b"<html>").0,
            "http_502"
        );
    }
}
