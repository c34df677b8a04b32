//! CORS on org-server's port (`--cors-allowed-origin`): a page of an
//! allowed origin may call gRPC-Web and the JSON gateway (its preflight is
//! answered before any token check, and the answers expose the gRPC status
//! headers); a page of any other origin may not; without the flag no
//! cross-origin page may. Checked with the real curl, sending what a
//! browser sends.

use std::time::Duration;

use orgauth_e2e::tools::{run, text, tool};
use orgauth_e2e::{Stack, StackOptions};

const ALLOWED: &str = "https://ops.example.com";

/// The status and headers (lower-cased names) of one request.
async fn request(method: &str, url: &str, headers: &[String]) -> (u16, Vec<(String, String)>) {
    let curl = tool("curl").expect("curl");
    let mut args: Vec<String> = vec![
        "--silent".into(),
        "--max-time".into(),
        "10".into(),
        "--http1.1".into(),
        "--output".into(),
        "/dev/null".into(),
        "--dump-header".into(),
        "-".into(),
        "--request".into(),
        method.into(),
    ];
    for header in headers {
        args.extend(["--header".into(), header.clone()]);
    }
    args.push(url.into());
    let output = run(&curl, &args, Duration::from_secs(30)).await;
    assert!(output.status.success(), "curl: {}", text(&output.stderr));
    let head = text(&output.stdout);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn preflight(origin: &str) -> Vec<String> {
    vec![
        format!("Origin: {origin}"),
        "Access-Control-Request-Method: POST".into(),
        "Access-Control-Request-Headers: authorization, content-type, x-grpc-web".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_get_cors_answers() {
    if tool("curl").is_none() {
        return;
    }
    let stack = Stack::start_with(StackOptions {
        org_args: vec!["--cors-allowed-origin".into(), ALLOWED.into()],
        ..Default::default()
    })
    .await;
    let base = format!("http://{}", stack.org.addr);
    let update = format!("{base}/orgauth.org.v1.OrgService/UpdateOrg");

    let (status, headers) = request("OPTIONS", &update, &preflight(ALLOWED)).await;
    println!("preflight from {ALLOWED}: {status} {headers:?}");
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let allowed_headers = header(&headers, "access-control-allow-headers").unwrap_or_default();
    for name in ["authorization", "content-type", "x-grpc-web"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }

    let (_, headers) = request("OPTIONS", &update, &preflight("https://evil.example")).await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        None,
        "another origin is not allowed: {headers:?}"
    );

    // An actual call from the allowed origin: the answer (here 401, no
    // token) is readable by the page, grpc-status headers included.
    let (status, headers) = request(
        "GET",
        &format!("{base}/v1/jobs/{}", uuid::Uuid::now_v7()),
        &[format!("Origin: {ALLOWED}")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("grpc-status"), "{exposed}");

    // Without the flag, no cross-origin page is answered.
    let plain = Stack::start().await;
    let (_, headers) = request(
        "OPTIONS",
        &format!(
            "http://{}/orgauth.org.v1.OrgService/UpdateOrg",
            plain.org.addr
        ),
        &preflight(ALLOWED),
    )
    .await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}
