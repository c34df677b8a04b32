//! Page sizes and page tokens for every List RPC.
//!
//! A page token is the last key of the previous page, versioned and encoded
//! as URL-safe base64 so callers treat it as opaque and we can change its
//! contents later without breaking them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

const TOKEN_PREFIX: &str = "v1:";

/// A validated page request: how many items, and after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    pub after: Option<String>,
}

impl PageRequest {
    pub fn parse(page_size: i32, page_token: &str) -> Result<Self> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            n => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_PAGE_SIZE {
                    return Err(Error::invalid(
                        "page_size",
                        format!("at most {MAX_PAGE_SIZE}, got {n}"),
                    ));
                }
                n
            }
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_token(page_token)?)
        };
        Ok(PageRequest { size, after })
    }

    /// The token for the page after `items`, or empty when `items` was the
    /// last page. Callers fetch `size + 1` rows to know whether more exist.
    pub fn next_token<T>(&self, items: &mut Vec<T>, key: impl Fn(&T) -> String) -> String {
        if items.len() <= self.size {
            return String::new();
        }
        items.truncate(self.size);
        items
            .last()
            .map(|last| encode_token(&key(last)))
            .unwrap_or_default()
    }
}

pub fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{key}"))
}

fn decode_token(token: &str) -> Result<String> {
    let malformed = || {
        Error::invalid(
            "page_token",
            "malformed: pass next_page_token from the previous response unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let key = text.strip_prefix(TOKEN_PREFIX).ok_or_else(malformed)?;
    if key.is_empty() {
        return Err(malformed());
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(PageRequest::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::parse(1000, "").unwrap().size, 1000);
        assert!(PageRequest::parse(1001, "").is_err());
        assert!(PageRequest::parse(-1, "").is_err());
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = encode_token("member-42");
        assert_eq!(
            PageRequest::parse(10, &token).unwrap().after.as_deref(),
            Some("member-42")
        );
        for bad in ["%%%", "dGVzdA", &URL_SAFE_NO_PAD.encode("v1:")] {
            assert!(PageRequest::parse(10, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_token_only_when_more_rows_exist() {
        let page = PageRequest::parse(2, "").unwrap();
        let mut items = vec!["a", "b"];
        assert_eq!(page.next_token(&mut items, |s| s.to_string()), "");
        let mut items = vec!["a", "b", "c"];
        let token = page.next_token(&mut items, |s| s.to_string());
        assert_eq!(items, ["a", "b"]);
        assert_eq!(
            PageRequest::parse(2, &token).unwrap().after.as_deref(),
            Some("b")
        );
    }
}
