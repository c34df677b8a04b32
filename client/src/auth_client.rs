//! [`AuthClient`]: a thin, cloneable handle on auth-server's `AuthService`.

use orgauth_proto::auth::v1 as pb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;

use crate::connect::{ClientChannel, ConnectOptions, Credentials, connect_channel};
use crate::error::Result;
use crate::org_client::required;
use crate::page::Page;

/// A client of auth-server. Every call carries the client's
/// [`Credentials`]. Cloning is cheap (one shared HTTP/2 connection).
///
/// auth-server accepts `SetOrgSsoPolicy` and `BatchUnlinkSso` only from the
/// `service` role (org-server's identity); the other RPCs follow the same
/// role rules as org-server.
#[derive(Debug, Clone)]
pub struct AuthClient {
    channel: Channel,
    credentials: Credentials,
}

impl AuthClient {
    /// Connects to auth-server in plaintext without a token, retrying for
    /// up to 10 seconds; see [`AuthClient::connect_with`].
    pub async fn connect(endpoint: &str) -> Result<Self> {
        Self::connect_with(endpoint, &ConnectOptions::default()).await
    }

    /// Connects to auth-server with explicit options: token, TLS, timeouts.
    pub async fn connect_with(endpoint: &str, options: &ConnectOptions) -> Result<Self> {
        let credentials = options.credentials()?;
        let channel = connect_channel(endpoint, options).await?;
        Ok(Self::from_channel(channel).with_credentials(credentials))
    }

    /// Wraps a channel the caller built; it sends no token until
    /// [`AuthClient::with_credentials`] sets one.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            channel,
            credentials: Credentials::none(),
        }
    }

    /// Sets the credentials every call carries.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The credentials every call carries.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The underlying channel. Calls made on it directly carry no token.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The channel with this client's credentials.
    pub fn authorized_channel(&self) -> ClientChannel {
        ClientChannel::new(self.channel.clone(), self.credentials.clone())
    }

    /// The generated `AuthService` stub, for anything not covered here.
    /// Its calls carry the client's token.
    pub fn auth_service(&self) -> AuthServiceClient<ClientChannel> {
        AuthServiceClient::new(self.authorized_channel())
    }

    /// Sets whether an org allows custom SSO; returns the policy in force.
    ///
    /// Org-server keeps this in line with the org's `allow_custom_sso`
    /// (the source of truth); setting it by hand is for tests and repairs.
    pub async fn set_policy(&self, org_id: &str, allow_custom_sso: bool) -> Result<pb::SsoPolicy> {
        let response = self
            .auth_service()
            .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
                org_id: org_id.to_owned(),
                allow_custom_sso,
            })
            .await?
            .into_inner();
        required(response.policy, "SetOrgSsoPolicy", "policy")
    }

    /// Returns an org's SSO policy (disallowed for an org Auth never heard of).
    pub async fn get_policy(&self, org_id: &str) -> Result<pb::SsoPolicy> {
        let response = self
            .auth_service()
            .get_org_sso_policy(pb::GetOrgSsoPolicyRequest {
                org_id: org_id.to_owned(),
            })
            .await?
            .into_inner();
        required(response.policy, "GetOrgSsoPolicy", "policy")
    }

    /// Links up to 1,000 members to the org's custom IdP; returns how many
    /// were newly linked. FAILED_PRECONDITION when the org's policy
    /// disallows custom SSO.
    pub async fn link_sso(
        &self,
        org_id: &str,
        member_ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<i32> {
        let response = self
            .auth_service()
            .link_sso(pb::LinkSsoRequest {
                org_id: org_id.to_owned(),
                member_ids: member_ids.into_iter().map(Into::into).collect(),
            })
            .await?
            .into_inner();
        Ok(response.linked)
    }

    /// Returns one page of an org's SSO connections in member id order,
    /// with the org's total in [`Page::total_size`].
    pub async fn list_connections(
        &self,
        org_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<pb::SsoConnection>> {
        let response = self
            .auth_service()
            .list_sso_connections(pb::ListSsoConnectionsRequest {
                org_id: org_id.to_owned(),
                page_size,
                page_token: page_token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Page {
            total_size: Some(response.total_size),
            ..Page::new(response.connections, response.next_page_token)
        })
    }

    /// How many SSO connections an org has (one call, reading `total_size`).
    pub async fn count_connections(&self, org_id: &str) -> Result<i64> {
        let page = self.list_connections(org_id, 1, "").await?;
        Ok(page.total_size.unwrap_or_default())
    }

    /// Whether a member may sign in through custom SSO right now, and why
    /// not (`reason`) when not.
    pub async fn check_login(
        &self,
        org_id: &str,
        member_id: &str,
    ) -> Result<pb::CheckSsoLoginResponse> {
        let response = self
            .auth_service()
            .check_sso_login(pb::CheckSsoLoginRequest {
                org_id: org_id.to_owned(),
                member_id: member_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response)
    }

    /// Unlinks up to 1,000 members; one result per member, in request order.
    pub async fn batch_unlink(
        &self,
        org_id: &str,
        member_ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Vec<pb::UnlinkResult>> {
        let response = self
            .auth_service()
            .batch_unlink_sso(pb::BatchUnlinkSsoRequest {
                org_id: org_id.to_owned(),
                member_ids: member_ids.into_iter().map(Into::into).collect(),
            })
            .await?
            .into_inner();
        Ok(response.results)
    }
}
