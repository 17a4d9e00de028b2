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
//!
//! A vector may also hold *exceptions*: dots below its entries that it has not seen. A
//! write's answer needs them. Its context must cover what the writer's own context
//! covered plus the dot the write minted, and nothing else: a plain vector that covers
//! the new dot `(a, 5)` covers `(a, 4)` too, which may be a concurrent sibling the writer
//! never saw, and the writer's next write would then silently replace it. So the answer is
//! the minting replica's clock *with the writer's unseen siblings excepted*, and a replica
//! that merges such a context keeps the exceptions until the excepted dots arrive (see
//! [`VersionVector::excluding`]). Exceptions are few (at most the siblings of one key)
//! and almost always none; a vector without them encodes exactly as before
//! ([`WireFormat`]).

use std::cell::Cell;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
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
/// before it) are summarised, less the dots listed as exceptions.
///
/// Entries equal to 0 are never stored, and exceptions are sorted, unique and each
/// strictly below its actor's entry (the entry's own dot is always seen), so two vectors
/// that cover the same dots are `==`.
/// Deserialisation normalises too, so a vector read off the wire keeps the
/// invariant. On the wire it is a map from actor to counter, followed in
/// [`WireFormat::V2`] by the exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: Entries,
    /// Dots at or below their actor's entry that are not summarised; sorted, unique.
    unseen: Vec<Dot>,
}

impl VersionVector {
    /// Returns the empty vector, which covers no dot.
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// Returns the entry for `actor`, 0 when absent: the highest counter of `actor`
    /// summarised (exceptions below it aside).
    pub fn get(&self, actor: ActorId) -> u64 {
        match self.entries.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Whether `dot` is summarised by this vector.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(dot.actor) >= dot.counter
            && (self.unseen.is_empty() || self.unseen.binary_search(dot).is_err())
    }

    /// Whether this vector has seen everything `other` has. Reflexive: a vector
    /// descends itself.
    pub fn descends(&self, other: &Self) -> bool {
        // Both sorted: one walk through each.
        let mut mine = self.entries.iter().peekable();
        let entries = other.entries.iter().all(|&(actor, n)| {
            while mine.next_if(|&&(a, _)| a < actor).is_some() {}
            matches!(mine.peek(), Some(&&(a, m)) if a == actor && m >= n)
        });
        // A dot this vector excepts must not be one `other` has seen.
        entries && self.unseen.iter().all(|dot| !other.covers(dot))
    }

    /// Whether neither vector descends the other, i.e. each has seen a write
    /// the other has not.
    pub fn concurrent(&self, other: &Self) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// The join: afterwards the vector summarises every dot either vector summarised.
    /// Entries rise to the pointwise maximum; an exception stays only where neither side
    /// has seen its dot.
    pub fn merge(&mut self, other: &Self) {
        if !self.unseen.is_empty() || !other.unseen.is_empty() {
            // Decided against both sides as they were, before the entries rise.
            let mut unseen: Vec<Dot> = self
                .unseen
                .iter()
                .filter(|dot| !other.covers(dot))
                .chain(other.unseen.iter().filter(|dot| !self.covers(dot)))
                .copied()
                .collect();
            unseen.sort_unstable();
            unseen.dedup();
            self.unseen = unseen;
        }
        self.merge_entries(other);
    }

    /// Raises every entry to the maximum of the two vectors.
    fn merge_entries(&mut self, other: &Self) {
        // Most often every actor of `other` is already here: raise the entries in place.
        // (A walk that stops at a missing actor has only raised entries to the join's.)
        let mut i = 0;
        let in_place = other.entries.iter().all(|&(actor, n)| {
            while self.entries.get(i).is_some_and(|&(a, _)| a < actor) {
                i += 1;
            }
            match self.entries.get_mut(i) {
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
        let (mut left, mut right) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
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
        self.entries = merged;
    }

    /// Returns this vector less `dots`: those it covers become exceptions, so that the
    /// result summarises every dot this one does except them. A write answers with its
    /// minting replica's clock less the siblings its writer had not seen.
    #[must_use]
    pub fn excluding(mut self, dots: impl IntoIterator<Item = Dot>) -> Self {
        let before = self.unseen.len();
        for dot in dots {
            if dot.counter >= 1 && self.get(dot.actor) >= dot.counter {
                self.unseen.push(dot);
            }
        }
        if self.unseen.len() != before {
            self.unseen.sort_unstable();
            self.unseen.dedup();
            self.lower_excepted_tops();
        }
        self
    }

    /// Keeps the form canonical: an entry whose own top dot is excepted says no more
    /// than the entry below it, so the entry goes down (and the exception goes) until its
    /// top is a dot the vector has seen. Otherwise `{a: 1}` and `{a: 2} less a:2` would be
    /// two forms of one set of dots, and `==` and [`VersionVector::descends`] would differ.
    fn lower_excepted_tops(&mut self) {
        for entry in self.entries.iter_mut() {
            while entry.1 > 0 {
                match self.unseen.binary_search(&Dot::new(entry.0, entry.1)) {
                    Ok(i) => {
                        self.unseen.remove(i);
                        entry.1 -= 1;
                    }
                    Err(_) => break,
                }
            }
        }
        self.entries.retain(|&mut (_, n)| n > 0);
    }

    /// Returns the exceptions: dots at or below their actor's entry that this vector
    /// has not seen, in order.
    pub fn unseen(&self) -> &[Dot] {
        &self.unseen
    }

    /// Iterates over the non-zero entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Returns the number of non-zero entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the vector covers no dot at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Raises the entry for `actor` to at least `counter`. Crate-internal so
    /// that outside code builds vectors only through merge and collection.
    pub(crate) fn raise(&mut self, actor: ActorId, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (actor, counter)),
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
        VersionVector {
            entries,
            unseen: Vec::new(),
        }
    }

    /// Adds exceptions read off the wire, dropping those that except nothing (counter 0
    /// or above the actor's entry): the vector covers the same dots without them.
    fn with_unseen(self, unseen: Vec<Dot>) -> Self {
        self.excluding(unseen)
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    /// Collects entries, dropping zeros and keeping the maximum when an actor
    /// appears more than once.
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        Self::normalised(iter.into_iter().collect())
    }
}

/// How a [`VersionVector`] is encoded, chosen per encoding by the caller (the record
/// codec, the internode framing, the context token), each of which names the format in a
/// version byte of its own.
///
/// - `V1`: the map from actor to counter alone, as every release before exceptions
///   wrote it. A vector with exceptions cannot be written so; encoding one in `V1` marks
///   the encoding lossy ([`encode_compatible`] then encodes again in `V2`).
/// - `V2`: the map, then the exceptions as a sequence of dots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    /// The map alone.
    V1,
    /// The map, then the exceptions.
    V2,
}

thread_local! {
    // A thread-local rather than a parameter: the vector sits deep inside serde-derived
    // messages and objects, and serde has no way to pass a setting down.
    static FORMAT: Cell<WireFormat> = const { Cell::new(WireFormat::V2) };
    static LOSSY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (an encoding or a decoding) with vectors in `format`, restoring the format in
/// force before it afterwards. Outside any call the format is `V2`, which loses nothing.
pub fn with_format<T>(format: WireFormat, f: impl FnOnce() -> T) -> T {
    struct Restore(WireFormat);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORMAT.with(|cell| cell.set(self.0));
        }
    }
    let _restore = Restore(FORMAT.with(|cell| cell.replace(format)));
    f()
}

/// Runs the encoding `encode` in `V1` where it loses nothing (no vector in it has
/// exceptions) and in `V2` otherwise, so readers of earlier releases read everything they
/// can. Returns the encoding and the format it used.
pub fn encode_compatible<T>(mut encode: impl FnMut() -> T) -> (T, WireFormat) {
    let before = LOSSY.with(|cell| cell.replace(false));
    let first = with_format(WireFormat::V1, &mut encode);
    let lossy = LOSSY.with(|cell| cell.replace(before));
    if lossy {
        (with_format(WireFormat::V2, encode), WireFormat::V2)
    } else {
        (first, WireFormat::V1)
    }
}

/// The entries alone, serialised as a map (the `V1` form and the head of `V2`).
struct EntryMap<'a>(&'a Entries);

impl Serialize for EntryMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(actor, n)| (actor, n)))
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match FORMAT.with(Cell::get) {
            WireFormat::V1 => {
                if !self.unseen.is_empty() {
                    LOSSY.with(|cell| cell.set(true));
                }
                EntryMap(&self.entries).serialize(serializer)
            }
            WireFormat::V2 => {
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(&EntryMap(&self.entries))?;
                tuple.serialize_element(&self.unseen)?;
                tuple.end()
            }
        }
    }
}

/// A vector decoded from its map alone: the `V1` form, and the head of `V2`.
struct VersionVectorEntries(VersionVector);

impl<'de> Deserialize<'de> for VersionVectorEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = VersionVectorEntries;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from actor to counter")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // No room reserved from the declared length: it comes from outside.
                let mut entries = Entries::new();
                while let Some(entry) = map.next_entry::<ActorId, u64>()? {
                    entries.push(entry);
                }
                Ok(VersionVectorEntries(VersionVector::normalised(entries)))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match FORMAT.with(Cell::get) {
            WireFormat::V1 => Ok(VersionVectorEntries::deserialize(deserializer)?.0),
            WireFormat::V2 => {
                struct PairVisitor;
                impl<'de> Visitor<'de> for PairVisitor {
                    type Value = VersionVector;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a map from actor to counter, then the exceptions")
                    }

                    fn visit_seq<A: SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<Self::Value, A::Error> {
                        let VersionVectorEntries(vector) = seq
                            .next_element()?
                            .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                        let unseen: Vec<Dot> = seq
                            .next_element()?
                            .ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
                        Ok(vector.with_unseen(unseen))
                    }
                }
                deserializer.deserialize_tuple(2, PairVisitor)
            }
        }
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
        let decoded: VersionVector =
            with_format(WireFormat::V1, || postcard::from_bytes(&bytes)).unwrap();
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
        let decoded: VersionVector =
            with_format(WireFormat::V1, || postcard::from_bytes(&bytes)).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), vec![(A, 1), (C, 7)]);
    }

    #[test]
    fn the_wire_form_is_the_map_records_were_written_with() {
        // Records on disk and peers of earlier releases encode a vector as an ordered map.
        let map = BTreeMap::from([(A, 4u64), (B, 1), (C, 9), (ActorId(4), 2), (ActorId(5), 3)]);
        let vector: VersionVector = map.clone().into_iter().collect();
        let bytes = postcard::to_stdvec(&map).unwrap();
        let (encoded, format) = encode_compatible(|| postcard::to_stdvec(&vector).unwrap());
        assert_eq!((encoded, format), (bytes.clone(), WireFormat::V1));
        assert_eq!(
            with_format(WireFormat::V1, || postcard::from_bytes::<VersionVector>(
                &bytes
            ))
            .unwrap(),
            vector
        );
    }

    #[test]
    fn a_vector_with_exceptions_takes_the_second_format_and_round_trips() {
        let vector = vv(&[(A, 4), (B, 2)]).excluding([Dot::new(A, 2), Dot::new(B, 1)]);
        let (bytes, format) = encode_compatible(|| postcard::to_stdvec(&vector).unwrap());
        assert_eq!(format, WireFormat::V2);
        let decoded: VersionVector =
            with_format(WireFormat::V2, || postcard::from_bytes(&bytes)).unwrap();
        assert_eq!(decoded, vector);
        // Read as the first format, the bytes are refused or misread, never the vector.
        let as_v1 = with_format(WireFormat::V1, || {
            postcard::from_bytes::<VersionVector>(&bytes)
        });
        assert_ne!(as_v1.ok(), Some(vector));
    }

    #[test]
    fn exceptions_read_off_the_wire_are_normalised() {
        // Out of order, repeated, above the entry, counter zero: only A:2 excepts anything.
        let entries = BTreeMap::from([(A, 3u64)]);
        let unseen = vec![
            Dot::new(A, 2),
            Dot::new(A, 9),
            Dot::new(A, 2),
            Dot::new(A, 0),
        ];
        let bytes = postcard::to_stdvec(&(entries, unseen)).unwrap();
        let decoded: VersionVector =
            with_format(WireFormat::V2, || postcard::from_bytes(&bytes)).unwrap();
        assert_eq!(decoded, vv(&[(A, 3)]).excluding([Dot::new(A, 2)]));
        assert_eq!(decoded.unseen(), &[Dot::new(A, 2)]);
    }

    #[test]
    fn an_exception_is_not_covered_and_breaks_descent() {
        let full = vv(&[(A, 3)]);
        let holed = full.clone().excluding([Dot::new(A, 2)]);
        assert!(holed.covers(&Dot::new(A, 1)));
        assert!(!holed.covers(&Dot::new(A, 2)));
        assert!(holed.covers(&Dot::new(A, 3)));
        assert!(full.descends(&holed));
        assert!(!holed.descends(&full));
        assert!(holed.descends(&vv(&[(A, 1)])));
        // Excepting a dot the vector does not cover changes nothing.
        assert_eq!(
            full.clone().excluding([Dot::new(B, 1), Dot::new(A, 4)]),
            full
        );
    }

    #[test]
    fn merge_keeps_an_exception_only_where_neither_side_saw_the_dot() {
        let holed = vv(&[(A, 3)]).excluding([Dot::new(A, 2)]);
        // The other side saw A:2: the join has seen it.
        let mut joined = holed.clone();
        joined.merge(&vv(&[(A, 2)]));
        assert_eq!(joined, vv(&[(A, 3)]));
        // The other side did not: the exception stays, whichever side merges.
        let mut left = holed.clone();
        left.merge(&vv(&[(A, 1), (B, 1)]));
        let mut right = vv(&[(A, 1), (B, 1)]);
        right.merge(&holed);
        assert_eq!(left, right);
        assert_eq!(left.unseen(), &[Dot::new(A, 2)]);
        // Both except it: it stays; one excepts and the other saw it: it goes.
        let mut both = holed.clone();
        both.merge(&vv(&[(A, 5)]).excluding([Dot::new(A, 2), Dot::new(A, 4)]));
        assert_eq!(
            both,
            vv(&[(A, 5)]).excluding([Dot::new(A, 2), Dot::new(A, 4)])
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
