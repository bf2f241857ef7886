//! Group commit: a module's writers fold the writes that arrive while they are busy into a
//! single transaction, so many requests share one commit (one fsync, one WAL flush).
//!
//! Each job runs inside a savepoint of the shared transaction: a job that fails rolls back only
//! its own changes and gets its own error, while the others commit. Nobody hears "done" before
//! the commit that made their change durable.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot, Notify};

use super::direct::{Conn, Direct};
use super::{AfterCommit, Backend, Uow};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 256;

/// How long housekeeping waits for other work to share a transaction with before it commits
/// on its own.
const LATER_AT_MOST: Duration = Duration::from_millis(200);

/// Where a module's writes are queued: work whose caller waits for it, and housekeeping that
/// can wait for the next transaction (see [`super::Db::write_later`]).
#[derive(Clone)]
pub(super) struct Senders {
    pub now: mpsc::Sender<Job>,
    pub later: mpsc::Sender<Job>,
}

pub(super) struct Queue {
    now: mpsc::Receiver<Job>,
    later: mpsc::Receiver<Job>,
}

pub(super) fn queue() -> (Senders, Queue) {
    let (now, now_rx) = mpsc::channel(1024);
    let (later, later_rx) = mpsc::channel(64);
    (
        Senders { now, later },
        Queue {
            now: now_rx,
            later: later_rx,
        },
    )
}

/// A job's outcome inside the transaction, and how to tell its caller once the commit is known.
pub(super) struct Finished {
    ok: bool,
    deliver: Box<dyn FnOnce(Option<String>, Folded) + Send>,
}

/// The transaction a job was committed in, for its span.
#[derive(Debug, Clone, Copy)]
pub(super) struct Folded {
    /// The module database's name.
    module: &'static str,
    /// Jobs committed together.
    jobs: usize,
}

pub(super) type Job = Box<dyn for<'a> FnOnce(&'a mut Uow) -> BoxFut<'a, Finished> + Send>;

/// Wraps typed work as a job that answers through `reply` after the commit, with the hooks it
/// registered ([`Uow::after_commit`]) for the caller to run if it succeeded.
pub(super) fn job<T, E, F>(work: F, reply: oneshot::Sender<(Result<T, E>, Vec<AfterCommit>)>) -> Job
where
    T: Send + 'static,
    E: From<sqlx::Error> + Send + 'static,
    F: for<'a> FnOnce(&'a mut Uow) -> BoxFut<'a, Result<T, E>> + Send + 'static,
{
    // The work runs on the writer's task: it keeps the trace of the request that asked for it,
    // so the events it writes continue that trace.
    let trace = crate::telemetry::trace::current();
    Box::new(move |uow| {
        Box::pin(async move {
            use crate::telemetry::spans::{Kind, Span};
            // The job's span, from its start to its commit: a child of the work that asked.
            let mut span = trace.map(|parent| {
                Span::start(Kind::Internal, parent.child(), Some(parent), || {
                    "unit of work"
                })
            });
            let before = uow.statements();
            let result = crate::telemetry::trace::scope(trace, work(uow)).await;
            let statements = uow.statements() - before;
            let after_commit = uow.take_after_commit();
            Finished {
                ok: result.is_ok(),
                deliver: Box::new(move |commit_error, folded| {
                    if let Some(span) = span.as_mut().filter(|s| s.is_recording()) {
                        span.rename(format!("commit {}", folded.module));
                        span.tag("db.jobs_folded", folded.jobs as i64);
                        span.tag("db.statements", statements as i64);
                        let outcome = match (&result, &commit_error) {
                            (Ok(_), None) => "committed",
                            (Ok(_), Some(_)) => "commit failed",
                            (Err(_), _) => "rolled back",
                        };
                        span.tag("db.outcome", outcome);
                    }
                    drop(span);
                    let answer = match (result, commit_error) {
                        (Ok(_), Some(e)) => Err(E::from(sqlx::Error::Protocol(e))),
                        (result, _) => result,
                    };
                    let _ = reply.send((answer, after_commit));
                }),
            }
        })
    })
}

/// Starts SQLite's writer on a thread of its own. A write job awaits dozens of statements one
/// after another; on the shared runtime each of those wake-ups would queue behind request
/// handling, and the writer, the one place a module's writes pass through, would idle in
/// between.
pub(super) fn spawn_sqlite(
    module: &'static str,
    conn: Direct,
    wake: Arc<Notify>,
    mut jobs: Queue,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("{module}-writer"))
        .spawn(move || {
            runtime.block_on(async move {
                while let Some(batch) = next_batch(&mut jobs).await {
                    let begun = conn
                        .lock()
                        .expect("the writer's connection")
                        .prepare_cached("BEGIN IMMEDIATE")
                        .and_then(|mut begin| begin.execute([]).map(|_| ()));
                    match begun {
                        Ok(()) => {
                            let uow =
                                Uow::new(Conn::Direct(conn.clone()), Backend::Sqlite, wake.clone());
                            run_batch(module, uow, batch).await
                        }
                        // Dropping the jobs answers their callers with an error.
                        Err(e) => tracing::error!(error = %e, "cannot begin a write transaction"),
                    }
                }
            })
        })?;
    Ok(())
}

/// Starts `writers` PostgreSQL writers on the runtime, sharing one queue: each takes what has
/// queued while it was busy and commits it as one transaction on a connection of `pool`.
/// Commits are what PostgreSQL makes expensive (a WAL flush each, and a round trip), so
/// folding a burst of checkouts into one is what lets it keep up.
pub(super) fn spawn_postgres(
    module: &'static str,
    pool: AnyPool,
    writers: u32,
    wake: Arc<Notify>,
    jobs: Queue,
) {
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
    for _ in 0..writers.max(1) {
        let (pool, wake, jobs) = (pool.clone(), wake.clone(), jobs.clone());
        tokio::spawn(async move {
            loop {
                let Some(batch) = next_batch(&mut *jobs.lock().await).await else {
                    return;
                };
                // The first savepoint rides with BEGIN: one round trip, not two.
                let begin = if batch.len() == 1 {
                    "BEGIN"
                } else {
                    "BEGIN; SAVEPOINT ekart_job"
                };
                match pool.begin_with(begin).await {
                    Ok(tx) => {
                        let uow = Uow::new(Conn::Sqlx(tx), Backend::Postgres, wake.clone());
                        run_batch(module, uow, batch).await
                    }
                    Err(e) => {
                        tracing::error!(module, error = %e, "cannot begin a write transaction")
                    }
                }
            }
        });
    }
}

/// The next batch: the first job to arrive and whatever queued behind it, or `None` once every
/// sender is gone. Housekeeping waits up to [`LATER_AT_MOST`] for a job to ride with: a
/// transaction of its own would cost a commit (an fsync) for a few deleted rows.
async fn next_batch(queue: &mut Queue) -> Option<Vec<Job>> {
    let mut batch = Vec::new();
    tokio::select! {
        biased;
        job = queue.now.recv() => batch.push(job?),
        Some(chore) = queue.later.recv() => {
            batch.push(chore);
            if let Ok(job) = tokio::time::timeout(LATER_AT_MOST, queue.now.recv()).await {
                batch.push(job?);
            }
        }
    }
    for jobs in [&mut queue.now, &mut queue.later] {
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    }
    Some(batch)
}

/// Savepoint statements between jobs. On SQLite each is a call into the library; on
/// PostgreSQL each is a round trip, so the steps between two jobs go as one simple query.
fn savepoint_sql(backend: Backend, step: Step) -> &'static [&'static str] {
    match (backend, step) {
        (Backend::Sqlite, Step::Open) => &["SAVEPOINT ekart_job"],
        (Backend::Sqlite, Step::Kept) => &["RELEASE SAVEPOINT ekart_job"],
        (Backend::Sqlite, Step::Undone) => &[
            "ROLLBACK TO SAVEPOINT ekart_job",
            "RELEASE SAVEPOINT ekart_job",
        ],
        (Backend::Postgres, Step::Open) => &[],
        (Backend::Postgres, Step::Kept) => &["RELEASE SAVEPOINT ekart_job; SAVEPOINT ekart_job"],
        (Backend::Postgres, Step::Undone) => &["ROLLBACK TO SAVEPOINT ekart_job"],
    }
}

#[derive(Clone, Copy)]
enum Step {
    /// Before a job (PostgreSQL's savepoint is already open: with BEGIN, or after the last job).
    Open,
    /// After a job that succeeded.
    Kept,
    /// After a job that failed: its changes go, the others' stay.
    Undone,
}

/// Runs `batch` in the open transaction `uow`, each job in a savepoint when there are several,
/// commits, and tells every job's caller the outcome.
async fn run_batch(module: &'static str, mut uow: Uow, batch: Vec<Job>) {
    let backend = uow.backend();
    let folded = Folded {
        module,
        jobs: batch.len(),
    };
    let alone = batch.len() == 1;
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut broken: Option<String> = None;
    let count = batch.len();
    for (i, job) in batch.into_iter().enumerate() {
        let last = i + 1 == count;
        if !alone {
            if let Err(e) = uow.run_all(savepoint_sql(backend, Step::Open)).await {
                broken = Some(e.to_string());
                break;
            }
        }
        let finished = AssertUnwindSafe(job(&mut uow)).catch_unwind().await;
        let Ok(finished) = finished else {
            tracing::error!("a write job panicked; its batch is rolled back");
            broken = Some("a write job panicked".into());
            break;
        };
        if alone && !finished.ok {
            // Nothing else shares the transaction: roll it back by not committing.
            drop(uow);
            (finished.deliver)(None, folded);
            return;
        }
        let step = match (alone, finished.ok) {
            (true, _) => Ok(()),
            // COMMIT releases PostgreSQL's last savepoint itself.
            (false, true) if last && backend == Backend::Postgres => Ok(()),
            (false, true) => uow.run_all(savepoint_sql(backend, Step::Kept)).await,
            (false, false) => uow.run_all(savepoint_sql(backend, Step::Undone)).await,
        };
        deliveries.push(finished.deliver);
        if let Err(e) = step {
            broken = Some(e.to_string());
            break;
        }
    }
    let commit_error = match broken {
        Some(e) => Some(e),
        None => uow.commit().await.err().map(|e| e.to_string()),
    };
    if let Some(e) = &commit_error {
        tracing::error!(error = %e, "a group commit failed; every job in it is told");
    }
    for deliver in deliveries {
        deliver(commit_error.clone(), folded);
    }
}
