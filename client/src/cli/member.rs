//! `orgctl member …`: add, remove and list members, and `seed` to fill an
//! org with many generated members (and optionally link them in Auth) for
//! trying out large unlink jobs.

use clap::Subcommand;
use futures::{StreamExt, TryStreamExt};
use orgauth_client::pb::org::Member;
use orgauth_client::{ClientError, OrgClient};
use serde_json::json;
use tonic::Code;

use super::output::{MEMBERS, print_line};
use super::progress::{Meter, rate};
use super::{CliError, Context, ExitStatus, PageArgs, list_pages};

/// The most members (or ids) one AddMembers, RemoveMembers or LinkSso call
/// accepts.
const MAX_PER_CALL: usize = 1_000;

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add members (in calls of up to 1,000). Existing members are left
    /// unchanged and not counted as added.
    Add {
        /// The org id.
        org_id: String,
        /// A member as ID or ID:EMAIL; repeat for more.
        #[arg(long = "member", short = 'm', value_name = "ID[:EMAIL]", required = true, value_parser = parse_member)]
        members: Vec<Member>,
    },
    /// Remove members by id (unknown ids are ignored).
    Remove {
        /// The org id.
        org_id: String,
        /// The member ids.
        #[arg(required = true)]
        member_ids: Vec<String>,
    },
    /// List an org's members in id order.
    List {
        /// The org id.
        org_id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add COUNT generated members PREFIX0000001, PREFIX0000002, … in
    /// 1,000-member calls, several in flight. With --link, also link each of
    /// them to the org's custom SSO in Auth (which fails with
    /// FAILED_PRECONDITION while the org disallows custom SSO). Safe to
    /// re-run: existing members and links are left as they are.
    Seed {
        /// The org id.
        org_id: String,
        /// How many members.
        #[arg(long)]
        count: u64,
        /// Member id prefix.
        #[arg(long, default_value = "m")]
        prefix: String,
        /// Number of the first member.
        #[arg(long, default_value_t = 1)]
        start: u64,
        /// Members per call (at most 1,000).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        batch_size: u64,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
        parallel: u64,
        /// Also link every member to the org's custom SSO in Auth.
        #[arg(long)]
        link: bool,
    },
}

fn parse_member(value: &str) -> Result<Member, String> {
    let (id, email) = value.split_once(':').unwrap_or((value, ""));
    if id.is_empty() {
        return Err("the member id is empty".to_owned());
    }
    Ok(Member {
        id: id.to_owned(),
        email: email.to_owned(),
    })
}

/// The id of the `number`th generated member: `m0000001`.
fn seed_member_id(prefix: &str, number: u64) -> String {
    format!("{prefix}{number:07}")
}

/// The id ranges of the seed batches: `[start, end)` pairs of at most
/// `batch_size` numbers covering `count` numbers from `start`.
fn seed_batches(start: u64, count: u64, batch_size: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = start.saturating_add(count);
    (start..end)
        .step_by(usize::try_from(batch_size.max(1)).unwrap_or(MAX_PER_CALL))
        .map(move |first| (first, first.saturating_add(batch_size).min(end)))
}

pub async fn run(command: MemberCommand, context: &Context) -> Result<ExitStatus, CliError> {
    let output = context.output;
    match command {
        MemberCommand::Add { org_id, members } => {
            let client = context.org_client().await?;
            let requested = members.len();
            let mut added = 0_i64;
            for chunk in members.chunks(MAX_PER_CALL) {
                added += i64::from(client.add_members(&org_id, chunk.to_vec()).await?);
            }
            output.record(
                format!("added {added} of {requested} members to {org_id}"),
                json!({ "org_id": org_id, "requested": requested, "added": added }),
            );
            Ok(ExitStatus::Success)
        }
        MemberCommand::Remove { org_id, member_ids } => {
            let client = context.org_client().await?;
            let requested = member_ids.len();
            let mut removed = 0_i64;
            for chunk in member_ids.chunks(MAX_PER_CALL) {
                removed += i64::from(client.remove_members(&org_id, chunk.to_vec()).await?);
            }
            output.record(
                format!("removed {removed} of {requested} members from {org_id}"),
                json!({ "org_id": org_id, "requested": requested, "removed": removed }),
            );
            Ok(ExitStatus::Success)
        }
        MemberCommand::List { org_id, page } => {
            let client = context.org_client().await?;
            list_pages(&page, output, MEMBERS, |page_size, token| {
                let client = client.clone();
                let org_id = org_id.clone();
                async move { client.list_members(&org_id, page_size, &token).await }
            })
            .await?;
            Ok(ExitStatus::Success)
        }
        MemberCommand::Seed {
            org_id,
            count,
            prefix,
            start,
            batch_size,
            parallel,
            link,
        } => {
            let plan = SeedPlan {
                org_id,
                count,
                prefix,
                start,
                batch_size,
                parallel: usize::try_from(parallel).unwrap_or(1),
            };
            seed(plan, link, context).await
        }
    }
}

struct SeedPlan {
    org_id: String,
    count: u64,
    prefix: String,
    start: u64,
    batch_size: u64,
    parallel: usize,
}

impl SeedPlan {
    fn ids(&self, (first, end): (u64, u64)) -> Vec<String> {
        (first..end)
            .map(|number| seed_member_id(&self.prefix, number))
            .collect()
    }
}

async fn seed(plan: SeedPlan, link: bool, context: &Context) -> Result<ExitStatus, CliError> {
    let org_client = context.org_client().await?;
    // Connect to Auth before adding anything, so a wrong --auth-endpoint
    // fails fast rather than after a long seed.
    let auth_client = if link {
        Some(context.auth_client().await?)
    } else {
        None
    };

    let (added, add_time) = add_seed_members(&org_client, &plan).await?;
    let org_id = &plan.org_id;
    let requested = plan.count;
    if !context.output.is_json() {
        print_line(format!(
            "added {added} new members to {org_id} ({requested} requested) in {:.2}s ({})",
            add_time.as_secs_f64(),
            rate(requested, add_time)
        ));
    }

    let mut linked = None;
    if let Some(auth_client) = auth_client {
        let (newly_linked, link_time) = link_seed_members(&auth_client, &plan).await?;
        if !context.output.is_json() {
            print_line(format!(
                "linked {newly_linked} new SSO connections in {org_id} ({requested} requested) in {:.2}s ({})",
                link_time.as_secs_f64(),
                rate(requested, link_time)
            ));
        }
        linked = Some((newly_linked, link_time.as_secs_f64()));
    }

    if context.output.is_json() {
        print_line(json!({
            "org_id": org_id,
            "requested": requested,
            "added": added,
            "add_seconds": add_time.as_secs_f64(),
            "linked": linked.map(|(count, _)| count),
            "link_seconds": linked.map(|(_, seconds)| seconds),
        }));
    }
    Ok(ExitStatus::Success)
}

async fn add_seed_members(
    client: &OrgClient,
    plan: &SeedPlan,
) -> Result<(i64, std::time::Duration), CliError> {
    let mut meter = Meter::new("adding members", plan.count);
    let mut calls = futures::stream::iter(seed_batches(plan.start, plan.count, plan.batch_size))
        .map(|batch| {
            let client = client.clone();
            let members: Vec<Member> = plan
                .ids(batch)
                .into_iter()
                .map(|id| Member {
                    id,
                    email: String::new(),
                })
                .collect();
            let org_id = plan.org_id.clone();
            async move {
                let sent = members.len() as u64;
                let added = client.add_members(&org_id, members).await?;
                Ok::<_, ClientError>((sent, added))
            }
        })
        .buffer_unordered(plan.parallel);
    let mut added = 0_i64;
    loop {
        match calls.try_next().await {
            Ok(Some((sent, newly_added))) => {
                meter.add(sent);
                added += i64::from(newly_added);
            }
            Ok(None) => break,
            Err(error) => {
                let hint = format!(
                    "{} of {} members were sent before the error; re-running the seed is safe",
                    meter.done(),
                    plan.count
                );
                meter.finish();
                return Err(CliError::from(error).with_hint(hint));
            }
        }
    }
    Ok((added, meter.finish()))
}

async fn link_seed_members(
    client: &orgauth_client::AuthClient,
    plan: &SeedPlan,
) -> Result<(i64, std::time::Duration), CliError> {
    let mut meter = Meter::new("linking SSO", plan.count);
    let mut calls = futures::stream::iter(seed_batches(plan.start, plan.count, plan.batch_size))
        .map(|batch| {
            let client = client.clone();
            let ids = plan.ids(batch);
            let org_id = plan.org_id.clone();
            async move {
                let sent = ids.len() as u64;
                let linked = client.link_sso(&org_id, ids).await?;
                Ok::<_, ClientError>((sent, linked))
            }
        })
        .buffer_unordered(plan.parallel);
    let mut linked = 0_i64;
    loop {
        match calls.try_next().await {
            Ok(Some((sent, newly_linked))) => {
                meter.add(sent);
                linked += i64::from(newly_linked);
            }
            Ok(None) => break,
            Err(error) => {
                let hint = if error.code() == Code::FailedPrecondition {
                    format!(
                        "Auth's policy for {org} disallows custom SSO, so members cannot be linked. \
                         Allow it on the org (the source of truth) and wait for its job: \
                         orgctl org update {org} --allow-custom-sso true --watch",
                        org = plan.org_id
                    )
                } else {
                    format!(
                        "{} of {} members were linked before the error; re-running is safe",
                        meter.done(),
                        plan.count
                    )
                };
                meter.finish();
                return Err(CliError::from(error).with_hint(hint));
            }
        }
    }
    Ok((linked, meter.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_with_and_without_email() {
        assert_eq!(
            parse_member("m1:m1@example.com").unwrap(),
            Member {
                id: "m1".into(),
                email: "m1@example.com".into()
            }
        );
        assert_eq!(parse_member("m2").unwrap().email, "");
        assert!(parse_member(":x@example.com").is_err());
    }

    #[test]
    fn seed_ids_are_zero_padded() {
        assert_eq!(seed_member_id("m", 1), "m0000001");
        assert_eq!(seed_member_id("user-", 1_234_567), "user-1234567");
    }

    #[test]
    fn seed_batches_cover_the_range_in_calls_of_at_most_batch_size() {
        let batches: Vec<_> = seed_batches(1, 2_500, 1_000).collect();
        assert_eq!(batches, [(1, 1_001), (1_001, 2_001), (2_001, 2_501)]);
        assert_eq!(seed_batches(1, 0, 1_000).count(), 0);
        assert_eq!(seed_batches(5, 3, 1_000).collect::<Vec<_>>(), [(5, 8)]);
    }
}
