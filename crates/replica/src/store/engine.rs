//! RocksDB's own figures about the store, for monitoring: SST and memtable sizes, the
//! block cache and the memory of open table files, compaction debt, write stalls, an
//! estimate of the number of keys.
//!
//! Every figure is read from a RocksDB property, which RocksDB keeps up to date anyway:
//! reading them costs a few lookups under RocksDB's DB mutex and no I/O, and nothing is
//! added to the write path (a RocksDB `Statistics` object would count on every write).
//! A property RocksDB does not know (a different RocksDB version) reads as `None`.

use rocksdb::properties::{self, PropName};

use super::{Store, CF_DATA, CF_HINTS, CF_META};
use crate::error::StoreError;

/// The column families whose figures [`Store::engine_stats`] reports (RocksDB's `default`
/// one stays empty).
const REPORTED_COLUMN_FAMILIES: [&str; 3] = [CF_DATA, CF_META, CF_HINTS];

/// Per column family write stall counts, as a multi-line string such as
/// `Write Stall (count): ..., total-delays: 0, total-stops: 0`. Only the string form is
/// reachable through the C API, hence the parsing in [`stall_count`].
const CF_WRITE_STALL_STATS: &str = "rocksdb.cf-write-stall-stats";

/// Figures of the whole database, read by [`Store::engine_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// One entry per column family of the store.
    pub column_families: Vec<ColumnFamilyStats>,
    /// Whether RocksDB stops writes now (`rocksdb.is-write-stopped`).
    pub write_stopped: Option<bool>,
    /// The rate, in bytes per second, RocksDB slows writes to while it delays them, or 0
    /// when it does not (`rocksdb.actual-delayed-write-rate`).
    pub delayed_write_rate: Option<u64>,
    /// Compactions running now (`rocksdb.num-running-compactions`).
    pub running_compactions: Option<u64>,
    /// RocksDB's estimate of the keys in the `records` column family, tombstones included
    /// (`rocksdb.estimate-num-keys`); overwrites not yet compacted count more than once.
    pub estimated_keys: Option<u64>,
    /// Capacity of the block cache the column families share, in bytes
    /// (`rocksdb.block-cache-capacity`).
    pub block_cache_capacity: Option<u64>,
    /// Bytes the block cache holds now (`rocksdb.block-cache-usage`).
    pub block_cache_usage: Option<u64>,
}

/// Figures of one column family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnFamilyStats {
    /// The column family's name (`records`, `meta`, `hints`).
    pub name: &'static str,
    /// Bytes of its SST files, those of older versions still in use included
    /// (`rocksdb.total-sst-files-size`).
    pub sst_bytes: Option<u64>,
    /// Bytes of its active and immutable memtables (`rocksdb.cur-size-all-mem-tables`).
    pub memtable_bytes: Option<u64>,
    /// Bytes its open SST files hold in memory outside the block cache, mostly index and
    /// filter blocks (`rocksdb.estimate-table-readers-mem`); grows with the data.
    pub table_readers_bytes: Option<u64>,
    /// Bytes compaction must rewrite to bring every level under its target size
    /// (`rocksdb.estimate-pending-compaction-bytes`); RocksDB delays, then stops, writes
    /// when this grows past its limits.
    pub pending_compaction_bytes: Option<u64>,
    /// Times writes were delayed because of this column family since the store opened.
    pub write_delays: Option<u64>,
    /// Times writes were stopped because of this column family since the store opened.
    pub write_stops: Option<u64>,
}

impl Store {
    /// Returns RocksDB's figures about this store. Cheap: in-memory lookups under
    /// RocksDB's DB mutex, no I/O; still a blocking call, like every store method.
    ///
    /// # Errors
    /// [`StoreError::Db`] if RocksDB refuses a property read.
    pub fn engine_stats(&self) -> Result<EngineStats, StoreError> {
        let mut column_families = Vec::with_capacity(REPORTED_COLUMN_FAMILIES.len());
        for name in REPORTED_COLUMN_FAMILIES {
            let cf = self.cf(name)?;
            let int = |property: &PropName| self.db.property_int_value_cf(cf, property);
            let stalls = self.db.property_value_cf(cf, CF_WRITE_STALL_STATS)?;
            column_families.push(ColumnFamilyStats {
                name,
                sst_bytes: int(properties::TOTAL_SST_FILES_SIZE)?,
                memtable_bytes: int(properties::CUR_SIZE_ALL_MEM_TABLES)?,
                table_readers_bytes: int(properties::ESTIMATE_TABLE_READERS_MEM)?,
                pending_compaction_bytes: int(properties::ESTIMATE_PENDING_COMPACTION_BYTES)?,
                write_delays: stalls
                    .as_deref()
                    .and_then(|s| stall_count(s, "total-delays")),
                write_stops: stalls
                    .as_deref()
                    .and_then(|s| stall_count(s, "total-stops")),
            });
        }
        let db_int = |property: &PropName| self.db.property_int_value(property);
        // Every column family reports the one cache they share; `data` stands for all.
        let data = self.cf(CF_DATA)?;
        let cache = |property: &PropName| self.db.property_int_value_cf(data, property);
        Ok(EngineStats {
            column_families,
            write_stopped: db_int(properties::IS_WRITE_STOPPED)?.map(|v| v != 0),
            delayed_write_rate: db_int(properties::ACTUAL_DELAYED_WRITE_RATE)?,
            running_compactions: db_int(properties::NUM_RUNNING_COMPACTIONS)?,
            estimated_keys: self
                .db
                .property_int_value_cf(data, properties::ESTIMATE_NUM_KEYS)?,
            block_cache_capacity: cache(properties::BLOCK_CACHE_CAPACITY)?,
            block_cache_usage: cache(properties::BLOCK_CACHE_USAGE)?,
        })
    }
}

/// The count after `key: ` in RocksDB's write stall summary (`a: 1, key: 2, b: 3`).
fn stall_count(summary: &str, key: &str) -> Option<u64> {
    summary
        .split([',', '\n'])
        .filter_map(|item| item.split_once(": "))
        .find(|(name, _)| name.trim() == key)
        .and_then(|(_, count)| count.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_counts_are_read_from_rocksdb_summary() {
        let summary =
            "Write Stall (count): cf-l0-file-count-limit-delays-with-ongoing-compaction: 4, \
                       memtable-limit-stops: 1, total-delays: 7, total-stops: 2\n";
        assert_eq!(stall_count(summary, "total-delays"), Some(7));
        assert_eq!(stall_count(summary, "total-stops"), Some(2));
        assert_eq!(stall_count(summary, "total-slowdowns"), None);
        assert_eq!(
            stall_count("Write Stall (count): total-stops: x\n", "total-stops"),
            None
        );
    }

    #[test]
    fn engine_stats_see_writes_in_the_memtable_and_in_sst_files_after_a_flush() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), crate::store::StoreOptions::default()).expect("open");
        let empty = store.engine_stats().expect("stats");
        let data = |stats: &EngineStats| {
            stats
                .column_families
                .iter()
                .find(|cf| cf.name == CF_DATA)
                .cloned()
                .expect("the records column family is reported")
        };
        assert_eq!(empty.column_families.len(), 3);
        assert_eq!(data(&empty).sst_bytes, Some(0));
        assert_eq!(empty.write_stopped, Some(false));
        assert_eq!(data(&empty).write_stops, Some(0));
        assert_eq!(data(&empty).write_delays, Some(0));

        // More than the memtable's first block of memory, which its size counts whole.
        for i in 0..2000u32 {
            store
                .raw_put(b"bucket", &i.to_be_bytes(), &[7; 1000])
                .expect("put");
        }
        let written = store.engine_stats().expect("stats");
        let memtable = data(&written).memtable_bytes.expect("memtable size");
        let empty_memtable = data(&empty).memtable_bytes.expect("memtable size");
        assert!(
            memtable >= empty_memtable + 2000 * 1000,
            "2000 values of 1000 bytes, memtable {empty_memtable} -> {memtable}"
        );
        assert_eq!(written.estimated_keys, Some(2000));

        store.flush().expect("flush");
        let flushed = store.engine_stats().expect("stats");
        let sst = data(&flushed).sst_bytes.expect("SST size");
        // LZ4 shrinks the repeated bytes, but an SST file has a footer, index and filter.
        assert!(sst > 0, "no SST bytes after a flush: {flushed:?}");
        assert!(
            data(&flushed).memtable_bytes < Some(memtable),
            "the flush emptied the memtable: {flushed:?}"
        );
        assert_eq!(flushed.estimated_keys, Some(2000));
        assert_eq!(flushed.running_compactions.map(|n| n <= 1), Some(true));
        assert_eq!(
            flushed.block_cache_capacity,
            Some(crate::store::DEFAULT_BLOCK_CACHE_BYTES as u64)
        );
        // The flushed file is open, with its index and filter in memory.
        assert!(
            data(&flushed).table_readers_bytes > Some(0),
            "no table reader memory after a flush: {flushed:?}"
        );
    }

    #[test]
    fn the_block_cache_and_memtable_budget_are_the_ones_asked_for() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = crate::store::StoreOptions {
            block_cache_bytes: 8 << 20,
            memtable_budget_bytes: 8 << 20,
            ..crate::store::StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).expect("open");
        let stats = store.engine_stats().expect("stats");
        assert_eq!(stats.block_cache_capacity, Some(8 << 20));
        drop(store);
        // RocksDB records the budget in the options file of the database.
        let options_file = std::fs::read_dir(dir.path())
            .expect("list the database")
            .filter_map(Result::ok)
            .find(|entry| entry.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .expect("an options file");
        let text = std::fs::read_to_string(options_file.path()).expect("read the options file");
        assert!(
            text.contains(&format!("db_write_buffer_size={}", 8 << 20)),
            "the memtable budget is not in the options file"
        );
    }

    #[test]
    fn a_memtable_budget_below_the_minimum_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = crate::store::StoreOptions {
            memtable_budget_bytes: 0,
            ..crate::store::StoreOptions::default()
        };
        let error = Store::open(dir.path(), options).expect_err("a budget of 0 is refused");
        assert!(
            matches!(&error, StoreError::InvalidOptions(message) if message.contains("memtable_budget_bytes")),
            "{error}"
        );
        assert!(
            std::fs::read_dir(dir.path())
                .expect("list")
                .next()
                .is_none(),
            "nothing was created for a refused store"
        );
    }
}
