//! The gRPC implementation of [`AuthGateway`]: org-server's client of the
//! Auth service, and the one place that classifies Auth's status codes as
//! transient (retry) or permanent (fail the job).

use std::time::Duration;

use async_trait::async_trait;
use orgauth_proto::auth::v1 as pb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use orgauth_runtime::access::BearerToken;
use orgauth_runtime::transport::ClientTls;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use orgauth_proto::code_name;

use crate::domain::job::UnlinkOutcome;
use crate::error::{Error, Result};
use crate::jobs::auth::{AuthCallError, AuthGateway};

pub struct GrpcAuthGateway {
    client: AuthServiceClient<InterceptedService<Channel, BearerToken>>,
}

/// How org-server reaches Auth.
#[derive(Debug, Clone)]
pub struct AuthConnection {
    pub endpoint: String,
    pub call_timeout: Duration,
    /// The `service`-role token presented on every call.
    pub token: BearerToken,
    /// `Some` for TLS (an https:// endpoint).
    pub tls: Option<ClientTls>,
}

impl GrpcAuthGateway {
    /// Connects lazily: org-server starts, and UpdateOrg keeps working, while
    /// Auth is down; jobs retry until it is back.
    pub fn new(connection: AuthConnection) -> Result<Self> {
        let AuthConnection {
            endpoint,
            call_timeout,
            token,
            tls,
        } = connection;
        let mut builder = Endpoint::from_shared(endpoint.clone()).map_err(|err| {
            Error::invalid(
                "--auth-endpoint",
                format!("{endpoint:?} is not a valid URI: {err}"),
            )
        })?;
        if let Some(tls) = tls {
            let config = tls
                .config()
                .map_err(|err| Error::invalid("--auth-tls-ca", err.to_string()))?;
            builder = builder
                .tls_config(config)
                .map_err(|err| Error::invalid("--auth-endpoint", err.to_string()))?;
        }
        let channel = builder
            .connect_timeout(Duration::from_secs(5))
            .timeout(call_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(GrpcAuthGateway {
            client: AuthServiceClient::with_interceptor(channel, token),
        })
    }
}

/// Transient: worth retrying with backoff. tonic reports its own client
/// timeout as CANCELLED, so that counts as transient too. A refused token
/// (UNAUTHENTICATED, PERMISSION_DENIED) is a deployment mistake an operator
/// can fix without touching the job, so the job keeps retrying, with the
/// refusal in its `last_error`, instead of failing at once.
fn classify(status: &Status) -> AuthCallError {
    let transient = matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    );
    AuthCallError {
        code: code_name(status.code()).to_owned(),
        message: storable(&with_causes(status)),
        transient,
    }
}

/// Longest text from Auth kept in a job (`last_error`, a failure's code or
/// message); the rest is cut.
const MAX_STORED_TEXT: usize = 1024;

/// Text from Auth as a job can store it on every backend: PostgreSQL
/// refuses NUL in text and JSON, and a peer's message is not ours to let
/// grow without bound.
fn storable(text: &str) -> String {
    let mut kept: String = text.chars().filter(|&c| c != '\0').collect();
    if kept.len() > MAX_STORED_TEXT {
        let mut end = MAX_STORED_TEXT;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept.truncate(end);
        kept.push('…');
    }
    kept
}

/// The status message and the errors underneath it. A refused TLS
/// handshake reaches us as a bare "operation was canceled"; the cause
/// (a bad certificate, say) is what an operator reading the job's
/// `last_error` needs.
fn with_causes(status: &Status) -> String {
    let mut message = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        let text = err.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = err.source();
    }
    message
}

#[async_trait]
impl AuthGateway for GrpcAuthGateway {
    async fn set_sso_policy(
        &self,
        org_id: &str,
        allow_custom_sso: bool,
    ) -> Result<(), AuthCallError> {
        self.client
            .clone()
            .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
                org_id: org_id.to_owned(),
                allow_custom_sso,
            })
            .await
            .map(drop)
            .map_err(|status| classify(&status))
    }

    async fn batch_unlink(
        &self,
        org_id: &str,
        member_ids: &[String],
    ) -> Result<Vec<UnlinkOutcome>, AuthCallError> {
        let response = self
            .client
            .clone()
            .batch_unlink_sso(pb::BatchUnlinkSsoRequest {
                org_id: org_id.to_owned(),
                member_ids: member_ids.to_vec(),
            })
            .await
            .map_err(|status| classify(&status))?
            .into_inner();
        let mismatch = || AuthCallError {
            code: "INTERNAL".into(),
            message: "BatchUnlinkSso answered results that do not match the request".into(),
            transient: false,
        };
        if response.results.len() != member_ids.len() {
            return Err(mismatch());
        }
        response
            .results
            .into_iter()
            .zip(member_ids)
            .map(|(result, requested)| {
                if result.member_id != *requested {
                    return Err(mismatch());
                }
                Ok(match pb::UnlinkOutcome::try_from(result.outcome) {
                    Ok(pb::UnlinkOutcome::Unlinked) => UnlinkOutcome::Unlinked,
                    Ok(pb::UnlinkOutcome::NotLinked) => UnlinkOutcome::NotLinked,
                    Ok(pb::UnlinkOutcome::Error) => UnlinkOutcome::Failed {
                        code: storable(&result.error_code),
                        message: storable(&result.error_message),
                    },
                    Ok(pb::UnlinkOutcome::Unspecified) | Err(_) => UnlinkOutcome::Failed {
                        code: "UNKNOWN".into(),
                        message: format!("Auth answered unknown outcome {}", result.outcome),
                    },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_auth_is_stored_without_nul_and_bounded() {
        assert_eq!(storable("bad\0member"), "badmember");
        let long = "é".repeat(MAX_STORED_TEXT);
        let kept = storable(&long);
        assert!(
            kept.len() <= MAX_STORED_TEXT + '…'.len_utf8(),
            "{}",
            kept.len()
        );
        assert!(kept.ends_with('…'));
        assert_eq!(storable("fine"), "fine");
        let status = Status::new(Code::Unavailable, "down\0");
        assert_eq!(classify(&status).message, "down");
    }

    #[test]
    fn transient_codes_are_retried() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Unauthenticated,
            Code::PermissionDenied,
        ] {
            assert!(classify(&Status::new(code, "x")).transient, "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
        ] {
            assert!(!classify(&Status::new(code, "x")).transient, "{code:?}");
        }
        assert_eq!(classify(&Status::unavailable("down")).code, "UNAVAILABLE");
    }
}
