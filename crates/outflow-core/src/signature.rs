//! Standard Webhooks signatures.
//!
//! `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). A
//! secret prefixed `whsec_` is base64-decoded to get the key; any other secret is used as
//! raw bytes (seed 000's `signature` auth with a plain secret). During secret rotation a
//! header may carry several space-separated signatures; any one matching is enough.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// How far a `webhook-timestamp` may be from now before verification refuses it.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// A `whsec_` secret whose remainder is not base64.
    #[error("secret starts with 'whsec_' but the rest is not valid base64")]
    BadSecret,
    /// The timestamp is outside the tolerance window.
    #[error("timestamp {timestamp} is {skew}s away from now (tolerance {tolerance}s)")]
    Timestamp {
        /// The header value.
        timestamp: i64,
        /// Absolute distance from now, in seconds.
        skew: i64,
        /// The allowed distance.
        tolerance: i64,
    },
    /// No signature in the header matched.
    #[error("no signature matches (expected one of the 'v1,<base64>' entries to match)")]
    Mismatch,
}

/// The HMAC key a secret stands for.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD.decode(b64).map_err(|_| SignatureError::BadSecret),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` value (`v1,<base64>`) for one message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let key = signing_key(secret)?;
    Ok(format!("v1,{}", STANDARD.encode(raw_signature(&key, id, timestamp, body))))
}

fn raw_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies a `webhook-signature` header (one or more space-separated `v1,<b64>` entries).
/// `tolerance` of `None` skips the timestamp window check.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now_unix: i64,
    tolerance: Option<i64>,
) -> Result<(), SignatureError> {
    if let Some(tolerance) = tolerance {
        let skew = (now_unix - timestamp).abs();
        if skew > tolerance {
            return Err(SignatureError::Timestamp { timestamp, skew, tolerance });
        }
    }
    let key = signing_key(secret)?;
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    for entry in header.split_whitespace() {
        let Some(b64) = entry.strip_prefix("v1,") else { continue };
        let Ok(candidate) = STANDARD.decode(b64) else { continue };
        // verify_slice compares in constant time.
        if mac.clone().verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_spec_example() {
        assert_eq!(sign(SECRET, ID, TS, BODY).unwrap(), EXPECTED);
    }

    #[test]
    fn verifies_any_of_several_signatures() {
        let header = format!("v1,bm90IGl0 {EXPECTED}");
        assert_eq!(verify(SECRET, ID, TS, BODY, &header, TS + 10, Some(300)), Ok(()));
    }

    #[test]
    fn rejects_tampering_and_stale_timestamps() {
        assert_eq!(
            verify(SECRET, ID, TS, b"{}", EXPECTED, TS, Some(300)),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(SECRET, ID, TS, BODY, EXPECTED, TS + 301, Some(300)),
            Err(SignatureError::Timestamp { skew: 301, .. })
        ));
        assert_eq!(verify(SECRET, ID, TS, BODY, EXPECTED, TS + 10_000, None), Ok(()));
    }

    #[test]
    fn plain_secrets_are_raw_key_bytes() {
        assert_eq!(signing_key("abc").unwrap(), b"abc");
        assert_eq!(signing_key("whsec_!!").unwrap_err(), SignatureError::BadSecret);
    }
}
