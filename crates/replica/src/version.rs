//! Actors, dots and version vectors: the vocabulary of causality.
//!
//! A [`Dot`] names one write: the actor that coordinated it and that actor's
//! counter at the time. A [`VersionVector`] summarises a set of dots, "every
//! dot of actor `a` up to `vv[a]`", which is exact because each actor mints
//! its dots one after another. The vector is kept canonical (sorted by actor,
//! one entry per actor, no zero entries) so that derived equality is semantic
//! equality; that is why its entries are private and every way in
//! (construction, deserialisation, merge) goes through code that keeps them so.
//!
//! A vector is a short sorted array held inline, not a map: it has one entry per
//! actor that ever coordinated a write of its key, three for most keys of a
//! three-node cluster. Every write decodes, merges and encodes several of them,
//! and a map allocated a tree node for each (0.8% of a node's CPU under write
//! load went to allocating those nodes alone); four entries inline allocate nothing.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

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

/// Entries a vector holds without a heap allocation: a cluster's replicas of a key
/// (three by default) and one more, for a key whose owners changed once.
const INLINE_ENTRIES: usize = 4;

type Entries = SmallVec<[(ActorId, u64); INLINE_ENTRIES]>;

/// A version vector: for each actor, the highest counter whose dots (and all
/// before it) are summarised.
///
/// Entries equal to 0 are never stored, so two vectors that cover the same
/// dots are `==`. Deserialisation normalises too, so a vector read off the wire
/// keeps the invariant. On the wire it is a map from actor to counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector(Entries);

impl VersionVector {
    /// Returns the empty vector, which covers no dot.
    pub fn new() -> Self {
        VersionVector(Entries::new())
    }

    /// Returns the entry for `actor`, 0 when absent.
    pub fn get(&self, actor: ActorId) -> u64 {
        match self.0.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Whether `dot` is summarised by this vector.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Whether this vector has seen everything `other` has (>= on every
    /// entry). Reflexive: a vector descends itself.
    pub fn descends(&self, other: &Self) -> bool {
        // Both sorted: one walk through each.
        let mut mine = self.0.iter().peekable();
        other.0.iter().all(|&(actor, n)| {
            while mine.next_if(|&&(a, _)| a < actor).is_some() {}
            matches!(mine.peek(), Some(&&(a, m)) if a == actor && m >= n)
        })
    }

    /// Whether neither vector descends the other, i.e. each has seen a write
    /// the other has not.
    pub fn concurrent(&self, other: &Self) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// Raises every entry to the maximum of the two vectors (the join).
    pub fn merge(&mut self, other: &Self) {
        // Most often every actor of `other` is already here: raise the entries in place.
        // (A walk that stops at a missing actor has only raised entries to the join's.)
        let mut i = 0;
        let in_place = other.0.iter().all(|&(actor, n)| {
            while self.0.get(i).is_some_and(|&(a, _)| a < actor) {
                i += 1;
            }
            match self.0.get_mut(i) {
                Some(entry) if entry.0 == actor => {
                    entry.1 = entry.1.max(n);
                    true
                }
                _ => false,
            }
        });
        if in_place {
            return;
        }
        // A merge of two sorted runs keeps the result sorted in one pass; built inline,
        // it allocates only when the result outgrows the inline room.
        let mut merged = Entries::new();
        let (mut left, mut right) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (left.peek(), right.peek()) {
                (Some(&&(a, m)), Some(&&(b, n))) if a == b => {
                    left.next();
                    right.next();
                    (a, m.max(n))
                }
                (Some(&&l), Some(&&r)) if l.0 < r.0 => {
                    left.next();
                    l
                }
                (_, Some(&&r)) => {
                    right.next();
                    r
                }
                (Some(&&l), None) => {
                    left.next();
                    l
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.0 = merged;
    }

    /// Iterates over the non-zero entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.0.iter().copied()
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
        if counter == 0 {
            return;
        }
        match self.0.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(counter),
            Err(i) => self.0.insert(i, (actor, counter)),
        }
    }

    /// Brings entries in any order, with repeats and zeros, to the canonical form.
    /// Sorting first keeps this O(n log n) whatever the order: a vector read off the
    /// wire may be long and in any order.
    fn normalised(mut entries: Entries) -> Self {
        entries.retain(|&mut (_, n)| n > 0);
        // Descending counters within an actor, so the first of each run is its maximum.
        entries.sort_unstable_by(|l, r| l.0.cmp(&r.0).then(r.1.cmp(&l.1)));
        entries.dedup_by_key(|&mut (actor, _)| actor);
        VersionVector(entries)
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    /// Collects entries, dropping zeros and keeping the maximum when an actor
    /// appears more than once.
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        Self::normalised(iter.into_iter().collect())
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(actor, n)| (actor, n)))
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = VersionVector;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from actor to counter")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // No room reserved from the declared length: it comes from outside.
                let mut entries = Entries::new();
                while let Some(entry) = map.next_entry::<ActorId, u64>()? {
                    entries.push(entry);
                }
                Ok(VersionVector::normalised(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::collections::BTreeMap;

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
    fn deserialising_sorts_and_keeps_the_maximum_of_repeated_actors() {
        // A map encoded out of order and with a repeat, as no encoder of ours would.
        let entries = [(C, 2u64), (A, 1), (C, 7), (B, 0)];
        let mut bytes = vec![u8::try_from(entries.len()).unwrap()];
        for (actor, n) in entries {
            bytes.extend(postcard::to_stdvec(&(actor, n)).unwrap());
        }
        let decoded: VersionVector = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), vec![(A, 1), (C, 7)]);
    }

    #[test]
    fn the_wire_form_is_the_map_records_were_written_with() {
        // Records on disk and peers of earlier releases encode a vector as an ordered map.
        let map = BTreeMap::from([(A, 4u64), (B, 1), (C, 9), (ActorId(4), 2), (ActorId(5), 3)]);
        let vector: VersionVector = map.clone().into_iter().collect();
        let bytes = postcard::to_stdvec(&map).unwrap();
        assert_eq!(postcard::to_stdvec(&vector).unwrap(), bytes);
        assert_eq!(
            postcard::from_bytes::<VersionVector>(&bytes).unwrap(),
            vector
        );
    }

    #[test]
    fn merge_interleaves_new_actors_in_order() {
        let mut left = vv(&[(B, 1), (ActorId(5), 2)]);
        left.merge(&vv(&[
            (A, 3),
            (B, 4),
            (C, 1),
            (ActorId(6), 1),
            (ActorId(7), 1),
        ]));
        let expected = [
            (A, 3),
            (B, 4),
            (C, 1),
            (ActorId(5), 2),
            (ActorId(6), 1),
            (ActorId(7), 1),
        ];
        assert_eq!(left.iter().collect::<Vec<_>>(), expected.to_vec());
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(Dot::new(ActorId(0xab), 7).to_string(), "00000000000000ab:7");
    }
}
