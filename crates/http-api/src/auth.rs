//! Authentication: bearer tokens for clients, a shared secret between nodes.
//!
//! This layer enforces whichever is configured; the server decides which must be (a node
//! with peers needs the cluster secret). With `--auth-token-file`, every route but the
//! probes (`/v1/health`, `/v1/ready`) and the status page's shell (`/`, which holds no
//! data; its requests carry a token given as `#token=...` in the page address) needs
//! `Authorization: Bearer <token>` with one of the file's tokens. With
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
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::Router;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

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

    /// Whether `request` may proceed.
    fn admits(&self, request: &Request) -> bool {
        let path = request.uri().path();
        if path.starts_with("/internal/") {
            return match &self.cluster_secret {
                None => true,
                Some(secret) => request
                    .headers()
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
        let Some(given) = request
            .headers()
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

/// Puts `credentials` in front of every route of `router`.
pub fn with_auth(router: Router, credentials: Arc<Credentials>) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let credentials = Arc::clone(&credentials);
            async move {
                if credentials.admits(&request) {
                    return next.run(request).await;
                }
                metrics::counter!("quorumkv_unauthorized_requests_total").increment(1);
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong credentials",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn tokens_guard_client_routes_but_not_the_probes() {
        let c = Credentials::default()
            .with_client_tokens("# ops\nalpha-token\n\nbeta-token\n")
            .unwrap();
        assert!(!c.admits(&request("/v1/buckets/b/keys/k", &[])));
        assert!(!c.admits(&request("/metrics", &[("authorization", "Bearer wrong")])));
        assert!(!c.admits(&request("/v1/cluster", &[("authorization", "alpha-token")])));
        assert!(c.admits(&request(
            "/v1/cluster",
            &[("authorization", "Bearer beta-token")]
        )));
        assert!(c.admits(&request("/v1/health", &[])));
        assert!(c.admits(&request("/v1/ready", &[])));
        // Internode routes are the cluster secret's business, not the tokens'.
        assert!(c.admits(&request("/internal/v1/rpc", &[])));
    }

    #[test]
    fn the_cluster_secret_guards_internode_routes_only() {
        let c = Credentials::default()
            .with_cluster_secret("  a-long-enough-secret\n")
            .unwrap();
        assert!(!c.admits(&request("/internal/v1/rpc", &[])));
        assert!(!c.admits(&request(
            "/internal/v1/rpc",
            &[(CLUSTER_SECRET_HEADER, "a-long-enough-secreT")]
        )));
        assert!(c.admits(&request(
            "/internal/v1/rpc",
            &[(CLUSTER_SECRET_HEADER, "a-long-enough-secret")]
        )));
        assert!(c.admits(&request("/v1/buckets/b/keys/k", &[])));
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
