//! Property tests of the version algebra: the lattice laws of version
//! vectors, the join laws of versioned objects on reachable states, and the
//! safety property the whole design exists for, that no write is lost unless
//! a later write saw it.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use quorumkv_replica::{
    encode_compatible, with_format, ActorId, Dot, VersionVector, VersionedObject, WireFormat,
};

use common::{history, run, run_answering, Answers, Op};

/// Small actor and counter ranges, so that vectors overlap often; some with exceptions
/// (dots below an entry that the vector has not seen).
fn version_vector() -> impl Strategy<Value = VersionVector> {
    (
        proptest::collection::vec((0u64..4, 0u64..5), 0..5),
        proptest::collection::vec((0u64..4, 1u64..5), 0..3),
    )
        .prop_map(|(entries, unseen)| {
            let vector: VersionVector = entries.into_iter().map(|(a, n)| (ActorId(a), n)).collect();
            vector.excluding(unseen.into_iter().map(|(a, n)| Dot::new(ActorId(a), n)))
        })
}

/// The dots a small vector covers, listed: the model of what it means.
fn covered(vector: &VersionVector) -> BTreeSet<Dot> {
    (0u64..4)
        .flat_map(|a| (1u64..6).map(move |n| Dot::new(ActorId(a), n)))
        .filter(|dot| vector.covers(dot))
        .collect()
}

/// Wider actor ranges than [`version_vector`], so vectors outgrow their inline room, with
/// a map as the model of what a vector means.
fn modelled_vector() -> impl Strategy<Value = (VersionVector, BTreeMap<ActorId, u64>)> {
    proptest::collection::vec((0u64..10, 0u64..5), 0..12).prop_map(|entries| {
        let mut model = BTreeMap::new();
        for &(a, n) in &entries {
            if n > 0 {
                let entry = model.entry(ActorId(a)).or_insert(0);
                *entry = n.max(*entry);
            }
        }
        let vector = entries.into_iter().map(|(a, n)| (ActorId(a), n)).collect();
        (vector, model)
    })
}

fn joined(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = a.clone();
    out.merge(b);
    out
}

fn merged(a: &VersionedObject, b: &VersionedObject) -> VersionedObject {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn vectors_behave_as_their_model_map(
        (a, model_a) in modelled_vector(),
        (b, model_b) in modelled_vector(),
    ) {
        prop_assert_eq!(a.iter().collect::<Vec<_>>(), model_a.clone().into_iter().collect::<Vec<_>>());
        for actor in (0u64..10).map(ActorId) {
            prop_assert_eq!(a.get(actor), model_a.get(&actor).copied().unwrap_or(0));
        }
        let mut model_j = model_a.clone();
        for (&actor, &n) in &model_b {
            let entry = model_j.entry(actor).or_insert(0);
            *entry = n.max(*entry);
        }
        let j = joined(&a, &b);
        prop_assert_eq!(j.iter().collect::<Vec<_>>(), model_j.into_iter().collect::<Vec<_>>());
        let model_descends = model_b.iter().all(|(actor, &n)| model_a.get(actor).copied().unwrap_or(0) >= n);
        prop_assert_eq!(a.descends(&b), model_descends);
        // The wire form is the model's: records written before stay readable.
        let bytes = postcard::to_stdvec(&model_a).ok();
        prop_assert!(bytes.is_some());
        let (encoded, format) = encode_compatible(|| postcard::to_stdvec(&a).ok());
        prop_assert_eq!(format, WireFormat::V1);
        prop_assert_eq!(encoded, bytes.clone());
        let decoded = bytes.and_then(|b| {
            with_format(WireFormat::V1, || postcard::from_bytes::<VersionVector>(&b)).ok()
        });
        prop_assert_eq!(decoded, Some(a));
    }

    #[test]
    fn vectors_with_exceptions_behave_as_sets_of_dots(
        a in version_vector(), b in version_vector()
    ) {
        let (set_a, set_b) = (covered(&a), covered(&b));
        prop_assert_eq!(covered(&joined(&a, &b)), &set_a | &set_b);
        prop_assert_eq!(a.descends(&b), set_a.is_superset(&set_b));
        // Equal sets are equal vectors: the form is canonical.
        prop_assert_eq!(set_a == set_b, a == b);
        // Either format round-trips what it can hold.
        let (bytes, format) = encode_compatible(|| postcard::to_stdvec(&a).ok());
        prop_assert_eq!(format == WireFormat::V1, a.unseen().is_empty());
        let decoded = bytes.and_then(|b| with_format(format, || postcard::from_bytes(&b)).ok());
        prop_assert_eq!(decoded, Some(a));
    }

    #[test]
    fn vector_merge_is_commutative(a in version_vector(), b in version_vector()) {
        prop_assert_eq!(joined(&a, &b), joined(&b, &a));
    }

    #[test]
    fn vector_merge_is_associative(
        a in version_vector(), b in version_vector(), c in version_vector()
    ) {
        prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
    }

    #[test]
    fn vector_merge_is_idempotent(a in version_vector()) {
        prop_assert_eq!(joined(&a, &a), a);
    }

    #[test]
    fn descends_is_a_partial_order(
        a in version_vector(), b in version_vector(), c in version_vector()
    ) {
        prop_assert!(a.descends(&a));
        if a.descends(&b) && b.descends(&a) {
            prop_assert_eq!(&a, &b);
        }
        if a.descends(&b) && b.descends(&c) {
            prop_assert!(a.descends(&c));
        }
        prop_assert_eq!(a.concurrent(&b), !a.descends(&b) && !b.descends(&a));
    }

    #[test]
    fn descends_agrees_with_merge(a in version_vector(), b in version_vector()) {
        // The join is the least upper bound, and a >= b exactly when a ∨ b = a.
        let j = joined(&a, &b);
        prop_assert!(j.descends(&a) && j.descends(&b));
        prop_assert_eq!(a.descends(&b), j == a);
        for (actor, n) in j.iter() {
            prop_assert_eq!(n, a.get(actor).max(b.get(actor)));
            prop_assert!(n > 0);
        }
    }

    #[test]
    fn covers_agrees_with_descends(a in version_vector(), actor in 0u64..4, counter in 1u64..6) {
        let dot = Dot { actor: ActorId(actor), counter };
        // The vector of exactly this one dot: its entry less every dot below it.
        let single: VersionVector = [(dot.actor, dot.counter)].into_iter().collect();
        let single = single.excluding((1..counter).map(|n| Dot::new(dot.actor, n)));
        prop_assert_eq!(a.covers(&dot), a.descends(&single));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn object_merge_is_commutative_associative_idempotent(
        (n, ops) in history(40), picks in proptest::collection::vec(any::<Index>(), 3)
    ) {
        let h = run(n, &ops)?;
        let mut states = h.snapshots.clone();
        states.extend(h.replicas.iter().cloned());
        let [a, b, c] = [0, 1, 2].map(|i| &states[picks[i].index(states.len())]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(&merged(a, a), a);
        prop_assert_eq!(merged(a, b).validate(), Ok(()));
    }

    #[test]
    fn replicas_converge_whatever_the_merge_order((n, ops) in history(40)) {
        let h = run(n, &ops)?;
        let forward = h.merged();
        let mut backward = VersionedObject::new();
        for replica in h.replicas.iter().rev() {
            backward.merge(replica);
        }
        prop_assert_eq!(&forward, &backward);
        // Anti-entropy: once every replica merged the joined state, all agree.
        for replica in &h.replicas {
            prop_assert_eq!(&merged(replica, &forward), &forward);
        }
    }

    #[test]
    fn every_dot_is_minted_once((n, ops) in history(40)) {
        let h = run(n, &ops)?;
        let unique: BTreeSet<Dot> = h.created.iter().map(|(dot, _)| *dot).collect();
        prop_assert_eq!(unique.len(), h.created.len());
    }

    /// Always: no write's context covers a live version its client never saw, whether the
    /// context came from a read or from the answer to an earlier write.
    #[test]
    fn no_context_covers_a_version_its_client_never_saw((n, ops) in history(50)) {
        let h = run(n, &ops)?;
        prop_assert!(h.unseen_covered.is_empty(), "{:?}", h.unseen_covered);
    }

    /// Always: after all replicas merge, a write is absent exactly when some
    /// write was sent with a context that covered it (it was seen and
    /// replaced), and present with its own value otherwise.
    #[test]
    fn never_lose_an_undominated_version((n, ops) in history(50)) {
        let h = run(n, &ops)?;
        let fin = h.merged();
        prop_assert_eq!(fin.validate(), Ok(()));
        let present: BTreeMap<Dot, _> =
            fin.siblings().iter().map(|s| (s.dot, &s.value)).collect();
        for (dot, value) in &h.created {
            prop_assert!(fin.clock().covers(dot), "final clock misses {}", dot);
            let superseded = h.write_contexts.iter().any(|ctx| ctx.covers(dot));
            match present.get(dot) {
                Some(kept) => {
                    prop_assert!(!superseded, "{} survived a write that saw it", dot);
                    prop_assert_eq!(*kept, value);
                }
                None => prop_assert!(superseded, "{} was lost without being seen", dot),
            }
        }
        prop_assert_eq!(present.len(), fin.siblings().len());
        prop_assert!(present.keys().all(|dot| h.created.iter().any(|(d, _)| d == dot)));
    }
}

/// The negative control of `no_context_covers_a_version_its_client_never_saw`: writes
/// answered with the minting replica's whole clock. Y writes blindly, X writes blindly,
/// then X writes with its own write's answer: that answer covered Y's version, and the
/// check must say so.
#[test]
fn answers_with_the_whole_clock_are_caught_covering_an_unseen_version() {
    let blind = |value: &[u8]| Op::WriteBlind {
        replica: 0,
        value: Some(value.to_vec()),
    };
    let reuse = Op::WriteLatest {
        replica: 0,
        value: Some(b"x2".to_vec()),
    };
    let ops = [blind(b"y"), blind(b"x"), reuse];
    let bad = run_answering(2, &ops, Answers::WholeClock).expect("the history runs");
    assert_eq!(bad.unseen_covered.len(), 1, "{:?}", bad.unseen_covered);
    let good = run_answering(2, &ops, Answers::WriteContext).expect("the history runs");
    assert!(good.unseen_covered.is_empty(), "{:?}", good.unseen_covered);
    // And with exact answers both y and x2 survive.
    let values: Vec<_> = good
        .merged()
        .live_values()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(values, [&b"y"[..], &b"x2"[..]]);
}
