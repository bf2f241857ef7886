//! The command line as an operator meets it.

use std::process::Command;

fn ekart(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ekart"));
    cmd.args(args).current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_redacted() {
    let (ok, stdout, stderr) = ekart(
        &["config", "check"],
        &[
            ("EKART_AUTH__MODE", "dev"),
            ("EKART_SERVER__PORT", "9123"),
            (
                "EKART_DATABASE__URL",
                "postgres://shop:hunter2hunter2@db:5432/ekart",
            ),
            (
                "EKART_AUTH__SESSION_SECRET",
                "a-dev-secret-of-at-least-thirty-two-chars",
            ),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("port = 9123"), "{stdout}");
    assert!(
        stdout.contains("postgres://shop:<redacted>@db:5432/ekart"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!stdout.contains("thirty-two"), "{stdout}");
    // Which keys reload live, and which need a restart.
    for live in [
        "per_second = 50  # live",
        "timeout_ms = 5000  # live",
        "checkout = true  # live",
    ] {
        assert!(stdout.contains(live), "{live} in {stdout}");
    }
    assert!(stdout.contains("port = 9123\n"), "{stdout}");
}

#[test]
fn config_check_refuses_an_invalid_configuration_with_a_clear_message() {
    let (ok, _, stderr) = ekart(
        &["config", "check"],
        &[
            ("EKART_AUTH__MODE", "dev"),
            ("EKART_SERVER__PORT", "not-a-port"),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("port"), "{stderr}");

    let (ok, _, stderr) = ekart(
        &["config", "check"],
        &[
            ("EKART_AUTH__MODE", "dev"),
            ("EKART_DATABASE__URL", "mysql://x"),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("database.url"), "{stderr}");

    // Without the shipped ekart.toml, dev sign-in is not on by default.
    let (ok, _, stderr) = ekart(&["config", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("auth.mode"), "{stderr}");
}

#[test]
fn migrate_creates_every_module_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/", dir.path().display());
    let (ok, _, stderr) = ekart(
        &["migrate"],
        &[("EKART_AUTH__MODE", "dev"), ("EKART_DATABASE__URL", &url)],
    );
    assert!(ok, "{stderr}");
    for module in ["stock", "orders", "payment", "users"] {
        assert!(
            dir.path().join(format!("{module}.db")).exists(),
            "{module}.db"
        );
    }
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ekart"))
        .args(["--config", "/nonexistent/ekart.toml", "serve"])
        .env("EKART_AUTH__MODE", "dev")
        .env("EKART_SERVER__PORT", port.to_string())
        .env(
            "EKART_DATABASE__URL",
            format!("sqlite://{}/", dir.path().display()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready, "the shop listens");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        out.contains(&format!("http://127.0.0.1:{port}/")),
        "prints the URL: {out}"
    );
}

#[test]
fn dev_sign_in_refuses_the_network_unless_forced() {
    let env = [
        ("EKART_AUTH__MODE", "dev"),
        ("EKART_SERVER__HOST", "0.0.0.0"),
        ("EKART_SERVER__PORT", "0"),
    ];
    let (ok, _, stderr) = ekart(&["serve"], &env);
    assert!(!ok, "dev sign-in must not start on 0.0.0.0");
    assert!(stderr.contains("--insecure-dev-sign-in"), "{stderr}");
    let (ok, _, stderr) = ekart(&["serve", "--insecure-dev-sign-in", "--help"], &env);
    assert!(ok, "the flag exists: {stderr}");
}
