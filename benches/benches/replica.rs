//! Micro-benchmarks of one replica's algebra and record format, no I/O.
//!
//! Every write compares and merges version vectors and rewrites the key's whole record
//! (format version, postcard body, CRC32), and every read decodes it and checks the CRC; a
//! write at N=3 does that on three replicas. These figures say what that costs per value
//! size and sibling count, against the tens of microseconds of a loopback HTTP exchange.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quorumkv_replica::{
    decode_record, encode_record, ActorId, Value, VersionVector, VersionedObject,
};

fn vector(actors: u64, offset: u64) -> VersionVector {
    (0..actors)
        .map(|a| (ActorId(a + 1), a * 7 + offset))
        .collect()
}

/// An object of `siblings` concurrent values of `bytes` bytes each, one per actor.
fn object(siblings: u64, bytes: usize) -> VersionedObject {
    let mut object = VersionedObject::new();
    for actor in 1..=siblings {
        object
            .update(
                ActorId(actor),
                &VersionVector::new(),
                Value::data("application/octet-stream", Bytes::from(vec![7u8; bytes])),
            )
            .expect("fresh counters");
    }
    object
}

fn clocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    for actors in [3u64, 16] {
        let (a, b) = (vector(actors, 1), vector(actors, 2));
        group.bench_with_input(
            BenchmarkId::new("descends", actors),
            &(a.clone(), b.clone()),
            |bench, (a, b)| {
                bench.iter(|| black_box(a).descends(black_box(b)));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("merge", actors),
            &(a, b),
            |bench, (a, b)| {
                bench.iter(|| {
                    let mut merged = a.clone();
                    merged.merge(black_box(b));
                    merged
                });
            },
        );
    }
    group.finish();
}

fn objects(c: &mut Criterion) {
    let mut group = c.benchmark_group("object");
    let value = Value::data("application/octet-stream", Bytes::from(vec![7u8; 100]));
    let base = object(1, 100);
    let context = base.clock().clone();
    group.bench_function("update (supersedes 1 sibling)", |b| {
        b.iter(|| {
            let mut object = base.clone();
            object.update(ActorId(1), black_box(&context), value.clone())
        });
    });
    let (left, right) = (object(2, 100), object(3, 100));
    group.bench_function("merge (2 and 3 siblings)", |b| {
        b.iter(|| {
            let mut merged = left.clone();
            merged.merge(black_box(&right));
            merged
        });
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (siblings, bytes) in [(1u64, 100usize), (3, 100), (1, 10 * 1024)] {
        let object = object(siblings, bytes);
        let encoded = encode_record(&object);
        let name = format!("{siblings} sibling(s) of {bytes} B");
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", &name), &object, |b, object| {
            b.iter(|| encode_record(black_box(object)));
        });
        group.bench_with_input(
            BenchmarkId::new("decode+crc", &name),
            &encoded,
            |b, encoded| {
                b.iter(|| decode_record(black_box(encoded)).expect("valid record"));
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = clocks, objects, records
}
criterion_main!(benches);
