//! The gateway in front of modules that run in other processes: every API path is routed to
//! its module, a dead instance is skipped, and a dead module gets a breaker that answers 503
//! at once. No broker needed: these processes are given an address where none listens (the
//! HTTP side works without one).

use std::collections::BTreeSet;

use ekart::config::{BusKind, Module, Settings};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Backend, TestApp};

fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Splits the process: it runs `run` and finds stock at `stock`.
fn split(s: &mut Settings, run: &[Module], stock: Vec<String>) {
    s.bus.kind = BusKind::Kafka;
    s.bus.kafka.brokers = vec![closed_address()];
    s.auth.session_secret = "gateway-test-secret-that-is-long-enough-0".into();
    s.modules.run = run.to_vec();
    s.modules.stock.instances = stock;
    s.gateway.health_interval_ms = 100;
    s.gateway.breaker.minimum_calls = 3;
    s.gateway.breaker.window = 5;
    s.gateway.breaker.open_ms = 60_000;
}

const REST: [Module; 5] = [
    Module::Gateway,
    Module::Frontend,
    Module::Order,
    Module::Payment,
    Module::User,
];

/// The API paths `app`'s OpenAPI document describes, health checks aside.
async fn described_paths(app: &TestApp) -> BTreeSet<String> {
    let (_, spec) = app.get("/api/openapi.json", None).await;
    spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| !matches!(p.as_str(), "/healthz" | "/readyz"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_api_path_belongs_to_exactly_one_module() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let served = described_paths(&app).await;
    let mut routed = BTreeSet::new();
    for module in Module::ALL {
        for path in module.paths() {
            assert!(routed.insert(path.clone()), "{path} is routed twice");
        }
    }
    // Browser-only sign-in flows of OIDC mode: routed, but not part of the JSON API.
    for oidc_only in ekart::modules::user::oidc::PATHS {
        assert!(routed.remove(oidc_only), "{oidc_only} is routed");
    }
    assert_eq!(served, routed);
}

#[tokio::test]
async fn a_dead_instance_is_skipped_and_a_dead_module_fails_fast() {
    let stock = TestApp::spawn_with(Backend::Sqlite, |s| split(s, &[Module::Stock], vec![]))
        .await
        .unwrap();
    let dead = format!("http://{}", closed_address());
    let shop = TestApp::spawn_with(Backend::Sqlite, |s| {
        // A host name: each address it resolves to is an instance of its own.
        let live = stock.base.replace("127.0.0.1", "localhost");
        split(s, &REST, vec![dead, live]);
        s.server.metrics_addr = "127.0.0.1:0".into();
    })
    .await
    .unwrap();

    // The gateway describes the whole shop, the stock module it routes elsewhere included.
    let whole = TestApp::spawn(Backend::Sqlite).await.unwrap();
    assert_eq!(described_paths(&shop).await, described_paths(&whole).await);

    // One of two instances is dead: every call still lands on the live one.
    for _ in 0..6 {
        let (status, page) = shop.get("/api/products?per_page=1", None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
    }
    let me = shop.token("asha", "customer").await;
    let (_, products) = stock.get("/api/products?per_page=1", None).await;
    let tea = products["items"][0]["id"].as_str().unwrap().to_string();
    shop.add_to_cart(&me, &tea, 1).await;

    // No live instance: 503 problems naming the module, then the breaker opens.
    drop(stock);
    let mut open = false;
    for _ in 0..20 {
        let res = shop
            .client
            .get(format!("{}/api/products", shop.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = res.headers().contains_key("retry-after");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/module-unavailable");
        assert_eq!(problem["module"], "stock");
        if retry_after {
            open = true;
            break;
        }
    }
    assert!(open, "the breaker opened");
    let metrics = shop
        .client
        .get(format!("{}/metrics", shop.metrics.as_ref().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "ekart_breaker_state{module=\"stock\"} 1",
        "ekart_remote_calls_total{module=\"stock\",outcome=\"rejected by the open breaker\"}",
        "ekart_http_requests_total{method=\"GET\",status=\"503\"}",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // The order module's own calls to stock meet the same breaker.
    let res = shop
        .client
        .post(format!("{}/api/cart/items", shop.base))
        .bearer_auth(&me)
        .json(&serde_json::json!({"product_id": tea, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The cart still shows what was in it: it lives in the order module.
    let (status, cart) = shop.get("/api/cart", Some(&me)).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert_eq!(cart["lines"][0]["quantity"], 1);
    // The storefront answers a page saying so.
    let page = shop
        .client
        .get(format!("{}/", shop.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
}
