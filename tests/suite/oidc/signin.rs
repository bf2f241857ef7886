//! The browser's sign-in at the provider: code flow, roles from groups, sign-out, and answers
//! that are forged, replayed or lead off-site.

use reqwest::{header, StatusCode};
use serde_json::json;

use super::{browser, provider, shop, through_the_provider};

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
    // An answer that sets a session cookie is never kept by a cache.
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
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

    // Signing out: the page's form goes on (307, the same POST) to the user module's
    // sign-out, which ends the shop's session, then sends the browser to the provider's.
    let out = browser
        .post(format!("{}/signout", app.base))
        .header(header::ORIGIN, &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(out.headers()[header::LOCATION], "/auth/logout");
    let to_provider = browser
        .post(format!("{}/auth/logout", app.base))
        .header(header::ORIGIN, &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(to_provider.status(), StatusCode::SEE_OTHER);
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
    let end =
        reqwest::Url::parse(to_provider.headers()[header::LOCATION].to_str().unwrap()).unwrap();
    let (issuer, _) = provider().unwrap();
    assert!(
        end.as_str().starts_with(&format!("{issuer}/session/end?")),
        "{end}"
    );
    let param = |name: &str| {
        end.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("client_id").as_deref(), Some("ekart"));
    assert!(param("post_logout_redirect_uri").is_some(), "{end}");
    // The hint is the ID token she signed in with: the provider's, for this shop, about her.
    let hint = param("id_token_hint").expect("an id_token_hint");
    let claims = hint.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], "ekart");
    assert_eq!(claims["sub"], "asha");
    // And the provider takes it: it asks to confirm the sign-out, rather than refusing.
    let at_provider = browser.get(end).send().await.unwrap();
    assert_eq!(at_provider.status(), StatusCode::OK);
    assert!(at_provider.text().await.unwrap().contains("logout"));
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
    // No pending sign-in at all (and no cookie: still not for a cache to keep).
    let res = reqwest::get(format!("{}/auth/callback?code=x&state=y", app.base))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    // The provider's answer with its state taken out.
    let browser = self::browser();
    let back = through_the_provider(&browser, &app.base, "asha", "/").await;
    let mut stripped = back.clone();
    let query: Vec<(String, String)> = back
        .query_pairs()
        .filter(|(k, _)| k != "state")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    stripped.query_pairs_mut().clear().extend_pairs(query);
    let res = browser.get(stripped).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_without_its_pkce_verifier_is_worthless() {
    let Some(app) = shop().await else { return };
    let (issuer, secret) = provider().unwrap();
    let browser = browser();
    let back = through_the_provider(&browser, &app.base, "asha", "/").await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // Someone who intercepts the redirect holds the code, even the client secret, but not
    // the verifier that stayed in the shopper's sign-in cookie.
    let redirect = format!("{}/auth/callback", app.base);
    for verifier in [
        None,
        Some("a-guess-at-the-verifier-that-is-long-enough-43chars"),
    ] {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
        ];
        form.extend(verifier.map(|v| ("code_verifier", v)));
        let res = reqwest::Client::new()
            .post(format!("{issuer}/token"))
            .basic_auth("ekart", Some(&secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(
            ["invalid_grant", "invalid_request"].contains(&body["error"].as_str().unwrap()),
            "{body}"
        );
    }
    // Nor can they finish the sign-in at the shop from another browser: no verifier there.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(back)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// Another site can send a shopper's browser anywhere: to `/auth/logout`, or to
/// `/auth/callback` with or without parameters. None of that signs her out; her own page's
/// Sign out does, and a copy of her cookie is worthless afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_page_cannot_sign_a_shopper_out() {
    let Some(app) = shop().await else { return };
    let browser = browser();
    let back = through_the_provider(&browser, &app.base, "asha", "/").await;
    let res = browser.get(back).send().await.unwrap();
    let cookie = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("ekart_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let cart = |cookie: String| {
        let url = format!("{}/api/cart", app.base);
        async move {
            let req = reqwest::Client::new()
                .get(url)
                .header(header::COOKIE, cookie);
            req.send().await.unwrap().status()
        }
    };
    assert_eq!(cart(cookie.clone()).await, StatusCode::OK);
    let visit = |path: &str| browser.get(format!("{}{path}", app.base)).send();
    assert_eq!(
        visit("/auth/logout").await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    for path in [
        "/auth/callback",
        "/auth/callback?code=x&state=y",
        "/auth/callback?error=access_denied",
    ] {
        assert_eq!(
            visit(path).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    for origin in ["https://evil.example", "null"] {
        let res = browser
            .post(format!("{}/auth/logout", app.base))
            .header(header::ORIGIN, origin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    let res = browser
        .post(format!("{}/auth/logout", app.base))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        cart(cookie.clone()).await,
        StatusCode::OK,
        "still signed in"
    );

    let res = browser
        .post(format!("{}/auth/logout", app.base))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // A copy of the cookie kept from before is worthless now.
    assert_eq!(cart(cookie).await, StatusCode::UNAUTHORIZED);
}
