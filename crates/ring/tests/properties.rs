//! Property tests: what holds for every member set, not just the ones written down.
//!
//! Distinctness, the walk and the load cap are guarantees, so they run on fresh random
//! cases each time. Data movement on a membership change is statistical; its bounds were
//! set just above the worst seen over tens of thousands of random changes, and those tests
//! run from a fixed seed so that the suite never flakes.

// Panicking on an unexpected `Err` is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use quorumkv_ring::{NodeId, PartitionId, Ring, DEFAULT_PARTITIONS};
use xxhash_rust::xxh3::xxh3_64;

/// A set of `size` distinct random node ids.
fn node_ids(size: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<NodeId>> {
    prop::collection::btree_set("[a-z0-9-]{1,12}", size)
        .prop_map(|ids| ids.into_iter().map(NodeId::from).collect())
}

/// The documented ownership score: xxh3-64 of the partition (u32, big-endian) and node id.
fn score(partition: PartitionId, node: &NodeId) -> u64 {
    let mut bytes = partition.0.to_be_bytes().to_vec();
    bytes.extend_from_slice(node.as_str().as_bytes());
    xxh3_64(&bytes)
}

/// The documented load cap: `floor(1.25 * P / M)`, at least `ceil(P / M)`.
fn load_cap(partitions: u32, members: usize) -> u32 {
    let members = members as u32;
    (partitions * 5 / (members * 4)).max(partitions.div_ceil(members))
}

/// How many partitions have a different owner in `after` than in `before`.
fn moved(before: &Ring, after: &Ring) -> u32 {
    before
        .partitions()
        .filter(|&p| before.owner(p) != after.owner(p))
        .count() as u32
}

/// Config for the statistical movement properties: fixed seed, no regression files.
fn movement_config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        rng_seed: RngSeed::Fixed(0x7175_6f72_756d_6b76),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Observed worst excess of moved partitions over the fair share `1/(M+1)`, for a join or
/// a leave, over ~140,000 random joins and leaves with 3 to 16 nodes and 256 partitions:
/// 0.0664 (17 of 256, going from 3 to 4 nodes). The excess is the spread of the changed
/// node's own share (a binomial around `P/(M+1)`, which the load cap clips at 1.25 times
/// it), plus the few partitions the cap shuffles between the other nodes.
const MOVE_MARGIN: f64 = 0.07;

/// Observed worst number of partitions moving between nodes present before and after a
/// join (not to the new node): 12 of 256 (0.047), against a mean of 1.2.
const BYSTANDER_MARGIN: f64 = 0.055;

/// Observed worst number of partitions moving on a leave beyond the ones the leaving node
/// owned: 11 of 256 (0.043).
const LEAVE_MARGIN: f64 = 0.05;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Always: a preference list holds `min(n, members)` distinct nodes, owner first.
    #[test]
    fn preference_lists_are_distinct_nodes(
        members in node_ids(1..=16),
        n in 1usize..=5,
        bucket in prop::collection::vec(any::<u8>(), 0..16),
        key in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let ring = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let list = ring.preference_list(&bucket, &key, n);
        prop_assert_eq!(list.len(), n.min(members.len()));
        prop_assert_eq!(&list[0], ring.owner(ring.partition_for(&bucket, &key)));
        let distinct: BTreeSet<&NodeId> = list.iter().collect();
        prop_assert_eq!(distinct.len(), list.len());
    }

    /// Always: the walk is every member once, and extends the preference list.
    #[test]
    fn walk_is_a_permutation_that_extends_the_preference_list(
        members in node_ids(1..=16),
        log2_partitions in 0u32..=8,
        partition in any::<u32>(),
        n in 1usize..=5,
    ) {
        let ring = Ring::new(members.clone(), 1 << log2_partitions).unwrap();
        let partition = PartitionId(partition % ring.partition_count());
        let walk = ring.walk(partition);
        let mut sorted = walk.clone();
        sorted.sort();
        prop_assert_eq!(sorted.as_slice(), ring.members());
        let list = ring.preference_list_for(partition, n);
        prop_assert_eq!(&walk[..list.len()], list.as_slice());
    }

    /// Always: no node owns more than 1.25 times its fair share `P / M`.
    #[test]
    fn no_node_owns_more_than_a_quarter_over_its_fair_share(members in node_ids(3..=16)) {
        let ring = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let ownership = ring.ownership();
        prop_assert_eq!(ownership.len(), members.len());
        prop_assert_eq!(ownership.values().sum::<u32>(), DEFAULT_PARTITIONS);
        let most = *ownership.values().max().unwrap();
        // most <= 1.25 * P / M, in integers.
        prop_assert!(
            most * 4 * members.len() as u32 <= 5 * DEFAULT_PARTITIONS,
            "a node owns {most} of {DEFAULT_PARTITIONS} partitions among {} nodes",
            members.len(),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Always: a partition sits on a lower-scored node only because every node it scores
    /// higher is full with partitions that node scores higher still. This is what makes
    /// ownership the stable matching the crate documents, and why movement stays small:
    /// only the load cap ever pushes a partition off its favourite node.
    #[test]
    fn a_partition_leaves_its_favourite_node_only_for_the_load_cap(
        members in node_ids(1..=12),
        log2_partitions in 0u32..=8,
    ) {
        let partitions = 1 << log2_partitions;
        let ring = Ring::new(members.clone(), partitions).unwrap();
        let cap = load_cap(partitions, members.len());
        let ownership = ring.ownership();
        for partition in ring.partitions() {
            let owner_score = score(partition, ring.owner(partition));
            for node in ring.members() {
                let node_score = score(partition, node);
                if node_score <= owner_score {
                    continue;
                }
                prop_assert_eq!(ownership[node], cap, "{} preferred {}", partition, node);
                for held in ring.partitions().filter(|&p| ring.owner(p) == node) {
                    prop_assert!(
                        (score(held, node), std::cmp::Reverse(held))
                            > (node_score, std::cmp::Reverse(partition)),
                        "{node} holds {held} over {partition}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(movement_config())]

    /// Sometimes-bounded: a join moves about the new node's fair share, and little else.
    #[test]
    fn a_join_moves_about_the_new_nodes_share(
        members in (3usize..=15).prop_flat_map(|m| node_ids(m + 1)),
        pick in any::<prop::sample::Index>(),
    ) {
        let newcomer = members[pick.index(members.len())].clone();
        let before = Ring::new(members.iter().filter(|&n| *n != newcomer).cloned(), DEFAULT_PARTITIONS).unwrap();
        let after = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let p = f64::from(DEFAULT_PARTITIONS);

        let fair = p / members.len() as f64;
        let moved = f64::from(moved(&before, &after));
        prop_assert!(moved <= fair + MOVE_MARGIN * p, "moved {moved}, fair share {fair:.1}");

        let bystanders = before
            .partitions()
            .filter(|&q| before.owner(q) != after.owner(q) && *after.owner(q) != newcomer)
            .count() as f64;
        prop_assert!(bystanders <= BYSTANDER_MARGIN * p, "{bystanders} moved between old nodes");
    }

    /// Sometimes-bounded: a leave moves the leaving node's partitions and little else.
    #[test]
    fn a_leave_moves_about_the_leaving_nodes_share(
        members in (3usize..=15).prop_flat_map(|m| node_ids(m + 1)),
        pick in any::<prop::sample::Index>(),
    ) {
        let leaver = members[pick.index(members.len())].clone();
        let before = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let after = Ring::new(members.iter().filter(|&n| *n != leaver).cloned(), DEFAULT_PARTITIONS).unwrap();
        let p = f64::from(DEFAULT_PARTITIONS);

        let moved = f64::from(moved(&before, &after));
        let own = f64::from(before.ownership()[&leaver]);
        prop_assert!(moved <= own + LEAVE_MARGIN * p, "moved {moved}, it owned {own}");
        let fair = p / members.len() as f64;
        prop_assert!(moved <= fair + MOVE_MARGIN * p, "moved {moved}, fair share {fair:.1}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Always: with at least n zones, every preference list puts its n replicas in n
    /// distinct zones, and the walk still holds every member once.
    #[test]
    fn with_enough_zones_every_preference_list_spans_distinct_zones(
        members in node_ids(3..=12),
        zone_count in 3usize..=4,
        n in 1usize..=3,
    ) {
        let zoned: Vec<(NodeId, Option<String>)> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), Some(format!("z{}", i % zone_count))))
            .collect();
        let zone_of = |id: &NodeId| zoned.iter().find(|(m, _)| m == id).and_then(|(_, z)| z.clone());
        let ring = Ring::with_zones(zoned.clone(), DEFAULT_PARTITIONS).unwrap();
        for partition in ring.partitions() {
            let list = ring.preference_list_for(partition, n);
            let zones: BTreeSet<Option<String>> = list.iter().map(zone_of).collect();
            prop_assert_eq!(zones.len(), n, "partition {} list {:?}", partition, list);
            let walk = ring.walk(partition);
            prop_assert_eq!(&walk[..n], &list[..]);
            prop_assert_eq!(walk.iter().collect::<BTreeSet<_>>().len(), members.len());
        }
    }

    /// Always: a ring whose members share one zone (or have none) places exactly like a
    /// zone-blind ring, so zones change nothing for clusters that do not use them.
    #[test]
    fn one_zone_places_like_no_zones(members in node_ids(1..=8)) {
        let plain = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let same = Ring::with_zones(members.iter().map(|m| (m.clone(), Some("a".to_string()))), DEFAULT_PARTITIONS).unwrap();
        for partition in plain.partitions() {
            prop_assert_eq!(plain.walk(partition), same.walk(partition));
        }
    }
}

/// How many (partition, replica) slots of `n`-replica preference lists hold a node in
/// `after` that they did not hold in `before`.
fn slots_moved(before: &Ring, after: &Ring, n: usize) -> u32 {
    before
        .partitions()
        .map(|p| {
            let was = before.preference_list_for(p, n);
            after
                .preference_list_for(p, n)
                .iter()
                .filter(|node| !was.contains(node))
                .count() as u32
        })
        .sum()
}

/// Observed worst excess of replica slots moved by a join over the minimum, `1/(M+1)` of
/// them, with n = 3 and 256 partitions, over the 1,024 seeded joins (3 to 15 nodes) of
/// the property below: 0.0273 of all slots (5 -> 6 nodes), against a mean of 0.0003. It is
/// the spread of the newcomer's rendezvous share, which no load cap clips for replicas
/// after the first; nothing moves between the other nodes.
const JOIN_SLOT_MARGIN: f64 = 0.03;

/// Observed worst number of replica slots moving on a leave beyond those the leaving
/// node held, over the 1,024 seeded leaves below: 2 of 768 (0.0026); they follow primary
/// owners that the load cap shuffles.
const LEAVE_SLOT_MARGIN: f64 = 0.005;

proptest! {
    #![proptest_config(movement_config())]

    /// Sometimes-bounded: a join takes about its fair share of replica slots, 3 per
    /// partition over the new member count, and nothing else moves.
    #[test]
    fn a_join_moves_about_its_share_of_replica_slots(
        members in (3usize..=15).prop_flat_map(|m| node_ids(m + 1)),
        pick in any::<prop::sample::Index>(),
    ) {
        let newcomer = members[pick.index(members.len())].clone();
        let before = Ring::new(members.iter().filter(|&n| *n != newcomer).cloned(), DEFAULT_PARTITIONS).unwrap();
        let after = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let slots = 3.0 * f64::from(DEFAULT_PARTITIONS);
        let minimum = slots / members.len() as f64;
        let moved = f64::from(slots_moved(&before, &after, 3));
        prop_assert!(moved <= minimum + JOIN_SLOT_MARGIN * slots, "moved {moved}, minimum {minimum:.1}");
    }
}

proptest! {
    #![proptest_config(movement_config())]

    /// Sometimes-bounded: a leave hands over the replica slots the leaving node held, and
    /// little else moves.
    #[test]
    fn a_leave_moves_about_the_replica_slots_it_held(
        members in (3usize..=15).prop_flat_map(|m| node_ids(m + 1)),
        pick in any::<prop::sample::Index>(),
    ) {
        let leaver = members[pick.index(members.len())].clone();
        let before = Ring::new(members.clone(), DEFAULT_PARTITIONS).unwrap();
        let after = Ring::new(members.iter().filter(|&n| *n != leaver).cloned(), DEFAULT_PARTITIONS).unwrap();
        let slots = 3.0 * f64::from(DEFAULT_PARTITIONS);
        let held = before
            .partitions()
            .filter(|&p| before.preference_list_for(p, 3).contains(&leaver))
            .count() as f64;
        let moved = f64::from(slots_moved(&before, &after, 3));
        prop_assert!(moved >= held, "moved {moved}, it held {held}");
        prop_assert!(moved <= held + LEAVE_SLOT_MARGIN * slots, "moved {moved}, it held {held}");
    }
}
