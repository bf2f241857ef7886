//! Group commit for SQLite: one writer task per module folds the writes that arrive while it
//! is busy into a single transaction, so many requests share one fsync.
//!
//! Each job runs inside a savepoint of the shared transaction: a job that fails rolls back only
//! its own changes and gets its own error, while the others commit. Nobody hears "done" before
//! the commit that made their change durable.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::direct::{Direct, UowConn};
use super::Uow;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 256;

/// A job's outcome inside the transaction, and how to tell its caller once the commit is known.
pub(super) struct Finished {
    ok: bool,
    deliver: Box<dyn FnOnce(Option<String>) + Send>,
}

pub(super) type Job = Box<dyn for<'a> FnOnce(&'a mut Uow) -> BoxFut<'a, Finished> + Send>;

/// Wraps typed work as a job that answers through `reply` after the commit.
pub(super) fn job<T, E, F>(work: F, reply: oneshot::Sender<Result<T, E>>) -> Job
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
            let result = crate::telemetry::trace::scope(trace, work(uow)).await;
            Finished {
                ok: result.is_ok(),
                deliver: Box::new(move |commit_error| {
                    let answer = match (result, commit_error) {
                        (Ok(_), Some(e)) => Err(E::from(sqlx::Error::Protocol(e))),
                        (result, _) => result,
                    };
                    let _ = reply.send(answer);
                }),
            }
        })
    })
}

/// Starts the writer on a thread of its own. A write job awaits dozens of statements one after
/// another; on the shared runtime each of those wake-ups would queue behind request handling,
/// and the writer, the one place a module's writes pass through, would idle in between.
pub(super) fn spawn(
    module: &str,
    conn: Direct,
    wake: std::sync::Arc<tokio::sync::Notify>,
    jobs: mpsc::Receiver<Job>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("{module}-writer"))
        .spawn(move || runtime.block_on(run(conn, wake, jobs)))?;
    Ok(())
}

async fn run(
    conn: Direct,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut jobs: mpsc::Receiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, &wake, batch).await;
    }
}

async fn run_batch(conn: &Direct, wake: &std::sync::Arc<tokio::sync::Notify>, batch: Vec<Job>) {
    let begun = conn
        .lock()
        .expect("the writer's connection")
        .execute_batch("BEGIN IMMEDIATE");
    let mut uow = match begun {
        Ok(()) => Uow::new(
            UowConn::Direct(conn.clone()),
            super::Backend::Sqlite,
            wake.clone(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a write transaction");
            return; // dropping the jobs answers their callers with an error
        }
    };
    let alone = batch.len() == 1;
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut broken: Option<String> = None;
    for job in batch {
        if !alone {
            if let Err(e) = uow.execute("SAVEPOINT ekart_job").await {
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
        let step = match (alone, finished.ok) {
            (true, _) => Ok(()),
            (false, true) => uow.execute("RELEASE SAVEPOINT ekart_job").await,
            (false, false) => match uow.execute("ROLLBACK TO SAVEPOINT ekart_job").await {
                Ok(()) => uow.execute("RELEASE SAVEPOINT ekart_job").await,
                Err(e) => Err(e),
            },
        };
        if alone && !finished.ok {
            // Nothing else shares the transaction: roll it back by not committing.
            drop(uow);
            (finished.deliver)(None);
            return;
        }
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
        deliver(commit_error.clone());
    }
}
