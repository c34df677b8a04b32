//! Credentials and tamper-proofing shared by org-server, auth-server and
//! orgctl. Nothing here knows about gRPC: the servers' transport layers turn
//! these results into statuses.
//!
//! - [`token`]: bearer tokens, how they are issued, and the tokens file that
//!   stores only their hashes.
//! - [`caller`]: who is calling once a token checked out: a name, a
//!   [`Role`] and, for the `org` role, the orgs it may touch.
//! - [`page_token`]: page tokens sealed with an HMAC, so a caller cannot
//!   forge or edit a cursor.

pub mod caller;
pub mod page_token;
pub mod token;

pub use caller::{Caller, Role, is_valid_org_id};
pub use page_token::{PageTokenError, PageTokenSealer};
pub use token::{AuthnError, TokenFileError, TokenSet};
