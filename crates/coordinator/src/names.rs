//! Validated bucket names and keys.
//!
//! Every request names a bucket and a key. Both are checked once, where they enter the
//! system, and then travel as types that cannot hold an invalid value: the request path never
//! re-validates, and no code below the API can be handed an empty key or a bucket name that
//! would not fit the one-byte length prefix of the on-disk key layout.

use std::fmt;

use crate::error::InputError;

/// The longest bucket name, in bytes (all characters are ASCII).
pub const MAX_BUCKET_LEN: usize = 64;
/// The longest key, in bytes after percent-decoding.
pub const MAX_KEY_LEN: usize = 1024;

/// A bucket name: 1..=64 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketName(String);

impl BucketName {
    /// Checks `raw` against the bucket name rules.
    pub fn parse(raw: &[u8]) -> Result<Self, InputError> {
        Self::check(raw)?;
        // Every byte is ASCII, so this cannot fail; the error arm keeps the function total.
        String::from_utf8(raw.to_vec())
            .map(Self)
            .map_err(|_| InputError::InvalidBucket("bucket name is not UTF-8".into()))
    }

    /// Checks `raw` against the bucket name rules without keeping it: for names that
    /// arrive in a peer's message, held as bytes.
    pub fn check(raw: &[u8]) -> Result<(), InputError> {
        if raw.is_empty() || raw.len() > MAX_BUCKET_LEN {
            return Err(InputError::InvalidBucket(format!(
                "bucket names are 1 to {MAX_BUCKET_LEN} characters, got {}",
                raw.len()
            )));
        }
        if let Some(bad) = raw
            .iter()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(InputError::InvalidBucket(format!(
                "bucket names use only [A-Za-z0-9_.-], found byte 0x{bad:02x}"
            )));
        }
        Ok(())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as bytes, as hashed and stored.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key: 1..=1024 arbitrary bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// Checks the length of `raw` (keys are otherwise arbitrary bytes).
    pub fn parse(raw: Vec<u8>) -> Result<Self, InputError> {
        Self::check(&raw)?;
        Ok(Self(raw))
    }

    /// Checks `raw` as [`Key::parse`] does, without keeping it.
    pub fn check(raw: &[u8]) -> Result<(), InputError> {
        if raw.is_empty() {
            return Err(InputError::InvalidKey("keys may not be empty".into()));
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(InputError::InvalidKey(format!(
                "keys are at most {MAX_KEY_LEN} bytes, got {}",
                raw.len()
            )));
        }
        Ok(())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_the_charset_and_length_rules() {
        assert!(BucketName::parse(b"users.v2_a-b").is_ok());
        assert!(BucketName::parse(&[b'a'; 64]).is_ok());
        assert!(BucketName::parse(&[b'a'; 65]).is_err());
        assert!(BucketName::parse(b"").is_err());
        assert!(BucketName::parse(b"a/b").is_err());
        assert!(BucketName::parse(b"a b").is_err());
        assert!(BucketName::parse("caf\u{e9}".as_bytes()).is_err());
        assert!(BucketName::parse(&[0xff]).is_err());
    }

    #[test]
    fn keys_are_any_bytes_of_bounded_length() {
        assert!(Key::parse(vec![0u8, 255, b'/', b'%']).is_ok());
        assert!(Key::parse(vec![7; MAX_KEY_LEN]).is_ok());
        assert!(Key::parse(vec![7; MAX_KEY_LEN + 1]).is_err());
        assert!(Key::parse(Vec::new()).is_err());
    }
}
