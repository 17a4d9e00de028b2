//! Finding tombstones: the scan that tombstone reaping starts from.
//!
//! Reaping needs the keys whose every sibling is a tombstone. They are found by a resumable
//! scan of the `records` column family, a bounded page at a time, so a reaper round costs a
//! fixed amount of work however large the store is and the next round continues where the
//! last one stopped.

use rocksdb::{Direction, IteratorMode};

use super::{split_data_key, Store, CF_DATA};
use crate::codec::decode_record;
use crate::error::StoreError;
use crate::object::VersionedObject;

/// A key whose live state is deletion only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// Bucket name bytes.
    pub bucket: Vec<u8>,
    /// Key bytes.
    pub key: Vec<u8>,
    /// The stored object (every sibling a tombstone).
    pub object: VersionedObject,
}

/// One page of a tombstone scan.
#[derive(Clone, Debug, Default)]
pub struct TombstonePage {
    /// The tombstones found in this page.
    pub tombstones: Vec<Tombstone>,
    /// Where the next page starts (`None`: the scan reached the end).
    pub resume: Option<Vec<u8>>,
}

impl Store {
    /// Scans up to `budget` records from `resume` (or the start) and returns the deleted
    /// ones. Corrupt records are skipped (they are counted when read through `get`).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn scan_tombstones(
        &self,
        resume: Option<&[u8]>,
        budget: usize,
    ) -> Result<TombstonePage, StoreError> {
        let mode = match resume {
            Some(from) => IteratorMode::From(from, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut page = TombstonePage::default();
        for (seen, item) in self.db.iterator_cf(self.cf(CF_DATA)?, mode).enumerate() {
            let (data_key, bytes) = item?;
            if seen == budget {
                page.resume = Some(data_key.to_vec());
                return Ok(page);
            }
            let Some((_, bucket, _, key)) = split_data_key(&data_key) else {
                continue;
            };
            if let Ok(object) = decode_record(&bytes) {
                if object.is_deleted() {
                    page.tombstones.push(Tombstone {
                        bucket: bucket.to_vec(),
                        key: key.to_vec(),
                        object,
                    });
                }
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use crate::object::Value;
    use crate::store::{Store, StoreOptions};
    use crate::version::VersionVector;

    #[test]
    fn the_scan_finds_deleted_keys_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for i in 0..10u8 {
            let object = store
                .coordinate(b"b", &[i], &VersionVector::new(), Value::data("t", vec![i]))
                .unwrap();
            if i % 3 == 0 {
                store
                    .coordinate(b"b", &[i], object.clock(), Value::Tombstone)
                    .unwrap();
            }
        }
        let mut found = Vec::new();
        let mut resume = None;
        loop {
            let page = store.scan_tombstones(resume.as_deref(), 4).unwrap();
            found.extend(page.tombstones.into_iter().map(|t| t.key));
            match page.resume {
                Some(next) => resume = Some(next),
                None => break,
            }
        }
        // Records are filed by key hash: the scan finds them in that order.
        found.sort();
        assert_eq!(found, vec![vec![0], vec![3], vec![6], vec![9]]);
    }
}
