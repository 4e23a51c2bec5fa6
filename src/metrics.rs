//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Counters are bumped on the request path; gauges that mirror state kept elsewhere (sessions,
//! worker readiness) are read at scrape time, so the request path pays nothing for them. Every
//! label value comes from a fixed set (message types, error kinds, auth reasons, worker ids),
//! never from client input, so a client cannot grow the series count or put a secret in a
//! label.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::held_append::HeldReading;
use crate::workers::lake::LakeStatus;
use crate::workers::WorkerSet;

/// Upper bounds of the request-duration histogram, in seconds: from a loopback `SELECT 42`
/// (~0.5 ms) to a large FETCH.
const DURATION_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What the gauges mirror, read at scrape time.
#[derive(Debug)]
pub struct Readings<'a> {
    pub workers: &'a WorkerSet,
    pub sessions_open: usize,
    pub draining: bool,
    pub peer_requests: u64,
    pub throttled_addresses: usize,
    /// APPEND bytes held in memory and on disk now, and APPENDs held on disk since the start.
    pub held_appends: HeldReading,
    /// The lake's last maintenance report (the catalog only).
    pub lake: Option<&'a LakeStatus>,
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    durations: HistogramVec,
    auth_failures: IntCounterVec,
    sessions_opened: IntCounterVec,
    sessions_open: IntGauge,
    draining: IntGauge,
    peer_requests: IntGauge,
    throttled_addresses: IntGauge,
    append_held_bytes: IntGaugeVec,
    appends_spilled: IntGauge,
    worker_ready: IntGaugeVec,
    worker_sessions: IntGaugeVec,
    worker_restarts: IntGaugeVec,
    lake: IntGaugeVec,
}

impl Metrics {
    /// A fresh registry holding every metric.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("quackgate".into()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a Quack request's arrival to its response headers, by message type",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["msg_type"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(durations.clone()))
            .expect("unique metric");
        Metrics {
            requests: counter(
                "requests_total",
                "Quack requests received, by message type and origin (client or peer)",
                &["msg_type", "origin"],
            ),
            errors: counter(
                "request_errors_total",
                "Quack requests answered with an error by the gateway, by kind",
                &["kind"],
            ),
            auth_failures: counter(
                "auth_failures_total",
                "CONNECTION_REQUESTs whose token was refused, by reason",
                &["reason"],
            ),
            sessions_opened: counter(
                "sessions_opened_total",
                "Quack sessions opened, by access (read_write or read_only)",
                &["access"],
            ),
            sessions_open: gauge("sessions_open", "Quack sessions open on this node"),
            draining: gauge("draining", "1 while the gateway drains"),
            peer_requests: gauge(
                "peer_requests",
                "Requests other nodes forwarded here since the start",
            ),
            throttled_addresses: gauge(
                "auth_tracked_addresses",
                "Client addresses with recent failed authentications",
            ),
            append_held_bytes: gauge_vec(
                "append_held_bytes",
                "Bytes of APPENDs held while they are read whole, by place (memory or disk)",
                &["place"],
            ),
            appends_spilled: gauge(
                "appends_spilled",
                "APPENDs held on disk since the start",
            ),
            worker_ready: gauge_vec(
                "worker_ready",
                "1 when the worker takes new sessions",
                &["worker", "access"],
            ),
            worker_sessions: gauge_vec(
                "worker_sessions",
                "Sessions open on the worker",
                &["worker"],
            ),
            worker_restarts: gauge_vec(
                "worker_restarts",
                "Restarts of the worker since the gateway started",
                &["worker"],
            ),
            lake: gauge_vec(
                "lake",
                "The lake after the catalog's last maintenance run: data_files, snapshots, inlined_rows, maintenance_runs, maintenance_failures, last_run_ms",
                &["measure"],
            ),
            durations,
            registry,
        }
    }

    /// Counts one Quack request.
    pub fn request(&self, msg_type: &'static str, origin: &'static str) {
        self.requests.with_label_values(&[msg_type, origin]).inc();
    }

    /// Records how long a request took to answer.
    pub fn answered(&self, msg_type: &'static str, elapsed: Duration) {
        self.durations
            .with_label_values(&[msg_type])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request the gateway answered with an error.
    pub fn error(&self, kind: &'static str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// Counts a refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Counts an opened session.
    pub fn session_opened(&self, access: &'static str) {
        self.sessions_opened.with_label_values(&[access]).inc();
    }

    /// The text exposition of every metric, with the state-mirroring gauges set from `now`.
    pub fn render(&self, now: &Readings<'_>) -> String {
        self.sessions_open.set(gauge_value(now.sessions_open));
        self.draining.set(i64::from(now.draining));
        self.peer_requests
            .set(now.peer_requests.try_into().unwrap_or(i64::MAX));
        self.throttled_addresses
            .set(gauge_value(now.throttled_addresses));
        let held = &now.held_appends;
        for (place, bytes) in [("memory", held.memory), ("disk", held.disk)] {
            self.append_held_bytes
                .with_label_values(&[place])
                .set(bytes.try_into().unwrap_or(i64::MAX));
        }
        self.appends_spilled
            .set(held.spilled.try_into().unwrap_or(i64::MAX));
        for w in now.workers.iter() {
            self.worker_ready
                .with_label_values(&[w.id.as_str(), w.access.as_str()])
                .set(i64::from(w.is_ready()));
            self.worker_sessions
                .with_label_values(&[w.id.as_str()])
                .set(gauge_value(w.session_count()));
            self.worker_restarts
                .with_label_values(&[w.id.as_str()])
                .set(w.restart_count().try_into().unwrap_or(i64::MAX));
        }
        if let Some(lake) = now.lake {
            let load =
                |a: &std::sync::atomic::AtomicI64| a.load(std::sync::atomic::Ordering::Relaxed);
            for (measure, value) in [
                ("data_files", load(&lake.data_files)),
                ("snapshots", load(&lake.snapshots)),
                ("inlined_rows", load(&lake.inlined_rows)),
                ("maintenance_runs", load(&lake.runs)),
                ("maintenance_failures", load(&lake.failures)),
                ("last_run_ms", load(&lake.last_run_ms)),
            ] {
                self.lake.with_label_values(&[measure]).set(value);
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_format_with_their_labels() {
        let m = Metrics::new();
        m.request("prepare", "client");
        m.request("prepare", "client");
        m.auth_failure("jwt_expired");
        m.answered("prepare", Duration::from_micros(700));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("quackgate_requests_total{msg_type=\"prepare\",origin=\"client\"} 2"),
            "{text}"
        );
        assert!(text.contains("quackgate_auth_failures_total{reason=\"jwt_expired\"} 1"));
        assert!(text.contains(
            "quackgate_request_duration_seconds_bucket{msg_type=\"prepare\",le=\"0.001\"} 1"
        ));
    }
}
