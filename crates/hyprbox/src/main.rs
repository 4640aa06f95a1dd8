//! The `hyprbox` binary: `serve` runs the server, `migrate` prepares the database, the operator
//! commands (`login`, `nodes`, `jobs`, `findings`, `tokens`, `users`, `presets`) talk to a server or work with
//! preset files, and `simulate` runs a fleet of simulated agents against a server.

mod cli;
mod presets;
mod simulate;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hyprbox_server::Settings;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hyprbox",
    version,
    about = "HyprBox: a control plane for a fleet of Linux servers",
    after_help = cli::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (configuration from the environment and `.env`).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Run a fleet of simulated agents against a server (demos and load tests).
    Simulate(simulate::SimulateArgs),
    /// Sign in to a server and save the session for the other commands.
    Login(cli::login::LoginArgs),
    /// The fleet: every node with its status and latest figures.
    Nodes(cli::nodes::NodesArgs),
    /// Run presets on nodes and follow them: run, list, show, logs, cancel.
    Jobs(cli::jobs::JobsArgs),
    /// Problems the agents found, worst first: list, show, snooze, resolve, summary.
    Findings(cli::findings::FindingsArgs),
    /// HyprVault backup policies and their runs: list, show, create, trigger, runs.
    Backups(cli::backups::BackupsArgs),
    /// Node tokens for agents: create, list, revoke.
    Tokens(cli::tokens::TokensArgs),
    /// Accounts (ADMIN): list, create, role, delete.
    Users(cli::users::UsersArgs),
    /// List, render and check presets (built-ins plus a presets directory), offline.
    Presets(presets::PresetsArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let (code, message) = cli::exit_status(&err);
            eprintln!("error: {message}");
            std::process::ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(Settings::from_env()?).await,
        Command::Migrate => migrate(Settings::from_env()?).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Presets(args) => presets::run(args),
        Command::Login(args) => cli::login::run(args).await,
        Command::Nodes(args) => cli::nodes::run(args).await,
        Command::Jobs(args) => cli::jobs::run(args).await,
        Command::Tokens(args) => cli::tokens::run(args).await,
        Command::Findings(args) => cli::findings::run(args).await,
        Command::Backups(args) => cli::backups::run(args).await,
        Command::Users(args) => cli::users::run(args).await,
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = hyprbox_store::Store::connect(settings.database_url.expose(), &Default::default())
        .await
        .with_context(|| format!("cannot open the database {}", settings.database_display()))?;
    store.migrate().await?;
    store.close().await;
    println!("migrations applied to {}", settings.database_display());
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(config = %settings.summary(), "starting hyprbox {}", env!("CARGO_PKG_VERSION"));
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    hyprbox_server::launch(settings, listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM starts a graceful shutdown.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight requests");
    shutdown.cancel();
}
