use crate::db::{now_ms, Db};
use crate::gateway::auth::{Identity, Role};

/// The user module's accounts and sign-in sessions.
#[derive(Clone)]
pub struct UserStore {
    db: Db,
}

/// How often a live session's last use is written down: reads stay reads between.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A sign-in session: its id travels in the session's token, and its journey is keyed by it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub started_at: i64,
}

impl UserStore {
    pub fn new(db: Db) -> UserStore {
        UserStore { db }
    }

    /// Signs a user in: creates the account on first sign-in (refreshing name, email and role
    /// after that) and starts a new session, in one transaction.
    pub async fn start_session(&self, identity: &Identity) -> Result<Session, sqlx::Error> {
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
                        "INSERT INTO sessions (id, user_sub, started_at, last_seen_at) \
                         VALUES ($1, $2, $3, $3)",
                    )
                    .bind(&id)
                    .bind(&identity.sub)
                    .bind(now)
                    .execute(uow.conn())
                    .await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .await?;
        Ok(session)
    }

    /// Marks the user's session as ended (sign-out). Ending it twice keeps the first end.
    pub async fn end_session(&self, user: &str, session: &str) -> Result<(), sqlx::Error> {
        let (user, session, now) = (user.to_string(), session.to_string(), now_ms());
        self.db
            .write(move |uow| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE sessions SET ended_at = $1 \
                         WHERE id = $2 AND user_sub = $3 AND ended_at IS NULL",
                    )
                    .bind(now)
                    .bind(&session)
                    .bind(&user)
                    .execute(uow.conn())
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Whether the user's session is live: not ended, used within `idle_ms`, younger than
    /// `max_ms`. Using a live session counts as use (written at most once a minute, or a
    /// quarter of `idle_ms` if that is shorter). A session found expired is ended, at the
    /// moment it expired, so its journey shows when it stopped.
    pub async fn check_session(
        &self,
        user: &str,
        session: &str,
        idle_ms: i64,
        max_ms: i64,
    ) -> Result<bool, sqlx::Error> {
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
        let session = session.to_string();
        if now >= expires {
            self.set_session_time("ended_at", session, expires).await?;
            return Ok(false);
        }
        if now - seen >= TOUCH_EVERY_MS.min(idle_ms / 4) {
            self.set_session_time("last_seen_at", session, now).await?;
        }
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
