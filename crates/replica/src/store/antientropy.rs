//! Active anti-entropy, the store's side: hash trees of the keys' version digests.
//!
//! Replicas drift apart when a write misses one of them and no hint or read repair
//! carries it there later. Anti-entropy (Dynamo, section 4.7) finds those differences by
//! comparing hash trees: equal roots mean equal contents, and a walk down the differing
//! branches leads to the differing keys at a cost proportional to the differences, not to
//! the data. This module keeps the trees; the coordinator compares them between nodes.
//!
//! # What is hashed
//! Every record has a *digest*, xxh3-64 of its stored bytes. Records are canonical (an
//! object encodes to exactly one byte string), so two replicas hold equal objects exactly
//! when their digests are equal. A corrupt record is hashed as it is stored: its digest
//! differs from every healthy replica's, so anti-entropy sees the difference (the store
//! still refuses to write over the record; repair comes by hand or from a rebuild).
//!
//! Records are filed by key hash (layout in `store/layout.rs`): shard (the top 16 bits),
//! bucket, segment (the low 8 bits), key. A partition of `partition_bits <= 16` bits is a run of
//! whole shards, so the keys of one segment of one tree are one prefix scan per shard,
//! and a record is its own entry in the index: no digest is stored, and a write is one
//! RocksDB entry. The key hash is the ring's ([`key_hash`], the same on-disk contract),
//! so a partition here is the ring's partition.
//!
//! # The trees
//! There is one tree per (partition, bucket) that holds keys, in memory: 256 segment
//! hashes, each the XOR of `leaf = xxh3-64(key ‖ digest)` over the segment's keys, a
//! count of its keys, and a root, xxh3-64 of the 256 segment hashes. XOR makes a write
//! O(1): the segment hash drops the old leaf and takes the new one,
//! `segment ^= leaf(old) ^ leaf(new)`, whatever order writes of different keys land in. A
//! tree is updated under the key's lock, after its batch is written, from the digest of
//! the record the write replaced, which the write read anyway; so the trees are always
//! the XOR of the stored records without reading anything more on the write path. Only
//! [`Store::raw_put`], a test hook, writes a record without moving its leaf; the write
//! path refuses to write over the corrupt records it plants.
//!
//! # Start
//! The trees are built at open from a scan of every record, logged with its duration:
//! 0.25 s for a million records of 100-byte values on the reference machine
//! (`tree_build_time_at_open_is_reported`), more with large values, since the scan reads
//! them.
//!
//! # Simplifications
//! - A tree has a single level of 256 segments. A differing key costs the transfer of
//!   its segment's key list, about `keys / (partitions * 256)` entries; with 256
//!   partitions that stays small up to tens of millions of keys per bucket.
//! - A tree describes what was written since the open. Damage below the store (a flipped
//!   bit RocksDB does not catch) changes a record without moving its leaf, and stays
//!   invisible to anti-entropy until the next open.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rocksdb::{IteratorMode, ReadOptions, WriteBatch, DB};
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

use super::layout::{data_key_of, segment_prefix, shard_bucket_prefix, shard_of, split_data_key};
use super::{column_family, Store, StoreError, CF_DATA};
use crate::codec::encode_record;
use crate::object::VersionedObject;

/// Segments per tree: the values of the low byte of a key hash.
pub const AAE_SEGMENTS: usize = 256;

/// The largest `partition_bits` a store accepts (the ring's 65,536 partitions).
pub const MAX_PARTITION_BITS: u8 = 16;

/// The bits of a key hash that pick its shard, the unit of the records' layout.
const SHARD_BITS: u8 = 16;

/// Asked for more segments than this at once, [`Store::aae_keys`] scans each shard's part
/// of the bucket whole rather than seeking to each segment.
const SEEKS_PER_SHARD: usize = 16;

/// Returns the stable 64-bit hash of a key in a bucket.
///
/// The same function as `quorumkv_ring::key_hash`, and the same on-disk contract: xxh3-64,
/// seed 0, of
/// 1. the bucket length in bytes, as a `u32`, big-endian;
/// 2. the bucket bytes;
/// 3. the key bytes.
///
/// It is repeated here because this crate sits beside the ring crate, not above it; the
/// golden test below uses the ring's golden vectors, so the two cannot drift apart.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let bucket_len = u32::try_from(bucket.len()).unwrap_or(u32::MAX);
    let mut hasher = Xxh3Default::new();
    hasher.update(&bucket_len.to_be_bytes());
    hasher.update(bucket);
    hasher.update(key);
    hasher.digest()
}

/// Returns the partition of a key hash: its top `partition_bits` bits (as the ring does).
pub fn partition_of(hash: u64, partition_bits: u8) -> u32 {
    // With no partition bits the shift would be by 64, which `checked_shr` refuses.
    let top = hash
        .checked_shr(64 - u32::from(partition_bits))
        .unwrap_or(0);
    // Fits: `partition_bits <= 16`.
    top as u32
}

/// Returns the segment of a key hash: its low 8 bits. Independent of the partition bits.
pub fn segment_of(hash: u64) -> u8 {
    hash as u8
}

/// Returns the shards of a partition of `partition_bits` bits: a run of whole shards,
/// since a shard is the top [`SHARD_BITS`] bits of the hash. `None` out of range.
pub(super) fn shards_of(
    partition: u32,
    partition_bits: u8,
) -> Option<std::ops::RangeInclusive<u16>> {
    if partition >= 1u32 << partition_bits {
        return None;
    }
    let width = SHARD_BITS - partition_bits;
    let first = partition << width;
    let last = first + ((1u32 << width) - 1);
    // In range: `last < 2^SHARD_BITS`.
    Some(first as u16..=last as u16)
}

/// Returns the digest of a stored record: xxh3-64 of its bytes.
pub fn record_digest(record: &[u8]) -> u64 {
    xxh3_64(record)
}

/// Returns the tree leaf of a key with a digest: xxh3-64 of the key bytes followed by the
/// digest, `u64` big-endian (fixed width, so the layout is unambiguous).
fn leaf(key: &[u8], digest: u64) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(key);
    hasher.update(&digest.to_be_bytes());
    hasher.digest()
}

/// One (partition, bucket) tree.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tree {
    /// Keys the tree holds; the tree is dropped when it reaches 0.
    keys: u64,
    /// XOR of the leaves of each segment's keys.
    segments: Box<[u64; AAE_SEGMENTS]>,
}

impl Tree {
    fn new() -> Self {
        Tree {
            keys: 0,
            segments: Box::new([0; AAE_SEGMENTS]),
        }
    }

    fn root(&self) -> u64 {
        let mut bytes = [0u8; AAE_SEGMENTS * 8];
        for (chunk, segment) in bytes.chunks_exact_mut(8).zip(self.segments.iter()) {
            chunk.copy_from_slice(&segment.to_be_bytes());
        }
        xxh3_64(&bytes)
    }
}

/// The trees of one partition, by bucket.
type PartitionTrees = BTreeMap<Vec<u8>, Tree>;

/// Where a key's digest lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Location {
    partition: u32,
    segment: u8,
}

/// A key's leaf to move once the batch holding its new record is written.
pub(super) struct LeafMove<'k> {
    at: Location,
    bucket: &'k [u8],
    key: &'k [u8],
    /// The digest before the write (`None`: no record).
    old: Option<u64>,
    new: u64,
}

/// Every tree of the store, one lock per partition.
pub(super) struct HashTrees {
    partition_bits: u8,
    /// Indexed by partition. A std mutex per partition: held for one XOR on the write
    /// path or one copy on a query, never across I/O, and writes to different partitions
    /// never wait for each other.
    partitions: Box<[Mutex<PartitionTrees>]>,
}

impl HashTrees {
    /// Builds the trees from a scan of every record. Blocking.
    pub(super) fn open(db: &DB, partition_bits: u8) -> Result<HashTrees, StoreError> {
        if partition_bits > MAX_PARTITION_BITS {
            return Err(StoreError::InvalidOptions(format!(
                "partition_bits is {partition_bits}; at most {MAX_PARTITION_BITS} are allowed"
            )));
        }
        let started = Instant::now();
        let records = column_family(db, CF_DATA)?;
        let mut partitions: Vec<PartitionTrees> = (0..1u32 << partition_bits)
            .map(|_| BTreeMap::new())
            .collect();
        let (mut keys, mut misfiled) = (0u64, 0u64);
        let mut read_options = ReadOptions::default();
        // A one-time scan: keep it from evicting the blocks that serve requests.
        read_options.fill_cache(false);
        // Across shards: the memtable is hashed by shard, so a scan of all of it in key
        // order needs its copy sorted whole. Once, at open, that is cheap enough.
        read_options.set_total_order_seek(true);
        for entry in db.iterator_cf_opt(records, read_options, IteratorMode::Start) {
            let (data_key, record) = entry?;
            let Some((shard, bucket, segment, key)) = split_data_key(&data_key) else {
                misfiled += 1;
                continue;
            };
            let hash = key_hash(bucket, key);
            if shard != shard_of(hash) || segment != segment_of(hash) {
                misfiled += 1;
                continue;
            }
            // In range: recomputed from the hash.
            let trees = &mut partitions[partition_of(hash, partition_bits) as usize];
            let tree = match trees.get_mut(bucket) {
                Some(tree) => tree,
                None => trees.entry(bucket.to_vec()).or_insert_with(Tree::new),
            };
            tree.segments[usize::from(segment)] ^= leaf(key, record_digest(&record));
            tree.keys += 1;
            keys += 1;
        }
        if misfiled > 0 {
            // Not reachable through the store's own writes; left alone, and never read.
            tracing::error!(
                misfiled,
                "records under a key that does not match their key hash were not indexed"
            );
        }
        tracing::info!(
            keys,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "anti-entropy hash trees built"
        );
        Ok(HashTrees {
            partition_bits,
            partitions: partitions.into_iter().map(Mutex::new).collect(),
        })
    }

    /// Whether any tree holds a key of `bucket`.
    pub(super) fn holds_bucket(&self, bucket: &[u8]) -> bool {
        (0..self.partitions.len() as u32)
            .any(|p| self.lock(p).is_some_and(|trees| trees.contains_key(bucket)))
    }

    /// The tree location of the key of hash `hash` ([`key_hash`]).
    pub(super) fn locate(&self, hash: u64) -> Location {
        Location {
            partition: partition_of(hash, self.partition_bits),
            segment: segment_of(hash),
        }
    }

    fn lock(&self, partition: u32) -> Option<MutexGuard<'_, PartitionTrees>> {
        let trees = self.partitions.get(usize::try_from(partition).ok()?)?;
        // A panic while the lock was held interrupted at most one XOR pair, and none can
        // panic; the trees are as consistent as the code that updates them.
        Some(trees.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces a key's leaf: `old` and `new` are its digests before and after a write
    /// (`None`: no record).
    pub(super) fn update(
        &self,
        at: Location,
        bucket: &[u8],
        key: &[u8],
        old: Option<u64>,
        new: Option<u64>,
    ) {
        if old == new {
            return;
        }
        let Some(mut trees) = self.lock(at.partition) else {
            return;
        };
        let tree = trees.entry(bucket.to_vec()).or_insert_with(Tree::new);
        let segment = &mut tree.segments[usize::from(at.segment)];
        if let Some(old) = old {
            *segment ^= leaf(key, old);
            tree.keys = tree.keys.saturating_sub(1);
        }
        if let Some(new) = new {
            *segment ^= leaf(key, new);
            tree.keys += 1;
        }
        if tree.keys == 0 {
            trees.remove(bucket);
        }
    }
}

impl Store {
    /// Returns how many top bits of a key hash pick its partition in the hash trees.
    pub fn aae_partition_bits(&self) -> u8 {
        self.aae.partition_bits
    }

    /// Returns the root hash of every tree of `partition`: one per bucket holding keys in
    /// it, in bucket order. Empty for a partition out of range. In memory, no I/O.
    pub fn aae_roots(&self, partition: u32) -> Vec<(Vec<u8>, u64)> {
        self.aae.lock(partition).map_or_else(Vec::new, |trees| {
            trees
                .iter()
                .map(|(bucket, tree)| (bucket.clone(), tree.root()))
                .collect()
        })
    }

    /// Returns the [`AAE_SEGMENTS`] segment hashes of the tree of (`partition`,
    /// `bucket`); all zero when it holds no key. In memory, no I/O.
    pub fn aae_segments(&self, partition: u32, bucket: &[u8]) -> Vec<u64> {
        self.aae
            .lock(partition)
            .and_then(|trees| trees.get(bucket).map(|tree| tree.segments.to_vec()))
            .unwrap_or_else(|| vec![0; AAE_SEGMENTS])
    }

    /// Returns the (key, digest) pairs of the given segments of the tree of
    /// (`partition`, `bucket`), in no particular order. A record is read for each key, and
    /// its digest computed from it: the cost follows the segments asked for, not the data
    /// (a seek per shard and segment asked, or one scan per shard when many are). Empty for
    /// a partition out of range.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn aae_keys(
        &self,
        partition: u32,
        bucket: &[u8],
        segments: &[u8],
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let mut segments = segments.to_vec();
        segments.sort_unstable();
        segments.dedup();
        let Some(shards) = shards_of(partition, self.aae.partition_bits) else {
            return Ok(Vec::new());
        };
        let mut asked = [false; AAE_SEGMENTS];
        for &segment in &segments {
            asked[usize::from(segment)] = true;
        }
        let records = self.cf(CF_DATA)?;
        let mut read_options = ReadOptions::default();
        read_options.fill_cache(false);
        // Every prefix below lies within one shard, the column family's RocksDB prefix.
        read_options.set_prefix_same_as_start(true);
        let mut iter = self.db.raw_iterator_cf_opt(records, read_options);
        let mut keys = Vec::new();
        let mut collect = |prefix: &[u8], iter: &mut rocksdb::DBRawIterator<'_>| {
            iter.seek(prefix);
            while let (Some(data_key), Some(record)) = (iter.key(), iter.value()) {
                if !data_key.starts_with(prefix) {
                    break;
                }
                if let Some((_, _, segment, key)) = split_data_key(data_key) {
                    if asked[usize::from(segment)] {
                        keys.push((key.to_vec(), record_digest(record)));
                    }
                }
                iter.next();
            }
            iter.status()
        };
        for shard in shards {
            // One shard's part of the bucket at a time: a few entries, a short wait for
            // writes (see `Store::scan_gate`).
            let _gate = self.gate_scan();
            if segments.len() > SEEKS_PER_SHARD {
                collect(&shard_bucket_prefix(shard, bucket)?, &mut iter)?;
            } else {
                for &segment in &segments {
                    collect(&segment_prefix(shard, bucket, segment)?, &mut iter)?;
                }
            }
        }
        Ok(keys)
    }

    /// Under the key's lock: deletes the record of `bucket`/`key` only if it still encodes
    /// exactly `expected`. Returns whether it was
    /// deleted. Garbage collection uses it to drop a tombstone that no write has touched
    /// since it was judged collectable.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn remove_if_unchanged(
        &self,
        bucket: &[u8],
        key: &[u8],
        expected: &VersionedObject,
    ) -> Result<bool, StoreError> {
        let hash = key_hash(bucket, key);
        let data_key = data_key_of(hash, bucket, key)?;
        let _guard = self.lock_key(&data_key);
        let expected = encode_record(expected);
        let unchanged = self
            .db
            .get_pinned_cf(self.cf(CF_DATA)?, &data_key)?
            .is_some_and(|record| *record == *expected);
        if !unchanged {
            return Ok(false);
        }
        let at = self.aae.locate(hash);
        // The record is exactly `expected`.
        let old = Some(record_digest(&expected));
        self.db
            .delete_cf_opt(self.cf(CF_DATA)?, &data_key, &self.write_options)?;
        self.aae.update(at, bucket, key, old, None);
        Ok(true)
    }

    /// The write path's hook: adds `record` under `data_key` to `batch`, and returns the
    /// move of the key's leaf to make once the batch is written ([`Store::move_leaf`]).
    /// `hash` is the key's ([`key_hash`]), which `data_key` was made from; `old` is the
    /// digest of the record being replaced (`None`: none). The caller holds the key's lock
    /// until the leaf moved.
    pub(super) fn stage_record<'k>(
        &self,
        batch: &mut WriteBatch,
        (bucket, key): (&'k [u8], &'k [u8]),
        (hash, data_key): (u64, &[u8]),
        record: &[u8],
        old: Option<u64>,
    ) -> Result<LeafMove<'k>, StoreError> {
        let at = self.aae.locate(hash);
        let new = record_digest(record);
        batch.put_cf(self.cf(CF_DATA)?, data_key, record);
        Ok(LeafMove {
            at,
            bucket,
            key,
            old,
            new,
        })
    }

    /// Moves a key's leaf in its tree, after the batch [`Store::stage_record`] filled was
    /// written.
    pub(super) fn move_leaf(&self, leaf: LeafMove<'_>) {
        self.aae
            .update(leaf.at, leaf.bucket, leaf.key, leaf.old, Some(leaf.new));
    }
}

#[cfg(test)]
mod tests;
