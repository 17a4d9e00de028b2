//! Authentication: bearer tokens for clients and for admins, a shared secret between nodes.
//!
//! The node's edge ([`crate::edge`]) enforces whichever is configured; the server decides
//! which must be (a node with peers needs the cluster secret). With `--auth-token-file`,
//! every route but the probes (`/v1/health`, `/v1/ready`) and the status page's shell (`/`,
//! which holds no data; its requests carry a token given as `#token=...` in the page
//! address) needs `Authorization: Bearer <token>` with one of the file's tokens. With
//! `--admin-token-file`, the admin routes ([`is_admin_route`]: the membership changes,
//! cleanup and bucket properties) need one of that file's tokens, which also reach every
//! data route; a client token there gets 403 `forbidden`, since reading and writing keys is
//! not the right to take a node out of the cluster. With
//! `--cluster-secret-file`, every internode route (`/internal/...`) needs the header
//! `X-Quorumkv-Cluster-Secret` with the secret, and this node's transport sends it. Without
//! a secret the internode routes refuse every caller: a node without one has no peers (the
//! server refuses to start one with peers and no secret) and calls itself in process, so an
//! open internode route could only serve strangers, who would read and write every key
//! through it whatever the client tokens say. A missing or wrong credential gets 401
//! `unauthorized` before any handler runs, so it changes nothing.
//!
//! Comparisons are constant-time (`subtle`), so response timing does not reveal how much
//! of a guess was right, and credentials never appear in logs, metrics or `Debug` output.
//! Without TLS (`--tls-cert`, `--tls-key`) the secret and tokens cross the network in the
//! clear: keep the nodes on a network only they and trusted clients reach.

use std::fmt;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The header that carries the cluster secret on internode requests.
pub const CLUSTER_SECRET_HEADER: &str = "x-quorumkv-cluster-secret";

/// Routes any client may call without a token: the orchestrator's probes, and the status
/// page's shell.
const OPEN_ROUTES: &[&str] = &["/v1/health", "/v1/ready", "/"];

/// The admin routes: they change the cluster or a bucket's rules rather than data, and
/// with authentication on they need an admin token (a client token gets 403). A new
/// admin route is added here.
const ADMIN_POSTS: &[&str] = &[
    "/v1/cluster/leave",
    "/v1/cluster/remove",
    "/v1/cluster/cleanup",
];

/// The shortest token or secret a node accepts: shorter ones can be guessed.
pub const MIN_CREDENTIAL_LEN: usize = 16;

/// Values that example files ship with: a node refuses to start with one.
const PLACEHOLDERS: &[&str] = &["replace-me", "changeme", "change-me"];

/// Whether `method` on `path` is an admin route: `POST` of a membership change
/// (`/v1/cluster/leave`, `/remove`) or of `/v1/cluster/cleanup`, and `PUT` of a bucket's
/// properties.
pub fn is_admin_route(method: &Method, path: &str) -> bool {
    if method == Method::POST {
        return ADMIN_POSTS.contains(&path);
    }
    method == Method::PUT
        && path
            .strip_prefix("/v1/buckets/")
            .and_then(|rest| rest.strip_suffix("/props"))
            .is_some_and(|bucket| !bucket.is_empty() && !bucket.contains('/'))
}

/// One token of a token file, with its line (1-based) so that logs can say which token
/// acted without showing it.
#[derive(Clone)]
struct Token {
    line: usize,
    value: String,
}

/// The credentials a node checks.
#[derive(Clone, Default)]
pub struct Credentials {
    client_tokens: Option<Vec<Token>>,
    admin_tokens: Option<Vec<Token>>,
    /// The secrets a peer may send: the first is the one this node sends; a second is
    /// accepted too, during a rotation.
    cluster_secrets: Vec<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "client_tokens",
                &self.client_tokens.as_ref().map(|t| t.len()),
            )
            .field("admin_tokens", &self.admin_tokens.as_ref().map(|t| t.len()))
            .field(
                "cluster_secrets",
                &self
                    .cluster_secrets
                    .iter()
                    .map(|_| "<redacted>")
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CredentialsError(String);

/// Who a request comes from, as the edge established it; handlers of admin routes log it
/// with every change they make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off (or the route is open): nobody in particular.
    Anyone,
    /// A peer: the request carried the cluster secret.
    Peer,
    /// A client token, found at this line of `--auth-token-file`.
    Client {
        /// The token's line in the file, from 1.
        line: usize,
    },
    /// An admin token, found at this line of `--admin-token-file`.
    Admin {
        /// The token's line in the file, from 1.
        line: usize,
    },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anyone => f.write_str("anyone (authentication off)"),
            Self::Peer => f.write_str("a peer"),
            Self::Client { line } => {
                write!(f, "the client token of line {line} of --auth-token-file")
            }
            Self::Admin { line } => {
                write!(f, "the admin token of line {line} of --admin-token-file")
            }
        }
    }
}

/// Why the edge refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or a wrong one: 401.
    Unauthorized,
    /// A client token on an admin route: 403.
    Forbidden,
}

/// The tokens of a token file: one per line; blank lines and lines starting with `#` are
/// skipped. A file with no token, a token shorter than [`MIN_CREDENTIAL_LEN`], an example
/// file's placeholder, or a token that is no header value is refused.
fn tokens_of(text: &str) -> Result<Vec<Token>, CredentialsError> {
    let tokens: Vec<Token> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(line, value)| Token {
            line,
            value: value.to_string(),
        })
        .collect();
    if tokens.is_empty() {
        return Err(CredentialsError("the token file holds no token".into()));
    }
    for token in &tokens {
        check_strength(&token.value)
            .map_err(|why| CredentialsError(format!("the token of line {}: {why}", token.line)))?;
        if HeaderValue::from_str(&token.value).is_err() {
            return Err(CredentialsError(format!(
                "the token of line {} ({} characters) is not a valid header value",
                token.line,
                token.value.len()
            )));
        }
    }
    Ok(tokens)
}

/// Refuses a credential that can be guessed: too short, or an example's placeholder.
fn check_strength(value: &str) -> Result<(), String> {
    if PLACEHOLDERS.iter().any(|p| value.eq_ignore_ascii_case(p)) {
        return Err(
            "it is the example's placeholder; generate one (e.g. `openssl rand -hex 32`)".into(),
        );
    }
    if value.len() < MIN_CREDENTIAL_LEN {
        return Err(format!(
            "{} characters; at least {MIN_CREDENTIAL_LEN} are required",
            value.len()
        ));
    }
    Ok(())
}

/// The line of the token in `tokens` equal to `given`, if any. Every token is compared in
/// full, so the time taken does not tell which one matched, or how much of a guess was
/// right.
fn find(tokens: &[Token], given: &[u8]) -> Option<usize> {
    let mut line = 0u64;
    let mut found = subtle::Choice::from(0);
    for token in tokens {
        let equal = given.ct_eq(token.value.as_bytes());
        line.conditional_assign(&(token.line as u64), equal);
        found |= equal;
    }
    bool::from(found).then_some(line as usize)
}

impl Credentials {
    /// Client tokens from the text of a token file (see [`Credentials::check`]).
    pub fn with_client_tokens(mut self, text: &str) -> Result<Self, CredentialsError> {
        self.client_tokens = Some(tokens_of(text)?);
        Ok(self)
    }

    /// Admin tokens from the text of an admin token file: tokens that may call the admin
    /// routes, and the data routes too.
    pub fn with_admin_tokens(mut self, text: &str) -> Result<Self, CredentialsError> {
        self.admin_tokens = Some(tokens_of(text)?);
        Ok(self)
    }

    /// The cluster secret from the text of a secret file: one line, or two during a
    /// rotation (surrounding white space dropped). The first line is what this node sends;
    /// both are accepted from peers. So a secret changes without an outage in three rolling
    /// restarts: `old` then `new` (every node still sends the old one, and accepts both),
    /// then `new` then `old` (nodes send the new one, which every node accepts), then `new`
    /// alone. An empty, too short or placeholder secret, or a third line, is refused.
    pub fn with_cluster_secret(mut self, text: &str) -> Result<Self, CredentialsError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() || lines.len() > 2 {
            return Err(CredentialsError(format!(
                "the cluster secret file holds {} lines; one, or two during a rotation",
                lines.len()
            )));
        }
        for secret in &lines {
            if secret.len() < MIN_CREDENTIAL_LEN {
                return Err(CredentialsError(format!(
                    "the cluster secret must be at least {MIN_CREDENTIAL_LEN} characters"
                )));
            }
            check_strength(secret)
                .map_err(|why| CredentialsError(format!("the cluster secret: {why}")))?;
            if HeaderValue::from_str(secret).is_err() {
                return Err(CredentialsError(
                    "the cluster secret must be printable ASCII".into(),
                ));
            }
        }
        self.cluster_secrets = lines.into_iter().map(str::to_string).collect();
        Ok(self)
    }

    /// The secret this node's transport sends, if any: the file's first line.
    pub fn cluster_secret(&self) -> Option<&str> {
        self.cluster_secrets.first().map(String::as_str)
    }

    /// Every secret accepted from peers, the one sent first.
    pub fn cluster_secrets(&self) -> &[String] {
        &self.cluster_secrets
    }

    /// Whether client routes need a token: either token file was given.
    pub fn authentication_on(&self) -> bool {
        self.client_tokens.is_some() || self.admin_tokens.is_some()
    }

    /// Who a request of `method` for `path` with `headers` comes from, or why it is
    /// refused:
    /// - internode routes (`/internal/...`) need the cluster secret; a node without one
    ///   admits nobody there;
    /// - with authentication off, every other route is open;
    /// - otherwise the probes and the status page's shell are open, an admin route needs
    ///   an admin token (a client token is [`Refusal::Forbidden`]), and any other route a
    ///   client or an admin token.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, Refusal> {
        if path.starts_with("/internal/") {
            // Every accepted secret is compared, so the time taken does not tell which.
            let admitted = headers.get(CLUSTER_SECRET_HEADER).is_some_and(|given| {
                self.cluster_secrets.iter().fold(false, |found, secret| {
                    found | equal(given.as_bytes(), secret.as_bytes())
                })
            });
            return if admitted {
                Ok(Caller::Peer)
            } else {
                Err(Refusal::Unauthorized)
            };
        }
        if !self.authentication_on() || OPEN_ROUTES.contains(&path) {
            return Ok(Caller::Anyone);
        }
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return Err(Refusal::Unauthorized);
        };
        let admin = self.admin_tokens.as_deref().and_then(|t| find(t, given));
        let client = self.client_tokens.as_deref().and_then(|t| find(t, given));
        match (admin, client) {
            (Some(line), _) => Ok(Caller::Admin { line }),
            (None, Some(_)) if is_admin_route(method, path) => Err(Refusal::Forbidden),
            (None, Some(line)) => Ok(Caller::Client { line }),
            (None, None) => Err(Refusal::Unauthorized),
        }
    }

    /// Whether a `GET` for `path` with `headers` may proceed (tests of the rules above).
    #[cfg(test)]
    fn admits(&self, path: &str, headers: &HeaderMap) -> bool {
        self.check(&Method::GET, path, headers).is_ok()
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
            .with_client_tokens("# ops\nalpha-token-0123456789\n\nbeta-token-0123456789\n")
            .unwrap();
        assert!(!admits(&c, request("/v1/buckets/b/keys/k", &[])));
        assert!(!admits(
            &c,
            request("/metrics", &[("authorization", "Bearer wrong")])
        ));
        assert!(!admits(
            &c,
            request(
                "/v1/cluster",
                &[("authorization", "alpha-token-0123456789")]
            )
        ));
        assert!(admits(
            &c,
            request(
                "/v1/cluster",
                &[("authorization", "Bearer beta-token-0123456789")]
            )
        ));
        assert!(admits(&c, request("/v1/health", &[])));
        assert!(admits(&c, request("/v1/ready", &[])));
        // Internode routes are the cluster secret's business, not the tokens': without a
        // secret they admit nobody, a token holder included.
        assert!(!admits(&c, request("/internal/v1/rpc", &[])));
        assert!(!admits(
            &c,
            request(
                "/internal/v1/rpc",
                &[("authorization", "Bearer beta-token-0123456789")]
            )
        ));
        assert!(!admits(
            &Credentials::default(),
            request("/internal/v1/rpc", &[])
        ));
    }

    /// During a rotation the file holds two secrets: both are admitted, the first is sent.
    #[test]
    fn a_rotation_accepts_both_secrets_and_sends_the_first() {
        let c = Credentials::default()
            .with_cluster_secret("new-secret-0123456789\nold-secret-0123456789\n")
            .unwrap();
        assert_eq!(c.cluster_secret(), Some("new-secret-0123456789"));
        for secret in ["new-secret-0123456789", "old-secret-0123456789"] {
            assert!(admits(
                &c,
                request("/internal/v1/rpc", &[(CLUSTER_SECRET_HEADER, secret)])
            ));
        }
        assert!(!admits(
            &c,
            request(
                "/internal/v1/rpc",
                &[(CLUSTER_SECRET_HEADER, "third-secret-0123456789")]
            )
        ));
        let three = "a-secret-0123456789\nb-secret-0123456789\nc-secret-0123456789";
        assert!(Credentials::default().with_cluster_secret(three).is_err());
        assert!(Credentials::default().with_cluster_secret("\n\n").is_err());
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
        for guessable in ["short-token", "replace-me", "\n# only\nREPLACE-ME\n"] {
            assert!(
                Credentials::default()
                    .with_client_tokens(guessable)
                    .is_err(),
                "{guessable:?}"
            );
            assert!(Credentials::default().with_admin_tokens(guessable).is_err());
        }
        let error = Credentials::default()
            .with_client_tokens("# ops\nlong-enough-token-0123\nshort\n")
            .unwrap_err();
        assert!(error.to_string().contains("line 3"), "{error}");
        let c = Credentials::default()
            .with_client_tokens("token-one-0123456789")
            .unwrap()
            .with_cluster_secret("a-long-enough-secret")
            .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("token-one-0123456789") && !shown.contains("a-long-enough-secret"),
            "{shown}"
        );
    }

    /// With an admin token file, the admin routes need one of its tokens: a client token
    /// there is forbidden, anything else unauthorized; admin tokens reach data routes too.
    #[test]
    fn admin_routes_need_an_admin_token_and_say_which_one_acted() {
        let c = Credentials::default()
            .with_client_tokens("client-token-0123456789")
            .unwrap()
            .with_admin_tokens("# ops\n\nadmin-token-0123456789\n")
            .unwrap();
        let bearer = |t: &str| request("", &[("authorization", &format!("Bearer {t}"))]).1;
        let client = bearer("client-token-0123456789");
        let admin = bearer("admin-token-0123456789");
        for (method, path) in [
            (Method::POST, "/v1/cluster/leave"),
            (Method::POST, "/v1/cluster/remove"),
            (Method::POST, "/v1/cluster/cleanup"),
            (Method::PUT, "/v1/buckets/b/props"),
        ] {
            assert_eq!(
                c.check(&method, path, &client),
                Err(Refusal::Forbidden),
                "{path}"
            );
            assert_eq!(
                c.check(&method, path, &HeaderMap::new()),
                Err(Refusal::Unauthorized)
            );
            assert_eq!(
                c.check(&method, path, &admin),
                Ok(Caller::Admin { line: 3 })
            );
        }
        for (method, path) in [
            (Method::GET, "/v1/buckets/b/props"),
            (Method::PUT, "/v1/buckets/b/keys/props"),
            (Method::GET, "/v1/cluster"),
            (Method::PUT, "/v1/buckets/b/keys/k"),
        ] {
            assert_eq!(
                c.check(&method, path, &client),
                Ok(Caller::Client { line: 1 })
            );
            assert_eq!(
                c.check(&method, path, &admin),
                Ok(Caller::Admin { line: 3 })
            );
        }
        // Without authentication every client and admin route is open, as before.
        let open = Credentials::default();
        assert_eq!(
            open.check(&Method::POST, "/v1/cluster/remove", &HeaderMap::new()),
            Ok(Caller::Anyone)
        );
    }
}
