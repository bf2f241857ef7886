use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

on_both!(cart_add_change_remove, |app: TestApp| async move {
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 10000, 10).await;
    let cup = app.product(&admin, "CUP", 2500, 10).await;
    let me = app.token("asha", "customer").await;

    let (status, empty) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["id"], serde_json::Value::Null);
    assert_eq!(empty["total_minor"], 0);

    app.add_to_cart(&me, &tea, 2).await;
    app.add_to_cart(&me, &tea, 1).await;
    app.add_to_cart(&me, &cup, 4).await;
    let (_, cart) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(cart["item_count"], 7);
    assert_eq!(cart["total_minor"], 3 * 10000 + 4 * 2500);

    let (status, cart) = app
        .call(
            Method::PATCH,
            &format!("/api/cart/items/{cup}"),
            Some(&me),
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cart["total_minor"], 3 * 10000 + 2500);

    let (status, cart) = app
        .call(
            Method::DELETE,
            &format!("/api/cart/items/{tea}"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cart["total_minor"], 2500);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/cart/items/{tea}"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/cart/items/{tea}"),
            Some(&me),
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // More than is available, an unknown product, a zero quantity: refused, cart unchanged.
    let (status, body) = app
        .post(
            "/api/cart/items",
            Some(&me),
            json!({"product_id": tea, "quantity": 11}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = app
        .post(
            "/api/cart/items",
            Some(&me),
            json!({"product_id": "nope", "quantity": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post(
            "/api/cart/items",
            Some(&me),
            json!({"product_id": tea, "quantity": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, after) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(after["total_minor"], 2500);

    // Someone else's cart is their own.
    let other = app.token("bela", "customer").await;
    let (_, theirs) = app.get("/api/cart", Some(&other)).await;
    assert_eq!(theirs["id"], serde_json::Value::Null);
    let (status, _) = app.get("/api/cart", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
});

on_both!(
    each_add_answers_the_cart_as_read_back,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 10000, 10).await;
        let cup = app.product(&admin, "CUP", 2500, 10).await;
        let me = app.token("asha", "customer").await;

        // The first add makes the cart, and its answer is built without reading it back:
        // it must be what reading it back gives.
        for (product, quantity) in [(&tea, 2), (&tea, 1), (&cup, 4)] {
            let (status, added) = app
                .post(
                    "/api/cart/items",
                    Some(&me),
                    json!({"product_id": product, "quantity": quantity}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{added}");
            let (_, cart) = app.get("/api/cart", Some(&me)).await;
            assert_eq!(added, cart);
        }
        let (_, cart) = app.get("/api/cart", Some(&me)).await;
        assert_eq!(cart["lines"][0]["name"], "Product TEA");
        assert_eq!(cart["lines"][0]["line_total_minor"], 3 * 10000);
        assert_eq!(cart["currency"], "INR");
    }
);
