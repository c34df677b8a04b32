//! `google.longrunning.Operations` over [`App`]: every job is also an
//! operation named `operations/{job_id}` (see [`convert::operation`]), so
//! generic LRO clients and tools work against org-server unchanged.
//!
//! Only the request syntax of that API lives here (operation names, the
//! small AIP-160 filter, WaitOperation's timeout); what may be seen,
//! listed, cancelled or waited for is App's, exactly as for JobService.

use std::sync::Arc;
use std::time::Duration;

use orgauth_proto::google::longrunning as lro;
use orgauth_proto::google::longrunning::operations_server::Operations;
use orgauth_runtime::access::caller;
use orgauth_runtime::status::Problem;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use super::{ERROR_DOMAIN, convert};
use crate::app::App;
use crate::domain::job::{JobFilter, JobState, parse_job_id};
use crate::domain::org::validate_org_id;
use crate::domain::page::PageRequest;
use crate::error::{Error, Result};

/// The longest a WaitOperation waits, and how long it waits when the
/// request sets no timeout: below the server's default --max-call-time
/// (60 s), so the answer is a done=false Operation, never a cancelled call.
pub const MAX_WAIT: Duration = Duration::from_secs(50);

/// How long WaitOperation may wait on a server whose calls are cut after
/// `max_call_time`: [`MAX_WAIT`], or 5/6 of a shorter --max-call-time.
pub fn wait_cap(max_call_time: Duration) -> Duration {
    MAX_WAIT.min(max_call_time * 5 / 6)
}

/// The only collection: ListOperations' `name` is this or empty.
const COLLECTION: &str = "operations";

/// What `filter` accepts, for every message that refuses one.
const SUPPORTED_FILTER: &str = "supported: org_id = \"ORG_ID\", \
     state = QUEUED|RUNNING|SUCCEEDED|FAILED|CANCELLED, done = true|false, \
     joined by AND";

pub struct OperationsGrpc {
    pub app: Arc<App>,
    /// See [`wait_cap`].
    pub wait_cap: Duration,
}

#[tonic::async_trait]
impl Operations for OperationsGrpc {
    async fn list_operations(
        &self,
        request: Request<lro::ListOperationsRequest>,
    ) -> Result<Response<lro::ListOperationsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        parse_collection(&request.name)?;
        let filter = OperationFilter::parse(&request.filter)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let jobs = JobFilter {
            org_id: filter.org_id,
            state: filter.state,
            within: None,
        };
        let page = self
            .app
            .list_jobs_done(&caller, jobs, filter.done, page)
            .await?;
        Ok(Response::new(lro::ListOperationsResponse {
            operations: page.items.iter().map(convert::operation).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_operation(
        &self,
        request: Request<lro::GetOperationRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let caller = caller(&request)?;
        let job_id = parse_name(&request.get_ref().name)?;
        let job = self.app.get_job(&caller, job_id).await?;
        Ok(Response::new(convert::operation(&job)))
    }

    async fn delete_operation(
        &self,
        request: Request<lro::DeleteOperationRequest>,
    ) -> Result<Response<()>, Status> {
        caller(&request)?;
        Err(Problem::new(ERROR_DOMAIN, "DELETE_NOT_SUPPORTED").status(
            Code::Unimplemented,
            "DeleteOperation is not supported: finished jobs are pruned \
             after org-server's --job-retention",
        ))
    }

    async fn cancel_operation(
        &self,
        request: Request<lro::CancelOperationRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&request)?;
        let job_id = parse_name(&request.get_ref().name)?;
        self.app.cancel_job(&caller, job_id).await?;
        Ok(Response::new(()))
    }

    async fn wait_operation(
        &self,
        request: Request<lro::WaitOperationRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        // The caller's clock started before ours: count from the moment
        // the call arrives, so opening the watch and reading the job come
        // out of the wait rather than out of the margin.
        let arrived = tokio::time::Instant::now();
        let caller = caller(&request)?;
        // tonic parses this header for its own timeout but keeps the
        // parser private (tonic 0.14), hence ours.
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let request = request.into_inner();
        let job_id = parse_name(&request.name)?;
        let wait = wait_for(request.timeout.as_ref(), self.wait_cap, deadline)?;
        let job = self.app.wait_job(&caller, job_id, arrived + wait).await?;
        Ok(Response::new(convert::operation(&job)))
    }
}

/// At most this much of a caller's text is echoed back in a message.
fn echo(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The job an operation name names: `operations/{job_id}`, or the bare job
/// id (what UpdateOrg returns), so people can paste either.
fn parse_name(name: &str) -> Result<Uuid> {
    if name.is_empty() {
        return Err(Error::invalid(
            "name",
            "required: operations/{job_id}, as Operation.name gives it",
        ));
    }
    let id = name.strip_prefix(convert::OPERATION_PREFIX).unwrap_or(name);
    parse_job_id("name", id).map_err(|_| {
        Error::invalid(
            "name",
            format!(
                "{:?} is not an operation name: use operations/{{job_id}}, as \
                 Operation.name gives it (job ids are UUIDs)",
                echo(name)
            ),
        )
    })
}

/// ListOperations' `name`: the one collection there is.
fn parse_collection(name: &str) -> Result<()> {
    if name.is_empty() || name == COLLECTION {
        return Ok(());
    }
    Err(Error::invalid(
        "name",
        format!(
            "{:?} is not an operation collection: use \"{COLLECTION}\" or leave it empty",
            echo(name)
        ),
    ))
}

/// ListOperations' `filter`: a small subset of AIP-160, equality on
/// `org_id`, `state` and `done` joined by AND. Anything richer is refused
/// rather than half-understood, so a filter never silently matches more
/// than the caller asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct OperationFilter {
    org_id: Option<String>,
    state: Option<JobState>,
    done: Option<bool>,
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// A bare word: a field name, `AND`, or an unquoted value.
    Word(String),
    /// A quoted value.
    Text(String),
    Equals,
}

fn bad_filter(problem: impl std::fmt::Display) -> Error {
    Error::invalid("filter", format!("{problem}; {SUPPORTED_FILTER}"))
}

fn tokens(filter: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = filter.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '=' => tokens.push(Token::Equals),
            '"' | '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) => {
                            return Err(bad_filter("escapes in quoted values are not supported"));
                        }
                        Some((_, other)) => text.push(other),
                        None => {
                            return Err(bad_filter(format!(
                                "unterminated quote at {:?}",
                                echo(&filter[start..])
                            )));
                        }
                    }
                }
                tokens.push(Token::Text(text));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let mut word = String::from(c);
                while let Some(&(_, next)) = chars.peek() {
                    if !(next.is_ascii_alphanumeric() || next == '_' || next == '-') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
            other => {
                return Err(bad_filter(format!(
                    "unsupported {other:?} at {:?}",
                    echo(&filter[start..])
                )));
            }
        }
    }
    Ok(tokens)
}

impl OperationFilter {
    fn parse(filter: &str) -> Result<OperationFilter> {
        let mut parsed = OperationFilter::default();
        let mut tokens = tokens(filter)?.into_iter();
        let Some(mut next) = tokens.next() else {
            return Ok(parsed);
        };
        loop {
            let Token::Word(field) = next else {
                return Err(bad_filter("expected a field name"));
            };
            if tokens.next() != Some(Token::Equals) {
                return Err(bad_filter(format!(
                    "expected `=` after {:?} (only equality is supported)",
                    echo(&field)
                )));
            }
            let value = match tokens.next() {
                Some(Token::Word(value) | Token::Text(value)) => value,
                _ => {
                    return Err(bad_filter(format!(
                        "expected a value after `{} =`",
                        echo(&field)
                    )));
                }
            };
            parsed.set(&field, &value)?;
            match tokens.next() {
                None => return Ok(parsed),
                Some(Token::Word(and)) if and == "AND" => {}
                Some(_) => {
                    return Err(bad_filter(
                        "terms must be joined by AND (OR and NOT are not supported)",
                    ));
                }
            }
            next = tokens
                .next()
                .ok_or_else(|| bad_filter("expected a term after AND"))?;
        }
    }

    fn set(&mut self, field: &str, value: &str) -> Result<()> {
        let twice = || bad_filter(format!("{field} is given more than once"));
        match field {
            "org_id" => {
                validate_org_id("filter", value)
                    .map_err(|_| bad_filter(format!("{:?} is not an org id", echo(value))))?;
                if self.org_id.replace(value.to_owned()).is_some() {
                    return Err(twice());
                }
            }
            "state" => {
                let name = value.strip_prefix("JOB_STATE_").unwrap_or(value);
                let state = JobState::ALL
                    .into_iter()
                    .find(|s| s.name().eq_ignore_ascii_case(name))
                    .ok_or_else(|| bad_filter(format!("{:?} is not a job state", echo(value))))?;
                if self.state.replace(state).is_some() {
                    return Err(twice());
                }
            }
            "done" => {
                let done = if value.eq_ignore_ascii_case("true") {
                    true
                } else if value.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(bad_filter(format!(
                        "done is true or false, not {:?}",
                        echo(value)
                    )));
                };
                if self.done.replace(done).is_some() {
                    return Err(twice());
                }
            }
            other => {
                return Err(bad_filter(format!("unknown field {:?}", echo(other))));
            }
        }
        Ok(())
    }
}

/// A `grpc-timeout` header value (`1500m`, `30S`, ...): how long the caller
/// waits for the answer.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(unit_at)?;
    // The gRPC spec allows at most 8 digits, which also keeps this exact.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long before the caller's deadline WaitOperation answers, so the
/// answer arrives while the caller still listens: a tenth of the deadline,
/// at least 250 ms (a loaded machine's scheduling and the answer's trip)
/// and at most 1 s.
fn margin(deadline: Duration) -> Duration {
    (deadline / 10)
        .max(Duration::from_millis(250))
        .min(Duration::from_secs(1))
}

/// How long WaitOperation waits, from the moment the call arrived: the
/// request's `timeout` (unset: `cap`), never more than `cap`, and ending
/// [`margin`] before the caller's own deadline.
fn wait_for(
    timeout: Option<&prost_types::Duration>,
    cap: Duration,
    deadline: Option<Duration>,
) -> Result<Duration> {
    let asked = match timeout {
        None => cap,
        Some(timeout) => {
            let (Ok(seconds), Ok(nanos)) =
                (u64::try_from(timeout.seconds), u32::try_from(timeout.nanos))
            else {
                return Err(Error::invalid("timeout", "must not be negative"));
            };
            if nanos >= 1_000_000_000 {
                return Err(Error::invalid(
                    "timeout",
                    "nanos must be below 1,000,000,000",
                ));
            }
            Duration::new(seconds, nanos).min(cap)
        }
    };
    Ok(match deadline {
        Some(deadline) => asked.min(deadline.saturating_sub(margin(deadline))),
        None => asked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

    fn field_of(err: Error) -> (String, String) {
        match err {
            Error::InvalidArgument { field, reason } => (field, reason),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn names() {
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(parse_name(&format!("operations/{ID}")).unwrap(), id);
        assert_eq!(parse_name(ID).unwrap(), id, "a bare job id is accepted");
        for bad in [
            "",
            "operations/",
            "operations/x",
            "operations",
            &format!("jobs/{ID}"),
            &format!("operations/{ID}/more"),
            &format!("operations//{ID}"),
            &format!(" operations/{ID}"),
        ] {
            let (field, reason) = field_of(parse_name(bad).unwrap_err());
            assert_eq!(field, "name", "{bad:?}");
            assert!(reason.contains("operations/{job_id}"), "{bad:?}: {reason}");
        }
        let long = "x".repeat(10_000);
        let (_, reason) = field_of(parse_name(&long).unwrap_err());
        assert!(reason.len() < 300, "the echo is bounded: {reason}");
    }

    #[test]
    fn collections() {
        assert!(parse_collection("").is_ok());
        assert!(parse_collection("operations").is_ok());
        for bad in ["operations/", "projects/p/operations", "jobs", "Operations"] {
            assert_eq!(field_of(parse_collection(bad).unwrap_err()).0, "name");
        }
    }

    #[test]
    fn filters() {
        let parse = |f: &str| OperationFilter::parse(f).unwrap();
        assert_eq!(parse(""), OperationFilter::default());
        assert_eq!(parse("   "), OperationFilter::default());
        assert_eq!(
            parse(r#"org_id = "acme""#),
            OperationFilter {
                org_id: Some("acme".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            parse(r#"org_id="acme-eu" AND state = RUNNING AND done=false"#),
            OperationFilter {
                org_id: Some("acme-eu".into()),
                state: Some(JobState::Running),
                done: Some(false),
            }
        );
        assert_eq!(parse("org_id = 'acme'").org_id.as_deref(), Some("acme"));
        assert_eq!(parse("org_id = acme").org_id.as_deref(), Some("acme"));
        assert_eq!(
            parse("state = JOB_STATE_SUCCEEDED").state,
            Some(JobState::Succeeded)
        );
        assert_eq!(
            parse(r#"state = "cancelled""#).state,
            Some(JobState::Cancelled)
        );
        assert_eq!(parse("done = true").done, Some(true));
        assert_eq!(parse("done = FALSE").done, Some(false));
    }

    #[test]
    fn filters_refused_name_the_field_and_what_is_supported() {
        for bad in [
            "org_id",
            "org_id =",
            "org_id = \"acme",
            "org_id = \"a\\\"b\"",
            "org_id = \"Not An Id!\"",
            "org_id != \"acme\"",
            "org_id : \"acme\"",
            "org_id = \"acme\" OR org_id = \"globex\"",
            "org_id = \"acme\" and done = true",
            "org_id = \"acme\" AND",
            "org_id = \"acme\" done = true",
            "NOT done = true",
            "(done = true)",
            "done = yes",
            "done = 1",
            "state = PAUSED",
            "state = 2",
            "name = \"operations/x\"",
            "metadata.org_id = \"acme\"",
            "org_id = \"acme\" AND org_id = \"globex\"",
            "done = true AND done = false",
            "= true",
            "\"acme\"",
            "état = RUNNING",
        ] {
            let err = OperationFilter::parse(bad).expect_err(&format!("{bad:?} must be refused"));
            let (field, reason) = field_of(err);
            assert_eq!(field, "filter", "{bad:?}");
            assert!(reason.ends_with(SUPPORTED_FILTER), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn waits() {
        let cap = Duration::from_secs(50);
        let secs = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(wait_for(None, cap, None).unwrap(), cap);
        assert_eq!(
            wait_for(Some(&secs(2, 500_000_000)), cap, None).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(
            wait_for(Some(&secs(0, 0)), cap, None).unwrap(),
            Duration::ZERO
        );
        assert_eq!(wait_for(Some(&secs(3600, 0)), cap, None).unwrap(), cap);
        assert_eq!(
            wait_for(Some(&secs(i64::MAX, 999_999_999)), cap, None).unwrap(),
            cap
        );
        // The caller's deadline wins, with room for the answer to travel.
        assert_eq!(
            wait_for(None, cap, Some(Duration::from_secs(5))).unwrap(),
            Duration::from_millis(4500)
        );
        assert_eq!(
            wait_for(Some(&secs(1, 0)), cap, Some(Duration::from_secs(30))).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            wait_for(None, cap, Some(Duration::from_secs(40))).unwrap(),
            Duration::from_secs(39)
        );
        // At least 250 ms of margin, however short the deadline.
        assert_eq!(
            wait_for(None, cap, Some(Duration::from_secs(2))).unwrap(),
            Duration::from_millis(1750)
        );
        assert_eq!(
            wait_for(None, cap, Some(Duration::from_millis(200))).unwrap(),
            Duration::ZERO
        );
        assert_eq!(
            wait_for(Some(&secs(1, 0)), cap, Some(Duration::from_secs(1))).unwrap(),
            Duration::from_millis(750)
        );
        for bad in [secs(-1, 0), secs(0, -1), secs(1, 1_000_000_000)] {
            assert_eq!(
                field_of(wait_for(Some(&bad), cap, None).unwrap_err()).0,
                "timeout"
            );
        }
    }

    #[test]
    fn the_margin_is_a_tenth_of_the_deadline_between_250_ms_and_1_s() {
        let ms = Duration::from_millis;
        assert_eq!(margin(ms(100)), ms(250));
        assert_eq!(margin(ms(2500)), ms(250));
        assert_eq!(margin(ms(4000)), ms(400));
        assert_eq!(margin(ms(10_000)), ms(1000));
        assert_eq!(margin(ms(3_600_000)), ms(1000));
    }

    #[test]
    fn the_cap_stays_below_the_call_time() {
        assert_eq!(wait_cap(Duration::from_secs(60)), MAX_WAIT);
        assert_eq!(wait_cap(Duration::from_secs(600)), MAX_WAIT);
        assert_eq!(wait_cap(Duration::from_secs(12)), Duration::from_secs(10));
    }
}
