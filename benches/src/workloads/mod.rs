//! What the clients send: the operation mix, which keys, and how big the values are.
//!
//! The mixes are the usual ones, named after the YCSB core workloads where one exists so
//! that figures can be read next to published ones: write-only, read-only, 50/50 (YCSB A),
//! 95/5 (YCSB B), and read-modify-write (YCSB F), which in quorumkv is the natural way to
//! update a key: read it, then write with the causal context the read returned.
//!
//! Keys are `key` followed by a 13-digit index (16 bytes, as in the published table), chosen
//! uniformly or from a scrambled Zipfian distribution ([`zipf`]). Values are random bytes
//! generated once per run: incompressible, so RocksDB's LZ4 cannot flatter the figures.

pub mod zipf;

use bytes::Bytes;
use clap::ValueEnum;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use self::zipf::ScrambledZipfian;

/// The operation mix of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mix {
    /// Only writes.
    Write,
    /// Only reads (preload first, or most reads find nothing).
    Read,
    /// 50% reads, 50% writes (YCSB A).
    YcsbA,
    /// 95% reads, 5% writes (YCSB B).
    YcsbB,
    /// Read a key, then write it with the context the read returned (YCSB F); one
    /// operation is the pair.
    Rmw,
}

impl Mix {
    /// The share of reads among the operations (read-modify-write counts as neither).
    pub fn read_fraction(self) -> f64 {
        match self {
            Mix::Write | Mix::Rmw => 0.0,
            Mix::Read => 1.0,
            Mix::YcsbA => 0.5,
            Mix::YcsbB => 0.95,
        }
    }

    /// Draws the next operation.
    pub fn choose(self, rng: &mut impl Rng) -> OpKind {
        match self {
            Mix::Write => OpKind::Write,
            Mix::Read => OpKind::Read,
            Mix::Rmw => OpKind::ReadModifyWrite,
            Mix::YcsbA | Mix::YcsbB => {
                if rng.random_bool(self.read_fraction()) {
                    OpKind::Read
                } else {
                    OpKind::Write
                }
            }
        }
    }

    /// The name used in results and tables.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Write => "write",
            Mix::Read => "read",
            Mix::YcsbA => "ycsb-a",
            Mix::YcsbB => "ycsb-b",
            Mix::Rmw => "rmw",
        }
    }
}

/// One client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A GET.
    Read,
    /// A PUT.
    Write,
    /// A GET followed by a PUT of the same key with the context of the GET.
    ReadModifyWrite,
}

impl OpKind {
    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::ReadModifyWrite => "rmw",
        }
    }
}

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled Zipfian (constant 0.99): a few hot keys, spread over the ring.
    Zipfian,
}

/// Draws key indices in `0..count` from a distribution.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Uniform over `0..count`.
    Uniform {
        /// Number of keys.
        count: u64,
    },
    /// Scrambled Zipfian.
    Zipfian(ScrambledZipfian),
}

impl KeyChooser {
    /// A chooser over `count` keys (at least one).
    pub fn new(distribution: KeyDistribution, count: u64) -> Self {
        let count = count.max(1);
        match distribution {
            KeyDistribution::Uniform => KeyChooser::Uniform { count },
            KeyDistribution::Zipfian => {
                KeyChooser::Zipfian(ScrambledZipfian::new(count, zipf::YCSB_ZIPFIAN_CONSTANT))
            }
        }
    }

    /// The next key index.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform { count } => rng.random_range(0..*count),
            KeyChooser::Zipfian(zipfian) => zipfian.next(rng),
        }
    }
}

/// The name of key `index`: `key` and 13 digits, 16 bytes for every index below 10^13.
pub fn key_name(index: u64) -> String {
    format!("key{index:013}")
}

/// A value of `bytes` random bytes; the same seed gives the same value.
pub fn random_value(bytes: usize, seed: u64) -> Bytes {
    let mut value = vec![0u8; bytes];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut value);
    Bytes::from(value)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn key_names_are_sixteen_bytes() {
        assert_eq!(key_name(0), "key0000000000000");
        assert_eq!(key_name(99_999).len(), 16);
        assert_eq!(key_name(9_999_999_999_999).len(), 16);
    }

    #[test]
    fn mixes_draw_their_read_share() {
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 20_000;
        let reads = (0..draws)
            .filter(|_| Mix::YcsbB.choose(&mut rng) == OpKind::Read)
            .count();
        let share = reads as f64 / f64::from(draws);
        assert!((0.94..0.96).contains(&share), "read share {share}");
        assert_eq!(Mix::Write.choose(&mut rng), OpKind::Write);
        assert_eq!(Mix::Read.choose(&mut rng), OpKind::Read);
        assert_eq!(Mix::Rmw.choose(&mut rng), OpKind::ReadModifyWrite);
    }

    #[test]
    fn uniform_keys_stay_in_range() {
        let chooser = KeyChooser::new(KeyDistribution::Uniform, 10);
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            let key = chooser.next(&mut rng);
            seen[usize::try_from(key).expect("small")] = true;
        }
        assert!(seen.iter().all(|s| *s), "every key drawn at least once");
    }

    #[test]
    fn values_are_reproducible_and_sized() {
        assert_eq!(random_value(100, 3), random_value(100, 3));
        assert_ne!(random_value(100, 3), random_value(100, 4));
        assert_eq!(random_value(1024, 0).len(), 1024);
    }
}
