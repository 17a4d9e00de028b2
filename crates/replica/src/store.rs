//! The replica's RocksDB store: versioned objects by bucket and key, the
//! node's small metadata, and hinted-handoff records.
//!
//! The store owns the read-modify-write of a key. Coordinated writes and
//! merges read the local object, apply the algebra of [`crate::object`], and
//! write the result, under a per-key lock so that two writes to one key at
//! one replica never interleave (an interleaving could mint the same dot
//! twice or lose one side of a merge). The lock is a striped
//! `std::sync::Mutex`: memory stays fixed however many keys there are, and
//! two keys sharing a stripe merely wait for each other for the length of one
//! read and one write.
//!
//! # Durability policy
//! The write-ahead log is always on. A write is acknowledged once it is in
//! the WAL, so killing the process (even with SIGKILL) loses nothing that was
//! acknowledged: the operating system still holds the WAL pages. With
//! [`SyncPolicy::Always`] every write also fsyncs the WAL before returning,
//! so a power loss or kernel crash loses nothing either, at the cost of one
//! fsync per write; RocksDB groups concurrent writers into one fsync, so the
//! cost falls as concurrency rises. With [`SyncPolicy::None`] a power loss
//! may lose the last writes the kernel had not yet flushed; other replicas
//! still hold them and anti-entropy or read repair brings them back. The
//! actor id is always written with fsync, whatever the policy: it must be
//! durable before any dot is minted under it.
//!
//! A caller may also write without the fsync and sync later
//! ([`Store::write_group_unsynced`], [`Store::sync_wal`]), to overlap the
//! fsync with other work. Whatever was minted but not yet synced could be
//! lost to a power loss after other replicas received it, so a store takes a
//! new actor id every time it opens (see [`Store::open`]) and can never mint a
//! lost dot again.
//!
//! # Corruption
//! A record that fails its CRC or does not decode is reported as
//! [`StoreError::Corrupt`], counted (see [`Store::corrupt_records`] and the
//! `quorumkv_corrupt_records_total` metric) and logged. The store never
//! writes over a record it cannot read: a coordinated write over unknown
//! state could mint a dot that the lost state had already used, which is the
//! lost-write bug that per-incarnation actors exist to prevent. The record
//! is left for repair from other replicas.
//!
//! # Full disk
//! When the disk fills, the write that cannot grow the WAL fails with
//! [`StoreError::OutOfSpace`] and RocksDB stops accepting writes (a "hard"
//! background error); reads go on. Nothing acknowledged is lost: a write
//! that failed was never acknowledged by this replica. RocksDB resumes by
//! itself, without a restart: its file manager checks the free space every
//! 5 seconds and resumes once at least its reserved buffer is free, which is
//! one memtable (64 MiB with the options here). Until then every write
//! fails the same way, at once. The other replicas keep hints for what this
//! one missed, and hinted handoff and anti-entropy bring it up to date
//! afterwards.
//!
//! # Threads
//! Every method blocks on RocksDB I/O. Callers on an async runtime run them
//! on a blocking thread (e.g. `tokio::task::spawn_blocking`), never directly
//! on a worker thread, with two exceptions made for that purpose:
//! [`Store::get_cached`] and [`Store::write_group`] with [`Wait::Never`]
//! refuse, with [`WouldBlock`], whatever would wait (I/O, a held lock, a
//! write stall, an fsync), so an async thread may call them and fall back to
//! a blocking thread. The per-key lock is a plain mutex: it is never held
//! across an await.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};

use rocksdb::{
    Cache, ColumnFamily, ColumnFamilyDescriptor, Env, ReadOptions, ReadTier, WriteOptions, DB,
};

use crate::codec::decode_record;
use crate::error::{CodecError, StoreError};
use crate::object::{Value, VersionedObject};
use crate::version::{ActorId, Dot, VersionVector};

mod antientropy;
mod cleanup;
mod engine;
mod group;
mod hints;
mod incarnation;
mod layout;
mod legacy;
mod meta;
mod options;
mod tombstones;
mod tuning;

pub use antientropy::{AAE_SEGMENTS, MAX_PARTITION_BITS};
pub use cleanup::Dropped;
pub use engine::{ColumnFamilyStats, EngineStats};
pub use group::{GroupWrite, Wait, WouldBlock};
pub use hints::{Hint, HintRefusal};
pub use options::{
    StoreOptions, SyncPolicy, DEFAULT_MAX_CLOCK_ENTRIES, DEFAULT_MAX_OBJECT_BYTES,
    DEFAULT_MAX_SIBLINGS,
};
pub use tombstones::{Tombstone, TombstonePage};
pub use tuning::{
    DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_MEMTABLE_BUDGET_BYTES, MIN_MEMTABLE_BUDGET_BYTES,
};

use self::incarnation::start_incarnation;
use self::layout::{
    data_key, data_key_of, display_key, prefix_successor, shard_bucket_prefix, split_data_key,
    SHARD_PREFIX_LEN,
};
use self::tuning::{column_family_options, data_column_family_options};

/// Column family of versioned objects, filed by key hash (layout in `store/layout.rs`).
const CF_DATA: &str = "records";
/// Column family of small named values.
const CF_META: &str = "meta";
/// Column family reserved for hinted handoff.
const CF_HINTS: &str = "hints";
/// Column families of the first layout, filed by bucket: the records (`data`) and
/// their digests (`aae`). A store that still has them moves its records to [`CF_DATA`]
/// when it opens, then drops them (see `store/legacy.rs`).
const CF_LEGACY_DATA: &str = "data";
const CF_LEGACY_AAE: &str = "aae";

/// Namespace of meta keys written through [`Store::put_meta`].
const META_NODE_PREFIX: &[u8] = b"node/";

/// Number of per-key lock stripes; a power of two well above the number of
/// threads that can write at once, so unrelated keys rarely share a stripe.
const KEY_LOCK_STRIPES: usize = 1024;

/// One RocksDB database per node.
///
/// Column families: `records`, one record per key as written by
/// [`crate::codec::encode_record`], filed by the key's hash; `meta`, small named values
/// (the store's own under `store/`, the node's under `node/`); `hints`, the records of
/// hinted handoff. The keys of `records` and `meta` are laid out as `store/layout.rs`
/// says.
///
/// The anti-entropy hash trees are built from a scan of `records` at open and kept in
/// memory (`store/antientropy.rs`).
///
/// `Store` is `Send + Sync`; share it behind an `Arc`.
pub struct Store {
    db: DB,
    actor: ActorId,
    /// The highest counter `actor` has minted, for any key; the next dot is above it.
    minted: AtomicU64,
    /// The planted bug of [`Store::plant_actor_reuse`]: each key's next dot counts from
    /// its record alone, not from `minted`.
    count_per_key: bool,
    /// [`StoreOptions::max_siblings`].
    max_siblings: usize,
    /// [`StoreOptions::max_object_bytes`].
    max_object_bytes: usize,
    /// [`StoreOptions::max_clock_entries`].
    max_clock_entries: usize,
    sync: SyncPolicy,
    write_options: WriteOptions,
    /// Writes that never fsync, whatever the policy: [`Store::write_group_unsynced`].
    write_unsynced: WriteOptions,
    /// `write_unsynced` that fail with `Incomplete` instead of waiting out a write stall
    /// (for [`Wait::Never`]; never used to fsync).
    write_no_slowdown: WriteOptions,
    /// Reads that may do I/O.
    read_any: ReadOptions,
    /// Reads served from the memtables and the block cache only, failing with
    /// `Incomplete` where I/O would be needed (for [`Wait::Never`]).
    read_cached: ReadOptions,
    /// Serialises read-modify-write per key. A std mutex because it guards
    /// no data and is held only across one RocksDB read and one write on a
    /// blocking thread.
    key_locks: Box<[Mutex<()>]>,
    corrupt_records: AtomicU64,
    /// How many hints the `hints` column family holds (counted at open, then kept).
    hint_count: AtomicU64,
    /// The anti-entropy hash trees, one per (partition, bucket).
    aae: antientropy::HashTrees,
    /// Keeps iterators of `records` and writes to it apart. Records are overwritten in
    /// place in the memtable (see `data_column_family_options`), which RocksDB makes safe
    /// for point reads only; so a write batch holds the shared side while RocksDB applies
    /// it ([`Store::gate_write`]), and a scan of `records` holds the exclusive side while
    /// it reads entries ([`Store::gate_scan`]), a short chunk at a time so that writes
    /// never wait long. Opening the store scans with no writer about.
    scan_gate: RwLock<()>,
}

// The coordinator shares one store across threads; keep that a compile error
// to break rather than a surprise downstream.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating the directory, the column
    /// families and the actor id if they are missing.
    ///
    /// Every open takes a new actor id, and this actor's counter starts at 0 and
    /// rises with every dot minted, for any key (see [`VersionedObject::update_from`]).
    /// Nothing persistent can then make it mint a dot twice:
    /// - a write minted just before a crash may have reached other replicas without
    ///   reaching this WAL durably (under [`SyncPolicy::None`], or with
    ///   [`Store::write_group_unsynced`]);
    /// - a data directory restored from a copy (a backup, a disk snapshot) holds the
    ///   state of an earlier moment, and the dots minted since are in other replicas'
    ///   clocks;
    /// - a key whose tombstone was reaped has no object left here to count from.
    ///
    /// In each case an actor that went on would mint dots other replicas' clocks
    /// already cover, and they would drop the new writes as "already seen" (Riak's
    /// KV679). The price is one more clock entry per start for the keys written
    /// afterwards.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created,
    /// [`StoreError::Db`] if RocksDB cannot open it,
    /// [`StoreError::Corrupt`] if the stored actor id is unreadable, and
    /// [`StoreError::InvalidOptions`] for a memtable budget under
    /// [`MIN_MEMTABLE_BUDGET_BYTES`] or more than [`MAX_PARTITION_BITS`] partition bits.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        if options.memtable_budget_bytes < MIN_MEMTABLE_BUDGET_BYTES {
            return Err(StoreError::InvalidOptions(format!(
                "memtable_budget_bytes is {}; at least {MIN_MEMTABLE_BUDGET_BYTES} is required",
                options.memtable_budget_bytes
            )));
        }
        std::fs::create_dir_all(path)?;

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut db_options = column_family_options(&cache);
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // RocksDB's info log is for operators; a few files are plenty.
        db_options.set_keep_log_file_num(4);
        db_options.set_db_write_buffer_size(options.memtable_budget_bytes);
        // In-place updates of `records` (below) need memtable writes to be applied by one
        // thread at a time; RocksDB's write leader applies a whole write group anyway.
        db_options.set_allow_concurrent_memtable_write(false);
        // RocksDB's flushes run at the lowest CPU priority (nice 19): they have seconds to
        // finish, requests have milliseconds. A flush is a burst of CPU (the hashed
        // memtable is sorted whole before it is written), and the owners of a key flush
        // together, as they hold the same writes: at normal priority, writes at half the
        // cluster's capacity stalled for 200 to 740 ms at each flush, and now for tens
        // (BENCHMARKS.md, "Flushes at low priority"). A flush still gets every cycle the
        // requests leave. Compactions stay at the requests' priority: at nice 19 they fell
        // behind under sustained load, and the same data took 1.8 times the space on disk
        // ("Memory over 20 minutes"). The setting is RocksDB's process-wide default
        // environment, so it holds for every store opened.
        let mut env = Env::new().map_err(|e| StoreError::Db(e.to_string()))?;
        env.lower_high_priority_thread_pool_cpu_priority();
        db_options.set_env(&env);

        let mut column_families = vec![
            ColumnFamilyDescriptor::new(
                CF_DATA,
                data_column_family_options(&cache, options.memtable_budget_bytes),
            ),
            ColumnFamilyDescriptor::new(CF_META, column_family_options(&cache)),
            ColumnFamilyDescriptor::new(CF_HINTS, column_family_options(&cache)),
        ];
        let legacy = legacy::present(&db_options, path);
        column_families.extend(
            legacy
                .iter()
                .map(|&name| ColumnFamilyDescriptor::new(name, column_family_options(&cache))),
        );
        let mut db = DB::open_cf_descriptors(&db_options, path, column_families)?;
        let (actor, planted_reuse) = start_incarnation(&db)?;
        legacy::migrate(&mut db, &legacy)?;
        let aae = antientropy::HashTrees::open(&db, options.partition_bits)?;
        tracing::info!(path = %path.display(), %actor, "replica store opened");

        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync == SyncPolicy::Always);
        let write_unsynced = WriteOptions::default();
        let mut write_no_slowdown = WriteOptions::default();
        write_no_slowdown.set_no_slowdown(true);
        let mut read_cached = ReadOptions::default();
        read_cached.set_read_tier(ReadTier::BlockCache);

        let store = Store {
            db,
            actor,
            minted: AtomicU64::new(0),
            count_per_key: planted_reuse,
            max_siblings: options.max_siblings,
            max_object_bytes: options.max_object_bytes,
            max_clock_entries: options.max_clock_entries,
            sync: options.sync,
            write_options,
            write_unsynced,
            write_no_slowdown,
            read_any: ReadOptions::default(),
            read_cached,
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            corrupt_records: AtomicU64::new(0),
            hint_count: AtomicU64::new(0),
            aae,
            scan_gate: RwLock::new(()),
        };
        let hints = store.count_hints()?;
        store.hint_count.store(hints, Ordering::Relaxed);
        // Hints survive a restart: report them now, not only at the next change.
        metrics::gauge!("quorumkv_hints_pending").set(hints as f64);
        Ok(store)
    }

    /// Returns this database incarnation's actor id, the one that mints the
    /// dots of writes coordinated here.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Mints this actor's next dot for `object`: drops what `context` covers and adds
    /// `value` (see [`VersionedObject::update_from`]). The caller holds the key's lock.
    /// Refuses, leaving `object` as it was, a write that would leave the key with more
    /// siblings than it may hold without resolving any, or a record over its size limit.
    fn mint(
        &self,
        object: &mut VersionedObject,
        context: &VersionVector,
        value: Value,
    ) -> Result<Dot, StoreError> {
        let preview = object.preview_update(self.actor, context, &value);
        if preview.siblings > self.max_siblings && preview.resolved == 0 {
            return Err(StoreError::TooManySiblings {
                count: object.siblings().len(),
            });
        }
        if preview.bytes > self.max_object_bytes {
            return Err(StoreError::ObjectTooLarge {
                bytes: preview.bytes,
                max: self.max_object_bytes,
            });
        }
        if preview.clock_entries > self.max_clock_entries && !value.is_tombstone() {
            return Err(StoreError::ClockTooLarge {
                entries: preview.clock_entries,
                max: self.max_clock_entries,
            });
        }
        let minted = self.minted.load(Ordering::Relaxed);
        let claimed = context.get(self.actor);
        // Every context naming this actor was answered after its dot was counted in
        // `minted`, and an actor never outlives its open: a context ahead of it comes
        // from elsewhere. The planted actor reuse keeps the old actor, whose earlier
        // dots the count of this open does not know, so it skips the check.
        if claimed > minted && !self.count_per_key {
            return Err(StoreError::ContextAhead { claimed, minted });
        }
        let floor = if self.count_per_key {
            1
        } else {
            minted.saturating_add(1)
        };
        let dot = object
            .update_from(self.actor, floor, context, value)
            .map_err(StoreError::Version)?;
        // Two keys minting at once may take the same counter: harmless, a dot must be new
        // for its key only. What matters is that the counter never goes back.
        self.minted.fetch_max(dot.counter, Ordering::Relaxed);
        Ok(dot)
    }

    /// Returns the object stored for `bucket`/`key`, or `None` if the key was
    /// never written here.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] (counted and logged) if the record does not
    /// decode; [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<VersionedObject>, StoreError> {
        self.read(bucket, key, Wait::Block)
            .unwrap_or_else(|WouldBlock| Err(StoreError::Db("a blocking read would block".into())))
    }

    /// [`Store::get`] if it can answer without I/O, from the memtables and the block
    /// cache (microseconds, so an async thread may call it); `Err(WouldBlock)` otherwise.
    ///
    /// # Errors
    /// [`WouldBlock`] when the record is not cached; otherwise those of [`Store::get`].
    #[allow(clippy::type_complexity)] // the answer of `get`, inside the reason not to have one
    pub fn get_cached(
        &self,
        bucket: &[u8],
        key: &[u8],
    ) -> Result<Result<Option<VersionedObject>, StoreError>, WouldBlock> {
        self.read(bucket, key, Wait::Never)
    }

    #[allow(clippy::type_complexity)] // as `get_cached`
    fn read(
        &self,
        bucket: &[u8],
        key: &[u8],
        wait: Wait,
    ) -> Result<Result<Option<VersionedObject>, StoreError>, WouldBlock> {
        let data_key = match data_key(bucket, key) {
            Ok(data_key) => data_key,
            Err(error) => return Ok(Err(error)),
        };
        let cf = match self.cf(CF_DATA) {
            Ok(cf) => cf,
            Err(error) => return Ok(Err(error)),
        };
        let options = match wait {
            Wait::Block => &self.read_any,
            Wait::Never => &self.read_cached,
        };
        let bytes = match self.db.get_pinned_cf_opt(cf, &data_key, options) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(Ok(None)),
            Err(error) if group::is_incomplete(&error) => return Err(WouldBlock),
            Err(error) => return Ok(Err(error.into())),
        };
        Ok(match decode_record(&bytes) {
            Ok(object) => Ok(Some(object)),
            Err(reason) => Err(self.corrupt(bucket, key, reason)),
        })
    }

    /// Under a per-key lock: reads the local object, applies
    /// [`VersionedObject::update_from`] with this store's actor and counter, the
    /// client's `context` and `value`, and writes the result. Returns the new full
    /// object; the write just made is its sibling
    /// [`VersionedObject::latest_of`] this store's actor.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the local record is unreadable, and then
    /// nothing is written: minting over an unreadable record could reuse a
    /// dot. [`StoreError::Version`] if the counter would overflow.
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn coordinate(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: &VersionVector,
        value: Value,
    ) -> Result<VersionedObject, StoreError> {
        let write = GroupWrite::Coordinate {
            bucket,
            key,
            context,
            value: &value,
        };
        self.write_one(write)
    }

    /// Under the per-key lock: reads the local object, merges `incoming`
    /// into it, and writes the result if it changed. Returns the merged
    /// object.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `incoming` breaks an object invariant
    /// (checked before anything is read). [`StoreError::Corrupt`] if the
    /// local record is unreadable, and then nothing is written.
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn merge(
        &self,
        bucket: &[u8],
        key: &[u8],
        incoming: &VersionedObject,
    ) -> Result<VersionedObject, StoreError> {
        self.write_one(GroupWrite::Merge {
            bucket,
            key,
            object: incoming,
        })
    }

    /// One write as a group of one.
    fn write_one(&self, write: GroupWrite<'_>) -> Result<VersionedObject, StoreError> {
        self.write_group(&[write], Wait::Block)
            .map_err(|WouldBlock| StoreError::Db("a blocking write would block".into()))?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Db("a write was left unapplied".into())))
    }

    /// Whether any record (live or tombstone) exists under `bucket`. Answered from the
    /// anti-entropy trees, which count the keys of each (partition, bucket): records are
    /// filed by hash, so a bucket's keys are spread over every shard.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`].
    pub fn bucket_has_keys(&self, bucket: &[u8]) -> Result<bool, StoreError> {
        u8::try_from(bucket.len()).map_err(|_| StoreError::BucketTooLong(bucket.len()))?;
        Ok(self.aae.holds_bucket(bucket))
    }

    /// Makes every write done so far durable: an fsync of the WAL. What
    /// [`Store::write_group_unsynced`] defers. Blocks for the fsync.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Returns the store's durability policy.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// Flushes memtables and the WAL, for a graceful shutdown: the next open
    /// starts without WAL replay.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        for name in [CF_DATA, CF_META, CF_HINTS] {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }

    /// Returns the number of corrupt records detected since open.
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt_records.load(Ordering::Relaxed)
    }

    /// Takes the shared side of the scan gate, for a write to `records`; under
    /// [`Wait::Never`], only if no scan holds it.
    fn gate_write(&self, wait: Wait) -> Result<RwLockReadGuard<'_, ()>, WouldBlock> {
        // The gate guards no data: a panic while it was held left nothing to repair.
        match wait {
            Wait::Block => Ok(self
                .scan_gate
                .read()
                .unwrap_or_else(PoisonError::into_inner)),
            Wait::Never => match self.scan_gate.try_read() {
                Ok(guard) => Ok(guard),
                Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => Err(WouldBlock),
            },
        }
    }

    /// Takes the exclusive side of the scan gate, for reading entries of `records`
    /// through an iterator; hold it for a short chunk of entries at a time.
    fn gate_scan(&self) -> RwLockWriteGuard<'_, ()> {
        self.scan_gate
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns a column family handle; they all exist once `open` succeeded.
    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        column_family(&self.db, name)
    }

    /// Takes the lock stripe of a data key.
    fn lock_key(&self, data_key: &[u8]) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic while it was held left nothing
        // half-updated in memory; RocksDB writes are atomic per key.
        self.key_locks[stripe_of(data_key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts, reports and logs a corrupt record, and returns its error.
    fn corrupt(&self, bucket: &[u8], key: &[u8], reason: CodecError) -> StoreError {
        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("quorumkv_corrupt_records_total").increment(1);
        let key = display_key(bucket, key);
        tracing::error!(%key, %reason, "corrupt record; it will not be overwritten locally");
        StoreError::Corrupt { key, reason }
    }
}

/// Returns the lock stripe of a data key (or a hint key).
fn stripe_of(data_key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(data_key) % KEY_LOCK_STRIPES as u64) as usize
}

/// Returns a column family handle by name.
fn column_family<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Db(format!("column family {name:?} is missing")))
}

impl Drop for Store {
    /// Makes every write durable before the store closes.
    fn drop(&mut self) {
        if let Err(error) = self.db.flush_wal(true) {
            tracing::warn!(%error, "cannot sync the WAL at close");
        }
    }
}

/// A one-version object of `text`, minted by a fixed actor: for the store's unit tests.
#[cfg(test)]
fn test_object(text: &str) -> VersionedObject {
    test_object_by(1, text)
}

/// A one-version object of `text` minted by `actor`: concurrent with those of other
/// actors.
#[cfg(test)]
fn test_object_by(actor: u64, text: &str) -> VersionedObject {
    let mut object = VersionedObject::new();
    object
        .update(
            crate::version::ActorId(actor),
            &VersionVector::new(),
            Value::data("t", text.as_bytes().to_vec()),
        )
        .expect("a first version of a new object");
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of each thread of this process whose name starts with `prefix`.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(prefix: &str) -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let task = task.expect("a task").path();
            let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
                continue; // the thread ended meanwhile
            };
            if name.trim_end().starts_with(prefix) {
                found.push(nice_in(
                    &std::fs::read_to_string(task.join("stat")).expect("stat"),
                ));
            }
        }
        found
    }

    /// The nice value in a `/proc/.../stat` line: the 19th field, the 17th after the
    /// thread's name (which is in parentheses and may hold spaces).
    #[cfg(target_os = "linux")]
    fn nice_in(stat: &str) -> i64 {
        let after_name = &stat[stat.rfind(')').expect("a name in parentheses") + 1..];
        after_name
            .split_whitespace()
            .nth(16)
            .and_then(|field| field.parse().ok())
            .expect("a nice value")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn flushes_run_at_the_lowest_cpu_priority_and_requests_do_not() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        store
            .coordinate(
                b"b",
                b"k",
                &VersionVector::new(),
                Value::data("t", vec![1; 10]),
            )
            .expect("write");
        // A pool's thread lowers itself before the next job it runs: this flush is one.
        store.flush().expect("flush");
        let flushers = nice_of_threads("rocksdb:high");
        assert!(
            flushers.contains(&19),
            "no flush thread at nice 19: {flushers:?}"
        );
        let this_thread =
            nice_in(&std::fs::read_to_string("/proc/thread-self/stat").expect("stat"));
        assert!(
            this_thread < 19,
            "the caller's thread was lowered too: {this_thread}"
        );
    }

    #[test]
    fn overwrites_read_back_the_last_record_whatever_its_size() {
        // Records overwritten in place when they do not grow, appended when they do.
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let mut context = VersionVector::new();
        for (i, size) in [100usize, 100, 10, 300, 5, 0, 50].into_iter().enumerate() {
            let value = Value::data("t", vec![i as u8; size]);
            let written = store
                .coordinate(b"b", b"k", &context, value.clone())
                .expect("write");
            context = written.clock().clone();
            let read = store.get(b"b", b"k").expect("read").expect("present");
            assert_eq!(read, written);
            assert_eq!(read.siblings().len(), 1);
            // An iterator sees the one record too, as it is now.
            let cf = store.cf(CF_DATA).expect("records");
            let mut total_order = ReadOptions::default();
            total_order.set_total_order_seek(true);
            let scanned: Vec<_> = store
                .db
                .iterator_cf_opt(cf, total_order, rocksdb::IteratorMode::Start)
                .map(|entry| decode_record(&entry.expect("entry").1).expect("decodes"))
                .collect();
            assert_eq!(scanned, [written]);
        }
        store.flush().expect("flush");
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        let read = store.get(b"b", b"k").expect("read").expect("present");
        assert_eq!(read.clock(), &context);
    }
}
