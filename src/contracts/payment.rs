//! Events the payment module publishes on `ekart.payment`.

use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "/ekart/payment";
pub const SUCCEEDED: &str = "ekart.payment.succeeded";
pub const FAILED: &str = "ekart.payment.failed";
pub const REFUNDED: &str = "ekart.payment.refunded";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: String,
    pub payment_id: String,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: String,
    pub payment_id: String,
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: String,
    pub payment_id: String,
    pub refund_reference: String,
    pub amount_minor: i64,
}
