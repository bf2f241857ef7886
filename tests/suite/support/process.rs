//! The real `ekart` binary as a child process, for tests that kill and restart it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a test sends to read a process's `/metrics`.
pub const METRICS_TOKEN: &str = "a-test-scraper";

/// A running `ekart`; killed (SIGKILL) when dropped.
pub struct Shop {
    child: Child,
    pub base: String,
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Shop {
    /// Starts `ekart serve ARGS` on `port` with built-in defaults plus `env` (`EKART_*`), and
    /// waits until `/readyz` answers 200.
    pub async fn start(port: u16, args: &[&str], env: &[(&str, String)]) -> Shop {
        let shop = Shop::spawn(port, args, env);
        shop.wait_ready().await;
        shop
    }

    /// [`Shop::start`] reading the configuration file `config`.
    pub async fn start_with_config(
        port: u16,
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Shop {
        let shop = Shop::spawn_with_config(port, config, args, env);
        shop.wait_ready().await;
        shop
    }

    /// Starts `ekart serve ARGS` as [`Shop::start`] does, without waiting for it.
    pub fn spawn(port: u16, args: &[&str], env: &[(&str, String)]) -> Shop {
        Shop::spawn_with_config(
            port,
            std::path::Path::new("/nonexistent/ekart.toml"),
            args,
            env,
        )
    }

    /// [`Shop::spawn`] reading the configuration file `config`.
    pub fn spawn_with_config(
        port: u16,
        config: &std::path::Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Shop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ekart"));
        command
            .arg("--config")
            .arg(config)
            .arg("serve")
            .args(args)
            .env("EKART_SERVER__PORT", port.to_string())
            .env("EKART_AUTH__MODE", "dev")
            .env("EKART_LIMITS__ENABLED", "false")
            .env("EKART_LOG__LEVEL", "error")
            .env("EKART_SERVER__METRICS_TOKEN", METRICS_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        Shop {
            child: command.spawn().expect("ekart starts"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The text of the process's `/metrics` (read with [`METRICS_TOKEN`]).
    pub async fn metrics(&self) -> reqwest::Result<String> {
        metrics_at(&self.base).await
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(res) = http.get(format!("{}/readyz", self.base)).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ekart on {} did not become ready", self.base);
    }

    /// SIGTERM, as `systemctl stop` sends: requests in flight finish, then the shop exits.
    #[allow(dead_code)] // crash.rs only ever kills
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("ekart exits");
        assert!(status.success(), "ekart stopped with {status}");
    }

    /// SIGKILL: no graceful anything, as when a machine dies.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below Linux's ephemeral range (32768-60999): a port asked of the system (`:0`) was
    // free only at that moment, and a test binding `:0` meanwhile could be handed it before
    // the shop it was meant for starts ("Address already in use"). Here no `:0` bind lands,
    // and each call moves on, so two tests of this run never get the same port.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let offset = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The text of `/metrics` of the shop process at `base` (read with [`METRICS_TOKEN`]).
pub async fn metrics_at(base: &str) -> reqwest::Result<String> {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await?
        .text()
        .await
}
