//! Dropping the records of a partition this node no longer owns.
//!
//! A membership change moves partitions between nodes; the node that loses one keeps its
//! copies until they are dropped here. Left in place they are harmful, not merely wasted
//! space: if the node owns the partition again later, its old copies would be merged back
//! as if current, bringing back keys that were deleted and reaped meanwhile. Which
//! partitions to drop, and when it is safe, is the coordinator's decision; this is the
//! store's part, by (partition, bucket), the unit of the hash trees.

use rocksdb::ReadOptions;

use super::antientropy::{key_hash, record_digest, shards_of};
use super::{shard_bucket_prefix, split_data_key, Store, StoreError, CF_DATA};

/// Records read per hold of the scan gate.
const DROP_CHUNK: usize = 256;

/// What dropping one (partition, bucket) removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Records deleted.
    pub keys: u64,
    /// Their bytes (keys and records as stored).
    pub bytes: u64,
}

impl Store {
    /// Deletes every record of `bucket` in `partition`, moving each key out of its hash
    /// tree. Each key is deleted under its lock, so a write that lands meanwhile is either
    /// dropped with the rest or written after; the caller makes sure none is expected.
    /// Nothing for a partition out of range.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn drop_partition_bucket(
        &self,
        partition: u32,
        bucket: &[u8],
    ) -> Result<Dropped, StoreError> {
        let mut dropped = Dropped::default();
        let Some(shards) = shards_of(partition, self.aae_partition_bits()) else {
            return Ok(dropped);
        };
        for shard in shards {
            let prefix = shard_bucket_prefix(shard, bucket)?;
            loop {
                // A chunk of keys under the scan gate, then their deletes outside it: the
                // gate is held for a bounded read, never across writes.
                let chunk = self.keys_with_prefix(&prefix)?;
                if chunk.is_empty() {
                    break;
                }
                for data_key in &chunk {
                    if let Some(bytes) = self.delete_record(data_key)? {
                        dropped.keys += 1;
                        dropped.bytes += bytes;
                    }
                }
                if chunk.len() < DROP_CHUNK {
                    break;
                }
            }
        }
        Ok(dropped)
    }

    /// The first [`DROP_CHUNK`] `records` keys that start with `prefix` (within a shard).
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut read_options = ReadOptions::default();
        read_options.fill_cache(false);
        read_options.set_prefix_same_as_start(true);
        let _gate = self.gate_scan();
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_DATA)?, read_options);
        iter.seek(prefix);
        let mut keys = Vec::new();
        while let Some(data_key) = iter.key() {
            if !data_key.starts_with(prefix) || keys.len() == DROP_CHUNK {
                break;
            }
            keys.push(data_key.to_vec());
            iter.next();
        }
        iter.status()?;
        Ok(keys)
    }

    /// Deletes one record under its key's lock; returns its size in bytes, or `None` when
    /// it was gone already.
    fn delete_record(&self, data_key: &[u8]) -> Result<Option<u64>, StoreError> {
        let Some((_, bucket, _, key)) = split_data_key(data_key) else {
            return Ok(None);
        };
        let _guard = self.lock_key(data_key);
        let records = self.cf(CF_DATA)?;
        let Some(record) = self.db.get_pinned_cf(records, data_key)? else {
            return Ok(None);
        };
        let old = record_digest(&record);
        let bytes = (data_key.len() + record.len()) as u64;
        drop(record);
        self.db
            .delete_cf_opt(records, data_key, &self.write_options)?;
        let at = self.aae.locate(key_hash(bucket, key));
        self.aae.update(at, bucket, key, Some(old), None);
        Ok(Some(bytes))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use crate::object::Value;
    use crate::store::antientropy::{key_hash, partition_of};
    use crate::store::{Store, StoreOptions};
    use crate::version::VersionVector;

    #[test]
    fn dropping_a_partition_bucket_removes_its_keys_and_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let bits = store.aae_partition_bits();
        // More keys than a chunk in one partition, and some in others and another bucket.
        let target = partition_of(key_hash(b"b", b"k0"), bits);
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        let mut i = 0u32;
        while inside.len() < 600 {
            let key = format!("k{i}").into_bytes();
            i += 1;
            for bucket in [&b"b"[..], b"c"] {
                store
                    .coordinate(
                        bucket,
                        &key,
                        &VersionVector::new(),
                        Value::data("t", vec![1]),
                    )
                    .unwrap();
                let mine = bucket == b"b" && partition_of(key_hash(bucket, &key), bits) == target;
                if mine {
                    inside.push(key.clone());
                } else if outside.len() < 2_000 {
                    outside.push((bucket.to_vec(), key.clone()));
                }
            }
        }
        let dropped = store.drop_partition_bucket(target, b"b").unwrap();
        assert_eq!(dropped.keys, inside.len() as u64);
        assert!(dropped.bytes > dropped.keys * 4, "{dropped:?}");
        for key in &inside {
            assert_eq!(store.get(b"b", key).unwrap(), None);
        }
        for (bucket, key) in &outside {
            assert!(store.get(bucket, key).unwrap().is_some());
        }
        // The tree of (target, "b") is gone; the others are as before.
        assert!(store.aae_roots(target).iter().all(|(b, _)| b != b"b"));
        // Again: nothing left to drop.
        assert_eq!(store.drop_partition_bucket(target, b"b").unwrap().keys, 0);
        // A partition out of range drops nothing.
        assert_eq!(store.drop_partition_bucket(u32::MAX, b"c").unwrap().keys, 0);
    }

    #[test]
    fn the_trees_after_a_drop_equal_those_built_from_the_records_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let roots = {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            for i in 0..3_000u32 {
                store
                    .coordinate(
                        b"b",
                        &i.to_be_bytes(),
                        &VersionVector::new(),
                        Value::Tombstone,
                    )
                    .unwrap();
            }
            for partition in 0..8 {
                store.drop_partition_bucket(partition, b"b").unwrap();
            }
            (0..1u32 << store.aae_partition_bits())
                .map(|p| store.aae_roots(p))
                .collect::<Vec<_>>()
        };
        let reopened = Store::open(dir.path(), options).unwrap();
        let rebuilt: Vec<_> = (0..1u32 << reopened.aae_partition_bits())
            .map(|p| reopened.aae_roots(p))
            .collect();
        assert_eq!(roots, rebuilt);
        assert!(roots[..8].iter().all(Vec::is_empty));
    }
}
