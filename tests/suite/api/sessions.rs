//! Sign-in sessions live on the server: a session token or cookie is refused once its session
//! has ended (signed out, idle too long, past its absolute lifetime), a new sign-in starts a
//! new session, and a cookie the shop did not sign is nobody's.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use reqwest::{header, StatusCode};
use serde_json::json;

use crate::api::pages::Browser;
use crate::on_both;
use crate::support::{Backend, TestApp};

/// `/cart` for a signed-in browser, or the way to sign in for anyone else.
async fn cart_as(app: &TestApp, cookie: &str) -> StatusCode {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    client
        .get(format!("{}/api/cart", app.base))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
}

on_both!(
    a_cookie_is_worthless_once_its_session_has_ended,
    |app: TestApp| async move {
        let mut browser = Browser::new(&app);
        browser.sign_in("asha", "customer").await;
        let first = browser.cookie.clone().expect("a session cookie");
        assert_eq!(cart_as(&app, &first).await, StatusCode::OK);

        // Signing in again rotates the session: the old cookie's session ended with it.
        browser.sign_in("asha", "customer").await;
        let second = browser.cookie.clone().expect("a session cookie");
        assert_ne!(first, second);
        assert_eq!(cart_as(&app, &first).await, StatusCode::UNAUTHORIZED);
        assert_eq!(cart_as(&app, &second).await, StatusCode::OK);

        // A cookie copied before sign-out (stolen, say) is refused after it.
        let page = browser.post("/signout", &[]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(cart_as(&app, &second).await, StatusCode::UNAUTHORIZED);
        // The pages treat it as nobody: off to sign in.
        browser.cookie = Some(second);
        let page = browser.get("/cart").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert!(page.location.unwrap().starts_with("/signin"));
    }
);

on_both!(
    a_forged_session_cookie_is_nobodys,
    |app: TestApp| async move {
        let admin = app.token("boss", "admin").await;
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "sub": "dev|boss@example.com", "name": "boss", "email": "boss@example.com",
            "role": "admin", "iss": "ekart-dev", "iat": now, "exp": now + 3600,
        });
        let forged = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"a guess at the shop's secret, long enough"),
        )
        .unwrap();
        let cookie = format!("ekart_session={forged}");
        assert_eq!(cart_as(&app, &cookie).await, StatusCode::UNAUTHORIZED);
        let (status, _) = app.get("/api/orders", Some(&forged)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A real admin token with its payload changed to another user's.
        let mut parts: Vec<&str> = admin.split('.').collect();
        let tampered = base64_url(
            &serde_json::to_vec(&json!({"sub": "dev|asha@example.com",
            "name": "asha", "email": "asha@example.com", "role": "admin", "iss": "ekart-dev",
            "iat": now, "exp": now + 3600}))
            .unwrap(),
        );
        parts[1] = &tampered;
        let (status, _) = app.get("/api/orders", Some(&parts.join("."))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
);

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn on_both_with_sessions(idle_secs: u64, ttl_secs: u64) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::spawn_with(backend, |s| {
            s.auth.session_idle_secs = idle_secs;
            s.auth.token_ttl_secs = ttl_secs;
        })
        .await;
        apps.extend(app);
    }
    apps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_session_ends_and_its_journey_says_when() {
    for app in on_both_with_sessions(2, 3600).await {
        let asha = app.token("asha", "customer").await;
        // Used every 400 ms, it stays alive past its idle limit.
        for _ in 0..8 {
            let (status, _) = app.get("/api/cart", Some(&asha)).await;
            assert_eq!(status, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let (_, me) = app.get("/auth/session", Some(&asha)).await;
        let session = me["session"].as_str().unwrap().to_string();
        // Left alone longer than that, it has ended.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let (status, problem) = app.get("/api/cart", Some(&asha)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
        // The same credential as a cookie (a copy stolen while it was live) is no better.
        let cookie = format!("ekart_session={asha}");
        assert_eq!(cart_as(&app, &cookie).await, StatusCode::UNAUTHORIZED);
        let (status, _) = app.get("/auth/session", Some(&asha)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let admin = app.token("boss", "admin").await;
        let (_, journey) = app
            .get(&format!("/api/journeys/{session}"), Some(&admin))
            .await;
        let (started, ended) = (
            journey["session"]["started_at"].as_i64().unwrap(),
            journey["session"]["ended_at"].as_i64().expect("ended"),
        );
        assert!(ended - started >= 4000, "{journey}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_session_still_ends_at_its_absolute_limit() {
    for app in on_both_with_sessions(60, 2).await {
        let asha = app.token("asha", "customer").await;
        let (status, _) = app.get("/api/cart", Some(&asha)).await;
        assert_eq!(status, StatusCode::OK);
        let mut refused_after = None;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let (status, _) = app.get("/api/cart", Some(&asha)).await;
            if status == StatusCode::UNAUTHORIZED {
                refused_after = Some(started.elapsed());
                break;
            }
            assert_eq!(status, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let after = refused_after.expect("refused within 5 s");
        assert!(after >= Duration::from_millis(1500), "{after:?}");
    }
}

/// `ekart serve --insecure-dev-sign-in` says dev sign-in is open to the network, and it is:
/// the dev token route is there (it was left out when the flag was set).
#[tokio::test]
async fn dev_sign_in_open_to_the_network_still_signs_in() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.auth.dev_on_network = true)
        .await
        .unwrap();
    let token = app.token("asha", "customer").await;
    let (status, me) = app.get("/auth/session", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "asha");
}

/// A name or email with an escape, a line break or a direction override is refused (422):
/// it would be shown on pages and written in the audit log as it came.
#[tokio::test]
async fn names_and_emails_with_control_or_direction_characters_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    for (name, email) in [
        ("asha", "asha\u{1b}[31m@example.com"),
        ("asha", "asha\u{202e}moc.elpmaxe@example.com"),
        ("asha\nuser=admin", "asha@example.com"),
        ("asha\u{2066}", "asha@example.com"),
        ("\u{1b}[2J", "asha@example.com"),
    ] {
        let (status, problem) = app
            .post(
                "/auth/dev/token",
                None,
                json!({"name": name, "email": email, "role": "customer"}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?} {email:?}: {problem}"
        );
        assert_eq!(
            problem["type"].as_str().map(|t| t.ends_with("validation")),
            Some(true)
        );
    }
    // Letters of any script are welcome.
    let (status, _) = app
        .post(
            "/auth/dev/token",
            None,
            json!({"name": "آشا राव", "email": "asha@example.com", "role": "customer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Even signed with the shop's own key (defence in depth: these need the secret), a token
/// must name a live session of its own subject: one naming no session, or pairing one user
/// with another's live session, is refused, at once and after the session was found live.
#[tokio::test]
async fn a_shop_token_must_name_a_live_session_of_its_subject() {
    const SECRET: &str = "the shop's own session secret, for this test only";
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.auth.session_secret = SECRET.into())
        .await
        .unwrap();
    let asha = app.token("asha", "customer").await;
    // Asha's session is found live (and remembered as such).
    let (status, me) = app.get("/auth/session", Some(&asha)).await;
    assert_eq!(status, StatusCode::OK);
    let asha_session = me["session"].as_str().unwrap().to_string();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    let no_session = sign(json!({
        "sub": "dev|bela@example.com", "name": "bela", "email": "bela@example.com",
        "role": "admin", "iss": "ekart-dev", "iat": now, "exp": now + 3600,
    }));
    let borrowed = sign(json!({
        "sub": "dev|bela@example.com", "name": "bela", "email": "bela@example.com",
        "role": "admin", "iss": "ekart-dev", "iat": now, "exp": now + 3600,
        "sid": asha_session,
    }));
    for token in [&no_session, &borrowed] {
        let (status, body) = app.get("/api/orders", Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let cookie = format!("ekart_session={token}");
        assert_eq!(cart_as(&app, &cookie).await, StatusCode::UNAUTHORIZED);
    }
    // Asha's own token still works.
    let (status, _) = app.get("/api/orders", Some(&asha)).await;
    assert_eq!(status, StatusCode::OK);
}

/// A refused token is told so in plain words, never which of the library's checks failed.
#[tokio::test]
async fn a_refused_token_says_not_valid_and_no_more() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let real = app.token("asha", "customer").await;
    let tampered = format!("{}x", &real[..real.len() - 1]);
    for token in ["not-a-jwt", "a.b.c", tampered.as_str()] {
        let (status, problem) = app.get("/api/cart", Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            problem["detail"], "the access token is not valid",
            "{token}"
        );
    }
}
