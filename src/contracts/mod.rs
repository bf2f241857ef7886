//! What modules agree on: the events each publishes (with their kinds and sources) and the
//! few request types two modules share. Plain serde types that import no module, so a module
//! depends on another's published word, never its internals.

pub mod journey;
pub mod order;
pub mod payment;
pub mod payment_method;
pub mod stock;
