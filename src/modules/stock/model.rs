//! The catalog's public shapes: what the API shows and accepts.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::keyset::Order;
use crate::domain::{Currency, PriceMinor, StockDelta, StockLevel};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    /// Price in minor units of `currency` (paise for INR).
    pub price_minor: i64,
    pub currency: String,
    /// Units in the warehouse, including those reserved for orders in progress.
    pub on_hand: i64,
    /// Units held for orders that are not yet paid.
    pub reserved: i64,
    /// Units a shopper can still buy: `on_hand - reserved`.
    pub available: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub sku: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub description: String,
    pub price_minor: PriceMinor,
    pub currency: Currency,
    /// Units on hand to start with.
    pub quantity: StockLevel,
}

/// Fields to change; those left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub sku: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    pub price_minor: Option<PriceMinor>,
    pub currency: Option<Currency>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    pub quantity: StockDelta,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, Default)]
pub enum SortKey {
    #[default]
    #[serde(rename = "name")]
    NameAsc,
    #[serde(rename = "-name")]
    NameDesc,
    #[serde(rename = "price")]
    PriceAsc,
    #[serde(rename = "-price")]
    PriceDesc,
    #[serde(rename = "newest")]
    Newest,
}

impl SortKey {
    /// The columns of this order, all one way and ending in the unique id, so keyset paging
    /// finds a page's start through one index (`db/keyset.rs`).
    pub fn order(self) -> Order {
        match self {
            SortKey::NameAsc => Order::ascending(&["name", "id"]),
            SortKey::NameDesc => Order::descending(&["name", "id"]),
            SortKey::PriceAsc => Order::ascending(&["price_minor", "id"]),
            SortKey::PriceDesc => Order::descending(&["price_minor", "id"]),
            SortKey::Newest => Order::descending(&["created_at", "id"]),
        }
    }

    /// The name a client gives for this order.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::NameAsc => "name",
            SortKey::NameDesc => "-name",
            SortKey::PriceAsc => "price",
            SortKey::PriceDesc => "-price",
            SortKey::Newest => "newest",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// Words to find in the name, SKU or description: each word as a prefix, case and accents
    /// ignored, best match first (an exact SKU first of all) unless `sort` is given.
    #[param(max_length = 100)]
    pub q: Option<String>,
    /// Page number, from 1. For going far into the list, follow `next` instead.
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Where to go on from: the `next_cursor` of the previous page (with the same `q` and
    /// `sort`). Any page reached this way costs what the first one costs.
    pub cursor: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
    /// `name`, `-name`, `price`, `-price` or `newest`.
    #[param(inline)]
    pub sort: Option<SortKey>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// The page number asked for; absent on a page reached by `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub per_page: u32,
    /// Products in the whole list; for a search, matches counted up to 1,000.
    pub total: i64,
    /// A search matched more than `total` products (it stopped counting at 1,000).
    pub total_capped: bool,
    /// `total` is the database's estimate, not a count: a search the planner expects to
    /// match tens of thousands of products (PostgreSQL only).
    pub total_estimated: bool,
    /// The cursor of the page after this one; absent on the last page.
    pub next_cursor: Option<String>,
    /// The address of the page after this one; absent on the last page.
    pub next: Option<String>,
}
