//! Membership changes an operator asks for: this node leaving, a dead node removed.
//!
//! Both only write a record (`Leaving`, version plus one) and let gossip spread it; the
//! transfers and the commit ([`super::transfer`]) do the rest. A member removed while it
//! is still *joining* goes straight to `Removed`: it owns nothing in the current ring, and
//! as `Leaving` it would enter it (the current ring counts leaving members) with none of
//! the data, so reads at its owners would miss acknowledged writes. A leaving node serves until
//! the commit marks it `Removed`, then the server stops it ([`Coordinator::has_left`]). A
//! removed node's id never comes back (its `Removed` record wins every merge): a node that
//! takes its place needs a new id.

use std::sync::Arc;

use quorumkv_ring::NodeId;

use super::Coordinator;
use crate::error::CoordinatorError;
use crate::gossip::{MemberRecord, MemberState};

impl Coordinator {
    /// Starts handing every partition this node owns to its next owners: marks it
    /// `Leaving`. Returns the record written (or held, when it is leaving already).
    pub async fn leave(self: &Arc<Self>) -> Result<MemberRecord, CoordinatorError> {
        self.ring()?;
        let table = self.membership.table();
        let own = table
            .get(&self.node)
            .cloned()
            .ok_or_else(|| CoordinatorError::Internal("this node has no record".into()))?;
        match own.state {
            MemberState::Leaving | MemberState::Removed => return Ok(own),
            MemberState::Joining => {
                return Err(CoordinatorError::InvalidChange(
                    "this node is still joining: it can leave once its join is committed".into(),
                ))
            }
            MemberState::Active => {}
        }
        self.ensure_someone_stays(&self.node)?;
        let record = self
            .membership
            .update_own(|r| {
                r.state = MemberState::Leaving;
                r.transfers_done = None;
            })
            .ok_or_else(|| CoordinatorError::Internal("this node has no record".into()))?;
        tracing::info!(node = %self.node, version = record.version, "leaving the cluster");
        self.persist_members().await;
        Ok(record)
    }

    /// Takes `node` out of the cluster on behalf of a node that cannot leave itself (it is
    /// dead): marks it `Leaving`, so its partitions are copied from the replicas that
    /// survive and the commit marks it `Removed`. A member still joining owns nothing yet:
    /// it is marked `Removed` at once.
    ///
    /// A member the failure detector sees up is refused ([`CoordinatorError::MemberUp`])
    /// unless `force`: a live node should leave by itself, and a removed id can never
    /// rejoin, so a mistaken removal of a healthy pod would leave it crash-looping.
    pub async fn remove(
        self: &Arc<Self>,
        node: &NodeId,
        force: bool,
    ) -> Result<MemberRecord, CoordinatorError> {
        self.ring()?;
        if *node == self.node {
            return Err(CoordinatorError::InvalidChange(
                "a node cannot remove itself: ask it to leave".into(),
            ));
        }
        let table = self.membership.table();
        let record = table
            .get(node)
            .filter(|r| r.state != MemberState::Removed)
            .cloned()
            .ok_or_else(|| CoordinatorError::NodeNotFound(node.to_string()))?;
        if record.state == MemberState::Leaving {
            return Ok(record);
        }
        if !force && self.membership.is_up(node) {
            return Err(CoordinatorError::MemberUp(node.to_string()));
        }
        self.ensure_someone_stays(node)?;
        let state = removal_state(record.state);
        let version = record.version.checked_add(1).ok_or_else(|| {
            CoordinatorError::Internal(format!("the record of {node} is at its last version"))
        })?;
        let leaving = MemberRecord {
            state,
            version,
            transfers_done: None,
            ..record
        };
        tracing::info!(%node, version = leaving.version, state = ?state, "removing a member");
        self.membership.merge_records(vec![leaving.clone()]);
        self.persist_members().await;
        Ok(leaving)
    }

    /// Whether this node has left the cluster for good (its record is `Removed`): the
    /// server then stops.
    pub fn has_left(&self) -> bool {
        self.membership
            .table()
            .get(&self.node)
            .is_some_and(|r| r.state == MemberState::Removed)
    }

    /// Refuses a change that would leave the next ring empty.
    fn ensure_someone_stays(&self, going: &NodeId) -> Result<(), CoordinatorError> {
        let stays = self
            .membership
            .table()
            .next_members()
            .iter()
            .any(|(id, _)| id != going);
        if stays {
            Ok(())
        } else {
            Err(CoordinatorError::InvalidChange(
                "the cluster would have no member left".into(),
            ))
        }
    }
}

/// The state a member is removed into: `Removed` at once for a member still joining (it
/// is in no current ring, so nothing needs to move off it), `Leaving` otherwise.
fn removal_state(state: MemberState) -> MemberState {
    match state {
        MemberState::Joining => MemberState::Removed,
        _ => MemberState::Leaving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_member_is_removed_at_once_and_an_active_one_leaves_first() {
        assert_eq!(removal_state(MemberState::Joining), MemberState::Removed);
        assert_eq!(removal_state(MemberState::Active), MemberState::Leaving);
        // Whatever the state, the removal never puts a member in the current ring that
        // was not in it before.
        for state in [MemberState::Joining, MemberState::Active] {
            assert!(!removal_state(state).in_current_ring() || state.in_current_ring());
        }
    }
}
