//! OpenTelemetry: with `proxy.otel`, one span per request, the access log's fields as its
//! attributes, exported over OTLP/HTTP (JSON) by the maintained `opentelemetry` crates in
//! batches from their own thread, so the request path only hands a finished span over.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span, SpanKind, Status, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// `proxy.otel`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    /// The collector's traces URL (`{endpoint}/v1/traces`).
    pub traces_url: String,
    pub service_name: String,
}

pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// One request, as the access log sees it.
pub struct RequestSpan<'a> {
    pub started: SystemTime,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub attributes: Vec<KeyValue>,
}

impl Otel {
    pub fn start(s: &OtelSettings) -> Result<Otel, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(s.traces_url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("proxy.otel: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(s.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("credproxy");
        Ok(Otel { provider, tracer })
    }

    /// Records one finished request.
    pub fn request(&self, r: RequestSpan<'_>) {
        let mut attributes = vec![
            KeyValue::new("http.request.method", r.method.to_string()),
            KeyValue::new("server.address", r.host.to_string()),
            KeyValue::new("url.path", r.path.to_string()),
            KeyValue::new("http.response.status_code", i64::from(r.status)),
        ];
        attributes.extend(r.attributes);
        let mut span = self
            .tracer
            .span_builder(format!("{} {}", r.method, r.host))
            .with_kind(SpanKind::Server)
            .with_start_time(r.started)
            .with_attributes(attributes)
            .start(&self.tracer);
        if r.status >= 500 || r.status == 0 {
            span.set_status(Status::error(format!("status {}", r.status)));
        }
        span.end();
    }

    /// Sends what is buffered (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("OpenTelemetry spans not all exported at shutdown: {e}");
        }
    }
}
