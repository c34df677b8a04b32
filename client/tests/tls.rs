//! The client over TLS and mutual TLS against a server with the servers'
//! own bearer-token authenticator: a bare host:port becomes https://, the
//! token rides along, an untrusted or misnamed server certificate fails
//! fast (no retrying for the whole connect timeout), and a server that
//! requires client certificates refuses a client without a trusted one.
//! Certificates are made with the `openssl` command; without it the tests
//! pass with a note.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use orgauth_client::{ClientError, ClientTls, ConnectOptions, OrgClient};
use tonic::Code;

use support::{Pki, ops_token, serve_jobs, server_tls};

fn options(token: Option<&str>, tls: ClientTls) -> ConnectOptions {
    let mut options = ConnectOptions {
        timeout: Duration::from_secs(10),
        ..ConnectOptions::default()
    }
    .with_tls(tls);
    options.token = token.map(str::to_owned);
    options
}

fn trusting(pki: &Pki) -> ClientTls {
    ClientTls {
        ca: Some(pki.ca_pem()),
        ..ClientTls::default()
    }
}

macro_rules! require_openssl {
    () => {
        if !Pki::available() {
            eprintln!("skipped: no openssl command to make test certificates");
            return;
        }
    };
}

#[tokio::test]
async fn tls_with_a_token_works_and_a_bare_host_port_means_https() {
    require_openssl!();
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let (secret, authenticator) = ops_token();
    let addr = serve_jobs(authenticator, Some(server_tls(&cert, &key, None))).await;

    for endpoint in [
        format!("localhost:{}", addr.port()),
        format!("https://127.0.0.1:{}", addr.port()),
    ] {
        let client = OrgClient::connect_with(&endpoint, &options(Some(&secret), trusting(&pki)))
            .await
            .unwrap();
        let job = client.get_job("j1").await.unwrap();
        assert_eq!(
            (job.id.as_str(), job.org_id.as_str()),
            ("j1", "ops"),
            "{endpoint}"
        );
    }

    // Rich errors come through TLS like any other answer.
    let client = OrgClient::connect_with(
        &format!("localhost:{}", addr.port()),
        &options(Some(&secret), trusting(&pki)),
    )
    .await
    .unwrap();
    let error = client.get_job("forbidden").await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(error.reason(), Some("ORG_ACCESS_DENIED"));
    assert_eq!(
        error.to_string(),
        "PERMISSION_DENIED (ORG_ACCESS_DENIED): token \"ops\" may not read job forbidden"
    );
    let error = client.get_job("bad").await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.field_violations()[0].field, "job_id");
}

#[tokio::test]
async fn without_a_token_calls_are_unauthenticated_with_a_reason() {
    require_openssl!();
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let (_, authenticator) = ops_token();
    let addr = serve_jobs(authenticator, Some(server_tls(&cert, &key, None))).await;
    let client = OrgClient::connect_with(
        &format!("localhost:{}", addr.port()),
        &options(None, trusting(&pki)),
    )
    .await
    .unwrap();
    let error = client.get_job("j1").await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error.reason(), Some("TOKEN_MISSING"));
    assert!(!error.is_transient());
    assert!(
        error
            .to_string()
            .starts_with("UNAUTHENTICATED (TOKEN_MISSING): missing credentials"),
        "{error}"
    );
}

#[tokio::test]
async fn an_untrusted_or_misnamed_server_certificate_fails_fast() {
    require_openssl!();
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let (secret, authenticator) = ops_token();
    let addr = serve_jobs(authenticator, Some(server_tls(&cert, &key, None))).await;
    let endpoint = format!("localhost:{}", addr.port());

    let stranger = Pki::new("other-ca");
    let misnamed = ClientTls {
        domain: Some("orgs.example.com".into()),
        ..trusting(&pki)
    };
    for tls in [trusting(&stranger), misnamed] {
        let started = Instant::now();
        let error = OrgClient::connect_with(&endpoint, &options(Some(&secret), tls))
            .await
            .unwrap_err();
        // Not retried for the 10 s connect timeout.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(error, ClientError::TlsHandshake { .. }),
            "{error:?}"
        );
        assert!(error.is_tls_failure());
        assert!(!error.is_transient());
        let causes: Vec<String> =
            std::iter::successors(std::error::Error::source(&error), |cause| cause.source())
                .map(ToString::to_string)
                .collect();
        assert!(
            causes.iter().any(|cause| cause.contains("certificate")),
            "{causes:?}"
        );
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_trusted_client_certificates() {
    require_openssl!();
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue("server");
    let client_pki = Pki::new("client-ca");
    let (client_cert, client_key) = client_pki.issue("client");
    let (secret, authenticator) = ops_token();
    let addr = serve_jobs(
        authenticator,
        Some(server_tls(&cert, &key, Some(&client_pki.ca_pem()))),
    )
    .await;
    let endpoint = format!("localhost:{}", addr.port());

    let with_identity = ClientTls {
        identity: Some((client_cert, client_key)),
        ..trusting(&pki)
    };
    let client = OrgClient::connect_with(&endpoint, &options(Some(&secret), with_identity))
        .await
        .unwrap();
    assert_eq!(client.get_job("j1").await.unwrap().org_id, "ops");

    // A certificate from another CA, or none: the server refuses the
    // handshake (seen at connect, or at the first call with TLS 1.3).
    let (stranger_cert, stranger_key) = pki.issue("stranger");
    let untrusted = ClientTls {
        identity: Some((stranger_cert, stranger_key)),
        ..trusting(&pki)
    };
    for tls in [untrusted, trusting(&pki)] {
        let outcome = async {
            let client = OrgClient::connect_with(
                &endpoint,
                &ConnectOptions {
                    timeout: Duration::from_secs(2),
                    ..options(Some(&secret), tls)
                },
            )
            .await?;
            client.get_job("j1").await
        }
        .await;
        let error = outcome.unwrap_err();
        assert!(error.is_tls_failure(), "{error:?}");
        // Not worth retrying: the same certificate gets the same answer.
        assert!(!error.is_transient(), "{error:?}");
    }
}
