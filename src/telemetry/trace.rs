//! W3C trace context (`traceparent`), carried on every HTTP call between processes and in
//! every event (CloudEvents' distributed-tracing extension), so one checkout is one trace
//! across the gateway, the modules and the bus.
//!
//! The context of the work in hand lives in a task-local: the gateway's middleware sets it
//! for each request (continuing the caller's trace or starting one), the consumer sets it for
//! each event it handles, and [`current`] reads it wherever an outgoing call or a new event
//! needs it.

use std::fmt;
use std::future::Future;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use tracing::Instrument;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The share of new traces sampled, as `f64` bits (`[telemetry] sample_ratio`).
static SAMPLE_RATIO: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0x3FF0_0000_0000_0000);

/// Sets the share of new traces sampled (0.0 to 1.0).
pub fn set_sample_ratio(ratio: f64) {
    SAMPLE_RATIO.store(ratio.to_bits(), std::sync::atomic::Ordering::Relaxed);
}

fn sample_ratio() -> f64 {
    f64::from_bits(SAMPLE_RATIO.load(std::sync::atomic::Ordering::Relaxed))
}

/// One span of a trace: `00-{trace id}-{span id}-{flags}` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// The first span of a new trace, sampled at `[telemetry] sample_ratio`.
    pub fn root() -> TraceContext {
        let mut trace_id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut trace_id);
        let ratio = sample_ratio();
        TraceContext {
            trace_id,
            span_id: new_span_id(),
            sampled: ratio >= 1.0 || rand::random::<f64>() < ratio,
        }
    }

    /// A new span in the same trace, e.g. the call this span makes to another process.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Reads a `traceparent` value; `None` for anything malformed (then a new trace starts).
    pub fn parse(value: &str) -> Option<TraceContext> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || flags.len() != 2 {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = hex(span)?.try_into().ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        // All-zero ids are invalid by the spec.
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        Hex(&self.trace_id).to_string()
    }
}

impl fmt::Display for TraceContext {
    /// Every event a checkout writes carries one of these, so it is built in one buffer rather
    /// than through the formatter a byte at a time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.span_id, &mut out[36..52]);
        hex_into(&[u8::from(self.sampled)], &mut out[53..55]);
        f.write_str(std::str::from_utf8(&out).expect("hex digits are ASCII"))
    }
}

/// A trace id as lowercase hex.
struct Hex<'a>(&'a [u8; 16]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 32];
        hex_into(self.0, &mut out);
        f.write_str(std::str::from_utf8(&out).expect("hex digits are ASCII"))
    }
}

/// Writes `bytes` as lowercase hex into `out`, two digits a byte.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::thread_rng().fill_bytes(&mut id);
    }
    id
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The context of the work in hand, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// Runs `work` as part of `context` (or of no trace).
pub async fn scope<F: Future>(context: Option<TraceContext>, work: F) -> F::Output {
    match context {
        Some(context) => CURRENT.scope(context, work).await,
        None => work.await,
    }
}

/// The `traceparent` value for an outgoing call or a new event: a child of the current span,
/// or the root of a new trace.
pub fn outgoing() -> TraceContext {
    current().map_or_else(TraceContext::root, |c| c.child())
}

/// The route a request matched (`/api/orders/{id}`), handed out with its answer.
#[derive(Debug, Clone)]
pub struct Route(pub String);

/// Middleware (a route layer, so the route is known): puts the matched route in the answer's
/// extensions for [`propagate`] to name the request's span by.
pub async fn record_route(request: Request, next: Next) -> Response {
    if !super::spans::enabled() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// Middleware: continues the caller's trace (or starts one) for this request, logs under its
/// trace id, and answers the request's own span in `traceresponse` (Trace Context level 2),
/// unless a module in another process already answered with its own.
pub async fn propagate(request: Request, next: Next) -> Response {
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let context = parent.map_or_else(TraceContext::root, |parent| parent.child());
    let span = tracing::info_span!("request", trace_id = %Hex(&context.trace_id));
    let method = request.method().clone();
    let path = request.uri().path();
    let mut recorded =
        super::spans::Span::start(super::spans::Kind::Server, context, parent, || {
            format!("{method} {path}")
        });
    if recorded.is_recording() {
        recorded.tag("http.method", method.to_string());
        recorded.tag("http.path", path.to_string());
    }
    let mut response = CURRENT
        .scope(context, next.run(request))
        .instrument(span)
        .await;
    if recorded.is_recording() {
        recorded.tag("http.status_code", i64::from(response.status().as_u16()));
        // Named for its route, not its path: `GET /api/orders/{id}`, one name for all orders.
        if let Some(Route(route)) = response.extensions().get::<Route>() {
            recorded.tag("http.route", route.clone());
            recorded.rename(format!("{method} {route}"));
        }
    }
    if !response.headers().contains_key("traceresponse") {
        if let Ok(value) = HeaderValue::from_str(&context.to_string()) {
            response.headers_mut().insert("traceresponse", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    #[test]
    fn a_traceparent_round_trips_and_children_keep_the_trace() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(text).expect("valid");
        assert_eq!(context.to_string(), text);
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.span_id, context.span_id);
    }

    #[test]
    fn malformed_values_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }
}
