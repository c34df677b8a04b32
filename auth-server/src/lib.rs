//! auth-server: per-org SSO policies and per-member custom SSO connections,
//! served over gRPC as `orgauth.auth.v1.AuthService`.
//!
//! # Layout
//!
//! - [`config`]: the command line (flags and their environment variables),
//!   including the shared tokens-file, TLS and limit flags.
//! - [`server`]: checks the configuration, wires storage, the service
//!   (behind the bearer-token authenticator), health and reflection (open)
//!   together, and runs them until a graceful shutdown.
//! - [`grpc`]: the thin tonic adapter: caller + request → domain types →
//!   [`app`] → response.
//! - [`app`]: what each RPC does, in domain terms, and who may do it
//!   ([`app::authorize`]).
//! - [`domain`]: the rules, free of transport and storage: ids, batch and
//!   page limits, sealed page tokens, BatchUnlinkSso's per-member answers,
//!   CheckSsoLogin's decision.
//! - [`store`]: the [`AuthStore`](store::AuthStore) trait and its two
//!   implementations, SQLite (one file, one replica) and PostgreSQL (one
//!   database shared by several replicas), tested by one suite run twice.
//! - [`error`]: the one error type, its one mapping to `tonic::Status`, and
//!   the table of error reasons.
//!
//! # Security
//!
//! Every AuthService call needs `authorization: Bearer <token>` from the
//! `--tokens-file`. SetOrgSsoPolicy and BatchUnlinkSso accept only the
//! `service` role (org-server); the other RPCs accept `service` and `admin`
//! for any org and `org` tokens for the orgs they list. Requests are
//! validated first (INVALID_ARGUMENT), then authorized (PERMISSION_DENIED),
//! and only then touch storage. Page tokens are sealed with a key kept in
//! the database, so they cannot be forged or moved to another org's listing.
//!
//! The invariant the rest of the system leans on: LinkSso checks the org's
//! policy and inserts in one transaction serialized with SetOrgSsoPolicy
//! (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the policy row locked `FOR
//! SHARE` against the policy upsert's exclusive row lock, across replicas),
//! so once SetOrgSsoPolicy(false) has returned no new link can appear, and
//! a single pass of BatchUnlinkSso over an org's members leaves none linked.

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
