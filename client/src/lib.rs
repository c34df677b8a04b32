//! Rust client for orgauth: the generated gRPC types and stubs, plus a
//! friendly layer over them.
//!
//! # Credentials and TLS
//!
//! Both servers require `authorization: Bearer <token>` on every RPC but
//! health and reflection. Issue a token with `orgctl token issue` (the
//! secret goes to the caller, the line with its hash to the servers'
//! `--tokens-file`) and pass the secret in [`ConnectOptions::token`]; every
//! call of [`OrgClient`] and [`AuthClient`] then carries it, watch
//! reconnections included. [`ConnectOptions::tls`] turns on TLS (a bare
//! `host:port` becomes `https://`) and, with a client certificate, mutual
//! TLS:
//!
//! ```no_run
//! use orgauth_client::{ClientTls, ConnectOptions, OrgClient};
//!
//! # async fn example() -> Result<(), orgauth_client::ClientError> {
//! let token = std::env::var("ORGCTL_TOKEN").unwrap_or_default();
//!
//! // Plaintext on loopback: the token is enough.
//! let local = OrgClient::connect_with(
//!     "127.0.0.1:50051",
//!     &ConnectOptions::default().with_token(&token),
//! )
//! .await?;
//!
//! // TLS, trusting the CA that signed the server's certificate, and
//! // presenting a client certificate for mutual TLS.
//! let tls = ClientTls {
//!     ca: Some("certs/ca.pem".into()),
//!     identity: Some(("certs/client.pem".into(), "certs/client.key".into())),
//!     domain: None, // check the certificate against the endpoint's host
//! };
//! let remote = OrgClient::connect_with(
//!     "orgs.example.com:50051", // same as https://orgs.example.com:50051
//!     &ConnectOptions::default().with_token(&token).with_tls(tls),
//! )
//! .await?;
//! # drop((local, remote));
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Servers attach google.rpc details to every error; [`ClientError`]
//! decodes them: [`ClientError::code`], [`ClientError::reason`] (the
//! `ErrorInfo` reason, e.g. `TOKEN_MISSING`, `ORG_ACCESS_DENIED`),
//! [`ClientError::field_violations`] (which request field an
//! INVALID_ARGUMENT is about) and [`ClientError::retry_delay`]. It displays
//! as `PERMISSION_DENIED (ORG_ACCESS_DENIED): <message>`.
//! UNAUTHENTICATED and PERMISSION_DENIED are never retried.
//!
//! ```no_run
//! # use orgauth_client::{ClientError, OrgClient};
//! # async fn example(client: OrgClient) {
//! match client.get_org("acme").await {
//!     Ok(org) => println!("{}", org.display_name),
//!     Err(error) if error.code() == tonic::Code::Unauthenticated => {
//!         eprintln!("{error}; check the token ({:?})", error.reason());
//!     }
//!     Err(error) => {
//!         for violation in error.field_violations() {
//!             eprintln!("{}: {}", violation.field, violation.description);
//!         }
//!         eprintln!("{error}");
//!     }
//! }
//! # }
//! ```
//!
//! # Three ways to call
//!
//! ```no_run
//! use futures::StreamExt;
//! use orgauth_client::{ConnectOptions, OrgClient, UpdateOrg, job_state_name};
//!
//! # async fn example(token: String) -> Result<(), orgauth_client::ClientError> {
//! // Connects with retries (10 s by default); the client is a cheap clone,
//! // and every clone sends the token.
//! let options = ConnectOptions::default().with_token(token);
//! let client = OrgClient::connect_with("http://127.0.0.1:50051", &options).await?;
//!
//! // 1. Synchronous: change the setting and wait for its job to end.
//! let (org, job) = client
//!     .update_org_and_wait(UpdateOrg::new("acme").allow_custom_sso(false))
//!     .await?;
//! if let Some(job) = job {
//!     println!("{}: job {} {}", org.id, job.id, job_state_name(job.state()));
//! }
//!
//! // 2. Asynchronous: get the job id at once, watch it (or wait) later.
//! let change = client
//!     .update_org(UpdateOrg::new("acme").allow_custom_sso(true))
//!     .await?;
//! if let Some(job_id) = change.job_id {
//!     // The stream survives a server restart: it resumes from the last
//!     // version seen and ends after the terminal state.
//!     let mut updates = client.watch_job(job_id);
//!     while let Some(job) = updates.next().await {
//!         let job = job?;
//!         println!("{} {}/{}", job_state_name(job.state()), job.processed_members, job.total_members);
//!     }
//! }
//!
//! // 3. Parallel: many calls in flight at once over one connection.
//! let mut tasks = tokio::task::JoinSet::new();
//! for org_id in ["org-a", "org-b", "org-c"] {
//!     let client = client.clone();
//!     tasks.spawn(async move {
//!         let change = client
//!             .update_org(UpdateOrg::new(org_id).allow_custom_sso(false))
//!             .await?;
//!         match change.job_id {
//!             Some(job_id) => client.wait_for_job_success(&job_id).await.map(Some),
//!             None => Ok(None),
//!         }
//!     });
//! }
//! while let Some(finished) = tasks.join_next().await {
//!     let job = finished.expect("task panicked")?;
//!     println!("{:?}", job.map(|job| job.id));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`connect`]: endpoint parsing, TLS and connecting with backoff
//!   ([`ConnectOptions`], [`ClientTls`]), and the [`Credentials`] every call
//!   carries over a [`ClientChannel`].
//! - [`org_client`]: [`OrgClient`] (OrgService + JobService), [`CreateOrg`], [`UpdateOrg`].
//! - [`watch`]: the reconnecting `WatchJob` stream ([`WatchOptions`]).
//! - [`auth_client`]: [`AuthClient`] (AuthService).
//! - [`job`]: job state names, the terminal-state rule, [`ensure_succeeded`].
//! - [`page`]: [`Page`], one page of a list RPC.
//! - [`error`]: [`ClientError`], [`StatusError`] (a status with its decoded
//!   google.rpc details), and the gRPC code names.
//! - [`org`], [`auth`] (as in `orgauth-proto`) and the shorter [`pb::org`],
//!   [`pb::auth`]: the generated code, for everything the friendly layer
//!   leaves out. The generated stubs are also at hand through
//!   [`OrgClient::org_service`], [`OrgClient::job_service`] and
//!   [`AuthClient::auth_service`]; their calls carry the token too.

pub mod auth_client;
pub mod connect;
pub mod error;
pub mod job;
pub mod org_client;
pub mod page;
pub mod watch;

/// The generated protobuf code, by package.
pub mod pb {
    /// `orgauth.auth.v1`: `AuthService` and its messages.
    pub use orgauth_proto::auth::v1 as auth;
    /// `orgauth.org.v1`: `OrgService`, `JobService` and their messages.
    pub use orgauth_proto::org::v1 as org;
    /// Well-known protobuf types (`Timestamp`, `FieldMask`).
    pub use orgauth_proto::prost_types;
}

/// The generated code under its protobuf package names (`org::v1`,
/// `auth::v1`), as `orgauth-proto` lays it out.
pub use orgauth_proto::{auth, org};

pub use auth_client::AuthClient;
pub use connect::{ClientChannel, ConnectOptions, Credentials, normalize_endpoint};
pub use error::{ClientError, Result, StatusError, code_name};
pub use job::{ensure_succeeded, is_terminal, job_kind_name, job_state_name, parse_job_state};
pub use org_client::{CreateOrg, OrgChange, OrgClient, UpdateOrg};
/// TLS settings of [`ConnectOptions::tls`]: the CA to trust, the client
/// certificate and key for mutual TLS, the name to check.
pub use orgauth_runtime::transport::ClientTls;
pub use page::Page;
/// The google.rpc details [`ClientError`] decodes.
pub use tonic_types::{ErrorDetails, FieldViolation};
pub use watch::WatchOptions;
