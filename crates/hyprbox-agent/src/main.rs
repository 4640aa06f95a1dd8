//! `hyprbox-agent`: reads its configuration and hands over to [`hyprbox_agent::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "hyprbox-agent", version, about = "The HyprBox node agent")]
struct Args {
    /// KEY=VALUE file read before the environment (default: /etc/hyprbox/agent.env if present).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Send one heartbeat, print the server's answer and exit (0 accepted, 1 not): checks an install.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        // Under systemd the journal adds its own metadata; colour codes would only be noise there.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match hyprbox_agent::Config::load(args.config.as_deref(), |key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hyprbox-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.once {
        return if hyprbox_agent::once(&config).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    match hyprbox_agent::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
