//! The frontend module: server-rendered pages. For now the shop's front door, listing the
//! catalog and pointing at the API; the full storefront builds on it.

use askama::Template;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::modules::stock::model::{Product, ProductQuery};
use crate::modules::stock::StockStore;

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    products: Vec<Product>,
    total: i64,
}

impl IndexPage {
    fn price(&self, p: &Product) -> String {
        format_money(p.price_minor, &p.currency)
    }
}

/// `12345` INR → `₹123.45`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let symbol = match currency {
        "INR" => "₹",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        _ => "",
    };
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.abs();
    let text = format!("{sign}{symbol}{}.{:02}", minor / 100, minor % 100);
    if symbol.is_empty() {
        format!("{text} {currency}")
    } else {
        text
    }
}

pub fn router(stock: StockStore) -> Router {
    Router::new().route("/", get(index)).with_state(stock)
}

async fn index(State(stock): State<StockStore>) -> Result<Html<String>, ApiError> {
    let query = ProductQuery {
        q: None,
        page: Some(1),
        per_page: Some(24),
        sort: None,
    };
    let (products, total, _, _) = stock.list(&query).await?;
    let page = IndexPage { products, total };
    Ok(Html(page.render().map_err(ApiError::internal)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(super::format_money(49900, "INR"), "₹499.00");
        assert_eq!(super::format_money(5, "USD"), "$0.05");
        assert_eq!(super::format_money(1234, "JPY"), "12.34 JPY");
    }
}
