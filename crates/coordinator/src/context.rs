//! The causal context token: a version vector handed to clients as an opaque string,
//! signed by the cluster and bound to its key.
//!
//! A read returns the version vector of everything it saw; a later write sends it back to
//! say which versions it supersedes. The client must not interpret it, and the cluster must
//! not trust a token it did not issue for that key: with a token it could recompute (a CRC,
//! as earlier releases issued), one request could claim to have seen versions it never saw
//! and silently supersede them, name counters near `u64::MAX` so that no later write of the
//! key could be minted, or name thousands of made-up actors. So a token is:
//!
//! 1. format version, one byte: `3`, or `4` for a vector with exceptions (a write's answer
//!    when the key holds siblings its writer had not seen);
//! 2. the version vector, postcard-encoded in the [`WireFormat`] of the vector (version 1
//!    without exceptions, 2 with them);
//! 3. the first 16 bytes of an HMAC-SHA256, under the cluster's [`ContextKey`], of a domain
//!    tag, the bucket and the key (each with its length), the version byte and the payload.
//!
//! The whole is base64url without padding, so it travels in an HTTP header as is. A token
//! of another key, an edited one, one of an earlier release (versions 1 and 2, a CRC
//! only) or one signed under another key is refused: a client re-reads the key for a new
//! one. Every node of a cluster derives the same key from the cluster secret; a node alone
//! keeps a random one in its data directory. The comparison is constant-time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use quorumkv_replica::{encode_compatible, with_format, VersionVector, WireFormat};
use sha2::Sha256;

use crate::error::InputError;

/// The token format of a vector without exceptions.
const TOKEN_V3: u8 = 3;
/// The token format of a vector with exceptions.
const TOKEN_V4: u8 = 4;
/// The formats of earlier releases (a CRC, no signature): refused.
const TOKEN_CRC: [u8; 2] = [1, 2];
/// Bytes of the MAC kept in a token: 128 bits.
const MAC_LEN: usize = 16;
/// Mixed into the MAC, so that no other message signed under the key is a token.
const DOMAIN_TAG: &[u8] = b"quorumkv-causal-context-v3";
/// What the cluster secret is mixed with to derive the key.
const DERIVATION_TAG: &[u8] = b"quorumkv causal context key v1";
/// Tokens longer than this are refused before decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The key that signs causal context tokens; the same on every node of a cluster. During a
/// rotation of the cluster secret it also checks tokens signed under the other secret
/// ([`ContextKey::also_accepting`]), so that no client has to read again.
#[derive(Clone)]
pub struct ContextKey {
    /// Signs, and checks.
    key: [u8; 32],
    /// Checks only.
    previous: Option<[u8; 32]>,
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(<redacted>)")
    }
}

impl ContextKey {
    /// The key every node holding `secret` (the cluster secret) derives alike.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(DERIVATION_TAG);
        let mut key = [0; 32];
        key.copy_from_slice(&mac.finalize().into_bytes());
        Self::from_bytes(key)
    }

    /// This key, also checking tokens signed under `other` (the other secret of a
    /// rotation); it still signs with its own.
    pub fn also_accepting(mut self, other: &ContextKey) -> Self {
        self.previous = Some(other.key);
        self
    }

    /// A new random key (a node alone makes one for good and keeps it).
    pub fn random() -> Self {
        Self::from_bytes(rand::random())
    }

    /// A key of these bytes (a node alone keeps one in its data directory).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: bytes,
            previous: None,
        }
    }

    /// This key's bytes, to keep.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key
    }

    /// The MAC under the signing key of a token's `body` for `bucket`/`key`.
    fn mac(&self, bucket: &[u8], key: &[u8], body: &[u8]) -> Hmac<Sha256> {
        mac_under(&self.key, bucket, key, body)
    }

    /// Signs `body` (a version byte and a payload, whatever they hold) as a token of
    /// `bucket`/`key`: for the fuzz target and tests, which must reach the decoder behind
    /// the MAC. Only a holder of the key can, as with [`ContextKey::encode`].
    pub fn sign_raw(&self, bucket: &[u8], key: &[u8], body: &[u8]) -> String {
        let tag = self.mac(bucket, key, body).finalize().into_bytes();
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Encodes `clock` as the causal context token of `bucket`/`key`.
    pub fn encode(&self, bucket: &[u8], key: &[u8], clock: &VersionVector) -> String {
        // Serialising a map of integers into a Vec cannot fail.
        let (payload, format) =
            encode_compatible(|| postcard::to_stdvec(clock).unwrap_or_default());
        let mut bytes = Vec::with_capacity(1 + payload.len() + MAC_LEN);
        bytes.push(match format {
            WireFormat::V1 => TOKEN_V3,
            WireFormat::V2 => TOKEN_V4,
        });
        bytes.extend_from_slice(&payload);
        let tag = self.mac(bucket, key, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a token [`ContextKey::encode`] issued for `bucket`/`key`; anything else is
    /// an [`InputError::InvalidContext`].
    pub fn decode(
        &self,
        bucket: &[u8],
        key: &[u8],
        token: &str,
    ) -> Result<VersionVector, InputError> {
        let invalid = |why: &str| InputError::InvalidContext(why.to_string());
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token is too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| invalid("token is not base64url"))?;
        if bytes.first().is_some_and(|v| TOKEN_CRC.contains(v)) {
            return Err(invalid(
                "token of an earlier release, which this one no longer trusts: read the key again",
            ));
        }
        if bytes.len() < 1 + MAC_LEN {
            return Err(invalid("token is truncated"));
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let signed_under = |secret_key: &[u8; 32]| {
            mac_under(secret_key, bucket, key, body)
                .verify_truncated_left(tag)
                .is_ok()
        };
        if !signed_under(&self.key) && !self.previous.as_ref().is_some_and(signed_under) {
            return Err(invalid(
                "token was not issued for this key by this cluster (damaged, forged, or of another key)",
            ));
        }
        let format = match body[0] {
            TOKEN_V3 => WireFormat::V1,
            TOKEN_V4 => WireFormat::V2,
            _ => return Err(invalid("unknown token version")),
        };
        let (clock, rest): (VersionVector, &[u8]) =
            with_format(format, || postcard::take_from_bytes(&body[1..]))
                .map_err(|_| invalid("token payload is malformed"))?;
        if !rest.is_empty() {
            return Err(invalid("token has trailing bytes"));
        }
        Ok(clock)
    }
}

/// The MAC under `secret_key` of a token's `body` for `bucket`/`key`.
fn mac_under(secret_key: &[u8; 32], bucket: &[u8], key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(DOMAIN_TAG);
    for part in [bucket, key] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.update(body);
    mac
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use quorumkv_replica::{ActorId, Dot};

    use super::*;

    fn key() -> ContextKey {
        ContextKey::from_secret(b"a-cluster-secret-for-tests")
    }

    fn sample() -> VersionVector {
        [(ActorId(7), 3), (ActorId(u64::MAX), 1)]
            .into_iter()
            .collect()
    }

    #[test]
    fn tokens_round_trip() {
        let clock = sample();
        let token = key().encode(b"b", b"k", &clock);
        assert_eq!(key().decode(b"b", b"k", &token), Ok(clock));
        let empty = VersionVector::new();
        let token = key().encode(b"b", b"k", &empty);
        assert_eq!(key().decode(b"b", b"k", &token), Ok(empty));
    }

    /// A token is good for the key it was issued for, under the key that signed it, and
    /// nowhere else: not another key or bucket (even where the two concatenate alike), not
    /// another cluster.
    #[test]
    fn a_token_is_bound_to_its_key_and_its_cluster() {
        let token = key().encode(b"b", b"k", &sample());
        for (bucket, k) in [
            (&b"b"[..], &b"k2"[..]),
            (b"c", b"k"),
            (b"bk", b""),
            (b"", b"bk"),
        ] {
            assert!(key().decode(bucket, k, &token).is_err(), "{bucket:?}/{k:?}");
        }
        let other = ContextKey::from_secret(b"another-cluster-secret");
        assert!(other.decode(b"b", b"k", &token).is_err());
        // The same secret gives the same key: every node of a cluster checks alike.
        assert_eq!(
            key().to_bytes(),
            ContextKey::from_secret(b"a-cluster-secret-for-tests").to_bytes()
        );
    }

    /// During a rotation of the cluster secret, tokens signed under either secret are good,
    /// and new ones are signed under the first.
    #[test]
    fn a_rotation_checks_tokens_of_both_secrets() {
        let old = key();
        let new = ContextKey::from_secret(b"the-next-cluster-secret");
        let rotating = new.clone().also_accepting(&old);
        let by_old = old.encode(b"b", b"k", &sample());
        assert_eq!(rotating.decode(b"b", b"k", &by_old), Ok(sample()));
        let by_rotating = rotating.encode(b"b", b"k", &sample());
        assert_eq!(new.decode(b"b", b"k", &by_rotating), Ok(sample()));
        assert!(old.decode(b"b", b"k", &by_rotating).is_err());
        let stranger = ContextKey::from_secret(b"a-stranger-secret");
        assert!(rotating
            .decode(b"b", b"k", &stranger.encode(b"b", b"k", &sample()))
            .is_err());
    }

    #[test]
    fn every_truncation_and_every_edited_character_is_rejected() {
        let token = key().encode(b"b", b"k", &sample());
        for cut in 0..token.len() {
            assert!(
                key().decode(b"b", b"k", &token[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        for i in 0..token.len() {
            let mut chars: Vec<char> = token.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let edited: String = chars.into_iter().collect();
            assert!(
                key().decode(b"b", b"k", &edited).is_err(),
                "edit at {i} accepted"
            );
        }
    }

    /// The tokens of earlier releases (a CRC anyone can recompute) are refused, with a
    /// reason that says to read again; so is a re-signed one with counters near `u64::MAX`,
    /// which once made a key unwritable.
    #[test]
    fn tokens_of_earlier_releases_and_recomputed_checksums_are_refused() {
        const EARLIER_V1: &str = "AQIHAu-br834rNGRAQHiAnYS";
        let refused = key().decode(b"b", b"k", EARLIER_V1).unwrap_err();
        assert!(refused.to_string().contains("earlier release"), "{refused}");
        let near_max: VersionVector = [(ActorId(7), u64::MAX - 1)].into_iter().collect();
        let mut forged = vec![TOKEN_V3];
        forged.extend(postcard::to_stdvec(&near_max).unwrap());
        forged.extend([0; MAC_LEN]);
        assert!(key()
            .decode(b"b", b"k", &URL_SAFE_NO_PAD.encode(forged))
            .is_err());
    }

    /// Pins token format 3: clients keep tokens between a read and a write, so a token
    /// issued by one build must decode in the next (with the same cluster secret).
    #[test]
    fn golden_token_is_pinned() {
        let clock: VersionVector = [(ActorId(7), 2), (ActorId(0x0123_4567_89ab_cdef), 1)]
            .into_iter()
            .collect();
        let token = key().encode(b"b", b"k", &clock);
        assert_eq!(token, GOLDEN_TOKEN_V3);
        assert_eq!(key().decode(b"b", b"k", GOLDEN_TOKEN_V3), Ok(clock));
    }

    const GOLDEN_TOKEN_V3: &str = "AwIHAu-br834rNGRAQHdLXrgwAq1Q9ZbHcJamudj";

    #[test]
    fn a_context_with_exceptions_round_trips_as_version_4() {
        let actor = ActorId(7);
        let clock = sample().excluding([Dot::new(actor, 2)]);
        let token = key().encode(b"b", b"k", &clock);
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap()[0], TOKEN_V4);
        assert_eq!(key().decode(b"b", b"k", &token), Ok(clock));
        // Tokens without exceptions keep format 3 (pinned above).
        let plain = URL_SAFE_NO_PAD
            .decode(key().encode(b"b", b"k", &sample()))
            .unwrap();
        assert_eq!(plain[0], TOKEN_V3);
    }

    /// The largest `--max-clock-entries` (256) keeps every context a client is answered
    /// with within what it may send back, even with the widest actors and counters, half
    /// of them exceptions (format 4).
    #[test]
    fn a_clock_at_the_largest_entry_limit_fits_a_token() {
        let wide = |i: u64| ActorId(u64::MAX - i);
        let entries: VersionVector = (0..128).map(|i| (wide(i), u64::MAX)).collect();
        let clock = entries.excluding((0..128).map(|i| Dot::new(wide(i), 1)));
        assert_eq!(clock.len() + clock.unseen().len(), 256);
        let token = key().encode(b"b", b"k", &clock);
        assert!(token.len() <= MAX_TOKEN_LEN, "{} bytes", token.len());
        assert_eq!(key().decode(b"b", b"k", &token), Ok(clock));
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "!!!",
            "AAAA",
            "bm90IGEgdG9rZW4",
            &"A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(key().decode(b"b", b"k", bad).is_err(), "{bad:?} accepted");
        }
    }
}
