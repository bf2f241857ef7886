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

use super::method::PaymentMethod;

pub struct Charge<'a> {
    pub order_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub method: &'a PaymentMethod,
}

pub enum Outcome {
    Approved { reference: String },
    Declined { code: &'static str, reason: String },
}

/// A payment provider. Implementations must be idempotent per order id, since a charge may be
/// retried after a crash.
pub trait PaymentProvider: Send + Sync + 'static {
    fn charge(&self, charge: &Charge<'_>) -> Outcome;
    /// Returns the refund's reference.
    fn refund(&self, reference: &str, amount_minor: i64) -> String;
}

pub struct Simulator;

impl PaymentProvider for Simulator {
    fn charge(&self, charge: &Charge<'_>) -> Outcome {
        let declined = |code, reason: &str| Outcome::Declined {
            code,
            reason: reason.to_string(),
        };
        match charge.method {
            PaymentMethod::Card { last4 } | PaymentMethod::Emi { last4, .. } if last4 == "0002" => {
                return declined("card_declined", "The card was declined by its bank.")
            }
            PaymentMethod::Card { last4 } | PaymentMethod::Emi { last4, .. } if last4 == "9995" => {
                return declined("insufficient_funds", "The card has insufficient funds.")
            }
            PaymentMethod::Emi { .. } if charge.amount_minor < 300_000 => {
                return declined(
                    "emi_not_eligible",
                    "EMI needs an order of at least 3,000.00.",
                )
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
        Outcome::Approved {
            reference: reference("PAY", charge.order_id),
        }
    }

    fn refund(&self, reference: &str, _amount_minor: i64) -> String {
        self::reference("RFD", reference)
    }
}

/// A short reference derived from `seed`, so a retried call gets the same one.
fn reference(prefix: &str, seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    format!("{prefix}-{:012X}", h.finish() & 0xFFFF_FFFF_FFFF)
}
