//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), shared by inbound webhook
//! verification and outbound result delivery: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! with a `whsec_<base64>` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Decodes a `whsec_…` secret (or a bare base64 one) into the HMAC key. `None` for text that is
/// not base64 and for an empty key (a variable set to nothing, or to a bare `whsec_`): HMAC takes
/// an empty key, and anyone could then sign with it.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let s = secret.trim();
    STANDARD.decode(s.strip_prefix("whsec_").unwrap_or(s)).ok().filter(|key| !key.is_empty())
}

/// The `v1,…` signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(mac(key, id, timestamp, body)))
}

/// True when `signature` (one `v1,…` entry) signs the message; compared in constant time.
pub fn matches(key: &[u8], id: &str, timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(sig) = signature.strip_prefix("v1,").and_then(|s| STANDARD.decode(s).ok()) else {
        return false;
    };
    let Ok(mut m) = HmacSha256::new_from_slice(key) else { return false };
    m.update(format!("{id}.{timestamp}.").as_bytes());
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(format!("{id}.{timestamp}.").as_bytes());
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this arm only keeps the types honest.
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(matches(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &sig));
        assert!(!matches(&key, "msg_other", 1614265330, body, &sig));
        assert!(!matches(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, "v1,AAAA"));
    }

    #[test]
    fn an_empty_or_undecodable_secret_is_no_key() {
        for secret in ["", "  ", "whsec_", " whsec_ ", "whsec_not base64!"] {
            assert_eq!(decode_secret(secret), None, "{secret:?}");
        }
        assert_eq!(decode_secret("whsec_c2VjcmV0").as_deref(), Some(&b"secret"[..]));
    }
}
