//! The heartbeat batch writer: heartbeats are acknowledged once they are in memory and queued; this
//! loop commits what is queued as soon as it can — it gathers for at most [`GATHER`], and whatever
//! arrives while a commit runs forms the next batch — in one transaction of multi-row statements.
//!
//! Nothing acknowledged is dropped: a batch that cannot be committed (the database is down or
//! stalled) is retried until it is, and while it waits the bounded queue fills, so new heartbeats
//! are refused with 503 and `Retry-After` instead of being accepted and lost. A panic in the loop
//! is logged and the loop started again on the same queue. On shutdown it drains the queue and
//! commits before returning.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

use hyprbox_store::nodes::{self, HeartbeatRow, Node, NodeEvent};
use hyprbox_store::{Store, StoreError, tokens};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::memory::merge;

/// The longest the first item of a batch waits for others before the commit starts. The commit
/// itself follows, so a heartbeat is durable within this plus one commit (the contract's 250 ms).
pub const GATHER: Duration = Duration::from_millis(20);
/// A batch is committed early once it holds this many items.
const BATCH_MAX: usize = 5_000;
/// Items the queue holds; past that, heartbeats are refused with 503 (back-pressure, not loss).
const QUEUE: usize = 100_000;
/// The longest wait between two attempts at a batch that does not commit.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// On shutdown, how long a batch that does not commit is retried before the process gives up on it.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(30);
/// Items one heartbeat may queue: its node row, its history row and up to three activity events.
pub const PER_HEARTBEAT: usize = 5;

// Node rows are a large share of the items; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Pending {
    /// A node row to insert or update (inventory kept where the row has none).
    Node(Node),
    Heartbeat(HeartbeatRow),
    Event(NodeEvent),
    /// A deleted node: drop its queued rows and delete whatever of it was already written.
    Forget(String),
    /// `lastUsedAt` of a node token (sent at most once a minute per token).
    TokenUsed {
        id: String,
        at: i64,
    },
    /// Told once everything queued before it is committed (see [`BatchWriter::settled`]).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Whether the writer is keeping up, for the probes: the time (unix ms) since which its current
/// batch has failed to commit, 0 while it commits.
#[derive(Default)]
pub struct WriterHealth {
    failing_since: AtomicI64,
}

impl WriterHealth {
    /// `Some(since)` while the writer cannot commit.
    pub fn failing_since(&self) -> Option<i64> {
        match self.failing_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    fn failing(&self) {
        let _ = self.failing_since.compare_exchange(
            0,
            hyprbox_store::now_ms().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn committing(&self) {
        self.failing_since.store(0, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct BatchWriter {
    sender: mpsc::Sender<Pending>,
    pub health: Arc<WriterHealth>,
}

/// The queue is full (or closed): the item was not taken, and the caller must not acknowledge it.
#[derive(Debug)]
pub struct QueueFull;

impl BatchWriter {
    /// The writer's handle and the receiving end its loop drains.
    pub fn new() -> (BatchWriter, mpsc::Receiver<Pending>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let health = Arc::default();
        (BatchWriter { sender, health }, receiver)
    }

    /// Queues an item; waits only when the queue is full. For writes whose request already
    /// committed its own work (token touches, job and finding events); `false` once shut down.
    pub async fn queue(&self, item: Pending) -> bool {
        self.sender.send(item).await.is_ok()
    }

    /// Room for `n` items now, or [`QueueFull`]: a heartbeat takes its room before it is applied,
    /// so one that is refused changed nothing and one that is accepted cannot be dropped.
    pub fn reserve(&self, n: usize) -> Result<mpsc::PermitIterator<'_, Pending>, QueueFull> {
        self.sender.try_reserve_many(n).map_err(|_| QueueFull)
    }

    /// Waits until everything queued before this call is committed, so a read of the database
    /// sees what earlier answers acknowledged (read-your-writes); `false` when that did not happen
    /// within `limit` (the database is down or stalled) or the writer is gone.
    pub async fn settled(&self, limit: Duration) -> bool {
        let (done, written) = tokio::sync::oneshot::channel();
        let waited = tokio::time::timeout(limit, async {
            self.sender.send(Pending::Barrier(done)).await.is_ok() && written.await.is_ok()
        });
        waited.await.unwrap_or(false)
    }
}

#[derive(Default)]
struct Batch {
    upserts: HashMap<String, Node>,
    rows: Vec<HeartbeatRow>,
    events: Vec<NodeEvent>,
    touches: HashMap<String, i64>,
    forgets: Vec<String>,
    barriers: Vec<tokio::sync::oneshot::Sender<()>>,
    items: usize,
}

impl Batch {
    fn add(&mut self, item: Pending) {
        self.items += 1;
        match item {
            Pending::Heartbeat(row) => self.rows.push(row),
            Pending::Node(upsert) => match self.upserts.get_mut(&upsert.node_id) {
                Some(existing) => merge(existing, &upsert),
                None => {
                    self.upserts.insert(upsert.node_id.clone(), upsert);
                }
            },
            Pending::Event(event) => self.events.push(event),
            Pending::Forget(node_id) => {
                self.upserts.remove(&node_id);
                self.rows.retain(|r| r.node_id != node_id);
                self.events.retain(|e| e.node_id != node_id);
                self.forgets.push(node_id);
            }
            Pending::TokenUsed { id, at } => {
                self.touches.insert(id, at);
            }
            Pending::Barrier(done) => self.barriers.push(done),
        }
    }

    /// Tells every barrier of this batch that what came before it is written.
    fn release(&mut self) {
        for done in self.barriers.drain(..) {
            let _ = done.send(());
        }
    }

    async fn commit(&self, store: &Store, upserts: &[Node]) -> Result<(), StoreError> {
        let mut tx = store.begin().await?;
        nodes::write_batch(&mut tx, upserts, &self.rows, &self.events).await?;
        for (id, at) in &self.touches {
            tokens::touch(&mut tx, id, *at).await?;
        }
        for node_id in &self.forgets {
            nodes::delete(&mut tx, node_id).await?;
        }
        tx.commit().await
    }
}

/// Commits queued items until `shutdown`, then drains the queue and commits once more. A panic
/// is logged and the loop resumes on the same queue (the batch it held is the only loss, and it is
/// logged with its size).
pub async fn run(
    store: Store,
    mut receiver: mpsc::Receiver<Pending>,
    health: Arc<WriterHealth>,
    shutdown: CancellationToken,
) {
    loop {
        let pass = AssertUnwindSafe(commit_until(&store, &mut receiver, &health, &shutdown));
        match pass.catch_unwind().await {
            Ok(()) => break,
            Err(_) => {
                health.failing();
                tracing::error!("the heartbeat writer panicked; starting it again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Shutdown: everything already acknowledged is in the queue; take it all.
    receiver.close();
    let mut batch = Batch::default();
    while let Some(item) = receiver.recv().await {
        batch.add(item);
    }
    if batch.items > 0 {
        let give_up = tokio::time::Instant::now() + SHUTDOWN_PATIENCE;
        commit_with_retry(&store, batch, &health, Some(give_up)).await;
    }
}

async fn commit_until(
    store: &Store,
    receiver: &mut mpsc::Receiver<Pending>,
    health: &WriterHealth,
    shutdown: &CancellationToken,
) {
    loop {
        let mut batch = Batch::default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            first = receiver.recv() => match first {
                Some(item) => batch.add(item),
                None => return,
            },
        }
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.items < BATCH_MAX {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(item)) => batch.add(item),
                Ok(None) | Err(_) => break,
            }
        }
        commit_with_retry(store, batch, health, None).await;
    }
}

/// Commits `batch`, retrying with a growing pause (at most [`RETRY_MAX`]) until it is written, or
/// until `give_up` when one is set (the last flush of a shutdown).
async fn commit_with_retry(
    store: &Store,
    mut batch: Batch,
    health: &WriterHealth,
    give_up: Option<tokio::time::Instant>,
) {
    // The node rows leave their map once, not at every attempt.
    let upserts: Vec<Node> = std::mem::take(&mut batch.upserts).into_values().collect();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match batch.commit(store, &upserts).await {
            Ok(()) => {
                batch.release();
                if attempt > 1 {
                    tracing::info!(
                        attempt,
                        items = batch.items,
                        "heartbeat batch committed after the database came back"
                    );
                }
                health.committing();
                return;
            }
            Err(err) => {
                health.failing();
                if give_up.is_some_and(|at| tokio::time::Instant::now() + delay > at) {
                    tracing::error!(error = %err, items = batch.items, "heartbeat batch not committed before the shutdown deadline: lost");
                    return;
                }
                tracing::warn!(error = %err, attempt, items = batch.items, retry_in = ?delay, "heartbeat batch not committed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_room_rather_than_taking_what_it_cannot_keep() {
        let (writer, mut receiver) = BatchWriter::new();
        let touch = || Pending::TokenUsed {
            id: "t".into(),
            at: 0,
        };
        let mut queued = 0;
        while let Ok(room) = writer.reserve(PER_HEARTBEAT) {
            for permit in room {
                permit.send(touch());
                queued += 1;
            }
        }
        assert_eq!(queued, QUEUE);
        assert!(writer.reserve(1).is_err(), "no room: the caller answers 503");
        for _ in 0..PER_HEARTBEAT {
            receiver.try_recv().unwrap();
        }
        assert!(
            writer.reserve(PER_HEARTBEAT).is_ok(),
            "room again once the writer drains"
        );
    }
}
