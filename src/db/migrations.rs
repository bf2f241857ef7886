//! A module's migrations: the SQL both engines accept, and what only one of them can say.
//!
//! Most of a schema is written once, in SQL SQLite and PostgreSQL both accept. A few features
//! exist in one engine only and must not be imitated in the other (full-text search is FTS5 on
//! SQLite, `tsvector` and GIN on PostgreSQL), so a module may add migrations per engine. Their
//! versions share one sequence with the common ones: a database records the same version
//! numbers whichever engine it runs on, which is what `ekart data copy` compares.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

use super::Backend;

pub struct Migrations {
    /// Migrations for both engines.
    pub both: Migrator,
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

impl Migrations {
    /// A module whose schema is the same on both engines.
    pub const fn shared(both: Migrator) -> Migrations {
        Migrations {
            both,
            sqlite: Migrator::DEFAULT,
            postgres: Migrator::DEFAULT,
        }
    }

    /// What runs on `backend`, in version order.
    pub fn for_backend(&self, backend: Backend) -> Migrator {
        let own = match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        };
        let mut all: Vec<_> = self.both.iter().chain(own.iter()).cloned().collect();
        all.sort_by_key(|m| m.version);
        // sqlx keeps these fields public for its `migrate!` macro; the crate's version is
        // pinned (Cargo.toml), so they cannot change under us.
        Migrator {
            migrations: Cow::Owned(all),
            ..Migrator::DEFAULT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_gets_the_common_migrations_and_its_own_in_one_sequence() {
        let stock = &crate::modules::stock::MIGRATIONS;
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let versions: Vec<i64> = stock
                .for_backend(backend)
                .iter()
                .map(|m| m.version)
                .collect();
            assert_eq!(versions, [1, 2, 3, 4, 5, 6], "{backend:?}");
        }
        let sqlite = stock.for_backend(Backend::Sqlite);
        let postgres = stock.for_backend(Backend::Postgres);
        assert!(sqlite.iter().any(|m| m.sql.contains("fts5")));
        assert!(postgres.iter().any(|m| m.sql.contains("tsvector")));
        assert!(!postgres.iter().any(|m| m.sql.contains("fts5")));
    }
}
