//! Per-module databases: a SQLite file per module, or a PostgreSQL schema per module.
//!
//! Queries are written once, in the SQL both engines accept, and run through sqlx's `Any`
//! driver (`$1` placeholders work in both). Each module gets its own pools and migrations, so
//! no module can reach another's tables. On SQLite, units of work run on the module's writer
//! thread, which drives its own connection directly (`direct.rs`) behind the same sqlx API.

use std::fmt::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::{DatabaseSettings, SqliteSynchronous};

pub mod bulk;
mod direct;
pub mod keyset;
mod locks;
mod migrations;
mod reader;
mod writer;

pub use direct::Conn;
pub use locks::advisory_key;
pub use migrations::Migrations;
pub use reader::Reader;
pub use writer::BoxFut;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A module's database. On SQLite the writes of [`Db::write`] share the writer's connection,
/// which serialises them in the process instead of in SQLite's busy-wait loop; reads use a
/// pool of their own.
#[derive(Clone)]
pub struct Db {
    pub backend: Backend,
    /// Schema (PostgreSQL) or file stem (SQLite) this module owns.
    pub name: &'static str,
    pub read: Reader,
    write: AnyPool,
    /// Rung after the commit of a unit of work that asked for it ([`Uow::ring_bell_on_commit`]):
    /// how a task waiting for new rows (the outbox's relay) hears of them without polling.
    bell: Arc<Notify>,
    /// The queues of the module's group-commit writers (`writer.rs`).
    writer: writer::Senders,
}

impl Db {
    /// A connection of the module's database outside its pools, for what lives as long as a
    /// session does (the bus's partition leases, advisory locks).
    pub async fn own_connection(&self) -> sqlx::Result<sqlx::AnyConnection> {
        Ok(self.write.acquire().await?.detach())
    }

    /// Opens (creating if needed) the database of module `name` and applies its migrations.
    pub async fn open(
        settings: &DatabaseSettings,
        name: &'static str,
        migrations: &Migrations,
    ) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let db = if let Some(dir) = settings.url.strip_prefix("sqlite://") {
            Self::open_sqlite(settings, name, dir).await?
        } else {
            Self::open_postgres(settings, name).await?
        };
        // Instances of a module starting at once make its schema and tables once.
        db.exclusively("migrate", async {
            if db.backend == Backend::Postgres {
                db.write
                    .execute(format!("CREATE SCHEMA IF NOT EXISTS {name}").as_str())
                    .await?;
            }
            migrations.for_backend(db.backend).run(&db.write).await?;
            Ok::<_, anyhow::Error>(())
        })
        .await??;
        Ok(db)
    }

    async fn open_sqlite(
        settings: &DatabaseSettings,
        name: &'static str,
        dir: &str,
    ) -> anyhow::Result<Db> {
        let dir = PathBuf::from(if dir.is_empty() { "." } else { dir });
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create database directory {dir:?}: {e}"))?;
        let file = dir.join(format!("{name}.db"));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let synchronous = match settings.sqlite_synchronous {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Off => "OFF",
        };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
        );
        let options = quiet(AnyConnectOptions::from_str(&url)?);
        let pool = |max: u32| {
            let pragmas = pragmas.clone();
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(move |conn, _| {
                    let pragmas = pragmas.clone();
                    Box::pin(async move {
                        conn.execute(pragmas.as_str()).await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let write = pool(1).await?;
        let bell = Arc::new(Notify::new());
        let (jobs, queue) = writer::queue();
        let own = direct::open(&file, synchronous)
            .map_err(|e| anyhow::anyhow!("cannot open {file:?} for writing: {e}"))?;
        writer::spawn_sqlite(name, own, bell.clone(), queue)?;
        let read = Reader::sqlite(&file, settings.max_connections as usize)
            .map_err(|e| anyhow::anyhow!("cannot open {file:?} for reading: {e}"))?;
        Ok(Db {
            backend: Backend::Sqlite,
            name,
            read,
            write,
            bell,
            writer: jobs,
        })
    }

    async fn open_postgres(settings: &DatabaseSettings, name: &'static str) -> anyhow::Result<Db> {
        // The schema is made in `Db::open`, once among instances starting at once.
        let options = quiet(AnyConnectOptions::from_str(&settings.url)?);
        let pool = |max: u32, setup: String| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(move |conn, _| {
                    let setup = setup.clone();
                    Box::pin(async move {
                        conn.execute(setup.as_str()).await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let search_path = format!("SET search_path TO {name}");
        let read = Reader::pool(pool(settings.max_connections, search_path.clone()).await?);
        // The writers' connections, and one more for the rare unit of work begun on its own.
        // The write path only ever finds rows by key. Its statements are prepared once per
        // connection, and PostgreSQL keeps a generic plan made while the tables were small
        // (a new shop, or any start before autovacuum's next ANALYZE): for the batch
        // statements (`IN (…)` lists, joins with `VALUES`) that plan is a sequential scan,
        // kept as the tables grow, and it made a batch cost milliseconds at a few thousand
        // orders. Writers therefore rule sequential scans out wherever an index serves.
        let write_setup = format!("{search_path}; SET enable_seqscan = off");
        let write = pool(settings.postgres_writers + 1, write_setup).await?;
        let bell = Arc::new(Notify::new());
        let (jobs, queue) = writer::queue();
        writer::spawn_postgres(
            name,
            write.clone(),
            settings.postgres_writers,
            bell.clone(),
            queue,
        );
        Ok(Db {
            backend: Backend::Postgres,
            name,
            read,
            write,
            bell,
            writer: jobs,
        })
    }

    /// Starts a write transaction (a unit of work) of its own.
    pub async fn begin(&self) -> Result<Uow, sqlx::Error> {
        Ok(Uow::new(
            Conn::Sqlx(self.write.begin().await?),
            self.backend,
            self.bell.clone(),
        ))
    }

    /// Runs `work` in a write transaction and answers once it is committed. The module's writer
    /// may share that transaction with other work (group commit); `work` failing rolls back
    /// only its own changes. Use it for every write on a hot path.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'a> FnOnce(&'a mut Uow) -> BoxFut<'a, Result<T, E>> + Send + 'static,
    {
        submit(&self.writer.now, work).await
    }

    /// Like [`Db::write`], for housekeeping nobody is waiting on (deleting relayed outbox
    /// rows): it rides with the next transaction the writer begins for other work, or commits
    /// on its own if none comes within a fraction of a second. A commit of its own would cost
    /// an fsync for a few deleted rows, several times per checkout.
    pub async fn write_later<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'a> FnOnce(&'a mut Uow) -> BoxFut<'a, Result<T, E>> + Send + 'static,
    {
        submit(&self.writer.later, work).await
    }

    /// See [`Db`]'s `bell`: waited on by whoever watches for rows other writers add.
    pub fn bell(&self) -> Arc<Notify> {
        self.bell.clone()
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Queues `work` for the module's writers and answers once its transaction has committed.
async fn submit<T, E, F>(queue: &mpsc::Sender<writer::Job>, work: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<sqlx::Error> + Send + 'static,
    F: for<'a> FnOnce(&'a mut Uow) -> BoxFut<'a, Result<T, E>> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let gone = || {
        E::from(sqlx::Error::Protocol(
            "the database writer has stopped".into(),
        ))
    };
    queue
        .send(writer::job(work, reply))
        .await
        .map_err(|_| gone())?;
    let (result, after_commit) = answer.await.map_err(|_| gone())?;
    if result.is_ok() {
        for hook in after_commit {
            hook();
        }
    }
    result
}

/// What a unit of work runs once its changes are committed ([`Uow::after_commit`]).
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// A write transaction (or a job's savepoint inside the writer's shared one).
pub struct Uow {
    /// Always there until `commit` takes it.
    tx: Option<Conn>,
    backend: Backend,
    bell: Arc<Notify>,
    ring_bell: bool,
    after_commit: Vec<AfterCommit>,
    /// Statements sent so far (each one takes the connection through [`Uow::conn`]), for the
    /// unit of work's span.
    statements: u64,
}

impl Uow {
    fn new(tx: Conn, backend: Backend, bell: Arc<Notify>) -> Uow {
        Uow {
            tx: Some(tx),
            backend,
            bell,
            ring_bell: false,
            after_commit: Vec::new(),
            statements: 0,
        }
    }

    /// How many statements this transaction has sent.
    pub fn statements(&self) -> u64 {
        self.statements
    }

    /// Runs `hook` once this work's changes are committed, in the task that asked for the
    /// work, after [`Db::write`] answers; never if they are rolled back. For what must not
    /// happen before the change is durable: waking a request that waits on it, handing a
    /// recorded intent to the task that carries it out.
    pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(hook));
    }

    /// The hooks the work registered so far, taken out.
    fn take_after_commit(&mut self) -> Vec<AfterCommit> {
        std::mem::take(&mut self.after_commit)
    }

    /// Rings the database's bell ([`Db::bell`]) as soon as this transaction commits, from the
    /// writer itself.
    pub fn ring_bell_on_commit(&mut self) {
        self.ring_bell = true;
    }

    /// Runs statements without parameters, in order (the writer's savepoints).
    async fn run_all(&mut self, statements: &[&str]) -> Result<(), sqlx::Error> {
        for sql in statements {
            self.conn().execute(*sql).await?;
        }
        Ok(())
    }

    /// Which engine the transaction runs on, for the rare statement whose SQL must differ.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the unit of work's statements run on: `sqlx::query(..).execute(uow.conn())`.
    pub fn conn(&mut self) -> &mut Conn {
        self.statements += 1;
        self.tx
            .as_mut()
            .expect("a unit of work is open until committed")
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.tx.take() {
            Some(Conn::Sqlx(tx)) => tx.commit().await?,
            Some(mut direct) => direct.execute("COMMIT").await.map(|_| ())?,
            None => {}
        }
        if self.ring_bell {
            self.bell.notify_one();
        }
        Ok(())
    }
}

impl Drop for Uow {
    /// An uncommitted unit of work is rolled back (sqlx's transaction does so by itself).
    fn drop(&mut self) {
        if let Some(Conn::Direct(conn)) = self.tx.take() {
            if let Ok(conn) = conn.lock() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

/// Statements are not logged one by one (the hot path runs dozens a second per shopper);
/// slow ones still are, as warnings.
fn quiet(options: AnyConnectOptions) -> AnyConnectOptions {
    options
        .disable_statement_logging()
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500))
}

/// Milliseconds since the Unix epoch: how every table stores time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Renders a stored millisecond timestamp as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `values` padded to a power of two with its last value again, for a statement whose text
/// depends on how many values it takes (`IN (…)`, multi-row `VALUES`): a handful of texts then
/// cover every size and stay in PostgreSQL's prepared-statement cache. Only for statements
/// where a repeated value changes nothing.
pub fn padded_to_power_of_two<T: Clone>(values: &[T]) -> Vec<T> {
    let Some(last) = values.last() else {
        return Vec::new();
    };
    let count = values.len().next_power_of_two();
    let mut padded = values.to_vec();
    padded.resize(count, last.clone());
    padded
}

/// `$from, $from+1, …` for `count` parameters: the list of an `IN (…)` or a `VALUES` row.
pub fn placeholders(from: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 4);
    for i in from..from + count {
        if i > from {
            out.push(',');
        }
        let _ = write!(out, "${i}");
    }
    out
}

/// `items` in runs whose lengths are powers of two, largest first (13 = 8 + 4 + 1), at most
/// `max` long: for multi-row statements that cannot be padded (rows that must not repeat), a
/// few statement texts serve every count and stay prepared.
pub fn power_of_two_runs<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = (1usize << rest.len().ilog2()).min(max.max(1));
        let (run, later) = rest.split_at(n);
        rest = later;
        Some(run)
    })
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::{padded_to_power_of_two, power_of_two_runs};

    #[test]
    fn padding_repeats_the_last_value_up_to_a_power_of_two() {
        assert_eq!(padded_to_power_of_two(&[1, 2, 3]), [1, 2, 3, 3]);
        assert_eq!(padded_to_power_of_two(&[1, 2]), [1, 2]);
        assert!(padded_to_power_of_two::<i32>(&[]).is_empty());
    }

    #[test]
    fn runs_are_powers_of_two_largest_first_and_keep_every_item_once_in_order() {
        let items: Vec<u32> = (0..13).collect();
        let runs: Vec<&[u32]> = power_of_two_runs(&items, 64).collect();
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [8, 4, 1]);
        assert_eq!(runs.concat(), items);
        let capped: Vec<usize> = power_of_two_runs(&items, 4).map(<[u32]>::len).collect();
        assert_eq!(capped, [4, 4, 4, 1]);
        assert_eq!(power_of_two_runs::<u32>(&[], 64).count(), 0);
    }
}
