//! `hyprbox-agent`: reads its configuration and hands over to [`hyprbox_agent::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The settings, for `--help`: the environment first, then the config file.
const SETTINGS: &str = "\
Settings (environment, then the config file):
  HYPRBOX_URL                   the server, e.g. https://hyprbox.example.com (or HYPRBOX_SERVER)
  HYPRBOX_TOKEN                 the node token (hbnt_...)
  HYPRBOX_NODE_ID               this node's id [default: the hostname]
  HYPRBOX_REGION                sent with the inventory
  HYPRBOX_INTERVAL              seconds between heartbeats, at least 5 [default: 30]
  HYPRBOX_POLL_INTERVAL         seconds between job polls when no wake-up comes [default: 10]
  HYPRBOX_STATE_DIR             job work dirs and output spool [default: /var/lib/hyprbox-agent]
  HYPRBOX_KILL_GRACE            seconds from SIGTERM to SIGKILL on cancel or timeout [default: 10]
  HYPRBOX_JOB_OUTPUT_MAX_BYTES  output kept and sent per job stream [default: 67108864]
  HYPRBOX_DOCKER_SOCKET         the Docker engine's socket, for the container inventory
                                [default: /var/run/docker.sock; none there: no inventory]
  HYPRBOX_ALLOW_INSECURE_HTTP   accept a plain http:// URL to another machine (the token then
                                travels in clear) [default: false; loopback http:// is always fine]

Backups (hypervault-restic jobs) read the repository password where the policy's passwordRef
says: file:/path (mode 0600 or stricter) or env:NAME (this agent's environment).";

#[derive(Parser, Debug)]
#[command(name = "hyprbox-agent", version, about = "The HyprBox node agent", after_help = SETTINGS)]
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
    if config.insecure_http {
        tracing::warn!(
            server = %config.server,
            "INSECURE: talking plain http:// to another machine (HYPRBOX_ALLOW_INSECURE_HTTP=true); \
             the node token travels in clear and anyone on the path can send scripts this agent runs as root"
        );
    }
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
