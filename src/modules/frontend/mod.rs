//! The frontend module: the storefront's server-rendered pages and the click-stream.
//!
//! Pages call the shop's JSON API (see [`api`]) with the shopper's session token, so they
//! need nothing of the other modules but their API. Each page view and each click on a
//! control marked `data-track` is reported by the page's script and published on
//! `ekart.journey`, keyed by the session (see [`clickstream`]).

pub mod api;
mod assets;
pub mod clickstream;
mod flash;
pub use crate::contracts::journey as events;
mod pages;
mod views;
mod visitor;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub use api::ApiClient;
pub use clickstream::Recorder;

#[derive(Clone)]
pub struct Frontend {
    pub api: ApiClient,
    pub recorder: Recorder,
    /// The shop is served over https: the session cookie is `Secure`.
    pub https: bool,
    /// Sign-in goes through an OpenID Connect provider (`/auth/login`), not the dev form.
    pub oidc: bool,
    /// Seals the notices carried over redirects ([`flash`]).
    pub auth: Arc<crate::gateway::auth::Authenticator>,
}

impl Frontend {
    /// `303 See Other` to `to`, whose page will show `notice` (once).
    pub fn see_other_with(&self, to: &str, notice: &str) -> axum::response::Response {
        flash::see_other_with(&self.auth, to, notice, false)
    }

    /// `303 See Other` to `to`, whose page will show `refusal` as an error (once).
    pub fn see_other_refused(&self, to: &str, refusal: &str) -> axum::response::Response {
        flash::see_other_with(&self.auth, to, refusal, true)
    }
}

/// Money on the pages: the shop's one formatter, with the currency's symbol.
pub fn format_money(minor: i64, currency: &str) -> String {
    crate::domain::format_money(minor, currency, crate::domain::MoneyStyle::Symbol)
}

pub fn router(frontend: Frontend) -> Router {
    use pages::{admin, cart, catalog, journeys, orders, signin};
    let auth = frontend.auth.clone();
    Router::new()
        .route("/", get(catalog::catalog))
        .route("/products/{id}", get(catalog::product))
        .route("/cart", get(cart::cart))
        .route("/cart/items", post(catalog::add_to_cart))
        .route("/cart/items/{product_id}", post(cart::set_quantity))
        .route("/cart/items/{product_id}/remove", post(cart::remove))
        .route("/checkout", get(cart::checkout).post(cart::place_order))
        .route("/orders", get(orders::my_orders))
        .route("/orders/{id}", get(orders::order))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/journeys", get(journeys::journeys))
        .route("/journeys/{id}", get(journeys::journey))
        .route("/admin/products", get(admin::products).post(admin::create))
        .route("/admin/products/{id}", post(admin::edit))
        .route("/admin/products/{id}/restock", post(admin::restock))
        .route("/admin/products/{id}/reduce", post(admin::reduce))
        .route("/admin/orders", get(admin::orders))
        .route("/signin", get(signin::sign_in_page).post(signin::sign_in))
        .route("/signout", post(signin::sign_out))
        .route("/track", post(clickstream::track))
        .route("/static/{name}", get(assets::asset))
        .with_state(frontend)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            flash::shown_once,
        ))
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
