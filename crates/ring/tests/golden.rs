//! Golden vectors for the hashes and placement that data on disk depends on.
//!
//! A key's partition, and a partition's owners, decide where a replica stores a value. If
//! either changed between releases, nodes would look for existing data in the wrong place.
//! These values were computed once and are pinned: a failure here means the on-disk contract
//! changed, which needs a migration, not a test update.

// Panicking on an unexpected `Err` is how a test fails.
#![allow(clippy::unwrap_used)]

use quorumkv_ring::{key_hash, NodeId, PartitionId, Ring};

#[test]
fn key_hash_is_pinned() {
    let long_key: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let vectors: [(&[u8], &[u8], u64); 7] = [
        (b"", b"", 0x48b2_c926_16fc_193d),
        (b"users", b"", 0x4907_5ba3_1963_90e9),
        (b"users", b"alice", 0x0808_27f6_6a6b_8a91),
        (b"ab", b"c", 0xe68a_44f2_8602_d7e0),
        (b"a", b"bc", 0xcca7_be0e_983a_00c7),
        // Keys are bytes, not text.
        (b"bin", b"\xff\xfe\x00\x80", 0xf4ab_9b83_e65c_3c52),
        // Longer than xxh3's 240-byte short-input path.
        (b"logs", &long_key, 0x3b12_7770_ca0e_2fd1),
    ];
    for (bucket, key, expected) in vectors {
        assert_eq!(
            key_hash(bucket, key),
            expected,
            "key_hash({:?}, {} bytes)",
            String::from_utf8_lossy(bucket),
            key.len()
        );
    }
}

#[test]
fn small_ring_owners_are_pinned() {
    let ring = Ring::new(["node-a", "node-b", "node-c"].map(NodeId::from), 16).unwrap();
    let owners: Vec<&str> = ring.partitions().map(|p| ring.owner(p).as_str()).collect();
    assert_eq!(
        owners,
        [
            "node-b", "node-b", "node-a", "node-c", "node-b", "node-a", "node-b", "node-c",
            "node-c", "node-b", "node-a", "node-c", "node-c", "node-a", "node-c", "node-a",
        ]
    );
}

#[test]
fn default_sized_ring_owners_are_pinned() {
    let ring = Ring::new(["n1", "n2", "n3", "n4", "n5"].map(NodeId::from), 256).unwrap();
    // Partition i's owner is `n` followed by the i-th digit.
    let owners: String = ring
        .partitions()
        .map(|p| &ring.owner(p).as_str()[1..])
        .collect();
    assert_eq!(
        owners,
        concat!(
            "2325514451455511445135142154141121235455454232345241341441144535",
            "3521242443341135411134332554312323552224242423444344244541323152",
            "2441242512433551421341513221435544133142511141124232113415415341",
            "3222222232123354221144314231124245542123351152123555132413333415",
        )
    );
    let counts: Vec<u32> = ring.ownership().into_values().collect();
    assert_eq!(counts, [56, 53, 45, 60, 42]);

    assert_eq!(ring.partition_for(b"users", b"alice"), PartitionId(8));
    assert_eq!(
        ring.preference_list(b"users", b"alice", 3),
        ["n5", "n1", "n2"].map(NodeId::from)
    );
}
