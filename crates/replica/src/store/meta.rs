//! The node's small named values in the `meta` column family, and raw access to records
//! for tests and tools (planting corruption as a fault below the store would).

use super::layout::{data_key, meta_key};
use super::{Store, Wait, CF_DATA, CF_META};
use crate::error::StoreError;

impl Store {
    /// Returns the value stored by [`Store::put_meta`] under `name`.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META)?, meta_key(name))?)
    }

    /// Stores a small named value for the node, honouring the sync policy.
    /// Names live in their own namespace and cannot touch the actor id.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db.put_cf_opt(
            self.cf(CF_META)?,
            meta_key(name),
            value,
            &self.write_options,
        )?;
        Ok(())
    }

    /// Test and tool hook: returns the raw record bytes stored for
    /// `bucket`/`key` in the `records` column family, without decoding them.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn raw_get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_DATA)?, data_key(bucket, key)?)?)
    }

    /// Test and tool hook: overwrites the raw record bytes of
    /// `bucket`/`key`, bypassing the codec, the per-key lock, the
    /// anti-entropy digest and every invariant (tests use it to plant
    /// corruption, as a fault below the store would). Not for the data path.
    ///
    /// # Errors
    /// [`StoreError::BucketTooLong`]; [`StoreError::Db`].
    pub fn raw_put(&self, bucket: &[u8], key: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
        let _gate = self.gate_write(Wait::Block);
        self.db.put_cf_opt(
            self.cf(CF_DATA)?,
            data_key(bucket, key)?,
            bytes,
            &self.write_options,
        )?;
        Ok(())
    }
}
