//! auth-server: per-org SSO policies and per-member custom SSO connections,
//! served over gRPC as `orgauth.auth.v1.AuthService`.
//!
//! # Layout
//!
//! - [`config`]: the command line (flags and their environment variables).
//! - [`server`]: wires storage, the service, health and reflection
//!   together, and runs them until a graceful shutdown.
//! - [`grpc`]: the thin tonic adapter: request → domain types → [`app`] →
//!   response.
//! - [`app`]: what each RPC does, in domain terms.
//! - [`domain`]: the rules, free of transport and storage: ids, batch and
//!   page limits, page tokens, BatchUnlinkSso's per-member answers,
//!   CheckSsoLogin's decision.
//! - [`store`]: the [`AuthStore`](store::AuthStore) trait and its SQLite
//!   implementation.
//! - [`error`]: the one error type, and its one mapping to `tonic::Status`.
//!
//! The invariant the rest of the system leans on: LinkSso checks the org's
//! policy and inserts in one `BEGIN IMMEDIATE` transaction, so once
//! SetOrgSsoPolicy(false) has returned no new link can appear, and a single
//! pass of BatchUnlinkSso over an org's members leaves none linked.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod server;
pub mod store;

pub use config::{Config, DatabaseUrl};
pub use error::AuthError;
pub use server::{AuthServer, ServeError, run};
