//! The transactional outbox and its relay.
//!
//! A module writes the events a change causes into its own `outbox` table in the same
//! transaction as the change. The relay, woken when such a transaction commits and sweeping on
//! a timer as a backstop, publishes them in order and deletes them once the bus holds them. A
//! crash between commit and publish loses nothing: the rows are still there at restart.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::task::JoinHandle;

use sqlx::pool::PoolConnection;
use sqlx::Row;

use super::{Bus, Event};
use crate::db::{padded_to_power_of_two, placeholders, power_of_two_runs, Backend, Db, Uow};

/// Opens a module's database as [`Db::open`] does, with the bus's tables in it too (the
/// outbox, the inbox and the consumers' positions): the database layer knows nothing of them.
pub async fn open_database(
    settings: &crate::config::DatabaseSettings,
    name: &'static str,
    migrations: &crate::db::Migrations,
) -> anyhow::Result<Db> {
    let db = Db::open(settings, name, migrations).await?;
    // Instances of a module starting at once make the tables once.
    db.exclusively("migrate", ensure_tables(&db)).await??;
    Ok(db)
}

/// The bus's own tables, present in every module's database.
pub async fn ensure_tables(db: &Db) -> Result<(), sqlx::Error> {
    let seq = match db.backend {
        Backend::Sqlite => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "seq BIGSERIAL PRIMARY KEY",
    };
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS outbox ({seq}, topic TEXT NOT NULL, \
             partition_key TEXT NOT NULL, event TEXT NOT NULL, created_at BIGINT NOT NULL)"
        ),
        "CREATE TABLE IF NOT EXISTS inbox (consumer TEXT NOT NULL, event_id TEXT NOT NULL, \
         handled_at BIGINT NOT NULL, PRIMARY KEY (consumer, event_id))"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS consumer_positions (consumer TEXT NOT NULL, \
         topic TEXT NOT NULL, partition_no BIGINT NOT NULL, next_offset BIGINT NOT NULL, \
         PRIMARY KEY (consumer, topic, partition_no))"
            .to_string(),
    ];
    let mut uow = db.begin().await?;
    for sql in statements {
        sqlx::query(&sql).execute(uow.conn()).await?;
    }
    uow.commit().await
}

/// Writes `event` to the outbox inside the caller's transaction.
pub async fn push(uow: &mut Uow, topic: &str, event: &Event) -> Result<(), sqlx::Error> {
    push_all(uow, topic, std::slice::from_ref(event)).await
}

/// Writes `events`, in order, to the outbox inside the caller's transaction: one statement
/// per power of two in their count (13 = 8 + 4 + 1), so a few statement texts serve every
/// batch and stay prepared.
pub async fn push_all(uow: &mut Uow, topic: &str, events: &[Event]) -> Result<(), sqlx::Error> {
    for event in events {
        event.record_published(topic);
    }
    for run in power_of_two_runs(events, 64) {
        let mut sql =
            String::from("INSERT INTO outbox (topic, partition_key, event, created_at) VALUES ");
        for i in 0..run.len() {
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "($1, ${}, ${}, $2)", 3 + 2 * i, 4 + 2 * i);
        }
        let mut query = sqlx::query(&sql).bind(topic).bind(crate::db::now_ms());
        for event in run {
            let json = serde_json::to_string(event).expect("event serializes");
            query = query.bind(&event.partitionkey).bind(json);
        }
        query.execute(uow.conn()).await?;
    }
    if !events.is_empty() {
        uow.ring_bell_on_commit();
    }
    Ok(())
}

/// Runs the relay of one module's outbox until the process ends.
pub async fn run_relay(db: Db, bus: Arc<dyn Bus>, sweep: Duration, batch: u32) {
    let mut leadership = lead(&db, sweep).await;
    let mut checked = Instant::now();
    let wake = db.bell();
    let published = metrics::counter!("ekart_events_published_total", "module" => db.name);
    let waiting_gauge = metrics::gauge!("ekart_outbox_waiting", "module" => db.name);
    let mut backoff = Duration::from_millis(50);
    let mut published_rows = Published::default();
    loop {
        if checked.elapsed() >= sweep {
            leadership = still_leading(&db, leadership, sweep).await;
            checked = Instant::now();
        }
        published_rows.delete(&db);
        match relay_once(&db, bus.as_ref(), batch, &mut published_rows).await {
            Ok(sent) => {
                published.increment(sent as u64);
                backoff = Duration::from_millis(50);
                published_rows.delete(&db);
                if sent as u32 == batch {
                    continue; // more are waiting
                }
                waiting_gauge.set(0.0);
                tokio::select! {
                    _ = tokio::time::timeout(sweep, wake.notified()) => {}
                    () = published_rows.delete_finished() => {}
                }
            }
            Err(err) => {
                let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
                    .fetch_one(&db.read)
                    .await
                    .unwrap_or(-1);
                waiting_gauge.set(waiting as f64);
                tracing::warn!(module = db.name, waiting, error = %format!("{err:#}"),
                    retry_in_ms = backoff.as_millis() as u64, "outbox relay cannot publish");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The lock lives only as long as its connection: if that connection has died (a database
/// restart, a terminated backend), another process may hold the lock by now, so this one
/// stands by until it wins it again.
async fn still_leading(
    db: &Db,
    leadership: Option<PoolConnection<sqlx::Any>>,
    sweep: Duration,
) -> Option<PoolConnection<sqlx::Any>> {
    let mut conn = leadership?;
    if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
        return Some(conn);
    }
    tracing::warn!(
        module = db.name,
        "the outbox relay's lock went with its database connection; taking it again"
    );
    let _ = conn.close().await;
    lead(db, sweep).await
}

/// Several processes may run the same module on one PostgreSQL database; only one of them may
/// relay its outbox, or events of one order could be published out of order. The relay waits
/// for a session advisory lock, held for as long as the returned connection lives (if that
/// connection drops, the database releases the lock and another process's relay takes over).
/// SQLite is one process's alone: nothing to wait for.
async fn lead(db: &Db, retry: Duration) -> Option<PoolConnection<sqlx::Any>> {
    let pool = db.read.postgres_pool()?;
    // Keyed by `hashtext`, not `db::advisory_key` as the other locks are: a process of an
    // older release and one of this release must contend for the same lock, or during a
    // rolling upgrade both would relay.
    let key = format!("ekart outbox relay {}", db.name);
    let mut said = false;
    loop {
        let attempt = async {
            let mut conn = pool.acquire().await?;
            let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(won.then_some(conn))
        };
        match attempt.await {
            Ok(Some(conn)) => {
                if said {
                    tracing::info!(module = db.name, "this process now relays the outbox");
                }
                return Some(conn);
            }
            Ok(None) if !said => {
                tracing::info!(
                    module = db.name,
                    "another process relays this module's outbox; standing by"
                );
                said = true;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(module = db.name, error = %err,
                "cannot tell whether another process relays the outbox"),
        }
        tokio::time::sleep(retry).await;
    }
}

/// Rows published but not yet deleted. Waiting for a delete before the next publish put a
/// commit on the path of every saga step, so deletes run beside the relay, one at a time, as
/// housekeeping that rides with the module's next write ([`Db::write_later`]), and the relay
/// passes over the rows they are about to remove. A crash before a delete commits sends those
/// events again (the inbox drops them).
#[derive(Default)]
pub struct Published {
    /// Published rows, until their delete has committed.
    rows: HashSet<i64>,
    /// Published rows no delete has taken yet.
    to_delete: Vec<i64>,
    deleting: Option<JoinHandle<Deleted>>,
}

/// The rows a delete took, and how it went.
type Deleted = (Vec<i64>, Result<(), sqlx::Error>);

impl Published {
    fn add(&mut self, seqs: &[i64]) {
        self.rows.extend(seqs);
        self.to_delete.extend(seqs);
    }

    /// Settles the delete that finished, and starts one for what has been published since.
    fn delete(&mut self, db: &Db) {
        if self.deleting.as_ref().is_some_and(|d| d.is_finished()) {
            if let Some(Ok(deleted)) = self.deleting.take().expect("checked").now_or_never() {
                self.settle(deleted);
            }
        }
        if self.deleting.is_none() && !self.to_delete.is_empty() {
            let seqs = std::mem::take(&mut self.to_delete);
            let db = db.clone();
            self.deleting = Some(tokio::spawn(async move {
                let result = delete(&db, &seqs).await;
                if let Err(err) = &result {
                    tracing::warn!(module = db.name, error = %err, "cannot delete relayed events; retrying");
                }
                (seqs, result)
            }));
        }
    }

    /// Ends when the delete in flight has finished while rows wait for the next one (then
    /// [`Published::delete`] starts it); never otherwise.
    async fn delete_finished(&mut self) {
        if self.to_delete.is_empty() {
            return std::future::pending().await;
        }
        let Some(deleting) = self.deleting.as_mut() else {
            return std::future::pending().await;
        };
        let deleted = deleting.await;
        self.deleting = None;
        if let Ok(deleted) = deleted {
            self.settle(deleted);
        }
    }

    fn settle(&mut self, (seqs, result): Deleted) {
        match result {
            Ok(()) => {
                for seq in seqs {
                    self.rows.remove(&seq);
                }
            }
            Err(_) => self.to_delete.extend(seqs),
        }
    }
}

/// Publishes the oldest waiting events (grouped by topic, order kept) and hands them to
/// `published` to be deleted.
pub async fn relay_once(
    db: &Db,
    bus: &dyn Bus,
    batch: u32,
    published: &mut Published,
) -> anyhow::Result<usize> {
    let rows = sqlx::query("SELECT seq, topic, event FROM outbox ORDER BY seq LIMIT $1")
        .bind(batch as i64 + published.rows.len() as i64)
        .fetch_all(&db.read)
        .await?;
    let mut groups: Vec<(String, Vec<i64>, Vec<Event>)> = Vec::new();
    for row in &rows {
        let seq: i64 = row.try_get("seq")?;
        if published.rows.contains(&seq) {
            continue;
        }
        if groups.iter().map(|g| g.1.len()).sum::<usize>() == batch as usize {
            break;
        }
        let topic: String = row.try_get("topic")?;
        let event: Event = serde_json::from_str(row.try_get::<&str, _>("event")?)?;
        match groups.last_mut() {
            Some((t, seqs, events)) if *t == topic => {
                seqs.push(seq);
                events.push(event);
            }
            _ => groups.push((topic, vec![seq], vec![event])),
        }
    }
    let mut sent = Vec::with_capacity(rows.len());
    let mut failure = None;
    for (topic, seqs, events) in groups {
        match bus.publish(&topic, events).await {
            Ok(()) => sent.extend(seqs),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    published.add(&sent);
    match failure {
        Some(err) => Err(err),
        None => Ok(sent.len()),
    }
}

async fn delete(db: &Db, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    let seqs = padded_to_power_of_two(seqs);
    let sql = format!(
        "DELETE FROM outbox WHERE seq IN ({})",
        placeholders(1, seqs.len())
    );
    db.write_later(move |uow| {
        Box::pin(async move {
            let mut query = sqlx::query(&sql);
            for seq in seqs {
                query = query.bind(seq);
            }
            query.execute(uow.conn()).await?;
            Ok::<_, sqlx::Error>(())
        })
    })
    .await
}
