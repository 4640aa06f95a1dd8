//! `hyprbox nodes`: the fleet with each node's computed status.

use reqwest::Method;

use super::{Api, Target, cell, print_json, table};

#[derive(clap::Args, Debug)]
pub struct NodesArgs {
    #[command(flatten)]
    target: Target,
    /// The API's answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.target);
    let body = api.json(Method::GET, "/api/nodes", None).await?;
    if args.json {
        print_json(&body);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = body["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            vec![
                cell(&n["nodeId"]),
                cell(&n["status"]),
                cell(&n["cpuPercent"]),
                cell(&n["ramPercent"]),
                cell(&n["diskPercent"]),
                cell(&n["lastSeenAt"]),
                cell(&n["os"]),
            ]
        })
        .collect();
    table(
        &["NODE", "STATUS", "CPU%", "RAM%", "DISK%", "LAST SEEN", "OS"],
        &rows,
    );
    Ok(())
}
