//! Many buyers, few units: never oversold.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

on_both!(
    two_hundred_buyers_fifty_units_exactly_fifty_sold,
    |app: TestApp| async move {
        let app = Arc::new(app);
        let admin = app.token("admin", "admin").await;
        let phone = app.product(&admin, "PHONE", 999900, 50).await;

        let mut shoppers = Vec::new();
        for i in 0..200 {
            let app = app.clone();
            let phone = phone.clone();
            shoppers.push(tokio::spawn(async move {
                let token = app.token(&format!("buyer{i}"), "customer").await;
                app.add_to_cart(&token, &phone, 1).await;
                token
            }));
        }
        let mut tokens = Vec::new();
        for s in shoppers {
            tokens.push(s.await.unwrap());
        }

        let checkouts: Vec<_> = tokens
            .into_iter()
            .map(|token| {
                let app = app.clone();
                tokio::spawn(async move {
                    app.post(
                        "/api/checkout",
                        Some(&token),
                        json!({"payment_mode": "CASH"}),
                    )
                    .await
                })
            })
            .collect();
        let (mut completed, mut rejected) = (0, 0);
        for c in checkouts {
            let (status, body) = c.await.unwrap();
            match status {
                StatusCode::CREATED => completed += 1,
                StatusCode::CONFLICT => {
                    assert_eq!(body["type"], "/problems/out-of-stock", "{body}");
                    rejected += 1
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!((completed, rejected), (50, 150));
        let (on_hand, reserved) = app.settled(&phone).await;
        assert_eq!((on_hand, reserved), (0, 0));
        let (_, p) = app.get(&format!("/api/products/{phone}"), None).await;
        assert_eq!(p["available"], 0);
        let (_, done) = app.get("/api/orders?status=completed", Some(&admin)).await;
        assert_eq!(done["total"], 50);
    }
);

on_both!(
    one_shopper_racing_themselves_gets_one_cart_and_one_order,
    |app: TestApp| async move {
        let app = Arc::new(app);
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 1000, 1000).await;
        let me = app.token("asha", "customer").await;

        // Twenty tabs add to a cart that does not exist yet.
        let adds: Vec<_> = (0..20)
            .map(|_| {
                let (app, me, tea) = (app.clone(), me.clone(), tea.clone());
                tokio::spawn(async move {
                    app.post(
                        "/api/cart/items",
                        Some(&me),
                        json!({"product_id": tea, "quantity": 1}),
                    )
                    .await
                })
            })
            .collect();
        for add in adds {
            let (status, body) = add.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        assert_eq!(cart["item_count"], 20, "one cart holds every add: {cart}");

        // Ten retries of one checkout with one key, at once: one order, one payment.
        let key = "double-click";
        let checkouts: Vec<_> = (0..10)
            .map(|_| {
                let (app, me) = (app.clone(), me.clone());
                tokio::spawn(async move {
                    app.call_with(
                        reqwest::Method::POST,
                        "/api/checkout",
                        Some(&me),
                        Some(json!({"payment_mode": "CASH"})),
                        &[("idempotency-key", key)],
                    )
                    .await
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for c in checkouts {
            let (status, _, body) = c.await.unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            ids.insert(body["id"].as_str().unwrap().to_string());
        }
        assert_eq!(ids.len(), 1, "every retry answered with the same order");
        let (_, orders) = app.get("/api/orders", Some(&me)).await;
        assert_eq!(orders["total"], 1);
        assert_eq!(app.settled(&tea).await, (980, 0), "sold once");
    }
);

on_both!(
    admin_writes_go_through_while_checkouts_run,
    |app: TestApp| async move {
        // An admin restocking, editing and adding products while shoppers check out: every
        // admin write must land (on SQLite they once raced the checkouts' writer for the
        // database's one write lock and lost with "database is locked").
        let app = Arc::new(app);
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 1000, 10_000).await;
        let shoppers: Vec<_> = (0..4)
            .map(|i| {
                let (app, tea) = (app.clone(), tea.clone());
                tokio::spawn(async move {
                    let me = app.token(&format!("buyer{i}"), "customer").await;
                    for _ in 0..10 {
                        app.add_to_cart(&me, &tea, 1).await;
                        let (status, body) = app
                            .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
                            .await;
                        assert_eq!(status, StatusCode::CREATED, "{body}");
                    }
                })
            })
            .collect();
        let mut restocked = 0;
        for i in 0..15 {
            let (status, body) = app
                .post(
                    &format!("/api/products/{tea}/restock"),
                    Some(&admin),
                    json!({"quantity": 1}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "restock {i}: {body}");
            restocked += 1;
            let (status, body) = app
                .call(
                    reqwest::Method::PATCH,
                    &format!("/api/products/{tea}"),
                    Some(&admin),
                    Some(json!({"description": format!("edit {i}")})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "edit {i}: {body}");
            let (status, body) = app
                .post(
                    "/api/products",
                    Some(&admin),
                    json!({"sku": format!("NEW-{i}"), "name": format!("New {i}"),
                        "description": "", "price_minor": 100, "currency": "INR",
                        "quantity": 1}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "create {i}: {body}");
        }
        for shopper in shoppers {
            shopper.await.unwrap();
        }
        let (on_hand, reserved) = app.settled(&tea).await;
        assert_eq!((on_hand, reserved), (10_000 + restocked - 40, 0));
    }
);
