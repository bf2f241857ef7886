//! Journeys: the steps of each sign-in session, in the order they happened, and what they add
//! up to.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use crate::db::keyset::{self, Next, Order, Paging};
use crate::db::{padded_to_power_of_two, placeholders, Backend, Conn, Db, Uow};

/// A stored step. `kind` is `page`, `click` or `order`; `name` is the page's path, the
/// control's action (`add-to-cart`, `checkout`, …) or the order's outcome (`placed`,
/// `completed`, `failed`).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Step {
    #[serde(skip)]
    pub event_id: String,
    #[serde(skip)]
    pub session_id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub kind: String,
    pub name: String,
    pub label: String,
    pub detail: Option<String>,
    /// For a completed order: what it cost, in minor units.
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
}

/// A sign-in session as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSummary {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub user_email: String,
    pub started_at: i64,
    /// When the shopper signed out, if they did.
    pub ended_at: Option<i64>,
    /// When the last step happened, if any did.
    pub last_step_at: Option<i64>,
    pub steps: i64,
}

impl SessionSummary {
    /// The session's end: sign-out, else its last step, else its start.
    pub fn end(&self) -> i64 {
        self.ended_at
            .or(self.last_step_at)
            .unwrap_or(self.started_at)
            .max(self.started_at)
    }
}

/// What a journey adds up to.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq)]
pub struct JourneyTotals {
    pub pages_visited: u64,
    pub items_added: u64,
    pub orders_placed: u64,
    pub orders_completed: u64,
    /// Money spent on completed orders, less those cancelled (refunded), in minor units of
    /// `currency`.
    pub spent_minor: i64,
    pub currency: Option<String>,
}

/// A session and its steps.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Journey {
    pub session: SessionSummary,
    pub steps: Vec<Step>,
    pub totals: JourneyTotals,
}

/// Keeps, of `steps` (in the order they came), those that fit under `cap` steps per session
/// with the steps already stored; answers them and how many were dropped. A session at its
/// cap records no more page views and clicks: a script clicking forever cannot grow a
/// journey, its page and its PDF without bound.
pub async fn within_cap(
    uow: &mut Uow,
    steps: Vec<Step>,
    cap: u32,
) -> Result<(Vec<Step>, u64), sqlx::Error> {
    let mut sessions: Vec<&str> = steps.iter().map(|s| s.session_id.as_str()).collect();
    sessions.sort_unstable();
    sessions.dedup();
    if sessions.is_empty() {
        return Ok((steps, 0));
    }
    let ids = padded_to_power_of_two(&sessions);
    let sql = format!(
        "SELECT session_id, COUNT(*) FROM journey_steps WHERE session_id IN ({}) \
         GROUP BY session_id",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
    for id in ids {
        query = query.bind(id);
    }
    let mut room: HashMap<String, i64> = query
        .fetch_all(uow.conn())
        .await?
        .into_iter()
        .map(|(session, stored)| (session, cap as i64 - stored))
        .collect();
    let mut dropped = 0;
    let kept = steps
        .into_iter()
        .filter(|step| {
            let left = room.entry(step.session_id.clone()).or_insert(cap as i64);
            *left -= 1;
            dropped += u64::from(*left < 0);
            *left >= 0
        })
        .collect();
    Ok((kept, dropped))
}

/// Rows per INSERT: well under SQLite's and PostgreSQL's bind-parameter limits.
const ROWS_PER_INSERT: usize = 400;
const COLUMNS: usize = 9;

/// Stores steps, skipping any whose event id is already there (a redelivery); returns how
/// many were new. Many rows go in one statement: the click-stream is the busiest topic.
pub async fn append(uow: &mut Uow, steps: &[Step]) -> Result<u64, sqlx::Error> {
    let mut added = 0;
    for chunk in steps.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO journey_steps (event_id, session_id, at, kind, name, label, detail, \
             amount_minor, currency) VALUES ",
        );
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..COLUMNS {
                if column > 0 {
                    sql.push_str(", ");
                }
                match uow.backend() {
                    // SQLite looks numbered parameters up by name, one scan per bind: with
                    // thousands in a statement that dominates. Plain `?` binds in order.
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => sql.push_str(&format!("${}", row * COLUMNS + column + 1)),
                }
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
        let mut query = sqlx::query(&sql);
        for s in chunk {
            query = query
                .bind(&s.event_id)
                .bind(&s.session_id)
                .bind(s.at)
                .bind(&s.kind)
                .bind(&s.name)
                .bind(&s.label)
                .bind(&s.detail)
                .bind(s.amount_minor)
                .bind(&s.currency);
        }
        added += query.execute(uow.conn()).await?.rows_affected();
    }
    Ok(added)
}

const SESSION_COLUMNS: &str = "s.id, s.user_sub, u.name, u.email, s.started_at, s.ended_at, \
     (SELECT MAX(j.at) FROM journey_steps j WHERE j.session_id = s.id), \
     (SELECT COUNT(*) FROM journey_steps j WHERE j.session_id = s.id)";

fn session(row: &AnyRow) -> Result<SessionSummary, sqlx::Error> {
    Ok(SessionSummary {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        user_name: row.try_get(2)?,
        user_email: row.try_get(3)?,
        started_at: row.try_get(4)?,
        ended_at: row.try_get(5)?,
        last_step_at: row.try_get(6)?,
        steps: row.try_get(7)?,
    })
}

/// Newest sessions first; the id breaks ties.
pub const NEWEST_FIRST: Order = Order::descending(&["started_at", "id"]);

/// Reading journeys.
#[derive(Clone)]
pub struct JourneyStore {
    db: Db,
}

impl JourneyStore {
    pub fn new(db: Db) -> JourneyStore {
        JourneyStore { db }
    }

    /// A page of sessions newest first: one user's, or everyone's when `user` is None, with
    /// their count up to [`keyset::COUNT_CAP`].
    pub async fn sessions(
        &self,
        user: Option<&str>,
        paging: &Paging,
    ) -> Result<(Vec<SessionSummary>, i64, bool, Next), sqlx::Error> {
        let window = paging.window();
        let first = if user.is_some() { 2 } else { 1 };
        let conditions: Vec<String> = user
            .map(|_| "s.user_sub = $1".to_string())
            .into_iter()
            .chain(window.condition(first))
            .collect();
        let filter = match conditions.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", conditions.join(" AND ")),
        };
        let list_sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s JOIN users u ON u.sub = s.user_sub \
             {filter} ORDER BY {} {}",
            window.order.order_by("s"),
            window.limits(),
        );
        let count_sql = keyset::capped_count(
            match user {
                Some(_) => "SELECT 1 FROM sessions WHERE user_sub = $1",
                None => "SELECT 1 FROM sessions",
            },
            keyset::COUNT_CAP,
        );
        let mut query = sqlx::query(&list_sql);
        let mut count = sqlx::query_scalar(&count_sql);
        if let Some(user) = user {
            query = query.bind(user.to_string());
            count = count.bind(user.to_string());
        }
        let mut conn = self.db.read.acquire().await?;
        let mut rows = window.bind(query).fetch_all(&mut conn).await?;
        let (total, capped) = keyset::capped(count.fetch_one(&mut conn).await?, keyset::COUNT_CAP);
        let all = if user.is_none() { "true" } else { "" };
        let next = paging.next(&mut rows, "/api/journeys", &[("all", all)])?;
        let sessions = rows.iter().map(session).collect::<Result<_, _>>()?;
        Ok((sessions, total, capped, next))
    }

    /// A session with all its steps in the order they happened (at most the cap, plus its
    /// orders' outcomes): what the PDF draws.
    pub async fn journey(&self, session_id: &str) -> Result<Option<Journey>, sqlx::Error> {
        let mut conn = self.db.read.acquire().await?;
        let Some(session) = summary(&mut conn, session_id).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM journey_steps WHERE session_id = $1 \
             ORDER BY {}",
            STEP_ORDER.order_by("")
        ))
        .bind(session_id)
        .fetch_all(&mut conn)
        .await?;
        let steps: Vec<Step> = rows.iter().map(step).collect::<Result<_, _>>()?;
        let totals = totals(&mut conn, session_id).await?;
        Ok(Some(Journey {
            session,
            steps,
            totals,
        }))
    }

    /// A session with one page of its steps, the totals of all of them, and where the next
    /// page starts.
    pub async fn journey_page(
        &self,
        session_id: &str,
        paging: &Paging,
    ) -> Result<Option<(Journey, Next)>, sqlx::Error> {
        let mut conn = self.db.read.acquire().await?;
        let Some(session) = summary(&mut conn, session_id).await? else {
            return Ok(None);
        };
        let window = paging.window();
        let after = window
            .condition(2)
            .map_or_else(String::new, |c| format!("AND {c}"));
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM journey_steps WHERE session_id = $1 {after} \
             ORDER BY {} {}",
            STEP_ORDER.order_by(""),
            window.limits()
        );
        let query = sqlx::query(&sql).bind(session_id.to_string());
        let mut rows = window.bind(query).fetch_all(&mut conn).await?;
        let path = format!("/api/journeys/{session_id}");
        let next = paging.next(&mut rows, &path, &[])?;
        let steps = rows.iter().map(step).collect::<Result<_, _>>()?;
        let totals = totals(&mut conn, session_id).await?;
        let journey = Journey {
            session,
            steps,
            totals,
        };
        Ok(Some((journey, next)))
    }
}

/// The order of a journey's steps: when they happened, the event id breaking ties (the index
/// `journey_steps_by_session`).
pub const STEP_ORDER: Order = Order::ascending(&["at", "event_id"]);

const STEP_COLUMNS: &str =
    "event_id, session_id, at, kind, name, label, detail, amount_minor, currency";

fn step(r: &AnyRow) -> Result<Step, sqlx::Error> {
    Ok(Step {
        event_id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        at: r.try_get(2)?,
        kind: r.try_get(3)?,
        name: r.try_get(4)?,
        label: r.try_get(5)?,
        detail: r.try_get(6)?,
        amount_minor: r.try_get(7)?,
        currency: r.try_get(8)?,
    })
}

async fn summary(conn: &mut Conn, session_id: &str) -> Result<Option<SessionSummary>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s JOIN users u ON u.sub = s.user_sub \
         WHERE s.id = $1"
    ))
    .bind(session_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(session).transpose()
}

/// What all the session's steps add up to, added up by the database: pages viewed, items
/// added to the cart, orders placed and completed, and the money the completed ones cost.
async fn totals(conn: &mut Conn, session_id: &str) -> Result<JourneyTotals, sqlx::Error> {
    let count = |condition: &str| {
        format!("CAST(COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0) AS BIGINT)")
    };
    let completed = "kind = 'order' AND name = 'completed'";
    // A cancelled order was refunded: it is taken back out of what was spent.
    let refunded = "kind = 'order' AND name = 'cancelled'";
    let sql = format!(
        "SELECT {}, {}, {}, {}, \
         CAST(COALESCE(SUM(CASE WHEN {completed} THEN amount_minor \
         WHEN {refunded} THEN -amount_minor ELSE 0 END), 0) AS BIGINT), \
         MIN(CASE WHEN {completed} THEN currency END) \
         FROM journey_steps WHERE session_id = $1",
        count("kind = 'page'"),
        count("kind = 'click' AND name = 'add-to-cart'"),
        count("kind = 'order' AND name = 'placed'"),
        count(completed),
    );
    let row = sqlx::query(&sql)
        .bind(session_id)
        .fetch_one(&mut *conn)
        .await?;
    let counted = |i: usize| row.try_get::<i64, _>(i).map(|n| n as u64);
    Ok(JourneyTotals {
        pages_visited: counted(0)?,
        items_added: counted(1)?,
        orders_placed: counted(2)?,
        orders_completed: counted(3)?,
        spent_minor: row.try_get(4)?,
        currency: row.try_get(5)?,
    })
}
