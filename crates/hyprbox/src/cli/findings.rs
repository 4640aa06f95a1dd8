//! `hyprbox findings`: the problems agents found, worst first; `show`, `snooze`, `resolve` and
//! `summary` (each node's health bucket).

use reqwest::Method;
use serde_json::json;

use super::{Api, Target, cell, enc, print_json, print_list, table};

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
    let api = Api::new(&args.target);
    match args.command {
        None => {
            let mut query = Vec::new();
            if let Some(node) = &args.node {
                query.push(format!("nodeId={}", enc(node)));
            }
            if let Some(severity) = &args.severity {
                query.push(format!("severity={}", enc(&severity.to_ascii_uppercase())));
            }
            if args.all {
                query.push("include=all".into());
            }
            let path = if query.is_empty() {
                "/api/findings".to_string()
            } else {
                format!("/api/findings?{}", query.join("&"))
            };
            let body = api.json(Method::GET, &path, None).await?;
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
            let body = api
                .json(Method::GET, &format!("/api/findings/{}", enc(&id)), None)
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let finding = &body["finding"];
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
            let recommendation = &body["recommendation"];
            if recommendation.is_null() {
                println!("no preset is known to fix this");
            } else {
                let preset = cell(&recommendation["presetName"]);
                let vars: Vec<String> = recommendation["variables"]
                    .as_object()
                    .map(|vars| {
                        vars.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| format!("--var {k}={}", cell(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "fix with  {preset} ({} risk): hyprbox jobs run {} {preset} {} --follow",
                    cell(&recommendation["risk"]),
                    cell(&finding["nodeId"]),
                    vars.join(" ")
                );
            }
            Ok(())
        }
        Some(FindingsCommand::Snooze { id, hours, json }) => {
            let body = api
                .json(
                    Method::POST,
                    &format!("/api/findings/{}/snooze", enc(&id)),
                    Some(json!({ "hours": hours })),
                )
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            println!(
                "finding {id} snoozed until {}",
                cell(&body["finding"]["snoozedUntil"])
            );
            Ok(())
        }
        Some(FindingsCommand::Resolve { id, json }) => {
            let body = api
                .json(
                    Method::POST,
                    &format!("/api/findings/{}/resolve", enc(&id)),
                    Some(json!({})),
                )
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            println!("finding {id} resolved");
            Ok(())
        }
        Some(FindingsCommand::Summary { json }) => {
            let body = api
                .json(Method::GET, "/api/findings/health/summary", None)
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = body["summary"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    vec![
                        cell(&s["nodeId"]),
                        cell(&s["bucket"]),
                        cell(&s["counts"]["critical"]),
                        cell(&s["counts"]["warn"]),
                        cell(&s["counts"]["info"]),
                    ]
                })
                .collect();
            table(&["NODE", "HEALTH", "CRITICAL", "WARN", "INFO"], &rows);
            Ok(())
        }
    }
}
