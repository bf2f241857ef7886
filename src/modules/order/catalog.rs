//! What the order module needs to know about products, asked of the stock module through its
//! public interface, never its tables.

use async_trait::async_trait;

use crate::modules::stock::StockStore;

pub struct ProductInfo {
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub available: i64,
}

#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    async fn product(&self, id: &str) -> anyhow::Result<Option<ProductInfo>>;
}

/// The stock module in the same process.
#[async_trait]
impl Catalog for StockStore {
    async fn product(&self, id: &str) -> anyhow::Result<Option<ProductInfo>> {
        Ok(self.get(id).await?.map(|p| ProductInfo {
            name: p.name,
            price_minor: p.price_minor,
            currency: p.currency,
            available: p.available,
        }))
    }
}
