//! Sign-in through a real OpenID Connect provider (node-oidc-provider, started by `.ci/run` as
//! Okta's stand-in, `e2e/oidc/provider.mjs`), at `TEST_OIDC_ISSUER` with the client secret
//! `TEST_OIDC_CLIENT_SECRET`. Under `CI=true` both must be set.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "support/process.rs"]
#[allow(dead_code)]
mod process;

use ekart::config::AuthMode;
use helpers::{Backend, TestApp};
use reqwest::{header, StatusCode};
use serde_json::json;

fn provider() -> Option<(String, String)> {
    match (
        std::env::var("TEST_OIDC_ISSUER"),
        std::env::var("TEST_OIDC_CLIENT_SECRET"),
    ) {
        (Ok(issuer), Ok(secret)) if !issuer.is_empty() => Some((issuer, secret)),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("TEST_OIDC_ISSUER and TEST_OIDC_CLIENT_SECRET must be set when CI=true")
        }
        _ => {
            eprintln!("TEST_OIDC_ISSUER is not set: skipping the OIDC tests");
            None
        }
    }
}

/// A shop signing in through the test provider.
async fn shop() -> Option<TestApp> {
    let (issuer, secret) = provider()?;
    let port = process::free_port();
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.port = port;
        s.auth.mode = AuthMode::Oidc;
        s.auth.session_secret = "oidc-test-session-key-that-is-long-enough".into();
        s.auth.oidc.issuer = issuer;
        s.auth.oidc.client_id = "ekart".into();
        s.auth.oidc.client_secret = secret;
        s.auth.oidc.redirect_url = format!("http://127.0.0.1:{port}/auth/callback");
        s.auth.oidc.scopes = ["openid", "profile", "email", "groups"]
            .map(String::from)
            .to_vec();
    })
    .await
}

/// A browser without JavaScript: keeps cookies, follows nothing by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Starts at the shop's `/auth/login`, signs in at the provider's login page as `login` and
/// consents; answers the provider's redirect back to the shop (not yet followed).
async fn through_the_provider(
    browser: &reqwest::Client,
    shop: &str,
    login: &str,
    return_to: &str,
) -> reqwest::Url {
    let start = format!("{shop}/auth/login?return_to={}", urlencode(return_to));
    let mut res = browser.get(start).send().await.unwrap();
    for _ in 0..20 {
        if res.status().is_redirection() {
            let to = res
                .url()
                .join(res.headers()[header::LOCATION].to_str().unwrap())
                .unwrap();
            if to.as_str().starts_with(&format!("{shop}/auth/callback")) {
                return to;
            }
            res = browser.get(to).send().await.unwrap();
            continue;
        }
        assert_eq!(res.status(), StatusCode::OK, "at {}", res.url());
        let at = res.url().clone();
        let html = res.text().await.unwrap();
        let action = between(&html, "action=\"", "\"").expect("a form");
        let prompt = between(&html, "name=\"prompt\" value=\"", "\"").expect("a prompt");
        let fields: Vec<(&str, &str)> = match prompt {
            "login" => vec![("prompt", "login"), ("login", login), ("password", "any")],
            other => vec![("prompt", other)],
        };
        res = browser
            .post(at.join(action).unwrap())
            .form(&fields)
            .send()
            .await
            .unwrap();
    }
    panic!("the provider never sent the browser back");
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_signs_in_at_the_provider_and_shops() {
    let Some(app) = shop().await else { return };
    let browser = browser();
    let back = through_the_provider(&browser, &app.base, "asha", "/orders").await;
    let query: String = back.query().unwrap_or_default().to_string();
    assert!(
        query.contains("code=") && query.contains("state="),
        "{query}"
    );
    let res = browser.get(back.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/orders");
    let cookies: Vec<&str> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("ekart_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );

    // Signed in: the pages know her, the API answers her cart.
    let page = browser
        .get(format!("{}/orders", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("asha"));
    let cart = browser
        .get(format!("{}/api/cart", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(cart.status(), StatusCode::OK);
    // A customer cannot manage stock.
    let admin_page = browser
        .get(format!("{}/admin/products", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_page.status(), StatusCode::FORBIDDEN);

    // The provider's answer cannot be used twice (the pending sign-in is gone).
    let again = browser.get(back).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);

    // Signing out ends the shop's session, then the provider's.
    let out = browser
        .post(format!("{}/signout", app.base))
        .header(header::ORIGIN, &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()[header::LOCATION], "/auth/logout");
    let cart = browser
        .get(format!("{}/api/cart", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cart.status(),
        StatusCode::UNAUTHORIZED,
        "the cookie is gone"
    );
    let to_provider = browser
        .get(format!("{}/auth/logout", app.base))
        .send()
        .await
        .unwrap();
    let end = to_provider.headers()[header::LOCATION].to_str().unwrap();
    let (issuer, _) = provider().unwrap();
    assert!(end.starts_with(&format!("{issuer}/session/end?")), "{end}");
    assert!(
        end.contains("client_id=ekart") && end.contains("post_logout_redirect_uri="),
        "{end}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_the_admin_group_manages_stock() {
    let Some(app) = shop().await else { return };
    let browser = browser();
    let back = through_the_provider(&browser, &app.base, "admin-ravi", "/admin/products").await;
    let res = browser.get(back).send().await.unwrap();
    assert_eq!(res.headers()[header::LOCATION], "/admin/products");
    let page = browser
        .get(format!("{}/admin/products", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let res = browser
        .post(format!("{}/api/products", app.base))
        .header(header::ORIGIN, &app.base)
        .json(
            &json!({"sku": "TEA", "name": "Tea", "description": "", "price_minor": 100,
            "currency": "INR", "quantity": 5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_or_off_site_answers_are_refused() {
    let Some(app) = shop().await else { return };
    // return_to pointing off-site leads home instead.
    let browser = browser();
    let back = through_the_provider(&browser, &app.base, "asha", "https://evil.example/").await;
    let res = browser.get(back).send().await.unwrap();
    assert_eq!(res.headers()[header::LOCATION], "/");

    // A state that is not this sign-in's, or none.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let back = through_the_provider(&browser, &app.base, "asha", "/").await;
    let mut forged = back.clone();
    let query: Vec<(String, String)> = back
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "forged".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(query);
    let res = browser.get(forged).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The pending sign-in went with the refusal: even the true answer is refused now.
    let res = browser.get(back).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // No pending sign-in at all.
    let res = reqwest::get(format!("{}/auth/callback?code=x&state=y", app.base))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
