//! Logs and metrics.
//!
//! In the cloud, logs are JSON lines in Cloud Logging's structured format:
//! `severity`, `message`, `time`, the event's fields, the fields of enclosing
//! spans, and the request's trace as `logging.googleapis.com/trace`, so every
//! line of a request groups under it in Logs Explorer. On a terminal they are
//! human text. Metrics are Prometheus counters served at `GET /metrics`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Cloud Logging structured JSON, one object per line.
    Json,
    /// Human-readable text.
    Text,
}

impl LogFormat {
    /// JSON on Cloud Run (the caller knows from `K_SERVICE`, read with the
    /// rest of the settings) or when stderr is not a terminal; text on a
    /// terminal.
    pub fn detect(on_cloud_run: bool) -> LogFormat {
        use std::io::IsTerminal;
        if on_cloud_run || !std::io::stderr().is_terminal() {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Installs the global subscriber, filtered by `RUST_LOG` or else
/// `default_filter` (e.g. `info`). Logs go to stderr (stdout stays free for
/// command output); Cloud Run collects both. Safe to call twice (tests).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},polars=warn")));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(CloudLogging::default()).try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
    };
}

/// The Cloud Logging JSON layer.
#[derive(Default)]
pub struct CloudLogging {
    out: Mutex<()>,
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        // `http_request` carries Cloud Logging's HttpRequest object as JSON
        // text (tracing fields are flat); it is embedded as an object.
        if field.name() == "http_request"
            && let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(value)
        {
            self.0.insert("httpRequest".to_owned(), v);
            return;
        }
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(
            field.name().to_owned(),
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

fn severity(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => "WARNING",
        tracing::Level::INFO => "INFO",
        tracing::Level::DEBUG | tracing::Level::TRACE => "DEBUG",
    }
}

impl<S> Layer<S> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.0));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut visitor = JsonVisitor::default();
            values.record(&mut visitor);
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                fields.0.extend(visitor.0);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut entry = Map::new();
        // Span fields first, outermost first, so the event's own win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        entry.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        entry.extend(visitor.0);
        if let Some(trace) = entry.remove("trace") {
            entry.insert("logging.googleapis.com/trace".to_owned(), trace);
        }
        if let Some(span_id) = entry.remove("span_id") {
            entry.insert("logging.googleapis.com/spanId".to_owned(), span_id);
        }
        let meta = event.metadata();
        entry.insert("severity".to_owned(), severity(meta.level()).into());
        entry.insert(
            "time".to_owned(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        entry.insert("target".to_owned(), meta.target().into());
        if !entry.contains_key("message") {
            entry.insert("message".to_owned(), Value::String(String::new()));
        }
        let mut line = serde_json::to_vec(&Value::Object(entry)).unwrap_or_default();
        line.push(b'\n');
        let _guard = self.out.lock();
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

/// `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` as Cloud Logging's trace
/// name and span id. Without a project the trace cannot be named.
pub fn cloud_trace(header: &str, project: Option<&str>) -> Option<(String, Option<String>)> {
    let project = project?;
    let (trace_id, rest) = header.split_once('/').unwrap_or((header, ""));
    if trace_id.is_empty() || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let span = rest.split(';').next().filter(|s| !s.is_empty()).map(str::to_owned);
    Some((format!("projects/{project}/traces/{trace_id}"), span))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
    pub status: u16,
}

/// The service's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    pub jobs: Family<OutcomeLabel, Counter>,
    pub rows_scored: Counter,
    pub rows_rejected: Counter,
    pub job_duration: Histogram,
    pub jobs_in_flight: Gauge,
    pub responses: Family<RouteLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("scorer");
        let jobs = Family::<OutcomeLabel, Counter>::default();
        let rows_scored = Counter::default();
        let rows_rejected = Counter::default();
        let job_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        let jobs_in_flight = Gauge::default();
        let responses = Family::<RouteLabel, Counter>::default();
        registry.register("jobs", "Jobs by outcome", jobs.clone());
        registry.register("rows_scored", "Rows scored", rows_scored.clone());
        registry.register("rows_rejected", "Rows rejected", rows_rejected.clone());
        registry.register("job_duration_seconds", "Job duration", job_duration.clone());
        registry.register("jobs_in_flight", "Jobs running now", jobs_in_flight.clone());
        registry.register(
            "http_responses",
            "HTTP responses by route and status",
            responses.clone(),
        );
        Metrics {
            registry,
            jobs,
            rows_scored,
            rows_rejected,
            job_duration,
            jobs_in_flight,
            responses,
        }
    }
}

impl Metrics {
    pub fn record_job(&self, outcome: &str, elapsed: Duration) {
        self.jobs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.job_duration.observe(elapsed.as_secs_f64());
    }

    pub fn record_rows(&self, scored: u64, rejected: u64) {
        self.rows_scored.inc_by(scored);
        self.rows_rejected.inc_by(rejected);
    }

    pub fn record_response(&self, route: &str, status: u16) {
        self.responses
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_header_becomes_cloud_logging_trace() {
        assert_eq!(
            cloud_trace("105445aa7843bc8bf206b12000100000/1;o=1", Some("p")),
            Some((
                "projects/p/traces/105445aa7843bc8bf206b12000100000".into(),
                Some("1".into())
            ))
        );
        assert_eq!(cloud_trace("abc", None), None);
        assert_eq!(cloud_trace("not-hex/1", Some("p")), None);
    }

    #[test]
    fn metrics_encode_in_prometheus_text() {
        let m = Metrics::default();
        m.record_job("scored", Duration::from_millis(20));
        m.record_rows(10, 2);
        let text = m.encode();
        assert!(text.contains("scorer_jobs_total{outcome=\"scored\"} 1"), "{text}");
        assert!(text.contains("scorer_rows_scored_total 10"), "{text}");
        assert!(text.contains("scorer_job_duration_seconds_bucket"), "{text}");
    }
}
