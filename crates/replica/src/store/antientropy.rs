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
//! Digests live in the `aae` column family, written in the same RocksDB write batch as
//! the data record they describe, so the two can never disagree after a crash. Key layout:
//! 1. partition, `u32` big-endian: the top `partition_bits` bits of the key hash;
//! 2. bucket length, `u8`;
//! 3. bucket bytes;
//! 4. segment, `u8`: the low 8 bits of the key hash;
//! 5. key bytes.
//!
//! The value is the digest, `u64` big-endian. The key hash is the ring's
//! ([`key_hash`], the same on-disk contract), so a partition here is the ring's partition,
//! and the keys of one segment of one tree are one prefix scan.
//!
//! # The trees
//! There is one tree per (partition, bucket) that holds keys, in memory: 256 segment
//! hashes, each the XOR of `leaf = xxh3-64(key ‖ digest)` over the segment's keys, and a
//! root, xxh3-64 of the 256 segment hashes. XOR makes a write O(1): the segment hash
//! drops the old leaf and takes the new one, `segment ^= leaf(old) ^ leaf(new)`, whatever
//! order writes of different keys land in. A tree is updated under the key's lock, after
//! its batch is written, from the digest of the record the write replaced: the write reads
//! that record anyway, and the `aae` column family holds exactly its digest (both were
//! written in one batch), so the trees are always the XOR of what that column family holds
//! without reading it on the write path. Only [`Store::raw_put`], a test hook, writes a
//! record without its digest; the write path refuses to write over the corrupt records it
//! plants.
//!
//! # Start
//! The trees are built at open from a scan of the `aae` column family. That family is
//! first rebuilt from a scan of the data when it cannot be trusted: its format marker
//! (`store/aae_format` in `meta`: format version, partition bits) is missing or different,
//! it is empty while data exists, or an entry in it does not parse. Both scans are logged
//! with their duration.
//!
//! # Simplifications
//! - A tree has a single level of 256 segments. A differing key costs the transfer of
//!   its segment's key list, about `keys / (partitions * 256)` entries; with 256
//!   partitions that stays small up to tens of millions of keys per bucket.
//! - Digests describe what was written. Damage below the store (a flipped bit RocksDB
//!   does not catch) changes a record without changing its digest, and stays invisible to
//!   anti-entropy until the next rebuild.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rocksdb::{IteratorMode, Options, ReadOptions, WriteBatch, DB};
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

use super::{
    column_family, data_key, prefix_successor, Store, StoreError, CF_AAE, CF_DATA, CF_META,
};
use crate::codec::encode_record;
use crate::object::VersionedObject;

/// Segments per tree: the values of the low byte of a key hash.
pub const AAE_SEGMENTS: usize = 256;

/// The largest `partition_bits` a store accepts (the ring's 65,536 partitions).
pub const MAX_PARTITION_BITS: u8 = 16;

/// Format version of the `aae` column family's layout.
const AAE_FORMAT_V1: u8 = 1;

/// Meta key of the `aae` format marker: format version, then partition bits.
const META_AAE_FORMAT: &[u8] = b"store/aae_format";

/// Digests written per batch while rebuilding the `aae` column family.
const REBUILD_BATCH: usize = 10_000;

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
struct Location {
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
    /// Rebuilds the `aae` column family if it cannot be trusted, then builds the trees
    /// from it. Blocking: scans the column family (and the data, when rebuilding).
    /// `aae_options` are the column family's options, for when it is created again.
    pub(super) fn open(
        db: &mut DB,
        partition_bits: u8,
        aae_options: &Options,
    ) -> Result<HashTrees, StoreError> {
        if partition_bits > MAX_PARTITION_BITS {
            return Err(StoreError::InvalidOptions(format!(
                "partition_bits is {partition_bits}; at most {MAX_PARTITION_BITS} are allowed"
            )));
        }
        let marker = [AAE_FORMAT_V1, partition_bits];
        let stored = db.get_cf(column_family(db, CF_META)?, META_AAE_FORMAT)?;
        let reason = if stored.as_deref() != Some(&marker[..]) {
            Some("format marker missing or different")
        } else if is_empty(db, CF_AAE)? && !is_empty(db, CF_DATA)? {
            Some("digests missing")
        } else {
            None
        };
        if let Some(reason) = reason {
            rebuild(db, partition_bits, reason, aae_options)?;
        }
        match load(db, partition_bits) {
            Err(LoadError::Damaged(reason)) => {
                rebuild(db, partition_bits, reason, aae_options)?;
                load(db, partition_bits).map_err(|error| match error {
                    LoadError::Damaged(reason) => StoreError::Db(format!(
                        "anti-entropy digests unreadable right after a rebuild: {reason}"
                    )),
                    LoadError::Store(error) => error,
                })
            }
            Err(LoadError::Store(error)) => Err(error),
            Ok(trees) => Ok(trees),
        }
    }

    fn locate(&self, bucket: &[u8], key: &[u8]) -> Location {
        let hash = key_hash(bucket, key);
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
    fn update(&self, at: Location, bucket: &[u8], key: &[u8], old: Option<u64>, new: Option<u64>) {
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

/// Why the trees could not be built.
enum LoadError {
    /// The `aae` column family cannot be trusted, for this reason; rebuild it.
    Damaged(&'static str),
    /// Reading it failed.
    Store(StoreError),
}

/// Whether a column family holds no entry.
fn is_empty(db: &DB, name: &str) -> Result<bool, StoreError> {
    let mut iter = db.raw_iterator_cf(column_family(db, name)?);
    iter.seek_to_first();
    iter.status()?;
    Ok(!iter.valid())
}

/// Returns the `aae` key of a key (layout in the module docs).
fn aae_key(at: Location, bucket: &[u8], key: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut aae_key = segment_prefix(at.partition, bucket, at.segment)?;
    aae_key.extend_from_slice(key);
    Ok(aae_key)
}

/// Returns the `aae` prefix of one segment of one tree.
fn segment_prefix(partition: u32, bucket: &[u8], segment: u8) -> Result<Vec<u8>, StoreError> {
    let len = u8::try_from(bucket.len()).map_err(|_| StoreError::BucketTooLong(bucket.len()))?;
    let mut prefix = Vec::with_capacity(4 + 1 + bucket.len() + 1);
    prefix.extend_from_slice(&partition.to_be_bytes());
    prefix.push(len);
    prefix.extend_from_slice(bucket);
    prefix.push(segment);
    Ok(prefix)
}

/// Splits an `aae` key into (partition, bucket, segment, key).
fn split_aae_key(aae_key: &[u8]) -> Option<(u32, &[u8], u8, &[u8])> {
    let (partition, rest) = aae_key.split_first_chunk::<4>()?;
    let (&len, rest) = rest.split_first()?;
    let (bucket, rest) = rest.split_at_checked(usize::from(len))?;
    let (&segment, key) = rest.split_first()?;
    Some((u32::from_be_bytes(*partition), bucket, segment, key))
}

/// Splits a data key into (bucket, key).
fn split_data_key(data_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = data_key.split_first()?;
    rest.split_at_checked(usize::from(len))
}

/// Parses a stored digest.
fn parse_digest(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

/// Rewrites the `aae` column family from a scan of the data, then writes the marker.
fn rebuild(
    db: &mut DB,
    partition_bits: u8,
    reason: &str,
    aae_options: &Options,
) -> Result<(), StoreError> {
    let started = Instant::now();
    if is_empty(db, CF_DATA)? {
        // A new store: nothing to index, only the marker to write.
        tracing::debug!(reason, "writing the anti-entropy format marker");
    } else {
        tracing::warn!(reason, "rebuilding the anti-entropy digests from the data");
    }
    // The old marker goes first, durably: a crash during the rebuild must leave a family
    // that the next open rebuilds again, not one it trusts half-written.
    let mut durable = rocksdb::WriteOptions::default();
    durable.set_sync(true);
    db.delete_cf_opt(column_family(db, CF_META)?, META_AAE_FORMAT, &durable)?;
    // Dropping the family discards every old entry at once, whatever its layout.
    db.drop_cf(CF_AAE)?;
    db.create_cf(CF_AAE, aae_options)?;

    let data = column_family(db, CF_DATA)?;
    let aae = column_family(db, CF_AAE)?;
    let mut batch = WriteBatch::default();
    let mut keys: u64 = 0;
    let mut skipped: u64 = 0;
    for entry in db.iterator_cf(data, IteratorMode::Start) {
        let (data_key, record) = entry?;
        let Some((bucket, key)) = split_data_key(&data_key) else {
            skipped += 1;
            continue;
        };
        let hash = key_hash(bucket, key);
        let at = Location {
            partition: partition_of(hash, partition_bits),
            segment: segment_of(hash),
        };
        batch.put_cf(
            aae,
            aae_key(at, bucket, key)?,
            record_digest(&record).to_be_bytes(),
        );
        keys += 1;
        if batch.len() >= REBUILD_BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    // Syncing the marker syncs the WAL up to it, digests included.
    db.put_cf_opt(
        column_family(db, CF_META)?,
        META_AAE_FORMAT,
        [AAE_FORMAT_V1, partition_bits],
        &durable,
    )?;
    if skipped > 0 {
        tracing::error!(
            skipped,
            "data keys with an impossible layout were not indexed"
        );
    }
    tracing::info!(
        keys,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "anti-entropy digests rebuilt"
    );
    Ok(())
}

/// Builds the trees from a scan of the `aae` column family.
fn load(db: &DB, partition_bits: u8) -> Result<HashTrees, LoadError> {
    let started = Instant::now();
    let aae = column_family(db, CF_AAE).map_err(LoadError::Store)?;
    let mut partitions: Vec<PartitionTrees> = (0..1u32 << partition_bits)
        .map(|_| BTreeMap::new())
        .collect();
    let mut keys: u64 = 0;
    for entry in db.iterator_cf(aae, IteratorMode::Start) {
        let (aae_key, value) = entry.map_err(|e| LoadError::Store(e.into()))?;
        let Some((partition, bucket, segment, key)) = split_aae_key(&aae_key) else {
            return Err(LoadError::Damaged("an entry's key does not parse"));
        };
        let hash = key_hash(bucket, key);
        if partition != partition_of(hash, partition_bits) || segment != segment_of(hash) {
            return Err(LoadError::Damaged(
                "an entry is filed under the wrong partition or segment",
            ));
        }
        let Some(digest) = parse_digest(&value) else {
            return Err(LoadError::Damaged("an entry's digest is not 8 bytes"));
        };
        // In range: the partition was just recomputed from the hash.
        let trees = &mut partitions[partition as usize];
        let tree = match trees.get_mut(bucket) {
            Some(tree) => tree,
            None => trees.entry(bucket.to_vec()).or_insert_with(Tree::new),
        };
        tree.segments[usize::from(segment)] ^= leaf(key, digest);
        tree.keys += 1;
        keys += 1;
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
    /// (`partition`, `bucket`), segment by segment in key order. One prefix scan per
    /// segment: the cost follows the segments asked for, not the data.
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
        let aae = self.cf(CF_AAE)?;
        let mut keys = Vec::new();
        for segment in segments {
            let prefix = segment_prefix(partition, bucket, segment)?;
            let mut read_options = ReadOptions::default();
            if let Some(end) = prefix_successor(&prefix) {
                read_options.set_iterate_upper_bound(end);
            }
            let mut iter = self.db.raw_iterator_cf_opt(aae, read_options);
            iter.seek(&prefix);
            while let (Some(aae_key), Some(value)) = (iter.key(), iter.value()) {
                if !aae_key.starts_with(&prefix) {
                    break;
                }
                match parse_digest(value) {
                    Some(digest) => keys.push((aae_key[prefix.len()..].to_vec(), digest)),
                    // Left out, the key looks missing here; the exchange then repairs it,
                    // and that write replaces the entry.
                    None => tracing::warn!(
                        key = %super::display_key(bucket, &aae_key[prefix.len()..]),
                        "unreadable anti-entropy digest"
                    ),
                }
                iter.next();
            }
            iter.status()?;
        }
        Ok(keys)
    }

    /// Under the key's lock: deletes the record of `bucket`/`key` and its digest, in one
    /// batch, only if the record still encodes exactly `expected`. Returns whether it was
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
        let data_key = data_key(bucket, key)?;
        let _guard = self.lock_key(&data_key);
        let expected = encode_record(expected);
        let unchanged = self
            .db
            .get_pinned_cf(self.cf(CF_DATA)?, &data_key)?
            .is_some_and(|record| *record == *expected);
        if !unchanged {
            return Ok(false);
        }
        let at = self.aae.locate(bucket, key);
        let aae_key = aae_key(at, bucket, key)?;
        // The digest written with the record: the record is exactly `expected`.
        let old = Some(record_digest(&expected));
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_DATA)?, &data_key);
        batch.delete_cf(self.cf(CF_AAE)?, &aae_key);
        self.db.write_opt(batch, &self.write_options)?;
        self.aae.update(at, bucket, key, old, None);
        Ok(true)
    }

    /// The write path's hook: adds `record` under `data_key` and its digest to `batch`, and
    /// returns the move of the key's leaf to make once the batch is written
    /// ([`Store::move_leaf`]). `old` is the digest of the record being replaced (`None`:
    /// none), which the `aae` column family holds too. The caller holds the key's lock
    /// until the leaf moved.
    pub(super) fn stage_record<'k>(
        &self,
        batch: &mut WriteBatch,
        (bucket, key): (&'k [u8], &'k [u8]),
        data_key: &[u8],
        record: &[u8],
        old: Option<u64>,
    ) -> Result<LeafMove<'k>, StoreError> {
        let at = self.aae.locate(bucket, key);
        let aae_key = aae_key(at, bucket, key)?;
        let new = record_digest(record);
        batch.put_cf(self.cf(CF_DATA)?, data_key, record);
        batch.put_cf(self.cf(CF_AAE)?, &aae_key, new.to_be_bytes());
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
