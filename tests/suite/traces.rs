//! Spans exported to Zipkin. No Zipkin server can be installed here, so the test runs a
//! receiver on loopback that checks every span it is sent against the Zipkin v2 JSON model
//! (ids, parent, kind, local endpoint, timestamps in microseconds, string tags), then checks
//! that one checkout is one tree of the expected operations. The real binary sends them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Json;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::process::{free_port, Shop};
use crate::support::TestApp;

/// What the receiver was sent, and what it found wrong with it.
#[derive(Default)]
struct Received {
    spans: Vec<Value>,
    faults: Vec<String>,
}

/// A Zipkin v2 collector's `POST /api/v2/spans` on loopback; answers its address.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/api/v2/spans",
        post(move |Json(batch): Json<Vec<Value>>| {
            let kept = kept.clone();
            async move {
                let mut kept = kept.lock().unwrap();
                for span in batch {
                    if let Err(fault) = zipkin_v2(&span) {
                        kept.faults.push(format!("{fault}: {span}"));
                    }
                    kept.spans.push(span);
                }
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/api/v2/spans"), received)
}

/// Checks a span against the Zipkin v2 model (zipkin2-api.yaml's `Span`).
fn zipkin_v2(span: &Value) -> Result<(), String> {
    let hex = |field: &str, lengths: &[usize]| match span[field].as_str() {
        Some(v)
            if lengths.contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!("{field} is not {lengths:?} lowercase hex digits")),
    };
    hex("traceId", &[16, 32])?;
    hex("id", &[16])?;
    if !span["parentId"].is_null() {
        hex("parentId", &[16])?;
        if span["parentId"] == "0000000000000000" {
            return Err("parentId is all zeros (a root span has none)".into());
        }
    }
    if span["name"].as_str().is_none_or(str::is_empty) {
        return Err("no name".into());
    }
    if !span["kind"].is_null()
        && !["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]
            .contains(&span["kind"].as_str().unwrap_or(""))
    {
        return Err("kind is not CLIENT, SERVER, PRODUCER or CONSUMER".into());
    }
    // Microseconds since the epoch: between 2020 and 2100.
    let timestamp = span["timestamp"].as_u64().ok_or("no timestamp in µs")?;
    if !(1_577_836_800_000_000..4_102_444_800_000_000).contains(&timestamp) {
        return Err(format!("timestamp {timestamp} is not in microseconds"));
    }
    span["duration"].as_u64().ok_or("no duration in µs")?;
    if span["localEndpoint"]["serviceName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err("no localEndpoint.serviceName".into());
    }
    if let Some(tags) = span.get("tags") {
        let tags = tags.as_object().ok_or("tags are not an object")?;
        if let Some((key, _)) = tags.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!("tag {key} is not a string"));
        }
    }
    Ok(())
}

/// The saga's events, each written once per checkout, in the order they cause each other.
const SAGA: [&str; 5] = [
    "publish ekart.order.placed",
    "publish ekart.stock.reserved",
    "publish ekart.order.payment_requested",
    "publish ekart.payment.succeeded",
    "publish ekart.order.completed",
];

/// The handling of each of the saga's events, by one consumer at least: alone or in a batch,
/// a child of the event's publish span.
const HANDLED: [(&str, &str); 5] = [
    ("publish ekart.order.placed", "handle ekart.order.placed"),
    (
        "publish ekart.stock.reserved",
        "handle ekart.stock.reserved",
    ),
    (
        "publish ekart.order.payment_requested",
        "handle ekart.order.payment_requested",
    ),
    (
        "publish ekart.payment.succeeded",
        "handle ekart.payment.succeeded",
    ),
    (
        "publish ekart.order.completed",
        "handle ekart.order.completed",
    ),
];

/// Puts one product in `me`'s cart at `shop` and checks out; answers the trace id and root
/// span id `traceresponse` names.
async fn check_out(shop: &TestApp, me: &str, product: &str) -> (String, String) {
    shop.add_to_cart(me, product, 1).await;
    let (status, headers, order) = shop
        .call_with(
            Method::POST,
            "/api/checkout",
            Some(me),
            Some(json!({"payment_mode": "UPI", "upi_id": "asha@okbank"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let answered = headers["traceresponse"].to_str().unwrap().to_string();
    let mut parts = answered.split('-').skip(1);
    let trace_id = parts.next().unwrap().to_string();
    let root_id = parts.next().unwrap().to_string();
    (trace_id, root_id)
}

/// Waits until `received` holds every span of `wanted` (name, kind) in trace `trace_id`;
/// checks that nothing sent broke the v2 model, that the spans form one tree whose root is
/// the shopper's request, that `answered` (from `traceresponse`) is in it, and that each of
/// the saga's events is the child of the one that caused it. Answers the trace's spans.
async fn one_tree(
    received: &Mutex<Received>,
    trace_id: &str,
    answered: &str,
    wanted: &[(&str, &str)],
) -> Vec<Value> {
    let mut wanted = wanted.to_vec();
    wanted.extend(HANDLED.map(|(_, handle)| (handle, "CONSUMER")));
    let mut trace: Vec<Value> = vec![];
    for _ in 0..150 {
        trace = received
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|s| s["traceId"] == trace_id)
            .cloned()
            .collect();
        let has = |(name, kind): &&(&str, &str)| {
            trace
                .iter()
                .any(|s| s["name"] == *name && s["kind"] == *kind)
        };
        if wanted.iter().all(|w| has(&w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let faults = std::mem::take(&mut received.lock().unwrap().faults);
    assert!(faults.is_empty(), "{faults:#?}");
    let names: Vec<String> = trace
        .iter()
        .map(|s| {
            format!(
                "{} {} ({})",
                s["kind"], s["name"], s["localEndpoint"]["serviceName"]
            )
        })
        .collect();
    for (name, kind) in &wanted {
        assert!(
            trace
                .iter()
                .any(|s| s["name"] == *name && s["kind"] == *kind),
            "{kind} {name} in {names:#?}"
        );
    }
    // One tree: one root, the shopper's request; every other span's parent is a span of the
    // same trace. (`traceresponse` names the request's span in the process that answered it.)
    let by_id: HashMap<&str, &Value> = trace
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s))
        .collect();
    assert_eq!(by_id[answered]["name"], "POST /api/checkout");
    let roots: Vec<&Value> = trace.iter().filter(|s| s["parentId"].is_null()).collect();
    assert_eq!(roots.len(), 1, "{names:#?}");
    let root = roots[0];
    let root_id = root["id"].as_str().unwrap();
    assert_eq!(root["name"], "POST /api/checkout");
    assert_eq!(root["kind"], "SERVER");
    assert_eq!(root["tags"]["http.status_code"], "201");
    for span in &trace {
        let mut at = span;
        let mut hops = 0;
        while let Some(parent) = at["parentId"].as_str() {
            at = by_id
                .get(parent)
                .unwrap_or_else(|| panic!("the parent of {span} is not in the trace {names:#?}"));
            hops += 1;
            assert!(hops < 50, "a cycle at {span}");
        }
        assert_eq!(at["id"], root_id, "{span} leads to another root");
    }
    // Each saga event is the child of the one that caused it.
    let span = |name: &str| trace.iter().find(|s| s["name"] == name).unwrap();
    for pair in SAGA.windows(2) {
        assert_eq!(span(pair[1])["parentId"], span(pair[0])["id"], "{pair:?}");
    }
    for (publish, handle) in HANDLED {
        let published = &span(publish)["id"];
        assert!(
            trace.iter().any(|s| s["name"] == handle
                && s["kind"] == "CONSUMER"
                && s["parentId"] == *published),
            "{handle} under {publish} in {names:#?}"
        );
    }
    // Every handling names its topic, the event's type and key.
    for consumer in trace.iter().filter(|s| s["kind"] == "CONSUMER") {
        let tags = &consumer["tags"];
        assert!(
            tags["messaging.destination"]
                .as_str()
                .is_some_and(|t| t.starts_with("ekart.")),
            "{consumer}"
        );
        assert!(tags["messaging.event_type"].is_string(), "{consumer}");
        assert!(tags["messaging.key"].is_string(), "{consumer}");
    }
    trace
}

/// One checkout through the real binary is one trace: the request's server span at its
/// root, the events it writes and their handling in order, each with its parent in the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_one_trace_in_zipkin() {
    let (endpoint, received) = receiver().await;
    let shop = Shop::start(
        free_port(),
        &[],
        &[
            ("EKART_TELEMETRY__ZIPKIN_ENDPOINT", endpoint),
            ("EKART_DATABASE__URL", scratch_sqlite()),
        ],
    )
    .await;
    let app = TestApp::at(shop.base.clone());
    let me = app.token("asha", "customer").await;
    let (_, catalog) = app.get("/api/products?per_page=1", None).await;
    let product = catalog["items"][0]["id"].as_str().unwrap().to_string();
    let (trace_id, root_id) = check_out(&app, &me, &product).await;
    let mut wanted = vec![
        ("POST /api/checkout", "SERVER"),
        ("payment provider charge", "CLIENT"),
    ];
    wanted.extend(SAGA.map(|name| (name, "PRODUCER")));
    let trace = one_tree(&received, &trace_id, &root_id, &wanted).await;
    assert!(trace
        .iter()
        .all(|s| s["localEndpoint"]["serviceName"] == "ekart"));
    // The order's write is a unit of work committed in the module's database.
    let commit = trace
        .iter()
        .find(|s| s["name"] == "commit orders")
        .unwrap_or_else(|| panic!("a commit of the orders database in {trace:#?}"));
    assert_eq!(commit["tags"]["db.outcome"], "committed");
    let folded: u64 = commit["tags"]["db.jobs_folded"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(folded >= 1);
    // Placing an order is several statements (the order, its lines, the outbox).
    let statements: u64 = commit["tags"]["db.statements"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(statements >= 2, "{commit}");
    // A request's span is named for its route, one name for every order.
    let (_, orders) = app.get("/api/orders", Some(&me)).await;
    let order = orders["items"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = app.get(&format!("/api/orders/{order}"), Some(&me)).await;
    assert_eq!(status, StatusCode::OK);
    let mut named = false;
    for _ in 0..50 {
        named = received.lock().unwrap().spans.iter().any(|s| {
            s["name"] == "GET /api/orders/{id}"
                && s["tags"]["http.path"] == format!("/api/orders/{order}").as_str()
        });
        if named {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(named, "a span named GET /api/orders/{{id}}");
}

/// The same checkout across three processes on Kafka and PostgreSQL is still one tree: the
/// gateway's request, its call to the order process, and the saga's events written and
/// handled in each process, every span named for the process that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_across_three_processes_is_one_trace() {
    let (Some(brokers), Some(server)) = (
        crate::support::kafka_brokers(),
        crate::support::postgres_url(),
    ) else {
        return;
    };
    let (endpoint, received) = receiver().await;
    let db = crate::support::scratch_postgres(&server).await;
    let (gateway_port, order_port, stock_port) = (free_port(), free_port(), free_port());
    let layout = crate::split::Layout {
        stock_and_payment: &[stock_port],
        order: &[order_port],
        gateway: &[gateway_port],
    };
    let mut env = crate::split::split_env(&db, &brokers, 2, layout);
    env.push(("EKART_TELEMETRY__ZIPKIN_ENDPOINT", endpoint));
    let _stock = Shop::start(stock_port, &["--modules", "stock,payment"], &env).await;
    let _order = Shop::start(order_port, &["--modules", "order"], &env).await;
    let gateway = Shop::start(gateway_port, &["--modules", "gateway,frontend,user"], &env).await;
    let shop = TestApp::at(gateway.base.clone());
    let me = shop.token("asha", "customer").await;
    let (_, catalog) = shop.get("/api/products?per_page=1", None).await;
    let product = catalog["items"][0]["id"].as_str().unwrap().to_string();
    let (trace_id, root_id) = check_out(&shop, &me, &product).await;
    let mut wanted = vec![
        ("POST /api/checkout", "SERVER"),
        ("POST /api/checkout", "CLIENT"),
    ];
    wanted.extend(SAGA.map(|name| (name, "PRODUCER")));
    let trace = one_tree(&received, &trace_id, &root_id, &wanted).await;
    let service = |name: &str, kind: &str| -> Vec<String> {
        trace
            .iter()
            .filter(|s| s["name"] == name && s["kind"] == kind)
            .map(|s| {
                s["localEndpoint"]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let gateway = "ekart-gateway-frontend-user";
    assert_eq!(service("POST /api/checkout", "CLIENT"), [gateway]);
    let mut servers = service("POST /api/checkout", "SERVER");
    servers.sort();
    assert_eq!(servers, ["ekart-gateway-frontend-user", "ekart-order"]);
    assert_eq!(
        service("publish ekart.order.placed", "PRODUCER"),
        ["ekart-order"]
    );
    assert_eq!(
        service("publish ekart.stock.reserved", "PRODUCER"),
        ["ekart-stock-payment"]
    );
    assert_eq!(
        service("publish ekart.payment.succeeded", "PRODUCER"),
        ["ekart-stock-payment"]
    );
    // Over Kafka each handling also says where its event sat in the log.
    for consumer in trace.iter().filter(|s| s["kind"] == "CONSUMER") {
        let tags = &consumer["tags"];
        assert!(tags["messaging.partition"].is_string(), "{consumer}");
        assert!(tags["messaging.offset"].is_string(), "{consumer}");
    }
    // The order process's request is the child of the gateway's call to it.
    let client = trace
        .iter()
        .find(|s| s["name"] == "POST /api/checkout" && s["kind"] == "CLIENT")
        .unwrap();
    assert!(trace.iter().any(|s| s["kind"] == "SERVER"
        && s["localEndpoint"]["serviceName"] == "ekart-order"
        && s["parentId"] == client["id"]));
}

/// A collector that is down changes nothing for shoppers: checkouts answer as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_changes_nothing_for_shoppers() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let shop = Shop::start(
        free_port(),
        &[],
        &[
            (
                "EKART_TELEMETRY__ZIPKIN_ENDPOINT",
                format!("http://{closed}/api/v2/spans"),
            ),
            ("EKART_DATABASE__URL", scratch_sqlite()),
        ],
    )
    .await;
    let app = TestApp::at(shop.base.clone());
    let me = app.token("bela", "customer").await;
    let (_, catalog) = app.get("/api/products?per_page=1", None).await;
    let product = catalog["items"][0]["id"].as_str().unwrap().to_string();
    for _ in 0..5 {
        app.add_to_cart(&me, &product, 1).await;
        let (status, order) = app
            .post(
                "/api/checkout",
                Some(&me),
                json!({"payment_mode": "UPI", "upi_id": "bela@okbank"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!(order["status"], "completed");
    }
}

/// A database directory of its own for a shop started as a process (kept until the test
/// process ends).
fn scratch_sqlite() -> String {
    let dir = tempfile::tempdir().unwrap().keep();
    format!("sqlite://{}/", dir.display())
}

/// With `telemetry.log_format = "json"` every line is one JSON object, and a line written
/// while a request is handled carries that request's trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_trace_id() {
    use std::io::{BufRead, BufReader};
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ekart"))
        .args(["--config", "/nonexistent/ekart.toml", "serve"])
        .env("EKART_SERVER__PORT", port.to_string())
        .env("EKART_AUTH__MODE", "dev")
        .env("EKART_DATABASE__URL", scratch_sqlite())
        .env("EKART_TELEMETRY__LOG_FORMAT", "json")
        .env("EKART_LOG__LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let shop = TestApp::at(base.clone());
    for _ in 0..100 {
        if reqwest::get(format!("{base}/readyz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let (status, _, _) = shop
        .call_with(
            Method::POST,
            "/auth/dev/token",
            None,
            Some(json!({"name": "Asha", "email": "asha@example.com", "role": "customer"})),
            &[("traceparent", &parent)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let out = BufReader::new(child.stdout.take().unwrap());
    let _ = child.wait();
    let lines: Vec<Value> = out
        .lines()
        .map(|line| {
            let line = line.unwrap();
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect();
    assert!(!lines.is_empty());
    let signed_in = lines
        .iter()
        .find(|l| {
            l["fields"]["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("sign in"))
        })
        .unwrap_or_else(|| panic!("no sign-in line in {lines:#?}"));
    assert_eq!(signed_in["span"]["trace_id"], trace, "{signed_in}");
}
