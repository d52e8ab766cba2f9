//! Prometheus metrics, hand-rolled: a few counters and histograms rendered in the text
//! exposition format at `/metrics`.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram buckets in seconds, from a cached dashboard query to a full run.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    rows_ingested: AtomicU64,
    rows_quarantined: AtomicU64,
    rows_duplicate: AtomicU64,
    files_uploaded: AtomicU64,
    runs_ok: AtomicU64,
    runs_failed: AtomicU64,
    http_requests: AtomicU64,
    auth_failures: AtomicU64,
    denied: AtomicU64,
    query_errors: AtomicU64,
    errors: AtomicU64,
    run_seconds: Mutex<Histogram>,
    /// (protocol) -> latency
    query_seconds: Mutex<[Histogram; 2]>,
}

/// Which front end a query came through.
#[derive(Clone, Copy)]
pub enum Protocol {
    Http = 0,
    Postgres = 1,
}

impl Metrics {
    pub fn run_finished(&self, ok: bool, loaded: u64, quarantined: u64, dups: u64, d: Duration) {
        if ok {
            self.runs_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.runs_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.rows_ingested.fetch_add(loaded, Ordering::Relaxed);
        self.rows_quarantined
            .fetch_add(quarantined, Ordering::Relaxed);
        self.rows_duplicate.fetch_add(dups, Ordering::Relaxed);
        self.run_seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(d.as_secs_f64());
    }
    pub fn uploaded(&self) {
        self.files_uploaded.fetch_add(1, Ordering::Relaxed);
    }
    pub fn request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
    }
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub fn denied(&self) {
        self.denied.fetch_add(1, Ordering::Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn query(&self, protocol: Protocol, ok: bool, d: Duration) {
        if !ok {
            self.query_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.query_seconds.lock().unwrap_or_else(|p| p.into_inner())[protocol as usize]
            .observe(d.as_secs_f64());
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "shoplake_rows_ingested_total",
            "Rows loaded by runs this server triggered.",
            &self.rows_ingested,
        );
        counter(
            &mut out,
            "shoplake_rows_quarantined_total",
            "Rows quarantined by runs this server triggered.",
            &self.rows_quarantined,
        );
        counter(
            &mut out,
            "shoplake_rows_duplicate_total",
            "Duplicate rows dropped by runs this server triggered.",
            &self.rows_duplicate,
        );
        counter(
            &mut out,
            "shoplake_files_uploaded_total",
            "Files uploaded into the raw zone.",
            &self.files_uploaded,
        );
        counter(
            &mut out,
            "shoplake_runs_succeeded_total",
            "Runs triggered here that finished.",
            &self.runs_ok,
        );
        counter(
            &mut out,
            "shoplake_runs_failed_total",
            "Runs triggered here that failed.",
            &self.runs_failed,
        );
        counter(
            &mut out,
            "shoplake_http_requests_total",
            "HTTP requests received.",
            &self.http_requests,
        );
        counter(
            &mut out,
            "shoplake_auth_failures_total",
            "Requests and logins with missing or wrong credentials.",
            &self.auth_failures,
        );
        counter(
            &mut out,
            "shoplake_denied_total",
            "Requests refused for the caller's role.",
            &self.denied,
        );
        counter(
            &mut out,
            "shoplake_query_errors_total",
            "Queries that failed (bad SQL, timeouts, limits).",
            &self.query_errors,
        );
        counter(
            &mut out,
            "shoplake_errors_total",
            "Requests that ended in a server error.",
            &self.errors,
        );
        let _ = writeln!(
            out,
            "# HELP shoplake_run_duration_seconds Duration of runs triggered here."
        );
        let _ = writeln!(out, "# TYPE shoplake_run_duration_seconds histogram");
        self.run_seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(&mut out, "shoplake_run_duration_seconds", "");
        let _ = writeln!(
            out,
            "# HELP shoplake_query_duration_seconds Query latency by protocol."
        );
        let _ = writeln!(out, "# TYPE shoplake_query_duration_seconds histogram");
        let q = self.query_seconds.lock().unwrap_or_else(|p| p.into_inner());
        q[0].render(
            &mut out,
            "shoplake_query_duration_seconds",
            "protocol=\"http\"",
        );
        q[1].render(
            &mut out,
            "shoplake_query_duration_seconds",
            "protocol=\"postgres\"",
        );
        out
    }
}
