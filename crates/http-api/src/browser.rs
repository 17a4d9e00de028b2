//! What a web page may make a visitor's browser do to a node: nothing the node did not
//! serve it.
//!
//! Any page can have a browser send requests to any address its visitor reaches, a node on
//! the visitor's loopback or office network included. A "simple" request (a GET, or a POST
//! with a form's content type) goes without a CORS preflight: the page cannot read the
//! answer, but the request still acts. Without this guard a `POST /v1/cluster/leave` with
//! `Content-Type: text/plain` from any page made a node leave its cluster. And a DNS name
//! the attacker controls can be pointed at 127.0.0.1 (DNS rebinding), which puts the node in
//! the attacker's origin. Three checks at the edge, before credentials, close these:
//!
//! - **Origin.** Browsers send `Origin` with every cross-origin request they let a page
//!   make (but plain navigations and GETs of images, which cannot act here). A request whose
//!   `Origin` is neither the node's own (the `Host` it was asked for, over http or https)
//!   nor one of `--allowed-origins` gets 403 `forbidden_origin`, on every route but the
//!   status page's shell and the probes. Clients other than browsers send no `Origin`.
//! - **Content type.** A body sent to a client POST route must say `application/json` (415
//!   `unsupported_media_type`): a form cannot send that type without a preflight, which
//!   the node never grants. Internode POSTs carry their own binary frames and the secret.
//! - **Host, on loopback.** A node listening on a loopback address answers only requests
//!   for a loopback name (`localhost`, `127.x.y.z`, `[::1]`) or its advertised host (403
//!   `forbidden_host`): a rebound name is neither. A node on a routable address is reached
//!   by names this guard cannot know; there the tokens keep pages out.
//!
//! The decisions are pure functions of the request's method, path and headers.

use axum::http::{header, HeaderMap, Method, StatusCode};

use crate::error::ApiError;

/// Routes a browser may reach from any page: the status page's shell (a page of its own,
/// holding no data) and the orchestrator's probes.
const ANY_ORIGIN: &[&str] = &["/", "/v1/health", "/v1/ready"];

/// The client POST routes: a body they are sent must be JSON. A new POST route is added
/// here; a POST elsewhere is answered by the router (405, 404).
const POST_ROUTES: &[&str] = &[
    "/v1/cluster/leave",
    "/v1/cluster/remove",
    "/v1/cluster/cleanup",
];

/// The browser checks of one node.
#[derive(Clone, Debug, Default)]
pub struct BrowserGuard {
    /// Origins besides the node's own that may call it, as `scheme://host[:port]`.
    allowed_origins: Vec<String>,
    /// With a loopback listener: the host names requests may name (loopback names are
    /// always allowed). `None` on a routable listener: no check.
    loopback_hosts: Option<Vec<String>>,
}

impl BrowserGuard {
    /// A guard that admits pages of `allowed_origins` besides the node's own; when
    /// `loopback` (the node listens on a loopback address), requests must name a loopback
    /// host or the host of `advertised` (`host:port`).
    pub fn new(allowed_origins: &[String], loopback: bool, advertised: &str) -> Self {
        Self {
            allowed_origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
            loopback_hosts: loopback.then(|| vec![host_name(advertised).to_ascii_lowercase()]),
        }
    }

    /// Refuses a request that a page of another origin made a browser send (see the
    /// module docs).
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if let Some(names) = &self.loopback_hosts {
            if !host.is_empty() && !is_loopback_name(host_name(host)) {
                let name = host_name(host).to_ascii_lowercase();
                if !names.contains(&name) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden_host",
                        "this node listens on loopback and answers only requests for a \
                         loopback name or its advertised host",
                    ));
                }
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let exempt =
                ANY_ORIGIN.contains(&path) && (method == Method::GET || method == Method::HEAD);
            let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
            if !exempt && !self.admits_origin(&origin, host) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "a page of another origin may not call this node (see --allowed-origins)",
                ));
            }
        }
        if method == Method::POST && POST_ROUTES.contains(&path) && has_body(headers) {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|t| t.to_str().ok())
                .and_then(|t| t.split(';').next())
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "a POST body must be JSON, sent with Content-Type: application/json",
                ));
            }
        }
        Ok(())
    }

    /// Whether a page of `origin` (lower case) may call the node that `host` names.
    fn admits_origin(&self, origin: &str, host: &str) -> bool {
        let own = ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
        own || self.allowed_origins.iter().any(|allowed| allowed == origin)
    }
}

/// Whether the request says it has a body: a non-zero `Content-Length`, or a chunked one.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| l.trim() != "0")
}

/// The host of a `Host` header, without its port (`[::1]:7001` gives `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(name, _port)| name)
}

/// `localhost` (and its subdomains, which resolvers keep on loopback), `127.0.0.0/8` and
/// `::1`.
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn code(result: Result<(), ApiError>) -> Option<&'static str> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn pages_of_other_origins_are_refused_but_the_shell_and_probes_stay_open() {
        let guard = BrowserGuard::new(&["https://dash.example.com/".to_string()], false, "");
        let from = |origin: &str| headers(&[("host", "10.0.0.5:7001"), ("origin", origin)]);
        let leave = "/v1/cluster/leave";
        assert_eq!(
            code(guard.check(&Method::POST, leave, &from("https://evil.example"))),
            Some("forbidden_origin")
        );
        assert_eq!(
            code(guard.check(&Method::GET, "/v1/buckets/b/keys/k", &from("null"))),
            Some("forbidden_origin")
        );
        // The node's own origin, over either scheme, and an allowed one.
        for origin in [
            "http://10.0.0.5:7001",
            "https://10.0.0.5:7001",
            "https://DASH.example.com",
        ] {
            assert_eq!(
                code(guard.check(&Method::GET, "/v1/cluster", &from(origin))),
                None
            );
        }
        for path in ["/", "/v1/health", "/v1/ready"] {
            assert_eq!(
                code(guard.check(&Method::GET, path, &from("https://evil.example"))),
                None
            );
        }
        // No Origin: not a page's request.
        let plain = headers(&[("host", "10.0.0.5:7001")]);
        assert_eq!(code(guard.check(&Method::POST, leave, &plain)), None);
    }

    #[test]
    fn a_post_body_must_be_json() {
        let guard = BrowserGuard::default();
        let with = |pairs: &[(&str, &str)]| {
            guard.check(&Method::POST, "/v1/cluster/remove", &headers(pairs))
        };
        assert_eq!(
            code(with(&[
                ("content-length", "16"),
                ("content-type", "text/plain")
            ])),
            Some("unsupported_media_type")
        );
        assert_eq!(
            code(with(&[("content-length", "16")])),
            Some("unsupported_media_type")
        );
        assert_eq!(
            code(with(&[
                ("transfer-encoding", "chunked"),
                ("content-type", "application/x-www-form-urlencoded")
            ])),
            Some("unsupported_media_type")
        );
        assert_eq!(
            code(with(&[
                ("content-length", "16"),
                ("content-type", "Application/JSON; charset=utf-8")
            ])),
            None
        );
        assert_eq!(code(with(&[("content-length", "0")])), None);
        assert_eq!(code(with(&[])), None);
        // Internode frames are binary, and guarded by the secret; a POST where there is no
        // POST route is the router's to answer.
        let binary = headers(&[
            ("content-length", "2"),
            ("content-type", "application/octet-stream"),
        ]);
        assert_eq!(
            code(guard.check(&Method::POST, "/internal/v1/rpc", &binary)),
            None
        );
        assert_eq!(
            code(guard.check(&Method::POST, "/v1/buckets/b/keys/k", &binary)),
            None
        );
    }

    #[test]
    fn a_loopback_node_answers_only_loopback_names_and_its_advertised_host() {
        let guard = BrowserGuard::new(&[], true, "node1.internal");
        let to = |host: &str| guard.check(&Method::GET, "/v1/cluster", &headers(&[("host", host)]));
        for host in [
            "127.0.0.1:7001",
            "127.0.0.2",
            "localhost:7001",
            "LocalHost",
            "[::1]:7001",
            "node1.internal:7001",
            "app.localhost:80",
        ] {
            assert_eq!(code(to(host)), None, "{host}");
        }
        for host in [
            "rebind.evil.example:7001",
            "10.0.0.5:7001",
            "[::2]:7001",
            "127.0.0.1.evil.example",
        ] {
            assert_eq!(code(to(host)), Some("forbidden_host"), "{host}");
        }
        // A routable listener: names are not checked.
        let open = BrowserGuard::new(&[], false, "");
        assert_eq!(
            code(open.check(&Method::GET, "/", &headers(&[("host", "anything:1")]))),
            None
        );
    }
}
