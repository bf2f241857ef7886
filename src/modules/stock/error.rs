//! What can go wrong in the stock module, in its own terms. The store answers these; the
//! routes answer each as a problem (`From<StockError> for ApiError`), so the store knows
//! nothing of HTTP.

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// A list or search that cannot be answered as asked.
    #[error("{0}")]
    BadQuery(String),
    /// A product's field is not valid.
    #[error("{0}")]
    Invalid(String),
    #[error("no such product")]
    NotFound,
    #[error("another product already has SKU {0}")]
    DuplicateSku(String),
    #[error("a product of the import has a SKU that is already in use")]
    DuplicateSkuInImport,
    #[error(
        "this product is in orders, so it stays in the catalog; reduce its stock to 0 to stop \
         selling it"
    )]
    InOrders,
    #[error("only {available} units are available to remove ({reserved} are reserved for orders)")]
    InsufficientStock { available: i64, reserved: i64 },
    /// The list's paging (a forged cursor, a page out of range), which the platform words.
    #[error(transparent)]
    Paging(#[from] ApiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StockError {
    pub(super) fn forged_cursor() -> StockError {
        StockError::BadQuery("the cursor is not one this list gave out".into())
    }
}

impl From<StockError> for ApiError {
    fn from(err: StockError) -> ApiError {
        let detail = err.to_string();
        match err {
            StockError::BadQuery(_) => ApiError::bad_request(detail),
            StockError::Invalid(_) => ApiError::validation(detail),
            StockError::NotFound => ApiError::not_found("product"),
            StockError::DuplicateSku(_) | StockError::DuplicateSkuInImport => {
                ApiError::conflict("duplicate-sku", "SKU already in use", detail)
            }
            StockError::InOrders => {
                ApiError::conflict("product-in-orders", "Product is in orders", detail)
            }
            StockError::InsufficientStock { available, .. } => {
                ApiError::conflict("insufficient-stock", "Not enough stock", detail)
                    .with("available", available)
            }
            StockError::Paging(problem) => problem,
            StockError::Database(e) => ApiError::from(e),
        }
    }
}
