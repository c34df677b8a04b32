//! [`OrgClient`]: the org-server's `OrgService` and `JobService` behind one
//! cloneable handle, with request builders ([`CreateOrg`], [`UpdateOrg`])
//! and the job helpers (`watch_job`, `wait_for_job`, `update_org_and_wait`).

use futures::{Stream, StreamExt};
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use prost_types::FieldMask;
use tonic::transport::Channel;

use crate::connect::{ClientChannel, ConnectOptions, Credentials, connect_channel};
use crate::error::{ClientError, Result};
use crate::job::{ensure_succeeded, is_terminal};
use crate::page::Page;
use crate::watch::{WatchOptions, watch_job};

/// A client of org-server (`OrgService` and `JobService`).
///
/// Every call (watch reconnections included) carries the client's
/// [`Credentials`]: the bearer token of [`ConnectOptions::token`].
///
/// Cloning is cheap: every clone shares one HTTP/2 connection, on which
/// calls are multiplexed. To run many calls at once, clone the client into
/// each task.
#[derive(Debug, Clone)]
pub struct OrgClient {
    channel: Channel,
    /// Sent with every call.
    credentials: Credentials,
    /// How `watch_job` and the helpers built on it resume a broken stream.
    watch_options: WatchOptions,
}

/// The result of a create or an update: the org as stored, and the job that
/// carries the change to Auth, if the change needs one.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgChange {
    /// The org after the change.
    pub org: pb::Org,
    /// The job to watch; `None` when the change has no side effect on other
    /// services.
    pub job_id: Option<String>,
}

/// A CreateOrg request, built field by field:
/// `CreateOrg::new("Acme").id("acme").allow_custom_sso(true)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateOrg {
    id: String,
    display_name: String,
    allow_custom_sso: bool,
    request_id: String,
}

impl CreateOrg {
    /// An org with this display name, a server-assigned id, and custom SSO
    /// disallowed.
    pub fn new(display_name: impl Into<String>) -> Self {
        Self {
            display_name: display_name.into(),
            ..Self::default()
        }
    }

    /// Chooses the id (`[a-z0-9][a-z0-9-]{0,62}`); empty lets the server
    /// assign one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Whether members may sign in through the org's own SSO provider.
    pub fn allow_custom_sso(mut self, allow: bool) -> Self {
        self.allow_custom_sso = allow;
        self
    }

    /// An idempotency key: retrying with the same key returns the first
    /// response and creates nothing new.
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// The protobuf request.
    pub fn into_request(self) -> pb::CreateOrgRequest {
        pb::CreateOrgRequest {
            org: Some(pb::Org {
                id: self.id,
                display_name: self.display_name,
                allow_custom_sso: self.allow_custom_sso,
                ..pb::Org::default()
            }),
            request_id: self.request_id,
        }
    }
}

/// An UpdateOrg request, built field by field; only the fields set are
/// changed (they make up the update mask):
/// `UpdateOrg::new("acme").allow_custom_sso(false).etag(etag)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateOrg {
    org_id: String,
    display_name: Option<String>,
    allow_custom_sso: Option<bool>,
    etag: String,
    request_id: String,
}

impl UpdateOrg {
    /// An update of this org that changes nothing yet (the server rejects an
    /// empty update with INVALID_ARGUMENT).
    pub fn new(org_id: impl Into<String>) -> Self {
        Self {
            org_id: org_id.into(),
            ..Self::default()
        }
    }

    /// Sets the display name.
    pub fn display_name(mut self, display_name: impl Into<String>) -> Self {
        self.display_name = Some(display_name.into());
        self
    }

    /// Sets whether custom SSO is allowed; turning it off starts a job that
    /// unlinks every member's custom SSO connection.
    pub fn allow_custom_sso(mut self, allow: bool) -> Self {
        self.allow_custom_sso = Some(allow);
        self
    }

    /// Makes the update conditional: ABORTED if the org's etag is no longer
    /// this one. Empty means unconditional.
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = etag.into();
        self
    }

    /// An idempotency key: retrying with the same key returns the first
    /// response, with the same job, and enqueues nothing new.
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// The org being updated.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The update mask: exactly the fields that were set, in a fixed order.
    pub fn update_mask(&self) -> Vec<&'static str> {
        let mut paths = Vec::new();
        if self.display_name.is_some() {
            paths.push("display_name");
        }
        if self.allow_custom_sso.is_some() {
            paths.push("allow_custom_sso");
        }
        paths
    }

    /// The protobuf request.
    pub fn into_request(self) -> pb::UpdateOrgRequest {
        let update_mask = FieldMask {
            paths: self.update_mask().into_iter().map(String::from).collect(),
        };
        pb::UpdateOrgRequest {
            org: Some(pb::Org {
                id: self.org_id,
                display_name: self.display_name.unwrap_or_default(),
                allow_custom_sso: self.allow_custom_sso.unwrap_or_default(),
                etag: self.etag,
                ..pb::Org::default()
            }),
            update_mask: Some(update_mask),
            request_id: self.request_id,
        }
    }
}

impl OrgClient {
    /// Connects to org-server in plaintext without a token, retrying for up
    /// to 10 seconds. Servers that require a token answer every call with
    /// UNAUTHENTICATED: use [`OrgClient::connect_with`] and
    /// [`ConnectOptions::token`].
    pub async fn connect(endpoint: &str) -> Result<Self> {
        Self::connect_with(endpoint, &ConnectOptions::default()).await
    }

    /// Connects to org-server with explicit options: token, TLS, timeouts.
    /// A token that cannot be sent is refused before connecting.
    pub async fn connect_with(endpoint: &str, options: &ConnectOptions) -> Result<Self> {
        let credentials = options.credentials()?;
        let channel = connect_channel(endpoint, options).await?;
        Ok(Self::from_channel(channel).with_credentials(credentials))
    }

    /// Wraps a channel the caller built (a lazy channel, an in-process
    /// transport...). It sends no token until
    /// [`OrgClient::with_credentials`] sets one.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            channel,
            credentials: Credentials::none(),
            watch_options: WatchOptions::default(),
        }
    }

    /// Sets the credentials every call carries, e.g.
    /// `Credentials::bearer(secret)?`.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The credentials every call carries.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sets how watches resume after a broken stream.
    pub fn with_watch_options(mut self, watch_options: WatchOptions) -> Self {
        self.watch_options = watch_options;
        self
    }

    /// The underlying channel. Calls made on it directly carry no token;
    /// [`OrgClient::org_service`] and [`OrgClient::job_service`] do.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The channel with this client's credentials, for other generated
    /// stubs (`FooClient::new(client.authorized_channel())`).
    pub fn authorized_channel(&self) -> ClientChannel {
        ClientChannel::new(self.channel.clone(), self.credentials.clone())
    }

    /// The generated `OrgService` stub, for anything the friendly layer does
    /// not cover. Its calls carry the client's token.
    pub fn org_service(&self) -> OrgServiceClient<ClientChannel> {
        OrgServiceClient::new(self.authorized_channel())
    }

    /// The generated `JobService` stub. Its calls carry the client's token.
    pub fn job_service(&self) -> JobServiceClient<ClientChannel> {
        JobServiceClient::new(self.authorized_channel())
    }

    /// Creates an org. An empty `id` lets the server assign one.
    pub async fn create_org(
        &self,
        id: &str,
        display_name: &str,
        allow_custom_sso: bool,
    ) -> Result<OrgChange> {
        self.create_org_with(
            CreateOrg::new(display_name)
                .id(id)
                .allow_custom_sso(allow_custom_sso),
        )
        .await
    }

    /// Creates an org from a [`CreateOrg`] (for a request id).
    pub async fn create_org_with(&self, create: CreateOrg) -> Result<OrgChange> {
        let response = self
            .org_service()
            .create_org(create.into_request())
            .await?
            .into_inner();
        Ok(OrgChange {
            org: required(response.org, "CreateOrg", "org")?,
            job_id: non_empty(response.job_id),
        })
    }

    /// Returns one org.
    pub async fn get_org(&self, org_id: &str) -> Result<pb::Org> {
        let response = self
            .org_service()
            .get_org(pb::GetOrgRequest {
                org_id: org_id.to_owned(),
            })
            .await?
            .into_inner();
        required(response.org, "GetOrg", "org")
    }

    /// Returns one page of orgs in id order. `page_size` 0 means the
    /// server's default (100); `page_token` is empty for the first page.
    pub async fn list_orgs(&self, page_size: i32, page_token: &str) -> Result<Page<pb::Org>> {
        let response = self
            .org_service()
            .list_orgs(pb::ListOrgsRequest {
                page_size,
                page_token: page_token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.orgs, response.next_page_token))
    }

    /// Updates the fields set in `update`. Returns at once (the request is
    /// O(1) in the size of the org) with the job that carries the change to
    /// Auth, if any.
    pub async fn update_org(&self, update: UpdateOrg) -> Result<OrgChange> {
        let response = self
            .org_service()
            .update_org(update.into_request())
            .await?
            .into_inner();
        Ok(OrgChange {
            org: required(response.org, "UpdateOrg", "org")?,
            job_id: non_empty(response.job_id),
        })
    }

    /// Updates the org, then waits for its job (if any) to end. The job is
    /// returned whatever its end (check its state, or pass it to
    /// [`ensure_succeeded`]).
    pub async fn update_org_and_wait(
        &self,
        update: UpdateOrg,
    ) -> Result<(pb::Org, Option<pb::Job>)> {
        let change = self.update_org(update).await?;
        let job = match change.job_id {
            Some(job_id) => Some(self.wait_for_job(&job_id).await?),
            None => None,
        };
        Ok((change.org, job))
    }

    /// Adds up to 1,000 members; returns how many were new.
    pub async fn add_members(
        &self,
        org_id: &str,
        members: impl IntoIterator<Item = pb::Member>,
    ) -> Result<i32> {
        let response = self
            .org_service()
            .add_members(pb::AddMembersRequest {
                org_id: org_id.to_owned(),
                members: members.into_iter().collect(),
            })
            .await?
            .into_inner();
        Ok(response.added)
    }

    /// Removes up to 1,000 members; returns how many were members.
    pub async fn remove_members(
        &self,
        org_id: &str,
        member_ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<i32> {
        let response = self
            .org_service()
            .remove_members(pb::RemoveMembersRequest {
                org_id: org_id.to_owned(),
                member_ids: member_ids.into_iter().map(Into::into).collect(),
            })
            .await?
            .into_inner();
        Ok(response.removed)
    }

    /// Returns one page of an org's members in id order.
    pub async fn list_members(
        &self,
        org_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<pb::Member>> {
        let response = self
            .org_service()
            .list_members(pb::ListMembersRequest {
                org_id: org_id.to_owned(),
                page_size,
                page_token: page_token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.members, response.next_page_token))
    }

    /// Returns one job.
    pub async fn get_job(&self, job_id: &str) -> Result<pb::Job> {
        let response = self
            .job_service()
            .get_job(pb::GetJobRequest {
                job_id: job_id.to_owned(),
            })
            .await?
            .into_inner();
        required(response.job, "GetJob", "job")
    }

    /// Asks a job to stop. The returned job may still be RUNNING: it stops
    /// at its next batch boundary (watch it to see the end).
    pub async fn cancel_job(&self, job_id: &str) -> Result<pb::Job> {
        let response = self
            .job_service()
            .cancel_job(pb::CancelJobRequest {
                job_id: job_id.to_owned(),
            })
            .await?
            .into_inner();
        required(response.job, "CancelJob", "job")
    }

    /// Returns one page of jobs, newest first. An empty `org_id` means every
    /// org; [`JobState::Unspecified`](pb::JobState::Unspecified) any state.
    pub async fn list_jobs(
        &self,
        org_id: &str,
        state: pb::JobState,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<pb::Job>> {
        let response = self
            .job_service()
            .list_jobs(pb::ListJobsRequest {
                org_id: org_id.to_owned(),
                state: state.into(),
                page_size,
                page_token: page_token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.jobs, response.next_page_token))
    }

    /// Returns one page of the members a job could not process.
    pub async fn list_job_failures(
        &self,
        job_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<pb::MemberFailure>> {
        let response = self
            .job_service()
            .list_job_failures(pb::ListJobFailuresRequest {
                job_id: job_id.to_owned(),
                page_size,
                page_token: page_token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Page::new(response.failures, response.next_page_token))
    }

    /// Watches a job: yields its current state, then every newer state, and
    /// ends after a terminal one (SUCCEEDED, FAILED or CANCELLED).
    ///
    /// A broken stream (server restart, UNAVAILABLE, lost connection) is
    /// resumed with backoff from the last version seen, so versions only
    /// increase and none is yielded twice; the watch gives up with
    /// [`ClientError::WatchInterrupted`] after
    /// [`WatchOptions::retry_budget`] without progress. Other errors
    /// (NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, ...)
    /// end the stream after being yielded. Every reconnection sends the
    /// client's token again.
    pub fn watch_job(
        &self,
        job_id: impl Into<String>,
    ) -> impl Stream<Item = Result<pb::Job>> + Send + Unpin + 'static {
        watch_job(
            self.job_service(),
            job_id.into(),
            self.watch_options.clone(),
        )
    }

    /// Waits for a job to end and returns it in its terminal state, which
    /// may be FAILED or CANCELLED; see [`OrgClient::wait_for_job_success`].
    pub async fn wait_for_job(&self, job_id: &str) -> Result<pb::Job> {
        let mut updates = self.watch_job(job_id);
        while let Some(job) = updates.next().await {
            let job = job?;
            if is_terminal(job.state()) {
                return Ok(job);
            }
        }
        // The watch ends only after a terminal state or an error.
        Err(ClientError::from(tonic::Status::internal(format!(
            "the watch of job {job_id} ended before the job did"
        ))))
    }

    /// Waits for a job to end; FAILED and CANCELLED become
    /// [`ClientError::JobFailed`] and [`ClientError::JobCancelled`].
    pub async fn wait_for_job_success(&self, job_id: &str) -> Result<pb::Job> {
        ensure_succeeded(self.wait_for_job(job_id).await?)
    }
}

/// A message field the contract says is always set.
pub(crate) fn required<T>(field: Option<T>, rpc: &'static str, name: &'static str) -> Result<T> {
    field.ok_or(ClientError::MissingField { rpc, field: name })
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_mask_names_exactly_the_fields_set() {
        assert!(UpdateOrg::new("acme").update_mask().is_empty());
        assert_eq!(
            UpdateOrg::new("acme").allow_custom_sso(false).update_mask(),
            ["allow_custom_sso"]
        );
        assert_eq!(
            UpdateOrg::new("acme").display_name("Acme").update_mask(),
            ["display_name"]
        );
        assert_eq!(
            UpdateOrg::new("acme")
                .allow_custom_sso(true)
                .display_name("Acme")
                .update_mask(),
            ["display_name", "allow_custom_sso"]
        );
    }

    #[test]
    fn etag_and_request_id_are_not_mask_paths() {
        let update = UpdateOrg::new("acme").etag("e1").request_id("r1");
        assert!(update.update_mask().is_empty());
        let request = update.into_request();
        let org = request.org.unwrap();
        assert_eq!(org.etag, "e1");
        assert_eq!(request.request_id, "r1");
    }

    #[test]
    fn update_request_carries_the_values_and_the_mask() {
        let request = UpdateOrg::new("acme")
            .allow_custom_sso(false)
            .into_request();
        let org = request.org.unwrap();
        assert_eq!(org.id, "acme");
        assert!(!org.allow_custom_sso);
        assert_eq!(request.update_mask.unwrap().paths, ["allow_custom_sso"]);
        assert_eq!(request.request_id, "");
    }

    #[test]
    fn create_request_defaults_to_a_server_assigned_id() {
        let request = CreateOrg::new("Acme").into_request();
        let org = request.org.unwrap();
        assert_eq!(org.id, "");
        assert_eq!(org.display_name, "Acme");
        assert!(!org.allow_custom_sso);

        let request = CreateOrg::new("Acme")
            .id("acme")
            .allow_custom_sso(true)
            .request_id("r1")
            .into_request();
        assert_eq!(request.request_id, "r1");
        let org = request.org.unwrap();
        assert_eq!((org.id.as_str(), org.allow_custom_sso), ("acme", true));
    }

    #[test]
    fn empty_job_id_means_no_job() {
        assert_eq!(non_empty(String::new()), None);
        assert_eq!(non_empty("j1".into()), Some("j1".into()));
    }
}
