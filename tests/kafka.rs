//! The Kafka bus against a real Kafka-protocol broker (tansu, started by `.ci/run`), whose
//! address comes from `TEST_KAFKA_BROKERS` (`host:port`). Under `CI=true` it must be set.
//! Each test uses topics of its own (a fresh topic prefix), so tests never see each other's
//! events.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::time::Duration;

use ekart::app::{Application, Databases};
use ekart::config::{BusKind, KafkaSettings, Settings};
use helpers::{test_settings, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

fn brokers() -> Option<Vec<String>> {
    match std::env::var("TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b.split(',').map(str::to_string).collect()),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("TEST_KAFKA_BROKERS must be set when CI=true")
        }
        _ => {
            eprintln!("TEST_KAFKA_BROKERS is not set: skipping the Kafka tests");
            None
        }
    }
}

fn on_kafka(settings: &mut Settings, brokers: Vec<String>, prefix: &str) {
    settings.bus.kind = BusKind::Kafka;
    settings.bus.relay_sweep_ms = 200;
    settings.bus.kafka = KafkaSettings {
        brokers,
        topic_prefix: prefix.to_string(),
        partitions: 2,
        replication: 1,
    };
}

fn prefix() -> String {
    format!("t{}-", uuid::Uuid::new_v4().simple())
}

async fn checkout_over_kafka(backend: Backend) {
    let Some(brokers) = brokers() else { return };
    let prefix = prefix();
    let Some(app) = TestApp::spawn_with(backend, |s| on_kafka(s, brokers, &prefix)).await else {
        return;
    };
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 25_000, 10).await;
    let me = app.token("asha", "customer").await;

    app.add_to_cart(&me, &tea, 2).await;
    let (status, order) = app
        .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "completed");

    app.add_to_cart(&me, &tea, 1).await;
    let declined = json!({"payment_mode": "CARD",
        "card": {"number": "4000000000000002", "expiry": "12/39", "cvv": "123"}});
    let (status, _) = app.post("/api/checkout", Some(&me), declined).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(app.settled(&tea).await, (8, 0));

    // The journey crosses the bus too.
    let (_, sessions) = app.get("/api/journeys", Some(&me)).await;
    let session = sessions["items"][0]["id"].as_str().unwrap().to_string();
    for _ in 0..200 {
        let (_, journey) = app
            .get(&format!("/api/journeys/{session}"), Some(&me))
            .await;
        if journey["totals"]["orders_placed"] == 2 {
            assert_eq!(journey["totals"]["orders_completed"], 1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the checkout's outcomes never reached the journey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_over_kafka_on_sqlite() {
    checkout_over_kafka(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_over_kafka_on_postgres() {
    checkout_over_kafka(Backend::Postgres).await;
}

/// A shop on `settings`, until the returned sender is dropped or fired.
async fn start(settings: Settings) -> (String, tokio::sync::oneshot::Sender<()>) {
    let app = Application::build(settings).await.expect("the shop starts");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// Where the stock module stands in `ekart.order`, summed over partitions.
async fn stock_position(settings: &Settings) -> i64 {
    let dbs = Databases::open(settings).await.unwrap();
    sqlx::query_scalar::<_, i64>(
        "SELECT COALESCE(SUM(next_offset), 0) FROM consumer_positions \
         WHERE consumer = 'stock' AND topic = 'ekart.order'",
    )
    .fetch_one(&dbs.stock.read)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_resumes_and_a_replay_changes_nothing() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(format!("sqlite://{}/", dir.path().display()));
    on_kafka(&mut settings, brokers, &prefix());
    // Tokens must outlive the restart.
    settings.auth.dev_secret = "kafka-test-secret-that-is-long-enough-42".into();

    let (base, stop) = start(settings.clone()).await;
    let app = TestApp::at(base);
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 25_000, 10).await;
    let me = app.token("asha", "customer").await;
    app.add_to_cart(&me, &tea, 3).await;
    let (status, order) = app
        .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(app.settled(&tea).await, (7, 0));
    drop(stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Move every consumer back to the start of every partition: all is read again.
    let reached = stock_position(&settings).await;
    assert!(reached > 0, "stock stored its position with its effects");
    let dbs = Databases::open(&settings).await.unwrap();
    for db in dbs.all() {
        sqlx::query("UPDATE consumer_positions SET next_offset = 0")
            .execute(&db.read)
            .await
            .unwrap();
    }
    drop(dbs);

    let (base, _stop) = start(settings.clone()).await;
    let app = TestApp::at(base);
    for _ in 0..200 {
        if stock_position(&settings).await >= reached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stock_position(&settings).await >= reached, "the replay ran");
    assert_eq!(app.stock_of(&tea).await, (7, 0), "nothing sold twice");
    let (_, payment) = app
        .get(
            &format!("/api/orders/{}/payment", order["id"].as_str().unwrap()),
            Some(&me),
        )
        .await;
    assert_eq!(payment["status"], "succeeded");

    // And the shop goes on.
    app.add_to_cart(&me, &tea, 1).await;
    let (status, body) = app
        .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.settled(&tea).await, (6, 0));
}

/// Needs no broker: a shop whose broker cannot be reached still starts, serves what needs no
/// bus, keeps the events it causes in its outbox, and says it is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_broker_does_not_stop_the_shop() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        on_kafka(s, vec![address], &prefix());
        s.checkout.wait_ms = 500;
    })
    .await
    .unwrap();
    let (status, health) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        ready["checks"][4],
        json!({"name": "bus", "ok": false}),
        "{ready}"
    );

    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 25_000, 10).await;
    let me = app.token("asha", "customer").await;
    app.add_to_cart(&me, &tea, 1).await;
    // Placed and kept in the outbox: the shopper is told to poll.
    let (status, _, order) = app
        .call_with(
            reqwest::Method::POST,
            "/api/checkout",
            Some(&me),
            Some(json!({"payment_mode": "CASH"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    assert_eq!(order["status"], "placed");
}
