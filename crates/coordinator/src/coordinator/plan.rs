//! The plan of a write once its version is minted: who gets which message, whom a failed
//! send leaves a hint for, and what each replica's acknowledgement counts toward.
//!
//! The write path (`write.rs`) mints at one owner, then follows this plan; a pure function
//! of the key's placement, the owners passed over before the minter, the joint ring of a
//! membership change and who is up, it is tested here without a network or a store:
//! - every up owner but the minter, and those passed over (a mint that failed or took too
//!   long there), gets a `Merge`; each fallback a `MergeHint` for the owner it stands in
//!   for; each owner that only the joint ring has, a `Merge` if it is up;
//! - the owners the write does not go to (down with no fallback, passed over, down owners
//!   of the joint ring) get a hint kept by the coordinator at once, and a send that fails
//!   leaves a hint for its owner (with hinted handoff on);
//! - [`WritePlan::counts`] says what each acknowledgement counts toward: the one place
//!   that answers where a fallback's acknowledgement stops counting.

use std::collections::HashMap;

use quorumkv_replica::VersionedObject;
use quorumkv_ring::NodeId;

use super::Quorum;
use crate::message::Request;
use crate::placement::Placement;
use crate::tally::{AckTally, Counts, Requirement};

/// The owners of a key in the joint ring, during a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JointOwners {
    /// All of them, in preference order.
    pub(crate) owners: Vec<NodeId>,
    /// Those that are not owners in the current ring (they get a `Merge` of their own).
    pub(crate) extra: Vec<NodeId>,
    /// Acknowledgements needed from `owners`.
    pub(crate) required: usize,
}

/// What the coordinator sends one replica once the version is minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Send {
    /// The minted state, for the replica's own copy.
    Merge,
    /// The minted state, to keep as a hint for `owner`, which is down.
    MergeHint {
        /// The owner the replica stands in for.
        owner: NodeId,
    },
}

impl Send {
    /// The message that carries `object` of `bucket`/`key`.
    pub(crate) fn request(&self, bucket: &[u8], key: &[u8], object: &VersionedObject) -> Request {
        match self {
            Self::Merge => Request::Merge {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                object: object.clone(),
            },
            Self::MergeHint { owner } => Request::MergeHint {
                owner: owner.clone(),
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                object: object.clone(),
            },
        }
    }
}

/// Where a minted version goes, and what its acknowledgements count toward.
#[derive(Clone, Debug)]
pub(crate) struct WritePlan {
    minter: NodeId,
    /// Whether the minter's own copy counts only once its fsync is done (`--sync always`:
    /// the coordinator's own mint is answered before its fsync, which runs meanwhile).
    minter_deferred: bool,
    /// In the order they go out: owners, fallbacks, owners only the joint ring has.
    sends: Vec<(NodeId, Send)>,
    /// Owners the write does not reach directly: the coordinator keeps a hint for each.
    hints_now: Vec<NodeId>,
    /// Whom a failed send to a node leaves a hint for (empty without handoff).
    hint_owner: HashMap<NodeId, NodeId>,
    /// The owners that get a `Merge` in the current ring.
    owner_merges: Vec<NodeId>,
    fallbacks: Vec<NodeId>,
    joint: Option<JointOwners>,
    requirement: Requirement,
}

/// What a plan is made from.
pub(crate) struct PlanInput<'a> {
    /// Where the key's replicas are.
    pub(crate) placement: &'a Placement,
    /// Owners the mint was tried at before the one that minted, in order.
    pub(crate) passed_over: &'a [NodeId],
    /// The owner that minted the version.
    pub(crate) minter: &'a NodeId,
    /// Whether its copy counts only after its fsync.
    pub(crate) minter_deferred: bool,
    /// The joint ring's owners, during a membership change.
    pub(crate) joint: Option<JointOwners>,
    /// The write's quorum.
    pub(crate) quorum: Quorum,
    /// Whether hinted handoff is on.
    pub(crate) handoff: bool,
}

impl WritePlan {
    /// The plan for a version minted by `input.minter`; `is_up` is the failure detector's
    /// view (it decides whether an owner only the joint ring has gets the write or a hint).
    pub(crate) fn new(input: PlanInput<'_>, is_up: impl Fn(&NodeId) -> bool) -> Self {
        let PlanInput {
            placement,
            passed_over,
            minter,
            minter_deferred,
            joint,
            quorum,
            handoff,
        } = input;
        let mut hints_now: Vec<NodeId> = placement
            .unplaced
            .iter()
            .chain(passed_over)
            .cloned()
            .collect();
        let owner_merges: Vec<NodeId> = placement
            .up_primaries
            .iter()
            .filter(|owner| *owner != minter && !passed_over.contains(owner))
            .cloned()
            .collect();
        let mut sends: Vec<(NodeId, Send)> = owner_merges
            .iter()
            .map(|owner| (owner.clone(), Send::Merge))
            .collect();
        let mut hint_owner: HashMap<NodeId, NodeId> = owner_merges
            .iter()
            .map(|owner| (owner.clone(), owner.clone()))
            .collect();
        // Fallbacks exist only for a sloppy quorum with handoff on (see `place_request`).
        for (owner, fallback) in &placement.fallbacks {
            sends.push((
                fallback.clone(),
                Send::MergeHint {
                    owner: owner.clone(),
                },
            ));
            hint_owner.insert(fallback.clone(), owner.clone());
        }
        if let Some(joint) = &joint {
            for owner in &joint.extra {
                if is_up(owner) {
                    sends.push((owner.clone(), Send::Merge));
                    hint_owner.insert(owner.clone(), owner.clone());
                } else {
                    hints_now.push(owner.clone());
                }
            }
        }
        if !handoff {
            hints_now.clear();
            hint_owner.clear();
        }
        let requirement = Requirement {
            required: quorum.required,
            primaries: quorum.primaries,
            joint: joint.as_ref().map_or(0, |j| j.required),
        };
        Self {
            minter: minter.clone(),
            minter_deferred,
            sends,
            hints_now,
            hint_owner,
            owner_merges,
            fallbacks: placement.fallbacks.iter().map(|(_, f)| f.clone()).collect(),
            joint,
            requirement,
        }
    }

    /// The owner that minted the version.
    pub(crate) fn minter(&self) -> &NodeId {
        &self.minter
    }

    /// Who gets what, in the order the sends go out.
    pub(crate) fn sends(&self) -> &[(NodeId, Send)] {
        &self.sends
    }

    /// The owners the coordinator keeps a hint for at once (none without handoff).
    pub(crate) fn hints_now(&self) -> &[NodeId] {
        &self.hints_now
    }

    /// The owner a failed send to `node` leaves a hint for (none without handoff).
    pub(crate) fn hint_owner(&self, node: &NodeId) -> Option<&NodeId> {
        self.hint_owner.get(node)
    }

    /// What an acknowledgement from `node` counts toward:
    /// - `w`: every replica the current ring places the write on (the minter, the owners,
    ///   the fallbacks), not an owner that only the joint ring has;
    /// - `pw`: the minter and the owners, not a fallback, whose copy is a hint;
    /// - the joint ring: its owners, and never a fallback (a hint is not a copy an owner
    ///   of that ring holds). A node that is both a fallback and an owner only the joint
    ///   ring has gets two sends whose acknowledgements cannot be told apart: it counts
    ///   toward nothing.
    pub(crate) fn counts(&self, node: &NodeId) -> Counts {
        let fallback = self.fallbacks.contains(node);
        let (joint_owner, joint_only) = self.joint.as_ref().map_or((false, false), |j| {
            (j.owners.contains(node), j.extra.contains(node))
        });
        Counts {
            quorum: !joint_only,
            primary: *node == self.minter || self.owner_merges.contains(node),
            joint: joint_owner && !fallback,
        }
    }

    /// The tally the write starts from: the minter's copy counts at once, unless it counts
    /// once its fsync is done (then the caller records it).
    pub(crate) fn tally(&self) -> AckTally {
        let mut tally = AckTally::new(self.requirement);
        if !self.minter_deferred {
            tally.record(self.counts(&self.minter));
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::new(*n)).collect()
    }

    fn node(name: &str) -> NodeId {
        NodeId::new(name)
    }

    /// Owners a, b, c; c is down and d stands in for it.
    fn placement() -> Placement {
        Placement {
            primaries: nodes(&["a", "b", "c"]),
            up_primaries: nodes(&["a", "b"]),
            fallbacks: vec![(node("c"), node("d"))],
            unplaced: Vec::new(),
        }
    }

    fn quorum(required: usize, primaries: usize) -> Quorum {
        Quorum {
            required,
            primaries,
            sloppy: true,
        }
    }

    fn plan(
        placement: &Placement,
        quorum: Quorum,
        joint: Option<JointOwners>,
        minter_deferred: bool,
    ) -> WritePlan {
        WritePlan::new(
            PlanInput {
                placement,
                passed_over: &[],
                minter: &node("a"),
                minter_deferred,
                joint,
                quorum,
                handoff: true,
            },
            |n| *n != node("c") && *n != node("f"),
        )
    }

    #[test]
    fn a_fallback_ack_counts_toward_w_but_not_toward_pw_or_the_joint_ring() {
        let joint = JointOwners {
            owners: nodes(&["a", "d", "e"]),
            extra: nodes(&["d", "e"]),
            required: 2,
        };
        let placement = placement();
        // d is a fallback here, and an owner of the joint ring only; it counts nowhere.
        let p = plan(&placement, quorum(2, 0), Some(joint), false);
        assert_eq!(p.counts(&node("d")), Counts::default());

        let p = plan(&placement, quorum(2, 2), None, false);
        let fallback = p.counts(&node("d"));
        assert!(fallback.quorum && !fallback.primary && !fallback.joint);
        let mut tally = p.tally();
        tally.record(fallback);
        assert!(!tally.is_met(), "pw=2: a and the fallback");
        tally.record(p.counts(&node("b")));
        assert!(tally.is_met());
    }

    #[test]
    fn a_joint_only_owner_counts_only_in_the_joint_ring() {
        let placement = Placement {
            fallbacks: Vec::new(),
            unplaced: nodes(&["c"]),
            ..placement()
        };
        let joint = JointOwners {
            owners: nodes(&["a", "b", "e"]),
            extra: nodes(&["e"]),
            required: 3,
        };
        let p = plan(&placement, quorum(2, 0), Some(joint), false);
        let e = p.counts(&node("e"));
        assert!(!e.quorum && !e.primary && e.joint);
        let mut tally = p.tally();
        tally.record(e);
        assert!(
            !tally.is_met(),
            "w=2 needs b: e is not an owner of the current ring"
        );
        tally.record(p.counts(&node("b")));
        assert!(tally.is_met());
        assert!(p.sends().contains(&(node("e"), Send::Merge)));
    }

    #[test]
    fn a_deferred_minter_counts_only_after_its_fsync() {
        let placement = placement();
        assert!(plan(&placement, quorum(1, 1), None, false).tally().is_met());
        let p = plan(&placement, quorum(1, 1), None, true);
        let mut tally = p.tally();
        assert!(!tally.is_met());
        tally.record(p.counts(p.minter()));
        assert!(tally.is_met());
    }

    #[test]
    fn owners_not_reached_get_hints_and_a_failed_send_names_its_owner() {
        let placement = Placement {
            primaries: nodes(&["a", "b", "c", "g"]),
            up_primaries: nodes(&["b", "a", "g"]),
            fallbacks: vec![(node("c"), node("d"))],
            unplaced: Vec::new(),
        };
        let joint = JointOwners {
            owners: nodes(&["a", "b", "f"]),
            extra: nodes(&["f"]),
            required: 2,
        };
        let p = WritePlan::new(
            PlanInput {
                placement: &placement,
                passed_over: &nodes(&["b"]),
                minter: &node("a"),
                minter_deferred: false,
                joint: Some(joint),
                quorum: quorum(2, 0),
                handoff: true,
            },
            |n| *n != node("f"),
        );
        assert_eq!(
            p.sends(),
            [
                (node("g"), Send::Merge),
                (node("d"), Send::MergeHint { owner: node("c") }),
            ]
        );
        // b was passed over; f, an owner of the joint ring only, is down.
        assert_eq!(p.hints_now(), nodes(&["b", "f"]));
        assert_eq!(p.hint_owner(&node("d")), Some(&node("c")));
        assert_eq!(p.hint_owner(&node("g")), Some(&node("g")));
        assert_eq!(p.hint_owner(&node("a")), None);

        let without_handoff = WritePlan::new(
            PlanInput {
                placement: &placement,
                passed_over: &nodes(&["b"]),
                minter: &node("a"),
                minter_deferred: false,
                joint: None,
                quorum: quorum(2, 0),
                handoff: false,
            },
            |_| true,
        );
        assert!(without_handoff.hints_now().is_empty());
        assert_eq!(without_handoff.hint_owner(&node("g")), None);
    }
}
