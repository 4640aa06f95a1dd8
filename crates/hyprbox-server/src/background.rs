//! The background loops, started from one place: each domain owns its loop, and each loop takes a
//! child of the shutdown token and returns when it is cancelled. (The heartbeat batch writer is
//! started beside them by `Application::serve`, which drains it last.)

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::{auth, backups, findings, fleet, hyperion, jobs};

pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn wait(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

pub fn spawn(state: &AppState, shutdown: CancellationToken) -> Workers {
    let mut set = JoinSet::new();
    let mut start = |name: &'static str, body: fn(AppState, CancellationToken) -> Loop| {
        set.spawn(supervised(name, state.clone(), shutdown.clone(), body));
    };
    start("session pruning", |s, t| Box::pin(auth::expiry::prune_loop(s, t)));
    start("anonymous audit summaries", |s, t| {
        Box::pin(auth::anonymous_audit::flush_loop(s, t))
    });
    start("history retention", |s, t| {
        Box::pin(fleet::retention::prune_loop(s, t))
    });
    start("job reaper", |s, t| Box::pin(jobs::reaper::reap_loop(s, t)));
    start("job retention", |s, t| {
        Box::pin(jobs::retention::prune_loop(s, t))
    });
    // Like the AI fleet, the scheduler would run on one leader with several replicas; its ticks
    // are taken by compare-and-set, so a second scheduler queues nothing twice.
    start("backup scheduler", |s, t| {
        Box::pin(backups::scheduler::run_loop(s, t))
    });
    start("finding retention", |s, t| Box::pin(findings::prune_loop(s, t)));
    // The AI worker fleet must run in exactly one place: with several replicas, a leader lock
    // would gate this spawn (see `crate::hyperion::ai_fleet::run`).
    start("AI worker fleet", |s, t| Box::pin(hyperion::ai_fleet::run(s, t)));
    start("server health samples", |s, t| {
        Box::pin(hyperion::server_health::sample_loop(s, t))
    });
    start("UX tick", |s, t| Box::pin(hyperion::ux::tick_loop(s, t)));
    start("live stream frames", |s, t| {
        Box::pin(async move { s.hub.run(t).await })
    });
    Workers(set)
}

/// A background loop's future.
type Loop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long a loop that panicked waits before it starts again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Runs a loop until it returns (it does on shutdown). A panic does not end it silently: it is
/// logged and the loop started again after [`RESTART_AFTER`], so one bad row cannot stop the reaper
/// or the pruning for good.
async fn supervised<S: Clone + Send + 'static>(
    name: &'static str,
    state: S,
    shutdown: CancellationToken,
    body: fn(S, CancellationToken) -> Loop,
) {
    loop {
        match tokio::spawn(body(state.clone(), shutdown.clone())).await {
            Err(err) if err.is_panic() => {
                tracing::error!(
                    background_loop = name,
                    "a background loop panicked; starting it again"
                );
            }
            // It returned (shutdown) or was cancelled with the runtime.
            _ => return,
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_loop_that_panics_is_started_again_and_one_that_returns_is_not() {
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let body: fn(Arc<AtomicU32>, CancellationToken) -> Loop = |runs, _| {
            Box::pin(async move {
                // Panics on its first two runs, then returns as a loop does on shutdown.
                assert!(runs.fetch_add(1, Ordering::SeqCst) >= 2, "a bug in a loop");
            })
        };
        supervised("test", Arc::clone(&runs), shutdown, body).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_shutdown_during_the_pause_ends_the_supervision() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let body: fn((), CancellationToken) -> Loop = |(), _| Box::pin(async { panic!("always") });
        supervised("test", (), shutdown, body).await;
    }
}
