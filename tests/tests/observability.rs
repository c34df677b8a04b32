//! What operators see, checked with the tools they use: the `/metrics`
//! endpoints of both servers parsed by the Prometheus project's own parser
//! (Python `prometheus_client`) while a job is held up, queued behind it,
//! resumed and finished; and the JSON logs of both servers, where one
//! trace_id follows a job from org-server's worker into auth-server, and a
//! caller's `traceparent` reaches the request's log lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orgauth_e2e::tools::{python_with, run_python_script};
use orgauth_e2e::{Stack, StackOptions, get_job, set_allow_request, wait_until};
use orgauth_proto::org::v1 as pb;
use serde_json::Value;

/// One sample as the parser reports it.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`
    /// (0 when there is none: a counter not yet touched).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has_family(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name.starts_with(name))
    }
}

async fn scrape(python: &Path, addr: SocketAddr) -> Scrape {
    // A parse error fails the script, and the test with its output.
    let (stdout, _) = run_python_script(
        python,
        "tests/python/scrape_metrics.py",
        &[&format!("http://{addr}/metrics")],
        Duration::from_secs(30),
    )
    .await;
    Scrape(
        stdout
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("one JSON sample per line");
                Sample {
                    name: v["name"].as_str().expect("name").to_owned(),
                    labels: v["labels"]
                        .as_object()
                        .expect("labels")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                    value: v["value"].as_f64().expect("value"),
                }
            })
            .collect(),
    )
}

fn flags(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|s| (*s).to_owned()).collect()
}

const UPDATE_ORG: [(&str, &str); 2] = [
    ("grpc_service", "orgauth.org.v1.OrgService"),
    ("grpc_method", "UpdateOrg"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_job_through_an_auth_outage_to_the_end() {
    let Some(python) = python_with(&["prometheus_client"]) else {
        return;
    };
    const MEMBERS: usize = 3_000;
    let mut stack = Stack::start_with(StackOptions {
        // One worker: the second org's job waits in the queue behind the
        // first, which cannot finish while Auth is down.
        workers: 1,
        batch_size: 100,
        parallelism: 2,
        org_args: flags(&[
            "--metrics-listen",
            "127.0.0.1:0",
            "--retry-initial-backoff",
            "50ms",
            "--retry-max-backoff",
            "300ms",
            "--retry-max-attempts",
            "1000",
        ]),
        auth_args: flags(&["--metrics-listen", "127.0.0.1:0"]),
        ..Default::default()
    })
    .await;
    let org_metrics = stack.org.metrics_addr.expect("org-server metrics address");
    stack.seed_linked_org("big", MEMBERS).await;
    stack.seed_linked_org("small", 10).await;

    let before = scrape(&python, org_metrics).await;
    for family in [
        "grpc_server_started",
        "grpc_server_handled",
        "grpc_server_handling_seconds",
        "orgauth_jobs",
        "orgauth_job_queue_depth",
        "orgauth_job_oldest_queued_age_seconds",
        "orgauth_worker_jobs_running",
        "orgauth_unlink_batch_duration_seconds",
        "orgauth_members_unlinked",
        "orgauth_watch_streams_open",
    ] {
        assert!(before.has_family(family), "{family} missing: {before:?}");
    }
    assert_eq!(before.value("orgauth_job_queue_depth", &[]), 0.0);
    assert_eq!(
        before.value("orgauth_watch_streams_open", &[]),
        0.0,
        "{before:?}"
    );
    assert_eq!(before.value("orgauth_members_unlinked_total", &[]), 0.0);

    // Auth goes away; both flips are still acknowledged.
    stack.auth.kill9();
    let big = stack.set_allow("big", false).await;
    let small = stack.set_allow("small", false).await;

    // A caller without a token is counted under its code.
    let mut anonymous = pb::job_service_client::JobServiceClient::new(stack.org.channel().await);
    let refused = anonymous
        .get_job(pb::GetJobRequest {
            job_id: big.clone(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A watcher of the held-up job is an open stream.
    let mut jobs = stack.jobs().await;
    let mut watch = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: big.clone(),
            since_version: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("first state").expect("a job");

    let held = wait_until(
        "the held-up job running, retrying, the other queued",
        Duration::from_secs(30),
        || async {
            let s = scrape(&python, org_metrics).await;
            let ready = s.value("orgauth_jobs", &[("state", "RUNNING")]) == 1.0
                && s.value("orgauth_job_queue_depth", &[]) == 1.0
                && s.value("orgauth_job_oldest_queued_age_seconds", &[]) > 0.0
                && s.value("orgauth_worker_jobs_running", &[]) == 1.0
                && s.value(
                    "orgauth_auth_call_retries_total",
                    &[("call", "SetOrgSsoPolicy")],
                ) >= 2.0;
            ready.then_some(s)
        },
    )
    .await;
    assert_eq!(held.value("orgauth_watch_streams_open", &[]), 1.0);
    // Seeding ran (and counted) one job per org already.
    let claims_before = before.value("orgauth_job_claims_total", &[]);
    assert_eq!(
        held.value("orgauth_job_claims_total", &[]),
        claims_before + 1.0
    );
    assert_eq!(
        held.value(
            "grpc_server_handled_total",
            &[UPDATE_ORG[0], UPDATE_ORG[1], ("grpc_code", "OK")]
        ),
        2.0
    );
    assert_eq!(
        held.value(
            "grpc_server_handled_total",
            &[("grpc_method", "GetJob"), ("grpc_code", "UNAUTHENTICATED")]
        ),
        1.0
    );
    assert_eq!(
        held.value(
            "grpc_server_handling_seconds_count",
            &[UPDATE_ORG[0], UPDATE_ORG[1]]
        ),
        2.0
    );

    // Auth is back: both jobs finish, the watch ends.
    stack.auth.restart();
    let auth_metrics = stack
        .auth
        .metrics_addr
        .expect("auth-server metrics address");
    while watch.message().await.expect("watch").is_some() {}
    let mut jobs = stack.jobs().await;
    for job_id in [&big, &small] {
        wait_until("the job SUCCEEDED", Duration::from_secs(60), || {
            let mut jobs = jobs.clone();
            async move {
                let job = get_job(&mut jobs, job_id).await;
                (job.state == pb::JobState::Succeeded as i32).then_some(())
            }
        })
        .await;
    }
    let _ = &mut jobs;

    let after = wait_until(
        "the queue empty and the watch closed",
        Duration::from_secs(10),
        || async {
            let s = scrape(&python, org_metrics).await;
            (s.value("orgauth_watch_streams_open", &[]) == 0.0
                && s.value("orgauth_worker_jobs_running", &[]) == 0.0)
                .then_some(s)
        },
    )
    .await;
    let total = (MEMBERS + 10) as f64;
    let succeeded_before = before.value("orgauth_jobs", &[("state", "SUCCEEDED")]);
    assert_eq!(
        after.value("orgauth_jobs", &[("state", "SUCCEEDED")]),
        succeeded_before + 2.0
    );
    assert_eq!(after.value("orgauth_jobs", &[("state", "RUNNING")]), 0.0);
    assert_eq!(after.value("orgauth_job_queue_depth", &[]), 0.0);
    assert_eq!(
        after.value("orgauth_job_oldest_queued_age_seconds", &[]),
        0.0
    );
    assert_eq!(
        after.value("orgauth_job_claims_total", &[]),
        claims_before + 2.0
    );
    assert_eq!(
        after.value("orgauth_jobs_finished_total", &[("state", "SUCCEEDED")]),
        before.value("orgauth_jobs_finished_total", &[("state", "SUCCEEDED")]) + 2.0
    );
    assert_eq!(after.value("orgauth_members_unlinked_total", &[]), total);
    assert_eq!(after.value("orgauth_members_failed_total", &[]), 0.0);
    // 30 batches of the big org, 1 of the small one, each timed.
    assert_eq!(
        after.value("orgauth_unlink_batch_duration_seconds_count", &[]),
        31.0
    );
    let watches_ended = |s: &Scrape| {
        s.value(
            "grpc_server_handled_total",
            &[("grpc_method", "WatchJob"), ("grpc_code", "OK")],
        )
    };
    assert_eq!(watches_ended(&after), watches_ended(&before) + 1.0);

    // auth-server (restarted, so counting from zero) saw every batch.
    let auth = scrape(&python, auth_metrics).await;
    assert_eq!(
        auth.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", "orgauth.auth.v1.AuthService"),
                ("grpc_method", "BatchUnlinkSso"),
                ("grpc_code", "OK")
            ]
        ),
        31.0
    );
    assert_eq!(
        auth.value(
            "grpc_server_handled_total",
            &[("grpc_method", "SetOrgSsoPolicy"), ("grpc_code", "OK")]
        ),
        2.0
    );
    assert_eq!(stack.connections("big").await, 0);
}

/// Every JSON log line of a server.
fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .expect("read log")
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"))
        })
        .collect()
}

/// The value of `field` in the line's spans (innermost last), if any.
fn span_field<'a>(line: &'a Value, field: &str) -> Option<&'a str> {
    line["spans"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|span| span[field].as_str())
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_trace_from_the_worker_into_auth() {
    let stack = Stack::start_with(StackOptions {
        batch_size: 100,
        org_args: flags(&["--log-format", "json"]),
        org_env: vec![("RUST_LOG".into(), "info".into())],
        auth_args: flags(&["--log-format", "json"]),
        auth_env: vec![("RUST_LOG".into(), "info,auth_server=debug".into())],
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("traced", 500).await;

    // A caller's trace context reaches the request's log lines.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(set_allow_request("traced", false));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-00f067aa0ba902b7-01")
            .parse()
            .expect("metadata"),
    );
    let job_id = stack
        .orgs()
        .await
        .update_org(request)
        .await
        .expect("update")
        .into_inner()
        .job_id;
    let mut jobs = stack.jobs().await;
    orgauth_e2e::watch_to_end(&mut jobs, &job_id).await;

    let org_log: PathBuf = stack.org.log_path.clone();
    let org_lines = wait_until(
        "org-server logged the job's end",
        Duration::from_secs(10),
        || {
            let org_log = org_log.clone();
            let job_id = job_id.clone();
            async move {
                let lines = json_lines(&org_log);
                lines
                    .iter()
                    .any(|l| message(l) == "job ended" && span_field(l, "job_id") == Some(&job_id))
                    .then_some(lines)
            }
        },
    )
    .await;
    let enqueued = org_lines
        .iter()
        .find(|l| message(l) == "job enqueued" && l["fields"]["job_id"] == job_id.as_str())
        .expect("a `job enqueued` line");
    assert_eq!(
        span_field(enqueued, "trace_id"),
        Some(caller_trace),
        "the request's span joined the caller's trace: {enqueued}"
    );

    // The job's run is one trace, named on its lines with job and org.
    let claimed = org_lines
        .iter()
        .find(|l| message(l) == "job claimed" && span_field(l, "job_id") == Some(&job_id))
        .expect("a `job claimed` line");
    assert_eq!(span_field(claimed, "org_id"), Some("traced"));
    let job_trace = span_field(claimed, "trace_id")
        .expect("the job's span has a trace_id")
        .to_owned();
    assert_eq!(job_trace.len(), 32, "{job_trace}");
    assert_ne!(job_trace, "0".repeat(32));

    // auth-server's lines for this org's policy and batches carry it.
    let auth_lines = json_lines(&stack.auth.log_path);
    let in_trace: Vec<&Value> = auth_lines
        .iter()
        .filter(|l| span_field(l, "trace_id") == Some(job_trace.as_str()))
        .collect();
    assert!(
        in_trace.iter().any(|l| message(l) == "set sso policy"),
        "auth-server's SetOrgSsoPolicy ran in the job's trace; lines in it: {in_trace:?}"
    );
    let batches = in_trace
        .iter()
        .filter(|l| span_field(l, "path") == Some("/orgauth.auth.v1.AuthService/BatchUnlinkSso"))
        .count();
    assert!(
        batches >= 5,
        "every one of the 5 batches logged in the job's trace, saw {batches}: {in_trace:?}"
    );
    let _ = get_job(&mut jobs, &job_id).await;
}

/// An OTLP/gRPC trace collector on 127.0.0.1 that keeps what it is sent.
mod collector {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

    /// One exported span, flattened.
    #[derive(Debug, Clone)]
    pub struct Span {
        pub service: String,
        pub name: String,
        pub trace_id: Vec<u8>,
        pub span_id: Vec<u8>,
        pub parent_span_id: Vec<u8>,
    }

    #[derive(Clone, Default)]
    pub struct Collector(pub Arc<Mutex<Vec<Span>>>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.0.lock().expect("collector lock");
            for resource in request.into_inner().resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push(Span {
                            service: service.clone(),
                            name: span.name,
                            trace_id: span.trace_id,
                            span_id: span.span_id,
                            parent_span_id: span.parent_span_id,
                        });
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// Serves a collector; returns it and its address.
    pub async fn start() -> (Collector, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector address");
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_export_sends_one_trace_across_both_servers() {
    let (collector, addr) = collector::start().await;
    let endpoint = format!("http://{addr}");
    // Export every 200 ms instead of every 5 s, so the test is quick.
    let fast_export = ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned());
    let stack = Stack::start_with(StackOptions {
        batch_size: 100,
        org_args: vec!["--otel-endpoint".into(), endpoint.clone()],
        org_env: vec![fast_export.clone()],
        auth_args: vec![
            "--otel-endpoint".into(),
            endpoint,
            "--otel-service-name".into(),
            "auth-under-test".into(),
        ],
        auth_env: vec![fast_export],
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("exported", 300).await;
    let job_id = stack.set_allow("exported", false).await;
    let mut jobs = stack.jobs().await;
    orgauth_e2e::watch_to_end(&mut jobs, &job_id).await;

    let (job_span, auth_spans) = wait_until(
        "the job's spans from both servers at the collector",
        Duration::from_secs(20),
        || {
            let spans = collector.0.lock().expect("collector lock").clone();
            async move {
                // The last `job` span is the disable job's (seeding ran one
                // for the enable).
                let job = spans
                    .iter()
                    .rev()
                    .find(|s| s.service == "org-server" && s.name == "job")?
                    .clone();
                let in_auth: Vec<collector::Span> = spans
                    .iter()
                    .filter(|s| s.service == "auth-under-test" && s.trace_id == job.trace_id)
                    .cloned()
                    .collect();
                // SetOrgSsoPolicy and three batches.
                (in_auth.len() >= 4).then_some((job, in_auth))
            }
        },
    )
    .await;
    let spans = collector.0.lock().expect("collector lock").clone();
    let batches: Vec<&collector::Span> = spans
        .iter()
        .filter(|s| s.name == "batch" && s.trace_id == job_span.trace_id)
        .collect();
    assert_eq!(
        batches.len(),
        3,
        "300 members in batches of 100: {batches:?}"
    );
    assert!(batches.iter().all(|b| b.parent_span_id == job_span.span_id));
    // Every Auth call's server span is a child of a span of the job.
    let job_side: Vec<&Vec<u8>> = spans
        .iter()
        .filter(|s| s.service == "org-server" && s.trace_id == job_span.trace_id)
        .map(|s| &s.span_id)
        .collect();
    for span in &auth_spans {
        assert!(
            job_side.contains(&&span.parent_span_id),
            "auth-server's span {span:?} has a parent in org-server's job"
        );
    }
    assert!(
        auth_spans
            .iter()
            .filter(|s| s.name == "/orgauth.auth.v1.AuthService/BatchUnlinkSso")
            .count()
            >= 3,
        "{auth_spans:?}"
    );
}
