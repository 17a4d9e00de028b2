//! Actors, dots and version vectors: the vocabulary of causality.
//!
//! A [`Dot`] names one write: the actor that coordinated it and that actor's
//! counter at the time. A [`VersionVector`] summarises a set of dots, "every
//! dot of actor `a` up to `vv[a]`", which is exact because each actor mints
//! its dots one after another. The vector is kept canonical (no zero entries)
//! so that derived equality is semantic equality; that is why the map is
//! private and every way in (construction, deserialisation, merge) goes
//! through code that drops zeros.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identity of one incarnation of one replica's database: a random u64
/// generated when a data directory is created, stored in the meta column
/// family, never reused.
///
/// A node whose data directory is wiped gets a new actor, so its new dots can
/// never collide with dots it minted before. This is the cure for Riak's
/// KV679 lost-write bug: a node that forgot its history but kept its actor
/// would mint dots that other replicas' clocks already cover, and its new
/// writes would be silently discarded as "already seen".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorId(pub u64);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fixed-width hex: actors are random, and aligned ids read better in logs.
        write!(f, "{:016x}", self.0)
    }
}

/// One write event: the `counter`-th write coordinated by `actor`.
///
/// Counters start at 1, so a dot is covered by a vector exactly when the
/// vector's entry for its actor is at least its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The replica incarnation that coordinated the write.
    pub actor: ActorId,
    /// The actor's write counter, at least 1.
    pub counter: u64,
}

impl Dot {
    /// Returns the dot `(actor, counter)`.
    pub fn new(actor: ActorId, counter: u64) -> Self {
        Dot { actor, counter }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

/// A version vector: for each actor, the highest counter whose dots (and all
/// before it) are summarised.
///
/// Entries equal to 0 are never stored, so two vectors that cover the same
/// dots are `==`. Deserialisation normalises too (see [`VersionVector::from`]
/// on a map), so a vector read off the wire keeps the invariant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<ActorId, u64>")]
pub struct VersionVector(BTreeMap<ActorId, u64>);

impl VersionVector {
    /// Returns the empty vector, which covers no dot.
    pub fn new() -> Self {
        VersionVector(BTreeMap::new())
    }

    /// Returns the entry for `actor`, 0 when absent.
    pub fn get(&self, actor: ActorId) -> u64 {
        self.0.get(&actor).copied().unwrap_or(0)
    }

    /// Whether `dot` is summarised by this vector.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Whether this vector has seen everything `other` has (>= on every
    /// entry). Reflexive: a vector descends itself.
    pub fn descends(&self, other: &Self) -> bool {
        other.0.iter().all(|(&actor, &n)| self.get(actor) >= n)
    }

    /// Whether neither vector descends the other, i.e. each has seen a write
    /// the other has not.
    pub fn concurrent(&self, other: &Self) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// Raises every entry to the maximum of the two vectors (the join).
    pub fn merge(&mut self, other: &Self) {
        for (&actor, &n) in &other.0 {
            let entry = self.0.entry(actor).or_insert(0);
            *entry = (*entry).max(n);
        }
    }

    /// Iterates over the non-zero entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.0.iter().map(|(&actor, &n)| (actor, n))
    }

    /// Returns the number of non-zero entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the vector covers no dot at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Raises the entry for `actor` to at least `counter`. Crate-internal so
    /// that outside code builds vectors only through merge and collection.
    pub(crate) fn raise(&mut self, actor: ActorId, counter: u64) {
        if counter > 0 {
            let entry = self.0.entry(actor).or_insert(0);
            *entry = (*entry).max(counter);
        }
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    /// Collects entries, dropping zeros and keeping the maximum when an actor
    /// appears more than once.
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (actor, n) in iter {
            vv.raise(actor, n);
        }
        vv
    }
}

impl From<BTreeMap<ActorId, u64>> for VersionVector {
    /// Builds a vector from a map, dropping zero entries.
    fn from(map: BTreeMap<ActorId, u64>) -> Self {
        map.into_iter().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const A: ActorId = ActorId(1);
    const B: ActorId = ActorId(2);
    const C: ActorId = ActorId(3);

    fn vv(entries: &[(ActorId, u64)]) -> VersionVector {
        entries.iter().copied().collect()
    }

    #[test]
    fn absent_entries_read_as_zero() {
        let v = vv(&[(A, 3)]);
        assert_eq!(v.get(A), 3);
        assert_eq!(v.get(B), 0);
    }

    #[test]
    fn collecting_drops_zeros_and_keeps_the_maximum() {
        let v = vv(&[(A, 0), (B, 2), (B, 5), (B, 1)]);
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![(B, 5)]);
        assert_eq!(v.len(), 1);
        assert_eq!(vv(&[(A, 0)]), VersionVector::new());
        assert!(vv(&[(A, 0)]).is_empty());
    }

    #[test]
    fn covers_compares_the_dot_with_its_actor_entry() {
        let v = vv(&[(A, 2)]);
        assert!(v.covers(&Dot::new(A, 1)));
        assert!(v.covers(&Dot::new(A, 2)));
        assert!(!v.covers(&Dot::new(A, 3)));
        assert!(!v.covers(&Dot::new(B, 1)));
    }

    #[test]
    fn descends_is_pointwise_greater_or_equal() {
        let small = vv(&[(A, 1)]);
        let big = vv(&[(A, 2), (B, 1)]);
        assert!(big.descends(&small));
        assert!(!small.descends(&big));
        assert!(big.descends(&big));
        assert!(small.descends(&VersionVector::new()));
        assert!(!big.concurrent(&small));
        assert!(!big.concurrent(&big));
    }

    #[test]
    fn concurrent_when_each_has_seen_something_new() {
        let left = vv(&[(A, 2), (B, 1)]);
        let right = vv(&[(A, 1), (C, 1)]);
        assert!(left.concurrent(&right));
        assert!(right.concurrent(&left));
    }

    #[test]
    fn merge_takes_the_pointwise_maximum() {
        let mut left = vv(&[(A, 2), (B, 1)]);
        left.merge(&vv(&[(A, 1), (C, 4)]));
        assert_eq!(left, vv(&[(A, 2), (B, 1), (C, 4)]));
    }

    #[test]
    fn deserialising_drops_zero_entries() {
        // An encoder other than ours could send a zero entry.
        let bytes = postcard::to_stdvec(&BTreeMap::from([(A, 0u64), (B, 3u64)])).unwrap();
        let decoded: VersionVector = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, vv(&[(B, 3)]));
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(Dot::new(ActorId(0xab), 7).to_string(), "00000000000000ab:7");
    }
}
