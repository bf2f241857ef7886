//! The cart (change quantities, remove) and checkout (a payment mode and its details).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{encode, ok, render, see_other, FormError, PageError, PageResult};
use crate::modules::frontend::views::{Cart, Order};
use crate::modules::frontend::visitor::{Chrome, Shopper, Visitor};
use crate::modules::frontend::Frontend;

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage {
    chrome: Chrome,
    cart: Cart,
}

async fn load_cart(fe: &Frontend, visitor: &Visitor) -> Result<Cart, PageError> {
    fe.api
        .get(visitor.token(), "/api/cart")
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))
}

pub async fn cart(State(fe): State<Frontend>, Shopper(visitor): Shopper) -> PageResult {
    let cart = load_cart(&fe, &visitor).await?;
    ok(&CartPage {
        chrome: visitor.chrome(),
        cart,
    })
}

#[derive(Debug, Deserialize)]
pub struct SetQuantity {
    quantity: String,
}

pub async fn set_quantity(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Path(product_id): Path<String>,
    Form(form): Form<SetQuantity>,
) -> PageResult {
    let quantity = form.quantity.trim().parse::<i64>().unwrap_or(0);
    if !(1..=1000).contains(&quantity) {
        return Ok(fe.see_other_refused("/cart", "Choose a quantity from 1 to 1000"));
    }
    let path = format!("/api/cart/items/{}", encode(&product_id));
    let body = json!({ "quantity": quantity });
    match fe
        .api
        .send(visitor.token(), Method::PATCH, &path, Some(&body), &[])
        .await
    {
        Ok(_) => Ok(fe.see_other_with("/cart", "Your cart is updated")),
        Err(p) if p.status.is_client_error() && p.status != StatusCode::UNAUTHORIZED => {
            Ok(fe.see_other_refused("/cart", &p.detail))
        }
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}

pub async fn remove(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Path(product_id): Path<String>,
) -> PageResult {
    let path = format!("/api/cart/items/{}", encode(&product_id));
    match fe
        .api
        .send(visitor.token(), Method::DELETE, &path, None::<&Value>, &[])
        .await
    {
        Ok(_) => Ok(fe.see_other_with("/cart", "Removed from your cart")),
        Err(p) if p.status == StatusCode::NOT_FOUND => {
            Ok(fe.see_other_refused("/cart", "That was not in your cart"))
        }
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}

/// The payment modes, as the API names them, with their labels.
pub const MODES: [(&str, &str); 5] = [
    ("CASH", "Cash on delivery"),
    ("UPI", "UPI"),
    ("CARD", "Card"),
    ("EMI", "EMI (card instalments)"),
    ("NET_BANKING", "Net banking"),
];

pub const BANKS: [(&str, &str); 5] = [
    ("HDFC", "HDFC Bank"),
    ("ICIC", "ICICI Bank"),
    ("SBIN", "State Bank of India"),
    ("UTIB", "Axis Bank"),
    ("KKBK", "Kotak Mahindra Bank"),
];

/// What the checkout form holds; every field is optional so a half-filled form can be
/// shown again as it was.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    pub payment_mode: String,
    #[serde(default)]
    pub upi_id: String,
    #[serde(default)]
    pub card_number: String,
    #[serde(default)]
    pub card_expiry: String,
    #[serde(default)]
    pub card_holder: String,
    #[serde(default)]
    pub emi_months: String,
    #[serde(default)]
    pub bank_code: String,
    /// Set once per form shown, so a double-clicked "Place order" places one order.
    #[serde(default)]
    pub idempotency_key: String,
    /// Never shown again: a refused form asks for it anew.
    #[serde(default)]
    pub card_cvv: String,
}

impl CheckoutForm {
    /// The API's checkout body for the chosen mode, or which field is missing.
    fn body(&self) -> Result<Value, FormError> {
        let card = || {
            json!({
                "number": self.card_number.trim(),
                "expiry": self.card_expiry.trim(),
                "cvv": self.card_cvv.trim(),
                "holder": Some(self.card_holder.trim()).filter(|h| !h.is_empty()),
            })
        };
        Ok(match self.payment_mode.as_str() {
            "CASH" => json!({ "payment_mode": "CASH" }),
            "UPI" => json!({ "payment_mode": "UPI", "upi_id": self.upi_id.trim() }),
            "CARD" => json!({ "payment_mode": "CARD", "card": card() }),
            "EMI" => {
                let months =
                    self.emi_months.trim().parse::<i64>().map_err(|_| {
                        FormError::new(Some("emi_months"), "choose how many months")
                    })?;
                json!({ "payment_mode": "EMI", "card": card(), "emi_months": months })
            }
            "NET_BANKING" => {
                json!({ "payment_mode": "NET_BANKING", "bank_code": self.bank_code.trim() })
            }
            _ => return Err(FormError::new(Some("payment_mode"), "choose how to pay")),
        })
    }

    pub fn mode_is(&self, mode: &str) -> bool {
        self.payment_mode == mode
    }

    pub fn bank_is(&self, code: &str) -> bool {
        self.bank_code == code
    }

    pub fn months_is(&self, months: &i64) -> bool {
        self.emi_months.trim().parse() == Ok(*months)
    }
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    chrome: Chrome,
    cart: Cart,
    form: CheckoutForm,
    error: FormError,
    modes: &'static [(&'static str, &'static str)],
    banks: &'static [(&'static str, &'static str)],
    months: [i64; 6],
}

async fn checkout_page(
    fe: &Frontend,
    visitor: &Visitor,
    status: StatusCode,
    mut form: CheckoutForm,
    error: FormError,
) -> PageResult {
    let cart = load_cart(fe, visitor).await?;
    if cart.lines.is_empty() {
        return Ok(fe.see_other_with("/cart", "Your cart is empty"));
    }
    form.card_cvv.clear();
    if form.idempotency_key.is_empty() {
        form.idempotency_key = uuid::Uuid::new_v4().to_string();
    }
    render(
        status,
        &CheckoutPage {
            chrome: visitor.chrome(),
            cart,
            form,
            error,
            modes: &MODES,
            banks: &BANKS,
            months: [3, 6, 9, 12, 18, 24],
        },
    )
}

pub async fn checkout(State(fe): State<Frontend>, Shopper(visitor): Shopper) -> PageResult {
    let form = CheckoutForm {
        payment_mode: "UPI".into(),
        ..CheckoutForm::default()
    };
    checkout_page(&fe, &visitor, StatusCode::OK, form, FormError::default()).await
}

/// Places the order. Whatever the saga decides (completed, declined, out of stock, still
/// working) the shopper lands on the order's page, which says it in words; only a form the
/// API refuses comes back with the error next to its field.
pub async fn place_order(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Form(form): Form<CheckoutForm>,
) -> PageResult {
    let refused = |error: FormError| {
        let (fe, visitor, form) = (fe.clone(), &visitor, form.clone());
        async move { checkout_page(&fe, visitor, StatusCode::UNPROCESSABLE_ENTITY, form, error).await }
    };
    let body = match form.body() {
        Ok(body) => body,
        Err(error) => return refused(error).await,
    };
    let key = uuid::Uuid::parse_str(form.idempotency_key.trim())
        .map(|k| k.to_string())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
    let answer = fe
        .api
        .send(
            visitor.token(),
            Method::POST,
            "/api/checkout",
            Some(&body),
            &[("idempotency-key", &key)],
        )
        .await;
    match answer {
        Ok(answer) => {
            let order: Order = serde_json::from_slice(&answer)
                .map_err(|e| PageError::Page(StatusCode::BAD_GATEWAY, e.to_string()))?;
            Ok(see_other(&format!("/orders/{}", encode(&order.id))))
        }
        // Declined or out of stock: the order exists, and its page explains.
        Err(p) if p.body.get("order_id").and_then(Value::as_str).is_some() => {
            let id = p.body["order_id"].as_str().unwrap_or_default();
            Ok(see_other(&format!("/orders/{}", encode(id))))
        }
        // Every detail the API refused, each beside its field.
        Err(p) if p.status == StatusCode::UNPROCESSABLE_ENTITY => {
            // The API's field, and the form's (a field the form has no place for is said
            // above the form).
            const FIELDS: [(&str, &str); 6] = [
                ("upi_id", "upi_id"),
                ("card.number", "card_number"),
                ("card.expiry", "card_expiry"),
                ("card.cvv", "card_cvv"),
                ("emi_months", "emi_months"),
                ("bank_code", "bank_code"),
            ];
            let mut error = FormError::default();
            for refusal in p.body["errors"].as_array().into_iter().flatten() {
                let field = refusal["field"].as_str().unwrap_or_default();
                let form_field = FIELDS.iter().find(|(f, _)| *f == field).map(|(_, to)| *to);
                error.push(form_field, refusal["message"].as_str().unwrap_or(&p.detail));
            }
            if p.body["errors"].as_array().is_none_or(Vec::is_empty) {
                error.push(None, p.detail.clone());
            }
            refused(error).await
        }
        // An empty cart, or checkout paused by the shop (`features.checkout`): the cart is
        // kept, and its page says why.
        Err(p)
            if p.status == StatusCode::CONFLICT
                || p.body.get("type").and_then(Value::as_str)
                    == Some("/problems/checkout-paused") =>
        {
            Ok(fe.see_other_refused("/cart", &p.detail))
        }
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}
