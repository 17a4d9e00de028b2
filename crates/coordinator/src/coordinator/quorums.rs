//! A request's quorum: its `r`/`w` and `pr`/`pw` resolved against the bucket's `n`, and
//! the errors a request that does not meet it answers with. The arithmetic of symbolic
//! quorums is `crate::quorum`; what each reply counts toward is `crate::tally`.

use quorumkv_ring::NodeId;

use super::{ReadOptions, WriteOptions};
use crate::error::{CoordinatorError, InputError, Operation, ReplicaFailure};
use crate::message::Response;
use crate::quorum::{BucketProps, QuorumSpec};
use crate::tally::AckTally;

/// A quorum after resolution against the bucket's `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quorum {
    /// Successful replies needed.
    pub(crate) required: usize,
    /// Of which from owners (primaries).
    pub(crate) primaries: usize,
    /// Whether fallbacks count.
    pub(crate) sloppy: bool,
}

/// `r` / `w`: the bucket's default when absent.
fn resolve(
    spec: Option<QuorumSpec>,
    param: &'static str,
    default: usize,
    n: usize,
) -> Result<usize, InputError> {
    spec.unwrap_or(QuorumSpec::Count(default)).resolve(param, n)
}

/// `pr` / `pw`: like `r` / `w`, but 0 (the default) is allowed.
fn resolve_primaries(
    spec: Option<QuorumSpec>,
    param: &'static str,
    n: usize,
) -> Result<usize, InputError> {
    match spec {
        None | Some(QuorumSpec::Count(0)) => Ok(0),
        Some(spec) => spec.resolve(param, n),
    }
}

impl Quorum {
    /// The quorum of a read: `r` (the bucket's when absent) and `pr` (0 when absent)
    /// against the bucket's `n`; fallbacks count unless `sloppy=false`.
    pub(crate) fn of_read(options: &ReadOptions, props: BucketProps) -> Result<Self, InputError> {
        Ok(Self {
            required: resolve(options.r, "r", props.r, props.n)?,
            primaries: resolve_primaries(options.pr, "pr", props.n)?,
            sloppy: options.sloppy.unwrap_or(true),
        })
    }

    /// The quorum of a write: `w` and `pw`, as [`Quorum::of_read`] for a read.
    pub(crate) fn of_write(options: &WriteOptions, props: BucketProps) -> Result<Self, InputError> {
        Ok(Self {
            required: resolve(options.w, "w", props.w, props.n)?,
            primaries: resolve_primaries(options.pw, "pw", props.n)?,
            sloppy: options.sloppy.unwrap_or(true),
        })
    }
}

pub(crate) fn quorum_unavailable(
    operation: Operation,
    required: usize,
    answered: usize,
    failures: Vec<ReplicaFailure>,
) -> CoordinatorError {
    metrics::counter!("quorumkv_quorum_failures_total", "op" => operation.as_str()).increment(1);
    CoordinatorError::QuorumUnavailable {
        operation,
        required,
        answered,
        failures,
    }
}

/// `Ok` once `tally` meets its requirement; otherwise the quorum error of its first
/// shortfall, with the replicas that failed.
pub(crate) fn quorum_met(
    tally: &AckTally,
    operation: Operation,
    failures: Vec<ReplicaFailure>,
) -> Result<(), CoordinatorError> {
    match tally.shortfall() {
        None => Ok(()),
        Some(shortfall) => Err(quorum_unavailable(
            operation,
            shortfall.required,
            shortfall.answered,
            failures,
        )),
    }
}

pub(crate) fn timed_out_failure(silent: usize) -> ReplicaFailure {
    ReplicaFailure {
        node: NodeId::new("*"),
        reason: format!("{silent} replica(s) did not answer before the timeout"),
    }
}

pub(crate) fn unexpected(node: NodeId, response: &Response) -> ReplicaFailure {
    ReplicaFailure {
        node,
        reason: format!("unexpected response {response:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_quorums_take_the_buckets_and_absent_owner_counts_are_zero() {
        let props = BucketProps::with_n(3);
        let read =
            Quorum::of_read(&ReadOptions::default(), props).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((read.required, read.primaries, read.sloppy), (2, 0, true));
        let write = WriteOptions {
            w: Some(QuorumSpec::All),
            pw: Some(QuorumSpec::Count(0)),
            sloppy: Some(false),
            ..WriteOptions::default()
        };
        let write = Quorum::of_write(&write, props).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (write.required, write.primaries, write.sloppy),
            (3, 0, false)
        );
    }

    #[test]
    fn owner_counts_past_n_are_refused_naming_the_parameter() {
        let props = BucketProps::with_n(3);
        let options = ReadOptions {
            pr: Some(QuorumSpec::Count(4)),
            ..ReadOptions::default()
        };
        match Quorum::of_read(&options, props) {
            Err(InputError::InvalidQuorum { param, .. }) => assert_eq!(param, "pr"),
            other => panic!("{other:?}"),
        }
    }
}
