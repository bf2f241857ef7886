//! What every test shares: a real shop on a random port, on SQLite or PostgreSQL, for each
//! test; the services' addresses from the environment; the real binary as a child process
//! ([`process`]).

pub mod process;

use std::time::Duration;

use ekart::app::Application;
use ekart::config::{AuthMode, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The address of a real service the tests need, from the environment variable `name`.
/// Under `CI=true` a missing one fails the test; elsewhere the test is skipped, saying why.
pub fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{name} must be set when CI=true")
        }
        _ => {
            skipped(&format!("set {name}"));
            None
        }
    }
}

/// Says that the running test is skipped, and why, where the person running the tests sees it:
/// straight to the process's stderr, past the harness's capture (which would show it only for
/// a failing test, so a skipped test would read as a passed one).
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr().lock(), "skipped: {test}: {why}");
}

/// The PostgreSQL server tests use, from `TEST_POSTGRES_URL`.
pub fn postgres_url() -> Option<String> {
    required_env("TEST_POSTGRES_URL")
}

/// The Kafka-protocol broker tests use, from `TEST_KAFKA_BROKERS` (`host:port`, comma-separated).
#[allow(dead_code)] // the API tests run on the in-process bus
pub fn kafka_brokers() -> Option<Vec<String>> {
    required_env("TEST_KAFKA_BROKERS").map(|b| b.split(',').map(str::to_string).collect())
}

/// Creates an empty database on the test server and returns its URL.
pub async fn scratch_postgres(server: &str) -> String {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let name = format!("ekart_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(server)
        .await
        .expect("connect to postgres");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create scratch database");
    let _ = conn.close().await;
    let (base, _) = server
        .rsplit_once('/')
        .expect("postgres url has a database");
    format!("{base}/{name}")
}

pub struct TestApp {
    pub base: String,
    /// `server.metrics_addr`'s address (`http://…`), when it is set.
    pub metrics: Option<String>,
    pub client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn test_settings(database_url: String) -> Settings {
    let mut s = Settings::default();
    s.server.port = 0;
    s.database.url = database_url;
    s.database.max_connections = 4;
    s.auth.mode = AuthMode::Dev;
    s.checkout.wait_ms = 15_000;
    // Tests sign many shoppers in from one address; the limits have tests of their own.
    s.limits.enabled = false;
    s.log.level = "warn".into();
    s
}

impl TestApp {
    /// Starts a shop; `None` when the backend is not available here (PostgreSQL outside CI).
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        ekart::telemetry::init("warn");
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/", dir.path().display()),
            Backend::Postgres => scratch_postgres(&postgres_url()?).await,
        };
        let mut settings = test_settings(url);
        tweak(&mut settings);
        let mut app = TestApp::start(settings).await;
        app._dir = Some(dir);
        Some(app)
    }

    /// Starts a shop with exactly these settings; it stops when the `TestApp` is dropped.
    pub async fn start(settings: Settings) -> TestApp {
        let app = Application::build(settings).await.expect("app starts");
        let base = format!("http://{}", app.local_addr());
        let metrics = app.metrics_addr().map(|addr| format!("http://{addr}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let mut app = TestApp::at(base);
        app.stop = Some(stop);
        app.metrics = metrics;
        app
    }

    /// A client of a shop running elsewhere.
    pub fn at(base: String) -> TestApp {
        TestApp {
            base,
            metrics: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _dir: None,
            stop: None,
        }
    }

    /// A token for a new user called `name` with `role` (`customer` or `admin`).
    pub async fn token(&self, name: &str, role: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/dev/token",
                None,
                Some(json!({"name": name, "email": format!("{name}@example.com"), "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.call_with(method, path, token, body, &[]).await;
        (status, body)
    }

    /// Sends a request; answers status, headers and the JSON body (Null if none).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status.as_u16() < 500, "{status} from {path}: {text}");
        (status, headers, body)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Creates a product as `admin` with `quantity` units; returns its id.
    pub async fn product(&self, admin: &str, sku: &str, price_minor: i64, quantity: i64) -> String {
        let (status, body) = self
            .post(
                "/api/products",
                Some(admin),
                json!({"sku": sku, "name": format!("Product {sku}"), "description": "test",
                       "price_minor": price_minor, "currency": "INR", "quantity": quantity}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn add_to_cart(&self, token: &str, product: &str, quantity: i64) {
        let (status, body) = self
            .post(
                "/api/cart/items",
                Some(token),
                json!({"product_id": product, "quantity": quantity}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn stock_of(&self, product: &str) -> (i64, i64) {
        let (_, p) = self.get(&format!("/api/products/{product}"), None).await;
        (
            p["on_hand"].as_i64().unwrap(),
            p["reserved"].as_i64().unwrap(),
        )
    }

    /// Waits until the product has no units reserved (every saga touching it has settled).
    pub async fn settled(&self, product: &str) -> (i64, i64) {
        for _ in 0..300 {
            let (on_hand, reserved) = self.stock_of(product).await;
            if reserved == 0 {
                return (on_hand, reserved);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("product {product} still has reservations");
    }

    /// Polls `path` until `done` holds for its body.
    pub async fn eventually(
        &self,
        path: &str,
        token: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..300 {
            let (status, body) = self.get(path, Some(token)).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} never reached the expected state");
    }
}

/// Defines a test that runs once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                if let Some(app) = TestApp::spawn(Backend::Sqlite).await {
                    $body(app).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(app) = TestApp::spawn(Backend::Postgres).await {
                    $body(app).await;
                }
            }
        }
    };
}

/// The browser's side of journeys: beacons, and waiting for them to be stored.
impl TestApp {
    /// Sends one beacon as the browser holding `token` in its session cookie would.
    pub async fn beacon(&self, token: &str, beacon: Value) -> StatusCode {
        self.client
            .post(format!("{}/track", self.base))
            .header("cookie", format!("ekart_session={token}"))
            .header("origin", &self.base)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(beacon.to_string())
            .send()
            .await
            .expect("beacon sent")
            .status()
    }

    /// The session id inside a dev token.
    pub async fn session_of(&self, token: &str) -> String {
        let (status, list) = self.get("/api/journeys", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["items"][0]["id"].as_str().unwrap().to_string()
    }

    /// Waits until the session's journey has `steps` steps; answers the journey.
    pub async fn journey_with(&self, token: &str, session: &str, steps: usize) -> Value {
        for _ in 0..200 {
            let (status, journey) = self
                .get(&format!("/api/journeys/{session}"), Some(token))
                .await;
            assert_eq!(status, StatusCode::OK, "{journey}");
            if journey["session"]["steps"].as_i64().unwrap() as usize >= steps {
                return journey;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the journey of {session} never reached {steps} steps");
    }
}
