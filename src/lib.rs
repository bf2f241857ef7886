//! Ekart: an online shop as one binary: five modules (stock, order, payment, user, frontend),
//! each with its own database (a SQLite file or a PostgreSQL schema), that talk only through
//! events on a bus (in-process or Kafka) and run in one process or split into several behind
//! one gateway.
//!
//! Where things live (the README's "How it works" has the same map and the saga):
//! - [`modules`]: one folder per module, each with its routes, store, event handlers and
//!   migrations; modules import no other module (a test, `src/architecture.rs`, says so);
//! - [`contracts`]: what they agree on instead: the events each publishes, the payment
//!   method two of them share;
//! - [`bus`]: the `Bus` trait and its backends, the transactional outbox and its relay, the
//!   inbox that makes redelivered events harmless, partition leases;
//! - [`db`]: a module's database: readers, migrations, units of work and the group-commit
//!   writer that every write goes through;
//! - [`gateway`]: the router, remote modules (health checks, retries, breakers), the check
//!   of every credential (session tokens, the OIDC provider's tokens; whether a session is live
//!   it asks the user module through a port), extractors, rate limits and security headers;
//! - [`app`]: wires all of it; `Application::build` starts a shop on any port (tests do);
//! - [`config`] (and [`reload`]: what changes while the shop runs), [`telemetry`], [`error`] (one error type, answered as problem details),
//!   [`domain`] (parsed, valid values), [`datacopy`] (SQLite files to PostgreSQL).

pub mod app;
#[cfg(test)]
mod architecture;
pub mod bus;
pub mod config;
pub mod contracts;
pub mod datacopy;
pub mod db;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod modules;
pub mod reload;
pub mod telemetry;
