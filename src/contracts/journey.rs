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
