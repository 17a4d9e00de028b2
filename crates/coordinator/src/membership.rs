//! Who is in the cluster, where they listen, whether they answer, and the ring they form.
//!
//! Membership is static for now: a node's cluster is itself plus the addresses it was given
//! as seeds. The ring is built from node ids, but seeds are addresses, so a node learns each
//! seed's id by asking it (`Hello`) and keeps what it learned in its store, so that a
//! restarted node can place keys even while a peer is still down. Until every seed's id is
//! known the node has no ring and refuses data requests: placing keys on a partial ring
//! would put them where a full-ring read never looks.
//!
//! Liveness comes from a phi-accrual failure detector per peer ([`crate::detector`]). The ring is
//! an immutable snapshot behind an `Arc`, swapped whole when the member set changes.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use quorumkv_ring::{NodeId, Ring};
use serde::Serialize;

use crate::detector::{DetectorOptions, PhiDetector};

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

/// A peer learned in an earlier run, as persisted: id, address, zone.
pub type KnownPeer = (NodeId, String, Option<String>);

#[derive(Clone, Debug)]
struct Peer {
    addr: String,
    id: Option<NodeId>,
    zone: Option<String>,
    detector: PhiDetector,
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
    zone: Option<String>,
    partitions: u32,
    detector: DetectorOptions,
    // A std RwLock: every request reads the ring; changes are rare and never held across await.
    state: RwLock<State>,
}

impl Membership {
    /// A membership of `node` (listening at `addr`, in `zone`) and the seed addresses;
    /// `known` are the peers learned in an earlier run.
    #[allow(clippy::too_many_arguments)] // the node's identity and settings, each used once
    pub fn new(
        node: NodeId,
        addr: String,
        zone: Option<String>,
        seeds: &[String],
        known: &[KnownPeer],
        partitions: u32,
        detector: DetectorOptions,
    ) -> Self {
        let mut peers: Vec<Peer> = Vec::new();
        for seed in seeds {
            if *seed == addr || peers.iter().any(|p| p.addr == *seed) {
                continue;
            }
            let learned = known.iter().find(|(id, a, _)| a == seed && *id != node);
            peers.push(Peer {
                addr: seed.clone(),
                id: learned.map(|(id, _, _)| id.clone()),
                zone: learned.and_then(|(_, _, zone)| zone.clone()),
                detector: PhiDetector::default(),
            });
        }
        let membership = Self {
            node,
            addr,
            zone,
            partitions,
            detector,
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

    /// Records that the node at `addr` answered as `id` in `zone`. Returns true when that
    /// changed the member set or a zone (the caller persists it).
    pub fn record_alive(&self, addr: &str, id: NodeId, zone: Option<String>) -> bool {
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
        let was_up = peer.detector.is_up(Instant::now(), &self.detector);
        peer.detector.answered(Instant::now());
        if !was_up && peer.id.is_some() {
            tracing::info!(%addr, %id, "peer is up");
        }
        if peer.id.as_ref() == Some(&id) && peer.zone == zone {
            return false;
        }
        tracing::info!(%addr, %id, ?zone, "learned member");
        peer.id = Some(id);
        peer.zone = zone;
        drop(state);
        self.rebuild_ring();
        true
    }

    /// Records that the node at `addr` did not answer its probe; `refused` when nothing
    /// listens there (down at once), otherwise the detector's suspicion grows with time.
    pub fn record_unreachable(&self, addr: &str, refused: bool) {
        let now = Instant::now();
        let mut state = self.write();
        if let Some(peer) = state.peers.iter_mut().find(|p| p.addr == addr) {
            let was_up = peer.detector.is_up(now, &self.detector);
            if refused {
                peer.detector.refused();
            }
            if was_up && !peer.detector.is_up(now, &self.detector) {
                tracing::warn!(%addr, "peer is down");
            }
        }
    }

    /// Whether `id` is up as the failure detector sees it now (this node always is).
    pub fn is_up(&self, id: &NodeId) -> bool {
        if *id == self.node {
            return true;
        }
        let now = Instant::now();
        self.read()
            .peers
            .iter()
            .any(|p| p.id.as_ref() == Some(id) && p.detector.is_up(now, &self.detector))
    }

    /// How many known peers are down now.
    pub fn down_count(&self) -> usize {
        let now = Instant::now();
        self.read()
            .peers
            .iter()
            .filter(|p| p.id.is_some() && !p.detector.is_up(now, &self.detector))
            .count()
    }

    /// Every member with a known id, this node first, then by id.
    pub fn members(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        let state = self.read();
        let mut others: Vec<MemberStatus> = state
            .peers
            .iter()
            .filter_map(|p| {
                p.id.as_ref().map(|id| MemberStatus {
                    id: id.clone(),
                    addr: p.addr.clone(),
                    status: if p.detector.is_up(now, &self.detector) {
                        Liveness::Up
                    } else {
                        Liveness::Down
                    },
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

    /// Every known peer, for persisting.
    pub fn known_peers(&self) -> Vec<KnownPeer> {
        self.read()
            .peers
            .iter()
            .filter_map(|p| p.id.clone().map(|id| (id, p.addr.clone(), p.zone.clone())))
            .collect()
    }

    /// This node's zone.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
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
        let mut members: Vec<(NodeId, Option<String>)> = state
            .peers
            .iter()
            .filter_map(|p| p.id.clone().map(|id| (id, p.zone.clone())))
            .collect();
        members.push((self.node.clone(), self.zone.clone()));
        members.sort();
        members.dedup_by(|a, b| a.0 == b.0);
        match Ring::with_zones(members, self.partitions) {
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
        let m = Membership::new(
            id("a"),
            "h:1".into(),
            None,
            &seeds,
            &[],
            16,
            DetectorOptions::default(),
        );
        assert!(m.ring().is_none());
        assert_eq!(m.unknown_seeds(), vec!["h:2", "h:3"]);
        assert!(m.record_alive("h:2", id("b"), None));
        assert!(m.ring().is_none());
        assert!(m.record_alive("h:3", id("c"), None));
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
            None,
            &seeds,
            &[(id("b"), "h:2".into(), None)],
            16,
            DetectorOptions::default(),
        );
        assert!(m.ring().is_some());
        assert!(!m.is_up(&id("b")));
        m.record_alive("h:2", id("b"), None);
        assert!(m.is_up(&id("b")));
        m.record_unreachable("h:2", true);
        assert!(!m.is_up(&id("b")));
    }

    #[test]
    fn zones_learned_from_peers_shape_the_ring() {
        let seeds: Vec<String> = (2..=6).map(|i| format!("h:{i}")).collect();
        let m = Membership::new(
            id("n1"),
            "h:1".into(),
            Some("z1".into()),
            &seeds,
            &[],
            16,
            DetectorOptions::default(),
        );
        for i in 2..=6 {
            let zone = format!("z{}", (i - 1) % 3 + 1);
            assert!(m.record_alive(&format!("h:{i}"), id(&format!("n{i}")), Some(zone)));
        }
        let ring = m.ring().expect("ring");
        let zone = |node: &NodeId| (node.as_str()[1..].parse::<usize>().expect("n<i>") - 1) % 3;
        for partition in ring.partitions() {
            let zones: std::collections::BTreeSet<usize> = ring
                .preference_list_for(partition, 3)
                .iter()
                .map(zone)
                .collect();
            assert_eq!(zones.len(), 3);
        }
        assert_eq!(m.known_peers().len(), 5);
        // A zone change is a change to persist; the same answer again is not.
        assert!(m.record_alive("h:2", id("n2"), Some("z9".into())));
        assert!(!m.record_alive("h:2", id("n2"), Some("z9".into())));
    }

    #[test]
    fn a_seed_answering_with_our_own_id_is_not_a_member() {
        let seeds = vec!["localhost:1".to_string()];
        let m = Membership::new(
            id("a"),
            "h:1".into(),
            None,
            &seeds,
            &[],
            16,
            DetectorOptions::default(),
        );
        assert!(m.ring().is_none());
        assert!(!m.record_alive("localhost:1", id("a"), None));
        assert_eq!(m.ring().expect("ring").members(), &[id("a")]);
    }
}
