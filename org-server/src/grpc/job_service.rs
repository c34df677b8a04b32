//! `orgauth.org.v1.JobService` over [`App`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_server::JobService;
use orgauth_runtime::access::caller;
use tonic::{Request, Response, Status};

use super::convert;
use crate::app::App;
use crate::domain::job::{JobFilter, parse_job_id};
use crate::domain::page::PageRequest;

pub struct JobGrpc {
    pub app: Arc<App>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobGrpc {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = caller(&request)?;
        let job_id = parse_job_id("job_id", &request.into_inner().job_id)?;
        let job = self.app.get_job(&caller, job_id).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(convert::job(&job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let filter = JobFilter {
            org_id: (!request.org_id.is_empty()).then_some(request.org_id),
            state: convert::job_state_filter(request.state)?,
            within: None,
        };
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.app.list_jobs(&caller, filter, page).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.items.iter().map(convert::job).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = caller(&request)?;
        let job_id = parse_job_id("job_id", &request.into_inner().job_id)?;
        let job = self.app.cancel_job(&caller, job_id).await?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(convert::job(&job)),
        }))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let job_id = parse_job_id("job_id", &request.job_id)?;
        let watch = self
            .app
            .watch_job(&caller, job_id, request.since_version)
            .await?;
        // The stream owns the watch: when the client goes away tonic drops
        // the stream, and with it the subscription, at once.
        let stream = futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            let message = item
                .map(|job| pb::WatchJobResponse {
                    job: Some(convert::job(&job)),
                })
                .map_err(Status::from);
            Some((message, watch))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_job_failures(
        &self,
        request: Request<pb::ListJobFailuresRequest>,
    ) -> Result<Response<pb::ListJobFailuresResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let job_id = parse_job_id("job_id", &request.job_id)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.app.list_job_failures(&caller, job_id, page).await?;
        Ok(Response::new(pb::ListJobFailuresResponse {
            failures: page.items.iter().map(convert::failure).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
