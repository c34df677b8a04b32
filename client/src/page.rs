//! [`Page`]: one page of a paginated list RPC.

/// One page of a list, with the token for the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page, in the RPC's order.
    pub items: Vec<T>,
    /// Token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
    /// How many items the whole list holds, for the RPCs that report it
    /// (`ListSsoConnections`); `None` otherwise.
    pub total_size: Option<i64>,
}

impl<T> Page<T> {
    /// A page as the list RPCs return it: an empty token means "last page".
    pub(crate) fn new(items: Vec<T>, next_page_token: String) -> Self {
        Self {
            items,
            next_page_token: (!next_page_token.is_empty()).then_some(next_page_token),
            total_size: None,
        }
    }

    /// Whether another page follows.
    pub fn has_next(&self) -> bool {
        self.next_page_token.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_token_marks_the_last_page() {
        let last = Page::new(vec![1, 2], String::new());
        assert_eq!(last.next_page_token, None);
        assert!(!last.has_next());

        let more = Page::new(vec![1], "t2".to_owned());
        assert_eq!(more.next_page_token.as_deref(), Some("t2"));
        assert!(more.has_next());
    }
}
