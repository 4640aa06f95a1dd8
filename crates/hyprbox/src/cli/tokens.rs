//! `hyprbox tokens create|list|revoke`: node tokens for agents.

use hyprbox_proto::tokens::CreateTokenRequest;

use super::{Target, connect, print_json, print_list};

#[derive(clap::Args, Debug)]
pub struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokensCommand {
    /// Mint a token; it is printed once, keep it.
    Create {
        /// A label, e.g. the machine or group it is for.
        #[arg(long)]
        name: String,
        /// Pin the token to one node (recommended); without it the token is fleet-wide.
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Your tokens (every token for an ADMIN); never the secret.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token: its next call is refused and its agent's socket closed.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(args: TokensArgs) -> anyhow::Result<()> {
    match args.command {
        TokensCommand::Create {
            name,
            node,
            json,
            target,
        } => {
            let body = connect(&target)?
                .create_token(&CreateTokenRequest {
                    name,
                    node_id: node.clone(),
                })
                .await?;
            if json {
                print_json(&body);
            } else {
                println!("{}", body.token);
                eprintln!(
                    "token {} ({}) created; it is shown only this once",
                    body.meta.id,
                    node.map_or_else(|| "fleet-wide".to_string(), |n| format!("pinned to {n}"))
                );
            }
            Ok(())
        }
        TokensCommand::List { json, target } => {
            let body = connect(&target)?.tokens().await?;
            print_list(
                &body,
                json,
                "tokens",
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("PREFIX", "prefix"),
                    ("NODE", "nodeId"),
                    ("LAST USED", "lastUsedAt"),
                    ("REVOKED", "revokedAt"),
                ],
            );
            Ok(())
        }
        TokensCommand::Revoke { id, target } => {
            connect(&target)?.revoke_token(&id).await?;
            println!("token {id} revoked");
            Ok(())
        }
    }
}
