//! org-server: organizations, members and settings, and the durable jobs
//! that carry setting changes to the Auth service.
//!
//! # Layout
//!
//! - [`config`]: the command line (flags and their environment variables).
//! - [`server`]: wires everything together and runs until shutdown.
//! - [`grpc`]: thin tonic adapters, and the one mapping of errors to
//!   `tonic::Status`.
//! - [`http`]: the JSON gateway on the same port (JSON Patch, GET,
//!   Server-Sent Events), and the one mapping of errors to HTTP.
//! - [`app`]: what each RPC does, in domain terms.
//! - [`domain`]: the rules: validation, UpdateOrg's plan, the job model.
//! - [`store`]: the storage trait and its SQLite implementation.
//! - [`jobs`]: the asynchronous path: worker pool, job runner, watch hub.
//! - [`limits`]: per-org UpdateOrg rate limit and WatchJob stream caps.
//! - [`auth_client`]: the gRPC client of Auth used by the runner.
//! - [`error`]: the error type every layer returns.
//! - [`metrics`]: the job and queue metrics (the per-call ones are the
//!   runtime's).
//!
//! The request path (UpdateOrg) writes the org row and a job row in one
//! transaction and returns; the worker pool claims the job under a lease,
//! sets the org's policy in Auth, then unlinks members in batches with
//! bounded parallelism, checkpointing after each batch and publishing every
//! new state to WatchJob streams through the hub.

pub mod app;
pub mod auth_client;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod store;
#[cfg(test)]
mod testing;

pub use config::Config;
pub use server::{OrgServer, ServeError, run};
