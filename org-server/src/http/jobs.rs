//! `GET /v1/jobs/{id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::Authed;
use super::errors::ApiError;
use super::{Gateway, json, path_id};
use crate::domain::job::parse_job_id;

pub async fn get(
    State(gateway): State<Gateway>,
    Authed(caller): Authed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let job_id = parse_job_id("id", &path_id(id)?)?;
    let job = gateway.app.get_job(&caller, job_id).await?;
    Ok(json::respond(StatusCode::OK, &json::job(&job)))
}
