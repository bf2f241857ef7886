use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::bulk::{self, Cell};
use crate::db::{now_ms, Db};
use crate::gateway::auth::{Identity, Role};

/// The user module's accounts and sign-in sessions.
#[derive(Clone)]
pub struct UserStore {
    db: Db,
    /// Sessions found live lately, by (user, session), and when: most requests need no read
    /// to know. Keyed by both, so a token naming another user's session is never taken for it.
    live: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

/// How often a live session's last use is written down: reads stay reads between.
const TOUCH_EVERY_MS: i64 = 60_000;
/// How long a session found live is taken as live without asking the database again (or an
/// eighth of the idle limit, if shorter). Sign-out here forgets it at once; elsewhere (another
/// process on the same database) it takes effect within this.
const LIVE_FOR: Duration = Duration::from_secs(1);
/// Remembered sessions past which the stale ones are swept.
const REMEMBERED_SWEEP_AT: usize = 10_000;

/// A sign-in session: its id travels in the session's token, and its journey is keyed by it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub started_at: i64,
}

impl UserStore {
    pub fn new(db: Db) -> UserStore {
        UserStore {
            db,
            live: Arc::default(),
        }
    }

    /// Signs a user in: creates the account on first sign-in (refreshing name, email and role
    /// after that) and starts a new session, in one transaction.
    /// Starts a sign-in session for `identity` (creating or updating the user), keeping the
    /// provider's `id_token` to hint at sign-out.
    pub async fn start_session(
        &self,
        identity: &Identity,
        id_token: Option<String>,
    ) -> Result<Session, sqlx::Error> {
        let now = now_ms();
        let role = match identity.role {
            Role::Admin => "admin",
            Role::Customer => "customer",
        };
        let identity = identity.clone();
        let session = Session {
            id: uuid::Uuid::now_v7().to_string(),
            started_at: now,
        };
        let id = session.id.clone();
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO users (sub, name, email, role, created_at, last_sign_in_at) \
                         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (sub) DO UPDATE SET \
                         name = excluded.name, email = excluded.email, role = excluded.role, \
                         last_sign_in_at = excluded.last_sign_in_at",
                    )
                    .bind(&identity.sub)
                    .bind(&identity.name)
                    .bind(&identity.email)
                    .bind(role)
                    .bind(now)
                    .execute(uow.conn())
                    .await?;
                    sqlx::query(
                        "INSERT INTO sessions (id, user_sub, started_at, last_seen_at, id_token) \
                         VALUES ($1, $2, $3, $3, $4)",
                    )
                    .bind(&id)
                    .bind(&identity.sub)
                    .bind(now)
                    .bind(&id_token)
                    .execute(uow.conn())
                    .await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await?;
        Ok(session)
    }

    /// Adds shoppers and their past sessions in one transaction: an import, or a million
    /// sessions for `bench/scale.sh`. Every shopper must be new; each session's shopper must
    /// be among them or already known. Answers the sessions' ids.
    pub async fn import_sessions(
        &self,
        shoppers: Vec<Identity>,
        sessions: Vec<(String, i64)>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let now = now_ms();
        let users: Vec<Vec<Cell>> = shoppers
            .into_iter()
            .map(|who| {
                let role = match who.role {
                    Role::Admin => "admin",
                    Role::Customer => "customer",
                };
                vec![
                    who.sub.into(),
                    who.name.into(),
                    who.email.into(),
                    role.into(),
                    now.into(),
                    now.into(),
                ]
            })
            .collect();
        let ids: Vec<String> = sessions
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let rows: Vec<Vec<Cell>> = sessions
            .into_iter()
            .zip(&ids)
            .map(|((user, started_at), id)| {
                vec![
                    id.as_str().into(),
                    user.into(),
                    started_at.into(),
                    started_at.into(),
                ]
            })
            .collect();
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    let columns = [
                        "sub",
                        "name",
                        "email",
                        "role",
                        "created_at",
                        "last_sign_in_at",
                    ];
                    bulk::insert(uow, "users", &columns, &users).await?;
                    let columns = ["id", "user_sub", "started_at", "last_seen_at"];
                    bulk::insert(uow, "sessions", &columns, &rows).await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await?;
        Ok(ids)
    }

    /// Marks the user's session as ended (sign-out), and answers the ID token it was started
    /// with (forgotten now), if it was live and had one. Ending it twice keeps the first end.
    pub async fn end_session(
        &self,
        user: &str,
        session: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        self.live
            .lock()
            .unwrap()
            .remove(&(user.to_string(), session.to_string()));
        let (user, session, now) = (user.to_string(), session.to_string(), now_ms());
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    let id_token: Option<Option<String>> = sqlx::query_scalar(
                        "SELECT id_token FROM sessions \
                         WHERE id = $1 AND user_sub = $2 AND ended_at IS NULL",
                    )
                    .bind(&session)
                    .bind(&user)
                    .fetch_optional(uow.conn())
                    .await?;
                    sqlx::query(
                        "UPDATE sessions SET ended_at = $1, id_token = NULL \
                         WHERE id = $2 AND user_sub = $3 AND ended_at IS NULL",
                    )
                    .bind(now)
                    .bind(&session)
                    .bind(&user)
                    .execute(uow.conn())
                    .await?;
                    Ok(id_token.flatten())
                })
            })
            .await
    }

    /// Whether the user's session is live: not ended, used within `idle_ms`, younger than
    /// `max_ms`. Using a live session counts as use (written at most once a minute, or an
    /// eighth of `idle_ms` if that is shorter). A session found expired is ended, at the
    /// moment it expired, so its journey shows when it stopped.
    pub async fn check_session(
        &self,
        user: &str,
        session: &str,
        idle_ms: i64,
        max_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let trust_for = LIVE_FOR.min(Duration::from_millis(idle_ms as u64 / 8));
        let key = (user.to_string(), session.to_string());
        if let Some(at) = self.live.lock().unwrap().get(&key) {
            if at.elapsed() < trust_for {
                return Ok(true);
            }
        }
        let now = now_ms();
        let row: Option<(Option<i64>, i64, i64)> = sqlx::query_as(
            "SELECT ended_at, started_at, COALESCE(last_seen_at, started_at) \
             FROM sessions WHERE id = $1 AND user_sub = $2",
        )
        .bind(session)
        .bind(user)
        .fetch_optional(&self.db.read)
        .await?;
        let Some((None, started, seen)) = row else {
            return Ok(false);
        };
        let expires = (seen + idle_ms).min(started + max_ms);
        if now >= expires {
            self.live.lock().unwrap().remove(&key);
            self.set_session_time("ended_at", session.to_string(), expires)
                .await?;
            return Ok(false);
        }
        if now - seen >= TOUCH_EVERY_MS.min(idle_ms / 8) {
            self.set_session_time("last_seen_at", session.to_string(), now)
                .await?;
        }
        let mut live = self.live.lock().unwrap();
        if live.len() >= REMEMBERED_SWEEP_AT {
            live.retain(|_, at| at.elapsed() < LIVE_FOR);
        }
        live.insert(key, Instant::now());
        Ok(true)
    }

    async fn set_session_time(
        &self,
        column: &'static str,
        session: String,
        at: i64,
    ) -> Result<(), sqlx::Error> {
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "UPDATE sessions SET {column} = $1 WHERE id = $2 AND ended_at IS NULL"
                    ))
                    .bind(at)
                    .bind(&session)
                    .execute(uow.conn())
                    .await?;
                    Ok(())
                })
            })
            .await
    }
}
