//! The five services of the original Ekart, as modules of one binary. Each owns its schema and
//! migrations and talks to the others over the bus or through their public interfaces.

pub mod frontend;
pub mod order;
pub mod payment;
pub mod stock;
pub mod user;
