//! What the pages read from the API: the fields they show, nothing more. The frontend owns
//! these shapes so it depends on the API's JSON, not on other modules' code.

use serde::Deserialize;

use super::format_money;
use crate::contracts::journey::{step_detail, StepKind};
use crate::domain::MoneyStyle;

#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

impl Product {
    pub fn price(&self) -> String {
        format_money(self.price_minor, &self.currency)
    }

    /// The most a shopper may pick in the quantity box.
    pub fn max_quantity(&self) -> i64 {
        self.available.clamp(1, 1000)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
    /// More matched than `total` (a search stops counting at 100).
    #[serde(default)]
    pub total_capped: bool,
    /// `total` is the database's estimate.
    #[serde(default)]
    pub total_estimated: bool,
}

impl<T> Page<T> {
    /// Whether `total` is exactly how many there are.
    pub fn counted(&self) -> bool {
        !self.total_capped && !self.total_estimated
    }

    /// Numbered pages to offer: all of a counted list; of a longer one, as far as numbered
    /// pages reach (`keyset::COUNT_CAP`).
    pub fn pages(&self) -> u32 {
        let shown = match self.counted() {
            true => self.total,
            false => crate::db::keyset::COUNT_CAP,
        };
        (((shown.max(1) - 1) / self.per_page.max(1) as i64) + 1) as u32
    }

    /// Whether a page follows this one: within [`Page::pages`], and, when the total is not
    /// counted, only after a full page.
    pub fn has_next(&self) -> bool {
        self.page < self.pages() && (self.counted() || self.items.len() >= self.per_page as usize)
    }

    /// The total as a shopper reads it: "12", "more than 100", "about 41000".
    pub fn total_text(&self) -> String {
        match (self.total_capped, self.total_estimated) {
            (true, _) => format!("more than {}", self.total),
            (_, true) => format!("about {}", self.total),
            _ => self.total.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cart {
    pub lines: Vec<Line>,
    pub item_count: i64,
    pub total_minor: i64,
    pub currency: Option<String>,
}

impl Cart {
    pub fn money(&self, minor: &i64) -> String {
        format_money(*minor, self.currency.as_deref().unwrap_or("INR"))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    pub kind: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusChange {
    pub status: String,
    pub note: Option<String>,
    pub at: String,
}

impl StatusChange {
    /// The step in a shopper's words.
    pub fn status_text(&self) -> &'static str {
        match self.status.as_str() {
            "cart" => "Put in the cart",
            "placed" => "Order placed",
            "reserved" => "Items set aside",
            "completed" => "Paid and completed",
            "failed" => "Failed",
            "cancelled" => "Cancelled",
            _ => "Changed",
        }
    }

    pub fn when(&self) -> String {
        when(&self.at)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub lines: Vec<Line>,
    pub item_count: i64,
    pub total_minor: i64,
    pub currency: Option<String>,
    pub payment_mode: Option<String>,
    pub failure: Option<Failure>,
    pub history: Vec<StatusChange>,
    pub created_at: String,
    pub refunded_at: Option<String>,
}

impl Order {
    pub fn money(&self, minor: &i64) -> String {
        format_money(*minor, self.currency.as_deref().unwrap_or("INR"))
    }

    pub fn short_id(&self) -> &str {
        short(&self.id)
    }

    pub fn placed_when(&self) -> String {
        when(&self.created_at)
    }

    /// How it was paid, as the checkout page names the ways to pay ("Net banking").
    pub fn paid_with(&self) -> Option<&'static str> {
        let mode = self.payment_mode.as_deref()?;
        super::pages::cart::MODES
            .iter()
            .find(|(code, _)| *code == mode)
            .map(|(_, label)| *label)
    }

    /// Who placed it, for the admin's lists: the name in a subject such as
    /// `dev|asharao@example.com` or `oidc|…`, without the sign-in method before it.
    pub fn shopper(&self) -> &str {
        self.user_id
            .split_once('|')
            .map_or(self.user_id.as_str(), |(_, name)| name)
    }

    /// The order's state in a shopper's words.
    pub fn status_text(&self) -> &'static str {
        match self.status.as_str() {
            "placed" | "reserved" => "Being processed",
            "completed" => "Completed",
            "failed" => match self.failure.as_ref().map(|f| f.kind.as_str()) {
                Some("payment_declined") => "Payment declined",
                Some("out_of_stock") => "Out of stock",
                _ => "Failed",
            },
            "cancelled" => "Cancelled",
            _ => "In your cart",
        }
    }

    pub fn cancellable(&self) -> bool {
        self.status == "completed"
    }
}

/// The first block of a UUID: enough for a person to tell orders apart.
pub fn short(id: &str) -> &str {
    id.split('-').next().unwrap_or(id)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    pub instrument: String,
    pub status: String,
    pub reference: String,
    pub decline_reason: Option<String>,
}

impl Payment {
    /// The payment's state in a shopper's words.
    pub fn status_text(&self) -> &'static str {
        match self.status.as_str() {
            "succeeded" => "Paid",
            "failed" => "Declined",
            "refunding" => "Being refunded",
            "refunded" => "Refunded",
            _ => "Being processed",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub user_name: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub last_step_at: Option<i64>,
    pub steps: i64,
}

impl SessionSummary {
    pub fn length(&self) -> String {
        let end = self
            .ended_at
            .or(self.last_step_at)
            .unwrap_or(self.started_at);
        duration_text(end - self.started_at)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    pub at: i64,
    pub kind: String,
    pub name: String,
    pub label: String,
    pub detail: Option<String>,
    #[serde(default)]
    pub amount_minor: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

impl Step {
    /// What the step's line says under its label: its detail, else the amount it paid, else
    /// a page's address.
    pub fn detail_text(&self) -> Option<String> {
        step_detail(
            &self.kind,
            &self.name,
            self.detail.as_deref(),
            self.amount_minor.zip(self.currency.as_deref()),
            MoneyStyle::Symbol,
        )
    }

    /// A CSS class for the step's highlight on the timeline.
    pub fn class(&self) -> &'static str {
        match StepKind::of(&self.kind, &self.name) {
            StepKind::OrderCompleted => "step-ok",
            StepKind::OrderFailed => "step-bad",
            StepKind::Checkout => "step-checkout",
            StepKind::Cart => "step-cart",
            StepKind::Page | StepKind::Action => "",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Totals {
    pub pages_visited: u64,
    pub items_added: u64,
    pub orders_placed: u64,
    pub orders_completed: u64,
    pub spent_minor: i64,
    pub currency: Option<String>,
}

impl Totals {
    pub fn spent(&self) -> String {
        match &self.currency {
            Some(c) => format_money(self.spent_minor, c),
            None => "nothing".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Journey {
    pub session: SessionSummary,
    /// One page of the steps.
    pub steps: Vec<Step>,
    pub totals: Totals,
    /// Where the next page of steps starts, if there is one.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `125_000` ms → `2 min 5 s`.
pub fn duration_text(ms: i64) -> String {
    let secs = (ms / 1000).max(0);
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A stored timestamp (milliseconds) as the pages show it: `24 Nov 2026, 19:48 UTC`.
pub fn time_text(ms: i64) -> String {
    human_time(chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// The one way the pages write a moment: "5 Dec 2026, 04:48 UTC", inside a `<time>` whose
/// `datetime` the page's script rewrites in the shopper's own time zone.
fn human_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%-d %b %Y, %H:%M UTC").to_string()
}

/// An RFC 3339 timestamp (as the API answers) in people's words; as it came if it is not one.
pub fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| human_time(t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// A moment in milliseconds as the `datetime` of a `<time>`.
pub fn machine_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::{Page, Step};

    fn page(page: u32, items: usize, total: i64, capped: bool, estimated: bool) -> Page<()> {
        Page {
            items: vec![(); items],
            page,
            per_page: 20,
            total,
            total_capped: capped,
            total_estimated: estimated,
        }
    }

    #[test]
    fn a_counted_list_pages_to_its_end_and_a_longer_one_as_far_as_pages_reach() {
        let counted = page(1, 20, 45, false, false);
        assert_eq!((counted.pages(), counted.total_text()), (3, "45".into()));
        assert!(counted.has_next());
        assert!(!page(3, 5, 45, false, false).has_next());
        // "More than 100": pages go on past the fifth while they are full.
        let capped = page(5, 20, 100, true, false);
        assert_eq!(
            (capped.pages(), capped.total_text()),
            (50, "more than 100".into())
        );
        assert!(capped.has_next());
        assert!(!page(7, 12, 100, true, false).has_next());
        assert!(!page(50, 20, 100, true, false).has_next());
        let estimated = page(1, 20, 41_000, false, true);
        assert_eq!(estimated.total_text(), "about 41000");
        assert!(estimated.has_next());
    }

    #[test]
    fn a_step_says_its_detail_else_what_it_paid_else_its_page() {
        let step = |kind: &str, detail: Option<&str>, paid: Option<(i64, &str)>| Step {
            at: 0,
            kind: kind.into(),
            name: "/products/tea".into(),
            label: "x".into(),
            detail: detail.map(str::to_string),
            amount_minor: paid.map(|(minor, _)| minor),
            currency: paid.map(|(_, currency)| currency.to_string()),
        };
        let paid = step("order", None, Some((50_000, "INR")));
        assert_eq!(paid.detail_text().as_deref(), Some("paid ₹500.00"));
        // A step stored before amounts were (its sentence in `detail`) reads as it did.
        let old = step("order", Some("paid ₹500.00"), Some((50_000, "INR")));
        assert_eq!(old.detail_text().as_deref(), Some("paid ₹500.00"));
        assert_eq!(
            step("page", None, None).detail_text().as_deref(),
            Some("/products/tea")
        );
        assert_eq!(step("click", None, None).detail_text(), None);
    }
}
