//! The payment module: one payment per order through a provider, refunds on cancellation.

pub use crate::contracts::payment as events;
mod handlers;
pub use crate::contracts::payment_method as method;
pub mod provider;
mod routes;
mod settle;
mod store;

use std::sync::Arc;

pub use routes::{api, router};
pub use settle::Settler;
pub use store::{Payment, PaymentStore};

use crate::bus::inbox::Handler;
use crate::db::Migrations;

/// The same SQL runs on SQLite and PostgreSQL.
pub static MIGRATIONS: Migrations =
    Migrations::shared(sqlx::migrate!("src/modules/payment/migrations"));

pub const CONSUMER: &str = "payment";

/// Records what the saga asks of payment; `settler` then asks the provider.
pub fn order_events_handler(settler: Settler) -> Arc<dyn Handler> {
    Arc::new(handlers::OrderEventsHandler { settler })
}
