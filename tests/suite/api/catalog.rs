use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

on_both!(
    demo_catalog_is_listed_paged_sorted_and_searchable,
    |app: TestApp| async move {
        let (status, page) = app.get("/api/products?per_page=5&page=2", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page["total"].as_i64().unwrap() >= 20,
            "demo catalog seeded: {page}"
        );
        assert_eq!(page["items"].as_array().unwrap().len(), 5);
        assert_eq!(page["page"], 2);

        let (_, by_price) = app
            .get("/api/products?sort=-price&per_page=100", None)
            .await;
        let prices: Vec<i64> = by_price["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["price_minor"].as_i64().unwrap())
            .collect();
        assert!(
            prices.windows(2).all(|w| w[0] >= w[1]),
            "descending prices: {prices:?}"
        );

        let (_, found) = app.get("/api/products?q=COFFEE", None).await;
        assert_eq!(found["total"], 1, "{found}");
        let coffee = &found["items"][0];
        assert_eq!(coffee["available"], coffee["on_hand"]);
        let (status, one) = app
            .get(
                &format!("/api/products/{}", coffee["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["sku"], "COFFEE-COORG-500");

        // A search with LIKE wildcards matches them literally.
        let (_, none) = app.get("/api/products?q=%25_%25", None).await;
        assert_eq!(none["total"], 0);
    }
);

on_both!(
    admin_manages_stock_and_customers_cannot,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let shopper = app.token("shopper", "customer").await;
        let new = json!({"sku": "MUG-1", "name": "Mug", "description": "a mug",
                     "price_minor": 25000, "currency": "INR", "quantity": 10});

        let (status, body) = app.post("/api/products", None, new.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = app.post("/api/products", Some(&shopper), new.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["type"], "/problems/forbidden");

        let (status, created) = app.post("/api/products", Some(&admin), new.clone()).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = created["id"].as_str().unwrap();
        assert_eq!(
            (created["on_hand"].as_i64(), created["available"].as_i64()),
            (Some(10), Some(10))
        );

        let (status, dup) = app.post("/api/products", Some(&admin), new).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(dup["type"], "/problems/duplicate-sku");

        let (status, patched) = app
            .call(
                Method::PATCH,
                &format!("/api/products/{id}"),
                Some(&admin),
                Some(json!({"name": "Big Mug", "price_minor": 30000})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (patched["name"].as_str(), patched["price_minor"].as_i64()),
            (Some("Big Mug"), Some(30000))
        );

        let (status, restocked) = app
            .post(
                &format!("/api/products/{id}/restock"),
                Some(&admin),
                json!({"quantity": 5}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(restocked["on_hand"], 15);
        let (status, reduced) = app
            .post(
                &format!("/api/products/{id}/reduce"),
                Some(&admin),
                json!({"quantity": 15}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reduced["on_hand"], 0);
        let (status, body) = app
            .post(
                &format!("/api/products/{id}/reduce"),
                Some(&admin),
                json!({"quantity": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _) = app
            .post(
                &format!("/api/products/{id}/restock"),
                Some(&shopper),
                json!({"quantity": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app
            .post(
                "/api/products/nope/restock",
                Some(&admin),
                json!({"quantity": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = app.get("/api/products/nope", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["status"], 404);
    }
);

on_both!(health_and_spec_are_served, |app: TestApp| async move {
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let (status, spec) = app.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/api/products",
        "/api/products/{id}",
        "/api/products/{id}/restock",
        "/api/products/{id}/reduce",
        "/api/cart",
        "/api/cart/items",
        "/api/cart/items/{product_id}",
        "/api/checkout",
        "/api/orders",
        "/api/orders/{id}",
        "/api/orders/{id}/cancel",
        "/api/orders/{id}/payment",
        "/auth/dev/token",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "spec lacks {path}");
    }
    let res = app
        .client
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Ekart"));
});
