//! The payment module: one payment per order through a provider, refunds on cancellation.

pub use crate::contracts::payment as events;
mod handlers;
pub use crate::contracts::payment_method as method;
pub mod provider;
mod routes;
mod store;

use std::sync::Arc;

pub use routes::{api, router};
pub use store::{Payment, PaymentStore};

use crate::bus::inbox::Handler;
use crate::db::Migrations;

/// The same SQL runs on SQLite and PostgreSQL.
pub static MIGRATIONS: Migrations =
    Migrations::shared(sqlx::migrate!("src/modules/payment/migrations"));

pub const CONSUMER: &str = "payment";

pub fn order_events_handler(provider: Arc<dyn provider::PaymentProvider>) -> Arc<dyn Handler> {
    Arc::new(handlers::OrderEventsHandler { provider })
}
