//! Payments over HTTP: a shopper sees the payment of their own order.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::{Payment, PaymentStore};
use crate::error::{ApiError, ApiResult};
use crate::gateway::auth::CurrentUser;
use crate::gateway::extract::ApiPath;

pub fn router(store: PaymentStore) -> OpenApiRouter {
    api().with_state(store)
}

/// The routes and their OpenAPI description, before the state is supplied.
pub fn api() -> OpenApiRouter<PaymentStore> {
    OpenApiRouter::new().routes(routes!(order_payment))
}

/// The payment of an order: `pending` while the provider is being asked, then its outcome.
/// Another user's order answers 404, as does an order payment has not been asked for yet.
#[utoipa::path(get, path = "/api/orders/{id}/payment", tag = "payments",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = Payment), (status = 401), (status = 404)))]
async fn order_payment(
    State(store): State<PaymentStore>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Payment>> {
    match store.for_order(&id).await? {
        Some(p) if user.is_admin() || p.user_id == user.sub => Ok(Json(p)),
        _ => Err(ApiError::not_found("payment")),
    }
}
