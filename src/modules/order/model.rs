//! Orders and carts as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::Quantity;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderLine {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    /// `out_of_stock` or `payment_declined`.
    pub kind: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusChange {
    /// The status the order moved to, or `refunded` when its payment was refunded.
    pub status: String,
    pub note: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub item_count: i64,
    pub total_minor: i64,
    pub currency: Option<String>,
    pub payment_mode: Option<String>,
    pub payment_reference: Option<String>,
    /// Why the order failed, when it did.
    pub failure: Option<Failure>,
    pub history: Vec<StatusChange>,
    pub created_at: String,
    pub updated_at: String,
    pub placed_at: Option<String>,
    pub completed_at: Option<String>,
    pub cancelled_at: Option<String>,
    pub refunded_at: Option<String>,
}

/// The shopper's cart: the order in its first state. `id` is null until something is added.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cart {
    pub id: Option<String>,
    pub lines: Vec<OrderLine>,
    pub item_count: i64,
    pub total_minor: i64,
    pub currency: Option<String>,
}

impl From<Option<Order>> for Cart {
    fn from(order: Option<Order>) -> Cart {
        match order {
            Some(o) => Cart {
                id: Some(o.id),
                lines: o.lines,
                item_count: o.item_count,
                total_minor: o.total_minor,
                currency: o.currency,
            },
            None => Cart {
                id: None,
                lines: vec![],
                item_count: 0,
                total_minor: 0,
                currency: None,
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub product_id: String,
    pub quantity: Quantity,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    pub quantity: Quantity,
}

/// Where an order is in its life: a cart, then placed, reserved (stock held) and completed
/// (paid) or failed; a completed order may be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Cart,
    Placed,
    Reserved,
    Completed,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Cart => "cart",
            OrderStatus::Placed => "placed",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Completed => "completed",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// The status a stored text names.
    pub fn parse(text: &str) -> Option<OrderStatus> {
        [
            OrderStatus::Cart,
            OrderStatus::Placed,
            OrderStatus::Reserved,
            OrderStatus::Completed,
            OrderStatus::Failed,
            OrderStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Placed or reserved: its checkout's saga has not finished.
    pub fn in_checkout(self) -> bool {
        matches!(self, OrderStatus::Placed | OrderStatus::Reserved)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Only orders in this status. Without it, every order but carts.
    #[param(inline)]
    pub status: Option<OrderStatus>,
    /// An order number or its beginning, or part of a shopper's id (admins search everyone's
    /// orders).
    #[param(max_length = 100)]
    pub q: Option<String>,
    /// Page number, from 1. For going far into the list, follow `next` instead.
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Where to go on from: the `next_cursor` of the previous page (same `status` and `q`).
    pub cursor: Option<String>,
    /// Orders per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// The page number asked for; absent on a page reached by `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub per_page: u32,
    /// Orders in the list, counted up to 1,000.
    pub total: i64,
    /// There are more than `total` orders (counting stopped at 1,000).
    pub total_capped: bool,
    /// The cursor of the page after this one; absent on the last page.
    pub next_cursor: Option<String>,
    /// The address of the page after this one; absent on the last page.
    pub next: Option<String>,
}
