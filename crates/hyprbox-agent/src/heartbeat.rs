//! The heartbeat loop: measurements every interval, the inventory only when it changed (the
//! server keeps what was sent), and the interval the server's node config asks for.

use std::path::Path;
use std::time::Duration;

use hyprbox_proto::nodes::NodeConfig;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::cgroup::Cgroup;
use crate::client::{ApiError, Client};
use crate::config::{Config, MIN_INTERVAL};
use crate::jobs::retry_delay;
use crate::metrics::{self, Collector, Inventory};

/// How often the node's config is fetched again (an operator may change the interval).
const CONFIG_EVERY: Duration = Duration::from_secs(300);

/// `host` and port of the server URL, to find the local address facing it.
fn server_host(server: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(server).ok()?;
    Some((url.host_str()?.to_string(), url.port_or_known_default()?))
}

/// "degraded" when the agent cannot do its work: here, when it cannot write its state directory
/// (jobs could not run, nor output be spooled).
fn self_status(state_dir: &Path) -> &'static str {
    let probe = state_dir.join(".probe");
    match std::fs::create_dir_all(state_dir).and_then(|()| std::fs::write(&probe, b"")) {
        Ok(()) => {
            let _ = std::fs::remove_file(probe);
            "ok"
        }
        Err(_) => "degraded",
    }
}

/// Builds this beat's heartbeat; `last_sent` is the inventory the server already has.
async fn next_heartbeat(
    config: &Config,
    collector: &mut Collector,
    last_sent: Option<&Inventory>,
) -> (hyprbox_proto::Heartbeat, Option<Inventory>) {
    let sample = collector.sample().await;
    let (server, region, state_dir) = (
        config.server.clone(),
        config.region.clone(),
        config.state_dir.clone(),
    );
    let sample_copy = sample.clone();
    // Reading /etc/os-release and resolving the server name block: off the runtime's threads.
    let (inventory, status) = tokio::task::spawn_blocking(move || {
        let host = server_host(&server);
        let inventory = metrics::inventory(
            host.as_ref().map(|(h, p)| (h.as_str(), *p)),
            region.as_deref(),
            &sample_copy,
        );
        (inventory, self_status(&state_dir))
    })
    .await
    .unwrap_or_else(|_| (Inventory::default(), "degraded"));
    let changed = last_sent != Some(&inventory);
    let hb = metrics::heartbeat(&config.node_id, status, &sample, changed.then_some(&inventory));
    (hb, changed.then_some(inventory))
}

/// One heartbeat with the full inventory, for `--once`: the server's answer, or the error.
pub async fn once(config: &Config) -> Result<String, ApiError> {
    let client = crate::client::connect(&config.server, &config.token)?;
    let mut collector = Collector::new(Cgroup::default());
    let (hb, _) = next_heartbeat(config, &mut collector, None).await;
    let answer = client.heartbeat(&hb).await?;
    serde_json::to_string(&answer.ack).map_err(|e| ApiError::Decode {
        detail: e.to_string(),
    })
}

pub async fn run(
    config: Config,
    client: Client,
    node_config: watch::Sender<NodeConfig>,
    shutdown: CancellationToken,
) {
    let mut collector = Collector::new(Cgroup::default());
    let mut last_sent: Option<Inventory> = None;
    let mut interval = config.interval;
    let mut config_fetched: Option<Instant> = None;
    let mut backoff = Backoff::new();
    loop {
        if config_fetched.is_none_or(|at| at.elapsed() >= CONFIG_EVERY) {
            match client.my_config().await {
                Ok(body) => {
                    config_fetched = Some(Instant::now());
                    node_config.send_if_modified(|current| {
                        let changed = *current != body.config;
                        *current = body.config;
                        changed
                    });
                }
                // A fleet-wide token has no node config: keep HYPRBOX_INTERVAL.
                Err(ApiError::Status { status: 400, .. }) => config_fetched = Some(Instant::now()),
                Err(e) => tracing::debug!(error = %e, "cannot fetch the node config (retried next beat)"),
            }
        }
        // A config pushed over the socket counts at once, as a pulled one does.
        let wanted = node_config
            .borrow()
            .heartbeat_interval
            .map_or(config.interval, |s| Duration::from_secs(s).max(MIN_INTERVAL));
        if wanted != interval {
            tracing::info!(interval = ?wanted, "heartbeat interval set by the server");
            interval = wanted;
        }
        let (hb, sent_inventory) = next_heartbeat(&config, &mut collector, last_sent.as_ref()).await;
        let delay = match client.heartbeat(&hb).await {
            Ok(answer) => {
                if backoff.failures() > 0 {
                    tracing::info!("heartbeats are getting through again");
                } else if last_sent.is_none() {
                    tracing::info!(node_id = %config.node_id, "first heartbeat accepted");
                }
                backoff.succeed();
                if sent_inventory.is_some() {
                    last_sent = sent_inventory;
                }
                // The server lost the inventory (the node was deleted and came back): resend it.
                if answer.inventory_wanted {
                    tracing::info!("the server asks for the inventory again");
                    last_sent = None;
                }
                interval
            }
            Err(e) => retry_delay(&mut backoff, &e, "heartbeat"),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_host_and_port_come_from_the_url() {
        assert_eq!(
            server_host("http://127.0.0.1:4000"),
            Some(("127.0.0.1".into(), 4000))
        );
        assert_eq!(
            server_host("https://hb.example.com"),
            Some(("hb.example.com".into(), 443))
        );
        assert_eq!(server_host("not a url"), None);
    }
}
