//! The transport edge: tonic service implementations that translate
//! protobuf requests into domain calls on [`crate::app::App`] and back.
//! No rules live here.
//!
//! - [`convert`]: protobuf <-> domain values.
//! - [`org_service`], [`job_service`]: the two services org-server serves.
//! - the one mapping of [`crate::error::Error`] to `tonic::Status` (below).

pub mod convert;
pub mod job_service;
pub mod org_service;

use tonic::{Code, Status};
use tracing::error;

use crate::error::Error;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
            Error::NotFound(msg) => Status::not_found(msg),
            Error::AlreadyExists(msg) => Status::already_exists(msg),
            Error::Aborted(msg) => Status::aborted(msg),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::Unavailable(msg) => Status::unavailable(msg),
            Error::Storage(sqlx::Error::PoolTimedOut) => {
                Status::unavailable("the database is busy; retry with backoff")
            }
            Error::Storage(ref inner) => {
                error!(error = %inner, "storage error");
                Status::new(Code::Internal, "internal storage error")
            }
            Error::LeaseLost { .. } | Error::Internal(_) => {
                error!(error = %err, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
