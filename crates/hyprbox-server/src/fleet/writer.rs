//! The heartbeat batch writer: heartbeats are acknowledged once they are in memory and queued; this
//! loop commits everything queued at least every 250 ms, in one transaction of multi-row statements.
//! On shutdown it drains the queue and commits before returning, so nothing acknowledged is lost.

use std::collections::HashMap;
use std::time::Duration;

use hyprbox_store::nodes::{self, HeartbeatRow, Node, NodeEvent};
use hyprbox_store::{Store, StoreError, tokens};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::memory::merge;

/// The longest a queued heartbeat waits for its commit.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A batch is committed early once it holds this many items.
const BATCH_MAX: usize = 5_000;
/// Items the queue holds before heartbeats wait for the writer (back-pressure, not loss).
const QUEUE: usize = 100_000;

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
}

#[derive(Clone)]
pub struct BatchWriter {
    sender: mpsc::Sender<Pending>,
}

impl BatchWriter {
    /// The writer's handle and the receiving end its loop drains.
    pub fn new() -> (BatchWriter, mpsc::Receiver<Pending>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        (BatchWriter { sender }, receiver)
    }

    /// Queues an item; waits only when the queue is full.
    pub async fn queue(&self, item: Pending) -> bool {
        self.sender.send(item).await.is_ok()
    }
}

#[derive(Default)]
struct Batch {
    upserts: HashMap<String, Node>,
    rows: Vec<HeartbeatRow>,
    events: Vec<NodeEvent>,
    touches: HashMap<String, i64>,
    forgets: Vec<String>,
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

/// Commits queued items until `shutdown`, then drains the queue and commits once more.
pub async fn run(store: Store, mut receiver: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
    loop {
        let mut batch = Batch::default();
        tokio::select! {
            () = shutdown.cancelled() => break,
            first = receiver.recv() => match first {
                Some(item) => batch.add(item),
                None => return,
            },
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.items < BATCH_MAX {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(item)) => batch.add(item),
                Ok(None) | Err(_) => break,
            }
        }
        commit_with_retry(&store, batch).await;
    }
    // Shutdown: everything already acknowledged is in the queue; take it all.
    receiver.close();
    let mut batch = Batch::default();
    while let Some(item) = receiver.recv().await {
        batch.add(item);
    }
    if batch.items > 0 {
        commit_with_retry(&store, batch).await;
    }
}

async fn commit_with_retry(store: &Store, mut batch: Batch) {
    // The node rows leave their map once, not at every attempt.
    let upserts: Vec<Node> = std::mem::take(&mut batch.upserts).into_values().collect();
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match batch.commit(store, &upserts).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(error = %err, attempt, items = batch.items, "heartbeat batch not committed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(
        items = batch.items,
        "heartbeat batch dropped after 5 failed commits"
    );
}
