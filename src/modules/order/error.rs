//! What can go wrong in the order module, in its own terms. The store answers these; the
//! routes answer each as a problem (`From<OrderError> for ApiError`), so the store knows
//! nothing of HTTP.

use super::model::OrderStatus;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// What was asked for is not valid (a quantity past the limit, an imported order).
    #[error("{0}")]
    Invalid(String),
    /// No such thing the caller may see: `"order"` or `"cart item"`.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("you asked for {wanted} of {name}, but only {available} are available")]
    NotEnough {
        name: String,
        wanted: i64,
        available: i64,
    },
    #[error("{name} is priced in {priced_in}, but your cart is in {cart_in}")]
    CurrencyMismatch {
        name: String,
        priced_in: String,
        cart_in: String,
    },
    #[error("your cart is being changed by other requests; try again")]
    CartBusy,
    #[error("add something to the cart before checking out")]
    EmptyCart,
    /// A cancellation of an order the saga has not finished.
    #[error("try again in a moment, once the order has completed")]
    InProgress,
    /// A cancellation of an order that is no longer completed.
    #[error("the order is {}", .0.as_str())]
    Final(OrderStatus),
    /// A list's paging (a forged cursor, a page out of range), which the platform words.
    #[error(transparent)]
    Paging(#[from] ApiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<OrderError> for ApiError {
    fn from(err: OrderError) -> ApiError {
        let detail = err.to_string();
        match err {
            OrderError::Invalid(_) => ApiError::validation(detail),
            OrderError::NotFound(what) => ApiError::not_found(what),
            OrderError::NotEnough { available, .. } => {
                ApiError::conflict("insufficient-stock", "Not enough stock", detail)
                    .with("available", available)
            }
            OrderError::CurrencyMismatch { .. } => {
                ApiError::conflict("currency-mismatch", "One currency per order", detail)
            }
            OrderError::CartBusy => ApiError::conflict("cart-busy", "The cart is changing", detail),
            OrderError::EmptyCart => ApiError::conflict("empty-cart", "The cart is empty", detail),
            OrderError::InProgress => ApiError::conflict(
                "order-in-progress",
                "The order is still being processed",
                detail,
            ),
            OrderError::Final(_) => {
                ApiError::conflict("order-final", "The order cannot be cancelled", detail)
            }
            OrderError::Paging(problem) => problem,
            OrderError::Database(e) => ApiError::from(e),
        }
    }
}
