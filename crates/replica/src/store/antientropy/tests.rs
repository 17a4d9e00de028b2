//! Tests of the store's anti-entropy trees: the incremental hash against a computation
//! from scratch, the build at open, the queries, and `remove_if_unchanged`.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::object::Value;
use crate::store::{data_key, StoreOptions};
use crate::version::VersionVector;

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn text(s: &str) -> Value {
    Value::data("text/plain", s.as_bytes().to_vec())
}

/// Every tree of a store, for comparisons.
fn snapshot(store: &Store) -> Vec<PartitionTrees> {
    store
        .aae
        .partitions
        .iter()
        .map(|p| p.lock().unwrap().clone())
        .collect()
}

/// The trees computed from scratch from the records.
fn from_scratch(store: &Store) -> Vec<PartitionTrees> {
    let bits = store.aae_partition_bits();
    let mut partitions: Vec<PartitionTrees> = (0..1 << bits).map(|_| BTreeMap::new()).collect();
    let data = store.cf(CF_DATA).unwrap();
    let mut total_order = rocksdb::ReadOptions::default();
    total_order.set_total_order_seek(true);
    for entry in store
        .db
        .iterator_cf_opt(data, total_order, IteratorMode::Start)
    {
        let (data_key, record) = entry.unwrap();
        let (_, bucket, _, key) = split_data_key(&data_key).unwrap();
        let hash = key_hash(bucket, key);
        let tree = partitions[partition_of(hash, bits) as usize]
            .entry(bucket.to_vec())
            .or_insert_with(Tree::new);
        tree.segments[usize::from(segment_of(hash))] ^= leaf(key, record_digest(&record));
        tree.keys += 1;
    }
    partitions
}

/// Random coordinated writes, deletes and merges over a few buckets and keys.
fn random_writes(store: &Store, seed: u64, count: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..count {
        let bucket = [b"a".as_slice(), b"bb", b"ccc"][rng.random_range(0..3)];
        let key = format!("k{}", rng.random_range(0..300));
        match rng.random_range(0..4) {
            0 => {
                let context = store
                    .get(bucket, key.as_bytes())
                    .unwrap()
                    .map(|o| o.clock().clone())
                    .unwrap_or_default();
                store
                    .coordinate(bucket, key.as_bytes(), &context, Value::Tombstone)
                    .unwrap();
            }
            1 => {
                // A version minted elsewhere.
                let mut other = VersionedObject::new();
                let actor = crate::version::ActorId(rng.random_range(1..4));
                other
                    .update(actor, &VersionVector::new(), text(&format!("m{i}")))
                    .unwrap();
                store.merge(bucket, key.as_bytes(), &other).unwrap();
            }
            2 => {
                if let Some(current) = store.get(bucket, key.as_bytes()).unwrap() {
                    store
                        .remove_if_unchanged(bucket, key.as_bytes(), &current)
                        .unwrap();
                }
            }
            _ => {
                store
                    .coordinate(
                        bucket,
                        key.as_bytes(),
                        &VersionVector::new(),
                        text(&format!("v{i}")),
                    )
                    .unwrap();
            }
        }
    }
}

#[test]
fn key_hash_matches_the_ring_golden_vectors() {
    // The vectors of quorumkv-ring's `key_hash_is_pinned`: the same on-disk contract.
    let long_key: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let vectors: [(&[u8], &[u8], u64); 7] = [
        (b"", b"", 0x48b2_c926_16fc_193d),
        (b"users", b"", 0x4907_5ba3_1963_90e9),
        (b"users", b"alice", 0x0808_27f6_6a6b_8a91),
        (b"ab", b"c", 0xe68a_44f2_8602_d7e0),
        (b"a", b"bc", 0xcca7_be0e_983a_00c7),
        (b"bin", b"\xff\xfe\x00\x80", 0xf4ab_9b83_e65c_3c52),
        (b"logs", &long_key, 0x3b12_7770_ca0e_2fd1),
    ];
    for (bucket, key, expected) in vectors {
        assert_eq!(key_hash(bucket, key), expected);
    }
    // The ring's golden placement: ("users", "alice") is in partition 8 of 256.
    assert_eq!(partition_of(key_hash(b"users", b"alice"), 8), 8);
    assert_eq!(partition_of(u64::MAX, 0), 0);
    assert_eq!(partition_of(u64::MAX, 16), 0xffff);
}

#[test]
fn a_partition_is_a_run_of_whole_shards() {
    assert_eq!(shards_of(0, 8), Some(0..=0xff));
    assert_eq!(shards_of(0x12, 8), Some(0x1200..=0x12ff));
    assert_eq!(shards_of(255, 8), Some(0xff00..=0xffff));
    assert_eq!(shards_of(256, 8), None);
    assert_eq!(shards_of(0, 0), Some(0..=0xffff));
    assert_eq!(shards_of(0xabcd, 16), Some(0xabcd..=0xabcd));
    // Every key's shard lies in its partition's run, whatever the partition bits.
    for (bucket, key) in [(&b"users"[..], &b"alice"[..]), (b"b", b"k"), (b"", b"")] {
        let hash = key_hash(bucket, key);
        for bits in [0, 1, 4, 8, 12, 16] {
            let shards = shards_of(partition_of(hash, bits), bits).unwrap();
            assert!(shards.contains(&shard_of(hash)), "{bits} bits");
        }
    }
}

#[test]
fn incremental_trees_equal_a_rebuild_from_scratch() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    random_writes(&store, 7, 3000);
    let incremental = snapshot(&store);
    assert_eq!(incremental, from_scratch(&store));
    assert!(incremental.iter().any(|p| !p.is_empty()));
}

#[test]
fn trees_are_identical_after_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    random_writes(&store, 11, 2000);
    let before = snapshot(&store);
    let roots: Vec<_> = (0..256).map(|p| store.aae_roots(p)).collect();
    drop(store);

    let store = open(dir.path());
    assert_eq!(snapshot(&store), before);
    let after: Vec<_> = (0..256).map(|p| store.aae_roots(p)).collect();
    assert_eq!(after, roots);
    drop(store);

    // A record under a key its hash does not give (no write of the store makes one) is
    // left out of the trees rather than filed in the wrong one.
    {
        let store = open(dir.path());
        let mut misfiled = data_key(b"a", b"k").unwrap();
        misfiled[0] ^= 0x80;
        store
            .db
            .put_cf(store.cf(CF_DATA).unwrap(), misfiled, b"x")
            .unwrap();
    }
    let store = open(dir.path());
    assert_eq!(snapshot(&store), before);
}

#[test]
fn a_store_of_another_partition_count_rebuilds_its_trees() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    random_writes(&store, 17, 500);
    drop(store);
    let options = StoreOptions {
        partition_bits: 4,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.aae_partition_bits(), 4);
    assert_eq!(snapshot(&store), from_scratch(&store));
    assert!((16..256).all(|p| store.aae_roots(p).is_empty()));
    // The keys of a wider partition are found as before.
    let all_segments: Vec<u8> = (0..=u8::MAX).collect();
    let listed: usize = (0..16)
        .flat_map(|p| store.aae_roots(p).into_iter().map(move |(b, _)| (p, b)))
        .map(|(p, bucket)| store.aae_keys(p, &bucket, &all_segments).unwrap().len())
        .sum();
    let counted: u64 = snapshot(&store)
        .iter()
        .flat_map(|trees| trees.values().map(|tree| tree.keys))
        .sum();
    assert_eq!(listed as u64, counted);
    assert!(counted > 0);

    let too_many = StoreOptions {
        partition_bits: 17,
        ..StoreOptions::default()
    };
    drop(store);
    assert!(matches!(
        Store::open(dir.path(), too_many),
        Err(StoreError::InvalidOptions(_))
    ));
}

#[test]
fn roots_segments_and_keys_describe_the_data() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    let written = store
        .coordinate(b"users", b"alice", &VersionVector::new(), text("hi"))
        .unwrap();
    let hash = key_hash(b"users", b"alice");
    let (partition, segment) = (partition_of(hash, 8), segment_of(hash));
    let digest = record_digest(&encode_record(&written));

    let roots = store.aae_roots(partition);
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].0, b"users".to_vec());
    let segments = store.aae_segments(partition, b"users");
    assert_eq!(segments.len(), AAE_SEGMENTS);
    assert_eq!(segments[usize::from(segment)], leaf(b"alice", digest));
    assert_eq!(
        store
            .aae_keys(partition, b"users", &[segment, segment, segment ^ 1])
            .unwrap(),
        vec![(b"alice".to_vec(), digest)]
    );
    assert_eq!(
        store.aae_segments(partition, b"other"),
        vec![0; AAE_SEGMENTS]
    );
    assert!(store.aae_roots(1 << 20).is_empty());

    // An unchanged merge writes nothing and leaves the root alone.
    store.merge(b"users", b"alice", &written).unwrap();
    assert_eq!(store.aae_roots(partition), roots);
}

#[test]
fn remove_if_unchanged_removes_only_the_expected_state() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    let first = store
        .coordinate(b"b", b"k", &VersionVector::new(), Value::Tombstone)
        .unwrap();
    let second = store
        .coordinate(b"b", b"k", &VersionVector::new(), text("later"))
        .unwrap();
    assert!(!store.remove_if_unchanged(b"b", b"k", &first).unwrap());
    assert_eq!(store.get(b"b", b"k").unwrap(), Some(second.clone()));
    assert!(!store.remove_if_unchanged(b"b", b"absent", &first).unwrap());

    assert!(store.remove_if_unchanged(b"b", b"k", &second).unwrap());
    assert_eq!(store.get(b"b", b"k").unwrap(), None);
    let partition = partition_of(key_hash(b"b", b"k"), 8);
    assert!(store.aae_roots(partition).is_empty());
    assert_eq!(snapshot(&store), from_scratch(&store));
    assert!(!store.remove_if_unchanged(b"b", b"k", &second).unwrap());
}

#[test]
fn listing_segments_by_seeks_and_by_scans_finds_the_same_keys() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    random_writes(&store, 19, 2000);
    let all_segments: Vec<u8> = (0..=u8::MAX).collect();
    let mut trees_seen = 0;
    for partition in 0..256 {
        for (bucket, _) in store.aae_roots(partition) {
            trees_seen += 1;
            // More than `SEEKS_PER_SHARD` segments: one scan per shard.
            let mut scanned = store.aae_keys(partition, &bucket, &all_segments).unwrap();
            // One segment at a time: seeks.
            let mut sought = Vec::new();
            for segment in 0..=u8::MAX {
                let keys = store.aae_keys(partition, &bucket, &[segment]).unwrap();
                for (key, _) in &keys {
                    assert_eq!(segment_of(key_hash(&bucket, key)), segment);
                }
                sought.extend(keys);
            }
            scanned.sort();
            sought.sort();
            assert_eq!(scanned, sought);
            // And they are the keys the tree holds, with the digests of their records.
            let tree_keys = store.aae.lock(partition).unwrap()[&bucket].keys;
            assert_eq!(scanned.len() as u64, tree_keys);
            for (key, digest) in &scanned {
                let record = store.raw_get(&bucket, key).unwrap().unwrap();
                assert_eq!(*digest, record_digest(&record));
            }
        }
    }
    assert!(trees_seen > 100, "{trees_seen} trees");
    assert!(store.aae_keys(256, b"a", &[0]).unwrap().is_empty());
}

/// The cost of building the trees at open; `QUORUMKV_AAE_REBUILD_KEYS` scales it
/// (default 10,000 keys).
#[test]
fn tree_build_time_at_open_is_reported() {
    let keys: usize = std::env::var("QUORUMKV_AAE_REBUILD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::TempDir::new().unwrap();
    let store = open(dir.path());
    for i in 0..keys {
        store
            .coordinate(
                b"bench",
                format!("key-{i:08}").as_bytes(),
                &VersionVector::new(),
                Value::data("application/octet-stream", vec![0u8; 100]),
            )
            .unwrap();
    }
    store.flush().unwrap();
    let before = snapshot(&store);
    drop(store);

    let started = Instant::now();
    let store = open(dir.path());
    let open = started.elapsed();
    assert_eq!(snapshot(&store), before);
    let started = Instant::now();
    let trees = HashTrees::open(&store.db, 8).unwrap();
    let build = started.elapsed();
    assert_eq!(trees.partitions.len(), 256);
    eprintln!(
        "anti-entropy at start, {keys} keys: open {open:?}, of which building the trees {build:?}"
    );
}
