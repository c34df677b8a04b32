//! `google.longrunning.Operations` on org-server: every job is also an
//! operation named `operations/{job_id}`, with the Job in `metadata`, so
//! generic LRO clients and tools follow jobs unchanged. Over real
//! processes: grpcurl through reflection, Google's own Python LRO client,
//! CancelOperation and WaitOperation against a job held RUNNING by an Auth
//! outage, and every bad input with its exact code and nothing changed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use orgauth_e2e::tools::{python_with, run, run_python_script, text, tool};
use orgauth_e2e::{
    Authed, Stack, StackOptions, authed, get_job, list_jobs, outcome, wait_until, watch_to_end,
};
use orgauth_proto::google::longrunning as lro;
use orgauth_proto::google::longrunning::operations_client::OperationsClient;
use orgauth_proto::org::v1 as pb;
use prost::Message;
use serde_json::Value;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::transport::Channel;

const JOB_TYPE_URL: &str = "type.googleapis.com/orgauth.org.v1.Job";

/// The operations client of org-server, as the holder of `secret`.
async fn operations_as(stack: &Stack, secret: &str) -> OperationsClient<Authed> {
    OperationsClient::new(authed(stack.org.channel().await, secret))
}

async fn operations(stack: &Stack) -> OperationsClient<Authed> {
    operations_as(stack, &stack.tokens.admin).await
}

fn name(job_id: &str) -> String {
    format!("operations/{job_id}")
}

/// The Job an Any carries, checking its type URL.
fn unpack(any: Option<&prost_types::Any>) -> pb::Job {
    let any = any.expect("an Any");
    assert_eq!(any.type_url, JOB_TYPE_URL);
    pb::Job::decode(any.value.as_slice()).expect("a Job")
}

fn metadata(op: &lro::Operation) -> pb::Job {
    unpack(op.metadata.as_ref())
}

async fn get_operation(ops: &mut OperationsClient<Authed>, job_id: &str) -> lro::Operation {
    ops.get_operation(lro::GetOperationRequest { name: name(job_id) })
        .await
        .unwrap_or_else(|status| panic!("GetOperation {job_id}: {status:?}"))
        .into_inner()
}

/// WaitOperation with `timeout`; the operation and how long the call took.
async fn wait_operation(
    ops: &mut OperationsClient<Authed>,
    job_id: &str,
    timeout: Option<Duration>,
) -> (lro::Operation, Duration) {
    let started = Instant::now();
    let op = ops
        .wait_operation(lro::WaitOperationRequest {
            name: name(job_id),
            timeout: timeout.map(|t| t.try_into().expect("a proto Duration")),
        })
        .await
        .unwrap_or_else(|status| panic!("WaitOperation {job_id}: {status:?}"))
        .into_inner();
    (op, started.elapsed())
}

fn list_request(
    name: &str,
    filter: &str,
    page_size: i32,
    page_token: &str,
) -> lro::ListOperationsRequest {
    lro::ListOperationsRequest {
        name: name.into(),
        filter: filter.into(),
        page_size,
        page_token: page_token.into(),
    }
}

/// The calls that take an operation's name.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Get,
    Cancel,
    Wait,
    Delete,
}

/// Calls `rpc` for the operation named `op_name` (WaitOperation without a
/// timeout), as whoever `ops` calls as; the answer is dropped.
async fn call<T>(
    ops: &mut OperationsClient<T>,
    rpc: Rpc,
    op_name: &str,
) -> Result<(), tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let name = op_name.to_owned();
    match rpc {
        Rpc::Get => ops
            .get_operation(lro::GetOperationRequest { name })
            .await
            .map(drop),
        Rpc::Cancel => ops
            .cancel_operation(lro::CancelOperationRequest { name })
            .await
            .map(drop),
        Rpc::Wait => ops
            .wait_operation(lro::WaitOperationRequest {
                name,
                timeout: None,
            })
            .await
            .map(drop),
        Rpc::Delete => ops
            .delete_operation(lro::DeleteOperationRequest { name })
            .await
            .map(drop),
    }
}

/// Every operation ListOperations returns for `filter`, following
/// next_page_token with pages of `page_size`.
async fn list_all(
    ops: &mut OperationsClient<Authed>,
    filter: &str,
    page_size: i32,
) -> Vec<lro::Operation> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1000 {
        let page = ops
            .list_operations(list_request("operations", filter, page_size, &page_token))
            .await
            .unwrap_or_else(|status| panic!("ListOperations {filter:?}: {status:?}"))
            .into_inner();
        assert!(
            page.operations.len() <= usize::try_from(page_size).expect("positive"),
            "{filter:?}: a page holds at most page_size operations"
        );
        all.extend(page.operations);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
    panic!("more than 1000 pages for {filter:?}");
}

fn names(ops: &[lro::Operation]) -> Vec<String> {
    ops.iter().map(|op| op.name.clone()).collect()
}

/// Every job in the store as the admin sees it: what a refused call must
/// leave untouched.
async fn snapshot(stack: &Stack) -> Vec<pb::Job> {
    list_jobs(&mut stack.jobs().await, "").await
}

/// A stack with `org_id` seeded with `members` linked members and Auth
/// down, where org-server retries for as long as Auth is down.
async fn stack_with_auth_down(org_id: &str, members: usize) -> Stack {
    Stack::with_auth_down("100000", org_id, members).await
}

/// With Auth down, turns custom SSO off for `org_id` and waits until the
/// job's worker has tried Auth at least once: a job that stays RUNNING
/// until Auth comes back. Returns the job id.
async fn job_held_running_by_an_auth_outage(stack: &Stack, org_id: &str) -> String {
    let job_id = stack.set_allow(org_id, false).await;
    assert!(!job_id.is_empty());
    let mut ops = operations(stack).await;
    wait_until("the job retries Auth", Duration::from_secs(30), || {
        let mut ops = ops.clone();
        let job_id = job_id.clone();
        async move {
            let op = get_operation(&mut ops, &job_id).await;
            let job = metadata(&op);
            (job.state == pb::JobState::Running as i32 && job.attempt >= 1).then_some(())
        }
    })
    .await;
    let op = get_operation(&mut ops, &job_id).await;
    assert!(!op.done, "{op:?}");
    assert!(
        op.result.is_none(),
        "a running operation has no result: {op:?}"
    );
    job_id
}

// ---------------------------------------------------------------------------
// (1) grpcurl through reflection
// ---------------------------------------------------------------------------

/// `grpcurl -plaintext [-H auth] ARGS…`: its stdout, or its stderr on failure.
async fn grpcurl(
    bin: &std::path::Path,
    stack: &Stack,
    auth: bool,
    args: &[&str],
) -> Result<String, String> {
    let mut all = vec!["-plaintext".to_owned()];
    if auth {
        all.extend([
            "-H".to_owned(),
            format!("authorization: Bearer {}", stack.tokens.admin),
        ]);
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let output = run(bin, &all, Duration::from_secs(60)).await;
    if output.status.success() {
        Ok(text(&output.stdout))
    } else {
        Err(text(&output.stderr))
    }
}

/// `grpcurl describe SYMBOL` through reflection, without a token.
async fn describe(bin: &std::path::Path, stack: &Stack, symbol: &str) -> String {
    let addr = stack.org.addr.to_string();
    grpcurl(bin, stack, false, &[&addr, "describe", symbol])
        .await
        .unwrap_or_else(|err| panic!("describe {symbol}: {err}"))
}

/// grpcurl calling `google.longrunning.Operations/{method}` with the JSON
/// `body`, as the admin.
async fn call_grpcurl(
    bin: &std::path::Path,
    stack: &Stack,
    method: &str,
    body: &str,
) -> Result<String, String> {
    let addr = stack.org.addr.to_string();
    let method = format!("google.longrunning.Operations/{method}");
    grpcurl(bin, stack, true, &["-d", body, &addr, &method]).await
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_finds_operations_through_reflection_and_reads_a_job() {
    let Some(bin) = tool("grpcurl") else {
        return;
    };
    const MEMBERS: i64 = 120;
    let stack = Stack::start().await;
    stack.seed_linked_org("acme", MEMBERS as usize).await;
    let job_id = stack.set_allow("acme", false).await;
    watch_to_end(&mut stack.jobs().await, &job_id).await;
    let addr = stack.org.addr.to_string();

    let listed = grpcurl(&bin, &stack, false, &[&addr, "list"])
        .await
        .expect("list");
    assert!(
        listed
            .lines()
            .any(|l| l.trim() == "google.longrunning.Operations"),
        "{listed}"
    );
    let described = describe(&bin, &stack, "google.longrunning.Operations").await;
    for rpc in [
        "GetOperation",
        "ListOperations",
        "CancelOperation",
        "WaitOperation",
        "DeleteOperation",
    ] {
        assert!(described.contains(&format!("rpc {rpc} (")), "{described}");
    }
    let operation = describe(&bin, &stack, "google.longrunning.Operation").await;
    for field in [
        "string name = 1;",
        ".google.protobuf.Any metadata = 2;",
        "bool done = 3;",
        ".google.rpc.Status error = 4;",
        ".google.protobuf.Any response = 5;",
    ] {
        assert!(operation.contains(field), "{field}:\n{operation}");
    }

    let body = format!(r#"{{"name": "operations/{job_id}"}}"#);
    let got = json(
        &call_grpcurl(&bin, &stack, "GetOperation", &body)
            .await
            .expect("GetOperation"),
    );
    assert_eq!(got["name"], name(&job_id), "{got}");
    assert_eq!(got["done"], true, "{got}");
    let job = &got["metadata"];
    assert_eq!(job["@type"], JOB_TYPE_URL, "{got}");
    assert_eq!(job["id"], job_id.as_str(), "{got}");
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED", "{got}");
    // int64 fields print as JSON strings.
    assert_eq!(job["processedMembers"], MEMBERS.to_string(), "{got}");
    assert_eq!(job["totalMembers"], MEMBERS.to_string(), "{got}");
    assert_eq!(got["response"]["@type"], JOB_TYPE_URL, "{got}");
    assert!(got.get("error").is_none(), "{got}");

    // A Duration in its JSON form; a finished job answers at once.
    let wait = format!(r#"{{"name": "operations/{job_id}", "timeout": "30s"}}"#);
    let started = Instant::now();
    let waited = call_grpcurl(&bin, &stack, "WaitOperation", &wait)
        .await
        .expect("WaitOperation");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let waited = json(&waited);
    assert_eq!(
        waited, got,
        "WaitOperation of a finished job is its GetOperation"
    );

    let filter = r#"{"name": "operations", "filter": "org_id = \"acme\" AND done = true"}"#;
    let listed = json(
        &call_grpcurl(&bin, &stack, "ListOperations", filter)
            .await
            .expect("ListOperations"),
    );
    let listed: Vec<&str> = listed["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|op| op["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        listed.first().copied(),
        Some(name(&job_id).as_str()),
        "newest first: {listed:?}"
    );
    assert_eq!(
        listed.len(),
        2,
        "the enable job of CreateOrg and the disable job: {listed:?}"
    );

    let refused = call_grpcurl(&bin, &stack, "DeleteOperation", &body)
        .await
        .expect_err("DeleteOperation is refused");
    assert!(refused.contains("Code: Unimplemented"), "{refused}");
    assert!(refused.contains("--job-retention"), "{refused}");
}

// ---------------------------------------------------------------------------
// (2) Google's generic Python LRO client
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_api_core_operations_client_follows_a_job_to_its_end() {
    let Some(python) = python_with(&["grpc", "grpc_tools.protoc", "google.api_core.operations_v1"])
    else {
        return;
    };
    const MEMBERS: i64 = 3_000;
    // Small sequential batches: the job is still running when the client
    // first looks, so it has something to poll.
    let stack = Stack::start_with(StackOptions {
        batch_size: 20,
        parallelism: 1,
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("py", MEMBERS as usize).await;
    let job_id = stack.set_allow("py", false).await;

    let addr = stack.org.addr.to_string();
    let (stdout, stderr) = run_python_script(
        &python,
        "tests/python/lro_client.py",
        &[
            "--endpoint",
            &addr,
            "--org",
            "py",
            "--job",
            &job_id,
            "--token",
            &stack.tokens.admin,
            "--timeout",
            "240",
        ],
        Duration::from_secs(300),
    )
    .await;
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}\n--- stderr\n{stderr}"));

    eprintln!("lro_client.py reported: {report}");
    let first = &report["first"];
    assert_eq!(first["name"], name(&job_id), "{report}");
    assert_eq!(first["metadata_type_url"], JOB_TYPE_URL, "{report}");
    assert_eq!(first["metadata"]["id"], job_id.as_str(), "{report}");

    let listed = report["listed"].as_array().expect("listed");
    assert!(
        listed.iter().all(|op| op["metadata"]["org_id"] == "py"),
        "the filter keeps only py's jobs: {report}"
    );
    assert!(
        listed.iter().any(|op| op["name"] == name(&job_id).as_str()),
        "{report}"
    );
    assert_eq!(listed.len(), 2, "CreateOrg's job and the flip: {report}");

    let last = &report["final"];
    assert_eq!(last["done"], true, "{report}");
    assert_eq!(last["result"], "response", "{report}");
    assert_eq!(last["response_type_url"], JOB_TYPE_URL, "{report}");
    let result = &report["result"];
    assert_eq!(
        result["id"],
        job_id.as_str(),
        "the response is the Job: {report}"
    );
    assert_eq!(result["state"], "JOB_STATE_SUCCEEDED", "{report}");
    assert_eq!(result["processed"], MEMBERS, "{report}");
    assert_eq!(result["total"], MEMBERS, "{report}");
    assert_eq!(result["unlinked"], MEMBERS, "{report}");
    assert_eq!(
        report["final_metadata"], *result,
        "metadata and response agree at the end: {report}"
    );
    assert_eq!(
        stack.connections("py").await,
        0,
        "Auth has no connection left"
    );
}

// ---------------------------------------------------------------------------
// (3) CancelOperation and (4) WaitOperation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_operation_ends_a_running_job_cancelled() {
    let stack = stack_with_auth_down("acme", 50).await;
    let job_id = job_held_running_by_an_auth_outage(&stack, "acme").await;
    let mut ops = operations(&stack).await;

    let unfinished = names(&list_all(&mut ops, "done = false", 10).await);
    assert_eq!(
        unfinished,
        [name(&job_id)],
        "done = false lists the running job only"
    );
    let finished = names(&list_all(&mut ops, r#"org_id = "acme" AND done = true"#, 10).await);
    assert!(!finished.contains(&name(&job_id)), "{finished:?}");
    assert_eq!(finished.len(), 1, "CreateOrg's job: {finished:?}");

    call(&mut ops, Rpc::Cancel, &name(&job_id))
        .await
        .expect("CancelOperation");
    // WaitOperation wakes when the job ends (at its worker's next stop check).
    let (op, waited) = wait_operation(&mut ops, &job_id, Some(Duration::from_secs(30))).await;
    assert!(op.done, "{op:?}");
    assert!(
        waited < Duration::from_secs(20),
        "the wait ended with the job: {waited:?}"
    );
    let got = get_operation(&mut ops, &job_id).await;
    assert_eq!(got, op, "GetOperation agrees with WaitOperation");
    match &got.result {
        Some(lro::operation::Result::Error(status)) => {
            assert_eq!(status.code, tonic::Code::Cancelled as i32, "{got:?}");
            assert_eq!(status.message, "cancelled by CancelJob", "{got:?}");
        }
        other => panic!("a cancelled operation carries an error: {other:?}"),
    }
    let job = metadata(&got);
    assert_eq!(job.state, pb::JobState::Cancelled as i32, "{job:?}");
    assert_eq!(
        job,
        get_job(&mut stack.jobs().await, &job_id).await,
        "metadata is the job"
    );

    // Cancelling again is harmless, as with CancelJob.
    call(&mut ops, Rpc::Cancel, &name(&job_id))
        .await
        .expect("CancelOperation of a cancelled job");
    assert_eq!(get_operation(&mut ops, &job_id).await, got);
    assert!(list_all(&mut ops, "done = false", 10).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_operation_returns_at_its_timeout_or_the_moment_the_job_ends() {
    const MEMBERS: i64 = 200;
    let mut stack = stack_with_auth_down("acme", MEMBERS as usize).await;
    let job_id = job_held_running_by_an_auth_outage(&stack, "acme").await;
    let mut ops = operations(&stack).await;

    // A short timeout: the current, unfinished state once it passes.
    let (op, waited) = wait_operation(&mut ops, &job_id, Some(Duration::from_millis(400))).await;
    assert!(!op.done, "{op:?}");
    assert!(op.result.is_none(), "{op:?}");
    assert_eq!(metadata(&op).state, pb::JobState::Running as i32);
    assert!(
        (Duration::from_millis(350)..Duration::from_secs(5)).contains(&waited),
        "waited {waited:?} for a 400 ms timeout"
    );
    // No timeout but a 4 s deadline on the call: answered before it (the
    // server keeps 400 ms of it for the answer's trip), not
    // DEADLINE_EXCEEDED, and not much earlier either.
    const DEADLINE: Duration = Duration::from_secs(4);
    let started = Instant::now();
    let mut request = tonic::Request::new(lro::WaitOperationRequest {
        name: name(&job_id),
        timeout: None,
    });
    request.set_timeout(DEADLINE);
    let op = ops
        .wait_operation(request)
        .await
        .expect("a wait within the call's deadline")
        .into_inner();
    assert!(!op.done, "{op:?}");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(3)..DEADLINE).contains(&waited),
        "waited {waited:?} with a {DEADLINE:?} deadline"
    );

    // A long timeout: it returns when the job ends, not when the timeout
    // passes.
    let waiter = {
        let mut ops = ops.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            wait_operation(&mut ops, &job_id, Some(Duration::from_secs(45))).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the wait holds while the job runs");
    let restarted = Instant::now();
    tokio::task::block_in_place(|| stack.auth.restart());
    let (op, _) = waiter.await.expect("wait task");
    let after_restart = restarted.elapsed();
    assert!(op.done, "{op:?}");
    assert!(
        after_restart < Duration::from_secs(30),
        "the wait ended with the job, {after_restart:?} after Auth came back"
    );
    let response = match &op.result {
        Some(lro::operation::Result::Response(any)) => unpack(Some(any)),
        other => panic!("a succeeded operation carries its response: {other:?}"),
    };
    assert_eq!(response.id, job_id);
    assert_eq!(response.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        (response.processed_members, response.total_members),
        (MEMBERS, MEMBERS)
    );
    assert_eq!(metadata(&op), response, "metadata is the same final Job");

    // A job that has ended answers at once, whatever the timeout.
    let (again, waited) = wait_operation(&mut ops, &job_id, None).await;
    assert_eq!(again, op);
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(stack.connections("acme").await, 0);
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_operations_filters_and_pages_like_list_jobs() {
    let stack = Stack::start().await;
    stack.seed_linked_org("acme", 10).await;
    stack.seed_linked_org("globex", 10).await;
    let mut jobs = stack.jobs().await;
    for allow in [false, true, false] {
        for org in ["acme", "globex"] {
            let job_id = stack.set_allow(org, allow).await;
            watch_to_end(&mut jobs, &job_id).await;
        }
    }
    let mut ops = operations(&stack).await;
    let every_job: Vec<String> = snapshot(&stack).await.iter().map(|j| name(&j.id)).collect();
    assert_eq!(every_job.len(), 8);

    for page_size in [1, 3, 1000] {
        assert_eq!(
            names(&list_all(&mut ops, "", page_size).await),
            every_job,
            "page_size {page_size}"
        );
        assert_eq!(
            names(&list_all(&mut ops, "done = true", page_size).await),
            every_job,
            "done = true, page_size {page_size}"
        );
    }
    assert!(list_all(&mut ops, "done = false", 2).await.is_empty());
    assert!(
        list_all(&mut ops, "state = RUNNING AND done = true", 2)
            .await
            .is_empty()
    );
    let acme = list_all(&mut ops, r#"org_id = "acme" AND done = true"#, 1).await;
    assert_eq!(acme.len(), 4);
    assert!(
        acme.iter()
            .all(|op| metadata(op).org_id == "acme" && op.done)
    );
    let succeeded = list_all(&mut ops, "state = SUCCEEDED", 2).await;
    assert_eq!(names(&succeeded), every_job, "every job succeeded");

    // An org token sees its orgs' operations only.
    let mut globex = operations_as(&stack, &stack.tokens.globex).await;
    let seen = list_all(&mut globex, "", 2).await;
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|op| metadata(op).org_id == "globex"));
    let seen = list_all(&mut globex, "done = true", 3).await;
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|op| metadata(op).org_id == "globex"));

    // A page token belongs to its listing.
    let first = ops
        .list_operations(list_request("", "done = true", 1, ""))
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.operations.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let other = ops
        .list_operations(list_request(
            "operations",
            "done = false",
            1,
            &first.next_page_token,
        ))
        .await;
    assert_eq!(outcome(&other), "INVALID_ARGUMENT INVALID_FIELD page_token");
}

// ---------------------------------------------------------------------------
// (5) Bad inputs: exact codes, nothing changed
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_exact_codes_and_change_nothing() {
    let stack = Stack::start().await;
    stack.seed_linked_org("acme", 20).await;
    let job_id = stack.set_allow("acme", false).await;
    watch_to_end(&mut stack.jobs().await, &job_id).await;
    let before = snapshot(&stack).await;

    let mut ops = operations(&stack).await;
    let unknown = name(&uuid::Uuid::now_v7().to_string());
    let bad_names = [
        "",
        "operations/",
        "operations/not-a-uuid",
        "jobs/x",
        "operations",
    ];
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut expect = |what: String, got: String, want: &str| {
        assert_eq!(got, want, "{what}");
        seen.push((what, got));
    };

    for bad in bad_names {
        for rpc in [Rpc::Get, Rpc::Cancel, Rpc::Wait] {
            expect(
                format!("{rpc:?}Operation {bad:?}"),
                outcome(&call(&mut ops, rpc, bad).await),
                "INVALID_ARGUMENT INVALID_FIELD name",
            );
        }
    }
    let negative = ops
        .wait_operation(lro::WaitOperationRequest {
            name: name(&job_id),
            timeout: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await;
    expect(
        "negative timeout".into(),
        outcome(&negative),
        "INVALID_ARGUMENT INVALID_FIELD timeout",
    );

    let list = list_request;
    for (request, want) in [
        (
            list("projects/p/operations", "", 0, ""),
            "INVALID_ARGUMENT INVALID_FIELD name",
        ),
        (
            list("operations", "org_id = \"acme\" OR done = true", 0, ""),
            "INVALID_ARGUMENT INVALID_FIELD filter",
        ),
        (
            list("operations", "metadata.org_id = \"acme\"", 0, ""),
            "INVALID_ARGUMENT INVALID_FIELD filter",
        ),
        (
            list("operations", "state = PAUSED", 0, ""),
            "INVALID_ARGUMENT INVALID_FIELD filter",
        ),
        (
            list("operations", "done = maybe", 0, ""),
            "INVALID_ARGUMENT INVALID_FIELD filter",
        ),
        (
            list("operations", "org_id = \"Not An Id\"", 0, ""),
            "INVALID_ARGUMENT INVALID_FIELD filter",
        ),
        (
            list("operations", "", -1, ""),
            "INVALID_ARGUMENT INVALID_FIELD page_size",
        ),
        (
            list("operations", "", 1001, ""),
            "INVALID_ARGUMENT INVALID_FIELD page_size",
        ),
        (
            list("operations", "", 0, "forged"),
            "INVALID_ARGUMENT INVALID_FIELD page_token",
        ),
    ] {
        let what = format!("ListOperations {request:?}");
        let got = ops.list_operations(request).await;
        expect(what, outcome(&got), want);
    }
    let refused = ops
        .list_operations(list(
            "operations",
            "org_id = \"acme\" OR done = true",
            0,
            "",
        ))
        .await
        .expect_err("a filter with OR");
    assert!(
        refused.message().contains("supported: org_id = \"ORG_ID\""),
        "the message lists what is supported: {}",
        refused.message()
    );

    // Unknown jobs.
    for rpc in [Rpc::Get, Rpc::Cancel, Rpc::Wait] {
        expect(
            format!("{rpc:?}Operation unknown"),
            outcome(&call(&mut ops, rpc, &unknown).await),
            "NOT_FOUND JOB_NOT_FOUND",
        );
    }

    // A finished job cannot be cancelled (as with CancelJob).
    let cancel = call(&mut ops, Rpc::Cancel, &name(&job_id)).await;
    expect(
        "CancelOperation succeeded".into(),
        outcome(&cancel),
        "FAILED_PRECONDITION JOB_ALREADY_FINISHED",
    );

    // DeleteOperation is not offered.
    let delete = call(&mut ops, Rpc::Delete, &name(&job_id)).await;
    expect(
        "DeleteOperation".into(),
        outcome(&delete),
        "UNIMPLEMENTED DELETE_NOT_SUPPORTED",
    );
    let status = delete.expect_err("refused");
    assert!(
        status.message().contains("--job-retention"),
        "{}",
        status.message()
    );

    // Another org's token: the job does not exist for it.
    let mut globex = operations_as(&stack, &stack.tokens.globex).await;
    for rpc in [Rpc::Get, Rpc::Cancel, Rpc::Wait] {
        expect(
            format!("{rpc:?}Operation as globex"),
            outcome(&call(&mut globex, rpc, &name(&job_id)).await),
            "NOT_FOUND JOB_NOT_FOUND",
        );
    }
    let listed = globex
        .list_operations(list("operations", "org_id = \"acme\"", 0, ""))
        .await;
    expect(
        "ListOperations of acme as globex".into(),
        outcome(&listed),
        "PERMISSION_DENIED ORG_ACCESS_DENIED",
    );
    assert!(
        list_all(&mut globex, "", 10).await.is_empty(),
        "globex has no jobs"
    );

    // No token, or an expired one: nothing answers.
    let bare = Channel::from_shared(stack.org.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut anonymous = OperationsClient::new(bare);
    for rpc in [Rpc::Get, Rpc::Cancel, Rpc::Wait, Rpc::Delete] {
        expect(
            format!("{rpc:?}Operation, no token"),
            outcome(&call(&mut anonymous, rpc, &name(&job_id)).await),
            "UNAUTHENTICATED TOKEN_MISSING",
        );
    }
    let listed = anonymous.list_operations(list("", "", 0, "")).await;
    expect(
        "ListOperations, no token".into(),
        outcome(&listed),
        "UNAUTHENTICATED TOKEN_MISSING",
    );
    let mut expired = operations_as(&stack, &stack.tokens.expired).await;
    expect(
        "GetOperation, expired token".into(),
        outcome(&call(&mut expired, Rpc::Get, &name(&job_id)).await),
        "UNAUTHENTICATED TOKEN_EXPIRED",
    );

    let after = snapshot(&stack).await;
    assert_eq!(after, before, "no refused call changed a job");
    let distinct: BTreeSet<&str> = seen.iter().map(|(_, got)| got.as_str()).collect();
    assert!(distinct.len() >= 7, "{seen:?}");
}
