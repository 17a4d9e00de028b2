//! Parsing of the parts of a request the router does not parse: the raw path of a key
//! route and the query string.
//!
//! Keys are arbitrary bytes, so the key is taken from the raw (still percent-encoded) path
//! and decoded here, strictly: a `%` not followed by two hex digits is an error, not a
//! literal. Query parameters are checked against the list each route accepts, so that a
//! typo such as `W=2` is refused instead of silently falling back to a default, and a
//! parameter given twice is refused instead of one of the two being picked.

use std::time::Duration;

use quorumkv_coordinator::{BucketName, InputError, Key, QuorumSpec};

use crate::error::ApiError;

/// Decodes `%XX` escapes; any other byte stands for itself.
pub fn percent_decode_strict(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a raw bucket path segment.
pub fn bucket_from_segment(segment: &str) -> Result<BucketName, ApiError> {
    let raw = percent_decode_strict(segment).ok_or_else(|| {
        ApiError::from(InputError::InvalidBucket(
            "bad percent-encoding in the bucket name".into(),
        ))
    })?;
    Ok(BucketName::parse(&raw)?)
}

/// Splits `/v1/buckets/{bucket}/keys/{key...}` (raw) into a bucket and a key.
pub fn bucket_and_key(path: &str) -> Result<(BucketName, Key), ApiError> {
    let rest = path
        .strip_prefix("/v1/buckets/")
        .ok_or_else(|| ApiError::bad_request("invalid_key", "not a key path"))?;
    let (bucket, key) = rest
        .split_once("/keys/")
        .ok_or_else(|| ApiError::bad_request("invalid_key", "not a key path"))?;
    let bucket = bucket_from_segment(bucket)?;
    let key = percent_decode_strict(key).ok_or_else(|| {
        ApiError::from(InputError::InvalidKey(
            "bad percent-encoding in the key".into(),
        ))
    })?;
    Ok((bucket, Key::parse(key)?))
}

/// The query parameters a route accepts, parsed.
#[derive(Debug, Default)]
pub struct Query {
    /// `r`.
    pub r: Option<QuorumSpec>,
    /// `w`.
    pub w: Option<QuorumSpec>,
    /// `pr`.
    pub pr: Option<QuorumSpec>,
    /// `pw`.
    pub pw: Option<QuorumSpec>,
    /// `sloppy`.
    pub sloppy: Option<bool>,
    /// `read_repair`.
    pub read_repair: Option<bool>,
    /// `local`.
    pub local: Option<bool>,
    /// `timeout_ms`.
    pub timeout: Option<Duration>,
}

/// Parses `query` accepting only the parameters in `allowed`.
pub fn parse_query(query: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
    let mut parsed = Query::default();
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |raw: &str| {
            percent_decode_strict(&raw.replace('+', " "))
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_query", "bad percent-encoding in the query")
                })
        };
        let name = decode(raw_name)?;
        let value = decode(raw_value)?;
        if !allowed.contains(&name.as_str()) {
            let accepted = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(ApiError::bad_request(
                "unknown_parameter",
                format!("unknown query parameter {name:?}; this route accepts: {accepted}"),
            ));
        }
        if seen.contains(&name) {
            return Err(ApiError::bad_request(
                "duplicate_parameter",
                format!("query parameter {name:?} is given more than once"),
            ));
        }
        match name.as_str() {
            "r" => parsed.r = Some(QuorumSpec::parse("r", &value)?),
            "w" => parsed.w = Some(QuorumSpec::parse("w", &value)?),
            "pr" => parsed.pr = Some(QuorumSpec::parse("pr", &value)?),
            "pw" => parsed.pw = Some(QuorumSpec::parse("pw", &value)?),
            "sloppy" => parsed.sloppy = Some(parse_bool("sloppy", &value)?),
            "read_repair" => parsed.read_repair = Some(parse_bool("read_repair", &value)?),
            "local" => parsed.local = Some(parse_bool("local", &value)?),
            "timeout_ms" => parsed.timeout = Some(parse_timeout(&value)?),
            _ => {}
        }
        seen.push(name);
    }
    Ok(parsed)
}

fn parse_bool(name: &str, raw: &str) -> Result<bool, ApiError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} must be true or false, got {raw:?}"),
        )),
    }
}

fn parse_timeout(raw: &str) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::from(InputError::InvalidTimeout(format!(
            "timeout_ms must be a positive whole number of milliseconds, got {raw:?}"
        )))
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    raw.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode_strict("a%2Fb%00"), Some(b"a/b\0".to_vec()));
        assert_eq!(percent_decode_strict("%ff"), Some(vec![0xff]));
        for bad in ["%", "%2", "%zz", "a%g1"] {
            assert_eq!(percent_decode_strict(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_paths_keep_slashes_and_binary_bytes() {
        let (bucket, key) = bucket_and_key("/v1/buckets/b1/keys/a/b%2F%00").expect("parse");
        assert_eq!(bucket.as_str(), "b1");
        assert_eq!(key.as_bytes(), b"a/b/\0");
        assert!(bucket_and_key("/v1/buckets/b1/keys/").is_err());
        assert!(bucket_and_key("/v1/buckets/b%201/keys/k").is_err());
    }

    #[test]
    fn queries_refuse_unknown_and_repeated_parameters() {
        let q = parse_query(Some("r=2&timeout_ms=50"), &["r", "timeout_ms"]).expect("ok");
        assert_eq!(q.r, Some(QuorumSpec::Count(2)));
        assert_eq!(q.timeout, Some(Duration::from_millis(50)));
        let err = parse_query(Some("W=2"), &["w"]).expect_err("typo");
        assert_eq!(err.code(), "unknown_parameter");
        let err = parse_query(Some("w=1&w=2"), &["w"]).expect_err("dup");
        assert_eq!(err.code(), "duplicate_parameter");
        let err = parse_query(Some("timeout_ms=-1"), &["timeout_ms"]).expect_err("neg");
        assert_eq!(err.code(), "invalid_timeout");
        let err = parse_query(Some("r=%zz"), &["r"]).expect_err("pct");
        assert_eq!(err.code(), "invalid_query");
    }
}
