//! The retail model every other shoplake crate speaks: canonical [`Entity`]s and their
//! [`Field`](model::Field)s with the aliases the crawler maps from, quarantine [`ReasonCode`]s,
//! value parsing and normalisation rules ([`values`]), and the `shoplake.toml` spec ([`Config`]).
//!
//! It sits under every stage of the flow (sources -> raw -> crawl -> validate -> transform ->
//! star schema) and depends on none of them.
//!
//! ```
//! use shoplake_core::{Entity, model::normalize_column};
//! let field = Entity::Sales
//!     .fields()
//!     .iter()
//!     .find(|f| f.aliases.contains(&normalize_column("Purchase Date").as_str()))
//!     .unwrap();
//! assert_eq!(field.name, "sales_date");
//! ```

pub mod config;
pub mod cron;
pub mod model;
pub mod quality;
pub mod serve_config;
pub mod values;

pub use config::{
    Config, ConfigError, CouponTier, DecimalSetting, EventKind, Job, MartsConfig, NotifyConfig,
    OrchestrateConfig, PipelineConfig, ReportsConfig, ScheduleConfig, SourceConfig, UnknownMembers,
    WebhookConfig, WebhookFormat, check_webhook_url, parse_tz,
};
pub use model::{Entity, FieldType, Format, ReasonCode};
pub use serve_config::ServeConfig;

/// Source names become folder names in the lake: lower-case ASCII letters, digits, `_`, `-`.
pub fn is_valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
