//! My orders, an order's page (the checkout's outcome in words, the status timeline, the
//! payment) and cancelling.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::{encode, ok, PageError, PageResult};
use crate::modules::frontend::views::{Order, Page, Payment};
use crate::modules::frontend::visitor::{Chrome, Shopper};
use crate::modules::frontend::Frontend;

/// The statuses a list can be filtered by, with their labels.
pub const STATUSES: [(&str, &str); 5] = [
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
    ("placed", "Placed"),
    ("reserved", "Reserved"),
];

#[derive(Debug, Deserialize, Default)]
pub struct OrdersQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub q: String,
    pub page: Option<u32>,
}

impl OrdersQuery {
    /// The API path for this filter, or None if the status is not one of [`STATUSES`].
    pub fn api_path(&self) -> String {
        let page = self.page.unwrap_or(1).clamp(1, 100_000);
        let mut path = format!("/api/orders?page={page}&per_page=20");
        if STATUSES.iter().any(|(s, _)| *s == self.status) {
            path.push_str(&format!("&status={}", self.status));
        }
        let q: String = self.q.trim().chars().take(100).collect();
        if !q.is_empty() {
            path.push_str(&format!("&q={}", encode(&q)));
        }
        path
    }
}

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    chrome: Chrome,
    heading: &'static str,
    action: &'static str,
    orders: Page<Order>,
    status: String,
    q: String,
    statuses: &'static [(&'static str, &'static str)],
    show_user: bool,
}

impl OrdersPage {
    fn is_status(&self, status: &str) -> bool {
        self.status == status
    }

    fn page_link(&self, page: u32) -> String {
        format!(
            "{}?status={}&page={page}",
            self.action,
            encode(&self.status)
        )
    }
}

/// The list of orders: mine, or (for the admin's page) everyone's.
pub async fn list(
    fe: &Frontend,
    shopper: &Shopper,
    query: OrdersQuery,
    everyone: bool,
) -> PageResult {
    let visitor = &shopper.0;
    let orders = fe
        .api
        .get(visitor.token(), &query.api_path())
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))?;
    ok(&OrdersPage {
        chrome: visitor.chrome(),
        heading: if everyone { "All orders" } else { "My orders" },
        action: if everyone { "/admin/orders" } else { "/orders" },
        orders,
        status: query.status,
        q: query.q,
        statuses: &STATUSES,
        show_user: everyone,
    })
}

pub async fn my_orders(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Query(query): Query<OrdersQuery>,
) -> PageResult {
    list(&fe, &shopper, query, false).await
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    chrome: Chrome,
    order: Order,
    payment: Option<Payment>,
}

pub async fn order(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Path(id): Path<String>,
) -> PageResult {
    let path = format!("/api/orders/{}", encode(&id));
    let order: Order = fe
        .api
        .get(visitor.token(), &path)
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))?;
    // No payment yet (still working, out of stock, cash not yet taken) is not an error.
    let payment = fe
        .api
        .get(visitor.token(), &format!("{path}/payment"))
        .await
        .ok();
    ok(&OrderPage {
        chrome: visitor.chrome(),
        order,
        payment,
    })
}

pub async fn cancel(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Path(id): Path<String>,
) -> PageResult {
    let back = format!("/orders/{}", encode(&id));
    let path = format!("/api/orders/{}/cancel", encode(&id));
    match fe
        .api
        .send(visitor.token(), Method::POST, &path, None::<&Value>, &[])
        .await
    {
        Ok(_) => Ok(fe.see_other_with(&back, "Your order is cancelled; any payment is refunded")),
        Err(p) if p.status == StatusCode::CONFLICT => Ok(fe.see_other_refused(&back, &p.detail)),
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}
