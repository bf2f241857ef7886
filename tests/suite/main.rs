//! Ekart's integration tests, in one binary (one link of the crate) with one `support`
//! module. Each area is a module: `cargo test --test suite kafka::` runs one.
//!
//! Tests that need a service read its address from the environment (`TEST_POSTGRES_URL`,
//! `TEST_KAFKA_BROKERS`, `TEST_OIDC_*`, `E2E_CHROMIUM`); without it they say "skipped: …" on
//! stderr, and under `CI=true` a missing one fails.

mod support;

mod api;
mod cli;
mod crash;
mod data_copy;
mod e2e;
mod kafka;
mod oidc;
mod parsers;
mod reload;
mod split;
mod traces;
