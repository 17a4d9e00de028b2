//! Hinted handoff storage: replicas held on behalf of an owner that was down.
//!
//! When an owner of a key cannot be reached, another node keeps the write for it, as a
//! *hint*, until the owner is back (Dynamo, section 4.6). Hints live in the `hints`
//! column family, apart from the node's own data, because they are not this node's
//! replicas: reads of the node's data never see them, and a hint is deleted once its owner
//! acknowledged it.
//!
//! Key layout:
//! 1. owner id length, `u8`;
//! 2. owner id bytes;
//! 3. bucket length, `u8`;
//! 4. bucket bytes;
//! 5. key bytes.
//!
//! Value layout:
//! 1. the time of the newest write merged into the hint, milliseconds since the Unix
//!    epoch, `u64` big-endian: the age bound counts from it, so a write merged into an old
//!    hint gets the whole TTL to be delivered, not what was left of the first write's
//!    (the older writes it holds are then delivered late rather than dropped; anything
//!    that superseded them since is in the merged state too);
//! 2. the object as a record (format version, CRC32, payload; see the codec).
//!
//! A second hint for the same owner and key merges into the first (the same join as
//! replicas use), so a hint always holds everything the owner missed for that key. The
//! number of hints is bounded: past the bound a new hint is refused, and the write counts
//! one acknowledgement fewer; anti-entropy repairs what no hint carried.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocksdb::{IteratorMode, ReadOptions, WriteBatch};

use super::{prefix_successor, Store, CF_HINTS};
use crate::codec::{decode_record, encode_record};
use crate::error::StoreError;
use crate::object::VersionedObject;

/// One hint read back for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// Bucket name bytes.
    pub bucket: Vec<u8>,
    /// Key bytes.
    pub key: Vec<u8>,
    /// What the owner missed.
    pub object: VersionedObject,
    /// When the newest write in the hint was merged, milliseconds since the Unix epoch.
    pub created_millis: u64,
}

/// Why a hint was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintRefusal {
    /// The node already holds its maximum number of hints.
    Full,
}

impl Store {
    /// Stores (merges) a hint of `object` for `owner`. Returns `Ok(Err(Full))` when the
    /// node holds `max_hints` hints already and this key has none yet.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `object` breaks an invariant; [`StoreError::Corrupt`] if
    /// the existing hint is unreadable (it is then replaced: a hint is a copy of data the
    /// owner's other replicas also hold, and it mints nothing, so no dot can be reused);
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn store_hint(
        &self,
        owner: &str,
        bucket: &[u8],
        key: &[u8],
        object: &VersionedObject,
        max_hints: u64,
    ) -> Result<Result<(), HintRefusal>, StoreError> {
        object.validate().map_err(StoreError::Invalid)?;
        let hint_key = hint_key(owner, bucket, key)?;
        let _guard = self.lock_key(&hint_key);
        let existing = self.read_hint(&hint_key);
        let (mut merged, created) = match existing {
            Some(Ok((_, object))) => (object, now_millis()),
            Some(Err(error)) => {
                tracing::warn!(%error, "replacing an unreadable hint");
                (VersionedObject::new(), now_millis())
            }
            None => {
                if self.hint_count.load(Ordering::Relaxed) >= max_hints {
                    metrics::counter!("quorumkv_hints_dropped_total", "reason" => "full")
                        .increment(1);
                    return Ok(Err(HintRefusal::Full));
                }
                self.hint_count.fetch_add(1, Ordering::Relaxed);
                (VersionedObject::new(), now_millis())
            }
        };
        merged.merge(object);
        let mut value = created.to_be_bytes().to_vec();
        value.extend(encode_record(&merged));
        self.db
            .put_cf_opt(self.cf(CF_HINTS)?, &hint_key, value, &self.write_options)?;
        metrics::counter!("quorumkv_hints_stored_total").increment(1);
        metrics::gauge!("quorumkv_hints_pending").set(self.hint_count() as f64);
        Ok(Ok(()))
    }

    /// The hint held for `owner` on `bucket`/`key`, if any.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if it is unreadable; [`StoreError::BucketTooLong`];
    /// [`StoreError::Db`].
    pub fn get_hint(
        &self,
        owner: &str,
        bucket: &[u8],
        key: &[u8],
    ) -> Result<Option<VersionedObject>, StoreError> {
        let hint_key = hint_key(owner, bucket, key)?;
        self.read_hint(&hint_key)
            .transpose()
            .map(|h| h.map(|(_, o)| o))
    }

    /// Up to `limit` hints held for `owner`, in key order. Unreadable hints are skipped
    /// (and counted as corrupt).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn hints_for(&self, owner: &str, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let prefix = owner_prefix(owner)?;
        let mut read_options = ReadOptions::default();
        if let Some(end) = prefix_successor(&prefix) {
            read_options.set_iterate_upper_bound(end);
        }
        let mut iter = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_HINTS)?, read_options);
        iter.seek(&prefix);
        let mut hints = Vec::new();
        while iter.valid() && hints.len() < limit {
            if let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                let Some((bucket, key)) = split_hint_key(&k[prefix.len()..]) else {
                    iter.next();
                    continue;
                };
                if let Ok((created, object)) = decode_hint_value(v) {
                    hints.push(Hint {
                        bucket: bucket.to_vec(),
                        key: key.to_vec(),
                        object,
                        created_millis: created,
                    });
                } else {
                    metrics::counter!("quorumkv_corrupt_records_total").increment(1);
                }
            }
            iter.next();
        }
        iter.status()?;
        Ok(hints)
    }

    /// Every owner this node holds hints for.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn hint_owners(&self) -> Result<Vec<String>, StoreError> {
        let mut owners = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_HINTS)?);
        iter.seek_to_first();
        while iter.valid() {
            let Some(k) = iter.key() else { break };
            let Some((&len, rest)) = k.split_first() else {
                break;
            };
            let Some(owner) = rest.get(..usize::from(len)) else {
                break;
            };
            let owner = String::from_utf8_lossy(owner).to_string();
            // Skip the rest of this owner's hints in one seek.
            let prefix = k[..=usize::from(len)].to_vec();
            owners.push(owner);
            match prefix_successor(&prefix) {
                Some(next) => iter.seek(next),
                None => break,
            }
        }
        iter.status()?;
        Ok(owners)
    }

    /// Deletes the hint for `owner` on `bucket`/`key` if it still holds exactly
    /// `replayed` (a hint that grew while it was being replayed is kept, and replayed
    /// again). Returns whether it was deleted.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn remove_hint_if_unchanged(
        &self,
        owner: &str,
        bucket: &[u8],
        key: &[u8],
        replayed: &VersionedObject,
    ) -> Result<bool, StoreError> {
        let hint_key = hint_key(owner, bucket, key)?;
        let _guard = self.lock_key(&hint_key);
        match self.read_hint(&hint_key) {
            Some(Ok((_, current))) if current == *replayed => {}
            _ => return Ok(false),
        }
        self.delete_hint_locked(&hint_key)?;
        Ok(true)
    }

    /// Deletes every hint older than `max_age`; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn drop_expired_hints(&self, max_age: Duration) -> Result<usize, StoreError> {
        let cutoff =
            now_millis().saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        let mut expired = 0;
        for hint_key in self.hints_older_than(cutoff)? {
            expired += usize::from(self.expire_hint(&hint_key, cutoff)?);
        }
        if expired > 0 {
            metrics::counter!("quorumkv_hints_dropped_total", "reason" => "expired")
                .increment(expired as u64);
            tracing::warn!(
                count = expired,
                "dropped expired hints; anti-entropy repairs their keys"
            );
        }
        Ok(expired)
    }

    /// The keys of the hints created before `cutoff` (milliseconds since the epoch), as a
    /// scan without locks sees them.
    fn hints_older_than(&self, cutoff: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut older = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_HINTS)?, IteratorMode::Start) {
            let (k, v) = item?;
            if created_of(&v) < cutoff {
                older.push(k.to_vec());
            }
        }
        Ok(older)
    }

    /// Under the hint's lock: deletes it if it is still there and still older than
    /// `cutoff`. The scan that found it took no lock: meanwhile the hint may have been
    /// delivered and removed (deleting it again would count it twice, and the count would
    /// drift below the hints held) or refreshed by a new write (which must not be lost
    /// with the old one).
    fn expire_hint(&self, hint_key: &[u8], cutoff: u64) -> Result<bool, StoreError> {
        let _guard = self.lock_key(hint_key);
        let still_old = self
            .db
            .get_pinned_cf(self.cf(CF_HINTS)?, hint_key)?
            .is_some_and(|value| created_of(&value) < cutoff);
        if still_old {
            self.delete_hint_locked(hint_key)?;
        }
        Ok(still_old)
    }

    /// How many hints this node holds.
    pub fn hint_count(&self) -> u64 {
        self.hint_count.load(Ordering::Relaxed)
    }

    /// Counts the hints on disk (at open).
    pub(super) fn count_hints(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_HINTS)?);
        iter.seek_to_first();
        while iter.valid() {
            count += 1;
            iter.next();
        }
        iter.status()?;
        Ok(count)
    }

    fn delete_hint_locked(&self, hint_key: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_HINTS)?, hint_key);
        self.db.write_opt(batch, &self.write_options)?;
        let _ = self
            .hint_count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        metrics::gauge!("quorumkv_hints_pending").set(self.hint_count() as f64);
        Ok(())
    }

    fn read_hint(&self, hint_key: &[u8]) -> Option<Result<(u64, VersionedObject), StoreError>> {
        let cf = match self.cf(CF_HINTS) {
            Ok(cf) => cf,
            Err(e) => return Some(Err(e)),
        };
        match self.db.get_pinned_cf(cf, hint_key) {
            Ok(None) => None,
            Ok(Some(bytes)) => Some(decode_hint_value(&bytes).map_err(|reason| {
                metrics::counter!("quorumkv_corrupt_records_total").increment(1);
                StoreError::Corrupt {
                    key: String::from_utf8_lossy(hint_key).to_string(),
                    reason,
                }
            })),
            Err(e) => Some(Err(e.into())),
        }
    }
}

fn decode_hint_value(bytes: &[u8]) -> Result<(u64, VersionedObject), crate::error::CodecError> {
    let created = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(crate::error::CodecError::Truncated)?;
    Ok((created, decode_record(&bytes[8..])?))
}

/// When a stored hint value was created (its first 8 bytes); 0, the oldest, when it is too
/// short to say, so that an unreadable hint expires.
fn created_of(value: &[u8]) -> u64 {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn owner_prefix(owner: &str) -> Result<Vec<u8>, StoreError> {
    let len = u8::try_from(owner.len()).map_err(|_| StoreError::BucketTooLong(owner.len()))?;
    let mut prefix = Vec::with_capacity(owner.len() + 1);
    prefix.push(len);
    prefix.extend_from_slice(owner.as_bytes());
    Ok(prefix)
}

fn hint_key(owner: &str, bucket: &[u8], key: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut hint_key = owner_prefix(owner)?;
    let len = u8::try_from(bucket.len()).map_err(|_| StoreError::BucketTooLong(bucket.len()))?;
    hint_key.push(len);
    hint_key.extend_from_slice(bucket);
    hint_key.extend_from_slice(key);
    Ok(hint_key)
}

/// Splits the part of a hint key after the owner into bucket and key.
fn split_hint_key(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::store::{test_object as object, test_object_by as object_by};

    #[test]
    fn an_expiry_spares_hints_refreshed_or_delivered_after_its_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let a = object("a");
        let b = object_by(2, "b");
        store
            .store_hint("node2", b"b", b"k1", &a, 10)
            .unwrap()
            .unwrap();
        store
            .store_hint("node2", b"b", b"k2", &a, 10)
            .unwrap()
            .unwrap();
        let created = store.hints_for("node2", 10).unwrap()[0].created_millis;
        std::thread::sleep(Duration::from_millis(5));
        let cutoff = created + 1;
        let older = store.hints_older_than(cutoff).unwrap();
        assert_eq!(older.len(), 2);
        // Meanwhile k1 takes a new write (its age restarts) and k2 is delivered.
        store
            .store_hint("node2", b"b", b"k1", &b, 10)
            .unwrap()
            .unwrap();
        assert!(store
            .remove_hint_if_unchanged("node2", b"b", b"k2", &a)
            .unwrap());
        assert_eq!(store.hint_count(), 1);
        for hint_key in &older {
            assert!(!store.expire_hint(hint_key, cutoff).unwrap());
        }
        // The refreshed hint is kept, and the count still says one.
        assert_eq!(store.hint_count(), 1);
        let kept = store.get_hint("node2", b"b", b"k1").unwrap().unwrap();
        assert_eq!(kept.siblings().len(), 2);
        // Once it is old enough, it goes, and the count with it.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.drop_expired_hints(Duration::ZERO).unwrap(), 1);
        assert_eq!(store.hint_count(), 0);
    }

    #[test]
    fn hints_are_stored_listed_merged_and_removed_only_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let a = object("a");
        assert_eq!(
            store.store_hint("node2", b"b", b"k1", &a, 10).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.store_hint("node2", b"b", b"k2", &a, 10).unwrap(),
            Ok(())
        );
        assert_eq!(
            store.store_hint("node3", b"b", b"k1", &a, 10).unwrap(),
            Ok(())
        );
        assert_eq!(store.hint_count(), 3);
        assert_eq!(store.hint_owners().unwrap(), vec!["node2", "node3"]);
        let hints = store.hints_for("node2", 10).unwrap();
        assert_eq!(
            hints.iter().map(|h| h.key.clone()).collect::<Vec<_>>(),
            vec![b"k1".to_vec(), b"k2".to_vec()]
        );
        // A second hint for the same key merges.
        let b = object_by(2, "b");
        store
            .store_hint("node2", b"b", b"k1", &b, 10)
            .unwrap()
            .unwrap();
        let held = store.get_hint("node2", b"b", b"k1").unwrap().unwrap();
        assert_eq!(held.siblings().len(), 2);
        assert_eq!(store.hint_count(), 3);
        // A replay of an older state does not delete the grown hint.
        assert!(!store
            .remove_hint_if_unchanged("node2", b"b", b"k1", &a)
            .unwrap());
        assert!(store
            .remove_hint_if_unchanged("node2", b"b", b"k1", &held)
            .unwrap());
        assert_eq!(store.get_hint("node2", b"b", b"k1").unwrap(), None);
        assert_eq!(store.hint_count(), 2);
    }

    #[test]
    fn the_hint_bound_refuses_new_keys_but_merges_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .store_hint("o", b"b", b"k1", &object("1"), 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            store.store_hint("o", b"b", b"k2", &object("2"), 1).unwrap(),
            Err(HintRefusal::Full)
        );
        assert_eq!(
            store.store_hint("o", b"b", b"k1", &object("3"), 1).unwrap(),
            Ok(())
        );
    }

    #[test]
    fn hints_survive_a_reopen_and_expire_by_age() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            store
                .store_hint("o", b"b", b"k", &object("v"), 10)
                .unwrap()
                .unwrap();
        }
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.hint_count(), 1);
        assert_eq!(store.hints_for("o", 10).unwrap().len(), 1);
        assert_eq!(
            store.drop_expired_hints(Duration::from_secs(3600)).unwrap(),
            0
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            store.drop_expired_hints(Duration::from_millis(1)).unwrap(),
            1
        );
        assert_eq!(store.hint_count(), 0);
    }

    #[test]
    fn a_write_merged_into_an_old_hint_gets_the_whole_age_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .store_hint("o", b"b", b"k", &object("old"), 10)
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        store
            .store_hint("o", b"b", b"k", &object("new"), 10)
            .unwrap()
            .unwrap();
        // Older than the bound counted from the first write, not from the newest.
        assert_eq!(
            store
                .drop_expired_hints(Duration::from_millis(200))
                .unwrap(),
            0
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            store
                .drop_expired_hints(Duration::from_millis(200))
                .unwrap(),
            1
        );
    }
}
