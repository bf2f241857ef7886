//! Sign-in through a real OpenID Connect provider (node-oidc-provider, started by `.ci/run` as
//! Okta's stand-in, `e2e/oidc/provider.mjs`), at `TEST_OIDC_ISSUER` with the client secret
//! `TEST_OIDC_CLIENT_SECRET`; `TEST_OIDC_SIGNING_KEY` names the file where it wrote its
//! signing key, so that tests can forge tokens it would have signed. Under `CI=true` all three
//! must be set.

mod signin;
mod tokens;

use crate::support::{required_env, Backend, TestApp};
use ekart::config::AuthMode;
use reqwest::{header, StatusCode};

/// The provider's issuer and the shop's client secret there.
fn provider() -> Option<(String, String)> {
    Some((
        required_env("TEST_OIDC_ISSUER")?,
        required_env("TEST_OIDC_CLIENT_SECRET")?,
    ))
}

/// The provider's signing key, as it wrote it to `TEST_OIDC_SIGNING_KEY`.
#[derive(serde::Deserialize)]
struct SigningKey {
    kid: String,
    /// PKCS#8 PEM of the private key.
    pem: String,
    /// SPKI PEM of the public key.
    public_pem: String,
}

fn signing_key() -> Option<SigningKey> {
    let path = required_env("TEST_OIDC_SIGNING_KEY")?;
    let text = std::fs::read_to_string(&path).expect("the provider's key file");
    Some(serde_json::from_str(&text).expect("kid, pem, public_pem"))
}

/// The audience the test provider issues API access tokens for.
const API_AUDIENCE: &str = "api://ekart";
/// The API client (a script, an app) the shops under test take tokens from, and the scope
/// they require.
const API_CLIENT: &str = "ekart-cli";
const API_SCOPE: &str = "profile";

/// A shop signing in through the test provider.
async fn shop() -> Option<TestApp> {
    let (issuer, secret) = provider()?;
    let port = crate::support::process::free_port();
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.port = port;
        s.auth.mode = AuthMode::Oidc;
        s.auth.session_secret = "oidc-test-session-key-that-is-long-enough".into();
        s.auth.oidc.issuer = issuer;
        s.auth.oidc.client_id = "ekart".into();
        s.auth.oidc.client_secret = secret;
        s.auth.oidc.redirect_url = format!("http://127.0.0.1:{port}/auth/callback");
        s.auth.oidc.audience = API_AUDIENCE.into();
        s.auth.oidc.api_clients = vec![API_CLIENT.into()];
        s.auth.oidc.api_scopes = vec![API_SCOPE.into()];
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
    walk_the_provider(browser, &start, &format!("{shop}/auth/callback"), login).await
}

/// Follows redirects from `start`, signing in as `login` and consenting at the provider's
/// pages, until a redirect leads to `back`; answers that address (not followed).
async fn walk_the_provider(
    browser: &reqwest::Client,
    start: &str,
    back: &str,
    login: &str,
) -> reqwest::Url {
    let mut res = browser.get(start).send().await.unwrap();
    for _ in 0..20 {
        if res.status().is_redirection() {
            let to = res
                .url()
                .join(res.headers()[header::LOCATION].to_str().unwrap())
                .unwrap();
            if to.as_str().starts_with(back) {
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
