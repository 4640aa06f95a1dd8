//! `hyprbox nodes`: the fleet with each node's computed status.

use reqwest::Method;

use super::{Api, Target, print_json, rows, table};

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
    let rows = rows(
        &body["nodes"],
        &[
            "nodeId",
            "status",
            "cpuPercent",
            "ramPercent",
            "diskPercent",
            "lastSeenAt",
            "os",
        ],
    );
    table(
        &["NODE", "STATUS", "CPU%", "RAM%", "DISK%", "LAST SEEN", "OS"],
        &rows,
    );
    Ok(())
}
