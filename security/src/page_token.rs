//! Page tokens that callers cannot forge or edit.
//!
//! A page token carries the last key of the previous page. It is sealed
//! with HMAC-SHA256 over the key *and the listing it belongs to* (its
//! scope, e.g. `members:acme`), so a caller can neither invent a cursor nor
//! carry one from one listing to another. The key is readable inside the
//! token: sealing is about integrity, not secrecy. Keys are ids the caller
//! has already seen, except ListJobs' cursor, a job's position in the
//! server-wide sequence, which hints at how many jobs all orgs have.
//!
//! Layout, then URL-safe base64 without padding:
//! `version (1 byte) | tag (16 bytes) | key (UTF-8)`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const VERSION: u8 = 2;
const TAG_BYTES: usize = 16;
/// Longer tokens are refused before any decoding work.
pub const MAX_TOKEN_CHARS: usize = 1024;

/// Why a page token was refused. One variant on purpose: a caller learns
/// nothing about which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed or tampered: pass next_page_token from the previous response unchanged, with the same request filters"
)]
pub struct PageTokenError;

/// Seals and opens page tokens with one server-wide key.
#[derive(Clone)]
pub struct PageTokenSealer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PageTokenSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokenSealer(..)")
    }
}

impl PageTokenSealer {
    /// A sealer keyed with `key` (at least 32 bytes). Every replica that
    /// serves the same listings must use the same key.
    pub fn new(key: &[u8]) -> Result<PageTokenSealer, String> {
        if key.len() < 32 {
            return Err(format!(
                "page token key has {} bytes; at least 32 are needed",
                key.len()
            ));
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|err| format!("page token key: {err}"))?;
        Ok(PageTokenSealer { mac })
    }

    fn tag(&self, scope: &str, key: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        mac
    }

    pub fn seal(&self, scope: &str, key: &str) -> String {
        let tag = self.tag(scope, key).finalize().into_bytes();
        let mut bytes = Vec::with_capacity(1 + TAG_BYTES + key.len());
        bytes.push(VERSION);
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        bytes.extend_from_slice(key.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The key sealed in `token`, if `token` was sealed by this key for
    /// this scope.
    pub fn open(&self, scope: &str, token: &str) -> Result<String, PageTokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(PageTokenError);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageTokenError)?;
        let [version, rest @ ..] = bytes.as_slice() else {
            return Err(PageTokenError);
        };
        if *version != VERSION || rest.len() <= TAG_BYTES {
            return Err(PageTokenError);
        }
        let (tag, key) = rest.split_at(TAG_BYTES);
        let key = std::str::from_utf8(key).map_err(|_| PageTokenError)?;
        self.tag(scope, key)
            .verify_truncated_left(tag)
            .map_err(|_| PageTokenError)?;
        Ok(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(seed: u8) -> PageTokenSealer {
        PageTokenSealer::new(&[seed; 32]).unwrap()
    }

    #[test]
    fn round_trips_within_its_scope_only() {
        let s = sealer(1);
        let token = s.seal("members:acme", "member-42");
        assert_eq!(s.open("members:acme", &token).as_deref(), Ok("member-42"));
        assert_eq!(s.open("members:globex", &token), Err(PageTokenError));
        assert_eq!(sealer(2).open("members:acme", &token), Err(PageTokenError));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(PageTokenSealer::new(&[0; 31]).is_err());
    }

    #[test]
    fn edits_and_garbage_are_refused() {
        let s = sealer(1);
        let token = s.seal("orgs", "acme");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let edited_key = URL_SAFE_NO_PAD.encode(&bytes);
        bytes[last] ^= 1;
        bytes[3] ^= 0x80;
        let edited_tag = URL_SAFE_NO_PAD.encode(&bytes);
        let old_format = URL_SAFE_NO_PAD.encode("v1:acme");
        let tag_only = URL_SAFE_NO_PAD.encode(&URL_SAFE_NO_PAD.decode(&token).unwrap()[..17]);
        let long = "A".repeat(MAX_TOKEN_CHARS + 1);
        for bad in [
            &edited_key,
            &edited_tag,
            &old_format,
            &tag_only,
            "%%%",
            "",
            &long,
        ] {
            assert_eq!(s.open("orgs", bad), Err(PageTokenError), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fuzz_page_tokens_never_panic_or_open(token in ".{0,200}") {
            proptest::prop_assert!(sealer(7).open("orgs", &token).is_err());
        }

        #[test]
        fn fuzz_page_token_bytes_never_open(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let token = URL_SAFE_NO_PAD.encode(&bytes);
            proptest::prop_assert!(sealer(7).open("orgs", &token).is_err());
        }

        #[test]
        fn fuzz_any_key_round_trips(key in ".{1,100}", scope in "[a-z:]{0,20}") {
            let s = sealer(9);
            let token = s.seal(&scope, &key);
            proptest::prop_assert_eq!(s.open(&scope, &token), Ok(key));
        }
    }
}
