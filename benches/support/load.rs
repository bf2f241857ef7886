//! A closed-loop load driver shared by the benchmarks: workers repeat an operation through a
//! warm-up and then a measured window; latencies and failures of what finished inside the
//! window are kept.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Operations that finished inside the measured window.
#[derive(Default)]
pub struct Sample {
    pub seconds: f64,
    /// Successful operations' latencies, microseconds (sorted once [`Sample::sorted`] ran).
    pub latencies_us: Vec<u64>,
    /// Failed operations by kind, e.g. `checkout 202`.
    pub failures: BTreeMap<String, u64>,
}

impl Sample {
    pub fn sorted(mut self) -> Sample {
        self.latencies_us.sort_unstable();
        self
    }

    /// Adds another window's operations to this one (then [`Sample::sorted`] again).
    pub fn merge(&mut self, other: Sample) {
        self.seconds += other.seconds;
        self.latencies_us.extend(other.latencies_us);
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
    }

    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ok() as f64 / self.seconds
    }

    /// Nearest-rank percentile in milliseconds (after [`Sample::sorted`]).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

/// A failed request's kind, coarse enough to count.
pub fn transport(step: &str, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    format!("{step} {what}")
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `op` in a closed loop on `workers` tasks: `warmup`, then the measured window. An
/// operation counts if it finishes inside the window, so throughput is completions per
/// second of window; whatever is in flight at the end is awaited (the server drains before
/// the next phase) but not counted.
pub async fn drive<F, Fut>(workers: usize, warmup: Duration, window: Duration, op: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.spawn(async move {
            let mut sample = Sample::default();
            while Instant::now() < end {
                let began = Instant::now();
                let outcome = op(w).await;
                let done = Instant::now();
                if done < start || done >= end {
                    continue;
                }
                match outcome {
                    Ok(()) => sample.latencies_us.push((done - began).as_micros() as u64),
                    Err(kind) => *sample.failures.entry(kind).or_default() += 1,
                }
            }
            sample
        });
    }
    let mut total = Sample {
        seconds: window.as_secs_f64(),
        ..Sample::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let part = joined.expect("a load worker panicked");
        total.latencies_us.extend(part.latencies_us);
        for (kind, n) in part.failures {
            *total.failures.entry(kind).or_default() += n;
        }
    }
    total.sorted()
}

/// Sends a request and reads its JSON answer (Null if it has none).
pub async fn send_json(
    req: reqwest::RequestBuilder,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let res = req.send().await?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(serde_json::Value::Null)))
}

/// A dev-mode token for `name` with `role`, as an `Authorization` header value.
pub async fn token(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    role: &str,
) -> anyhow::Result<String> {
    let (status, body) = send_json(http.post(format!("{base}/auth/dev/token")).json(
        &serde_json::json!({
            "name": name,
            "email": format!("{name}@bench.example.com"),
            "role": role,
        }),
    ))
    .await?;
    match body["access_token"].as_str() {
        Some(t) if status == reqwest::StatusCode::OK => Ok(format!("Bearer {t}")),
        _ => anyhow::bail!("token for {name}: {status} {body}"),
    }
}

/// One checkout operation: add one unit (`add_body`) to the cart, then check out with CASH.
/// Done only when the checkout answers `201 Created`, i.e. the saga finished in the request.
pub async fn add_and_check_out(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    add_body: &str,
) -> Result<(), String> {
    use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
    let res = http
        .post(format!("{base}/api/cart/items"))
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .body(add_body.to_string())
        .send()
        .await
        .map_err(|e| transport("add", &e))?;
    let status = res.status();
    res.bytes().await.map_err(|e| transport("add", &e))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("add {}", status.as_u16()));
    }
    let res = http
        .post(format!("{base}/api/checkout"))
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"payment_mode":"CASH"}"#)
        .send()
        .await
        .map_err(|e| transport("checkout", &e))?;
    let status = res.status();
    res.bytes().await.map_err(|e| transport("checkout", &e))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(format!("checkout {}", status.as_u16()));
    }
    Ok(())
}
