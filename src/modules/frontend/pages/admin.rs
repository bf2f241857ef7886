//! The admin's stock pages: find a product with the picker (search as you type), then edit,
//! restock or reduce it, or add a new one; and every order, with filters.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

use super::orders::{list, OrdersQuery};
use super::{encode, field_of, render, FormError, PageError, PageResult};
use crate::modules::frontend::views::{Page, Product};
use crate::modules::frontend::visitor::{Chrome, Shopper, Visitor};
use crate::modules::frontend::Frontend;

pub const CURRENCIES: [&str; 4] = ["INR", "USD", "EUR", "GBP"];

fn require_admin(shopper: &Shopper) -> Result<(), PageError> {
    if shopper.identity().is_admin() {
        return Ok(());
    }
    let visitor = &shopper.0;
    Err(PageError::problem(
        crate::modules::frontend::api::Problem {
            status: StatusCode::FORBIDDEN,
            title: "For admins only".into(),
            detail: "this page needs the admin role".into(),
            body: Value::Null,
        },
        visitor.chrome(),
        &visitor.here,
    ))
}

/// `"499"`, `"499.5"` or `"499.50"` → 49950 minor units; None for anything else.
pub fn parse_price(text: &str) -> Option<i64> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || whole.len() > 9 || frac.len() > 2 {
        return None;
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<2}");
    Some(whole.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

#[derive(Debug, Deserialize, Default)]
pub struct PickerQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    product: String,
}

/// The fields of the "add a product" form, kept to show a refused form again.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewProductForm {
    #[serde(default)]
    pub sku: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub price: String,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub quantity: String,
}

impl NewProductForm {
    pub fn currency_is(&self, currency: &str) -> bool {
        self.currency == currency
    }
}

#[derive(Template)]
#[template(path = "admin_products.html")]
struct StockPage {
    chrome: Chrome,
    q: String,
    matches: Page<Product>,
    chosen: Option<Product>,
    new: NewProductForm,
    /// A number typed into a refused restock or reduce: (its field, the text).
    typed: Option<(&'static str, String)>,
    currencies: &'static [&'static str],
    error: FormError,
}

impl StockPage {
    fn price_text(&self, p: &Product) -> String {
        format!("{}.{:02}", p.price_minor / 100, p.price_minor % 100)
    }

    /// What the quantity field `field` shows: what was typed into it if it was refused, else
    /// `default`.
    fn typed_or(&self, field: &str, default: &str) -> String {
        match &self.typed {
            Some((typed, text)) if *typed == field => text.clone(),
            _ => default.to_string(),
        }
    }

    /// Whether `p` is the product shown beside the picker.
    fn is_chosen(&self, p: &Product) -> bool {
        self.chosen.as_ref().is_some_and(|c| c.id == p.id)
    }

    fn pick_link(&self, p: &Product) -> String {
        format!(
            "/admin/products?q={}&product={}",
            encode(&self.q),
            encode(&p.id)
        )
    }
}

async fn stock_page(
    fe: &Frontend,
    visitor: &Visitor,
    query: PickerQuery,
    status: StatusCode,
    forms: StockForms,
    error: FormError,
) -> PageResult {
    let q: String = query.q.trim().chars().take(100).collect();
    let problem = |p| PageError::problem(p, visitor.chrome(), &visitor.here);
    let matches = fe
        .api
        .get(
            visitor.token(),
            &format!("/api/products?q={}&per_page=20", encode(&q)),
        )
        .await
        .map_err(problem)?;
    let chosen = if query.product.is_empty() {
        None
    } else {
        let path = format!("/api/products/{}", encode(&query.product));
        Some(fe.api.get(visitor.token(), &path).await.map_err(problem)?)
    };
    render(
        status,
        &StockPage {
            chrome: visitor.chrome(),
            q,
            matches,
            chosen,
            new: forms.new,
            typed: forms.typed,
            currencies: &CURRENCIES,
            error,
        },
    )
}

pub async fn products(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Query(query): Query<PickerQuery>,
) -> PageResult {
    require_admin(&shopper)?;
    let new = NewProductForm {
        currency: "INR".into(),
        ..NewProductForm::default()
    };
    let forms = StockForms { new, typed: None };
    stock_page(
        &fe,
        &shopper.0,
        query,
        StatusCode::OK,
        forms,
        FormError::default(),
    )
    .await
}

/// The chosen product's page again, with `error` next to its field (a form the API was never
/// asked about, or one it refused with `status`), the picker's search and what was typed kept.
async fn product_refused(
    fe: &Frontend,
    visitor: &Visitor,
    submitted: Submitted,
    status: StatusCode,
    error: FormError,
) -> PageResult {
    let query = PickerQuery {
        q: submitted.q,
        product: submitted.id,
    };
    let page = StockForms {
        typed: submitted.typed,
        ..StockForms::default()
    };
    stock_page(fe, visitor, query, status, page, error).await
}

/// Which product a form was about and the picker's search it came from (where to go back to),
/// and the number typed into it (field, text), to show again if it is refused.
struct Submitted {
    id: String,
    q: String,
    typed: Option<(&'static str, String)>,
}

/// What the page's forms hold: the "add a product" form, and a number typed into a refused
/// restock or reduce.
#[derive(Default)]
struct StockForms {
    new: NewProductForm,
    typed: Option<(&'static str, String)>,
}

/// A change to one product: the API request, the form field a refusal belongs to, and the
/// notice for success.
struct Change {
    method: Method,
    path: String,
    body: Value,
    field: &'static str,
    done: String,
}

/// Sends a change to the API; on success goes back to the product (and the picker's search)
/// with a notice, on a refusal shows the page again with the error next to the change's field.
async fn change(
    fe: &Frontend,
    shopper: &Shopper,
    submitted: Submitted,
    change: Change,
) -> PageResult {
    let Change {
        method,
        path,
        body,
        field,
        done,
    } = change;
    let visitor = &shopper.0;
    match fe
        .api
        .send(visitor.token(), method, &path, Some(&body), &[])
        .await
    {
        Ok(_) => {
            let back = format!(
                "/admin/products?q={}&product={}",
                encode(&submitted.q),
                encode(&submitted.id)
            );
            Ok(fe.see_other_with(&back, &done))
        }
        Err(p) if p.status.is_client_error() && p.status != StatusCode::UNAUTHORIZED => {
            let error = FormError::new(Some(field), p.detail);
            product_refused(fe, visitor, submitted, p.status, error).await
        }
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}

#[derive(Debug, Deserialize)]
pub struct QuantityForm {
    #[serde(default)]
    quantity: String,
    /// The picker's search the page was showing.
    #[serde(default)]
    q: String,
}

async fn stock_change(
    fe: Frontend,
    shopper: Shopper,
    id: String,
    form: QuantityForm,
    action: &'static str,
) -> PageResult {
    require_admin(&shopper)?;
    let field = if action == "restock" {
        "restock_quantity"
    } else {
        "reduce_quantity"
    };
    let submitted = Submitted {
        id: id.clone(),
        q: form.q.clone(),
        typed: Some((field, form.quantity.clone())),
    };
    let Ok(quantity) = form.quantity.trim().parse::<i64>() else {
        let error = FormError::new(Some(field), "Enter a whole number of units.");
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return product_refused(&fe, &shopper.0, submitted, status, error).await;
    };
    let path = format!("/api/products/{}/{action}", encode(&id));
    let done = if action == "restock" {
        format!("Restocked {quantity} units")
    } else {
        format!("Took {quantity} units off the shelf")
    };
    let body = json!({ "quantity": quantity });
    let request = Change {
        method: Method::POST,
        path,
        body,
        field,
        done,
    };
    change(&fe, &shopper, submitted, request).await
}

pub async fn restock(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Path(id): Path<String>,
    Form(form): Form<QuantityForm>,
) -> PageResult {
    stock_change(fe, shopper, id, form, "restock").await
}

pub async fn reduce(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Path(id): Path<String>,
    Form(form): Form<QuantityForm>,
) -> PageResult {
    stock_change(fe, shopper, id, form, "reduce").await
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    price: String,
    /// The picker's search the page was showing.
    #[serde(default)]
    q: String,
}

pub async fn edit(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> PageResult {
    require_admin(&shopper)?;
    let submitted = Submitted {
        id: id.clone(),
        q: form.q.clone(),
        typed: None,
    };
    let Some(price) = parse_price(&form.price).filter(|p| *p > 0) else {
        let error = FormError::new(Some("edit_price"), "Enter a price such as 499.00.");
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return product_refused(&fe, &shopper.0, submitted, status, error).await;
    };
    let body = json!({
        "name": form.name.trim(),
        "description": form.description.trim(),
        "price_minor": price,
    });
    let path = format!("/api/products/{}", encode(&id));
    let field = if form.name.trim().is_empty() {
        "edit_name"
    } else {
        "edit_price"
    };
    let request = Change {
        method: Method::PATCH,
        path,
        body,
        field,
        done: "Saved".into(),
    };
    change(&fe, &shopper, submitted, request).await
}

pub async fn create(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Form(form): Form<NewProductForm>,
) -> PageResult {
    require_admin(&shopper)?;
    let visitor = &shopper.0;
    let refused = |error: FormError| {
        let (fe, form) = (fe.clone(), form.clone());
        async move {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            let forms = StockForms {
                new: form,
                typed: None,
            };
            stock_page(&fe, visitor, PickerQuery::default(), status, forms, error).await
        }
    };
    let Some(price) = parse_price(&form.price).filter(|p| *p > 0) else {
        return refused(FormError::new(
            Some("new_price"),
            "enter a price such as 499.00",
        ))
        .await;
    };
    let Ok(quantity) = form.quantity.trim().parse::<i64>() else {
        return refused(FormError::new(
            Some("new_quantity"),
            "enter a whole number of units",
        ))
        .await;
    };
    let body = json!({
        "sku": form.sku.trim(),
        "name": form.name.trim(),
        "description": form.description.trim(),
        "price_minor": price,
        "currency": form.currency,
        "quantity": quantity,
    });
    let created: Result<Product, _> = fe
        .api
        .json(visitor.token(), Method::POST, "/api/products", Some(&body))
        .await;
    match created {
        Ok(product) => Ok(fe.see_other_with(
            &format!("/admin/products?product={}", encode(&product.id)),
            &format!("Added {}", product.name),
        )),
        Err(p) if p.status.is_client_error() && p.status != StatusCode::UNAUTHORIZED => {
            let field = field_of(
                &p.detail,
                &[
                    ("sku", "new_sku"),
                    ("name", "new_name"),
                    ("description", "new_description"),
                    ("price", "new_price"),
                    ("currency", "new_currency"),
                    ("quantity", "new_quantity"),
                ],
            );
            refused(FormError::new(field, p.detail)).await
        }
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}

pub async fn orders(
    State(fe): State<Frontend>,
    shopper: Shopper,
    Query(query): Query<OrdersQuery>,
) -> PageResult {
    require_admin(&shopper)?;
    list(&fe, &shopper, query, true).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn prices_are_read_in_major_units() {
        use super::parse_price;
        assert_eq!(parse_price("499"), Some(49900));
        assert_eq!(parse_price("499.5"), Some(49950));
        assert_eq!(parse_price(" 0.05 "), Some(5));
        for bad in ["", ".5", "4.999", "-1", "1e3", "12,00", "abc"] {
            assert_eq!(parse_price(bad), None, "{bad}");
        }
    }
}
