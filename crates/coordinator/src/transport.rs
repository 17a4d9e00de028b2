//! How the coordinator reaches other nodes.
//!
//! The request path only needs "send this [`Request`] to that address and give me the
//! [`Response`] within this time". Keeping that behind a trait keeps every HTTP crate out of
//! the coordinator: the server plugs in the HTTP transport, and tests can plug in a
//! simulated network that drops, delays and partitions messages deterministically.

use std::time::Duration;

use async_trait::async_trait;

use crate::message::{Request, Response};

/// Sends internode requests.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to the node listening at `addr` (`host:port`) and waits at most
    /// `timeout` for its response.
    async fn call(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError>;
}

/// Why a request did not get a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No response within the timeout.
    #[error("timed out")]
    Timeout,
    /// The node could not be reached (connection refused or reset, no route).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The node answered with something that is not a valid response.
    #[error("protocol error: {0}")]
    Protocol(String),
}
