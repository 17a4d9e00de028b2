//! How a node comes to have a ring: a founding node waits to learn its seeds' ids, a
//! joining one for a seed's table, and nodes that name only each other found the cluster
//! together once that has held for [`FOUNDING_SETTLE`] (the rules are in the parent
//! module's docs). Also what a node says while it has no ring: the `not_ready` reason,
//! and a warning naming the flag to check once it has waited [`STUCK_AFTER`].

use std::time::Instant;

use super::{Membership, FOUNDING_SETTLE, STUCK_AFTER};
use crate::gossip::{MemberRecord, MemberState};

impl Membership {
    /// Seeds whose id is still unknown (what a founding node's readiness waits for).
    pub fn unknown_seeds(&self) -> Vec<String> {
        self.read()
            .peers
            .iter()
            .filter(|p| p.seed && p.id.is_none())
            .map(|p| p.addr.clone())
            .collect()
    }

    /// Why there is no ring yet, for the `not_ready` error.
    pub fn not_ready_reason(&self) -> String {
        let seeds: Vec<String> = self
            .read()
            .peers
            .iter()
            .filter(|p| p.seed)
            .map(|p| p.addr.clone())
            .collect();
        if self.joining
            && !self
                .read()
                .table
                .records()
                .any(|r| r.state.in_current_ring())
        {
            format!(
                "joining: waiting for a seed to answer ({})",
                seeds.join(", ")
            )
        } else {
            format!(
                "waiting to learn the ids of seeds {}",
                self.unknown_seeds().join(", ")
            )
        }
    }

    /// The records that found a cluster with this node's seeds, when nobody has founded
    /// one they belong to (see the module docs): `Some` once the conditions have held for
    /// [`FOUNDING_SETTLE`]. The caller merges them and spreads them by gossip.
    pub fn found_together(&self) -> Option<Vec<MemberRecord>> {
        self.found_together_at(Instant::now())
    }

    pub(super) fn found_together_at(&self, now: Instant) -> Option<Vec<MemberRecord>> {
        if !self.joining {
            return None;
        }
        let mut state = self.write();
        let nobody_founded = !state.table.records().any(|r| r.state.in_current_ring());
        let seeds_all_joining = state.peers.iter().any(|p| p.seed)
            && state.peers.iter().filter(|p| p.seed).all(|p| {
                p.id.as_ref().is_some_and(|id| {
                    state
                        .table
                        .get(id)
                        .is_some_and(|r| r.state == MemberState::Joining)
                })
            });
        if !(nobody_founded && seeds_all_joining) {
            state.founding_since = None;
            return None;
        }
        let since = *state.founding_since.get_or_insert(now);
        (now.saturating_duration_since(since) >= FOUNDING_SETTLE).then(|| state.table.commit())
    }

    /// Why this node still has no ring, once it has had none for [`STUCK_AFTER`], at most
    /// once per [`STUCK_AFTER`]: the caller logs it as a warning, naming the flag to fix.
    pub fn stuck_reason(&self) -> Option<String> {
        let now = Instant::now();
        if self.ring().is_some() || now.saturating_duration_since(self.started) < STUCK_AFTER {
            return None;
        }
        {
            let mut state = self.write();
            if state
                .last_stuck_warning
                .is_some_and(|at| now.saturating_duration_since(at) < STUCK_AFTER)
            {
                return None;
            }
            state.last_stuck_warning = Some(now);
        }
        Some(format!(
            "no ring after {:?}: {}; check --seeds (the other nodes' addresses, or this \
             node's own among them to found a cluster)",
            now.saturating_duration_since(self.started),
            self.not_ready_reason()
        ))
    }
}
