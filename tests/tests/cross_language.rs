//! The servers are usable without any Rust: grpcurl finds and calls every
//! RPC through server reflection alone, and a Python client generated from
//! `proto/` at run time turns custom SSO off and watches the job.
//!
//! The tools come from `$ORGAUTH_TOOLS_BIN` (scripts/test.sh installs grpcurl
//! and grpcio into a virtualenv there) or from PATH. When one is missing a
//! test is skipped, unless `CI` is set: CI must run them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use orgauth_e2e::tools::{python_with_grpc, run, run_python_script, text, tool, workspace_root};
use orgauth_e2e::{Stack, member_id};
use serde_json::{Value, json};

/// How long one grpcurl invocation may take.
const GRPCURL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the Python client may take, protoc and the whole job included.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(300);

/// Every service and RPC the .proto files declare, as
/// `(full service name, [(rpc name, first line of its doc comment)])`.
fn declared_services() -> Vec<(String, Vec<(String, String)>)> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![workspace_root().join("proto/orgauth")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read proto dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                files.push(path);
            }
        }
    }
    files.sort();

    let mut services = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read proto");
        let mut package = String::new();
        let mut comment: Vec<String> = Vec::new();
        for line in source.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("package ") {
                package = name.trim_end_matches(';').trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("service ") {
                let name = rest.trim_end_matches('{').trim();
                services.push((format!("{package}.{name}"), Vec::new()));
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let name = rest.split('(').next().unwrap_or_default().trim().to_owned();
                let doc = comment.first().cloned().unwrap_or_default();
                services
                    .last_mut()
                    .expect("rpc inside a service")
                    .1
                    .push((name, doc));
            }
            match line.strip_prefix("//") {
                Some(text) => comment.push(text.trim().to_owned()),
                None => comment.clear(),
            }
        }
    }
    assert!(!services.is_empty(), "no services found under proto/");
    services
}

/// grpcurl against one stack, recording which methods it called.
struct Grpcurl {
    bin: PathBuf,
    /// The bearer token to send to each server.
    tokens: Vec<(SocketAddr, String)>,
    called: Mutex<BTreeSet<String>>,
}

/// A failed call: grpcurl's exit code (64 + the gRPC code for an RPC error)
/// and its stderr (`ERROR:\n  Code: NotFound\n  Message: …`).
#[derive(Debug)]
struct CallError {
    exit_code: Option<i32>,
    stderr: String,
}

impl Grpcurl {
    /// Calls org-server as the admin and auth-server as the service
    /// identity (the only one allowed to call SetOrgSsoPolicy and
    /// BatchUnlinkSso).
    fn new(bin: PathBuf, stack: &Stack) -> Grpcurl {
        Grpcurl {
            bin,
            tokens: vec![
                (stack.org.addr, stack.tokens.admin.clone()),
                (stack.auth.addr, stack.tokens.service.clone()),
            ],
            called: Mutex::new(BTreeSet::new()),
        }
    }

    fn authorization(&self, addr: SocketAddr) -> String {
        let token = self
            .tokens
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, token)| token.as_str())
            .unwrap_or_default();
        format!("authorization: Bearer {token}")
    }

    /// `grpcurl -plaintext ARGS…`; panics unless it succeeds; returns stdout.
    async fn plain(&self, addr: SocketAddr, args: &[&str]) -> String {
        let mut all = vec!["-plaintext".to_owned(), addr.to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let output = run(&self.bin, &all, GRPCURL_TIMEOUT).await;
        assert!(
            output.status.success(),
            "grpcurl {all:?} failed ({}):\n{}",
            output.status,
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// `grpcurl -plaintext -d BODY ADDR METHOD`: every message grpcurl
    /// printed, or the error it reported.
    async fn try_call(
        &self,
        addr: SocketAddr,
        method: &str,
        body: &Value,
    ) -> Result<Vec<Value>, CallError> {
        self.called.lock().expect("lock").insert(method.to_owned());
        let args = vec![
            "-plaintext".to_owned(),
            "-H".to_owned(),
            self.authorization(addr),
            "-d".to_owned(),
            body.to_string(),
            addr.to_string(),
            method.to_owned(),
        ];
        let output = run(&self.bin, &args, GRPCURL_TIMEOUT).await;
        if !output.status.success() {
            return Err(CallError {
                exit_code: output.status.code(),
                stderr: text(&output.stderr),
            });
        }
        // One pretty-printed JSON object per response message, back to back.
        let stdout = text(&output.stdout);
        let messages = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|err| panic!("{method}: grpcurl printed no JSON ({err}):\n{stdout}"));
        Ok(messages)
    }

    /// A unary call that must succeed; its response.
    async fn call(&self, addr: SocketAddr, method: &str, body: Value) -> Value {
        let mut messages = self
            .try_call(addr, method, &body)
            .await
            .unwrap_or_else(|err| panic!("{method} {body}: {err:?}"));
        assert_eq!(
            messages.len(),
            1,
            "{method}: one response, got {messages:?}"
        );
        messages.remove(0)
    }

    /// A call that must fail with `code` (as grpcurl spells it, e.g.
    /// "FailedPrecondition").
    async fn call_fails(&self, addr: SocketAddr, method: &str, body: Value, code: &str) {
        let err = self
            .try_call(addr, method, &body)
            .await
            .expect_err(&format!("{method} {body} must fail with {code}"));
        assert!(
            err.stderr.contains(&format!("Code: {code}")),
            "{method}: expected Code: {code}, got:\n{}",
            err.stderr
        );
        assert_ne!(err.exit_code, Some(0));
    }

    fn called(&self) -> BTreeSet<String> {
        self.called.lock().expect("lock").clone()
    }
}

/// An int64 field as grpcurl prints it: a JSON string, absent when 0.
fn int(value: &Value) -> i64 {
    match value {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().expect("integer"),
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("not an integer: {s:?}")),
        other => panic!("not an integer: {other}"),
    }
}

/// A bool field as grpcurl prints it: absent when false.
fn flag(value: &Value) -> bool {
    value.as_bool().unwrap_or(false)
}

fn string(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_every_service_through_reflection() {
    let Some(grpcurl) = tool("grpcurl") else {
        return;
    };
    let stack = Stack::start().await;
    let grpcurl = Grpcurl::new(grpcurl, &stack);

    for (service, rpcs) in declared_services() {
        let addr = if service.starts_with("orgauth.auth.") {
            stack.auth.addr
        } else {
            stack.org.addr
        };
        let listed = grpcurl.plain(addr, &["list"]).await;
        let listed: BTreeSet<&str> = listed.lines().map(str::trim).collect();
        assert!(
            listed.contains(service.as_str()),
            "{service} listed at {addr}: {listed:?}"
        );
        assert!(
            listed.contains("grpc.health.v1.Health"),
            "health listed at {addr}: {listed:?}"
        );

        // Every RPC with its doc comment, and its input and output types.
        let described = grpcurl.plain(addr, &["describe", &service]).await;
        assert!(
            described.contains(&format!("{service} is a service:")),
            "{described}"
        );
        for (rpc, doc) in &rpcs {
            assert!(
                described.contains(&format!("rpc {rpc} (")),
                "{service}.{rpc} described:\n{described}"
            );
            assert!(
                !doc.is_empty(),
                "{service}.{rpc} has a doc comment in its .proto"
            );
            assert!(
                described.contains(&format!("// {doc}")),
                "{service}.{rpc}'s doc comment {doc:?} comes through reflection:\n{described}"
            );
        }
        let listed_methods = grpcurl.plain(addr, &["list", &service]).await;
        assert_eq!(
            listed_methods.lines().count(),
            rpcs.len(),
            "{listed_methods}"
        );
    }

    let jobs = grpcurl
        .plain(stack.org.addr, &["describe", "orgauth.org.v1.JobService"])
        .await;
    assert!(
        jobs.contains(
            "rpc WatchJob ( .orgauth.org.v1.WatchJobRequest ) returns ( stream .orgauth.org.v1.WatchJobResponse );"
        ),
        "WatchJob is server-streaming:\n{jobs}"
    );
    let watch_request = grpcurl
        .plain(
            stack.org.addr,
            &["describe", "orgauth.org.v1.WatchJobRequest"],
        )
        .await;
    assert!(
        watch_request.contains("int64 since_version = 2;"),
        "{watch_request}"
    );

    let update = grpcurl
        .plain(
            stack.org.addr,
            &["describe", "orgauth.org.v1.UpdateOrgRequest"],
        )
        .await;
    assert!(
        update.contains(".google.protobuf.FieldMask update_mask = 2;"),
        "{update}"
    );
    assert!(
        update.contains("// The fields to change"),
        "field docs come through:\n{update}"
    );
    // The well-known types the protos import are served too.
    let mask = grpcurl
        .plain(stack.org.addr, &["describe", "google.protobuf.FieldMask"])
        .await;
    assert!(mask.contains("repeated string paths = 1;"), "{mask}");
    let state = grpcurl
        .plain(stack.org.addr, &["describe", "orgauth.org.v1.JobState"])
        .await;
    assert!(state.contains("JOB_STATE_SUCCEEDED = 3;"), "{state}");

    let unlink = grpcurl
        .plain(
            stack.auth.addr,
            &["describe", "orgauth.auth.v1.UnlinkResult"],
        )
        .await;
    assert!(
        unlink.contains(".orgauth.auth.v1.UnlinkOutcome outcome = 2;"),
        "{unlink}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_calls_every_rpc() {
    let Some(grpcurl) = tool("grpcurl") else {
        return;
    };
    let stack = Stack::start().await;
    let g = Grpcurl::new(grpcurl, &stack);
    let (org, auth) = (stack.org.addr, stack.auth.addr);

    for addr in [org, auth] {
        let health = g.call(addr, "grpc.health.v1.Health/Check", json!({})).await;
        assert_eq!(health["status"], "SERVING", "{addr}: {health}");
    }

    // --- OrgService ---------------------------------------------------------
    let created = g
        .call(
            org,
            "orgauth.org.v1.OrgService/CreateOrg",
            json!({"org": {"id": "acme", "display_name": "Acme", "allow_custom_sso": true}}),
        )
        .await;
    assert_eq!(created["org"]["id"], "acme", "{created}");
    assert_eq!(created["org"]["displayName"], "Acme", "{created}");
    assert!(flag(&created["org"]["allowCustomSso"]), "{created}");
    let enable_job = string(&created["jobId"]).to_owned();
    assert!(
        !enable_job.is_empty(),
        "creating an org that allows custom SSO returns a job: {created}"
    );

    // WatchJob streams until the job ends; grpcurl prints every message.
    let states = g
        .try_call(
            org,
            "orgauth.org.v1.JobService/WatchJob",
            &json!({"job_id": enable_job}),
        )
        .await
        .expect("watch enable job");
    let last = &states.last().expect("at least one state")["job"];
    assert_eq!(last["state"], "JOB_STATE_SUCCEEDED", "{states:?}");
    assert_eq!(last["kind"], "JOB_KIND_ENABLE_CUSTOM_SSO", "{last}");

    let got = g
        .call(
            org,
            "orgauth.org.v1.OrgService/GetOrg",
            json!({"org_id": "acme"}),
        )
        .await;
    assert_eq!(got["org"]["id"], "acme", "{got}");
    assert!(!string(&got["org"]["etag"]).is_empty(), "{got}");

    g.call(
        org,
        "orgauth.org.v1.OrgService/CreateOrg",
        json!({"org": {"id": "bravo", "display_name": "Bravo"}}),
    )
    .await;
    let first_page = g
        .call(
            org,
            "orgauth.org.v1.OrgService/ListOrgs",
            json!({"page_size": 1}),
        )
        .await;
    assert_eq!(
        first_page["orgs"][0]["id"], "acme",
        "orgs in id order: {first_page}"
    );
    let token = string(&first_page["nextPageToken"]).to_owned();
    assert!(!token.is_empty(), "{first_page}");
    let second_page = g
        .call(
            org,
            "orgauth.org.v1.OrgService/ListOrgs",
            json!({"page_size": 1, "page_token": token}),
        )
        .await;
    assert_eq!(second_page["orgs"][0]["id"], "bravo", "{second_page}");

    let added_ids: Vec<String> = (0..30).map(member_id).collect();
    let members: Vec<Value> = added_ids
        .iter()
        .map(|id| json!({"id": id, "email": format!("{id}@example.com")}))
        .collect();
    let added = g
        .call(
            org,
            "orgauth.org.v1.OrgService/AddMembers",
            json!({"org_id": "acme", "members": members}),
        )
        .await;
    assert_eq!(added["added"], 30, "{added}");
    let removed = g
        .call(
            org,
            "orgauth.org.v1.OrgService/RemoveMembers",
            json!({"org_id": "acme", "member_ids": [member_id(28), member_id(29), "nobody"]}),
        )
        .await;
    assert_eq!(
        removed["removed"], 2,
        "unknown ids are not counted: {removed}"
    );

    // Page through the members, following next_page_token.
    let mut listed: Vec<String> = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = g
            .call(
                org,
                "orgauth.org.v1.OrgService/ListMembers",
                json!({"org_id": "acme", "page_size": 12, "page_token": token}),
            )
            .await;
        for member in page["members"].as_array().expect("members") {
            listed.push(string(&member["id"]).to_owned());
            assert!(
                string(&member["email"]).ends_with("@example.com"),
                "{member}"
            );
        }
        token = string(&page["nextPageToken"]).to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        listed,
        added_ids[..28],
        "28 members in id order over 3 pages"
    );

    // --- AuthService, on an org only Auth knows -----------------------------
    let policy = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/GetOrgSsoPolicy",
            json!({"org_id": "side"}),
        )
        .await;
    assert!(
        !flag(&policy["policy"]["allowCustomSso"]),
        "unknown org: safe default: {policy}"
    );
    let set = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/SetOrgSsoPolicy",
            json!({"org_id": "side", "allow_custom_sso": true}),
        )
        .await;
    assert!(flag(&set["policy"]["allowCustomSso"]), "{set}");
    let linked = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/LinkSso",
            json!({"org_id": "side", "member_ids": ["a", "b", "c"]}),
        )
        .await;
    assert_eq!(linked["linked"], 3, "{linked}");
    let connections = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/ListSsoConnections",
            json!({"org_id": "side", "page_size": 2}),
        )
        .await;
    assert_eq!(int(&connections["totalSize"]), 3, "{connections}");
    assert_eq!(
        connections["connections"][0]["memberId"], "a",
        "{connections}"
    );
    assert_eq!(
        connections["connections"].as_array().map(Vec::len),
        Some(2),
        "{connections}"
    );
    assert!(
        !string(&connections["nextPageToken"]).is_empty(),
        "{connections}"
    );
    let check = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/CheckSsoLogin",
            json!({"org_id": "side", "member_id": "a"}),
        )
        .await;
    assert!(flag(&check["allowed"]), "{check}");
    let unlinked = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/BatchUnlinkSso",
            json!({"org_id": "side", "member_ids": ["a", "zz"]}),
        )
        .await;
    assert_eq!(
        unlinked["results"],
        json!([
            {"memberId": "a", "outcome": "UNLINK_OUTCOME_UNLINKED"},
            {"memberId": "zz", "outcome": "UNLINK_OUTCOME_NOT_LINKED"},
        ]),
        "{unlinked}"
    );
    let check = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/CheckSsoLogin",
            json!({"org_id": "side", "member_id": "a"}),
        )
        .await;
    assert_eq!(
        (flag(&check["allowed"]), string(&check["reason"])),
        (false, "NOT_LINKED"),
        "{check}"
    );
    g.call(
        auth,
        "orgauth.auth.v1.AuthService/SetOrgSsoPolicy",
        json!({"org_id": "side", "allow_custom_sso": false}),
    )
    .await;
    g.call_fails(
        auth,
        "orgauth.auth.v1.AuthService/LinkSso",
        json!({"org_id": "side", "member_ids": ["d"]}),
        "FailedPrecondition",
    )
    .await;
    let check = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/CheckSsoLogin",
            json!({"org_id": "side", "member_id": "b"}),
        )
        .await;
    assert_eq!(
        (flag(&check["allowed"]), string(&check["reason"])),
        (false, "POLICY_DISALLOWS_CUSTOM_SSO"),
        "{check}"
    );

    // --- The flip: link acme's members, turn custom SSO off, watch ----------
    let policy = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/GetOrgSsoPolicy",
            json!({"org_id": "acme"}),
        )
        .await;
    assert!(
        flag(&policy["policy"]["allowCustomSso"]),
        "the create job set it: {policy}"
    );
    let linked = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/LinkSso",
            json!({"org_id": "acme", "member_ids": &added_ids[..28]}),
        )
        .await;
    assert_eq!(linked["linked"], 28, "{linked}");

    // grpcurl 1.8.6 reads a google.protobuf.FieldMask only in its message
    // form, {"paths": [...]}; the canonical proto3 JSON string form
    // ("allow_custom_sso") is rejected before any request is sent.
    let updated = g
        .call(
            org,
            "orgauth.org.v1.OrgService/UpdateOrg",
            json!({
                "org": {"id": "acme", "allow_custom_sso": false},
                "update_mask": {"paths": ["allow_custom_sso"]},
            }),
        )
        .await;
    assert!(!flag(&updated["org"]["allowCustomSso"]), "{updated}");
    assert_eq!(
        updated["org"]["displayName"], "Acme",
        "only masked fields change: {updated}"
    );
    let job_id = string(&updated["jobId"]).to_owned();
    assert!(!job_id.is_empty(), "{updated}");

    let states = g
        .try_call(
            org,
            "orgauth.org.v1.JobService/WatchJob",
            &json!({"job_id": job_id}),
        )
        .await
        .expect("WatchJob ends OK after the terminal state");
    let jobs: Vec<&Value> = states.iter().map(|message| &message["job"]).collect();
    for pair in jobs.windows(2) {
        assert!(
            int(&pair[0]["version"]) < int(&pair[1]["version"]),
            "versions increase: {jobs:?}"
        );
        assert!(
            int(&pair[0]["processedMembers"]) <= int(&pair[1]["processedMembers"]),
            "progress never goes back: {jobs:?}"
        );
    }
    let last = *jobs.last().expect("at least one state");
    assert_eq!(last["state"], "JOB_STATE_SUCCEEDED", "{last}");
    assert_eq!(last["kind"], "JOB_KIND_DISABLE_CUSTOM_SSO", "{last}");
    assert_eq!(int(&last["processedMembers"]), 28, "{last}");
    assert_eq!(int(&last["totalMembers"]), 28, "{last}");
    assert_eq!(int(&last["unlinkedMembers"]), 28, "{last}");

    // --- JobService ---------------------------------------------------------
    let got = g
        .call(
            org,
            "orgauth.org.v1.JobService/GetJob",
            json!({"job_id": job_id}),
        )
        .await;
    assert_eq!(
        &got["job"], last,
        "GetJob agrees with the last watched state"
    );
    let listed = g
        .call(
            org,
            "orgauth.org.v1.JobService/ListJobs",
            json!({"org_id": "acme"}),
        )
        .await;
    let listed_ids: Vec<&str> = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| string(&job["id"]))
        .collect();
    assert_eq!(
        listed_ids,
        [job_id.as_str(), enable_job.as_str()],
        "newest first: {listed}"
    );
    let running = g
        .call(
            org,
            "orgauth.org.v1.JobService/ListJobs",
            json!({"org_id": "acme", "state": "JOB_STATE_RUNNING"}),
        )
        .await;
    assert!(
        running.get("jobs").is_none_or(|jobs| jobs == &json!([])),
        "{running}"
    );
    let failures = g
        .call(
            org,
            "orgauth.org.v1.JobService/ListJobFailures",
            json!({"job_id": job_id, "page_size": 10}),
        )
        .await;
    assert!(
        failures.get("failures").is_none_or(|f| f == &json!([])),
        "{failures}"
    );
    g.call_fails(
        org,
        "orgauth.org.v1.JobService/CancelJob",
        json!({"job_id": job_id}),
        "FailedPrecondition",
    )
    .await;

    // --- Auth mirrors the org -----------------------------------------------
    let connections = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/ListSsoConnections",
            json!({"org_id": "acme"}),
        )
        .await;
    assert_eq!(int(&connections["totalSize"]), 0, "{connections}");
    let policy = g
        .call(
            auth,
            "orgauth.auth.v1.AuthService/GetOrgSsoPolicy",
            json!({"org_id": "acme"}),
        )
        .await;
    assert!(!flag(&policy["policy"]["allowCustomSso"]), "{policy}");

    // Every RPC the protos declare went through grpcurl.
    let declared: BTreeSet<String> = declared_services()
        .into_iter()
        .flat_map(|(service, rpcs)| {
            rpcs.into_iter()
                .map(move |(rpc, _)| format!("{service}/{rpc}"))
        })
        .collect();
    let called = g.called();
    let missed: Vec<&String> = declared.difference(&called).collect();
    assert!(
        missed.is_empty(),
        "RPCs not exercised through grpcurl: {missed:?}"
    );
}

/// One line the Python client prints per WatchJob message.
#[derive(Debug)]
struct PyState {
    version: i64,
    state: String,
    processed: i64,
    total: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_generated_from_the_protos_flips_and_watches() {
    let Some(python) = python_with_grpc() else {
        return;
    };
    const MEMBERS: i64 = 2_000;
    let stack = Stack::start().await;
    stack.seed_linked_org("py", MEMBERS as usize).await;
    assert_eq!(stack.connections("py").await, MEMBERS);

    let timeout = (PYTHON_TIMEOUT.as_secs() - 10).to_string();
    let endpoint = stack.org.addr.to_string();
    let (stdout, stderr) = run_python_script(
        &python,
        "client/python/flip_and_watch.py",
        &[
            "--endpoint",
            &endpoint,
            "--org",
            "py",
            "--token",
            &stack.tokens.admin,
            "--timeout",
            &timeout,
        ],
        PYTHON_TIMEOUT,
    )
    .await;

    let states: Vec<PyState> = stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"));
            PyState {
                version: v["version"].as_i64().expect("version"),
                state: v["state"].as_str().expect("state").to_owned(),
                processed: v["processed"].as_i64().expect("processed"),
                total: v["total"].as_i64().expect("total"),
            }
        })
        .collect();
    for pair in states.windows(2) {
        assert!(
            pair[0].version < pair[1].version,
            "versions increase: {states:?}"
        );
        assert!(
            pair[0].processed <= pair[1].processed,
            "processed never decreases: {states:?}"
        );
    }
    let last = states
        .last()
        .unwrap_or_else(|| panic!("no state printed; stderr:\n{stderr}"));
    assert_eq!(last.state, "JOB_STATE_SUCCEEDED", "{states:?}");
    assert_eq!(
        (last.processed, last.total),
        (MEMBERS, MEMBERS),
        "{states:?}"
    );
    assert!(
        states.iter().all(|s| s.state.starts_with("JOB_STATE_")),
        "enum names, not numbers: {states:?}"
    );

    assert_eq!(
        stack.connections("py").await,
        0,
        "Auth has no connection left"
    );
    let org = stack
        .orgs()
        .await
        .get_org(orgauth_proto::org::v1::GetOrgRequest {
            org_id: "py".into(),
        })
        .await
        .expect("get org")
        .into_inner()
        .org
        .expect("org");
    assert!(!org.allow_custom_sso);
}
