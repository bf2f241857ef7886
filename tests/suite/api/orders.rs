use reqwest::StatusCode;
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

on_both!(
    orders_are_private_and_cancel_refunds,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 1500, 20).await;
        let asha = app.token("asha", "customer").await;
        let bela = app.token("bela", "customer").await;

        app.add_to_cart(&asha, &tea, 4).await;
        let (status, order) = app
            .post(
                "/api/checkout",
                Some(&asha),
                json!({"payment_mode": "UPI", "upi_id": "asha@okbank"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let id = order["id"].as_str().unwrap().to_string();
        app.add_to_cart(&bela, &tea, 1).await;
        let (status, _) = app
            .post(
                "/api/checkout",
                Some(&bela),
                json!({"payment_mode": "CASH"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);

        // Another shopper sees nothing of it: 404 everywhere, never 403.
        for path in [
            format!("/api/orders/{id}"),
            format!("/api/orders/{id}/payment"),
        ] {
            let (status, body) = app.get(&path, Some(&bela)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        }
        let (status, _) = app
            .post(&format!("/api/orders/{id}/cancel"), Some(&bela), json!({}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, theirs) = app.get("/api/orders", Some(&bela)).await;
        assert_eq!(theirs["total"], 1);
        let (_, all) = app.get("/api/orders", Some(&admin)).await;
        assert_eq!(all["total"], 2, "admin sees every order");
        let (_, mine) = app
            .get("/api/orders?status=completed&per_page=1", Some(&asha))
            .await;
        assert_eq!(mine["total"], 1);
        assert_eq!(mine["items"][0]["lines"][0]["quantity"], 4);
        let (_, failed) = app.get("/api/orders?status=failed", Some(&asha)).await;
        assert_eq!(failed["total"], 0);
        let (status, _) = app.get(&format!("/api/orders/{id}"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(app.settled(&tea).await, (15, 0));

        let (status, cancelled) = app
            .post(&format!("/api/orders/{id}/cancel"), Some(&asha), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        let payment = app
            .eventually(&format!("/api/orders/{id}/payment"), &asha, |p| {
                p["status"] == "refunded"
            })
            .await;
        assert!(payment["refund_reference"]
            .as_str()
            .unwrap()
            .starts_with("RFD-"));
        app.eventually(&format!("/api/orders/{id}"), &asha, |o| {
            !o["refunded_at"].is_null()
        })
        .await;
        for _ in 0..100 {
            if app.stock_of(&tea).await == (19, 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(app.stock_of(&tea).await, (19, 0), "the four units are back");

        let (status, again) = app
            .post(&format!("/api/orders/{id}/cancel"), Some(&asha), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        assert_eq!(again["type"], "/problems/order-final");
    }
);
