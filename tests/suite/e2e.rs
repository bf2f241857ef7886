//! End-to-end: the storefront in a real headless browser (Debian's Chromium, driven by
//! playwright-core from `e2e/`). This test starts a fresh shop from the real binary with the
//! demo catalog, then runs `node --test e2e/` against it.
//!
//! Needs `E2E_CHROMIUM` (the browser's path), Node.js, `npm ci --prefix e2e` and `pdftotext`;
//! `.ci/run` provides them all. Outside CI a missing piece skips the test with a note; under
//! `CI=true` it fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::free_port;
use crate::support::required_env;

/// A running `ekart` with its own data directory; killed when dropped.
struct Shop {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary with the demo catalog and `auth` settings (`EKART_AUTH__*`, given
/// the shop's own address), and waits until it listens.
fn start_shop(auth: impl FnOnce(&str) -> Vec<(&'static str, String)>) -> Shop {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_ekart"))
        .args(["--config", "/nonexistent/ekart.toml", "serve"])
        .env("EKART_SERVER__PORT", port.to_string())
        .env(
            "EKART_DATABASE__URL",
            format!("sqlite://{}/", data.path().display()),
        )
        .envs(auth(&base))
        .env("EKART_CATALOG__SEED_DEMO", "true")
        .env("EKART_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("ekart starts");
    let shop = Shop {
        child,
        base,
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ekart did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    shop
}

/// Why the E2E run cannot happen here, if it cannot.
fn missing_prerequisite(root: &Path) -> Option<String> {
    match std::env::var("E2E_CHROMIUM") {
        Ok(path) if Path::new(&path).exists() => {}
        Ok(path) => return Some(format!("E2E_CHROMIUM={path} does not exist")),
        Err(_) => return Some("E2E_CHROMIUM is not set".into()),
    }
    if !root.join("e2e/node_modules/playwright-core").exists() {
        return Some("e2e/node_modules is missing: run `npm ci --prefix e2e`".into());
    }
    for tool in ["node", "pdftotext"] {
        let found = Command::new(tool)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

#[test]
fn storefront_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(why) = missing_prerequisite(root) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the browser tests cannot run: {why}");
        }
        crate::support::skipped(&why);
        return;
    }
    let shop = start_shop(|_| vec![("EKART_AUTH__MODE", "dev".into())]);

    // A second shop signing in through the OIDC provider, when there is one.
    let provider = required_env("TEST_OIDC_ISSUER")
        .and_then(|issuer| Some((issuer, required_env("TEST_OIDC_CLIENT_SECRET")?)));
    let oidc_shop = provider.map(|(issuer, secret)| {
        start_shop(|base| {
            vec![
                ("EKART_AUTH__MODE", "oidc".into()),
                ("EKART_AUTH__OIDC__ISSUER", issuer),
                ("EKART_AUTH__OIDC__CLIENT_ID", "ekart".into()),
                ("EKART_AUTH__OIDC__CLIENT_SECRET", secret),
                (
                    "EKART_AUTH__OIDC__REDIRECT_URL",
                    format!("{base}/auth/callback"),
                ),
                (
                    "EKART_AUTH__OIDC__SCOPES",
                    r#"["openid","profile","email","groups"]"#.into(),
                ),
            ]
        })
    });

    let out = root.join("e2e/out");
    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1", "e2e/"])
        .current_dir(root)
        .env("E2E_BASE_URL", &shop.base)
        .env("E2E_OUT", &out);
    if let Some(oidc_shop) = &oidc_shop {
        node.env("E2E_OIDC_BASE_URL", &oidc_shop.base);
    }
    let status = node.status().expect("node runs");
    assert!(status.success(), "the browser tests failed (see above)");
    eprintln!("screenshots: {}", out.join("screens").display());
}
