//! Work that one instance of a module does at a time, however many processes run it: a
//! PostgreSQL advisory lock, held on a connection of its own. On SQLite the module's one
//! process is the only writer, and its writer thread already does one thing at a time.

use std::future::Future;

use super::{Backend, Db};
use sqlx::Connection;

impl Db {
    /// Runs `work` while no other instance of this module runs work named `name`: two
    /// instances starting at once on an empty catalog seed it once.
    pub async fn exclusively<T>(
        &self,
        name: &str,
        work: impl Future<Output = T>,
    ) -> anyhow::Result<T> {
        if self.backend == Backend::Sqlite {
            return Ok(work.await);
        }
        let key = advisory_key(&format!("ekart.{}/{name}", self.name));
        let mut conn = self.own_connection().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut conn)
            .await?;
        let done = work.await;
        // Closing the session releases the lock even if unlocking fails.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        Ok(done)
    }
}

/// The advisory lock key of `name`: FNV-1a, 64 bits, the same in every process and release.
pub fn advisory_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
