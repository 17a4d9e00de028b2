//! The causal context token: a version vector handed to clients as an opaque string.
//!
//! A read returns the version vector of everything it saw; a later write sends it back to
//! say which versions it supersedes. The client must not interpret it, and the cluster must
//! not trust a token that was damaged on the way, so the token is versioned and checked:
//!
//! 1. format version, one byte: `1`, or `2` for a vector with exceptions (a write's
//!    answer when the key holds siblings its writer had not seen);
//! 2. the version vector, postcard-encoded in the [`WireFormat`] of the same number;
//! 3. a CRC32 of a fixed domain tag, the version byte and the payload, big-endian.
//!
//! The whole is base64url without padding, so it travels in an HTTP header as is. The CRC
//! rejects truncated, corrupted and hand-edited tokens; it is not a signature, and anyone
//! can recompute it. A client that deliberately forges a token can claim to have seen
//! versions it did not see (superseding them), or name counters near `u64::MAX`, which make
//! minting at that actor overflow (refused, nothing changed) until the node restarts with a
//! new actor. A MAC bound to the key is what closes this; see docs/formats.md.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use quorumkv_replica::{encode_compatible, with_format, VersionVector, WireFormat};

use crate::error::InputError;

/// The token format of a vector without exceptions.
const TOKEN_V1: u8 = 1;
/// The token format of a vector with exceptions.
const TOKEN_V2: u8 = 2;
/// Mixed into the checksum so that other base64 blobs of the right shape are not accepted.
const DOMAIN_TAG: &[u8] = b"quorumkv-causal-context";
/// Tokens longer than this are refused before decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Encodes a version vector as a causal context token.
pub fn encode_context(clock: &VersionVector) -> String {
    // Serialising a map of integers into a Vec cannot fail.
    let (payload, format) = encode_compatible(|| postcard::to_stdvec(clock).unwrap_or_default());
    let mut bytes = Vec::with_capacity(payload.len() + 5);
    bytes.push(match format {
        WireFormat::V1 => TOKEN_V1,
        WireFormat::V2 => TOKEN_V2,
    });
    bytes.extend_from_slice(&payload);
    let crc = checksum(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token produced by [`encode_context`]; any damage is an [`InputError::InvalidContext`].
pub fn decode_context(token: &str) -> Result<VersionVector, InputError> {
    let invalid = |why: &str| InputError::InvalidContext(why.to_string());
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("token is too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| invalid("token is not base64url"))?;
    if bytes.len() < 5 {
        return Err(invalid("token is truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if checksum(body) != expected {
        return Err(invalid(
            "token checksum does not match (damaged or not issued here)",
        ));
    }
    let format = match body[0] {
        TOKEN_V1 => WireFormat::V1,
        TOKEN_V2 => WireFormat::V2,
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

fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(DOMAIN_TAG);
    hasher.update(bytes);
    hasher.finalize()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use quorumkv_replica::ActorId;

    use super::*;

    fn sample() -> VersionVector {
        [(ActorId(7), 3), (ActorId(u64::MAX), 1)]
            .into_iter()
            .collect()
    }

    #[test]
    fn tokens_round_trip() {
        let clock = sample();
        assert_eq!(decode_context(&encode_context(&clock)), Ok(clock));
        let empty = VersionVector::new();
        assert_eq!(decode_context(&encode_context(&empty)), Ok(empty));
    }

    #[test]
    fn every_truncation_and_every_edited_character_is_rejected() {
        let token = encode_context(&sample());
        for cut in 0..token.len() {
            assert!(
                decode_context(&token[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        for i in 0..token.len() {
            let mut chars: Vec<char> = token.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let edited: String = chars.into_iter().collect();
            assert!(decode_context(&edited).is_err(), "edit at {i} accepted");
        }
    }

    /// Pins token format v1: clients store tokens between a read and a write, so a token
    /// issued by one version must decode in the next.
    #[test]
    fn golden_token_is_pinned() {
        let clock: VersionVector = [(ActorId(7), 2), (ActorId(0x0123_4567_89ab_cdef), 1)]
            .into_iter()
            .collect();
        let token = encode_context(&clock);
        assert_eq!(token, GOLDEN_TOKEN_V1);
        assert_eq!(decode_context(GOLDEN_TOKEN_V1), Ok(clock));
    }

    const GOLDEN_TOKEN_V1: &str = "AQIHAu-br834rNGRAQHiAnYS";

    #[test]
    fn a_context_with_exceptions_round_trips_as_version_2() {
        let actor = ActorId(7);
        let clock = sample().excluding([quorumkv_replica::Dot::new(actor, 2)]);
        let token = encode_context(&clock);
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap()[0], TOKEN_V2);
        assert_eq!(decode_context(&token), Ok(clock));
        // Tokens without exceptions keep the first format (pinned above).
        let plain = URL_SAFE_NO_PAD.decode(encode_context(&sample())).unwrap();
        assert_eq!(plain[0], TOKEN_V1);
    }

    /// The largest `--max-clock-entries` (256) keeps every context a client is answered
    /// with within what it may send back, even with the widest actors and counters, half
    /// of them exceptions (version 2).
    #[test]
    fn a_clock_at_the_largest_entry_limit_fits_a_token() {
        let wide = |i: u64| ActorId(u64::MAX - i);
        let entries: VersionVector = (0..128).map(|i| (wide(i), u64::MAX)).collect();
        let clock = entries.excluding((0..128).map(|i| quorumkv_replica::Dot::new(wide(i), 1)));
        assert_eq!(clock.len() + clock.unseen().len(), 256);
        let token = encode_context(&clock);
        assert!(token.len() <= MAX_TOKEN_LEN, "{} bytes", token.len());
        assert_eq!(decode_context(&token), Ok(clock));
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
            assert!(decode_context(bad).is_err(), "{bad:?} accepted");
        }
    }
}
