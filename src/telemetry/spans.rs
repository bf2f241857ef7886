//! Spans exported to Zipkin (`[telemetry] zipkin_endpoint`), through OpenTelemetry's SDK and
//! its Zipkin exporter.
//!
//! The trace context the shop carries (`trace.rs`: a task-local, `traceparent` on every call
//! and in every event) stays the one source of ids: each span here is started with the very
//! trace and span ids that context names, and with its parent's, so what Zipkin shows is the
//! tree the `traceparent` values already describe, across processes and the bus.
//!
//! Spans leave the request path at once: ended spans go to the SDK's batch processor (a
//! bounded queue and a thread of its own), which exports them in batches; a slow or dead
//! collector costs exports, never a request. Without an endpoint nothing is installed and a
//! span costs one atomic load.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use super::trace::TraceContext;

/// The process's tracer, once an exporter is installed.
static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// What a span is, for Zipkin's `kind`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A request this process answers.
    Server,
    /// A call this process makes to another.
    Client,
    /// An event written for the bus.
    Producer,
    /// An event taken from the bus.
    Consumer,
    Internal,
}

/// A span being recorded; ends (and leaves for export) when dropped. Empty when tracing is
/// off or the trace is not sampled.
pub struct Span(Option<opentelemetry_sdk::trace::Span>);

impl Span {
    /// Starts a span with `context`'s ids, a child of `parent` (a span of this or another
    /// process) or the root of its trace, named by `name` (called only if it is recorded).
    pub fn start<N: Into<Cow<'static, str>>>(
        kind: Kind,
        context: TraceContext,
        parent: Option<TraceContext>,
        name: impl FnOnce() -> N,
    ) -> Span {
        let Some((_, tracer)) = TRACER.get() else {
            return Span(None);
        };
        if !context.sampled {
            return Span(None);
        }
        let parent = match parent {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let span = tracer
            .span_builder(name())
            .with_kind(match kind {
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
                Kind::Producer => SpanKind::Producer,
                Kind::Consumer => SpanKind::Consumer,
                Kind::Internal => SpanKind::Internal,
            })
            .with_trace_id(TraceId::from_bytes(context.trace_id))
            .with_span_id(SpanId::from_bytes(context.span_id))
            .start_with_context(tracer, &parent);
        Span(Some(span))
    }

    /// Whether this span is recorded (tracing on, trace sampled).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Names the span anew (a request's, once its route is known).
    pub fn rename(&mut self, name: String) {
        if let Some(span) = &mut self.0 {
            span.update_name(name);
        }
    }

    /// Links this span to `to`, a span of this or another trace that it also follows from
    /// (each event of a batch handled at once). Zipkin's model has no links; OpenTelemetry's
    /// exporters of other formats carry them.
    pub fn link(&mut self, to: TraceContext) {
        if let Some(span) = &mut self.0 {
            span.add_link(
                SpanContext::new(
                    TraceId::from_bytes(to.trace_id),
                    SpanId::from_bytes(to.span_id),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                ),
                vec![],
            );
        }
    }

    /// Sets a tag (build its value only when [`Span::is_recording`]).
    pub fn tag(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(KeyValue::new(key, value));
        }
    }
}

/// Whether spans are exported in this process.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Installs the Zipkin exporter for this process, once: spans named for `service`, batched
/// off the request path. A second call (tests that start several shops in one process) keeps
/// the first.
pub fn install(endpoint: &str, service: &str) -> anyhow::Result<()> {
    if TRACER.get().is_some() {
        return Ok(());
    }
    // Its HTTP client is reqwest's blocking one (the batch processor exports from a thread of
    // its own), which may not be built on an async worker: build it on a thread too.
    let exporter = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?;
                let exporter = opentelemetry_zipkin::ZipkinExporter::builder()
                    .with_collector_endpoint(endpoint)
                    .with_http_client(ZipkinV2 {
                        client,
                        service: service.to_string(),
                    })
                    .build()?;
                Ok::<_, anyhow::Error>(exporter)
            })
            .join()
            .expect("building the Zipkin exporter does not panic")
    })?;
    let batches = BatchSpanProcessor::builder(Counted(exporter))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(4096)
                .with_max_export_batch_size(512)
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("ekart");
    let _ = TRACER.set((provider, tracer));
    Ok(())
}

/// Sends the spans still queued (at shutdown), waiting at most a few seconds.
pub fn flush() {
    if let Some((provider, _)) = TRACER.get() {
        let _ = provider.force_flush();
    }
}

/// The exporter's HTTP client, mending two faults of `opentelemetry-zipkin` 0.31's JSON on the
/// way out: its `localEndpoint` never names the service (Zipkin then files every span under
/// "unknown"), and a root span gets `"parentId": "0000000000000000"` where Zipkin v2 wants
/// none. Each span of the batch gets `localEndpoint.serviceName`, and an all-zero parent goes.
#[derive(Debug)]
struct ZipkinV2 {
    client: reqwest::blocking::Client,
    service: String,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ZipkinV2 {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let (parts, body) = request.into_parts();
        let mut spans: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
        for span in &mut spans {
            if span["parentId"]
                .as_str()
                .is_some_and(|p| p.bytes().all(|b| b == b'0'))
            {
                if let Some(span) = span.as_object_mut() {
                    span.remove("parentId");
                }
            }
            span["localEndpoint"]["serviceName"] = self.service.clone().into();
        }
        let body = opentelemetry_http::Bytes::from(serde_json::to_vec(&spans)?);
        let request = opentelemetry_http::Request::from_parts(parts, body);
        self.client.send_bytes(request).await
    }
}

/// The exporter, counting in `/metrics` what reached the collector and what was lost.
#[derive(Debug)]
struct Counted(opentelemetry_zipkin::ZipkinExporter);

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        let outcome = if result.is_ok() {
            "exported"
        } else {
            "dropped"
        };
        metrics::counter!("ekart_spans_total", "outcome" => outcome).increment(spans);
        result
    }

    fn shutdown_with_timeout(
        &mut self,
        timeout: Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}
