//! Notifications: events (a run failed, a quality breach, schema drift, a quarantine spike, a
//! run succeeded) posted to webhooks as JSON or as Slack messages, retried with backoff on
//! transient failures, and written to a dead-letter log when every attempt failed.
//!
//! Webhook URLs often carry a secret token in their path (Slack's do): they are shown only
//! through [`redact_url`], in logs, errors and the dead-letter log alike.
//!
//! Every event is also a structured log line (target `shoplake::event`).

use crate::retry::{RetryPolicy, Transience, retry};
use crate::{AbortOnDrop, Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoplake_core::{Config, EventKind, WebhookConfig, WebhookFormat};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Name of the dead-letter log in the state directory.
pub const DEAD_LETTER_FILE: &str = "notify-dead-letter.jsonl";

/// Something that happened. Its JSON form is the body of a `json` webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The run it happened in, if any.
    pub run_id: Option<i64>,
    /// The lake (its root), so one receiver can tell several lakes apart.
    pub lake: String,
    /// One line for people.
    pub message: String,
    /// Facts for machines: counts, file names, table names.
    pub details: Value,
    pub at: DateTime<Utc>,
}

impl Event {
    /// An event happening now, with no run and no details.
    pub fn new(kind: EventKind, lake: &str, message: impl Into<String>) -> Event {
        Event {
            kind,
            run_id: None,
            lake: lake.to_string(),
            message: message.into(),
            details: json!({}),
            at: Utc::now(),
        }
    }

    pub fn with_run(mut self, run_id: i64) -> Event {
        self.run_id = Some(run_id);
        self
    }

    pub fn with_details(mut self, details: Value) -> Event {
        self.details = details;
        self
    }

    pub fn with_at(mut self, at: DateTime<Utc>) -> Event {
        self.at = at;
        self
    }

    /// The `quarantine_spike` event of a run, if more than `rate` of its rows were
    /// quarantined (`[notify] quarantine_spike_rate`).
    pub fn quarantine_spike(
        lake: &str,
        run_id: i64,
        rows_in: u64,
        rows_quarantined: u64,
        rate: f64,
    ) -> Option<Event> {
        if rows_in == 0 {
            return None;
        }
        let share = rows_quarantined as f64 / rows_in as f64;
        (share > rate).then(|| {
            Event::new(
                EventKind::QuarantineSpike,
                lake,
                format!(
                    "{rows_quarantined} of {rows_in} rows ({:.1}%) were quarantined, more than the {:.1}% allowed",
                    share * 100.0,
                    rate * 100.0
                ),
            )
            .with_run(run_id)
            .with_details(json!({
                "rows_in": rows_in,
                "rows_quarantined": rows_quarantined,
                "rate": share,
                "threshold": rate,
            }))
        })
    }
}

/// A URL with only its scheme, host and port left: `https://hooks.slack.com/…`. User info,
/// path, query and fragment may hold secrets and are replaced by `…`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_string();
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return "…".to_string();
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let hidden = end < rest.len() || host.len() < authority.len();
    format!("{scheme}://{host}{}", if hidden { "/…" } else { "" })
}

/// The structured log line of an event: target `shoplake::event`, fields `kind`, `run_id`,
/// `lake`, `message` and `details` (JSON).
pub fn log_event(e: &Event) {
    let run_id = e.run_id.unwrap_or(-1);
    let kind = e.kind.as_str();
    let details = e.details.to_string();
    let (lake, message) = (e.lake.as_str(), e.message.as_str());
    match e.kind {
        EventKind::RunFailed => {
            tracing::error!(target: "shoplake::event", kind, run_id, lake, details, "{message}")
        }
        EventKind::RunSucceeded => {
            tracing::info!(target: "shoplake::event", kind, run_id, lake, details, "{message}")
        }
        _ => tracing::warn!(target: "shoplake::event", kind, run_id, lake, details, "{message}"),
    }
}

/// The body posted for an event in a webhook format.
pub fn body(format: WebhookFormat, e: &Event) -> Value {
    match format {
        WebhookFormat::Json => serde_json::to_value(e).unwrap_or_else(|_| json!({})),
        WebhookFormat::Slack => slack_body(e),
    }
}

fn title(kind: EventKind) -> (&'static str, &'static str) {
    match kind {
        EventKind::RunFailed => (":x:", "Run failed"),
        EventKind::RunSucceeded => (":white_check_mark:", "Run succeeded"),
        EventKind::QualityBreach => (":warning:", "Data-quality breach"),
        EventKind::SchemaDrift => (":twisted_rightwards_arrows:", "Schema drift"),
        EventKind::QuarantineSpike => (":rotating_light:", "Quarantine spike"),
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A Slack message: `text` (the notification line, also the fallback) and `blocks`.
fn slack_body(e: &Event) -> Value {
    let (emoji, title) = title(e.kind);
    let run = e.run_id.map(|r| format!(" (run {r})")).unwrap_or_default();
    let text = format!(
        "{emoji} shoplake: {title}{run}: {}",
        slack_escape(&e.message)
    );
    let mut fields =
        vec![json!({"type": "mrkdwn", "text": format!("*Lake*\n{}", slack_escape(&e.lake))})];
    if let Some(r) = e.run_id {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Run*\n{r}")}));
    }
    fields.push(json!({"type": "mrkdwn", "text": format!("*Event*\n`{}`", e.kind)}));
    fields.push(json!({"type": "mrkdwn", "text": format!("*At*\n{}", e.at.format("%Y-%m-%d %H:%M:%S UTC"))}));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("{emoji} {title}"), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&slack_escape(&e.message), 2900)}}),
        json!({"type": "section", "fields": fields}),
    ];
    let has_details = match &e.details {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    if has_details {
        let pretty = serde_json::to_string_pretty(&e.details).unwrap_or_default();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{}```", truncate(&slack_escape(&pretty), 2800))}}));
    }
    json!({"text": text, "blocks": blocks})
}

/// One webhook, ready to post to.
struct Webhook {
    url: String,
    redacted: String,
    format: WebhookFormat,
    events: Vec<EventKind>,
    timeout: Duration,
    policy: RetryPolicy,
}

/// What happened to an event at one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook, redacted.
    pub webhook: String,
    pub attempts: u32,
    /// The last error when every attempt failed (the event is then in the dead-letter log).
    pub error: Option<String>,
}

/// Posts events to the configured webhooks.
pub struct Notifier {
    client: reqwest::Client,
    webhooks: Vec<Webhook>,
    dead_letter: PathBuf,
    dead_letter_lock: std::sync::Mutex<()>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "webhooks",
                &self
                    .webhooks
                    .iter()
                    .map(|w| &w.redacted)
                    .collect::<Vec<_>>(),
            )
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

/// A failed POST.
#[derive(Debug)]
enum PostError {
    Status {
        code: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    Transport {
        message: String,
        permanent: bool,
    },
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Status { code, body, .. } => {
                let reason = reqwest::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "HTTP {code} {reason}")?;
                if !body.trim().is_empty() {
                    write!(f, ": {}", truncate(body.trim(), 200))?;
                }
                Ok(())
            }
            PostError::Transport { message, .. } => f.write_str(message),
        }
    }
}

fn classify(e: &PostError) -> Transience {
    match e {
        PostError::Status {
            code: 429,
            retry_after: Some(d),
            ..
        } => Transience::RetryAfter(*d),
        PostError::Status { code, .. } if *code == 408 || *code == 429 || *code >= 500 => {
            Transience::Transient
        }
        PostError::Status { .. } => Transience::Permanent,
        PostError::Transport { permanent, .. } => {
            if *permanent {
                Transience::Permanent
            } else {
                Transience::Transient
            }
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The error and its causes, without the URL reqwest puts in its messages.
fn transport_message(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut parts = vec![kind.to_string()];
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

impl Notifier {
    /// The notifier `[notify]` asks for, URLs read from the environment where `url_env` says
    /// so. Retries use `[orchestrate]` retry_base_ms / retry_max_ms and each webhook's
    /// max_attempts; the dead-letter log is `<state_dir>/notify-dead-letter.jsonl`.
    pub fn from_config(config: &Config, state_dir: &Path) -> Result<Notifier> {
        Self::from_config_with_env(config, state_dir, |name| std::env::var(name).ok())
    }

    /// [`Notifier::from_config`] with the environment given as a function (for tests).
    pub fn from_config_with_env(
        config: &Config,
        state_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Notifier> {
        let mut problems = Vec::new();
        let mut webhooks = Vec::new();
        for (i, w) in config.notify.webhooks.iter().enumerate() {
            let mut w = w.clone();
            if let Some(var) = &w.url_env {
                match env(var).filter(|v| !v.trim().is_empty()) {
                    Some(url) => match shoplake_core::check_webhook_url(url.trim()) {
                        Ok(()) => w.url = Some(url.trim().to_string()),
                        Err(e) => problems.push(format!(
                            "notify.webhooks[{i}]: the URL in ${var} {e}"
                        )),
                    },
                    None => problems.push(format!(
                        "notify.webhooks[{i}].url_env: the environment variable {var} is not set; set it to the webhook URL"
                    )),
                }
            }
            webhooks.push(w);
        }
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        Notifier::new(
            &webhooks,
            RetryPolicy::from_config(&config.orchestrate),
            state_dir,
        )
    }

    /// A notifier posting to `webhooks` (their `url` set), retrying with `retry` (its
    /// max_attempts replaced by each webhook's).
    pub fn new(
        webhooks: &[WebhookConfig],
        retry: RetryPolicy,
        state_dir: &Path,
    ) -> Result<Notifier> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("shoplake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Webhook {
                webhook: "-".to_string(),
                message: transport_message(e),
            })?;
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (i, w) in webhooks.iter().enumerate() {
            let Some(url) = &w.url else {
                problems.push(format!("notify.webhooks[{i}] has no url"));
                continue;
            };
            if let Err(e) = shoplake_core::check_webhook_url(url) {
                problems.push(format!("notify.webhooks[{i}].url: {e}"));
                continue;
            }
            out.push(Webhook {
                url: url.clone(),
                redacted: redact_url(url),
                format: w.format,
                events: w.events.clone(),
                timeout: Duration::from_millis(w.timeout_ms.max(1)),
                policy: retry.with_attempts(w.max_attempts),
            });
        }
        if !problems.is_empty() {
            return Err(Error::Config { problems });
        }
        Ok(Notifier {
            client,
            webhooks: out,
            dead_letter: state_dir.join(DEAD_LETTER_FILE),
            dead_letter_lock: std::sync::Mutex::new(()),
        })
    }

    pub fn dead_letter_path(&self) -> &Path {
        &self.dead_letter
    }

    /// How many webhooks receive this kind of event.
    pub fn subscribers(&self, kind: EventKind) -> usize {
        self.webhooks
            .iter()
            .filter(|w| w.events.contains(&kind))
            .count()
    }

    /// Log the event and post it to every webhook subscribed to its kind (concurrently),
    /// retrying transient failures; what could not be delivered goes to the dead-letter log.
    pub async fn send(&self, event: &Event) -> Vec<Delivery> {
        log_event(event);
        self.deliver(event).await
    }

    async fn deliver(&self, event: &Event) -> Vec<Delivery> {
        let sends = self
            .webhooks
            .iter()
            .filter(|w| w.events.contains(&event.kind))
            .map(|w| self.deliver_to(w, event));
        futures::future::join_all(sends).await
    }

    async fn deliver_to(&self, w: &Webhook, event: &Event) -> Delivery {
        let body = body(w.format, event);
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let what = format!("webhook {} ({})", w.redacted, event.kind);
        let result = retry(&w.policy, &what, classify, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.post(w, &body)
        })
        .await;
        let attempts = attempts.into_inner();
        match result {
            Ok(()) => {
                tracing::debug!(webhook = %w.redacted, kind = %event.kind, attempts, "event delivered");
                Delivery {
                    webhook: w.redacted.clone(),
                    attempts,
                    error: None,
                }
            }
            Err(e) => {
                // Belt and braces: no message may carry the URL.
                let error = e.to_string().replace(&w.url, &w.redacted);
                tracing::warn!(
                    webhook = %w.redacted,
                    kind = %event.kind,
                    attempts,
                    error = %error,
                    dead_letter = %self.dead_letter.display(),
                    "event not delivered; written to the dead-letter log"
                );
                self.write_dead_letter(&w.redacted, event, attempts, &error, &body);
                Delivery {
                    webhook: w.redacted.clone(),
                    attempts,
                    error: Some(error),
                }
            }
        }
    }

    async fn post(&self, w: &Webhook, body: &Value) -> Result<(), PostError> {
        let response = self
            .client
            .post(&w.url)
            .timeout(w.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .send()
            .await
            .map_err(|e| PostError::Transport {
                permanent: e.is_builder(),
                message: transport_message(e),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let text = response.text().await.unwrap_or_default();
        Err(PostError::Status {
            code: status.as_u16(),
            retry_after,
            body: text.replace(&w.url, &w.redacted),
        })
    }

    /// Append one JSON line to the dead-letter log. A failure to write it is logged: the
    /// pipeline goes on.
    fn write_dead_letter(
        &self,
        webhook: &str,
        event: &Event,
        attempts: u32,
        error: &str,
        body: &Value,
    ) {
        let line = json!({
            "at": Utc::now(),
            "webhook": webhook,
            "kind": event.kind,
            "run_id": event.run_id,
            "attempts": attempts,
            "error": error,
            "body": body,
        });
        let _guard = self
            .dead_letter_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(dir) = self.dead_letter.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.dead_letter)?;
            writeln!(f, "{line}")
        };
        if let Err(e) = write() {
            tracing::error!(path = %self.dead_letter.display(), error = %e, "cannot write the dead-letter log");
        }
    }

    /// Deliver events in the background, so the pipeline never waits for a webhook. Call from
    /// inside a tokio runtime; the worker stops when the returned queue is dropped.
    pub fn spawn_queue(self: Arc<Self>, capacity: usize) -> NotifyQueue {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(capacity.max(1));
        let state = Arc::new(QueueState::default());
        let worker_state = state.clone();
        let notifier = self.clone();
        #[allow(clippy::disallowed_methods)] // wrapped: aborted when the queue is dropped
        let task = AbortOnDrop(tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                notifier.deliver(&event).await;
                worker_state.finished.fetch_add(1, Ordering::SeqCst);
                worker_state.changed.notify_waiters();
            }
        }));
        NotifyQueue {
            tx,
            notifier: self,
            state,
            _worker: task,
        }
    }
}

#[derive(Default)]
struct QueueState {
    enqueued: AtomicU64,
    finished: AtomicU64,
    changed: tokio::sync::Notify,
}

/// The background queue of a [`Notifier`]: bounded; an event that does not fit goes straight
/// to the dead-letter log instead of blocking the caller.
pub struct NotifyQueue {
    tx: tokio::sync::mpsc::Sender<Event>,
    notifier: Arc<Notifier>,
    state: Arc<QueueState>,
    _worker: AbortOnDrop<()>,
}

impl fmt::Debug for NotifyQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyQueue")
            .field("enqueued", &self.state.enqueued.load(Ordering::SeqCst))
            .field("finished", &self.state.finished.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl NotifyQueue {
    /// Log the event now and queue it for delivery. Never waits. False when the queue was
    /// full (the event is then in the dead-letter log, once per subscribed webhook).
    pub fn enqueue(&self, event: Event) -> bool {
        log_event(&event);
        if self.notifier.subscribers(event.kind) == 0 {
            return true;
        }
        self.state.enqueued.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(e) => {
                self.state.enqueued.fetch_sub(1, Ordering::SeqCst);
                let event = e.into_inner();
                for w in self
                    .notifier
                    .webhooks
                    .iter()
                    .filter(|w| w.events.contains(&event.kind))
                {
                    let body = body(w.format, &event);
                    tracing::warn!(webhook = %w.redacted, kind = %event.kind, "notification queue full; event written to the dead-letter log");
                    self.notifier.write_dead_letter(
                        &w.redacted,
                        &event,
                        0,
                        "notification queue full",
                        &body,
                    );
                }
                false
            }
        }
    }

    /// Wait until every event queued so far was delivered or dead-lettered, at most
    /// `timeout` (at shutdown). True when the queue drained in time.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self.state.enqueued.load(Ordering::SeqCst);
        let drained = async {
            loop {
                let changed = self.state.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.state.finished.load(Ordering::SeqCst) >= target {
                    return;
                }
                changed.await;
            }
        };
        let ok = tokio::time::timeout(timeout, drained).await.is_ok();
        if !ok {
            let left = target.saturating_sub(self.state.finished.load(Ordering::SeqCst));
            tracing::warn!(left, "notifications still pending at shutdown");
        }
        ok
    }
}

#[cfg(test)]
mod tests;
