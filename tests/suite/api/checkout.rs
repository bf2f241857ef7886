use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

fn card(number: &str) -> serde_json::Value {
    json!({"payment_mode": "CARD", "card": {"number": number, "expiry": "12/39", "cvv": "123"}})
}

on_both!(
    checkout_completes_with_every_mode,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let lamp = app.product(&admin, "LAMP", 400000, 100).await;
        let modes = [
            json!({"payment_mode": "CASH"}),
            json!({"payment_mode": "UPI", "upi_id": "asha@okbank"}),
            card("4242 4242 4242 4242"),
            json!({"payment_mode": "EMI", "emi_months": 6,
               "card": {"number": "4242424242424242", "expiry": "01/40", "cvv": "999"}}),
            json!({"payment_mode": "NET_BANKING", "bank_code": "HDFC"}),
        ];
        let me = app.token("asha", "customer").await;
        for (i, mode) in modes.into_iter().enumerate() {
            app.add_to_cart(&me, &lamp, 1).await;
            let (status, headers, order) = app
                .call_with(
                    Method::POST,
                    "/api/checkout",
                    Some(&me),
                    Some(mode.clone()),
                    &[],
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{mode}: {order}");
            assert_eq!(order["status"], "completed");
            assert_eq!(order["total_minor"], 400000);
            let id = order["id"].as_str().unwrap();
            assert_eq!(headers["location"], format!("/api/orders/{id}").as_str());
            let (status, payment) = app
                .get(&format!("/api/orders/{id}/payment"), Some(&me))
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(payment["status"], "succeeded");
            assert_eq!(payment["amount_minor"], 400000);
            assert_eq!(payment["mode"], mode["payment_mode"]);
            assert_eq!(order["payment_reference"], payment["reference"]);
            let (on_hand, _) = app.settled(&lamp).await;
            assert_eq!(on_hand, 100 - (i as i64 + 1));
        }
        // The card number itself is stored nowhere the API shows.
        let (_, orders) = app.get("/api/orders", Some(&me)).await;
        assert!(!orders.to_string().contains("4242424242424242"));
    }
);

on_both!(
    declined_payment_answers_402_and_releases_stock,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let lamp = app.product(&admin, "LAMP", 5000, 10).await;
        let me = app.token("asha", "customer").await;
        app.add_to_cart(&me, &lamp, 3).await;
        let (status, problem) = app
            .post("/api/checkout", Some(&me), card("4000000000000002"))
            .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{problem}");
        assert_eq!(problem["type"], "/problems/payment-declined");
        let order_id = problem["order_id"].as_str().unwrap();
        assert_eq!(app.settled(&lamp).await, (10, 0), "stock as it was");
        let (_, order) = app.get(&format!("/api/orders/{order_id}"), Some(&me)).await;
        assert_eq!(order["status"], "failed");
        assert_eq!(order["failure"]["kind"], "payment_declined");
        let (_, payment) = app
            .get(&format!("/api/orders/{order_id}/payment"), Some(&me))
            .await;
        assert_eq!(payment["status"], "failed");
        assert_eq!(payment["decline_code"], "card_declined");
        // The cart is kept, to pay another way: the same lines in a cart of its own.
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        assert_ne!(cart["id"], order_id, "{cart}");
        assert_eq!(cart["lines"][0]["product_id"], lamp.as_str(), "{cart}");
        assert_eq!(cart["item_count"], 3, "{cart}");
        assert_eq!(cart["total_minor"], 15000, "{cart}");

        for (mode, code) in [
            (
                json!({"payment_mode": "UPI", "upi_id": "fail@okbank"}),
                "upi_declined",
            ),
            (
                json!({"payment_mode": "NET_BANKING", "bank_code": "FAIL"}),
                "bank_declined",
            ),
            (card("4000000000009995"), "insufficient_funds"),
            // EMI under 3,000.00 is not offered.
            (
                json!({"payment_mode": "EMI", "emi_months": 3,
                "card": {"number": "4242424242424242", "expiry": "01/40", "cvv": "999"}}),
                "emi_not_eligible",
            ),
        ] {
            // Each decline leaves the same three lamps in the cart for the next way to pay.
            let (_, cart) = app.get("/api/cart", Some(&me)).await;
            assert_eq!(cart["item_count"], 3, "{cart}");
            let (status, problem) = app.post("/api/checkout", Some(&me), mode).await;
            assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{problem}");
            let id = problem["order_id"].as_str().unwrap();
            let (_, payment) = app
                .get(&format!("/api/orders/{id}/payment"), Some(&me))
                .await;
            assert_eq!(payment["decline_code"], code);
        }
        assert_eq!(app.settled(&lamp).await, (10, 0));
    }
);

on_both!(
    short_stock_answers_409_and_holds_nothing,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 1000, 5).await;
        let cup = app.product(&admin, "CUP", 1000, 5).await;
        let me = app.token("asha", "customer").await;
        app.add_to_cart(&me, &tea, 2).await;
        app.add_to_cart(&me, &cup, 5).await;
        // The stock shrinks between cart and checkout.
        let (status, _) = app
            .post(
                &format!("/api/products/{cup}/reduce"),
                Some(&admin),
                json!({"quantity": 3}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, problem) = app
            .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["type"], "/problems/out-of-stock");
        assert!(
            problem["detail"].as_str().unwrap().contains("only 2"),
            "{problem}"
        );
        assert_eq!(
            app.settled(&tea).await,
            (5, 0),
            "the line that fit was released too"
        );
        assert_eq!(app.settled(&cup).await, (2, 0));
        let id = problem["order_id"].as_str().unwrap();
        let (status, _) = app
            .get(&format!("/api/orders/{id}/payment"), Some(&me))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no payment was attempted");

        // What could be had is back in the cart: all the tea, the two cups left.
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        let quantity_of = |product: &str| {
            cart["lines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["product_id"] == product)
                .map(|l| l["quantity"].as_i64().unwrap())
        };
        assert_eq!(quantity_of(&tea), Some(2), "{cart}");
        assert_eq!(quantity_of(&cup), Some(2), "{cart}");
        let (status, order) = app
            .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!(order["total_minor"], 4000, "{order}");

        // A product with none left does not come back at all.
        let stock = |product: &str, change: &str| {
            let (app, admin) = (&app, &admin);
            let path = format!("/api/products/{product}/{change}");
            async move {
                let (status, _) = app.post(&path, Some(admin), json!({"quantity": 1})).await;
                assert_eq!(status, StatusCode::OK);
            }
        };
        stock(&cup, "restock").await;
        app.add_to_cart(&me, &tea, 1).await;
        app.add_to_cart(&me, &cup, 1).await;
        stock(&cup, "reduce").await;
        let (status, problem) = app
            .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        let lines = cart["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "{cart}");
        assert_eq!(lines[0]["product_id"], tea.as_str(), "{cart}");
        assert_eq!(cart["item_count"], 1, "{cart}");
    }
);

on_both!(
    idempotency_key_makes_one_order_and_one_payment,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 1000, 50).await;
        let me = app.token("asha", "customer").await;
        app.add_to_cart(&me, &tea, 2).await;
        let body = json!({"payment_mode": "UPI", "upi_id": "asha@okbank"});
        let key = [("idempotency-key", "retry-me-1")];
        let (s1, _, first) = app
            .call_with(
                Method::POST,
                "/api/checkout",
                Some(&me),
                Some(body.clone()),
                &key,
            )
            .await;
        // Something new in the cart must not be swept into the retried checkout.
        app.add_to_cart(&me, &tea, 1).await;
        let (s2, _, second) = app
            .call_with(
                Method::POST,
                "/api/checkout",
                Some(&me),
                Some(body.clone()),
                &key,
            )
            .await;
        assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
        assert_eq!(first["id"], second["id"]);
        assert_eq!(second["total_minor"], 2000);
        let (_, orders) = app.get("/api/orders", Some(&me)).await;
        assert_eq!(orders["total"], 1, "one order: {orders}");
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        assert_eq!(cart["item_count"], 1, "the new item waits in a new cart");
        assert_eq!(app.settled(&tea).await, (48, 0), "charged and sold once");

        // The same key with a different request is a mistake the client must hear about.
        let other = json!({"payment_mode": "CASH"});
        let (status, _, problem) = app
            .call_with(Method::POST, "/api/checkout", Some(&me), Some(other), &key)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

        // Keys are per user: another shopper's identical key is theirs alone.
        let bela = app.token("bela", "customer").await;
        app.add_to_cart(&bela, &tea, 1).await;
        let (status, _, theirs) = app
            .call_with(Method::POST, "/api/checkout", Some(&bela), Some(body), &key)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_ne!(theirs["id"], first["id"]);
    }
);

async fn slow_saga_answers_202(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| s.checkout.wait_ms = 0).await else {
        return;
    };
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 1000, 5).await;
    let me = app.token("asha", "customer").await;
    app.add_to_cart(&me, &tea, 1).await;
    let (status, headers, order) = app
        .call_with(
            Method::POST,
            "/api/checkout",
            Some(&me),
            Some(json!({"payment_mode": "CASH"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    let location = headers["location"].to_str().unwrap();
    let done = app
        .eventually(location, &me, |o| o["status"] == "completed")
        .await;
    assert_eq!(done["id"], order["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_saga_answers_202_with_a_location_to_poll_sqlite() {
    slow_saga_answers_202(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_saga_answers_202_with_a_location_to_poll_postgres() {
    slow_saga_answers_202(Backend::Postgres).await;
}
