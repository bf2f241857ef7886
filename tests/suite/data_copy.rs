//! `ekart data copy`: a shop that ran on SQLite, copied into PostgreSQL by the real binary,
//! answers the same on PostgreSQL: every order, payment, refund, journey and stock level.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::process::{free_port, Shop};
use crate::support::{postgres_url, scratch_postgres, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Runs `ekart data copy ARGS`; answers success, stdout and stderr.
fn data_copy(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ekart"))
        .args(["data", "copy"])
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("ekart runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn start(database_url: &str) -> Shop {
    let env = [
        ("EKART_DATABASE__URL", database_url.to_string()),
        // The same key on both sides: the tokens signed on SQLite still work on PostgreSQL,
        // whose copied sessions table says they are live.
        (
            "EKART_AUTH__SESSION_SECRET",
            "data-copy-test-secret-long-enough-0123456".into(),
        ),
        ("EKART_CHECKOUT__WAIT_MS", "15000".into()),
        ("EKART_BUS__RELAY_SWEEP_MS", "200".into()),
    ];
    Shop::start(free_port(), &[], &env).await
}

/// Everything the API shows an admin about the shop's books, arrays sorted by id so that
/// two databases listing ties in different orders still compare equal.
async fn books(app: &TestApp, admin: &str) -> Value {
    let list = |body: Value| {
        let mut items = body["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|item| item["id"].as_str().unwrap_or_default().to_string());
        items
    };
    let (status, orders) = app.get("/api/orders?per_page=100", Some(admin)).await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    let orders = list(orders);
    let mut payments = BTreeMap::new();
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        let (status, payment) = app
            .get(&format!("/api/orders/{id}/payment"), Some(admin))
            .await;
        payments.insert(
            id.to_string(),
            json!({"status": status.as_u16(), "payment": payment}),
        );
    }
    let (_, sessions) = app
        .get("/api/journeys?all=true&per_page=100", Some(admin))
        .await;
    let mut journeys = Vec::new();
    for session in list(sessions) {
        let id = session["id"].as_str().unwrap();
        let (status, journey) = app.get(&format!("/api/journeys/{id}"), Some(admin)).await;
        assert_eq!(status, StatusCode::OK, "{journey}");
        journeys.push(journey);
    }
    let (_, products) = app.get("/api/products?per_page=100", None).await;
    json!({"orders": orders, "payments": payments, "journeys": journeys, "products": list(products)})
}

/// The books once nothing moves any more (sagas, refunds, journeys all written).
async fn settled_books(app: &TestApp, admin: &str) -> Value {
    let mut last = books(app, admin).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = books(app, admin).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the shop never settled: {last}");
}

/// The verification table's row `label`: (sqlite, postgres before, postgres after, verdict).
fn row<'a>(table: &'a str, label: &str) -> (i64, i64, i64, &'a str) {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| words[words.len() - i].parse::<i64>().unwrap();
    (n(4), n(3), n(2), words[words.len() - 1])
}

fn card(number: &str) -> Value {
    json!({"payment_mode": "CARD", "card": {"number": number, "expiry": "12/39", "cvv": "123"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_shop_copied_to_postgres_answers_the_same() {
    let Some(server) = postgres_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/", dir.path().display());

    // A day of trade on SQLite.
    let mut shop = start(&sqlite).await;
    let app = TestApp::at(shop.base.clone());
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 1500, 20).await;
    let lamp = app.product(&admin, "LAMP", 5000, 10).await;
    let asha = app.token("asha", "customer").await;
    let bela = app.token("bela", "customer").await;
    for page in ["/", "/products", "/cart"] {
        let beacon = json!({"type": "page", "path": page, "title": format!("asha at {page}")});
        assert_eq!(app.beacon(&asha, beacon).await, StatusCode::NO_CONTENT);
    }
    let click = json!({"type": "click", "action": "add-to-cart"});
    assert_eq!(app.beacon(&bela, click).await, StatusCode::NO_CONTENT);

    app.add_to_cart(&asha, &tea, 2).await;
    let (status, order) = app
        .post(
            "/api/checkout",
            Some(&asha),
            json!({"payment_mode": "CASH"}),
        )
        .await;
    assert_eq!(
        (status, &order["status"]),
        (StatusCode::CREATED, &json!("completed"))
    );
    app.add_to_cart(&asha, &lamp, 1).await;
    let (status, cancelled) = app
        .post(
            "/api/checkout",
            Some(&asha),
            json!({"payment_mode": "UPI", "upi_id": "asha@okbank"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cancelled}");
    let cancelled = cancelled["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .post(
            &format!("/api/orders/{cancelled}/cancel"),
            Some(&asha),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.add_to_cart(&bela, &tea, 1).await;
    let (status, declined) = app
        .post(
            "/api/checkout",
            Some(&bela),
            json!({"payment_mode": "UPI", "upi_id": "fail@bank"}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{declined}");
    let declined = declined["order_id"].as_str().unwrap().to_string();
    // The declined tea waits in her cart; she takes it out and buys lamps instead.
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/cart/items/{tea}"),
            Some(&bela),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.add_to_cart(&bela, &lamp, 2).await;
    let (status, order) = app
        .post("/api/checkout", Some(&bela), card("4242 4242 4242 4242"))
        .await;
    assert_eq!(
        (status, &order["status"]),
        (StatusCode::CREATED, &json!("completed"))
    );

    app.eventually(&format!("/api/orders/{cancelled}/payment"), &asha, |p| {
        p["status"] == "refunded"
    })
    .await;
    app.eventually(&format!("/api/orders/{cancelled}"), &asha, |o| {
        !o["refunded_at"].is_null()
    })
    .await;
    let asha_session = app.session_of(&asha).await;
    app.journey_with(&asha, &asha_session, 3).await;
    assert_eq!(app.settled(&tea).await, (18, 0));
    assert_eq!(app.settled(&lamp).await, (8, 0));
    let before = settled_books(&app, &admin).await;
    assert_eq!(before["orders"].as_array().unwrap().len(), 4, "{before}");
    assert_eq!(before["payments"][&declined]["payment"]["status"], "failed");
    assert_eq!(
        before["payments"][&cancelled]["payment"]["status"],
        "refunded"
    );
    shop.stop();

    // The copy, verified.
    let target = scratch_postgres(&server).await;
    let (ok, stdout, stderr) = data_copy(&["--from", &sqlite, "--to", &target]);
    assert!(ok, "copy failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("DIFFERS"), "{stdout}");
    assert!(stdout.contains("copied and verified"), "{stdout}");
    assert_eq!(row(&stdout, "orders.orders rows"), (4, 0, 4, "ok"));
    assert_eq!(row(&stdout, "payment.payments rows"), (4, 0, 4, "ok"));
    // Paid: asha's tea (3,000) and lamp (5,000, refunded since), bela's two lamps (10,000).
    assert_eq!(
        row(&stdout, "payment.payments money paid"),
        (18000, 0, 18000, "ok")
    );
    assert_eq!(
        row(&stdout, "payment.payments money refunded"),
        (5000, 0, 5000, "ok")
    );
    assert_eq!(
        row(&stdout, "orders.orders completed order totals").0,
        13000
    );
    let (steps, _, _, verdict) = row(&stdout, "users.journey_steps rows");
    assert!(steps >= 5 && verdict == "ok", "{stdout}");
    for table in ["stock.outbox", "orders.inbox", "users.consumer_positions"] {
        assert_eq!(row(&stdout, &format!("{table} rows")).3, "ok", "{stdout}");
    }
    let on_hand = row(&stdout, "stock.products units on hand");
    assert_eq!((on_hand.0, on_hand.3), (on_hand.2, "ok"));
    assert!(stdout.contains("sequence of stock.outbox.seq"), "{stdout}");

    // The same shop on PostgreSQL, the same tokens.
    let mut shop = start(&target).await;
    let app = TestApp::at(shop.base.clone());
    let after = settled_books(&app, &admin).await;
    assert_eq!(
        after, before,
        "the books on PostgreSQL differ from SQLite's"
    );
    let (status, journey) = app
        .get(&format!("/api/journeys/{asha_session}"), Some(&asha))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "asha's session survived the move: {journey}"
    );
    // And it keeps trading: new events get outbox keys after the copied ones.
    app.add_to_cart(&bela, &tea, 3).await;
    let (status, order) = app
        .post(
            "/api/checkout",
            Some(&bela),
            json!({"payment_mode": "CASH"}),
        )
        .await;
    assert_eq!(
        (status, &order["status"]),
        (StatusCode::CREATED, &json!("completed"))
    );
    assert_eq!(app.settled(&tea).await, (15, 0));
    let trading = settled_books(&app, &admin).await;

    // A second copy into the now non-empty database is refused and changes nothing.
    let (ok, stdout, stderr) = data_copy(&["--from", &sqlite, "--to", &target]);
    assert!(
        !ok,
        "a copy into a shop's database must be refused:\n{stdout}"
    );
    assert!(stderr.contains("already holds"), "{stderr}");
    assert!(stderr.contains("--into-nonempty"), "{stderr}");
    assert_eq!(books(&app, &admin).await, trading);
    // Told to add to it anyway, the same rows collide with themselves: the whole copy fails,
    // and what it inserted before the collision is rolled back.
    let (ok, stdout, stderr) = data_copy(&["--from", &sqlite, "--to", &target, "--into-nonempty"]);
    assert!(!ok, "copying the same rows twice must fail:\n{stdout}");
    assert!(stderr.contains("cannot insert into"), "{stderr}");
    assert_eq!(books(&app, &admin).await, trading);
    shop.stop();
}

#[test]
fn data_copy_refuses_what_it_cannot_copy() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/", dir.path().display());
    let (ok, _, stderr) = data_copy(&["--from", "postgres://x@db/a", "--to", "postgres://db/b"]);
    assert!(!ok);
    assert!(stderr.contains("--from must be a sqlite://"), "{stderr}");
    let (ok, _, stderr) = data_copy(&["--from", &sqlite, "--to", "mysql://db/shop"]);
    assert!(!ok);
    assert!(stderr.contains("--to must be a postgres://"), "{stderr}");
    // No shop there: nothing to copy, said so before the target is touched.
    let (ok, _, stderr) =
        data_copy(&["--from", &sqlite, "--to", "postgres://nobody@127.0.0.1:1/x"]);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
