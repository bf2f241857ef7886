//! Load benchmark: the real `ekart` binary against a bare axum + sqlx baseline, in one run.
//!
//! Targets, one after the other, each a separate process on this machine competing with the
//! load generator for the same cores:
//! - ekart and the baseline on SQLite (WAL, `synchronous = FULL`);
//! - with `--postgres-url` (`BENCH_POSTGRES_URL`), ekart and the baseline on PostgreSQL, each
//!   on a scratch database of its own, and the server's one-row commit ceiling: connections
//!   each inserting a row (one autocommit statement) in a loop, pgbench style, as many as
//!   there are shoppers (within the server's free connections) and one alone.
//!
//! The baseline is this very binary re-executed with `--serve-baseline PORT DATABASE`
//! (`support/baseline.rs`): the smallest server doing the same SQL, so the ratio shows what
//! ekart's modules, saga and bus cost.
//!
//! Two workloads are driven against each server with the same client code:
//! - catalog: readers fetch `GET /api/products?page=1&per_page=20` in a loop;
//! - checkout: shoppers add one unit to their cart and check out with CASH in a loop; one
//!   operation is the add + checkout pair, and only a `201 Created` checkout counts as done.
//!
//! Run: `bash bench/run.sh [--duration SECS]` or `cargo bench --bench shop -- --help`.
//! Results are printed as a table, with the ratios the project tracks, and written to
//! `bench/out/results.json`. Scratch SQLite databases go in a temporary directory (honours
//! `TMPDIR`; on a tmpfs, fsync is free and FULL means nothing, so keep it on a real disk);
//! scratch PostgreSQL databases are dropped at the end, also after a failure or Ctrl-C.
//!
//! `--callgrind-drive URL PID` is bench/callgrind.sh's client: one shopper against a server
//! running under callgrind, counting only the measured add + checkout pairs.

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
use sqlx::{Connection, Executor, PgConnection};

// Shared with the other benches; this one uses part of it.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
use load::{add_and_check_out, free_port, send_json, token, transport, Sample};

#[path = "support/baseline.rs"]
mod baseline;

// Shared with the scale bench, which also keeps seeded databases.
#[allow(dead_code)]
#[path = "support/scratch.rs"]
mod scratch;
use scratch::PgScratch;

/// Largest quantity one restock call accepts (ekart's `StockDelta`).
const RESTOCK_MAX: i64 = 1_000_000;
/// Most units ekart lets a product hold (`StockLevel::MAX * 100`).
const ON_HAND_MAX: i64 = 100_000_000;
/// Checkout rate the bench product's stock must outlast. SQLite with an fsync per commit is
/// orders of magnitude below this, so the stock never runs out and never skews a run.
const STOCK_FOR_RATE: f64 = 100_000.0;
const CATALOG_PAGE: &str = "/api/products?page=1&per_page=20";
/// Connections the commit ceiling leaves free on the PostgreSQL server for everyone else.
const CEILING_SPARE_CONNECTIONS: i64 = 10;

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
    /// Measure only these targets (comma-separated names: ekart-sqlite, baseline-sqlite,
    /// ekart-postgres, baseline-postgres, pg-ceiling), for quick runs while working on one of
    /// them; ratios whose rows are missing are left out.
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    only: Vec<String>,
    /// Products in the catalog (the bench product is one of them).
    #[arg(long, env = "BENCH_PRODUCTS", default_value_t = 50)]
    products: usize,
    /// A PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/postgres) to measure
    /// ekart, the baseline and the server's commit ceiling on too; each gets a scratch
    /// database, dropped at the end. Unset: the PostgreSQL targets are skipped.
    #[arg(long, env = "BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The ekart binary; `cargo bench` builds it into target/release.
    #[arg(long, env = "BENCH_EKART_BIN", default_value = env!("CARGO_BIN_EXE_ekart"))]
    ekart_bin: PathBuf,
    /// Where the JSON results go.
    #[arg(long, env = "BENCH_OUT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/results.json"))]
    out: PathBuf,
    /// Drive the shop at URL, whose server runs under callgrind as PID, for bench/callgrind.sh:
    /// one shopper's warm-up pairs, `callgrind_control --zero PID`, the measured pairs,
    /// `callgrind_control --dump PID`.
    #[arg(long, num_args = 2, value_names = ["URL", "PID"])]
    callgrind_drive: Option<Vec<String>>,
    /// Unmeasured add + checkout pairs before callgrind's counters are zeroed.
    #[arg(long, env = "BENCH_CALLGRIND_WARMUP", default_value_t = 20)]
    callgrind_warmup: usize,
    /// Add + checkout pairs callgrind counts.
    #[arg(long, env = "BENCH_CALLGRIND_PAIRS", default_value_t = 100)]
    callgrind_pairs: usize,
    /// Internal: serve the baseline shop on PORT over DATABASE (a directory for SQLite, or a
    /// postgres:// URL).
    #[arg(long, hide = true, num_args = 2, value_names = ["PORT", "DATABASE"])]
    serve_baseline: Option<Vec<String>>,
    /// `cargo bench` appends `--bench` to a harness-less bench's arguments; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(serve) = &args.serve_baseline {
        return baseline::main(&serve[0], &serve[1]);
    }
    args.postgres_url = args.postgres_url.filter(|url| !url.is_empty());
    if !(args.duration > 0.0 && args.warmup >= 0.0)
        || args.shoppers == 0
        || args.readers == 0
        || args.products == 0
        || args.products > 10_000
        || args.callgrind_pairs == 0
    {
        eprintln!("shop bench: duration must be positive, warmup not negative, and shoppers, readers, products and callgrind pairs at least 1 (products at most 10000)");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = match &args.callgrind_drive {
        Some(drive) => runtime.block_on(callgrind_drive(&args, &drive[0], &drive[1])),
        None => bench(&runtime, &args),
    };
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

/// The load run under a hard ceiling: every phase has its own timeouts, but if something
/// still hangs, or on Ctrl-C or SIGTERM, dropping `run` drops the server guards, which kill
/// the servers; the scratch PostgreSQL databases are dropped after that, whatever happened.
fn bench(runtime: &tokio::runtime::Runtime, args: &Args) -> anyhow::Result<()> {
    let scratch = args.postgres_url.clone().map(PgScratch::new);
    let phases = 2 * targets(args).len() + if scratch.is_some() { 2 } else { 0 };
    let budget = Duration::from_secs_f64(phases as f64 * (args.warmup + args.duration) + 300.0);
    let outcome = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            r = tokio::time::timeout(budget, run(args, scratch.as_ref())) => match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("the run took longer than {budget:?}; servers killed")),
            },
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; servers killed")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated; servers killed")),
        }
    });
    if let Some(scratch) = &scratch {
        let dropped = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), scratch.drop_all()).await
        });
        if dropped.is_err() {
            eprintln!("shop bench: dropping the scratch PostgreSQL databases timed out");
        }
    }
    outcome
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ekart,
    /// ekart exporting every span (sample ratio 1.0) to a Zipkin receiver in this process.
    EkartTraced,
    Baseline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A server to measure: which one, on which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    kind: Kind,
    engine: Engine,
}

impl Target {
    fn name(self) -> &'static str {
        match (self.kind, self.engine) {
            (Kind::Ekart, Engine::Sqlite) => "ekart-sqlite",
            (Kind::EkartTraced, Engine::Sqlite) => "ekart-sqlite-traced",
            (Kind::Baseline, Engine::Sqlite) => "baseline-sqlite",
            (Kind::Ekart, Engine::Postgres) => "ekart-postgres",
            (Kind::EkartTraced, Engine::Postgres) => "ekart-postgres-traced",
            (Kind::Baseline, Engine::Postgres) => "baseline-postgres",
        }
    }
}

/// The servers this run measures: both on SQLite, and both on PostgreSQL if a server is given.
fn targets(args: &Args) -> Vec<Target> {
    let engines: &[Engine] = match args.postgres_url {
        Some(_) => &[Engine::Sqlite, Engine::Postgres],
        None => &[Engine::Sqlite],
    };
    engines
        .iter()
        .flat_map(|&engine| {
            [Kind::Ekart, Kind::EkartTraced, Kind::Baseline].map(|kind| Target { kind, engine })
        })
        .filter(|t| args.only.is_empty() || args.only.iter().any(|name| name == t.name()))
        .collect()
}

/// The server's commit ceiling rows: as many clients as shoppers (within what the server
/// has free), and one.
const CEILING: &str = "pg-ceiling";
const CEILING_ONE: &str = "pg-ceiling-1conn";

/// A ratio the project tracks: `of`'s ops/s over `to`'s, each a (workload, target) row.
struct Tracked {
    name: &'static str,
    of: (&'static str, &'static str),
    to: (&'static str, &'static str),
    /// The project's goal for the ops/s ratio, if it has one.
    at_least: Option<f64>,
}

const TRACKED: &[Tracked] = &[
    Tracked {
        name: "checkouts: traces exported vs off, SQLite",
        of: ("checkout", "ekart-sqlite-traced"),
        to: ("checkout", "ekart-sqlite"),
        at_least: Some(0.9),
    },
    Tracked {
        name: "checkouts: traces exported vs off, PostgreSQL",
        of: ("checkout", "ekart-postgres-traced"),
        to: ("checkout", "ekart-postgres"),
        at_least: Some(0.9),
    },
    Tracked {
        name: "checkouts: PostgreSQL vs SQLite (ekart)",
        of: ("checkout", "ekart-postgres"),
        to: ("checkout", "ekart-sqlite"),
        at_least: Some(0.5),
    },
    Tracked {
        name: "checkouts: ekart vs baseline, SQLite",
        of: ("checkout", "ekart-sqlite"),
        to: ("checkout", "baseline-sqlite"),
        at_least: Some(1.4),
    },
    Tracked {
        name: "catalog: ekart vs baseline, SQLite",
        of: ("catalog", "ekart-sqlite"),
        to: ("catalog", "baseline-sqlite"),
        at_least: Some(0.9),
    },
    Tracked {
        name: "checkouts: ekart vs baseline, PostgreSQL",
        of: ("checkout", "ekart-postgres"),
        to: ("checkout", "baseline-postgres"),
        at_least: None,
    },
    Tracked {
        name: "catalog: ekart vs baseline, PostgreSQL",
        of: ("catalog", "ekart-postgres"),
        to: ("catalog", "baseline-postgres"),
        at_least: None,
    },
    Tracked {
        name: "ekart-postgres checkouts vs PG commit ceiling",
        of: ("checkout", "ekart-postgres"),
        to: ("commit", CEILING),
        at_least: None,
    },
    Tracked {
        name: "baseline-postgres checkouts vs PG commit ceiling",
        of: ("checkout", "baseline-postgres"),
        to: ("commit", CEILING),
        at_least: None,
    },
];

#[derive(Serialize)]
struct Report {
    config: RunConfig,
    /// The PostgreSQL server's settings that bound its targets; null when they were skipped.
    postgres: Option<PostgresInfo>,
    /// Targets not measured in this run, e.g. the PostgreSQL ones without a server.
    skipped: Vec<&'static str>,
    results: Vec<Row>,
    /// The tracked ratios whose rows were both measured.
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

#[derive(Serialize)]
struct PostgresInfo {
    server_version: String,
    synchronous_commit: String,
    fsync: String,
    max_connections: i64,
    ceiling_clients: usize,
}

#[derive(Serialize, Clone)]
struct Row {
    /// `catalog`, `checkout`, or `commit` (the PostgreSQL ceiling's one-row commits).
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
    name: &'static str,
    /// `workload target`, over…
    of: String,
    /// …`workload target`.
    to: String,
    /// Above 1: `of` did more; for latencies, above 1 means `of` was slower.
    ops_per_sec: f64,
    p50: f64,
    p99: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    goal_at_least: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    goal_met: Option<bool>,
}

/// The Zipkin receiver the traced targets export to: its endpoint, and the spans it got.
static ZIPKIN: std::sync::OnceLock<(String, Arc<std::sync::atomic::AtomicU64>)> =
    std::sync::OnceLock::new();

/// Starts a Zipkin v2 receiver on loopback that counts the spans it is sent. It reads each
/// body as a JSON array without building its spans (`IgnoredAny`): the collector runs on this
/// machine only for the bench, and the shop's cost of tracing is what is measured, not a
/// collector's.
async fn start_span_receiver() -> anyhow::Result<()> {
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = received.clone();
    let app = axum::Router::new().route(
        "/api/v2/spans",
        axum::routing::post(
            move |axum::Json(spans): axum::Json<Vec<serde::de::IgnoredAny>>| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(spans.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    StatusCode::ACCEPTED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}/api/v2/spans", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let _ = ZIPKIN.set((endpoint, received));
    Ok(())
}

async fn run(args: &Args, scratch: Option<&PgScratch>) -> anyhow::Result<()> {
    start_span_receiver().await?;
    let http = reqwest::Client::builder()
        // One idle connection per worker, kept: a reconnect per request would measure the
        // loopback handshake rather than the server.
        .pool_max_idle_per_host(args.shoppers.max(args.readers) + 4)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let dir = tempfile::Builder::new()
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
        dir.path().display()
    );
    let postgres = match scratch {
        Some(scratch) => Some(postgres_info(scratch, args.shoppers).await?),
        None => {
            eprintln!(
                "shop bench: PostgreSQL targets skipped (no --postgres-url / BENCH_POSTGRES_URL)"
            );
            None
        }
    };

    let mut rows = Vec::new();
    let mut expected_shape = None;
    for target in targets(args) {
        let database = match (target.engine, scratch) {
            (Engine::Postgres, Some(scratch)) => {
                Database::Postgres(scratch.create_named(target.name()).await?)
            }
            _ => Database::Sqlite,
        };
        let place = dir.path().join(target.name());
        let measured = measure(target, &place, &database, args, &http, stock).await?;
        // The same page must come back from every target, or comparing them means nothing.
        match &expected_shape {
            None => expected_shape = Some(measured.shape),
            Some(expected) if *expected != measured.shape => bail!(
                "{}'s catalog page differs in shape from the first target's:\n  expected: {expected:?}\n  got:      {:?}",
                target.name(),
                measured.shape
            ),
            Some(_) => {}
        }
        rows.extend(measured.rows);
    }
    let ceiling_wanted = args.only.is_empty() || args.only.iter().any(|n| n == CEILING);
    if let (Some(scratch), Some(info), true) = (scratch, &postgres, ceiling_wanted) {
        let url = scratch.create_named("ceiling").await?;
        rows.push(ceiling(&url, CEILING, info.ceiling_clients, args).await?);
        rows.push(ceiling(&url, CEILING_ONE, 1, args).await?);
    }

    let ratios = tracked_ratios(&rows);
    print_table(&rows, &ratios);
    let skipped = if postgres.is_some() {
        Vec::new()
    } else {
        vec!["ekart-postgres", "baseline-postgres", CEILING, CEILING_ONE]
    };
    if !skipped.is_empty() {
        println!("skipped: {} (set BENCH_POSTGRES_URL)", skipped.join(", "));
    }

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
            data_dir: dir.path().display().to_string(),
        },
        postgres,
        skipped,
        results: rows,
        ratios,
    };
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("results: {}", args.out.display());
    if let Some((_, spans)) = ZIPKIN.get() {
        let spans = spans.load(std::sync::atomic::Ordering::Relaxed);
        println!("spans the Zipkin receiver got from the traced targets: {spans}");
    }
    Ok(())
}

/// Where a target keeps its data.
enum Database {
    /// SQLite files in the target's scratch directory.
    Sqlite,
    /// A scratch PostgreSQL database's URL.
    Postgres(String),
}

/// What one target's run gave.
struct Measured {
    rows: [Row; 2],
    /// The catalog page's shape, which must be the same on every target.
    shape: Vec<String>,
}

/// Starts `target` on `database` (its log, and SQLite's files, in `dir`), sets up the shop and
/// runs both workloads against it.
async fn measure(
    target: Target,
    dir: &Path,
    database: &Database,
    args: &Args,
    http: &reqwest::Client,
    stock: i64,
) -> anyhow::Result<Measured> {
    let mut server = Server::start(target, args, dir, database)?;
    server.wait_ready(http).await?;
    eprintln!("{}: ready at {}, setting up", target.name(), server.base);
    let shop = setup(http, &server.base, args.products, args.shoppers, stock).await?;
    let shape = page_shape(http, &server.base, args.products.min(20)).await?;
    eprintln!("{}: catalog workload", target.name());
    let catalog = catalog(http, &server.base, target, args).await;
    server.check_alive()?;
    eprintln!("{}: checkout workload", target.name());
    let checkout = checkout(http, &server.base, target, args, &shop, stock).await?;
    server.check_alive()?;
    Ok(Measured {
        rows: [catalog, checkout],
        shape,
    })
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

/// Each tracked ratio whose two rows this run has.
fn tracked_ratios(rows: &[Row]) -> Vec<Ratio> {
    let find = |(workload, target): (&str, &str)| {
        rows.iter()
            .find(|r| r.workload == workload && r.target == target)
    };
    TRACKED
        .iter()
        .filter_map(|t| {
            let (a, b) = (find(t.of)?, find(t.to)?);
            let ops_per_sec = ratio(a.ops_per_sec, b.ops_per_sec);
            Some(Ratio {
                name: t.name,
                of: format!("{} {}", t.of.0, t.of.1),
                to: format!("{} {}", t.to.0, t.to.1),
                ops_per_sec,
                p50: ratio(a.p50_ms, b.p50_ms),
                p99: ratio(a.p99_ms, b.p99_ms),
                goal_at_least: t.at_least,
                goal_met: t.at_least.map(|goal| ops_per_sec >= goal),
            })
        })
        .collect()
}

fn print_table(rows: &[Row], ratios: &[Ratio]) {
    println!();
    println!(
        "{:<9} {:<18} {:>7} {:>10} {:>9} {:>9} {:>8}",
        "workload", "target", "workers", "ops/s", "p50 ms", "p99 ms", "failed"
    );
    for r in rows {
        println!(
            "{:<9} {:<18} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>8}",
            r.workload, r.target, r.workers, r.ops_per_sec, r.p50_ms, r.p99_ms, r.failed
        );
    }
    println!();
    println!(
        "{:<50} {:>8} {:>8} {:>8}  goal",
        "ratio (ops/s of / to)", "ops/s", "p50", "p99"
    );
    for q in ratios {
        let goal = match (q.goal_at_least, q.goal_met) {
            (Some(g), Some(true)) => format!(">= {g}x  met"),
            (Some(g), _) => format!(">= {g}x  MISSED"),
            _ => String::new(),
        };
        println!(
            "{:<50} {:>7.3}x {:>7.2}x {:>7.2}x  {goal}",
            q.name, q.ops_per_sec, q.p50, q.p99
        );
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
    fn start(
        target: Target,
        args: &Args,
        dir: &Path,
        database: &Database,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        std::fs::create_dir_all(dir)?;
        let log = dir.join("server.log");
        let stderr = std::fs::File::create(&log)?;
        let mut cmd = match target.kind {
            Kind::Ekart => ekart_command(args, port, dir, database),
            Kind::EkartTraced => {
                let mut cmd = ekart_command(args, port, dir, database);
                let endpoint = ZIPKIN.get().context("the span receiver is not running")?;
                cmd.env("EKART_TELEMETRY__ZIPKIN_ENDPOINT", &endpoint.0);
                cmd
            }
            Kind::Baseline => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("--serve-baseline").arg(port.to_string());
                match database {
                    Database::Sqlite => cmd.arg(dir),
                    Database::Postgres(url) => cmd.arg(url),
                };
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
            .with_context(|| match target.kind {
                Kind::Ekart | Kind::EkartTraced => format!(
                    "starting {} (build it with `cargo build --release`)",
                    args.ekart_bin.display()
                ),
                Kind::Baseline => "starting the baseline server".to_string(),
            })?;
        Ok(Server {
            target,
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let (base, child) = (self.base.clone(), &mut self.child);
        let ready = wait_ready(http, &base, Duration::from_secs(60), || {
            match child.try_wait()? {
                Some(status) => bail!("it exited ({status})"),
                None => Ok(()),
            }
        })
        .await;
        ready.with_context(|| {
            format!(
                "{} did not get ready; its log ends:\n{}",
                self.target.name(),
                self.log_tail()
            )
        })
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

/// ekart's command line. Settings come from the environment alone, so a stray EKART_* variable
/// in the caller's shell cannot change what is measured: defaults (FULL durability on SQLite,
/// 8 connections per module) except for the database, dev sign-in and an empty catalog.
fn ekart_command(args: &Args, port: u16, dir: &Path, database: &Database) -> Command {
    let mut cmd = Command::new(&args.ekart_bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EKART_") {
            cmd.env_remove(key);
        }
    }
    let url = match database {
        Database::Sqlite => format!("sqlite://{}/", dir.display()),
        Database::Postgres(url) => url.clone(),
    };
    cmd.args(["--config", "/nonexistent/ekart.toml", "serve"])
        .env_remove("RUST_LOG")
        .env("EKART_SERVER__HOST", "127.0.0.1")
        .env("EKART_SERVER__PORT", port.to_string())
        .env("EKART_DATABASE__URL", url)
        .env("EKART_DATABASE__SQLITE_SYNCHRONOUS", "FULL")
        .env("EKART_AUTH__MODE", "dev")
        // The bench measures throughput, not the rate limiter.
        .env("EKART_LIMITS__ENABLED", "false")
        .env("EKART_CATALOG__SEED_DEMO", "false")
        .env("EKART_LOG__LEVEL", "warn");
    cmd
}

/// Polls `base`'s `/readyz` until it answers 2xx, `alive` fails, or `within` passes.
async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    within: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        alive()?;
        let probe = http
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if matches!(&probe, Ok(res) if res.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{base} was not ready within {within:?}")
}

/// What a target needs for the workloads.
struct Shop {
    product_id: String,
    /// `Bearer …` header values, one per shopper.
    shoppers: Vec<String>,
}

/// The same catalog, bench product and shoppers on any target, through its API.
async fn setup(
    http: &reqwest::Client,
    base: &str,
    products: usize,
    shoppers: usize,
    stock: i64,
) -> anyhow::Result<Shop> {
    let admin = token(http, base, "bench-admin", "admin").await?;
    let mut product_id = String::new();
    for i in 0..products {
        // Zero-padded names so the catalog's name order is the creation order on all targets.
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
    let mut tokens = Vec::with_capacity(shoppers);
    for i in 0..shoppers {
        tokens.push(token(http, base, &format!("shopper{i}"), "customer").await?);
    }
    Ok(Shop {
        product_id,
        shoppers: tokens,
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
    row(sample, "catalog", target.name(), args.readers)
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
    let add_body: Arc<str> = add_body(shop).into();
    let shoppers: Arc<[String]> = shop.shoppers.clone().into();
    let client = http.clone();
    let sample = drive(args.shoppers, args, move |w| {
        let (http, shoppers) = (client.clone(), shoppers.clone());
        let (base, add_body) = (base_url.clone(), add_body.clone());
        async move { add_and_check_out(&http, &base, &shoppers[w], &add_body).await }
    })
    .await;
    let mut row = row(sample, "checkout", target.name(), args.shoppers);

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

/// The cart request of one checkout operation: one unit of the bench product.
fn add_body(shop: &Shop) -> String {
    json!({ "product_id": shop.product_id, "quantity": 1 }).to_string()
}

/// One table row from a workload's sample.
fn row(sample: Sample, workload: &'static str, target: &'static str, workers: usize) -> Row {
    Row {
        workload,
        target,
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

/// The PostgreSQL server's one-row commit rate from this machine, pgbench style: `clients`
/// connections each inserting one row (an autocommit statement, so one commit and one WAL
/// flush wait) in a closed loop, with `synchronous_commit` as the server has it.
async fn ceiling(
    url: &str,
    name: &'static str,
    clients: usize,
    args: &Args,
) -> anyhow::Result<Row> {
    eprintln!("{name}: {clients} connection(s) committing one row each in a loop");
    let mut admin = PgConnection::connect(url).await?;
    admin
        .execute("CREATE TABLE IF NOT EXISTS commits (worker INT NOT NULL, at BIGINT NOT NULL)")
        .await?;
    admin.close().await?;
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let conn = PgConnection::connect(url).await?;
        connections.push(Arc::new(tokio::sync::Mutex::new(conn)));
    }
    let connections: Arc<[_]> = connections.into();
    let sample = drive(clients, args, move |w| {
        let conn = connections[w].clone();
        async move {
            // Each worker has a connection of its own: the lock is never contended.
            let mut conn = conn.lock().await;
            sqlx::query("INSERT INTO commits (worker, at) VALUES ($1, $2)")
                .bind(w as i32)
                .bind(chrono::Utc::now().timestamp_micros())
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|_| "commit error".to_string())
        }
    })
    .await;
    Ok(row(sample, "commit", name, clients))
}

/// The server's settings that bound the PostgreSQL targets, and how many clients the commit
/// ceiling may open: as many as shoppers, leaving [`CEILING_SPARE_CONNECTIONS`] free.
async fn postgres_info(scratch: &PgScratch, shoppers: usize) -> anyhow::Result<PostgresInfo> {
    let mut conn = scratch.admin().await?;
    let (server_version, synchronous_commit, fsync, max_connections, free): (
        String,
        String,
        String,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit'), \
         current_setting('fsync'), current_setting('max_connections')::bigint, \
         current_setting('max_connections')::bigint \
           - current_setting('superuser_reserved_connections')::bigint \
           - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    let room = (free - CEILING_SPARE_CONNECTIONS).max(1) as usize;
    Ok(PostgresInfo {
        server_version,
        synchronous_commit,
        fsync,
        max_connections,
        ceiling_clients: shoppers.min(room),
    })
}

/// bench/callgrind.sh's client: sets up the shop at `base` (whose server runs under callgrind
/// as `pid`) with one shopper, runs the warm-up pairs, zeroes callgrind's counters, runs the
/// measured pairs and has callgrind dump them. Everything waits generously: under valgrind
/// the server is some fifty times slower.
async fn callgrind_drive(args: &Args, base: &str, pid: &str) -> anyhow::Result<()> {
    let patience = Duration::from_secs(600);
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(patience)
        .build()?;
    wait_ready(&http, base, patience, || Ok(())).await?;
    let pairs = args.callgrind_warmup + args.callgrind_pairs;
    let stock = (pairs as i64).clamp(1000, RESTOCK_MAX);
    eprintln!("callgrind drive: setting up {base}");
    let shop = setup(&http, base, args.products, 1, stock).await?;
    let add = add_body(&shop);
    let (http, auth, add) = (&http, &shop.shoppers[0], &add);
    let run = |n: usize| async move {
        for _ in 0..n {
            add_and_check_out(http, base, auth, add)
                .await
                .map_err(|kind| anyhow::anyhow!("an add + checkout pair failed: {kind}"))?;
        }
        anyhow::Ok(())
    };
    eprintln!("callgrind drive: {} warm-up pairs", args.callgrind_warmup);
    run(args.callgrind_warmup).await?;
    callgrind_control("--zero", pid)?;
    let started = Instant::now();
    run(args.callgrind_pairs).await?;
    let seconds = started.elapsed().as_secs_f64();
    callgrind_control("--dump=checkouts", pid)?;
    eprintln!(
        "callgrind drive: {} measured pairs in {seconds:.1} s",
        args.callgrind_pairs
    );
    Ok(())
}

fn callgrind_control(command: &str, pid: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args([command, pid])
        .stdout(Stdio::null())
        .status()
        .context("running callgrind_control (part of valgrind)")?;
    if !status.success() {
        bail!("callgrind_control {command} {pid}: {status}");
    }
    Ok(())
}
