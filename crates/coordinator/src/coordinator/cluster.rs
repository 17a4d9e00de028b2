//! Cluster upkeep of one node: probing peers (ids, zones, liveness), gossiping the member
//! table, remembering what it learned, and pulling bucket properties from the peers
//! (merged in `bucket_props.rs`). None of it is on a request's path.

use std::sync::Arc;
use std::time::Duration;

use quorumkv_replica::{Store, StoreError};
use quorumkv_ring::NodeId;

use super::{Coordinator, META_MEMBERS};
use crate::error::CoordinatorError;

/// How often a node probes its peers and pulls their bucket properties; also the failure
/// detector's shortest expected interval between probe replies.
pub const TICK: Duration = Duration::from_millis(500);
/// How long a probe may take before the peer counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
use crate::gossip::MemberRecord;
use crate::membership::{Bootstrap, KnownPeer};
use crate::message::{Request, Response};
use crate::transport::TransportError;

impl Coordinator {
    /// One round of background upkeep: probes every peer (learning ids and liveness),
    /// persists newly learned members, and pulls bucket properties from the peers that
    /// answered. The server calls it periodically.
    pub async fn tick(self: &Arc<Self>, probe_timeout: Duration) {
        let probes = self.membership.peer_addrs().into_iter().map(|addr| {
            let transport = Arc::clone(&self.transport);
            async move {
                let answer = transport
                    .call(&addr, &Request::Describe, probe_timeout)
                    .await;
                (addr, answer)
            }
        });
        let mut learned = false;
        let mut alive = Vec::new();
        for (addr, answer) in futures::future::join_all(probes).await {
            match answer {
                Ok(Response::Described { node, zone }) => {
                    learned |= self.membership.record_alive(&addr, node, zone);
                    alive.push(addr);
                }
                Err(TransportError::Unreachable(_)) => {
                    self.membership.record_unreachable(&addr, true);
                }
                _ => self.membership.record_unreachable(&addr, false),
            }
        }
        metrics::gauge!("quorumkv_nodes_down").set(self.membership.down_count() as f64);
        learned |= self.gossip_round(probe_timeout).await;
        if let Some(founding) = self.membership.found_together() {
            tracing::info!(
                members = founding.len(),
                "no seed belongs to a formed cluster: founding one with them"
            );
            learned |= self.membership.merge_records(founding);
        }
        if let Some(reason) = self.membership.stuck_reason() {
            tracing::warn!("{reason}");
        }
        // The version is 53 bits: exact in a gauge's f64.
        metrics::gauge!("quorumkv_ring_version").set(self.membership.ring_version() as f64);
        if learned {
            self.persist_members().await;
        }
        let pulls = alive.into_iter().map(|addr| {
            let transport = Arc::clone(&self.transport);
            async move {
                transport
                    .call(&addr, &Request::GetProps, probe_timeout)
                    .await
            }
        });
        for answer in futures::future::join_all(pulls).await {
            if let Ok(Response::Props(props)) = answer {
                if let Err(error) = self.adopt_props(&props).await {
                    tracing::error!(%error, "cannot persist bucket properties");
                }
            }
        }
    }

    /// One push-pull gossip exchange with one peer: sends this node's member table, merges
    /// the answer. Returns true when the table changed.
    async fn gossip_round(self: &Arc<Self>, timeout: Duration) -> bool {
        let Some(addr) = self.membership.gossip_target() else {
            return false;
        };
        let request = Request::Gossip {
            records: self.membership.records(),
        };
        match self.transport.call(&addr, &request, timeout).await {
            Ok(Response::Gossip { records }) => self.membership.merge_records(records),
            Ok(other) => {
                tracing::debug!(%addr, ?other, "unexpected answer to gossip");
                false
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "gossip failed");
                false
            }
        }
    }

    /// Answers a peer's gossip: merges its records, answers with the merged table.
    pub(super) async fn answer_gossip(self: &Arc<Self>, records: Vec<MemberRecord>) -> Response {
        if self.membership.merge_records(records) {
            self.persist_members().await;
        }
        Response::Gossip {
            records: self.membership.records(),
        }
    }

    /// Keeps the member table in the store, so that a restarted node places keys at once.
    pub(super) async fn persist_members(self: &Arc<Self>) {
        let stored = StoredTable {
            format: MEMBER_TABLE_FORMAT,
            records: self.membership.records(),
        };
        if let Err(error) = self.save_meta(META_MEMBERS, &stored).await {
            tracing::error!(%error, "cannot persist the member table");
        }
    }

    pub(super) async fn save_meta<T: serde::Serialize>(
        &self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CoordinatorError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.put_meta(name, &bytes))
            .await
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?
            .map_err(|e| match e {
                StoreError::OutOfSpace(_) => CoordinatorError::InsufficientStorage(e.to_string()),
                e => CoordinatorError::Internal(e.to_string()),
            })
    }
}

/// The format marker of the persisted member table.
const MEMBER_TABLE_FORMAT: u8 = 2;

/// The member table as persisted: `{"format": 2, "records": [...]}`.
#[derive(serde::Serialize)]
struct StoredTable {
    format: u8,
    records: Vec<MemberRecord>,
}

/// What the store holds under `members`: the member table, or the list of peers written
/// before member tables existed (still read, so that an upgraded node keeps its cluster).
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(super) enum StoredMembers {
    Table {
        format: u8,
        records: Vec<MemberRecord>,
    },
    Peers(Vec<StoredPeer>),
}

impl StoredMembers {
    /// What a node starts from, given what its store kept (if anything).
    pub(super) fn bootstrap(stored: Option<Self>, seeds: &[String], joining: bool) -> Bootstrap {
        let mut bootstrap = Bootstrap {
            seeds: seeds.to_vec(),
            joining,
            ..Bootstrap::default()
        };
        match stored {
            Some(Self::Table { format, records }) => {
                if format != MEMBER_TABLE_FORMAT {
                    tracing::warn!(
                        format,
                        "member table of an unknown format; reading it anyway"
                    );
                }
                bootstrap.records = records;
            }
            Some(Self::Peers(peers)) => {
                bootstrap.known = peers.into_iter().map(StoredPeer::into_known).collect();
            }
            None => {}
        }
        bootstrap
    }
}

/// A persisted peer: `[id, addr, zone]`, or `[id, addr]` as written before zones existed.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(super) enum StoredPeer {
    Zoned(NodeId, String, Option<String>),
    Plain(NodeId, String),
}

impl StoredPeer {
    pub(super) fn into_known(self) -> KnownPeer {
        match self {
            Self::Zoned(id, addr, zone) => (id, addr, zone),
            Self::Plain(id, addr) => (id, addr, None),
        }
    }
}

pub(super) fn load_meta<T: serde::de::DeserializeOwned>(
    store: &Store,
    name: &str,
) -> Result<Option<T>, CoordinatorError> {
    let Some(bytes) = store
        .get_meta(name)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CoordinatorError::Internal(format!("stored {name} is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_table_and_the_older_peer_list_are_both_read() {
        let table: StoredMembers = serde_json::from_str(
            r#"{"format":2,"records":[{"id":"n2","addr":"h:2","zone":null,"state":"joining","version":1,"transfers_done":null}]}"#,
        )
        .expect("table");
        let bootstrap = StoredMembers::bootstrap(Some(table), &[], true);
        assert_eq!(bootstrap.records.len(), 1);
        assert_eq!(
            bootstrap.records[0].state,
            crate::gossip::MemberState::Joining
        );
        let old: StoredMembers = serde_json::from_str(r#"[["n2","h:2","z1"]]"#).expect("old");
        let bootstrap = StoredMembers::bootstrap(Some(old), &["h:1".to_string()], false);
        assert_eq!(bootstrap.known.len(), 1);
        assert!(bootstrap.records.is_empty());
    }

    #[test]
    fn persisted_peers_are_read_with_or_without_a_zone() {
        let old: Vec<StoredPeer> = serde_json::from_str(r#"[["n2","h:2"]]"#).expect("old form");
        let new: Vec<StoredPeer> =
            serde_json::from_str(r#"[["n2","h:2","z1"],["n3","h:3",null]]"#).expect("new form");
        let known = |peers: Vec<StoredPeer>| -> Vec<KnownPeer> {
            peers.into_iter().map(StoredPeer::into_known).collect()
        };
        assert_eq!(
            known(old),
            vec![(NodeId::new("n2"), "h:2".to_string(), None)]
        );
        assert_eq!(
            known(new),
            vec![
                (NodeId::new("n2"), "h:2".to_string(), Some("z1".to_string())),
                (NodeId::new("n3"), "h:3".to_string(), None)
            ]
        );
    }
}
