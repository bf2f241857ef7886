//! Live configuration: the real binary follows its configuration file (and SIGHUP) for the
//! keys that reload live, refuses a broken edit whole, and names a key that needs a restart.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::process::{free_port, Shop};

/// Writes the shop's configuration file with these rate limits (per client, per second).
fn limits(file: &Path, per_second: u32, burst: u32) {
    let text = format!("[limits]\nenabled = true\nper_second = {per_second}\nburst = {burst}\n");
    std::fs::write(file, text).unwrap();
}

/// How many of 30 quick requests from one client pass the limit.
async fn passing(base: &str) -> usize {
    let http = reqwest::Client::new();
    let mut passed = 0;
    for _ in 0..30 {
        let res = http
            .get(format!("{base}/api/products"))
            .send()
            .await
            .unwrap();
        match res.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    passed
}

/// `ekart_config_reloads_total` for `trigger` and `outcome`.
async fn reloads(shop: &Shop, trigger: &str, outcome: &str) -> u64 {
    let text = shop.metrics().await.unwrap();
    let (trigger, outcome) = (
        format!("trigger=\"{trigger}\""),
        format!("outcome=\"{outcome}\""),
    );
    text.lines()
        .filter(|line| line.starts_with("ekart_config_reloads_total{"))
        .filter(|line| line.contains(&trigger) && line.contains(&outcome))
        .find_map(|line| line.rsplit_once(' '))
        .map_or(0, |(_, n)| n.trim().parse().unwrap())
}

/// Long enough for the file to be noticed (it is looked at twice a second) and applied.
const NOTICED: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_follow_the_file_and_a_broken_edit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ekart.toml");
    limits(&file, 100, 40);
    let database = format!("sqlite://{}/", dir.path().join("data").display());
    let shop = Shop::start_with_config(
        free_port(),
        &file,
        &[],
        &[
            ("EKART_LIMITS__ENABLED", "true".into()),
            ("EKART_DATABASE__URL", database),
            (
                "EKART_AUTH__SESSION_SECRET",
                "a-reload-test-secret-that-is-long-enough".into(),
            ),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(passing(&shop.base).await, 30, "40 at once, 100 a second");

    // Lowered in the file: the new limit holds within a second.
    limits(&file, 1, 3);
    tokio::time::sleep(NOTICED).await;
    let low = passing(&shop.base).await;
    assert!(low <= 5, "{low} passed under a burst of 3");

    // A broken edit (one that does not parse, one that does not validate) is refused whole:
    // the low limit stays, not the built-in defaults.
    for broken in [
        "[limits\nburst = ",
        "[limits]\nenabled = true\nper_second = 0\nburst = 90\n",
    ] {
        std::fs::write(&file, broken).unwrap();
        tokio::time::sleep(NOTICED).await;
        let still = passing(&shop.base).await;
        assert!(still <= 2, "{still} passed after {broken:?}");
    }
    assert!(reloads(&shop, "file", "refused").await >= 2);

    // Raised again: every request passes within a second.
    limits(&file, 100, 40);
    tokio::time::sleep(NOTICED).await;
    assert_eq!(passing(&shop.base).await, 30);
    assert!(reloads(&shop, "file", "applied").await >= 2);

    // A key that needs a restart is named, not applied: the shop still answers where it was.
    std::fs::write(
        &file,
        "[server]\nbody_limit_bytes = 2048\n[limits]\nenabled = true\nper_second = 100\nburst = 40\n",
    )
    .unwrap();
    tokio::time::sleep(NOTICED).await;
    assert!(reloads(&shop, "file", "restart-needed").await >= 1);
    assert_eq!(passing(&shop.base).await, 30);

    // SIGHUP reads the file again, changed or not.
    let before = reloads(&shop, "signal", "restart-needed").await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &shop.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads(&shop, "signal", "restart-needed").await, before + 1);

    // Admins see what is in force (secrets redacted), what reloads live, and when it did.
    let app = crate::support::TestApp::at(shop.base.clone());
    let admin = app.token("root", "admin").await;
    let (status, config) = app.get("/admin/config", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    let settings = &config["settings"];
    assert_eq!(settings["limits"]["burst"], 40);
    assert_eq!(
        settings["server"]["body_limit_bytes"], 65536,
        "not applied: needs a restart"
    );
    assert_eq!(settings["auth"]["session_secret"], "<redacted>");
    assert!(config["reloaded_at"].is_string(), "{config}");
    assert!(config["live"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("limits.burst")));
    let shopper = app.token("asha", "customer").await;
    let (status, _) = app.get("/admin/config", Some(&shopper)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/admin/config", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The idle limit too: once it is a second, a session left unused for longer has ended.
    let sleeper = app.token("sleeper", "customer").await;
    std::fs::write(
        &file,
        "[auth]\nsession_idle_secs = 1\n[limits]\nenabled = true\nper_second = 100\nburst = 40\n",
    )
    .unwrap();
    tokio::time::sleep(NOTICED + Duration::from_millis(1500)).await;
    let (status, _) = app.get("/api/cart", Some(&sleeper)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let fresh = app.token("root-again", "admin").await;
    let (_, config) = app.get("/admin/config", Some(&fresh)).await;
    assert_eq!(config["settings"]["auth"]["session_idle_secs"], 1);
}

/// Writes a gateway process's configuration file: its remote calls' settings, the health checks
/// rare enough not to count, and `extra` lines.
fn remote_calls(file: &Path, timeout_ms: u64, retries: u32, extra: &str) {
    let text = format!(
        "[gateway]\ntimeout_ms = {timeout_ms}\nretries = {retries}\nhealth_interval_ms = 600000\n{extra}"
    );
    std::fs::write(file, text).unwrap();
}

/// The gateway's remote-call settings follow the file too. The other modules' one "instance"
/// takes connections and never answers, so each call shows the settings in force: how long it
/// was held (`gateway.timeout_ms`), how many attempts reached the instance
/// (`gateway.retries`), and when the breaker opened (`gateway.breaker.*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_call_settings_follow_the_file() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(brokers) = crate::support::kafka_brokers() else {
        return;
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ekart.toml");
    remote_calls(&file, 1500, 0, "");
    let port = free_port();
    let database = format!("sqlite://{}/", dir.path().join("data").display());
    let mut env = crate::split::split_env(
        &database,
        &brokers,
        1,
        crate::split::Layout {
            stock_and_payment: &[silent_port],
            order: &[silent_port],
            gateway: &[port],
        },
    );
    // The file's, not the environment's (which would win over the file).
    env.retain(|(key, _)| !key.starts_with("EKART_GATEWAY__"));
    let shop =
        Shop::start_with_config(port, &file, &["--modules", "gateway,frontend,user"], &env).await;
    // The health checks at start have reached the instance and given up.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let http = reqwest::Client::new();
    let call = || async {
        let before = accepted.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        let res = http
            .get(format!("{}/api/products", shop.base))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap();
        let attempts = accepted.load(Ordering::SeqCst) - before;
        (status, body, started.elapsed(), attempts)
    };

    let (status, body, took, attempts) = call().await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1500 ms"),
        "{body}"
    );
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert_eq!(attempts, 1);

    // A shorter timeout, and two retries: three attempts of 200 ms each.
    remote_calls(&file, 200, 2, "");
    tokio::time::sleep(NOTICED).await;
    let (status, body, took, attempts) = call().await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("200 ms"),
        "{body}"
    );
    assert!(took < Duration::from_millis(1400), "{took:?}");
    assert_eq!(attempts, 3);

    // A breaker that opens after two failed calls of two (the built-in one waits for five):
    // the third call is refused at once, without reaching the instance, and says for how long.
    remote_calls(
        &file,
        200,
        0,
        "[gateway.breaker]\nfailure_rate = 0.5\nwindow = 2\nminimum_calls = 2\nopen_ms = 9000\n",
    );
    tokio::time::sleep(NOTICED).await;
    for _ in 0..2 {
        assert_eq!(call().await.0, StatusCode::GATEWAY_TIMEOUT);
    }
    let (status, body, _, attempts) = call().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "/problems/module-unavailable", "{body}");
    assert_eq!(body["retry_after"], 9, "{body}");
    assert_eq!(attempts, 0);

    // A breaker that cannot be built is refused whole: the timeout beside it stays 200 ms.
    remote_calls(&file, 900, 0, "[gateway.breaker]\nwindow = 0\n");
    tokio::time::sleep(NOTICED).await;
    assert!(reloads(&shop, "file", "refused").await >= 1);
    let app = crate::support::TestApp::at(shop.base.clone());
    let admin = app.token("root", "admin").await;
    let (_, config) = app.get("/admin/config", Some(&admin)).await;
    assert_eq!(config["settings"]["gateway"]["timeout_ms"], 200, "{config}");
    assert_eq!(config["settings"]["gateway"]["breaker"]["window"], 2);

    // Health checks every 300 ms instead of every ten minutes: the instance hears from the
    // gateway again within seconds, not when the ten minutes are up.
    let before = accepted.load(Ordering::SeqCst);
    std::fs::write(
        &file,
        "[gateway]\ntimeout_ms = 200\nretries = 0\nhealth_interval_ms = 300\n",
    )
    .unwrap();
    tokio::time::sleep(NOTICED + Duration::from_millis(2000)).await;
    let checks = accepted.load(Ordering::SeqCst) - before;
    assert!(
        checks >= 2,
        "{checks} health checks after the interval was lowered"
    );
}

/// A feature flag: `features.checkout = false` in the file pauses checkout within a second
/// (503 `checkout-paused`, nothing placed, the cart kept), and `true` resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_pauses_and_resumes_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ekart.toml");
    let checkout =
        |on: bool| std::fs::write(&file, format!("[features]\ncheckout = {on}\n")).unwrap();
    checkout(true);
    let database = format!("sqlite://{}/", dir.path().join("data").display());
    let shop = Shop::start_with_config(
        free_port(),
        &file,
        &[],
        &[("EKART_DATABASE__URL", database)],
    )
    .await;
    let app = crate::support::TestApp::at(shop.base.clone());
    let me = app.token("asha", "customer").await;
    let (_, catalog) = app.get("/api/products?per_page=1", None).await;
    let product = catalog["items"][0]["id"].as_str().unwrap().to_string();
    app.add_to_cart(&me, &product, 1).await;
    let (_, before) = app.get("/api/cart", Some(&me)).await;

    checkout(false);
    tokio::time::sleep(NOTICED).await;
    let cash = serde_json::json!({"payment_mode": "CASH"});
    // (Sent by hand: the test client takes any 5xx for a bug.)
    let res = reqwest::Client::new()
        .post(format!("{}/api/checkout", shop.base))
        .bearer_auth(&me)
        .json(&cash)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/checkout-paused", "{problem}");
    // Nothing placed: the same cart, its line still in it.
    let (_, cart) = app.get("/api/cart", Some(&me)).await;
    assert_eq!(cart["id"], before["id"], "{cart}");
    assert_eq!(cart["item_count"], 1, "{cart}");

    checkout(true);
    tokio::time::sleep(NOTICED).await;
    let (status, order) = app.post("/api/checkout", Some(&me), cash).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["id"], before["id"], "{order}");
}
