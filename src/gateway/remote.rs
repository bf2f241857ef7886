//! Calling a module that runs in another process.
//!
//! Each remote module gets a [`Remote`]: its instances (configured URLs; a host name that
//! resolves to several addresses counts once per address), an active health check of every
//! instance's `/healthz`, round-robin over the healthy ones, a timeout per attempt, bounded
//! retries on another instance for calls that may safely be repeated, and a circuit breaker
//! (tower-resilience, modelled on Resilience4j) that, once the module keeps failing, answers
//! at once with a 503 problem naming it instead of making callers wait on a dead process.
//!
//! The gateway's proxy routes and the modules' internal calls (the order module asking stock
//! about a product) both go through [`Remote::call`], so both are covered by the breaker.
//!
//! The timeout, the retries and the health checks' interval are read at each use, and the
//! breaker can be replaced, so a reload of the settings (`reload.rs`) changes them in a
//! running process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures::future::BoxFuture;
use tower::{Service, ServiceExt};
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer, CircuitState, DefaultClassifier,
};

use crate::config::{BreakerSettings, GatewaySettings, Knob, Module};
use crate::error::ApiError;
use crate::telemetry::trace;

/// One request to a remote module, buffered so that it can be sent again.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub method: Method,
    /// Path and query, e.g. `/api/products?q=tea`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Outbound {
    pub fn get(path: impl Into<String>) -> Outbound {
        Outbound {
            method: Method::GET,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Whether sending it twice does no more than sending it once: safe methods, PUT and
    /// DELETE by their definition, and any request carrying an idempotency key.
    fn repeatable(&self) -> bool {
        matches!(
            self.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        ) || self.headers.contains_key("idempotency-key")
    }
}

/// A remote module's answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// Why a call got no usable answer. Every one counts against the breaker.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no instance of the module is healthy")]
    NoInstance,
    #[error("{0}")]
    Unreachable(String),
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// The module answered that it cannot serve now (502, 503, 504).
    #[error("it answered {}", .0.status)]
    Unavailable(Answer),
}

/// One address of one instance, and whether its last health check passed.
struct Endpoint {
    /// `http://ADDRESS:PORT`, without a trailing slash.
    base: String,
    /// The configured host, sent as `Host` (virtual hosts and Kubernetes ingresses need it).
    host: HeaderValue,
    healthy: AtomicBool,
}

/// The instances of one module, and how to reach them.
struct Pool {
    module: Module,
    urls: Vec<reqwest::Url>,
    endpoints: RwLock<Arc<Vec<Endpoint>>>,
    next: AtomicUsize,
    client: reqwest::Client,
    calls: CallKnobs,
}

/// The remote-call settings a reload may change, shared by every remote module of a process.
#[derive(Debug, Clone)]
pub struct CallKnobs {
    /// `gateway.timeout_ms`
    pub timeout_ms: Knob,
    /// `gateway.retries`
    pub retries: Knob,
    /// `gateway.health_interval_ms`
    pub health_interval_ms: Knob,
}

impl CallKnobs {
    pub fn of(settings: &GatewaySettings) -> CallKnobs {
        CallKnobs {
            timeout_ms: Knob::new(settings.timeout_ms),
            retries: Knob::new(settings.retries.into()),
            health_interval_ms: Knob::new(settings.health_interval_ms),
        }
    }

    /// Applies `settings` (already validated).
    pub fn set(&self, settings: &GatewaySettings) {
        self.timeout_ms.set(settings.timeout_ms);
        self.retries.set(settings.retries.into());
        self.health_interval_ms.set(settings.health_interval_ms);
    }
}

/// The breaker's inner service: one call, with its retries over instances.
#[derive(Clone)]
struct Forward(Arc<Pool>);

impl Service<Outbound> for Forward {
    type Response = Answer;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<Answer, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Outbound) -> Self::Future {
        let pool = self.0.clone();
        Box::pin(async move { pool.call(request).await })
    }
}

/// A module in another process, as this process calls it.
pub struct Remote {
    pool: Arc<Pool>,
    breaker: RwLock<Breaker>,
    body_limit: usize,
}

/// A circuit breaker around a module's pool, and how long it stays open.
#[derive(Clone)]
pub struct Breaker {
    service: CircuitBreaker<Forward, DefaultClassifier>,
    open_for: Duration,
}

impl Remote {
    /// Remote calls to `module` at `urls` (validated `http://` URLs), with the timeout,
    /// retries and health-check interval `calls` holds. Starts its health checks.
    pub fn start(
        module: Module,
        urls: &[String],
        settings: &GatewaySettings,
        calls: &CallKnobs,
        body_limit: usize,
    ) -> anyhow::Result<Arc<Remote>> {
        let urls = urls
            .iter()
            .map(|u| reqwest::Url::parse(u.trim_end_matches('/')))
            .collect::<Result<Vec<_>, _>>()?;
        let endpoints = urls
            .iter()
            .map(|url| Endpoint {
                base: url.as_str().trim_end_matches('/').to_string(),
                host: host_header(url),
                healthy: AtomicBool::new(true),
            })
            .collect();
        let pool = Arc::new(Pool {
            module,
            urls,
            endpoints: RwLock::new(Arc::new(endpoints)),
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                // Well under the modules' own idle limit (`server.header_timeout_secs`, 10 s
                // by default), so a pooled connection is not reused just as its server closes it.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()?,
            calls: calls.clone(),
        });
        let breaker = Breaker::new(&pool, &settings.breaker)?;
        tokio::spawn(check_health(Arc::downgrade(&pool)));
        Ok(Arc::new(Remote {
            pool,
            breaker: RwLock::new(breaker),
            body_limit,
        }))
    }

    /// A new breaker for this module with `settings`, to put in force with
    /// [`Remote::set_breaker`] (apart, so a reload can build every module's first and apply
    /// them only if all could be built).
    pub fn breaker_with(&self, settings: &BreakerSettings) -> anyhow::Result<Breaker> {
        Breaker::new(&self.pool, settings)
    }

    /// Puts `breaker` in force. It starts closed, with no calls counted.
    pub fn set_breaker(&self, breaker: Breaker) {
        metrics::gauge!("ekart_breaker_state", "module" => self.pool.module.name())
            .set(CircuitState::Closed as u8 as f64);
        *self.breaker.write().unwrap_or_else(|e| e.into_inner()) = breaker;
    }

    fn breaker(&self) -> Breaker {
        self.breaker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn module(&self) -> Module {
        self.pool.module
    }

    pub fn breaker_state(&self) -> CircuitState {
        self.breaker().service.state_sync()
    }

    /// Sends `request` through the breaker. A 503 problem naming the module when the breaker
    /// is open or no instance answers; the module's own answer otherwise.
    pub async fn call(&self, request: Outbound) -> Result<Answer, ApiError> {
        let module = self.pool.module.name();
        let Breaker {
            service: mut breaker,
            open_for,
        } = self.breaker();
        let answer = match breaker.ready().await {
            Ok(breaker) => breaker.call(request).await,
            Err(e) => Err(e),
        };
        let outcome = match &answer {
            Ok(_) => "answered",
            Err(CircuitBreakerError::OpenCircuit) => "rejected by the open breaker",
            Err(CircuitBreakerError::Inner(CallError::Unavailable(_))) => "unavailable",
            Err(CircuitBreakerError::Inner(_)) => "failed",
        };
        metrics::counter!("ekart_remote_calls_total", "module" => module, "outcome" => outcome)
            .increment(1);
        match answer {
            Ok(answer) => Ok(answer),
            Err(CircuitBreakerError::OpenCircuit) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "module-unavailable",
                "Module unavailable",
                format!(
                    "the {module} module is failing, so calls to it are paused; \
                     try again in a few seconds"
                ),
            )
            .with("module", module)
            .with("retry_after", open_for.as_secs().max(1))),
            Err(CircuitBreakerError::Inner(CallError::Unavailable(answer))) => Ok(answer),
            Err(CircuitBreakerError::Inner(CallError::Timeout(ms))) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "module-timeout",
                "Module did not answer",
                format!("the {module} module did not answer within {ms} ms"),
            )
            .with("module", module)),
            Err(CircuitBreakerError::Inner(err)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "module-unavailable",
                "Module unavailable",
                format!("the {module} module cannot be reached: {err}"),
            )
            .with("module", module)),
        }
    }

    /// Routes `paths` (the module's API, in axum's syntax) to the module.
    pub fn router(self: &Arc<Self>, paths: &[String]) -> Router {
        paths
            .iter()
            .fold(Router::new(), |router, path| router.route(path, any(proxy)))
            .with_state(self.clone())
    }
}

impl Breaker {
    fn new(pool: &Arc<Pool>, b: &BreakerSettings) -> anyhow::Result<Breaker> {
        let name = pool.module.name();
        let layer = CircuitBreakerLayer::builder()
            .name(name)
            .failure_rate_threshold(b.failure_rate)
            .sliding_window_size(b.window)
            .minimum_number_of_calls(b.minimum_calls)
            .wait_duration_in_open(Duration::from_millis(b.open_ms))
            .permitted_calls_in_half_open(1)
            .on_state_transition(move |from, to| {
                metrics::gauge!("ekart_breaker_state", "module" => name).set(to as u8 as f64);
                match to {
                    CircuitState::Open => {
                        tracing::warn!(module = name, ?from, "circuit breaker open: failing fast")
                    }
                    _ => tracing::info!(module = name, ?from, ?to, "circuit breaker state"),
                }
            })
            .build()?;
        Ok(Breaker {
            service: layer.layer_fn(Forward(pool.clone())),
            open_for: Duration::from_millis(b.open_ms),
        })
    }
}

/// Forwards the request as it came (headers, query, body) and answers what the module answers.
async fn proxy(State(remote): State<Arc<Remote>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The gateway's body limit applies to what it forwards too.
    let body = match axum::body::to_bytes(body, remote.body_limit).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Body too large",
                "the request body is larger than this shop accepts",
            )
            .into_response()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let outbound = Outbound {
        method: parts.method,
        path,
        headers,
        body,
    };
    match remote.call(outbound).await {
        Ok(mut answer) => {
            strip_hop_by_hop(&mut answer.headers);
            answer.headers.remove(header::CONTENT_LENGTH);
            answer.into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// Headers that describe one connection, not the message.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    for name in HOP {
        headers.remove(HeaderName::from_static(name));
    }
    headers.remove(header::HOST);
}

fn is_unavailable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn host_header(url: &reqwest::Url) -> HeaderValue {
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => String::new(),
    };
    HeaderValue::from_str(&host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

impl Pool {
    /// Sends to the next healthy instance; on a failure that allows it, tries another. A
    /// refused connection means the request never left, so that is retried whatever it was.
    async fn call(&self, request: Outbound) -> Result<Answer, CallError> {
        let attempts = 1 + self.calls.retries.get();
        let repeatable = request.repeatable();
        let timeout = self.timeout();
        let mut last = CallError::NoInstance;
        for attempt in 1..=attempts {
            let endpoints = self.endpoints.read().expect("endpoints").clone();
            let Some(endpoint) = self.pick(&endpoints) else {
                break;
            };
            let may_retry = match self.send(endpoint, &request, timeout).await {
                Ok(answer) if is_unavailable(answer.status) => {
                    last = CallError::Unavailable(answer);
                    repeatable
                }
                Ok(answer) => return Ok(answer),
                Err(err) => {
                    endpoint.healthy.store(false, Ordering::Relaxed);
                    last = if err.is_timeout() {
                        CallError::Timeout(timeout.as_millis())
                    } else {
                        CallError::Unreachable(error_chain(&err))
                    };
                    repeatable || err.is_connect()
                }
            };
            if !may_retry || attempt == attempts {
                break;
            }
        }
        Err(last)
    }

    /// Round-robin over the healthy endpoints; over all of them when none is (as Envoy's
    /// panic mode does): the last health check may be stale, say just after the module
    /// started, and a refused connection costs little.
    fn pick<'a>(&self, endpoints: &'a [Endpoint]) -> Option<&'a Endpoint> {
        let healthy: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| e.healthy.load(Ordering::Relaxed))
            .collect();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match healthy.is_empty() {
            false => Some(healthy[n % healthy.len()]),
            true if endpoints.is_empty() => None,
            true => Some(&endpoints[n % endpoints.len()]),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.calls.timeout_ms.get())
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        request: &Outbound,
        timeout: Duration,
    ) -> reqwest::Result<Answer> {
        let mut headers = request.headers.clone();
        headers.insert(header::HOST, endpoint.host.clone());
        let context = trace::outgoing();
        if let Ok(trace) = HeaderValue::from_str(&context.to_string()) {
            headers.insert("traceparent", trace);
        }
        let mut span = crate::telemetry::spans::Span::start(
            crate::telemetry::spans::Kind::Client,
            context,
            trace::current(),
            || format!("{} {}", request.method, request.path),
        );
        if span.is_recording() {
            span.tag("peer.service", self.module.name());
        }
        let response = self
            .client
            .request(
                request.method.clone(),
                format!("{}{}", endpoint.base, request.path),
            )
            .headers(headers)
            .body(request.body.clone())
            .timeout(timeout)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Resolves every configured URL and checks each address's `/healthz`.
    async fn check_all(&self) {
        let mut endpoints = Vec::new();
        for url in &self.urls {
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
                Ok(found) => found.collect(),
                Err(err) => {
                    tracing::warn!(module = self.module.name(), %url, error = %err,
                        "cannot resolve an instance");
                    continue;
                }
            };
            for address in addresses {
                let base = format!("{}://{address}", url.scheme());
                let healthy = self
                    .client
                    .get(format!("{base}/healthz"))
                    .header(header::HOST, host_header(url))
                    .timeout(self.timeout().min(Duration::from_secs(1)))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                endpoints.push(Endpoint {
                    base,
                    host: host_header(url),
                    healthy: AtomicBool::new(healthy),
                });
            }
        }
        let up = endpoints
            .iter()
            .filter(|e| e.healthy.load(Ordering::Relaxed))
            .count();
        metrics::gauge!("ekart_remote_healthy_instances", "module" => self.module.name())
            .set(up as f64);
        let before = self.endpoints.read().expect("endpoints").clone();
        let was_up = before
            .iter()
            .filter(|e| e.healthy.load(Ordering::Relaxed))
            .count();
        if up != was_up || endpoints.len() != before.len() {
            tracing::info!(
                module = self.module.name(),
                healthy = up,
                instances = endpoints.len(),
                "remote module instances checked"
            );
        }
        *self.endpoints.write().expect("endpoints") = Arc::new(endpoints);
    }
}

/// Checks the pool's instances every `gateway.health_interval_ms` (as it is at each check)
/// while anyone still uses it.
async fn check_health(pool: std::sync::Weak<Pool>) {
    loop {
        let Some(strong) = pool.upgrade() else { return };
        strong.check_all().await;
        let interval = strong.calls.health_interval_ms.clone();
        drop(strong);
        // Waits in steps of at most a second, so a shorter interval reloaded meanwhile takes
        // effect within a second rather than after the longer one has run out.
        let checked = tokio::time::Instant::now();
        loop {
            let due = checked + Duration::from_millis(interval.get());
            let now = tokio::time::Instant::now();
            if now >= due {
                break;
            }
            tokio::time::sleep((due - now).min(Duration::from_secs(1))).await;
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
