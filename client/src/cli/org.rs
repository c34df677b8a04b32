//! `orgctl org …`: create, get, list and update organizations.

use std::time::Instant;

use clap::{ArgAction, ArgGroup, Subcommand};
use orgauth_client::{CreateOrg, OrgChange, UpdateOrg};
use serde_json::json;

use super::output::{ORGS, org_json, org_text, print_line};
use super::watch::{Follow, follow_job};
use super::{CliError, Context, ExitStatus, PageArgs, list_pages};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization. Prints the org and the id of the job that
    /// brings Auth in line, if any.
    Create {
        /// The org id: 1 to 63 of a-z, 0-9 and "-", not starting with "-";
        /// the server assigns one when omitted.
        #[arg(long)]
        id: Option<String>,
        /// Human-readable name.
        #[arg(long)]
        display_name: String,
        /// Whether members may sign in through the org's own SSO provider.
        #[arg(long, action = ArgAction::Set, value_name = "true|false", default_value_t = false)]
        allow_custom_sso: bool,
        /// Idempotency key: the same key again returns the first response.
        #[arg(long)]
        request_id: Option<String>,
        /// Then follow the job, if any, like `job watch`.
        #[arg(long)]
        watch: bool,
    },
    /// Show one organization.
    Get {
        /// The org id.
        org_id: String,
    },
    /// List organizations in id order.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change an organization's settings. Only the fields given change.
    /// Prints the org, the job id and how long the UpdateOrg call took
    /// (it never waits for the job; add --watch to follow it).
    #[command(group(
        ArgGroup::new("change")
            .args(["display_name", "allow_custom_sso"])
            .required(true)
            .multiple(true)
    ))]
    Update {
        /// The org id.
        org_id: String,
        /// New human-readable name.
        #[arg(long)]
        display_name: Option<String>,
        /// Allow or disallow custom SSO; disallowing starts a job that
        /// unlinks every member's custom SSO connection.
        #[arg(long, action = ArgAction::Set, value_name = "true|false")]
        allow_custom_sso: Option<bool>,
        /// Update only if the org's etag is still this one (ABORTED if not).
        #[arg(long)]
        etag: Option<String>,
        /// Idempotency key: the same key again returns the first response
        /// (with the same job) and changes nothing.
        #[arg(long)]
        request_id: Option<String>,
        /// Then follow the job, if any, like `job watch`.
        #[arg(long)]
        watch: bool,
    },
}

pub async fn run(command: OrgCommand, context: &Context) -> Result<ExitStatus, CliError> {
    let output = context.output;
    let client = context.org_client().await?;
    match command {
        OrgCommand::Create {
            id,
            display_name,
            allow_custom_sso,
            request_id,
            watch,
        } => {
            let mut create = CreateOrg::new(display_name).allow_custom_sso(allow_custom_sso);
            if let Some(id) = id {
                create = create.id(id);
            }
            if let Some(request_id) = request_id {
                create = create.request_id(request_id);
            }
            let started = Instant::now();
            let change = client.create_org_with(create).await?;
            print_change(context, "CreateOrg", &change, started.elapsed());
            follow_if_asked(context, &client, change.job_id, watch).await
        }
        OrgCommand::Get { org_id } => {
            let org = client.get_org(&org_id).await?;
            output.record(org_text(&org), org_json(&org));
            Ok(ExitStatus::Success)
        }
        OrgCommand::List { page } => {
            list_pages(&page, output, ORGS, |page_size, token| {
                let client = client.clone();
                async move { client.list_orgs(page_size, &token).await }
            })
            .await?;
            Ok(ExitStatus::Success)
        }
        OrgCommand::Update {
            org_id,
            display_name,
            allow_custom_sso,
            etag,
            request_id,
            watch,
        } => {
            let mut update = UpdateOrg::new(org_id);
            if let Some(display_name) = display_name {
                update = update.display_name(display_name);
            }
            if let Some(allow) = allow_custom_sso {
                update = update.allow_custom_sso(allow);
            }
            if let Some(etag) = etag {
                update = update.etag(etag);
            }
            if let Some(request_id) = request_id {
                update = update.request_id(request_id);
            }
            let started = Instant::now();
            let change = client.update_org(update).await?;
            print_change(context, "UpdateOrg", &change, started.elapsed());
            follow_if_asked(context, &client, change.job_id, watch).await
        }
    }
}

/// Prints the org, its job and the call's latency: three text lines, or
/// one JSON object `{"org": …, "job_id": …|null, "latency_ms": …}`.
fn print_change(context: &Context, rpc: &str, change: &OrgChange, latency: std::time::Duration) {
    // Microsecond precision is plenty, and keeps the JSON number short.
    let latency_ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1_000.0;
    if context.output.is_json() {
        print_line(json!({
            "org": org_json(&change.org),
            "job_id": change.job_id,
            "latency_ms": latency_ms,
        }));
        return;
    }
    print_line(org_text(&change.org));
    match &change.job_id {
        Some(job_id) => print_line(format!("job {job_id}")),
        None => print_line("job none (no side effect on other services)"),
    }
    print_line(format!("{rpc} took {latency_ms:.2} ms"));
}

async fn follow_if_asked(
    context: &Context,
    client: &orgauth_client::OrgClient,
    job_id: Option<String>,
    watch: bool,
) -> Result<ExitStatus, CliError> {
    match job_id {
        Some(job_id) if watch => {
            follow_job(client, &job_id, context.output, Follow::EveryUpdate).await
        }
        _ => Ok(ExitStatus::Success),
    }
}
