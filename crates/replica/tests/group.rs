//! Groups of writes ([`Store::write_group`]) against a real database: in order per key,
//! independent across keys, and equal to the same writes made one by one.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use quorumkv_replica::{
    encode_record, GroupWrite, Store, StoreError, StoreOptions, SyncPolicy, VersionVector, Wait,
    WouldBlock,
};
use tempfile::TempDir;

mod support;
use support::{open, text, values};

const BUCKET: &[u8] = b"users";

/// (partition, [(bucket, root)]) for every partition that holds keys.
type Roots = Vec<(u32, Vec<(Vec<u8>, u64)>)>;

/// Every tree root of the store, partition by partition.
fn roots(store: &Store) -> Roots {
    (0..1u32 << store.aae_partition_bits())
        .map(|p| (p, store.aae_roots(p)))
        .filter(|(_, roots)| !roots.is_empty())
        .collect()
}

#[test]
fn writes_of_one_key_apply_in_group_order() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let empty = VersionVector::new();
    let (a, b) = (text("a"), text("b"));
    let results = store
        .write_group(
            &[
                GroupWrite::Coordinate {
                    bucket: BUCKET,
                    key: b"k",
                    context: &empty,
                    value: &a,
                },
                GroupWrite::Coordinate {
                    bucket: BUCKET,
                    key: b"k",
                    context: &empty,
                    value: &b,
                },
            ],
            Wait::Block,
        )
        .unwrap();
    let first = results[0].as_ref().unwrap();
    let second = results[1].as_ref().unwrap();
    // The second mint saw the first: a fresh dot, and both blind writes kept as siblings.
    assert_eq!(values(first), [b"a"]);
    assert_eq!(values(second), [&b"a"[..], b"b"]);
    assert_eq!(second.clock().get(store.actor()), 2);
    assert_eq!(store.get(BUCKET, b"k").unwrap().as_ref(), Some(second));

    // A write whose context covers both replaces them, in the same group as a merge of
    // the older state, which changes nothing.
    let context = second.clock().clone();
    let c = text("c");
    let results = store
        .write_group(
            &[
                GroupWrite::Coordinate {
                    bucket: BUCKET,
                    key: b"k",
                    context: &context,
                    value: &c,
                },
                GroupWrite::Merge {
                    bucket: BUCKET,
                    key: b"k",
                    object: first,
                },
            ],
            Wait::Never,
        )
        .unwrap();
    let last = results[1].as_ref().unwrap();
    assert_eq!(values(last), [b"c"]);
    assert_eq!(store.get(BUCKET, b"k").unwrap().as_ref(), Some(last));
}

#[test]
fn a_group_equals_its_writes_one_by_one() {
    let (minter_dir, grouped_dir, single_dir) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    let minter = open(minter_dir.path());
    let grouped = open(grouped_dir.path());
    let single = open(single_dir.path());
    // States minted elsewhere, several per key, some keys repeated.
    let mut states = Vec::new();
    for round in 0..3 {
        for key in 0..40u32 {
            let key = format!("key{}", key % (13 + round * 7)).into_bytes();
            let object = minter
                .coordinate(
                    BUCKET,
                    &key,
                    &VersionVector::new(),
                    text(&format!("{round}")),
                )
                .unwrap();
            states.push((key, object));
        }
    }
    let writes: Vec<GroupWrite<'_>> = states
        .iter()
        .map(|(key, object)| GroupWrite::Merge {
            bucket: BUCKET,
            key,
            object,
        })
        .collect();
    for chunk in writes.chunks(17) {
        for result in grouped.write_group(chunk, Wait::Block).unwrap() {
            result.unwrap();
        }
    }
    for (key, object) in &states {
        single.merge(BUCKET, key, object).unwrap();
    }
    for (key, _) in &states {
        assert_eq!(
            grouped.raw_get(BUCKET, key).unwrap(),
            single.raw_get(BUCKET, key).unwrap()
        );
    }
    // The hash trees agree, and a reopened store builds the same trees from its digests.
    assert_eq!(roots(&grouped), roots(&single));
    let before = roots(&grouped);
    drop(grouped);
    assert_eq!(roots(&open(grouped_dir.path())), before);
}

#[test]
fn a_failed_write_fails_alone() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let good = store
        .coordinate(BUCKET, b"victim", &VersionVector::new(), text("v1"))
        .unwrap();
    let mut damaged = encode_record(&good);
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    store.raw_put(BUCKET, b"victim", &damaged).unwrap();
    let too_long = [b'b'; 256];
    let results = store
        .write_group(
            &[
                GroupWrite::Merge {
                    bucket: BUCKET,
                    key: b"victim",
                    object: &good,
                },
                GroupWrite::Merge {
                    bucket: BUCKET,
                    key: b"bystander",
                    object: &good,
                },
                GroupWrite::Merge {
                    bucket: &too_long,
                    key: b"k",
                    object: &good,
                },
            ],
            Wait::Block,
        )
        .unwrap();
    assert!(matches!(results[0], Err(StoreError::Corrupt { .. })));
    assert_eq!(values(results[1].as_ref().unwrap()), [b"v1"]);
    assert!(matches!(results[2], Err(StoreError::BucketTooLong(256))));
    // The corrupt record is left for repair, the other key is stored.
    assert_eq!(store.raw_get(BUCKET, b"victim").unwrap(), Some(damaged));
    assert_eq!(store.get(BUCKET, b"bystander").unwrap(), Some(good));
    assert_eq!(store.corrupt_records(), 1);
}

#[test]
fn a_group_that_must_fsync_never_runs_without_waiting() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            sync: SyncPolicy::Always,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let empty = VersionVector::new();
    let value = text("v");
    let write = GroupWrite::Coordinate {
        bucket: BUCKET,
        key: b"k",
        context: &empty,
        value: &value,
    };
    assert_eq!(
        store.write_group(&[write], Wait::Never).err(),
        Some(WouldBlock)
    );
    assert_eq!(store.get(BUCKET, b"k").unwrap(), None);
    assert!(store.write_group(&[write], Wait::Block).unwrap()[0].is_ok());
}
