//! Keyset paging: a list read page by page by following `next` while rows are added and
//! removed never shows a row twice nor skips one that existed throughout, and a cursor that
//! this list did not give out answers 400.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::on_both;
use crate::support::{Backend, TestApp};

/// Creates a product named `name` as `admin`; answers its id.
async fn add(app: &TestApp, admin: &str, sku: &str, name: &str, price: i64) -> String {
    let (status, body) = app
        .post(
            "/api/products",
            Some(admin),
            json!({"sku": sku, "name": name, "price_minor": price, "currency": "INR",
                   "quantity": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn delete(app: &TestApp, admin: &str, id: &str) {
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/products/{id}"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// Reads a list from `first` by following `next` to the end; `between` runs after each page.
async fn walk<F, Fut>(app: &TestApp, token: Option<&str>, first: &str, mut between: F) -> Vec<Value>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut items = vec![];
    let mut path = first.to_string();
    for page in 0.. {
        assert!(page < 100, "{first}: the list does not end");
        let (status, body) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        items.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next"].as_str() {
            Some(next) => {
                assert!(body["next_cursor"].is_string(), "{body}");
                path = next.to_string();
            }
            None => {
                assert!(body["next_cursor"].is_null(), "{body}");
                break;
            }
        }
        between(page).await;
    }
    items
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every id once, and all of `throughout` among them.
fn assert_complete(list: &str, seen: &[String], throughout: &[String]) {
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{list}: a row shown twice: {seen:?}"
    );
    for id in throughout {
        assert!(unique.contains(id), "{list}: {id} was skipped");
    }
}

on_both!(
    a_catalog_read_by_cursor_while_it_changes_shows_each_product_once,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let (_, before) = app.get("/api/products?per_page=1", None).await;
        let before = before["total"].as_u64().unwrap();
        let mut throughout = vec![];
        for i in 0..17 {
            // Two share each name and price, so the id must break ties.
            let name = format!("Lantern {:02}", i / 2);
            throughout.push(add(&app, &admin, &format!("LAN-{i}"), &name, 1000 + i / 2).await);
        }
        let lists = [
            "/api/products?per_page=4",
            "/api/products?per_page=4&sort=-name",
            "/api/products?per_page=4&sort=price",
            "/api/products?per_page=3&sort=-price",
            "/api/products?per_page=4&sort=newest",
            "/api/products?per_page=4&q=lantern",
            "/api/products?per_page=5&q=lan&sort=-price",
        ];
        for (round, list) in lists.into_iter().enumerate() {
            // Some products come and go while the list is read.
            let mut passing = vec![];
            for i in 0..3 {
                let sku = format!("TMP-{round}-{i}");
                passing.push(add(&app, &admin, &sku, &format!("Lantern 0{i}"), 1003).await);
            }
            let (app_ref, admin_ref) = (&app, &admin);
            let passing_ref = &passing;
            let seen = walk(&app, None, list, |page| async move {
                if page < 3 {
                    delete(app_ref, admin_ref, &passing_ref[page]).await;
                    let sku = format!("NEW-{round}-{page}");
                    add(app_ref, admin_ref, &sku, "Lantern 05", 1004).await;
                }
            })
            .await;
            assert_complete(list, &ids(&seen), &throughout);
        }

        // The unfiltered total is kept as products come and go, without counting them.
        let (_, all) = app.get("/api/products?per_page=100", None).await;
        let shown = all["items"].as_array().unwrap().len() as u64;
        assert_eq!(all["total"], shown, "{all}");
        // Every passing product went and every new one stayed.
        assert_eq!(shown, before + 17 + 7 * 3, "{all}");
        assert_eq!(all["page"], 1);
        assert!(all["next"].is_null());
    }
);

on_both!(
    a_cursor_not_given_out_by_this_list_answers_400,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        for i in 0..3 {
            add(
                &app,
                &admin,
                &format!("CUR-{i}"),
                &format!("Cursor {i}"),
                100,
            )
            .await;
        }
        let (_, first) = app.get("/api/products?per_page=1", None).await;
        let cursor = first["next_cursor"].as_str().unwrap().to_string();
        let (status, second) = app
            .get(&format!("/api/products?per_page=1&cursor={cursor}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert!(second.get("page").is_none(), "{second}");

        let mut flipped = cursor.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            "/api/products?cursor=not-a-cursor".to_string(),
            "/api/products?cursor=".to_string(),
            format!("/api/products?cursor={flipped}"),
            format!("/api/products?cursor={}", "A".repeat(4000)),
            // Given out by the list in another order, or another search.
            format!("/api/products?sort=price&cursor={cursor}"),
            format!("/api/products?q=cursor&cursor={cursor}"),
            format!("/api/products?page=2&cursor={cursor}"),
            format!("/api/orders?cursor={cursor}"),
            format!("/api/journeys?cursor={cursor}"),
        ] {
            let (status, body) = app.get(&bad, Some(&admin)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert!(body["detail"].is_string(), "{bad}: {body}");
        }
    }
);

on_both!(
    orders_and_journeys_page_by_cursor_and_orders_are_found_by_number_and_shopper,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 250, 20).await;
        let mut placed = vec![];
        for (shopper, n) in [("shopper-asha", 3), ("shopper-bela", 2)] {
            let token = app.token(shopper, "customer").await;
            for _ in 0..n {
                app.add_to_cart(&token, &tea, 1).await;
                let (status, order) = app
                    .post(
                        "/api/checkout",
                        Some(&token),
                        json!({"payment_mode": "CASH"}),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{order}");
                placed.push(order);
            }
        }

        let seen = walk(&app, Some(&admin), "/api/orders?per_page=2", |_| async {}).await;
        assert_complete("orders", &ids(&seen), &ids(&placed));
        assert_eq!(seen.len(), 5);
        let times: Vec<&str> = seen
            .iter()
            .map(|o| o["created_at"].as_str().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {times:?}"
        );

        // An order number, whole or its beginning, finds that order.
        let id = placed[1]["id"].as_str().unwrap();
        for q in [id, &id[..13], &id.to_uppercase()] {
            let (status, found) = app.get(&format!("/api/orders?q={q}"), Some(&admin)).await;
            assert_eq!(status, StatusCode::OK, "{found}");
            assert!(
                ids(found["items"].as_array().unwrap()).contains(&id.to_string()),
                "{q}: {found}"
            );
        }
        // A shopper's id finds their orders, page by page.
        let bela = placed[4]["user_id"].as_str().unwrap();
        let path = format!("/api/orders?per_page=1&q={bela}");
        let found = walk(&app, Some(&admin), &path, |_| async {}).await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|o| o["user_id"] == bela));
        let (_, counted) = app.get(&path, Some(&admin)).await;
        assert_eq!(counted["total"], 2);
        assert_eq!(counted["total_capped"], false);
        // A shopper pages through their own only.
        // Part of several shoppers' ids: each one's orders, merged newest first, each once.
        let path = "/api/orders?per_page=2&q=PPER-";
        let found = walk(&app, Some(&admin), path, |_| async {}).await;
        assert_complete("shoppers' orders", &ids(&found), &ids(&placed));
        let times: Vec<&str> = found
            .iter()
            .map(|o| o["created_at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
        let (_, counted) = app.get(path, Some(&admin)).await;
        assert_eq!(counted["total"], 5, "{counted}");
        // Too short to name a shopper and no order number: nothing, and no error.
        let (status, nothing) = app.get("/api/orders?q=zz", Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{nothing}");
        assert_eq!(
            (nothing["items"].clone(), nothing["total"].clone()),
            (json!([]), json!(0))
        );
        // A numbered page past the last still says how many there are.
        let (_, past) = app
            .get("/api/orders?per_page=2&page=4&q=PPER-", Some(&admin))
            .await;
        assert_eq!(past["items"], json!([]), "{past}");
        assert_eq!(past["total"], 5, "{past}");
        let (_, none) = app
            .get("/api/orders?q=PPER-&status=cancelled", Some(&admin))
            .await;
        assert_eq!(none["total"], 0, "{none}");
        // A shopper pages through their own only, and a search does not widen that.
        let asha = app.token("shopper-asha", "customer").await;
        let own = walk(&app, Some(&asha), "/api/orders?per_page=2", |_| async {}).await;
        assert_eq!(own.len(), 3);
        let own = walk(&app, Some(&asha), path, |_| async {}).await;
        assert_eq!(own.len(), 3, "{own:?}");

        // Journeys: every session once.
        let (_, all) = app
            .get("/api/journeys?all=true&per_page=100", Some(&admin))
            .await;
        let sessions = walk(
            &app,
            Some(&admin),
            "/api/journeys?all=true&per_page=1",
            |_| async {},
        )
        .await;
        assert_eq!(
            sessions.len(),
            all["items"].as_array().unwrap().len(),
            "{all}"
        );
        assert!(sessions.len() >= 3, "{all}");
        assert_complete(
            "journeys",
            &ids(&sessions),
            &ids(all["items"].as_array().unwrap()),
        );
    }
);
