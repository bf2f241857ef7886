//! Catalog and inventory over HTTP: anyone reads, admins write.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{NewProduct, Product, ProductPage, ProductPatch, ProductQuery, StockChange};
use super::store::StockStore;
use crate::error::{ApiError, ApiResult};
use crate::gateway::auth::Admin;
use crate::gateway::extract::{ApiJson, ApiPath, ApiQuery};

pub fn router(store: StockStore) -> OpenApiRouter {
    api().with_state(store)
}

/// The routes and their OpenAPI description, before the state is supplied.
pub fn api() -> OpenApiRouter<StockStore> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
        .routes(routes!(restock))
        .routes(routes!(reduce))
}

/// Lists products, searchable, paged and sorted.
#[utoipa::path(get, path = "/api/products", tag = "catalog", params(ProductQuery),
    responses((status = 200, body = ProductPage), (status = 400, description = "bad paging or sort")))]
async fn list_products(
    State(store): State<StockStore>,
    ApiQuery(query): ApiQuery<ProductQuery>,
) -> ApiResult<Json<ProductPage>> {
    Ok(Json(store.list(&query).await?))
}

/// Shows one product.
#[utoipa::path(get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "product id")),
    responses((status = 200, body = Product), (status = 404, description = "no such product")))]
async fn get_product(
    State(store): State<StockStore>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Product>> {
    store
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("product"))
}

/// Adds a product to the catalog (admin).
#[utoipa::path(post, path = "/api/products", tag = "catalog", request_body = NewProduct,
    security(("bearer" = [])),
    responses((status = 201, body = Product), (status = 409, description = "SKU in use"),
        (status = 401), (status = 403), (status = 422)))]
async fn create_product(
    State(store): State<StockStore>,
    Admin(admin): Admin,
    ApiJson(new): ApiJson<NewProduct>,
) -> ApiResult<impl IntoResponse> {
    let product = store.create(new).await?;
    tracing::info!(target: "audit", admin = %admin.sub, action = "create product", product = %product.id, sku = %product.sku);
    let location = format!("/api/products/{}", product.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(product),
    ))
}

/// Changes a product's details (admin).
#[utoipa::path(patch, path = "/api/products/{id}", tag = "catalog", request_body = ProductPatch,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "product id")),
    responses((status = 200, body = Product), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update_product(
    State(store): State<StockStore>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<ProductPatch>,
) -> ApiResult<Json<Product>> {
    let product = store.update(&id, patch).await?;
    tracing::info!(target: "audit", admin = %admin.sub, action = "update product", product = %id);
    Ok(Json(product))
}

/// Takes a product out of the catalog (admin); one that is in orders stays (409).
#[utoipa::path(delete, path = "/api/products/{id}", tag = "catalog",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "product id")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
async fn delete_product(
    State(store): State<StockStore>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    store.delete(&id).await?;
    tracing::info!(target: "audit", admin = %admin.sub, action = "delete product", product = %id);
    Ok(StatusCode::NO_CONTENT)
}

/// Puts units on the shelf (admin).
#[utoipa::path(post, path = "/api/products/{id}/restock", tag = "catalog",
    request_body = StockChange, security(("bearer" = [])),
    params(("id" = String, Path, description = "product id")),
    responses((status = 200, body = Product), (status = 403), (status = 404), (status = 422)))]
async fn restock(
    State(store): State<StockStore>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<StockChange>,
) -> ApiResult<Json<Product>> {
    let product = store.restock(&id, change.quantity.get()).await?;
    tracing::info!(target: "audit", admin = %admin.sub, action = "restock", product = %id,
        quantity = change.quantity.get());
    Ok(Json(product))
}

/// Takes units off the shelf (admin); reserved units cannot be removed.
#[utoipa::path(post, path = "/api/products/{id}/reduce", tag = "catalog",
    request_body = StockChange, security(("bearer" = [])),
    params(("id" = String, Path, description = "product id")),
    responses((status = 200, body = Product), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn reduce(
    State(store): State<StockStore>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<StockChange>,
) -> ApiResult<Json<Product>> {
    let product = store.reduce(&id, change.quantity.get()).await?;
    tracing::info!(target: "audit", admin = %admin.sub, action = "reduce", product = %id,
        quantity = change.quantity.get());
    Ok(Json(product))
}
