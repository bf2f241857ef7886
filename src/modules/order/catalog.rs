//! What the order module needs to know about products, asked of the stock module through its
//! public interface, never its tables: a direct call when stock runs in the same process (the
//! adapter is wired in `app.rs`), its HTTP API through the gateway's remote client (breaker
//! included) when it runs elsewhere.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::gateway::remote::{Outbound, Remote};

#[derive(Debug, Deserialize)]
pub struct ProductInfo {
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub available: i64,
}

#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    async fn product(&self, id: &str) -> ApiResult<Option<ProductInfo>>;
}

/// The stock module in another process. While it is down its breaker's 503 reaches the shopper.
pub struct RemoteCatalog(pub Arc<Remote>);

#[async_trait]
impl Catalog for RemoteCatalog {
    async fn product(&self, id: &str) -> ApiResult<Option<ProductInfo>> {
        let answer = self
            .0
            .call(Outbound::get(format!("/api/products/{}", path_segment(id))))
            .await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice(&answer.body)
                .map(Some)
                .map_err(|e| ApiError::internal(format!("stock answered a product badly: {e}"))),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(None),
            status => Err(ApiError::internal(format!(
                "stock answered {status} for product {id}"
            ))),
        }
    }
}

/// Percent-encodes everything but letters, digits, `-`, `_` and `~`, so an id stays one path
/// segment (`.` too: a URL parser reads `..` as a step up).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(super::path_segment("abc-1_2x~"), "abc-1_2x~");
        assert_eq!(super::path_segment("../a b?c"), "%2E%2E%2Fa%20b%3Fc");
    }
}
