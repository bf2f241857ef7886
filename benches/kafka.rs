//! Kafka benchmark: what the Kafka bus and splitting into services cost, each measured against
//! the in-process bus in the same run, all on PostgreSQL.
//!
//! - checkout: shoppers add one unit and check out with CASH in a closed loop through the
//!   public address; only a `201 Created` (the saga finished within the request) counts.
//!   Three layouts of the real binary: everything in one process on the in-process bus (the
//!   baseline); everything in one process on Kafka; three processes on Kafka
//!   (gateway+frontend+user, order, stock+payment) with the gateway routing between them.
//! - journey: senders record page views through the frontend's recorder; the user module's
//!   consumer stores them. Events per second from the first record to the last row stored,
//!   and the lag of probe events sent every 10 ms among the load (recorded → visible in the
//!   store, looked for every 5 ms); on the in-process bus and on Kafka.
//!
//! Needs a PostgreSQL server (`BENCH_POSTGRES_URL`, default the local one) and a
//! Kafka-protocol broker (`BENCH_KAFKA_BROKERS`, e.g. a local tansu). Run:
//! `bash bench/kafka.sh [--duration SECS]`. Prints a table; writes `bench/out/kafka.json`.

// Shared with the other benches; this one uses part of it.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ekart::bus::kafka::KafkaBus;
use ekart::bus::memory::MemoryBus;
use ekart::bus::Bus;
use ekart::config::{BusKind, Settings};
use ekart::modules::frontend::events::{JourneyStep, PAGE_VIEWED};
use ekart::modules::frontend::Recorder;
use load::{add_and_check_out, free_port, send_json, token, Sample};
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Executor};

#[derive(Parser, Debug)]
#[command(about = "Kafka benchmark: checkouts and journeys over Kafka vs the in-process bus")]
struct Args {
    /// Seconds each checkout layout is measured for.
    #[arg(long, env = "BENCH_DURATION_SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load first.
    #[arg(long, env = "BENCH_WARMUP_SECS", default_value_t = 2.0)]
    warmup: f64,
    /// Concurrent shoppers.
    #[arg(long, env = "BENCH_SHOPPERS", default_value_t = 32)]
    shoppers: usize,
    /// Journey events per bus.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 50_000)]
    events: usize,
    /// Concurrent recording tasks.
    #[arg(long, env = "BENCH_SENDERS", default_value_t = 32)]
    senders: usize,
    /// A PostgreSQL server; each layout gets a scratch database on it.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Kafka-protocol brokers, `host:port`.
    #[arg(long, env = "BENCH_KAFKA_BROKERS", default_value = "127.0.0.1:19292")]
    brokers: String,
    /// Partitions per topic (`bus.kafka.partitions`).
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 4)]
    partitions: u32,
    #[arg(long, env = "BENCH_EKART_BIN", default_value = env!("CARGO_BIN_EXE_ekart"))]
    ekart_bin: PathBuf,
    #[arg(long, env = "BENCH_OUT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/kafka.json"))]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    InProcess,
    KafkaOne,
    KafkaThree,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::InProcess => "1 process, in-process bus",
            Layout::KafkaOne => "1 process, Kafka",
            Layout::KafkaThree => "3 processes, Kafka",
        }
    }
}

/// What the bench sends to read each process's `/metrics`.
const METRICS_TOKEN: &str = "the-bench-scraper";

/// Processes of one layout, with their addresses, and their scratch database; the processes
/// are killed when dropped.
struct Processes {
    running: Vec<(Child, String)>,
    database: String,
}

/// The broker requests the processes made so far: fetches that brought records, empty
/// fetches and produces, from each process's `/metrics`.
#[derive(Default, Clone, Copy)]
struct BrokerRequests {
    records: f64,
    empty: f64,
    produces: f64,
}

impl Processes {
    async fn broker_requests(&self, http: &reqwest::Client) -> anyhow::Result<BrokerRequests> {
        let mut sum = BrokerRequests::default();
        for (_, base) in &self.running {
            let text = http
                .get(format!("{base}/metrics"))
                .bearer_auth(METRICS_TOKEN)
                .send()
                .await?
                .text()
                .await?;
            for line in text.lines() {
                let Some((name, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let value: f64 = value.parse().unwrap_or(0.0);
                if name.starts_with("ekart_kafka_produces_total") {
                    sum.produces += value;
                } else if name.starts_with("ekart_kafka_fetches_total") {
                    match name.contains("result=\"empty\"") {
                        true => sum.empty += value,
                        false => sum.records += value,
                    }
                }
            }
        }
        Ok(sum)
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (child, _) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn scratch_database(server: &str) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    let name = format!("ekart_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let (base, _) = server
        .rsplit_once('/')
        .context("postgres url has a database")?;
    Ok(format!("{base}/{name}"))
}

/// Drops a database [`scratch_database`] made, with whatever is still connected to it.
async fn drop_scratch(server: &str, url: &str) -> anyhow::Result<()> {
    let (_, name) = url.rsplit_once('/').context("a database name")?;
    let mut conn = sqlx::AnyConnection::connect(server).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    Ok(())
}

fn topic_prefix() -> String {
    format!("bench{}-", uuid::Uuid::new_v4().simple())
}

/// Starts the layout's processes and answers the public address.
async fn start(
    layout: Layout,
    args: &Args,
    http: &reqwest::Client,
) -> anyhow::Result<(Processes, String)> {
    let database = scratch_database(&args.postgres).await?;
    let ports = [free_port()?, free_port()?, free_port()?];
    let at = |port: u16| format!("[\"http://127.0.0.1:{port}\"]");
    let brokers: Vec<String> = args
        .brokers
        .split(',')
        .map(|b| format!("\"{b}\""))
        .collect();
    let mut env = vec![
        ("EKART_DATABASE__URL", database.clone()),
        ("EKART_AUTH__MODE", "dev".to_string()),
        // The bench measures throughput, not the rate limiter.
        ("EKART_LIMITS__ENABLED", "false".into()),
        (
            "EKART_AUTH__SESSION_SECRET",
            "bench-secret-that-is-long-enough-0123456".into(),
        ),
        ("EKART_CATALOG__SEED_DEMO", "false".into()),
        ("EKART_LOG__LEVEL", "warn".into()),
        ("EKART_SERVER__METRICS_TOKEN", METRICS_TOKEN.into()),
        (
            "EKART_BUS__KAFKA__BROKERS",
            format!("[{}]", brokers.join(",")),
        ),
        ("EKART_BUS__KAFKA__TOPIC_PREFIX", topic_prefix()),
        ("EKART_BUS__KAFKA__PARTITIONS", args.partitions.to_string()),
        ("EKART_MODULES__STOCK__INSTANCES", at(ports[2])),
        ("EKART_MODULES__PAYMENT__INSTANCES", at(ports[2])),
        ("EKART_MODULES__ORDER__INSTANCES", at(ports[1])),
    ];
    env.push((
        "EKART_BUS__KIND",
        match layout {
            Layout::InProcess => "memory",
            _ => "kafka",
        }
        .into(),
    ));
    let groups: Vec<(u16, Option<&str>)> = match layout {
        Layout::KafkaThree => vec![
            (ports[2], Some("stock,payment")),
            (ports[1], Some("order")),
            (ports[0], Some("gateway,frontend,user")),
        ],
        _ => vec![(ports[0], None)],
    };
    let mut processes = Processes {
        running: Vec::new(),
        database: database.clone(),
    };
    for (port, modules) in groups {
        let mut command = Command::new(&args.ekart_bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EKART_") {
                command.env_remove(key);
            }
        }
        command
            .args(["--config", "/nonexistent/ekart.toml", "serve"])
            .env_remove("RUST_LOG")
            .env("EKART_SERVER__PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(modules) = modules {
            command.args(["--modules", modules]);
        }
        let base = format!("http://127.0.0.1:{port}");
        processes.running.push((
            command
                .spawn()
                .with_context(|| format!("starting {}", args.ekart_bin.display()))?,
            base.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http.get(format!("{base}/readyz")).send().await;
            if matches!(&ready, Ok(r) if r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} on port {port} was not ready in 60 s", layout.name());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((processes, format!("http://127.0.0.1:{}", ports[0])))
}

struct CheckoutRow {
    layout: Layout,
    sample: Sample,
    /// Broker requests per checkout, over the warm-up and the measured run.
    per_checkout: BrokerRequests,
}

async fn checkouts(
    layout: Layout,
    args: &Args,
    http: &reqwest::Client,
) -> anyhow::Result<CheckoutRow> {
    let (processes, base) = start(layout, args, http).await?;
    let admin = token(http, &base, "bench-admin", "admin").await?;
    let (status, product) = send_json(
        http.post(format!("{base}/api/products"))
            .header(AUTHORIZATION, &admin)
            .json(
                &json!({"sku": "BENCH", "name": "Bench product", "description": "bench",
                "price_minor": 10_000, "currency": "INR", "quantity": 1_000_000}),
            ),
    )
    .await?;
    if status != StatusCode::CREATED {
        bail!("creating the bench product: {status} {product}");
    }
    let add_body: Arc<str> = json!({"product_id": product["id"], "quantity": 1})
        .to_string()
        .into();
    let mut shoppers = Vec::new();
    for i in 0..args.shoppers {
        shoppers.push(token(http, &base, &format!("shopper{i}"), "customer").await?);
    }
    let shoppers: Arc<[String]> = shoppers.into();
    let base: Arc<str> = base.into();
    let client = http.clone();
    eprintln!("{}: checkouts", layout.name());
    let before = processes.broker_requests(http).await?;
    let started = Instant::now();
    let sample = load::drive(
        args.shoppers,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
        move |w| {
            let (http, shoppers) = (client.clone(), shoppers.clone());
            let (base, add_body) = (base.clone(), add_body.clone());
            async move { add_and_check_out(&http, &base, &shoppers[w], &add_body).await }
        },
    )
    .await;
    let after = processes.broker_requests(http).await?;
    // Checkouts over the whole drive, the warm-up's at the measured rate.
    let checkouts = (sample.ops_per_sec() * started.elapsed().as_secs_f64()).max(1.0);
    let per_checkout = BrokerRequests {
        records: (after.records - before.records) / checkouts,
        empty: (after.empty - before.empty) / checkouts,
        produces: (after.produces - before.produces) / checkouts,
    };
    let database = processes.database.clone();
    drop(processes);
    drop_scratch(&args.postgres, &database).await?;
    Ok(CheckoutRow {
        layout,
        sample,
        per_checkout,
    })
}

struct JourneyRow {
    bus: &'static str,
    events_per_sec: f64,
    lag: Sample,
}

fn step(session: String, i: usize) -> JourneyStep {
    JourneyStep {
        session_id: session,
        user_id: "dev|bench@example.com".into(),
        at_ms: 1_800_000_000_000 + i as i64,
        name: format!("/products/{i}"),
        label: "Product".into(),
        detail: None,
    }
}

/// Journey events through recorder → bus → user module's consumer → PostgreSQL.
async fn journeys(kind: BusKind, args: &Args) -> anyhow::Result<JourneyRow> {
    let mut settings = Settings::default();
    settings.database.url = scratch_database(&args.postgres).await?;
    settings.bus.kind = kind;
    settings.bus.kafka.brokers = args.brokers.split(',').map(str::to_string).collect();
    settings.bus.kafka.topic_prefix = topic_prefix();
    settings.bus.kafka.partitions = args.partitions as i32;
    let db = ekart::bus::outbox::open_database(
        &settings.database,
        "users",
        &ekart::modules::user::MIGRATIONS,
    )
    .await?;
    let bus: Arc<dyn Bus> = match kind {
        BusKind::Memory => MemoryBus::new(),
        BusKind::Kafka => KafkaBus::new(settings.bus.kafka.clone()),
    };
    ekart::modules::user::spawn_journey_consumer(
        &bus,
        db.clone(),
        ekart::config::Knob::new(u32::MAX.into()),
    );
    let recorder = Recorder::start(bus.clone());
    let name = match kind {
        BusKind::Memory => "in-process bus",
        BusKind::Kafka => "Kafka",
    };
    eprintln!("journey over the {name}: {} events", args.events);

    // Probes: every 10 ms one event on a session of its own, among the load; a watcher looks
    // for the outstanding probes' rows every 5 ms and takes each one's lag when it appears.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let outstanding = Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
    let prober = {
        let (recorder, running, outstanding) =
            (recorder.clone(), running.clone(), outstanding.clone());
        tokio::spawn(async move {
            let mut k = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                let session = format!("probe-{k}");
                outstanding
                    .lock()
                    .unwrap()
                    .insert(session.clone(), Instant::now());
                recorder.record(PAGE_VIEWED, step(session, 0)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let watcher = {
        let (db, running, outstanding) = (db.clone(), running.clone(), outstanding.clone());
        tokio::spawn(async move {
            let mut lag = Sample::default();
            loop {
                let waiting: Vec<String> = outstanding.lock().unwrap().keys().cloned().collect();
                if waiting.is_empty() && !running.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(lag);
                }
                if !waiting.is_empty() {
                    // Our own generated names: safe to inline.
                    let list = waiting
                        .iter()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let seen: Vec<String> = sqlx::query_scalar(&format!(
                        "SELECT session_id FROM journey_steps WHERE session_id IN ({list})"
                    ))
                    .fetch_all(&db.read)
                    .await?;
                    let now = Instant::now();
                    let mut outstanding = outstanding.lock().unwrap();
                    for session in seen {
                        if let Some(sent) = outstanding.remove(&session) {
                            lag.latencies_us.push((now - sent).as_micros() as u64);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let per_sender = args.events / args.senders;
    let total = (per_sender * args.senders) as i64;
    let started = Instant::now();
    let senders: Vec<_> = (0..args.senders)
        .map(|s| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for i in 0..per_sender {
                    recorder
                        .record(PAGE_VIEWED, step(format!("session-{s}"), i))
                        .await;
                }
            })
        })
        .collect();
    for s in senders {
        s.await?;
    }
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM journey_steps WHERE session_id LIKE 'session-%'",
        )
        .fetch_one(&db.read)
        .await
    };
    while count().await? < total {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the journey events did not all arrive within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    prober.await?;
    let mut lag = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .context("probe events never arrived")???;
    lag.seconds = seconds;
    drop(recorder);
    drop(db);
    drop_scratch(&args.postgres, &settings.database.url).await?;
    Ok(JourneyRow {
        bus: name,
        events_per_sec: total as f64 / seconds,
        lag: lag.sorted(),
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; clap should not see it.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let runtime = tokio::runtime::Runtime::new()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.shoppers + 4)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (checkout_rows, journey_rows) = runtime.block_on(async {
        let mut checkout_rows = Vec::new();
        for layout in [Layout::InProcess, Layout::KafkaOne, Layout::KafkaThree] {
            checkout_rows.push(checkouts(layout, &args, &http).await?);
        }
        let journey_rows = vec![
            journeys(BusKind::Memory, &args).await?,
            journeys(BusKind::Kafka, &args).await?,
        ];
        Ok::<_, anyhow::Error>((checkout_rows, journey_rows))
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));

    let base = &checkout_rows[0].sample;
    println!();
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>8} {:>9} {:>9} {:>22}",
        "checkouts (add + checkout, CASH)",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "ops ×",
        "p99 ×",
        "broker requests/checkout"
    );
    let mut report_checkouts = Vec::new();
    for row in &checkout_rows {
        let s = &row.sample;
        let (p50, p99) = (s.percentile_ms(0.5), s.percentile_ms(0.99));
        let requests = row.per_checkout;
        println!(
            "{:<40} {:>10.0} {:>9.1} {:>9.1} {:>8} {:>9.2} {:>9.2} {:>22}",
            row.layout.name(),
            s.ops_per_sec(),
            p50,
            p99,
            s.failed(),
            s.ops_per_sec() / base.ops_per_sec(),
            p99 / base.percentile_ms(0.99),
            format!(
                "{:.1} fetch + {:.1} empty + {:.1} produce",
                requests.records, requests.empty, requests.produces
            )
        );
        report_checkouts.push(json!({
            "layout": row.layout.name(), "ops_per_sec": s.ops_per_sec(), "p50_ms": p50,
            "p99_ms": p99, "ok": s.ok(), "failures": s.failures,
            "broker_requests_per_checkout": {"fetch_with_records": requests.records,
                "fetch_empty": requests.empty, "produce": requests.produces},
            "ops_ratio_to_in_process": s.ops_per_sec() / base.ops_per_sec(),
            "p99_ratio_to_in_process": p99 / base.percentile_ms(0.99),
        }));
    }
    println!();
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "journey events, end to end", "events/s", "lag p50", "lag p99", "probes", "ev/s ×", "p99 ×"
    );
    let base = &journey_rows[0];
    let mut report_journeys = Vec::new();
    for row in &journey_rows {
        let (p50, p99) = (row.lag.percentile_ms(0.5), row.lag.percentile_ms(0.99));
        println!(
            "{:<40} {:>10.0} {:>9.1} {:>9.1} {:>8} {:>9.2} {:>9.2}",
            row.bus,
            row.events_per_sec,
            p50,
            p99,
            row.lag.ok(),
            row.events_per_sec / base.events_per_sec,
            p99 / base.lag.percentile_ms(0.99)
        );
        report_journeys.push(json!({
            "bus": row.bus, "events_per_sec": row.events_per_sec, "lag_p50_ms": p50,
            "lag_p99_ms": p99, "probes": row.lag.ok(),
            "events_ratio_to_in_process": row.events_per_sec / base.events_per_sec,
        }));
    }
    let report = json!({
        "config": {"duration_secs": args.duration, "warmup_secs": args.warmup,
            "shoppers": args.shoppers, "events": args.events, "senders": args.senders,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "checkouts": report_checkouts,
        "journeys": report_journeys,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("written to {}", args.out.display());
    Ok(())
}
