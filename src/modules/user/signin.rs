//! The user module's own sign-in routes: dev mode's `POST /auth/dev/token`, and in every
//! mode `POST /auth/signout` and `GET /auth/session` (which processes without this module ask
//! whether a session is live). The browser's OIDC sign-in is [`super::oidc`].

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::UserStore;
use crate::domain;
use crate::error::{ApiError, ApiResult};
use crate::gateway::auth::{Authenticator, CurrentUser, Identity, Role};
use crate::gateway::extract::ApiJson;
use crate::gateway::sessions::SessionRecord;

#[async_trait]
impl SessionRecord for UserStore {
    async fn is_live(
        &self,
        user: &str,
        session: &str,
        idle_ms: i64,
        max_ms: i64,
    ) -> Result<bool, ApiError> {
        Ok(self.check_session(user, session, idle_ms, max_ms).await?)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// Display name, 1 to 100 characters.
    pub name: String,
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

#[derive(Clone)]
pub struct DevState {
    auth: Arc<Authenticator>,
    users: UserStore,
}

pub fn dev_router(auth: Arc<Authenticator>, users: UserStore) -> OpenApiRouter {
    dev_api().with_state(DevState { auth, users })
}

/// Sign-out, whatever the mode.
pub fn session_router(users: UserStore) -> OpenApiRouter {
    session_api().with_state(users)
}

/// The dev sign-in route and its OpenAPI description, before the state is supplied.
pub fn dev_api() -> OpenApiRouter<DevState> {
    OpenApiRouter::new().routes(routes!(dev_token))
}

/// The sign-out route and its OpenAPI description, before the state is supplied.
pub fn session_api() -> OpenApiRouter<UserStore> {
    OpenApiRouter::new()
        .routes(routes!(sign_out))
        .routes(routes!(current_session))
}

/// Who the caller is, by their token or session cookie.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    pub sub: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// The sign-in session, if the credential names one (provider access tokens do not).
    pub session: Option<String>,
}

/// The caller's identity, and their sign-in session if it is still live: 401 once it has
/// ended. Processes without the user module ask it here whether a session is live.
#[utoipa::path(get, path = "/auth/session", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Whoami), (status = 401)))]
async fn current_session(CurrentUser(user): CurrentUser) -> axum::Json<Whoami> {
    axum::Json(Whoami {
        sub: user.sub,
        name: user.name,
        email: user.email,
        role: user.role,
        session: user.session,
    })
}

/// Ends the caller's sign-in session: its journey ends here, and its token or cookie is
/// refused from now on.
#[utoipa::path(post, path = "/auth/signout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "the session has ended"), (status = 401)))]
async fn sign_out(
    State(users): State<UserStore>,
    CurrentUser(user): CurrentUser,
) -> ApiResult<StatusCode> {
    if let Some(session) = &user.session {
        users.end_session(&user.sub, session).await?;
    }
    tracing::info!(target: "audit", user = ?user.sub, session = ?user.session, action = "sign out");
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a dev-mode sign-in session for any name, email and role, and mints its token.
#[utoipa::path(post, path = "/auth/dev/token", tag = "auth",
    request_body = DevTokenRequest,
    responses((status = 200, body = TokenResponse), (status = 422, description = "invalid name or email")))]
async fn dev_token(
    State(state): State<DevState>,
    ApiJson(req): ApiJson<DevTokenRequest>,
) -> ApiResult<(StatusCode, axum::Json<TokenResponse>)> {
    let name = domain::person_name(&req.name).map_err(ApiError::validation)?;
    let email = domain::email(&req.email).map_err(ApiError::validation)?;
    let mut identity = Identity {
        sub: format!("dev|{email}"),
        name,
        email,
        role: req.role,
        session: None,
        session_started_at: None,
    };
    let session = state.users.start_session(&identity, None).await?;
    tracing::info!(target: "audit", user = ?identity.sub, role = ?identity.role,
        session = %session.id, action = "sign in (dev)");
    identity.session = Some(session.id);
    identity.session_started_at = Some(session.started_at);
    Ok((
        StatusCode::OK,
        axum::Json(TokenResponse {
            access_token: state.auth.issue(&identity),
            token_type: "Bearer",
            expires_in: state.auth.ttl_secs(),
        }),
    ))
}
