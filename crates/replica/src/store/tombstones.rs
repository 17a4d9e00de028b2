//! Finding tombstones: the scan that tombstone reaping starts from.
//!
//! Reaping needs the keys whose every sibling is a tombstone. They are found by a resumable
//! scan of the `records` column family, a bounded page at a time, so a reaper round costs a
//! fixed amount of work however large the store is and the next round continues where the
//! last one stopped.

use super::{split_data_key, Store, CF_DATA};
use crate::codec::decode_record;
use crate::error::StoreError;
use crate::object::VersionedObject;

/// Records read per hold of the scan gate.
const SCAN_CHUNK: usize = 256;

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
        let mut page = TombstonePage::default();
        let mut from = resume.map(<[u8]>::to_vec);
        let mut seen = 0;
        loop {
            let (chunk, next) = self.scan_chunk(from.as_deref())?;
            for (data_key, bytes) in chunk {
                if seen == budget {
                    page.resume = Some(data_key);
                    return Ok(page);
                }
                seen += 1;
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
            match next {
                Some(next) => from = Some(next),
                None => return Ok(page),
            }
        }
    }
}

impl Store {
    /// Reads up to [`SCAN_CHUNK`] entries of `records` from `from` (or the start), under
    /// the scan gate (see `Store::scan_gate`), and returns them with the key of the next
    /// entry (`None`: the end).
    #[allow(clippy::type_complexity)] // entries and where the next chunk starts
    pub(super) fn scan_chunk(
        &self,
        from: Option<&[u8]>,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>), StoreError> {
        let records = self.cf(CF_DATA)?;
        let _gate = self.gate_scan();
        let mut iter = self.db.raw_iterator_cf(records);
        match from {
            Some(from) => iter.seek(from),
            None => iter.seek_to_first(),
        }
        let mut chunk = Vec::new();
        while chunk.len() < SCAN_CHUNK {
            let (Some(data_key), Some(bytes)) = (iter.key(), iter.value()) else {
                break;
            };
            chunk.push((data_key.to_vec(), bytes.to_vec()));
            iter.next();
        }
        iter.status()?;
        Ok((chunk, iter.key().map(<[u8]>::to_vec)))
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

    #[test]
    fn pages_longer_than_a_chunk_see_every_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut deleted = Vec::new();
        for i in 0..1000u16 {
            let key = i.to_be_bytes();
            let value = if i % 7 == 0 {
                deleted.push(key.to_vec());
                Value::Tombstone
            } else {
                Value::data("t", vec![1])
            };
            store
                .coordinate(b"b", &key, &VersionVector::new(), value)
                .unwrap();
        }
        for budget in [300, 256, 10_000] {
            let (mut found, mut resume, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = store.scan_tombstones(resume.as_deref(), budget).unwrap();
                pages += 1;
                found.extend(page.tombstones.into_iter().map(|t| t.key));
                match page.resume {
                    Some(next) => resume = Some(next),
                    None => break,
                }
            }
            found.sort();
            assert_eq!(found, deleted, "pages of {budget}");
            assert_eq!(pages, 1000usize.div_ceil(budget), "pages of {budget}");
        }
    }

    #[test]
    fn scans_read_whole_records_while_they_are_overwritten() {
        // Records are overwritten in place in the memtable; the scan gate keeps a scan
        // from reading one half written.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let keys: Vec<[u8; 1]> = (0..4u8).map(|i| [i]).collect();
        let writing = std::sync::atomic::AtomicUsize::new(2);
        let mut scanned = 0usize;
        std::thread::scope(|scope| {
            for writer in 0..2u8 {
                let (store, keys, writing) = (&store, &keys, &writing);
                scope.spawn(move || {
                    let mut contexts = vec![VersionVector::new(); keys.len()];
                    for round in 0..20_000usize {
                        let slot = (round + usize::from(writer)) % keys.len();
                        // Sizes that shrink and grow across the one-byte length limit.
                        let size = [300, 200, 129, 127, 40, 250][round % 6];
                        let written = store
                            .coordinate(
                                &[b'b', writer],
                                &keys[slot],
                                &contexts[slot],
                                Value::data("t", vec![writer; size]),
                            )
                            .unwrap();
                        contexts[slot] = written.clock().clone();
                    }
                    writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let (chunk, _) = store.scan_chunk(None).unwrap();
                for (_, bytes) in chunk {
                    crate::codec::decode_record(&bytes).unwrap();
                    scanned += 1;
                }
            }
        });
        assert!(scanned > 0);
    }
}
