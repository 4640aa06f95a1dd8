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
//! Units run to completion on the task even if their caller goes away, so a request dropped
//! mid-write never leaves half of it in a shared transaction.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;
use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// A boxed future borrowing the connection for `'c`.
pub type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// How many queued units one transaction takes at most; the rest wait for the next commit.
const MAX_BATCH: usize = 256;

/// How many units may wait for the task before callers wait to queue.
const QUEUE: usize = 4096;

/// What a unit is given: the shared transaction, or the reason it will not run.
enum Attempt<'c> {
    Run(&'c mut AnyConnection),
    Refused(StoreError),
}

/// Tells a unit's caller how it ended, once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued unit with its caller's type erased: whether it succeeded, and how to answer.
type Unit = Box<dyn for<'c> FnOnce(Attempt<'c>) -> BoxFuture<'c, (bool, Answer)> + Send>;

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
        let (tell, told) = oneshot::channel::<Result<T, StoreError>>();
        let unit: Unit = Box::new(move |attempt: Attempt<'_>| {
            Box::pin(async move {
                let conn = match attempt {
                    Attempt::Run(conn) => conn,
                    Attempt::Refused(err) => {
                        let _ = tell.send(Err(err));
                        return (false, Box::new(|_| ()) as Answer);
                    }
                };
                // A panicking unit must not take the writer task, and every queued caller, with it.
                let outcome = guarded(op(conn)).await;
                let ok = outcome.is_ok();
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
        self.queue.send(unit).await.map_err(|_| gone())?;
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
        commit(&writer, &mut batch).await;
    }
}

/// Answers a unit that will not run with `err`.
async fn refuse(unit: Unit, err: &StoreError) {
    let (_, nothing_left) = unit(Attempt::Refused(err.clone())).await;
    nothing_left(Ok(()));
}

/// Runs `batch` in one transaction and answers every unit in it.
async fn commit(writer: &AnyPool, batch: &mut Vec<Unit>) {
    let mut tx = match writer.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(err) => {
            let err = StoreError::from(err);
            for unit in batch.drain(..) {
                refuse(unit, &err).await;
            }
            return;
        }
    };
    // A lone unit needs no savepoint: if it fails, the whole transaction is rolled back.
    let alone = batch.len() == 1;
    let mut answers = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    // Whether a savepoint is open. Each savepoint is released together with the next one's start,
    // in one round trip to the connection, and the last by the commit itself: the savepoints of a
    // batch cost one statement per unit instead of two.
    let mut open = false;
    for unit in batch.drain(..) {
        if let Some(err) = &broken {
            refuse(unit, err).await;
            continue;
        }
        if !alone {
            let start = if open {
                "RELEASE unit; SAVEPOINT unit"
            } else {
                "SAVEPOINT unit"
            };
            if let Err(err) = tx.execute(start).await {
                let err = StoreError::from(err);
                refuse(unit, &err).await;
                broken = Some(err);
                continue;
            }
            open = true;
        }
        let (ok, answer) = unit(Attempt::Run(&mut tx)).await;
        answers.push(answer);
        if alone {
            if !ok {
                broken = Some(StoreError::Database("the write failed".into()));
            }
            continue;
        }
        // A failed unit is undone alone; its (now empty) savepoint is released with the rest.
        if !ok && let Err(err) = tx.execute("ROLLBACK TO unit").await {
            broken = Some(err.into());
        }
    }
    let committed = match broken {
        // The transaction cannot be trusted: undo all of it; a failed unit got its own error.
        Some(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
        None => tx.commit().await.map_err(StoreError::from),
    };
    for answer in answers {
        answer(committed.clone());
    }
}
