//! Where a request goes: the owners of a key, and who stands in for the ones that are down.
//!
//! The first `n` distinct nodes of the ring walk from the key's partition are its owners
//! (primaries). With a sloppy quorum (Dynamo, section 4.6), each owner the failure
//! detector reports down is replaced by the next node along the walk that is up and not
//! an owner: the *fallback*, which keeps the write as a hint for that owner and counts
//! toward the quorum. An owner that is down with no fallback left is *unplaced*: the
//! coordinator keeps its hint itself, which does not count.
//!
//! A pure function of the ring, the key and the set of up nodes, so the choice is tested
//! without a network.

use quorumkv_ring::{NodeId, Ring};

/// Where one request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The owners of the key, in preference order.
    pub primaries: Vec<NodeId>,
    /// Owners the detector reports up.
    pub up_primaries: Vec<NodeId>,
    /// (down owner, the fallback standing in for it).
    pub fallbacks: Vec<(NodeId, NodeId)>,
    /// Down owners with no fallback.
    pub unplaced: Vec<NodeId>,
}

/// Places a request for `bucket`/`key` with replication factor `n`. `sloppy` allows
/// fallbacks; `is_up` is the failure detector's view.
pub fn place(
    ring: &Ring,
    bucket: &[u8],
    key: &[u8],
    n: usize,
    sloppy: bool,
    is_up: impl Fn(&NodeId) -> bool,
) -> Placement {
    let walk = ring.walk(ring.partition_for(bucket, key));
    let owners = n.min(walk.len());
    let primaries = walk[..owners].to_vec();
    let (up_primaries, down): (Vec<NodeId>, Vec<NodeId>) =
        primaries.iter().cloned().partition(|node| is_up(node));
    let mut spares = walk[owners..].iter().filter(|node| sloppy && is_up(node));
    let mut fallbacks = Vec::new();
    let mut unplaced = Vec::new();
    for owner in down {
        match spares.next() {
            Some(spare) => fallbacks.push((owner, spare.clone())),
            None => unplaced.push(owner),
        }
    }
    Placement {
        primaries,
        up_primaries,
        fallbacks,
        unplaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        Ring::new((1..=n).map(|i| NodeId::new(format!("n{i}"))), 64).expect("ring")
    }

    #[test]
    fn with_everyone_up_the_owners_are_the_preference_list() {
        let ring = ring(5);
        let p = place(&ring, b"b", b"k", 3, true, |_| true);
        assert_eq!(p.primaries, ring.preference_list(b"b", b"k", 3));
        assert_eq!(p.up_primaries, p.primaries);
        assert!(p.fallbacks.is_empty() && p.unplaced.is_empty());
    }

    #[test]
    fn a_down_owner_gets_the_next_up_node_along_the_walk() {
        let ring = ring(5);
        let walk = ring.walk(ring.partition_for(b"b", b"k"));
        let down = walk[1].clone();
        let p = place(&ring, b"b", b"k", 3, true, |n| *n != down);
        assert_eq!(p.fallbacks, vec![(down.clone(), walk[3].clone())]);
        assert_eq!(p.up_primaries, vec![walk[0].clone(), walk[2].clone()]);
        // Strict: no fallback, the owner is unplaced.
        let strict = place(&ring, b"b", b"k", 3, false, |n| *n != down);
        assert!(strict.fallbacks.is_empty());
        assert_eq!(strict.unplaced, vec![down]);
    }

    #[test]
    fn fallbacks_are_distinct_up_non_owners_and_run_out() {
        let ring = ring(4);
        let walk = ring.walk(ring.partition_for(b"b", b"x"));
        let down = [walk[0].clone(), walk[1].clone()];
        let p = place(&ring, b"b", b"x", 3, true, |n| !down.contains(n));
        assert_eq!(p.fallbacks, vec![(walk[0].clone(), walk[3].clone())]);
        assert_eq!(p.unplaced, vec![walk[1].clone()]);
    }
}
