//! The click-stream: the browser reports page views and clicks (`navigator.sendBeacon` to
//! `POST /track`), and the [`Recorder`] publishes them on `ekart.journey` in batches.
//!
//! A beacon is answered at once; the steps wait in a bounded queue (a full queue slows the
//! senders down rather than growing) and go to the bus a batch at a time, so a busy shop
//! pays one publish, and one commit in the user module, per batch rather than per click.
//! Steps still queued when the process dies are lost: the journey is analytics, not money.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::events::{JourneyStep, CLICKED, PAGE_VIEWED, SOURCE};
use super::visitor::Visitor;
use super::Frontend;
use crate::bus::{topics, Bus, Event};
use crate::db::now_ms;

/// Steps per publish, at most.
const BATCH: usize = 1000;

#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Event>,
}

impl Recorder {
    /// Starts the task that publishes queued steps.
    pub fn start(bus: Arc<dyn Bus>) -> Recorder {
        let (queue, mut steps) = mpsc::channel::<Event>(BATCH * 8);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while steps.recv_many(&mut batch, BATCH).await > 0 {
                publish(bus.as_ref(), std::mem::take(&mut batch)).await;
            }
        });
        Recorder { queue }
    }

    /// Queues one step of a session's journey.
    pub async fn record(&self, kind: &'static str, step: JourneyStep) {
        let event = Event::new(SOURCE, kind, &step.session_id.clone(), step);
        // Closed only when the process is stopping.
        let _ = self.queue.send(event).await;
    }
}

/// Publishes a batch, retrying a few times while the consumer recovers; then gives it up
/// (logged), so a broken consumer cannot stall the shop's pages.
async fn publish(bus: &dyn Bus, events: Vec<Event>) {
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=5 {
        match bus.publish(topics::JOURNEY, events.clone()).await {
            Ok(()) => return,
            Err(err) if attempt == 5 => {
                tracing::error!(error = %err, steps = events.len(), "journey steps dropped");
            }
            Err(err) => {
                tracing::warn!(error = %err, attempt, "publishing journey steps failed");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

/// What a beacon carries.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Beacon {
    /// A page was shown.
    Page { path: String, title: String },
    /// A control marked `data-track` was used.
    Click {
        action: String,
        #[serde(default)]
        label: String,
        #[serde(default)]
        path: String,
    },
}

fn bounded(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

fn valid_action(action: &str) -> bool {
    (1..=40).contains(&action.len())
        && action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `POST /track`: one step from the browser. Anonymous visitors have no journey; their
/// beacons are accepted and dropped. A malformed beacon is refused with 400.
pub async fn track(State(fe): State<Frontend>, visitor: Visitor, body: Bytes) -> StatusCode {
    let Ok(beacon) = serde_json::from_slice::<Beacon>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let Some(identity) = visitor.identity else {
        return StatusCode::NO_CONTENT;
    };
    let Some(session_id) = identity.session else {
        return StatusCode::NO_CONTENT;
    };
    let (kind, name, label, detail) = match beacon {
        Beacon::Page { path, title } => {
            if !path.starts_with('/') {
                return StatusCode::BAD_REQUEST;
            }
            let title = title.trim_end_matches(" · Ekart");
            (PAGE_VIEWED, bounded(&path, 300), bounded(title, 120), None)
        }
        Beacon::Click {
            action,
            label,
            path,
        } => {
            if !valid_action(&action) {
                return StatusCode::BAD_REQUEST;
            }
            let human = {
                let mut words = action.replace('-', " ");
                if let Some(first) = words.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                words
            };
            let detail = Some(bounded(&label, 200))
                .filter(|l| !l.is_empty())
                .or_else(|| Some(bounded(&path, 300)).filter(|p| !p.is_empty()));
            (CLICKED, action, human, detail)
        }
    };
    fe.recorder
        .record(
            kind,
            JourneyStep {
                session_id,
                user_id: identity.sub,
                at_ms: now_ms(),
                name,
                label,
                detail,
            },
        )
        .await;
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    #[test]
    fn actions_are_short_kebab_case() {
        assert!(super::valid_action("add-to-cart"));
        assert!(!super::valid_action(""));
        assert!(!super::valid_action("Add to cart"));
        assert!(!super::valid_action(&"a".repeat(41)));
    }
}
