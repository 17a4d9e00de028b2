//! Where the store files things: the keys of the `records` and `meta` column families.
//!
//! A `records` key is:
//! 1. shard, `u16` big-endian: the top 16 bits of the key hash
//!    (`quorumkv_ring::key_hash`), so the finest partition of any ring;
//! 2. bucket length, `u8` (so a bucket is at most 255 bytes);
//! 3. bucket bytes;
//! 4. segment, `u8`: the low 8 bits of the key hash;
//! 5. key bytes.
//!
//! Records are filed by hash, as Cassandra files rows by token: a ring partition is a run
//! of whole shards, and one segment of one anti-entropy tree is a prefix scan per shard.
//! So a record is its own anti-entropy entry (its digest is a hash of its bytes) and a
//! write is one RocksDB entry, not two. The length prefix makes the layout unambiguous
//! (bucket `a` with key `bc` differs from bucket `ab` with key `c`). The layout is the
//! on-disk format (docs/formats.md): `data_keys_are_laid_out_as_documented` pins it.
//!
//! The shard is also the column family's RocksDB prefix ([`SHARD_PREFIX_LEN`]): its
//! memtable is a hash table of shards, each a short skip list, so that the lookup before
//! every write and every read finds its record in a few steps instead of a walk down one
//! skip list of every key (`store/tuning.rs`). Scans of `records` therefore go one shard
//! at a time (`prefix_same_as_start`), or in total order with `total_order_seek`, which
//! copies the memtable and is kept to the scan at open.
//!
//! A `meta` key is a namespace, `store/` for the store's own values (`store/actor_id`, 8
//! bytes big-endian) or `node/` for names given to `Store::put_meta`, then the name's
//! UTF-8 bytes: a node's names can never overwrite the actor id.

use super::{antientropy, META_NODE_PREFIX};
use crate::error::StoreError;

/// Returns the `records` key of `bucket`/`key` (the layout above).
pub(super) fn data_key(bucket: &[u8], key: &[u8]) -> Result<Vec<u8>, StoreError> {
    data_key_of(antientropy::key_hash(bucket, key), bucket, key)
}

/// [`data_key`], for a key whose hash (`antientropy::key_hash`) the caller has: the write
/// paths, which also place the key in its tree by that hash.
pub(super) fn data_key_of(hash: u64, bucket: &[u8], key: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut data_key = segment_prefix(shard_of(hash), bucket, antientropy::segment_of(hash))?;
    data_key.extend_from_slice(key);
    Ok(data_key)
}

/// Returns the `records` prefix of one bucket in one shard.
pub(super) fn shard_bucket_prefix(shard: u16, bucket: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u8::try_from(bucket.len()).map_err(|_| StoreError::BucketTooLong(bucket.len()))?;
    let mut prefix = Vec::with_capacity(2 + 1 + bucket.len() + 1);
    prefix.extend_from_slice(&shard.to_be_bytes());
    prefix.push(len);
    prefix.extend_from_slice(bucket);
    Ok(prefix)
}

/// Returns the `records` prefix of one segment of one bucket in one shard.
pub(super) fn segment_prefix(
    shard: u16,
    bucket: &[u8],
    segment: u8,
) -> Result<Vec<u8>, StoreError> {
    let mut prefix = shard_bucket_prefix(shard, bucket)?;
    prefix.push(segment);
    Ok(prefix)
}

/// The length of a `records` key's shard, which is the column family's RocksDB prefix.
pub(super) const SHARD_PREFIX_LEN: usize = 2;

/// Returns the shard of a key hash: its top 16 bits.
pub(super) fn shard_of(hash: u64) -> u16 {
    (hash >> 48) as u16
}

/// Splits a `records` key into (shard, bucket, segment, key).
pub(super) fn split_data_key(data_key: &[u8]) -> Option<(u16, &[u8], u8, &[u8])> {
    let (shard, rest) = data_key.split_first_chunk::<2>()?;
    let (&len, rest) = rest.split_first()?;
    let (bucket, rest) = rest.split_at_checked(usize::from(len))?;
    let (&segment, key) = rest.split_first()?;
    Some((u16::from_be_bytes(*shard), bucket, segment, key))
}

/// Returns the smallest byte string greater than every string that starts
/// with `prefix`, or `None` if there is none (the prefix is all 0xff).
pub(super) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != u8::MAX)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// Returns the meta-CF key of a node-defined name.
pub(super) fn meta_key(name: &str) -> Vec<u8> {
    [META_NODE_PREFIX, name.as_bytes()].concat()
}

/// Returns a printable `bucket/key` for logs and errors; non-printable bytes
/// are escaped so binary keys stay readable and unambiguous.
pub(super) fn display_key(bucket: &[u8], key: &[u8]) -> String {
    format!("{}/{}", bucket.escape_ascii(), key.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_are_laid_out_as_documented() {
        assert_ne!(data_key(b"a", b"bc").ok(), data_key(b"ab", b"c").ok());
        // The ring's golden vector: key_hash("users", "alice") = 0x080827f66a6b8a91.
        assert_eq!(
            data_key(b"users", b"alice").ok(),
            Some(b"\x08\x08\x05users\x91alice".to_vec())
        );
        assert_eq!(
            split_data_key(b"\x08\x08\x05users\x91alice"),
            Some((0x0808, &b"users"[..], 0x91, &b"alice"[..]))
        );
        assert_eq!(split_data_key(b"\x08\x08\x09users"), None);
        assert_eq!(split_data_key(b"\x08"), None);
        assert!(matches!(
            data_key(&[0; 256], b"k"),
            Err(StoreError::BucketTooLong(256))
        ));
        assert!(data_key(&[0; 255], b"k").is_ok());
    }

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(b"\x01a"), Some(b"\x01b".to_vec()));
        assert_eq!(prefix_successor(b"\x02a\xff"), Some(b"\x02b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }

    #[test]
    fn display_key_escapes_binary() {
        assert_eq!(display_key(b"b", b"k\x00\xff"), "b/k\\x00\\xff");
    }
}
