//! `hyprbox backups`: HyprVault policies (`list`, `show`, `create`, `trigger`) and their runs
//! (`runs`).

use hyprbox_proto::backups::CreatePolicy;

use super::{Target, cell, connect, print_json, print_list};

#[derive(clap::Args, Debug)]
pub struct BackupsArgs {
    #[command(subcommand)]
    command: BackupsCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand, Debug)]
enum BackupsCommand {
    /// Your backup policies (an ADMIN's: all).
    List {
        /// Only this node's policies.
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One policy, its next run and its newest runs.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A new policy: restic backs up PATHs of NODE to REPO, on SCHEDULE (cron, UTC) or when triggered.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        node: String,
        /// An absolute path to back up; repeat for several.
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// The restic repository: a local path, or sftp:, rest:, s3:, b2:, azure:, gs:, rclone:.
        #[arg(long)]
        repo: String,
        /// Where the agent finds the repository password on the node: file:/path or env:NAME.
        #[arg(long)]
        password_ref: Option<String>,
        /// A 5-field cron expression, in UTC (e.g. "0 3 * * *").
        #[arg(long)]
        schedule: Option<String>,
        #[arg(long)]
        keep_daily: Option<i64>,
        #[arg(long)]
        keep_weekly: Option<i64>,
        #[arg(long)]
        keep_monthly: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Run a policy's backup now (answers the job already queued or running, if any).
    Trigger {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A policy's newest runs (at most 20), newest first.
    Runs {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

const RUN_COLUMNS: &[(&str, &str)] = &[
    ("RUN", "id"),
    ("STATUS", "status"),
    ("STARTED", "startedAt"),
    ("FINISHED", "finishedAt"),
    ("SNAPSHOT", "snapshotId"),
    ("BYTES", "sizeBytes"),
    ("FILES", "filesCount"),
    ("ERROR", "error"),
];

pub async fn run(args: BackupsArgs) -> anyhow::Result<()> {
    let api = connect(&args.target)?;
    match args.command {
        BackupsCommand::List { node, json } => {
            let body = api.backup_policies(node.as_deref()).await?;
            print_list(
                &body,
                json,
                "policies",
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("NODE", "nodeId"),
                    ("SCHEDULE", "schedule"),
                    ("NEXT RUN", "nextRunAt"),
                    ("LAST SUCCESS", "lastSuccessAt"),
                    ("REPOSITORY", "repoUrl"),
                ],
            );
        }
        BackupsCommand::Show { id, json } => {
            let body = api.backup_policy(&id).await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let policy = serde_json::to_value(&body.policy)?;
            for (label, field) in [
                ("id", "id"),
                ("name", "name"),
                ("node", "nodeId"),
                ("paths", "paths"),
                ("repository", "repoUrl"),
                ("password", "passwordRef"),
                ("schedule", "schedule"),
                ("next run", "nextRunAt"),
                ("keep daily", "keepDaily"),
                ("keep weekly", "keepWeekly"),
                ("keep monthly", "keepMonthly"),
                ("last success", "lastSuccessAt"),
            ] {
                println!("{label:<13} {}", cell(&policy[field]));
            }
            println!();
            print_list(&body, false, "runs", RUN_COLUMNS);
        }
        BackupsCommand::Create {
            name,
            node,
            paths,
            repo,
            password_ref,
            schedule,
            keep_daily,
            keep_weekly,
            keep_monthly,
            json,
        } => {
            let body = CreatePolicy {
                name,
                node_id: node,
                paths,
                schedule,
                repo_url: repo,
                password_ref,
                keep_daily,
                keep_weekly,
                keep_monthly,
            };
            let created = api.create_backup_policy(&body).await?;
            if json {
                print_json(&created);
            } else {
                let next = created.policy.next_run_at.as_deref().unwrap_or("when triggered");
                println!("policy {} created; next run: {next}", created.policy.id);
            }
        }
        BackupsCommand::Trigger { id, json } => {
            let queued = api.trigger_backup(&id).await?;
            if json {
                print_json(&queued);
            } else {
                println!(
                    "backup job {} queued; follow it with: hyprbox jobs logs {}",
                    queued.job_id, queued.job_id
                );
            }
        }
        BackupsCommand::Runs { id, json } => {
            let body = api.backup_policy(&id).await?;
            print_list(&body, json, "runs", RUN_COLUMNS);
        }
    }
    Ok(())
}
