//! `hyprbox nodes`: the fleet with each node's computed status.

use super::{Target, connect, print_list};

#[derive(clap::Args, Debug)]
pub struct NodesArgs {
    #[command(flatten)]
    target: Target,
    /// The API's answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<()> {
    let body = connect(&args.target)?.nodes().await?;
    print_list(
        &body,
        args.json,
        "nodes",
        &[
            ("NODE", "nodeId"),
            ("STATUS", "status"),
            ("CPU%", "cpuPercent"),
            ("RAM%", "ramPercent"),
            ("DISK%", "diskPercent"),
            ("LAST SEEN", "lastSeenAt"),
            ("OS", "os"),
        ],
    );
    Ok(())
}
