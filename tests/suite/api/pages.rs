//! The storefront with JavaScript off: plain form posts and redirects, as a browser without
//! scripts (or a screen reader's simple mode) would use it.

use reqwest::{header, StatusCode};
use serde_json::json;

use crate::on_both;
use crate::support::{Backend, TestApp};

/// A browser without JavaScript: follows nothing by itself, keeps the session cookie and the
/// notice a redirect leaves for the next page.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    /// `ekart_session=…`
    pub cookie: Option<String>,
    /// `ekart_notice=…`
    notice: Option<String>,
}

pub(crate) struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Browser<'a> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            app,
            client,
            cookie: None,
            notice: None,
        }
    }

    pub(crate) async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookies: Vec<&str> = [&self.cookie, &self.notice]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let req = match cookies.is_empty() {
            true => req,
            false => req.header(header::COOKIE, cookies.join("; ")),
        };
        let res = req.send().await.unwrap();
        for set in res.headers().get_all(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
            let kept = Some(pair.clone()).filter(|p| !p.ends_with('='));
            if pair.starts_with("ekart_session=") {
                self.cookie = kept;
            } else if pair.starts_with("ekart_notice=") {
                self.notice = kept;
            }
        }
        let status = res.status();
        let location = res
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        let headers = res.headers().clone();
        let html = res.text().await.unwrap();
        assert!(status.as_u16() < 500, "{status}: {html}");
        Page {
            status,
            location,
            headers,
            html,
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.app.base));
        self.send(req).await
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .client
            .post(format!("{}{path}", self.app.base))
            // What a browser sends with a form from the shop's own page.
            .header("origin", &self.app.base)
            .form(form);
        self.send(req).await
    }

    pub(crate) async fn sign_in(&mut self, name: &str, role: &str) {
        let email = format!("{name}@example.com");
        let page = self
            .post(
                "/signin",
                &[
                    ("name", name),
                    ("email", &email),
                    ("role", role),
                    ("next", "/cart"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
        assert_eq!(page.location.as_deref(), Some("/cart"));
        let cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
    }
}

on_both!(
    shopping_works_without_javascript,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 25_000, 10).await;
        let mut shopper = Browser::new(&app);

        // Signed-out visitors see the catalog, and are sent to sign in for the rest.
        let page = shopper.get("/?q=product%20tea").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.html.contains("Product TEA"), "search finds it");
        let page = shopper.get("/cart").await;
        assert_eq!(page.location.as_deref(), Some("/signin?next=%2Fcart"));

        shopper.sign_in("asha", "customer").await;
        let page = shopper.get("/").await;
        assert!(page.html.contains("Signed in as <strong>asha</strong>"));

        // Too many: the product page says so next to the quantity, and nothing is added.
        let page = shopper
            .post(
                "/cart/items",
                &[("product_id", &tea), ("quantity", "11"), ("back", "/")],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.html.contains("id=\"quantity-error\""), "{}", page.html);
        assert!(page.html.contains("only 10 are available"), "{}", page.html);

        // A crafted "back" cannot send the shopper to another site.
        let page = shopper
            .post(
                "/cart/items",
                &[
                    ("product_id", &tea),
                    ("quantity", "2"),
                    ("back", "//evil.example/"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(page.location.as_deref(), Some("/"));
        let page = shopper.get("/").await;
        assert!(page.html.contains("Added 2"), "{}", page.html);
        let page = shopper.get("/cart").await;
        assert!(page.html.contains("Product TEA") && page.html.contains("₹500.00"));

        // A UPI id the API refuses comes back next to its field, the form kept.
        let page = shopper.get("/checkout").await;
        assert!(page.html.contains("name=\"idempotency_key\""));
        let page = shopper
            .post("/checkout", &[("payment_mode", "UPI"), ("upi_id", "nope")])
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.html.contains("id=\"upi_id-error\""), "{}", page.html);
        assert!(page.html.contains("value=\"nope\""));

        // A card with every detail wrong: each is marked beside its own field, in one answer,
        // in a sentence.
        let page = shopper
            .post(
                "/checkout",
                &[
                    ("payment_mode", "CARD"),
                    ("card_number", "12"),
                    ("card_expiry", "13/99"),
                    ("card_cvv", "x"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        for id in ["card_number-error", "card_expiry-error", "card_cvv-error"] {
            assert!(
                page.html.contains(&format!("id=\"{id}\"")),
                "{id}: {}",
                page.html
            );
        }
        assert!(page
            .html
            .contains("Enter the card number: 12 to 19 digits."));
        assert!(!page.html.contains("card.number must"), "{}", page.html);

        // A declined card: the order's page explains, and the stock is as it was.
        let page = shopper
            .post(
                "/checkout",
                &[
                    ("payment_mode", "CARD"),
                    ("card_number", "4000 0000 0000 0002"),
                    ("card_expiry", "12/39"),
                    ("card_cvv", "123"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
        let order_page = page.location.unwrap();
        let page = shopper.get(&order_page).await;
        assert!(page.html.contains("Payment declined"), "{}", page.html);
        assert!(page.html.contains("Nothing was charged"));
        // Its history in words and human time, the exact instant kept for the script.
        assert!(
            page.html.contains("<strong>Order placed</strong>"),
            "{}",
            page.html
        );
        assert!(page.html.contains(" UTC</time>"), "{}", page.html);
        assert!(
            !page.html.contains("<strong>placed</strong>"),
            "{}",
            page.html
        );
        assert!(page.html.contains(">Pay another way</a>"), "{}", page.html);
        assert_eq!(app.settled(&tea).await, (10, 0));
        // The cart is kept: the two teas are still at checkout.
        let page = shopper.get("/checkout").await;
        assert!(page.html.contains("Product TEA"), "{}", page.html);

        // UPI goes through (with one more tea); the order can be cancelled from its page.
        shopper
            .post("/cart/items", &[("product_id", &tea), ("quantity", "1")])
            .await;
        let key = uuid::Uuid::new_v4().to_string();
        let form = [
            ("payment_mode", "UPI"),
            ("upi_id", "asha@okbank"),
            ("idempotency_key", key.as_str()),
        ];
        let page = shopper.post("/checkout", &form).await;
        let order_page = page.location.unwrap();
        // A double-clicked "Place order" lands on the same order.
        let again = shopper.post("/checkout", &form).await;
        assert_eq!(again.location.as_deref(), Some(order_page.as_str()));
        let page = shopper.get(&order_page).await;
        assert!(page.html.contains("Completed") && page.html.contains("PAY-"));
        assert_eq!(app.settled(&tea).await, (7, 0));
        let page = shopper.post(&format!("{order_page}/cancel"), &[]).await;
        let page = shopper.get(&page.location.unwrap()).await;
        assert!(page.html.contains("Your order is cancelled"));
        // The units go back once stock has handled the cancellation.
        for _ in 0..200 {
            if app.stock_of(&tea).await == (10, 0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(app.stock_of(&tea).await, (10, 0));

        let page = shopper.get("/orders").await;
        assert!(page.html.contains("Cancelled") && page.html.contains("Payment declined"));
        // The admin finds a shopper's orders by name; a shopper searches only their own.
        let (_, found) = app.get("/api/orders?q=ASHA", Some(&admin)).await;
        assert_eq!(found["total"], 2, "{found}");
        let (_, none) = app.get("/api/orders?q=nobody", Some(&admin)).await;
        assert_eq!(none["total"], 0);
        let order_id = order_page.rsplit('/').next().unwrap();
        let (_, mine) = app
            .get(&format!("/api/orders?q={}", &order_id[..8]), Some(&admin))
            .await;
        assert!(mine["total"].as_i64().unwrap() >= 1);
        let (status, _) = app
            .get(&format!("/api/orders?q={}", "x".repeat(101)), Some(&admin))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let page = shopper.get("/journeys").await;
        assert!(page.html.contains("this session"));

        // Shoppers cannot reach the admin's pages.
        assert_eq!(
            shopper.get("/admin/products").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            shopper
                .post(
                    &format!("/admin/products/{tea}/restock"),
                    &[("quantity", "5")]
                )
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(app.stock_of(&tea).await, (10, 0));

        // Signing out forgets the session.
        let page = shopper.post("/signout", &[]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert!(shopper.cookie.is_none());
        assert_eq!(shopper.get("/orders").await.status, StatusCode::SEE_OTHER);
    }
);

on_both!(
    admin_manages_stock_through_the_picker,
    |app: TestApp| async move {
        let mut admin = Browser::new(&app);
        admin.sign_in("boss", "admin").await;
        let page = admin
            .post(
                "/admin/products",
                &[
                    ("sku", "KETTLE-9"),
                    ("name", "Copper Kettle"),
                    ("description", "Shiny"),
                    ("price", "1499.50"),
                    ("currency", "INR"),
                    ("quantity", "4"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);

        // The picker finds it by name; its link opens it; restock and reduce change it.
        let page = admin.get("/admin/products?q=copper").await;
        let link = page
            .html
            .split("href=\"")
            .find(|s| s.starts_with("/admin/products?q=copper&#38;product="))
            .and_then(|s| s.split('"').next())
            .expect("the picker lists the kettle")
            .replace("&#38;", "&");
        let id = link.rsplit('=').next().unwrap().to_string();
        let page = admin.get(&link).await;
        assert!(
            page.html.contains("data-testid=\"on-hand\">4<"),
            "{}",
            page.html
        );
        // The picker shows which product is open.
        assert!(page.html.contains("aria-current=\"true\""), "{}", page.html);
        let page = admin
            .post(
                &format!("/admin/products/{id}/restock"),
                &[("quantity", "6"), ("q", "copper")],
            )
            .await;
        // Back to the same product, the search kept.
        let back = page.location.unwrap();
        assert!(
            back.starts_with("/admin/products?q=copper&product="),
            "{back}"
        );
        let page = admin.get(&back).await;
        assert!(page.html.contains("Restocked 6 units"), "{}", page.html);
        admin
            .post(
                &format!("/admin/products/{id}/reduce"),
                &[("quantity", "3")],
            )
            .await;
        assert_eq!(app.stock_of(&id).await, (7, 0));

        // Bad numbers are refused next to their field and change nothing.
        let page = admin
            .post(
                &format!("/admin/products/{id}/reduce"),
                &[("quantity", "99")],
            )
            .await;
        assert!(page.status.is_client_error());
        assert!(page.html.contains("id=\"reduce-error\""), "{}", page.html);
        // What was typed stays in the field, to correct rather than type again.
        assert!(
            page.html.contains(
                "id=\"reduce_quantity\" name=\"quantity\" type=\"number\" min=\"1\" value=\"99\""
            ),
            "{}",
            page.html
        );
        let page = admin
            .post(
                &format!("/admin/products/{id}"),
                &[("name", "Kettle"), ("price", "12.345")],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.html.contains("id=\"edit_price-error\""));
        assert_eq!(app.stock_of(&id).await, (7, 0));
        let (_, product) = app.get(&format!("/api/products/{id}"), None).await;
        assert_eq!(product["price_minor"], 149_950);
        assert_eq!(product["name"], "Copper Kettle");

        let page = admin.get("/admin/orders?status=completed").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.html.contains("All orders"));
    }
);

on_both!(assets_are_embedded_and_cached, |app: TestApp| async move {
    let mut browser = Browser::new(&app);
    let page = browser.get("/").await;
    let css = page
        .html
        .split("href=\"")
        .find(|s| s.starts_with("/static/app.css?v="))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let asset = browser.get(&css).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.headers["content-type"], "text/css; charset=utf-8");
    assert!(asset.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(
        browser.get("/static/nope.js").await.status,
        StatusCode::NOT_FOUND
    );
    let _ = json!({});
});

on_both!(
    another_shoppers_order_and_journey_are_not_found_through_the_pages,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 25_000, 10).await;
        let mut asha = Browser::new(&app);
        asha.sign_in("asha", "customer").await;
        asha.post("/cart/items", &[("product_id", &tea), ("quantity", "1")])
            .await;
        let placed = asha
            .post(
                "/checkout",
                &[("payment_mode", "CASH"), ("idempotency_key", "k1")],
            )
            .await;
        let order_page = placed.location.expect("checkout redirects to the order");
        let (_, sessions) = app.get("/api/journeys?all=true", Some(&admin)).await;
        let session = sessions["items"][0]["id"].as_str().unwrap().to_string();

        let mut bela = Browser::new(&app);
        bela.sign_in("bela", "customer").await;
        let cancel = format!("{order_page}/cancel");
        for page in [
            bela.get(&order_page).await,
            bela.post(&cancel, &[]).await,
            bela.get(&format!("/journeys/{session}")).await,
            bela.get(&format!("/api/journeys/{session}.pdf")).await,
        ] {
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.html);
        }
        let id = order_page.trim_start_matches("/orders/");
        let found = bela.get(&format!("/orders?q={id}")).await;
        assert!(
            !found.html.contains(&format!("href=\"{order_page}\"")),
            "the order picker does not find it"
        );
        // Still Asha's, untouched.
        assert_eq!(asha.get(&order_page).await.status, StatusCode::OK);
        let (_, orders) = app.get("/api/orders", Some(&admin)).await;
        assert_eq!(orders["items"][0]["status"], "completed");
    }
);

/// Every redirect a request can steer stays on the shop: sign-in's `next` and the cart's
/// `back` with a tab, a newline or a backslash where a browser would read another host.
#[tokio::test]
async fn crafted_next_and_back_never_leave_the_shop() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let hostile = [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "/ok\r\nSet-Cookie: x=y",
        "/\\evil.example",
        "\t//evil.example",
        "https://evil.example/",
    ];
    for next in hostile {
        let mut browser = Browser::new(&app);
        let page = browser
            .post(
                "/signin",
                &[
                    ("name", "asha"),
                    ("email", "asha@example.com"),
                    ("role", "customer"),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "{next:?}: {}",
            page.html
        );
        assert_eq!(page.location.as_deref(), Some("/"), "{next:?}");
    }
    let admin = app.token("admin", "admin").await;
    let product = app.product(&admin, "TEA", 500, 10).await;
    let mut shopper = Browser::new(&app);
    shopper.sign_in("bela", "customer").await;
    for back in hostile {
        let page = shopper
            .post(
                "/cart/items",
                &[("product_id", &product), ("quantity", "1"), ("back", back)],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{back:?}");
        let to = page.location.unwrap();
        assert_eq!(to, "/", "{back:?} went to {to}");
    }
}

/// The journey PDF asked for at the page's address (`/journeys/{session}.pdf`) is sent on to
/// the API's PDF, and a signed-in browser gets it there: never an internal error.
#[tokio::test]
async fn a_journey_pdf_at_the_pages_address_is_the_pdf() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let mut shopper = Browser::new(&app);
    shopper.sign_in("asha", "customer").await;
    let page = shopper.get("/journeys").await;
    assert_eq!(page.status, StatusCode::OK);
    let session = page
        .html
        .split("/api/journeys/")
        .nth(1)
        .and_then(|rest| rest.split(".pdf").next())
        .expect("the list links to this session's PDF")
        .to_string();
    let page = shopper.get(&format!("/journeys/{session}.pdf")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    let to = page.location.unwrap();
    assert_eq!(to, format!("/api/journeys/{session}.pdf"));
    let pdf = shopper.get(&to).await;
    assert_eq!(pdf.status, StatusCode::OK);
    assert_eq!(pdf.headers[header::CONTENT_TYPE], "application/pdf");
}

/// A page's form over the body limit is refused as problem details like every other error,
/// not as plain text; a form missing its fields gets the page back with the error (never
/// plain text either).
#[tokio::test]
async fn refused_forms_and_bodies_are_never_plain_text() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let unpooled = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = unpooled
        .post(format!("{}/signin", app.base))
        .header("origin", &app.base)
        .form(&[("name", "a".repeat(200_000))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/payload-too-large", "{problem}");

    let res = app
        .client
        .post(format!("{}/signin", app.base))
        .header("origin", &app.base)
        .form(&[("name", "asha")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let kind = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!kind.starts_with("text/plain"), "{kind}");
}

/// A notice is the shop's own words, carried over one redirect in a cookie it signed: a link
/// with `?notice=` shows nothing, a forged or replayed cookie neither, and a notice is shown
/// once.
#[tokio::test]
async fn notices_cannot_be_put_in_the_shops_mouth() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let admin = app.token("admin", "admin").await;
    let product = app.product(&admin, "TEA", 500, 10).await;
    let mut shopper = Browser::new(&app);
    shopper.sign_in("chitra", "customer").await;
    let spoof = "Your account is locked: call +1 555 0100";
    let page = shopper
        .get(&format!("/?notice={}", spoof.replace(' ', "+")))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.html.contains("Your account is locked"),
        "{}",
        page.html
    );

    // The shop's own notice, shown by the next page and not by the one after.
    let page = shopper
        .post(
            "/cart/items",
            &[("product_id", &product), ("quantity", "1")],
        )
        .await;
    let sealed = shopper.notice.clone().expect("a notice cookie");
    let page = shopper.get(&page.location.unwrap()).await;
    assert!(page.html.contains("Added 1"), "{}", page.html);
    assert!(page.html.contains("<p class=\"notice\" role=\"status\">"));
    assert!(shopper.notice.is_none(), "the notice is spent");
    let page = shopper.get("/").await;
    assert!(!page.html.contains("Added 1"));

    // A refusal comes back as an error, not in the banner of good news.
    let page = shopper
        .post(&format!("/cart/items/{product}"), &[("quantity", "1000")])
        .await;
    let page = shopper.get(&page.location.unwrap()).await;
    assert!(
        page.html
            .contains("<p class=\"notice notice-error\" role=\"alert\">"),
        "{}",
        page.html
    );
    assert!(page.html.contains("available"), "{}", page.html);

    // A cookie of the shop's name the shop did not sign, or one altered, shows nothing.
    let (name, value) = sealed.split_once('=').unwrap();
    let mut parts: Vec<String> = value.split('.').map(String::from).collect();
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!(r#"{{"aud":"ekart-sealed","value":{{"text":"{spoof}","exp":9999999999}}}}"#),
    );
    for forged in [
        format!("{name}={}", parts.join(".")),
        format!("{name}={spoof}"),
    ] {
        shopper.notice = Some(forged);
        let page = shopper.get("/").await;
        assert!(
            !page.html.contains("Your account is locked"),
            "{}",
            page.html
        );
    }
}
