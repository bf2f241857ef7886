//! Journeys: the click-stream and checkout outcomes of each session, stored once, never
//! mixed between sessions, private to their shopper, and drawn as a PDF.

use std::sync::Arc;

use ekart::app::Databases;
use ekart::bus::{Delivered, Event};
use ekart::modules::frontend::events::{JourneyStep, PAGE_VIEWED, SOURCE};
use ekart::modules::user::store_journey_batch;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::on_both;
use crate::support::{postgres_url, scratch_postgres, test_settings, Backend, TestApp};

fn labels(journey: &Value) -> Vec<String> {
    journey["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap().to_string())
        .collect()
}

on_both!(
    sessions_never_mix_and_are_private,
    |app: TestApp| async move {
        let app = Arc::new(app);
        let asha = app.token("asha", "customer").await;
        let ravi = app.token("ravi", "customer").await;
        let admin = app.token("boss", "admin").await;
        // Two shoppers browse at once, each in order.
        let browse = |token: String, who: &'static str| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let beacon = json!({"type": "page", "path": format!("/p/{i}"), "title": format!("{who} {i}")});
                    assert_eq!(app.beacon(&token, beacon).await, StatusCode::NO_CONTENT);
                }
            })
        };
        let (a, r) = (browse(asha.clone(), "asha"), browse(ravi.clone(), "ravi"));
        a.await.unwrap();
        r.await.unwrap();

        let asha_session = app.session_of(&asha).await;
        let ravi_session = app.session_of(&ravi).await;
        let journey = app.journey_with(&asha, &asha_session, 60).await;
        let expected: Vec<String> = (0..60).map(|i| format!("asha {i}")).collect();
        assert_eq!(labels(&journey), expected, "only asha's steps, in order");
        let journey = app.journey_with(&ravi, &ravi_session, 60).await;
        assert!(labels(&journey).iter().all(|l| l.starts_with("ravi ")));
        assert_eq!(journey["totals"]["pages_visited"], 60);

        // Another shopper's session is not there for you; an admin may open any.
        let (status, problem) = app
            .get(&format!("/api/journeys/{asha_session}"), Some(&ravi))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
        let (status, _) = app
            .get(&format!("/api/journeys/{asha_session}.pdf"), Some(&ravi))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app
            .get(&format!("/api/journeys/{asha_session}"), Some(&admin))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, mine) = app.get("/api/journeys", Some(&asha)).await;
        assert_eq!(mine["total"], 1, "asha sees her one session: {mine}");
        let (status, _) = app.get("/api/journeys?all=true", Some(&asha)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, all) = app.get("/api/journeys?all=true", Some(&admin)).await;
        assert_eq!(all["total"], 3);

        // Anonymous beacons are dropped; malformed ones refused.
        let anonymous = app
            .client
            .post(format!("{}/track", app.base))
            .header("origin", &app.base)
            .body(json!({"type": "page", "path": "/", "title": "x"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::NO_CONTENT);
        for bad in [
            json!({"type": "page"}),
            json!({"type": "click", "action": "Not Kebab"}),
            json!({"type": "page", "path": "http://evil.example/", "title": "x"}),
            json!({"type": "wat"}),
            json!("just a string"),
        ] {
            assert_eq!(
                app.beacon(&asha, bad.clone()).await,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }

        // Signing out ends the session: its token is refused from then on.
        let (status, _) = app
            .call(reqwest::Method::POST, "/auth/signout", Some(&asha), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app
            .get(&format!("/api/journeys/{asha_session}"), Some(&asha))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, journey) = app
            .get(&format!("/api/journeys/{asha_session}"), Some(&admin))
            .await;
        assert!(journey["session"]["ended_at"].is_i64(), "{journey}");
    }
);

on_both!(
    checkout_outcomes_join_the_session_journey,
    |app: TestApp| async move {
        let admin = app.token("admin", "admin").await;
        let tea = app.product(&admin, "TEA", 25_000, 10).await;
        let me = app.token("asha", "customer").await;
        let session = app.session_of(&me).await;
        let click = json!({"type": "click", "action": "add-to-cart", "label": "Tea ×2"});
        assert_eq!(app.beacon(&me, click).await, StatusCode::NO_CONTENT);
        app.add_to_cart(&me, &tea, 2).await;
        let (status, body) = app
            .post("/api/checkout", Some(&me), json!({"payment_mode": "CASH"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let paid = body["id"].as_str().unwrap().to_string();
        app.add_to_cart(&me, &tea, 1).await;
        let declined = json!({"payment_mode": "CARD",
            "card": {"number": "4000000000000002", "expiry": "12/39", "cvv": "123"}});
        let (status, _) = app.post("/api/checkout", Some(&me), declined).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);

        let journey = app.journey_with(&me, &session, 5).await;
        assert_eq!(
            labels(&journey),
            [
                "Add to cart",
                "Order placed",
                "Order completed",
                "Order placed",
                "Order failed"
            ]
        );
        // The step keeps the amount, not a sentence about it: each view says it its own way.
        let completed = journey["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["label"] == "Order completed")
            .unwrap();
        assert_eq!(
            (&completed["amount_minor"], &completed["currency"]),
            (&json!(50_000), &json!("INR"))
        );
        assert!(completed["detail"].is_null(), "{completed}");
        let totals = &journey["totals"];
        assert_eq!(totals["items_added"], 1);
        assert_eq!(totals["orders_placed"], 2);
        assert_eq!(totals["orders_completed"], 1);
        assert_eq!(totals["spent_minor"], 50_000);
        assert_eq!(totals["currency"], "INR");

        // Cancelled and refunded, the order no longer counts as spent.
        let (status, body) = app
            .post(&format!("/api/orders/{paid}/cancel"), Some(&me), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let journey = app.journey_with(&me, &session, 6).await;
        assert_eq!(
            labels(&journey).last().map(String::as_str),
            Some("Order cancelled and refunded")
        );
        assert_eq!(journey["totals"]["spent_minor"], 0, "{journey}");
        assert_eq!(journey["totals"]["orders_completed"], 1);
    }
);

on_both!(
    a_thousand_step_journey_is_a_multipage_pdf,
    |app: TestApp| async move {
        let app = Arc::new(app);
        let me = app.token("asha", "customer").await;
        let senders: Vec<_> = (0..8)
            .map(|s| {
                let (app, me) = (app.clone(), me.clone());
                tokio::spawn(async move {
                    for i in 0..125 {
                        let beacon = json!({"type": "click", "action": "look",
                            "label": format!("step {s}-{i}"), "path": "/"});
                        assert_eq!(app.beacon(&me, beacon).await, StatusCode::NO_CONTENT);
                    }
                })
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        let session = app.session_of(&me).await;
        let whole = app.journey_with(&me, &session, 1000).await;

        // The JSON comes a page at a time, each step once, in order, with the whole's totals.
        assert_eq!(whole["steps"].as_array().unwrap().len(), 500);
        let mut seen = Vec::new();
        let mut next = Some(format!("/api/journeys/{session}?per_page=300"));
        while let Some(path) = next.take() {
            let (status, page) = app.get(&path, Some(&me)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["totals"], whole["totals"]);
            let steps = page["steps"].as_array().unwrap();
            assert!(steps.len() <= 300);
            seen.extend(
                steps
                    .iter()
                    .map(|s| (s["at"].as_i64().unwrap(), s.to_string())),
            );
            next = page["next"].as_str().map(String::from);
        }
        assert_eq!(seen.len(), 1000);
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "in order");
        let labels: std::collections::HashSet<_> = seen.iter().map(|s| &s.1).collect();
        assert_eq!(labels.len(), 1000, "each step once: {:?}", &seen[..3]);
        assert!(seen[0].1.contains("step "), "{}", seen[0].1);
        // A cursor of another session's steps is refused.
        let (_, first) = app
            .get(&format!("/api/journeys/{session}?per_page=10"), Some(&me))
            .await;
        let cursor = first["next_cursor"].as_str().unwrap();
        let other = app.session_of(&app.token("bela", "customer").await).await;
        let admin = app.token("root", "admin").await;
        let (status, _) = app
            .get(
                &format!("/api/journeys/{other}?cursor={cursor}"),
                Some(&admin),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The page shows a hundred steps at a time, with the way on.
        let page = |path: String| {
            let req = app
                .client
                .get(format!("{}{path}", app.base))
                .header("cookie", format!("ekart_session={me}"));
            async move { req.send().await.unwrap().text().await.unwrap() }
        };
        let html = page(format!("/journeys/{session}")).await;
        assert_eq!(html.matches("<time class=\"when\"").count(), 100, "{html}");
        assert!(html.contains("1000 steps"));
        let later = html
            .split("href=\"")
            .find_map(|rest| rest.split('"').next().filter(|h| h.contains("cursor=")))
            .expect("a link to later steps")
            .replace("&amp;", "&");
        let html = page(later).await;
        assert_eq!(html.matches("<time class=\"when\"").count(), 100);
        assert!(html.contains("From the first step"));

        let response = app
            .client
            .get(format!("{}/api/journeys/{session}.pdf", app.base))
            .bearer_auth(&me)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/pdf");
        let pdf = response.bytes().await.unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.trim_ascii_end().ends_with(b"%%EOF"));
        let mut warnings = Vec::new();
        let parsed = printpdf::PdfDocument::parse(
            &pdf,
            &printpdf::PdfParseOptions::default(),
            &mut warnings,
        )
        .expect("a valid PDF");
        assert!(
            parsed.pages.len() > 50,
            "1,000 steps over many pages, got {}",
            parsed.pages.len()
        );
    }
);

async fn journey_events_delivered_twice_are_stored_once(url: String) {
    let dbs = Databases::open(&test_settings(url)).await.unwrap();
    let event = |i: i64| page_view("session-1", i);
    let batch: Vec<Delivered> = (0..10).map(event).collect();
    let first = store_journey_batch(&dbs.users, Arc::new(batch.clone()), 1000)
        .await
        .unwrap();
    // Again, alone, and inside a bigger batch with new events.
    let again = store_journey_batch(&dbs.users, Arc::new(batch.clone()), 1000)
        .await
        .unwrap();
    let mut bigger = batch.clone();
    bigger.extend((10..15).map(event));
    let mixed = store_journey_batch(&dbs.users, Arc::new(bigger), 1000)
        .await
        .unwrap();
    assert_eq!((first, again, mixed), (10, 0, 5));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journey_steps")
        .fetch_one(&dbs.users.read)
        .await
        .unwrap();
    assert_eq!(stored, 15);
}

#[tokio::test]
async fn journey_events_delivered_twice_are_stored_once_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    journey_events_delivered_twice_are_stored_once(format!("sqlite://{}/", dir.path().display()))
        .await;
}

#[tokio::test]
async fn journey_events_delivered_twice_are_stored_once_postgres() {
    if let Some(server) = postgres_url() {
        journey_events_delivered_twice_are_stored_once(scratch_postgres(&server).await).await;
    }
}

/// A page view in `session` at millisecond `i`, as the bus delivers it.
fn page_view(session: &str, i: i64) -> Delivered {
    Delivered {
        event: Event::new(
            SOURCE,
            PAGE_VIEWED,
            session,
            JourneyStep {
                session_id: session.into(),
                user_id: "dev|asha@example.com".into(),
                at_ms: 1_000 + i,
                name: format!("/p/{i}"),
                label: format!("page {i}"),
                detail: None,
            },
        ),
        position: None,
    }
}

/// A session records at most its cap of page views and clicks, across batches and with
/// redeliveries among them; other sessions are not held back by it.
async fn a_session_records_at_most_its_cap(url: String) {
    let dbs = Databases::open(&test_settings(url)).await.unwrap();
    let stored = |session: &'static str| {
        let read = dbs.users.read.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM journey_steps WHERE session_id = $1")
                .bind(session)
                .fetch_one(&read)
                .await
                .unwrap()
        }
    };
    let cap = 25;
    let mut first: Vec<Delivered> = (0..20).map(|i| page_view("busy", i)).collect();
    first.extend((0..10).map(|i| page_view("calm", i)));
    let added = store_journey_batch(&dbs.users, Arc::new(first.clone()), cap)
        .await
        .unwrap();
    assert_eq!(added, 30);
    // Ten more for the busy session, behind a redelivery of its first: five fit.
    let mut second = vec![first[0].clone()];
    second.extend((20..30).map(|i| page_view("busy", i)));
    second.extend((10..12).map(|i| page_view("calm", i)));
    let added = store_journey_batch(&dbs.users, Arc::new(second), cap)
        .await
        .unwrap();
    assert!((6..=7).contains(&added), "{added}");
    let third: Vec<Delivered> = (30..40).map(|i| page_view("busy", i)).collect();
    let added = store_journey_batch(&dbs.users, Arc::new(third), cap)
        .await
        .unwrap();
    // (A redelivered step may have held a place in the batch it came with.)
    assert!(added <= 1, "{added}");
    assert_eq!(stored("busy").await, 25);
    let fourth: Vec<Delivered> = (40..50).map(|i| page_view("busy", i)).collect();
    let added = store_journey_batch(&dbs.users, Arc::new(fourth), cap)
        .await
        .unwrap();
    assert_eq!(added, 0);
    assert_eq!(stored("busy").await, 25);
    assert_eq!(stored("calm").await, 12);
}

#[tokio::test]
async fn a_session_records_at_most_its_cap_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_session_records_at_most_its_cap(format!("sqlite://{}/", dir.path().display())).await;
}

#[tokio::test]
async fn a_session_records_at_most_its_cap_postgres() {
    if let Some(server) = postgres_url() {
        a_session_records_at_most_its_cap(scratch_postgres(&server).await).await;
    }
}
