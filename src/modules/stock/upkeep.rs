//! Housekeeping the stock module does on its own (on SQLite): keeping the full-text index in one
//! piece (`StockStore::fold_search_index`), so searches read one segment however the catalog
//! was built, by one bulk import or by years of edits.

use std::time::Duration;

use super::StockStore;

/// How often the index is looked at. Folding it rewrites all of it (25–90 s of steps at a
/// million products, by what else the machine was doing), so a shop whose catalog changes all day pays that at most this often;
/// an index already whole costs one statement to find so.
pub const FOLD_EVERY: Duration = Duration::from_secs(10 * 60);

/// Folds the search index a minute after the start (a catalog imported while the shop was
/// down), then every [`FOLD_EVERY`]. Runs until the task is aborted at shutdown.
pub async fn run(store: StockStore) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::time::sleep(wait).await;
        wait = FOLD_EVERY;
        match store.fold_search_index().await {
            Ok(0) => {}
            Ok(steps) => tracing::info!(steps, "folded the catalog's search index"),
            Err(error) => tracing::warn!(%error, "folding the search index failed; next time"),
        }
    }
}
