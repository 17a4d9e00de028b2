//! Micro-benchmarks of the ring: where a key lives.
//!
//! Every client request computes a preference list, so its cost sits on the request path
//! of every node; building a ring happens only on membership changes, but it is the
//! stable-matching assignment over every (partition, node) pair and grows with both.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use quorumkv_ring::{key_hash, NodeId, Ring, DEFAULT_PARTITIONS};

fn members(count: usize) -> Vec<NodeId> {
    (1..=count)
        .map(|i| NodeId::new(format!("node{i}")))
        .collect()
}

fn keys() -> Vec<Vec<u8>> {
    (0..1024u32)
        .map(|i| format!("key{i:013}").into_bytes())
        .collect()
}

fn ring(c: &mut Criterion) {
    let keys = keys();
    c.bench_function("ring/key_hash", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            key_hash(black_box(b"bench"), black_box(&keys[i]))
        });
    });

    let mut lookup = c.benchmark_group("ring/preference_list");
    for nodes in [3, 16] {
        let ring = Ring::new(members(nodes), DEFAULT_PARTITIONS).expect("valid ring");
        lookup.bench_with_input(
            BenchmarkId::new("n=3", format!("{nodes} nodes")),
            &ring,
            |b, ring| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    ring.preference_list(black_box(b"bench"), black_box(&keys[i]), 3)
                });
            },
        );
    }
    lookup.finish();

    let mut build = c.benchmark_group("ring/build");
    for nodes in [3, 16] {
        build.bench_with_input(
            BenchmarkId::from_parameter(format!("{nodes} nodes")),
            &nodes,
            |b, &nodes| {
                let members = members(nodes);
                b.iter(|| Ring::new(black_box(members.clone()), DEFAULT_PARTITIONS));
            },
        );
    }
    build.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = ring
}
criterion_main!(benches);
