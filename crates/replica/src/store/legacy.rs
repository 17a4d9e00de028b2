//! Stores written in the first layout: records filed by bucket in `data`, their digests
//! in `aae`.
//!
//! That layout cost two RocksDB entries per write, the record and its anti-entropy
//! digest, and the second one was about a sixth of a node's CPU under writes. Records
//! are now filed by key hash in `records`, where a record is its own anti-entropy entry
//! (see [`super::Store`]). A store that still has the old column families is brought
//! forward when it opens, before anything else reads or writes it:
//! 1. `aae` is dropped: digests are derived from the records now.
//! 2. Every record of `data` moves to `records` under its new key, in batches that each
//!    write the new entries and delete the old ones, so a crash at any point leaves every
//!    record in exactly one of the two families and the next open carries on.
//! 3. `data`, empty, is dropped.
//!
//! Record bytes are unchanged (same codec, same CRC): only their keys move.

use std::path::Path;
use std::time::Instant;

use rocksdb::{IteratorMode, Options, WriteBatch, DB};

use super::{column_family, data_key, StoreError, CF_DATA, CF_LEGACY_AAE, CF_LEGACY_DATA, CF_META};

/// Meta key of the old `aae` family's format marker.
const META_LEGACY_AAE_FORMAT: &[u8] = b"store/aae_format";

/// Records moved per write batch.
const MOVE_BATCH: usize = 10_000;

/// Returns the old column families the store at `path` still has (none for a new store).
pub(super) fn present(options: &Options, path: &Path) -> Vec<&'static str> {
    // `list_cf` fails when there is no database yet: a new store has nothing to move.
    let existing = DB::list_cf(options, path).unwrap_or_default();
    [CF_LEGACY_DATA, CF_LEGACY_AAE]
        .into_iter()
        .filter(|name| existing.iter().any(|e| e == name))
        .collect()
}

/// Moves the records of the old layout to `records` and drops the old families
/// (`legacy`: those [`present`] found, opened with the database).
pub(super) fn migrate(db: &mut DB, legacy: &[&str]) -> Result<(), StoreError> {
    if legacy.contains(&CF_LEGACY_AAE) {
        db.drop_cf(CF_LEGACY_AAE)?;
        db.delete_cf(column_family(db, CF_META)?, META_LEGACY_AAE_FORMAT)?;
    }
    if !legacy.contains(&CF_LEGACY_DATA) {
        return Ok(());
    }
    let started = Instant::now();
    let old = column_family(db, CF_LEGACY_DATA)?;
    let new = column_family(db, CF_DATA)?;
    let mut batch = WriteBatch::default();
    let (mut moved, mut unreadable) = (0u64, 0u64);
    for entry in db.iterator_cf(old, IteratorMode::Start) {
        let (old_key, record) = entry?;
        match split_legacy_key(&old_key) {
            Some((bucket, key)) => {
                batch.put_cf(new, data_key(bucket, key)?, &record);
                moved += 1;
            }
            // No record of the old layout has such a key; it cannot be filed anywhere.
            None => unreadable += 1,
        }
        batch.delete_cf(old, &old_key);
        if batch.len() >= MOVE_BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    db.flush_wal(true)?;
    db.drop_cf(CF_LEGACY_DATA)?;
    if unreadable > 0 {
        tracing::error!(
            unreadable,
            "entries of the old data layout with an impossible key were dropped"
        );
    }
    tracing::info!(
        moved,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "records moved from the layout by bucket to the layout by key hash"
    );
    Ok(())
}

/// Splits a key of the old `data` family (bucket length `u8`, bucket, key).
fn split_legacy_key(old_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = old_key.split_first()?;
    rest.split_at_checked(usize::from(len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::codec::encode_record;
    use crate::object::VersionedObject;
    use crate::store::test_object as object;
    use crate::store::{Store, StoreOptions, CF_HINTS};

    /// A store as the first layout left it: records under `len ‖ bucket ‖ key` in `data`,
    /// digests in `aae`.
    fn write_old_store(path: &Path, records: &[(&[u8], &[u8], VersionedObject)]) {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(
            &options,
            path,
            [CF_LEGACY_DATA, CF_META, CF_HINTS, CF_LEGACY_AAE],
        )
        .unwrap();
        let data = db.cf_handle(CF_LEGACY_DATA).unwrap();
        for (bucket, key, object) in records {
            let old_key = [&[bucket.len() as u8][..], bucket, key].concat();
            db.put_cf(data, old_key, encode_record(object)).unwrap();
        }
        let aae = db.cf_handle(CF_LEGACY_AAE).unwrap();
        db.put_cf(aae, b"\x00\x00\x00\x01\x01bkey", 7u64.to_be_bytes())
            .unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, META_LEGACY_AAE_FORMAT, [1u8, 8]).unwrap();
        // An entry no record of the old layout can have: its bucket runs past its end.
        db.put_cf(data, b"\x09ab", b"x").unwrap();
    }

    #[test]
    fn a_store_of_the_old_layout_moves_its_records_and_drops_the_old_families() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<(&[u8], &[u8], VersionedObject)> = vec![
            (b"users", b"alice", object("a")),
            (b"users", b"bob", object("b")),
            (b"ab", b"c", object("c")),
            (b"a", b"bc", object("d")),
        ];
        write_old_store(dir.path(), &records);

        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for (bucket, key, object) in &records {
            assert_eq!(store.get(bucket, key).unwrap().as_ref(), Some(object));
        }
        assert!(store.bucket_has_keys(b"users").unwrap());
        assert!(store.bucket_has_keys(b"ab").unwrap());
        assert!(!store.bucket_has_keys(b"b").unwrap());
        let all_segments: Vec<u8> = (0..=u8::MAX).collect();
        let keys_in_trees: usize = (0..256)
            .flat_map(|p| store.aae_roots(p).into_iter().map(move |(b, _)| (p, b)))
            .map(|(p, bucket)| store.aae_keys(p, &bucket, &all_segments).unwrap().len())
            .sum();
        assert_eq!(keys_in_trees, 4, "every moved record is in the trees");
        drop(store);

        let families = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(
            !families.iter().any(|f| f == CF_LEGACY_DATA),
            "{families:?}"
        );
        assert!(!families.iter().any(|f| f == CF_LEGACY_AAE), "{families:?}");
        // And a second open finds the new layout alone.
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let meta = store.cf(CF_META).unwrap();
        assert_eq!(store.db.get_cf(meta, META_LEGACY_AAE_FORMAT).unwrap(), None);
        assert_eq!(store.get(b"users", b"bob").unwrap(), Some(object("b")));
    }

    #[test]
    fn an_interrupted_move_carries_on_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        write_old_store(dir.path(), &[(b"b", b"moved", object("m"))]);
        // The state a crash between two batches leaves: one record already in `records`,
        // one still in `data`.
        {
            let mut db = DB::open_cf(
                &Options::default(),
                dir.path(),
                [CF_LEGACY_DATA, CF_META, CF_HINTS, CF_LEGACY_AAE],
            )
            .unwrap();
            db.create_cf(CF_DATA, &Options::default()).unwrap();
            let records = db.cf_handle(CF_DATA).unwrap();
            db.put_cf(
                records,
                data_key(b"b", b"already").unwrap(),
                encode_record(&object("n")),
            )
            .unwrap();
        }
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.get(b"b", b"moved").unwrap(), Some(object("m")));
        assert_eq!(store.get(b"b", b"already").unwrap(), Some(object("n")));
    }
}
