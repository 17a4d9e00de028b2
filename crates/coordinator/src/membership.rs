//! Who is in the cluster, where they listen, whether they answer, and the ring they form.
//!
//! The member set is a versioned table ([`crate::gossip`]) that nodes spread by gossip and
//! keep in their store. It starts in one of two ways:
//!
//! - A *founding* node (its own address is among its seeds, or it has no seeds) forms the
//!   cluster with the other seeds: it learns each seed's id by asking it (`Describe`) and
//!   records it as `Active`. Until every seed's id is known the node has no ring and refuses
//!   data requests: placing keys on a partial ring would put them where a full-ring read
//!   never looks.
//! - A *joining* node (seeds that do not name it) records itself as `Joining` and has no
//!   ring until a seed has answered a gossip round with the cluster's table.
//! - Nodes started together that each name only the *others* as seeds are all joining, and
//!   no cluster exists for them to join. Once every seed of a joining node has answered,
//!   every one of them is in its table still joining, and no member owns partitions, and
//!   that has held for [`FOUNDING_SETTLE`] (long enough for a seed that is itself joining a
//!   formed cluster to have learned that cluster's table), the node founds the cluster with
//!   them: it writes the table's commit, every `Joining` record `Active` with the next
//!   version, which is the same on every node that decides it ([`Membership::found_together`]).
//!
//! Two rings follow from the table: the *current* ring (`Active` and `Leaving` members),
//! which owns the data now, and the *next* ring (`Active` and `Joining`), which will own it
//! once the moving partitions have been transferred. Requests are placed on the current
//! ring.
//!
//! Liveness comes from a phi-accrual failure detector per peer ([`crate::detector`]). The
//! rings are immutable snapshots behind an `Arc`, swapped whole when the table changes.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use quorumkv_ring::{NodeId, Ring};
use serde::Serialize;

use crate::detector::{DetectorOptions, PhiDetector};
use crate::gossip::{MemberRecord, MemberState, MemberTable};

mod forming;

/// A member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The member's node id.
    pub id: NodeId,
    /// Where it listens, `host:port`.
    pub addr: String,
    /// Whether its last liveness probe succeeded.
    pub status: Liveness,
    /// Where it is in its life (joining, active, leaving).
    pub state: MemberState,
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

/// A peer learned in an earlier run, as persisted before member tables: id, address, zone.
pub type KnownPeer = (NodeId, String, Option<String>);

/// What a node starts from: its seeds and what its store kept from an earlier run.
#[derive(Clone, Debug, Default)]
pub struct Bootstrap {
    /// The seed addresses (this node's own among them for a founding node).
    pub seeds: Vec<String>,
    /// Whether the node joins an existing cluster rather than founding one with its seeds.
    pub joining: bool,
    /// Peers persisted in the format before member tables (each taken as `Active`).
    pub known: Vec<KnownPeer>,
    /// The persisted member table.
    pub records: Vec<MemberRecord>,
}

#[derive(Clone, Debug)]
struct Peer {
    addr: String,
    id: Option<NodeId>,
    zone: Option<String>,
    /// Given by `--seeds`: a founding node waits for its id.
    seed: bool,
    detector: PhiDetector,
}

/// How long the conditions of founding together must hold before a joining node founds
/// (see the module docs): a few gossip rounds of 500 ms.
pub const FOUNDING_SETTLE: Duration = Duration::from_secs(3);

/// How long a node may stay without a ring before it says why, at warning level.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct State {
    /// Since when the conditions of founding together have held (`None`: they do not).
    founding_since: Option<Instant>,
    /// When this node last said why it has no ring.
    last_stuck_warning: Option<Instant>,
    peers: Vec<Peer>,
    table: MemberTable,
    ring: Option<Arc<Ring>>,
    next_ring: Option<Arc<Ring>>,
    /// The ring before the last commit, and when it was replaced: writes keep reaching it
    /// for a while (see [`Membership::joint_ring`]).
    previous: Option<(Arc<Ring>, Instant)>,
}

/// The member table, peers and rings of one node.
#[derive(Debug)]
pub struct Membership {
    node: NodeId,
    addr: String,
    zone: Option<String>,
    joining: bool,
    started: Instant,
    partitions: u32,
    detector: DetectorOptions,
    // A std RwLock: every request reads the ring; changes are rare and never held across await.
    state: RwLock<State>,
}

impl Membership {
    /// A membership of `node` (listening at `addr`, in `zone`) started from `bootstrap`.
    pub fn new(
        node: NodeId,
        addr: String,
        zone: Option<String>,
        bootstrap: &Bootstrap,
        partitions: u32,
        detector: DetectorOptions,
    ) -> Self {
        let mut table = MemberTable::from_records(bootstrap.records.iter().cloned());
        if !bootstrap.joining {
            for (id, peer_addr, peer_zone) in &bootstrap.known {
                if *id != node && table.get(id).is_none() {
                    table.merge_one(MemberRecord::new(
                        id.clone(),
                        peer_addr.clone(),
                        peer_zone.clone(),
                        MemberState::Active,
                    ));
                }
            }
        }
        let own = match table.get(&node) {
            None => Some(MemberRecord::new(
                node.clone(),
                addr.clone(),
                zone.clone(),
                if bootstrap.joining {
                    MemberState::Joining
                } else {
                    MemberState::Active
                },
            )),
            // Only a node changes its own address and zone, with a new version.
            Some(held) if held.addr != addr || held.zone != zone => Some(MemberRecord {
                addr: addr.clone(),
                zone: zone.clone(),
                version: held.version.saturating_add(1),
                ..held.clone()
            }),
            Some(_) => None,
        };
        if let Some(own) = own {
            table.merge_one(own);
        }
        let mut peers: Vec<Peer> = Vec::new();
        for seed in &bootstrap.seeds {
            if *seed == addr || peers.iter().any(|p| p.addr == *seed) {
                continue;
            }
            let learned = table
                .records()
                .find(|r| r.addr == *seed && r.id != node)
                .map(|r| (r.id.clone(), r.zone.clone()));
            peers.push(Peer {
                addr: seed.clone(),
                id: learned.as_ref().map(|(id, _)| id.clone()),
                zone: learned.and_then(|(_, zone)| zone),
                seed: true,
                detector: PhiDetector::default(),
            });
        }
        let membership = Self {
            node,
            addr,
            zone,
            joining: bootstrap.joining,
            started: Instant::now(),
            partitions,
            detector,
            state: RwLock::new(State {
                founding_since: None,
                last_stuck_warning: None,
                peers,
                table,
                ring: None,
                next_ring: None,
                previous: None,
            }),
        };
        {
            let mut state = membership.write();
            membership.sync_peers(&mut state);
        }
        membership.rebuild_ring();
        membership
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The current ring, if it is formed.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        self.read().ring.clone()
    }

    /// The next ring (the current one when nothing is moving), if it is formed.
    pub fn next_ring(&self) -> Option<Arc<Ring>> {
        self.read().next_ring.clone()
    }

    /// The ring a write must also reach a quorum of, besides the current one: the next
    /// ring while a membership change is under way, and for `settle` after its commit the
    /// ring it replaced (nodes that have not yet heard of the commit still read there).
    /// `None` when neither applies.
    pub fn joint_ring(&self, settle: std::time::Duration) -> Option<Arc<Ring>> {
        let state = self.read();
        let (ring, next) = (state.ring.as_ref()?, state.next_ring.as_ref()?);
        if !Arc::ptr_eq(ring, next) {
            return Some(Arc::clone(next));
        }
        state
            .previous
            .as_ref()
            .filter(|(_, since)| since.elapsed() < settle)
            .map(|(previous, _)| Arc::clone(previous))
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
    /// changed the member table (the caller persists it).
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
        let seed = peer.seed;
        if peer.id.as_ref() != Some(&id) || peer.zone != zone {
            tracing::info!(%addr, %id, ?zone, "learned member");
            peer.id = Some(id.clone());
            peer.zone = zone.clone();
        }
        // A founding node's seeds are the cluster's first members. Only a record nobody has
        // written yet is created here: a later state (or a zone the member changed itself)
        // arrives by gossip with a higher version.
        let created = !self.joining
            && seed
            && state.table.get(&id).is_none()
            && state.table.merge_one(MemberRecord::new(
                id,
                addr.to_string(),
                zone,
                MemberState::Active,
            ));
        let ring_missing = state.ring.is_none();
        drop(state);
        if created || ring_missing {
            self.rebuild_ring();
        }
        created
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

    /// How many known peers are down now (a removed member that is still a seed, and so
    /// still probed, does not count).
    pub fn down_count(&self) -> usize {
        let now = Instant::now();
        let state = self.read();
        state
            .peers
            .iter()
            .filter(|p| {
                p.id.as_ref().is_some_and(|id| {
                    state
                        .table
                        .get(id)
                        .is_none_or(|r| r.state != MemberState::Removed)
                }) && !p.detector.is_up(now, &self.detector)
            })
            .count()
    }

    /// Every member that is not removed, this node first, then by id.
    pub fn members(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        let state = self.read();
        let liveness = |id: &NodeId| {
            let up = *id == self.node
                || state
                    .peers
                    .iter()
                    .any(|p| p.id.as_ref() == Some(id) && p.detector.is_up(now, &self.detector));
            if up {
                Liveness::Up
            } else {
                Liveness::Down
            }
        };
        let mut all: Vec<MemberStatus> = state
            .table
            .records()
            .filter(|r| r.state != MemberState::Removed)
            .map(|r| MemberStatus {
                id: r.id.clone(),
                addr: r.addr.clone(),
                status: liveness(&r.id),
                state: r.state,
            })
            .collect();
        // This node first, the others by id (the table is ordered by id).
        all.sort_by_key(|m| m.id != self.node);
        all
    }

    /// Every record of the member table, for gossip and persistence.
    pub fn records(&self) -> Vec<MemberRecord> {
        self.read().table.records().cloned().collect()
    }

    /// A copy of the member table.
    pub fn table(&self) -> MemberTable {
        self.read().table.clone()
    }

    /// The hash of the member table's ids and states (equal on converged nodes).
    pub fn ring_version(&self) -> u64 {
        self.read().table.ring_version()
    }

    /// Merges records gossiped by a peer. Returns true when the table changed (the caller
    /// persists it).
    pub fn merge_records(&self, records: Vec<MemberRecord>) -> bool {
        let mut state = self.write();
        let before = state.table.ring_version();
        if !state.table.merge(records) {
            return false;
        }
        self.sync_peers(&mut state);
        let after = state.table.ring_version();
        drop(state);
        if before != after {
            tracing::info!(ring_version = after, "member table changed");
        }
        self.rebuild_ring();
        true
    }

    /// Replaces this node's own record by `change` applied to it, with the next version.
    /// Returns the new record.
    pub fn update_own(&self, change: impl FnOnce(&mut MemberRecord)) -> Option<MemberRecord> {
        let mut state = self.write();
        let mut own = state.table.get(&self.node)?.clone();
        change(&mut own);
        own.version = own.version.checked_add(1)?;
        state.table.merge_one(own.clone());
        drop(state);
        self.rebuild_ring();
        Some(own)
    }

    /// A peer to gossip with this round, chosen at random among the peers that are up
    /// (any seed while a joining node has not yet received the cluster's table).
    pub fn gossip_target(&self) -> Option<String> {
        let now = Instant::now();
        let state = self.read();
        let adopted = state.table.records().any(|r| r.state.in_current_ring());
        let candidates: Vec<&Peer> = state
            .peers
            .iter()
            .filter(|p| {
                if self.joining && !adopted {
                    p.seed
                } else {
                    p.id.is_some() && p.detector.is_up(now, &self.detector)
                }
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let pick = std::collections::hash_map::RandomState::new().hash_one(now) as usize;
        Some(candidates[pick % candidates.len()].addr.clone())
    }

    /// This node's zone.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The number of partitions of the ring.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Makes the peer list follow the table: a peer for every member that is not removed,
    /// at the address its record gives; members removed are no longer probed.
    fn sync_peers(&self, state: &mut State) {
        let records: Vec<MemberRecord> = state.table.records().cloned().collect();
        for record in records {
            if record.id == self.node {
                continue;
            }
            if record.state == MemberState::Removed {
                state
                    .peers
                    .retain(|p| p.seed || p.id.as_ref() != Some(&record.id));
                continue;
            }
            if let Some(peer) = state
                .peers
                .iter_mut()
                .find(|p| p.id.as_ref() == Some(&record.id))
            {
                if peer.addr != record.addr && !peer.seed {
                    peer.addr = record.addr.clone();
                }
                continue;
            }
            // A seed whose id is not yet known learns it from its own answer to a probe,
            // not from gossip: readiness waits for that answer, so a ready node has seen
            // every seed up.
            if state.peers.iter().any(|p| p.addr == record.addr) {
                continue;
            }
            state.peers.push(Peer {
                addr: record.addr.clone(),
                id: Some(record.id.clone()),
                zone: record.zone.clone(),
                seed: false,
                detector: PhiDetector::default(),
            });
        }
    }

    fn rebuild_ring(&self) {
        let mut state = self.write();
        let waiting = state.peers.iter().any(|p| p.seed && p.id.is_none()) && !self.joining;
        let current = state.table.current_members();
        let next = state.table.next_members();
        if waiting || current.is_empty() {
            state.ring = None;
            state.next_ring = None;
            return;
        }
        let same_members = state
            .ring
            .as_ref()
            .is_some_and(|ring| ring.members().iter().eq(current.iter().map(|(id, _)| id)));
        let ring = match Ring::with_zones(current.clone(), self.partitions) {
            Ok(ring) => Arc::new(ring),
            Err(error) => {
                tracing::error!(%error, "cannot build the ring");
                state.ring = None;
                state.next_ring = None;
                return;
            }
        };
        if !same_members {
            tracing::info!(members = ring.members().len(), "ring formed");
            if let Some(old) = state.ring.take() {
                metrics::counter!("quorumkv_ring_changes_total").increment(1);
                state.previous = Some((old, Instant::now()));
            }
        }
        let next_ring = if next == current || next.is_empty() {
            Arc::clone(&ring)
        } else {
            match Ring::with_zones(next, self.partitions) {
                Ok(next) => Arc::new(next),
                Err(error) => {
                    tracing::error!(%error, "cannot build the next ring");
                    Arc::clone(&ring)
                }
            }
        };
        state.ring = Some(ring);
        state.next_ring = Some(next_ring);
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

    /// A node `name` at `addr` (16 partitions, default detector) starting as `bootstrap` says.
    fn node(name: &str, addr: &str, zone: Option<&str>, bootstrap: &Bootstrap) -> Membership {
        Membership::new(
            id(name),
            addr.into(),
            zone.map(String::from),
            bootstrap,
            16,
            DetectorOptions::default(),
        )
    }

    fn founding(seeds: &[String], known: &[KnownPeer]) -> Bootstrap {
        Bootstrap {
            seeds: seeds.to_vec(),
            known: known.to_vec(),
            ..Bootstrap::default()
        }
    }

    #[test]
    fn ring_forms_only_once_every_seed_is_known() {
        let seeds = vec!["h:2".to_string(), "h:3".to_string(), "h:1".to_string()];
        let m = node("a", "h:1", None, &founding(&seeds, &[]));
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
        let m = node(
            "a",
            "h:1",
            None,
            &founding(&seeds, &[(id("b"), "h:2".into(), None)]),
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
        let m = node("n1", "h:1", Some("z1"), &founding(&seeds, &[]));
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
        assert_eq!(m.records().len(), 6);
        // A zone is the member's own to change (with a new version of its record): a probe
        // answering another one does not rewrite the record.
        assert!(!m.record_alive("h:2", id("n2"), Some("z9".into())));
        let n2 = m.table().get(&id("n2")).cloned().expect("n2");
        assert_eq!(n2.zone.as_deref(), Some("z2"));
    }

    fn joining(name: &str, addr: &str, seeds: &[&str]) -> Membership {
        node(
            name,
            addr,
            None,
            &Bootstrap {
                seeds: seeds.iter().map(|s| s.to_string()).collect(),
                joining: true,
                ..Bootstrap::default()
            },
        )
    }

    /// Issue 2's contract: three nodes each started with the other two as seeds.
    #[test]
    fn nodes_that_name_only_each_other_found_one_cluster_together() {
        let addrs = ["h:1", "h:2", "h:3"];
        let names = ["a", "b", "c"];
        let nodes: Vec<Membership> = (0..3)
            .map(|i| {
                let seeds: Vec<&str> = (0..3).filter(|&j| j != i).map(|j| addrs[j]).collect();
                joining(names[i], addrs[i], &seeds)
            })
            .collect();
        let t0 = Instant::now();
        // Seeds answer probes; nobody founds before every seed's record is in its table.
        for (i, m) in nodes.iter().enumerate() {
            for j in (0..3).filter(|&j| j != i) {
                m.record_alive(addrs[j], id(names[j]), None);
            }
            assert_eq!(m.found_together_at(t0), None);
        }
        // Gossip: every node learns every record (all joining).
        let all: Vec<MemberRecord> = nodes.iter().flat_map(Membership::records).collect();
        for m in &nodes {
            m.merge_records(all.clone());
            assert!(m.ring().is_none());
        }
        // The conditions hold, but founding waits for them to settle.
        assert_eq!(nodes[0].found_together_at(t0), None);
        let later = t0 + FOUNDING_SETTLE;
        let decided: Vec<Vec<MemberRecord>> = nodes
            .iter()
            .map(|m| {
                m.found_together_at(t0);
                m.found_together_at(later).expect("founds")
            })
            .collect();
        // Every node decides the same records, and merging them forms the same ring.
        assert!(decided.windows(2).all(|w| w[0] == w[1]));
        for m in &nodes {
            m.merge_records(decided[0].clone());
            assert_eq!(m.ring().expect("ring").members().len(), 3);
            assert_eq!(m.found_together_at(later), None, "founded once");
        }
        assert_eq!(nodes[0].ring_version(), nodes[2].ring_version());
    }

    /// A joining node whose seed belongs to a formed cluster never founds: the seed's table
    /// has members that own partitions.
    #[test]
    fn a_node_whose_seed_is_in_a_formed_cluster_joins_it_instead_of_founding() {
        let m = joining("d", "h:4", &["h:1"]);
        m.record_alive("h:1", id("a"), None);
        let mut formed = MemberRecord::new(id("a"), "h:1".into(), None, MemberState::Active);
        formed.version = 1;
        m.merge_records(vec![formed]);
        let t0 = Instant::now();
        assert_eq!(m.found_together_at(t0), None);
        assert_eq!(m.found_together_at(t0 + FOUNDING_SETTLE * 2), None);
        // And a seed that never answered blocks founding too.
        let lonely = joining("e", "h:5", &["h:6", "h:7"]);
        lonely.record_alive("h:6", id("f"), None);
        lonely.merge_records(vec![MemberRecord::new(
            id("f"),
            "h:6".into(),
            None,
            MemberState::Joining,
        )]);
        lonely.found_together_at(t0);
        assert_eq!(lonely.found_together_at(t0 + FOUNDING_SETTLE * 2), None);
    }

    #[test]
    fn a_joining_node_adopts_the_table_of_a_seed_and_stays_out_of_the_ring() {
        let seeds = vec!["h:1".to_string()];
        let joiner = node(
            "d",
            "h:4",
            None,
            &Bootstrap {
                seeds: seeds.clone(),
                joining: true,
                ..Bootstrap::default()
            },
        );
        assert!(joiner.ring().is_none());
        assert_eq!(joiner.gossip_target().as_deref(), Some("h:1"));
        let founder = node("a", "h:1", None, &founding(&["h:1".to_string()], &[]));
        // Push-pull: the seed merges the joiner's table, the joiner the seed's answer.
        assert!(founder.merge_records(joiner.records()));
        assert!(joiner.merge_records(founder.records()));
        assert_eq!(joiner.ring_version(), founder.ring_version());
        assert_eq!(joiner.ring().expect("ring").members(), &[id("a")]);
        let next = joiner.next_ring().expect("next ring");
        assert_eq!(next.members(), &[id("a"), id("d")]);
        let states: Vec<(String, MemberState)> = founder
            .members()
            .into_iter()
            .map(|m| (m.id.as_str().to_string(), m.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a".to_string(), MemberState::Active),
                ("d".to_string(), MemberState::Joining)
            ]
        );
        assert_eq!(founder.addr_of(&id("d")).as_deref(), Some("h:4"));
    }

    #[test]
    fn a_removed_member_is_not_probed_and_does_not_come_back() {
        let seeds = vec!["h:1".to_string(), "h:2".to_string()];
        let m = node("a", "h:1", None, &founding(&seeds, &[]));
        m.record_alive("h:2", id("b"), None);
        let mut gone = MemberRecord::new(id("c"), "h:3".into(), None, MemberState::Removed);
        gone.version = 3;
        assert!(m.merge_records(vec![gone]));
        assert!(!m.peer_addrs().contains(&"h:3".to_string()));
        let back = MemberRecord::new(id("c"), "h:3".into(), None, MemberState::Active);
        assert!(!m.merge_records(vec![back]));
        assert!(m.members().iter().all(|member| member.id != id("c")));
    }

    #[test]
    fn a_seed_answering_with_our_own_id_is_not_a_member() {
        let seeds = vec!["localhost:1".to_string()];
        let m = node("a", "h:1", None, &founding(&seeds, &[]));
        assert!(m.ring().is_none());
        assert!(!m.record_alive("localhost:1", id("a"), None));
        assert_eq!(m.ring().expect("ring").members(), &[id("a")]);
    }
}
