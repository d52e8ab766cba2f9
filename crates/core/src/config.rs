//! `shoplake.toml`: spec types only. Every setting has a default, so no file is needed to start.
//! Precedence: defaults < `shoplake.toml` < environment (`SHOPLAKE_*`) < command-line flags.

mod orchestrate;

pub use orchestrate::{
    EventKind, Job, NotifyConfig, OrchestrateConfig, ScheduleConfig, WebhookConfig, WebhookFormat,
    check_webhook_url, default_events, default_schedules, parse_tz,
};

use crate::model::{Entity, Format};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Lake root: a folder (`./lake`, the default) or an object-store URL (`file:///...`).
    /// Overridden by `SHOPLAKE_LAKE` and `--lake`.
    #[serde(default)]
    pub lake: Option<String>,
    /// Where the control plane (SQLite: file ledger, catalog, runs) lives.
    /// Default: `<lake>/_control` for a local lake.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The data marts (`mart_customer_monthly`, `mart_sales_team_monthly`).
    #[serde(default)]
    pub marts: MartsConfig,
    /// The daily and monthly reports.
    #[serde(default)]
    pub reports: ReportsConfig,
    /// Per-source settings, keyed by source name (`stores`, `ecommerce`, ...). Anything left out is
    /// inferred by the crawler.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub export: ExportConfig,
    /// `shoplake serve`: addresses, TLS and limits.
    #[serde(default)]
    pub serve: crate::serve_config::ServeConfig,
    /// Data-quality expectations by table (`[[quality.fact_sales]]`). A table listed here has
    /// exactly these expectations; a table left out keeps the built-in ones
    /// ([`crate::quality::default_expectations`]); `fact_sales = []` turns them off.
    #[serde(default)]
    pub quality: BTreeMap<String, Vec<crate::quality::Expectation>>,
    /// Schedules, the landing folder and retries.
    #[serde(default)]
    pub orchestrate: OrchestrateConfig,
    /// Schedules by name. Without a `[schedules]` table: the daily report at 02:00 and the
    /// monthly report on the 1st at 02:00 ([`default_schedules`]).
    #[serde(default = "default_schedules")]
    pub schedules: BTreeMap<String, ScheduleConfig>,
    /// Webhooks and alert thresholds.
    #[serde(default)]
    pub notify: NotifyConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lake: None,
            state_dir: None,
            pipeline: PipelineConfig::default(),
            marts: MartsConfig::default(),
            reports: ReportsConfig::default(),
            sources: BTreeMap::new(),
            export: ExportConfig::default(),
            serve: crate::serve_config::ServeConfig::default(),
            quality: BTreeMap::new(),
            orchestrate: OrchestrateConfig::default(),
            schedules: default_schedules(),
            notify: NotifyConfig::default(),
        }
    }
}

/// What to do with a sale whose customer or product is not in its dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownMembers {
    /// Load it against an inferred member, filled in when the dimension row arrives (default).
    #[default]
    Infer,
    /// Quarantine it as `unknown_customer` / `unknown_product`.
    Quarantine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Rows per Arrow batch in the transform.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Currency of rows with none.
    #[serde(default = "default_currency")]
    pub default_currency: String,
    /// Late-arriving dimension members: `infer` (default) or `quarantine`.
    #[serde(default)]
    pub unknown_members: UnknownMembers,
    /// Name of the environment variable holding the key for PII hashes. When unset, a random key
    /// is created once in the state directory (`pii.key`), readable only by its owner.
    #[serde(default = "default_pii_key_env")]
    pub pii_key_env: String,
    /// Target size of data files written to Delta tables, in MiB.
    #[serde(default = "default_target_file_mb")]
    pub target_file_mb: usize,
    /// Memory the query engine may use before spilling, in MiB.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: usize,
}

fn default_batch_size() -> usize {
    65_536
}
fn default_currency() -> String {
    "USD".to_string()
}
fn default_pii_key_env() -> String {
    "SHOPLAKE_PII_KEY".to_string()
}
fn default_target_file_mb() -> usize {
    64
}
fn default_memory_limit_mb() -> usize {
    1024
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            default_currency: default_currency(),
            unknown_members: UnknownMembers::default(),
            pii_key_env: default_pii_key_env(),
            target_file_mb: default_target_file_mb(),
            memory_limit_mb: default_memory_limit_mb(),
        }
    }
}

/// A decimal setting (money or a share): written as a string (`"99.50"`), a whole number or a
/// number with a fraction. Kept as the text the user wrote and parsed exactly (never through
/// binary floating point) by [`DecimalSetting::scaled`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DecimalSetting {
    Text(String),
    Whole(i64),
    /// A TOML float. Its shortest round-trip text is what the user wrote (`0.01` -> `"0.01"`).
    Fraction(f64),
}

impl DecimalSetting {
    pub fn text(&self) -> String {
        match self {
            DecimalSetting::Text(s) => s.trim().to_string(),
            DecimalSetting::Whole(i) => i.to_string(),
            DecimalSetting::Fraction(f) => format!("{f}"),
        }
    }

    /// The value as an integer scaled by `10^scale`; an error names the problem (not a number,
    /// more decimal places than `scale`).
    pub fn scaled(&self, scale: u32) -> Result<i128, String> {
        let text = self.text();
        match crate::values::parse_decimal(&text, scale) {
            Ok(Some(v)) => {
                // parse_decimal rounds extra places; a threshold or share must be exact.
                let back = crate::values::format_decimal(v, scale);
                let exact = text
                    .split_once('.')
                    .map(|(_, frac)| frac.trim_end_matches('0').len() <= scale as usize)
                    .unwrap_or(true);
                if exact {
                    Ok(v)
                } else {
                    Err(format!(
                        "{text:?} has more than {scale} decimal places (it would be {back})"
                    ))
                }
            }
            Ok(None) => Err("is empty".to_string()),
            Err(_) => Err(format!("{text:?} is not a decimal number")),
        }
    }
}

/// One coupon tier: customers whose completed sales in a month reach `min_spend_usd` get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponTier {
    /// Name shown in the mart and the coupon list (`gold`, `silver`, ...).
    pub name: String,
    /// Smallest monthly spend (USD, completed sales) that earns the tier.
    pub min_spend_usd: DecimalSetting,
    /// Discount the coupon gives, in percent.
    #[serde(default)]
    pub discount_percent: u32,
}

/// `[marts]`: the data marts and their business rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MartsConfig {
    /// Refresh the marts at the end of every `shoplake run` (only the months the run touched).
    #[serde(default = "default_true")]
    pub refresh_on_run: bool,
    /// Share of a month's sales paid as incentive to the top seller of each store (0.01 = 1%).
    #[serde(default = "default_incentive_share")]
    pub incentive_share: DecimalSetting,
    /// Coupon tiers by monthly spend. A customer-month gets the tier with the highest threshold
    /// it reaches; below every threshold, no coupon.
    #[serde(default = "default_coupon_tiers")]
    pub coupon_tiers: Vec<CouponTier>,
}

fn default_true() -> bool {
    true
}
fn default_incentive_share() -> DecimalSetting {
    DecimalSetting::Text("0.01".to_string())
}
fn default_coupon_tiers() -> Vec<CouponTier> {
    [
        ("gold", "1000.00", 15),
        ("silver", "500.00", 10),
        ("bronze", "100.00", 5),
    ]
    .into_iter()
    .map(|(name, min, pct)| CouponTier {
        name: name.to_string(),
        min_spend_usd: DecimalSetting::Text(min.to_string()),
        discount_percent: pct,
    })
    .collect()
}

impl Default for MartsConfig {
    fn default() -> Self {
        Self {
            refresh_on_run: true,
            incentive_share: default_incentive_share(),
            coupon_tiers: default_coupon_tiers(),
        }
    }
}

impl MartsConfig {
    /// Every problem with the marts settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.incentive_share.scaled(crate::values::RATE_SCALE) {
            Ok(v) if (0..=10i128.pow(crate::values::RATE_SCALE)).contains(&v) => {}
            Ok(_) => out.push(format!(
                "marts.incentive_share {} must be between 0 and 1 (0.01 is 1%)",
                self.incentive_share.text()
            )),
            Err(e) => out.push(format!("marts.incentive_share: {e}")),
        }
        let mut names = std::collections::BTreeSet::new();
        let mut mins = std::collections::BTreeSet::new();
        for (i, t) in self.coupon_tiers.iter().enumerate() {
            let at = format!("marts.coupon_tiers[{i}]");
            if t.name.trim().is_empty() {
                out.push(format!("{at}: the name is empty"));
            } else if !names.insert(t.name.trim().to_string()) {
                out.push(format!("{at}: the name {:?} is used twice", t.name));
            }
            match t.min_spend_usd.scaled(crate::values::AMOUNT_SCALE) {
                Ok(v) if v > 0 => {
                    if !mins.insert(v) {
                        out.push(format!(
                            "{at}: another tier has the same min_spend_usd {}",
                            t.min_spend_usd.text()
                        ));
                    }
                }
                Ok(_) => out.push(format!("{at}.min_spend_usd must be more than 0")),
                Err(e) => out.push(format!("{at}.min_spend_usd: {e}")),
            }
            if t.discount_percent > 100 {
                out.push(format!(
                    "{at}.discount_percent {} is more than 100",
                    t.discount_percent
                ));
            }
        }
        out
    }
}

/// `[reports]`: `shoplake report daily|monthly`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Rows in the top-products and top-customers lists.
    #[serde(default = "default_top_n")]
    pub top_n: usize,
}

fn default_top_n() -> usize {
    10
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            top_n: default_top_n(),
        }
    }
}

/// `shoplake export`: where the warehouse is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Target database: `postgres://user@host:5432/db` or `mysql://user@host:3306/db`.
    /// Overridden by `SHOPLAKE_EXPORT_URL` and `--to`. Leave the password out of this file.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the password when the URL has none (then `PGPASSWORD`
    /// or `MYSQL_PWD`, as the database's own tools do).
    #[serde(default = "default_password_env")]
    pub password_env: String,
}

fn default_password_env() -> String {
    "SHOPLAKE_EXPORT_PASSWORD".to_string()
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            url: None,
            password_env: default_password_env(),
        }
    }
}

/// Settings of one source. Every field overrides what the crawler inferred.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The canonical entity this source feeds.
    #[serde(default)]
    pub entity: Option<Entity>,
    #[serde(default)]
    pub format: Option<Format>,
    /// CSV delimiter, one character.
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Whether CSV files start with a header row.
    #[serde(default)]
    pub has_header: Option<bool>,
    /// chrono format of the source's dates, e.g. `%d/%m/%Y`.
    #[serde(default)]
    pub date_format: Option<String>,
    /// Channel of rows with none (`store`, `ecommerce`, ...).
    #[serde(default)]
    pub channel: Option<String>,
    /// Currency of rows with none.
    #[serde(default)]
    pub currency: Option<String>,
    /// Overrides `pipeline.unknown_members` for this source.
    #[serde(default)]
    pub unknown_members: Option<UnknownMembers>,
    /// Source column -> canonical field. An empty target ignores the column.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
}

/// A configuration that does not hold together: every problem found, not just the first.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Load and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Every inconsistency in the configuration.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.serve.problems();
        if self.pipeline.batch_size == 0 {
            out.push("pipeline.batch_size must be at least 1".to_string());
        }
        out.extend(self.marts.problems());
        if self.reports.top_n == 0 {
            out.push("reports.top_n must be at least 1".to_string());
        }
        if crate::values::normalize_currency(&self.pipeline.default_currency).is_err() {
            out.push(format!(
                "pipeline.default_currency {:?} is not a known currency code",
                self.pipeline.default_currency
            ));
        }
        if let Some(url) = &self.export.url {
            let scheme = url.split("://").next().unwrap_or("");
            if !url.contains("://")
                || !["postgres", "postgresql", "mysql", "mariadb"].contains(&scheme)
            {
                // Only the scheme is shown: the rest may hold a password.
                out.push(format!(
                    "export.url must start with postgres:// or mysql:// (it starts with {:?})",
                    scheme.chars().take(20).collect::<String>()
                ));
            }
        }
        for (table, list) in &self.quality {
            let mut names = std::collections::BTreeSet::new();
            for (i, e) in list.iter().enumerate() {
                let at = format!("quality.{table}[{i}]");
                out.extend(e.problems(&at));
                if !names.insert(e.display_name()) {
                    out.push(format!(
                        "{at}: another expectation of {table} is also named {:?}; give one a `name`",
                        e.display_name()
                    ));
                }
            }
        }
        out.extend(orchestrate::problems(
            &self.orchestrate,
            &self.schedules,
            &self.notify,
        ));
        if self.export.password_env.is_empty() {
            out.push("export.password_env must name an environment variable".to_string());
        }
        for (name, source) in &self.sources {
            if !crate::is_valid_source_name(name) {
                out.push(format!(
                    "sources.{name}: a source name uses lower-case letters, digits, '_' and '-'"
                ));
            }
            if let Some(c) = &source.currency
                && crate::values::normalize_currency(c).is_err()
            {
                out.push(format!(
                    "sources.{name}.currency {c:?} is not a known currency code"
                ));
            }
            if let Some(f) = &source.date_format
                && chrono::NaiveDate::parse_from_str("2025-01-02", f).is_err()
                && crate::values::DATE_FORMATS.iter().all(|known| known != f)
                && !f.contains('%')
            {
                out.push(format!(
                    "sources.{name}.date_format {f:?} is not a chrono date format"
                ));
            }
            let Some(entity) = source.entity else {
                if !source.mapping.is_empty() {
                    out.push(format!(
                        "sources.{name}: a mapping needs `entity` too (one of {})",
                        entity_names()
                    ));
                }
                continue;
            };
            for (column, target) in &source.mapping {
                if !target.is_empty() && entity.field(target).is_none() {
                    let fields: Vec<_> = entity.fields().iter().map(|f| f.name).collect();
                    let hint = crate::did_you_mean(target, fields.iter().copied())
                        .map(|s| format!("; did you mean {s:?}?"))
                        .unwrap_or_default();
                    out.push(format!(
                        "sources.{name}.mapping: column {column:?} maps to {target:?}, which is not a field of {entity}{hint}"
                    ));
                }
            }
        }
        out
    }
}

impl Config {
    /// The expectations checked on files loaded into `table`: the configured ones, else the
    /// built-in defaults.
    pub fn expectations(&self, table: &str) -> Vec<crate::quality::Expectation> {
        match self.quality.get(table) {
            Some(list) => list.clone(),
            None => crate::quality::default_expectations(table),
        }
    }
}

fn entity_names() -> String {
    Entity::ALL
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", Path::new("shoplake.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.pipeline.batch_size, 65_536);
    }

    #[test]
    fn reports_every_problem_with_hints() {
        let text = r#"
[pipeline]
batch_size = 0
[sources.pos]
entity = "sales"
currency = "XYZ"
[sources.pos.mapping]
"Sale Amt" = "amout"
"#;
        let err = Config::parse(text, Path::new("shoplake.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size"), "{err}");
        assert!(err.contains("XYZ"), "{err}");
        assert!(err.contains("did you mean \"amount\""), "{err}");
    }

    #[test]
    fn the_example_file_loads() {
        let text = include_str!("../../../shoplake.example.toml");
        let c = Config::parse(text, Path::new("shoplake.example.toml")).unwrap();
        assert_eq!(
            c.pipeline,
            PipelineConfig::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            c.marts,
            MartsConfig::default(),
            "the example shows the defaults"
        );
        assert_eq!(c.reports, ReportsConfig::default());
        let pos = &c.sources["pos"];
        assert_eq!(pos.entity, Some(Entity::Sales));
        assert_eq!(pos.mapping["Sale Amt"], "amount");
        assert_eq!(c.export.password_env, ExportConfig::default().password_env);
        assert!(c.export.url.is_some(), "the example shows an export URL");
        assert_eq!(
            c.expectations("fact_sales"),
            crate::quality::default_expectations("fact_sales"),
            "the example shows the default expectations"
        );
        assert_eq!(c.orchestrate.landing, None);
        assert_eq!(
            OrchestrateConfig {
                landing: None,
                ..c.orchestrate.clone()
            },
            OrchestrateConfig::default(),
            "the example shows the defaults"
        );
        assert!(
            text.contains("# landing = "),
            "the example shows the landing folder"
        );
        assert_eq!(
            c.schedules,
            default_schedules(),
            "the example shows the defaults"
        );
        assert_eq!(
            c.notify.quarantine_spike_rate,
            NotifyConfig::default().quarantine_spike_rate
        );
        let hook = &c.notify.webhooks[0];
        assert_eq!(hook.url_env.as_deref(), Some("SHOPLAKE_SLACK_WEBHOOK"));
        assert_eq!(hook.events, default_events());
        assert_eq!(
            (hook.timeout_ms, hook.max_attempts),
            (
                WebhookConfig::new("x").timeout_ms,
                WebhookConfig::new("x").max_attempts
            )
        );
    }

    #[test]
    fn orchestrate_defaults_and_problems() {
        let c = Config::default();
        assert_eq!(c.orchestrate.timezone, "UTC");
        assert_eq!(c.schedules.len(), 2);
        assert_eq!(c.schedules["daily_report"].cron, "0 2 * * *");
        assert_eq!(c.schedules["monthly_report"].job, Job::MonthlyReport);
        // An empty [schedules] table turns the defaults off.
        let c = Config::parse("[schedules]\n", Path::new("x.toml")).unwrap();
        assert!(c.schedules.is_empty());
        let err = Config::parse(
            r#"
[orchestrate]
landing_poll_ms = 0
retry_attempts = 0
retry_base_ms = 500
retry_max_ms = 100
[schedules]
Nightly = { cron = "@reboot", job = "run" }
[notify]
quarantine_spike_rate = 5
[[notify.webhooks]]
url = "hooks.example.com/T0/SECRET"
[[notify.webhooks]]
url = "https://hooks.example.com/T0/SECRET"
url_env = "HOOK"
events = []
[[notify.webhooks]]
max_attempts = 0
"#,
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "orchestrate.landing_poll_ms 0 is too small",
            "orchestrate.retry_attempts must be at least 1",
            "orchestrate.retry_max_ms 100 is less than retry_base_ms 500",
            "schedules.Nightly: a schedule name uses lower-case",
            "schedules.Nightly.cron: cron \"@reboot\": unknown macro",
            "notify.quarantine_spike_rate 5 must be between 0 and 1",
            "notify.webhooks[0].url: must start with http:// or https://",
            "notify.webhooks[1]: give `url` or `url_env`, not both",
            "notify.webhooks[1].events is empty",
            "notify.webhooks[2]: give `url`",
            "notify.webhooks[2].max_attempts must be at least 1",
        ] {
            assert!(err.contains(needle), "{needle}\n{err}");
        }
        assert!(!err.contains("SECRET"), "{err}");
        let err = Config::parse(
            "[[notify.webhooks]]\nurl = \"https://x.example/\"\nevents = [\"run_crashed\"]\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("run_crashed") && err.contains("run_failed"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_export_url_is_reported_without_its_password() {
        let text = "[export]\nurl = \"postgress://dw:hunter2@db/shop\"\n";
        let err = Config::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("export.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn marts_settings_are_exact_and_checked() {
        let c = Config::parse(
            "[marts]\nincentive_share = 0.015\ncoupon_tiers = [{ name = \"vip\", min_spend_usd = 250, discount_percent = 20 }, { name = \"plus\", min_spend_usd = \"99.95\" }]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.marts.incentive_share.scaled(8), Ok(1_500_000));
        assert_eq!(c.marts.coupon_tiers[0].min_spend_usd.scaled(2), Ok(25_000));
        assert_eq!(c.marts.coupon_tiers[1].min_spend_usd.scaled(2), Ok(9_995));
        let err = Config::parse(
            "[marts]\nincentive_share = 2\ncoupon_tiers = [{ name = \"a\", min_spend_usd = \"1.234\" }, { name = \"a\", min_spend_usd = \"x\" }]\n[reports]\ntop_n = 0\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "incentive_share 2 must be between 0 and 1",
            "more than 2 decimal places",
            "used twice",
            "\"x\" is not a decimal number",
            "top_n",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("[pipeline]\nbatchsize = 3\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("batchsize"), "{err}");
    }
}
