//! Crash safety: the real binary is killed with SIGKILL under checkout load, restarted, and
//! once recovery has run the books must balance. Runs on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use crate::support::process::{free_port, Shop};
use crate::support::{postgres_url, scratch_postgres};
use serde_json::{json, Value};

const PRODUCTS: usize = 5;
const UNITS: i64 = 60;
const SHOPPERS: usize = 24;

async fn start(url: &str, _http: &reqwest::Client) -> Shop {
    let env = [
        ("EKART_DATABASE__URL", url.to_string()),
        ("EKART_DATABASE__MAX_CONNECTIONS", "4".into()),
        (
            "EKART_AUTH__SESSION_SECRET",
            "crash-test-secret-that-is-long-enough-0123".into(),
        ),
        ("EKART_CATALOG__SEED_DEMO", "false".into()),
        ("EKART_CHECKOUT__WAIT_MS", "3000".into()),
        ("EKART_BUS__RELAY_SWEEP_MS", "200".into()),
    ];
    Shop::start(free_port(), &[], &env).await
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Result<(u16, Value)> {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

async fn token(http: &reqwest::Client, base: &str, name: &str, role: &str) -> String {
    let res: Value = http
        .post(format!("{base}/auth/dev/token"))
        .json(&json!({"name": name, "email": format!("{name}@example.com"), "role": role}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["access_token"].as_str().unwrap().to_string()
}

/// One shopper: add, check out (some cards decline), sometimes cancel, until the shop dies.
async fn shop_until_killed(
    http: reqwest::Client,
    base: String,
    token: String,
    products: Arc<Vec<String>>,
    seed: usize,
) {
    use reqwest::Method;
    for round in 0.. {
        let n = seed * 31 + round * 17;
        let product = &products[n % products.len()];
        let quantity = (n % 3 + 1) as i64;
        let add = json!({"product_id": product, "quantity": quantity});
        match call(
            &http,
            &base,
            Method::POST,
            "/api/cart/items",
            &token,
            Some(add),
        )
        .await
        {
            Err(_) => return,
            Ok((s, _)) if s >= 500 => panic!("500 while shopping"),
            _ => {}
        }
        let pay = if n.is_multiple_of(4) {
            json!({"payment_mode": "CARD", "card": {"number": "4000000000000002", "expiry": "12/39", "cvv": "123"}})
        } else {
            json!({"payment_mode": "CASH"})
        };
        let (status, order) = match call(
            &http,
            &base,
            Method::POST,
            "/api/checkout",
            &token,
            Some(pay),
        )
        .await
        {
            Err(_) => return,
            Ok(r) => r,
        };
        assert!(status < 500, "{status}: {order}");
        if status == 201 && n.is_multiple_of(5) {
            let path = format!("/api/orders/{}/cancel", order["id"].as_str().unwrap());
            if call(&http, &base, Method::POST, &path, &token, None)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Every rule the books must obey; the first broken one, described.
async fn audit(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    products: &[String],
) -> Result<usize, String> {
    use reqwest::Method;
    let mut orders = Vec::new();
    for page in 1.. {
        let (_, body) = call(
            http,
            base,
            Method::GET,
            &format!("/api/orders?per_page=100&page={page}"),
            admin,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        orders.extend(items);
    }
    let mut sold = std::collections::HashMap::<String, i64>::new();
    for o in &orders {
        let id = o["id"].as_str().unwrap();
        let (pay_status, payment) = call(
            http,
            base,
            Method::GET,
            &format!("/api/orders/{id}/payment"),
            admin,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        match o["status"].as_str().unwrap() {
            "placed" | "reserved" => return Err(format!("order {id} is still {}", o["status"])),
            "completed" => {
                if pay_status != 200
                    || payment["status"] != "succeeded"
                    || payment["amount_minor"] != o["total_minor"]
                {
                    return Err(format!("completed order {id} has payment {payment}"));
                }
                for line in o["lines"].as_array().unwrap() {
                    *sold
                        .entry(line["product_id"].as_str().unwrap().to_string())
                        .or_default() += line["quantity"].as_i64().unwrap();
                }
            }
            "failed" => {
                if pay_status == 200 && payment["status"] != "failed" {
                    return Err(format!("failed order {id} has payment {payment}"));
                }
            }
            "cancelled" => {
                if payment["status"] != "refunded" || o["refunded_at"].is_null() {
                    return Err(format!("cancelled order {id} is not refunded: {payment}"));
                }
            }
            other => return Err(format!("order {id} in unexpected state {other}")),
        }
    }
    for p in products {
        let (_, product) = call(
            http,
            base,
            Method::GET,
            &format!("/api/products/{p}"),
            admin,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        let on_hand = product["on_hand"].as_i64().unwrap();
        let sold = sold.get(p).copied().unwrap_or(0);
        if product["reserved"] != 0 {
            return Err(format!(
                "product {p} still holds {} units",
                product["reserved"]
            ));
        }
        if on_hand + sold != UNITS {
            return Err(format!(
                "product {p}: on hand {on_hand} + sold {sold} != {UNITS}"
            ));
        }
    }
    Ok(orders.len())
}

async fn crash_and_recover(url: String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let shop = start(&url, &http).await;
    let admin = token(&http, &shop.base, "admin", "admin").await;
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        let (status, p) = call(&http, &shop.base, reqwest::Method::POST, "/api/products", &admin,
            Some(json!({"sku": format!("CRASH-{i}"), "name": format!("Crash {i}"), "price_minor": 1000 + i as i64,
                        "currency": "INR", "quantity": UNITS}))).await.unwrap();
        assert_eq!(status, 201, "{p}");
        products.push(p["id"].as_str().unwrap().to_string());
    }
    let products = Arc::new(products);
    let mut shoppers = Vec::new();
    for i in 0..SHOPPERS {
        let t = token(&http, &shop.base, &format!("shopper{i}"), "customer").await;
        shoppers.push(tokio::spawn(shop_until_killed(
            http.clone(),
            shop.base.clone(),
            t,
            products.clone(),
            i,
        )));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(shop); // SIGKILL, mid-checkout
    for s in shoppers {
        s.await.expect("no shopper saw a 500");
    }

    let shop = start(&url, &http).await;
    let mut last = String::new();
    for _ in 0..200 {
        match audit(&http, &shop.base, &admin, &products).await {
            Ok(orders) => {
                assert!(orders > 0, "the load placed orders before the kill");
                return;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("books never balanced after restart: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_then_restart_balances_the_books_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_and_recover(format!("sqlite://{}/", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_then_restart_balances_the_books_postgres() {
    if let Some(server) = postgres_url() {
        crash_and_recover(scratch_postgres(&server).await).await;
    }
}
