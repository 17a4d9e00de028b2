//! The coordinator's errors: what went wrong, in the terms a caller branches on.
//!
//! [`InputError`] is always the client's to fix (the HTTP layer answers 4xx). The rest of
//! [`CoordinatorError`] describes the cluster: a quorum that could not be met says how many
//! replicas were needed, how many answered, and why each of the others did not.

use std::fmt;

use quorumkv_ring::NodeId;

/// A request that can never succeed as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The bucket name breaks the naming rules.
    #[error("invalid bucket name: {0}")]
    InvalidBucket(String),
    /// The key is empty or too long.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// `r` or `w` is not a quorum of the bucket's `n`.
    #[error("{message}")]
    InvalidQuorum {
        /// The parameter at fault (`r` or `w`).
        param: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `timeout_ms` is not a usable timeout.
    #[error("invalid timeout: {0}")]
    InvalidTimeout(String),
    /// The causal context token is malformed, truncated or was not issued by this cluster.
    #[error("invalid causal context: {0}")]
    InvalidContext(String),
    /// Bucket properties that are not a valid configuration.
    #[error("invalid bucket properties: {0}")]
    InvalidProps(String),
}

/// The operation a quorum was gathered for (used in errors and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A read.
    Get,
    /// A write of a value.
    Put,
    /// A write of a tombstone.
    Delete,
    /// A change of bucket properties.
    SetProps,
}

impl Operation {
    /// A stable lower-case name, for metrics labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::SetProps => "set_props",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one replica did not contribute to a quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaFailure {
    /// The replica's node.
    pub node: NodeId,
    /// What happened, for humans.
    pub reason: String,
}

/// Everything the request path can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request is invalid; nothing was done.
    #[error(transparent)]
    Input(#[from] InputError),
    /// This node does not yet know every member of the cluster, so it cannot place keys.
    #[error("node is not ready: {0}")]
    NotReady(String),
    /// Fewer replicas than required answered in time.
    #[error("{operation} needed {required} replicas, {answered} answered{}", describe_failures(.failures))]
    QuorumUnavailable {
        /// What the quorum was for.
        operation: Operation,
        /// How many successful replies were needed.
        required: usize,
        /// How many arrived in time.
        answered: usize,
        /// Why each of the other replicas did not answer.
        failures: Vec<ReplicaFailure>,
    },
    /// A change of `n` was refused because the bucket already holds data.
    #[error("bucket {bucket} already holds data; changing n from {current} to {requested} would strand it")]
    BucketNotEmpty {
        /// The bucket.
        bucket: String,
        /// Its current replication factor.
        current: usize,
        /// The one asked for.
        requested: usize,
    },
    /// This node's disk is full, so it cannot store what the request changes here; the
    /// request may be retried once space is freed.
    #[error("this node is out of disk space: {0}")]
    InsufficientStorage(String),
    /// A fault of this node (its storage, most likely); the request may be retried.
    #[error("internal error: {0}")]
    Internal(String),
    /// A membership change named a node that is not a member.
    #[error("no member {0}")]
    NodeNotFound(String),
    /// A removal named a member that is up: it should leave by itself, or the removal must
    /// be forced.
    #[error(
        "{0} is up: ask it to leave (POST /v1/cluster/leave on it), or remove it with \
         \"force\": true if it must go anyway (a removed id can never rejoin)"
    )]
    MemberUp(String),
    /// A membership change that cannot be made (removing this node, leaving while
    /// joining, leaving the cluster without members).
    #[error("{0}")]
    InvalidChange(String),
    /// The request needs a balanced cluster, and a membership change is under way (or
    /// committed too recently); it may be retried once the change is done.
    #[error("{0}")]
    ChangeUnderWay(String),
    /// The key holds its maximum number of siblings and the write resolves none of them;
    /// nothing was stored. A write with the context of a read that resolves some succeeds.
    #[error("{message}")]
    TooManySiblings {
        /// The siblings the key holds, when the refusing replica said.
        count: Option<usize>,
        /// The refusing replica's words.
        message: String,
    },
    /// The write would make the key's record larger than its owners keep; nothing was
    /// stored.
    #[error("{0}")]
    ObjectTooLarge(String),
    /// The write would give the key's clock more entries than its owners keep; nothing
    /// was stored. A delete is accepted, and the key written after its tombstone is
    /// reaped starts a new clock.
    #[error("{0}")]
    ClockTooLarge(String),
}

impl CoordinatorError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NotReady(_)
                | Self::QuorumUnavailable { .. }
                | Self::InsufficientStorage(_)
                | Self::Internal(_)
                | Self::ChangeUnderWay(_)
        )
    }
}

fn describe_failures(failures: &[ReplicaFailure]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.node, f.reason))
        .collect();
    format!(" ({})", parts.join("; "))
}
