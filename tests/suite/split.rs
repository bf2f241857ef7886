//! The shop split into three processes of the real binary, on PostgreSQL and Kafka:
//! gateway+frontend+user, order, stock+payment. Checkouts go through the gateway; killing the
//! stock process opens the gateway's breaker (fast 503s naming the module), an order placed
//! meanwhile waits on the bus and completes once stock is back, and the breaker closes again.
//! Needs `TEST_POSTGRES_URL` and `TEST_KAFKA_BROKERS` (both required under `CI=true`).

use std::time::{Duration, Instant};

use crate::support::process::{free_port, metrics_at, Shop};
use crate::support::{kafka_brokers, postgres_url, scratch_postgres, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// Where a split shop's modules run: the ports of each one's instances.
pub(crate) struct Layout<'a> {
    pub stock_and_payment: &'a [u16],
    pub order: &'a [u16],
    pub gateway: &'a [u16],
}

/// What every process of a split shop shares: one database, Kafka under a fresh topic
/// prefix with `partitions`, one session key, each module's instances, a quick health check.
pub(crate) fn split_env(
    db: &str,
    brokers: &[String],
    partitions: i32,
    layout: Layout,
) -> Vec<(&'static str, String)> {
    let at = |ports: &[u16]| -> String {
        list(
            &ports
                .iter()
                .map(|port| format!("http://127.0.0.1:{port}"))
                .collect::<Vec<_>>(),
        )
    };
    vec![
        ("EKART_DATABASE__URL", db.to_string()),
        ("EKART_DATABASE__MAX_CONNECTIONS", "4".into()),
        ("EKART_BUS__KIND", "kafka".into()),
        ("EKART_BUS__KAFKA__BROKERS", list(brokers)),
        (
            "EKART_BUS__KAFKA__TOPIC_PREFIX",
            format!("t{}-", uuid::Uuid::new_v4().simple()),
        ),
        ("EKART_BUS__KAFKA__PARTITIONS", partitions.to_string()),
        ("EKART_BUS__RELAY_SWEEP_MS", "200".into()),
        (
            "EKART_AUTH__SESSION_SECRET",
            "split-test-secret-that-is-long-enough-0123".into(),
        ),
        ("EKART_GATEWAY__HEALTH_INTERVAL_MS", "250".into()),
        (
            "EKART_MODULES__STOCK__INSTANCES",
            at(layout.stock_and_payment),
        ),
        (
            "EKART_MODULES__PAYMENT__INSTANCES",
            at(layout.stock_and_payment),
        ),
        ("EKART_MODULES__ORDER__INSTANCES", at(layout.order)),
        ("EKART_MODULES__USER__INSTANCES", at(layout.gateway)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_and_a_breaker_in_front_of_stock() {
    let (Some(brokers), Some(server)) = (kafka_brokers(), postgres_url()) else {
        return;
    };
    let db = scratch_postgres(&server).await;
    let (gateway_port, order_port, stock_port) = (free_port(), free_port(), free_port());
    let layout = Layout {
        stock_and_payment: &[stock_port],
        order: &[order_port],
        gateway: &[gateway_port],
    };
    let mut env = split_env(&db, &brokers, 2, layout);
    env.extend([
        ("EKART_CATALOG__SEED_DEMO", "false".into()),
        ("EKART_CHECKOUT__WAIT_MS", "3000".into()),
        ("EKART_GATEWAY__BREAKER__MINIMUM_CALLS", "3".into()),
        ("EKART_GATEWAY__BREAKER__WINDOW", "10".into()),
        ("EKART_GATEWAY__BREAKER__OPEN_MS", "1000".into()),
    ]);
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

/// The partitions of `topic` that `consumer` reads in the process at `base`, from its
/// `/metrics` (`ekart_partition_owned`).
async fn owned(base: &str, consumer: &str, topic: &str) -> Vec<i32> {
    let text = metrics_at(base).await.unwrap_or_default();
    let mut owned: Vec<i32> = text
        .lines()
        .filter(|line| line.starts_with("ekart_partition_owned{") && line.ends_with(" 1"))
        .filter(|line| line.contains(&format!("consumer=\"{consumer}\"")))
        .filter(|line| line.contains(&format!("topic=\"{topic}\"")))
        .filter_map(|line| {
            let start = line.find("partition=\"")? + "partition=\"".len();
            line[start..].split('"').next()?.parse().ok()
        })
        .collect();
    owned.sort();
    owned
}

/// Waits until the processes at `bases` read disjoint shares of `topic`'s partitions for
/// `consumer` that together cover all `partitions`, each a share of its own when
/// `each_some`; returns the shares.
async fn shares_settle(
    bases: &[&str],
    consumer: &str,
    topic: &str,
    partitions: i32,
    each_some: bool,
) -> Vec<Vec<i32>> {
    let mut shares = vec![];
    for _ in 0..150 {
        shares = vec![];
        for base in bases {
            shares.push(owned(base, consumer, topic).await);
        }
        let mut all: Vec<i32> = shares.concat();
        all.sort();
        let covered = all == (0..partitions).collect::<Vec<_>>();
        if covered && (!each_some || shares.iter().all(|s| !s.is_empty())) {
            return shares;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for base in bases {
        let Ok(text) = metrics_at(base).await else {
            eprintln!("{base}: no answer");
            continue;
        };
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("ekart_partition_owned") || l.starts_with("ekart_consumer_group")
            })
            .collect();
        eprintln!("{base}: {ours:#?}");
    }
    panic!("{consumer}'s shares of {topic} never settled: {shares:?}");
}

/// Instances that come and go, on PostgreSQL and Kafka with no partition settings: two order
/// instances and two stock+payment instances share the partitions by lease. Under checkout
/// load one of each is killed (SIGKILL) and not restarted: the survivors take every partition
/// over, every order settles, every unit is counted once and every completed order has one
/// successful payment. Then a new order instance joins and takes a share. The two
/// stock+payment instances start at once on an empty catalog and seed it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_partitions_by_lease_and_take_over_from_the_dead() {
    let (Some(brokers), Some(server)) = (kafka_brokers(), postgres_url()) else {
        return;
    };
    const PARTITIONS: i32 = 4;
    let db = scratch_postgres(&server).await;
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let [gateway_port, order_a, order_b, stock_a, stock_b, order_c] = ports[..] else {
        unreachable!()
    };
    let layout = Layout {
        stock_and_payment: &[stock_a, stock_b],
        order: &[order_a, order_b],
        gateway: &[gateway_port],
    };
    let mut env = split_env(&db, &brokers, PARTITIONS, layout);
    env.push(("EKART_CHECKOUT__WAIT_MS", "2000".into()));
    // Both stock+payment instances at once, on an empty catalog with the demo to seed.
    let mut seeding = env.clone();
    seeding.push(("EKART_CATALOG__SEED_DEMO", "true".into()));
    let stocks = ["--modules", "stock,payment"];
    let mut stock_first = Shop::spawn(stock_a, &stocks, &seeding);
    let stock_second = Shop::spawn(stock_b, &stocks, &seeding);
    stock_first.wait_ready().await;
    stock_second.wait_ready().await;
    env.push(("EKART_CATALOG__SEED_DEMO", "false".into()));
    let mut order_first = Shop::start(order_a, &["--modules", "order"], &env).await;
    let order_second = Shop::start(order_b, &["--modules", "order"], &env).await;
    let gateway = Shop::start(gateway_port, &["--modules", "gateway,frontend,user"], &env).await;
    let shop = TestApp::at(gateway.base.clone());

    let (status, demo) = shop.get("/api/products?per_page=100", None).await;
    assert_eq!(status, StatusCode::OK, "{demo}");
    let skus: Vec<&str> = demo["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    let distinct: std::collections::HashSet<&&str> = skus.iter().collect();
    assert!(!skus.is_empty(), "the demo catalog is seeded");
    assert_eq!(distinct.len(), skus.len(), "seeded once: {skus:?}");
    assert_eq!(demo["total"], skus.len());

    // No partition settings: the instances split every topic they read between them.
    let order_topics = ["ekart.stock", "ekart.payment"];
    for topic in order_topics {
        let shares = shares_settle(
            &[&order_first.base, &order_second.base],
            "order",
            topic,
            PARTITIONS,
            true,
        )
        .await;
        eprintln!("order instances' shares of {topic}: {shares:?}");
    }
    shares_settle(
        &[&stock_first.base, &stock_second.base],
        "stock",
        "ekart.order",
        PARTITIONS,
        true,
    )
    .await;

    let admin = shop.token("admin", "admin").await;
    let initial = 1_000;
    let mut products = vec![];
    for sku in ["LAMP", "MUG", "KITE"] {
        products.push(shop.product(&admin, sku, 10_000, initial).await);
    }

    // Shoppers check out one unit at a time until told to stop. A call that meets an
    // instance as it dies may fail (the gateway retries only what may be repeated); what it
    // placed, if anything, is counted below from the order module's own rows.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut buyers = vec![];
    for n in 0..6 {
        let (base, stop, products) = (gateway.base.clone(), stop.clone(), products.clone());
        let me = shop.token(&format!("buyer{n}"), "customer").await;
        buyers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let call = |path: &str, body: Value| {
                http.post(format!("{base}{path}"))
                    .bearer_auth(&me)
                    .json(&body)
                    .send()
            };
            let mut placed = vec![];
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let product = &products[(n + round) % products.len()];
                let added = call(
                    "/api/cart/items",
                    json!({"product_id": product, "quantity": 1}),
                );
                if !matches!(added.await, Ok(res) if res.status() == StatusCode::OK) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let Ok(res) = call("/api/checkout", json!({"payment_mode": "CASH"})).await else {
                    continue;
                };
                if res.status().is_success() {
                    let order: Value = res.json().await.unwrap();
                    placed.push(order["id"].as_str().unwrap().to_string());
                }
            }
            (me, placed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    order_first.kill();
    stock_first.kill();
    let killed = Instant::now();

    // The survivors read every partition, while the shoppers go on.
    for topic in order_topics {
        shares_settle(&[&order_second.base], "order", topic, PARTITIONS, true).await;
    }
    for consumer in ["stock", "payment"] {
        shares_settle(
            &[&stock_second.base],
            consumer,
            "ekart.order",
            PARTITIONS,
            true,
        )
        .await;
    }
    eprintln!(
        "the survivors read every partition {:?} after the kill",
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut placed = vec![];
    for buyer in buyers {
        placed.push(buyer.await.unwrap());
    }

    // Every order placed settles, within 30 s of the kill.
    let mut total = 0;
    for (me, orders) in &placed {
        for id in orders {
            total += 1;
            let order = loop {
                let (status, order) = shop.get(&format!("/api/orders/{id}"), Some(me)).await;
                assert_eq!(status, StatusCode::OK, "{order}");
                if ["completed", "failed", "cancelled"].contains(&order["status"].as_str().unwrap())
                {
                    break order;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "order {id} still {} 30 s after the kill",
                    order["status"]
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(order["status"], "completed", "{order}");
        }
    }
    assert!(total >= 10, "checkouts ran under load: {total}");
    eprintln!(
        "{total} orders, all settled {:?} after the kill",
        killed.elapsed()
    );

    // Every order in the order module's rows settled too, those whose answer was lost with
    // the killed instance included.
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&db).await.unwrap();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders.orders WHERE status IN ('placed', 'reserved')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "{open} orders still open 30 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every unit counted once: on hand plus sold is what there was, nothing reserved.
    for product in &products {
        let (on_hand, reserved) = shop.settled(product).await;
        assert_eq!(reserved, 0);
        let sold: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(l.quantity), 0)::int8 FROM orders.order_lines l \
             JOIN orders.orders o ON o.id = l.order_id \
             WHERE o.status = 'completed' AND l.product_id = $1",
        )
        .bind(product)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(on_hand + sold, initial, "product {product}");
    }

    // Each completed order has exactly one payment, and it succeeded.
    let completed: Vec<String> =
        sqlx::query_scalar("SELECT id FROM orders.orders WHERE status = 'completed'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let payments: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id, status FROM payment.payments")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for id in &completed {
        let paid: Vec<&(String, String)> = payments.iter().filter(|(o, _)| o == id).collect();
        assert_eq!(paid.len(), 1, "order {id}: {paid:?}");
        assert_eq!(paid[0].1, "succeeded", "order {id}");
    }
    assert!(completed.len() >= total, "{} of {total}", completed.len());

    // A new order instance joins and takes a share from the survivor.
    let order_third = Shop::start(order_c, &["--modules", "order"], &env).await;
    for topic in order_topics {
        let shares = shares_settle(
            &[&order_second.base, &order_third.base],
            "order",
            topic,
            PARTITIONS,
            true,
        )
        .await;
        eprintln!("after a new instance joined, {topic}: {shares:?}");
    }
}
