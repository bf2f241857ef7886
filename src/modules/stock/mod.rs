//! The stock module: catalog and inventory. It holds stock for placed orders (never below
//! zero, under any concurrency), sells it when the order is paid and releases it otherwise.

pub use crate::contracts::stock as events;
mod error;
mod handlers;
pub mod model;
mod routes;
mod search;
mod seed;
mod store;
pub mod upkeep;

use std::sync::Arc;

pub use error::StockError;
pub use handlers::OrderEventsHandler;
pub use routes::{api, router};
pub use seed::seed_demo_catalog;
pub use store::StockStore;

use crate::bus::inbox::Handler;
use crate::db::Migrations;

/// Common SQL, and full-text search in each engine's own terms.
pub static MIGRATIONS: Migrations = Migrations {
    both: sqlx::migrate!("src/modules/stock/migrations"),
    sqlite: sqlx::migrate!("src/modules/stock/migrations/sqlite"),
    postgres: sqlx::migrate!("src/modules/stock/migrations/postgres"),
};

/// The bus consumer name of this module.
pub const CONSUMER: &str = "stock";

pub fn order_events_handler() -> Arc<dyn Handler> {
    Arc::new(OrderEventsHandler)
}
