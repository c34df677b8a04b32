//! Rust code generated from orgauth's `.proto` files, and the encoded file
//! descriptor set the servers expose through gRPC reflection.
//!
//! Layout mirrors the protobuf packages:
//! - [`org::v1`]: `OrgService` and `JobService`, served by org-server.
//! - [`auth::v1`]: `AuthService`, served by auth-server.
//! - [`google::longrunning`] (with [`google::rpc`]): Google's public
//!   `Operations` API, which org-server also serves over its jobs.

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

/// Shapes of Google's public APIs, declared in `proto/google/` in our own
/// words and wire-compatible with Google's, so generic clients work.
pub mod google {
    /// `google.rpc.Status`: the error of an operation that did not succeed.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }

    /// `google.longrunning.Operations`: long-running operations, which
    /// org-server serves over its jobs.
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
}

/// The encoded `FileDescriptorSet` of every orgauth proto and its imports,
/// for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orgauth_descriptor");

pub use prost_types;

/// How many bytes a stream's encode buffer starts with. tonic's default,
/// 8 KiB, is allocated per stream and kept for its life, and messages are
/// written one after another through it until all of it is resident: with
/// 10,000 WatchJob streams that was 8 of the ~10 KiB each stream cost the
/// server. Our messages are a few hundred bytes; a larger one grows the
/// buffer as it needs.
const ENCODE_BUFFER: usize = 256;

/// tonic's default: a stream yields to the runtime after encoding this much.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The protobuf codec of every generated client and server: tonic-prost's,
/// with a small initial encode buffer (see [`ENCODE_BUFFER`]).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(tonic::codec::BufferSettings::new(
            ENCODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(tonic::codec::BufferSettings::default())
    }
}

/// The canonical upper-case name of a gRPC status code, as every gRPC
/// implementation prints it (`NOT_FOUND`), for messages and per-member
/// error codes that cross language boundaries.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
