//! Where money moves. The built-in provider is a simulator whose declines are deterministic,
//! so tests and the demo can drive every path:
//!
//! | mode        | declined when                                   | code                 |
//! |-------------|-------------------------------------------------|----------------------|
//! | CARD, EMI   | the card number ends in `0002`                  | `card_declined`      |
//! | CARD, EMI   | the card number ends in `9995`                  | `insufficient_funds` |
//! | EMI         | the amount is under 3,000.00 (300000 minor)     | `emi_not_eligible`   |
//! | UPI         | the UPI id starts with `fail@` or `decline@`    | `upi_declined`       |
//! | NET_BANKING | the bank code is `FAIL`                         | `bank_declined`      |
//! | CASH        | never (cash on delivery)                        |                      |
//!
//! Everything else succeeds, e.g. card `4242 4242 4242 4242` or UPI `shopper@okbank`.

use async_trait::async_trait;

use super::method::PaymentMethod;

/// The smallest order the simulator offers EMI for, in minor units (3,000.00).
const EMI_FROM_MINOR: i64 = 300_000;

/// A charge to make, once: `key` names it, and asking again with the same key (after a crash
/// between asking and recording the answer) must answer the first outcome, never charge twice.
pub struct Charge<'a> {
    pub key: &'a str,
    pub order_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub method: &'a PaymentMethod,
}

/// A refund of a whole charge (`reference`, the provider's), once per `key`.
pub struct Refund<'a> {
    pub key: &'a str,
    pub reference: &'a str,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved { reference: String },
    Declined { code: String, reason: String },
}

/// The provider gave no answer (down, timed out, refused the call): ask again later with the
/// same key. A decline is an [`Outcome`], not an error.
#[derive(Debug, thiserror::Error)]
#[error("the payment provider did not answer: {0}")]
pub struct Unanswered(pub String);

/// A payment provider, asked outside any database transaction (`settle.rs`). Both calls must be
/// idempotent per key.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    async fn charge(&self, charge: &Charge<'_>) -> Result<Outcome, Unanswered>;
    /// Returns the refund's reference.
    async fn refund(&self, refund: &Refund<'_>) -> Result<String, Unanswered>;
}

/// The provider a `[payment] provider` setting names.
pub fn named(name: crate::config::PaymentProviderKind) -> std::sync::Arc<dyn PaymentProvider> {
    match name {
        crate::config::PaymentProviderKind::Simulator => std::sync::Arc::new(Simulator),
    }
}

pub struct Simulator;

#[async_trait]
impl PaymentProvider for Simulator {
    async fn charge(&self, charge: &Charge<'_>) -> Result<Outcome, Unanswered> {
        let declined = |code: &str, reason: &str| {
            Ok(Outcome::Declined {
                code: code.into(),
                reason: reason.into(),
            })
        };
        match charge.method {
            PaymentMethod::Card { last4 } | PaymentMethod::Emi { last4, .. } if last4 == "0002" => {
                return declined("card_declined", "The card was declined by its bank.")
            }
            PaymentMethod::Card { last4 } | PaymentMethod::Emi { last4, .. } if last4 == "9995" => {
                return declined("insufficient_funds", "The card has insufficient funds.")
            }
            PaymentMethod::Emi { .. } if charge.amount_minor < EMI_FROM_MINOR => {
                let least = crate::domain::format_money(
                    EMI_FROM_MINOR,
                    charge.currency,
                    crate::domain::MoneyStyle::Symbol,
                );
                return declined(
                    "emi_not_eligible",
                    &format!("EMI needs an order of at least {least}."),
                );
            }
            PaymentMethod::Upi { upi_id }
                if upi_id.starts_with("fail@") || upi_id.starts_with("decline@") =>
            {
                return declined("upi_declined", "The UPI payment was declined.")
            }
            PaymentMethod::NetBanking { bank_code } if bank_code == "FAIL" => {
                return declined("bank_declined", "The bank declined the transfer.")
            }
            _ => {}
        }
        Ok(Outcome::Approved {
            reference: reference("PAY", charge.order_id),
        })
    }

    async fn refund(&self, refund: &Refund<'_>) -> Result<String, Unanswered> {
        Ok(reference("RFD", refund.reference))
    }
}

/// A short reference derived from `seed`, so a retried call gets the same one.
fn reference(prefix: &str, seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    format!("{prefix}-{:012X}", h.finish() & 0xFFFF_FFFF_FFFF)
}
