//! Load benchmark: the real `ekart` binary against a bare axum + sqlx baseline, in one run.
//!
//! Both servers run on SQLite (WAL, `synchronous = FULL`) as separate processes on this
//! machine, one after the other, so each competes with the load generator for the same cores.
//! The baseline is this very binary re-executed with `--serve-baseline PORT DIR`: the smallest
//! server doing the same SQL, so the ratio shows what ekart's modules, saga and bus cost.
//!
//! Two workloads are driven against each target with the same client code:
//! - catalog: readers fetch `GET /api/products?page=1&per_page=20` in a loop;
//! - checkout: shoppers add one unit to their cart and check out with CASH in a loop; one
//!   operation is the add + checkout pair, and only a `201 Created` checkout counts as done.
//!
//! Run: `bash bench/run.sh [--duration SECS]` or `cargo bench --bench shop -- --help`.
//! Results are printed as a table and written to `bench/out/results.json`. Scratch databases
//! go in a temporary directory (honours `TMPDIR`; on a tmpfs, fsync is free and FULL means
//! nothing, so keep it on a real disk).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

#[path = "support/load.rs"]
mod load;
use load::{add_and_check_out, free_port, send_json, token, transport, Sample};

/// Largest quantity one restock call accepts (ekart's `StockDelta`).
const RESTOCK_MAX: i64 = 1_000_000;
/// Most units ekart lets a product hold (`StockLevel::MAX * 100`).
const ON_HAND_MAX: i64 = 100_000_000;
/// Checkout rate the bench product's stock must outlast. SQLite with an fsync per commit is
/// orders of magnitude below this, so the stock never runs out and never skews a run.
const STOCK_FOR_RATE: f64 = 100_000.0;
const CATALOG_PAGE: &str = "/api/products?page=1&per_page=20";

#[derive(Parser, Debug)]
#[command(about = "Load benchmark: ekart against a bare axum + sqlx baseline")]
struct Args {
    /// Seconds each workload is measured for, per target.
    #[arg(long, env = "BENCH_DURATION_SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load before each measurement (connections, caches, page cache).
    #[arg(long, env = "BENCH_WARMUP_SECS", default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent shoppers in the checkout workload.
    #[arg(long, env = "BENCH_SHOPPERS", default_value_t = 64)]
    shoppers: usize,
    /// Concurrent readers in the catalog workload.
    #[arg(long, env = "BENCH_READERS", default_value_t = 64)]
    readers: usize,
    /// Products in the catalog (the bench product is one of them).
    #[arg(long, env = "BENCH_PRODUCTS", default_value_t = 50)]
    products: usize,
    /// The ekart binary; `cargo bench` builds it into target/release.
    #[arg(long, env = "BENCH_EKART_BIN", default_value = env!("CARGO_BIN_EXE_ekart"))]
    ekart_bin: PathBuf,
    /// Where the JSON results go.
    #[arg(long, env = "BENCH_OUT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/results.json"))]
    out: PathBuf,
    /// Internal: serve the baseline shop on PORT with its database in DIR.
    #[arg(long, hide = true, num_args = 2, value_names = ["PORT", "DIR"])]
    serve_baseline: Option<Vec<String>>,
    /// `cargo bench` appends `--bench` to a harness-less bench's arguments; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(serve) = &args.serve_baseline {
        return baseline::main(&serve[0], Path::new(&serve[1]));
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0)
        || args.shoppers == 0
        || args.readers == 0
        || args.products == 0
        || args.products > 10_000
    {
        eprintln!("shop bench: duration must be positive, warmup not negative, and shoppers, readers and products at least 1 (products at most 10000)");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // A hard ceiling on the whole run: every phase has its own timeouts, but if something still
    // hangs, or on Ctrl-C or SIGTERM, dropping `run` drops the server guards, which kill both
    // servers.
    let phase = args.warmup + args.duration;
    let budget = Duration::from_secs_f64(4.0 * phase + 300.0);
    let outcome = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            r = tokio::time::timeout(budget, run(&args)) => match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("the run took longer than {budget:?}; servers killed")),
            },
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; servers killed")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated; servers killed")),
        }
    });
    // After an abandoned run, leftover workers are cancelled rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ekart,
    Baseline,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ekart => "ekart",
            Target::Baseline => "baseline",
        }
    }
}

#[derive(Serialize)]
struct Report {
    config: RunConfig,
    results: Vec<Row>,
    /// ekart / baseline per workload: below 1 for ops/s and above 1 for latency mean slower.
    ratios: Vec<Ratio>,
}

#[derive(Serialize)]
struct RunConfig {
    duration_secs: f64,
    warmup_secs: f64,
    shoppers: usize,
    readers: usize,
    products: usize,
    bench_product_stock: i64,
    sqlite_synchronous: &'static str,
    cpus: usize,
    data_dir: String,
}

#[derive(Serialize, Clone)]
struct Row {
    workload: &'static str,
    target: &'static str,
    workers: usize,
    seconds: f64,
    ok: u64,
    failed: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Failed operations by kind, e.g. `checkout 202`.
    failures: BTreeMap<String, u64>,
    /// Checkout only: units the bench product lost over the whole phase (warm-up and
    /// drain included), which must be at least `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    units_sold: Option<i64>,
}

#[derive(Serialize)]
struct Ratio {
    workload: &'static str,
    ops_per_sec: f64,
    p50: f64,
    p99: f64,
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        // One idle connection per worker, kept: a reconnect per request would measure the
        // loopback handshake rather than the server.
        .pool_max_idle_per_host(args.shoppers.max(args.readers) + 4)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let scratch = tempfile::Builder::new()
        .prefix("ekart-bench-")
        .tempdir()
        .context("creating the scratch directory")?;
    let stock = bench_stock(args);
    eprintln!(
        "shop bench: {} s (+{} s warm-up) per workload, {} shoppers, {} readers, {} products, data in {}",
        args.duration,
        args.warmup,
        args.shoppers,
        args.readers,
        args.products,
        scratch.path().display()
    );

    let mut rows = Vec::new();
    let mut ekart_shape: Option<Vec<String>> = None;
    for target in [Target::Ekart, Target::Baseline] {
        let dir = scratch.path().join(target.name());
        std::fs::create_dir_all(&dir)?;
        let mut server = Server::start(target, args, &dir)?;
        server.wait_ready(&http).await?;
        eprintln!("{}: ready at {}, setting up", target.name(), server.base);
        let shop = setup(&http, &server.base, args, stock).await?;

        // The same page must come back from both, or the catalog comparison is meaningless.
        let shape = page_shape(&http, &server.base, args.products.min(20)).await?;
        match &ekart_shape {
            None => ekart_shape = Some(shape),
            Some(expected) if *expected != shape => bail!(
                "the baseline's catalog page differs in shape from ekart's:\n  ekart:    {expected:?}\n  baseline: {shape:?}"
            ),
            Some(_) => {}
        }

        eprintln!("{}: catalog workload", target.name());
        rows.push(catalog(&http, &server.base, target, args).await);
        server.check_alive()?;
        eprintln!("{}: checkout workload", target.name());
        rows.push(checkout(&http, &server.base, target, args, &shop, stock).await?);
        server.check_alive()?;
        drop(server);
    }

    let ratios: Vec<Ratio> = ["catalog", "checkout"]
        .into_iter()
        .filter_map(|workload| {
            let of = |t: Target| {
                rows.iter()
                    .find(|r| r.workload == workload && r.target == t.name())
            };
            let (e, b) = (of(Target::Ekart)?, of(Target::Baseline)?);
            Some(Ratio {
                workload,
                ops_per_sec: ratio(e.ops_per_sec, b.ops_per_sec),
                p50: ratio(e.p50_ms, b.p50_ms),
                p99: ratio(e.p99_ms, b.p99_ms),
            })
        })
        .collect();
    print_table(&rows, &ratios);

    let report = Report {
        config: RunConfig {
            duration_secs: args.duration,
            warmup_secs: args.warmup,
            shoppers: args.shoppers,
            readers: args.readers,
            products: args.products,
            bench_product_stock: stock,
            sqlite_synchronous: "FULL",
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            data_dir: scratch.path().display().to_string(),
        },
        results: rows,
        ratios,
    };
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("results: {}", args.out.display());
    Ok(())
}

/// Units the bench product starts with: enough for [`STOCK_FOR_RATE`] checkouts a second over
/// the whole checkout phase, in whole restocks, within ekart's ceiling.
fn bench_stock(args: &Args) -> i64 {
    let wanted = ((args.warmup + args.duration) * STOCK_FOR_RATE).ceil() as i64;
    let restocks = (wanted + RESTOCK_MAX - 1) / RESTOCK_MAX;
    (restocks.max(1) * RESTOCK_MAX).min(ON_HAND_MAX)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn print_table(rows: &[Row], ratios: &[Ratio]) {
    println!();
    println!(
        "{:<9} {:<15} {:>7} {:>10} {:>9} {:>9} {:>8}",
        "workload", "target", "workers", "ops/s", "p50 ms", "p99 ms", "failed"
    );
    for workload in ["catalog", "checkout"] {
        for r in rows.iter().filter(|r| r.workload == workload) {
            println!(
                "{:<9} {:<15} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>8}",
                r.workload, r.target, r.workers, r.ops_per_sec, r.p50_ms, r.p99_ms, r.failed
            );
        }
        if let Some(q) = ratios.iter().find(|q| q.workload == workload) {
            println!(
                "{:<9} {:<15} {:>7} {:>9.3}x {:>8.2}x {:>8.2}x {:>8}",
                workload, "ekart/baseline", "", q.ops_per_sec, q.p50, q.p99, ""
            );
        }
    }
    for r in rows.iter().filter(|r| r.failed > 0) {
        println!("{} {} failures: {:?}", r.target, r.workload, r.failures);
    }
    println!();
}

/// A server process, killed when dropped: on success, on error, on timeout and on Ctrl-C.
struct Server {
    target: Target,
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(target: Target, args: &Args, dir: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let log = dir.join("server.log");
        let stderr = std::fs::File::create(&log)?;
        let mut cmd = match target {
            Target::Ekart => {
                let mut cmd = Command::new(&args.ekart_bin);
                // Settings come from the environment alone, so a stray EKART_* variable in the
                // caller's shell cannot change what is measured: defaults (FULL durability,
                // 8 read connections) except for dev sign-in and an empty catalog.
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("EKART_") {
                        cmd.env_remove(key);
                    }
                }
                cmd.args(["--config", "/nonexistent/ekart.toml", "serve"])
                    .env_remove("RUST_LOG")
                    .env("EKART_SERVER__HOST", "127.0.0.1")
                    .env("EKART_SERVER__PORT", port.to_string())
                    .env(
                        "EKART_DATABASE__URL",
                        format!("sqlite://{}/", dir.display()),
                    )
                    .env("EKART_DATABASE__SQLITE_SYNCHRONOUS", "FULL")
                    .env("EKART_AUTH__MODE", "dev")
                    // The bench measures throughput, not the rate limiter.
                    .env("EKART_LIMITS__ENABLED", "false")
                    .env("EKART_CATALOG__SEED_DEMO", "false")
                    .env("EKART_LOG__LEVEL", "warn");
                cmd
            }
            Target::Baseline => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("--serve-baseline").arg(port.to_string()).arg(dir);
                cmd
            }
        };
        let child = cmd
            .current_dir(dir)
            // The baseline exits when this pipe closes, so even a killed bench leaves no
            // baseline behind; ekart ignores it.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| match target {
                Target::Ekart => format!(
                    "starting {} (build it with `cargo build --release`)",
                    args.ekart_bin.display()
                ),
                Target::Baseline => "starting the baseline server".to_string(),
            })?;
        Ok(Server {
            target,
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            self.check_alive()?;
            let probe = http
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&probe, Ok(res) if res.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{} was not ready within 60 s; its log ends:\n{}",
            self.target.name(),
            self.log_tail()
        )
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.target.name(),
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A port that was free a moment ago. The server binds it right after, so a clash is unlikely
/// and shows up as a server that never gets ready.
/// What a target needs for the workloads.
struct Shop {
    product_id: String,
    /// `Bearer …` header values, one per shopper.
    shoppers: Vec<String>,
}

/// The same catalog, bench product and shoppers on either target, through its API.
async fn setup(
    http: &reqwest::Client,
    base: &str,
    args: &Args,
    stock: i64,
) -> anyhow::Result<Shop> {
    let admin = token(http, base, "bench-admin", "admin").await?;
    let mut product_id = String::new();
    for i in 0..args.products {
        // Zero-padded names so the catalog's name order is the creation order on both targets.
        let new = json!({
            "sku": format!("BENCH-{i:05}"),
            "name": format!("Bench product {i:05}"),
            "description": "A product the load benchmark creates.",
            "price_minor": 10_000 + 100 * i as i64,
            "currency": "INR",
            "quantity": 1000,
        });
        let (status, body) = send_json(
            http.post(format!("{base}/api/products"))
                .header(AUTHORIZATION, &admin)
                .json(&new),
        )
        .await?;
        if status != StatusCode::CREATED {
            bail!("creating a product: {status} {body}");
        }
        if i == 0 {
            product_id = body["id"].as_str().context("product id")?.to_string();
        }
    }
    let mut on_hand = 1000;
    while on_hand < stock {
        let quantity = RESTOCK_MAX.min(stock - on_hand);
        let (status, body) = send_json(
            http.post(format!("{base}/api/products/{product_id}/restock"))
                .header(AUTHORIZATION, &admin)
                .json(&json!({ "quantity": quantity })),
        )
        .await?;
        if status != StatusCode::OK {
            bail!("restocking: {status} {body}");
        }
        on_hand = body["on_hand"].as_i64().context("on_hand")?;
    }
    let mut shoppers = Vec::with_capacity(args.shoppers);
    for i in 0..args.shoppers {
        shoppers.push(token(http, base, &format!("shopper{i}"), "customer").await?);
    }
    Ok(Shop {
        product_id,
        shoppers,
    })
}

/// The catalog page's keys and item count, e.g. `["items.0.available", …, "total"]`.
async fn page_shape(
    http: &reqwest::Client,
    base: &str,
    items: usize,
) -> anyhow::Result<Vec<String>> {
    let (status, page) = send_json(http.get(format!("{base}{CATALOG_PAGE}"))).await?;
    if status != StatusCode::OK {
        bail!("catalog page: {status} {page}");
    }
    let found = page["items"].as_array().map_or(0, Vec::len);
    if found != items {
        bail!("catalog page has {found} items, expected {items}");
    }
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut shape: Vec<String> = keys(&page);
    shape.extend(
        keys(&page["items"][0])
            .into_iter()
            .map(|k| format!("items.0.{k}")),
    );
    shape.sort();
    Ok(shape)
}

async fn catalog(http: &reqwest::Client, base: &str, target: Target, args: &Args) -> Row {
    let url = format!("{base}{CATALOG_PAGE}");
    let http = http.clone();
    let sample = drive(args.readers, args, move |_| {
        let req = http.get(&url);
        async move {
            // The body is read but not parsed: the load generator shares the CPU with the
            // server, and parsing would only add the same client cost to both targets.
            let res = req.send().await.map_err(|e| transport("catalog", &e))?;
            let status = res.status();
            res.bytes().await.map_err(|e| transport("catalog", &e))?;
            if status != StatusCode::OK {
                return Err(format!("catalog {}", status.as_u16()));
            }
            Ok(())
        }
    })
    .await;
    row(sample, "catalog", target, args.readers)
}

async fn checkout(
    http: &reqwest::Client,
    base: &str,
    target: Target,
    args: &Args,
    shop: &Shop,
    stock: i64,
) -> anyhow::Result<Row> {
    let base_url: Arc<str> = base.into();
    let add_body: Arc<str> = json!({ "product_id": shop.product_id, "quantity": 1 })
        .to_string()
        .into();
    let shoppers: Arc<[String]> = shop.shoppers.clone().into();
    let client = http.clone();
    let sample = drive(args.shoppers, args, move |w| {
        let (http, shoppers) = (client.clone(), shoppers.clone());
        let (base, add_body) = (base_url.clone(), add_body.clone());
        async move { add_and_check_out(&http, &base, &shoppers[w], &add_body).await }
    })
    .await;
    let mut row = row(sample, "checkout", target, args.shoppers);

    // A 201 must mean units left the shelf; the bench product is first in name order.
    let (status, page) = send_json(http.get(format!("{base}{CATALOG_PAGE}"))).await?;
    let item = &page["items"][0];
    let available = match item["available"].as_i64() {
        Some(a) if status == StatusCode::OK && item["id"] == shop.product_id.as_str() => a,
        _ => bail!("reading the bench product's stock: {status} {page}"),
    };
    let sold = stock - available;
    if sold < row.ok as i64 {
        bail!(
            "{} answered {} completed checkouts but only {sold} units left the shelf",
            target.name(),
            row.ok
        );
    }
    row.units_sold = Some(sold);
    Ok(row)
}

/// One table row from a workload's sample.
fn row(sample: Sample, workload: &'static str, target: Target, workers: usize) -> Row {
    Row {
        workload,
        target: target.name(),
        workers,
        seconds: sample.seconds,
        ok: sample.ok(),
        failed: sample.failed(),
        ops_per_sec: sample.ops_per_sec(),
        p50_ms: sample.percentile_ms(0.50),
        p99_ms: sample.percentile_ms(0.99),
        failures: sample.failures,
        units_sold: None,
    }
}

/// The same load for every workload: `args`' warm-up, then its measured window.
async fn drive<F, Fut>(workers: usize, args: &Args, op: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (warmup, window) = (
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
    );
    load::drive(workers, warmup, window, op).await
}

/// The smallest server that does the same SQL as ekart's catalog and checkout, on the same
/// SQLite settings: WAL, `synchronous = FULL`, one write connection (ekart serialises writes
/// the same way) and eight read connections (ekart's default). It trusts any bearer token as
/// the user id and has no modules, saga, bus or outbox: that is the overhead being measured.
mod baseline {
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::Duration;

    use axum::extract::{Path as UrlPath, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    };
    use sqlx::Row;

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

    #[derive(Clone)]
    struct Db {
        read: SqlitePool,
        write: SqlitePool,
    }

    pub fn main(port: &str, dir: &Path) -> ExitCode {
        let Ok(port) = port.parse::<u16>() else {
            eprintln!("baseline: bad port {port:?}");
            return ExitCode::from(2);
        };
        // The same runtime ekart's main builds: multi-threaded, a worker per core.
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        match runtime.block_on(serve(port, dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    async fn serve(port: u16, dir: &Path) -> anyhow::Result<()> {
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
            .max_connections(8)
            .connect_with(options)
            .await?;
        let app = Router::new()
            .route("/readyz", get(ready))
            .route("/auth/dev/token", post(token))
            .route("/api/products", get(list).post(create))
            .route("/api/products/{id}/restock", post(restock))
            .route("/api/cart/items", post(add_item))
            .route("/api/checkout", post(checkout))
            .with_state(Db { read, write });
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

    fn product(row: &SqliteRow) -> Result<Product, sqlx::Error> {
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

    /// ekart's default catalog query: a page by name, then the count.
    async fn list(State(db): State<Db>, Query(q): Query<PageQuery>) -> Answer<Json<ProductPage>> {
        let (page, per_page) = (q.page.unwrap_or(1), q.per_page.unwrap_or(20));
        if !(1..=100_000).contains(&page) || !(1..=100).contains(&per_page) {
            return Err(Fail(StatusCode::BAD_REQUEST, "bad paging".into()));
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM products ORDER BY name ASC, id ASC LIMIT ?1 OFFSET ?2"
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

    #[derive(Deserialize)]
    struct NewProduct {
        sku: String,
        name: String,
        description: String,
        price_minor: i64,
        currency: String,
        quantity: i64,
    }

    async fn create(
        State(db): State<Db>,
        Json(new): Json<NewProduct>,
    ) -> Answer<(StatusCode, Json<Product>)> {
        let now = now_ms();
        let row = sqlx::query(&format!(
            "INSERT INTO products ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8) \
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

    #[derive(Deserialize)]
    struct Quantity {
        quantity: i64,
    }

    async fn restock(
        State(db): State<Db>,
        UrlPath(id): UrlPath<String>,
        Json(q): Json<Quantity>,
    ) -> Answer<Json<Product>> {
        let row = sqlx::query(&format!(
            "UPDATE products SET on_hand = on_hand + ?1, updated_at = ?2 WHERE id = ?3 \
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

    #[derive(Deserialize)]
    struct AddItem {
        product_id: String,
        quantity: i64,
    }

    /// One INSERT in a transaction; it takes the name and price from the product row, and
    /// finds no row if there is no such product.
    async fn add_item(
        State(db): State<Db>,
        headers: HeaderMap,
        Json(item): Json<AddItem>,
    ) -> Answer<Json<Value>> {
        let cart = format!("cart:{}", user(&headers)?);
        let mut tx = db.write.begin().await?;
        let quantity: Option<i64> = sqlx::query_scalar(
            "INSERT INTO order_lines (order_id, product_id, name, quantity, unit_price_minor, \
             added_at) SELECT ?1, id, name, ?2, price_minor, ?3 FROM products WHERE id = ?4 \
             ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = quantity + excluded.quantity \
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

    #[derive(Deserialize)]
    struct CheckoutRequest {
        payment_mode: String,
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
            "SELECT product_id, quantity, unit_price_minor FROM order_lines WHERE order_id = ?1",
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
                "UPDATE products SET on_hand = on_hand - ?1, updated_at = ?2 \
                 WHERE id = ?3 AND on_hand >= ?1 RETURNING currency",
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
            "INSERT INTO orders (id, user_id, status, currency, total_minor, payment_method, \
             created_at, updated_at, placed_at, completed_at) \
             VALUES (?1, ?2, 'completed', ?3, ?4, 'CASH', ?5, ?5, ?5, ?5)",
        )
        .bind(&order_id)
        .bind(&user)
        .bind(&currency)
        .bind(total)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE order_lines SET order_id = ?1 WHERE order_id = ?2")
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
}
