//! Journey benchmark: how fast the click-stream lands in the user module's store, and how
//! long a journey's PDF takes to draw.
//!
//! - ingest: 64 tasks record page views through the frontend's [`Recorder`], which batches
//!   them onto the in-process bus; the user module's consumer stores them (SQLite, WAL,
//!   `synchronous = FULL`). Timed from the first record to the last row stored. The baseline,
//!   in the same run, writes the same rows straight into a fresh store in batches of 1,000
//!   (no recorder, no bus, no event encoding), so the ratio is what the path costs.
//! - pdf: renders journeys of 1, 100 and 1,000 steps; the 1-step journey is the fixed cost
//!   the others are compared with.
//!
//! Run: `bash bench/journey.sh` or `cargo bench --bench journey -- --help`. Prints a table
//! and writes `bench/out/journey.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ekart::app::Databases;
use ekart::bus::memory::MemoryBus;
use ekart::bus::Bus;
use ekart::config::Settings;
use ekart::db::Db;
use ekart::modules::frontend::events::{JourneyStep, PAGE_VIEWED};
use ekart::modules::frontend::Recorder;
use ekart::modules::user::journey::{self, Step};
use ekart::modules::user::pdf;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Journey benchmark: click-stream ingestion and PDF rendering")]
struct Args {
    /// Journey events to ingest, per target.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 200_000)]
    events: usize,
    /// Concurrent recording tasks (shoppers' beacons arriving at once).
    #[arg(long, env = "BENCH_SENDERS", default_value_t = 64)]
    senders: usize,
    /// Renders per journey size; the median is reported.
    #[arg(long, env = "BENCH_RENDERS", default_value_t = 15)]
    renders: usize,
    #[arg(long, env = "BENCH_OUT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/journey.json"))]
    out: std::path::PathBuf,
}

async fn users_db() -> anyhow::Result<(tempfile::TempDir, Db)> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::default();
    settings.database.url = format!("sqlite://{}/", dir.path().display());
    let dbs = Databases::open(&settings).await?;
    Ok((dir, dbs.users))
}

async fn stored(db: &Db) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM journey_steps")
        .fetch_one(&db.read)
        .await?)
}

fn step(sender: usize, i: usize) -> JourneyStep {
    JourneyStep {
        session_id: format!("session-{sender}"),
        user_id: format!("dev|shopper{sender}@example.com"),
        at_ms: 1_800_000_000_000 + i as i64,
        name: format!("/products/{i}"),
        label: "Product".into(),
        detail: None,
    }
}

/// Events per second through recorder → bus → consumer → store.
async fn ingest_through_the_bus(args: &Args) -> anyhow::Result<f64> {
    let (_dir, db) = users_db().await?;
    let bus: Arc<dyn Bus> = MemoryBus::new();
    ekart::modules::user::spawn_journey_consumer(
        &bus,
        db.clone(),
        ekart::config::Knob::new(u32::MAX.into()),
    );
    let recorder = Recorder::start(bus);
    let per_sender = args.events / args.senders;
    let total = (per_sender * args.senders) as i64;
    let started = Instant::now();
    let senders: Vec<_> = (0..args.senders)
        .map(|s| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for i in 0..per_sender {
                    recorder.record(PAGE_VIEWED, step(s, i)).await;
                }
            })
        })
        .collect();
    for s in senders {
        s.await?;
    }
    while stored(&db).await? < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Events per second written straight into the store, 1,000 rows per transaction.
async fn ingest_baseline(args: &Args) -> anyhow::Result<f64> {
    let (_dir, db) = users_db().await?;
    let per_sender = args.events / args.senders;
    let rows: Vec<Step> = (0..args.senders)
        .flat_map(|s| (0..per_sender).map(move |i| (s, i)))
        .map(|(s, i)| {
            let j = step(s, i);
            Step {
                event_id: uuid::Uuid::now_v7().to_string(),
                session_id: j.session_id,
                at: j.at_ms,
                kind: "page".into(),
                name: j.name,
                label: j.label,
                detail: j.detail,
                amount_minor: None,
                currency: None,
            }
        })
        .collect();
    let total = rows.len() as f64;
    let started = Instant::now();
    for chunk in rows.chunks(1000) {
        let chunk = chunk.to_vec();
        db.write(move |uow| Box::pin(async move { journey::append(uow, &chunk).await }))
            .await?;
    }
    Ok(total / started.elapsed().as_secs_f64())
}

fn journey_doc(steps: usize) -> pdf::JourneyDoc {
    let kinds = [
        pdf::StepKind::Page,
        pdf::StepKind::Action,
        pdf::StepKind::Cart,
        pdf::StepKind::Checkout,
        pdf::StepKind::OrderCompleted,
    ];
    pdf::JourneyDoc {
        shopper_name: "Asha Rao".into(),
        shopper_email: "asha@example.com".into(),
        session_id: "01a20f2b-bc56-705e-9bc7-33494ee3522a".into(),
        started_at_ms: 1_800_000_000_000,
        ended_at_ms: 1_800_000_000_000 + steps as i64 * 4_000,
        steps: (0..steps)
            .map(|i| pdf::Step {
                at_ms: 1_800_000_000_000 + i as i64 * 4_000,
                kind: kinds[i % kinds.len()],
                label: format!("Step {i}: Catalog"),
                detail: Some(format!("/products/{i}?q=tea")),
            })
            .collect(),
        summary: pdf::Summary {
            pages_visited: steps as u64,
            items_added: 3,
            orders_placed: 1,
            orders_completed: 1,
            spent_minor: 129_900,
            currency: Some("INR".into()),
        },
    }
}

/// Median milliseconds to render a journey of `steps` steps.
fn render_ms(steps: usize, renders: usize) -> anyhow::Result<f64> {
    let doc = journey_doc(steps);
    let mut times: Vec<f64> = (0..renders)
        .map(|_| {
            let started = Instant::now();
            pdf::render(&doc).map(|_| started.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; clap should not see it.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let runtime = tokio::runtime::Runtime::new()?;
    eprintln!(
        "ingesting {} journey events from {} senders, through the bus and then straight in…",
        args.events, args.senders
    );
    let bus_rate = runtime.block_on(ingest_through_the_bus(&args))?;
    let base_rate = runtime.block_on(ingest_baseline(&args))?;
    let (one, hundred, thousand) = (
        render_ms(1, args.renders)?,
        render_ms(100, args.renders)?,
        render_ms(1000, args.renders)?,
    );

    println!();
    println!(
        "{:<34} {:>14} {:>10} {:>10}",
        "measure", "value", "ratio", "target"
    );
    println!(
        "{:<34} {:>14.0} {:>10.2} {:>10}",
        "ingest through the bus, events/s",
        bus_rate,
        bus_rate / base_rate,
        ">= 50000"
    );
    println!(
        "{:<34} {:>14.0} {:>10} {:>10}",
        "ingest straight in (baseline), /s", base_rate, "1.00", ""
    );
    println!(
        "{:<34} {:>14.1} {:>10} {:>10}",
        "pdf, 1 step (baseline), ms", one, "1.00", ""
    );
    println!(
        "{:<34} {:>14.1} {:>10.2} {:>10}",
        "pdf, 100 steps, ms",
        hundred,
        hundred / one,
        "< 50"
    );
    println!(
        "{:<34} {:>14.1} {:>10.2} {:>10}",
        "pdf, 1,000 steps, ms",
        thousand,
        thousand / one,
        "< 300"
    );

    let report = json!({
        "events": args.events,
        "senders": args.senders,
        "ingest_events_per_sec": bus_rate,
        "baseline_events_per_sec": base_rate,
        "ingest_ratio": bus_rate / base_rate,
        "pdf_ms": {"1": one, "100": hundred, "1000": thousand},
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("written to {}", args.out.display());
    Ok(())
}
