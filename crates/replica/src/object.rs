//! The versioned object: one key's causal state at one replica.
//!
//! An object is a clock plus the siblings that clock has not superseded. Each
//! sibling carries the dot of the write that made it, and the clock says which
//! writes this replica has seen, directly or through a client's context. A
//! sibling absent here whose dot the clock covers was superseded; that single
//! rule is what lets [`VersionedObject::merge`] tell "deleted by a later write"
//! from "not arrived yet", and it is why the clock is kept separately from the
//! siblings' dots instead of being derived from them.
//!
//! Siblings are kept sorted by dot so that equal states are equal values, the
//! merge is a linear merge-join, and an encoded object is canonical.

use std::cmp::Ordering;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::VersionError;
use crate::version::{ActorId, Dot, VersionVector};

/// What a write stored: client data, or a deletion marker.
///
/// Deletion is a write like any other so that it takes part in causality: a
/// delete concurrent with an update leaves both as siblings rather than
/// silently winning or losing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Client data with its media type.
    Data {
        /// The media type the client gave, returned unchanged on reads.
        content_type: String,
        /// The value's bytes.
        bytes: Bytes,
    },
    /// A deletion marker.
    Tombstone,
}

impl Value {
    /// Returns a data value with the given media type and bytes.
    pub fn data(content_type: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Value::Data {
            content_type: content_type.into(),
            bytes: bytes.into(),
        }
    }

    /// Whether this value is a deletion marker.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Value::Tombstone)
    }
}

/// What an update would do to an object ([`VersionedObject::preview_update`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdatePreview {
    /// The siblings the update's context covers, which it would drop.
    pub resolved: usize,
    /// The siblings the object would hold afterwards.
    pub siblings: usize,
    /// The object's approximate size afterwards, in bytes.
    pub bytes: usize,
    /// The entries and exceptions its clock would hold afterwards (an upper bound: the
    /// exceptions of the object's clock and of the context are counted as if none of
    /// them were settled by the other).
    pub clock_entries: usize,
}

/// The allowance of [`VersionedObject::approximate_size`] for one dot or clock entry: an
/// actor and a counter, varint-encoded, at most 20 bytes.
const PER_DOT: usize = 20;

/// A sibling's share of [`VersionedObject::approximate_size`].
fn value_size(value: &Value) -> usize {
    match value {
        Value::Data {
            content_type,
            bytes,
        } => content_type.len() + bytes.len() + 2 * PER_DOT,
        Value::Tombstone => PER_DOT,
    }
}

/// One concurrent version of a key: a value and the dot of the write that
/// created it. A dot names exactly one write, so two siblings with the same
/// dot are the same sibling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that created this version.
    pub dot: Dot,
    /// The version's value.
    pub value: Value,
}

/// The state of one key at one replica: the causal context it has seen
/// (clock) and the siblings not yet superseded.
///
/// Invariants, checked by [`VersionedObject::validate`] after decoding and on
/// objects received from other replicas:
/// 1. siblings are sorted by dot;
/// 2. no two siblings share a dot;
/// 3. every sibling's dot is covered by the clock (and so has counter >= 1).
///
/// Deserialisation alone does not check them; whoever decodes an object from
/// outside calls `validate` (the record codec and [`crate::Store::merge`] do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedObject {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

impl VersionedObject {
    /// Returns the empty object: no siblings, a clock that covers nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the causal context this replica has seen for the key; it is
    /// what a client gets back with a read and sends back with its next write.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// Returns the current siblings in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Whether the object holds no sibling (the key was never written here).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// A coordinated write at replica `actor` with the client's causal
    /// `context`: drops every sibling whose dot the context covers, mints dot
    /// `(actor, max(clock[actor], context[actor]) + 1)`, merges the context
    /// into the clock, sets `clock[actor]` to the new counter, and adds the
    /// sibling. Returns the new dot.
    ///
    /// Siblings the context does not cover stay: the client had not seen
    /// them, so the new write is concurrent with them, not a replacement.
    ///
    /// # Errors
    /// [`VersionError::CounterOverflow`] when the counter would pass
    /// `u64::MAX`; the object is then unchanged.
    pub fn update(
        &mut self,
        actor: ActorId,
        context: &VersionVector,
        value: Value,
    ) -> Result<Dot, VersionError> {
        self.update_from(actor, 1, context, value)
    }

    /// [`VersionedObject::update`] with a counter of at least `floor`.
    ///
    /// A replica passes the next value of one counter it keeps for all its keys,
    /// so that it never mints a dot it minted before for *any* key, even one whose
    /// object it no longer holds: after a tombstone is reaped, a counter counted
    /// from the object alone would start again at 1, and other replicas, whose
    /// clocks still cover the reaped tombstone's dots, would drop the new write as
    /// already seen (Riak's KV679, the tombstone variant). Taking the maximum with
    /// the clock's and the context's entries as well keeps the dot above
    /// everything this object has seen of `actor`.
    ///
    /// # Errors
    /// As [`VersionedObject::update`].
    pub fn update_from(
        &mut self,
        actor: ActorId,
        floor: u64,
        context: &VersionVector,
        value: Value,
    ) -> Result<Dot, VersionError> {
        let base = self.clock.get(actor).max(context.get(actor));
        // Checked before any mutation so that a refused update changes nothing.
        let counter = base
            .checked_add(1)
            .ok_or(VersionError::CounterOverflow)?
            .max(floor);
        let dot = Dot::new(actor, counter);

        self.siblings
            .retain(|sibling| !context.covers(&sibling.dot));
        self.clock.merge(context);
        self.clock.raise(actor, counter);

        // The new dot is fresh: every sibling of `actor` is covered by the old
        // clock, so its counter is at most `base`. Insert in dot order.
        let at = self.siblings.partition_point(|sibling| sibling.dot < dot);
        self.siblings.insert(at, Sibling { dot, value });
        Ok(dot)
    }

    /// Returns the newest sibling dot minted by `actor`: right after
    /// [`VersionedObject::update_from`] at `actor`, the dot it minted.
    pub fn latest_of(&self, actor: ActorId) -> Option<Dot> {
        self.siblings
            .iter()
            .map(|sibling| sibling.dot)
            .filter(|dot| dot.actor == actor)
            .max()
    }

    /// The context to answer a write with: everything this object's clock has
    /// seen except the siblings the writer had not seen, that is, those its
    /// `context` did not cover, other than the write's own `minted` dot.
    ///
    /// Answering with the whole clock would hand the writer a context that
    /// covers a concurrent sibling it never read; its next write with that
    /// context would silently replace that sibling.
    pub fn write_context(&self, context: &VersionVector, minted: Dot) -> VersionVector {
        self.clock.clone().excluding(
            self.siblings
                .iter()
                .map(|sibling| sibling.dot)
                .filter(|dot| *dot != minted && !context.covers(dot)),
        )
    }

    /// The join of two replica states (state-based CRDT join): a sibling
    /// survives if both sides have its dot, or if one side has it and the
    /// other side's clock does not cover it; clocks merge pointwise.
    /// Commutative, associative and idempotent on valid objects.
    ///
    /// A sibling one side lacks although its clock covers the dot was
    /// superseded there by a write whose context included it, so it goes; a
    /// sibling the other clock does not cover simply has not reached that
    /// side yet, so it stays.
    pub fn merge(&mut self, other: &VersionedObject) {
        let mine = std::mem::take(&mut self.siblings);
        let mut merged = Vec::with_capacity(mine.len().max(other.siblings.len()));
        let mut left = mine.into_iter().peekable();
        let mut right = other.siblings.iter().peekable();
        loop {
            let order = match (left.peek(), right.peek()) {
                (Some(l), Some(r)) => l.dot.cmp(&r.dot),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match order {
                Ordering::Less => {
                    if let Some(sibling) = left.next() {
                        if !other.clock.covers(&sibling.dot) {
                            merged.push(sibling);
                        }
                    }
                }
                Ordering::Greater => {
                    if let Some(sibling) = right.next() {
                        if !self.clock.covers(&sibling.dot) {
                            merged.push(sibling.clone());
                        }
                    }
                }
                Ordering::Equal => {
                    // Same dot, same write: keep ours.
                    right.next();
                    if let Some(sibling) = left.next() {
                        merged.push(sibling);
                    }
                }
            }
        }
        self.siblings = merged;
        self.clock.merge(&other.clock);
    }

    /// Checks the invariants listed on the type.
    ///
    /// # Errors
    /// The first violation found, as a [`VersionError`].
    pub fn validate(&self) -> Result<(), VersionError> {
        for sibling in &self.siblings {
            if sibling.dot.counter == 0 {
                return Err(VersionError::ZeroCounter(sibling.dot));
            }
            if !self.clock.covers(&sibling.dot) {
                return Err(VersionError::DotNotCovered(sibling.dot));
            }
        }
        for pair in self.siblings.windows(2) {
            match pair[0].dot.cmp(&pair[1].dot) {
                Ordering::Less => {}
                Ordering::Equal => return Err(VersionError::DuplicateDot(pair[0].dot)),
                Ordering::Greater => return Err(VersionError::UnsortedSiblings),
            }
        }
        Ok(())
    }

    /// Roughly the size of this object's record in bytes: its values and media types,
    /// plus a fixed allowance per sibling and per clock entry or exception for the
    /// varint-encoded dots and counters. Never less than the encoded size of the values;
    /// cheap enough for every write.
    pub fn approximate_size(&self) -> usize {
        let values: usize = self.siblings.iter().map(|s| value_size(&s.value)).sum();
        values + PER_DOT * (self.clock.len() + self.clock.unseen().len())
    }

    /// What [`VersionedObject::update`] by `actor` with `context` and `value` would leave,
    /// without doing it: how many siblings it would resolve, how many the object would hold, and
    /// its [`VersionedObject::approximate_size`] (an upper bound: the context's entries
    /// are counted as if all were new).
    pub fn preview_update(
        &self,
        actor: ActorId,
        context: &VersionVector,
        value: &Value,
    ) -> UpdatePreview {
        let (resolved, resolved_bytes) = self
            .siblings
            .iter()
            .filter(|sibling| context.covers(&sibling.dot))
            .fold((0, 0), |(n, bytes), s| {
                (n + 1, bytes + value_size(&s.value))
            });
        let mut actors: Vec<ActorId> = self
            .clock
            .iter()
            .chain(context.iter())
            .map(|(actor, _)| actor)
            .chain([actor])
            .collect();
        actors.sort_unstable();
        actors.dedup();
        UpdatePreview {
            resolved,
            siblings: self.siblings.len() - resolved + 1,
            clock_entries: actors.len() + self.clock.unseen().len() + context.unseen().len(),
            bytes: self.approximate_size() - resolved_bytes
                + value_size(value)
                + PER_DOT * (1 + context.len() + context.unseen().len()),
        }
    }

    /// True when there is at least one sibling and every sibling is a
    /// tombstone.
    pub fn is_deleted(&self) -> bool {
        !self.siblings.is_empty() && self.siblings.iter().all(|s| s.value.is_tombstone())
    }

    /// The data siblings (content type and bytes), in dot order.
    pub fn live_values(&self) -> impl Iterator<Item = (&str, &Bytes)> + '_ {
        self.siblings
            .iter()
            .filter_map(|sibling| match &sibling.value {
                Value::Data {
                    content_type,
                    bytes,
                } => Some((content_type.as_str(), bytes)),
                Value::Tombstone => None,
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const A: ActorId = ActorId(0xa);
    const B: ActorId = ActorId(0xb);

    fn text(s: &str) -> Value {
        Value::data("text/plain", Bytes::copy_from_slice(s.as_bytes()))
    }

    fn vv(entries: &[(ActorId, u64)]) -> VersionVector {
        entries.iter().copied().collect()
    }

    fn values(obj: &VersionedObject) -> Vec<&[u8]> {
        obj.live_values().map(|(_, b)| b.as_ref()).collect()
    }

    fn merged(a: &VersionedObject, b: &VersionedObject) -> VersionedObject {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    #[test]
    fn first_write_mints_counter_one() {
        let mut obj = VersionedObject::new();
        assert!(obj.is_empty());
        let dot = obj.update(A, &VersionVector::new(), text("v1")).unwrap();
        assert_eq!(dot, Dot::new(A, 1));
        assert_eq!(obj.clock(), &vv(&[(A, 1)]));
        assert_eq!(values(&obj), vec![b"v1".as_slice()]);
        obj.validate().unwrap();
    }

    #[test]
    fn write_with_context_replaces_what_the_client_saw() {
        let mut obj = VersionedObject::new();
        obj.update(A, &VersionVector::new(), text("v1")).unwrap();
        let seen = obj.clock().clone();
        let dot = obj.update(A, &seen, text("v2")).unwrap();
        assert_eq!(dot, Dot::new(A, 2));
        assert_eq!(values(&obj), vec![b"v2".as_slice()]);
        assert_eq!(obj.clock(), &vv(&[(A, 2)]));
    }

    #[test]
    fn write_without_context_becomes_a_sibling() {
        let mut obj = VersionedObject::new();
        obj.update(A, &VersionVector::new(), text("v1")).unwrap();
        obj.update(A, &VersionVector::new(), text("v2")).unwrap();
        assert_eq!(values(&obj), vec![b"v1".as_slice(), b"v2".as_slice()]);
        obj.validate().unwrap();
    }

    #[test]
    fn write_context_from_elsewhere_raises_the_clock() {
        // The client saw B's write B1, which this replica has not received;
        // the clock must now cover B1 so that B1 is dropped when it arrives.
        let mut at_b = VersionedObject::new();
        at_b.update(B, &VersionVector::new(), text("from b"))
            .unwrap();
        let mut at_a = VersionedObject::new();
        at_a.update(A, at_b.clock(), text("from a")).unwrap();
        assert_eq!(at_a.clock(), &vv(&[(A, 1), (B, 1)]));
        at_a.merge(&at_b);
        assert_eq!(values(&at_a), vec![b"from a".as_slice()]);
    }

    #[test]
    fn stale_context_write_keeps_the_concurrent_version() {
        // A holds v1 (A1). B receives it, and a client that read v1 writes v2
        // at B. Another client that also read only v1 writes v3 at A. Neither
        // v2 nor v3 saw the other: after merging, both must be siblings.
        let mut at_a = VersionedObject::new();
        at_a.update(A, &VersionVector::new(), text("v1")).unwrap();
        let v1_context = at_a.clock().clone();

        let mut at_b = VersionedObject::new();
        at_b.merge(&at_a);
        assert_eq!(
            at_b.update(B, &v1_context, text("v2")).unwrap(),
            Dot::new(B, 1)
        );
        assert_eq!(
            at_a.update(A, &v1_context, text("v3")).unwrap(),
            Dot::new(A, 2)
        );

        let ab = merged(&at_a, &at_b);
        let ba = merged(&at_b, &at_a);
        assert_eq!(ab, ba);
        assert_eq!(values(&ab), vec![b"v3".as_slice(), b"v2".as_slice()]);
        assert_eq!(ab.clock(), &vv(&[(A, 2), (B, 1)]));
        ab.validate().unwrap();

        // A client that read both siblings resolves them with one write.
        let mut resolved = ab.clone();
        resolved.update(B, ab.clock(), text("v4")).unwrap();
        assert_eq!(values(&merged(&resolved, &at_a)), vec![b"v4".as_slice()]);
    }

    #[test]
    fn fresh_actor_after_wipe_does_not_lose_its_writes() {
        // Replica B holds A1. A's data is wiped; with a reused actor its next
        // write would mint A1 again, which B's clock covers, and B would
        // discard it. A new incarnation gets a new actor and its write lives.
        let mut at_a = VersionedObject::new();
        at_a.update(A, &VersionVector::new(), text("old")).unwrap();
        let mut at_b = VersionedObject::new();
        at_b.merge(&at_a);

        let mut reused = VersionedObject::new();
        reused
            .update(A, &VersionVector::new(), text("new"))
            .unwrap();
        assert_eq!(values(&merged(&at_b, &reused)), vec![b"old".as_slice()]);

        let fresh_actor = ActorId(0xa2);
        let mut fresh = VersionedObject::new();
        fresh
            .update(fresh_actor, &VersionVector::new(), text("new"))
            .unwrap();
        assert_eq!(
            values(&merged(&at_b, &fresh)),
            vec![b"old".as_slice(), b"new".as_slice()]
        );
    }

    #[test]
    fn a_write_context_covers_what_the_writer_saw_and_its_own_dot_only() {
        // Y writes y blindly, X writes x blindly: X's answer must not cover y.
        let mut obj = VersionedObject::new();
        let y = obj.update(A, &VersionVector::new(), text("y")).unwrap();
        let x = obj.update(A, &VersionVector::new(), text("x")).unwrap();
        let answer = obj.write_context(&VersionVector::new(), x);
        assert!(answer.covers(&x));
        assert!(!answer.covers(&y));

        // X writes again with that answer: x goes, y stays beside x2.
        let x2 = obj.update(A, &answer, text("x2")).unwrap();
        assert_eq!(values(&obj), vec![b"y".as_slice(), b"x2".as_slice()]);
        let answer = obj.write_context(&answer, x2);
        assert!(answer.covers(&x) && answer.covers(&x2) && !answer.covers(&y));
        obj.validate().unwrap();

        // A replica that never saw x merges X's third write: x2 must not come back
        // beside x3 when its state arrives, and y must survive.
        let mut elsewhere = VersionedObject::new();
        elsewhere.update(B, &answer, text("x3")).unwrap();
        elsewhere.merge(&obj);
        assert_eq!(values(&elsewhere), vec![b"y".as_slice(), b"x3".as_slice()]);
        elsewhere.validate().unwrap();
    }

    #[test]
    fn a_floor_lifts_the_counter_above_what_the_object_knows() {
        // The key was reaped here (empty object) but others still cover A:1..=2.
        let mut reaped = VersionedObject::new();
        let dot = reaped
            .update_from(A, 7, &VersionVector::new(), text("again"))
            .unwrap();
        assert_eq!(dot, Dot::new(A, 7));
        let mut elsewhere = VersionedObject::new();
        elsewhere
            .update(A, &VersionVector::new(), text("old"))
            .unwrap();
        let old = elsewhere.clock().clone();
        elsewhere.update(A, &old, Value::Tombstone).unwrap();
        elsewhere.merge(&reaped);
        assert_eq!(values(&elsewhere), vec![b"again".as_slice()]);
        // Below the clock, the clock wins.
        let mut obj = VersionedObject::new();
        obj.update(A, &vv(&[(A, 9)]), text("v")).unwrap();
        assert_eq!(
            obj.update_from(A, 3, &VersionVector::new(), text("w"))
                .unwrap(),
            Dot::new(A, 11)
        );
    }

    #[test]
    fn counter_overflow_is_refused_and_changes_nothing() {
        let mut obj = VersionedObject::new();
        obj.update(A, &vv(&[(A, u64::MAX - 1)]), text("last"))
            .unwrap();
        let before = obj.clone();
        assert_eq!(
            obj.update(A, &VersionVector::new(), text("one too many")),
            Err(VersionError::CounterOverflow)
        );
        assert_eq!(obj, before);

        let mut fresh = VersionedObject::new();
        assert_eq!(
            fresh.update(B, &vv(&[(B, u64::MAX)]), text("x")),
            Err(VersionError::CounterOverflow)
        );
        assert_eq!(fresh, VersionedObject::new());
    }

    #[test]
    fn merge_drops_a_sibling_the_other_side_superseded() {
        let mut at_a = VersionedObject::new();
        at_a.update(A, &VersionVector::new(), text("v1")).unwrap();
        let mut newer = at_a.clone();
        newer.update(A, at_a.clock(), text("v2")).unwrap();
        assert_eq!(values(&merged(&at_a, &newer)), vec![b"v2".as_slice()]);
        assert_eq!(merged(&at_a, &newer), newer);
    }

    #[test]
    fn merge_with_empty_is_identity() {
        let mut obj = VersionedObject::new();
        obj.update(A, &VersionVector::new(), text("v1")).unwrap();
        assert_eq!(merged(&obj, &VersionedObject::new()), obj);
        assert_eq!(merged(&VersionedObject::new(), &obj), obj);
        assert_eq!(merged(&obj, &obj), obj);
    }

    #[test]
    fn delete_is_a_tombstone_sibling() {
        let mut obj = VersionedObject::new();
        assert!(!obj.is_deleted());
        obj.update(A, &VersionVector::new(), text("v1")).unwrap();
        assert!(!obj.is_deleted());
        let seen = obj.clock().clone();
        obj.update(A, &seen, Value::Tombstone).unwrap();
        assert!(obj.is_deleted());
        assert_eq!(obj.live_values().count(), 0);

        // A concurrent write survives the delete.
        obj.update(B, &VersionVector::new(), text("v3")).unwrap();
        assert!(!obj.is_deleted());
        assert_eq!(values(&obj), vec![b"v3".as_slice()]);
    }

    fn raw(clock: VersionVector, siblings: Vec<Sibling>) -> VersionedObject {
        VersionedObject { clock, siblings }
    }

    #[test]
    fn validate_reports_each_broken_invariant() {
        let s = |actor, counter| Sibling {
            dot: Dot::new(actor, counter),
            value: Value::Tombstone,
        };
        let clock = vv(&[(A, 3), (B, 3)]);
        assert_eq!(
            raw(clock.clone(), vec![s(A, 1), s(B, 2)]).validate(),
            Ok(())
        );
        assert_eq!(
            raw(clock.clone(), vec![s(B, 1), s(A, 1)]).validate(),
            Err(VersionError::UnsortedSiblings)
        );
        assert_eq!(
            raw(clock.clone(), vec![s(A, 1), s(A, 1)]).validate(),
            Err(VersionError::DuplicateDot(Dot::new(A, 1)))
        );
        assert_eq!(
            raw(clock.clone(), vec![s(A, 4)]).validate(),
            Err(VersionError::DotNotCovered(Dot::new(A, 4)))
        );
        assert_eq!(
            raw(clock, vec![s(A, 0)]).validate(),
            Err(VersionError::ZeroCounter(Dot::new(A, 0)))
        );
    }
}
