//! Who is in the cluster, where they listen, whether they answer, and the ring they form.
//!
//! Membership is static for now: a node's cluster is itself plus the addresses it was given
//! as seeds. The ring is built from node ids, but seeds are addresses, so a node learns each
//! seed's id by asking it (`Hello`) and keeps what it learned in its store, so that a
//! restarted node can place keys even while a peer is still down. Until every seed's id is
//! known the node has no ring and refuses data requests: placing keys on a partial ring
//! would put them where a full-ring read never looks.
//!
//! Liveness is a plain heartbeat: a peer that failed its last probe is `down`. The ring is
//! an immutable snapshot behind an `Arc`, swapped whole when the member set changes.

use std::sync::{Arc, RwLock};

use quorumkv_ring::{NodeId, Ring};
use serde::Serialize;

/// A member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The member's node id.
    pub id: NodeId,
    /// Where it listens, `host:port`.
    pub addr: String,
    /// Whether its last liveness probe succeeded.
    pub status: Liveness,
}

/// The result of the latest liveness probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Answered.
    Up,
    /// Did not answer.
    Down,
}

#[derive(Clone, Debug)]
struct Peer {
    addr: String,
    id: Option<NodeId>,
    up: bool,
}

#[derive(Debug)]
struct State {
    peers: Vec<Peer>,
    ring: Option<Arc<Ring>>,
}

/// The member list and ring of one node.
#[derive(Debug)]
pub struct Membership {
    node: NodeId,
    addr: String,
    partitions: u32,
    // A std RwLock: every request reads the ring; changes are rare and never held across await.
    state: RwLock<State>,
}

impl Membership {
    /// A membership of `node` (listening at `addr`) and the seed addresses; `known` are
    /// (id, address) pairs learned in an earlier run.
    pub fn new(
        node: NodeId,
        addr: String,
        seeds: &[String],
        known: &[(NodeId, String)],
        partitions: u32,
    ) -> Self {
        let mut peers: Vec<Peer> = Vec::new();
        for seed in seeds {
            if *seed == addr || peers.iter().any(|p| p.addr == *seed) {
                continue;
            }
            let id = known
                .iter()
                .find(|(id, a)| a == seed && *id != node)
                .map(|(id, _)| id.clone());
            peers.push(Peer {
                addr: seed.clone(),
                id,
                up: false,
            });
        }
        let membership = Self {
            node,
            addr,
            partitions,
            state: RwLock::new(State { peers, ring: None }),
        };
        membership.rebuild_ring();
        membership
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The current ring, if every member's id is known.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        self.read().ring.clone()
    }

    /// Seeds whose id is still unknown (what readiness waits for).
    pub fn unknown_seeds(&self) -> Vec<String> {
        self.read()
            .peers
            .iter()
            .filter(|p| p.id.is_none())
            .map(|p| p.addr.clone())
            .collect()
    }

    /// The address of a member, this node included.
    pub fn addr_of(&self, id: &NodeId) -> Option<String> {
        if *id == self.node {
            return Some(self.addr.clone());
        }
        self.read()
            .peers
            .iter()
            .find(|p| p.id.as_ref() == Some(id))
            .map(|p| p.addr.clone())
    }

    /// The addresses of every peer (not this node), for probing.
    pub fn peer_addrs(&self) -> Vec<String> {
        self.read().peers.iter().map(|p| p.addr.clone()).collect()
    }

    /// Records that the node at `addr` answered as `id`. Returns true when that changed the
    /// member set (the caller persists it).
    pub fn record_alive(&self, addr: &str, id: NodeId) -> bool {
        let mut state = self.write();
        let duplicate = id == self.node
            || state
                .peers
                .iter()
                .any(|p| p.addr != addr && p.id.as_ref() == Some(&id));
        if duplicate {
            // Another address (or this node itself) already answers to this id: the seed is an
            // alias, not a member. Drop it so it neither joins the ring nor blocks it.
            tracing::warn!(%addr, %id, "seed answers with an id already in the cluster; ignoring it");
            state.peers.retain(|p| p.addr != addr);
            drop(state);
            self.rebuild_ring();
            return false;
        }
        let Some(peer) = state.peers.iter_mut().find(|p| p.addr == addr) else {
            return false;
        };
        peer.up = true;
        if peer.id.as_ref() == Some(&id) {
            return false;
        }
        tracing::info!(%addr, %id, "learned member");
        peer.id = Some(id);
        drop(state);
        self.rebuild_ring();
        true
    }

    /// Records that the node at `addr` did not answer its probe.
    pub fn record_unreachable(&self, addr: &str) {
        let mut state = self.write();
        if let Some(peer) = state.peers.iter_mut().find(|p| p.addr == addr) {
            if peer.up {
                tracing::warn!(%addr, "peer is down");
            }
            peer.up = false;
        }
    }

    /// Whether `id` answered its last probe (this node always has).
    pub fn is_up(&self, id: &NodeId) -> bool {
        *id == self.node
            || self
                .read()
                .peers
                .iter()
                .any(|p| p.id.as_ref() == Some(id) && p.up)
    }

    /// Every member with a known id, this node first, then by id.
    pub fn members(&self) -> Vec<MemberStatus> {
        let state = self.read();
        let mut others: Vec<MemberStatus> = state
            .peers
            .iter()
            .filter_map(|p| {
                p.id.as_ref().map(|id| MemberStatus {
                    id: id.clone(),
                    addr: p.addr.clone(),
                    status: if p.up { Liveness::Up } else { Liveness::Down },
                })
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        let mut all = vec![MemberStatus {
            id: self.node.clone(),
            addr: self.addr.clone(),
            status: Liveness::Up,
        }];
        all.extend(others);
        all
    }

    /// (id, address) of every known peer, for persisting.
    pub fn known_peers(&self) -> Vec<(NodeId, String)> {
        self.read()
            .peers
            .iter()
            .filter_map(|p| p.id.clone().map(|id| (id, p.addr.clone())))
            .collect()
    }

    /// The number of partitions of the ring.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    fn rebuild_ring(&self) {
        let mut state = self.write();
        if state.peers.iter().any(|p| p.id.is_none()) {
            state.ring = None;
            return;
        }
        let mut ids: Vec<NodeId> = state.peers.iter().filter_map(|p| p.id.clone()).collect();
        ids.push(self.node.clone());
        ids.sort();
        ids.dedup();
        match Ring::new(ids, self.partitions) {
            Ok(ring) => {
                tracing::info!(members = ring.members().len(), "ring formed");
                state.ring = Some(Arc::new(ring));
            }
            Err(error) => {
                tracing::error!(%error, "cannot build the ring");
                state.ring = None;
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s)
    }

    #[test]
    fn ring_forms_only_once_every_seed_is_known() {
        let seeds = vec!["h:2".to_string(), "h:3".to_string(), "h:1".to_string()];
        let m = Membership::new(id("a"), "h:1".into(), &seeds, &[], 16);
        assert!(m.ring().is_none());
        assert_eq!(m.unknown_seeds(), vec!["h:2", "h:3"]);
        assert!(m.record_alive("h:2", id("b")));
        assert!(m.ring().is_none());
        assert!(m.record_alive("h:3", id("c")));
        let ring = m.ring().expect("ring");
        assert_eq!(ring.members().len(), 3);
        assert_eq!(m.addr_of(&id("c")).as_deref(), Some("h:3"));
    }

    #[test]
    fn known_peers_make_a_restarted_node_ready_at_once() {
        let seeds = vec!["h:2".to_string()];
        let m = Membership::new(
            id("a"),
            "h:1".into(),
            &seeds,
            &[(id("b"), "h:2".into())],
            16,
        );
        assert!(m.ring().is_some());
        assert!(!m.is_up(&id("b")));
        m.record_alive("h:2", id("b"));
        assert!(m.is_up(&id("b")));
        m.record_unreachable("h:2");
        assert!(!m.is_up(&id("b")));
    }

    #[test]
    fn a_seed_answering_with_our_own_id_is_not_a_member() {
        let seeds = vec!["localhost:1".to_string()];
        let m = Membership::new(id("a"), "h:1".into(), &seeds, &[], 16);
        assert!(m.ring().is_none());
        assert!(!m.record_alive("localhost:1", id("a")));
        assert_eq!(m.ring().expect("ring").members(), &[id("a")]);
    }
}
