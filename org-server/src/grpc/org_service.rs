//! `orgauth.org.v1.OrgService` over [`App`].

use std::sync::Arc;

use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::org_service_server::OrgService;
use orgauth_runtime::access::caller;
use tonic::{Request, Response, Status};

use super::convert;
use crate::app::App;
use crate::domain::org::{Member, NewOrg, OrgUpdate};
use crate::domain::page::PageRequest;
use crate::error::Error;

pub struct OrgGrpc {
    pub app: Arc<App>,
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl OrgService for OrgGrpc {
    async fn create_org(
        &self,
        request: Request<pb::CreateOrgRequest>,
    ) -> Result<Response<pb::CreateOrgResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let org = request
            .org
            .ok_or_else(|| Error::invalid("org", "required"))?;
        let new = NewOrg::parse(
            org.id,
            org.display_name,
            org.allow_custom_sso,
            request.request_id,
        )?;
        let write = self.app.create_org(&caller, new).await?;
        Ok(Response::new(pb::CreateOrgResponse {
            org: Some(convert::org(&write.org)),
            job_id: write.job_id.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::GetOrgResponse>, Status> {
        let caller = caller(&request)?;
        let org = self
            .app
            .get_org(&caller, &request.into_inner().org_id)
            .await?;
        Ok(Response::new(pb::GetOrgResponse {
            org: Some(convert::org(&org)),
        }))
    }

    async fn list_orgs(
        &self,
        request: Request<pb::ListOrgsRequest>,
    ) -> Result<Response<pb::ListOrgsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.app.list_orgs(&caller, page).await?;
        Ok(Response::new(pb::ListOrgsResponse {
            orgs: page.items.iter().map(convert::org).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_org(
        &self,
        request: Request<pb::UpdateOrgRequest>,
    ) -> Result<Response<pb::UpdateOrgResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let org = request
            .org
            .ok_or_else(|| Error::invalid("org", "required"))?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = OrgUpdate::parse(
            org.id,
            org.display_name,
            org.allow_custom_sso,
            org.etag,
            &paths,
            request.request_id,
        )?;
        let write = self.app.update_org(&caller, update).await?;
        Ok(Response::new(pb::UpdateOrgResponse {
            org: Some(convert::org(&write.org)),
            job_id: write.job_id.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let members: Vec<Member> = request
            .members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                email: m.email,
            })
            .collect();
        let added = self
            .app
            .add_members(&caller, &request.org_id, &members)
            .await?;
        Ok(Response::new(pb::AddMembersResponse {
            added: count(added),
        }))
    }

    async fn remove_members(
        &self,
        request: Request<pb::RemoveMembersRequest>,
    ) -> Result<Response<pb::RemoveMembersResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let removed = self
            .app
            .remove_members(&caller, &request.org_id, &request.member_ids)
            .await?;
        Ok(Response::new(pb::RemoveMembersResponse {
            removed: count(removed),
        }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self
            .app
            .list_members(&caller, &request.org_id, page)
            .await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: page.items.iter().map(convert::member).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
