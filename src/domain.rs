//! Values that are checked once, when they are parsed, so the rest of the code can trust them.
//! A request with a bad one fails to deserialize and answers 422 naming the field.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some($min as i64))
                    .maximum(Some($max as i64))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const MIN: i64 = $min as i64;
            pub const MAX: i64 = $max as i64;
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = String;
            fn try_from(v: i64) -> Result<Self, String> {
                if (($min as i64)..=($max as i64)).contains(&v) {
                    Ok($name(v))
                } else {
                    Err(format!("must be an integer from {} to {}, got {}", $min, $max, v))
                }
            }
        }

        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0
            }
        }
    };
}

bounded_int!(
    /// Units of one product in a cart line.
    Quantity,
    1,
    1000
);
bounded_int!(
    /// Units added to or taken from stock in one admin action.
    StockDelta,
    1,
    1_000_000
);
bounded_int!(
    /// Units on hand when a product is created.
    StockLevel,
    0,
    1_000_000
);
bounded_int!(
    /// A price in minor units (paise, cents): at most 100 million major units.
    PriceMinor,
    1,
    10_000_000_000_i64
);

/// An ISO 4217 alphabetic currency code, e.g. `INR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "INR", pattern = "^[A-Z]{3}$")]
pub struct Currency(String);

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        if v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(v))
        } else {
            Err(format!(
                "currency must be three capital letters (ISO 4217), got {v:?}"
            ))
        }
    }
}

impl From<Currency> for String {
    fn from(v: Currency) -> String {
        v.0
    }
}

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Trimmed text with a length limit, e.g. a product name.
pub fn bounded_text(field: &str, value: &str, min: usize, max: usize) -> Result<String, String> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min || n > max {
        return Err(format!("{field} must be {min} to {max} characters"));
    }
    if v.chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_direction_override(c))
    {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(v.to_string())
}

/// Characters that reorder the text around them without being seen (bidirectional embeddings,
/// overrides and isolates): `admin\u{202E}gpj.exe` shows as something else than it is.
fn is_direction_override(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` may stand in a person's name or email: no control character (no line breaks,
/// tabs or escapes) and no direction override.
fn fit_for_a_person(c: char) -> bool {
    !c.is_control() && !is_direction_override(c)
}

/// A person's display name: 1 to 100 characters, one line, nothing that reorders text.
pub fn person_name(value: &str) -> Result<String, String> {
    let v = bounded_text("name", value, 1, 100)?;
    if !v.chars().all(fit_for_a_person) {
        return Err("name must not contain control or direction characters".into());
    }
    Ok(v)
}

/// An email address as people type it, lower-cased: something@domain.tld, no spaces, no
/// control or direction characters, at most 254 bytes.
pub fn email(value: &str) -> Result<String, String> {
    let v = value.trim().to_lowercase();
    let valid = v.len() <= 254
        && v.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !v.chars().any(char::is_whitespace)
        && v.chars().all(fit_for_a_person);
    if !valid {
        return Err("email must look like name@example.com".into());
    }
    Ok(v)
}

/// `text` without what [`person_name`] refuses: for names and emails another party vouches for
/// (an OIDC provider's claims), which the shop keeps rather than refusing the sign-in.
pub fn fit_for_a_person_only(text: &str) -> String {
    text.chars().filter(|c| fit_for_a_person(*c)).collect()
}

/// A stock-keeping unit: letters, digits, `-` and `_`, up to 64.
pub fn sku(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("sku must be 1 to 64 letters, digits, '-' or '_'".into());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced_when_parsing() {
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Quantity>("1001").is_err());
        assert!(serde_json::from_str::<Quantity>("2.5").is_err());
        assert_eq!(serde_json::from_str::<Quantity>("7").unwrap().get(), 7);
        assert!(serde_json::from_str::<Currency>("\"inr\"").is_err());
        assert!(serde_json::from_str::<Currency>("\"INR\"").is_ok());
        assert!(sku("AB-1 ").is_ok());
        assert!(sku("a b").is_err());
    }
}

/// How an amount is written for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyStyle {
    /// With the currency's symbol where it has one (`₹1,234.50`), else its code after the
    /// amount (`12.34 JPY`): the pages.
    Symbol,
    /// With the currency's code first (`INR 1,234.50`): for text that cannot show every
    /// symbol, as the journey PDF's fonts.
    Code,
}

/// An amount of minor units as people read it, two decimals and its digits grouped the way
/// the currency's readers group them: the one money formatter of the shop, for its pages, its
/// messages and its PDF alike. Rupees are grouped the Indian way, the last three digits and
/// then by twos (`₹1,00,000.00` for a lakh); other currencies by threes.
pub fn format_money(minor: i64, currency: &str, style: MoneyStyle) -> String {
    let abs = minor.unsigned_abs();
    let units = (abs / 100).to_string();
    let n = units.len();
    let comma_before = |i: usize| -> bool {
        let after = n - i; // digits from here to the end
        match currency.trim() {
            "INR" => after == 3 || (after > 3 && (after - 3).is_multiple_of(2)),
            _ => after.is_multiple_of(3),
        }
    };
    let mut grouped = String::with_capacity(n + n / 2 + 3);
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && comma_before(i) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if minor < 0 { "-" } else { "" };
    let amount = format!("{grouped}.{:02}", abs % 100);
    let symbol = match currency {
        "INR" => "₹",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        _ => "",
    };
    match (style, currency.trim()) {
        (_, "") => format!("{sign}{amount}"),
        (MoneyStyle::Symbol, _) if !symbol.is_empty() => format!("{sign}{symbol}{amount}"),
        (MoneyStyle::Symbol, code) => format!("{sign}{amount} {code}"),
        (MoneyStyle::Code, code) => format!("{code} {sign}{amount}"),
    }
}

#[cfg(test)]
mod money_tests {
    use super::{format_money, MoneyStyle};

    #[test]
    fn money_reads_as_people_write_it() {
        use MoneyStyle::{Code, Symbol};
        assert_eq!(format_money(49_900, "INR", Symbol), "₹499.00");
        assert_eq!(format_money(123_450, "INR", Symbol), "₹1,234.50");
        assert_eq!(format_money(-5, "USD", Symbol), "-$0.05");
        assert_eq!(format_money(1_234, "JPY", Symbol), "12.34 JPY");
        assert_eq!(format_money(123_450, "INR", Code), "INR 1,234.50");
        assert_eq!(format_money(-100_000_000, "USD", Code), "USD -1,000,000.00");
        assert_eq!(format_money(5, "", Code), "0.05");
        // A lakh and a crore of rupees, grouped as India writes them.
        assert_eq!(format_money(10_000_000, "INR", Symbol), "₹1,00,000.00");
        assert_eq!(
            format_money(1_234_567_890, "INR", Code),
            "INR 1,23,45,678.90"
        );
        assert_eq!(format_money(9_999_900, "INR", Symbol), "₹99,999.00");
        assert_eq!(format_money(10_000_000, "USD", Symbol), "$100,000.00");
    }
}
