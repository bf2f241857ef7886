//! The user module: accounts keyed by the identity provider's subject. Sessions and the
//! click-stream journey come with the storefront.

mod store;

pub use store::UserStore;

use sqlx::migrate::Migrator;

/// The same SQL runs on SQLite and PostgreSQL.
pub static MIGRATIONS: Migrator = sqlx::migrate!("src/modules/user/migrations");
