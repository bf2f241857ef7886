//! Events the frontend publishes on `ekart.journey`: the shopper's click-stream, keyed by
//! session so one session's steps stay in order.

use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "/ekart/frontend";
pub const PAGE_VIEWED: &str = "ekart.journey.page_viewed";
pub const CLICKED: &str = "ekart.journey.clicked";

/// One step of a session's journey, as the browser reported it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JourneyStep {
    pub session_id: String,
    pub user_id: String,
    /// When it happened, milliseconds since the Unix epoch (the server's clock).
    pub at_ms: i64,
    /// The page's path for a page view; the control's action (`add-to-cart`) for a click.
    pub name: String,
    /// What the shopper saw: the page's title, or the control's text.
    pub label: String,
    /// More about it, e.g. the product and quantity added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a step of a journey was, as every view of a journey (the timeline page, the PDF)
/// tells it: its highlight follows from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Page,
    Action,
    Cart,
    Checkout,
    OrderCompleted,
    OrderFailed,
}

impl StepKind {
    /// The kind of a recorded step: `kind` is `page`, `click` or `order`, `name` its path,
    /// action or outcome.
    pub fn of(kind: &str, name: &str) -> StepKind {
        match (kind, name) {
            ("order", "completed") => StepKind::OrderCompleted,
            ("order", "failed") => StepKind::OrderFailed,
            ("order", _) | ("click", "checkout" | "place-order") => StepKind::Checkout,
            ("click", "add-to-cart") => StepKind::Cart,
            ("page", path) if path.starts_with("/cart") => StepKind::Cart,
            ("page", path) if path.starts_with("/checkout") => StepKind::Checkout,
            ("page", _) => StepKind::Page,
            _ => StepKind::Action,
        }
    }
}

/// What a recorded step's line says under its label, in every view of a journey: its
/// detail, else the amount it paid (money written in `style`), else a page's address.
pub fn step_detail(
    kind: &str,
    name: &str,
    detail: Option<&str>,
    paid: Option<(i64, &str)>,
    style: crate::domain::MoneyStyle,
) -> Option<String> {
    if let Some(detail) = detail {
        return Some(detail.to_string());
    }
    if let Some((minor, currency)) = paid {
        return Some(format!(
            "paid {}",
            crate::domain::format_money(minor, currency, style)
        ));
    }
    (kind == "page").then(|| name.to_string())
}
