//! My journeys: my sign-in sessions, and each one's timeline with its PDF.

use askama::Template;
use axum::extract::{Path, Query, State};

use super::{encode, ok, see_other, PageError, PageResult};
use crate::modules::frontend::views::{machine_time, time_text, Journey, Page, SessionSummary};
use crate::modules::frontend::visitor::{Chrome, Shopper};
use crate::modules::frontend::Frontend;

#[derive(Template)]
#[template(path = "journeys.html")]
struct JourneysPage {
    chrome: Chrome,
    sessions: Page<SessionSummary>,
    current: Option<String>,
}

impl JourneysPage {
    fn time(&self, ms: &i64) -> String {
        time_text(*ms)
    }

    fn iso(&self, ms: &i64) -> String {
        machine_time(*ms)
    }
}

pub async fn journeys(State(fe): State<Frontend>, Shopper(visitor): Shopper) -> PageResult {
    let sessions = fe
        .api
        .get(visitor.token(), "/api/journeys?per_page=50")
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))?;
    ok(&JourneysPage {
        chrome: visitor.chrome(),
        sessions,
        current: visitor.identity.as_ref().and_then(|i| i.session.clone()),
    })
}

#[derive(Template)]
#[template(path = "journey.html")]
struct JourneyPage {
    chrome: Chrome,
    journey: Journey,
    /// This page starts after the first step.
    later: bool,
}

/// Steps per page of a journey.
const STEPS_PER_PAGE: u32 = 100;

#[derive(Debug, serde::Deserialize)]
pub struct JourneyQuery {
    cursor: Option<String>,
}

impl JourneyPage {
    fn encode(&self, text: &str) -> String {
        encode(text)
    }

    fn time(&self, ms: &i64) -> String {
        time_text(*ms)
    }

    fn iso(&self, ms: &i64) -> String {
        machine_time(*ms)
    }

    /// Time from this step to the next (or to the session's end, for the last).
    fn spent(&self, index: &usize) -> String {
        let index = *index;
        let steps = &self.journey.steps;
        let next = steps
            .get(index + 1)
            .map(|s| s.at)
            .or(self.journey.session.ended_at)
            .or(self.journey.session.last_step_at)
            .unwrap_or(steps[index].at);
        crate::modules::frontend::views::duration_text(next - steps[index].at)
    }
}

pub async fn journey(
    State(fe): State<Frontend>,
    Shopper(visitor): Shopper,
    Path(id): Path<String>,
    Query(q): Query<JourneyQuery>,
) -> PageResult {
    // The PDF is the API's to draw (`/api/journeys/{id}.pdf`, which the page links to); an
    // address typed or shared as the page's own gets sent there, not read as the journey.
    if let Some(session) = id.strip_suffix(".pdf") {
        return Ok(see_other(&format!("/api/journeys/{}.pdf", encode(session))));
    }
    let mut path = format!("/api/journeys/{}?per_page={STEPS_PER_PAGE}", encode(&id));
    if let Some(cursor) = &q.cursor {
        path.push_str(&format!("&cursor={}", encode(cursor)));
    }
    let journey = fe
        .api
        .get(visitor.token(), &path)
        .await
        .map_err(|p| PageError::problem(p, visitor.chrome(), &visitor.here))?;
    ok(&JourneyPage {
        chrome: visitor.chrome(),
        journey,
        later: q.cursor.is_some(),
    })
}
