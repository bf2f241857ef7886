//! The OpenID Connect provider (`[auth] mode = "oidc"`): Okta, or any other. What the door
//! and the user module's sign-in routes (`modules::user::oidc`) ask of it.
//!
//! A sign-in is an Authorization Code flow: [`Provider::begin`] builds the request (PKCE S256,
//! `state`, `nonce`; with `oauth2`) and the [`Grant`] the callback must match;
//! [`Provider::complete`] checks `state`, exchanges the code (with the PKCE verifier and the
//! client secret), and verifies the ID token with `jsonwebtoken`: signature against the
//! provider's JWKS (an asymmetric algorithm only; the key set is fetched again when a token
//! names an unknown key, at most once a minute), `iss`, `aud`, `exp`, `nbf` with a small
//! leeway, and the `nonce`. API clients' bearer tokens are checked the same way
//! ([`Provider::verify_access_token`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use super::auth::{Identity, Role};
use super::security::same_secret;
use crate::config::OidcSettings;
use crate::error::ApiError;

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

/// A code flow in progress: what the provider's answer must match. The browser carries it
/// (sealed) from the sign-in request to the callback.
#[derive(Debug, Serialize, Deserialize)]
pub struct Grant {
    state: String,
    nonce: String,
    verifier: String,
}

/// The claims of a provider's token that the shop reads (ID and access tokens alike).
#[derive(Debug, Deserialize)]
struct ProviderClaims {
    sub: String,
    /// One audience, or several (checked by `jsonwebtoken`; several call for `azp`).
    #[serde(default)]
    aud: Value,
    /// The party the ID token was issued to.
    azp: Option<String>,
    /// The client an access token was issued to: Okta's `cid`, RFC 9068's `client_id`.
    cid: Option<String>,
    client_id: Option<String>,
    /// Its scopes: Okta's `scp` (a list), RFC 9068's `scope` (space-separated).
    scp: Option<Vec<String>>,
    scope: Option<String>,
    nonce: Option<String>,
    name: Option<String>,
    email: Option<String>,
    preferred_username: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Why a provider's token was not taken.
#[derive(Debug)]
enum Unverified {
    /// The token fails a check: 401 (and why, for the audit log).
    Refused(String),
    /// The provider (its discovery document or key set) cannot be reached: 503, since the
    /// token may be good.
    Unreachable,
}

impl From<String> for Unverified {
    fn from(why: String) -> Self {
        Unverified::Refused(why)
    }
}

fn provider_unreachable() -> ApiError {
    ApiError::unavailable("the sign-in provider cannot be reached; try again shortly")
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

    /// Where to send the browser to sign in, and the grant its answer must match.
    pub async fn begin(&self) -> Result<(String, Grant), ApiError> {
        let d = self.discovery().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = CsrfToken::new_random();
        let client = self.client(d)?;
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.secret());
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state) = request.url();
        let grant = Grant {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        };
        Ok((url.to_string(), grant))
    }

    /// The signed-in identity and the ID token that proved it, from the provider's answer
    /// (`state` and `code`) to the request `grant` was made for.
    pub async fn complete(
        &self,
        grant: Grant,
        state: Option<String>,
        code: Option<String>,
    ) -> Result<(Identity, String), ApiError> {
        let state = state.ok_or_else(|| refused("the provider's answer has no state".into()))?;
        if !same_secret(state.as_bytes(), grant.state.as_bytes()) {
            return Err(refused("the state is not this sign-in's".into()));
        }
        let code = code.ok_or_else(|| refused("the provider's answer has no code".into()))?;
        let d = self.discovery().await?;
        let token = self
            .client(d)?
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(grant.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::Request(e) => {
                    tracing::error!(error = %e, "cannot reach the provider's token endpoint");
                    provider_unreachable()
                }
                e => refused(format!("the code exchange failed: {e}")),
            })?;
        let id_token = token.extra_fields().id_token.clone();
        let identity = self.verify_id_token(&id_token, &grant.nonce).await?;
        Ok((identity, id_token))
    }

    /// Where to send the browser to end its session at the provider too (RP-initiated
    /// logout), coming back to the shop's home; None if the provider offers no such endpoint.
    /// `id_token_hint` is the ID token the session began with: OIDC RP-Initiated Logout
    /// recommends it, and Okta ends nothing without it.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let d = self.discovery().await?;
        let Some(end) = &d.end_session_endpoint else {
            return Ok(None);
        };
        let mut url = reqwest::Url::parse(end)
            .map_err(|e| ApiError::internal(format!("end_session_endpoint: {e}")))?;
        let home = reqwest::Url::parse(&self.settings.redirect_url)
            .and_then(|u| u.join("/"))
            .map_err(|e| ApiError::internal(format!("redirect_url: {e}")))?;
        let mut query = url.query_pairs_mut();
        if let Some(hint) = id_token_hint {
            query.append_pair("id_token_hint", hint);
        }
        query
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("post_logout_redirect_uri", home.as_str());
        drop(query);
        Ok(Some(url.to_string()))
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
                provider_unreachable()
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
    async fn key(&self, kid: Option<&str>, d: &Discovery) -> Result<DecodingKey, Unverified> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let decoding = |jwk: &jsonwebtoken::jwk::Jwk| {
            DecodingKey::from_jwk(jwk).map_err(|e| Unverified::Refused(format!("bad key: {e}")))
        };
        if let Some(jwk) = find(&*self.jwks.read().await) {
            return decoding(&jwk);
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
                        Unverified::Unreachable
                    })?;
                *self.jwks.write().await = set;
            }
        }
        let jwk = find(&*self.jwks.read().await)
            .ok_or_else(|| format!("no key {kid:?} in the provider's key set"))?;
        decoding(&jwk)
    }

    /// Checks a token the provider signed, meant for `audience`: signature (asymmetric only)
    /// against the provider's key set, issuer, audience, `exp` and `nbf` with a small leeway.
    async fn verify(&self, token: &str, audience: &str) -> Result<ProviderClaims, Unverified> {
        let d = self
            .discovery()
            .await
            .map_err(|_| Unverified::Unreachable)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!("{:?} is not an accepted signature", header.alg).into());
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
            .map_err(|e| Unverified::Refused(e.to_string()))
    }

    /// Verifies an ID token from this provider for this client, with the expected `nonce`.
    pub async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Identity, ApiError> {
        let client = &self.settings.client_id;
        let claims = self.verify(token, client).await.map_err(|e| match e {
            Unverified::Refused(why) => refused(why),
            Unverified::Unreachable => provider_unreachable(),
        })?;
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(refused("the nonce is not this sign-in's".into()));
        }
        // OIDC Core 3.1.3.7: with several audiences the token must say it was issued to us.
        let several = claims.aud.as_array().is_some_and(|all| all.len() > 1);
        if (several || claims.azp.is_some()) && claims.azp.as_ref() != Some(client) {
            return Err(refused(
                "the ID token was issued to another party (azp)".into(),
            ));
        }
        Ok(self.identity(claims))
    }

    /// Verifies an access token an API client sends as `Authorization: Bearer`: issued by
    /// this provider for the shop's API (`auth.oidc.audience`), to an allowed client
    /// (`client_id` or `api_clients`), with the required scopes (`api_scopes`).
    pub async fn verify_access_token(&self, token: &str) -> Result<Identity, ApiError> {
        let refuse = |why: String| {
            tracing::warn!(target: "audit", why = ?why, "bearer token refused");
            ApiError::unauthorized("the access token is not valid")
        };
        let s = &self.settings;
        if s.audience.is_empty() {
            return Err(refuse(
                "auth.oidc.audience is not set: no API tokens".into(),
            ));
        }
        let claims = match self.verify(token, &s.audience).await {
            Ok(claims) => claims,
            Err(Unverified::Refused(why)) => return Err(refuse(why)),
            Err(Unverified::Unreachable) => return Err(provider_unreachable()),
        };
        let client = claims.cid.as_ref().or(claims.client_id.as_ref());
        if !client.is_some_and(|c| *c == s.client_id || s.api_clients.contains(c)) {
            return Err(refuse(format!("client {client:?} is not allowed")));
        }
        let scopes: Vec<&str> = match (&claims.scp, &claims.scope) {
            (Some(list), _) => list.iter().map(String::as_str).collect(),
            (None, Some(text)) => text.split_whitespace().collect(),
            (None, None) => Vec::new(),
        };
        if let Some(missing) = s.api_scopes.iter().find(|w| !scopes.contains(&w.as_str())) {
            return Err(refuse(format!("the scope {missing:?} is missing")));
        }
        Ok(self.identity(claims))
    }

    fn identity(&self, claims: ProviderClaims) -> Identity {
        // A list of group names; a single string is one group's name, whatever it contains
        // ("ekart-admins,staff" names no admin).
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
        // Shown on pages and written in logs: nothing that breaks a line or reorders text.
        let email = crate::domain::fit_for_a_person_only(&claims.email.unwrap_or_default());
        let name = crate::domain::fit_for_a_person_only(
            &claims
                .name
                .or(claims.preferred_username)
                .unwrap_or_else(|| claims.sub.clone()),
        );
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

/// A sign-in that cannot be verified: 401, and a line in the audit log.
pub fn refused(why: String) -> ApiError {
    tracing::warn!(target: "audit", why = ?why, "sign-in refused");
    ApiError::unauthorized(format!("the sign-in could not be verified: {why}"))
}
