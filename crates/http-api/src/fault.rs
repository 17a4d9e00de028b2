//! Fault injection for tests: a switch that cuts this node's outgoing internode traffic to
//! chosen peers.
//!
//! Partition tests need to separate nodes while clients can still reach each of them. On
//! loopback, without network namespaces, the simplest faithful cut is at the transport:
//! when every node of one side blocks its sends to every node of the other, no request,
//! probe or handoff crosses, exactly as if the link were down, and the failure detector
//! sees refused connections. The route that sets the switch exists only when the node is
//! started with `--fault-injection`; a production node never serves it.
//!
//! The same routes plant a replica bug (`PUT /internal/v1/fault/replica`, see
//! [`quorumkv_coordinator::ReplicaFault`]), so that the fault suite can show its history
//! checker catches the anomalies it exists for.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use quorumkv_coordinator::{Coordinator, ReplicaFault};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The addresses this node's transport refuses to send to.
#[derive(Debug, Default)]
pub struct FaultSwitch {
    // A std RwLock: checked on every internode send, held for a set lookup only.
    blocked: RwLock<BTreeSet<String>>,
}

impl FaultSwitch {
    /// Whether sends to `addr` are cut.
    pub fn blocks(&self, addr: &str) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(addr)
    }

    /// Replaces the set of cut addresses.
    pub fn set(&self, addrs: BTreeSet<String>) {
        *self
            .blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addrs;
    }

    fn snapshot(&self) -> BTreeSet<String> {
        self.blocked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The body of `PUT /internal/v1/fault/partition`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Peer addresses (`host:port`) this node stops sending to; empty heals.
    pub blocked: BTreeSet<String>,
}

/// The body of `PUT /internal/v1/fault/replica`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlantedFault {
    /// `none`, `ack-without-storing`, `last-write-wins`, `whole-clock-answers`,
    /// `ignore-reap-requests`, `reap-without-agreement`, `keep-old-copies` or
    /// `reuse-actor-across-starts`.
    pub fault: ReplicaFault,
}

#[derive(Clone)]
struct Faults {
    switch: Arc<FaultSwitch>,
    coordinator: Arc<Coordinator>,
}

/// The fault-injection routes, for a node started with `--fault-injection`.
pub fn router(switch: Arc<FaultSwitch>, coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route(
            "/internal/v1/fault/partition",
            put(set_partition).get(get_partition),
        )
        .route(
            "/internal/v1/fault/replica",
            put(set_replica_fault).get(get_replica_fault),
        )
        .with_state(Faults {
            switch,
            coordinator,
        })
}

async fn set_partition(State(faults): State<Faults>, Json(partition): Json<Partition>) -> Response {
    tracing::warn!(blocked = ?partition.blocked, "fault injection: internode sends cut");
    faults.switch.set(partition.blocked);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_partition(State(faults): State<Faults>) -> Json<Partition> {
    Json(Partition {
        blocked: faults.switch.snapshot(),
    })
}

async fn set_replica_fault(
    State(faults): State<Faults>,
    Json(planted): Json<PlantedFault>,
) -> Response {
    let coordinator = Arc::clone(&faults.coordinator);
    match tokio::task::spawn_blocking(move || coordinator.set_planted_fault(planted.fault)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(error)) => internal(error.to_string()),
        Err(error) => internal(error.to_string()),
    }
}

/// A test-only route's failure to write its mark: the node's fault, not the caller's.
fn internal(message: String) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message).into_response()
}

async fn get_replica_fault(State(faults): State<Faults>) -> Json<PlantedFault> {
    Json(PlantedFault {
        fault: faults.coordinator.planted_fault(),
    })
}
