//! `hyprbox findings`: the problems agents found, worst first; `show`, `snooze`, `resolve` and
//! `summary` (each node's health bucket).

use hyprbox_client::FindingQuery;
use hyprbox_proto::findings::SnoozeBody;

use super::{Target, cell, connect, print_json, print_list, table};

#[derive(clap::Args, Debug)]
pub struct FindingsArgs {
    #[command(subcommand)]
    command: Option<FindingsCommand>,
    /// Only this node's findings.
    #[arg(long)]
    node: Option<String>,
    /// Only INFO, WARN or CRITICAL.
    #[arg(long)]
    severity: Option<String>,
    /// Resolved and still-snoozed findings too.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Subcommand, Debug)]
enum FindingsCommand {
    /// One finding and the preset recommended to fix it.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Hide a finding for a number of hours (1–720).
    Snooze {
        id: String,
        #[arg(long, default_value_t = 24)]
        hours: u32,
        #[arg(long)]
        json: bool,
    },
    /// Mark a finding resolved.
    Resolve {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Each node's health: AT_RISK, ATTENTION or HEALTHY, with its counts.
    Summary {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: FindingsArgs) -> anyhow::Result<()> {
    let api = connect(&args.target)?;
    match args.command {
        None => {
            let severity = args.severity.as_deref().map(str::to_ascii_uppercase);
            let body = api
                .findings(&FindingQuery {
                    node_id: args.node.as_deref(),
                    severity: severity.as_deref(),
                    include: args.all.then_some("all"),
                })
                .await?;
            print_list(
                &body,
                args.json,
                "findings",
                &[
                    ("ID", "id"),
                    ("SEVERITY", "severity"),
                    ("STATUS", "status"),
                    ("NODE", "nodeId"),
                    ("TYPE", "type"),
                    ("TITLE", "title"),
                    ("LAST SEEN", "lastSeenAt"),
                ],
            );
            Ok(())
        }
        Some(FindingsCommand::Show { id, json }) => {
            let body = api.finding(&id).await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let finding = serde_json::to_value(&body.finding)?;
            for (label, field) in [
                ("id", "id"),
                ("node", "nodeId"),
                ("type", "type"),
                ("severity", "severity"),
                ("status", "status"),
                ("title", "title"),
                ("message", "message"),
                ("detected", "detectedAt"),
                ("last seen", "lastSeenAt"),
            ] {
                println!("{label:<10} {}", cell(&finding[field]));
            }
            match &body.recommendation {
                None => println!("no preset is known to fix this"),
                Some(recommendation) => {
                    let preset = &recommendation.preset_name;
                    let vars: Vec<String> = recommendation
                        .variables
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| format!("--var {k}={}", cell(v)))
                        .collect();
                    println!(
                        "fix with  {preset} ({} risk): hyprbox jobs run {} {preset} {} --follow",
                        recommendation.risk,
                        body.finding.node_id,
                        vars.join(" ")
                    );
                }
            }
            Ok(())
        }
        Some(FindingsCommand::Snooze { id, hours, json }) => {
            let hours = Some(i64::from(hours));
            let body = api.snooze_finding(&id, &SnoozeBody { hours }).await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            println!(
                "finding {id} snoozed until {}",
                body.finding.snoozed_until.as_deref().unwrap_or("-")
            );
            Ok(())
        }
        Some(FindingsCommand::Resolve { id, json }) => {
            let body = api.resolve_finding(&id).await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            println!("finding {id} resolved");
            Ok(())
        }
        Some(FindingsCommand::Summary { json }) => {
            let body = api.findings_summary().await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = body
                .summary
                .iter()
                .map(|s| {
                    vec![
                        s.node_id.clone(),
                        s.bucket.clone(),
                        s.counts.critical.to_string(),
                        s.counts.warn.to_string(),
                        s.counts.info.to_string(),
                    ]
                })
                .collect();
            table(&["NODE", "HEALTH", "CRITICAL", "WARN", "INFO"], &rows);
            Ok(())
        }
    }
}
