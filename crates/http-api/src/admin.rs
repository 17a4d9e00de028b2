//! Bucket properties, health, cluster view, metrics and the OpenAPI document.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use quorumkv_coordinator::props::PropsPatch;
use quorumkv_coordinator::{BucketProps, PropsUpdate};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{bucket_from_segment, parse_query};
use crate::AppState;

/// The OpenAPI 3 document of the client and admin routes.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /v1/buckets/{bucket}/props`.
pub async fn get_props(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<BucketProps>, ApiError> {
    parse_query(uri.query(), &[])?;
    let bucket = bucket_from_segment(props_segment(&uri))?;
    Ok(Json(state.coordinator.bucket_props(&bucket)))
}

/// `PUT /v1/buckets/{bucket}/props`.
pub async fn put_props(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BucketProps>, ApiError> {
    parse_query(uri.query(), &[])?;
    let bucket = bucket_from_segment(props_segment(&uri))?;
    let body = body.map_err(|r| ApiError::new(r.status(), "invalid_json", r.body_text()))?;
    let update = PropsPatch::from_json(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("props must be a JSON object with optional integer fields n, r, w: {e}"),
        )
    })?;
    let props = state
        .coordinator
        .set_bucket_props(
            &bucket,
            PropsUpdate {
                n: update.n,
                r: update.r,
                w: update.w,
            },
        )
        .await?;
    tracing::info!(
        %bucket, ?props, asked_by = %asked_by(caller),
        "bucket properties set through PUT /v1/buckets/{{bucket}}/props"
    );
    Ok(Json(props))
}

/// `GET /v1/health`.
pub async fn health(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    Ok(Json(json!({ "status": "ok", "node": state.coordinator.node() })).into_response())
}

/// `GET /v1/cluster`: each member with its liveness, its `state` and `ownership`, the
/// number of partitions it owns as primary owner in the current ring (0 for every member
/// while the ring is not formed), plus `next_ownership` while a membership change is under
/// way; the `ring_version`, equal on every node once gossip has converged;
/// `pending_transfers`, the (partition, new owner) pairs not yet moved (0 when balanced),
/// out of `transfers_total` in the change under way; `ring_formed`; and `ready`, what
/// `GET /v1/ready` answers.
pub async fn cluster(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    let view = state.coordinator.cluster_view();
    let membership = state.coordinator.membership();
    let ring = membership.ring();
    let ownership = ring
        .as_ref()
        .map(|ring| ring.ownership())
        .unwrap_or_default();
    let next_ownership = membership
        .next_ring()
        .filter(|next| {
            ring.as_ref()
                .is_some_and(|ring| !std::sync::Arc::ptr_eq(ring, next))
        })
        .map(|next| next.ownership());
    let members: Vec<serde_json::Value> = view
        .members
        .iter()
        .map(|member| {
            let mut value = json!(member);
            if let Some(fields) = value.as_object_mut() {
                let owned = ownership.get(&member.id).copied().unwrap_or(0);
                fields.insert("ownership".to_string(), json!(owned));
                if let Some(next) = &next_ownership {
                    let owned = next.get(&member.id).copied().unwrap_or(0);
                    fields.insert("next_ownership".to_string(), json!(owned));
                }
            }
            value
        })
        .collect();
    Ok(Json(json!({
        "node": view.node,
        "members": members,
        "partitions": view.partitions,
        "ready": view.unready.is_none(),
        "ring_formed": view.ring_formed,
        "ring_version": view.ring_version,
        "pending_transfers": state.coordinator.pending_transfers(),
        "transfers_total": state.coordinator.transfers_total(),
        "fault_injection": state.fault_injection,
    }))
    .into_response())
}

/// `POST /v1/cluster/leave`: this node starts handing its partitions to their next
/// owners; once the change is committed it stops (and its process exits 0). Answers
/// `202` with the node's record.
pub async fn leave(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    let record = state.coordinator.leave().await?;
    tracing::info!(
        asked_by = %asked_by(caller),
        "leave asked for through POST /v1/cluster/leave"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "node": record.id, "state": record.state })),
    )
        .into_response())
}

/// `POST /v1/cluster/remove` with `{"node": "<id>"}`: takes a member that cannot leave
/// by itself (it is dead) out of the cluster; its partitions are copied from the replicas
/// that survive. Answers `202` with the member's record.
pub async fn remove(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    let body = body.map_err(|r| ApiError::new(r.status(), "invalid_json", r.body_text()))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Removal {
        node: String,
        #[serde(default)]
        force: bool,
    }
    let removal: Removal = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body must be {{\"node\": \"<id>\", \"force\": <bool, optional>}}: {e}"),
        )
    })?;
    let node = quorumkv_coordinator::NodeId::new(removal.node.trim());
    let record = state.coordinator.remove(&node, removal.force).await?;
    tracing::info!(
        %node, force = removal.force, asked_by = %asked_by(caller),
        "removal asked for through POST /v1/cluster/remove"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "node": record.id, "state": record.state })),
    )
        .into_response())
}

/// `POST /v1/cluster/cleanup`: this node drops its copies of the partitions it does not
/// own now (it also does so by itself after every membership change). Answers `200` with
/// what it dropped: `partitions` (the (partition, bucket) pairs), `keys`, `bytes`, and per
/// bucket; `409 change_in_progress` while a change is under way or has just committed.
pub async fn cleanup(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    let report = state.coordinator.cleanup().await?;
    tracing::info!(
        keys = report.keys, asked_by = %asked_by(caller),
        "cleanup run through POST /v1/cluster/cleanup"
    );
    let buckets: Vec<serde_json::Value> = report
        .buckets
        .iter()
        .map(|(bucket, (keys, bytes))| json!({ "bucket": bucket, "keys": keys, "bytes": bytes }))
        .collect();
    Ok(Json(json!({
        "node": state.coordinator.node(),
        "partitions": report.partitions,
        "keys": report.keys,
        "bytes": report.bytes,
        "buckets": buckets,
    }))
    .into_response())
}

/// `GET /metrics`: Prometheus text format, with RocksDB's and the runtime's figures read for
/// this scrape.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if state.metrics.is_some() {
        crate::observe::record_engine_stats(&state.coordinator).await;
        crate::observe::record_runtime();
    }
    let body = state
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Any unknown route.
pub async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_route",
        format!("no route for {}", uri.path()),
    )
}

/// A known route with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not serve that method",
    )
}

/// The raw (still percent-encoded) bucket segment of `/v1/buckets/{bucket}/props`, taken
/// from the path itself so that bucket names are decoded in one place, strictly.
fn props_segment(uri: &Uri) -> &str {
    uri.path()
        .strip_prefix("/v1/buckets/")
        .and_then(|rest| rest.strip_suffix("/props"))
        .unwrap_or("")
}

/// Who asked for an admin change, for its log line: the caller the edge established (a
/// router without the edge, in tests, has none).
fn asked_by(caller: Option<Extension<Caller>>) -> Caller {
    caller.map_or(Caller::Anyone, |Extension(caller)| caller)
}
