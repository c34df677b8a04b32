//! TLS and mutual TLS over real processes (issue 5): both servers serve
//! TLS with the certificates `scripts/make-test-certs.sh` makes; clients
//! that trust the CA get in, plaintext clients and clients that do not
//! trust the server do not; with `--tls-client-ca`, only clients presenting
//! a certificate of that CA get in; org-server reaches Auth over mutual
//! TLS and unlinks a whole org through it.
//!
//! Every case is printed (`-- --nocapture`) for issue 5's closing note.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orgauth_e2e::{Server, Tokens, authed, outcome, set_allow_request, watch_to_end};
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A directory with the test CA, certificates, a tokens file, and the
/// servers' databases and logs.
struct Setup {
    dir: tempfile::TempDir,
    tokens: Tokens,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-certs.sh");
        let made = std::process::Command::new("bash")
            .arg(&script)
            .arg(dir.path().join("certs"))
            .output()
            .expect("run make-test-certs.sh");
        assert!(
            made.status.success(),
            "make-test-certs.sh: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let tokens = Tokens::write(&dir.path().join("tokens"));
        Setup { dir, tokens }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn cert(&self, name: &str) -> String {
        self.dir
            .path()
            .join("certs")
            .join(name)
            .display()
            .to_string()
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("certs").join(name)).expect("read pem")
    }

    /// `--tls-cert/--tls-key` with the server certificate, and
    /// `--tls-client-ca` when `mutual`.
    fn serve_tls(&self, mutual: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".into(),
            self.cert("server.pem"),
            "--tls-key".into(),
            self.cert("server.key"),
        ];
        if mutual {
            args.extend(["--tls-client-ca".into(), self.cert("ca.pem")]);
        }
        args
    }

    fn auth_server(&self, name: &str, mutual: bool) -> Server {
        let mut args = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            format!("sqlite://{}", self.path(&format!("{name}.db"))),
            "--tokens-file".into(),
            self.path("tokens"),
        ];
        args.extend(self.serve_tls(mutual));
        Server::spawn(
            "auth-server",
            args,
            vec![],
            PathBuf::from(self.path(&format!("{name}.log"))),
        )
    }

    fn org_server(&self, name: &str, extra: Vec<String>) -> Server {
        let mut args = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            format!("sqlite://{}", self.path(&format!("{name}.db"))),
            "--tokens-file".into(),
            self.path("tokens"),
            "--org-updates-per-minute".into(),
            "0".into(),
        ];
        args.extend(extra);
        Server::spawn(
            "org-server",
            args,
            vec![],
            PathBuf::from(self.path(&format!("{name}.log"))),
        )
    }

    /// A client TLS config trusting `ca` and presenting `identity`.
    fn client_tls(&self, ca: &str, identity: Option<&str>) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.pem(ca)));
        if let Some(name) = identity {
            tls = tls.identity(Identity::from_pem(
                self.pem(&format!("{name}.pem")),
                self.pem(&format!("{name}.key")),
            ));
        }
        tls
    }
}

/// A lazily connecting channel, so that a refused handshake shows up as
/// the status of the first call.
fn channel(url: String, tls: Option<ClientTlsConfig>) -> Channel {
    let mut endpoint = Endpoint::from_shared(url)
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("tls config");
    }
    endpoint.connect_lazy()
}

fn https(server: &Server) -> String {
    format!("https://{}", server.addr)
}

fn new_org(id: &str, allow: bool) -> pb::CreateOrgRequest {
    pb::CreateOrgRequest {
        org: Some(pb::Org {
            id: id.into(),
            display_name: format!("Org {id}"),
            allow_custom_sso: allow,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// Asserts that a call failed at the transport (no server code ran: no
/// ErrorInfo), and prints it.
fn refused_by_transport<T>(case: &str, result: Result<T, tonic::Status>) {
    let line = outcome(&result);
    let status = match result {
        Ok(_) => panic!("{case}: expected the connection to be refused, got OK"),
        Err(status) => status,
    };
    eprintln!("{case}: {line} ({})", status.message());
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{case}: {status:?}"
    );
    assert_eq!(
        orgauth_e2e::error_reason(&status),
        "",
        "{case}: the refusal came from a handler, not the transport"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_servers_serve_clients_that_trust_the_ca_and_no_plaintext() {
    let setup = Setup::new();
    let auth = setup.auth_server("auth", false);
    let org = setup.org_server(
        "org",
        [
            vec!["--workers".to_owned(), "0".to_owned()],
            setup.serve_tls(false),
        ]
        .concat(),
    );
    let admin = &setup.tokens.admin;
    let service = &setup.tokens.service;

    // Trusting the CA: served, by IP (the certificate names 127.0.0.1) and
    // by name.
    let trusted = channel(https(&org), Some(setup.client_tls("ca.pem", None)));
    let mut orgs = OrgServiceClient::new(authed(trusted.clone(), admin));
    orgs.create_org(new_org("acme", false))
        .await
        .expect("CreateOrg over TLS");
    let by_name = channel(
        format!("https://localhost:{}", org.addr.port()),
        Some(setup.client_tls("ca.pem", None)),
    );
    OrgServiceClient::new(authed(by_name, admin))
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .expect("GetOrg over TLS to localhost");
    let mut authz = AuthServiceClient::new(authed(
        channel(https(&auth), Some(setup.client_tls("ca.pem", None))),
        service,
    ));
    authz
        .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
            org_id: "acme".into(),
            allow_custom_sso: true,
        })
        .await
        .expect("SetOrgSsoPolicy over TLS");
    eprintln!("TLS client trusting the CA: OK on org-server and auth-server");

    // Health over TLS needs no token, but TLS all the same.
    tonic_health::pb::health_client::HealthClient::new(trusted.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health over TLS");

    for (name, server) in [("org-server", &org), ("auth-server", &auth)] {
        // Plaintext HTTP/2 to a TLS port.
        let plain = channel(format!("http://{}", server.addr), None);
        let result = tokio::time::timeout(
            Duration::from_secs(15),
            tonic_health::pb::health_client::HealthClient::new(plain.clone())
                .check(tonic_health::pb::HealthCheckRequest::default()),
        )
        .await
        .expect("a plaintext call ends");
        refused_by_transport(&format!("{name}: plaintext client (health)"), result);
        let result = OrgServiceClient::new(authed(plain, admin))
            .create_org(new_org("plain", false))
            .await;
        refused_by_transport(&format!("{name}: plaintext client (CreateOrg)"), result);

        // A client that trusts another CA refuses the server.
        let untrusting = channel(https(server), Some(setup.client_tls("rogue-ca.pem", None)));
        let result = OrgServiceClient::new(authed(untrusting, admin))
            .create_org(new_org("untrusting", false))
            .await;
        refused_by_transport(&format!("{name}: client trusting another CA"), result);

        // A client that expects another name refuses the server.
        let misnamed = channel(
            https(server),
            Some(
                setup
                    .client_tls("ca.pem", None)
                    .domain_name("auth.example.com"),
            ),
        );
        let result = OrgServiceClient::new(authed(misnamed, admin))
            .create_org(new_org("misnamed", false))
            .await;
        refused_by_transport(&format!("{name}: client expecting another name"), result);
    }

    // Nothing the refused clients sent arrived.
    let ids: Vec<String> = orgs
        .list_orgs(pb::ListOrgsRequest::default())
        .await
        .expect("list orgs over TLS")
        .into_inner()
        .orgs
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, ["acme"]);
    // A TLS client still needs a token.
    let status = OrgServiceClient::new(trusted)
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .expect_err("no token over TLS");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    let setup = Setup::new();
    let auth = setup.auth_server("auth", true);
    let org = setup.org_server(
        "org",
        [
            vec!["--workers".to_owned(), "0".to_owned()],
            setup.serve_tls(true),
        ]
        .concat(),
    );
    let admin = &setup.tokens.admin;
    let service = &setup.tokens.service;
    let good = setup.client_tls("ca.pem", Some("client"));

    // Presenting the CA's client certificate: served.
    let mut orgs = OrgServiceClient::new(authed(channel(https(&org), Some(good.clone())), admin));
    orgs.create_org(new_org("acme", true))
        .await
        .expect("CreateOrg over mutual TLS");
    let mut authz =
        AuthServiceClient::new(authed(channel(https(&auth), Some(good.clone())), service));
    authz
        .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
            org_id: "acme".into(),
            allow_custom_sso: true,
        })
        .await
        .expect("SetOrgSsoPolicy over mutual TLS");
    authz
        .link_sso(authpb::LinkSsoRequest {
            org_id: "acme".into(),
            member_ids: vec!["m1".into(), "m2".into()],
        })
        .await
        .expect("LinkSso over mutual TLS");
    eprintln!("mutual TLS with the CA's client certificate: OK on both servers");

    for (what, tls) in [
        ("no client certificate", setup.client_tls("ca.pem", None)),
        (
            "a client certificate of another CA",
            setup.client_tls("ca.pem", Some("rogue-client")),
        ),
        (
            // The server's own certificate is signed by the CA but is not
            // for client authentication.
            "the server's certificate as client certificate",
            setup.client_tls("ca.pem", Some("server")),
        ),
    ] {
        // Valid tokens, hostile calls: the handshake must stop them.
        let result = OrgServiceClient::new(authed(channel(https(&org), Some(tls.clone())), admin))
            .update_org(set_allow_request("acme", false))
            .await;
        refused_by_transport(&format!("org-server mTLS, {what} (UpdateOrg)"), result);
        let mut rogue_authz =
            AuthServiceClient::new(authed(channel(https(&auth), Some(tls.clone())), service));
        let result = rogue_authz
            .batch_unlink_sso(authpb::BatchUnlinkSsoRequest {
                org_id: "acme".into(),
                member_ids: vec!["m1".into(), "m2".into()],
            })
            .await;
        refused_by_transport(
            &format!("auth-server mTLS, {what} (BatchUnlinkSso)"),
            result,
        );
        let result = rogue_authz
            .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
                org_id: "acme".into(),
                allow_custom_sso: false,
            })
            .await;
        refused_by_transport(
            &format!("auth-server mTLS, {what} (SetOrgSsoPolicy)"),
            result,
        );
        // Health is behind mutual TLS too.
        let result =
            tonic_health::pb::health_client::HealthClient::new(channel(https(&auth), Some(tls)))
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
        refused_by_transport(&format!("auth-server mTLS, {what} (health)"), result);
    }

    // Nothing changed, and the servers still serve good clients.
    let acme = orgs
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .expect("GetOrg after the refusals")
        .into_inner()
        .org
        .expect("org");
    assert!(acme.allow_custom_sso, "no refused UpdateOrg arrived");
    assert_eq!(acme.etag, "r1", "the org was never updated");
    let connections = authz
        .list_sso_connections(authpb::ListSsoConnectionsRequest {
            org_id: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("list connections")
        .into_inner()
        .total_size;
    assert_eq!(connections, 2, "no refused BatchUnlinkSso arrived");
    let policy = authz
        .get_org_sso_policy(authpb::GetOrgSsoPolicyRequest {
            org_id: "acme".into(),
        })
        .await
        .expect("get policy")
        .into_inner()
        .policy
        .expect("policy");
    assert!(
        policy.allow_custom_sso,
        "no refused SetOrgSsoPolicy arrived"
    );

    // A client certificate does not replace the token.
    let status = OrgServiceClient::new(channel(https(&org), Some(good)))
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .expect_err("mutual TLS without a token");
    eprintln!(
        "org-server mTLS with a good certificate but no token: {}",
        outcome::<()>(&Err(status.clone()))
    );
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_server_unlinks_a_whole_org_through_mutual_tls_to_auth() {
    let setup = Setup::new();
    let auth = setup.auth_server("auth", true);
    // The service token from a file this time.
    let token_file = setup.path("service-token");
    std::fs::write(&token_file, format!("{}\n", setup.tokens.service)).expect("token file");
    let auth_tls = |identity: bool| {
        let mut args = vec![
            "--auth-endpoint".to_owned(),
            https(&auth),
            "--auth-tls-ca".to_owned(),
            setup.cert("ca.pem"),
            "--auth-tls-server-name".to_owned(),
            "localhost".to_owned(),
            "--auth-token-file".to_owned(),
            token_file.clone(),
        ];
        if identity {
            args.extend([
                "--auth-tls-cert".to_owned(),
                setup.cert("client.pem"),
                "--auth-tls-key".to_owned(),
                setup.cert("client.key"),
            ]);
        }
        args
    };
    let org = setup.org_server(
        "org",
        [
            vec![
                "--workers".to_owned(),
                "2".to_owned(),
                "--batch-size".to_owned(),
                "500".to_owned(),
            ],
            auth_tls(true),
            setup.serve_tls(true),
        ]
        .concat(),
    );
    let good = setup.client_tls("ca.pem", Some("client"));
    let org_channel = channel(https(&org), Some(good.clone()));
    let mut orgs = OrgServiceClient::new(authed(org_channel.clone(), &setup.tokens.admin));
    let mut jobs = JobServiceClient::new(authed(org_channel, &setup.tokens.admin));
    let mut authz = AuthServiceClient::new(authed(
        channel(https(&auth), Some(good)),
        &setup.tokens.service,
    ));

    // Creating the org allowing SSO: the job sets Auth's policy over mTLS.
    let created = orgs
        .create_org(new_org("acme", true))
        .await
        .expect("create")
        .into_inner();
    let states = watch_to_end(&mut jobs, &created.job_id).await;
    let last = states.last().expect("states");
    assert_eq!(
        last.state,
        pb::JobState::Succeeded as i32,
        "policy job over mTLS: {last:?}"
    );
    let ids: Vec<String> = (0..1200).map(orgauth_e2e::member_id).collect();
    for chunk in ids.chunks(600) {
        orgs.add_members(pb::AddMembersRequest {
            org_id: "acme".into(),
            members: chunk
                .iter()
                .map(|id| pb::Member {
                    id: id.clone(),
                    email: String::new(),
                })
                .collect(),
        })
        .await
        .expect("add members");
        authz
            .link_sso(authpb::LinkSsoRequest {
                org_id: "acme".into(),
                member_ids: chunk.to_vec(),
            })
            .await
            .expect("link");
    }
    let count = |authz: &mut AuthServiceClient<orgauth_e2e::Authed>| {
        let mut authz = authz.clone();
        async move {
            authz
                .list_sso_connections(authpb::ListSsoConnectionsRequest {
                    org_id: "acme".into(),
                    page_size: 1,
                    page_token: String::new(),
                })
                .await
                .expect("count")
                .into_inner()
                .total_size
        }
    };
    assert_eq!(count(&mut authz).await, 1200);

    // The flip: every member unlinked through mutual TLS.
    let job_id = orgs
        .update_org(set_allow_request("acme", false))
        .await
        .expect("flip")
        .into_inner()
        .job_id;
    let states = watch_to_end(&mut jobs, &job_id).await;
    let last = states.last().expect("states");
    eprintln!(
        "org-server -> auth-server over mTLS: unlink job {} with {} unlinked of {}",
        orgauth_e2e::state_name(last.state),
        last.unlinked_members,
        last.total_members
    );
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{last:?}");
    assert_eq!((last.unlinked_members, last.failed_members), (1200, 0));
    assert_eq!(count(&mut authz).await, 0, "Auth has no connection left");

    // An org-server without a client certificate cannot reach the mTLS
    // Auth: its job fails after its retries and Auth is unchanged.
    let no_cert = setup.org_server(
        "org-no-cert",
        [
            vec![
                "--workers".to_owned(),
                "1".to_owned(),
                "--retry-max-attempts".to_owned(),
                "2".to_owned(),
                "--retry-initial-backoff".to_owned(),
                "50ms".to_owned(),
            ],
            auth_tls(false),
        ]
        .concat(),
    );
    let mut orgs_no_cert =
        OrgServiceClient::new(authed(no_cert.channel().await, &setup.tokens.admin));
    let mut jobs_no_cert =
        JobServiceClient::new(authed(no_cert.channel().await, &setup.tokens.admin));
    let created = orgs_no_cert
        .create_org(new_org("globex", true))
        .await
        .expect("create on the replica without a certificate")
        .into_inner();
    let states = watch_to_end(&mut jobs_no_cert, &created.job_id).await;
    let last = states.last().expect("states");
    eprintln!(
        "org-server without a client certificate -> mTLS auth-server: job {} after {} attempts, last_error {:?}",
        orgauth_e2e::state_name(last.state),
        last.attempt,
        last.last_error
    );
    assert_eq!(last.state, pb::JobState::Failed as i32, "{last:?}");
    assert!(!last.last_error.is_empty());
    let policy = authz
        .get_org_sso_policy(authpb::GetOrgSsoPolicyRequest {
            org_id: "globex".into(),
        })
        .await
        .expect("policy")
        .into_inner()
        .policy
        .expect("policy");
    assert!(
        !policy.allow_custom_sso && policy.update_time.is_none(),
        "Auth never heard of globex: {policy:?}"
    );
}

/// curl's answer: the HTTP version it spoke and the status, or its exit
/// code when the connection failed.
async fn curl_over(
    setup: &Setup,
    version: &str,
    url: &str,
    headers: &[&str],
) -> Result<(String, u16, String), i32> {
    let curl = orgauth_e2e::tools::tool("curl").expect("curl (CI installs it)");
    let mut args: Vec<String> = vec![
        "--silent".into(),
        "--show-error".into(),
        "--max-time".into(),
        "10".into(),
        version.into(),
        "--cacert".into(),
        setup.cert("ca.pem"),
        "--write-out".into(),
        "\n%{http_version} %{http_code}".into(),
    ];
    for header in headers {
        args.extend(["--header".into(), (*header).into()]);
    }
    args.push(url.into());
    let output = orgauth_e2e::tools::run(&curl, &args, Duration::from_secs(30)).await;
    if !output.status.success() {
        return Err(output.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').expect("curl's write-out line");
    let (version, code) = trailer.split_once(' ').expect("version and code");
    Ok((
        version.to_owned(),
        code.parse().expect("status code"),
        body.to_owned(),
    ))
}

/// org-server's port serves browsers and plain-HTTP clients too, so over
/// TLS it offers HTTP/1.1 beside HTTP/2 (tonic's own TLS offers only h2,
/// which Python's `requests` or Node's `fetch` cannot speak). auth-server,
/// which no browser calls, stays HTTP/2 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_speaks_http1_and_h2_over_tls_and_auth_only_h2() {
    if orgauth_e2e::tools::tool("curl").is_none() {
        return;
    }
    let setup = Setup::new();
    let mut extra = vec!["--workers".to_owned(), "0".to_owned()];
    extra.extend(setup.serve_tls(false));
    let org = setup.org_server("org", extra);
    let auth = setup.auth_server("auth", false);
    let bearer = format!("authorization: Bearer {}", setup.tokens.admin);
    let job = format!(
        "https://127.0.0.1:{}/v1/jobs/{}",
        org.addr.port(),
        uuid::Uuid::now_v7()
    );
    for (flag, spoken) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (version, code, body) = curl_over(&setup, flag, &job, &[&bearer])
            .await
            .unwrap_or_else(|code| panic!("curl {flag} over TLS failed with exit {code}"));
        println!("org-server over TLS, curl {flag}: HTTP/{version} {code} {body}");
        assert_eq!(version, spoken);
        assert_eq!(code, 404, "an unknown job, answered by the gateway: {body}");
        assert!(body.contains("NOT_FOUND"), "{body}");
    }
    let (_, code, _) = curl_over(&setup, "--http1.1", &job, &[])
        .await
        .expect("curl without a token");
    assert_eq!(code, 401, "the gateway needs a token over TLS too");

    let refused = curl_over(
        &setup,
        "--http1.1",
        &format!("https://127.0.0.1:{}/", auth.addr.port()),
        &[],
    )
    .await;
    println!("auth-server over TLS, curl --http1.1: {refused:?}");
    assert!(
        refused.is_err(),
        "auth-server offers only h2: an HTTP/1.1-only client cannot connect ({refused:?})"
    );
}
