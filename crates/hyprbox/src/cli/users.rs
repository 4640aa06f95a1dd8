//! `hyprbox users list|create|role|delete` (ADMIN).

use std::io::IsTerminal;

use hyprbox_proto::auth::{CreateUserRequest, RoleRequest};

use super::{Target, connect, fail, print_json, print_list};

#[derive(clap::Args, Debug)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(clap::Subcommand, Debug)]
enum UsersCommand {
    /// Every account.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Create an account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// ADMIN, OPERATOR or VIEWER.
        #[arg(long, default_value = "VIEWER")]
        role: String,
        /// Its password (asked for without echo when not given).
        #[arg(long, env = "HYPRBOX_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Change an account's role (its sessions end).
    Role {
        id: String,
        /// ADMIN, OPERATOR or VIEWER.
        role: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete an account (its sessions end).
    Delete {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(args: UsersArgs) -> anyhow::Result<()> {
    match args.command {
        UsersCommand::List { json, target } => {
            let body = connect(&target)?.users().await?;
            print_list(
                &body,
                json,
                "users",
                &[
                    ("ID", "id"),
                    ("EMAIL", "email"),
                    ("NAME", "name"),
                    ("ROLE", "role"),
                ],
            );
            Ok(())
        }
        UsersCommand::Create {
            email,
            name,
            role,
            password,
            json,
            target,
        } => {
            let password = match password {
                Some(password) => password,
                None if std::io::stdin().is_terminal() => {
                    rpassword::prompt_password("Password for the new account: ")?
                }
                None => return Err(fail(2, "give --password or HYPRBOX_NEW_PASSWORD")),
            };
            let created = connect(&target)?
                .create_user(&CreateUserRequest {
                    email: email.clone(),
                    name,
                    role: role.to_ascii_uppercase(),
                    password,
                })
                .await?;
            if json {
                print_json(&created);
                return Ok(());
            }
            println!(
                "created {} ({}) with id {}",
                email, created.user.role, created.user.id
            );
            Ok(())
        }
        UsersCommand::Role {
            id,
            role,
            json,
            target,
        } => {
            let changed = connect(&target)?
                .set_role(
                    &id,
                    &RoleRequest {
                        role: role.to_ascii_uppercase(),
                    },
                )
                .await?;
            if json {
                print_json(&changed);
                return Ok(());
            }
            println!("user {id} is now {}", role.to_ascii_uppercase());
            Ok(())
        }
        UsersCommand::Delete { id, target } => {
            connect(&target)?.delete_user(&id).await?;
            println!("user {id} deleted");
            Ok(())
        }
    }
}
