use crate::db::{now_ms, Db};
use crate::gateway::auth::{Identity, Role};

/// The user module's tables.
#[derive(Clone)]
pub struct UserStore {
    db: Db,
}

impl UserStore {
    pub fn new(db: Db) -> UserStore {
        UserStore { db }
    }

    /// Creates the user on first sign-in, refreshes name, email and role after that.
    pub async fn record_sign_in(&self, identity: &Identity) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let role = match identity.role {
            Role::Admin => "admin",
            Role::Customer => "customer",
        };
        let identity = identity.clone();
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
                    Ok(())
                })
            })
            .await
    }
}
