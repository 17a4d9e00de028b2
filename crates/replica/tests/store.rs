//! The RocksDB store against a real database in a temporary directory.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;
use std::sync::Arc;

use quorumkv_replica::{
    encode_record, ActorId, CodecError, Dot, GroupWrite, Sibling, Store, StoreError, StoreOptions,
    SyncPolicy, Value, VersionError, VersionVector, VersionedObject, Wait,
};
use tempfile::TempDir;

mod support;
use support::{open, text, values};

const BUCKET: &[u8] = b"users";

#[test]
fn coordinate_then_get_round_trips() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    assert_eq!(store.get(BUCKET, b"alice").unwrap(), None);

    let written = store
        .coordinate(BUCKET, b"alice", &VersionVector::new(), text("v1"))
        .unwrap();
    assert_eq!(
        written.siblings()[0].dot,
        Dot {
            actor: store.actor(),
            counter: 1
        }
    );
    assert_eq!(
        store.get(BUCKET, b"alice").unwrap().as_ref(),
        Some(&written)
    );

    // A write with the context of the read replaces the version it saw.
    let replaced = store
        .coordinate(BUCKET, b"alice", written.clock(), text("v2"))
        .unwrap();
    assert_eq!(values(&replaced), vec![b"v2".as_slice()]);
    assert_eq!(store.get(BUCKET, b"alice").unwrap(), Some(replaced));

    // Keys and buckets are independent.
    assert_eq!(store.get(BUCKET, b"bob").unwrap(), None);
    assert_eq!(store.get(b"other", b"alice").unwrap(), None);
}

#[test]
fn concurrent_writes_at_two_replicas_converge_by_merge() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a, b) = (open(dir_a.path()), open(dir_b.path()));

    let v1 = a
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("v1"))
        .unwrap();
    let at_b = b.merge(BUCKET, b"k", &v1).unwrap();
    assert_eq!(at_b, v1);

    // Two clients that both read v1 write at different replicas.
    let v2 = b.coordinate(BUCKET, b"k", v1.clock(), text("v2")).unwrap();
    let v3 = a.coordinate(BUCKET, b"k", v1.clock(), text("v3")).unwrap();
    let at_a = a.merge(BUCKET, b"k", &v2).unwrap();
    let at_b = b.merge(BUCKET, b"k", &v3).unwrap();
    assert_eq!(at_a, at_b);
    assert_eq!(values(&at_a).len(), 2);
    assert_eq!(a.get(BUCKET, b"k").unwrap(), Some(at_a));
}

#[test]
fn merging_nothing_into_a_missing_key_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let merged = store.merge(BUCKET, b"k", &VersionedObject::new()).unwrap();
    assert!(merged.is_empty());
    assert_eq!(store.raw_get(BUCKET, b"k").unwrap(), None);
    assert!(!store.bucket_has_keys(BUCKET).unwrap());
}

#[test]
fn merge_refuses_an_invalid_incoming_object() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    // Same shape as VersionedObject: a sibling its clock does not cover.
    let dot = Dot {
        actor: ActorId(1),
        counter: 1,
    };
    let bytes = postcard::to_stdvec(&(
        VersionVector::new(),
        vec![Sibling {
            dot,
            value: Value::Tombstone,
        }],
    ))
    .unwrap();
    let invalid: VersionedObject = postcard::from_bytes(&bytes).unwrap();

    let err = store.merge(BUCKET, b"k", &invalid).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(VersionError::DotNotCovered(d)) if d == dot));
    assert!(!err.is_corrupt());
    assert_eq!(store.raw_get(BUCKET, b"k").unwrap(), None);
}

#[test]
fn every_open_takes_a_new_actor() {
    let dir = TempDir::new().unwrap();
    let first = open(dir.path()).actor();
    let again = open(dir.path()).actor();
    assert_ne!(first, again, "a clean close and reopen: still a new actor");

    let other = TempDir::new().unwrap();
    assert_ne!(open(other.path()).actor(), first);
}

/// A write that would give the key's clock more entries than `max_clock_entries` is
/// refused and changes nothing; a delete with the same context is accepted, however many
/// entries it brings, because deleting is how a key gets a new clock.
#[test]
fn a_write_past_the_clock_limit_is_refused_and_a_delete_is_not() {
    let dir = TempDir::new().unwrap();
    let options = StoreOptions {
        max_clock_entries: 2,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("one"))
        .unwrap();
    // Another replica's actor: with this store's own, two entries.
    let other: VersionVector = [(ActorId(1), 1)].into_iter().collect();
    let two = store.coordinate(BUCKET, b"k", &other, text("two")).unwrap();
    assert_eq!(two.clock().len(), 2);

    let third: VersionVector = [(ActorId(2), 1)]
        .into_iter()
        .chain(two.clock().iter())
        .collect();
    let refused = store.coordinate(BUCKET, b"k", &third, text("three"));
    assert!(
        matches!(
            refused,
            Err(StoreError::ClockTooLarge { entries: 3, max: 2 })
        ),
        "{refused:?}"
    );
    assert_eq!(store.get(BUCKET, b"k").unwrap(), Some(two));

    let deleted = store
        .coordinate(BUCKET, b"k", &third, Value::Tombstone)
        .unwrap();
    assert!(deleted.is_deleted());
    assert_eq!(deleted.clock().len(), 3);
}

/// A context naming a dot of this store's actor that it never minted is refused, for a
/// write and a delete, and changes nothing: minting past it would hand other replicas a
/// clock that covers dots they never saw (their writes would drop as already seen), and
/// a counter near 2^64 would leave the key unwritable. A context naming what was minted,
/// on any key, is taken.
#[test]
fn a_context_ahead_of_the_minting_actor_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let one = store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("one"))
        .unwrap();
    store
        .coordinate(BUCKET, b"other", &VersionVector::new(), text("x"))
        .unwrap();
    let actor = store.actor();
    for claimed in [3, u64::MAX - 1, u64::MAX] {
        let ahead: VersionVector = [(actor, claimed)].into_iter().collect();
        for value in [text("forged"), Value::Tombstone] {
            let refused = store.coordinate(BUCKET, b"k", &ahead, value);
            assert!(
                matches!(
                    refused,
                    Err(StoreError::ContextAhead { claimed: c, minted: 2 }) if c == claimed
                ),
                "{claimed}: {refused:?}"
            );
        }
    }
    assert_eq!(store.get(BUCKET, b"k").unwrap().as_ref(), Some(&one));
    // Counter 2 was minted (for another key): a context naming it is not ahead.
    let at_minted: VersionVector = [(actor, 2)].into_iter().collect();
    let two = store
        .coordinate(BUCKET, b"k", &at_minted, text("two"))
        .unwrap();
    assert_eq!(values(&two), vec![b"two".as_slice()]);
    let written = store
        .coordinate(BUCKET, b"k", two.clock(), text("three"))
        .unwrap();
    assert_eq!(values(&written), vec![b"three".as_slice()]);
}

/// The planted bug of the restore control keeps the actor across opens while its mark is
/// on, and only then: without it the control would prove nothing.
#[test]
fn the_planted_actor_reuse_keeps_the_actor_until_removed() {
    let dir = TempDir::new().unwrap();
    let planted = {
        let store = open(dir.path());
        store.plant_actor_reuse(true).unwrap();
        store.actor()
    };
    assert_eq!(open(dir.path()).actor(), planted);
    let store = open(dir.path());
    assert_eq!(store.actor(), planted);
    store.plant_actor_reuse(false).unwrap();
    drop(store);
    assert_ne!(open(dir.path()).actor(), planted);
}

#[test]
fn a_store_reopened_keeps_its_data_and_mints_under_its_new_actor() {
    let dir = TempDir::new().unwrap();
    let (first, written) = {
        let store = open(dir.path());
        let written = store
            .write_group_unsynced(
                &[GroupWrite::Coordinate {
                    bucket: BUCKET,
                    key: b"k",
                    context: &VersionVector::new(),
                    value: &text("before"),
                }],
                Wait::Block,
            )
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        (store.actor(), written)
    };

    let store = open(dir.path());
    let second = store.actor();
    assert_ne!(second, first);
    assert_eq!(store.get(BUCKET, b"k").unwrap(), Some(written.clone()));
    // The next write of the key gets a dot of the new actor, never `first`'s counter 2.
    let next = store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("after"))
        .unwrap();
    assert_eq!(next.clock().get(first), 1);
    assert_eq!(next.latest_of(second), Some(Dot::new(second, 1)));
    let mut both = values(&next);
    both.sort();
    assert_eq!(both, [b"after".as_slice(), b"before".as_slice()]);
}

/// A data directory restored from a copy taken after a clean close: the writes made
/// after the copy are in other replicas' clocks, and the restored store must not mint
/// their dots again for new values.
#[test]
fn a_restored_copy_never_mints_a_dot_it_minted_before() {
    let parent = TempDir::new().unwrap();
    let live = parent.path().join("live");
    let copy = parent.path().join("copy");
    let peer_dir = TempDir::new().unwrap();
    let peer = open(peer_dir.path());
    {
        let store = open(&live);
        let v1 = store
            .coordinate(BUCKET, b"k", &VersionVector::new(), text("v1"))
            .unwrap();
        peer.merge(BUCKET, b"k", &v1).unwrap();
    }
    copy_dir(&live, &copy);
    {
        let store = open(&live);
        let v2 = store
            .coordinate(BUCKET, b"k", &VersionVector::new(), text("v2"))
            .unwrap();
        peer.merge(BUCKET, b"k", &v2).unwrap();
    }
    std::fs::remove_dir_all(&live).unwrap();
    std::fs::rename(&copy, &live).unwrap();
    let restored = open(&live);
    let v3 = restored
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("v3"))
        .unwrap();
    let at_peer = peer.merge(BUCKET, b"k", &v3).unwrap();
    let mut held = values(&at_peer);
    held.sort();
    assert_eq!(held, [b"v1".as_slice(), b"v2", b"v3"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A key whose tombstone was reaped here, while another replica still holds the
/// tombstone: the next write here must not mint a dot that replica's clock covers.
#[test]
fn a_write_after_a_reap_is_not_covered_by_the_tombstone_elsewhere() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let peer_dir = TempDir::new().unwrap();
    let peer = open(peer_dir.path());
    let v1 = store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("v1"))
        .unwrap();
    let deleted = store
        .coordinate(BUCKET, b"k", v1.clock(), Value::Tombstone)
        .unwrap();
    peer.merge(BUCKET, b"k", &deleted).unwrap();
    // The reap, as the reaper does it: the tombstone goes, its clock with it.
    let page = store.scan_tombstones(None, 1_000).unwrap();
    assert_eq!(page.tombstones.len(), 1);
    assert!(store
        .remove_if_unchanged(BUCKET, b"k", &page.tombstones[0].object)
        .unwrap());
    assert_eq!(store.get(BUCKET, b"k").unwrap(), None);

    let again = store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("v2"))
        .unwrap();
    let at_peer = peer.merge(BUCKET, b"k", &again).unwrap();
    assert_eq!(values(&at_peer), [b"v2".as_slice()]);
}

#[test]
fn wiped_node_gets_a_new_actor_and_its_writes_survive() {
    let parent = TempDir::new().unwrap();
    let path = parent.path().join("node");
    let peer_dir = TempDir::new().unwrap();
    let peer = open(peer_dir.path());

    let old_actor = {
        let store = open(&path);
        let v1 = store
            .coordinate(BUCKET, b"k", &VersionVector::new(), text("old"))
            .unwrap();
        peer.merge(BUCKET, b"k", &v1).unwrap();
        store.actor()
    };
    std::fs::remove_dir_all(&path).unwrap();

    let store = open(&path);
    assert_ne!(store.actor(), old_actor);
    let fresh = store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("new"))
        .unwrap();
    let at_peer = peer.merge(BUCKET, b"k", &fresh).unwrap();
    assert_eq!(values(&at_peer), {
        let mut expected = vec![b"old".as_slice(), b"new".as_slice()];
        // Siblings are in dot order, and the actors are random.
        if store.actor() < old_actor {
            expected.reverse();
        }
        expected
    });
}

#[test]
fn corrupt_record_is_reported_counted_and_never_overwritten() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let good = store
        .coordinate(BUCKET, b"k", &VersionVector::new(), text("v1"))
        .unwrap();
    let mut damaged = encode_record(&good);
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    store.raw_put(BUCKET, b"k", &damaged).unwrap();
    assert_eq!(store.corrupt_records(), 0);

    let err = store.get(BUCKET, b"k").unwrap_err();
    assert!(err.is_corrupt());
    assert!(matches!(
        &err,
        StoreError::Corrupt { key, reason: CodecError::ChecksumMismatch { .. } } if key == "users/k"
    ));
    assert_eq!(store.corrupt_records(), 1);

    let err = store
        .coordinate(BUCKET, b"k", good.clock(), text("v2"))
        .unwrap_err();
    assert!(err.is_corrupt());
    assert_eq!(store.corrupt_records(), 2);

    let err = store.merge(BUCKET, b"k", &good).unwrap_err();
    assert!(err.is_corrupt());
    assert_eq!(store.corrupt_records(), 3);

    // The damaged bytes are left for repair, untouched.
    assert_eq!(store.raw_get(BUCKET, b"k").unwrap(), Some(damaged));
}

#[test]
fn unknown_record_version_is_corrupt() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    store
        .raw_put(b"b", b"\x00bin", &[9, 1, 2, 3, 4, 5])
        .unwrap();
    let err = store.get(b"b", b"\x00bin").unwrap_err();
    assert!(matches!(
        &err,
        StoreError::Corrupt { key, reason: CodecError::UnknownVersion(9) } if key == "b/\\x00bin"
    ));
    store.raw_put(b"b", b"empty", &[]).unwrap();
    assert!(store.get(b"b", b"empty").unwrap_err().is_corrupt());
    assert_eq!(store.corrupt_records(), 2);
}

#[test]
fn bucket_has_keys_sees_live_and_deleted_keys_only_in_that_bucket() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    assert!(!store.bucket_has_keys(b"a").unwrap());

    store
        .coordinate(b"ab", b"k", &VersionVector::new(), text("x"))
        .unwrap();
    assert!(store.bucket_has_keys(b"ab").unwrap());
    // "a" is a byte prefix of "ab" but a different bucket.
    assert!(!store.bucket_has_keys(b"a").unwrap());
    assert!(!store.bucket_has_keys(b"").unwrap());
    assert!(!store.bucket_has_keys(b"abc").unwrap());

    let written = store
        .coordinate(b"a", b"", &VersionVector::new(), text("y"))
        .unwrap();
    store
        .coordinate(b"a", b"", written.clock(), Value::Tombstone)
        .unwrap();
    assert!(store.get(b"a", b"").unwrap().unwrap().is_deleted());
    assert!(store.bucket_has_keys(b"a").unwrap());

    let top = [0xff_u8; 255];
    assert!(!store.bucket_has_keys(&top).unwrap());
    store
        .coordinate(&top, b"k", &VersionVector::new(), text("z"))
        .unwrap();
    assert!(store.bucket_has_keys(&top).unwrap());
}

#[test]
fn bucket_longer_than_255_bytes_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let long = [b'b'; 256];
    let err = store
        .coordinate(&long, b"k", &VersionVector::new(), text("x"))
        .unwrap_err();
    assert!(matches!(err, StoreError::BucketTooLong(256)));
    assert!(matches!(
        store.get(&long, b"k"),
        Err(StoreError::BucketTooLong(256))
    ));
    assert!(matches!(
        store.bucket_has_keys(&long),
        Err(StoreError::BucketTooLong(256))
    ));
}

#[test]
fn meta_round_trips_and_cannot_touch_the_actor_id() {
    let dir = TempDir::new().unwrap();
    let actor = {
        let store = open(dir.path());
        assert_eq!(store.get_meta("ring_epoch").unwrap(), None);
        store.put_meta("ring_epoch", b"\x00\x07").unwrap();
        store.put_meta("actor_id", b"not an actor").unwrap();
        assert_eq!(
            store.get_meta("ring_epoch").unwrap(),
            Some(b"\x00\x07".to_vec())
        );
        store.actor()
    };
    // The open reads the stored actor id, and would refuse it as corrupt had the node's
    // `actor_id` (12 bytes) overwritten it; then it takes a new one, as at every open.
    let store = open(dir.path());
    assert_ne!(store.actor(), actor);
    assert_eq!(
        store.get_meta("ring_epoch").unwrap(),
        Some(b"\x00\x07".to_vec())
    );
    assert_eq!(
        store.get_meta("actor_id").unwrap(),
        Some(b"not an actor".to_vec())
    );
}

#[test]
fn data_persists_across_reopen_with_and_without_flush() {
    let dir = TempDir::new().unwrap();
    let (flushed, unflushed) = {
        let store = open(dir.path());
        let flushed = store
            .coordinate(BUCKET, b"f", &VersionVector::new(), text("f"))
            .unwrap();
        store.flush().unwrap();
        // Written after the flush: only the WAL has it when the store closes.
        let unflushed = store
            .coordinate(BUCKET, b"u", &VersionVector::new(), text("u"))
            .unwrap();
        (flushed, unflushed)
    };
    let store = open(dir.path());
    assert_eq!(store.get(BUCKET, b"f").unwrap(), Some(flushed));
    assert_eq!(store.get(BUCKET, b"u").unwrap(), Some(unflushed));
}

#[test]
fn sync_always_store_writes_and_reopens() {
    let dir = TempDir::new().unwrap();
    let options = StoreOptions {
        sync: SyncPolicy::Always,
        ..StoreOptions::default()
    };
    let written = {
        let store = Store::open(dir.path(), options.clone()).unwrap();
        store.put_meta("m", b"1").unwrap();
        store
            .coordinate(BUCKET, b"k", &VersionVector::new(), text("x"))
            .unwrap()
    };
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.get(BUCKET, b"k").unwrap(), Some(written));
    assert_eq!(store.get_meta("m").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn concurrent_coordinated_writes_to_one_key_mint_distinct_dots() {
    const THREADS: usize = 4;
    const WRITES: usize = 25;
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(dir.path()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..WRITES {
                    // No context: every write is concurrent with the others.
                    store
                        .coordinate(
                            BUCKET,
                            b"hot",
                            &VersionVector::new(),
                            text(&format!("{t}-{i}")),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let obj = store.get(BUCKET, b"hot").unwrap().unwrap();
    let counters: Vec<u64> = obj.siblings().iter().map(|s| s.dot.counter).collect();
    let expected: Vec<u64> = (1..=(THREADS * WRITES) as u64).collect();
    assert_eq!(counters, expected);
    assert_eq!(obj.clock().get(store.actor()), (THREADS * WRITES) as u64);
}
