//! Events the order module publishes on `ekart.order`: the steps of the checkout saga.

use serde::{Deserialize, Serialize};

pub use crate::contracts::payment_method::PaymentMethod;

pub const SOURCE: &str = "/ekart/order";
pub const PLACED: &str = "ekart.order.placed";
pub const PAYMENT_REQUESTED: &str = "ekart.order.payment_requested";
pub const COMPLETED: &str = "ekart.order.completed";
pub const FAILED: &str = "ekart.order.failed";
pub const CANCELLED: &str = "ekart.order.cancelled";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LineQuantity {
    pub product_id: String,
    pub quantity: i64,
}

/// A cart became an order: stock, please hold these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub user_id: String,
    /// The sign-in session that placed it, so the order joins that session's journey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub lines: Vec<LineQuantity>,
}

/// Stock is held: payment, please charge this.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub order_id: String,
    pub user_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub method: PaymentMethod,
}

/// Paid: stock, the held units are sold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order_id: String,
    /// What was paid, in minor units of `currency`.
    #[serde(default)]
    pub amount_minor: i64,
    #[serde(default)]
    pub currency: String,
}

/// The order failed: stock, release what you hold for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderFailed {
    pub order_id: String,
    pub reason: String,
}

/// The shopper cancelled a completed order: stock, take the units back; payment, refund;
/// journeys, count it out of what the session spent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    /// What the order cost, now refunded. (Absent from events written before it was added:
    /// read as nothing refunded.)
    #[serde(default)]
    pub amount_minor: i64,
    #[serde(default)]
    pub currency: String,
}
