//! Authentication at the transport edge: every service except health and
//! reflection is wrapped in [`Authenticator`], which turns
//! `authorization: Bearer <token>` into a [`Caller`] stored in the
//! request's extensions, or refuses the call with UNAUTHENTICATED.
//!
//! Authorization (which caller may do what) is each server's domain logic;
//! handlers fetch the caller with [`caller`].

use std::sync::Arc;
use std::time::SystemTime;

use orgauth_security::{AuthnError, Caller, TokenSet};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Code, Request, Status};
use tracing::debug;

use crate::status::Problem;

/// A tonic interceptor that authenticates bearer tokens against a
/// [`TokenSet`]. Cloning shares the set.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<TokenSet>,
    domain: &'static str,
}

impl Authenticator {
    /// `domain` is the `ErrorInfo.domain` of the refusals it sends.
    pub fn new(tokens: TokenSet, domain: &'static str) -> Authenticator {
        Authenticator {
            tokens: Arc::new(tokens),
            domain,
        }
    }

    /// The caller `metadata` authenticates as.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthnError> {
        let value = metadata
            .get("authorization")
            .ok_or(AuthnError::Missing)?
            .to_str()
            .map_err(|_| AuthnError::Malformed)?;
        let (scheme, secret) = value.split_once(' ').ok_or(AuthnError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthnError::Malformed);
        }
        self.tokens.authenticate(secret.trim(), SystemTime::now())
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.authenticate(request.metadata()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(err) => {
                // Never the secret: only why, and from where.
                debug!(reason = err.reason(), peer = ?request.remote_addr(), "refused unauthenticated call");
                Err(Problem::new(self.domain, err.reason())
                    .status(Code::Unauthenticated, err.to_string()))
            }
        }
    }
}

/// The caller [`Authenticator`] attached to `request`. A service that is
/// not wrapped in an authenticator gets UNAUTHENTICATED here rather than
/// running unauthenticated.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("this service is not behind an authenticator"))
}

/// Adds `authorization: Bearer <secret>` to outgoing requests: what
/// org-server uses to call auth-server as the `service` role. It also adds
/// the current span's trace context (`traceparent`), so the callee's spans
/// join the caller's trace.
#[derive(Clone)]
pub struct BearerToken {
    value: tonic::metadata::AsciiMetadataValue,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// Fails if `secret` cannot be sent as a header value.
    pub fn new(secret: &str) -> Result<BearerToken, String> {
        let mut value: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {}", secret.trim()).parse().map_err(|_| {
                "the token contains characters that cannot be sent in metadata".to_owned()
            })?;
        value.set_sensitive(true);
        Ok(BearerToken { value })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        crate::telemetry::inject_current_context(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use orgauth_security::Role;
    use orgauth_security::token::issue;
    use tonic_types::StatusExt;

    use super::*;

    fn authenticator() -> (Authenticator, String) {
        let token = issue("ops", Role::Admin, &[], None).unwrap();
        let tokens = TokenSet::parse(&token.line).unwrap();
        (Authenticator::new(tokens, "test"), token.secret)
    }

    fn call(auth: &mut Authenticator, header: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        let request = auth.call(request)?;
        caller(&request)
    }

    #[test]
    fn bearer_tokens_become_callers() {
        let (mut auth, secret) = authenticator();
        for header in [format!("Bearer {secret}"), format!("bearer  {secret} ")] {
            assert_eq!(&*call(&mut auth, Some(&header)).unwrap().name, "ops");
        }
        let mut outgoing = BearerToken::new(&secret).unwrap();
        let request = outgoing.call(Request::new(())).unwrap();
        assert_eq!(
            auth.authenticate(request.metadata()).unwrap().role,
            Role::Admin
        );
    }

    #[test]
    fn refusals_are_unauthenticated_with_a_reason_and_no_secret() {
        let (mut auth, secret) = authenticator();
        let cases = [
            (None, "TOKEN_MISSING"),
            (Some(secret.clone()), "TOKEN_MALFORMED"),
            (Some(format!("Basic {secret}")), "TOKEN_MALFORMED"),
            (Some("Bearer nope".into()), "TOKEN_MALFORMED"),
            (
                Some(format!(
                    "Bearer {}",
                    issue("x", Role::Admin, &[], None).unwrap().secret
                )),
                "TOKEN_UNKNOWN",
            ),
        ];
        for (header, reason) in cases {
            let status = call(&mut auth, header.as_deref()).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            assert_eq!(
                status.get_error_details().error_info().unwrap().reason,
                reason
            );
            assert!(!status.message().contains(&secret));
        }
    }
}
