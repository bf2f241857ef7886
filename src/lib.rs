//! Ekart: an online shop as one binary. See `DESIGN.md` in the shared docs and the README.

pub mod app;
pub mod bus;
pub mod config;
pub mod datacopy;
pub mod db;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod modules;
pub mod telemetry;
