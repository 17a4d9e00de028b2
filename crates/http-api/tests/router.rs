//! The router without sockets: a single-node coordinator on a real RocksDB in a temp dir,
//! driven with `oneshot`. Checks that the OpenAPI document and the router agree.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use quorumkv_coordinator::message;
use quorumkv_coordinator::{Coordinator, CoordinatorOptions, NodeId, Transport, TransportError};
use quorumkv_http_api::{router, AppState};
use quorumkv_replica::{Store, StoreOptions};
use tower::ServiceExt;

/// A single node has no peers: any call is a bug of the test setup.
struct NoPeers;

#[async_trait]
impl Transport for NoPeers {
    async fn call(
        &self,
        addr: &str,
        _request: &message::Request,
        _timeout: Duration,
    ) -> Result<message::Response, TransportError> {
        Err(TransportError::Unreachable(format!(
            "no peer {addr} in this test"
        )))
    }
}

fn app(dir: &tempfile::TempDir) -> axum::Router {
    app_with_seeds(dir, &[])
}

/// A node whose seeds never answer (`NoPeers`) stays without a ring.
fn app_with_seeds(dir: &tempfile::TempDir, seeds: &[String]) -> axum::Router {
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let options = CoordinatorOptions {
        default_n: 1,
        ..CoordinatorOptions::default()
    };
    let coordinator = Coordinator::new(
        NodeId::new("solo"),
        "127.0.0.1:1".into(),
        seeds,
        store,
        Arc::new(NoPeers),
        options,
    )
    .unwrap();
    router(AppState::new(Arc::new(coordinator), None, 1024))
}

async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: &'static [u8],
) -> (StatusCode, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

#[tokio::test]
async fn every_documented_route_and_method_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let doc: serde_json::Value = serde_json::from_str(quorumkv_http_api::admin::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (template, item) in paths {
        let uri = template.replace("{bucket}", "b").replace("{key}", "k");
        for method in ["get", "put", "post", "delete", "patch", "head"] {
            let documented = item.get(method).is_some();
            let body: &'static [u8] = if template.ends_with("props") {
                b"{}"
            } else {
                b"v"
            };
            let (status, bytes) = send(
                &app,
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &uri,
                body,
            )
            .await;
            let text = String::from_utf8_lossy(&bytes);
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .map(|body| body["error"].clone())
                .unwrap_or_default();
            if documented {
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && code != "unknown_route",
                    "{method} {template} is documented but not routed: {status} {text}"
                );
                checked += 1;
            } else if method != "head" {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template} is routed but not documented"
                );
            }
        }
    }
    assert!(checked >= 9, "only {checked} documented operations");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let (status, body) = send(&app, Method::GET, "/nope", b"").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "unknown_route");
    let (status, body) = send(&app, Method::PATCH, "/v1/buckets/b/keys/k", b"").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn a_single_node_round_trip_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let (status, _) = send(&app, Method::PUT, "/v1/buckets/b/keys/k%00x", b"payload").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(&app, Method::GET, "/v1/buckets/b/keys/k%00x", b"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"payload");
    let (status, body) = send(&app, Method::PUT, "/v1/buckets/b/keys/big", &[0u8; 1025]).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn ready_answers_200_once_the_ring_is_formed_and_503_before() {
    let dir = tempfile::tempdir().unwrap();
    let (status, body) = send(&app(&dir), Method::GET, "/v1/ready", b"").await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "ready");

    let dir = tempfile::tempdir().unwrap();
    let waiting = app_with_seeds(&dir, &["127.0.0.1:9".to_string()]);
    let (status, body) = send(&waiting, Method::GET, "/v1/ready", b"").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "not_ready");
    assert!(
        body["message"].as_str().unwrap().contains("127.0.0.1:9"),
        "the message names the seed it waits for: {body}"
    );
}

#[tokio::test]
async fn the_cluster_view_counts_the_partitions_each_member_owns() {
    let dir = tempfile::tempdir().unwrap();
    let (status, body) = send(&app(&dir), Method::GET, "/v1/cluster", b"").await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["members"][0]["ownership"], body["partitions"]);

    let dir = tempfile::tempdir().unwrap();
    let waiting = app_with_seeds(&dir, &["127.0.0.1:9".to_string()]);
    let (_, body) = send(&waiting, Method::GET, "/v1/cluster", b"").await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["members"][0]["ownership"], 0);
}

#[tokio::test]
async fn the_status_page_is_html_that_loads_nothing_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let response = app(&dir)
        .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    let page = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(page.to_vec()).unwrap();
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
        "url(",
    ] {
        assert!(!page.contains(external), "the page loads {external}...");
    }
    assert!(page.contains("v1/cluster") && page.contains("metrics"));
}
