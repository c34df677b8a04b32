//! Shared by the client's integration tests: a small JobService behind the
//! servers' own bearer-token authenticator, served in plaintext, TLS or
//! mutual TLS, and a throwaway CA made with the `openssl` command.

// Test helpers outside #[test] functions are not covered by clippy.toml's
// allow-unwrap-in-tests; a panic is the right failure here too.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use orgauth_client::org::v1 as pb;
use orgauth_client::org::v1::job_service_server::{JobService, JobServiceServer};
use orgauth_runtime::access::{Authenticator, caller};
use orgauth_runtime::status::Problem;
use orgauth_security::token::issue;
use orgauth_security::{Role, TokenSet};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

pub const DOMAIN: &str = "orgauth.org.v1";

/// GetJob answers with a job whose `org_id` is the caller's name, or
/// PERMISSION_DENIED (ORG_ACCESS_DENIED) for job "forbidden", or
/// INVALID_ARGUMENT naming `job_id` for job "bad". WatchJob of job
/// "failed", "cancelled" or "succeeded" sends one RUNNING state, then that
/// final state.
#[derive(Clone)]
pub struct NamingJobs;

#[tonic::async_trait]
impl JobService for NamingJobs {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = caller(&request)?;
        let job_id = request.into_inner().job_id;
        match job_id.as_str() {
            "forbidden" => Err(Problem::new(DOMAIN, "ORG_ACCESS_DENIED").status(
                Code::PermissionDenied,
                format!("token {:?} may not read job forbidden", caller.name),
            )),
            "bad" => Err(Problem::new(DOMAIN, "INVALID_FIELD")
                .field("job_id", "not a UUID")
                .status(Code::InvalidArgument, "job_id: not a UUID")),
            _ => Ok(Response::new(pb::GetJobResponse {
                job: Some(pb::Job {
                    id: job_id,
                    org_id: caller.name.to_string(),
                    ..pb::Job::default()
                }),
            })),
        }
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchJobStream =
        futures::stream::Iter<std::vec::IntoIter<Result<pb::WatchJobResponse, Status>>>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job_id = request.into_inner().job_id;
        let end = match job_id.as_str() {
            "failed" => pb::JobState::Failed,
            "cancelled" => pb::JobState::Cancelled,
            "succeeded" => pb::JobState::Succeeded,
            _ => return Err(Status::unimplemented("fake")),
        };
        let states = [(1, pb::JobState::Running), (2, end)].map(|(version, state)| {
            let mut job = pb::Job {
                id: job_id.clone(),
                org_id: "acme".into(),
                total_members: 10,
                processed_members: 10 * i64::from(version == 2),
                version,
                ..pb::Job::default()
            };
            job.set_state(state);
            Ok(pb::WatchJobResponse { job: Some(job) })
        });
        Ok(Response::new(futures::stream::iter(states.to_vec())))
    }

    async fn list_job_failures(
        &self,
        _: Request<pb::ListJobFailuresRequest>,
    ) -> Result<Response<pb::ListJobFailuresResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A tokens file with one admin token named "ops"; returns its secret and
/// the authenticator that accepts it.
pub fn ops_token() -> (String, Authenticator) {
    let token = issue("ops", Role::Admin, &[], None).unwrap();
    let tokens = TokenSet::parse(&token.line).unwrap();
    (token.secret, Authenticator::new(tokens, DOMAIN))
}

/// Serves [`NamingJobs`] behind `authenticator` on 127.0.0.1, with TLS if
/// given.
pub async fn serve_jobs(authenticator: Authenticator, tls: Option<ServerTlsConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let service = JobServiceServer::with_interceptor(NamingJobs, authenticator);
    tokio::spawn(
        builder
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A CA and the certificates it signed, as PEM files in a temporary
/// directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// Whether the `openssl` command is there to make certificates.
    pub fn available() -> bool {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// A CA named `name` (`{name}.pem`, `{name}.key`).
    pub fn new(name: &str) -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
        std::fs::write(pki.path("ca-name"), name).unwrap();
        pki
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.path(&format!("{}.pem", self.ca_name()))
    }

    fn ca_name(&self) -> String {
        std::fs::read_to_string(self.path("ca-name")).unwrap()
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A certificate `{name}.pem` / `{name}.key` signed by this CA, for
    /// localhost and 127.0.0.1, usable by servers and clients.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let ca = self.ca_name();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(
            self.path(&format!("{name}.ext")),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The server side: this identity, and for mutual TLS, this client CA.
pub fn server_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> ServerTlsConfig {
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert), read(key)));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)));
    }
    tls
}
