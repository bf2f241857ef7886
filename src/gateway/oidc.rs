//! Sign-in through an OpenID Connect provider (`[auth] mode = "oidc"`): Okta, or any other.
//!
//! `GET /auth/login` sends the browser to the provider with an Authorization Code request
//! (PKCE S256, `state`, `nonce`; built with `oauth2`), remembering those in a short-lived,
//! signed, HttpOnly cookie. `GET /auth/callback` checks `state` against that cookie, exchanges
//! the code (with the PKCE verifier and the client secret), and verifies the ID token with
//! `jsonwebtoken`: signature against the provider's JWKS (an asymmetric algorithm only; the
//! key set is fetched again when a token names an unknown key, at most once a minute),
//! `iss`, `aud`, `exp`, `nbf` with a small leeway, and the `nonce`. The user module then
//! starts a session, and the browser gets the shop's session cookie.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell, RwLock};

use super::auth::{Authenticator, Identity, Role, SESSION_COOKIE};
use super::security::same_secret;
use crate::config::OidcSettings;
use crate::error::ApiError;
use crate::modules::user::UserStore;

/// The cookie that carries a sign-in in progress from `/auth/login` to `/auth/callback`.
const LOGIN_COOKIE: &str = "ekart_login";
/// How long a sign-in may take at the provider.
const LOGIN_TTL_SECS: i64 = 600;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// Fewest seconds between two JWKS fetches caused by unknown key ids.
const JWKS_REFRESH_SECS: u64 = 60;
/// Signatures accepted on ID tokens: asymmetric only, so the provider's public key can never
/// be used as an HMAC secret, and `none` is not an algorithm at all.
const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    /// Where the provider ends its own session (RP-initiated logout), if it offers that.
    end_session_endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct IdTokenField {
    id_token: String,
}

impl ExtraTokenFields for IdTokenField {}

type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What `/auth/login` remembers for `/auth/callback`, signed into [`LOGIN_COOKIE`].
#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    exp: i64,
}

/// The claims of a provider's token that the shop reads (ID and access tokens alike).
#[derive(Debug, Deserialize)]
struct ProviderClaims {
    sub: String,
    nonce: Option<String>,
    name: Option<String>,
    email: Option<String>,
    preferred_username: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// The provider's discovery document and signing keys: what the sign-in flow and the check of
/// API clients' bearer tokens share.
pub struct Provider {
    settings: OidcSettings,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
    jwks: RwLock<JwkSet>,
    jwks_fetched: Mutex<Option<Instant>>,
    jwks_fetches: AtomicU64,
}

impl Provider {
    pub fn new(settings: OidcSettings) -> anyhow::Result<Arc<Provider>> {
        Ok(Arc::new(Provider {
            settings,
            http: reqwest::Client::builder()
                // The token endpoint must not send us anywhere else.
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()?,
            discovery: OnceCell::new(),
            jwks: RwLock::new(JwkSet { keys: Vec::new() }),
            jwks_fetched: Mutex::new(None),
            jwks_fetches: AtomicU64::new(0),
        }))
    }

    /// How many times the key set was fetched.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    async fn discovery(&self) -> Result<&Discovery, ApiError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let found: Discovery = self.http.get(&url).send().await?.json().await?;
                if found.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/')
                {
                    anyhow::bail!("{url} names another issuer: {}", found.issuer);
                }
                Ok::<_, anyhow::Error>(found)
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %format!("{e:#}"), "cannot read the OIDC provider's discovery document");
                ApiError::unavailable("the sign-in provider cannot be reached; try again shortly")
            })
    }

    fn client(&self, d: &Discovery) -> Result<Client, ApiError> {
        let bad = |e: oauth2::url::ParseError| ApiError::internal(format!("OIDC endpoint: {e}"));
        Ok(
            oauth2::Client::new(ClientId::new(self.settings.client_id.clone()))
                .set_client_secret(ClientSecret::new(self.settings.client_secret.clone()))
                .set_auth_uri(AuthUrl::new(d.authorization_endpoint.clone()).map_err(bad)?)
                .set_token_uri(TokenUrl::new(d.token_endpoint.clone()).map_err(bad)?)
                .set_redirect_uri(
                    RedirectUrl::new(self.settings.redirect_url.clone()).map_err(bad)?,
                ),
        )
    }

    /// The key `kid` names, fetching the key set again if it is unknown (rate-limited).
    async fn key(&self, kid: Option<&str>, d: &Discovery) -> Result<DecodingKey, String> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some(jwk) = find(&*self.jwks.read().await) {
            return DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key: {e}"));
        }
        {
            let mut fetched = self.jwks_fetched.lock().await;
            let recently =
                fetched.is_some_and(|at| at.elapsed() < Duration::from_secs(JWKS_REFRESH_SECS));
            if !recently {
                *fetched = Some(Instant::now());
                self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ekart_oidc_jwks_fetches_total").increment(1);
                let set: JwkSet = async { self.http.get(&d.jwks_uri).send().await?.json().await }
                    .await
                    .map_err(|e: reqwest::Error| {
                        tracing::error!(error = %e, "cannot read the provider's JWKS");
                        "the provider's key set cannot be read".to_string()
                    })?;
                *self.jwks.write().await = set;
            }
        }
        let jwk = find(&*self.jwks.read().await)
            .ok_or_else(|| format!("no key {kid:?} in the provider's key set"))?;
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key: {e}"))
    }

    /// Checks a token the provider signed, meant for `audience`: signature (asymmetric only)
    /// against the provider's key set, issuer, audience, `exp` and `nbf` with a small leeway.
    async fn verify(&self, token: &str, audience: &str) -> Result<ProviderClaims, String> {
        let d = self.discovery().await.map_err(|e| e.detail)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!("{:?} is not an accepted signature", header.alg));
        }
        let key = self.key(header.kid.as_deref(), d).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&d.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        jsonwebtoken::decode::<ProviderClaims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    /// Verifies an ID token from this provider for this client, with the expected `nonce`.
    pub async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Identity, ApiError> {
        let claims = self
            .verify(token, &self.settings.client_id)
            .await
            .map_err(rejected)?;
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(rejected("the nonce is not this sign-in's".into()));
        }
        Ok(self.identity(claims))
    }

    /// Verifies an access token an API client sends as `Authorization: Bearer`: issued by
    /// this provider for the shop's API (`auth.oidc.audience`).
    pub async fn verify_access_token(&self, token: &str) -> Result<Identity, ApiError> {
        self.verify(token, &self.settings.audience)
            .await
            .map(|claims| self.identity(claims))
            .map_err(|why| {
                tracing::warn!(target: "audit", why = %why, "bearer token refused");
                ApiError::unauthorized(format!("the access token is not valid: {why}"))
            })
    }

    fn identity(&self, claims: ProviderClaims) -> Identity {
        let groups = match claims.rest.get(&self.settings.groups_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        let role = if groups.contains(&self.settings.admin_group.as_str()) {
            Role::Admin
        } else {
            Role::Customer
        };
        let email = claims.email.unwrap_or_default();
        let name = claims
            .name
            .or(claims.preferred_username)
            .unwrap_or_else(|| claims.sub.clone());
        Identity {
            sub: claims.sub,
            name,
            email,
            role,
            session: None,
            session_started_at: None,
        }
    }
}

/// The browser sign-in flow: `/auth/login`, `/auth/callback`, `/auth/logout`.
pub struct Oidc {
    provider: Arc<Provider>,
    auth: Arc<Authenticator>,
    users: UserStore,
    /// The session cookie is `Secure` (the shop is served over https).
    https: bool,
}

impl Oidc {
    pub fn new(
        provider: Arc<Provider>,
        auth: Arc<Authenticator>,
        users: UserStore,
        https: bool,
    ) -> Arc<Oidc> {
        Arc::new(Oidc {
            provider,
            auth,
            users,
            https,
        })
    }

    /// `GET /auth/login`, `GET /auth/callback` and `GET /auth/logout`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/auth/login", get(login))
            .route("/auth/callback", get(callback))
            .route("/auth/logout", get(logout))
            .with_state(self.clone())
    }
}

fn rejected(why: String) -> ApiError {
    tracing::warn!(target: "audit", why = %why, "sign-in refused");
    ApiError::unauthorized(format!("the sign-in could not be verified: {why}"))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// A path inside the shop, or `/`: never a way off-site (`//host`, `/\host`, schemes).
fn inside_the_shop(path: Option<&str>) -> String {
    match path {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.chars().any(|c| c.is_control()) =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

async fn login(
    State(oidc): State<Arc<Oidc>>,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let d = oidc.provider.discovery().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = CsrfToken::new_random();
    let client = oidc.provider.client(d)?;
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .add_extra_param("nonce", nonce.secret());
    for scope in &oidc.provider.settings.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state) = request.url();
    let pending = PendingLogin {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        return_to: inside_the_shop(q.return_to.as_deref()),
        exp: chrono::Utc::now().timestamp() + LOGIN_TTL_SECS,
    };
    let cookie = Cookie::build((LOGIN_COOKIE, oidc.auth.seal(&pending)))
        .path("/auth/callback")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(oidc.https)
        .max_age(time::Duration::seconds(LOGIN_TTL_SECS))
        .build();
    Ok((jar.add(cookie), Redirect::to(url.as_str())).into_response())
}

/// Ends the browser's session here (if it still has one: the storefront's `POST /signout`
/// ends it first), then sends the browser to the provider to end its session too, and back to
/// the shop's home. A GET, as providers' logout endpoints are: a third-party page could sign
/// a shopper out, but never in, nor do anything in their name.
async fn logout(State(oidc): State<Arc<Oidc>>, jar: CookieJar) -> Result<Response, ApiError> {
    if let Some(Identity {
        sub,
        session: Some(session),
        ..
    }) = jar
        .get(SESSION_COOKIE)
        .and_then(|c| oidc.auth.verify(c.value()).ok())
    {
        oidc.users.end_session(&sub, &session).await?;
        tracing::info!(target: "audit", user = %sub, session = %session, action = "sign out");
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    let settings = &oidc.provider.settings;
    let d = oidc.provider.discovery().await?;
    let Some(end) = &d.end_session_endpoint else {
        return Ok((jar, Redirect::to("/")).into_response());
    };
    let mut url = reqwest::Url::parse(end)
        .map_err(|e| ApiError::internal(format!("end_session_endpoint: {e}")))?;
    let home = reqwest::Url::parse(&settings.redirect_url)
        .and_then(|u| u.join("/"))
        .map_err(|e| ApiError::internal(format!("redirect_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("client_id", &settings.client_id)
        .append_pair("post_logout_redirect_uri", home.as_str());
    Ok((jar, Redirect::to(url.as_str())).into_response())
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(oidc): State<Arc<Oidc>>,
    jar: CookieJar,
    Query(q): Query<CallbackQuery>,
) -> Response {
    // A pending sign-in is used once: its cookie goes whatever the outcome.
    let pending = jar
        .get(LOGIN_COOKIE)
        .and_then(|c| oidc.auth.open::<PendingLogin>(c.value()))
        .filter(|p| p.exp > chrono::Utc::now().timestamp());
    let jar = jar.remove(Cookie::build(LOGIN_COOKIE).path("/auth/callback"));
    // A new session at every sign-in; the one this browser had ends (session ids never carry
    // over a sign-in).
    let previous = jar
        .get(SESSION_COOKIE)
        .and_then(|c| oidc.auth.verify(c.value()).ok());
    if let Some(Identity {
        sub,
        session: Some(session),
        ..
    }) = previous
    {
        if let Err(e) = oidc.users.end_session(&sub, &session).await {
            return (jar, ApiError::from(e)).into_response();
        }
    }
    match finish(&oidc, pending, q).await {
        Ok((session, return_to)) => (jar.add(session), Redirect::to(&return_to)).into_response(),
        Err(err) => (jar, err).into_response(),
    }
}

/// Checks the provider's answer against the pending sign-in, and starts the session.
async fn finish(
    oidc: &Oidc,
    pending: Option<PendingLogin>,
    q: CallbackQuery,
) -> Result<(Cookie<'static>, String), ApiError> {
    if let Some(error) = q.error {
        return Err(ApiError::unauthorized(format!(
            "the provider refused the sign-in: {error} {}",
            q.error_description.unwrap_or_default()
        )));
    }
    let pending = pending.ok_or_else(|| {
        rejected("no sign-in is in progress in this browser (or it expired)".into())
    })?;
    let state = q
        .state
        .ok_or_else(|| rejected("the provider's answer has no state".into()))?;
    if !same_secret(state.as_bytes(), pending.state.as_bytes()) {
        return Err(rejected("the state is not this sign-in's".into()));
    }
    let code = q
        .code
        .ok_or_else(|| rejected("the provider's answer has no code".into()))?;
    let d = oidc.provider.discovery().await?;
    let token = oidc
        .provider
        .client(d)?
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&oidc.provider.http)
        .await
        .map_err(|e| rejected(format!("the code exchange failed: {e}")))?;
    let mut identity = oidc
        .provider
        .verify_id_token(&token.extra_fields().id_token, &pending.nonce)
        .await?;
    let session = oidc.users.start_session(&identity).await?;
    tracing::info!(target: "audit", user = %identity.sub, role = ?identity.role,
        session = %session.id, action = "sign in (oidc)");
    identity.session = Some(session.id);
    identity.session_started_at = Some(session.started_at);
    let cookie = Cookie::build((SESSION_COOKIE, oidc.auth.issue(&identity)))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(oidc.https)
        .max_age(time::Duration::seconds(oidc.auth.ttl_secs() as i64))
        .build();
    Ok((cookie, pending.return_to))
}

#[cfg(test)]
mod tests {
    #[test]
    fn return_to_stays_in_the_shop() {
        for (asked, got) in [
            (Some("/cart"), "/cart"),
            (Some("/orders?status=failed"), "/orders?status=failed"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/ok\r\nSet-Cookie: x=y"), "/"),
            (None, "/"),
        ] {
            assert_eq!(super::inside_the_shop(asked), got, "{asked:?}");
        }
    }
}
