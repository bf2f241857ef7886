//! The Kafka bus against a real Kafka-protocol broker (tansu, started by `.ci/run`), whose
//! address comes from `TEST_KAFKA_BROKERS` (`host:port`). Under `CI=true` it must be set.
//! Each test uses topics of its own (a fresh topic prefix), so tests never see each other's
//! events.

use std::time::Duration;

use crate::support::process::free_port;
use crate::support::{
    kafka_brokers as brokers, postgres_url, scratch_postgres, test_settings, Backend, TestApp,
};
use ekart::app::Databases;
use ekart::bus::kafka::partition_of;
use ekart::config::Module;
use ekart::config::{BusKind, KafkaSettings, Settings};
use reqwest::StatusCode;
use serde_json::json;

fn on_kafka(settings: &mut Settings, brokers: Vec<String>, prefix: &str) {
    settings.bus.kind = BusKind::Kafka;
    settings.bus.relay_sweep_ms = 200;
    settings.bus.kafka = KafkaSettings {
        brokers,
        topic_prefix: prefix.to_string(),
        partitions: 2,
        replication: 1,
        instance: 0,
        instances: 1,
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
    settings.auth.session_secret = "kafka-test-secret-that-is-long-enough-42".into();

    let app = TestApp::start(settings.clone()).await;
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 25_000, 10).await;
    let me = app.token("asha", "customer").await;
    app.add_to_cart(&me, &tea, 3).await;
    let (status, order) = app
        .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(app.settled(&tea).await, (7, 0));
    drop(app);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Move every consumer back to the start of every partition: all is read again.
    let reached = stock_position(&settings).await;
    assert!(reached > 0, "stock stored its position with its effects");
    let dbs = Databases::open(&settings).await.unwrap();
    for db in dbs.all() {
        db.write(|uow| {
            Box::pin(async move {
                sqlx::query("UPDATE consumer_positions SET next_offset = 0")
                    .execute(uow.conn())
                    .await
            })
        })
        .await
        .unwrap();
    }
    drop(dbs);

    let app = TestApp::start(settings.clone()).await;
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

/// Two processes run the stock module on one database and split `ekart.order`'s four
/// partitions (instance 0 reads 0 and 2, instance 1 reads 1 and 3). While only instance 0
/// runs, exactly the orders on its partitions complete; once instance 1 starts, the rest do;
/// every unit is reserved and sold once. The gateway balances stock's API over both and keeps
/// calls off the one that is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stock_instances_share_the_partitions() {
    let (Some(brokers), Some(server)) = (brokers(), postgres_url()) else {
        return;
    };
    let url = scratch_postgres(&server).await;
    let prefix = prefix();
    let settings = |run: &[Module], instance: i32| {
        let mut s = test_settings(url.clone());
        on_kafka(&mut s, brokers.clone(), &prefix);
        s.bus.kafka.partitions = 4;
        s.bus.kafka.instance = instance;
        s.bus.kafka.instances = if run == [Module::Stock] { 2 } else { 1 };
        s.auth.session_secret = "kafka-test-secret-that-is-long-enough-42".into();
        s.catalog.seed_demo = false;
        s.modules.run = run.to_vec();
        s.checkout.wait_ms = 1000;
        s.gateway.health_interval_ms = 200;
        s
    };
    let first_shop = TestApp::start(settings(&[Module::Stock], 0)).await;
    let first = first_shop.base.clone();
    let second_port = free_port();
    let second = format!("http://127.0.0.1:{second_port}");
    let mut rest = settings(
        &[
            Module::Gateway,
            Module::Frontend,
            Module::User,
            Module::Order,
            Module::Payment,
        ],
        0,
    );
    rest.modules.stock.instances = vec![first.clone(), second.clone()];
    let shop = TestApp::start(rest).await;

    let admin = shop.token("admin", "admin").await;
    let tea = shop.product(&admin, "TEA", 25_000, 100).await;
    let mut orders = Vec::new();
    for i in 0..12 {
        let me = shop.token(&format!("shopper{i}"), "customer").await;
        shop.add_to_cart(&me, &tea, 1).await;
        let (status, order) = shop
            .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
            .await;
        assert!(status.is_success(), "{status} {order}");
        let id = order["id"].as_str().unwrap().to_string();
        orders.push((id.clone(), partition_of(&id, 4), me));
    }
    let (mine, theirs): (Vec<_>, Vec<_>) = orders.iter().partition(|(_, p, _)| p % 2 == 0);
    assert!(
        !mine.is_empty() && !theirs.is_empty(),
        "orders on both halves"
    );
    for (id, _, me) in &mine {
        shop.eventually(&format!("/api/orders/{id}"), me, |o| {
            o["status"] == "completed"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (id, partition, me) in &theirs {
        let (_, order) = shop.get(&format!("/api/orders/{id}"), Some(me)).await;
        assert_ne!(
            order["status"], "completed",
            "partition {partition} belongs to the instance that is not running"
        );
    }

    let mut late = settings(&[Module::Stock], 1);
    late.server.port = second_port;
    let _second_shop = TestApp::start(late).await;
    for (id, _, me) in &theirs {
        shop.eventually(&format!("/api/orders/{id}"), me, |o| {
            o["status"] == "completed"
        })
        .await;
    }
    assert_eq!(shop.settled(&tea).await, (88, 0), "each unit sold once");
    for base in [first, second] {
        let (status, product) = TestApp::at(base)
            .get(&format!("/api/products/{tea}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{product}");
        assert_eq!(product["on_hand"], 88);
    }
}

/// A broker of this test's own (the shared one must not be restarted under other tests):
/// `tansu` from `PATH`, which `.ci/run` installs.
struct Broker {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Broker {
    fn start(dir: tempfile::TempDir, port: u16) -> Broker {
        let child = Broker::spawn(dir.path(), port);
        Broker { child, dir, port }
    }

    fn spawn(dir: &std::path::Path, port: u16) -> std::process::Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = std::process::Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu is on PATH (cargo install tansu --locked --features libsql,dynostore)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tansu did not listen on {port}");
    }

    /// SIGKILL, then the same store on the same port.
    fn restart_after(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Broker::spawn(self.dir.path(), self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shoppers keep checking out while the broker is killed and started again. Orders placed
/// while it is down wait in the outbox; afterwards every order has ended, on-hand plus sold
/// equals the starting stock for every product, and each completed order was paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_under_load_loses_nothing_and_applies_nothing_twice() {
    // Only where the shared broker's tests run: then tansu is installed too.
    if brokers().is_none() {
        return;
    }
    let port = free_port();
    let broker = Broker::start(tempfile::tempdir().unwrap(), port);
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |s| {
        on_kafka(s, vec![format!("127.0.0.1:{port}")], "");
        s.checkout.wait_ms = 1000;
    })
    .await
    else {
        return;
    };
    let app = std::sync::Arc::new(app);
    let admin = app.token("admin", "admin").await;
    let mut products = Vec::new();
    for sku in ["TEA", "MUG", "PEN"] {
        products.push(app.product(&admin, sku, 10_000, 200).await);
    }
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut shoppers = Vec::new();
    for i in 0..6 {
        let (app, running, products) = (app.clone(), running.clone(), products.clone());
        shoppers.push(tokio::spawn(async move {
            let me = app.token(&format!("shopper{i}"), "customer").await;
            let mut placed = Vec::new();
            let mut waited = 0;
            let mut n = i;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                app.add_to_cart(&me, &products[n % products.len()], 1).await;
                let (status, order) = app
                    .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
                    .await;
                assert!(status.is_success(), "{status} {order}");
                if status == StatusCode::ACCEPTED {
                    waited += 1;
                }
                placed.push(order["id"].as_str().unwrap().to_string());
            }
            (me, placed, waited)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let broker = tokio::task::spawn_blocking(move || {
        let mut broker = broker;
        broker.restart_after(Duration::from_secs(2));
        broker
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);

    let (mut completed, mut total, mut waited) = (0, 0, 0);
    for shopper in shoppers {
        let (me, placed, shopper_waited) = shopper.await.unwrap();
        waited += shopper_waited;
        for id in placed {
            total += 1;
            let order = app
                .eventually(&format!("/api/orders/{id}"), &me, |o| {
                    o["status"] == "completed" || o["status"] == "failed"
                })
                .await;
            if order["status"] == "completed" {
                completed += 1;
                let (_, payment) = app
                    .get(&format!("/api/orders/{id}/payment"), Some(&me))
                    .await;
                assert_eq!(payment["status"], "succeeded", "{payment}");
            }
        }
    }
    assert!(total > 10, "the shoppers kept shopping ({total} orders)");
    assert!(waited > 0, "some checkouts waited for the broker");
    assert_eq!(
        completed, total,
        "CASH orders with stock to spare all complete"
    );
    let mut on_hand = 0;
    for product in &products {
        let (left, reserved) = app.settled(product).await;
        assert_eq!(reserved, 0);
        on_hand += left;
    }
    assert_eq!(
        on_hand + completed,
        600,
        "on hand plus sold is what there was"
    );
    eprintln!(
        "{total} orders across the broker restart ({waited} answered 202 while it was down), \
         all completed once"
    );
    drop(broker);
}
