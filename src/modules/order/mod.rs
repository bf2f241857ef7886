//! The order module: the cart (an order in its first state), checkout, and the order's walk
//! through the saga: cart → placed → reserved → completed, or failed with a reason, or
//! cancelled after completion.

pub mod catalog;
pub use crate::contracts::order as events;
mod error;
mod handlers;
pub mod model;
mod routes;
mod store;
mod waiters;

use std::sync::Arc;

pub use error::OrderError;
pub use routes::{api, router, OrderState};
pub use store::{OrderStore, PastLine, PastOrder};
pub use waiters::Waiters;

use crate::bus::inbox::Handler;
use crate::db::Migrations;

/// The schema, with the indexes each engine reads the order list through.
pub static MIGRATIONS: Migrations = Migrations {
    both: sqlx::migrate!("src/modules/order/migrations"),
    sqlite: sqlx::migrate!("src/modules/order/migrations/sqlite"),
    postgres: sqlx::migrate!("src/modules/order/migrations/postgres"),
};

pub const CONSUMER: &str = "order";

pub fn saga_handler(waiters: Arc<Waiters>) -> Arc<dyn Handler> {
    Arc::new(handlers::SagaHandler { waiters })
}
