//! Journeys over HTTP. A shopper sees their own sessions; another user's session answers
//! 404, never 403, so ids cannot be probed. An admin may open any session.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::journey::{Journey, JourneyStore, SessionSummary, NEWEST_FIRST, STEP_ORDER};
use super::pdf;
use crate::db::keyset::{PageSizes, Paging};
use crate::error::{ApiError, ApiResult};
use crate::gateway::auth::CurrentUser;
use crate::gateway::extract::{ApiPath, ApiQuery};

pub fn router(store: JourneyStore) -> OpenApiRouter {
    api().with_state(store)
}

/// The routes and their OpenAPI description, before the state is supplied.
pub fn api() -> OpenApiRouter<JourneyStore> {
    OpenApiRouter::new()
        .routes(routes!(list_journeys))
        .routes(routes!(get_journey))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JourneyQuery {
    /// Admin only: every user's sessions, not just your own.
    pub all: Option<bool>,
    /// Page number, from 1. For going far into the list, follow `next` instead.
    #[param(minimum = 1, maximum = 100000)]
    pub page: Option<u32>,
    /// Where to go on from: the `next_cursor` of the previous page (same `all`).
    pub cursor: Option<String>,
    /// Sessions per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JourneyPage {
    pub items: Vec<SessionSummary>,
    /// The page number asked for; absent on a page reached by `cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub per_page: u32,
    /// Sessions in the list, counted up to 1,000.
    pub total: i64,
    /// There are more than `total` sessions (counting stopped at 1,000).
    pub total_capped: bool,
    /// The cursor of the page after this one; absent on the last page.
    pub next_cursor: Option<String>,
    /// The address of the page after this one; absent on the last page.
    pub next: Option<String>,
}

/// The signed-in user's sessions, newest first (an admin may ask for everyone's).
#[utoipa::path(get, path = "/api/journeys", tag = "journeys", security(("bearer" = [])),
    params(JourneyQuery),
    responses((status = 200, body = JourneyPage), (status = 400), (status = 401), (status = 403)))]
async fn list_journeys(
    State(store): State<JourneyStore>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<JourneyQuery>,
) -> ApiResult<Json<JourneyPage>> {
    let all = q.all.unwrap_or(false);
    if all && !user.is_admin() {
        return Err(ApiError::forbidden("only an admin may see every session"));
    }
    let owner = (!all).then_some(user.sub.as_str());
    let scope = format!("journeys:{}", owner.unwrap_or(""));
    let paging = Paging::new(scope, NEWEST_FIRST, q.page, q.per_page, q.cursor.as_deref())?;
    let (items, total, total_capped, next) = store.sessions(owner, &paging).await?;
    Ok(Json(JourneyPage {
        items,
        page: paging.page(),
        per_page: paging.per_page(),
        total,
        total_capped,
        next_cursor: next.cursor,
        next: next.link,
    }))
}

/// A journey's steps come a page at a time: most journeys fit in one (a session records at
/// most `journey.max_steps_per_session` page views and clicks).
const STEPS: PageSizes = PageSizes {
    default: 500,
    max: 1000,
};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StepsQuery {
    /// Where to go on from: the `next_cursor` of the previous page of steps.
    pub cursor: Option<String>,
    /// Steps per page, 1 to 1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u32>,
}

/// A session, one page of its steps in order, and what all its steps add up to.
#[derive(Debug, Serialize, ToSchema)]
pub struct JourneyStepsPage {
    #[serde(flatten)]
    pub journey: Journey,
    pub per_page: u32,
    /// The cursor of the next page of steps; absent on the last page.
    pub next_cursor: Option<String>,
    /// The address of the next page of steps; absent on the last page.
    pub next: Option<String>,
}

/// One session's journey: its steps in order (a page at a time) and what they add up to.
/// Ask for `/api/journeys/{session}.pdf` to get all of it drawn as a PDF.
#[utoipa::path(get, path = "/api/journeys/{session}", tag = "journeys", security(("bearer" = [])),
    params(("session" = String, Path, description = "session id, with `.pdf` for the PDF"),
        StepsQuery),
    responses((status = 200, body = JourneyStepsPage, content_type = "application/json"),
        (status = 200, description = "the journey as a PDF", content_type = "application/pdf"),
        (status = 400), (status = 401), (status = 404)))]
async fn get_journey(
    State(store): State<JourneyStore>,
    CurrentUser(user): CurrentUser,
    ApiPath(session): ApiPath<String>,
    ApiQuery(q): ApiQuery<StepsQuery>,
) -> ApiResult<Response> {
    let mine = |j: &Journey| j.session.user_id == user.sub || user.is_admin();
    let Some(id) = session.strip_suffix(".pdf") else {
        let scope = format!("journey-steps:{session}");
        let paging = Paging::sized(
            scope,
            STEP_ORDER,
            None,
            q.per_page,
            q.cursor.as_deref(),
            STEPS,
        )?;
        let (journey, next) = store
            .journey_page(&session, &paging)
            .await?
            .filter(|(j, _)| mine(j))
            .ok_or_else(|| ApiError::not_found("session"))?;
        return Ok(Json(JourneyStepsPage {
            journey,
            per_page: paging.per_page(),
            next_cursor: next.cursor,
            next: next.link,
        })
        .into_response());
    };
    let journey = store
        .journey(id)
        .await?
        .filter(mine)
        .ok_or_else(|| ApiError::not_found("session"))?;
    let file = format!("attachment; filename=\"ekart-journey-{id}.pdf\"");
    // Drawing a long journey is CPU work: keep it off the async workers.
    let bytes = tokio::task::spawn_blocking(move || pdf::render(&pdf_doc(&journey)))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        bytes,
    )
        .into_response())
}

/// The PDF's view of a journey: each step's kind decides its box's highlight.
pub fn pdf_doc(journey: &Journey) -> pdf::JourneyDoc {
    use crate::contracts::journey::{step_detail, StepKind};
    use crate::domain::MoneyStyle;
    let steps = journey
        .steps
        .iter()
        .map(|s| pdf::Step {
            at_ms: s.at,
            kind: StepKind::of(&s.kind, &s.name),
            label: s.label.clone(),
            detail: step_detail(
                &s.kind,
                &s.name,
                s.detail.as_deref(),
                s.amount_minor.zip(s.currency.as_deref()),
                MoneyStyle::Code,
            ),
        })
        .collect();
    pdf::JourneyDoc {
        shopper_name: journey.session.user_name.clone(),
        shopper_email: journey.session.user_email.clone(),
        session_id: journey.session.id.clone(),
        started_at_ms: journey.session.started_at,
        ended_at_ms: journey.session.end(),
        steps,
        summary: journey.totals.clone(),
    }
}
