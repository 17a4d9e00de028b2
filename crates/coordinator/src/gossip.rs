//! The member table that gossip spreads, and the rule that merges two copies of it.
//!
//! Each member is one [`MemberRecord`]: where it listens, its zone, its [`MemberState`]
//! and a version. Nodes exchange whole tables (push-pull with one peer per round) and merge
//! them record by record: the record with the higher version wins, and at equal versions
//! the higher state (`Joining < Active < Leaving < Removed`); the remaining fields break a
//! tie that correct nodes never create, so that the merge is a maximum under a total order.
//! That makes it a join-semilattice (commutative, associative, idempotent): tables that
//! have seen the same records are equal, whatever the order and repetition of the rounds,
//! which is what lets every node compute the same ring. A `Removed` record can only be
//! beaten by a higher version, which nobody writes for a removed node, so a removed id
//! never comes back by gossip.
//!
//! Only a node itself changes its own address, zone and transfer flag (bumping its version);
//! state changes of others (a join committed, a dead node removed) are written by whoever
//! decides them, with the version they derive deterministically, so concurrent deciders
//! write the same record.
//!
//! Pure: no I/O, tested with property tests.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use quorumkv_ring::NodeId;
use serde::{Deserialize, Serialize};

/// Where a member is in its life. The declaration order is the merge rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Announced; receives the partitions it will own, owns none yet.
    Joining,
    /// Owns partitions.
    Active,
    /// Still owns partitions, which are being handed to their next owners.
    Leaving,
    /// Gone for good; its id is never reused.
    Removed,
}

impl MemberState {
    /// Whether a member in this state owns partitions in the current ring.
    pub fn in_current_ring(self) -> bool {
        matches!(self, Self::Active | Self::Leaving)
    }

    /// Whether a member in this state owns partitions in the next ring.
    pub fn in_next_ring(self) -> bool {
        matches!(self, Self::Active | Self::Joining)
    }

    /// The lowercase name, as in `GET /v1/cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Active => "active",
            Self::Leaving => "leaving",
            Self::Removed => "removed",
        }
    }
}

/// One member as gossip carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's node id.
    pub id: NodeId,
    /// Where it listens, `host:port`.
    pub addr: String,
    /// Its zone (failure domain), if it has one.
    pub zone: Option<String>,
    /// Where it is in its life.
    pub state: MemberState,
    /// Raised by every change of the record.
    pub version: u64,
    /// The hash of the next ring for which this member has received every partition it
    /// gains; `None` when it has not (set by the member itself).
    pub transfers_done: Option<u64>,
}

/// The most members a table holds: records of further ids are refused. Far above any
/// cluster this store is built for, it bounds what a peer's gossip can make a node keep.
pub const MAX_MEMBERS: usize = 4096;
/// The longest node id, address or zone a member record may carry, in bytes.
pub const MAX_MEMBER_FIELD: usize = 255;

impl MemberRecord {
    /// What makes this record unfit to keep, if anything: a field over
    /// [`MAX_MEMBER_FIELD`], an empty id, or the last version, which no change could
    /// succeed (a `+ 1` past it would wrap to 0 and lose every later merge).
    pub fn problem(&self) -> Option<String> {
        if self.version == u64::MAX {
            return Some(format!("member {} is at the last version", self.id));
        }
        if self.id.as_str().is_empty() {
            return Some("a member without an id".into());
        }
        let zone = self.zone.as_ref().map_or(0, String::len);
        for (field, len) in [
            ("id", self.id.as_str().len()),
            ("address", self.addr.len()),
            ("zone", zone),
        ] {
            if len > MAX_MEMBER_FIELD {
                return Some(format!(
                    "a member {field} of {len} bytes, over {MAX_MEMBER_FIELD}"
                ));
            }
        }
        None
    }

    /// A fresh record, version 0.
    pub fn new(id: NodeId, addr: String, zone: Option<String>, state: MemberState) -> Self {
        Self {
            id,
            addr,
            zone,
            state,
            version: 0,
            transfers_done: None,
        }
    }

    /// The merge order of two records of the same id: version, then state, then the other
    /// fields (a total order, so the merge is a maximum).
    pub fn precedence(&self, other: &Self) -> Ordering {
        (
            self.version,
            self.state,
            &self.addr,
            &self.zone,
            self.transfers_done,
        )
            .cmp(&(
                other.version,
                other.state,
                &other.addr,
                &other.zone,
                other.transfers_done,
            ))
    }
}

/// A node's view of every member, keyed by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    records: BTreeMap<NodeId, MemberRecord>,
}

impl MemberTable {
    /// A table of `records` (merged, so repeated ids keep their winner).
    pub fn from_records(records: impl IntoIterator<Item = MemberRecord>) -> Self {
        let mut table = Self::default();
        table.merge(records);
        table
    }

    /// Merges `records` in; returns true when anything changed.
    pub fn merge(&mut self, records: impl IntoIterator<Item = MemberRecord>) -> bool {
        let mut changed = false;
        for record in records {
            changed |= self.merge_one(record);
        }
        changed
    }

    /// Merges one record; returns true when it won. A record with a
    /// [`MemberRecord::problem`], or of a new id once the table holds [`MAX_MEMBERS`], is
    /// refused.
    pub fn merge_one(&mut self, record: MemberRecord) -> bool {
        if let Some(problem) = record.problem() {
            tracing::warn!(%problem, "member record refused");
            return false;
        }
        let full = self.records.len() >= MAX_MEMBERS;
        match self.records.get_mut(&record.id) {
            Some(held) if held.precedence(&record) != Ordering::Less => false,
            Some(held) => {
                *held = record;
                true
            }
            None if full => {
                tracing::warn!(id = %record.id, "member record refused: the table is full");
                false
            }
            None => {
                self.records.insert(record.id.clone(), record);
                true
            }
        }
    }

    /// The record of `id`.
    pub fn get(&self, id: &NodeId) -> Option<&MemberRecord> {
        self.records.get(id)
    }

    /// Every record, by id.
    pub fn records(&self) -> impl Iterator<Item = &MemberRecord> {
        self.records.values()
    }

    /// The members of the current ring (`Active` and `Leaving`), with zones, by id.
    pub fn current_members(&self) -> Vec<(NodeId, Option<String>)> {
        self.members_where(MemberState::in_current_ring)
    }

    /// The members of the next ring (`Active` and `Joining`), with zones, by id.
    pub fn next_members(&self) -> Vec<(NodeId, Option<String>)> {
        self.members_where(MemberState::in_next_ring)
    }

    /// Whether the current and next rings have the same members (nothing to move).
    pub fn is_balanced(&self) -> bool {
        self.records
            .values()
            .all(|r| matches!(r.state, MemberState::Active | MemberState::Removed))
    }

    /// A stable hash of every member's id, state and zone: equal on two nodes exactly when
    /// they place keys on the same rings. 53 bits, so that it survives JSON readers that hold
    /// numbers as doubles.
    pub fn ring_version(&self) -> u64 {
        let mut bytes = Vec::new();
        for record in self.records.values() {
            bytes.extend_from_slice(record.id.as_str().as_bytes());
            bytes.push(0);
            bytes.push(record.state as u8);
            bytes.extend_from_slice(record.zone.as_deref().unwrap_or("").as_bytes());
            bytes.push(0);
        }
        quorumkv_ring::key_hash(b"quorumkv/ring-version", &bytes) >> 11
    }

    /// A stable hash of the next ring's members and zones: what `transfers_done` names.
    pub fn next_ring_hash(&self) -> u64 {
        let mut bytes = Vec::new();
        for (id, zone) in self.next_members() {
            bytes.extend_from_slice(id.as_str().as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(zone.as_deref().unwrap_or("").as_bytes());
            bytes.push(0);
        }
        quorumkv_ring::key_hash(b"quorumkv/next-ring", &bytes) >> 11
    }

    /// The records that commit the transition to the next ring: every `Joining` member
    /// becomes `Active` and every `Leaving` one `Removed`, each with the next version. A
    /// function of the table alone, so that nodes committing at once write the same records.
    pub fn commit(&self) -> Vec<MemberRecord> {
        self.records
            .values()
            .filter_map(|r| {
                let state = match r.state {
                    MemberState::Joining => MemberState::Active,
                    MemberState::Leaving => MemberState::Removed,
                    MemberState::Active | MemberState::Removed => return None,
                };
                Some(MemberRecord {
                    state,
                    // Merged records are below the last version (`problem`).
                    version: r.version.checked_add(1)?,
                    ..r.clone()
                })
            })
            .collect()
    }

    /// Whether every member of the next ring advertises that it has received its
    /// partitions of that ring.
    pub fn transfers_done_everywhere(&self) -> bool {
        let hash = self.next_ring_hash();
        self.records
            .values()
            .filter(|r| r.state.in_next_ring())
            .all(|r| r.transfers_done == Some(hash))
    }

    fn members_where(&self, keep: impl Fn(MemberState) -> bool) -> Vec<(NodeId, Option<String>)> {
        self.records
            .values()
            .filter(|r| keep(r.state))
            .map(|r| (r.id.clone(), r.zone.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(id: &str, state: MemberState, version: u64) -> MemberRecord {
        MemberRecord {
            version,
            ..MemberRecord::new(NodeId::new(id), format!("h:{id}"), None, state)
        }
    }

    fn any_state() -> impl Strategy<Value = MemberState> {
        prop_oneof![
            Just(MemberState::Joining),
            Just(MemberState::Active),
            Just(MemberState::Leaving),
            Just(MemberState::Removed),
        ]
    }

    fn any_record() -> impl Strategy<Value = MemberRecord> {
        (
            0..4u8,
            any_state(),
            0..4u64,
            0..2u8,
            prop::option::of(0..2u8),
            prop::option::of(0..3u64),
        )
            .prop_map(|(id, state, version, addr, zone, done)| MemberRecord {
                id: NodeId::new(format!("n{id}")),
                addr: format!("h:{addr}"),
                zone: zone.map(|z| format!("z{z}")),
                state,
                version,
                transfers_done: done,
            })
    }

    fn any_table() -> impl Strategy<Value = MemberTable> {
        prop::collection::vec(any_record(), 0..8).prop_map(MemberTable::from_records)
    }

    fn join(a: &MemberTable, b: &MemberTable) -> MemberTable {
        let mut out = a.clone();
        out.merge(b.records().cloned());
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in any_table(), b in any_table()) {
            prop_assert_eq!(join(&a, &b), join(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in any_table(), b in any_table(), c in any_table()) {
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in any_table(), b in any_table()) {
            prop_assert_eq!(join(&a, &a), a.clone());
            let ab = join(&a, &b);
            prop_assert_eq!(join(&ab, &b), ab);
        }

        #[test]
        fn merged_tables_agree_on_the_ring_version(a in any_table(), b in any_table()) {
            prop_assert_eq!(join(&a, &b).ring_version(), join(&b, &a).ring_version());
        }
    }

    #[test]
    fn higher_version_wins_then_higher_state() {
        let mut table = MemberTable::from_records([record("a", MemberState::Leaving, 1)]);
        assert!(!table.merge_one(record("a", MemberState::Removed, 0)));
        assert!(table.merge_one(record("a", MemberState::Active, 2)));
        assert!(table.merge_one(record("a", MemberState::Removed, 2)));
        assert_eq!(
            table.get(&NodeId::new("a")).map(|r| r.state),
            Some(MemberState::Removed)
        );
    }

    #[test]
    fn rings_follow_the_states() {
        let table = MemberTable::from_records([
            record("a", MemberState::Active, 0),
            record("b", MemberState::Joining, 0),
            record("c", MemberState::Leaving, 1),
            record("d", MemberState::Removed, 2),
        ]);
        let ids = |members: Vec<(NodeId, Option<String>)>| -> Vec<String> {
            members
                .into_iter()
                .map(|(id, _)| id.as_str().to_string())
                .collect()
        };
        assert_eq!(ids(table.current_members()), ["a", "c"]);
        assert_eq!(ids(table.next_members()), ["a", "b"]);
        assert!(!table.is_balanced());
    }

    #[test]
    fn a_commit_is_the_same_wherever_it_is_computed_and_balances_the_rings() {
        let mut table = MemberTable::from_records([
            record("a", MemberState::Active, 0),
            record("b", MemberState::Joining, 2),
            record("c", MemberState::Leaving, 1),
        ]);
        assert!(!table.transfers_done_everywhere());
        let hash = table.next_ring_hash();
        let done: Vec<MemberRecord> = ["a", "b"]
            .iter()
            .map(|id| {
                let mut r = table.get(&NodeId::new(*id)).cloned().expect("member");
                r.transfers_done = Some(hash);
                r.version += 1;
                r
            })
            .collect();
        table.merge(done);
        assert!(table.transfers_done_everywhere());
        let commit = table.commit();
        let mut elsewhere = table.clone();
        table.merge(commit.clone());
        elsewhere.merge(elsewhere.commit());
        assert_eq!(table, elsewhere);
        assert!(table.is_balanced());
        assert_eq!(table.get(&NodeId::new("b")).map(|r| r.version), Some(4));
        assert_eq!(
            table.get(&NodeId::new("c")).map(|r| r.state),
            Some(MemberState::Removed)
        );
    }

    #[test]
    fn the_ring_version_changes_with_a_state_not_with_a_version() {
        let a = MemberTable::from_records([record("a", MemberState::Active, 0)]);
        let bumped = MemberTable::from_records([record("a", MemberState::Active, 5)]);
        let joined = MemberTable::from_records([
            record("a", MemberState::Active, 0),
            record("b", MemberState::Joining, 0),
        ]);
        assert_eq!(a.ring_version(), bumped.ring_version());
        assert_ne!(a.ring_version(), joined.ring_version());
        assert!(a.ring_version() < 1 << 53);
    }

    /// A peer cannot make a node keep a record at the last version (whose next version
    /// would wrap to 0), overlong fields, or more members than the table holds.
    #[test]
    fn records_no_change_could_succeed_or_too_large_are_refused() {
        let mut table = MemberTable::from_records([record("a", MemberState::Joining, 0)]);
        let mut last = record("a", MemberState::Joining, 0);
        last.version = u64::MAX;
        assert!(!table.merge_one(last));
        assert_eq!(table.get(&NodeId::new("a")).map(|r| r.version), Some(0));
        let mut long = record("b", MemberState::Active, 1);
        long.addr = "h".repeat(MAX_MEMBER_FIELD + 1);
        assert!(!table.merge_one(long));
        // The commit raises versions with checked arithmetic: a record stored at the last
        // version (never merged) is left out rather than wrapped.
        let stored = MemberTable {
            records: [(
                NodeId::new("c"),
                MemberRecord {
                    version: u64::MAX,
                    ..record("c", MemberState::Joining, 0)
                },
            )]
            .into(),
        };
        assert!(stored.commit().is_empty());
        let mut full = MemberTable::default();
        for i in 0..MAX_MEMBERS {
            assert!(full.merge_one(record(&format!("n{i}"), MemberState::Active, 0)));
        }
        assert!(!full.merge_one(record("one-more", MemberState::Active, 0)));
    }
}
