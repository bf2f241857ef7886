//! Bearer tokens from the provider for API clients, and tokens crafted to get past the check.
//! Each flaw is refused on its own, beside a token without it (signed with the provider's
//! own key) that passes.

use ekart::config::OidcSettings;
use ekart::gateway::oidc::Provider;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::PkceCodeChallenge;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

use super::{
    browser, provider, shop, signing_key, walk_the_provider, SigningKey, API_AUDIENCE, API_CLIENT,
    API_SCOPE,
};
use crate::support::TestApp;

/// A shop, and what it takes to forge tokens its provider would have signed.
struct Forger {
    app: TestApp,
    issuer: String,
    key: SigningKey,
}

async fn forger() -> Option<Forger> {
    let key = signing_key()?;
    let (issuer, _) = provider()?;
    Some(Forger {
        app: shop().await?,
        issuer,
        key,
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Forger {
    /// What the provider puts in an access token for the shop's API, good for a minute.
    fn claims(&self) -> Value {
        json!({
            "iss": self.issuer, "sub": "asha", "aud": API_AUDIENCE, "client_id": API_CLIENT,
            "scope": format!("openid {API_SCOPE}"), "groups": ["customers"],
            "iat": now(), "exp": now() + 60,
        })
    }

    /// `claims` signed with the provider's key, as the provider would.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.kid.clone());
        let key = EncodingKey::from_rsa_pem(self.key.pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// What the shop answers the token, at a route that needs a signed-in user.
    async fn status(&self, token: &str) -> StatusCode {
        let res = self
            .app
            .client
            .get(format!("{}/api/cart", self.app.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        if status == StatusCode::UNAUTHORIZED {
            let problem: Value = res.json().await.unwrap();
            assert_eq!(problem["status"], 401, "{problem}");
        }
        status
    }

    /// Refused, while the same claims without the flaw pass.
    async fn refuses(&self, flawed: &str) {
        assert_eq!(
            self.status(&self.sign(&self.claims())).await,
            StatusCode::OK
        );
        assert_eq!(self.status(flawed).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_alg_none_is_refused() {
    let Some(f) = forger().await else { return };
    let header = json!({"alg": "none", "typ": "JWT", "kid": f.key.kid});
    let token = format!(
        "{}.{}.",
        base64_url(header.to_string().as_bytes()),
        base64_url(f.claims().to_string().as_bytes())
    );
    f.refuses(&token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hs256_token_keyed_with_the_providers_public_key_is_refused() {
    let Some(f) = forger().await else { return };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(f.key.kid.clone());
    for secret in [
        f.key.public_pem.as_bytes(),
        f.key.public_pem.trim().as_bytes(),
    ] {
        let token =
            jsonwebtoken::encode(&header, &f.claims(), &EncodingKey::from_secret(secret)).unwrap();
        f.refuses(&token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_issuer_is_refused() {
    let Some(f) = forger().await else { return };
    let mut claims = f.claims();
    claims["iss"] = json!("https://evil.example/oauth2/default");
    f.refuses(&f.sign(&claims)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused() {
    let Some(f) = forger().await else { return };
    // An ID token's audience is the client: it is not an access token for the API.
    for audience in [json!("ekart"), json!("api://another-shop"), json!([])] {
        let mut claims = f.claims();
        claims["aud"] = audience;
        f.refuses(&f.sign(&claims)).await;
    }
    let mut claims = f.claims();
    claims.as_object_mut().unwrap().remove("aud");
    f.refuses(&f.sign(&claims)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let Some(f) = forger().await else { return };
    let mut claims = f.claims();
    // Past the 30 s of clock skew allowed.
    claims["iat"] = json!(now() - 600);
    claims["exp"] = json!(now() - 60);
    f.refuses(&f.sign(&claims)).await;
    claims.as_object_mut().unwrap().remove("exp");
    f.refuses(&f.sign(&claims)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_yet_valid_is_refused() {
    let Some(f) = forger().await else { return };
    let mut claims = f.claims();
    claims["nbf"] = json!(now() + 120);
    claims["exp"] = json!(now() + 600);
    f.refuses(&f.sign(&claims)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_payload_is_refused() {
    let Some(f) = forger().await else { return };
    let token = f.sign(&f.claims());
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut claims = f.claims();
    claims["groups"] = json!(["ekart-admins"]);
    parts[1] = base64_url(claims.to_string().as_bytes());
    f.refuses(&parts.join(".")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_an_unknown_key_is_refused() {
    let Some(f) = forger().await else { return };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("a-key-the-provider-never-had".into());
    let key = EncodingKey::from_rsa_pem(f.key.pem.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &f.claims(), &key).unwrap();
    f.refuses(&token).await;
}

/// The provider as the shop's gateway sees it, for checks below the HTTP layer.
fn provider_client() -> Option<Provider> {
    let (issuer, secret) = provider()?;
    Some(provider_at(issuer, secret))
}

fn provider_at(issuer: String, secret: String) -> Provider {
    let provider = Provider::new(OidcSettings {
        issuer,
        client_id: "ekart".into(),
        client_secret: secret,
        redirect_url: "http://127.0.0.1/auth/callback".into(),
        scopes: vec!["openid".into()],
        audience: API_AUDIENCE.into(),
        api_clients: vec![],
        api_scopes: vec![],
        groups_claim: "groups".into(),
        admin_group: "ekart-admins".into(),
    })
    .unwrap();
    std::sync::Arc::into_inner(provider).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_key_ids_cannot_make_the_shop_hammer_the_provider() {
    let (Some(p), Some(key)) = (provider_client(), signing_key()) else {
        return;
    };
    let (issuer, _) = provider().unwrap();
    let claims = json!({"iss": issuer, "sub": "asha", "aud": API_AUDIENCE, "cid": "ekart",
        "iat": now(), "exp": now() + 60});
    let signer = EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let good = jsonwebtoken::encode(&header, &claims, &signer).unwrap();
    assert!(p.verify_access_token(&good).await.is_ok());
    assert_eq!(p.jwks_fetches(), 1);
    for i in 0..50 {
        header.kid = Some(format!("made-up-{i}"));
        let token = jsonwebtoken::encode(&header, &claims, &signer).unwrap();
        assert!(p.verify_access_token(&token).await.is_err());
    }
    // One fetch at most per minute, however many unknown key ids arrive.
    assert!(p.jwks_fetches() <= 2, "{} fetches", p.jwks_fetches());
    assert!(p.verify_access_token(&good).await.is_ok());
}

/// The provider as the shop's gateway sees it, and a pen that signs ID tokens for the shop as
/// the provider would.
struct IdTokens {
    provider: Provider,
    issuer: String,
    key: EncodingKey,
    header: Header,
}

fn id_tokens() -> Option<IdTokens> {
    let (client, key, (issuer, _)) = (provider_client()?, signing_key()?, provider()?);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    Some(IdTokens {
        provider: client,
        issuer,
        key: EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
        header,
    })
}

impl IdTokens {
    /// An ID token about asha for the shop, good for a minute, with `claims` added (a null
    /// one taken out).
    fn sign(&self, claims: Value) -> String {
        let mut all = json!({"iss": self.issuer, "sub": "asha", "aud": "ekart",
            "iat": now(), "exp": now() + 60});
        for (name, value) in claims.as_object().unwrap() {
            match value {
                Value::Null => all.as_object_mut().unwrap().remove(name),
                value => all
                    .as_object_mut()
                    .unwrap()
                    .insert(name.clone(), value.clone()),
            };
        }
        jsonwebtoken::encode(&self.header, &all, &self.key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_needs_this_sign_ins_nonce() {
    let Some(t) = id_tokens() else { return };
    let ours = "n-0S6_WzA2Mj";
    let token = t.sign(json!({ "nonce": ours }));
    assert!(t.provider.verify_id_token(&token, ours).await.is_ok());
    for wrong in [json!("another-sign-in's"), json!(""), Value::Null] {
        let token = t.sign(json!({ "nonce": wrong }));
        let err = t.provider.verify_id_token(&token, ours).await.unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(err.detail.contains("nonce"), "{}", err.detail);
    }
}

/// Signs in as `login` at the provider as the public API client `ekart-cli` (code flow with
/// PKCE, as a script or an app would) and answers its token response.
async fn api_client_tokens(login: &str) -> Value {
    let (issuer, _) = provider().unwrap();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let redirect = "http://127.0.0.1/callback";
    let start = reqwest::Url::parse_with_params(
        &format!("{issuer}/auth"),
        &[
            ("client_id", "ekart-cli"),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("scope", "openid profile email groups"),
            ("state", "some-state"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("resource", API_AUDIENCE),
        ],
    )
    .unwrap();
    let back = walk_the_provider(&browser(), start.as_str(), redirect, login).await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {back}"));
    let res = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", "ekart-cli"),
            ("code_verifier", verifier.secret()),
            ("resource", API_AUDIENCE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_client_calls_with_the_providers_access_token() {
    let Some(app) = shop().await else { return };
    let call = |token: String, method: reqwest::Method, path: &str, body: Option<Value>| {
        let req = app
            .client
            .request(method, format!("{}{path}", app.base))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let req = match body {
            Some(body) => req.json(&body),
            None => req,
        };
        async move { req.send().await.unwrap().status() }
    };
    let product = json!({"sku": "TEA", "name": "Tea", "description": "", "price_minor": 100,
        "currency": "INR", "quantity": 5});

    let asha = api_client_tokens("asha").await;
    let access = asha["access_token"].as_str().unwrap().to_string();
    assert_eq!(access.split('.').count(), 3, "a JWT: {access}");
    let status = call(access.clone(), reqwest::Method::GET, "/api/cart", None).await;
    assert_eq!(status, StatusCode::OK);
    let me: Value = app
        .client
        .get(format!("{}/auth/session", app.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["sub"], "asha");
    assert_eq!(me["role"], "customer");
    // A customer cannot manage stock.
    let status = call(
        access,
        reqwest::Method::POST,
        "/api/products",
        Some(product.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The ID token that came with it is for the client, not the API.
    let id_token = asha["id_token"].as_str().unwrap().to_string();
    let status = call(id_token, reqwest::Method::GET, "/api/cart", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A member of the admin group can.
    let admin = api_client_tokens("admin-ravi").await;
    let access = admin["access_token"].as_str().unwrap().to_string();
    let status = call(
        access,
        reqwest::Method::POST,
        "/api/products",
        Some(product),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// An access token is the shop's only if it was issued to an allowed client (Okta's `cid`,
/// RFC 9068's `client_id`) with the required scopes (Okta's `scp` list, RFC 9068's `scope`):
/// an audience alone is shared by every app on an Okta authorization server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_client_or_without_the_scopes_is_refused() {
    let Some(f) = forger().await else { return };
    let without = |claim: &str| {
        let mut claims = f.claims();
        claims.as_object_mut().unwrap().remove(claim);
        claims
    };
    let with = |claims: &Value, claim: &str, value: Value| {
        let mut claims = claims.clone();
        claims[claim] = value;
        claims
    };
    // Another app of the same organisation, by either claim; or no client named at all.
    f.refuses(&f.sign(&with(&f.claims(), "client_id", json!("unrelated-app"))))
        .await;
    let okta_style = with(&without("client_id"), "cid", json!("unrelated-app"));
    f.refuses(&f.sign(&okta_style)).await;
    f.refuses(&f.sign(&without("client_id"))).await;
    // The required scope missing, or only a look-alike of it.
    for scope in ["openid", "profiles", "openid profile-extra", ""] {
        f.refuses(&f.sign(&with(&f.claims(), "scope", json!(scope))))
            .await;
    }
    f.refuses(&f.sign(&without("scope"))).await;
    // Okta's spelling of an allowed client with its scopes passes; so does the shop's own.
    let okta = with(
        &with(&without("client_id"), "cid", json!(API_CLIENT)),
        "scp",
        json!(["openid", API_SCOPE]),
    );
    let okta = with(&okta, "scope", Value::Null);
    assert_eq!(f.status(&f.sign(&okta)).await, StatusCode::OK);
    let own = with(&f.claims(), "client_id", json!("ekart"));
    assert_eq!(f.status(&f.sign(&own)).await, StatusCode::OK);
    let okta_short = with(&okta, "scp", json!(["openid"]));
    f.refuses(&f.sign(&okta_short)).await;
}

/// OIDC Core 3.1.3.7: an ID token with several audiences, or any `azp`, must name this shop's
/// client as the party it was issued to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_issued_to_another_party_is_refused() {
    let Some(t) = id_tokens() else { return };
    let p = &t.provider;
    let nonce = "n-0S6_WzA2Mj";
    let id_token =
        |aud: Value, azp: Option<&str>| t.sign(json!({"aud": aud, "nonce": nonce, "azp": azp}));
    for (aud, azp) in [
        (json!("ekart"), None),
        (json!(["ekart"]), None),
        (json!("ekart"), Some("ekart")),
        (json!(["ekart", "another-app"]), Some("ekart")),
    ] {
        let token = id_token(aud.clone(), azp);
        assert!(
            p.verify_id_token(&token, nonce).await.is_ok(),
            "{aud} {azp:?}"
        );
    }
    for (aud, azp) in [
        (json!(["ekart", "another-app"]), None),
        (json!(["ekart", "another-app"]), Some("another-app")),
        (json!("ekart"), Some("another-app")),
    ] {
        let err = p
            .verify_id_token(&id_token(aud.clone(), azp), nonce)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{aud} {azp:?}");
        assert!(err.detail.contains("azp"), "{}", err.detail);
    }
}

/// A groups claim is a list of names; one string is one group's name, whatever it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_claim_given_as_one_string_is_one_group() {
    let Some(t) = id_tokens() else { return };
    let role = |groups: Value| {
        let token = t.sign(json!({"nonce": "n", "groups": groups}));
        let p = &t.provider;
        async move { p.verify_id_token(&token, "n").await.unwrap().is_admin() }
    };
    assert!(role(json!(["staff", "ekart-admins"])).await);
    assert!(role(json!("ekart-admins")).await);
    for not_admin in [
        json!("ekart-admins,staff"),
        json!("ekart-admins staff"),
        json!(["ekart-admins,staff"]),
        json!({"ekart-admins": true}),
    ] {
        assert!(!role(not_admin.clone()).await, "{not_admin}");
    }
}

/// A provider that cannot be reached is an outage, not a bad token: 503, and the shopper's
/// token may be tried again. This needs no provider at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_be_reached_answers_503() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let p = provider_at(format!("http://{closed}"), "secret".into());
    // Its signature is never reached: the provider's keys cannot be had.
    let claims = json!({"iss": format!("http://{closed}"), "sub": "asha", "aud": API_AUDIENCE,
        "client_id": "ekart", "nonce": "n", "iat": now(), "exp": now() + 60});
    let token = format!(
        "{}.{}.{}",
        base64_url(br#"{"alg":"RS256","kid":"k"}"#),
        base64_url(claims.to_string().as_bytes()),
        base64_url(b"a signature")
    );
    let err = p.verify_access_token(&token).await.unwrap_err();
    assert_eq!(
        err.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        err.detail
    );
    let err = p.verify_id_token(&token, "n").await.unwrap_err();
    assert_eq!(
        err.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        err.detail
    );
    let err = p.begin().await.unwrap_err();
    assert_eq!(
        err.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        err.detail
    );
}
