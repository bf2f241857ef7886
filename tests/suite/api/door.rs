//! The door: security headers, the same-origin check on state-changing browser requests, and
//! rate limits.

use reqwest::{header, StatusCode};
use serde_json::{json, Value};

use crate::support::{Backend, TestApp};

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    for path in ["/", "/api/products", "/nowhere", "/static/app.css"] {
        let res = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let h = res.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin");
        assert!(
            !h.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "no HSTS over http"
        );
    }
    let behind_https = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.public_url = "https://shop.example.com".into();
    })
    .await
    .unwrap();
    let res = behind_https
        .client
        .get(format!("{}/", behind_https.base))
        .send()
        .await
        .unwrap();
    assert!(res.headers()[header::STRICT_TRANSPORT_SECURITY]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
    // Behind https the session cookie is Secure too.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/signin", behind_https.base))
        .header(header::ORIGIN, &behind_https.base)
        .form(&[
            ("name", "Asha"),
            ("email", "asha@example.com"),
            ("role", "customer"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}

#[tokio::test]
async fn a_form_post_from_another_site_is_refused_and_changes_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let admin = app.token("admin", "admin").await;
    let tea = app.product(&admin, "TEA", 25_000, 10).await;
    let me = app.token("asha", "customer").await;
    let cookie = format!("ekart_session={me}");
    let add = |origin: Option<&str>| {
        let mut req = app
            .client
            .post(format!("{}/cart/items", app.base))
            .header(header::COOKIE, &cookie)
            .form(&[("product_id", tea.as_str()), ("quantity", "1")]);
        if let Some(origin) = origin {
            req = req.header(header::ORIGIN, origin);
        }
        req
    };
    for origin in [None, Some("http://evil.example"), Some("null")] {
        let res = add(origin).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin:?}");
    }
    let (_, cart) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(cart["lines"], json!([]), "nothing was added");

    // The same form from the shop's own page works.
    let res = add(Some(&app.base)).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let (_, cart) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(cart["lines"][0]["quantity"], 1);

    // The session cookie cannot drive the JSON API from elsewhere either…
    let res = app
        .client
        .post(format!("{}/auth/signout", app.base))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // …while API clients with a bearer token need no Origin at all.
    let (status, _) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(status, StatusCode::OK);
    app.add_to_cart(&me, &tea, 1).await;
}

async fn status_and_retry_after(res: reqwest::Response) -> (StatusCode, Option<u64>, Value) {
    let status = res.status();
    let retry = res
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn past_the_limits_come_429s_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.enabled = true;
        s.limits.sign_in_per_minute = 1;
        s.limits.sign_in_burst = 3;
        s.limits.checkout_per_minute = 1;
        s.limits.checkout_burst = 2;
        s.limits.per_second = 1;
        s.limits.burst = 40;
    })
    .await
    .unwrap();

    // Sign-ins, per address: three, then 429.
    let mut tokens = Vec::new();
    for name in ["admin", "asha", "ravi"] {
        let role = if name == "admin" { "admin" } else { "customer" };
        tokens.push(app.token(name, role).await);
    }
    let res = app
        .client
        .post(format!("{}/auth/dev/token", app.base))
        .json(&json!({"name": "mallory", "email": "m@example.com", "role": "customer"}))
        .send()
        .await
        .unwrap();
    let (status, retry, problem) = status_and_retry_after(res).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    assert_eq!(problem["type"], "/problems/rate-limited");

    // Checkouts, per shopper: two, then 429; another shopper has a budget of their own.
    let tea = app.product(&tokens[0], "TEA", 25_000, 100).await;
    let (asha, ravi) = (&tokens[1], &tokens[2]);
    for _ in 0..2 {
        app.add_to_cart(asha, &tea, 1).await;
        let (status, body) = app
            .post("/api/checkout", Some(asha), json!({"payment_mode": "CASH"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.add_to_cart(asha, &tea, 1).await;
    let res = app
        .client
        .post(format!("{}/api/checkout", app.base))
        .bearer_auth(asha)
        .json(&json!({"payment_mode": "CASH"}))
        .send()
        .await
        .unwrap();
    let (status, retry, _) = status_and_retry_after(res).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
    let (_, cart) = app.get("/api/cart", Some(asha)).await;
    assert_eq!(
        cart["lines"][0]["quantity"], 1,
        "the refused checkout left the cart as it was"
    );
    app.add_to_cart(ravi, &tea, 1).await;
    let (status, _) = app
        .post("/api/checkout", Some(ravi), json!({"payment_mode": "CASH"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Every request, per client: the burst, then 429.
    let mut limited = false;
    for _ in 0..60 {
        let res = app
            .client
            .get(format!("{}/api/cart", app.base))
            .bearer_auth(ravi)
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key(header::RETRY_AFTER));
            limited = true;
            break;
        }
    }
    assert!(limited, "the general limit applies");
}

/// The limits key on who a request proved to be, not on what it sends: a fresh random
/// cookie per request is an anonymous client at its address, and one token spelled anew
/// (`bearer`, extra spaces) is the same shopper.
#[tokio::test]
async fn limits_key_on_the_verified_client_not_on_what_it_sends() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.enabled = true;
        s.limits.checkout_per_minute = 1;
        s.limits.checkout_burst = 1;
        s.limits.per_second = 1;
        s.limits.burst = 10;
    })
    .await
    .unwrap();
    let admin = app.token("admin", "admin").await;
    let asha = app.token("asha", "customer").await;
    let tea = app.product(&admin, "TEA", 25_000, 100).await;

    // Checkouts: one, then the same token re-spelled is still asha, and refused.
    app.add_to_cart(&asha, &tea, 1).await;
    let (status, body) = app
        .post(
            "/api/checkout",
            Some(&asha),
            json!({"payment_mode": "CASH"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.add_to_cart(&asha, &tea, 1).await;
    for spelling in [format!("bearer {asha}"), format!("Bearer   {asha}  ")] {
        let res = app
            .client
            .post(format!("{}/api/checkout", app.base))
            .header(header::AUTHORIZATION, &spelling)
            .json(&json!({"payment_mode": "CASH"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{spelling:?}");
    }

    // Every request: a new random cookie each time is still this address, and runs out.
    let mut limited = false;
    for i in 0..40 {
        let res = app
            .client
            .get(format!("{}/api/products", app.base))
            .header(
                header::COOKIE,
                format!("ekart_session=random-{i}-{}", uuid::Uuid::new_v4()),
            )
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "random cookies do not escape the limit");
}

/// `/metrics` is for a scraper with the token, or on an address of its own; it is never
/// judged from the client's address or headers (behind a proxy that sets only `X-Real-IP`,
/// every client looks local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_only_with_the_token_or_on_their_own_address() {
    let status = |url: String, headers: &[(&str, &str)]| {
        let mut req = reqwest::Client::new().get(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        async move { req.send().await.unwrap().status() }
    };
    let Some(plain) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let at = |app: &TestApp| format!("{}/metrics", app.base);
    for headers in [
        &[][..],
        &[("x-real-ip", "127.0.0.1")],
        &[("x-forwarded-for", "203.0.113.7")],
    ] {
        assert_eq!(status(at(&plain), headers).await, StatusCode::NOT_FOUND);
    }

    let token = "a-scraper-token-from-the-environment";
    let Some(scraped) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.metrics_token = token.into();
    })
    .await
    else {
        return;
    };
    let bearer = format!("Bearer {token}");
    assert_eq!(
        status(at(&scraped), &[("authorization", &bearer)]).await,
        StatusCode::OK
    );
    for wrong in [
        "",
        "Bearer nope",
        "Bearer a-scraper-token-from-the-environmenT",
    ] {
        assert_eq!(
            status(at(&scraped), &[("authorization", wrong)]).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(status(at(&scraped), &[]).await, StatusCode::NOT_FOUND);

    // An address of their own serves the metrics and nothing else; the shop's address none.
    let Some(apart) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.metrics_addr = "127.0.0.1:0".into();
    })
    .await
    else {
        return;
    };
    let metrics = apart.metrics.clone().expect("a metrics address");
    let res = reqwest::get(format!("{metrics}/metrics")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("# TYPE"));
    for elsewhere in [format!("{metrics}/api/products"), format!("{metrics}/")] {
        assert_eq!(status(elsewhere, &[]).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(status(at(&apart), &[]).await, StatusCode::NOT_FOUND);
}

/// What a signed-in shopper gets (their cart, their session, their pages) is never stored by
/// a cache; the public catalog and the immutable assets keep their own rules.
#[tokio::test]
async fn personal_answers_are_not_stored() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("asha", "customer").await;
    for path in ["/api/cart", "/auth/session", "/api/orders", "/api/journeys"] {
        let (status, headers, _) = app
            .call_with(reqwest::Method::GET, path, Some(&token), None, &[])
            .await;
        assert!(status.is_success(), "{path}: {status}");
        assert_eq!(
            headers[reqwest::header::CACHE_CONTROL],
            "no-store",
            "{path}"
        );
    }
    let mut browser = crate::api::pages::Browser::new(&app);
    browser.sign_in("bela", "customer").await;
    let page = browser.get("/cart").await;
    assert_eq!(page.headers[reqwest::header::CACHE_CONTROL], "no-store");
    let (_, headers, _) = app
        .call_with(reqwest::Method::GET, "/api/products", None, None, &[])
        .await;
    assert_ne!(
        headers
            .get(reqwest::header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "the catalog without credentials is anyone's"
    );
}

/// Slow and idle clients hold no socket for long: a connection that sends nothing, one that
/// dribbles its headers, and one that announces a huge body and sends two bytes are all
/// closed (or answered) within the configured seconds.
#[tokio::test]
async fn slow_or_idle_connections_are_closed() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.header_timeout_secs = 1;
        s.server.body_timeout_secs = 1;
    })
    .await
    .unwrap();
    let address = app.base.trim_start_matches("http://").to_string();
    // Reads until the server closes the connection (or 5 s pass); answers how long it took
    // and what it said.
    async fn until_closed(
        stream: &mut tokio::net::TcpStream,
        started: Instant,
    ) -> (Duration, String) {
        let mut said = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => said.extend_from_slice(&buf[..n]),
                Err(_) => panic!("still open after 5 s"),
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&said).into_owned(),
        )
    }

    // Idle: connected, nothing sent.
    let started = Instant::now();
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (took, _) = until_closed(&mut idle, started).await;
    assert!(
        took < Duration::from_secs(4),
        "idle connection open for {took:?}"
    );

    // Idle between requests on a kept-alive connection.
    let mut kept = tokio::net::TcpStream::connect(&address).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (took, said) = until_closed(&mut kept, started).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(
        took < Duration::from_secs(4),
        "kept-alive connection open for {took:?}"
    );

    // Slowloris: a header line every 300 ms, never finished.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n")
        .await
        .unwrap();
    let mut closed_after = None;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow
            .write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let took = closed_after.expect("a slowloris connection stayed open for 6 s");
    assert!(took < Duration::from_secs(4), "slowloris open for {took:?}");

    // A 10 GB body announced, two bytes sent.
    let mut huge = tokio::net::TcpStream::connect(&address).await.unwrap();
    let started = Instant::now();
    huge.write_all(
        b"POST /api/products HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
          Content-Length: 10000000000\r\n\r\n{\"",
    )
    .await
    .unwrap();
    let (took, _) = until_closed(&mut huge, started).await;
    assert!(
        took < Duration::from_secs(4),
        "a stalled body was waited on for {took:?}"
    );
}
