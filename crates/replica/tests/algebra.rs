//! Property tests of the version algebra: the lattice laws of version
//! vectors, the join laws of versioned objects on reachable states, and the
//! safety property the whole design exists for, that no write is lost unless
//! a later write saw it.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use quorumkv_replica::{ActorId, Dot, VersionVector, VersionedObject};

use common::{history, run};

/// Small actor and counter ranges, so that vectors overlap often.
fn version_vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((0u64..4, 0u64..5), 0..5)
        .prop_map(|entries| entries.into_iter().map(|(a, n)| (ActorId(a), n)).collect())
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
        prop_assert_eq!(postcard::to_stdvec(&a).ok(), bytes.clone());
        let decoded = bytes.and_then(|b| postcard::from_bytes::<VersionVector>(&b).ok());
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
        let single: VersionVector = [(dot.actor, dot.counter)].into_iter().collect();
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
