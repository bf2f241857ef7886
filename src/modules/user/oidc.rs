//! The browser's sign-in through the OIDC provider (`[auth] mode = "oidc"`):
//! `GET /auth/login` sends the browser to the provider, remembering the request's grant in a
//! short-lived, sealed, HttpOnly cookie; `GET /auth/callback` completes it (the provider's
//! checks are `gateway::oidc`'s) and starts a session; `POST /auth/logout` ends it here and
//! at the provider.
//!
//! Another site can send a shopper's browser to any of these, so none of them ends a session
//! on a mere visit: sign-out is a POST, which the door refuses unless the shop's own page sent
//! it, and a callback ends the browser's previous session only once the new sign-in succeeded.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};

use super::store::UserStore;
use crate::error::ApiError;
use crate::gateway::auth::{Authenticator, Identity, SESSION_COOKIE};
use crate::gateway::oidc::{refused, Grant, Provider};
use crate::gateway::security::local_path;

/// The browser's sign-in flow, outside the JSON API (and its OpenAPI description).
pub const PATHS: [&str; 3] = ["/auth/login", "/auth/callback", "/auth/logout"];

/// The cookie that carries a sign-in in progress from `/auth/login` to `/auth/callback`.
const LOGIN_COOKIE: &str = "ekart_login";
/// How long a sign-in may take at the provider.
const LOGIN_TTL_SECS: i64 = 600;

/// What `/auth/login` remembers for `/auth/callback`, sealed into [`LOGIN_COOKIE`].
#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    #[serde(flatten)]
    grant: Grant,
    return_to: String,
    exp: i64,
}

/// The browser sign-in flow: `GET /auth/login`, `GET /auth/callback`, `POST /auth/logout`.
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

    /// `GET /auth/login`, `GET /auth/callback` and `POST /auth/logout` ([`PATHS`]).
    pub fn router(self: &Arc<Self>) -> Router {
        let [login_path, callback_path, logout_path] = PATHS;
        Router::new()
            .route(login_path, get(login))
            .route(callback_path, get(callback))
            .route(logout_path, post(logout))
            .with_state(self.clone())
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

async fn login(
    State(oidc): State<Arc<Oidc>>,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let (url, grant) = oidc.provider.begin().await?;
    let pending = PendingLogin {
        grant,
        return_to: local_path(q.return_to.as_deref()),
        exp: chrono::Utc::now().timestamp() + LOGIN_TTL_SECS,
    };
    let cookie = Cookie::build((LOGIN_COOKIE, oidc.auth.seal(&pending)))
        .path("/auth/callback")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(oidc.https)
        .max_age(time::Duration::seconds(LOGIN_TTL_SECS))
        .build();
    Ok((jar.add(cookie), Redirect::to(&url)).into_response())
}

/// Ends the browser's session here, then sends the browser to the provider to end its session
/// too (with the ID token the session began with as `id_token_hint`), and back to the shop's
/// home. The storefront's Sign out button posts here (through `POST /signout`).
async fn logout(State(oidc): State<Arc<Oidc>>, jar: CookieJar) -> Result<Response, ApiError> {
    let mut id_token = None;
    if let Some(Identity {
        sub,
        session: Some(session),
        ..
    }) = jar
        .get(SESSION_COOKIE)
        .and_then(|c| oidc.auth.verify(c.value()).ok())
    {
        id_token = oidc.users.end_session(&sub, &session).await?;
        tracing::info!(target: "audit", user = ?sub, session = %session, action = "sign out");
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    let to = oidc.provider.end_session_url(id_token.as_deref()).await?;
    Ok((jar, Redirect::to(to.as_deref().unwrap_or("/"))).into_response())
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
    let (session, return_to) = match finish(&oidc, pending, q).await {
        Ok(signed_in) => signed_in,
        Err(err) => return (jar, err).into_response(),
    };
    // A new session at every sign-in; the one this browser had ends (session ids never carry
    // over a sign-in), but only now: a callback that fails, or that another site sent the
    // browser to, leaves it signed in as it was.
    let previous = jar
        .get(SESSION_COOKIE)
        .and_then(|c| oidc.auth.verify(c.value()).ok());
    if let Some(Identity {
        sub,
        session: Some(ended),
        ..
    }) = previous
    {
        if let Err(e) = oidc.users.end_session(&sub, &ended).await {
            return (jar, ApiError::from(e)).into_response();
        }
    }
    (jar.add(session), Redirect::to(&return_to)).into_response()
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
        refused("no sign-in is in progress in this browser (or it expired)".into())
    })?;
    let (mut identity, id_token) = oidc
        .provider
        .complete(pending.grant, q.state, q.code)
        .await?;
    let session = oidc.users.start_session(&identity, Some(id_token)).await?;
    tracing::info!(target: "audit", user = ?identity.sub, role = ?identity.role,
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
