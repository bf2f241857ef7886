//! The smallest server that does the same SQL as ekart's catalog and checkout: the bench's
//! baseline. It trusts any bearer token as the user id and has no modules, saga, bus or
//! outbox: that is the overhead being measured.
//!
//! On SQLite it uses ekart's settings: WAL, `synchronous = FULL`, one write connection (ekart
//! serialises writes the same way) and eight read connections (ekart's default). On
//! PostgreSQL one pool of eight connections serves reads and writes, as each of ekart's
//! modules has there. The SQL is the same text on both (`$n` placeholders); the handlers are
//! written once and compiled per engine by [`handlers!`].

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// ekart's `database.max_connections` default: its read pool per module on SQLite, its one
/// pool per module on PostgreSQL.
const POOL: u32 = 8;

/// ekart's products, orders and order_lines columns. A cart is the user's lines under the
/// order id `cart:<user>` until checkout moves them to the new order, so order_lines has
/// no foreign key to orders here.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS products (
        id TEXT PRIMARY KEY,
        sku TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        price_minor BIGINT NOT NULL CHECK (price_minor > 0),
        currency TEXT NOT NULL,
        on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
        reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS products_name ON products (name);
    CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        currency TEXT,
        total_minor BIGINT NOT NULL DEFAULT 0,
        payment_method TEXT,
        payment_reference TEXT,
        failure_kind TEXT,
        failure_reason TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        placed_at BIGINT,
        completed_at BIGINT,
        cancelled_at BIGINT,
        refunded_at BIGINT
    );
    CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at);
    CREATE TABLE IF NOT EXISTS order_lines (
        order_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        name TEXT NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity > 0 AND quantity <= 1000),
        unit_price_minor BIGINT NOT NULL,
        added_at BIGINT NOT NULL,
        PRIMARY KEY (order_id, product_id)
    );";

const COLUMNS: &str = "id, sku, name, description, price_minor, currency, on_hand, \
                       reserved, created_at, updated_at";

/// Serves the baseline on `port` over `database`: a `postgres://` URL, or a directory for a
/// SQLite file.
pub fn main(port: &str, database: &str) -> ExitCode {
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("baseline: bad port {port:?}");
        return ExitCode::from(2);
    };
    // The same runtime ekart's main builds: multi-threaded, a worker per core.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(serve(port, database)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

async fn serve(port: u16, database: &str) -> anyhow::Result<()> {
    let app = if is_postgres(database) {
        on_postgres::router(on_postgres::connect(database).await?)
    } else {
        on_sqlite::router(on_sqlite::connect(Path::new(database)).await?)
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // The bench holds our stdin open while it lives; when it goes, so do we.
    tokio::spawn(async {
        use tokio::io::AsyncReadExt;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

struct Fail(StatusCode, String);

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Fail {
        Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "detail": self.1 }))).into_response()
    }
}

type Answer<T> = Result<T, Fail>;

fn user(headers: &HeaderMap) -> Answer<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .ok_or_else(|| Fail(StatusCode::UNAUTHORIZED, "sign in".into()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// ekart's product JSON, field for field.
#[derive(Serialize)]
struct Product {
    id: String,
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    on_hand: i64,
    reserved: i64,
    available: i64,
    created_at: String,
    updated_at: String,
}

#[derive(Deserialize)]
struct TokenRequest {
    email: String,
}

async fn token(Json(req): Json<TokenRequest>) -> Json<Value> {
    Json(json!({ "access_token": req.email, "token_type": "Bearer" }))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<u32>,
    per_page: Option<u32>,
}

#[derive(Serialize)]
struct ProductPage {
    items: Vec<Product>,
    page: u32,
    per_page: u32,
    total: i64,
}

#[derive(Deserialize)]
struct NewProduct {
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct Quantity {
    quantity: i64,
}

#[derive(Deserialize)]
struct AddItem {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct CheckoutRequest {
    payment_mode: String,
}

/// The handlers, over the type `Backend` (an `sqlx::Database`) of the module they expand in.
macro_rules! handlers {
    () => {
        use axum::extract::{Path as UrlPath, Query, State};
        use sqlx::{Pool, Row};

        type DbRow = <Backend as sqlx::Database>::Row;

        #[derive(Clone)]
        pub struct Db {
            read: Pool<Backend>,
            write: Pool<Backend>,
        }

        pub fn router(db: Db) -> Router {
            Router::new()
                .route("/readyz", get(ready))
                .route("/auth/dev/token", post(token))
                .route("/api/products", get(list).post(create))
                .route("/api/products/{id}/restock", post(restock))
                .route("/api/cart/items", post(add_item))
                .route("/api/checkout", post(checkout))
                .with_state(db)
        }

        fn product(row: &DbRow) -> Result<Product, sqlx::Error> {
            let on_hand: i64 = row.try_get("on_hand")?;
            let reserved: i64 = row.try_get("reserved")?;
            Ok(Product {
                id: row.try_get("id")?,
                sku: row.try_get("sku")?,
                name: row.try_get("name")?,
                description: row.try_get("description")?,
                price_minor: row.try_get("price_minor")?,
                currency: row.try_get("currency")?,
                on_hand,
                reserved,
                available: on_hand - reserved,
                created_at: rfc3339(row.try_get("created_at")?),
                updated_at: rfc3339(row.try_get("updated_at")?),
            })
        }

        async fn ready(State(db): State<Db>) -> Answer<Json<Value>> {
            sqlx::query("SELECT 1").execute(&db.read).await?;
            Ok(Json(json!({ "status": "ready" })))
        }

        /// ekart's default catalog query: a page by name, then the count.
        async fn list(
            State(db): State<Db>,
            Query(q): Query<PageQuery>,
        ) -> Answer<Json<ProductPage>> {
            let (page, per_page) = (q.page.unwrap_or(1), q.per_page.unwrap_or(20));
            if !(1..=100_000).contains(&page) || !(1..=100).contains(&per_page) {
                return Err(Fail(StatusCode::BAD_REQUEST, "bad paging".into()));
            }
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM products ORDER BY name ASC, id ASC LIMIT $1 OFFSET $2"
            ))
            .bind(per_page as i64)
            .bind((page as i64 - 1) * per_page as i64)
            .fetch_all(&db.read)
            .await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
                .fetch_one(&db.read)
                .await?;
            Ok(Json(ProductPage {
                items: rows.iter().map(product).collect::<Result<_, _>>()?,
                page,
                per_page,
                total,
            }))
        }

        async fn create(
            State(db): State<Db>,
            Json(new): Json<NewProduct>,
        ) -> Answer<(StatusCode, Json<Product>)> {
            let now = now_ms();
            let row = sqlx::query(&format!(
                "INSERT INTO products ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) \
                 RETURNING {COLUMNS}"
            ))
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(new.sku)
            .bind(new.name)
            .bind(new.description)
            .bind(new.price_minor)
            .bind(new.currency)
            .bind(new.quantity)
            .bind(now)
            .fetch_one(&db.write)
            .await?;
            Ok((StatusCode::CREATED, Json(product(&row)?)))
        }

        async fn restock(
            State(db): State<Db>,
            UrlPath(id): UrlPath<String>,
            Json(q): Json<Quantity>,
        ) -> Answer<Json<Product>> {
            let row = sqlx::query(&format!(
                "UPDATE products SET on_hand = on_hand + $1, updated_at = $2 WHERE id = $3 \
                 RETURNING {COLUMNS}"
            ))
            .bind(q.quantity)
            .bind(now_ms())
            .bind(id)
            .fetch_optional(&db.write)
            .await?
            .ok_or_else(|| Fail(StatusCode::NOT_FOUND, "no such product".into()))?;
            Ok(Json(product(&row)?))
        }

        /// One INSERT in a transaction; it takes the name and price from the product row,
        /// and finds no row if there is no such product.
        async fn add_item(
            State(db): State<Db>,
            headers: HeaderMap,
            Json(item): Json<AddItem>,
        ) -> Answer<Json<Value>> {
            let cart = format!("cart:{}", user(&headers)?);
            let mut tx = db.write.begin().await?;
            let quantity: Option<i64> = sqlx::query_scalar(
                "INSERT INTO order_lines (order_id, product_id, name, quantity, \
                 unit_price_minor, added_at) \
                 SELECT $1, id, name, $2, price_minor, $3 FROM products WHERE id = $4 \
                 ON CONFLICT (order_id, product_id) \
                 DO UPDATE SET quantity = order_lines.quantity + excluded.quantity \
                 RETURNING quantity",
            )
            .bind(&cart)
            .bind(item.quantity)
            .bind(now_ms())
            .bind(&item.product_id)
            .fetch_optional(&mut *tx)
            .await?;
            let quantity = quantity.ok_or_else(|| {
                Fail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "there is no such product".into(),
                )
            })?;
            tx.commit().await?;
            Ok(Json(
                json!({ "product_id": item.product_id, "quantity": quantity }),
            ))
        }

        /// One transaction: take each cart line off the shelf if enough is there, record the
        /// order as completed (CASH needs no payment step) and move the lines to it.
        async fn checkout(
            State(db): State<Db>,
            headers: HeaderMap,
            Json(req): Json<CheckoutRequest>,
        ) -> Answer<Response> {
            let user = user(&headers)?;
            if req.payment_mode != "CASH" {
                return Err(Fail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the baseline takes CASH only".into(),
                ));
            }
            let cart = format!("cart:{user}");
            let out_of_stock = || Fail(StatusCode::CONFLICT, "not enough stock".into());
            let now = now_ms();
            let mut tx = db.write.begin().await?;
            let lines: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT product_id, quantity, unit_price_minor FROM order_lines \
                 WHERE order_id = $1",
            )
            .bind(&cart)
            .fetch_all(&mut *tx)
            .await?;
            if lines.is_empty() {
                return Err(Fail(StatusCode::CONFLICT, "the cart is empty".into()));
            }
            let mut currency = String::new();
            for (product_id, quantity, _) in &lines {
                // Dropping `tx` on the early return rolls back what earlier lines took.
                currency = sqlx::query_scalar(
                    "UPDATE products SET on_hand = on_hand - $1, updated_at = $2 \
                     WHERE id = $3 AND on_hand >= $1 RETURNING currency",
                )
                .bind(quantity)
                .bind(now)
                .bind(product_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(out_of_stock)?;
            }
            let total: i64 = lines.iter().map(|(_, q, price)| q * price).sum();
            let order_id = uuid::Uuid::now_v7().to_string();
            sqlx::query(
                "INSERT INTO orders (id, user_id, status, currency, total_minor, \
                 payment_method, created_at, updated_at, placed_at, completed_at) \
                 VALUES ($1, $2, 'completed', $3, $4, 'CASH', $5, $5, $5, $5)",
            )
            .bind(&order_id)
            .bind(&user)
            .bind(&currency)
            .bind(total)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE order_lines SET order_id = $1 WHERE order_id = $2")
                .bind(&order_id)
                .bind(&cart)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let order = json!({
                "id": order_id,
                "status": "completed",
                "currency": currency,
                "total_minor": total,
            });
            Ok((StatusCode::CREATED, Json(order)).into_response())
        }
    };
}

mod on_sqlite {
    use super::*;
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };

    type Backend = sqlx::Sqlite;

    pub async fn connect(dir: &Path) -> anyhow::Result<Db> {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("shop.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(POOL)
            .connect_with(options)
            .await?;
        Ok(Db { read, write })
    }

    handlers!();
}

mod on_postgres {
    use super::*;
    use sqlx::postgres::PgPoolOptions;

    type Backend = sqlx::Postgres;

    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Db {
            read: pool.clone(),
            write: pool,
        })
    }

    handlers!();
}
