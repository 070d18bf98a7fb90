//! The API key, kept out of logs and errors by construction.

use std::fmt;

/// An API key. `Debug` and `Display` print `[redacted]`; the only way to the value is
/// [`ApiKey::expose`], used where a header is built. Errors in this crate never carry the key
/// (they carry the provider's answer, which does not echo it).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(value: impl Into<String>) -> Self {
        ApiKey(value.into())
    }

    /// The value, for building the auth header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, non-reversible tag that tells keys apart in metrics and logs (e.g. which key a
    /// limiter belongs to) without revealing them: a hash, not a prefix, since key prefixes are
    /// shared by every key of a provider.
    pub fn fingerprint(&self) -> String {
        // FNV-1a: stable across runs and platforms (unlike std's randomly seeded hasher).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.0.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("key-{:08x}", h >> 32)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let k = ApiKey::new("sk-live-very-secret");
        assert!(!format!("{k:?}").contains("secret"));
        assert!(!format!("{k}").contains("secret"));
        assert!(!k.fingerprint().contains("secret"));
        assert_eq!(k.fingerprint(), ApiKey::new("sk-live-very-secret").fingerprint());
        assert_ne!(k.fingerprint(), ApiKey::new("sk-live-other").fingerprint());
        assert_eq!(k.expose(), "sk-live-very-secret");
    }
}
