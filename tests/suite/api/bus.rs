//! The inbox: an event delivered twice has one effect; the relays keep their PostgreSQL lock.

use std::sync::Arc;

use ekart::app::Databases;
use ekart::bus::inbox::handle_batch;
use ekart::bus::{Delivered, Event};
use ekart::modules::order::events::{LineQuantity, OrderPlaced, PLACED, SOURCE};
use ekart::modules::stock::{self, StockStore};
use reqwest::StatusCode;

use crate::support::{postgres_url, scratch_postgres, test_settings, Backend, TestApp};

/// The two tests of a scenario that takes a database URL: a `sqlite` one in a temporary
/// folder and a `postgres` one in a scratch database (when `TEST_POSTGRES_URL` is set).
macro_rules! on_both_databases {
    ($scenario:ident) => {
        on_both_databases!($scenario, #[tokio::test]);
    };
    ($scenario:ident, multi_thread) => {
        on_both_databases!($scenario, #[tokio::test(flavor = "multi_thread", worker_threads = 4)]);
    };
    ($scenario:ident, #[$test:meta]) => {
        mod $scenario {
            use super::*;

            #[$test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$scenario(format!("sqlite://{}/", dir.path().display())).await;
            }

            #[$test]
            async fn postgres() {
                if let Some(server) = postgres_url() {
                    super::$scenario(scratch_postgres(&server).await).await;
                }
            }
        }
    };
}

/// The events `db`'s outbox holds, oldest first.
async fn outbox_events(db: &ekart::db::Db) -> Vec<Event> {
    let events: Vec<String> = sqlx::query_scalar("SELECT event FROM outbox ORDER BY seq")
        .fetch_all(&db.read)
        .await
        .unwrap();
    events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

async fn redelivered_event_has_one_effect(url: String) {
    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let store = StockStore::new(dbs.stock.clone());
    stock::seed_demo_catalog(&store).await.unwrap();
    let page = store
        .list(&serde_json::from_value(serde_json::json!({})).unwrap())
        .await
        .unwrap();
    let product = &page.items[0];

    let placed = Event::new(
        SOURCE,
        PLACED,
        "order-1",
        OrderPlaced {
            order_id: "order-1".into(),
            user_id: "u".into(),
            session_id: None,
            lines: vec![LineQuantity {
                product_id: product.id.clone(),
                quantity: 2,
            }],
        },
    );
    let batch = Arc::new(vec![Delivered {
        event: placed.clone(),
        position: None,
    }]);
    let handler = stock::order_events_handler();
    let first = handle_batch(
        &dbs.stock,
        "stock",
        "ekart.order",
        batch.clone(),
        handler.clone(),
    )
    .await
    .unwrap();
    // The same event again, alone and inside a bigger batch.
    let again = handle_batch(
        &dbs.stock,
        "stock",
        "ekart.order",
        batch.clone(),
        handler.clone(),
    )
    .await
    .unwrap();
    let twice = Arc::new(vec![batch[0].clone(), batch[0].clone()]);
    let third = handle_batch(&dbs.stock, "stock", "ekart.order", twice, handler.clone())
        .await
        .unwrap();
    assert_eq!((first, again, third), (1, 0, 0));

    let after = store.get(&product.id).await.unwrap().unwrap();
    assert_eq!(after.reserved, 2, "reserved once");
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&dbs.stock.read)
        .await
        .unwrap();
    assert_eq!(events, 1, "one answer published");

    // A different event about the same order (a retried publish with a new id) is also harmless.
    let mut replay = placed.clone();
    replay.id = "another-id".into();
    let batch = Arc::new(vec![Delivered {
        event: replay,
        position: None,
    }]);
    handle_batch(
        &dbs.stock,
        "stock",
        "ekart.order",
        batch.clone(),
        handler.clone(),
    )
    .await
    .unwrap();
    assert_eq!(store.get(&product.id).await.unwrap().unwrap().reserved, 2);
}

on_both_databases!(redelivered_event_has_one_effect);

/// Restarting on the same database keeps the data and does not seed twice.
#[tokio::test]
async fn restart_keeps_data_and_seeds_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/", dir.path().display());
    for _ in 0..2 {
        let settings = test_settings(url.clone());
        let dbs = Databases::open(&settings).await.unwrap();
        let store = StockStore::new(dbs.stock.clone());
        stock::seed_demo_catalog(&store).await.unwrap();
        for db in dbs.all() {
            db.close().await;
        }
    }
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.database.url = url.clone())
        .await
        .unwrap();
    let (status, page) = app.get("/api/products", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 24);
}

/// Many concurrent writes share commits, yet a failing one undoes only itself: one that
/// changes its mind after writing, and one whose statement the database refuses (on
/// PostgreSQL that aborts the shared transaction until its savepoint is rolled back).
async fn group_commit_isolates_a_failing_write(url: String) {
    let mut settings = test_settings(url);
    settings.database.postgres_writers = 1;
    let dbs = Databases::open(&settings).await.unwrap();
    let db = dbs.users.clone();
    let insert = "INSERT INTO users (sub, name, email, role, created_at, last_sign_in_at) \
                  VALUES ($1, 'n', 'e', 'customer', 0, 0)";
    // Each write's after-commit hook, which must run for the writes that committed only.
    let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writes = (0..200).map(|i| {
        let db = db.clone();
        let committed = committed.clone();
        tokio::spawn(async move {
            db.write(move |uow| {
                Box::pin(async move {
                    sqlx::query(insert)
                        .bind(format!("user-{i}"))
                        .execute(uow.conn())
                        .await?;
                    uow.after_commit(move || committed.lock().unwrap().push(i));
                    if i % 10 == 0 {
                        return Err(anyhow::anyhow!("write {i} changes its mind"));
                    }
                    if i % 10 == 5 {
                        // The same key twice: the database refuses the second insert.
                        sqlx::query(insert)
                            .bind(format!("user-{i}"))
                            .execute(uow.conn())
                            .await?;
                    }
                    Ok(i)
                })
            })
            .await
        })
    });
    let results = futures::future::join_all(writes).await;
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().unwrap().is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed.len(), 40, "{failed:?}");
    assert!(failed.iter().all(|i| i % 10 == 0 || i % 10 == 5));
    let mut hooked = committed.lock().unwrap().clone();
    hooked.sort();
    let succeeded: Vec<usize> = (0..200).filter(|i| !failed.contains(i)).collect();
    assert_eq!(
        hooked, succeeded,
        "after-commit hooks ran for the committed writes only"
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&db.read)
        .await
        .unwrap();
    assert_eq!(rows, 160, "only the failed writes were undone");
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT sub FROM users WHERE sub IN ('user-10', 'user-15')")
            .fetch_all(&db.read)
            .await
            .unwrap();
    assert_eq!(kept, Vec::<String>::new());
}

on_both_databases!(group_commit_isolates_a_failing_write, multi_thread);

/// On PostgreSQL, writes that queue while the writer is busy share one transaction: while a
/// first write holds the writer, twenty more queue, and they commit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writes_that_queue_share_one_transaction() {
    let Some(server) = postgres_url() else { return };
    let mut settings = test_settings(scratch_postgres(&server).await);
    settings.database.postgres_writers = 1;
    let dbs = Databases::open(&settings).await.unwrap();
    let db = dbs.users.clone();
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let db = db.clone();
        tokio::spawn(async move {
            db.write(move |_| {
                Box::pin(async move {
                    let _ = gate.await;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let queued: Vec<_> = (0..20)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |uow| {
                    Box::pin(async move {
                        sqlx::query_scalar::<_, String>("SELECT CAST(txid_current() AS TEXT)")
                            .fetch_one(uow.conn())
                            .await
                    })
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    open.send(()).unwrap();
    first.await.unwrap().unwrap();
    let mut transactions: Vec<String> = futures::future::join_all(queued)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    transactions.dedup();
    assert_eq!(transactions.len(), 1, "{transactions:?}");
}

/// Each module's relay holds a PostgreSQL advisory lock (one relay per module, however many
/// processes run it). If the lock's connection dies, the relay takes the lock again, and
/// events keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_whose_lock_went_with_its_connection_takes_it_again() {
    use sqlx::Connection;
    let Some(server) = postgres_url() else { return };
    let url = scratch_postgres(&server).await;
    let database = url.rsplit_once('/').unwrap().1.to_string();
    let mut settings = test_settings(url);
    settings.bus.relay_sweep_ms = 100;
    let app = TestApp::start(settings).await;
    let mut admin_conn = sqlx::AnyConnection::connect(&server).await.unwrap();
    // Stock, payment and order relay; the user module publishes nothing. The relays take
    // their locks as they start, which a loaded machine may not have got to yet.
    let mut before = Vec::new();
    for _ in 0..100 {
        before = lock_holders(&mut admin_conn, &database).await;
        if before.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(before.len(), 3, "{before:?}");
    for pid in &before {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut admin_conn)
            .await
            .unwrap();
    }
    let mut after = Vec::new();
    for _ in 0..100 {
        // pg_terminate_backend only signals: the old holders go in their own time.
        after = lock_holders(&mut admin_conn, &database).await;
        if after.len() == 3 && after.iter().all(|pid| !before.contains(pid)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        after.len(),
        3,
        "every relay holds its lock again: {after:?}"
    );
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "on new connections: {before:?} → {after:?}"
    );

    // And the saga still runs over the relays.
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 25_000, 10).await;
    let me = app.token("asha", "customer").await;
    app.add_to_cart(&me, &tea, 2).await;
    let (status, order) = app
        .post(
            "/api/checkout",
            Some(&me),
            serde_json::json!({"payment_mode": "CASH"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(app.settled(&tea).await, (8, 0));
}

/// The backends holding advisory locks in `database`.
async fn lock_holders(conn: &mut sqlx::AnyConnection, database: &str) -> Vec<i32> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY pid",
    )
    .bind(database)
    .fetch_all(conn)
    .await
    .unwrap();
    rows.iter().map(|r| r.get::<i32, _>(0)).collect()
}

/// Stock takes a batch of placed orders with a few statements for the whole batch: each order
/// is still served in turn from what the orders before it left, all or nothing, with the same
/// answers as one at a time; a batch of completed orders settles together.
async fn a_batch_of_placed_orders_is_served_in_turn(url: String) {
    use ekart::modules::order::events::{OrderCompleted, COMPLETED};
    use ekart::modules::stock::events::{StockRejected, StockReserved, REJECTED, RESERVED};

    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let store = StockStore::new(dbs.stock.clone());
    let mut ids = Vec::new();
    for (sku, price, currency, quantity) in [
        ("a", 100, "EUR", 5),
        ("b", 250, "EUR", 2),
        ("c", 300, "USD", 10),
        ("d", 50, "EUR", 10),
    ] {
        let new = serde_json::from_value(serde_json::json!({
            "sku": sku, "name": format!("product {sku}"), "price_minor": price,
            "currency": currency, "quantity": quantity,
        }))
        .unwrap();
        ids.push(store.create(new).await.unwrap().id);
    }
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let placed = |order: &str, lines: &[(&str, i64)]| Delivered {
        event: Event::new(
            SOURCE,
            PLACED,
            order,
            OrderPlaced {
                order_id: order.into(),
                user_id: "u".into(),
                session_id: None,
                lines: lines
                    .iter()
                    .map(|(product_id, quantity)| LineQuantity {
                        product_id: product_id.to_string(),
                        quantity: *quantity,
                    })
                    .collect(),
            },
        ),
        position: None,
    };
    let batch = Arc::new(vec![
        placed("o1", &[(a, 3)]),                 // reserved: a 2 left
        placed("o2", &[(a, 3)]),                 // only 2 of a
        placed("o3", &[(a, 2), (b, 1)]),         // reserved: a 0, b 1 left
        placed("o4", &[(b, 1), (a, 1)]),         // a is gone; b goes back on the shelf
        placed("o5", &[(b, 1)]),                 // reserved: the b o4 gave back
        placed("o6", &[("no-such-product", 1)]), // not sold
        placed("o7", &[(d, 1), (c, 1)]),         // two currencies
        placed("o1", &[(a, 1)]),                 // o1 again, under another event id
    ]);
    let handler = stock::order_events_handler();
    let fresh = handle_batch(&dbs.stock, "stock", "ekart.order", batch, handler.clone())
        .await
        .unwrap();
    assert_eq!(fresh, 8);

    let answers = outbox_events(&dbs.stock).await;
    let kinds: Vec<(&str, &str)> = answers
        .iter()
        .map(|e| (e.subject.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("o1", RESERVED),
            ("o2", REJECTED),
            ("o3", RESERVED),
            ("o4", REJECTED),
            ("o5", RESERVED),
            ("o6", REJECTED),
            ("o7", REJECTED),
        ],
        "one answer per order, in order; o1's repeat gets none"
    );
    let rejected = |i: usize| answers[i].data::<StockRejected>().unwrap();
    let (o2, o4, o6, o7) = (rejected(1), rejected(3), rejected(5), rejected(6));
    assert_eq!(
        (o2.requested, o2.available, o2.reason.as_str()),
        (3, 2, "not enough stock")
    );
    assert_eq!((o4.product_id.as_str(), o4.available), (a.as_str(), 0));
    assert_eq!(
        (o6.available, o6.reason.as_str()),
        (0, "the product is no longer sold")
    );
    assert_eq!(
        (o7.product_id.as_str(), o7.reason.as_str()),
        (c.as_str(), "products in different currencies")
    );
    let o3 = answers[2].data::<StockReserved>().unwrap();
    assert_eq!(
        (o3.total_minor, o3.currency.as_str()),
        (2 * 100 + 250, "EUR")
    );
    assert_eq!(o3.lines.len(), 2);
    assert_eq!(o3.lines[1].name, "product b");

    let level = |id: &String| {
        let store = store.clone();
        let id = id.clone();
        async move {
            let p = store.get(&id).await.unwrap().unwrap();
            (p.on_hand, p.reserved)
        }
    };
    assert_eq!(level(a).await, (5, 5));
    assert_eq!(level(b).await, (2, 2), "o3 and o5 hold b; o4 holds nothing");
    assert_eq!(level(c).await, (10, 0));
    assert_eq!(level(d).await, (10, 0), "o7 holds nothing");

    // o1 and o3 are paid: their units leave the shelf together.
    let completed = |order: &str| Delivered {
        event: Event::new(
            SOURCE,
            COMPLETED,
            order,
            OrderCompleted {
                order_id: order.into(),
                amount_minor: 0,
                currency: "EUR".into(),
            },
        ),
        position: None,
    };
    let batch = Arc::new(vec![completed("o1"), completed("o3")]);
    handle_batch(
        &dbs.stock,
        "stock",
        "ekart.order",
        batch.clone(),
        handler.clone(),
    )
    .await
    .unwrap();
    assert_eq!(level(a).await, (0, 0));
    assert_eq!(level(b).await, (1, 1), "o5 still holds one");
    // The same batch again changes nothing.
    handle_batch(&dbs.stock, "stock", "ekart.order", batch, handler)
        .await
        .unwrap();
    assert_eq!(level(a).await, (0, 0));
    assert_eq!(level(b).await, (1, 1));
}

on_both_databases!(a_batch_of_placed_orders_is_served_in_turn);

/// The user module takes a batch of order outcomes with one insert of journey steps; an order
/// placed and finished in the same batch still finds the session that placed it, and an order
/// of no session adds nothing.
async fn order_outcomes_in_one_batch_join_their_journeys(url: String) {
    use ekart::modules::order::events::{OrderCompleted, OrderFailed, COMPLETED, FAILED};

    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let placed = |order: &str, session: Option<&str>| {
        let data = OrderPlaced {
            order_id: order.into(),
            user_id: "u".into(),
            session_id: session.map(str::to_string),
            lines: vec![LineQuantity {
                product_id: "p".into(),
                quantity: 3,
            }],
        };
        Event::new(SOURCE, PLACED, order, data)
    };
    let completed = Event::new(
        SOURCE,
        COMPLETED,
        "o1",
        OrderCompleted {
            order_id: "o1".into(),
            amount_minor: 1250,
            currency: "EUR".into(),
        },
    );
    let failed = |order: &str| {
        let data = OrderFailed {
            order_id: order.into(),
            reason: "declined".into(),
        };
        Event::new(SOURCE, FAILED, order, data)
    };
    let batch: Vec<Delivered> = [
        placed("o1", Some("s1")),
        placed("o2", None),
        completed,
        failed("o2"),
        failed("o3"),
    ]
    .into_iter()
    .map(|event| Delivered {
        event,
        position: None,
    })
    .collect();
    let batch = Arc::new(batch);
    let handler = ekart::modules::user::order_events_handler();
    for _ in 0..2 {
        handle_batch(
            &dbs.users,
            "user",
            "ekart.order",
            batch.clone(),
            handler.clone(),
        )
        .await
        .unwrap();
    }
    // By name: the test made the completion before the placing, so their times may come
    // either way round.
    let steps: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT session_id, name, detail FROM journey_steps ORDER BY name")
            .fetch_all(&dbs.users.read)
            .await
            .unwrap();
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(session, name, _)| (session.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        steps,
        [("s1", "completed"), ("s1", "placed")],
        "once each, o1's only"
    );
}

on_both_databases!(order_outcomes_in_one_batch_join_their_journeys);

/// Payment records a batch of requests with one insert of payments, then charges them and
/// records their outcomes: one payment per order, also when an order asks twice in the same
/// batch or asked before.
async fn a_batch_of_payment_requests_pays_each_order_once(url: String) {
    use ekart::modules::order::events::{PaymentMethod, PaymentRequested, PAYMENT_REQUESTED};
    use ekart::modules::payment::events::{FAILED, SUCCEEDED};
    use ekart::modules::payment::provider::Simulator;
    use ekart::modules::payment::{PaymentStore, Settler};

    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let request = |order: &str, method: PaymentMethod| Delivered {
        event: Event::new(
            SOURCE,
            PAYMENT_REQUESTED,
            order,
            PaymentRequested {
                order_id: order.into(),
                user_id: "u".into(),
                amount_minor: 1250,
                currency: "EUR".into(),
                method,
            },
        ),
        position: None,
    };
    let card = |last4: &str| PaymentMethod::Card {
        last4: last4.into(),
    };
    let settler = Settler::start(PaymentStore::new(dbs.payment.clone()), Arc::new(Simulator));
    let handler = ekart::modules::payment::order_events_handler(settler);
    let first = Arc::new(vec![request("o0", PaymentMethod::Cash)]);
    handle_batch(
        &dbs.payment,
        "payment",
        "ekart.order",
        first,
        handler.clone(),
    )
    .await
    .unwrap();
    let batch = Arc::new(vec![
        request("o1", card("4242")),
        request("o2", card("0002")), // declined by the simulator
        request("o1", card("4242")), // o1 again, under another event id
        request("o0", card("4242")), // paid in the batch before
        request("o3", PaymentMethod::Cash),
    ]);
    let fresh = handle_batch(&dbs.payment, "payment", "ekart.order", batch, handler)
        .await
        .unwrap();
    assert_eq!(fresh, 5);
    settled(&dbs.payment).await;

    let payments: Vec<(String, String, String)> =
        sqlx::query_as("SELECT order_id, mode, status FROM payments ORDER BY order_id")
            .fetch_all(&dbs.payment.read)
            .await
            .unwrap();
    let payments: Vec<(&str, &str, &str)> = payments
        .iter()
        .map(|(o, m, s)| (o.as_str(), m.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        payments,
        [
            ("o0", "CASH", "succeeded"),
            ("o1", "CARD", "succeeded"),
            ("o2", "CARD", "failed"),
            ("o3", "CASH", "succeeded"),
        ]
    );
    let outcomes: Vec<(String, String)> = outbox_events(&dbs.payment)
        .await
        .into_iter()
        .map(|e| (e.subject, e.kind))
        .collect();
    let expected = [
        ("o0", SUCCEEDED),
        ("o1", SUCCEEDED),
        ("o2", FAILED),
        ("o3", SUCCEEDED),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(o, k)| (o.to_string(), k.to_string()))
        .collect();
    assert_eq!(outcomes, expected, "one outcome per payment, in order");
}

on_both_databases!(a_batch_of_payment_requests_pays_each_order_once);

/// A provider that keeps what it charged by key, as a real one does: asked again with a key
/// it knows, it answers the first outcome and charges nothing. While `lose_answers` is set it
/// charges but its answer never arrives (the network, or the process, failed in between).
#[derive(Default)]
struct Ledger {
    charged: std::sync::Mutex<std::collections::HashMap<String, String>>,
    calls: std::sync::atomic::AtomicUsize,
    lose_answers: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ekart::modules::payment::provider::PaymentProvider for Ledger {
    async fn charge(
        &self,
        charge: &ekart::modules::payment::provider::Charge<'_>,
    ) -> Result<
        ekart::modules::payment::provider::Outcome,
        ekart::modules::payment::provider::Unanswered,
    > {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let reference = {
            let mut charged = self.charged.lock().unwrap();
            let next = format!("PAY-{}", charged.len() + 1);
            charged
                .entry(charge.key.to_string())
                .or_insert(next)
                .clone()
        };
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(ekart::modules::payment::provider::Unanswered("lost".into()));
        }
        Ok(ekart::modules::payment::provider::Outcome::Approved { reference })
    }

    async fn refund(
        &self,
        refund: &ekart::modules::payment::provider::Refund<'_>,
    ) -> Result<String, ekart::modules::payment::provider::Unanswered> {
        Ok(format!("RFD-{}", refund.reference))
    }
}

/// The provider charged, but its answer was lost and the process stopped before recording
/// it: the payment is still pending. When the module starts again it asks again with the
/// same key, the provider answers the same charge, and the outcome is recorded once; a
/// second instance asking at the same time records nothing more.
async fn a_charge_whose_answer_was_lost_is_settled_on_restart_without_charging_twice(url: String) {
    use ekart::modules::order::events::{PaymentMethod, PaymentRequested, PAYMENT_REQUESTED};
    use ekart::modules::payment::events::SUCCEEDED;
    use ekart::modules::payment::{PaymentStore, Settler};
    use std::sync::atomic::Ordering;

    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let ledger = Arc::new(Ledger::default());
    ledger.lose_answers.store(true, Ordering::SeqCst);
    let store = PaymentStore::new(dbs.payment.clone());
    let handler = ekart::modules::payment::order_events_handler(Settler::start(
        store.clone(),
        ledger.clone(),
    ));
    let request = Arc::new(vec![Delivered {
        event: Event::new(
            SOURCE,
            PAYMENT_REQUESTED,
            "o1",
            PaymentRequested {
                order_id: "o1".into(),
                user_id: "u".into(),
                amount_minor: 1250,
                currency: "EUR".into(),
                method: PaymentMethod::Card {
                    last4: "4242".into(),
                },
            },
        ),
        position: None,
    }]);
    handle_batch(&dbs.payment, "payment", "ekart.order", request, handler)
        .await
        .unwrap();
    // Charged, the answer lost: still pending, and nothing told the order.
    for _ in 0..200 {
        if ledger.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(ledger.charged.lock().unwrap().len(), 1);
    let payment = store.for_order("o1").await.unwrap().unwrap();
    assert_eq!(payment.status, "pending");
    assert!(outbox_events(&dbs.payment).await.is_empty());

    // "Restart": two new settlers over the same database, as two instances would start; the
    // first is also handed the payment its own recovery finds, so it queues it twice.
    let left = store.unsettled().await.unwrap();
    ledger.lose_answers.store(false, Ordering::SeqCst);
    let first = Settler::start(store.clone(), ledger.clone());
    first.settle(left);
    let _second = Settler::start(store.clone(), ledger.clone());
    settled(&dbs.payment).await;

    let payment = store.for_order("o1").await.unwrap().unwrap();
    assert_eq!(
        (payment.status.as_str(), payment.reference.as_str()),
        ("succeeded", "PAY-1")
    );
    assert_eq!(ledger.charged.lock().unwrap().len(), 1, "charged once");
    assert!(
        ledger.calls.load(Ordering::SeqCst) >= 2,
        "asked again after the restart"
    );
    let outcomes: Vec<String> = outbox_events(&dbs.payment)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(outcomes, [SUCCEEDED], "one outcome, whoever asked");
}

on_both_databases!(a_charge_whose_answer_was_lost_is_settled_on_restart_without_charging_twice);

/// Waits until the payment module has recorded the provider's answer to every payment.
async fn settled(db: &ekart::db::Db) {
    for _ in 0..200 {
        let unsettled: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payments WHERE status IN ('pending', 'refunding')",
        )
        .fetch_one(&db.read)
        .await
        .unwrap();
        if unsettled == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("payments still unsettled after 5 s");
}

/// The order module's saga steps for a batch: reservations and payment outcomes move their
/// orders together, a rejection is handled in its place, a late repeat changes nothing, and
/// a second step for an order in the same batch sees the first.
async fn saga_steps_in_one_batch_move_each_order_in_turn(url: String) {
    use ekart::modules::order::events::{PaymentMethod, COMPLETED, FAILED, PAYMENT_REQUESTED};
    use ekart::modules::payment::events::{self as paid, PaymentFailed, PaymentSucceeded};
    use ekart::modules::stock::events::{self as held, ReservedLine, StockRejected, StockReserved};

    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let cash = serde_json::to_string(&PaymentMethod::Cash).unwrap();
    let mut setup = dbs.orders.begin().await.unwrap();
    for (order, status) in [
        ("o1", "placed"),
        ("o2", "placed"),
        ("o3", "reserved"),
        ("o4", "reserved"),
        ("o5", "placed"),
    ] {
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, currency, total_minor, payment_method, \
             created_at, updated_at) VALUES ($1, $2, $3, 'EUR', 1000, $4, 1, 1)",
        )
        .bind(order)
        .bind(format!("user-{order}"))
        .bind(status)
        .bind(&cash)
        .execute(setup.conn())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO order_lines (order_id, product_id, name, quantity, unit_price_minor, \
             added_at) VALUES ($1, 'p1', 'Lamp', 2, 500, 1)",
        )
        .bind(order)
        .execute(setup.conn())
        .await
        .unwrap();
    }
    setup.commit().await.unwrap();
    let event = |kind: &str, order: &str, data: serde_json::Value| Delivered {
        event: Event::new("/test", kind, order, data),
        position: None,
    };
    let reserved = |order: &str| {
        let data = StockReserved {
            order_id: order.into(),
            lines: vec![ReservedLine {
                product_id: "p1".into(),
                name: "Desk lamp".into(),
                quantity: 2,
                unit_price_minor: 450,
            }],
            currency: "EUR".into(),
            total_minor: 900,
        };
        event(held::RESERVED, order, serde_json::to_value(data).unwrap())
    };
    let succeeded = |order: &str| {
        let data = PaymentSucceeded {
            order_id: order.into(),
            payment_id: format!("pay-{order}"),
            reference: format!("ref-{order}"),
            amount_minor: 900,
            currency: "EUR".into(),
        };
        event(paid::SUCCEEDED, order, serde_json::to_value(data).unwrap())
    };
    let declined = PaymentFailed {
        order_id: "o4".into(),
        payment_id: "pay-o4".into(),
        code: "card_declined".into(),
        reason: "the card was declined".into(),
    };
    let rejected = StockRejected {
        order_id: "o5".into(),
        product_id: "p1".into(),
        requested: 2,
        available: 1,
        reason: "not enough".into(),
    };
    let batch = Arc::new(vec![
        reserved("o1"),
        reserved("o2"),
        succeeded("o3"),
        event(paid::FAILED, "o4", serde_json::to_value(declined).unwrap()),
        reserved("o1"),  // a repeat under a new id: o1 is no longer placed
        succeeded("o1"), // o1 was reserved earlier in this batch
        event(
            held::REJECTED,
            "o5",
            serde_json::to_value(rejected).unwrap(),
        ),
    ]);
    let waiters = Arc::new(ekart::modules::order::Waiters::default());
    let handler = ekart::modules::order::saga_handler(waiters);
    let fresh = handle_batch(&dbs.orders, "order", "ekart.stock", batch, handler)
        .await
        .unwrap();
    assert_eq!(fresh, 7);

    /// An order's row, as one line to compare.
    type OrderRow = (String, String, i64, Option<String>, Option<String>);
    let orders: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, status, total_minor, payment_reference, failure_kind FROM orders \
         WHERE status <> 'cart' ORDER BY id",
    )
    .fetch_all(&dbs.orders.read)
    .await
    .unwrap();
    let orders: Vec<String> = orders
        .iter()
        .map(|(id, status, total, reference, failure)| {
            let reference = reference.as_deref().unwrap_or("-");
            let failure = failure.as_deref().unwrap_or("-");
            format!("{id} {status} {total} {reference} {failure}")
        })
        .collect();
    assert_eq!(
        orders,
        [
            "o1 completed 900 ref-o1 -",
            "o2 reserved 900 - -",
            "o3 completed 1000 ref-o3 -",
            "o4 failed 1000 - payment_declined",
            "o5 failed 1000 - out_of_stock",
        ]
    );
    // The failed orders' lines wait in their shoppers' carts again: o4's as they were, o5's
    // only as far as stock had them (one of the two asked for).
    let carts: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT o.user_id, l.product_id, l.quantity, o.total_minor FROM orders o \
         JOIN order_lines l ON l.order_id = o.id WHERE o.status = 'cart' ORDER BY o.user_id",
    )
    .fetch_all(&dbs.orders.read)
    .await
    .unwrap();
    assert_eq!(
        carts,
        [
            ("user-o4".into(), "p1".into(), 2, 1000),
            ("user-o5".into(), "p1".into(), 1, 500)
        ]
    );
    let lines: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT order_id, name, unit_price_minor FROM order_lines \
         WHERE order_id LIKE 'o%' ORDER BY order_id",
    )
    .fetch_all(&dbs.orders.read)
    .await
    .unwrap();
    let priced: Vec<&str> = lines
        .iter()
        .filter(|(_, name, price)| name == "Desk lamp" && *price == 450)
        .map(|(order, _, _)| order.as_str())
        .collect();
    assert_eq!(priced, ["o1", "o2"], "reserved lines take stock's prices");
    let history: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id, status FROM order_history ORDER BY order_id, at, status")
            .fetch_all(&dbs.orders.read)
            .await
            .unwrap();
    let history: Vec<(&str, &str)> = history
        .iter()
        .map(|(o, s)| (o.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        history.iter().filter(|(o, _)| *o == "o1").count(),
        2,
        "o1: reserved and completed, the repeat left no row: {history:?}"
    );
    for expected in [
        ("o2", "reserved"),
        ("o3", "completed"),
        ("o4", "failed"),
        ("o5", "failed"),
    ] {
        assert!(history.contains(&expected), "{expected:?} in {history:?}");
    }

    let sent = outbox_events(&dbs.orders).await;
    let steps: Vec<(&str, &str)> = sent
        .iter()
        .map(|e| (e.subject.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("o1", PAYMENT_REQUESTED),
            ("o2", PAYMENT_REQUESTED),
            ("o3", COMPLETED),
            ("o4", FAILED),
            ("o1", COMPLETED),
            ("o5", FAILED),
        ],
        "one event per step that moved an order, in the batch's order"
    );
    let request: serde_json::Value = sent[0].data().unwrap();
    assert_eq!(request["user_id"], "user-o1");
    assert_eq!(request["amount_minor"], 900);
    assert_eq!(
        serde_json::from_value::<PaymentMethod>(request["method"].clone()).unwrap(),
        PaymentMethod::Cash
    );
}

on_both_databases!(saga_steps_in_one_batch_move_each_order_in_turn);

/// The relay deletes what it published as housekeeping that waits for the module's next write
/// (`Db::write_later`). With no other write coming, the delete still commits on its own, soon;
/// with writes coming, it shares their transaction, and a write that fails there does not take
/// the delete with it. Each event reaches its consumer once.
async fn relayed_events_leave_the_outbox_with_or_without_other_writes(url: String) {
    use ekart::bus::memory::MemoryBus;
    use ekart::bus::outbox::{push, run_relay};
    use ekart::bus::Bus;
    use std::time::Duration;

    let settings = test_settings(url);
    let dbs = Databases::open(&settings).await.unwrap();
    let db = dbs.payment.clone();
    let bus = MemoryBus::new();
    let mut subscription = bus.subscribe("ekart.test", ekart::bus::Subscriber::fresh("test"));
    let relay_bus: Arc<dyn Bus> = bus.clone();
    tokio::spawn(run_relay(
        db.clone(),
        relay_bus,
        Duration::from_secs(30),
        64,
    ));
    // Waits (5 s at most) for the outbox to be empty.
    let drained = |db: ekart::db::Db, what: &'static str| async move {
        let started = std::time::Instant::now();
        while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox")
            .fetch_one(&db.read)
            .await
            .unwrap()
            > 0
        {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let event = |key: &str| Event::new(SOURCE, "ekart.test.happened", key, serde_json::json!({}));

    // Alone: published, then deleted without any other write to ride with.
    let first = event("first");
    let pushed = first.clone();
    db.write(move |uow| Box::pin(async move { push(uow, "ekart.test", &pushed).await }))
        .await
        .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(10), subscription.recv())
        .await
        .expect("the relay publishes")
        .unwrap();
    assert_eq!(batch.events[0].event.id, first.id);
    batch.ack.send(Ok(())).unwrap();
    drained(db.clone(), "the published row was never deleted").await;

    // Among writes, one of which fails: every row still goes, each event delivered once.
    let mut ids = Vec::new();
    for i in 0..20 {
        let next = event(&format!("key-{i}"));
        ids.push(next.id.clone());
        let outcome = db
            .write(move |uow| {
                Box::pin(async move {
                    push(uow, "ekart.test", &next).await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await;
        outcome.unwrap();
        let failing = db
            .write(|uow| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO no_such_table VALUES (1)")
                        .execute(uow.conn())
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await;
        assert!(failing.is_err());
    }
    let mut delivered = Vec::new();
    while delivered.len() < ids.len() {
        let batch = tokio::time::timeout(Duration::from_secs(10), subscription.recv())
            .await
            .expect("the relay publishes the rest")
            .unwrap();
        delivered.extend(batch.events.iter().map(|d| d.event.id.clone()));
        batch.ack.send(Ok(())).unwrap();
    }
    assert_eq!(delivered, ids, "each event once, in order");
    drained(db.clone(), "published rows were left behind").await;
    let late = tokio::time::timeout(Duration::from_millis(500), subscription.recv()).await;
    assert!(late.is_err(), "no event is published twice");
}
on_both_databases!(
    relayed_events_leave_the_outbox_with_or_without_other_writes,
    multi_thread
);

/// Partition leases (`bus::lease`) in one PostgreSQL database: a lone instance takes every
/// partition; a second one makes the first give half up, which the second takes once they are
/// released; when the first leaves, the second takes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_share_partitions_and_pass_on_those_of_an_instance_that_leaves() {
    use ekart::bus::lease::Leases;
    let Some(server) = postgres_url() else { return };
    let url = scratch_postgres(&server).await;
    let leases = || {
        let url = url.clone();
        Leases::new(
            "order",
            "ekart.stock",
            Box::new(move || {
                let url = url.clone();
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(sqlx::AnyConnection::connect(&url).await?)
                })
            }),
        )
    };
    let (mut first, mut second) = (leases(), leases());

    let alone = first.round(4).await;
    assert_eq!((alone.taken, alone.members), (vec![0, 1, 2, 3], 1));
    let joined = second.round(4).await;
    assert_eq!(joined.members, 2);
    assert!(
        joined.taken.is_empty(),
        "every partition is leased: {joined:?}"
    );
    let shared = first.round(4).await;
    assert_eq!(shared.give, [3, 2], "{shared:?}");
    // Until it releases them (its readers stopped), they stay the first one's.
    assert!(second.round(4).await.taken.is_empty());
    first.release(&shared.give).await;
    assert_eq!(second.round(4).await.taken, [2, 3]);
    let settled = first.round(4).await;
    assert!(
        settled.taken.is_empty() && settled.give.is_empty(),
        "{settled:?}"
    );

    // PostgreSQL lets go of a closed session's locks as its backend ends, a moment later.
    first.leave().await;
    let mut taken = vec![];
    for _ in 0..50 {
        let round = second.round(4).await;
        taken.extend(round.taken);
        if round.members == 1 && taken.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(taken, [0, 1]);
}
