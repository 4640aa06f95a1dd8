//! The background loops, started from one place: each domain owns its loop, and each loop takes a
//! child of the shutdown token and returns when it is cancelled. (The heartbeat batch writer is
//! started beside them by `Application::serve`, which drains it last.)

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::{auth, fleet, hyperion, jobs};

pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn wait(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

pub fn spawn(state: &AppState, shutdown: CancellationToken) -> Workers {
    let mut set = JoinSet::new();
    set.spawn(auth::expiry::prune_loop(state.clone(), shutdown.clone()));
    set.spawn(fleet::retention::prune_loop(state.clone(), shutdown.clone()));
    set.spawn(jobs::reaper::reap_loop(state.clone(), shutdown.clone()));
    // The AI worker fleet must run in exactly one place: with several replicas, a leader lock
    // would gate this spawn (see `crate::hyperion::ai_fleet::run`).
    set.spawn(hyperion::ai_fleet::run(state.clone(), shutdown.clone()));
    set.spawn(hyperion::server_health::sample_loop(
        state.clone(),
        shutdown.clone(),
    ));
    set.spawn(hyperion::ux::tick_loop(state.clone(), shutdown));
    Workers(set)
}
