//! Page sizes and page tokens for every List RPC.
//!
//! A page token carries the last key of the previous page, sealed with the
//! server's key over the listing it came from (see
//! [`orgauth_security::page_token`]): callers treat it as opaque, and an
//! edited, forged, or transplanted token (from another org's listing, or
//! with other filters) is refused as INVALID_ARGUMENT on `page_token`.

use orgauth_security::PageTokenSealer;

use crate::error::{Error, Result};

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A page request whose size is validated; its token is opened by
/// [`Pages::after`], which knows the key and the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    token: String,
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
        Ok(PageRequest {
            size,
            token: page_token.to_owned(),
        })
    }
}

/// Seals and opens page tokens with the server's key.
#[derive(Debug, Clone)]
pub struct Pages {
    sealer: PageTokenSealer,
}

impl Pages {
    pub fn new(key: &[u8]) -> Result<Pages> {
        Ok(Pages {
            sealer: PageTokenSealer::new(key).map_err(Error::Internal)?,
        })
    }

    /// The key to list after, for a request of the listing `scope`.
    pub fn after(&self, page: &PageRequest, scope: &str) -> Result<Option<String>> {
        if page.token.is_empty() {
            return Ok(None);
        }
        self.sealer
            .open(scope, &page.token)
            .map(Some)
            .map_err(|err| Error::invalid("page_token", err.to_string()))
    }

    /// The token for the page after `items`, or empty when `items` was the
    /// last page. Callers fetch `size + 1` rows to know whether more exist.
    pub fn next_token<T>(
        &self,
        page: &PageRequest,
        scope: &str,
        items: &mut Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> String {
        if items.len() <= page.size {
            return String::new();
        }
        items.truncate(page.size);
        items
            .last()
            .map(|last| self.sealer.seal(scope, &key(last)))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> Pages {
        Pages::new(&[7; 32]).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(PageRequest::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::parse(1000, "").unwrap().size, 1000);
        for bad in [1001, -1, i32::MAX, i32::MIN] {
            let err = PageRequest::parse(bad, "").unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { ref field, .. } if field == "page_size")
            );
        }
    }

    #[test]
    fn tokens_open_only_in_their_listing() {
        let pages = pages();
        let first = PageRequest::parse(2, "").unwrap();
        let mut items = vec!["a", "b", "c"];
        let token = pages.next_token(&first, "members:acme", &mut items, |s| s.to_string());
        assert_eq!(items, ["a", "b"]);
        let next = PageRequest::parse(2, &token).unwrap();
        assert_eq!(
            pages.after(&next, "members:acme").unwrap().as_deref(),
            Some("b")
        );
        for (scope, token) in [
            ("members:globex", token.as_str()),
            ("members:acme", "dGVzdA"),
            ("members:acme", "%%%"),
        ] {
            let page = PageRequest::parse(2, token).unwrap();
            let err = pages.after(&page, scope).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { ref field, .. } if field == "page_token")
            );
        }
        let other_key = Pages::new(&[8; 32]).unwrap();
        assert!(other_key.after(&next, "members:acme").is_err());
    }

    #[test]
    fn no_token_after_the_last_page() {
        let pages = pages();
        let page = PageRequest::parse(2, "").unwrap();
        let mut items = vec!["a", "b"];
        assert_eq!(
            pages.next_token(&page, "orgs", &mut items, |s| s.to_string()),
            ""
        );
        assert_eq!(pages.after(&page, "orgs").unwrap(), None);
    }

    proptest::proptest! {
        /// The page-token decoder: nothing a caller sends panics it or gets
        /// past it, and every refusal names `page_token`.
        #[test]
        fn fuzz_page_tokens(token in "\\PC{1,300}|[A-Za-z0-9_-]{1,300}", scope in "[a-z:]{0,20}") {
            let page = PageRequest::parse(10, &token).unwrap();
            match pages().after(&page, &scope) {
                Err(Error::InvalidArgument { field, .. }) => proptest::prop_assert_eq!(field, "page_token"),
                other => proptest::prop_assert!(false, "{token:?} gave {other:?}"),
            }
        }
    }
}
