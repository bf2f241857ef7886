//! Who is asking. The gateway checks the bearer token (API clients) or the session cookie
//! (the web pages) once per request and leaves an [`Identity`] in the request's extensions;
//! routes ask for [`CurrentUser`] or [`Admin`].
//!
//! Two kinds of credentials: the shop's own session tokens (HS256 with `auth.session_secret`,
//! naming a server-side session; the cookie after sign-in, or a bearer token from dev mode's
//! `POST /auth/dev/token`), and in OIDC mode the provider's access tokens for the shop's API
//! (asymmetrically signed, checked against the provider's keys; see [`super::oidc`]).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::oidc::Provider;
use super::sessions::Sessions;
use crate::config::AuthSettings;
use crate::error::ApiError;

const ISSUER: &str = "ekart-dev";

/// The web pages' session cookie: the same JWT an API client sends as a bearer token.
pub const SESSION_COOKIE: &str = "ekart_session";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

/// The signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Stable subject id from the identity provider.
    pub sub: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// The sign-in session the token belongs to; its journey is recorded under this id.
    pub session: Option<String>,
    /// When that session started, milliseconds since the Unix epoch.
    pub session_started_at: Option<i64>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    email: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// Session start, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sst: Option<i64>,
    iss: String,
    iat: i64,
    exp: i64,
}

const SEALED_AUDIENCE: &str = "ekart-sealed";

#[derive(Serialize, Deserialize)]
struct Sealed<T> {
    aud: String,
    #[serde(flatten)]
    value: T,
}

/// Token signing and checking for dev mode.
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Arc<Authenticator> {
        let secret = if settings.session_secret.is_empty() {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            bytes.to_vec()
        } else {
            settings.session_secret.as_bytes().to_vec()
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        Arc::new(Authenticator {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            ttl_secs: settings.token_ttl_secs,
        })
    }

    /// How long a session token lives.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Signs `value` for a round trip through the browser (e.g. a sign-in in progress). It
    /// can never pass for a session token, nor a session token for it: they differ in
    /// audience and shape.
    pub fn seal<T: Serialize>(&self, value: &T) -> String {
        let claims = Sealed {
            aud: SEALED_AUDIENCE.into(),
            value,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The value [`Authenticator::seal`] signed, if `token` is one and unaltered. Expiry is
    /// the value's own business (`exp` inside it is checked too when present).
    pub fn open<T: serde::de::DeserializeOwned>(&self, token: &str) -> Option<T> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[SEALED_AUDIENCE]);
        validation.set_required_spec_claims(&["aud"]);
        validation.validate_exp = false;
        jsonwebtoken::decode::<Sealed<T>>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims.value)
    }

    pub fn issue(&self, identity: &Identity) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: identity.sub.clone(),
            name: identity.name.clone(),
            email: identity.email.clone(),
            role: identity.role,
            sid: identity.session.clone(),
            sst: identity.session_started_at,
            iss: ISSUER.into(),
            iat: now,
            exp: now + self.ttl_secs as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| token_refused(&e))?;
        let c = data.claims;
        Ok(Identity {
            sub: c.sub,
            name: c.name,
            email: c.email,
            role: c.role,
            session: c.sid,
            session_started_at: c.sst,
        })
    }
}

/// A refused token, in words for the client: expired, or not valid. Which check failed (the
/// library's error kind) goes to the audit log, not to whoever sent the token.
fn token_refused(e: &jsonwebtoken::errors::Error) -> ApiError {
    tracing::info!(target: "audit", why = ?e.kind(), "token refused");
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            ApiError::unauthorized("the access token has expired; sign in again")
        }
        _ => ApiError::unauthorized("the access token is not valid"),
    }
}

/// What the door checks credentials with.
pub struct Gate {
    pub auth: Arc<Authenticator>,
    /// OIDC mode: the provider whose access tokens API clients may send.
    pub provider: Option<Arc<Provider>>,
    pub sessions: Sessions,
}

impl Gate {
    /// The identity a bearer token proves: the shop's own session token (HS256, signed with
    /// our secret) or, in OIDC mode, the provider's access token (an asymmetric signature).
    /// The header's `alg` only picks which check to run; each check accepts its own algorithms
    /// alone, so `none` or the provider's public key used as an HMAC secret get nowhere.
    async fn bearer(&self, token: &str) -> Result<Identity, ApiError> {
        let alg = jsonwebtoken::decode_header(token)
            .map(|h| h.alg)
            .map_err(|e| token_refused(&e))?;
        match &self.provider {
            Some(provider) if alg != Algorithm::HS256 => provider.verify_access_token(token).await,
            _ => self.session_token(token).await,
        }
    }

    /// The identity a session token proves, if its session is still live.
    async fn session_token(&self, token: &str) -> Result<Identity, ApiError> {
        let identity = self.auth.verify(token)?;
        if self.sessions.live(&identity, token).await? {
            Ok(identity)
        } else {
            Err(ApiError::unauthorized(
                "this sign-in session has ended (signed out, or unused too long); sign in again",
            ))
        }
    }
}

/// Middleware: a valid bearer token puts its [`Identity`] in the request; an invalid one is
/// refused at once; none leaves the request anonymous for the route to judge. Without a bearer
/// token the session cookie is read instead; an expired, ended or damaged cookie only makes
/// the request anonymous, so the pages can send the shopper to sign in again.
pub async fn authenticate(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        let Some(token) = token else {
            return ApiError::unauthorized("use Authorization: Bearer <token>").into_response();
        };
        match gate.bearer(token.trim()).await {
            Ok(identity) => {
                req.extensions_mut().insert(identity);
            }
            Err(err) => return err.into_response(),
        }
    } else if let Some(cookie) = CookieJar::from_headers(req.headers()).get(SESSION_COOKIE) {
        match gate.session_token(cookie.value()).await {
            Ok(identity) => {
                req.extensions_mut().insert(identity);
            }
            // The session store could not answer: not the shopper's fault, and not a reason
            // to treat them as signed out.
            Err(err) if err.status.is_server_error() => return err.into_response(),
            Err(_) => {}
        }
    }
    next.run(req).await
}

/// Any signed-in user.
pub struct CurrentUser(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(CurrentUser)
            .ok_or_else(|| ApiError::unauthorized("sign in and send Authorization: Bearer <token>"))
    }
}

/// A signed-in admin.
pub struct Admin(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(identity) = CurrentUser::from_request_parts(parts, state).await?;
        if identity.is_admin() {
            Ok(Admin(identity))
        } else {
            tracing::warn!(target: "audit", user = ?identity.sub, method = %parts.method,
                path = %parts.uri.path(), "admin action refused");
            Err(ApiError::forbidden("this needs the admin role"))
        }
    }
}
