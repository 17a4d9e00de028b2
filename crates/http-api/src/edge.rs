//! The node's edge: what every request passes before it is routed. What a browser may
//! send is checked first ([`BrowserGuard`]), then its credentials are
//! checked ([`Credentials`]; the [`crate::auth::Caller`] they establish travels with the
//! request, for the admin routes' logs), and the request as a whole, from its head to its response
//! and reading its body included, is bounded in time.
//!
//! The time bound is a backstop behind the per-request quorum timeouts, which only cover
//! waiting for replicas: without it a client that sends its body a byte at a time, or
//! declares a `Content-Length` it never sends, would hold a connection and a task forever.
//! Past the limit the work is dropped, the client gets 408 `request_timeout`, and the
//! connection is closed (the rest of the body is never read).
//!
//! A connection taken on the slots the listener keeps for peers (when every client slot
//! is held) passes an edge made [`Edge::peers_only`]: it serves internode routes, whose
//! credential check follows as for any request, and answers anything else 503
//! `overloaded`, closing the connection, so that clients cannot take the peers' share.
//!
//! [`Edge`] is a plain service around the router, not a router layer. An axum `from_fn`
//! layer wraps every route, and each request through it clones the route's boxed service
//! and boxes two futures; the edge adds one timer and no allocation. Every request of a
//! quorum operation (the client's and the internode ones) passes here, so this is on the
//! hottest path there is (BENCHMARKS.md, "A plain edge").

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::{BoxError, Router};
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tower::Service;

use crate::auth::{Credentials, Refusal};
use crate::browser::BrowserGuard;
use crate::current::Current;
use crate::error::ApiError;

/// The router behind the node's edge: credentials checked, whole requests bounded by
/// `limit`.
#[derive(Clone, Debug)]
pub struct Edge {
    router: Router,
    /// As they are when each request comes: a reload replaces them.
    credentials: Current<Credentials>,
    browser: Arc<BrowserGuard>,
    limit: Duration,
    /// Serves internode routes only (see [`Edge::peers_only`]).
    peers_only: bool,
}

impl Edge {
    /// Puts `router` behind the edge.
    pub fn new(router: Router, credentials: Current<Credentials>, limit: Duration) -> Self {
        Self {
            router,
            credentials,
            browser: Arc::default(),
            limit,
            peers_only: false,
        }
    }

    /// This edge for a connection on a slot kept for peers: internode requests pass as
    /// through any edge, and any other gets 503 `overloaded` with `Retry-After` and the
    /// connection closed.
    #[must_use]
    pub fn peers_only(mut self) -> Self {
        self.peers_only = true;
        self
    }

    /// Checks what browsers send before the credentials (see [`BrowserGuard`]); without
    /// it, only that a POST body is JSON.
    pub fn with_browser_guard(mut self, guard: BrowserGuard) -> Self {
        self.browser = Arc::new(guard);
        self
    }
}

impl<B> Service<axum::http::Request<B>> for Edge
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> EdgeFuture {
        if self.peers_only && !request.uri().path().starts_with("/internal/") {
            return EdgeFuture {
                state: State::Refused {
                    answer: ready(Ok(overloaded())),
                },
            };
        }
        if let Err(refused) =
            self.browser
                .check(request.method(), request.uri().path(), request.headers())
        {
            return EdgeFuture {
                state: State::Refused {
                    answer: ready(Ok(refused.into_response())),
                },
            };
        }
        let checked =
            self.credentials
                .get()
                .check(request.method(), request.uri().path(), request.headers());
        let caller = match checked {
            Ok(caller) => caller,
            Err(refusal) => {
                let answer = match refusal {
                    Refusal::Unauthorized => unauthorized(),
                    Refusal::Forbidden => forbidden(),
                };
                return EdgeFuture {
                    state: State::Refused {
                        answer: ready(Ok(answer)),
                    },
                };
            }
        };
        // Handlers of admin routes log who asked for the change they make.
        request.extensions_mut().insert(caller);
        let routed = Service::<axum::http::Request<B>>::call(&mut self.router, request);
        EdgeFuture {
            state: State::Routed {
                routed: tokio::time::timeout(self.limit, routed),
                limit: self.limit,
            },
        }
    }
}

pin_project! {
    /// The answer to one request at the edge.
    pub struct EdgeFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State {
        // Refused for its credentials: no handler ran.
        Refused { answer: Ready<Result<Response, Infallible>> },
        // Routed, within the limit (kept for the 408's message).
        Routed {
            #[pin]
            routed: Timeout<RouteFuture<Infallible>>,
            limit: Duration,
        },
    }
}

impl Future for EdgeFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Refused { answer } => Pin::new(answer).poll(cx),
            StateProjection::Routed { routed, limit } => match routed.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(answer)) => Poll::Ready(answer),
                Poll::Ready(Err(_elapsed)) => Poll::Ready(Ok(timed_out(*limit))),
            },
        }
    }
}

/// 401 `unauthorized`, with the scheme a client should use, closing the connection: a
/// caller without the credential has no use for it, and one that keeps guessing must
/// connect again for each guess.
fn unauthorized() -> Response {
    metrics::counter!("quorumkv_unauthorized_requests_total").increment(1);
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong credentials",
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 503 `overloaded`, closing the connection: a client request on a slot kept for peers.
fn overloaded() -> Response {
    metrics::counter!("quorumkv_requests_refused_overloaded_total").increment(1);
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "every client connection slot of this node is held (--max-connections): try \
         again shortly, or another node",
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 403 `forbidden`: a client token on an admin route.
fn forbidden() -> Response {
    metrics::counter!("quorumkv_forbidden_requests_total").increment(1);
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this route changes the cluster or a bucket's rules: it needs an admin token \
         (--admin-token-file), not a client token",
    )
    .into_response()
}

/// 408 `request_timeout`, closing the connection: the rest of the request is not read.
fn timed_out(limit: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request took longer than {} ms", limit.as_millis()),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn slow_router() -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            )
            .route("/internal/v1/rpc", get(|| async { "peer" }))
            .route("/v1/health", get(|| async { "ok" }))
    }

    async fn error_code(response: Response) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        body["error"].as_str().unwrap().to_string()
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_request_over_its_time_gets_408_and_the_connection_closes() {
        let edge = Edge::new(
            slow_router(),
            Current::new(Credentials::default()),
            Duration::from_millis(20),
        );
        let response = edge.oneshot(request("/slow", &[])).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            response.headers().get(header::CONNECTION),
            Some(&HeaderValue::from_static("close"))
        );
        assert_eq!(error_code(response).await, "request_timeout");
    }

    #[tokio::test]
    async fn missing_credentials_get_401_before_any_handler_and_good_ones_pass() {
        let credentials = Credentials::default()
            .with_client_tokens("alpha-token-0123456789")
            .unwrap()
            .with_cluster_secret("a-long-enough-secret")
            .unwrap();
        let edge = Edge::new(
            slow_router(),
            Current::new(credentials),
            Duration::from_secs(5),
        );
        // A refused request never reaches the handler that would sleep for 30 s.
        let refused = edge.clone().oneshot(request("/slow", &[])).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
        assert_eq!(error_code(refused).await, "unauthorized");
        let peer = request(
            "/internal/v1/rpc",
            &[(crate::auth::CLUSTER_SECRET_HEADER, "a-long-enough-secret")],
        );
        assert_eq!(
            edge.clone().oneshot(peer).await.unwrap().status(),
            StatusCode::OK
        );
        let probe = edge.oneshot(request("/v1/health", &[])).await.unwrap();
        assert_eq!(probe.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_peers_only_edge_serves_peers_and_sends_clients_away() {
        let credentials = Credentials::default()
            .with_cluster_secret("a-long-enough-secret")
            .unwrap();
        let edge = Edge::new(
            slow_router(),
            Current::new(credentials),
            Duration::from_secs(5),
        )
        .peers_only();
        for path in ["/v1/health", "/slow", "/", "/internal"] {
            let refused = edge.clone().oneshot(request(path, &[])).await.unwrap();
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            let headers = refused.headers();
            assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
            assert_eq!(headers.get(header::CONNECTION).unwrap(), "close");
            assert_eq!(error_code(refused).await, "overloaded");
        }
        let peer = request(
            "/internal/v1/rpc",
            &[(crate::auth::CLUSTER_SECRET_HEADER, "a-long-enough-secret")],
        );
        assert_eq!(
            edge.clone().oneshot(peer).await.unwrap().status(),
            StatusCode::OK
        );
        // The secret is checked as anywhere: a stranger on a peer's slot gets 401.
        let stranger = edge
            .oneshot(request("/internal/v1/rpc", &[]))
            .await
            .unwrap();
        assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    }
}
