//! `orgctl auth …`: SSO policies, links, connections and login checks in
//! auth-server. Org-server keeps each org's policy in line with the org's
//! `allow_custom_sso`; setting it here by hand is for tests and repairs.

use clap::{ArgAction, Subcommand};
use serde_json::json;

use super::output::{CONNECTIONS, UNLINK_RESULTS, policy_json, policy_text};
use super::{CliError, Context, ExitStatus, PageArgs, list_pages};

/// The most member ids one LinkSso or BatchUnlinkSso call accepts.
const MAX_PER_CALL: usize = 1_000;

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// An org's SSO policy as Auth enforces it.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Link members to the org's custom SSO (FAILED_PRECONDITION while the
    /// org's policy disallows it).
    Link {
        /// The org id.
        org_id: String,
        /// The member ids.
        #[arg(required = true)]
        member_ids: Vec<String>,
    },
    /// Unlink members' custom SSO connections (BatchUnlinkSso); prints one
    /// outcome per member.
    Unlink {
        /// The org id.
        org_id: String,
        /// The member ids.
        #[arg(required = true)]
        member_ids: Vec<String>,
    },
    /// List an org's SSO connections, or just count them.
    Connections {
        /// The org id.
        org_id: String,
        /// Print only how many connections the org has.
        #[arg(long, conflicts_with_all = ["page_size", "page_token", "all"])]
        count: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// May this member sign in through custom SSO right now?
    Check {
        /// The org id.
        org_id: String,
        /// The member id.
        member_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the policy (an org Auth never heard of disallows custom SSO).
    Get {
        /// The org id.
        org_id: String,
    },
    /// Set the policy directly in Auth.
    Set {
        /// The org id.
        org_id: String,
        /// Whether custom SSO is allowed.
        #[arg(action = ArgAction::Set, value_name = "true|false")]
        allow_custom_sso: bool,
    },
}

pub async fn run(command: AuthCommand, context: &Context) -> Result<ExitStatus, CliError> {
    let output = context.output;
    let client = context.auth_client().await?;
    match command {
        AuthCommand::Policy(PolicyCommand::Get { org_id }) => {
            let policy = client.get_policy(&org_id).await?;
            output.record(policy_text(&policy), policy_json(&policy));
        }
        AuthCommand::Policy(PolicyCommand::Set {
            org_id,
            allow_custom_sso,
        }) => {
            let policy = client.set_policy(&org_id, allow_custom_sso).await?;
            output.record(policy_text(&policy), policy_json(&policy));
        }
        AuthCommand::Link { org_id, member_ids } => {
            let requested = member_ids.len();
            let mut linked = 0_i64;
            for chunk in member_ids.chunks(MAX_PER_CALL) {
                linked += i64::from(client.link_sso(&org_id, chunk.to_vec()).await?);
            }
            output.record(
                format!("linked {linked} of {requested} members in {org_id}"),
                json!({ "org_id": org_id, "requested": requested, "linked": linked }),
            );
        }
        AuthCommand::Unlink { org_id, member_ids } => {
            let mut listing = output.list(UNLINK_RESULTS);
            for chunk in member_ids.chunks(MAX_PER_CALL) {
                match client.batch_unlink(&org_id, chunk.to_vec()).await {
                    Ok(results) => results.iter().for_each(|result| listing.push(result)),
                    Err(error) => {
                        listing.abandon();
                        return Err(error.into());
                    }
                }
            }
            listing.finish();
        }
        AuthCommand::Connections {
            org_id,
            count: true,
            ..
        } => {
            let count = client.count_connections(&org_id).await?;
            output.record(count, json!({ "org_id": org_id, "count": count }));
        }
        AuthCommand::Connections { org_id, page, .. } => {
            list_pages(&page, output, CONNECTIONS, |page_size, token| {
                let client = client.clone();
                let org_id = org_id.clone();
                async move { client.list_connections(&org_id, page_size, &token).await }
            })
            .await?;
        }
        AuthCommand::Check { org_id, member_id } => {
            let check = client.check_login(&org_id, &member_id).await?;
            let text = if check.allowed {
                "allowed".to_owned()
            } else {
                format!("denied reason={}", check.reason)
            };
            output.record(
                text,
                json!({
                    "org_id": org_id,
                    "member_id": member_id,
                    "allowed": check.allowed,
                    "reason": check.reason,
                }),
            );
        }
    }
    Ok(ExitStatus::Success)
}
