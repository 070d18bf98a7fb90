//! API tokens (`SLUICE_API_TOKENS`, comma-separated), checked as `Authorization: Bearer`.
//!
//! Tokens are kept only as SHA-256 digests and compared digest to digest, so neither a log line nor
//! a timing difference can give one away.

use sha2::{Digest, Sha256};

#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

impl Tokens {
    /// From the comma-separated list in `SLUICE_API_TOKENS`; blanks are ignored.
    pub fn parse(list: &str) -> Tokens {
        Tokens {
            digests: list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(digest).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Checks an `Authorization` header value. With no tokens configured, everything passes
    /// (sluice then only listens on loopback).
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        if self.digests.is_empty() {
            return true;
        }
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim)
        else {
            return false;
        };
        let d = digest(token);
        // Compare against every token so the time taken does not say which one matched.
        self.digests.iter().fold(false, |found, known| found | (known == &d))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_from_the_list_pass_and_nothing_else() {
        let t = Tokens::parse(" alpha , beta,,");
        assert_eq!(t.len(), 2);
        assert!(t.allows(Some("Bearer alpha")));
        assert!(t.allows(Some("Bearer beta")));
        assert!(!t.allows(Some("Bearer gamma")));
        assert!(!t.allows(Some("alpha")));
        assert!(!t.allows(None));
        assert!(!format!("{t:?}").contains("alpha"));
        assert!(Tokens::parse("").allows(None));
    }
}
