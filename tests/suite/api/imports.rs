//! Bulk imports through the modules' stores (what `bench/scale.sh` seeds a million rows with):
//! what they add is searchable, listed and counted at once, and a bad batch adds nothing.

use ekart::app::Databases;
use ekart::config::Settings;
use ekart::gateway::auth::{Identity, Role};
use ekart::modules::order::{OrderStore, PastLine, PastOrder};
use ekart::modules::stock::model::NewProduct;
use ekart::modules::stock::StockStore;
use ekart::modules::user::UserStore;
use serde_json::json;

use crate::support::{Backend, TestApp};

fn product(sku: &str, name: &str) -> NewProduct {
    serde_json::from_value(json!({"sku": sku, "name": name, "price_minor": 700,
        "currency": "INR", "quantity": 4}))
    .unwrap()
}

async fn total(app: &TestApp, path: &str, token: Option<&str>) -> i64 {
    let (status, page) = app.get(path, token).await;
    assert!(status.is_success(), "{path}: {page}");
    page["total"].as_i64().unwrap()
}

/// Opens the running shop's databases beside it, as an import tool would.
async fn open(settings: &Settings) -> Databases {
    Databases::open(settings).await.unwrap()
}

fn stores(dbs: &Databases) -> (StockStore, OrderStore, UserStore) {
    (
        StockStore::new(dbs.stock.clone()),
        OrderStore::new(dbs.orders.clone()),
        UserStore::new(dbs.users.clone()),
    )
}

/// Closes what [`open`] opened, as an import tool does before it exits: pools left open
/// when the test's runtime shuts down can keep it from finishing.
async fn close(dbs: Databases) {
    for db in dbs.all() {
        db.close().await;
    }
}

async fn imported_rows_are_searched_listed_and_counted(backend: Backend) -> Option<()> {
    let mut settings = None;
    let app = TestApp::spawn_with(backend, |s| settings = Some(s.clone())).await?;
    let dbs = open(&settings.unwrap()).await;
    let (stock, orders, users) = stores(&dbs);
    let admin = app.token("admin", "admin").await;
    let before = total(&app, "/api/products", None).await;

    let ids = stock
        .import(vec![
            product("IMP-1", "Imported Samovar"),
            product("IMP-2", "Imported Teacup"),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(total(&app, "/api/products", None).await, before + 2);
    assert_eq!(total(&app, "/api/products?q=samovar", None).await, 1);
    // A SKU already in use, or a bad product, and the whole batch stays out.
    assert!(stock
        .import(vec![
            product("IMP-3", "Imported Kettle"),
            product("IMP-1", "Again")
        ])
        .await
        .is_err());
    assert!(stock
        .import(vec![
            product("IMP-4", "Imported Kettle"),
            product("bad sku!", "Bad")
        ])
        .await
        .is_err());
    assert_eq!(total(&app, "/api/products", None).await, before + 2);
    assert_eq!(total(&app, "/api/products?q=kettle", None).await, 0);

    let zoe = "import|zoe";
    let line = |id: &str| PastLine {
        product_id: id.to_string(),
        name: "Imported Samovar".into(),
        quantity: 2.try_into().unwrap(),
        unit_price_minor: 700.try_into().unwrap(),
    };
    let placed = orders
        .import(
            (0..3)
                .map(|i| PastOrder {
                    user_id: zoe.into(),
                    currency: "INR".to_string().try_into().unwrap(),
                    payment_method: "CASH".into(),
                    placed_at: 1_700_000_000_000 + i,
                    completed_at: 1_700_000_001_000 + i,
                    lines: vec![line(&ids[0])],
                })
                .collect(),
        )
        .await
        .unwrap();
    let (_, found) = app.get("/api/orders?q=zoe", Some(&admin)).await;
    assert_eq!(found["total"], 3, "{found}");
    let order = &found["items"][0];
    assert_eq!(order["status"], "completed", "{order}");
    assert_eq!(order["total_minor"], 1400, "{order}");
    assert!(placed.contains(&order["id"].as_str().unwrap().to_string()));

    let shopper = Identity {
        sub: zoe.into(),
        name: "Zoe".into(),
        email: "zoe@example.com".into(),
        role: Role::Customer,
        session: None,
        session_started_at: None,
    };
    let before = total(&app, "/api/journeys?all=true", Some(&admin)).await;
    let sessions = users
        .import_sessions(vec![shopper], vec![(zoe.into(), 1_700_000_000_000); 2])
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        total(&app, "/api/journeys?all=true", Some(&admin)).await,
        before + 2
    );
    close(dbs).await;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_rows_on_sqlite() {
    imported_rows_are_searched_listed_and_counted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_rows_on_postgres() {
    imported_rows_are_searched_listed_and_counted(Backend::Postgres).await;
}

/// A word in twelve thousand products: the first page is the newest of them, and the total
/// says how it was found. SQLite counts to 100 and says "more"; PostgreSQL, once its
/// statistics know the word is that common, shows the planner's estimate as an estimate.
async fn a_common_word_is_paged_and_its_total_says_what_it_is(backend: Backend) -> Option<()> {
    let mut settings = None;
    let app = TestApp::spawn_with(backend, |s| settings = Some(s.clone())).await?;
    let dbs = open(&settings.unwrap()).await;
    let (stock, _, _) = stores(&dbs);
    let many = 12_000;
    // In six imports, as a shop adds a catalog over time: six segments of SQLite's index.
    for batch in (0..many).collect::<Vec<_>>().chunks(many / 6) {
        stock
            .import(
                batch
                    .iter()
                    .map(|i| product(&format!("LMP-{i}"), &format!("Lamp {i}")))
                    .collect(),
            )
            .await
            .unwrap();
    }
    if backend == Backend::Postgres {
        // What autovacuum does soon after a load this size.
        sqlx::query("ANALYZE")
            .execute(&dbs.stock.read)
            .await
            .unwrap();
    }

    let (_, page) = app.get("/api/products?q=lam&per_page=5", None).await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Lamp 11999",
            "Lamp 11998",
            "Lamp 11997",
            "Lamp 11996",
            "Lamp 11995"
        ]
    );
    match backend {
        Backend::Sqlite => {
            assert_eq!(page["total"], 100, "{page}");
            assert_eq!(page["total_capped"], true);
            assert_eq!(page["total_estimated"], false);
        }
        Backend::Postgres => {
            let estimate = page["total"].as_i64().unwrap();
            assert!((6_000..24_000).contains(&estimate), "{page}");
            assert_eq!(page["total_capped"], false);
            assert_eq!(page["total_estimated"], true);
        }
    }
    // Folding SQLite's index into one segment (the stock module's upkeep) changes no answer;
    // an index already whole, or PostgreSQL's, needs no step.
    let folded = stock.fold_search_index().await.unwrap();
    match backend {
        Backend::Sqlite => assert!(folded > 0, "six imports leave segments to fold"),
        Backend::Postgres => assert_eq!(folded, 0),
    }
    assert_eq!(stock.fold_search_index().await.unwrap(), 0);
    let (_, again) = app.get("/api/products?q=lam&per_page=5", None).await;
    assert_eq!(again["items"], page["items"]);
    // The next page goes on where the first stopped.
    let next = page["next"].as_str().unwrap();
    let (_, second) = app.get(next, None).await;
    assert_eq!(second["items"][0]["name"], "Lamp 11994", "{second}");
    // A product renamed or removed leaves the walk's names at once (on PostgreSQL the walk
    // reads a copy of them its triggers keep, migration 0005).
    let admin = app.token("admin", "admin").await;
    let newest = page["items"][0]["id"].as_str().unwrap();
    let (status, renamed) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/products/{newest}"),
            Some(&admin),
            Some(json!({"name": "Oak Stool"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{renamed}");
    let next_newest = page["items"][1]["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/products/{next_newest}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    let (_, after) = app.get("/api/products?q=lam&per_page=2", None).await;
    let names: Vec<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Lamp 11997", "Lamp 11996"], "{after}");
    let (_, stool) = app.get("/api/products?q=stool", None).await;
    assert_eq!(stool["items"][0]["id"], newest, "{stool}");
    // A word no product has is counted, exactly, on both.
    let (_, none) = app.get("/api/products?q=lamq", None).await;
    assert_eq!(none["total"], 0, "{none}");
    assert_eq!(none["total_estimated"], false);
    close(dbs).await;
    Some(())
}

/// Words common on their own can be rare together, or all among the oldest products. On
/// PostgreSQL such a search expects many matches, so it walks the newest products for its page;
/// the walk stops after a bounded number of products and the rest come from the index, so
/// these answer in milliseconds with every match, newest first, and a total that says what it
/// is (before, a walk for two words that never meet read the whole catalog).
async fn words_rare_together_or_only_old_are_found(backend: Backend) -> Option<()> {
    let mut settings = None;
    let app = TestApp::spawn_with(backend, |s| settings = Some(s.clone())).await?;
    let dbs = open(&settings.unwrap()).await;
    let (stock, _, _) = stores(&dbs);
    let many = 12_000;
    // The oldest 2,000 are brass; the rest oak chairs and steel kettles, never an oak kettle.
    let name = |i: usize| {
        let material = match i {
            i if i < 2_000 => "Brass",
            i if i.is_multiple_of(2) => "Oak",
            _ => "Steel",
        };
        let noun = if i.is_multiple_of(2) {
            "Chair"
        } else {
            "Kettle"
        };
        format!("{material} {noun} {i}")
    };
    for batch in (0..many).collect::<Vec<_>>().chunks(many / 4) {
        let products = batch
            .iter()
            .map(|i| product(&format!("MIX-{i}"), &name(*i)))
            .collect();
        stock.import(products).await.unwrap();
    }
    if backend == Backend::Postgres {
        sqlx::query("ANALYZE")
            .execute(&dbs.stock.read)
            .await
            .unwrap();
    }
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };

    let (status, never) = app.get("/api/products?q=oak%20kettle", None).await;
    assert_eq!(status, 200, "{never}");
    assert_eq!(names(&never), Vec::<String>::new());
    assert_eq!(never["total"], 0, "{never}");
    assert_eq!(never["total_estimated"], false);
    assert_eq!(never["next"], serde_json::Value::Null);

    let (_, old) = app.get("/api/products?q=brass&per_page=3", None).await;
    assert_eq!(
        names(&old),
        ["Brass Kettle 1999", "Brass Chair 1998", "Brass Kettle 1997"],
        "{old}"
    );
    match backend {
        Backend::Sqlite => assert_eq!(
            (old["total"].clone(), old["total_capped"].clone()),
            (100.into(), true.into())
        ),
        Backend::Postgres => {
            let estimate = old["total"].as_i64().unwrap();
            assert!((1_000..4_000).contains(&estimate), "{old}");
            assert_eq!(old["total_estimated"], true, "{old}");
        }
    }
    let (_, next) = app.get(old["next"].as_str().unwrap(), None).await;
    assert_eq!(
        names(&next),
        ["Brass Chair 1996", "Brass Kettle 1995", "Brass Chair 1994"],
        "{next}"
    );
    // The last brass products, read by cursor from near the end: the page is short.
    let mut page = app
        .get("/api/products?q=brass%20chair&per_page=100", None)
        .await
        .1;
    let mut seen = names(&page);
    while let Some(next) = page["next"].as_str().map(str::to_string) {
        page = app.get(&next, None).await.1;
        seen.extend(names(&page));
    }
    assert_eq!(seen.len(), 1_000, "every even brass product, once");
    assert_eq!(seen.first().map(String::as_str), Some("Brass Chair 1998"));
    assert_eq!(seen.last().map(String::as_str), Some("Brass Chair 0"));
    close(dbs).await;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rare_together_or_only_old_on_sqlite() {
    words_rare_together_or_only_old_are_found(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rare_together_or_only_old_on_postgres() {
    words_rare_together_or_only_old_are_found(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_common_word_on_sqlite() {
    a_common_word_is_paged_and_its_total_says_what_it_is(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_common_word_on_postgres() {
    a_common_word_is_paged_and_its_total_says_what_it_is(Backend::Postgres).await;
}
