//! Group commit for SQLite's one writer.
//!
//! The writer connection commits with `synchronous=FULL`, so every commit waits for the disk. Claims,
//! job creations, output appends and findings reports each need their own atomic write, answered
//! only once it is durable; committed one by one they would each pay a sync. Instead they queue
//! here: one task takes whatever is queued, runs each unit in its own savepoint inside one
//! transaction, commits once and then answers every caller. A unit that fails is rolled back to its
//! savepoint alone; a commit that fails fails them all. Nothing waits for a timer: while one batch
//! syncs, the next gathers, so an idle server answers after a single commit and a busy one shares
//! each sync among everything that arrived meanwhile.
//!
//! Every statement is a round trip to SQLite's worker thread, so the transaction's `BEGIN` and each
//! unit's savepoint travel with the unit's own first statement: a *led* unit (one call to the
//! database) is handed that lead and puts it at the head of its SQL; for any other unit the task
//! sends the lead itself, just before the unit runs.
//!
//! Units run to completion on the task even if their caller goes away, so a request dropped
//! mid-write never leaves half of it in a shared transaction.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// A boxed future borrowing the connection for `'c`.
pub type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// How many queued units one transaction takes at most; the rest wait for the next commit.
const MAX_BATCH: usize = 256;

/// How many batches in a row may keep the writer connection before it goes back to its pool.
const CHAIN: usize = 8;

/// How many units may wait for the task before callers wait to queue.
const QUEUE: usize = 4096;

/// What a unit is given: the shared transaction with the SQL its first statement must start with,
/// or the reason it will not run.
enum Attempt<'c> {
    Run(&'c mut AnyConnection, &'c str),
    Refused(StoreError),
}

/// Tells a unit's caller how it ended, once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued unit with its caller's type erased: how it went, and how to answer its caller.
type Run = Box<dyn for<'c> FnOnce(Attempt<'c>) -> BoxFuture<'c, (Result<(), StoreError>, Answer)> + Send>;

struct Unit {
    /// Whether the unit sends the lead itself, at the head of its one call.
    led: bool,
    run: Run,
}

/// The queue in front of the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Unit>,
}

impl GroupCommit {
    /// Starts the task that owns `writer`'s transactions (a pool of one connection).
    pub(crate) fn start(writer: AnyPool) -> GroupCommit {
        let (queue, units) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, units));
        GroupCommit { queue }
    }

    /// Runs `op` atomically in the next group transaction; returns once that transaction committed.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.queue(false, move |conn, _| op(conn)).await
    }

    /// [`GroupCommit::write`] for an `op` that makes one call to the database and starts that
    /// call's SQL with the lead it is given (see `Store::write_call`).
    pub(crate) async fn write_led<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection, &'c str) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.queue(true, op).await
    }

    async fn queue<T, F>(&self, led: bool, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection, &'c str) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (tell, told) = oneshot::channel::<Result<T, StoreError>>();
        let run: Run = Box::new(move |attempt: Attempt<'_>| {
            Box::pin(async move {
                let (conn, lead) = match attempt {
                    Attempt::Run(conn, lead) => (conn, lead),
                    Attempt::Refused(err) => {
                        let _ = tell.send(Err(err.clone()));
                        return (Err(err), Box::new(|_| ()) as Answer);
                    }
                };
                // A panicking unit must not take the writer task, and every queued caller, with it.
                let outcome = guarded(op(conn, lead)).await;
                let ok = match &outcome {
                    Ok(_) => Ok(()),
                    Err(err) => Err(err.clone()),
                };
                let answer: Answer = Box::new(move |committed| {
                    let _ = tell.send(match (outcome, committed) {
                        (Err(err), _) | (Ok(_), Err(err)) => Err(err),
                        (Ok(value), Ok(())) => Ok(value),
                    });
                });
                (ok, answer)
            })
        });
        let gone = || StoreError::Unavailable("the database writer has stopped".into());
        self.queue.send(Unit { led, run }).await.map_err(|_| gone())?;
        told.await.map_err(|_| gone())?
    }
}

/// Runs a write, turning a panic inside it into an error (the write is then rolled back).
pub(crate) async fn guarded<T>(write: BoxFuture<'_, Result<T, StoreError>>) -> Result<T, StoreError> {
    AssertUnwindSafe(write)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Database("a database write panicked".into())))
}

async fn run(writer: AnyPool, mut units: mpsc::Receiver<Unit>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while units.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut conn = match writer.acquire().await {
            Ok(conn) => conn,
            Err(err) => {
                let err = StoreError::from(err);
                for unit in batch.drain(..) {
                    refuse(unit, &err).await;
                }
                continue;
            }
        };
        // While units keep arriving the connection is kept for the next batch: giving it back
        // (the pool pings it on its worker thread) and taking it again are round trips the next
        // batch would wait for. After a few batches it goes back all the same, so the writer's
        // other users (accounts, tokens, heartbeat batches) get their turn under a steady load.
        for chained in 1..=CHAIN {
            if !commit(&mut conn, &mut batch).await {
                // A transaction may still be open on it: it must not serve anyone again.
                conn.close_on_drop();
                break;
            }
            if chained == CHAIN || units.is_empty() {
                break;
            }
            units.recv_many(&mut batch, MAX_BATCH).await;
        }
    }
}

/// Answers a unit that will not run with `err`.
async fn refuse(unit: Unit, err: &StoreError) {
    let (_, nothing_left) = (unit.run)(Attempt::Refused(err.clone())).await;
    nothing_left(Ok(()));
}

/// Runs `batch` in one transaction and answers every unit in it.
///
/// Each savepoint is released by the next unit's lead, the last by the commit. Neighbouring units'
/// savepoints have different names, so a `ROLLBACK TO` can only ever undo the unit it is meant for:
/// if a unit's lead failed half-way, its savepoint does not exist and the rollback fails instead of
/// undoing the unit before it. Two names suffice (only the previous unit's savepoint is open when
/// a lead runs), and keep the number of distinct statements, which SQLite prepares and caches one
/// by one, small.
/// Returns whether the connection was left outside any transaction (it is unless a rollback
/// failed).
async fn commit(conn: &mut PoolConnection<Any>, batch: &mut Vec<Unit>) -> bool {
    // A lone unit needs no savepoint: if it fails, the whole transaction is rolled back.
    let alone = batch.len() == 1;
    let mut answers = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    // Whether `BEGIN` has run; once it has, the unit before holds the open savepoint.
    let mut begun = false;
    let mut clean = true;
    for (n, unit) in batch.drain(..).enumerate() {
        if let Some(err) = &broken {
            refuse(unit, err).await;
            continue;
        }
        let lead = lead(begun, alone, n);
        let (outcome, answer) = if unit.led {
            (unit.run)(Attempt::Run(conn, &format!("{lead}; "))).await
        } else {
            if let Err(err) = conn.execute(lead).await {
                // A BEGIN that failed (the database is locked or gone) fails the batch at once
                // rather than letting every unit wait for it in turn.
                let err = StoreError::from(err);
                refuse(unit, &err).await;
                broken = Some(err);
                continue;
            }
            (unit.run)(Attempt::Run(conn, "")).await
        };
        answers.push(answer);
        let Err(failed) = outcome else {
            begun = true;
            continue;
        };
        if alone {
            clean = abandon(conn).await;
            begun = false;
            continue;
        }
        // A failed unit is undone alone; its (now empty) savepoint is released with the next
        // lead. If the savepoint does not exist, the lead itself failed somewhere: nothing of the
        // transaction can be trusted, and a BEGIN that failed fails the batch at once.
        let rollback = if n.is_multiple_of(2) {
            "ROLLBACK TO unit_even"
        } else {
            "ROLLBACK TO unit_odd"
        };
        match conn.execute(rollback).await {
            Ok(_) => begun = true,
            Err(_) if !begun => broken = Some(failed),
            Err(err) => broken = Some(err.into()),
        }
    }
    let committed = match (broken, begun) {
        // The transaction cannot be trusted: undo all of it; a failed unit got its own error.
        (Some(err), _) => {
            clean = abandon(conn).await;
            Err(err)
        }
        // Nothing to commit: every unit failed, each with its own error.
        (None, false) => Ok(()),
        (None, true) => match conn.execute("COMMIT").await {
            Ok(_) => Ok(()),
            Err(err) => {
                clean = abandon(conn).await;
                Err(StoreError::from(err))
            }
        },
    };
    for answer in answers {
        answer(committed.clone());
    }
    clean
}

/// What runs before the `n`th unit's own statements: the transaction's start for the first unit,
/// and in a batch the unit's savepoint, after the release of the one before.
fn lead(begun: bool, alone: bool, n: usize) -> &'static str {
    match (begun, alone, n.is_multiple_of(2)) {
        (false, true, _) => "BEGIN IMMEDIATE",
        (false, false, true) => "BEGIN IMMEDIATE; SAVEPOINT unit_even",
        (false, false, false) => "BEGIN IMMEDIATE; SAVEPOINT unit_odd",
        (true, _, true) => "RELEASE unit_odd; SAVEPOINT unit_even",
        (true, _, false) => "RELEASE unit_even; SAVEPOINT unit_odd",
    }
}

/// Rolls back whatever transaction may be open on the writer. Returns whether the connection is
/// known to be outside a transaction now: a failed ROLLBACK usually means none was open (the BEGIN
/// had failed), but it may also mean one is still open, and the two cannot be told apart here.
async fn abandon(conn: &mut PoolConnection<Any>) -> bool {
    conn.execute("ROLLBACK").await.is_ok()
}
