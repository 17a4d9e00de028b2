//! The two hashes that are part of the on-disk contract.
//!
//! Both are xxh3-64 with seed 0 over an unambiguous byte layout. Changing either one moves
//! every key or every partition, so both are pinned by golden tests.

use xxhash_rust::xxh3::Xxh3Default;

use crate::NodeId;

/// Returns the stable 64-bit hash of a key in a bucket, from which its partition is taken.
///
/// The hash is xxh3-64, seed 0, of:
/// 1. the bucket length in bytes, as a `u32`, big-endian;
/// 2. the bucket bytes;
/// 3. the key bytes.
///
/// The length prefix keeps `("ab", "c")` and `("a", "bc")` apart. A bucket longer than
/// `u32::MAX` bytes (far beyond any name the API accepts) has its prefix saturated.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let bucket_len = u32::try_from(bucket.len()).unwrap_or(u32::MAX);
    // Streaming yields the same digest as hashing the concatenation in one go, without
    // copying the key into a buffer first.
    let mut hasher = Xxh3Default::new();
    hasher.update(&bucket_len.to_be_bytes());
    hasher.update(bucket);
    hasher.update(key);
    hasher.digest()
}

/// Returns the rendezvous score of a node for a partition: how strongly the node "wants" it.
///
/// The score is xxh3-64, seed 0, of:
/// 1. the partition index, as a `u32`, big-endian;
/// 2. the node id bytes (UTF-8).
///
/// The partition prefix has a fixed width, so the layout is unambiguous.
pub(crate) fn partition_score(partition: u32, node: &NodeId) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&partition.to_be_bytes());
    hasher.update(node.as_str().as_bytes());
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    #[test]
    fn key_hash_is_xxh3_of_the_documented_layout() {
        let long_key = vec![0xa5u8; 1000];
        let cases: [(&[u8], &[u8]); 4] = [
            (b"", b""),
            (b"users", b"alice"),
            (b"ab", b"\xff\x00\xfe"),
            (b"bucket", &long_key),
        ];
        for (bucket, key) in cases {
            let mut layout = (bucket.len() as u32).to_be_bytes().to_vec();
            layout.extend_from_slice(bucket);
            layout.extend_from_slice(key);
            assert_eq!(key_hash(bucket, key), xxh3_64(&layout));
        }
    }

    #[test]
    fn length_prefix_separates_bucket_from_key() {
        assert_ne!(key_hash(b"ab", b"c"), key_hash(b"a", b"bc"));
        assert_ne!(key_hash(b"", b"abc"), key_hash(b"abc", b""));
    }

    #[test]
    fn partition_score_is_xxh3_of_the_documented_layout() {
        let node = NodeId::new("node-a");
        let mut layout = 7u32.to_be_bytes().to_vec();
        layout.extend_from_slice(b"node-a");
        assert_eq!(partition_score(7, &node), xxh3_64(&layout));
    }
}
