//! Scratch PostgreSQL databases for a benchmark run, dropped at its end.

use std::sync::Mutex;

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection};

/// Scratch databases on a PostgreSQL server, one per target; [`PgScratch::drop_all`] drops
/// every one made.
pub struct PgScratch {
    server: String,
    made: Mutex<Vec<String>>,
}

impl PgScratch {
    pub fn new(server: String) -> PgScratch {
        PgScratch {
            server,
            made: Mutex::new(Vec::new()),
        }
    }

    pub async fn admin(&self) -> anyhow::Result<PgConnection> {
        // The URL may hold a password: it stays out of messages.
        PgConnection::connect(&self.server)
            .await
            .context("connecting to the PostgreSQL server (--postgres-url)")
    }

    /// A new database for `purpose` (letters, digits, dashes); answers its URL.
    pub async fn create_named(&self, purpose: &str) -> anyhow::Result<String> {
        let name = format!(
            "ekart_bench_{}_{}",
            purpose.replace('-', "_"),
            uuid::Uuid::new_v4().simple()
        );
        let mut conn = self.admin().await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating the scratch database {name}"))?;
        conn.close().await?;
        self.made.lock().unwrap().push(name.clone());
        database_url(&self.server, &name)
    }

    /// The database `name`, never dropped: a seeded shop kept between runs. Made anew when
    /// `fresh` (a seeding that did not finish leaves nothing behind), else made only if it
    /// does not exist yet. Answers its URL.
    pub async fn create_kept(&self, name: &str, fresh: bool) -> anyhow::Result<String> {
        let mut conn = self.admin().await?;
        if fresh {
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await?;
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .with_context(|| format!("creating the database {name}"))?;
        }
        conn.close().await?;
        database_url(&self.server, name)
    }

    pub async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.made.lock().unwrap());
        if names.is_empty() {
            return;
        }
        let mut conn = match self.admin().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("bench: scratch databases {names:?} left behind: {e:#}");
                return;
            }
        };
        for name in names {
            // FORCE ends connections a killed server's pool may still hold.
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = conn.execute(sql.as_str()).await {
                eprintln!("bench: dropping the scratch database {name}: {e}");
            }
        }
        let _ = conn.close().await;
    }
}

/// `server` with its database (if any) replaced by `name`; user, host and query kept.
pub fn database_url(server: &str, name: &str) -> anyhow::Result<String> {
    let (main, query) = match server.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (server, None),
    };
    let authority = main
        .find("://")
        .context("the PostgreSQL URL has no scheme (postgres://…)")?
        + 3;
    let path = main[authority..]
        .find('/')
        .map_or(main.len(), |i| authority + i);
    let mut url = format!("{}/{name}", &main[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}
