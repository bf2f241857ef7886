//! Server-side sign-in sessions. A session token (cookie or bearer) is signed, but it is only
//! as good as the session it names: signing out ends that session at once, a session unused
//! for `auth.session_idle_secs` ends, and none outlives `auth.token_ttl_secs`. The user module
//! keeps that record (a [`SessionRecord`]); a process without it asks the one that has it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{header, HeaderValue, StatusCode};

use super::auth::Identity;
use super::remote::{Outbound, Remote};
use crate::config::AuthSettings;
use crate::error::ApiError;

/// The record of sign-in sessions, which the user module keeps: the door asks it whether a
/// session is still live.
#[async_trait]
pub trait SessionRecord: Send + Sync + 'static {
    /// Whether `user`'s `session` is live: not ended, used within the last `idle_ms`, begun
    /// less than `max_ms` ago. Asking counts as using it.
    async fn is_live(
        &self,
        user: &str,
        session: &str,
        idle_ms: i64,
        max_ms: i64,
    ) -> Result<bool, ApiError>;
}

/// How long a process without the user module trusts the user module's last answer about a
/// session: sign-out and idle expiry reach it within this.
const REMOTE_ANSWER_TTL: Duration = Duration::from_secs(5);
/// Remembered answers past which old ones are swept.
const REMOTE_CACHE_SWEEP_AT: usize = 10_000;

/// Seconds as milliseconds, saturating.
pub fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A (user, session) pair.
type UserSession = (String, String);

#[derive(Clone)]
pub enum Sessions {
    /// The user module runs in this process.
    Local {
        record: Arc<dyn SessionRecord>,
        /// `auth.session_idle_secs` in milliseconds (live).
        idle_ms: crate::config::Knob,
        max_ms: i64,
    },
    /// The user module runs elsewhere: ask it (`GET /auth/session` with the same token).
    Remote {
        user: Arc<Remote>,
        /// By (user, session): a token naming another user's session is asked about anew.
        answers: Arc<Mutex<HashMap<UserSession, (bool, Instant)>>>,
    },
    /// No user module to ask (a split process given no address for it): tokens are checked by
    /// signature and expiry alone.
    Unchecked,
}

impl Sessions {
    /// The user module in this process keeps the sessions; `idle_ms` is the idle limit in
    /// force (it may be reloaded).
    pub fn local(
        record: Arc<dyn SessionRecord>,
        settings: &AuthSettings,
        idle_ms: crate::config::Knob,
    ) -> Sessions {
        Sessions::Local {
            record,
            idle_ms,
            max_ms: millis(settings.token_ttl_secs),
        }
    }

    pub fn remote(user: Arc<Remote>) -> Sessions {
        Sessions::Remote {
            user,
            answers: Arc::default(),
        }
    }

    /// Whether the session the shop's token names (`identity`, from `token`) is still live,
    /// and is its subject's. Every shop token names one: one that names none is not live.
    pub async fn live(&self, identity: &Identity, token: &str) -> Result<bool, ApiError> {
        let Some(session) = &identity.session else {
            return Ok(false);
        };
        match self {
            Sessions::Local {
                record,
                idle_ms,
                max_ms,
            } => {
                let idle_ms = i64::try_from(idle_ms.get()).unwrap_or(i64::MAX);
                record
                    .is_live(&identity.sub, session, idle_ms, *max_ms)
                    .await
            }
            Sessions::Remote { user, answers } => {
                let key = (identity.sub.clone(), session.clone());
                if let Some((live, at)) = answers.lock().unwrap().get(&key) {
                    if at.elapsed() < REMOTE_ANSWER_TTL {
                        return Ok(*live);
                    }
                }
                let mut ask = Outbound::get("/auth/session");
                let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| ApiError::unauthorized("the token is not a header value"))?;
                ask.headers.insert(header::AUTHORIZATION, bearer);
                let answer = user.call(ask).await?;
                let live = match answer.status {
                    StatusCode::OK => true,
                    StatusCode::UNAUTHORIZED => false,
                    other => {
                        return Err(ApiError::unavailable(format!(
                            "the user module answered {other} about a session"
                        )))
                    }
                };
                let mut answers = answers.lock().unwrap();
                if answers.len() >= REMOTE_CACHE_SWEEP_AT {
                    answers.retain(|_, (_, at)| at.elapsed() < REMOTE_ANSWER_TTL);
                }
                answers.insert(key, (live, Instant::now()));
                Ok(live)
            }
            // No user module to ask: the token's signature and expiry are all there is.
            Sessions::Unchecked => Ok(true),
        }
    }
}
