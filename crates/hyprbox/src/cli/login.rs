//! `hyprbox login`: signs in and saves the session (server, token) for the other commands.

use std::io::{BufRead, IsTerminal, Write};

use hyprbox_client::Client;
use hyprbox_proto::auth::LoginRequest;

use super::{Session, Target, save_session};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    target: Target,
    /// The account's email (asked for when not given).
    #[arg(long, env = "HYPRBOX_EMAIL")]
    email: Option<String>,
    /// The password; read from the terminal without echo when not given (or from stdin when it is
    /// not a terminal).
    #[arg(long, env = "HYPRBOX_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let server = args
        .target
        .server
        .clone()
        .or_else(|| super::load_session().map(|s| s.server))
        .unwrap_or_else(|| "http://127.0.0.1:4000".into())
        .trim_end_matches('/')
        .to_string();
    let email = match args.email {
        Some(email) => email,
        None => ask("Email: ")?,
    };
    let password = match args.password {
        Some(password) => password,
        None if std::io::stdin().is_terminal() => rpassword::prompt_password("Password: ")?,
        None => ask("")?,
    };
    let session = Client::new(&server, None)?
        .login(&LoginRequest {
            email: email.clone(),
            password,
        })
        .await?;
    let path = save_session(&Session {
        server: server.clone(),
        token: session.token,
        email: email.clone(),
    })?;
    let role = session.user.role;
    println!(
        "signed in to {server} as {email} ({role}); session saved in {}",
        path.display()
    );
    Ok(())
}
