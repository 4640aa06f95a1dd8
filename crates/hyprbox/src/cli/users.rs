//! `hyprbox users list|create|role|delete` (ADMIN, over the API), and `hyprbox users create-admin`
//! (on the server's machine, straight in its database: how production gets its first ADMIN).

use std::io::IsTerminal;

use hyprbox_proto::auth::{CreateUserRequest, OneUserBody, RoleRequest, UserBody};

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
    /// Create an ADMIN directly in the server's database (run it where `hyprbox serve` runs, with
    /// the same DATABASE_URL): the first ADMIN of a production instance comes from here.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Its password (asked for without echo when not given).
        #[arg(long, env = "HYPRBOX_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn password_or_prompt(password: Option<String>) -> anyhow::Result<String> {
    match password {
        Some(password) => Ok(password),
        None if std::io::stdin().is_terminal() => {
            Ok(rpassword::prompt_password("Password for the new account: ")?)
        }
        None => Err(fail(2, "give --password or HYPRBOX_NEW_PASSWORD")),
    }
}

async fn create_admin(email: &str, name: Option<&str>, password: &str) -> anyhow::Result<UserBody> {
    use hyprbox_server::http::error::ApiError;
    let settings = hyprbox_server::Settings::from_env()?;
    let store = hyprbox_store::Store::connect(settings.database_url.expose(), &Default::default())
        .await
        .map_err(|e| {
            fail(
                1,
                format!("cannot open the database {}: {e}", settings.database_display()),
            )
        })?;
    store.migrate().await?;
    let created = hyprbox_server::auth::users::create_admin(&store, email, name, password).await;
    store.close().await;
    match created {
        Ok(user) => Ok(hyprbox_server::auth::users::user_body(&user)),
        Err(ApiError::BadRequest(message)) => Err(fail(2, message)),
        Err(ApiError::Conflict(message)) => Err(fail(5, message)),
        Err(other) => Err(fail(1, other.message())),
    }
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
            let password = password_or_prompt(password)?;
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
        UsersCommand::CreateAdmin {
            email,
            name,
            password,
            json,
        } => {
            let password = password_or_prompt(password)?;
            let user = create_admin(&email, name.as_deref(), &password).await?;
            if json {
                print_json(&OneUserBody { user });
                return Ok(());
            }
            println!("created ADMIN {} with id {}", user.email, user.id);
            Ok(())
        }
    }
}
