//! A model of replicated histories for the property tests.
//!
//! A history is a random sequence of client reads, coordinated writes and
//! replica-to-replica merges over 2 to 4 replicas, the way the coordinator
//! drives the algebra: a write is coordinated at some replica with a context
//! the client got from an earlier read (of one replica, or of two merged,
//! like a quorum read), and merges happen in any direction at any time. The
//! model records what the algebra cannot be trusted to report about itself:
//! every dot minted, its value, and every context a write was sent with.
//!
//! A write's answer is a context too, and clients reuse it: every write adds
//! its answer to the contexts later writes may be sent with. The model tracks,
//! for every context, the dots its client may have seen (the live siblings
//! of what it read, what its earlier writes minted, and whatever was already
//! superseded), and records every write whose context covered a dot outside
//! that set: a silent overwrite of a value its writer never saw.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the model"
)]

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use quorumkv_replica::{ActorId, Dot, Value, VersionVector, VersionedObject};

/// One step of a history.
#[derive(Clone, Debug)]
pub enum Op {
    /// A client reads one replica and keeps its clock as a context.
    Read { replica: usize },
    /// A client reads two replicas and keeps the merge of their clocks.
    QuorumRead { first: usize, second: usize },
    /// A write at `replica` with a previously read context (or none);
    /// `value` of `None` is a delete.
    Write {
        replica: usize,
        context: Index,
        value: Option<Vec<u8>>,
    },
    /// A write at `replica` with the newest context any client holds (often the answer
    /// to the write just before: a client reusing its own write's context).
    WriteLatest {
        replica: usize,
        value: Option<Vec<u8>>,
    },
    /// A write at `replica` with no context.
    WriteBlind {
        replica: usize,
        value: Option<Vec<u8>>,
    },
    /// Replica `to` merges the state of replica `from`.
    Merge { from: usize, to: usize },
}

/// The result of running a history.
#[derive(Debug, Default)]
pub struct History {
    /// Each replica's final state.
    pub replicas: Vec<VersionedObject>,
    /// Each replica's actor.
    pub actors: Vec<ActorId>,
    /// Every dot minted, with the value written under it, in minting order.
    pub created: Vec<(Dot, Value)>,
    /// The context of every write, in order.
    pub write_contexts: Vec<VersionVector>,
    /// Every intermediate replica state, for the join-law properties.
    pub snapshots: Vec<VersionedObject>,
    /// Every live dot some write's context covered although its client could not have
    /// seen it, with the index of that write in `write_contexts`.
    pub unseen_covered: Vec<(Dot, usize)>,
}

/// What a write answers its client with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// [`VersionedObject::write_context`]: what the writer saw and its new dot.
    WriteContext,
    /// The minting replica's whole clock: the bug the answer's exceptions cure, kept as
    /// the negative control of the model's check.
    WholeClock,
}

/// A context a client holds, with the dots it may have seen.
#[derive(Clone, Debug, Default)]
struct Held {
    context: VersionVector,
    seen: BTreeSet<Dot>,
}

impl History {
    /// Returns the join of every replica's final state, folded left to right.
    pub fn merged(&self) -> VersionedObject {
        let mut out = VersionedObject::new();
        for replica in &self.replicas {
            out.merge(replica);
        }
        out
    }
}

/// Actor of replica `i`; spread out so that actor order and replica order
/// differ.
pub fn actor(i: usize) -> ActorId {
    ActorId(0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1))
}

/// Strategy for one step over `n` replicas.
pub fn op(n: usize) -> impl Strategy<Value = Op> {
    let value = prop_oneof![
        1 => Just(None),
        4 => proptest::collection::vec(any::<u8>(), 0..6).prop_map(Some),
    ];
    prop_oneof![
        2 => (0..n).prop_map(|replica| Op::Read { replica }),
        1 => (0..n, 0..n).prop_map(|(first, second)| Op::QuorumRead { first, second }),
        4 => (0..n, any::<Index>(), value.clone())
            .prop_map(|(replica, context, value)| Op::Write { replica, context, value }),
        2 => (0..n, value.clone()).prop_map(|(replica, value)| Op::WriteLatest { replica, value }),
        1 => (0..n, value).prop_map(|(replica, value)| Op::WriteBlind { replica, value }),
        3 => (0..n, 0..n).prop_map(|(from, to)| Op::Merge { from, to }),
    ]
}

/// Strategy for a history: a replica count from 2 to 4 and up to
/// `max_ops` steps.
pub fn history(max_ops: usize) -> impl Strategy<Value = (usize, Vec<Op>)> {
    (2usize..=4).prop_flat_map(move |n| (Just(n), proptest::collection::vec(op(n), 1..max_ops)))
}

/// Runs a history against the algebra, checking after every step that the
/// touched replica's state is valid.
pub fn run(n: usize, ops: &[Op]) -> Result<History, TestCaseError> {
    run_answering(n, ops, Answers::WriteContext)
}

/// [`run`], with writes answered as `answers` says.
pub fn run_answering(n: usize, ops: &[Op], answers: Answers) -> Result<History, TestCaseError> {
    let mut h = History {
        replicas: vec![VersionedObject::new(); n],
        actors: (0..n).map(actor).collect(),
        ..History::default()
    };
    // Dots some write's context covered: they are gone, and seeing them harms nothing.
    let mut superseded: BTreeSet<Dot> = BTreeSet::new();
    // Index 0 is the empty context of a client that read nothing.
    let mut contexts = vec![Held::default()];
    let read = |states: &[&VersionedObject], superseded: &BTreeSet<Dot>| {
        let mut held = Held {
            seen: superseded.clone(),
            ..Held::default()
        };
        for state in states {
            held.context.merge(state.clock());
            held.seen.extend(state.siblings().iter().map(|s| s.dot));
        }
        held
    };
    for op in ops {
        match op {
            Op::Read { replica } => contexts.push(read(&[&h.replicas[*replica]], &superseded)),
            Op::QuorumRead { first, second } => contexts.push(read(
                &[&h.replicas[*first], &h.replicas[*second]],
                &superseded,
            )),
            Op::Write { replica, value, .. }
            | Op::WriteLatest { replica, value }
            | Op::WriteBlind { replica, value } => {
                let held = match op {
                    Op::Write { context, .. } => contexts[context.index(contexts.len())].clone(),
                    Op::WriteLatest { .. } => contexts.last().cloned().unwrap_or_default(),
                    _ => Held::default(),
                };
                write(
                    &mut h,
                    &mut contexts,
                    &mut superseded,
                    answers,
                    (*replica, held),
                    value,
                )?;
            }
            Op::Merge { from, to } => {
                let incoming = h.replicas[*from].clone();
                let state = &mut h.replicas[*to];
                state.merge(&incoming);
                prop_assert_eq!(state.validate(), Ok(()));
                h.snapshots.push(state.clone());
            }
        }
    }
    Ok(h)
}

/// A write at `replica` with the context `held`, answered as `answers` says; the answer
/// joins the contexts clients hold.
fn write(
    h: &mut History,
    contexts: &mut Vec<Held>,
    superseded: &mut BTreeSet<Dot>,
    answers: Answers,
    (replica, held): (usize, Held),
    value: &Option<Vec<u8>>,
) -> Result<(), TestCaseError> {
    let context = held.context.clone();
    let write = h.write_contexts.len();
    for (dot, _) in &h.created {
        if context.covers(dot) && !held.seen.contains(dot) {
            h.unseen_covered.push((*dot, write));
        }
    }
    let value = match value {
        Some(bytes) => Value::data("application/octet-stream", Bytes::from(bytes.clone())),
        None => Value::Tombstone,
    };
    let state = &mut h.replicas[replica];
    let dot = state
        .update(h.actors[replica], &context, value.clone())
        .map_err(|e| TestCaseError::fail(format!("update failed: {e}")))?;
    prop_assert_eq!(dot.actor, h.actors[replica]);
    h.created.push((dot, value));
    superseded.extend(
        h.created
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| context.covers(d)),
    );
    let answer = match answers {
        Answers::WriteContext => state.write_context(&context, dot),
        Answers::WholeClock => state.clock().clone(),
    };
    let mut seen = held.seen;
    seen.insert(dot);
    seen.extend(superseded.iter().copied());
    contexts.push(Held {
        context: answer,
        seen,
    });
    h.write_contexts.push(context);
    prop_assert_eq!(state.validate(), Ok(()));
    h.snapshots.push(state.clone());
    Ok(())
}
