//! How the store tunes RocksDB: the block cache and memtable budgets, and the options of
//! each column family. Every figure here was measured (BENCHMARKS.md); a change to one is
//! a change to measure again.

use rocksdb::{
    BlockBasedOptions, Cache, DBCompactionStyle, DBCompressionType, MemtableFactory, Options,
    SliceTransform,
};

use super::layout::SHARD_PREFIX_LEN;

/// The default size of the block cache ([`StoreOptions::block_cache_bytes`](super::StoreOptions::block_cache_bytes)).
///
/// The cache is shared by every column family of a store, so that one bound holds
/// whatever the mix of reads: decompressed data blocks of point lookups and of
/// anti-entropy scans. Index and filter blocks stay outside it, with the open table
/// files (a few MiB per million keys): charged to a cache this size they were evicted
/// by data blocks, and 20 minutes of writes over 5 million keys ran at a quarter of the
/// speed.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 64 << 20;

/// The default budget of the memtables ([`StoreOptions::memtable_budget_bytes`](super::StoreOptions::memtable_budget_bytes)).
///
/// Without a budget shared by the column families, each one written could hold two 64
/// MiB memtables, and a node's resident set swung between 240 and 390 MiB under a long
/// write load (measured with records and digests in two column families).
pub const DEFAULT_MEMTABLE_BUDGET_BYTES: usize = 64 << 20;

/// The smallest memtable budget a store accepts: RocksDB reads 0 as "no budget", and a
/// budget of a few KiB would flush after every write group.
pub const MIN_MEMTABLE_BUDGET_BYTES: usize = 1 << 20;

/// Bloom filter density for the `records` column family: 10 bits per key gives
/// about a 1% false-positive rate, so a lookup of an absent key (every first
/// write of a key reads first) rarely touches an SST file.
const DATA_BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Table options on the store's block cache, which every column family shares.
pub(super) fn table_options(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table
}

/// Options shared by every column family (and used as the DB options).
pub(super) fn column_family_options(cache: &Cache) -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_compaction_style(DBCompactionStyle::Level);
    options.set_block_based_table_factory(&table_options(cache));
    options
}

/// Options of the `records` column family, tuned for point lookups and overwrites, for
/// a store whose memtables may hold `memtable_budget_bytes` together.
pub(super) fn data_column_family_options(cache: &Cache, memtable_budget_bytes: usize) -> Options {
    let mut table = table_options(cache);
    // Full (not block-based) filters: one probe per SST file per lookup.
    table.set_bloom_filter(DATA_BLOOM_BITS_PER_KEY, false);
    let mut options = column_family_options(cache);
    options.set_block_based_table_factory(&table);
    // A key is rewritten on every write to it, and its record rarely grows: overwrite it
    // in the memtable instead of adding a version beside the old one. The memtable then
    // holds one entry per key, so it fills and flushes less often and its lookups (three
    // per quorum write) walk a smaller skip list: 12% less CPU per write in an A/B
    // (BENCHMARKS.md). RocksDB makes point reads safe with a per-key lock, but not
    // iterators: one reading an entry while it is overwritten may read a torn length
    // and value. So no iterator of this family runs while a write does: see
    // `Store::scan_gate`.
    options.set_inplace_update_support(true);
    // Every lookup of a record in the memtable (one per read, three per quorum write)
    // walked one skip list of all its keys, 12% of a node's CPU under writes (profile in
    // BENCHMARKS.md). Hashed by shard, a lookup goes straight to the few records of its
    // shard: in an A/B, 3% to 16% less node CPU per quorum write (median 6%) and 12% to
    // 25% less per read (BENCHMARKS.md).
    options.set_prefix_extractor(SliceTransform::create_fixed_prefix(SHARD_PREFIX_LEN));
    options.set_memtable_factory(MemtableFactory::HashSkipList {
        bucket_count: memtable_buckets(memtable_budget_bytes),
        // RocksDB's defaults, for short lists: a shard holds about 15 records per
        // million keys stored, and a bucket only those written since the last flush.
        height: 4,
        branching_factor: 4,
    });
    options
}

/// The hash buckets of a `records` memtable. An empty bucket costs a pointer and a used
/// one a skip-list head (about 150 bytes, from the memtable's own budget), so there is
/// one bucket per 2 KiB of budget, up to one per shard: 32,768 buckets (under 5 MiB
/// once all are used) for the default 64 MiB.
pub(super) fn memtable_buckets(memtable_budget_bytes: usize) -> usize {
    (memtable_budget_bytes / 2048).clamp(256, 1 << (8 * SHARD_PREFIX_LEN))
}
