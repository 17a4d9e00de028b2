//! Finding tombstones: the scan that tombstone reaping starts from.
//!
//! Reaping needs the keys whose every sibling is a tombstone. They are found by a resumable
//! scan of the `records` column family, a bounded page at a time, so a reaper round costs a
//! fixed amount of work however large the store is and the next round continues where the
//! last one stopped.

use rocksdb::ReadOptions;

use super::{split_data_key, Store, CF_DATA, SHARD_PREFIX_LEN};
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
    /// the scan gate (see `Store::scan_gate`), and returns them with where the next chunk
    /// starts (`None`: the end).
    ///
    /// The scan goes one shard at a time, the column family's RocksDB prefix (see
    /// [`Store`]): a total-order iterator would copy the whole memtable at every chunk.
    /// Each shard costs a seek, empty or not, and a seek counts as an entry towards the
    /// chunk, so that the gate is held for a bounded time even where shards are empty.
    #[allow(clippy::type_complexity)] // entries and where the next chunk starts
    pub(super) fn scan_chunk(
        &self,
        from: Option<&[u8]>,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>), StoreError> {
        let records = self.cf(CF_DATA)?;
        let mut read_options = ReadOptions::default();
        read_options.set_prefix_same_as_start(true);
        let (mut shard, mut seek_to) = match from {
            Some(from) => {
                let shard = shard_at(from);
                // A key shorter than a shard sorts before its shard's first record.
                let start = if from.len() < SHARD_PREFIX_LEN {
                    shard.to_be_bytes().to_vec()
                } else {
                    from.to_vec()
                };
                (shard, start)
            }
            None => (0, 0u16.to_be_bytes().to_vec()),
        };
        let _gate = self.gate_scan();
        let mut iter = self.db.raw_iterator_cf_opt(records, read_options);
        let mut chunk = Vec::new();
        let mut seeks = 0;
        while chunk.len() + seeks < SCAN_CHUNK {
            iter.seek(&seek_to);
            seeks += 1;
            while chunk.len() + seeks < SCAN_CHUNK {
                let (Some(data_key), Some(bytes)) = (iter.key(), iter.value()) else {
                    break;
                };
                chunk.push((data_key.to_vec(), bytes.to_vec()));
                iter.next();
            }
            iter.status()?;
            if let Some(next) = iter.key() {
                return Ok((chunk, Some(next.to_vec())));
            }
            // This shard is done.
            let Some(next) = shard.checked_add(1) else {
                return Ok((chunk, None));
            };
            shard = next;
            seek_to = shard.to_be_bytes().to_vec();
        }
        Ok((chunk, Some(seek_to)))
    }
}

/// The shard a `records` key (or a prefix of one) falls in.
fn shard_at(data_key: &[u8]) -> u16 {
    let mut shard = [0; SHARD_PREFIX_LEN];
    let len = data_key.len().min(SHARD_PREFIX_LEN);
    shard[..len].copy_from_slice(&data_key[..len]);
    u16::from_be_bytes(shard)
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
    fn a_scan_sees_each_record_once_wherever_it_lies() {
        // Records in table files, in the memtable, and in both (rewritten after a
        // flush): the scan goes shard by shard through all of them.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let write = |i: u16, value: Value| {
            let context = store
                .get(b"b", &i.to_be_bytes())
                .unwrap()
                .map(|object| object.clock().clone())
                .unwrap_or_default();
            store
                .coordinate(b"b", &i.to_be_bytes(), &context, value)
                .unwrap();
        };
        for i in 0..600u16 {
            write(i, Value::data("t", vec![1]));
        }
        let records = store.cf(crate::store::CF_DATA).unwrap();
        store.db.flush_cf(records).unwrap();
        for i in 400..1000u16 {
            write(i, Value::data("t", vec![2]));
        }
        let deleted: Vec<Vec<u8>> = (0..1000u16)
            .filter(|i| i % 5 == 0)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        for key in &deleted {
            write(u16::from_be_bytes([key[0], key[1]]), Value::Tombstone);
        }
        let scanned = scan_all(&store, None);
        assert_eq!(scanned.len(), 1000);
        assert!(
            scanned.windows(2).all(|pair| pair[0] < pair[1]),
            "in key order"
        );
        let page = store.scan_tombstones(None, 10_000).unwrap();
        let mut found: Vec<Vec<u8>> = page.tombstones.into_iter().map(|t| t.key).collect();
        found.sort();
        assert_eq!(found, deleted);
        assert_eq!(page.resume, None);
    }

    /// The keys of every record from `from` on, chunk by chunk.
    fn scan_all(store: &Store, from: Option<&[u8]>) -> Vec<Vec<u8>> {
        let (mut keys, mut from) = (Vec::new(), from.map(<[u8]>::to_vec));
        loop {
            let (chunk, next) = store.scan_chunk(from.as_deref()).unwrap();
            keys.extend(chunk.into_iter().map(|(data_key, _)| data_key));
            match next {
                Some(next) => from = Some(next),
                None => return keys,
            }
        }
    }

    #[test]
    fn a_scan_resumes_from_any_key_even_one_shorter_than_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for i in 0..300u16 {
            store
                .coordinate(
                    b"b",
                    &i.to_be_bytes(),
                    &VersionVector::new(),
                    Value::Tombstone,
                )
                .unwrap();
        }
        let all = scan_all(&store, None);
        assert_eq!(all.len(), 300);
        let middle = all[150].clone();
        for from in [&[][..], &[0x80], &[0x80, 0], &middle, &[0xff, 0xff, 0xff]] {
            let expected: Vec<_> = all.iter().filter(|k| k.as_slice() >= from).collect();
            let scanned = scan_all(&store, Some(from));
            assert_eq!(
                scanned.iter().collect::<Vec<_>>(),
                expected,
                "from {from:?}"
            );
        }
        assert_eq!(scan_all(&store, Some(&middle)).len(), 150);
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
            let mut from = None;
            while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let (chunk, next) = store.scan_chunk(from.as_deref()).unwrap();
                for (_, bytes) in chunk {
                    crate::codec::decode_record(&bytes).unwrap();
                    scanned += 1;
                }
                from = next;
            }
        });
        assert!(scanned > 0);
    }
}
