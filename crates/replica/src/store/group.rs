//! Groups of writes applied together: one pass over the key locks, one RocksDB write batch.
//!
//! A node under load receives many writes at once: the versions it mints for the clients
//! it coordinates, and the states its peers send it in batches. Applying them one by one
//! costs a RocksDB write each (a WAL append, and an fsync under [`SyncPolicy::Always`]);
//! applying them as a group costs one, whatever its size, which is group commit.
//!
//! # Semantics
//! A group is applied as if its writes ran one after the other, in order: a write sees the
//! writes of the same key before it in the group (two merges of one key fold into one
//! state; two mints of one key get consecutive dots). Writes of different keys are
//! independent: one that fails (a corrupt record, an invalid object) fails alone, and the
//! others still apply. The group's records go to RocksDB in one batch, so a
//! crash keeps all of it or none of it, and no write is answered before that batch is in
//! the WAL (and fsynced, under [`SyncPolicy::Always`]).
//!
//! # Locks
//! The group holds the lock stripes of all its keys while it reads, applies and writes,
//! taken in ascending stripe order, so that two groups can never wait for each other in a
//! cycle; everything else takes one stripe at a time.
//!
//! # Never waiting
//! With [`Wait::Never`] the group runs only if it can without waiting: every stripe free,
//! every record in the memtable or the block cache, and RocksDB not slowing writes down
//! (`no_slowdown`); otherwise it stops with [`WouldBlock`] before writing anything. An
//! async caller can then run it on the calling thread (a memtable read and a WAL append
//! to the page cache take microseconds) and fall back to a blocking thread only when it
//! has to. A group that must fsync never runs that way.

use std::sync::{MutexGuard, PoisonError, TryLockError};

use rocksdb::WriteBatch;

use super::antientropy::{key_hash, record_digest};
use super::{data_key_of, Store, SyncPolicy, CF_DATA};
use crate::codec::{decode_record, encode_record};
use crate::error::{CodecError, StoreError};
use crate::object::{Value, VersionedObject};
use crate::version::VersionVector;

/// One write of a group ([`Store::write_group`]).
#[derive(Clone, Copy, Debug)]
pub enum GroupWrite<'a> {
    /// Mint a new version, as [`Store::coordinate`] does.
    Coordinate {
        /// Bucket name bytes.
        bucket: &'a [u8],
        /// Key bytes.
        key: &'a [u8],
        /// The versions the new one supersedes.
        context: &'a VersionVector,
        /// The new value or a tombstone.
        value: &'a Value,
    },
    /// Merge a state minted elsewhere, as [`Store::merge`] does.
    Merge {
        /// Bucket name bytes.
        bucket: &'a [u8],
        /// Key bytes.
        key: &'a [u8],
        /// The incoming state.
        object: &'a VersionedObject,
    },
}

impl<'a> GroupWrite<'a> {
    fn bucket_and_key(&self) -> (&'a [u8], &'a [u8]) {
        match *self {
            GroupWrite::Coordinate { bucket, key, .. } | GroupWrite::Merge { bucket, key, .. } => {
                (bucket, key)
            }
        }
    }
}

/// Whether a group may wait for locks, for I/O and for RocksDB's write stalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Wait as long as it takes: for a blocking thread.
    Block,
    /// Never wait: stop with [`WouldBlock`] instead (see the module docs).
    Never,
}

/// A group under [`Wait::Never`] would have had to wait; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WouldBlock;

/// A key the group touches: its state as the group's writes so far left it.
struct Slot<'a> {
    bucket: &'a [u8],
    key: &'a [u8],
    /// The key's hash, which both files its record (`data_key`) and places it in its tree.
    hash: u64,
    data_key: Vec<u8>,
    /// The object, or why the key cannot be written (its record is corrupt).
    object: Result<VersionedObject, CodecError>,
    /// The digest of the record read (`None`: no record): the key's leaf in its tree
    /// until this group's batch replaces the record.
    stored_digest: Option<u64>,
    dirty: bool,
}

impl Store {
    /// Applies `writes` as one group (semantics in the module docs) and returns, for each
    /// write in order, the key's state right after it.
    ///
    /// # Errors
    /// [`WouldBlock`] under [`Wait::Never`] when the group would have had to wait (and
    /// then nothing was written). Each write has its own result otherwise:
    /// [`StoreError::Invalid`] for an incoming object that breaks an invariant,
    /// [`StoreError::Corrupt`] when the key's record is unreadable (nothing is written
    /// over it), [`StoreError::Version`] when a counter would overflow,
    /// [`StoreError::BucketTooLong`], and [`StoreError::Db`] for every write of the group
    /// when RocksDB fails.
    #[allow(clippy::type_complexity)] // one result per write, inside the group's own
    pub fn write_group(
        &self,
        writes: &[GroupWrite<'_>],
        wait: Wait,
    ) -> Result<Vec<Result<VersionedObject, StoreError>>, WouldBlock> {
        let durable = self.sync == SyncPolicy::Always;
        if wait == Wait::Never && durable {
            return Err(WouldBlock);
        }
        self.apply_group(writes, wait, durable)
    }

    /// [`Store::write_group`] without the fsync, whatever the policy: the writes are in
    /// the WAL (they survive the process being killed) and visible, but a power loss
    /// may lose them until the next [`Store::sync_wal`]. It lets a caller under
    /// [`SyncPolicy::Always`] overlap the fsync with other work, such as sending a
    /// minted version to the other replicas, and acknowledge only after the sync. A
    /// store takes a new actor at every open (see [`Store::open`]), so a dot minted here
    /// and lost can never be minted again.
    ///
    /// # Errors
    /// As [`Store::write_group`]; under [`Wait::Never`] it may run whatever the policy.
    #[allow(clippy::type_complexity)] // one result per write, inside the group's own
    pub fn write_group_unsynced(
        &self,
        writes: &[GroupWrite<'_>],
        wait: Wait,
    ) -> Result<Vec<Result<VersionedObject, StoreError>>, WouldBlock> {
        self.apply_group(writes, wait, false)
    }

    #[allow(clippy::type_complexity)] // one result per write, inside the group's own
    fn apply_group(
        &self,
        writes: &[GroupWrite<'_>],
        wait: Wait,
        durable: bool,
    ) -> Result<Vec<Result<VersionedObject, StoreError>>, WouldBlock> {
        let mut results: Vec<Option<Result<VersionedObject, StoreError>>> =
            (0..writes.len()).map(|_| None).collect();
        // Which slot each write applies to; slots are few, so a linear search is cheapest.
        let mut slots: Vec<Slot<'_>> = Vec::new();
        let mut slot_of: Vec<usize> = Vec::with_capacity(writes.len());
        for (i, write) in writes.iter().enumerate() {
            let (bucket, key) = write.bucket_and_key();
            if let GroupWrite::Merge { object, .. } = write {
                if let Err(error) = object.validate() {
                    results[i] = Some(Err(StoreError::Invalid(error)));
                    slot_of.push(usize::MAX);
                    continue;
                }
            }
            let hash = key_hash(bucket, key);
            let data_key = match data_key_of(hash, bucket, key) {
                Ok(data_key) => data_key,
                Err(error) => {
                    results[i] = Some(Err(error));
                    slot_of.push(usize::MAX);
                    continue;
                }
            };
            let slot = match slots.iter().position(|s| s.data_key == data_key) {
                Some(slot) => slot,
                None => {
                    slots.push(Slot {
                        bucket,
                        key,
                        hash,
                        data_key,
                        object: Ok(VersionedObject::new()),
                        stored_digest: None,
                        dirty: false,
                    });
                    slots.len() - 1
                }
            };
            slot_of.push(slot);
        }

        let _guards = self.lock_stripes(slots.iter().map(|s| s.data_key.as_slice()), wait)?;
        let data = match self.cf(CF_DATA) {
            Ok(cf) => cf,
            Err(error) => return Ok(fail_all(writes.len(), &error)),
        };
        let read_options = match wait {
            Wait::Block => &self.read_any,
            Wait::Never => &self.read_cached,
        };
        for slot in &mut slots {
            let record = match self
                .db
                .get_pinned_cf_opt(data, &slot.data_key, read_options)
            {
                Ok(record) => record,
                Err(error) if is_incomplete(&error) => return Err(WouldBlock),
                Err(error) => return Ok(fail_all(writes.len(), &error.into())),
            };
            if let Some(bytes) = record {
                slot.stored_digest = Some(record_digest(&bytes));
                slot.object = decode_record(&bytes);
            }
        }

        for (i, write) in writes.iter().enumerate() {
            let Some(slot) = slots.get_mut(slot_of[i]) else {
                continue;
            };
            let object = match &mut slot.object {
                Ok(object) => object,
                Err(reason) => {
                    // Counted and logged once per write, as a single write would be.
                    results[i] = Some(Err(self.corrupt(slot.bucket, slot.key, reason.clone())));
                    continue;
                }
            };
            match write {
                GroupWrite::Coordinate { context, value, .. } => {
                    match self.mint(object, context, (*value).clone()) {
                        Ok(_) => {
                            slot.dirty = true;
                            results[i] = Some(Ok(object.clone()));
                        }
                        Err(error) => results[i] = Some(Err(error)),
                    }
                }
                GroupWrite::Merge {
                    object: incoming, ..
                } => {
                    let mut merged = object.clone();
                    merged.merge(incoming);
                    // Skipping unchanged writes keeps read repair and anti-entropy of
                    // already-converged keys from turning into write load.
                    if merged != *object {
                        *object = merged;
                        slot.dirty = true;
                    }
                    results[i] = Some(Ok(object.clone()));
                }
            }
        }

        let mut batch = WriteBatch::default();
        let mut leaves = Vec::new();
        for slot in slots.iter().filter(|s| s.dirty) {
            let Ok(object) = &slot.object else { continue };
            let record = encode_record(object);
            let staged = self.stage_record(
                &mut batch,
                (slot.bucket, slot.key),
                (slot.hash, &slot.data_key),
                &record,
                slot.stored_digest,
            );
            match staged {
                Ok(leaf) => leaves.push(leaf),
                Err(error) => return Ok(fail_all(writes.len(), &error)),
            }
        }
        if !leaves.is_empty() {
            let write_options = match (wait, durable) {
                (Wait::Block, true) => &self.write_options,
                (Wait::Block, false) => &self.write_unsynced,
                // `write_group` never lets a durable group run without waiting.
                (Wait::Never, _) => &self.write_no_slowdown,
            };
            let _gate = self.gate_write(wait)?;
            match self.db.write_opt(batch, write_options) {
                Ok(()) => {}
                Err(error) if is_incomplete(&error) => return Err(WouldBlock),
                Err(error) => return Ok(fail_all(writes.len(), &error.into())),
            }
            for leaf in leaves {
                self.move_leaf(leaf);
            }
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| Err(StoreError::Db("a write was left unapplied".into())))
            })
            .collect())
    }

    /// Takes the lock stripes of `data_keys`, each once, in ascending order.
    fn lock_stripes<'k>(
        &self,
        data_keys: impl Iterator<Item = &'k [u8]>,
        wait: Wait,
    ) -> Result<Vec<MutexGuard<'_, ()>>, WouldBlock> {
        let mut stripes: Vec<usize> = data_keys.map(super::stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            let lock = &self.key_locks[stripe];
            // The mutex guards no data, so a panic while it was held left nothing
            // half-updated in memory; RocksDB writes are atomic per batch.
            let guard = match wait {
                Wait::Block => lock.lock().unwrap_or_else(PoisonError::into_inner),
                Wait::Never => match lock.try_lock() {
                    Ok(guard) => guard,
                    Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(TryLockError::WouldBlock) => return Err(WouldBlock),
                },
            };
            guards.push(guard);
        }
        Ok(guards)
    }
}

/// RocksDB's answer when a read needed I/O under a cache-only read tier, or a write would
/// have stalled under `no_slowdown`.
pub(super) fn is_incomplete(error: &rocksdb::Error) -> bool {
    error.kind() == rocksdb::ErrorKind::Incomplete
}

/// The same failure for every write of a group (a full disk stays a full disk).
fn fail_all(writes: usize, error: &StoreError) -> Vec<Result<VersionedObject, StoreError>> {
    (0..writes)
        .map(|_| {
            Err(match error {
                StoreError::OutOfSpace(text) => StoreError::OutOfSpace(text.clone()),
                other => StoreError::Db(other.to_string()),
            })
        })
        .collect()
}
