//! Micro-benchmarks of one replica's RocksDB store, in a temporary directory.
//!
//! A minted write is a read, an update and a write of the key's whole record under the
//! per-key lock; the other owners merge the result, which is also a read and a write.
//! These figures are the storage share of a write's cost, with and without an fsync per
//! write (`--sync always`), and of a read's.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use quorumkv_replica::{ActorId, Store, StoreOptions, SyncPolicy, Value, VersionedObject};

const BUCKET: &[u8] = b"bench";
const KEYS: usize = 10_000;

fn key(i: usize) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

fn value() -> Value {
    Value::data("application/octet-stream", Bytes::from(vec![7u8; 100]))
}

/// A store of `KEYS` keys, and the current object of each.
fn preloaded(dir: &std::path::Path, sync: SyncPolicy) -> (Store, Vec<VersionedObject>) {
    let options = StoreOptions {
        sync,
        ..StoreOptions::default()
    };
    let store = Store::open(dir, options).expect("open the store");
    let objects = (0..KEYS)
        .map(|i| {
            store
                .coordinate(BUCKET, &key(i), &Default::default(), value())
                .expect("preload")
        })
        .collect();
    (store, objects)
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, mut objects) = preloaded(dir.path(), SyncPolicy::None);
    let mut group = c.benchmark_group("store");
    let mut i = 0;
    group.bench_function("coordinate 100 B (read, update, write)", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let context = objects[i].clock().clone();
            objects[i] = store
                .coordinate(BUCKET, &key(i), black_box(&context), value())
                .expect("coordinate");
        });
    });
    group.bench_function("get 100 B", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            store.get(BUCKET, black_box(&key(i))).expect("get")
        });
    });
    // What the other owners of a write do: merge a version minted elsewhere.
    let elsewhere = ActorId(u64::MAX - 1);
    group.bench_function("merge a newer version 100 B", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let context = objects[i].clock().clone();
            objects[i]
                .update(elsewhere, &context, value())
                .expect("fresh counter");
            store
                .merge(BUCKET, &key(i), black_box(&objects[i]))
                .expect("merge")
        });
    });
    group.bench_function("merge an equal version (read only)", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            store
                .merge(BUCKET, &key(i), black_box(&objects[i]))
                .expect("merge")
        });
    });
    group.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let (store, mut objects) = preloaded(dir.path(), SyncPolicy::Always);
    let mut group = c.benchmark_group("store --sync always");
    group.sample_size(10);
    group.bench_function("coordinate 100 B (read, update, write, fsync)", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let context = objects[i].clock().clone();
            objects[i] = store
                .coordinate(BUCKET, &key(i), black_box(&context), value())
                .expect("coordinate");
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = store
}
criterion_main!(benches);
