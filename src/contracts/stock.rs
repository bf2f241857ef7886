//! Events the stock module publishes on `ekart.stock`: its answer to a placed order.

use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "/ekart/stock";
pub const RESERVED: &str = "ekart.stock.reserved";
pub const REJECTED: &str = "ekart.stock.rejected";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReservedLine {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    /// The price the order pays: the catalog price when the stock was reserved.
    pub unit_price_minor: i64,
}

/// Every line of the order is held for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub lines: Vec<ReservedLine>,
    pub currency: String,
    pub total_minor: i64,
}

/// Nothing was held: some line could not be served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockRejected {
    pub order_id: String,
    pub product_id: String,
    pub requested: i64,
    pub available: i64,
    pub reason: String,
}
