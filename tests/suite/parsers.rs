//! Property tests of the parsers that face the internet: whatever arrives, each answers a
//! value or a refusal, never a panic or a 500, and what the shop writes it reads back.
//!
//! Bounded for CI: a few hundred cases per pure parser, a few dozen requests per HTTP case
//! (`PROPTEST_CASES` raises both).

use std::sync::Arc;

use ekart::bus::Event;
use ekart::config::{AuthMode, Settings};
use ekart::db::keyset::{Order, Paging};
use ekart::gateway::auth::{Authenticator, Identity, Role};
use ekart::gateway::security::local_path;
use ekart::telemetry::trace::TraceContext;
use proptest::prelude::*;
use reqwest::StatusCode;

use crate::support::{Backend, TestApp};

/// Cases per property of a pure function.
fn pure() -> ProptestConfig {
    ProptestConfig::with_cases(cases(1024))
}

/// Cases per property that sends requests to a running shop.
fn http() -> ProptestConfig {
    ProptestConfig::with_cases(cases(256))
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Text a hostile client would try: separators, escapes, controls, direction marks, and the
/// odd multi-byte character, as well as anything at all.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[/\\\\.:@?#%&=;,a-zA-Z0-9 \t\r\n\u{0}\u{7f}\u{202e}\u{200b}é]{0,24}",
    ]
}

proptest! {
    #![proptest_config(pure())]

    /// Every redirect a request can steer lands on the shop: a path that starts with one
    /// slash, with no backslash or control character, that a browser resolves on this origin.
    #[test]
    fn a_steered_redirect_never_leaves_the_shop(wanted in hostile_text()) {
        let path = local_path(Some(&wanted));
        prop_assert!(path.starts_with('/') && !path.starts_with("//"), "{path:?}");
        prop_assert!(!path.contains('\\') && !path.chars().any(char::is_control), "{path:?}");
        let shop = reqwest::Url::parse("https://shop.example/").unwrap();
        let landed = shop.join(&path).unwrap();
        prop_assert_eq!(landed.origin(), shop.origin(), "{:?}", path);
    }

    /// A cursor is the shop's own or refused with 400; nothing a client sends panics.
    #[test]
    fn a_cursor_is_ours_or_refused(cursor in prop_oneof![
        hostile_text(),
        // Well-formed base64 of JSON that is almost a cursor.
        (hostile_text(), prop::collection::vec(any::<i64>(), 0..4)).prop_map(|(scope, keys)| {
            let json = serde_json::json!({"s": scope, "a": keys}).to_string();
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, json)
        }),
    ]) {
        const ORDER: Order = Order::ascending(&["name", "id"]);
        if let Err(e) = Paging::new("products:".into(), ORDER, None, None, Some(&cursor)) {
            prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    /// `traceparent` from any caller: a valid one reads back as written, anything else starts
    /// a new trace.
    #[test]
    fn a_traceparent_reads_back_or_is_ignored(
        junk in hostile_text(),
        trace in "[0-9a-f]{32}",
        span in "[0-9a-f]{16}",
        flags in "0[01]",
    ) {
        let _ = TraceContext::parse(&junk);
        let header = format!("00-{trace}-{span}-{flags}");
        match TraceContext::parse(&header) {
            Some(context) => prop_assert_eq!(context.to_string(), header),
            None => prop_assert!(trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0')),
        }
    }

    /// A record off the bus is an event or refused; an event the shop writes reads back whole.
    #[test]
    fn a_record_is_an_event_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        kind in "[a-z.]{1,20}",
        key in hostile_text(),
        payload in hostile_text(),
    ) {
        let _ = Event::decode(&bytes);
        let event = Event::new("/ekart/test", &kind, &key, serde_json::json!({"text": payload}));
        let wire = serde_json::to_vec(&event).unwrap();
        let back = Event::decode(&wire).unwrap();
        prop_assert_eq!(&back.id, &event.id);
        prop_assert_eq!(&back.subject, &key);
        prop_assert_eq!(back.data.get(), event.data.get());
        // Cut anywhere, it is refused, not half-read.
        let cut = bytes.len() % wire.len().max(1);
        prop_assert!(Event::decode(&wire[..cut]).is_err());
    }

    /// A session token is one the shop signed, for what it says, or refused; anything else a
    /// client sends as one (three dotted parts included) is refused without a panic.
    #[test]
    fn a_session_token_is_ours_or_refused(
        junk in hostile_text(),
        parts in prop::collection::vec("[A-Za-z0-9_-]{0,40}", 3),
        name in "[A-Za-z][A-Za-z ]{0,30}",
    ) {
        let auth = authenticator();
        prop_assert!(auth.verify(&junk).is_err());
        prop_assert!(auth.verify(&parts.join(".")).is_err());
        let identity = Identity {
            sub: format!("dev|{name}@example.com"),
            name: name.clone(),
            email: format!("{name}@example.com"),
            role: Role::Customer,
            session: Some("a-session".into()),
            session_started_at: Some(1),
        };
        let token = auth.issue(&identity);
        let back = auth.verify(&token).unwrap();
        prop_assert_eq!(back.sub, identity.sub);
        prop_assert_eq!(back.session, identity.session);
        // One character changed anywhere, and it is not the shop's any more.
        let at = name.len() % token.len();
        let mut altered = token.into_bytes();
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        if let Ok(altered) = String::from_utf8(altered) {
            prop_assert!(auth.verify(&altered).map(|i| i.name == name).unwrap_or(true));
        }
    }
}

fn authenticator() -> Arc<Authenticator> {
    let mut settings = Settings::default().auth;
    settings.mode = AuthMode::Dev;
    settings.session_secret = "a-property-test-secret-that-is-long-enough".into();
    Authenticator::new(&settings)
}

/// One shop for the HTTP properties, and a runtime to drive it from proptest's plain loop.
struct Shop {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
    token: String,
}

fn shop() -> Shop {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, token) = runtime.block_on(async {
        let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
        let token = app.token("pat", "customer").await;
        (app, token)
    });
    Shop {
        runtime,
        app,
        token,
    }
}

impl Shop {
    /// Sends `request`; answers its status, checking that a refusal of an API call is a
    /// problem document.
    fn send(&self, request: reqwest::RequestBuilder, api: bool) -> Result<StatusCode, String> {
        self.runtime.block_on(async {
            let res = request.send().await.map_err(|e| e.to_string())?;
            let status = res.status();
            let kind = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            if status.is_server_error() {
                return Err(format!(
                    "{status}: {}",
                    res.text().await.unwrap_or_default()
                ));
            }
            if api && status.is_client_error() && kind != "application/problem+json" {
                return Err(format!("{status} answered as {kind:?}"));
            }
            Ok(status)
        })
    }
}

/// A query string of the parameters the lists take, and others, with hostile values.
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("q"),
        Just("page"),
        Just("per_page"),
        Just("cursor"),
        Just("sort"),
        Just("all"),
        Just("status"),
        Just("shopper"),
        Just("in_stock"),
        Just("unknown"),
    ];
    let value = prop_oneof![
        hostile_text(),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("-1".to_string()),
        Just("4294967296".to_string()),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            query.append_pair(k, &v);
        }
        query.finish()
    })
}

/// Queries and forms, as a client may send them to the lists, the pages and the cart: a
/// value or a refusal (problem details on the API), never a 500.
#[test]
fn any_query_or_form_is_answered_or_refused() {
    let shop = shop();
    let base = shop.app.base.clone();
    let client = &shop.app.client;
    proptest!(http(), |(query in query(), raw in "[ -~]{0,40}", form in query())| {
        for path in ["/api/products", "/api/orders", "/api/journeys", "/api/admin/orders"] {
            for q in [&query, &raw] {
                let req = client.get(format!("{base}{path}?{q}")).bearer_auth(&shop.token);
                shop.send(req, true).map_err(|e| TestCaseError::fail(format!("{path}?{q}: {e}")))?;
            }
        }
        for path in ["/", "/orders", "/journeys"] {
            let req = client
                .get(format!("{base}{path}?{query}"))
                .header("cookie", format!("ekart_session={}", shop.token));
            shop.send(req, false).map_err(|e| TestCaseError::fail(format!("{path}?{query}: {e}")))?;
        }
        for path in ["/cart/items", "/checkout", "/signin"] {
            let req = client
                .post(format!("{base}{path}"))
                .header("origin", &base)
                .header("cookie", format!("ekart_session={}", shop.token))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone());
            shop.send(req, false).map_err(|e| TestCaseError::fail(format!("{path} {form}: {e}")))?;
        }
        let req = client
            .post(format!("{base}/api/cart/items"))
            .bearer_auth(&shop.token)
            .header("content-type", "application/json")
            .body(raw.clone());
        shop.send(req, true).map_err(|e| TestCaseError::fail(format!("cart {raw}: {e}")))?;
    });
}
