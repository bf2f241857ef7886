//! Scale benchmark: the shop's lists at 50 rows and at a million, in one run.
//!
//! For each database (SQLite always; PostgreSQL with `--postgres-url`), two shops: one seeded
//! with `--small` products, orders and sessions, one with `--products`, `--orders` and as many
//! sessions as orders. Seeding goes through the modules' own stores in bulk
//! (`StockStore::import`, `OrderStore::import`, `UserStore::import_sessions`) and is timed.
//! Each shop then serves on a random port and `--clients` closed-loop clients read, for
//! `--duration` seconds each: the catalog's first page, a search that hits (one word, and two),
//! a search that misses, a cursor page deep in the catalog, the 5,000th numbered page (what
//! `OFFSET` costs, for comparison), the admin's order search by order number and by shopper,
//! the admin's order list and the journeys list.
//!
//! Run: `bash bench/scale.sh` or `cargo bench --bench scale -- --help`. Prints a table and the
//! tracked ratios; writes `bench/out/scale.json`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Parser;
use ekart::app::{Application, Databases};
use ekart::config::{AuthMode, Settings};
use ekart::gateway::auth::{Identity, Role};
use ekart::modules::order::{OrderStore, PastLine, PastOrder};
use ekart::modules::stock::model::NewProduct;
use ekart::modules::stock::StockStore;
use ekart::modules::user::UserStore;
use serde::Serialize;
use serde_json::json;

/// The shop serves here in this process, so it gets the allocator the `ekart` binary ships
/// with (`src/main.rs`); the clients share it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Shared with the other benches; this one uses part of it.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
use load::{drive, send_json, token, Sample};

#[path = "support/scratch.rs"]
mod scratch;
use scratch::PgScratch;

#[derive(Parser, Debug)]
#[command(about = "Scale benchmark: lists and searches at 50 rows and at a million")]
struct Args {
    /// Products in the large shop.
    #[arg(long, env = "BENCH_PRODUCTS", default_value_t = 1_000_000)]
    products: usize,
    /// Orders (and sessions) in the large shop.
    #[arg(long, env = "BENCH_ORDERS", default_value_t = 1_000_000)]
    orders: usize,
    /// Products, orders and sessions in the small shop.
    #[arg(long, env = "BENCH_SMALL", default_value_t = 50)]
    small: usize,
    /// Concurrent clients per measurement.
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 16)]
    clients: usize,
    /// Seconds measured per request kind.
    #[arg(long, env = "BENCH_DURATION", default_value_t = 5.0)]
    duration: f64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Each request kind's `--duration` is split into this many windows, taken in turn with
    /// the other kinds', so a drift of the machine over the run (caches, a neighbour, the
    /// WAL) weighs on every kind alike and not on whichever ran last.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// A PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/postgres) to measure
    /// too; scratch databases are made on it and dropped at the end.
    #[arg(long, env = "BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    #[arg(long, env = "BENCH_OUT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/scale.json"))]
    out: std::path::PathBuf,
    /// Keeps the seeded shops in this directory (SQLite) and in databases named
    /// `ekart_scale_<products>_<orders>` (PostgreSQL), and reuses them on the next run instead
    /// of seeding again: a million rows take minutes to seed, a changed query seconds to
    /// measure. A kept shop is migrated on start like any upgraded shop.
    #[arg(long, env = "BENCH_KEEP")]
    keep: Option<std::path::PathBuf>,
    /// Measures only the requests whose name contains this text (e.g. `search`).
    #[arg(long, env = "BENCH_ONLY", default_value = "")]
    only: String,
    /// `cargo bench` appends `--bench` to a harness-less bench's arguments; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Shoppers the orders and sessions belong to.
const SHOPPERS: usize = 10_000;

const ADJECTIVES: &[&str] = &[
    "Classic", "Modern", "Rustic", "Compact", "Deluxe", "Vintage", "Sturdy", "Elegant", "Handmade",
    "Folding", "Portable", "Quiet", "Bright", "Slim", "Large", "Tiny", "Woven", "Glazed", "Carved",
    "Polished",
];
const MATERIALS: &[&str] = &[
    "Brass", "Oak", "Linen", "Cotton", "Steel", "Ceramic", "Bamboo", "Walnut", "Wool", "Glass",
];
const NOUNS: &[&str] = &[
    "Lamp", "Chair", "Table", "Kurta", "Mug", "Bowl", "Shelf", "Rug", "Vase", "Basket", "Clock",
    "Mirror", "Bench", "Stool", "Teapot", "Cushion", "Blanket", "Tray", "Jar", "Kettle", "Lantern",
    "Planter", "Sneaker", "Scarf", "Notebook",
];

fn product(i: usize) -> NewProduct {
    let adjective = ADJECTIVES[i % ADJECTIVES.len()];
    let material = MATERIALS[(i / ADJECTIVES.len()) % MATERIALS.len()];
    let noun = NOUNS[(i / 7) % NOUNS.len()];
    serde_json::from_value(json!({
        "sku": format!("SKU-{i:07}"),
        "name": format!("{adjective} {material} {noun} {i}"),
        "description": format!("A {} {} {} from our workshop, number {i}.",
            adjective.to_lowercase(), material.to_lowercase(), noun.to_lowercase()),
        "price_minor": 1000 + (i * 7919 % 500_000) as i64,
        "currency": "INR",
        "quantity": (i % 100) as i64,
    }))
    .expect("a generated product is valid")
}

fn shopper(i: usize) -> String {
    format!("bench|shopper{i}")
}

#[derive(Serialize, serde::Deserialize, Clone)]
struct Seeded {
    products: usize,
    orders: usize,
    sessions: usize,
    products_s: f64,
    orders_s: f64,
    sessions_s: f64,
}

/// Fills a new shop through the modules' stores, in batches of `BATCH` per transaction.
async fn seed(settings: &Settings, products: usize, orders: usize) -> anyhow::Result<Seeded> {
    const BATCH: usize = 10_000;
    let dbs = Databases::open(settings).await?;
    let stock = StockStore::new(dbs.stock.clone());
    let started = Instant::now();
    let mut catalog = Vec::with_capacity(products);
    for from in (0..products).step_by(BATCH) {
        let batch = (from..(from + BATCH).min(products)).map(product).collect();
        let ids = stock
            .import(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        catalog.extend(ids);
    }
    // What the stock module's upkeep does within minutes of an import (`stock::upkeep`).
    stock.fold_search_index().await?;
    let products_s = started.elapsed().as_secs_f64();

    let store = OrderStore::new(dbs.orders.clone());
    let started = Instant::now();
    // A year of orders, oldest first, a minute apart at most.
    let now = ekart::db::now_ms();
    let spacing = (365 * 24 * 3_600_000 / orders.max(1) as i64).min(60_000);
    for from in (0..orders).step_by(BATCH) {
        let batch = (from..(from + BATCH).min(orders))
            .map(|i| {
                let placed_at = now - (orders - i) as i64 * spacing;
                let lines = (0..1 + i % 3)
                    .map(|k| {
                        let p = (i * 31 + k * 17) % products;
                        let line = product(p);
                        PastLine {
                            product_id: catalog[p].clone(),
                            name: line.name,
                            quantity: 1.try_into().unwrap(),
                            unit_price_minor: line.price_minor,
                        }
                    })
                    .collect();
                PastOrder {
                    user_id: shopper(i % SHOPPERS),
                    currency: "INR".to_string().try_into().unwrap(),
                    payment_method: "CASH".into(),
                    placed_at,
                    completed_at: placed_at + 2_000,
                    lines,
                }
            })
            .collect();
        store
            .import(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let orders_s = started.elapsed().as_secs_f64();

    let users = UserStore::new(dbs.users.clone());
    let started = Instant::now();
    let shoppers = (0..SHOPPERS.min(orders.max(1)))
        .map(|i| Identity {
            sub: shopper(i),
            name: format!("Shopper {i}"),
            email: format!("shopper{i}@bench.example.com"),
            role: Role::Customer,
            session: None,
            session_started_at: None,
        })
        .collect::<Vec<_>>();
    let known = shoppers.len();
    let mut shoppers = Some(shoppers);
    for from in (0..orders).step_by(BATCH) {
        let sessions = (from..(from + BATCH).min(orders))
            .map(|i| (shopper(i % known), now - (orders - i) as i64 * spacing))
            .collect();
        users
            .import_sessions(shoppers.take().unwrap_or_default(), sessions)
            .await?;
    }
    let sessions_s = started.elapsed().as_secs_f64();
    for db in dbs.all() {
        if db.backend == ekart::db::Backend::Postgres {
            // What autovacuum does within a minute of a bulk load on a live server: without
            // statistics the planner guesses at a million rows, and without a vacuum's
            // visibility map an index-only read visits the table anyway.
            sqlx::query("VACUUM ANALYZE").execute(&db.read).await?;
        }
        db.close().await;
    }
    Ok(Seeded {
        products,
        orders,
        sessions: orders,
        products_s,
        orders_s,
        sessions_s,
    })
}

#[derive(Serialize, Clone)]
struct Row {
    database: &'static str,
    rows: usize,
    request: &'static str,
    path: String,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

/// Serves the seeded shop and measures each request kind; `uncached`: only the searches,
/// with the search cache off, so each request reads the index (what a query nobody asked
/// lately costs).
async fn measure(
    args: &Args,
    database: &'static str,
    mut settings: Settings,
    rows: usize,
    uncached: bool,
) -> anyhow::Result<Vec<Row>> {
    if uncached {
        settings.catalog.search_cache_pages = 0;
    }
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let admin = token(&http, &base, "bench-admin", "admin").await?;

    let (_, last) =
        send_json(http.get(format!("{base}/api/products?sort=-name&per_page=100"))).await?;
    let items = last["items"].as_array().context("a catalog page")?;
    let deep = items.last().context("a product")?;
    // The bench knows the cursor's shape (db/keyset.rs) so it can start near the end of a
    // million rows without walking there.
    let cursor = URL_SAFE_NO_PAD
        .encode(json!({"s": "products::", "a": [deep["name"], deep["id"]]}).to_string());
    let (_, orders) = send_json(
        http.get(format!("{base}/api/orders?per_page=1"))
            .header("authorization", &admin),
    )
    .await?;
    let order = orders["items"][0]["id"].as_str().context("an order")?;
    let requests: Vec<(&'static str, String, bool)> = vec![
        ("catalog page", "/api/products?per_page=20".into(), false),
        (
            "search hit",
            "/api/products?q=lamp&per_page=20".into(),
            false,
        ),
        (
            "search hit, 2 words",
            "/api/products?q=brass%20lamp&per_page=20".into(),
            false,
        ),
        (
            "search miss",
            "/api/products?q=zzqx&per_page=20".into(),
            false,
        ),
        (
            "deep cursor page",
            format!("/api/products?per_page=20&cursor={cursor}"),
            false,
        ),
        (
            "numbered page 5000",
            "/api/products?per_page=20&page=5000".into(),
            false,
        ),
        (
            "order search, number",
            format!("/api/orders?q={}", &order[..13]),
            true,
        ),
        (
            "order search, shopper",
            "/api/orders?q=shopper123".into(),
            true,
        ),
        ("orders list", "/api/orders?per_page=20".into(), true),
        (
            "journeys list",
            "/api/journeys?all=true&per_page=20".into(),
            true,
        ),
    ];
    let requests: Vec<_> = requests
        .into_iter()
        .filter(|(request, _, _)| request.contains(args.only.as_str()))
        .filter(|(request, _, _)| !uncached || request.starts_with("search"))
        .map(|(request, path, as_admin)| match uncached {
            true => (uncached_name(request), path, as_admin),
            false => (request, path, as_admin),
        })
        .collect();
    let mut samples: Vec<Sample> = requests.iter().map(|_| Sample::default()).collect();
    let rounds = args.rounds.max(1);
    for _ in 0..rounds {
        for ((_, path, as_admin), sample) in requests.iter().zip(&mut samples) {
            // Parsed once: the client's own work per request should not grow with the URL
            // (a cursor is 150 characters, and parsing it each time charged the deep page
            // for the load generator's work, not the shop's).
            let url = Arc::new(reqwest::Url::parse(&format!("{base}{path}"))?);
            let auth = Arc::new(as_admin.then(|| admin.clone()));
            let client = http.clone();
            let window: Sample = drive(
                args.clients,
                Duration::from_secs_f64(args.warmup / rounds as f64),
                Duration::from_secs_f64(args.duration / rounds as f64),
                move |_| {
                    let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
                    async move {
                        let mut req = client.get(url.as_ref().clone());
                        if let Some(auth) = auth.as_ref() {
                            req = req.header("authorization", auth);
                        }
                        let res = req.send().await.map_err(|e| load::transport("get", &e))?;
                        let status = res.status();
                        res.bytes().await.map_err(|e| load::transport("read", &e))?;
                        if status.is_success() {
                            Ok(())
                        } else {
                            Err(format!("get {status}"))
                        }
                    }
                },
            )
            .await;
            sample.merge(window);
        }
    }
    let mut out = vec![];
    for ((request, path, _), sample) in requests.into_iter().zip(samples) {
        let sample = sample.sorted();
        let row = Row {
            database,
            rows,
            request,
            path,
            ops_per_sec: sample.ops_per_sec(),
            p50_ms: sample.percentile_ms(0.50),
            p99_ms: sample.percentile_ms(0.99),
            failed: sample.failed(),
        };
        eprintln!(
            "  {database} {rows:>9} {request:<22} {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms{}",
            row.ops_per_sec,
            row.p50_ms,
            row.p99_ms,
            if row.failed > 0 {
                format!(" ({} failed: {:?})", row.failed, sample.failures)
            } else {
                String::new()
            },
        );
        out.push(row);
    }
    let _ = stop.send(());
    server.await??;
    Ok(out)
}

/// A search's name when it is measured with the cache off.
fn uncached_name(request: &str) -> &'static str {
    match request {
        "search hit" => "search hit, uncached",
        "search hit, 2 words" => "search hit, 2 words, uncached",
        _ => "search miss, uncached",
    }
}

fn settings(url: String) -> Settings {
    let mut s = Settings::default();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    s.database.url = url;
    s.auth.mode = AuthMode::Dev;
    s.limits.enabled = false;
    s.catalog.seed_demo = false;
    s.log.level = "warn".into();
    s
}

#[derive(Serialize)]
struct Ratio {
    database: &'static str,
    what: String,
    value: f64,
    target: String,
    met: bool,
}

fn find<'a>(rows: &'a [Row], database: &str, size: usize, request: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.database == database && r.rows == size && r.request == request)
}

fn ratios(rows: &[Row], args: &Args) -> Vec<Ratio> {
    let mut out = vec![];
    for database in ["sqlite", "postgres"] {
        let large = |request| find(rows, database, args.products, request);
        let small = |request| find(rows, database, args.small, request);
        let (Some(page), Some(page_small)) = (large("catalog page"), small("catalog page")) else {
            continue;
        };
        let mut ratio = |what: String, value: f64, target: &str, met: bool| {
            out.push(Ratio {
                database,
                what,
                value,
                target: target.into(),
                met,
            });
        };
        ratio(
            format!(
                "catalog page at {} vs at {} (throughput)",
                args.products, args.small
            ),
            page.ops_per_sec / page_small.ops_per_sec,
            ">= 0.8",
            page.ops_per_sec / page_small.ops_per_sec >= 0.8,
        );
        for search in ["search hit", "search hit, 2 words", "search miss"] {
            if let Some(s) = large(search) {
                ratio(
                    format!("{search}: p99 ms"),
                    s.p99_ms,
                    "<= 20",
                    s.p99_ms <= 20.0,
                );
                let r = s.ops_per_sec / page.ops_per_sec;
                ratio(
                    format!("{search} vs catalog page (throughput)"),
                    r,
                    ">= 0.5",
                    r >= 0.5,
                );
            }
        }
        for search in [
            "search hit, uncached",
            "search hit, 2 words, uncached",
            "search miss, uncached",
        ] {
            if let Some(s) = large(search) {
                let r = s.ops_per_sec / page.ops_per_sec;
                let what = format!("{search}: p99 ms (throughput {r:.2}× the catalog page's)");
                ratio(what, s.p99_ms, "(none: a query not asked lately)", true);
            }
        }
        if let Some(deep) = large("deep cursor page") {
            let r = deep.ops_per_sec / page.ops_per_sec;
            ratio(
                "deep cursor page vs first page (throughput)".into(),
                r,
                ">= 0.9",
                r >= 0.9,
            );
        }
        for search in ["order search, number", "order search, shopper"] {
            if let Some(s) = large(search) {
                ratio(
                    format!("{search}: p99 ms"),
                    s.p99_ms,
                    "<= 20",
                    s.p99_ms <= 20.0,
                );
            }
        }
        for list in ["orders list", "journeys list"] {
            if let (Some(l), Some(s)) = (large(list), small(list)) {
                let r = l.ops_per_sec / s.ops_per_sec;
                let what = format!(
                    "{list} at {} vs at {} (throughput)",
                    args.orders, args.small
                );
                ratio(what, r, "(no target)", true);
            }
        }
    }
    out
}

#[derive(Serialize)]
struct Report<'a> {
    seeded: Vec<(&'static str, Seeded)>,
    rows: &'a [Row],
    ratios: Vec<Ratio>,
    clients: usize,
    duration_s: f64,
}

async fn run(args: &Args, scratch: Option<&PgScratch>) -> anyhow::Result<()> {
    let mut rows = vec![];
    let mut seeded = vec![];
    let sizes = [(args.small, args.small), (args.products, args.orders)];
    let mut databases = vec!["sqlite"];
    if scratch.is_some() {
        databases.push("postgres");
    }
    for database in databases {
        for (products, orders) in sizes {
            let dir = tempfile::tempdir()?;
            let kept = args
                .keep
                .as_ref()
                .map(|keep| keep.join(format!("{database}-{products}-{orders}")));
            let record = kept.as_ref().map(|kept| kept.join("seeded.json"));
            let reuse = record.as_ref().filter(|record| record.exists());
            let url = match (database, scratch, &kept) {
                ("postgres", Some(scratch), Some(kept)) => {
                    std::fs::create_dir_all(kept)?;
                    let name = format!("ekart_scale_{products}_{orders}");
                    scratch.create_kept(&name, reuse.is_none()).await?
                }
                ("postgres", Some(scratch), None) => scratch.create_named("scale").await?,
                (_, _, Some(kept)) => {
                    if reuse.is_none() && kept.exists() {
                        // A seeding that did not finish: start over.
                        std::fs::remove_dir_all(kept)?;
                    }
                    std::fs::create_dir_all(kept)?;
                    format!("sqlite://{}/", kept.display())
                }
                _ => format!("sqlite://{}/", dir.path().display()),
            };
            let settings = settings(url);
            let s = match reuse {
                Some(record) => {
                    eprintln!("{database}: reusing the shop of {}", record.display());
                    serde_json::from_slice(&std::fs::read(record)?)?
                }
                None => {
                    eprintln!(
                        "{database}: seeding {products} products, {orders} orders and sessions…"
                    );
                    let s = seed(&settings, products, orders).await?;
                    if let Some(record) = &record {
                        std::fs::write(record, serde_json::to_vec(&s)?)?;
                    }
                    s
                }
            };
            eprintln!(
                "{database}: seeded in {:.1} s (products {:.1} s, orders {:.1} s, sessions {:.1} s)",
                s.products_s + s.orders_s + s.sessions_s,
                s.products_s,
                s.orders_s,
                s.sessions_s
            );
            seeded.push((database, s));
            rows.extend(measure(args, database, settings.clone(), products, false).await?);
            if products == args.products {
                rows.extend(measure(args, database, settings, products, true).await?);
            }
        }
    }
    let ratios = ratios(&rows, args);
    println!("\n| database | rows | request | req/s | p50 ms | p99 ms | failed |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            r.database, r.rows, r.request, r.ops_per_sec, r.p50_ms, r.p99_ms, r.failed
        );
    }
    println!("\n| database | seeded | products | orders | sessions |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (database, s) in &seeded {
        println!(
            "| {database} | {} products, {} orders, {} sessions | {:.1} s ({:.0}/s) | {:.1} s ({:.0}/s) | {:.1} s ({:.0}/s) |",
            s.products, s.orders, s.sessions,
            s.products_s, s.products as f64 / s.products_s,
            s.orders_s, s.orders as f64 / s.orders_s,
            s.sessions_s, s.sessions as f64 / s.sessions_s,
        );
    }
    println!("\n| database | measure | value | target | met |");
    println!("| --- | --- | ---: | --- | --- |");
    for r in &ratios {
        println!(
            "| {} | {} | {:.2} | {} | {} |",
            r.database,
            r.what,
            r.value,
            r.target,
            if r.met { "yes" } else { "**no**" }
        );
    }
    let report = Report {
        seeded,
        rows: &rows,
        ratios,
        clients: args.clients,
        duration_s: args.duration,
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    args.postgres_url = args.postgres_url.filter(|url| !url.is_empty());
    if args.small == 0
        || args.products < args.small
        || args.orders < args.small
        || args.clients == 0
    {
        eprintln!("scale bench: small must be at least 1, products and orders at least small, clients at least 1");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scratch = args.postgres_url.clone().map(PgScratch::new);
    let outcome = runtime.block_on(async {
        let outcome = run(&args, scratch.as_ref()).await;
        if let Some(scratch) = &scratch {
            scratch.drop_all().await;
        }
        outcome
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
