//! The load generator's HTTP client: HTTP/1.1 keep-alive connections on hyper's
//! connection API, pooled per endpoint, Nagle off.
//!
//! The load generator shares the machine's two cores with the servers it measures, so
//! whatever it spends per request is taken from them. A general-purpose client (reqwest)
//! parses a URL for every request, finds its pool by scheme and authority, and wraps the
//! exchange in layers for redirects, decompression and timeouts. This one is given its
//! endpoints once and per request only writes a request line, the `Host` header, the
//! caller's headers and the body, then reads the whole answer. Every target uses it, so
//! each pays the same client cost and the comparison stays about the servers.
//!
//! Plain HTTP only: the servers measured here listen on loopback without TLS.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ErrorKind;

/// How long opening a connection may take, within the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, read to the end.
    pub body: Bytes,
}

/// One server: where to connect, what to call it, and its idle connections.
#[derive(Debug)]
struct Endpoint {
    /// `host:port`, to connect to.
    addr: String,
    /// The same, as the `Host` header.
    host: HeaderValue,
    /// The endpoint's path, without a trailing `/`, put before every request's path.
    base_path: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A client of a fixed list of endpoints (`http://host:port[/path]`).
#[derive(Debug)]
pub struct HttpClient {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
}

impl HttpClient {
    /// A client of `endpoints`, each request bounded by `timeout` (connecting included).
    ///
    /// # Errors
    /// An endpoint that is not an `http://` URL with a host.
    pub fn new(endpoints: &[String], timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no endpoint given");
        let endpoints = endpoints
            .iter()
            .map(|url| parse_endpoint(url))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { endpoints, timeout })
    }

    /// Sends `method path` (the path and query, after the endpoint's own path) with
    /// `headers` and `body` to endpoint `endpoint` (modulo the endpoint count) and reads
    /// the whole answer. Errors are classified as the results count them: `connect`,
    /// `request`, `body` and `timeout`.
    pub async fn send(
        &self,
        endpoint: usize,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Reply, ErrorKind> {
        let endpoint = &self.endpoints[endpoint % self.endpoints.len()];
        let uri = Uri::try_from(format!("{}{path}", endpoint.base_path))
            .map_err(|_| ErrorKind::new("request"))?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let request_headers = request.headers_mut();
        request_headers.insert(HOST, endpoint.host.clone());
        for (name, value) in headers {
            request_headers.insert(name.clone(), value.clone());
        }
        tokio::time::timeout(self.timeout, endpoint.exchange(request))
            .await
            .unwrap_or_else(|_| Err(ErrorKind::new("timeout")))
    }
}

impl Endpoint {
    async fn exchange(&self, mut request: Request<Full<Bytes>>) -> Result<Reply, ErrorKind> {
        loop {
            let (mut sender, pooled) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if pooled {
                    continue;
                }
                return Err(ErrorKind::new("connect"));
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut error) => match error.take_message() {
                    // A kept-alive connection the server had closed before the request
                    // was written: the server never saw it, so it may go again.
                    Some(unsent) if pooled => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err(ErrorKind::new("request")),
                },
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|_| ErrorKind::new("body"))?
                .to_bytes();
            self.put_idle(sender);
            return Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        // A push or a pop cannot leave the list half-changed, poisoned or not.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        if !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.push(sender);
        }
    }

    /// Opens a connection and drives it on a task of its own, which ends when the server
    /// closes it or the last sender is dropped.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ErrorKind> {
        let connecting = async {
            let stream = TcpStream::connect(&self.addr).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(async move {
                // An error here is a connection that broke; the request on it, if any,
                // is counted by `exchange`.
                let _ = connection.await;
            });
            Some(sender)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| ErrorKind::new("connect"))
    }
}

fn parse_endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("endpoint {url:?}: {e}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "endpoint {url:?}: only http:// endpoints are supported"
    );
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("endpoint {url:?} has no host"))?;
    let addr = if authority.port().is_some() {
        authority.as_str().to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Endpoint {
        host: HeaderValue::from_str(authority.as_str())?,
        addr,
        base_path: uri.path().trim_end_matches('/').to_string(),
        idle: Mutex::new(Vec::new()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_urls() {
        let e = parse_endpoint("http://127.0.0.1:2379").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.base_path.as_str()),
            ("127.0.0.1:2379", "")
        );
        assert_eq!(e.host, "127.0.0.1:2379");
        let e = parse_endpoint("http://localhost/prefix/").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.base_path.as_str()),
            ("localhost:80", "/prefix")
        );
        assert!(parse_endpoint("https://127.0.0.1:1").is_err());
        assert!(parse_endpoint("127.0.0.1:1").is_err());
    }

    /// A whole exchange with a real server on loopback: the request as sent, the answer
    /// as read, and a second request on the kept-alive connection.
    #[tokio::test]
    async fn sends_and_reads_over_a_kept_alive_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in ["first", "second"] {
                let mut request = Vec::new();
                // Requests end with their 3-byte body here; read up to and including it.
                while !request.ends_with(b"abc") {
                    let mut buf = [0u8; 1024];
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed the connection");
                    request.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8(request).unwrap());
                let response = format!(
                    "HTTP/1.1 201 Created\r\nx-answer: {answer}\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
            }
            seen
        });
        let client =
            HttpClient::new(&[format!("http://{addr}/base")], Duration::from_secs(5)).unwrap();
        let header = (
            HeaderName::from_static("x-test"),
            HeaderValue::from_static("1"),
        );
        for answer in ["first", "second"] {
            let reply = client
                .send(
                    7,
                    Method::PUT,
                    "/k?w=2",
                    std::slice::from_ref(&header),
                    Bytes::from_static(b"abc"),
                )
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::CREATED);
            assert_eq!(reply.headers["x-answer"], answer);
            assert_eq!(reply.body, answer);
        }
        let seen = server.await.unwrap();
        for request in &seen {
            let lower = request.to_ascii_lowercase();
            assert!(
                request.starts_with("PUT /base/k?w=2 HTTP/1.1\r\n"),
                "{request}"
            );
            assert!(lower.contains(&format!("host: {addr}\r\n")), "{request}");
            assert!(lower.contains("x-test: 1\r\n"), "{request}");
            assert!(lower.contains("content-length: 3\r\n"), "{request}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_counted_as_connect() {
        // A port just freed: nothing listens on it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = HttpClient::new(&[format!("http://{addr}")], Duration::from_secs(5)).unwrap();
        let error = client
            .send(0, Method::GET, "/", &[], Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(error, ErrorKind::new("connect"));
    }
}
