//! Replication factor and quorum arithmetic.
//!
//! A bucket has a replication factor `n` and default read and write quorums `r` and `w`; a
//! request may override `r` or `w`. The arithmetic lives here, in one place, so that the
//! meaning of `one`, `quorum` and `all` and the range checks are the same for every caller.
//! `r + w > n` is what makes a read see an acknowledged write: the two sets of replicas must
//! overlap in at least one node.

use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// The largest replication factor a bucket may have.
pub const MAX_N: usize = 16;

/// A quorum as a client spells it: a number or a symbolic size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumSpec {
    /// One replica.
    One,
    /// A majority of the `n` replicas: `n / 2 + 1`.
    Quorum,
    /// All `n` replicas.
    All,
    /// An explicit count, checked against `n` when resolved.
    Count(usize),
}

impl QuorumSpec {
    /// Parses `one`, `quorum`, `all` or a decimal count. `param` names the parameter in errors.
    pub fn parse(param: &'static str, raw: &str) -> Result<Self, InputError> {
        match raw {
            "one" => Ok(Self::One),
            "quorum" => Ok(Self::Quorum),
            "all" => Ok(Self::All),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits
                .parse::<usize>()
                .map(Self::Count)
                .map_err(|_| InputError::InvalidQuorum {
                    param,
                    message: format!("{param}={raw} is out of range"),
                }),
            _ => Err(InputError::InvalidQuorum {
                param,
                message: format!("{param} must be a number, one, quorum or all; got {raw:?}"),
            }),
        }
    }

    /// The number of replicas this spec asks for, given `n`; a count outside `1..=n` is refused.
    pub fn resolve(self, param: &'static str, n: usize) -> Result<usize, InputError> {
        match self {
            Self::One => Ok(1),
            Self::Quorum => Ok(majority(n)),
            Self::All => Ok(n),
            Self::Count(c) if (1..=n).contains(&c) => Ok(c),
            Self::Count(c) => Err(InputError::InvalidQuorum {
                param,
                message: format!("{param}={c} is outside 1..={n} (the bucket's n)"),
            }),
        }
    }
}

/// A majority of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The replication settings of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Replication factor: how many distinct nodes hold each key.
    pub n: usize,
    /// Default read quorum.
    pub r: usize,
    /// Default write quorum.
    pub w: usize,
}

impl BucketProps {
    /// The defaults for a bucket nobody configured: `n` with majority quorums.
    pub fn with_n(n: usize) -> Self {
        Self {
            n,
            r: majority(n),
            w: majority(n),
        }
    }

    /// Checks `1 <= r, w <= n <= MAX_N`.
    pub fn validate(&self) -> Result<(), InputError> {
        if !(1..=MAX_N).contains(&self.n) {
            return Err(InputError::InvalidProps(format!(
                "n must be in 1..={MAX_N}, got {}",
                self.n
            )));
        }
        for (name, value) in [("r", self.r), ("w", self.w)] {
            if !(1..=self.n).contains(&value) {
                return Err(InputError::InvalidProps(format!(
                    "{name} must be in 1..={} (n), got {value}",
                    self.n
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_quorums_resolve_against_n() {
        assert_eq!(QuorumSpec::One.resolve("r", 3), Ok(1));
        assert_eq!(QuorumSpec::Quorum.resolve("r", 3), Ok(2));
        assert_eq!(QuorumSpec::Quorum.resolve("r", 4), Ok(3));
        assert_eq!(QuorumSpec::All.resolve("r", 5), Ok(5));
    }

    #[test]
    fn counts_outside_one_to_n_are_refused() {
        assert!(QuorumSpec::Count(0).resolve("w", 3).is_err());
        assert!(QuorumSpec::Count(4).resolve("w", 3).is_err());
        assert_eq!(QuorumSpec::Count(3).resolve("w", 3), Ok(3));
    }

    #[test]
    fn parsing_rejects_garbage() {
        assert_eq!(QuorumSpec::parse("r", "2"), Ok(QuorumSpec::Count(2)));
        assert_eq!(QuorumSpec::parse("r", "quorum"), Ok(QuorumSpec::Quorum));
        for bad in [
            "",
            "-1",
            "+1",
            "two",
            "1.0",
            "QUORUM",
            "99999999999999999999999",
        ] {
            assert!(QuorumSpec::parse("r", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn props_validation() {
        assert!(BucketProps::with_n(3).validate().is_ok());
        assert!(BucketProps { n: 0, r: 1, w: 1 }.validate().is_err());
        assert!(BucketProps { n: 3, r: 4, w: 1 }.validate().is_err());
        assert!(BucketProps { n: 3, r: 1, w: 0 }.validate().is_err());
        assert!(BucketProps::with_n(MAX_N + 1).validate().is_err());
    }
}
