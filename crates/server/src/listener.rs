//! The HTTP listener: the accept loop that serves the router, with the limits that keep one
//! client from holding the node, and the graceful drain at shutdown.
//!
//! A hand-written loop rather than `axum::serve`, which can neither give hyper what it needs
//! to cut slow clients off (a timer and a header read timeout) nor bound the connections:
//! - a connection whose next request head does not arrive within the header timeout is
//!   closed, so a client that sends a byte now and then (slowloris), or nothing at all,
//!   holds its connection no longer than that; idle kept-alive connections close too;
//! - request heads over [`MAX_HEAD_BYTES`] are refused with a bare 431;
//! - at most `max_connections` are open at once for anyone; past that a connection takes
//!   one of `peer_connections` more, kept for the node's peers, on which only internode
//!   requests are served (`Edge::peers_only`: a client gets 503 `overloaded` and is
//!   closed). One port for clients and peers, with a share clients cannot take, rather
//!   than a second listener: a member keeps one address, one certificate name and one
//!   rule in a network policy, and an upgrade needs no new field in the member records.
//!   A peer is known by the secret its requests carry, so its connection is accepted
//!   before it is known; the share is what a client cannot keep. When both pools are
//!   held the loop stops accepting, and new connections wait in the kernel's backlog;
//! - at most `max_connections_per_ip` of them come from one address: one more from that
//!   address is closed as soon as it is accepted. Without this one client holding idle
//!   kept-alive connections took every slot, and the node's peers, which share the pool,
//!   could no longer reach it and marked it down;
//! - with TLS, the handshake too must be done within the header timeout, in the
//!   connection's own task (a slow handshake never delays the accept loop), holding its
//!   connection slot: a client that connects and says nothing is closed like one that
//!   sends no request head. Shutdown cuts handshakes still under way.
//!
//! The credentials and the whole-request timeout are the router's edge
//! (`quorumkv_http_api::Edge`). Every accepted socket gets `TCP_NODELAY`:
//! small responses must not wait for delayed ACKs.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use quorumkv_http_api::Edge;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

/// The largest request head (request line and headers) a client may send. It leaves room
/// for an 8 KiB causal context and a 1 KiB key percent-encoded byte by byte.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long open connections may take to finish their requests once shutdown has begun.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What clients may hold of the listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once, to anyone.
    pub max_connections: usize,
    /// Connections served at once beyond `max_connections`, to peers only.
    pub peer_connections: usize,
    /// Connections served at once from one client address.
    pub max_connections_per_ip: usize,
    /// The longest a client may take to send a request head, the first one or the next one
    /// on a kept-alive connection; with TLS, also the longest its handshake may take.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes;
/// then stops accepting, closes idle connections, lets the others finish their requests
/// for at most [`DRAIN_TIMEOUT`], and returns.
pub async fn serve(
    listener: TcpListener,
    app: Edge,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peer_slots = Arc::new(Semaphore::new(limits.peer_connections));
    let per_ip = Arc::new(PerIp::default());
    let graceful = GracefulShutdown::new();
    // Handshakes are no connections yet for `graceful`: this tells them to give up.
    let (stopping, stop_handshakes) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A free slot first, then a connection: a node at its limit accepts nothing. A
        // slot for anyone when there is one, else one kept for peers.
        let (slot, peers_only) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => (slot, false),
            slot = Arc::clone(&peer_slots).acquire_owned() => (slot, true),
        };
        let Ok(slot) = slot else {
            break; // closed: cannot happen, nobody closes them
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => match per_ip.take(from.ip(), limits.max_connections_per_ip) {
                    Some(held) => (stream, held),
                    None => {
                        metrics::counter!("quorumkv_connections_refused_per_ip_total").increment(1);
                        continue; // dropped: closed at once, and the slot is free again
                    }
                },
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, held) = stream;
        let (slot, peers_only) = if peers_only {
            for_anyone_if_free(slot, &slots)
        } else {
            (slot, false)
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let edge = if peers_only {
            metrics::counter!("quorumkv_connections_on_peer_slots_total").increment(1);
            app.clone().peers_only()
        } else {
            app.clone()
        };
        let service = TowerToHyperService::new(edge);
        let Some(tls) = &tls else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    // Clients that time out, reset or send garbage: theirs to know, not ours.
                    tracing::debug!(%error, "connection ended with an error");
                }
                drop((slot, held));
            });
            continue;
        };
        let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(stream));
        let watcher = graceful.watcher();
        let http = http.clone();
        let mut stop_handshake = stop_handshakes.clone();
        tokio::spawn(async move {
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        // Plain HTTP, a client that does not trust us, a scanner.
                        tracing::debug!(%error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                },
                _ = stop_handshake.wait_for(|stopping| *stopping) => return,
            };
            let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop((slot, held));
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    tracing::info!(
        open = graceful.count(),
        "stopped accepting; draining connections"
    );
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping without them");
    }
}

/// A slot for anyone in place of `peer_slot` if one is free, with whether the connection
/// is still on a peer's slot. The loop takes a peer's slot before it accepts, when every
/// other is held; by the time a connection comes one may have freed, and without this a
/// client would be sent away from a node with room for it.
fn for_anyone_if_free(
    peer_slot: OwnedSemaphorePermit,
    slots: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, bool) {
    match Arc::clone(slots).try_acquire_owned() {
        Ok(free) => (free, false), // the peer's slot is given back as it drops here
        Err(_) => (peer_slot, true),
    }
}

/// The connections open from each client address.
#[derive(Debug, Default)]
struct PerIp {
    // A std Mutex: held for one map update per accepted and per closed connection.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Counts one more connection from `ip`, unless it already has `max`: the returned
    /// guard counts it off when dropped.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<HeldByIp> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(HeldByIp {
            per_ip: Arc::clone(self),
            ip,
        })
    }
}

/// One open connection from `ip`, counted in [`PerIp`] until dropped.
#[derive(Debug)]
struct HeldByIp {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for HeldByIp {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Waits after a failed `accept`. A connection its client gave up before it was accepted
/// is no fault of the listener; anything else (out of file descriptors, most likely) is
/// logged, and the loop pauses instead of spinning on it.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
