//! Rust code generated from orgauth's `.proto` files, and the encoded file
//! descriptor set the servers expose through gRPC reflection.
//!
//! Layout mirrors the protobuf packages:
//! - [`org::v1`]: `OrgService` and `JobService`, served by org-server.
//! - [`auth::v1`]: `AuthService`, served by auth-server.

/// Protobuf package `orgauth.org.v1`.
pub mod org {
    /// Organizations, members and the jobs that carry org changes to Auth.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("orgauth.org.v1");
    }
}

/// Protobuf package `orgauth.auth.v1`.
pub mod auth {
    /// SSO policies and per-member custom SSO connections.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("orgauth.auth.v1");
    }
}

/// The encoded `FileDescriptorSet` of every orgauth proto and its imports,
/// for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orgauth_descriptor");

pub use prost_types;
