//! `[orchestrate]`, `[schedules]` and `[notify]`: what runs the pipeline without a person typing
//! `shoplake run` (schedules, the landing folder), how transient failures are retried, and who is
//! told when something happens. Spec types only; `shoplake_orchestrate` builds the running
//! things from them.

use crate::cron::Cron;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// `[orchestrate]`: defaults for schedules, the landing folder and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestrateConfig {
    /// IANA time zone of every schedule that does not name its own (`Europe/Berlin`, `UTC`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Folder watched by `shoplake serve`: a file dropped here is ingested and loaded. Its
    /// sub-folders name sources (`<landing>/stores/x.csv` is source `stores`). Relative to the
    /// current directory, like `lake`. Default: none (no watching).
    #[serde(default)]
    pub landing: Option<PathBuf>,
    /// How often the landing folder is listed, in milliseconds.
    #[serde(default = "default_landing_poll_ms")]
    pub landing_poll_ms: u64,
    /// How long a landed file must keep the same size and modification time before it is taken,
    /// in milliseconds, so a file still being copied is not loaded half-written.
    #[serde(default = "default_landing_settle_ms")]
    pub landing_settle_ms: u64,
    /// Keep loaded files under `<landing>/.done/<date>/` (true) or delete them (false). Failed
    /// files always go to `<landing>/.failed/` with the error beside them.
    #[serde(default = "default_true")]
    pub landing_keep: bool,
    /// Attempts (the first one included) at an operation that fails transiently: a storage
    /// error, a busy database.
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// Base delay of the exponential backoff, in milliseconds. The n-th retry waits a random
    /// time between 0 and `min(retry_max_ms, retry_base_ms * 2^(n-1))` (full jitter).
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Runs (with their tasks, per-file rows and quality results) older than this many days
    /// are pruned after each run. The file ledger keeps every file's totals.
    #[serde(default = "default_keep_runs_days")]
    pub keep_runs_days: u32,
}

fn default_keep_runs_days() -> u32 {
    90
}

fn default_timezone() -> String {
    "UTC".to_string()
}
fn default_landing_poll_ms() -> u64 {
    1000
}
fn default_landing_settle_ms() -> u64 {
    2000
}
fn default_true() -> bool {
    true
}
fn default_retry_attempts() -> u32 {
    5
}
fn default_retry_base_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    30_000
}

impl Default for OrchestrateConfig {
    fn default() -> Self {
        Self {
            timezone: default_timezone(),
            landing: None,
            landing_poll_ms: default_landing_poll_ms(),
            landing_settle_ms: default_landing_settle_ms(),
            landing_keep: true,
            retry_attempts: default_retry_attempts(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
            keep_runs_days: default_keep_runs_days(),
        }
    }
}

/// What a schedule starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// The pipeline (`shoplake run`): load every pending file.
    Run,
    /// The daily report of the previous day (`shoplake report daily`).
    DailyReport,
    /// The monthly report of the previous month (`shoplake report monthly`).
    MonthlyReport,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Run => "run",
            Job::DailyReport => "daily_report",
            Job::MonthlyReport => "monthly_report",
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[schedules.<name>]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Five-field cron expression (minute hour day-of-month month day-of-week) or a macro
    /// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    pub cron: String,
    /// What to start.
    pub job: Job,
    /// IANA time zone the expression is read in. Default: `orchestrate.timezone`.
    #[serde(default)]
    pub tz: Option<String>,
}

/// The schedules used when the file has no `[schedules]` table: the daily report at 02:00 and
/// the monthly report at 02:00 on the 1st. An empty `[schedules]` table turns them off.
pub fn default_schedules() -> BTreeMap<String, ScheduleConfig> {
    [
        ("daily_report", "0 2 * * *", Job::DailyReport),
        ("monthly_report", "0 2 1 * *", Job::MonthlyReport),
    ]
    .into_iter()
    .map(|(name, cron, job)| {
        (
            name.to_string(),
            ScheduleConfig {
                cron: cron.to_string(),
                job,
                tz: None,
            },
        )
    })
    .collect()
}

/// Something that happened that people may want to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunFailed,
    RunSucceeded,
    QualityBreach,
    SchemaDrift,
    QuarantineSpike,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::RunFailed,
        EventKind::RunSucceeded,
        EventKind::QualityBreach,
        EventKind::SchemaDrift,
        EventKind::QuarantineSpike,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunFailed => "run_failed",
            EventKind::RunSucceeded => "run_succeeded",
            EventKind::QualityBreach => "quality_breach",
            EventKind::SchemaDrift => "schema_drift",
            EventKind::QuarantineSpike => "quarantine_spike",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[notify]`: webhooks and alert thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Send `quarantine_spike` when more than this share of a run's rows is quarantined
    /// (0.05 = 5%).
    #[serde(default = "default_quarantine_spike_rate")]
    pub quarantine_spike_rate: f64,
    /// `[[notify.webhooks]]`: where events are posted.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

fn default_quarantine_spike_rate() -> f64 {
    0.05
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            quarantine_spike_rate: default_quarantine_spike_rate(),
            webhooks: Vec::new(),
        }
    }
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The event as a JSON object.
    #[default]
    Json,
    /// A Slack message (`text` and `blocks`), for Slack incoming webhooks and compatible tools.
    Slack,
}

/// One `[[notify.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL to POST to. It often holds a secret token: it is never printed in full. Give
    /// this or `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL, to keep the secret out of this file.
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Events this webhook receives. Default: all but `run_succeeded`.
    #[serde(default = "default_events")]
    pub events: Vec<EventKind>,
    /// Time allowed for one attempt, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts (the first one included) before the event goes to the dead-letter log.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

/// Every event but `run_succeeded`.
pub fn default_events() -> Vec<EventKind> {
    EventKind::ALL
        .into_iter()
        .filter(|k| *k != EventKind::RunSucceeded)
        .collect()
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_attempts() -> u32 {
    5
}

impl WebhookConfig {
    /// A webhook posting JSON to `url`, with the defaults.
    pub fn new(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: Some(url.to_string()),
            url_env: None,
            format: WebhookFormat::Json,
            events: default_events(),
            timeout_ms: default_timeout_ms(),
            max_attempts: default_max_attempts(),
        }
    }
}

/// Every problem with `[orchestrate]`, `[schedules]` and `[notify]`.
pub(crate) fn problems(
    orchestrate: &OrchestrateConfig,
    schedules: &BTreeMap<String, ScheduleConfig>,
    notify: &NotifyConfig,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = parse_tz(&orchestrate.timezone) {
        out.push(format!("orchestrate.timezone: {e}"));
    }
    if orchestrate.landing_poll_ms < 10 {
        out.push(format!(
            "orchestrate.landing_poll_ms {} is too small: use at least 10 (milliseconds)",
            orchestrate.landing_poll_ms
        ));
    }
    if orchestrate.retry_attempts == 0 {
        out.push("orchestrate.retry_attempts must be at least 1 (the first attempt)".to_string());
    }
    if orchestrate.retry_base_ms == 0 {
        out.push("orchestrate.retry_base_ms must be at least 1".to_string());
    }
    if orchestrate.retry_max_ms < orchestrate.retry_base_ms {
        out.push(format!(
            "orchestrate.retry_max_ms {} is less than retry_base_ms {}",
            orchestrate.retry_max_ms, orchestrate.retry_base_ms
        ));
    }
    for (name, s) in schedules {
        if !crate::is_valid_source_name(name) {
            out.push(format!(
                "schedules.{name}: a schedule name uses lower-case letters, digits, '_' and '-'"
            ));
        }
        if let Err(e) = s.cron.parse::<Cron>() {
            out.push(format!("schedules.{name}.cron: {e}"));
        }
        if let Some(tz) = &s.tz
            && let Err(e) = parse_tz(tz)
        {
            out.push(format!("schedules.{name}.tz: {e}"));
        }
    }
    let rate = notify.quarantine_spike_rate;
    if !(0.0..=1.0).contains(&rate) {
        out.push(format!(
            "notify.quarantine_spike_rate {rate} must be between 0 and 1 (0.05 is 5%)"
        ));
    }
    for (i, w) in notify.webhooks.iter().enumerate() {
        let at = format!("notify.webhooks[{i}]");
        match (&w.url, &w.url_env) {
            (Some(_), Some(_)) => out.push(format!("{at}: give `url` or `url_env`, not both")),
            (None, None) => out.push(format!(
                "{at}: give `url` (the address to POST to) or `url_env` (a variable holding it)"
            )),
            (Some(url), None) => {
                if let Err(e) = check_webhook_url(url) {
                    out.push(format!("{at}.url: {e}"));
                }
            }
            (None, Some(var)) => {
                if var.is_empty() {
                    out.push(format!("{at}.url_env must name an environment variable"));
                }
            }
        }
        if w.events.is_empty() {
            out.push(format!(
                "{at}.events is empty: list some of {}",
                EventKind::ALL.map(|k| k.as_str()).join(", ")
            ));
        }
        if w.timeout_ms == 0 {
            out.push(format!("{at}.timeout_ms must be at least 1"));
        }
        if w.max_attempts == 0 {
            out.push(format!("{at}.max_attempts must be at least 1"));
        }
    }
    out
}

/// An IANA time zone name, with a hint when it is not one.
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        let hint = crate::did_you_mean(name, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
            .map(|s| format!("; did you mean {s:?}?"))
            .unwrap_or_default();
        format!("{name:?} is not an IANA time zone name (like \"Europe/Berlin\" or \"UTC\"){hint}")
    })
}

/// Checks a webhook URL without ever showing more of it than its scheme: the path and query
/// of a webhook URL are often the secret.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must start with http:// or https://".to_string());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "must start with http:// or https:// (it starts with {:?})",
            scheme.chars().take(10).collect::<String>()
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("has no host after {scheme}://"));
    }
    Ok(())
}
