//! Payment modes as a shopper enters them, and as they travel: checked once here, then
//! reduced to what is safe to store and publish (a card becomes its last four digits).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /api/checkout`: a payment mode and the details that mode needs.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(
    tag = "payment_mode",
    rename_all = "SCREAMING_SNAKE_CASE",
    deny_unknown_fields
)]
pub enum CheckoutRequest {
    /// Cash on delivery.
    Cash {},
    Upi {
        /// A UPI id such as `name@okbank`.
        upi_id: String,
    },
    Card {
        card: CardDetails,
    },
    Emi {
        card: CardDetails,
        /// 3, 6, 9, 12, 18 or 24.
        emi_months: i64,
    },
    NetBanking {
        /// The bank's four-letter code, e.g. `HDFC`.
        bank_code: String,
    },
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardDetails {
    /// 12 to 19 digits passing the Luhn check; spaces allowed.
    pub number: String,
    /// `MM/YY`, not in the past.
    pub expiry: String,
    /// 3 or 4 digits. Checked, never stored.
    pub cvv: String,
    #[serde(default)]
    pub holder: Option<String>,
}

/// How an order is paid, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentMethod {
    Cash,
    Upi { upi_id: String },
    Card { last4: String },
    Emi { last4: String, months: i64 },
    NetBanking { bank_code: String },
}

impl PaymentMethod {
    pub fn mode(&self) -> &'static str {
        match self {
            PaymentMethod::Cash => "CASH",
            PaymentMethod::Upi { .. } => "UPI",
            PaymentMethod::Card { .. } => "CARD",
            PaymentMethod::Emi { .. } => "EMI",
            PaymentMethod::NetBanking { .. } => "NET_BANKING",
        }
    }

    /// A short description safe to show: `CARD •••• 4242`.
    pub fn instrument(&self) -> String {
        match self {
            PaymentMethod::Cash => "Cash on delivery".into(),
            PaymentMethod::Upi { upi_id } => format!("UPI {upi_id}"),
            PaymentMethod::Card { last4 } => format!("Card •••• {last4}"),
            PaymentMethod::Emi { last4, months } => {
                format!("EMI {months} months, card •••• {last4}")
            }
            PaymentMethod::NetBanking { bank_code } => format!("Net banking, {bank_code}"),
        }
    }
}

/// A detail of a checkout request that is not right: the field (as the request names it)
/// and a sentence the shopper can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn refused(field: &'static str, message: &str) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

impl CheckoutRequest {
    /// Checks the details and keeps only what may be stored. Every detail that is not right
    /// is named at once, so a form can mark each of its fields in one answer.
    pub fn into_method(self, today: chrono::NaiveDate) -> Result<PaymentMethod, Vec<FieldError>> {
        Ok(match self {
            CheckoutRequest::Cash {} => PaymentMethod::Cash,
            CheckoutRequest::Upi { upi_id } => PaymentMethod::Upi {
                upi_id: upi_id_checked(&upi_id).map_err(|e| vec![e])?,
            },
            CheckoutRequest::Card { card } => PaymentMethod::Card {
                last4: card_checked(&card, today)?,
            },
            CheckoutRequest::Emi { card, emi_months } => {
                let card = card_checked(&card, today);
                let months = [3, 6, 9, 12, 18, 24].contains(&emi_months);
                match (card, months) {
                    (Ok(last4), true) => PaymentMethod::Emi {
                        last4,
                        months: emi_months,
                    },
                    (card, months) => {
                        let mut errors = card.err().unwrap_or_default();
                        if !months {
                            errors.push(refused(
                                "emi_months",
                                "Choose 3, 6, 9, 12, 18 or 24 months.",
                            ));
                        }
                        return Err(errors);
                    }
                }
            }
            CheckoutRequest::NetBanking { bank_code } => {
                let code = bank_code.trim().to_uppercase();
                if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(vec![refused(
                        "bank_code",
                        "Choose your bank (a four-letter bank code such as HDFC).",
                    )]);
                }
                PaymentMethod::NetBanking { bank_code: code }
            }
        })
    }
}

fn upi_id_checked(upi_id: &str) -> Result<String, FieldError> {
    let id = upi_id.trim().to_lowercase();
    let ok = id.split_once('@').is_some_and(|(name, handle)| {
        (2..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && (2..=32).contains(&handle.len())
            && handle.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if ok {
        Ok(id)
    } else {
        Err(refused("upi_id", "Enter a UPI id such as name@okbank."))
    }
}

/// Returns the card's last four digits if the card is well-formed and not expired; else what
/// is wrong with each of its details.
fn card_checked(card: &CardDetails, today: chrono::NaiveDate) -> Result<String, Vec<FieldError>> {
    let mut errors = Vec::new();
    let digits: String = card.number.chars().filter(|c| *c != ' ').collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(refused(
            "card.number",
            "Enter the card number: 12 to 19 digits.",
        ));
    } else if !luhn(&digits) {
        errors.push(refused(
            "card.number",
            "This card number is not valid; check it for a mistyped digit.",
        ));
    }
    let cvv = card.cvv.trim();
    if !(3..=4).contains(&cvv.len()) || !cvv.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(refused(
            "card.cvv",
            "Enter the 3 or 4 digit security code (CVV) from the card.",
        ));
    }
    let expiry = card
        .expiry
        .trim()
        .split_once('/')
        .and_then(|(m, y)| Some((m.parse::<u32>().ok()?, y.parse::<i32>().ok()?)))
        .filter(|(m, y)| (1..=12).contains(m) && (0..=99).contains(y));
    use chrono::Datelike;
    match expiry {
        None => errors.push(refused("card.expiry", "Enter the expiry date as MM/YY.")),
        Some((month, yy)) if (2000 + yy, month) < (today.year(), today.month()) => {
            errors.push(refused("card.expiry", "This card has expired."))
        }
        Some(_) => {}
    }
    if let Some(holder) = &card.holder {
        if let Err(e) = crate::domain::bounded_text("card.holder", holder, 0, 100) {
            errors.push(FieldError {
                field: "card.holder",
                message: e,
            });
        }
    }
    match errors.is_empty() {
        true => Ok(digits[digits.len() - 4..].to_string()),
        false => Err(errors),
    }
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    fn parse(json: &str) -> Result<PaymentMethod, String> {
        serde_json::from_str::<CheckoutRequest>(json)
            .map_err(|e| e.to_string())?
            .into_method(today())
            .map_err(|errors| format!("{errors:?}"))
    }

    #[test]
    fn modes_parse_and_mask() {
        assert_eq!(parse(r#"{"payment_mode":"CASH"}"#), Ok(PaymentMethod::Cash));
        assert_eq!(
            parse(
                r#"{"payment_mode":"CARD","card":{"number":"4242 4242 4242 4242","expiry":"12/30","cvv":"123"}}"#
            ),
            Ok(PaymentMethod::Card {
                last4: "4242".into()
            })
        );
        assert_eq!(
            parse(r#"{"payment_mode":"UPI","upi_id":"Asha@okbank"}"#),
            Ok(PaymentMethod::Upi {
                upi_id: "asha@okbank".into()
            })
        );
    }

    #[test]
    fn bad_details_are_refused() {
        let bad = [
            r#"{"payment_mode":"CARD","card":{"number":"4242424242424241","expiry":"12/30","cvv":"123"}}"#,
            r#"{"payment_mode":"CARD","card":{"number":"4242424242424242","expiry":"10/26","cvv":"123"}}"#,
            r#"{"payment_mode":"EMI","card":{"number":"4242424242424242","expiry":"12/30","cvv":"123"},"emi_months":5}"#,
            r#"{"payment_mode":"UPI","upi_id":"nobank"}"#,
            r#"{"payment_mode":"BITCOIN"}"#,
            r#"{"payment_mode":"CASH","tip":5}"#,
            r#"{"payment_mode":"NET_BANKING","bank_code":"H1"}"#,
        ];
        for json in bad {
            assert!(parse(json).is_err(), "{json} should be refused");
        }
    }

    #[test]
    fn every_wrong_detail_is_named_at_once() {
        let request: CheckoutRequest = serde_json::from_str(
            r#"{"payment_mode":"EMI","card":{"number":"12","expiry":"13/99","cvv":"x"},"emi_months":5}"#,
        )
        .unwrap();
        let fields: Vec<&str> = request
            .into_method(today())
            .unwrap_err()
            .iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["card.number", "card.cvv", "card.expiry", "emi_months"]
        );
    }
}
