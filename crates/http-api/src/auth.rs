//! Authentication: bearer tokens for clients, a shared secret between nodes.
//!
//! The node's edge ([`crate::edge`]) enforces whichever is configured; the server decides
//! which must be (a node with peers needs the cluster secret). With `--auth-token-file`,
//! every route but the probes (`/v1/health`, `/v1/ready`) and the status page's shell (`/`,
//! which holds no data; its requests carry a token given as `#token=...` in the page
//! address) needs `Authorization: Bearer <token>` with one of the file's tokens. With
//! `--cluster-secret-file`, every internode route (`/internal/...`) needs the header
//! `X-Quorumkv-Cluster-Secret` with the secret, and this node's transport sends it. A
//! missing or wrong credential gets 401 `unauthorized` before any handler runs, so it
//! changes nothing.
//!
//! Comparisons are constant-time (`subtle`), so response timing does not reveal how much
//! of a guess was right, and credentials never appear in logs, metrics or `Debug` output.
//! Without TLS (`--tls-cert`, `--tls-key`) the secret and tokens cross the network in the
//! clear: keep the nodes on a network only they and trusted clients reach.

use std::fmt;

use axum::http::{header, HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

/// The header that carries the cluster secret on internode requests.
pub const CLUSTER_SECRET_HEADER: &str = "x-quorumkv-cluster-secret";

/// Routes any client may call without a token: the orchestrator's probes, and the status
/// page's shell.
const OPEN_ROUTES: &[&str] = &["/v1/health", "/v1/ready", "/"];

/// The credentials a node checks.
#[derive(Clone, Default)]
pub struct Credentials {
    client_tokens: Option<Vec<String>>,
    cluster_secret: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "client_tokens",
                &self.client_tokens.as_ref().map(|t| t.len()),
            )
            .field(
                "cluster_secret",
                &self.cluster_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CredentialsError(String);

impl Credentials {
    /// Client tokens from the text of a token file: one per line; blank lines and lines
    /// starting with `#` are skipped. A file with no token is refused.
    pub fn with_client_tokens(mut self, text: &str) -> Result<Self, CredentialsError> {
        let tokens: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if tokens.is_empty() {
            return Err(CredentialsError("the token file holds no token".into()));
        }
        if let Some(bad) = tokens.iter().find(|t| HeaderValue::from_str(t).is_err()) {
            return Err(CredentialsError(format!(
                "a token of {} characters is not a valid header value",
                bad.len()
            )));
        }
        self.client_tokens = Some(tokens);
        Ok(self)
    }

    /// The cluster secret from the text of a secret file (surrounding white space dropped);
    /// an empty or too short secret is refused.
    pub fn with_cluster_secret(mut self, text: &str) -> Result<Self, CredentialsError> {
        let secret = text.trim();
        if secret.len() < 16 {
            return Err(CredentialsError(
                "the cluster secret must be at least 16 characters".into(),
            ));
        }
        if HeaderValue::from_str(secret).is_err() {
            return Err(CredentialsError(
                "the cluster secret must be printable ASCII".into(),
            ));
        }
        self.cluster_secret = Some(secret.to_string());
        Ok(self)
    }

    /// The secret this node's transport sends, if any.
    pub fn cluster_secret(&self) -> Option<&str> {
        self.cluster_secret.as_deref()
    }

    /// Whether a request for `path` with `headers` may proceed.
    pub(crate) fn admits(&self, path: &str, headers: &HeaderMap) -> bool {
        if path.starts_with("/internal/") {
            return match &self.cluster_secret {
                None => true,
                Some(secret) => headers
                    .get(CLUSTER_SECRET_HEADER)
                    .is_some_and(|given| equal(given.as_bytes(), secret.as_bytes())),
            };
        }
        let Some(tokens) = &self.client_tokens else {
            return true;
        };
        if OPEN_ROUTES.contains(&path) {
            return true;
        }
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        // Every token is compared, so the time taken does not tell which one matched.
        tokens
            .iter()
            .fold(false, |found, token| found | equal(given, token.as_bytes()))
    }
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// A request's path and headers, as the edge hands them over.
    fn request(path: &str, headers: &[(&str, &str)]) -> (String, HeaderMap) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (path.to_string(), map)
    }

    fn admits(c: &Credentials, (path, headers): (String, HeaderMap)) -> bool {
        c.admits(&path, &headers)
    }

    #[test]
    fn tokens_guard_client_routes_but_not_the_probes() {
        let c = Credentials::default()
            .with_client_tokens("# ops\nalpha-token\n\nbeta-token\n")
            .unwrap();
        assert!(!admits(&c, request("/v1/buckets/b/keys/k", &[])));
        assert!(!admits(
            &c,
            request("/metrics", &[("authorization", "Bearer wrong")])
        ));
        assert!(!admits(
            &c,
            request("/v1/cluster", &[("authorization", "alpha-token")])
        ));
        assert!(admits(
            &c,
            request("/v1/cluster", &[("authorization", "Bearer beta-token")])
        ));
        assert!(admits(&c, request("/v1/health", &[])));
        assert!(admits(&c, request("/v1/ready", &[])));
        // Internode routes are the cluster secret's business, not the tokens'.
        assert!(admits(&c, request("/internal/v1/rpc", &[])));
    }

    #[test]
    fn the_cluster_secret_guards_internode_routes_only() {
        let c = Credentials::default()
            .with_cluster_secret("  a-long-enough-secret\n")
            .unwrap();
        assert!(!admits(&c, request("/internal/v1/rpc", &[])));
        assert!(!admits(
            &c,
            request(
                "/internal/v1/rpc",
                &[(CLUSTER_SECRET_HEADER, "a-long-enough-secreT")]
            )
        ));
        assert!(admits(
            &c,
            request(
                "/internal/v1/rpc",
                &[(CLUSTER_SECRET_HEADER, "a-long-enough-secret")]
            )
        ));
        assert!(admits(&c, request("/v1/buckets/b/keys/k", &[])));
    }

    #[test]
    fn unusable_files_are_refused_and_secrets_are_not_printed() {
        assert!(Credentials::default()
            .with_client_tokens("# only a comment\n")
            .is_err());
        assert!(Credentials::default().with_cluster_secret("short").is_err());
        let c = Credentials::default()
            .with_client_tokens("token-one")
            .unwrap()
            .with_cluster_secret("a-long-enough-secret")
            .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("token-one") && !shown.contains("a-long-enough-secret"),
            "{shown}"
        );
    }
}
