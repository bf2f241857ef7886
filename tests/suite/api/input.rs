//! Hostile and malformed input: always a 4xx problem document, never a change, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

on_both!(
    bad_input_is_a_problem_and_changes_nothing,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let url = |p: &str| format!("{}{p}", app.base);
        let send = |req: reqwest::RequestBuilder| async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let ctype = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (status, ctype, body)
        };
        let (_, before) = app.get("/api/products?per_page=100", None).await;
        let unpooled = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();

        let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        // Malformed JSON, wrong types, unknown fields, out-of-range numbers.
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .header("content-type", "application/json").body("{\"sku\": "), StatusCode::BAD_REQUEST),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "X", "price_minor": "ten", "currency": "INR", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "X", "price_minor": 100, "currency": "INR", "quantity": 1, "admin": true})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "X", "price_minor": 0, "currency": "INR", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "X", "price_minor": -5, "currency": "INR", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "X", "price_minor": 1e30, "currency": "INR", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "", "price_minor": 100, "currency": "INR", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X Y", "name": "X", "price_minor": 100, "currency": "INR", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/api/products")).bearer_auth(&admin)
            .json(&json!({"sku": "X", "name": "X", "price_minor": 100, "currency": "rupees", "quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY),
        // No content type; an oversized body.
        (app.client.post(url("/api/products")).bearer_auth(&admin).body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE),
        // On a connection of its own: the server answers before reading the whole body and
        // closes it, which a pooled connection would pass on to the next request.
        (unpooled.post(url("/api/products")).bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(format!("{{\"sku\":\"X\",\"name\":\"X\",\"description\":\"{}\"}}", "a".repeat(200_000))),
            StatusCode::PAYLOAD_TOO_LARGE),
        // Bad queries and paths.
        (app.client.get(url("/api/products?per_page=0")), StatusCode::BAD_REQUEST),
        (app.client.get(url("/api/products?per_page=abc")), StatusCode::BAD_REQUEST),
        (app.client.get(url("/api/products?sort=drop%20table")), StatusCode::BAD_REQUEST),
        (app.client.get(url("/api/products?page=-1")), StatusCode::BAD_REQUEST),
        (app.client.get(format!("{}?q={}", url("/api/products"), "x".repeat(500))), StatusCode::BAD_REQUEST),
        (app.client.get(url("/api/products/%27%20OR%201=1--")), StatusCode::NOT_FOUND),
        (app.client.get(url("/api/orders?status=shipped")).bearer_auth(&admin), StatusCode::BAD_REQUEST),
        (app.client.get(url("/no/such/page")), StatusCode::NOT_FOUND),
        (app.client.delete(url("/api/products")), StatusCode::METHOD_NOT_ALLOWED),
        // Tokens that are not ours.
        (app.client.get(url("/api/cart")).bearer_auth("not-a-jwt"), StatusCode::UNAUTHORIZED),
        (app.client.get(url("/api/cart")).header("authorization", "Basic YTpi"), StatusCode::UNAUTHORIZED),
        (app.client.get(url("/api/cart")).bearer_auth(
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwibmFtZSI6IngiLCJlbWFpbCI6IngiLCJyb2xlIjoiYWRtaW4iLCJpc3MiOiJla2FydC1kZXYiLCJpYXQiOjAsImV4cCI6OTk5OTk5OTk5OX0."),
            StatusCode::UNAUTHORIZED),
        // Dev sign-in with nonsense.
        (app.client.post(url("/auth/dev/token")).json(&json!({"name": "x", "email": "nope", "role": "customer"})),
            StatusCode::UNPROCESSABLE_ENTITY),
        (app.client.post(url("/auth/dev/token")).json(&json!({"name": "x", "email": "x@example.com", "role": "root"})),
            StatusCode::UNPROCESSABLE_ENTITY),
    ];
        for (i, (req, expected)) in cases.into_iter().enumerate() {
            let (status, ctype, body) = send(req).await;
            assert_eq!(status, expected, "case {i}: {body}");
            assert_eq!(
                ctype.as_deref(),
                Some("application/problem+json"),
                "case {i}"
            );
            assert_eq!(body["status"], expected.as_u16(), "case {i}: {body}");
            assert!(
                body["type"].as_str().unwrap().starts_with("/problems/"),
                "case {i}"
            );
        }

        // Checkout with bad payment details: refused before anything is placed.
        let me = app.token("asha", "customer").await;
        let tea = before["items"][0]["id"].as_str().unwrap();
        app.add_to_cart(&me, tea, 1).await;
        for bad in [
            json!({"payment_mode": "CARD", "card": {"number": "1234", "expiry": "12/39", "cvv": "123"}}),
            json!({"payment_mode": "CARD", "card": {"number": "4242424242424242", "expiry": "01/20", "cvv": "123"}}),
            json!({"payment_mode": "UPI"}),
            json!({"payment_mode": "UPI", "upi_id": "no-at-sign"}),
            json!({"payment_mode": "GOLD"}),
            json!({"payment_mode": "CASH", "extra": 1}),
            json!({}),
        ] {
            let (status, body) = app.post("/api/checkout", Some(&me), bad.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        }
        let (status, _, body) = app
            .call_with(
                Method::POST,
                "/api/checkout",
                Some(&me),
                Some(json!({"payment_mode": "CASH"})),
                &[("idempotency-key", &"k".repeat(300))],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        assert_eq!(cart["item_count"], 1, "the cart is still a cart");
        let (_, orders) = app.get("/api/orders", Some(&me)).await;
        assert_eq!(orders["total"], 0);

        let (_, after) = app.get("/api/products?per_page=100", None).await;
        assert_eq!(before["total"], after["total"], "no product was created");
    }
);
