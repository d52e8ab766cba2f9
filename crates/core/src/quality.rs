//! Data-quality expectations: spec types of `[[quality.<table>]]` in `shoplake.toml`.
//!
//! An expectation is checked on every file a run loads into its table, before the file's rows
//! are committed. A failed `error` expectation keeps the file out of the lake (the file is
//! marked failed with the reason); a failed `warn` one is recorded and logged. The checks are
//! evaluated by `shoplake_etl::quality`, which also checks the columns against the table
//! schemas (this crate does not know them).

use chrono::Datelike;
use serde::{Deserialize, Serialize};

/// The checks an expectation can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// No row of the file has the column empty.
    NotNull,
    /// No two rows of the file share a value of the column.
    Unique,
    /// Every non-empty value of the column is one of `values`.
    AcceptedValues,
    /// Every non-empty value of the column is within `min` and/or `max`.
    Range,
    /// At most `max` (a share, 0.10 is 10%) of the file's rows have the column empty.
    MaxNullRate,
    /// The file brings at least `min` rows to the table.
    MinRows,
    /// The newest value of the column is at most `max_age_days` old.
    Freshness,
}

impl Check {
    pub const ALL: [Check; 7] = [
        Check::NotNull,
        Check::Unique,
        Check::AcceptedValues,
        Check::Range,
        Check::MaxNullRate,
        Check::MinRows,
        Check::Freshness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::NotNull => "not_null",
            Check::Unique => "unique",
            Check::AcceptedValues => "accepted_values",
            Check::Range => "range",
            Check::MaxNullRate => "max_null_rate",
            Check::MinRows => "min_rows",
            Check::Freshness => "freshness",
        }
    }

    pub fn parse(s: &str) -> Result<Check, String> {
        Check::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Check::ALL.iter().map(|c| c.as_str()).collect();
                let hint = crate::did_you_mean(s, names.iter().copied())
                    .map(|h| format!("did you mean {h:?}? "))
                    .unwrap_or_default();
                format!(
                    "unknown check {s:?}; {hint}the checks are {}",
                    names.join(", ")
                )
            })
    }

    /// Whether the check is about one column.
    pub fn needs_column(self) -> bool {
        self != Check::MinRows
    }
}

/// What a failed expectation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The file is not loaded: it is marked failed with the reason (default).
    #[default]
    Error,
    /// The file loads; the breach is recorded and logged.
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }
}

/// A bound of `range`, `min_rows` or `max_null_rate`: a number (`10`, `0.1`, `"99.95"`) or a
/// date (`"2020-01-01"` or a TOML date `2020-01-01`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Whole(i64),
    Fraction(f64),
    Date(toml::value::Datetime),
    Text(String),
}

impl Bound {
    /// The bound as the user wrote it.
    pub fn text(&self) -> String {
        match self {
            Bound::Whole(i) => i.to_string(),
            Bound::Fraction(f) => format!("{f}"),
            Bound::Date(d) => d.to_string(),
            Bound::Text(s) => s.trim().to_string(),
        }
    }

    /// The bound as a number scaled by `10^scale`, exactly (no binary floating point).
    pub fn scaled(&self, scale: u32) -> Result<i128, String> {
        let text = self.text();
        let exact = text
            .split_once('.')
            .map(|(_, frac)| frac.trim_end_matches('0').len() <= scale as usize)
            .unwrap_or(true);
        match crate::values::parse_decimal(&text, scale) {
            Ok(Some(v)) if exact => Ok(v),
            Ok(Some(_)) => Err(format!("{text:?} has more than {scale} decimal places")),
            Ok(None) => Err("is empty".to_string()),
            Err(_) => Err(format!("{text:?} is not a number")),
        }
    }

    /// The bound as a date, when it is one.
    pub fn date(&self) -> Option<chrono::NaiveDate> {
        let text = self.text();
        chrono::NaiveDate::parse_from_str(text.get(..10).unwrap_or(&text), "%Y-%m-%d").ok()
    }
}

/// One `[[quality.<table>]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// not_null | unique | accepted_values | range | max_null_rate | min_rows | freshness.
    pub check: String,
    /// The column checked (every check but `min_rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Lower bound: `range` (number or date), `min_rows` (rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Bound>,
    /// Upper bound: `range` (number or date), `max_null_rate` (a share: 0.10 is 10%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Bound>,
    /// The values `accepted_values` accepts (compared exactly, after normalisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// How old the newest value may be, in days (`freshness`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
    /// `error` (default): a failing file is not loaded. `warn`: it loads; the breach is recorded.
    #[serde(default)]
    pub severity: Severity,
    /// Name shown in results and messages. Default: `<check>(<column>)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Expectation {
    fn new(check: Check, column: Option<&str>, severity: Severity) -> Expectation {
        Expectation {
            check: check.as_str().to_string(),
            column: column.map(str::to_string),
            min: None,
            max: None,
            values: None,
            max_age_days: None,
            severity,
            name: None,
        }
    }

    /// The name of the expectation in results: `name`, else `<check>(<column>)`.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match &self.column {
            Some(c) => format!("{}({c})", self.check),
            None => self.check.clone(),
        }
    }

    /// Every problem with this expectation (`at` names it in messages).
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        let check = match Check::parse(&self.check) {
            Ok(c) => c,
            Err(e) => {
                out.push(format!("{at}.check: {e}"));
                return out;
            }
        };
        let c = check.as_str();
        match (&self.column, check.needs_column()) {
            (None, true) => out.push(format!("{at}: {c} needs `column`")),
            (Some(col), true) if col.trim().is_empty() => {
                out.push(format!("{at}: `column` is empty"))
            }
            (Some(_), false) => out.push(format!("{at}: {c} counts rows; remove `column`")),
            _ => {}
        }
        let unused = |name: &str, set: bool, out: &mut Vec<String>| {
            if set {
                out.push(format!("{at}: {c} does not use `{name}`; remove it"));
            }
        };
        match check {
            Check::NotNull | Check::Unique => {
                unused("min", self.min.is_some(), &mut out);
                unused("max", self.max.is_some(), &mut out);
            }
            Check::AcceptedValues => {
                match &self.values {
                    None => out.push(format!(
                        "{at}: accepted_values needs `values`, e.g. values = [\"COMPLETED\", \"REFUNDED\"]"
                    )),
                    Some(v) if v.is_empty() => {
                        out.push(format!("{at}: `values` is empty: no value would pass"))
                    }
                    _ => {}
                }
                unused("min", self.min.is_some(), &mut out);
                unused("max", self.max.is_some(), &mut out);
            }
            Check::Range => match (&self.min, &self.max) {
                (None, None) => out.push(format!("{at}: range needs `min`, `max` or both")),
                (min, max) => {
                    let parsed = |b: &Bound| -> Result<(bool, i128), String> {
                        match b.date() {
                            Some(d) => Ok((true, d.num_days_from_ce() as i128)),
                            None => b
                                .scaled(crate::values::RATE_SCALE)
                                .map(|v| (false, v))
                                .map_err(|e| format!("{e} nor a date (YYYY-MM-DD)")),
                        }
                    };
                    let mut got = Vec::new();
                    for (name, b) in [("min", min), ("max", max)] {
                        if let Some(b) = b {
                            match parsed(b) {
                                Ok(v) => got.push(v),
                                Err(e) => out.push(format!("{at}.{name}: {e}")),
                            }
                        }
                    }
                    if let [(da, a), (db, b)] = got[..] {
                        if da != db {
                            out.push(format!(
                                "{at}: `min` and `max` must both be numbers or both dates"
                            ));
                        } else if a > b {
                            out.push(format!("{at}: `min` is greater than `max`"));
                        }
                    }
                }
            },
            Check::MaxNullRate => {
                match &self.max {
                    None => out.push(format!(
                        "{at}: max_null_rate needs `max`, the share of rows that may be empty (0.10 is 10%)"
                    )),
                    Some(m) => match m.scaled(crate::values::RATE_SCALE) {
                        Ok(v) if (0..=10i128.pow(crate::values::RATE_SCALE)).contains(&v) => {}
                        Ok(_) => out.push(format!(
                            "{at}.max {} must be between 0 and 1 (0.10 is 10%)",
                            m.text()
                        )),
                        Err(e) => out.push(format!("{at}.max: {e}")),
                    },
                }
                unused("min", self.min.is_some(), &mut out);
            }
            Check::MinRows => {
                match &self.min {
                    None => out.push(format!("{at}: min_rows needs `min`, a number of rows")),
                    Some(m) => match m.scaled(0) {
                        Ok(v) if v >= 0 => {}
                        _ => out.push(format!(
                            "{at}.min {} must be a whole number of rows, 0 or more",
                            m.text()
                        )),
                    },
                }
                unused("max", self.max.is_some(), &mut out);
            }
            Check::Freshness => {
                if self.max_age_days.is_none() {
                    out.push(format!("{at}: freshness needs `max_age_days`"));
                }
                unused("min", self.min.is_some(), &mut out);
                unused("max", self.max.is_some(), &mut out);
            }
        }
        if check != Check::AcceptedValues {
            unused("values", self.values.is_some(), &mut out);
        }
        if check != Check::Freshness {
            unused("max_age_days", self.max_age_days.is_some(), &mut out);
        }
        out
    }
}

/// The expectations a table has when `shoplake.toml` says nothing about it. They hold on clean
/// data and on `shoplake generate` output, and catch a file that is mostly broken:
/// - `fact_sales`: at most half of a file's rows without an amount (error: such a file is a
///   broken export, e.g. a renamed or shifted column), at most 10% (warn: seed 001's own
///   sample misses 2 amounts in 10 rows, so 10% as an error would refuse real, usable files),
///   statuses from the known list (warn: an unknown status is kept, but worth a look), at
///   least one row loaded from every file (warn).
/// - every reference table: at least one row from every file (warn).
pub fn default_expectations(table: &str) -> Vec<Expectation> {
    let min_rows = || {
        let mut e = Expectation::new(Check::MinRows, None, Severity::Warn);
        e.min = Some(Bound::Whole(1));
        e
    };
    match table {
        "fact_sales" => {
            let mut broken = Expectation::new(Check::MaxNullRate, Some("amount"), Severity::Error);
            broken.max = Some(Bound::Text("0.50".into()));
            let mut nulls = Expectation::new(Check::MaxNullRate, Some("amount"), Severity::Warn);
            nulls.max = Some(Bound::Text("0.10".into()));
            nulls.name = Some("amount_often_missing".into());
            let mut status =
                Expectation::new(Check::AcceptedValues, Some("status"), Severity::Warn);
            status.values = Some(
                crate::values::STATUSES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            );
            vec![broken, nulls, status, min_rows()]
        }
        "dim_customer" | "dim_product" | "dim_store" | "dim_sales_person" | "dim_campaign"
        | "fx_rates" => vec![min_rows()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Expectation {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn every_check_needs_its_parameters() {
        let cases = [
            ("check = \"nul_rate\"\ncolumn = \"a\"", "unknown check"),
            (
                "check = \"max_nul_rate\"\ncolumn = \"a\"",
                "did you mean \"max_null_rate\"",
            ),
            ("check = \"not_null\"", "needs `column`"),
            (
                "check = \"accepted_values\"\ncolumn = \"a\"",
                "needs `values`",
            ),
            (
                "check = \"range\"\ncolumn = \"a\"",
                "needs `min`, `max` or both",
            ),
            (
                "check = \"range\"\ncolumn = \"a\"\nmin = 5\nmax = 1",
                "greater than",
            ),
            (
                "check = \"range\"\ncolumn = \"a\"\nmin = 2020-01-01\nmax = 3",
                "both dates",
            ),
            ("check = \"max_null_rate\"\ncolumn = \"a\"", "needs `max`"),
            (
                "check = \"max_null_rate\"\ncolumn = \"a\"\nmax = 10",
                "between 0 and 1",
            ),
            ("check = \"min_rows\"", "needs `min`"),
            ("check = \"min_rows\"\nmin = 1.5", "whole number"),
            (
                "check = \"min_rows\"\ncolumn = \"a\"\nmin = 1",
                "remove `column`",
            ),
            (
                "check = \"freshness\"\ncolumn = \"a\"",
                "needs `max_age_days`",
            ),
            (
                "check = \"unique\"\ncolumn = \"a\"\nvalues = [\"x\"]",
                "does not use `values`",
            ),
        ];
        for (text, needle) in cases {
            let problems = parse(text).problems("quality.t[0]").join("\n");
            assert!(problems.contains(needle), "{text}: {problems}");
        }
        for ok in [
            "check = \"range\"\ncolumn = \"a\"\nmin = \"2020-01-01\"\nmax = 2030-12-31",
            "check = \"range\"\ncolumn = \"a\"\nmin = 0\nmax = \"99.95\"",
            "check = \"max_null_rate\"\ncolumn = \"a\"\nmax = 0.1\nseverity = \"warn\"",
            "check = \"freshness\"\ncolumn = \"a\"\nmax_age_days = 2",
        ] {
            assert_eq!(parse(ok).problems("q"), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        for t in ["fact_sales", "dim_customer", "fx_rates"] {
            let d = default_expectations(t);
            assert!(!d.is_empty());
            for e in d {
                assert_eq!(e.problems(t), Vec::<String>::new());
            }
        }
    }
}
