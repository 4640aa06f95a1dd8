//! The AI worker fleet of the Hyperion dashboard.
//!
//! One loop per configured worker takes tasks from the durable queue in the database (one at a
//! time, through the store's atomic claim), "works" on each for `HYPRBOX_AI_TASK_SECONDS` (a
//! simulated workload: a sleep, the one place the contract allows one) and counts it. The loops
//! keep an in-memory view of the fleet ([`AiFleet`]) that `GET /api/dashboard/ai-workers` reads
//! without touching the database; the queue depth is cached beside it and refreshed at most every
//! [`DEPTH_REFRESH_MS`]. The rules that turn the view into statuses are pure functions of an
//! explicit `now`.
//!
//! Scale-out: the fleet must run in exactly one place. [`run`] is the single entry point the
//! background loops start, so a future leader lock (say a Postgres advisory lock) only needs to
//! gate it: acquire the lock, then requeue and start the loops; replicas without the lock would
//! refresh their view from the `ai_workers` table instead.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use hyprbox_store::ai_tasks::{self, Task, Worker};
use hyprbox_store::{StoreError, now_ms};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::state::AppState;

/// A worker whose loop has not checked in for this long is `Offline`.
pub const OFFLINE_AFTER_MS: i64 = 120_000;
/// How often a loop checks in when nothing changes (well inside the 30 s the contract asks).
const CHECK_IN_EVERY: Duration = Duration::from_secs(20);
/// The cached queue depth is refreshed from the database at most this often.
pub const DEPTH_REFRESH_MS: i64 = 250;
/// DONE tasks are kept this long, then pruned.
const KEEP_DONE_MS: i64 = 7 * 86_400_000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 1000;
/// The pause after a failed database call before a loop tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub enum WorkerStatus {
    /// On a task.
    Working,
    /// Idle, and its loop checked in within the last 120 s.
    Active,
    /// Its loop has not checked in for 120 s.
    Offline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub enum ClusterStatus {
    /// At least 80 % of the fleet is Working.
    Stressed,
    /// At least 30 % of the fleet is Active or Working.
    Optimal,
    Degraded,
}

/// What the fleet knows of one worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerView {
    /// Unix ms of the last check-in stored; `None` before the loop's first one.
    pub last_check_in: Option<i64>,
    /// The task being worked on: id and action.
    pub current: Option<(String, String)>,
    pub tasks_processed_today: i64,
    /// The UTC day `tasks_processed_today` belongs to.
    pub counted_day: i64,
}

/// A worker's status at `now`. A loop that stopped checking in is `Offline` even if it held a task
/// (it is not working on it any more).
pub fn worker_status(view: &WorkerView, now: i64) -> WorkerStatus {
    match view.last_check_in {
        Some(at) if now.saturating_sub(at) < OFFLINE_AFTER_MS => {
            if view.current.is_some() {
                WorkerStatus::Working
            } else {
                WorkerStatus::Active
            }
        }
        _ => WorkerStatus::Offline,
    }
}

/// The fleet's health from its workers' statuses. An empty fleet is `Degraded`.
pub fn cluster_status(statuses: &[WorkerStatus]) -> ClusterStatus {
    let total = statuses.len();
    let working = statuses.iter().filter(|s| **s == WorkerStatus::Working).count();
    let alive = statuses.iter().filter(|s| **s != WorkerStatus::Offline).count();
    if total == 0 {
        ClusterStatus::Degraded
    } else if working * 100 >= total * 80 {
        ClusterStatus::Stressed
    } else if alive * 100 >= total * 30 {
        ClusterStatus::Optimal
    } else {
        ClusterStatus::Degraded
    }
}

/// Tasks finished on the UTC day of `now`: 0 when the count belongs to an earlier day, so the
/// reset shows at midnight even before the worker finishes another task.
pub fn tasks_today(view: &WorkerView, now: i64) -> i64 {
    if view.counted_day == ai_tasks::utc_day(now) {
        view.tasks_processed_today
    } else {
        0
    }
}

/// One worker as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodeSnapshot {
    pub name: String,
    pub status: WorkerStatus,
    pub tasks_processed_today: i64,
    pub current_task_id: Option<String>,
    pub current_action: Option<String>,
}

/// The whole fleet at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Active plus Working workers.
    pub total_active_fleet: usize,
    pub cluster_status: ClusterStatus,
    /// In the configured order.
    pub nodes: Vec<NodeSnapshot>,
}

/// The snapshot of named views at `now`.
pub fn snapshot<'a>(views: impl IntoIterator<Item = (&'a str, &'a WorkerView)>, now: i64) -> Snapshot {
    let nodes: Vec<NodeSnapshot> = views
        .into_iter()
        .map(|(name, view)| NodeSnapshot {
            name: name.to_string(),
            status: worker_status(view, now),
            tasks_processed_today: tasks_today(view, now),
            current_task_id: view.current.as_ref().map(|(id, _)| id.clone()),
            current_action: view.current.as_ref().map(|(_, action)| action.clone()),
        })
        .collect();
    let statuses: Vec<WorkerStatus> = nodes.iter().map(|n| n.status).collect();
    Snapshot {
        total_active_fleet: statuses.iter().filter(|s| **s != WorkerStatus::Offline).count(),
        cluster_status: cluster_status(&statuses),
        nodes,
    }
}

/// The fleet's shared state: the workers' views (kept by their loops), the cached queue depth, and
/// the bell a dispatch rings to wake an idle worker at once.
pub struct AiFleet {
    names: Vec<String>,
    views: RwLock<Vec<WorkerView>>,
    /// Rung by a dispatch; one idle worker wakes (or the next one to go idle, if none waits).
    pub wake: Notify,
    depth: AtomicI64,
    /// Unix ms of the depth's last refresh from the database (0: never).
    depth_at: AtomicI64,
    refreshing: AtomicBool,
}

impl AiFleet {
    pub fn new(names: Vec<String>) -> AiFleet {
        let views = vec![WorkerView::default(); names.len()];
        AiFleet {
            names,
            views: RwLock::new(views),
            wake: Notify::new(),
            depth: AtomicI64::new(0),
            depth_at: AtomicI64::new(0),
            refreshing: AtomicBool::new(false),
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The fleet at `now`, from memory.
    pub fn snapshot(&self, now: i64) -> Snapshot {
        let views = self
            .views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        snapshot(self.names.iter().map(String::as_str).zip(views.iter()), now)
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut WorkerView)) {
        let mut views = self
            .views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(view) = views.get_mut(index) {
            change(view);
        }
    }

    /// Copies what the database row says (check-in time and today's count) into the view.
    fn apply_row(&self, index: usize, row: &Worker) {
        self.update(index, |view| {
            view.last_check_in = Some(row.last_check_in);
            view.tasks_processed_today = row.tasks_processed_today;
            view.counted_day = row.counted_day;
        });
    }

    /// The queue depth as last known (no database call).
    pub fn queue_depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed).max(0)
    }

    /// Sets the depth from an exact count taken at `now`.
    pub fn set_queue_depth(&self, depth: i64, now: i64) {
        self.depth.store(depth, Ordering::Relaxed);
        self.depth_at.store(now, Ordering::Relaxed);
    }

    /// Whether the cached depth is older than [`DEPTH_REFRESH_MS`] at `now`.
    pub fn depth_is_stale(&self, now: i64) -> bool {
        now.saturating_sub(self.depth_at.load(Ordering::Relaxed)) >= DEPTH_REFRESH_MS
    }
}

/// The cached queue depth; when it is stale, one background refresh is started (the caller never
/// waits for the database, and at most one refresh runs at a time).
pub fn queue_depth(state: &AppState, now: i64) -> i64 {
    let fleet = &state.ai;
    if fleet.depth_is_stale(now)
        && fleet
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = refresh_depth(&state).await {
                tracing::warn!(error = %err, "counting the AI task queue failed");
            }
            state.ai.refreshing.store(false, Ordering::Release);
        });
    }
    fleet.queue_depth()
}

async fn refresh_depth(state: &AppState) -> Result<(), StoreError> {
    let now = now_ms();
    let mut conn = state.store.conn().await?;
    let depth = ai_tasks::queue_depth(&mut conn).await?;
    state.ai.set_queue_depth(depth, now);
    Ok(())
}

/// Runs the fleet until `shutdown`: puts tasks left RUNNING by a previous run back in the queue,
/// then runs one loop per worker and the pruning of old tasks.
///
/// This is the one place a leader lock would gate once HyprBox scales out to several replicas.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        match ai_tasks::requeue_running(&state.store).await {
            Ok(0) => break,
            Ok(tasks) => {
                tracing::info!(
                    tasks,
                    "AI tasks interrupted by the last shutdown are queued again"
                );
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, "requeueing interrupted AI tasks failed; will retry");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }
    if let Err(err) = refresh_depth(&state).await {
        tracing::warn!(error = %err, "counting the AI task queue failed");
    }
    let mut loops = JoinSet::new();
    for index in 0..state.ai.names().len() {
        loops.spawn(worker_loop(state.clone(), index, shutdown.clone()));
    }
    loops.spawn(prune_loop(state.clone(), shutdown));
    while loops.join_next().await.is_some() {}
}

/// Stores a check-in (and the current task) and mirrors it in the view; false when it failed.
async fn check_in(state: &AppState, index: usize, task: Option<&str>) -> bool {
    let name = &state.ai.names()[index];
    let stored = async {
        let mut conn = state.store.write_conn().await?;
        ai_tasks::check_in(&mut conn, name, task, now_ms()).await
    }
    .await;
    match stored {
        Ok(row) => {
            state.ai.apply_row(index, &row);
            true
        }
        Err(err) => {
            tracing::warn!(worker = %name, error = %err, "an AI worker could not check in");
            false
        }
    }
}

/// Sleeps until `until` or the shutdown; false on shutdown.
async fn pause_until(until: Instant, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep_until(until) => true,
    }
}

async fn worker_loop(state: AppState, index: usize, shutdown: CancellationToken) {
    let fleet = &state.ai;
    let name = fleet.names()[index].clone();
    // A dispatch wakes an idle worker at once, and a worker that finishes a task looks for the
    // next straight away; the idle poll is only a safety net, spread so the workers do not all
    // ask at once (each claim is a write, and SQLite has one writer).
    let spread = u64::try_from(index * 1000 / fleet.names().len().max(1)).unwrap_or(0);
    let idle_wait = Duration::from_millis(10_000 + spread);
    let mut checked_in: Option<Instant> = None;
    loop {
        if checked_in.is_none_or(|at| at.elapsed() >= CHECK_IN_EVERY) && check_in(&state, index, None).await {
            checked_in = Some(Instant::now());
        }
        match ai_tasks::claim(&state.store, &name, now_ms()).await {
            Ok(Some(task)) => {
                fleet.depth.fetch_sub(1, Ordering::Relaxed);
                if !work(&state, index, &task, &mut checked_in, &shutdown).await {
                    // Left RUNNING: the next start queues it again.
                    return;
                }
                // Straight to the next task, if any.
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(worker = %name, error = %err, "an AI worker could not claim a task"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = fleet.wake.notified() => {}
            () = tokio::time::sleep(idle_wait) => {}
        }
    }
}

/// Works on a claimed task for the configured time (checking in on the way), then finishes it.
/// False when the shutdown came first.
async fn work(
    state: &AppState,
    index: usize,
    task: &Task,
    checked_in: &mut Option<Instant>,
    shutdown: &CancellationToken,
) -> bool {
    let fleet = &state.ai;
    let name = &fleet.names()[index];
    let deadline = Instant::now() + state.settings.ai_task_duration;
    fleet.update(index, |view| {
        view.current = Some((task.id.clone(), task.action.clone()))
    });
    if check_in(state, index, Some(&task.id)).await {
        *checked_in = Some(Instant::now());
    }
    loop {
        let next_check_in = checked_in.map_or_else(Instant::now, |at| at + CHECK_IN_EVERY);
        let until = deadline.min(next_check_in.max(Instant::now() + RETRY_AFTER));
        if !pause_until(until, shutdown).await {
            return false;
        }
        if until >= deadline {
            break;
        }
        if check_in(state, index, Some(&task.id)).await {
            *checked_in = Some(Instant::now());
        }
    }
    loop {
        match ai_tasks::finish(&state.store, &task.id, name, now_ms()).await {
            Ok(Some((_, row))) => {
                fleet.apply_row(index, &row);
                *checked_in = Some(Instant::now());
                break;
            }
            Ok(None) => {
                tracing::warn!(worker = %name, task = %task.id, "the AI task was no longer running on this worker");
                break;
            }
            Err(err) => {
                tracing::warn!(worker = %name, error = %err, "an AI worker could not finish its task; will retry");
                if !pause_until(Instant::now() + RETRY_AFTER, shutdown).await {
                    return false;
                }
            }
        }
    }
    fleet.update(index, |view| view.current = None);
    true
}

/// Deletes DONE tasks older than seven days, in bounded batches, every ten minutes.
async fn prune_loop(state: AppState, shutdown: CancellationToken) {
    loop {
        match prune_done(&state).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned finished AI tasks past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning finished AI tasks failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

async fn prune_done(state: &AppState) -> Result<u64, StoreError> {
    let before = now_ms().saturating_sub(KEEP_DONE_MS);
    let mut total = 0;
    loop {
        let mut conn = state.store.write_conn().await?;
        let rows = ai_tasks::prune_done(&mut conn, before, PRUNE_BATCH).await?;
        drop(conn);
        total += rows;
        if rows < PRUNE_BATCH as u64 {
            return Ok(total);
        }
        // Let other writers through between batches.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 20_000 * DAY + 12 * 3_600_000;

    fn idle(last: i64) -> WorkerView {
        WorkerView {
            last_check_in: Some(last),
            ..WorkerView::default()
        }
    }

    fn busy(last: i64) -> WorkerView {
        WorkerView {
            last_check_in: Some(last),
            current: Some(("t1".into(), "Summarise".into())),
            ..WorkerView::default()
        }
    }

    fn fleet(statuses: &[(usize, WorkerStatus)]) -> Vec<WorkerStatus> {
        statuses
            .iter()
            .flat_map(|(n, s)| std::iter::repeat_n(*s, *n))
            .collect()
    }

    #[test]
    fn a_worker_is_offline_once_it_has_not_checked_in_for_120_seconds() {
        assert_eq!(worker_status(&idle(NOW - 119_999), NOW), WorkerStatus::Active);
        assert_eq!(worker_status(&idle(NOW - 120_000), NOW), WorkerStatus::Offline);
        assert_eq!(worker_status(&busy(NOW - 119_999), NOW), WorkerStatus::Working);
        assert_eq!(worker_status(&busy(NOW - 120_000), NOW), WorkerStatus::Offline);
        assert_eq!(worker_status(&WorkerView::default(), NOW), WorkerStatus::Offline);
    }

    #[test]
    fn a_worker_on_a_task_is_working_and_an_idle_one_is_active() {
        assert_eq!(worker_status(&busy(NOW), NOW), WorkerStatus::Working);
        assert_eq!(worker_status(&idle(NOW), NOW), WorkerStatus::Active);
    }

    #[test]
    fn the_cluster_is_stressed_from_80_percent_working() {
        use WorkerStatus::{Active, Offline, Working};
        assert_eq!(
            cluster_status(&fleet(&[(8, Working), (2, Active)])),
            ClusterStatus::Stressed
        );
        assert_eq!(
            cluster_status(&fleet(&[(8, Working), (2, Offline)])),
            ClusterStatus::Stressed
        );
        assert_eq!(cluster_status(&fleet(&[(10, Working)])), ClusterStatus::Stressed);
        assert_eq!(
            cluster_status(&fleet(&[(7, Working), (3, Active)])),
            ClusterStatus::Optimal
        );
        assert_eq!(
            cluster_status(&fleet(&[(4, Working), (1, Offline)])),
            ClusterStatus::Stressed
        );
    }

    #[test]
    fn the_cluster_is_optimal_from_30_percent_alive_and_degraded_below() {
        use WorkerStatus::{Active, Offline, Working};
        assert_eq!(
            cluster_status(&fleet(&[(3, Active), (7, Offline)])),
            ClusterStatus::Optimal
        );
        assert_eq!(
            cluster_status(&fleet(&[(1, Working), (2, Active), (7, Offline)])),
            ClusterStatus::Optimal
        );
        assert_eq!(
            cluster_status(&fleet(&[(2, Active), (8, Offline)])),
            ClusterStatus::Degraded
        );
        assert_eq!(cluster_status(&fleet(&[(10, Offline)])), ClusterStatus::Degraded);
        assert_eq!(cluster_status(&[]), ClusterStatus::Degraded);
    }

    #[test]
    fn the_daily_count_shows_zero_after_midnight_utc_before_the_next_task() {
        let view = WorkerView {
            tasks_processed_today: 7,
            counted_day: ai_tasks::utc_day(NOW),
            ..idle(NOW)
        };
        assert_eq!(tasks_today(&view, NOW), 7);
        let last_ms_of_day = (ai_tasks::utc_day(NOW) + 1) * DAY - 1;
        assert_eq!(tasks_today(&view, last_ms_of_day), 7);
        assert_eq!(tasks_today(&view, last_ms_of_day + 1), 0);
    }

    #[test]
    fn a_snapshot_keeps_the_configured_order_and_counts_the_active_fleet() {
        let views = [
            ("Helios", busy(NOW - 1_000)),
            ("Eos", idle(NOW - 5_000)),
            ("Aethon", idle(NOW - 200_000)),
        ];
        let snap = snapshot(views.iter().map(|(n, v)| (*n, v)), NOW);
        let names: Vec<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["Helios", "Eos", "Aethon"]);
        assert_eq!(snap.total_active_fleet, 2);
        assert_eq!(snap.cluster_status, ClusterStatus::Optimal);
        assert_eq!(snap.nodes[0].status, WorkerStatus::Working);
        assert_eq!(snap.nodes[0].current_task_id.as_deref(), Some("t1"));
        assert_eq!(snap.nodes[0].current_action.as_deref(), Some("Summarise"));
        assert_eq!(snap.nodes[1].current_task_id, None);
        assert_eq!(snap.nodes[2].status, WorkerStatus::Offline);
    }

    #[test]
    fn the_cached_queue_depth_goes_stale_after_250_ms() {
        let fleet = AiFleet::new(vec!["Helios".into()]);
        assert!(fleet.depth_is_stale(NOW));
        fleet.set_queue_depth(3, NOW);
        assert_eq!(fleet.queue_depth(), 3);
        assert!(!fleet.depth_is_stale(NOW + DEPTH_REFRESH_MS - 1));
        assert!(fleet.depth_is_stale(NOW + DEPTH_REFRESH_MS));
    }
}
