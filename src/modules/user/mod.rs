//! The user module: accounts keyed by the identity provider's subject, sign-in sessions, and
//! the journey of each session (the click-stream and checkout outcomes, consumed from the
//! bus), with a timeline and a PDF of it.

mod handlers;
pub mod journey;
pub mod oidc;
pub mod pdf;
mod routes;
pub mod signin;
mod store;

use std::sync::Arc;

pub use handlers::{spawn_journey_consumer, store_journey_batch, CONSUMER};
pub use journey::JourneyStore;
pub use routes::{api, router};
pub use store::{Session, UserStore};

use crate::bus::inbox::Handler;
use crate::db::Migrations;

/// The same SQL runs on SQLite and PostgreSQL.
pub static MIGRATIONS: Migrations =
    Migrations::shared(sqlx::migrate!("src/modules/user/migrations"));

pub fn order_events_handler() -> Arc<dyn Handler> {
    Arc::new(handlers::OrderEventsHandler)
}
