//! The ring snapshot: partition owners, preference lists and the fallback walk.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::assign::assign_owners;
use crate::hash::{key_hash, partition_score};
use crate::{NodeId, PartitionId, RingError, MAX_PARTITIONS};

/// An immutable snapshot of partition ownership for one member set.
///
/// The coordinator keeps it behind an `Arc` and swaps it whole when membership changes, so
/// a request sees one consistent ring from start to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Members, sorted by id and distinct.
    members: Vec<NodeId>,
    /// Owner of each partition, as an index into `members`; its length is the partition
    /// count, a power of two.
    owners: Vec<usize>,
    /// `log2` of the partition count: how many top bits of a key hash pick its partition.
    partition_bits: u32,
    /// The zone of each member, as a small integer (members without a zone share one);
    /// empty when there is at most one zone, so zone-blind rings take the short path.
    zones: Vec<usize>,
}

impl Ring {
    /// Builds the ring of `members` over `partitions` partitions.
    ///
    /// Ownership depends on the member set only, never on the order it is given in.
    /// `partitions` must be a power of two in `1..=65536`.
    pub fn new(
        members: impl IntoIterator<Item = NodeId>,
        partitions: u32,
    ) -> Result<Ring, RingError> {
        Self::with_zones(members.into_iter().map(|m| (m, None)), partitions)
    }

    /// Builds the ring of `members`, each with an optional zone (a failure domain: a rack,
    /// a data centre zone). Partition ownership ignores zones; preference lists and the walk
    /// take one member per zone first, so whenever there are at least `n` zones a key's `n`
    /// replicas sit in `n` distinct zones, and losing a zone loses at most one of them.
    /// Members without a zone form one zone together.
    pub fn with_zones(
        members: impl IntoIterator<Item = (NodeId, Option<String>)>,
        partitions: u32,
    ) -> Result<Ring, RingError> {
        if !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
            return Err(RingError::InvalidPartitionCount(partitions));
        }
        let mut zoned: Vec<(NodeId, Option<String>)> = members.into_iter().collect();
        zoned.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let members: Vec<NodeId> = zoned.iter().map(|(m, _)| m.clone()).collect();
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        if let Some(pair) = members.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(RingError::DuplicateMember(pair[0].clone()));
        }

        let owners = assign_owners(&members, partitions);
        let mut names: Vec<&Option<String>> = zoned.iter().map(|(_, z)| z).collect();
        names.sort_unstable();
        names.dedup();
        let zones = if names.len() > 1 {
            zoned
                .iter()
                .map(|(_, z)| names.iter().position(|n| *n == z).unwrap_or(0))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Ring {
            members,
            owners,
            partition_bits: partitions.trailing_zeros(),
            zones,
        })
    }

    /// Returns the number of partitions, a power of two.
    pub fn partition_count(&self) -> u32 {
        1 << self.partition_bits
    }

    /// Returns every partition, in index order.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> {
        (0..self.partition_count()).map(PartitionId)
    }

    /// Returns the members, sorted by id.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Returns the partition a key hash falls in: its top `log2(partitions)` bits.
    ///
    /// Top bits rather than a modulus keep each partition a contiguous range of the hash
    /// space, so doubling the partition count splits every partition in two in place.
    pub fn partition_of(&self, hash: u64) -> PartitionId {
        // With a single partition the shift would be by 64, which `checked_shr` refuses;
        // every hash then lands in partition 0.
        let top = hash.checked_shr(64 - self.partition_bits).unwrap_or(0);
        // Fits: `top < 2^partition_bits <= 65536`.
        PartitionId(top as u32)
    }

    /// Returns the partition of a key in a bucket (see [`key_hash`]).
    pub fn partition_for(&self, bucket: &[u8], key: &[u8]) -> PartitionId {
        self.partition_of(key_hash(bucket, key))
    }

    /// Returns the primary owner of a partition.
    ///
    /// # Panics
    ///
    /// If `partition` is not below [`partition_count`](Self::partition_count): a partition
    /// id from a ring of another size is a caller bug.
    pub fn owner(&self, partition: PartitionId) -> &NodeId {
        &self.members[self.owners[self.slot(partition)]]
    }

    /// Returns the preference list of a partition: its owner, then the other members by
    /// their score for the partition, highest first, until `n` distinct nodes are chosen
    /// (with zones, one node per zone first: see [`with_zones`](Self::with_zones)). Holds
    /// `min(n, members)` nodes.
    ///
    /// # Panics
    ///
    /// If `partition` is not below [`partition_count`](Self::partition_count).
    pub fn preference_list_for(&self, partition: PartitionId, n: usize) -> Vec<NodeId> {
        self.walk_indices(partition, n)
            .into_iter()
            .map(|i| self.members[i].clone())
            .collect()
    }

    /// Returns the preference list of a key in a bucket: the `n` nodes that store it.
    pub fn preference_list(&self, bucket: &[u8], key: &[u8], n: usize) -> Vec<NodeId> {
        self.preference_list_for(self.partition_for(bucket, key), n)
    }

    /// Returns every member exactly once, in the order a sloppy quorum tries them.
    ///
    /// The walk is the order of [`preference_list_for`](Self::preference_list_for) carried
    /// through every member, so its first `n` entries are the preference list and the rest
    /// are the fallbacks, best score first. Scores differ from partition to partition, so a
    /// failed node's partitions fall back to many different nodes, not to one neighbour.
    ///
    /// # Panics
    ///
    /// If `partition` is not below [`partition_count`](Self::partition_count).
    pub fn walk(&self, partition: PartitionId) -> Vec<NodeId> {
        self.preference_list_for(partition, self.members.len())
    }

    /// Returns how many partitions each member owns as primary owner; every member is
    /// present, possibly with 0.
    pub fn ownership(&self) -> BTreeMap<NodeId, u32> {
        let mut counts = vec![0u32; self.members.len()];
        for &owner in &self.owners {
            counts[owner] += 1;
        }
        self.members.iter().cloned().zip(counts).collect()
    }

    /// Returns the index of `partition` into `owners`, checking it belongs to this ring.
    fn slot(&self, partition: PartitionId) -> usize {
        let count = self.partition_count();
        assert!(
            partition.0 < count,
            "partition {partition} is outside a ring of {count} partitions"
        );
        partition.0 as usize
    }

    /// Returns the first `limit` members (as indices) of the walk from `partition`: the
    /// score walk, reordered, when members have zones, so that one member of each zone
    /// comes first (in walk order), then the others (in walk order).
    fn walk_indices(&self, partition: PartitionId, limit: usize) -> Vec<usize> {
        if self.zones.is_empty() {
            return self.score_walk(partition, limit);
        }
        let walk = self.score_walk(partition, self.members.len());
        let mut zone_taken = vec![false; self.zones.len()];
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for member in walk {
            let zone = self.zones[member];
            if zone_taken[zone] {
                rest.push(member);
            } else {
                zone_taken[zone] = true;
                first.push(member);
            }
        }
        first.extend(rest);
        first.truncate(limit);
        first
    }

    /// Returns the first `limit` members (as indices) of the score walk from `partition`:
    /// its owner, then every other member by its score for the partition, highest first
    /// (ties: the lower member index, i.e. the lower node id).
    ///
    /// Ranking the non-owners by score rather than walking the ring clockwise is what keeps
    /// a membership change's movement near the minimum: a member enters a preference list
    /// only by outscoring one already there, so a joining node takes its fair share of
    /// replica slots and nobody else's list changes. A clockwise walk would also pull the
    /// newcomer into the lists of the partitions just before each one it came to own.
    fn score_walk(&self, partition: PartitionId, limit: usize) -> Vec<usize> {
        let owner = self.owners[self.slot(partition)];
        let limit = limit.min(self.members.len());
        if limit == 0 {
            return Vec::new();
        }
        let mut others: Vec<(Reverse<u64>, usize)> = (0..self.members.len())
            .filter(|&i| i != owner)
            .map(|i| (Reverse(partition_score(partition.0, &self.members[i])), i))
            .collect();
        let wanted = limit - 1;
        if wanted < others.len() {
            // Only the best `wanted` need ordering; the walk is asked for a preference
            // list (a few members) far more often than for every member.
            if wanted > 0 {
                others.select_nth_unstable(wanted - 1);
            }
            others.truncate(wanted);
        }
        others.sort_unstable();
        let mut chosen = Vec::with_capacity(limit);
        chosen.push(owner);
        chosen.extend(others.into_iter().map(|(_, i)| i));
        chosen
    }
}

#[cfg(test)]
// Panicking on an unexpected `Err` is how a unit test fails.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::DEFAULT_PARTITIONS;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().copied().map(NodeId::from).collect()
    }

    fn ring(names: &[&str], partitions: u32) -> Ring {
        Ring::new(ids(names), partitions).unwrap()
    }

    #[test]
    fn rejects_partition_counts_that_are_not_powers_of_two_up_to_65536() {
        for bad in [0, 3, 12, 255, 65_535, 65_537, 1 << 17, u32::MAX] {
            assert_eq!(
                Ring::new(ids(&["a"]), bad),
                Err(RingError::InvalidPartitionCount(bad)),
            );
        }
        for good in [1, 2, 64, DEFAULT_PARTITIONS, MAX_PARTITIONS] {
            assert_eq!(ring(&["a"], good).partition_count(), good);
        }
    }

    #[test]
    fn rejects_an_empty_member_set() {
        assert_eq!(Ring::new(ids(&[]), 256), Err(RingError::NoMembers));
    }

    #[test]
    fn rejects_a_repeated_member() {
        assert_eq!(
            Ring::new(ids(&["b", "a", "c", "b"]), 256),
            Err(RingError::DuplicateMember(NodeId::new("b"))),
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            RingError::InvalidPartitionCount(3).to_string(),
            "partition count 3 is not a power of two between 1 and 65536"
        );
        assert_eq!(
            RingError::DuplicateMember(NodeId::new("n1")).to_string(),
            "node id \"n1\" is listed more than once"
        );
    }

    #[test]
    fn members_are_sorted_and_ownership_ignores_input_order() {
        let forward = ring(&["a", "b", "c", "d", "e"], 256);
        let shuffled = ring(&["d", "b", "e", "a", "c"], 256);
        assert_eq!(
            forward.members(),
            ids(&["a", "b", "c", "d", "e"]).as_slice()
        );
        assert_eq!(forward, shuffled);
    }

    #[test]
    fn single_node_owns_everything_and_is_every_list() {
        let ring = ring(&["solo"], 64);
        let solo = NodeId::new("solo");
        assert!(ring.partitions().all(|p| ring.owner(p) == &solo));
        assert_eq!(ring.preference_list(b"b", b"k", 3), vec![solo.clone()]);
        assert_eq!(ring.walk(PartitionId(17)), vec![solo.clone()]);
        assert_eq!(ring.ownership(), BTreeMap::from([(solo, 64)]));
    }

    #[test]
    fn preference_list_is_distinct_owner_first_and_min_n_members_long() {
        let ring = ring(&["a", "b", "c", "d", "e"], 256);
        for partition in ring.partitions() {
            for n in 0..=7 {
                let list = ring.preference_list_for(partition, n);
                assert_eq!(list.len(), n.min(5));
                if n > 0 {
                    assert_eq!(&list[0], ring.owner(partition));
                }
                let mut distinct = list.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), list.len());
            }
        }
    }

    #[test]
    fn preference_list_is_the_owner_then_the_others_by_score() {
        let ring = ring(&["a", "b", "c", "d", "e"], 256);
        for partition in ring.partitions() {
            let owner = ring.owner(partition).clone();
            // Built by hand: every other member, best score first.
            let mut others: Vec<NodeId> = ring
                .members()
                .iter()
                .filter(|&m| *m != owner)
                .cloned()
                .collect();
            others.sort_by_key(|m| std::cmp::Reverse(partition_score(partition.0, m)));
            let mut expected = vec![owner];
            expected.extend(others);
            assert_eq!(ring.walk(partition), expected);
            assert_eq!(ring.preference_list_for(partition, 3), expected[..3]);
        }
    }

    #[test]
    fn walk_holds_every_member_once_and_starts_with_the_preference_list() {
        let ring = ring(&["a", "b", "c", "d", "e", "f", "g"], 256);
        for partition in ring.partitions() {
            let walk = ring.walk(partition);
            let mut sorted = walk.clone();
            sorted.sort();
            assert_eq!(sorted, ring.members());
            assert_eq!(walk[..3], ring.preference_list_for(partition, 3));
        }
    }

    #[test]
    fn members_without_partitions_still_appear_in_walks_and_ownership() {
        // Two partitions, five members: three own nothing.
        let ring = ring(&["a", "b", "c", "d", "e"], 2);
        let ownership = ring.ownership();
        assert_eq!(ownership.len(), 5);
        assert_eq!(ownership.values().sum::<u32>(), 2);
        assert_eq!(ownership.values().filter(|&&c| c == 0).count(), 3);
        for partition in ring.partitions() {
            let walk = ring.walk(partition);
            assert_eq!(walk.len(), 5);
            assert_eq!(&walk[0], ring.owner(partition));
            assert_eq!(ring.preference_list_for(partition, 3), walk[..3]);
        }
    }

    #[test]
    fn partition_is_the_top_bits_of_the_hash() {
        let ring = ring(&["a"], 256);
        assert_eq!(ring.partition_of(0), PartitionId(0));
        assert_eq!(ring.partition_of(u64::MAX), PartitionId(255));
        assert_eq!(ring.partition_of(0x0100_0000_0000_0000), PartitionId(1));
        assert_eq!(ring.partition_of(0x00ff_ffff_ffff_ffff), PartitionId(0));
        assert_eq!(ring.partition_of(0xab00_0000_0000_0001), PartitionId(0xab));

        let whole = self::ring(&["a"], 1);
        assert_eq!(whole.partition_of(u64::MAX), PartitionId(0));
        let widest = self::ring(&["a"], MAX_PARTITIONS);
        assert_eq!(widest.partition_of(u64::MAX), PartitionId(65_535));
    }

    #[test]
    fn partition_for_hashes_bucket_and_key() {
        let ring = ring(&["a", "b", "c"], 256);
        let partition = ring.partition_for(b"users", b"alice");
        assert_eq!(partition, ring.partition_of(key_hash(b"users", b"alice")));
        assert_eq!(
            ring.preference_list(b"users", b"alice", 2),
            ring.preference_list_for(partition, 2)
        );
    }

    #[test]
    #[should_panic(expected = "outside a ring of 256 partitions")]
    fn owner_of_a_foreign_partition_is_a_caller_bug() {
        ring(&["a", "b"], 256).owner(PartitionId(256));
    }
}
