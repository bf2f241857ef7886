//! Cart, checkout and orders over HTTP. Every route acts for the signed-in user; another
//! user's order answers 404, never 403, so ids cannot be probed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::catalog::Catalog;
use super::model::{AddItem, Cart, Order, OrderPage, OrderQuery, OrderStatus, SetQuantity};
use super::store::{OrderFilter, OrderStore, Placed, NEWEST_FIRST};
use super::waiters::Waiters;
use crate::contracts::payment_method::CheckoutRequest;
use crate::db::keyset::Paging;
use crate::error::{ApiError, ApiResult};
use crate::gateway::auth::{CurrentUser, Identity};
use crate::gateway::extract::{ApiJson, ApiPath, ApiQuery};

#[derive(Clone)]
pub struct OrderState {
    pub store: OrderStore,
    pub catalog: Arc<dyn Catalog>,
    pub waiters: Arc<Waiters>,
    /// How long checkout waits for the saga before answering 202, in milliseconds (live:
    /// `checkout.wait_ms`).
    pub checkout_wait_ms: crate::config::Knob,
    /// Whether shoppers can check out now (live: `features.checkout`).
    pub checkout_open: crate::config::Flag,
    /// When other processes run the order module too, the saga of an order may finish in
    /// one of them, which cannot wake this process's waiter: checkout then also looks at the
    /// order this often.
    pub poll_outcome: Option<Duration>,
}

pub fn router(state: OrderState) -> OpenApiRouter {
    api().with_state(state)
}

/// The routes and their OpenAPI description, before the state is supplied.
pub fn api() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(add_item))
        .routes(routes!(set_quantity, remove_item))
        .routes(routes!(checkout))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
}

/// The signed-in user's cart.
#[utoipa::path(get, path = "/api/cart", tag = "cart", security(("bearer" = [])),
    responses((status = 200, body = Cart), (status = 401)))]
async fn get_cart(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<Json<Cart>> {
    Ok(Json(s.store.cart(&user.sub).await?.into()))
}

/// Puts a product in the cart (adding to the quantity already there).
#[utoipa::path(post, path = "/api/cart/items", tag = "cart", security(("bearer" = [])),
    request_body = AddItem,
    responses((status = 200, body = Cart), (status = 401), (status = 409, description = "not enough stock or another currency"),
        (status = 422, description = "unknown product or bad quantity")))]
async fn add_item(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    ApiJson(req): ApiJson<AddItem>,
) -> ApiResult<Json<Cart>> {
    let info =
        s.catalog.product(&req.product_id).await?.ok_or_else(|| {
            ApiError::validation(format!("there is no product {}", req.product_id))
        })?;
    let cart = s
        .store
        .add_item(&user.sub, &req.product_id, info, req.quantity)
        .await?;
    Ok(Json(cart))
}

/// Changes the quantity of a product in the cart.
#[utoipa::path(patch, path = "/api/cart/items/{product_id}", tag = "cart", security(("bearer" = [])),
    request_body = SetQuantity, params(("product_id" = String, Path, description = "product id")),
    responses((status = 200, body = Cart), (status = 401), (status = 404), (status = 409), (status = 422)))]
async fn set_quantity(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    ApiPath(product_id): ApiPath<String>,
    ApiJson(req): ApiJson<SetQuantity>,
) -> ApiResult<Json<Cart>> {
    let info = s.catalog.product(&product_id).await?;
    let order = s
        .store
        .set_quantity(&user.sub, &product_id, info, req.quantity)
        .await?;
    Ok(Json(Some(order).into()))
}

/// Takes a product out of the cart.
#[utoipa::path(delete, path = "/api/cart/items/{product_id}", tag = "cart", security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    responses((status = 200, body = Cart), (status = 401), (status = 404)))]
async fn remove_item(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    ApiPath(product_id): ApiPath<String>,
) -> ApiResult<Json<Cart>> {
    Ok(Json(
        Some(s.store.remove_item(&user.sub, &product_id).await?).into(),
    ))
}

/// Places the cart as an order and runs the checkout saga: 201 completed, 409 out of stock,
/// 402 payment declined, or 202 (poll the Location) if it takes longer than the configured
/// wait. With an `Idempotency-Key`, a retry answers like the first request and never charges
/// twice.
#[utoipa::path(post, path = "/api/checkout", tag = "checkout", security(("bearer" = [])),
    request_body = CheckoutRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = Order, description = "completed"),
        (status = 202, body = Order, description = "still in progress: poll Location"),
        (status = 402, description = "payment declined"), (status = 409, description = "out of stock or empty cart"),
        (status = 401), (status = 422),
        (status = 503, description = "checkout paused (features.checkout = false)")))]
async fn checkout(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> ApiResult<Response> {
    if !s.checkout_open.is_on() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "checkout-paused",
            "Checkout paused",
            "checkout is paused for a few minutes; your cart is kept, so please try again soon",
        ));
    }
    let method = req
        .into_method(chrono::Utc::now().date_naive())
        .map_err(|errors| {
            let detail: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            ApiError::validation(detail.join(" ")).with("errors", serde_json::json!(errors))
        })?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters")
                })?
                .to_string(),
        ),
    };
    let fingerprint = serde_json::to_string(&method).expect("method serializes");

    let placed = s
        .store
        .place(
            &user.sub,
            user.session.as_deref(),
            &method,
            key.as_deref().map(|k| (k, fingerprint.as_str())),
            &s.waiters,
        )
        .await?;
    let (order_id, waiting) = match placed {
        // Registered before the order was committed: no outcome can come before it.
        Placed::New { order_id, waiting } => (order_id, Some(waiting)),
        Placed::Existing {
            order_id,
            fingerprint: first,
        } if first == fingerprint => {
            // A retry: register, then look; an outcome that landed in between is seen by
            // the look.
            let waiting = s.waiters.register(&order_id);
            let status = s.store.status(&order_id).await?;
            let busy = status.is_some_and(OrderStatus::in_checkout);
            (order_id, busy.then_some(waiting))
        }
        Placed::Existing { .. } => {
            return Err(ApiError::validation(
                "this Idempotency-Key was already used for a different checkout",
            ))
        }
    };
    if let Some(mut waiting) = waiting {
        let wait = async {
            let Some(every) = s.poll_outcome else {
                waiting.finished().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = waiting.finished() => return,
                    _ = tokio::time::sleep(every) => {
                        let status = s.store.status(&order_id).await.ok().flatten();
                        if !status.is_some_and(OrderStatus::in_checkout) {
                            return;
                        }
                    }
                }
            }
        };
        let wait_for = Duration::from_millis(s.checkout_wait_ms.get());
        let _ = tokio::time::timeout(wait_for, wait).await;
    }
    let order = s
        .store
        .get(&order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    checkout_answer(order)
}

/// The HTTP answer for an order that went through checkout.
fn checkout_answer(order: Order) -> ApiResult<Response> {
    let location = [(header::LOCATION, format!("/api/orders/{}", order.id))];
    match order.status {
        OrderStatus::Completed => Ok((StatusCode::CREATED, location, Json(order)).into_response()),
        OrderStatus::Failed => {
            let failure = order.failure.clone();
            let (kind, reason) = failure.map(|f| (f.kind, f.reason)).unwrap_or_default();
            let order_json = serde_json::to_value(&order).expect("order serializes");
            let err = if kind == "payment_declined" {
                ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment-declined",
                    "Payment declined",
                    reason,
                )
            } else {
                ApiError::conflict("out-of-stock", "Not enough stock", reason)
            };
            Err(err
                .with("order_id", order.id.clone())
                .with("order", order_json))
        }
        OrderStatus::Cancelled => Ok((StatusCode::OK, location, Json(order)).into_response()),
        _ => Ok((StatusCode::ACCEPTED, location, Json(order)).into_response()),
    }
}

/// The signed-in user's orders; an admin sees everyone's.
#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("bearer" = [])), params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 400), (status = 401)))]
async fn list_orders(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<OrderQuery>,
) -> ApiResult<Json<OrderPage>> {
    if q.q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(ApiError::bad_request("q must be at most 100 characters"));
    }
    let owner = (!user.is_admin()).then_some(user.sub.as_str());
    let filter = OrderFilter {
        user: owner,
        status: q.status,
        q: q.q.as_deref(),
    };
    let scope = format!(
        "orders:{}:{}:{}",
        owner.unwrap_or(""),
        q.status.map_or("", OrderStatus::as_str),
        q.q.as_deref().unwrap_or("")
    );
    let paging = Paging::new(scope, NEWEST_FIRST, q.page, q.per_page, q.cursor.as_deref())?;
    let (items, total, total_capped, next) = s.store.list(&filter, &paging).await?;
    Ok(Json(OrderPage {
        items,
        page: paging.page(),
        per_page: paging.per_page(),
        total,
        total_capped,
        next_cursor: next.cursor,
        next: next.link,
    }))
}

/// One order, with its lines, totals and status history.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = Order), (status = 401), (status = 404)))]
async fn get_order(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Order>> {
    Ok(Json(visible(&s.store, &user, &id).await?))
}

/// The order if `user` may see it: their own, or any for an admin. Another's answers 404,
/// never 403, so order ids cannot be probed.
async fn visible(store: &OrderStore, user: &Identity, id: &str) -> ApiResult<Order> {
    match store.get(id).await? {
        Some(o) if o.status != OrderStatus::Cart && (user.is_admin() || o.user_id == user.sub) => {
            Ok(o)
        }
        _ => Err(ApiError::not_found("order")),
    }
}

/// Cancels a completed order: the units go back on the shelf and the payment is refunded.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = Order), (status = 401), (status = 404),
        (status = 409, description = "still in progress, or already failed or cancelled")))]
async fn cancel_order(
    State(s): State<OrderState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Order>> {
    let order = visible(&s.store, &user, &id).await?;
    let by = match user.is_admin() && user.sub != order.user_id {
        true => "an admin",
        false => "the shopper",
    };
    let order = s.store.cancel(order, by).await?;
    tracing::info!(user = ?user.sub, order = ?id, "order cancelled");
    Ok(Json(order))
}
