//! org-server's JSON gateway and gRPC-Web, through real clients over
//! HTTP/1.1 on the gRPC port: the `curl` binary (JSON Patch, GET,
//! Server-Sent Events) and `buf curl --protocol grpcweb`.
//!
//! Every refused request is checked for its exact status and reason, and
//! for having changed nothing: the org, its jobs, Auth's policy and
//! connections are compared before and after.
//!
//! Without curl (or buf, which scripts/test.sh installs) a test is skipped
//! with the reason printed, unless `CI` is set: then it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use orgauth_e2e::tools::{run, text, tool, workspace_root};
use orgauth_e2e::{Stack, StackOptions, authed, error_reason, list_org_jobs};
use orgauth_proto::org::v1 as pb;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long following a job to its end may take.
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);
const PATCH_JSON: &str = "application/json-patch+json";
/// A patch that turns custom SSO on.
const ENABLE: &str = r#"{"op": "replace", "path": "/allow_custom_sso", "value": true}"#;

/// A response as curl saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.body))
    }

    /// The error reason, or "" for a success.
    fn reason(&self) -> String {
        self.json()["error"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// One request for [`Curl::send`].
#[derive(Debug, Clone, Default)]
struct Request<'a> {
    method: &'a str,
    path: String,
    token: Option<&'a str>,
    /// `None`: no Content-Type at all.
    content_type: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: Option<String>,
}

impl<'a> Request<'a> {
    fn get(path: impl Into<String>, token: &'a str) -> Self {
        Request {
            method: "GET",
            path: path.into(),
            token: Some(token),
            ..Default::default()
        }
    }

    fn patch(path: impl Into<String>, token: &'a str, body: impl Into<String>) -> Self {
        Request {
            method: "PATCH",
            path: path.into(),
            token: Some(token),
            content_type: Some(PATCH_JSON),
            body: Some(body.into()),
            ..Default::default()
        }
    }

    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The curl binary aimed at one org-server, over HTTP/1.1.
struct Curl {
    bin: PathBuf,
    base: String,
}

impl Curl {
    /// `None` (the test is skipped) when curl is not installed.
    fn new(stack: &Stack) -> Option<Curl> {
        Some(Curl {
            bin: tool("curl")?,
            base: stack.org.endpoint(),
        })
    }

    fn args(&self, request: &Request<'_>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--silent".into(),
            "--show-error".into(),
            "--http1.1".into(),
            "--request".into(),
            request.method.into(),
            // Never wait for a 100 Continue before sending a body.
            "--header".into(),
            "Expect:".into(),
            // curl adds a form Content-Type to any body unless told; a bare
            // "Content-Type:" removes it.
            "--header".into(),
            match request.content_type {
                Some(media_type) => format!("Content-Type: {media_type}"),
                None => "Content-Type:".into(),
            },
        ];
        if let Some(token) = request.token {
            args.extend(["--header".into(), format!("Authorization: Bearer {token}")]);
        }
        for (name, value) in &request.headers {
            args.extend(["--header".into(), format!("{name}: {value}")]);
        }
        if let Some(body) = &request.body {
            args.extend(["--data-binary".into(), body.clone()]);
        }
        args.push(format!("{}{}", self.base, request.path));
        args
    }

    async fn send(&self, request: Request<'_>) -> Reply {
        self.send_within(request, REQUEST_TIMEOUT).await
    }

    /// Sends `request` and checks the reply's status.
    async fn expect(&self, request: Request<'_>, status: u16) -> Reply {
        let reply = self.send(request).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        reply
    }

    /// A PATCH of org `acme` that must enqueue a job: the job's id.
    async fn job_of_patch(&self, token: &str, body: &str) -> String {
        let reply = self
            .expect(Request::patch("/v1/orgs/acme", token, body), 202)
            .await;
        reply.json()["job_id"].as_str().expect("job_id").to_owned()
    }

    /// Sends `request`, which must be refused with `status` and `reason`
    /// (and, for a 401, a Bearer challenge); the reply.
    async fn refused(&self, what: &str, request: Request<'_>, status: u16, reason: &str) -> Reply {
        let reply = self.send(request).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (status, reason),
            "{what}: {}",
            reply.body
        );
        if status == 401 {
            assert!(
                reply
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{what}: {:?}",
                reply.headers
            );
        }
        reply
    }

    async fn send_within(&self, request: Request<'_>, timeout: Duration) -> Reply {
        let mut args = self.args(&request);
        args.insert(0, "--include".into());
        let output = run(&self.bin, &args, timeout).await;
        assert!(
            output.status.success(),
            "curl {args:?} failed: {}",
            text(&output.stderr)
        );
        parse_reply(&text(&output.stdout))
    }

    /// Opens an event stream that is read as it comes (`curl --no-buffer`).
    fn stream(&self, request: Request<'_>) -> EventStream {
        let mut args = self.args(&request);
        args.insert(0, "--no-buffer".into());
        let mut child = tokio::process::Command::new(&self.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn curl");
        let stdout = child.stdout.take().expect("piped stdout");
        EventStream {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }
}

/// `curl --include` output: the status line, headers, a blank line, the body.
fn parse_reply(raw: &str) -> Reply {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block in {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Event {
    id: Option<i64>,
    event: String,
    data: Value,
}

/// Parses a complete event stream (comments, such as keep-alives, skipped).
fn parse_events(body: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut block = Vec::new();
    for line in body.lines().chain([""]) {
        if line.is_empty() {
            if let Some(event) = event_of(&block) {
                events.push(event);
            }
            block.clear();
        } else {
            block.push(line.to_owned());
        }
    }
    events
}

fn event_of(lines: &[String]) -> Option<Event> {
    let mut id = None;
    let mut event = String::new();
    let mut data = Vec::new();
    for line in lines {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse().expect("event ids are job versions")),
            "event" => event = value.to_owned(),
            "data" => data.push(value.to_owned()),
            other => panic!("unexpected SSE field {other:?}"),
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data.join("\n")).expect("event data is JSON");
    Some(Event { id, event, data })
}

/// An event stream read as it arrives.
struct EventStream {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl EventStream {
    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        let mut block = Vec::new();
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read curl") {
                if line.is_empty() {
                    if let Some(event) = event_of(&block) {
                        return Some(event);
                    }
                    block.clear();
                } else {
                    block.push(line);
                }
            }
            event_of(&block)
        };
        tokio::time::timeout(WATCH_TIMEOUT, read)
            .await
            .expect("no event within the watch timeout")
    }

    /// Every event until the stream ends; curl must then exit cleanly.
    async fn rest(mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        let status = self.child.wait().await.expect("wait for curl");
        assert!(status.success(), "curl ended with {status}");
        events
    }
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    org: pb::Org,
    jobs: Vec<pb::Job>,
    policy: bool,
    connections: i64,
}

async fn snapshot(stack: &Stack, org_id: &str) -> Snapshot {
    Snapshot {
        org: stack.get_org(org_id).await,
        jobs: list_org_jobs(&mut stack.jobs().await, org_id).await,
        policy: stack.sso_policy(org_id).await,
        connections: stack.connections(org_id).await,
    }
}

/// Each event's id and job state.
fn states(events: &[Event]) -> Vec<(Option<i64>, String)> {
    events
        .iter()
        .map(|e| (e.id, e.data["state"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Follows a job's events until the stream ends and checks what any watch
/// must show: `job` events only, ids increasing and equal to the versions,
/// progress never going back, and a terminal state last.
async fn follow(curl: &Curl, token: &str, job_id: &str) -> Vec<Event> {
    let reply = curl
        .send_within(
            Request::get(format!("/v1/jobs/{job_id}/events"), token),
            WATCH_TIMEOUT,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = parse_events(&reply.body);
    assert!(!events.is_empty(), "no events: {:?}", reply.body);
    for event in &events {
        assert_eq!(event.event, "job", "{event:?}");
        assert_eq!(event.data["id"], job_id);
        assert_eq!(event.id, event.data["version"].as_i64());
    }
    for pair in events.windows(2) {
        assert!(pair[0].id < pair[1].id, "ids must increase: {pair:?}");
        assert!(
            pair[0].data["processed_members"].as_i64()
                <= pair[1].data["processed_members"].as_i64(),
            "progress went back: {pair:?}"
        );
    }
    let last = &events[events.len() - 1].data;
    assert!(
        ["SUCCEEDED", "FAILED", "CANCELLED"].contains(&last["state"].as_str().unwrap_or("")),
        "the stream ended before a terminal state: {last}"
    );
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_flip_the_setting_and_the_events_follow_the_job_to_its_end() {
    const MEMBERS: i64 = 1000;
    let stack = Stack::start_with(StackOptions {
        // Several batches, so the events show progress.
        batch_size: 100,
        ..Default::default()
    })
    .await;
    let Some(curl) = Curl::new(&stack) else {
        return;
    };
    let admin = stack.tokens.admin.as_str();
    stack.seed_linked_org("acme", MEMBERS as usize).await;
    assert_eq!(stack.connections("acme").await, MEMBERS);
    let jobs_before = list_org_jobs(&mut stack.jobs().await, "acme").await.len();

    // The seed article's body: one operation object, no array.
    let flip = r#"{"op": "replace", "path": "/allow-custom-sso", "value": false}"#;
    let first = curl
        .expect(
            Request::patch("/v1/orgs/acme", admin, flip).header("Idempotency-Key", "flip-1"),
            202,
        )
        .await;
    let body = first.json();
    let job_id = body["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(
        first.header("location"),
        Some(format!("/v1/jobs/{job_id}").as_str())
    );
    assert_eq!(body["org"]["allow_custom_sso"], false);
    assert_eq!(first.header("content-type"), Some("application/json"));

    // A retry with the same key is answered with the first response.
    let retried = curl
        .expect(
            Request::patch("/v1/orgs/acme", admin, flip).header("Idempotency-Key", "flip-1"),
            202,
        )
        .await;
    assert_eq!(retried.json()["job_id"], job_id.as_str());
    assert_eq!(
        list_org_jobs(&mut stack.jobs().await, "acme").await.len(),
        jobs_before + 1,
        "a retried PATCH must not enqueue a second job"
    );

    let events = follow(&curl, admin, &job_id).await;
    let last = &events[events.len() - 1].data;
    assert_eq!(last["state"], "SUCCEEDED", "{last}");
    assert_eq!(last["kind"], "DISABLE_CUSTOM_SSO");
    assert_eq!(last["total_members"], MEMBERS);
    assert_eq!(last["processed_members"], MEMBERS);
    assert_eq!(last["unlinked_members"], MEMBERS);
    assert_eq!(stack.connections("acme").await, 0);
    assert!(!stack.sso_policy("acme").await);
    let job = curl
        .expect(Request::get(format!("/v1/jobs/{job_id}"), admin), 200)
        .await;
    assert_eq!(job.json(), *last, "GET agrees with the last event");

    // The same key for a different change is refused, naming the header.
    let before = snapshot(&stack, "acme").await;
    let reused = curl
        .expect(
            Request::patch(
                "/v1/orgs/acme",
                admin,
                r#"[{"op": "replace", "path": "/display_name", "value": "Other"}]"#,
            )
            .header("Idempotency-Key", "flip-1"),
            400,
        )
        .await;
    assert_eq!(reused.json()["error"]["field"], "Idempotency-Key");
    assert_eq!(snapshot(&stack, "acme").await, before);

    // The array form, conditional on what was read: turn it back on and
    // rename in one update.
    let etag = curl.send(Request::get("/v1/orgs/acme", admin)).await.json()["etag"]
        .as_str()
        .expect("etag")
        .to_owned();
    let both = json!([
        {"op": "test", "path": "/etag", "value": etag},
        {"op": "test", "path": "/allow_custom_sso", "value": false},
        {"op": "replace", "path": "/allow_custom_sso", "value": true},
        {"op": "replace", "path": "/display-name", "value": "Acme Renamed"},
    ]);
    let second = curl
        .expect(
            Request::patch("/v1/orgs/acme", admin, both.to_string()),
            202,
        )
        .await;
    let body = second.json();
    let enable_job = body["job_id"].as_str().expect("job_id").to_owned();
    assert_ne!(enable_job, job_id);
    assert_eq!(
        second.header("location"),
        Some(format!("/v1/jobs/{enable_job}").as_str())
    );
    assert_eq!(body["org"]["allow_custom_sso"], true);
    assert_eq!(body["org"]["display_name"], "Acme Renamed");
    let events = follow(&curl, admin, &enable_job).await;
    assert_eq!(events[events.len() - 1].data["state"], "SUCCEEDED");
    assert!(stack.sso_policy("acme").await);

    // A rename, sent as plain JSON, needs no job: 200 and no Location.
    let jobs = list_org_jobs(&mut stack.jobs().await, "acme").await.len();
    let mut rename = Request::patch(
        "/v1/orgs/acme",
        admin,
        r#"{"op": "replace", "path": "/display_name", "value": "Acme Again"}"#,
    );
    rename.content_type = Some("application/json; charset=utf-8");
    let renamed = curl.expect(rename, 200).await;
    assert_eq!(renamed.header("location"), None);
    let body = renamed.json();
    assert_eq!(body["org"]["display_name"], "Acme Again");
    assert!(body.get("job_id").is_none(), "{body}");
    // Setting what is already set is a no-op: 200, the etag unchanged.
    let noop = curl
        .expect(Request::patch("/v1/orgs/acme", admin, ENABLE), 200)
        .await;
    assert_eq!(noop.json()["org"]["etag"], body["org"]["etag"]);
    assert_eq!(
        list_org_jobs(&mut stack.jobs().await, "acme").await.len(),
        jobs
    );
    // A patch of tests alone reads and answers the org.
    let tested = curl
        .expect(
            Request::patch(
                "/v1/orgs/acme",
                admin,
                r#"[{"op": "test", "path": "/display_name", "value": "Acme Again"}]"#,
            ),
            200,
        )
        .await;
    assert_eq!(tested.json()["org"], body["org"]);
    // Read-only members can be tested too, against the org as GET shows it.
    let org = &body["org"];
    let read_only = json!([
        {"op": "test", "path": "/id", "value": "acme"},
        {"op": "test", "path": "/member_count", "value": MEMBERS},
        {"op": "test", "path": "/create_time", "value": org["create_time"]},
        {"op": "test", "path": "/update_time", "value": org["update_time"]},
        {"op": "test", "path": "/etag", "value": org["etag"]},
    ]);
    let tested = curl
        .expect(
            Request::patch("/v1/orgs/acme", admin, read_only.to_string()),
            200,
        )
        .await;
    assert_eq!(tested.json()["org"], body["org"]);
    let got = curl.expect(Request::get("/v1/orgs/acme", admin), 200).await;
    assert_eq!(got.json(), body["org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_exact_status_and_changes_nothing() {
    let stack = Stack::start().await;
    let Some(curl) = Curl::new(&stack) else {
        return;
    };
    stack.seed_linked_org("acme", 10).await;
    let tokens = stack.tokens.clone();
    let admin = tokens.admin.as_str();
    let seed_job = list_org_jobs(&mut stack.jobs().await, "acme").await[0]
        .id
        .clone();
    let org = "/v1/orgs/acme";
    let patch = |body: &str| Request::patch(org, admin, body);
    let flip_off = r#"{"op": "replace", "path": "/allow_custom_sso", "value": false}"#;
    // A patch of `test`, then the flip.
    let test_then_flip = |test: &str| patch(&format!("[{test},\n{flip_off}]"));

    let cases: Vec<(&str, Request<'_>, u16, &str)> = vec![
        (
            "a test that does not hold",
            patch(
                r#"[{"op": "test", "path": "/allow-custom-sso", "value": false},
                    {"op": "replace", "path": "/allow-custom-sso", "value": false}]"#,
            ),
            409,
            "PATCH_TEST_FAILED",
        ),
        (
            "a test of a display name that does not hold",
            test_then_flip(r#"{"op": "test", "path": "/display_name", "value": "Someone Else"}"#),
            409,
            "PATCH_TEST_FAILED",
        ),
        (
            "a stale etag",
            test_then_flip(r#"{"op": "test", "path": "/etag", "value": "r999999"}"#),
            409,
            "ETAG_MISMATCH",
        ),
        (
            "a test value of the wrong type (RFC 6902 4.6: not equal)",
            test_then_flip(r#"{"op": "test", "path": "/allow_custom_sso", "value": "true"}"#),
            409,
            "PATCH_TEST_FAILED",
        ),
        (
            "a test of a read-only member that does not hold",
            test_then_flip(r#"{"op": "test", "path": "/member_count", "value": 11}"#),
            409,
            "PATCH_TEST_FAILED",
        ),
        (
            "malformed JSON",
            patch(r#"{"op": "replace", "path": "/allow_custom_sso", "#),
            400,
            "MALFORMED_JSON",
        ),
        ("an empty body", patch(""), 400, "MALFORMED_JSON"),
        (
            "JSON that is not a patch",
            patch("\"replace\""),
            400,
            "PATCH_MALFORMED",
        ),
        (
            "no op",
            patch(r#"{"path": "/allow_custom_sso", "value": false}"#),
            400,
            "PATCH_MALFORMED",
        ),
        (
            "an unknown op",
            patch(r#"{"op": "flip", "path": "/allow_custom_sso", "value": false}"#),
            400,
            "PATCH_MALFORMED",
        ),
        (
            "no value",
            patch(r#"{"op": "replace", "path": "/allow_custom_sso"}"#),
            400,
            "PATCH_MALFORMED",
        ),
        (
            "a string for a boolean",
            patch(r#"{"op": "replace", "path": "/allow_custom_sso", "value": "false"}"#),
            400,
            "PATCH_MALFORMED",
        ),
        (
            "a number for a name",
            patch(r#"{"op": "replace", "path": "/display_name", "value": 7}"#),
            400,
            "PATCH_MALFORMED",
        ),
        (
            "a blank name",
            patch(r#"{"op": "replace", "path": "/display_name", "value": "  "}"#),
            400,
            "INVALID_FIELD",
        ),
        (
            "an unknown path",
            patch(r#"{"op": "replace", "path": "/owner", "value": "me"}"#),
            422,
            "PATCH_PATH_UNSUPPORTED",
        ),
        (
            "a read-only path",
            patch(r#"{"op": "replace", "path": "/id", "value": "other"}"#),
            422,
            "PATCH_PATH_UNSUPPORTED",
        ),
        (
            "replacing the etag",
            patch(r#"{"op": "replace", "path": "/etag", "value": "r1"}"#),
            422,
            "PATCH_PATH_UNSUPPORTED",
        ),
        (
            "add",
            patch(r#"{"op": "add", "path": "/allow_custom_sso", "value": false}"#),
            422,
            "PATCH_OP_UNSUPPORTED",
        ),
        (
            "remove",
            patch(r#"{"op": "remove", "path": "/display_name"}"#),
            422,
            "PATCH_OP_UNSUPPORTED",
        ),
        (
            "a good op before a bad one (all or nothing)",
            patch(
                r#"[{"op": "replace", "path": "/allow_custom_sso", "value": false},
                    {"op": "move", "from": "/display_name", "path": "/name"}]"#,
            ),
            422,
            "PATCH_OP_UNSUPPORTED",
        ),
        (
            "a text body",
            Request {
                content_type: Some("text/plain"),
                ..patch(flip_off)
            },
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "a merge patch",
            Request {
                content_type: Some("application/merge-patch+json"),
                ..patch(r#"{"allow_custom_sso": false}"#)
            },
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "no Content-Type",
            Request {
                content_type: None,
                ..patch(flip_off)
            },
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "a body over 64 KiB",
            patch(&format!(
                r#"{{"op": "replace", "path": "/display_name", "value": "{}"}}"#,
                "x".repeat(70_000)
            )),
            413,
            "MESSAGE_TOO_LARGE",
        ),
        (
            "an Idempotency-Key over 128 characters",
            patch(flip_off).header("Idempotency-Key", "k".repeat(129)),
            400,
            "INVALID_FIELD",
        ),
        (
            "no token",
            Request {
                token: None,
                ..patch(flip_off)
            },
            401,
            "TOKEN_MISSING",
        ),
        (
            "an expired token",
            Request::patch(org, &tokens.expired, flip_off),
            401,
            "TOKEN_EXPIRED",
        ),
        (
            "another org's token",
            Request::patch(org, &tokens.globex, flip_off),
            403,
            "ORG_ACCESS_DENIED",
        ),
        (
            "another org's token, with a test (read first)",
            Request::patch(
                org,
                &tokens.globex,
                r#"[{"op": "test", "path": "/allow_custom_sso", "value": true},
                    {"op": "replace", "path": "/allow_custom_sso", "value": false}]"#,
            ),
            403,
            "ORG_ACCESS_DENIED",
        ),
        (
            "reading another org",
            Request::get(org, &tokens.globex),
            403,
            "ORG_ACCESS_DENIED",
        ),
        (
            "an unknown org",
            Request::patch("/v1/orgs/nope", admin, flip_off),
            404,
            "ORG_NOT_FOUND",
        ),
        (
            "a malformed org id",
            Request::patch("/v1/orgs/Not_An_Id", admin, flip_off),
            400,
            "INVALID_FIELD",
        ),
        (
            "DELETE",
            Request {
                method: "DELETE",
                ..Request::get(org, admin)
            },
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "an unknown job",
            Request::get("/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057", admin),
            404,
            "JOB_NOT_FOUND",
        ),
        (
            "another org's job",
            Request::get(format!("/v1/jobs/{seed_job}"), &tokens.globex),
            404,
            "JOB_NOT_FOUND",
        ),
        (
            "a malformed job id",
            Request::get("/v1/jobs/not-a-uuid", admin),
            400,
            "INVALID_FIELD",
        ),
        (
            "no token for a job",
            Request {
                token: None,
                ..Request::get(format!("/v1/jobs/{seed_job}"), admin)
            },
            401,
            "TOKEN_MISSING",
        ),
        (
            "events of an unknown job",
            Request::get(
                "/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/events",
                admin,
            ),
            404,
            "JOB_NOT_FOUND",
        ),
        (
            "events after a malformed Last-Event-ID",
            Request::get(format!("/v1/jobs/{seed_job}/events"), admin)
                .header("Last-Event-ID", "latest"),
            400,
            "INVALID_FIELD",
        ),
        (
            "events after a negative since_version",
            Request::get(
                format!("/v1/jobs/{seed_job}/events?since_version=-1"),
                admin,
            ),
            400,
            "INVALID_FIELD",
        ),
    ];

    let before = snapshot(&stack, "acme").await;
    for (what, request, status, reason) in cases {
        let reply = curl.refused(what, request, status, reason).await;
        let error = &reply.json()["error"];
        assert_eq!(error["code"], status, "{what}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        match status {
            405 => assert!(reply.header("allow").is_some(), "{what}"),
            415 => assert_eq!(
                reply.header("accept-patch"),
                Some("application/json-patch+json, application/json"),
                "{what}"
            ),
            _ => {}
        }
        assert_eq!(
            snapshot(&stack, "acme").await,
            before,
            "{what} changed something"
        );
    }

    // The bad-value cases name where the request went wrong.
    let wrong_type = curl
        .send(patch(
            r#"[{"op": "test", "path": "/etag", "value": "r1"},
                {"op": "replace", "path": "/allow_custom_sso", "value": 0}]"#,
        ))
        .await;
    assert_eq!(wrong_type.json()["error"]["field"], "/1/value");
    let untyped = curl
        .send(Request {
            content_type: None,
            ..patch(flip_off)
        })
        .await;
    let message = untyped.json()["error"]["message"].to_string();
    assert!(message.contains("no Content-Type"), "{message}");
    assert_eq!(snapshot(&stack, "acme").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_the_last_event_id_and_end_on_shutdown() {
    // No workers: jobs stay QUEUED until the test moves them.
    let mut stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let Some(curl) = Curl::new(&stack) else {
        return;
    };
    let admin = stack.tokens.admin.clone();
    let admin = admin.as_str();
    stack.create_org("acme", "Acme", false).await;
    let job_id = curl.job_of_patch(admin, ENABLE).await;
    let events_of = |job: &str| format!("/v1/jobs/{job}/events");
    // Resumed after `last_event_id` while the job waits: nothing until the
    // job is cancelled, then only its terminal state (version 2), and the
    // stream ends after it.
    let resume_then_cancel = async |job_id: &str, last_event_id: &str| {
        let resumed = curl
            .stream(Request::get(events_of(job_id), admin).header("Last-Event-ID", last_event_id));
        tokio::time::sleep(Duration::from_millis(300)).await;
        stack.cancel_job(job_id).await;
        let events = resumed.rest().await;
        assert_eq!(
            states(&events),
            vec![(Some(2), "CANCELLED".to_owned())],
            "Last-Event-ID: {last_event_id}"
        );
    };

    // From the start: the current state first, at once.
    let mut all = curl.stream(Request::get(events_of(&job_id), admin));
    let first = all.next().await.expect("a first event");
    assert_eq!(
        (first.id, first.data["state"].as_str()),
        (Some(1), Some("QUEUED"))
    );
    drop(all);

    // Resumed after version 1: only the newer state.
    resume_then_cancel(&job_id, "1").await;

    // The query parameter means the same.
    let reply = curl
        .expect(
            Request::get(format!("{}?since_version=1", events_of(&job_id)), admin),
            200,
        )
        .await;
    let ids: Vec<_> = parse_events(&reply.body).iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![Some(2)]);
    // A client that already has the terminal event of an ended job gets
    // 204 No Content, which stops an EventSource from reconnecting for
    // ever (WatchJob would send the terminal state once more).
    for (request, what) in [
        (
            Request::get(events_of(&job_id), admin).header("Last-Event-ID", "2"),
            "Last-Event-ID: 2",
        ),
        (
            Request::get(events_of(&job_id), admin).header("Last-Event-ID", "9"),
            "Last-Event-ID: 9",
        ),
        (
            Request::get(format!("{}?since_version=2", events_of(&job_id)), admin),
            "since_version=2",
        ),
    ] {
        let reply = curl.send(request).await;
        assert_eq!(reply.status, 204, "{what}: {}", reply.body);
        assert_eq!(reply.body, "", "{what}");
    }

    // Resumed beyond any version the job will reach, before it ends: the
    // terminal event still comes, and the stream ends with it.
    let disable = r#"{"op": "replace", "path": "/allow_custom_sso", "value": false}"#;
    let ahead_job = curl.job_of_patch(admin, disable).await;
    resume_then_cancel(&ahead_job, "1000000").await;

    // Shutdown ends an open stream with an error event saying why, and
    // the open stream does not hold the server up.
    let queued = curl.job_of_patch(admin, ENABLE).await;
    let mut open = curl.stream(Request::get(events_of(&queued), admin));
    let first = open.next().await.expect("a first event");
    assert_eq!(first.data["state"], "QUEUED");
    stack.org.signal("TERM");
    let rest = open.rest().await;
    let [last] = rest.as_slice() else {
        panic!("expected one error event, got {rest:?}");
    };
    assert_eq!(last.event, "error");
    assert_eq!(last.id, None, "an error must not move the resume point");
    assert_eq!(last.data["error"]["code"], 503);
    assert_eq!(last.data["error"]["reason"], "SHUTTING_DOWN");
    let exit = stack
        .org
        .wait_exit(Duration::from_secs(30))
        .expect("org-server exits after SIGTERM with a stream open");
    assert!(exit.success(), "org-server exited with {exit}");
}

/// Creates org `acme` (custom SSO off) and a job that turns it on, then
/// cancels the job: a job with an end (version 2, CANCELLED) and no worker
/// needed. Returns its id.
async fn cancelled_job(stack: &Stack, curl: &Curl) -> String {
    stack.create_org("acme", "Acme", false).await;
    let job_id = curl.job_of_patch(&stack.tokens.admin, ENABLE).await;
    stack.cancel_job(&job_id).await;
    job_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_take_the_token_as_access_token_and_never_log_it() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        // Every debug line too: the secret must be in none of them.
        org_env: vec![("RUST_LOG".into(), "debug".into())],
        ..Default::default()
    })
    .await;
    let Some(curl) = Curl::new(&stack) else {
        return;
    };
    let tokens = stack.tokens.clone();
    let job_id = cancelled_job(&stack, &curl).await;
    let unknown =
        orgauth_security::token::issue("nobody", orgauth_security::Role::Admin, &[], None)
            .expect("issue a token")
            .secret;
    // An EventSource sends no Authorization header: only the URL.
    let events = |query: String| Request {
        token: None,
        ..Request::get(format!("/v1/jobs/{job_id}/events{query}"), "")
    };

    for query in [
        format!("?access_token={}", tokens.acme),
        format!("?since_version=1&access_token={}", tokens.acme),
        format!("?access_token={}&since_version=0", tokens.admin),
    ] {
        let reply = curl.send(events(query.clone())).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        assert_eq!(
            states(&parse_events(&reply.body)),
            vec![(Some(2), "CANCELLED".to_owned())],
            "{query}"
        );
    }
    // The resume rules hold with the token in the query too.
    curl.expect(
        events(format!("?access_token={}&since_version=2", tokens.acme)),
        204,
    )
    .await;

    let cases: Vec<(&str, Request<'_>, u16, &str)> = vec![
        (
            "an unknown token",
            events(format!("?access_token={unknown}")),
            401,
            "TOKEN_UNKNOWN",
        ),
        (
            "an expired token",
            events(format!("?access_token={}", tokens.expired)),
            401,
            "TOKEN_EXPIRED",
        ),
        (
            "an empty access_token",
            events("?access_token=".into()),
            401,
            "TOKEN_MALFORMED",
        ),
        (
            "another org's token",
            events(format!("?access_token={}", tokens.globex)),
            404,
            "JOB_NOT_FOUND",
        ),
        (
            "the token twice",
            events(format!(
                "?access_token={}&access_token={}",
                tokens.acme, tokens.acme
            )),
            400,
            "INVALID_FIELD",
        ),
        (
            "a header and the query",
            Request {
                token: Some(&tokens.admin),
                ..events(format!("?access_token={}", tokens.acme))
            },
            400,
            "INVALID_FIELD",
        ),
        (
            "the query on a route that does not take it",
            Request {
                token: None,
                ..Request::get(
                    format!("/v1/jobs/{job_id}?access_token={}", tokens.acme),
                    "",
                )
            },
            401,
            "TOKEN_MISSING",
        ),
    ];
    for (what, request, status, reason) in cases {
        let reply = curl.refused(what, request, status, reason).await;
        if status == 400 {
            assert_eq!(reply.json()["error"]["field"], "access_token", "{what}");
        }
    }

    let log = stack.org.log();
    assert!(
        log.contains("/v1/jobs/{id}/events"),
        "the requests were logged (at debug): {log}"
    );
    for (holder, secret) in [
        ("acme", &tokens.acme),
        ("admin", &tokens.admin),
        ("globex", &tokens.globex),
        ("expired", &tokens.expired),
        ("unknown", &unknown),
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "the {holder} token is in org-server's log"
        );
    }
    assert!(
        !log.contains("access_token="),
        "a query with a token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_json_and_unknown_grpc_methods_unimplemented() {
    let stack = Stack::start().await;
    let Some(curl) = Curl::new(&stack) else {
        return;
    };
    let admin = stack.tokens.admin.as_str();
    let cases: Vec<(&str, Request<'_>)> = vec![
        ("the orgs collection", Request::get("/v1/orgs", admin)),
        ("a typo", Request::get("/v1/org/acme", admin)),
        (
            "an unknown subresource",
            Request::get("/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/event", admin),
        ),
        (
            "the root, without a token",
            Request {
                token: None,
                ..Request::get("/", admin)
            },
        ),
        (
            "a PATCH to a typo",
            Request::patch(
                "/v1/orgz/acme",
                admin,
                r#"{"op": "replace", "path": "/allow_custom_sso", "value": false}"#,
            ),
        ),
        (
            "a gRPC method's path, as plain HTTP",
            Request::get("/orgauth.org.v1.NoSuchService/GetOrg", admin),
        ),
    ];
    for (what, request) in cases {
        let reply = curl.send(request).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (404, "ROUTE_NOT_FOUND"),
            "{what}: {:?}",
            reply
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("grpc-status"), None, "{what}");
        let error = &reply.json()["error"];
        assert_eq!(error["code"], 404);
        assert_eq!(error["status"], "NOT_FOUND");
    }

    // gRPC clients still get UNIMPLEMENTED with reason METHOD_NOT_FOUND,
    // for an unknown service (the fallback) and an unknown method of a
    // known one (its generated server).
    let mut grpc = tonic::client::Grpc::new(authed(stack.org.channel().await, admin));
    for path in [
        "/orgauth.org.v1.NoSuchService/GetOrg",
        "/orgauth.org.v1.OrgService/NoSuchMethod",
    ] {
        grpc.ready().await.expect("channel ready");
        let status = grpc
            .unary(
                tonic::Request::new(pb::GetOrgRequest {
                    org_id: "acme".into(),
                }),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                orgauth_proto::LeanCodec::<pb::GetOrgRequest, pb::Org>::default(),
            )
            .await
            .expect_err(path);
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{path}: {status:?}"
        );
        assert_eq!(
            error_reason(&status),
            "METHOD_NOT_FOUND",
            "{path}: {status:?}"
        );
    }
}

/// buf, as scripts/test.sh installs it (from npm), else from the tools
/// directory or PATH.
fn buf() -> Option<PathBuf> {
    let installed = workspace_root().join("target/tools-node/node_modules/.bin/buf");
    if installed.is_file() {
        return Some(installed);
    }
    tool("buf")
}

/// `buf curl` over gRPC-Web on HTTP/1.1, with the schema from proto/:
/// every JSON message printed, and the exit status (the gRPC code << 3).
async fn grpc_web(
    buf: &Path,
    stack: &Stack,
    token: Option<&str>,
    method: &str,
    request: Value,
) -> (Vec<Value>, i32, String) {
    let mut args: Vec<String> = vec![
        "curl".into(),
        "--protocol".into(),
        "grpcweb".into(),
        "--schema".into(),
        workspace_root().join("proto").display().to_string(),
        "--data".into(),
        request.to_string(),
    ];
    if let Some(token) = token {
        args.extend(["--header".into(), format!("authorization: Bearer {token}")]);
    }
    args.push(format!("{}/{method}", stack.org.endpoint()));
    let output = run(buf, &args, WATCH_TIMEOUT).await;
    let messages = serde_json::Deserializer::from_str(&text(&output.stdout))
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .expect("buf curl prints JSON messages");
    (
        messages,
        output.status.code().unwrap_or(-1),
        text(&output.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_client_flips_the_setting_and_watches_the_job() {
    const MEMBERS: i64 = 300;
    let Some(buf) = buf() else {
        return;
    };
    let stack = Stack::start_with(StackOptions {
        batch_size: 100,
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("acme", MEMBERS as usize).await;
    let admin = stack.tokens.admin.as_str();
    let update = json!({
        "org": {"id": "acme", "allowCustomSso": false},
        "updateMask": "allowCustomSso",
    });

    // gRPC-Web needs the same token as gRPC.
    let before = snapshot(&stack, "acme").await;
    let (_, code, stderr) = grpc_web(
        &buf,
        &stack,
        None,
        "orgauth.org.v1.OrgService/UpdateOrg",
        update.clone(),
    )
    .await;
    assert_eq!(code, 16 << 3, "UNAUTHENTICATED expected: {stderr}");
    assert_eq!(snapshot(&stack, "acme").await, before);

    let (messages, code, stderr) = grpc_web(
        &buf,
        &stack,
        Some(admin),
        "orgauth.org.v1.OrgService/UpdateOrg",
        update,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let [response] = messages.as_slice() else {
        panic!("one response expected: {messages:?}");
    };
    let job_id = response["jobId"].as_str().expect("jobId").to_owned();
    assert_eq!(
        response["org"].get("allowCustomSso"),
        None,
        "false is omitted"
    );

    // A server stream over gRPC-Web: every state until the terminal one.
    let (messages, code, stderr) = grpc_web(
        &buf,
        &stack,
        Some(admin),
        "orgauth.org.v1.JobService/WatchJob",
        json!({"jobId": job_id}),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let versions: Vec<i64> = messages
        .iter()
        .map(|m| {
            m["job"]["version"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("int64 version")
        })
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions must increase: {versions:?}"
    );
    let last = &messages[messages.len() - 1]["job"];
    assert_eq!(last["state"], "JOB_STATE_SUCCEEDED", "{last}");
    assert_eq!(last["processedMembers"], MEMBERS.to_string());
    assert_eq!(stack.connections("acme").await, 0);
}
