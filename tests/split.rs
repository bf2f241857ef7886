//! The shop split into three processes of the real binary, on PostgreSQL and Kafka:
//! gateway+frontend+user, order, stock+payment. Checkouts go through the gateway; killing the
//! stock process opens the gateway's breaker (fast 503s naming the module), an order placed
//! meanwhile waits on the bus and completes once stock is back, and the breaker closes again.
//! Needs `TEST_POSTGRES_URL` and `TEST_KAFKA_BROKERS` (both required under `CI=true`).

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use helpers::{kafka_brokers, postgres_url, scratch_postgres, TestApp};
use process::{free_port, Shop};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_and_a_breaker_in_front_of_stock() {
    let (Some(brokers), Some(server)) = (kafka_brokers(), postgres_url()) else {
        return;
    };
    let db = scratch_postgres(&server).await;
    let (gateway_port, order_port, stock_port) = (free_port(), free_port(), free_port());
    let at = |port: u16| vec![format!("http://127.0.0.1:{port}")];
    let env: Vec<(&str, String)> = vec![
        ("EKART_DATABASE__URL", db),
        ("EKART_DATABASE__MAX_CONNECTIONS", "4".into()),
        ("EKART_BUS__KIND", "kafka".into()),
        ("EKART_BUS__KAFKA__BROKERS", list(&brokers)),
        (
            "EKART_BUS__KAFKA__TOPIC_PREFIX",
            format!("t{}-", uuid::Uuid::new_v4().simple()),
        ),
        ("EKART_BUS__KAFKA__PARTITIONS", "2".into()),
        ("EKART_BUS__RELAY_SWEEP_MS", "200".into()),
        (
            "EKART_AUTH__SESSION_SECRET",
            "split-test-secret-that-is-long-enough-0123".into(),
        ),
        ("EKART_CATALOG__SEED_DEMO", "false".into()),
        ("EKART_CHECKOUT__WAIT_MS", "3000".into()),
        ("EKART_GATEWAY__HEALTH_INTERVAL_MS", "250".into()),
        ("EKART_GATEWAY__BREAKER__MINIMUM_CALLS", "3".into()),
        ("EKART_GATEWAY__BREAKER__WINDOW", "10".into()),
        ("EKART_GATEWAY__BREAKER__OPEN_MS", "1000".into()),
        ("EKART_MODULES__STOCK__INSTANCES", list(&at(stock_port))),
        ("EKART_MODULES__PAYMENT__INSTANCES", list(&at(stock_port))),
        ("EKART_MODULES__ORDER__INSTANCES", list(&at(order_port))),
        ("EKART_MODULES__USER__INSTANCES", list(&at(gateway_port))),
    ];
    let mut stock = Shop::start(stock_port, &["--modules", "stock,payment"], &env).await;
    let _order = Shop::start(order_port, &["--modules", "order"], &env).await;
    let gateway = Shop::start(gateway_port, &["--modules", "gateway,frontend,user"], &env).await;
    let shop = TestApp::at(gateway.base.clone());

    // Everything through the gateway: stock's API, the cart (order, which asks stock about the
    // product), checkout (the saga over Kafka between three processes), the journey (user).
    let admin = shop.token("admin", "admin").await;
    let tea = shop.product(&admin, "TEA", 25_000, 10).await;
    let me = shop.token("asha", "customer").await;
    shop.add_to_cart(&me, &tea, 2).await;
    let (status, order) = shop
        .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
        .await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::ACCEPTED,
        "{status} {order}"
    );
    let first = order["id"].as_str().unwrap().to_string();
    shop.eventually(&format!("/api/orders/{first}"), &me, |o| {
        o["status"] == "completed"
    })
    .await;
    let (status, payment) = shop
        .get(&format!("/api/orders/{first}/payment"), Some(&me))
        .await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    shop.add_to_cart(&me, &tea, 1).await;

    // The caller's trace goes on through the gateway into the stock process and back.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = reqwest::Client::new()
        .get(format!("{}/api/products/{tea}", gateway.base))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    let answered = res.headers()["traceresponse"].to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{trace}-")), "{answered}");

    // Sessions are the user module's: the other processes ask it, so a token whose session
    // has ended is refused there too, not only at the gateway.
    let order_cart = format!("http://127.0.0.1:{order_port}/api/cart");
    let direct = |token: String| {
        let url = order_cart.clone();
        async move {
            let res = reqwest::Client::new().get(url).bearer_auth(token).send();
            res.await.unwrap().status()
        }
    };
    assert_eq!(direct(me.clone()).await, StatusCode::OK);
    let gone = shop.token("ravi", "customer").await;
    let (status, _) = shop
        .call(reqwest::Method::POST, "/auth/signout", Some(&gone), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(direct(gone).await, StatusCode::UNAUTHORIZED);

    // Stock (and payment) die.
    stock.kill();
    let http = reqwest::Client::new();
    let products = format!("{}/api/products", gateway.base);
    let mut opened_after = None;
    for call in 1..=50 {
        let res = http.get(&products).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = res.headers().get("retry-after").cloned();
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/module-unavailable", "{problem}");
        assert_eq!(problem["module"], "stock");
        if retry_after.is_some() {
            opened_after = Some(call);
            break;
        }
    }
    let opened_after = opened_after.expect("the breaker opened");
    let mut fast = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let res = http.get(&products).send().await.unwrap();
        fast.push(started.elapsed());
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    fast.sort();
    eprintln!(
        "breaker opened after {opened_after} failed calls; while open: median {:?}, slowest {:?}",
        fast[fast.len() / 2],
        fast[fast.len() - 1]
    );
    // The storefront says so too, as a page, not a crash.
    let page = http.get(format!("{}/", gateway.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);

    // An order placed now waits for stock on the bus.
    let (status, order) = shop
        .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    let second = order["id"].as_str().unwrap().to_string();

    // Stock comes back: the waiting order completes and the breaker closes.
    let _stock = Shop::start(stock_port, &["--modules", "stock,payment"], &env).await;
    let started = Instant::now();
    shop.eventually(&format!("/api/orders/{second}"), &me, |o| {
        o["status"] == "completed"
    })
    .await;
    eprintln!(
        "the waiting order completed {:?} after stock came back",
        started.elapsed()
    );
    let mut closed = false;
    for _ in 0..100 {
        if http.get(&products).send().await.unwrap().status() == StatusCode::OK {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the breaker closed again");
    assert_eq!(shop.settled(&tea).await, (7, 0));
}
