//! The catalog (search as you type, paging, sort), a product's page, and adding to the cart.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::Form;
use serde::Deserialize;
use serde_json::json;

use super::{encode, field_of, local_path, ok, render, FormError, PageError, PageResult};
use crate::modules::frontend::views::{Cart, Page, Product};
use crate::modules::frontend::visitor::{Chrome, Shopper, Visitor};
use crate::modules::frontend::Frontend;

/// The sorts a shopper can pick, as the API names them, with their labels.
pub const SORTS: [(&str, &str); 5] = [
    ("name", "Name, A to Z"),
    ("-name", "Name, Z to A"),
    ("price", "Price, low to high"),
    ("-price", "Price, high to low"),
    ("newest", "Newest first"),
];

#[derive(Debug, Deserialize, Default)]
pub struct CatalogQuery {
    #[serde(default)]
    q: String,
    page: Option<u32>,
    #[serde(default)]
    sort: String,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    chrome: Chrome,
    q: String,
    sort: String,
    sorts: &'static [(&'static str, &'static str)],
    products: Page<Product>,
    signed_in: bool,
    here: String,
}

impl CatalogPage {
    fn is_sort(&self, key: &str) -> bool {
        self.sort == key
    }

    /// A link to page `page` of the same search.
    fn page_link(&self, page: u32) -> String {
        format!(
            "/?q={}&sort={}&page={page}",
            encode(&self.q),
            encode(&self.sort)
        )
    }
}

pub async fn catalog(
    State(fe): State<Frontend>,
    visitor: Visitor,
    Query(query): Query<CatalogQuery>,
) -> PageResult {
    let sort = if SORTS.iter().any(|(s, _)| *s == query.sort) {
        query.sort.clone()
    } else {
        "name".to_string()
    };
    let q: String = query.q.trim().chars().take(100).collect();
    let page = query.page.unwrap_or(1).clamp(1, 100_000);
    let path = format!(
        "/api/products?q={}&sort={}&page={page}&per_page=12",
        encode(&q),
        encode(&sort)
    );
    let products = fe
        .api
        .get(visitor.token(), &path)
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))?;
    ok(&CatalogPage {
        chrome: visitor.chrome(),
        q,
        sort,
        sorts: &SORTS,
        products,
        signed_in: visitor.identity.is_some(),
        here: visitor.here.clone(),
    })
}

#[derive(Template)]
#[template(path = "product.html")]
struct ProductPage {
    chrome: Chrome,
    product: Product,
    signed_in: bool,
    here: String,
    quantity: i64,
    error: FormError,
}

async fn product_page(
    fe: &Frontend,
    visitor: &Visitor,
    id: &str,
    status: StatusCode,
    quantity: i64,
    error: FormError,
) -> PageResult {
    let product = fe
        .api
        .get(visitor.token(), &format!("/api/products/{}", encode(id)))
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))?;
    render(
        status,
        &ProductPage {
            chrome: visitor.chrome(),
            product,
            signed_in: visitor.identity.is_some(),
            here: format!("/products/{}", encode(id)),
            quantity,
            error,
        },
    )
}

pub async fn product(
    State(fe): State<Frontend>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> PageResult {
    product_page(&fe, &visitor, &id, StatusCode::OK, 1, FormError::default()).await
}

#[derive(Debug, Deserialize)]
pub struct AddToCart {
    product_id: String,
    quantity: String,
    back: Option<String>,
}

/// Adds to the cart, then goes back where the shopper was. A refusal (not enough stock, a
/// bad quantity) shows the product's page with the reason next to the quantity.
pub async fn add_to_cart(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Form(form): Form<AddToCart>,
) -> PageResult {
    let quantity = form.quantity.trim().parse::<i64>().unwrap_or(0);
    let refused = |error: FormError| {
        let (fe, visitor, id) = (fe.clone(), &visitor, form.product_id.clone());
        async move {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            product_page(&fe, visitor, &id, status, quantity.max(1), error).await
        }
    };
    if !(1..=1000).contains(&quantity) {
        return refused(FormError::new(
            Some("quantity"),
            "choose a quantity from 1 to 1000",
        ))
        .await;
    }
    let body = json!({ "product_id": form.product_id, "quantity": quantity });
    let added: Result<Cart, _> = fe
        .api
        .json(
            visitor.token(),
            Method::POST,
            "/api/cart/items",
            Some(&body),
        )
        .await;
    match added {
        Ok(cart) => {
            // The cart the API answers names the product: no second call for it.
            let name = cart
                .lines
                .into_iter()
                .find(|l| l.product_id == form.product_id)
                .map(|l| l.name)
                .unwrap_or_else(|| "the item".into());
            let back = local_path(form.back.as_deref());
            Ok(fe.see_other_with(&back, &format!("Added {quantity} × {name} to your cart")))
        }
        Err(p)
            if p.status == StatusCode::CONFLICT || p.status == StatusCode::UNPROCESSABLE_ENTITY =>
        {
            let field = field_of(
                &p.detail,
                &[("available", "quantity"), ("of one product", "quantity")],
            );
            refused(FormError::new(field.or(Some("quantity")), p.detail)).await
        }
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}
