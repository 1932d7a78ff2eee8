//! The one thread that writes the redb file, with group commit.
//!
//! redb allows one write transaction at a time and a durable commit costs an fsync. Writers
//! therefore never open transactions themselves: they send their operation here, and the
//! thread takes every operation waiting in its queue, applies them in one transaction,
//! commits once (fsync) and only then answers each of them. Under load many writes share one
//! fsync, so durable throughput is not capped at the disk's fsync rate.

use super::tables::{Op, Reply, Tables};
use super::unavailable;
use crate::store::{CommitObserver, Result, StoreError};
use parking_lot::Mutex;
use redb::{Database, Durability};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Most operations one commit carries; bounds the latency of the last one in a batch.
const MAX_BATCH: usize = 4096;

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
}

/// The handle on the writer thread: a queue in, and the thread to join at the end.
pub(super) struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The error of the last commit, `None` once one succeeds (for `health`).
    last_error: Arc<Mutex<Option<StoreError>>>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>, observer: Option<CommitObserver>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let last_error = Arc::new(Mutex::new(None));
        let thread = {
            let last_error = last_error.clone();
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || run(&db, &rx, observer.as_ref(), &last_error))
                .map_err(unavailable)?
        };
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            last_error,
        })
    }

    /// Queues `op` and waits until the commit that carries it is durable.
    pub(super) async fn submit(&self, op: Op) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.tx.lock();
            let tx = guard
                .as_ref()
                .ok_or_else(|| unavailable("the store is closed"))?;
            tx.send(Job { op, reply })
                .map_err(|_| unavailable("the writer thread stopped"))?;
        }
        rx.await
            .map_err(|_| unavailable("the writer thread stopped"))?
    }

    pub(super) fn is_closed(&self) -> bool {
        self.tx.lock().is_none()
    }

    pub(super) fn last_error(&self) -> Option<StoreError> {
        self.last_error.lock().clone()
    }

    /// Stops taking writes; the thread commits what is queued and exits. Returns the thread
    /// to join (once: later calls return `None`).
    pub(super) fn stop(&self) -> Option<std::thread::JoinHandle<()>> {
        self.tx.lock().take();
        self.thread.lock().take()
    }
}

fn run(
    db: &Database,
    rx: &mpsc::Receiver<Job>,
    observer: Option<&CommitObserver>,
    last_error: &Mutex<Option<StoreError>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let n = batch.len();
        let outcome = commit_batch(db, batch);
        let ok = outcome.is_ok();
        *last_error.lock() = outcome.as_ref().err().map(|(_, e)| e.clone());
        if let Some(obs) = observer {
            obs(started.elapsed(), n, ok);
        }
        match outcome {
            Ok(replies) => {
                for (reply, r) in replies {
                    let _ = reply.send(r);
                }
            }
            Err((replies, e)) => {
                tracing::error!(error = %e.detail(), writes = n, "redb commit failed; the writes were not stored");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type Replies = Vec<(oneshot::Sender<Result<Reply>>, Result<Reply>)>;
type Failed = (Vec<oneshot::Sender<Result<Reply>>>, StoreError);

/// Applies a batch in one transaction and commits it. Operations refused on their own
/// (not found, token mismatch, ...) are answered with their error and the rest commit; a
/// storage failure aborts the whole batch and every operation gets that error.
fn commit_batch(db: &Database, batch: Vec<Job>) -> std::result::Result<Replies, Failed> {
    let mut senders = Vec::with_capacity(batch.len());
    let mut ops = Vec::with_capacity(batch.len());
    for j in batch {
        senders.push(j.reply);
        ops.push(j.op);
    }
    let mut txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return Err((senders, unavailable(e))),
    };
    txn.set_durability(Durability::Immediate);
    let applied = (|| {
        let mut tables = Tables::open(&txn)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let r = tables.apply(op);
            // A storage failure mid-transaction may leave partial writes: abort them all.
            if let Err(e @ StoreError::Unavailable { .. }) = &r {
                return Err(e.clone());
            }
            results.push(r);
        }
        Ok(results)
    })();
    let results = match applied {
        Ok(r) => r,
        // Dropping the transaction without committing aborts it.
        Err(e) => return Err((senders, e)),
    };
    if let Err(e) = txn.commit() {
        return Err((senders, unavailable(e)));
    }
    Ok(senders.into_iter().zip(results).collect())
}
