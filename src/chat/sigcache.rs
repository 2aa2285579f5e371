//! The admin account's UserSig, generated once and reused until it nears its expiry.
//!
//! Regenerated at 80% of its lifetime so a long export never sends one that expires in
//! flight, and on demand when the server refuses it (70001 and friends). The caller passes
//! the clock (unix seconds) so tests control time.

use super::usersig;
use crate::secret::Secret;
use std::sync::Mutex;
use std::time::Duration;

/// Fraction of the lifetime after which a UserSig is replaced.
const REFRESH_AT: f64 = 0.8;

/// A UserSig cache for one admin account.
#[derive(Debug)]
pub struct SigCache {
    key: Secret,
    sdkappid: u64,
    identifier: String,
    ttl_secs: i64,
    /// The UserSig in use and the unix second it was generated at.
    current: Mutex<Option<(Secret, i64)>>,
}

impl SigCache {
    /// A cache that signs UserSigs valid for `ttl` (at least one second).
    pub fn new(key: Secret, sdkappid: u64, identifier: String, ttl: Duration) -> Self {
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        Self {
            key,
            sdkappid,
            identifier,
            ttl_secs,
            current: Mutex::new(None),
        }
    }

    fn sign(&self, now_unix: i64) -> Secret {
        usersig::generate(
            &self.key,
            self.sdkappid,
            &self.identifier,
            self.ttl_secs,
            now_unix,
        )
    }

    /// The UserSig to send now: the cached one unless 80% of its lifetime has passed.
    pub fn get(&self, now_unix: i64) -> Secret {
        let mut cur = self.current.lock().expect("usersig lock");
        let refresh_after = (self.ttl_secs as f64 * REFRESH_AT) as i64;
        match &*cur {
            Some((sig, issued)) if now_unix >= *issued && now_unix - issued < refresh_after => {
                sig.clone()
            }
            _ => {
                let sig = self.sign(now_unix);
                *cur = Some((sig.clone(), now_unix));
                sig
            }
        }
    }

    /// The server refused `refused`: replace it, unless a concurrent caller already did.
    pub fn regenerate(&self, refused: &Secret, now_unix: i64) -> Secret {
        let mut cur = self.current.lock().expect("usersig lock");
        if let Some((sig, _)) = &*cur {
            if sig != refused {
                return sig.clone();
            }
        }
        let sig = self.sign(now_unix);
        *cur = Some((sig.clone(), now_unix));
        sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> SigCache {
        SigCache::new(
            Secret::new("k"),
            1_400_000_000,
            "admin".into(),
            Duration::from_secs(1000),
        )
    }

    #[test]
    fn reused_until_eighty_percent_of_its_lifetime() {
        let c = cache();
        let first = c.get(1_000_000);
        assert_eq!(c.get(1_000_000 + 799), first);
        let second = c.get(1_000_000 + 800);
        assert_ne!(second, first, "regenerated before expiry");
        assert_eq!(
            second,
            usersig::generate(&Secret::new("k"), 1_400_000_000, "admin", 1000, 1_000_800)
        );
        assert_eq!(c.get(1_000_000 + 801), second);
    }

    #[test]
    fn a_clock_going_backwards_regenerates() {
        let c = cache();
        let first = c.get(2_000_000);
        assert_ne!(c.get(1_999_000), first);
    }

    #[test]
    fn regenerates_on_refusal_once_for_concurrent_callers() {
        let c = cache();
        let refused = c.get(1_000_000);
        let fresh = c.regenerate(&refused, 1_000_005);
        assert_ne!(fresh, refused);
        assert_eq!(
            c.regenerate(&refused, 1_000_009),
            fresh,
            "second caller with the old sig reuses the new one"
        );
        assert_eq!(c.get(1_000_010), fresh);
    }
}
