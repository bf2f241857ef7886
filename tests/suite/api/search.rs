//! Catalog search on each engine's own full-text index: the same answers on SQLite (FTS5) and
//! PostgreSQL (`tsvector`), whatever a shopper types.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both;
use crate::support::{Backend, TestApp};

/// Creates a product as `admin`; answers its id.
async fn add(app: &TestApp, admin: &str, sku: &str, name: &str, description: &str) -> String {
    let (status, body) = app
        .post(
            "/api/products",
            Some(admin),
            json!({"sku": sku, "name": name, "description": description,
                   "price_minor": 1000, "currency": "INR", "quantity": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// The SKUs a search answers, best first.
async fn skus(app: &TestApp, q: &str) -> Vec<String> {
    let (status, page) = app
        .get(
            &format!("/api/products?per_page=100&q={}", urlencoding(q)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "q={q}: {page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(
        page["total"].as_u64(),
        Some(items.len() as u64),
        "q={q}: {page}"
    );
    assert_eq!(page["total_capped"], false);
    items
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_string())
        .collect()
}

/// `q` percent-encoded for a query string, every byte but letters and digits.
fn urlencoding(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

on_both!(
    search_folds_case_and_accents_matches_prefixes_and_ranks_names_first,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        add(
            &app,
            &admin,
            "PAT-ECL-1",
            "Éclair au Chocolat",
            "A choux pastry.",
        )
        .await;
        add(
            &app,
            &admin,
            "PAT-TART-2",
            "Lemon Tart",
            "Good with an éclair or two.",
        )
        .await;
        add(&app, &admin, "QKW-100", "Quokkaware Bowl", "Stoneware.").await;
        add(
            &app,
            &admin,
            "QKW-200",
            "Plain Bowl",
            "From the QUOKKAWARE range.",
        )
        .await;

        // Accents and case fold both ways; the name outranks the description.
        for q in ["eclair", "ÉCLAIR", "Eclair", "éclair"] {
            assert_eq!(skus(&app, q).await, ["PAT-ECL-1", "PAT-TART-2"], "q={q}");
        }
        // Every word counts, each as a prefix: search as you type.
        assert_eq!(skus(&app, "ecl").await, ["PAT-ECL-1", "PAT-TART-2"]);
        assert_eq!(skus(&app, "eclair choc").await, ["PAT-ECL-1"]);
        assert_eq!(skus(&app, "Quokka").await, ["QKW-100", "QKW-200"]);
        assert_eq!(skus(&app, "quokkaware stone").await, ["QKW-100"]);
        // Long words too, past the eight letters kept as beginnings of their own.
        assert_eq!(skus(&app, "QUOKKAWAR").await, ["QKW-100", "QKW-200"]);
        assert_eq!(skus(&app, "chocolat").await, ["PAT-ECL-1"]);
        assert!(skus(&app, "quokkawares").await.is_empty());
        // The SKU is searched too, by its parts.
        assert_eq!(skus(&app, "qkw 200").await, ["QKW-200"]);
        // Words that are in no product, or only in the middle of one, find nothing.
        assert!(skus(&app, "zzqx").await.is_empty());
        assert!(skus(&app, "clair").await.is_empty());
    }
);

on_both!(an_exact_sku_comes_first, |app: TestApp| async move {
    let admin = app.token("admin", "admin").await;
    add(&app, &admin, "ORB-SHADE-1", "Orb Shade", "An orb, an orb.").await;
    add(&app, &admin, "ORB", "Desk Light", "Brass.").await;
    add(&app, &admin, "ORB-2", "Orb Orb Orb", "Orb.").await;

    assert_eq!(skus(&app, "orb").await[0], "ORB");
    assert_eq!(skus(&app, "ORB-2").await[0], "ORB-2");
    assert_eq!(skus(&app, "orb-shade-1").await, ["ORB-SHADE-1"]);
});

on_both!(
    a_renamed_or_deleted_product_leaves_the_index_at_once,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let id = add(&app, &admin, "KTL-1", "Zephyrine Kettle", "Copper.").await;
        assert_eq!(skus(&app, "zephyrine").await, ["KTL-1"]);

        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/api/products/{id}"),
                Some(&admin),
                Some(json!({"name": "Halcyon Kettle", "description": "Steel.", "sku": "KTL-9"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(skus(&app, "zephyrine").await.is_empty());
        assert!(skus(&app, "copper").await.is_empty());
        assert!(skus(&app, "KTL-1").await.is_empty());
        assert_eq!(skus(&app, "halcyon steel").await, ["KTL-9"]);
        assert_eq!(skus(&app, "KTL-9").await, ["KTL-9"]);

        // A shopper cannot delete; an admin can, and the product is gone from search and by id.
        let shopper = app.token("shopper", "customer").await;
        let path = format!("/api/products/{id}");
        let (status, _) = app.call(Method::DELETE, &path, Some(&shopper), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.call(Method::DELETE, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(skus(&app, "halcyon").await.is_empty());
        assert!(skus(&app, "KTL-9").await.is_empty());
        let (status, _) = app.get(&path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = app.call(Method::DELETE, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
);

on_both!(
    a_product_in_orders_is_not_deleted,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let shopper = app.token("buyer", "customer").await;
        let id = app.product(&admin, "SOLD-1", 1000, 5).await;
        app.add_to_cart(&shopper, &id, 1).await;
        let card = json!({"payment_mode": "CARD",
                          "card": {"number": "4242424242424242", "expiry": "12/39", "cvv": "123"}});
        let (status, order) = app.post("/api/checkout", Some(&shopper), card).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        app.settled(&id).await;

        let path = format!("/api/products/{id}");
        let (status, body) = app.call(Method::DELETE, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["type"], "/problems/product-in-orders");
        assert_eq!(skus(&app, "SOLD-1").await, ["SOLD-1"]);
    }
);

on_both!(hostile_queries_are_only_text, |app: TestApp| async move {
    let admin = app.token("admin", "admin").await;
    add(
        &app,
        &admin,
        "NEAR-1",
        "Near Field Speaker",
        "Plays AND records.",
    )
    .await;

    // Each engine's query syntax, typed into the search box, is searched as words.
    assert_eq!(skus(&app, "NEAR").await, ["NEAR-1"]);
    assert_eq!(skus(&app, "near(field speaker)").await, ["NEAR-1"]);
    assert_eq!(skus(&app, "\"field\"* AND speak").await, ["NEAR-1"]);
    assert_eq!(skus(&app, "speaker:near").await, ["NEAR-1"]);
    assert_eq!(skus(&app, "speaker & !field").await, ["NEAR-1"]);
    assert_eq!(skus(&app, "field:* | zzqx").await, Vec::<String>::new());

    let long = "near ".repeat(20);
    let hostile = [
        "*",
        "\"",
        "'",
        "''",
        "\\",
        "%",
        "_",
        "%_%",
        "(",
        ")",
        "NEAR",
        "NEAR(",
        "AND",
        "OR",
        "NOT",
        "-",
        "^near",
        "a:b",
        "!",
        "&",
        "|",
        ":*",
        "<->",
        "{}",
        "🙂",
        "; DROP TABLE products; --",
        "x' OR '1'='1",
        long.trim(),
    ];
    for q in hostile {
        let (status, page) = app
            .get(&format!("/api/products?q={}", urlencoding(q)), None)
            .await;
        assert_eq!(status, StatusCode::OK, "q={q:?}: {page}");
        assert!(page["items"].is_array(), "q={q:?}: {page}");
    }
    // A NUL is in no product and no text PostgreSQL holds: a clear 400 at the door.
    for path in ["/api/products?q=a%00b", "/api/products/a%00b", "/?q=%00"] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    // Too long is a clear 400, not a slow query.
    let (status, body) = app
        .get(&format!("/api/products?q={}", "near%20".repeat(30)), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The products table is still there.
    let (status, all): (StatusCode, Value) = app.get("/api/products", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(all["total"].as_i64().unwrap() > 20);
});

on_both!(
    a_search_read_by_cursor_goes_tier_by_tier_newest_first_and_shows_each_match_once,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        add(&app, &admin, "LMP-D1", "Desk Light", "A brass lamp.").await;
        add(&app, &admin, "LMP-N1", "Brass Lamp", "Tall.").await;
        add(&app, &admin, "BRASS", "Lamp Base", "Brass.").await;
        add(&app, &admin, "LMP-D2", "Reading Light", "Lamp of brass.").await;
        add(&app, &admin, "LMP-N2", "Small Brass Lamp", "Short.").await;
        add(&app, &admin, "LMP-X", "Brass Hook", "No light.").await;

        let mut seen = vec![];
        let mut path = "/api/products?q=brass%20lamp&per_page=2".to_string();
        loop {
            let (status, page) = app.get(&path, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["total"], 5, "{page}");
            for item in page["items"].as_array().unwrap() {
                seen.push(item["sku"].as_str().unwrap().to_string());
            }
            match page["next"].as_str() {
                Some(next) => path = next.to_string(),
                None => break,
            }
        }
        // Every word in the name first, then the words anywhere; newest first within each.
        assert_eq!(seen, ["LMP-N2", "LMP-N1", "LMP-D2", "BRASS", "LMP-D1"]);
        // A numbered page reads its way through the same order.
        let (_, page) = app
            .get("/api/products?q=brass%20lamp&per_page=2&page=2", None)
            .await;
        let page_skus: Vec<_> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["sku"].as_str().unwrap())
            .collect();
        assert_eq!(page_skus, ["LMP-D2", "BRASS"]);
        // An exact SKU is matched by its words too, but shown once, first.
        assert_eq!(
            skus(&app, "brass").await,
            ["BRASS", "LMP-X", "LMP-N2", "LMP-N1", "LMP-D2", "LMP-D1"]
        );
    }
);

/// A search page is kept until what it shows changes, wherever that change is made: two stock
/// stores on one database stand for two processes. Its products' stock is read afresh.
async fn a_kept_search_page_follows_every_change(url: String) {
    use ekart::modules::stock::StockStore;
    let dbs = ekart::app::Databases::open(&crate::support::test_settings(url))
        .await
        .unwrap();
    let (here, there) = (
        StockStore::new(dbs.stock.clone()),
        StockStore::new(dbs.stock.clone()),
    );
    let new = |sku: &str, name: &str| {
        serde_json::from_value(json!({"sku": sku, "name": name, "description": "",
            "price_minor": 1000, "currency": "INR", "quantity": 5}))
        .unwrap()
    };
    let search = |q: &str| {
        let query = serde_json::from_value(json!({"q": q})).unwrap();
        let here = here.clone();
        async move {
            let page = here.list(&query).await.unwrap();
            let shown: Vec<(String, i64, i64)> = page
                .items
                .iter()
                .map(|p| (p.sku.clone(), p.price_minor, p.available))
                .collect();
            (shown, page.total)
        }
    };
    let lamp = here.create(new("QL-1", "Quillon Lamp")).await.unwrap();
    assert_eq!(search("quillon").await, (vec![("QL-1".into(), 1000, 5)], 1));
    // Stock moves; the kept page shows it.
    there.restock(&lamp.id, 3).await.unwrap();
    assert_eq!(search("quillon").await, (vec![("QL-1".into(), 1000, 8)], 1));
    // A product added elsewhere, a price, a name: each is seen at once.
    there.create(new("QL-2", "Quillon Lantern")).await.unwrap();
    assert_eq!(search("quillon").await.1, 2);
    let patch = |v| serde_json::from_value(v).unwrap();
    there
        .update(&lamp.id, patch(json!({"price_minor": 1500})))
        .await
        .unwrap();
    assert!(search("quillon")
        .await
        .0
        .contains(&("QL-1".into(), 1500, 8)));
    there
        .update(&lamp.id, patch(json!({"name": "Plain Lamp"})))
        .await
        .unwrap();
    assert_eq!(search("quillon").await.1, 1);
    there.delete(&lamp.id).await.unwrap();
    assert_eq!(search("plain").await.1, 0);
}

#[tokio::test]
async fn a_kept_search_page_follows_every_change_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_kept_search_page_follows_every_change(format!("sqlite://{}/", dir.path().display())).await;
}

#[tokio::test]
async fn a_kept_search_page_follows_every_change_postgres() {
    if let Some(server) = crate::support::postgres_url() {
        let url = crate::support::scratch_postgres(&server).await;
        a_kept_search_page_follows_every_change(url).await;
    }
}
