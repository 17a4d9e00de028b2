//! Connections to peers: HTTP/1.1 keep-alive connections on hyper's connection API, kept
//! idle per peer between exchanges.
//!
//! Internode exchanges are the hot path of every quorum operation, and a general HTTP
//! client does much per request that a peer never needs: parsing a URL, a redirect
//! policy, decoders, a per-request timer and a pool keyed by scheme and authority behind
//! a tower stack. Measured under write load, that client was an eighth of a node's CPU.
//! Here an exchange is what HTTP/1.1 itself costs: take an idle connection of the peer
//! (or open one), write the request, read the response, put the connection back.
//!
//! - A connection idle for [`IDLE_TIMEOUT`] is not used again: it stays below the 10 s
//!   after which a peer closes an idle connection (its header timeout), so a request never
//!   goes out on a connection the peer is closing. A request that still meets a connection
//!   closed before the request was written is sent again on a new connection: the peer
//!   never saw it.
//! - Nagle's algorithm is off: small requests and responses would otherwise wait on
//!   delayed ACKs, adding tens of milliseconds.
//! - A node with several addresses calls from the one its peers know it by
//!   (`source_ip`): otherwise a cut between two addresses (a firewall rule, a route) would
//!   not separate the nodes it is meant to separate.
//! - With TLS, the peer's certificate is checked against the given CA certificates only,
//!   for the peer's advertised host (see [`crate::internode`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// How long a connection may sit idle and still be used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per peer; more are closed when their exchange ends.
const MAX_IDLE_PER_PEER: usize = 64;

/// How long opening a connection (TCP and TLS handshakes) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// No connection could be opened.
    Connect(String),
    /// Opening a connection took longer than [`CONNECT_TIMEOUT`]: the peer may be slow
    /// rather than gone.
    ConnectTimeout,
    /// The connection failed during the exchange, or the response was not HTTP.
    Exchange(String),
}

/// Idle connections to every peer, and how to open new ones.
pub(crate) struct Peers {
    tls: Option<TlsConnector>,
    source_ip: Option<IpAddr>,
    /// By peer address. A std mutex: held to push or pop, never across an await.
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("tls", &self.tls.is_some())
            .field("source_ip", &self.source_ip)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Plain HTTP connections, leaving from `source_ip` (or the address the OS picks).
    pub(crate) fn plain(source_ip: Option<IpAddr>) -> Self {
        Self {
            tls: None,
            source_ip,
            idle: Mutex::default(),
        }
    }

    /// TLS connections to peers whose certificates the CA certificates of `ca_pem` (PEM,
    /// one or more) vouch for, and nothing else.
    pub(crate) fn tls(ca_pem: &[u8], source_ip: Option<IpAddr>) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;

        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| format!("unusable CA certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("unusable CA certificates: no PEM certificate in them".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("the TLS provider supports no protocol version: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Some(TlsConnector::from(Arc::new(config))),
            source_ip,
            idle: Mutex::default(),
        })
    }

    /// Sends `request` to the peer at `addr` (`host:port`) and reads the whole response,
    /// whose body may not exceed `max_body` bytes. Has no timeout of its own: the caller
    /// bounds it.
    pub(crate) async fn exchange(
        &self,
        addr: &str,
        mut request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<(axum::http::StatusCode, Bytes), ExchangeError> {
        loop {
            let (mut sender, pooled) = match self.take_idle(addr) {
                Some(sender) => (sender, true),
                None => (self.connect(addr).await?, false),
            };
            if sender.ready().await.is_err() {
                if pooled {
                    continue;
                }
                return Err(ExchangeError::Exchange(
                    "the new connection closed at once".into(),
                ));
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut error) => match error.take_message() {
                    // Closed before the request was written: the peer never saw it.
                    Some(unsent) if pooled => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err(ExchangeError::Exchange(error.into_error().to_string())),
                },
            };
            let (status, body) = read(response, max_body).await?;
            self.put_idle(addr, sender);
            return Ok((status, body));
        }
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<String, Vec<Idle>>> {
        // Every update is a push or a pop; a panic cannot leave the map half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `addr` that is still fit for use.
    fn take_idle(&self, addr: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle();
        let list = idle.get_mut(addr)?;
        let now = Instant::now();
        while let Some(connection) = list.pop() {
            if now.duration_since(connection.since) < IDLE_TIMEOUT && !connection.sender.is_closed()
            {
                return Some(connection.sender);
            }
        }
        None
    }

    fn put_idle(&self, addr: &str, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        let list = idle.entry(addr.to_string()).or_default();
        // The oldest are at the front: drop those too old to be used again.
        list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT);
        if list.len() < MAX_IDLE_PER_PEER {
            list.push(Idle { sender, since: now });
        }
    }

    /// Opens a connection to `addr` and starts driving it on its own task.
    async fn connect(&self, addr: &str) -> Result<SendRequest<Full<Bytes>>, ExchangeError> {
        let connecting = async {
            let stream = self.tcp(addr).await?;
            match &self.tls {
                None => handshake(stream).await,
                Some(tls) => {
                    let name = server_name(addr)?;
                    let stream = tls
                        .connect(name, stream)
                        .await
                        .map_err(|e| ExchangeError::Connect(format!("TLS with {addr}: {e}")))?;
                    handshake(stream).await
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .unwrap_or(Err(ExchangeError::ConnectTimeout))
    }

    /// A TCP connection to the first address of `addr` that accepts one.
    async fn tcp(&self, addr: &str) -> Result<TcpStream, ExchangeError> {
        let resolved = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| ExchangeError::Connect(format!("cannot resolve {addr}: {e}")))?;
        let mut last = format!("{addr} resolves to no address");
        for target in resolved {
            match self.tcp_to(target).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = format!("cannot connect to {addr} ({target}): {e}"),
            }
        }
        Err(ExchangeError::Connect(last))
    }

    async fn tcp_to(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = self.source_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.set_nodelay(true)?;
        socket.connect(target).await
    }
}

async fn handshake<T>(stream: T) -> Result<SendRequest<Full<Bytes>>, ExchangeError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ExchangeError::Connect(format!("HTTP handshake: {e}")))?;
    // Ends when the connection closes: the peer's side, or the last sender dropped.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "internode connection ended");
        }
    });
    Ok(sender)
}

/// Reads a response whole, up to `max_body` bytes of body.
async fn read(
    response: Response<hyper::body::Incoming>,
    max_body: usize,
) -> Result<(axum::http::StatusCode, Bytes), ExchangeError> {
    let status = response.status();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| ExchangeError::Exchange(format!("reading the response: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// The name a peer's certificate must hold: the host of its advertised `host:port`.
fn server_name(addr: &str) -> Result<ServerName<'static>, ExchangeError> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _port)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| ExchangeError::Connect(format!("{addr} has no usable TLS name: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location
mod tests {
    use super::*;

    #[test]
    fn the_tls_name_is_the_advertised_host() {
        let name = |addr: &str| server_name(addr).map(|n| n.to_str().into_owned()).ok();
        assert_eq!(
            name("node1.quorumkv:7000").as_deref(),
            Some("node1.quorumkv")
        );
        assert_eq!(name("10.0.0.7:7000").as_deref(), Some("10.0.0.7"));
        assert_eq!(name("[::1]:7000").as_deref(), Some("::1"));
        assert!(server_name("bad name:7000").is_err());
    }

    #[test]
    fn ca_files_without_a_certificate_are_refused() {
        assert!(Peers::tls(b"not a certificate", None).is_err());
        assert!(Peers::tls(b"", None).is_err());
    }
}
