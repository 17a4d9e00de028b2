//! HTTP/1.1 over a bare TCP socket, for requests no HTTP client would send: malformed
//! request lines and headers, lying lengths, chunked bombs, clients that stall.
//!
//! Every read and write has a timeout and every exchange a deadline, so a node that never
//! answers fails the test instead of hanging it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long to wait for a TCP connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One parsed response.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `error` field of a JSON error body.
    pub fn error_code(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        body["error"].as_str().map(str::to_string)
    }
}

/// How an exchange ended.
#[derive(Clone, Debug)]
pub enum RawOutcome {
    /// A complete response.
    Response(RawResponse),
    /// The server closed the connection without a (complete) response.
    Closed,
    /// The server reset the connection.
    Reset,
    /// Nothing complete arrived before the deadline.
    TimedOut,
}

impl RawOutcome {
    /// The response, if there was one.
    pub fn response(&self) -> Option<&RawResponse> {
        match self {
            Self::Response(response) => Some(response),
            _ => None,
        }
    }
}

/// A client connection under the test's control.
pub struct RawConnection {
    stream: TcpStream,
    received: Vec<u8>,
}

impl RawConnection {
    /// Connects to `addr` (`host:port`).
    pub fn open(addr: &str) -> std::io::Result<Self> {
        let target = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            received: Vec::new(),
        })
    }

    /// Connects to `addr` from `source`, an address of this host (127.0.0.2, say): a client
    /// of its own as the server counts them.
    pub fn open_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<Self> {
        let target = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(target),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
        let stream: TcpStream = socket.into();
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            received: Vec::new(),
        })
    }

    /// Writes `bytes`. Fails when the server has closed or reset the connection (or stopped
    /// reading for 10 s).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes the sending side: the server reads end-of-file after what was sent.
    pub fn finish_sending(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Whether the server has closed or reset the connection, waiting at most `wait` for
    /// it to happen. Bytes that arrive meanwhile are kept for [`RawConnection::read_response`].
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.read_some(left) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Reads one response, waiting at most `wait` for it to be complete.
    pub fn read_response(&mut self, wait: Duration) -> RawOutcome {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(response) = parse_response(&self.received, false) {
                return RawOutcome::Response(response);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RawOutcome::TimedOut;
            }
            match self.read_some(left) {
                Ok(0) => {
                    // End of file: a head without a length ends here.
                    return match parse_response(&self.received, true) {
                        Some(response) => RawOutcome::Response(response),
                        None => RawOutcome::Closed,
                    };
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return RawOutcome::TimedOut,
                Err(_) => {
                    return match parse_response(&self.received, true) {
                        Some(response) => RawOutcome::Response(response),
                        None => RawOutcome::Reset,
                    };
                }
            }
        }
    }

    fn read_some(&mut self, wait: Duration) -> std::io::Result<usize> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut buffer = [0u8; 16 * 1024];
        let n = self.stream.read(&mut buffer)?;
        self.received.extend_from_slice(&buffer[..n]);
        Ok(n)
    }
}

/// Sends `request` as is on a new connection to `addr` and reads the response, all within
/// `wait`. A server may refuse a request before it has all been sent (a head too large,
/// say) and close: a failed write is not an error, the outcome says what came back.
pub fn exchange(addr: &str, request: &[u8], wait: Duration) -> RawOutcome {
    let mut connection = match RawConnection::open(addr) {
        Ok(connection) => connection,
        Err(e) => panic!("cannot connect to {addr}: {e}"),
    };
    // The server may answer and close before it has read everything: what matters is the
    // answer, so a failed write is not an error here.
    let _ = connection.send(request);
    connection.read_response(wait)
}

/// An HTTP/1.1 request: `method target`, `Host`, `Connection: close`, the given headers,
/// and `body` with a `Content-Length` unless the headers already frame it.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    let framed = headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !framed && (!body.is_empty() || matches!(method, "PUT" | "POST")) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Parses one response from the start of `bytes`; `at_eof` when no more bytes will come.
fn parse_response(bytes: &[u8], at_eof: bool) -> Option<RawResponse> {
    let head_end = find(bytes, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &bytes[head_end + 4..];
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        rest.get(..length)?.to_vec()
    } else if at_eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// The data of a complete chunked body, or `None` while it is incomplete.
fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n")?;
        let size_text = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_a_length_chunked_or_up_to_the_end() {
        let fixed = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse_response(fixed, false).map(|r| r.body),
            Some(b"ok".to_vec())
        );
        assert!(parse_response(&fixed[..fixed.len() - 1], false).is_none());
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked, false).map(|r| r.body),
            Some(b"abc".to_vec())
        );
        let bare = b"HTTP/1.1 200 OK\r\n\r\nrest";
        assert!(parse_response(bare, false).is_none());
        assert_eq!(parse_response(bare, true).map(|r| r.status), Some(200));
    }

    #[test]
    fn requests_get_a_length_unless_framed() {
        let text = String::from_utf8(request("PUT", "/x", &[], b"abc")).unwrap_or_default();
        assert!(text.contains("Content-Length: 3\r\n\r\nabc"), "{text}");
        let chunked = request(
            "PUT",
            "/x",
            &[("Transfer-Encoding", "chunked")],
            b"0\r\n\r\n",
        );
        assert!(!String::from_utf8_lossy(&chunked).contains("Content-Length"));
    }
}
