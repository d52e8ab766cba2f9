//! Data-quality expectations (`[[quality.<table>]]` in `shoplake.toml`), checked on every file a
//! run loads, before its rows are committed.
//!
//! The pipeline hands an [`Evaluation`] the rows each file would add to its table (for
//! `fact_sales`, the spill files of the commit being prepared, read back one batch of the
//! needed columns at a time; for a reference table, the validated rows of the file) and what
//! it knows about the file from the scan: rows in, and rows quarantined because a column was
//! missing. [`Evaluation::finish`] gives one [`QualityResult`] per file and expectation. A file
//! failing an `error` expectation is kept out of the commit by the pipeline.
//!
//! Memory: counters per file and expectation, plus for each `unique` expectation a Bloom filter
//! over the run's rows (16 bits a row: 20 MB at 10M rows) and an exact count of the values the
//! filter reports as maybe seen before (the true repeats, plus about 0.1% false alarms).
//!
//! ```
//! use shoplake_core::ReasonCode;
//! use shoplake_etl::quality::missing_columns;
//! assert_eq!(missing_columns(ReasonCode::MissingKey, "customer_id is empty"), vec!["customer_id"]);
//! ```

use crate::dedupe::Bloom;
use crate::schema::{FACT_SALES, dim_schema, dim_table};
use crate::{EtlError, Result};
use chrono::{NaiveDate, TimeZone, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::util::display::array_value_to_string;
use shoplake_core::quality::{Bound, Check, Expectation, Severity};
use shoplake_core::values::{RATE_SCALE, format_decimal};
use shoplake_core::{Config, Entity, ReasonCode};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub use shoplake_catalog::ledger::QualityResult;

/// Every table expectations can be declared on: the tables loaded from files.
pub fn tables() -> Vec<&'static str> {
    Entity::ALL.iter().map(|e| dim_table(*e).0).collect()
}

/// The columns of `table` an expectation can check, with their types: every column of
/// `fact_sales`; the columns of a dimension that come from its files (PII as `<field>_hash`).
pub fn table_columns(table: &str) -> Option<SchemaRef> {
    if table == "fact_sales" {
        return Some(FACT_SALES.clone());
    }
    let entity = Entity::ALL
        .into_iter()
        .find(|e| *e != Entity::Sales && dim_table(*e).0 == table)?;
    let full = dim_schema(entity);
    let fields: Vec<Field> = entity
        .fields()
        .iter()
        .filter_map(|f| {
            let name = if f.pii {
                format!("{}_hash", f.name)
            } else {
                f.name.to_string()
            };
            full.field_with_name(&name).ok().cloned()
        })
        .collect();
    Some(Arc::new(Schema::new(fields)))
}

/// Columns a quarantined row never brought to its table, by the reason it was rejected: such a
/// row counts as empty in that column for `not_null` and `max_null_rate` (an amount that is
/// missing on 30% of a file's rows is missing, whether those rows were kept out or not).
/// `bad_date` counts as an empty date (the value is unusable); `bad_number` does not count
/// (the column had a value, a wrong one: see the quarantine).
pub fn missing_columns(reason: ReasonCode, detail: &str) -> Vec<&str> {
    match reason {
        ReasonCode::MissingAmount => vec!["amount", "amount_usd"],
        ReasonCode::MissingKey => {
            if let Some(name) = detail.strip_suffix(" is empty") {
                vec![name]
            } else if detail.starts_with("neither product_id nor product_name") {
                vec!["product_id", "product_name"]
            } else {
                Vec::new()
            }
        }
        ReasonCode::BadDate => detail
            .split_once(':')
            .map(|(name, _)| vec![name])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// An expectation checked against its table's schema: ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub check: Check,
    pub column: Option<String>,
    pub severity: Severity,
    /// The column's type in the table.
    data_type: Option<DataType>,
    accepted: HashSet<String>,
    /// Range bounds as ordinals of the column's type (see [`ordinal`]), and as written.
    min: Option<(i128, String)>,
    max: Option<(i128, String)>,
    /// max_null_rate: the share scaled by 10^8.
    max_rate: i128,
    min_rows: u64,
    max_age_days: u32,
}

/// The rules of `table`, or every problem with them.
pub fn rules(config: &Config, table: &str) -> std::result::Result<Vec<Rule>, Vec<String>> {
    let list = config.expectations(table);
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let Some(schema) = table_columns(table) else {
        let hint = shoplake_core::did_you_mean(table, tables())
            .map(|s| format!("did you mean {s:?}? "))
            .unwrap_or_default();
        return Err(vec![format!(
            "quality.{table}: not a table loaded from files; {hint}expectations apply to {}",
            tables().join(", ")
        )]);
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let at = format!("quality.{table}[{i}]");
        let p = e.problems(&at);
        if !p.is_empty() {
            problems.extend(p);
            continue;
        }
        match rule(e, &schema, table, &at) {
            Ok(r) => out.push(r),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Every problem with the expectations of `config` that needs the table schemas (what
/// `Config::problems` cannot see): unknown tables, unknown columns, checks a column's type
/// does not support.
pub fn problems(config: &Config) -> Vec<String> {
    let mut names: Vec<&str> = tables();
    names.extend(config.quality.keys().map(String::as_str));
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|t| rules(config, t).err())
        .flatten()
        .collect()
}

fn rule(
    e: &Expectation,
    schema: &Schema,
    table: &str,
    at: &str,
) -> std::result::Result<Rule, String> {
    let check = Check::parse(&e.check)?;
    let data_type = match &e.column {
        None => None,
        Some(c) => match schema.field_with_name(c) {
            Ok(f) => Some(f.data_type().clone()),
            Err(_) => {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let hashed = format!("{c}_hash");
                let hint = if cols.contains(&hashed.as_str()) {
                    format!("PII is stored as a keyed hash: did you mean {hashed:?}? ")
                } else {
                    shoplake_core::did_you_mean(c, cols.iter().copied())
                        .map(|s| format!("did you mean {s:?}? "))
                        .unwrap_or_default()
                };
                return Err(format!(
                    "{at}: {table} has no column {c:?} that files fill; {hint}the columns are {}",
                    cols.join(", ")
                ));
            }
        },
    };
    let column = e.column.clone();
    let col = column.clone().unwrap_or_default();
    let mut r = Rule {
        name: e.display_name(),
        check,
        column,
        severity: e.severity,
        data_type: data_type.clone(),
        accepted: e.values.iter().flatten().cloned().collect(),
        min: None,
        max: None,
        max_rate: 0,
        min_rows: 0,
        max_age_days: e.max_age_days.unwrap_or(0),
    };
    let dt = data_type.unwrap_or(DataType::Null);
    match check {
        Check::Range => {
            let kind = ordinal_kind(&dt).ok_or_else(|| {
                format!("{at}: range needs a number or date column; {col} is {dt}")
            })?;
            for (slot, b) in [(&mut r.min, &e.min), (&mut r.max, &e.max)] {
                if let Some(b) = b {
                    *slot = Some((bound_ordinal(b, kind, at, &col)?, b.text()));
                }
            }
        }
        Check::Freshness => match ordinal_kind(&dt) {
            Some(Kind::Days | Kind::Micros) => {}
            _ => {
                return Err(format!(
                    "{at}: freshness needs a date or timestamp column; {col} is {dt}"
                ));
            }
        },
        Check::MaxNullRate => {
            r.max_rate = e
                .max
                .as_ref()
                .and_then(|m| m.scaled(RATE_SCALE).ok())
                .unwrap_or(0);
        }
        Check::MinRows => {
            r.min_rows = e
                .min
                .as_ref()
                .and_then(|m| m.scaled(0).ok())
                .unwrap_or(0)
                .max(0) as u64;
        }
        Check::NotNull | Check::Unique | Check::AcceptedValues => {}
    }
    Ok(r)
}

/// How values of a column are compared: numbers scaled by 10^8, dates as days since
/// 1970-01-01, timestamps as microseconds since then.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    Days,
    Micros,
}

fn ordinal_kind(dt: &DataType) -> Option<Kind> {
    match dt {
        DataType::Int32 | DataType::Int64 => Some(Kind::Number),
        DataType::Decimal128(_, s) if (*s as u32) <= RATE_SCALE => Some(Kind::Number),
        DataType::Date32 => Some(Kind::Days),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(Kind::Micros),
        _ => None,
    }
}

fn bound_ordinal(b: &Bound, kind: Kind, at: &str, col: &str) -> std::result::Result<i128, String> {
    let day = |d: NaiveDate| crate::dim::days_since_epoch(d) as i128;
    match (kind, b.date()) {
        (Kind::Number, None) => b.scaled(RATE_SCALE).map_err(|e| format!("{at}: {e}")),
        (Kind::Days, Some(d)) => Ok(day(d)),
        (Kind::Micros, Some(d)) => Ok(day(d) * 86_400_000_000),
        (Kind::Number, Some(_)) => {
            Err(format!("{at}: {col} holds numbers; {} is a date", b.text()))
        }
        (_, None) => Err(format!(
            "{at}: {col} holds dates; write the bound as a date (\"2024-01-31\"), not {}",
            b.text()
        )),
    }
}

/// The ordinals (see [`Kind`]) of a column's values.
fn ordinals(array: &ArrayRef) -> Option<Vec<Option<i128>>> {
    let scale_up = |s: i8| 10i128.pow(RATE_SCALE - s as u32);
    Some(match array.data_type() {
        DataType::Int32 => array
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(|v| v as i128 * scale_up(0)))
            .collect(),
        DataType::Int64 => array
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(|v| v as i128 * scale_up(0)))
            .collect(),
        DataType::Decimal128(_, s) if (*s as u32) <= RATE_SCALE => {
            let m = scale_up(*s);
            array
                .as_primitive::<Decimal128Type>()
                .iter()
                .map(|v| v.map(|v| v * m))
                .collect()
        }
        DataType::Date32 => array
            .as_primitive::<Date32Type>()
            .iter()
            .map(|v| v.map(|v| v as i128))
            .collect(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|v| v.map(|v| v as i128))
            .collect(),
        _ => return None,
    })
}

/// A 128-bit hash of each value (None for nulls), seeded by the file so equal values of two
/// files differ.
fn hashes(array: &ArrayRef, file_id: i64) -> Vec<Option<u128>> {
    let seed = file_id as u64;
    let h = |b: &[u8]| xxhash_rust::xxh3::xxh3_128_with_seed(b, seed);
    match array.data_type() {
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|s| h(s.as_bytes())))
            .collect(),
        DataType::Binary => array.as_binary::<i32>().iter().map(|v| v.map(h)).collect(),
        _ => match ordinals(array) {
            Some(o) => o
                .into_iter()
                .map(|v| v.map(|v| h(&v.to_le_bytes())))
                .collect(),
            None => (0..array.len())
                .map(|i| {
                    (!array.is_null(i)).then(|| {
                        h(array_value_to_string(array, i)
                            .unwrap_or_default()
                            .as_bytes())
                    })
                })
                .collect(),
        },
    }
}

/// What is known about one file before its rows are looked at.
#[derive(Debug, Clone, Default)]
pub struct FileFacts {
    pub file_id: i64,
    /// Rows read from the file (loaded + quarantined + duplicates).
    pub rows_in: i64,
    /// Rows quarantined with a column missing (see [`missing_columns`]), by column.
    pub missing: BTreeMap<String, i64>,
}

#[derive(Debug, Default, Clone)]
struct Acc {
    /// Nulls among the staged rows; rows outside range or not accepted; repeated values.
    nulls: u64,
    bad: u64,
    /// Values not accepted, the first few distinct ones with their counts.
    examples: BTreeMap<String, u64>,
    newest: Option<i128>,
}

/// Distinct unaccepted values shown in a message.
const EXAMPLES: usize = 5;

/// The evaluation of a table's rules over the files of one load.
pub struct Evaluation {
    table: String,
    rules: Vec<Rule>,
    files: BTreeMap<i64, (FileFacts, u64, Vec<Acc>)>,
    /// Per `unique` rule: the filter of values seen and the values seen maybe twice.
    unique: HashMap<usize, (Bloom, HashSet<u128>)>,
}

impl Evaluation {
    /// `rows` is about how many rows will be observed (sizes the `unique` filters).
    pub fn new(table: &str, rules: Vec<Rule>, files: Vec<FileFacts>, rows: u64) -> Evaluation {
        let unique = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.check == Check::Unique)
            .map(|(i, _)| (i, (Bloom::with_capacity(rows as usize), HashSet::new())))
            .collect();
        let n = rules.len();
        Evaluation {
            table: table.to_string(),
            files: files
                .into_iter()
                .map(|f| (f.file_id, (f, 0, vec![Acc::default(); n])))
                .collect(),
            rules,
            unique,
        }
    }

    /// The columns [`Self::observe`] needs, `file_id` first.
    pub fn columns(&self) -> Vec<String> {
        let mut out = vec!["file_id".to_string()];
        for r in &self.rules {
            if let Some(c) = &r.column
                && !out.contains(c)
            {
                out.push(c.clone());
            }
        }
        out
    }

    /// The columns of the second pass ([`Self::recheck`]); empty when none is needed.
    pub fn recheck_columns(&self) -> Vec<String> {
        let mut out = vec!["file_id".to_string()];
        for (i, (_, maybe)) in &self.unique {
            let c = self.rules[*i].column.clone().unwrap_or_default();
            if !maybe.is_empty() && !out.contains(&c) {
                out.push(c);
            }
        }
        if out.len() == 1 { Vec::new() } else { out }
    }

    /// Take a batch of staged rows: `file_id` and the rule columns, by name.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        for (file_id, rows) in file_runs(batch)? {
            let Some((_, staged, accs)) = self.files.get_mut(&file_id) else {
                return Err(EtlError::Internal(format!(
                    "quality: rows of file {file_id}, which is not in the load"
                )));
            };
            *staged += rows.len() as u64;
            for (i, rule) in self.rules.iter().enumerate() {
                let Some(column) = &rule.column else { continue };
                let array = column_of(batch, column)?.slice(rows.start, rows.len());
                let acc = &mut accs[i];
                match rule.check {
                    Check::NotNull | Check::MaxNullRate => acc.nulls += array.null_count() as u64,
                    Check::AcceptedValues => {
                        for j in 0..array.len() {
                            if array.is_null(j) {
                                continue;
                            }
                            let v = match array.as_string_opt::<i32>() {
                                Some(s) => s.value(j).to_string(),
                                None => array_value_to_string(&array, j).unwrap_or_default(),
                            };
                            if !rule.accepted.contains(&v) {
                                acc.bad += 1;
                                if acc.examples.len() < EXAMPLES || acc.examples.contains_key(&v) {
                                    *acc.examples.entry(v).or_default() += 1;
                                }
                            }
                        }
                    }
                    Check::Range => {
                        let values = ordinals(&array).unwrap_or_default();
                        acc.bad += values
                            .iter()
                            .flatten()
                            .filter(|v| {
                                rule.min.as_ref().is_some_and(|(m, _)| *v < m)
                                    || rule.max.as_ref().is_some_and(|(m, _)| *v > m)
                            })
                            .count() as u64;
                    }
                    Check::Freshness => {
                        let newest = ordinals(&array)
                            .unwrap_or_default()
                            .into_iter()
                            .flatten()
                            .max();
                        acc.newest = acc.newest.max(newest);
                    }
                    Check::Unique => {
                        let (bloom, maybe) = self.unique.get_mut(&i).expect("made in new");
                        for h in hashes(&array, file_id).into_iter().flatten() {
                            if bloom.may_contain(h) {
                                maybe.insert(h);
                            } else {
                                bloom.insert(h);
                            }
                        }
                    }
                    Check::MinRows => {}
                }
            }
        }
        Ok(())
    }

    /// Second pass over the same rows (only [`Self::recheck_columns`] are needed): count
    /// exactly how often each value the filters flagged occurs.
    pub fn recheck(&mut self, batch: &RecordBatch, counts: &mut RecheckCounts) -> Result<()> {
        for (file_id, rows) in file_runs(batch)? {
            for (i, (_, maybe)) in &self.unique {
                if maybe.is_empty() {
                    continue;
                }
                let column = self.rules[*i].column.as_deref().unwrap_or_default();
                let array = column_of(batch, column)?.slice(rows.start, rows.len());
                for h in hashes(&array, file_id).into_iter().flatten() {
                    if maybe.contains(&h) {
                        let n = counts.0.entry((*i, h)).or_default();
                        *n += 1;
                        if *n > 1 {
                            *counts.1.entry((*i, file_id)).or_default() += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The result of every rule on every file. `table_newest` holds, per freshness column,
    /// the newest value the table already has (as an ordinal of the column's type); `now` is
    /// the run's clock.
    pub fn finish(
        self,
        run_id: i64,
        table_newest: &HashMap<String, i128>,
        recheck: RecheckCounts,
        now: chrono::DateTime<Utc>,
    ) -> Vec<QualityResult> {
        let mut out = Vec::new();
        for (file_id, (facts, staged, accs)) in self.files {
            for (i, (rule, acc)) in self.rules.iter().zip(accs).enumerate() {
                let repeats = recheck.1.get(&(i, file_id)).copied().unwrap_or(0);
                let (passed, observed, threshold, message) =
                    judge(rule, &facts, staged, &acc, repeats, table_newest, now);
                out.push(QualityResult {
                    run_id,
                    table_name: self.table.clone(),
                    file_id,
                    name: rule.name.clone(),
                    check: rule.check.as_str().to_string(),
                    column: rule.column.clone(),
                    severity: rule.severity.as_str().to_string(),
                    passed,
                    observed,
                    threshold,
                    message,
                    checked_at: now,
                });
            }
        }
        out
    }
}

/// Counts of the second pass: per (unique rule, value) its occurrences, per (rule, file) the
/// rows that repeat a value.
#[derive(Default)]
pub struct RecheckCounts(HashMap<(usize, u128), u32>, HashMap<(usize, i64), u64>);

fn judge(
    rule: &Rule,
    facts: &FileFacts,
    staged: u64,
    acc: &Acc,
    repeats: u64,
    table_newest: &HashMap<String, i128>,
    now: chrono::DateTime<Utc>,
) -> (bool, Option<f64>, Option<f64>, String) {
    let col = rule.column.as_deref().unwrap_or_default();
    let missing = facts.missing.get(col).copied().unwrap_or(0).max(0) as u64;
    let rows_in = facts.rows_in.max(0) as u64;
    match rule.check {
        Check::NotNull => {
            let n = acc.nulls + missing;
            let msg = if n == 0 {
                format!("{col} is never empty")
            } else {
                format!("{col} is empty on {n} of {rows_in} rows")
            };
            (n == 0, Some(n as f64), Some(0.0), msg)
        }
        Check::MaxNullRate => {
            let n = acc.nulls + missing;
            let rate = if rows_in == 0 {
                0.0
            } else {
                n as f64 / rows_in as f64
            };
            // n / rows_in > max, exactly: n * 10^8 > max * rows_in.
            let failed = (n as i128) * 10i128.pow(RATE_SCALE) > rule.max_rate * rows_in as i128;
            let max_pct = trim(format_decimal(rule.max_rate, RATE_SCALE - 2));
            let msg = format!(
                "{col} missing on {:.1}% of rows ({n} of {rows_in}; max {max_pct}%)",
                rate * 100.0
            );
            (
                !failed,
                Some(rate),
                Some(rule.max_rate as f64 / 10f64.powi(RATE_SCALE as i32)),
                msg,
            )
        }
        Check::Unique => {
            let msg = if repeats == 0 {
                format!("every {col} value is unique")
            } else {
                format!("{repeats} of {staged} rows repeat a {col} value of an earlier row")
            };
            (repeats == 0, Some(repeats as f64), Some(0.0), msg)
        }
        Check::AcceptedValues => {
            let msg = if acc.bad == 0 {
                format!("every {col} value is accepted")
            } else {
                let shown: Vec<String> = acc
                    .examples
                    .iter()
                    .map(|(v, n)| format!("{v:?} ({n})"))
                    .collect();
                format!(
                    "{} rows with a {col} that is not accepted: {}{}",
                    acc.bad,
                    shown.join(", "),
                    if (acc.examples.values().sum::<u64>()) < acc.bad {
                        ", ..."
                    } else {
                        ""
                    }
                )
            };
            (acc.bad == 0, Some(acc.bad as f64), Some(0.0), msg)
        }
        Check::Range => {
            let bounds = format!(
                "[{}, {}]",
                rule.min.as_ref().map_or("-", |(_, t)| t.as_str()),
                rule.max.as_ref().map_or("-", |(_, t)| t.as_str())
            );
            let msg = if acc.bad == 0 {
                format!("every {col} value is within {bounds}")
            } else {
                format!("{} rows with {col} outside {bounds}", acc.bad)
            };
            (acc.bad == 0, Some(acc.bad as f64), Some(0.0), msg)
        }
        Check::MinRows => {
            let ok = staged >= rule.min_rows;
            let msg = format!("{staged} rows to load (min {})", rule.min_rows);
            (ok, Some(staged as f64), Some(rule.min_rows as f64), msg)
        }
        Check::Freshness => {
            let newest = acc.newest.max(table_newest.get(col).copied());
            let kind = rule
                .data_type
                .as_ref()
                .and_then(ordinal_kind)
                .unwrap_or(Kind::Days);
            let limit = rule.max_age_days;
            let Some(newest) = newest else {
                return (
                    false,
                    None,
                    Some(limit as f64),
                    format!("{col} has no value at all (max age {limit} days)"),
                );
            };
            let micros = match kind {
                Kind::Micros => newest,
                _ => newest * 86_400_000_000,
            };
            let when = Utc
                .timestamp_micros(micros.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
                .single()
                .unwrap_or(now);
            let age = match kind {
                Kind::Micros => (now - when).num_seconds() as f64 / 86_400.0,
                _ => (now.date_naive() - when.date_naive()).num_days() as f64,
            };
            let ok = age <= limit as f64;
            let shown = match kind {
                Kind::Micros => when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                _ => when.date_naive().to_string(),
            };
            (
                ok,
                Some(age),
                Some(limit as f64),
                format!("newest {col} is {shown}, {age:.0} days old (max {limit})"),
            )
        }
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn column_of<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| EtlError::Internal(format!("quality: column {name} is not in the batch")))
}

/// Runs of rows of the same file in a batch (usually one: a batch comes from one file).
fn file_runs(batch: &RecordBatch) -> Result<Vec<(i64, std::ops::Range<usize>)>> {
    let ids = column_of(batch, "file_id")?
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| EtlError::Internal("quality: file_id is not an Int64 column".into()))?;
    let mut out: Vec<(i64, std::ops::Range<usize>)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let id = id.unwrap_or(0);
        match out.last_mut() {
            Some((last, range)) if *last == id => range.end = i + 1,
            _ => out.push((id, i..i + 1)),
        }
    }
    Ok(out)
}

/// The rows of a reference file (canonical values as text, in the entity's field order) as a
/// batch of `file_id` and the columns the rules need, typed as in the table.
pub fn reference_batch(
    entity: Entity,
    file_id: i64,
    rows: &[Vec<Option<String>>],
    columns: &[String],
) -> Result<RecordBatch> {
    let table = dim_table(entity).0;
    let schema = table_columns(table)
        .ok_or_else(|| EtlError::Internal(format!("quality: {table} has no schema")))?;
    let mut fields = vec![Field::new("file_id", DataType::Int64, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![file_id; rows.len()]))];
    for name in columns.iter().filter(|c| *c != "file_id") {
        let pos = entity
            .fields()
            .iter()
            .position(|f| f.name == *name || (f.pii && format!("{}_hash", f.name) == *name))
            .ok_or_else(|| EtlError::Internal(format!("quality: {table} has no field {name}")))?;
        let text: ArrayRef = Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.get(pos).cloned().flatten()),
        ));
        let target = schema.field_with_name(name)?.data_type().clone();
        let typed = datafusion::arrow::compute::cast(&text, &target)?;
        fields.push(Field::new(name, target, true));
        arrays.push(typed);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// The newest value of each freshness column that `table` already holds, as ordinals.
pub async fn table_newest(
    tables: &shoplake_tables::Tables,
    table: &str,
    rules: &[Rule],
) -> Result<HashMap<String, i128>> {
    let mut out = HashMap::new();
    let columns: Vec<&str> = rules
        .iter()
        .filter(|r| r.check == Check::Freshness)
        .filter_map(|r| r.column.as_deref())
        .collect();
    if columns.is_empty() {
        return Ok(out);
    }
    let Some(provider) = tables
        .provider(&shoplake_tables::TableId::processed(table), None)
        .await?
    else {
        return Ok(out);
    };
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", provider)?;
    for c in columns {
        let batches = ctx
            .sql(&format!("SELECT MAX(\"{c}\") AS m FROM t"))
            .await?
            .collect()
            .await?;
        if let Some(b) = batches.first()
            && b.num_rows() == 1
            && let Some(Some(v)) = ordinals(b.column(0)).and_then(|o| o.first().copied())
        {
            out.insert(c.to_string(), v);
        }
    }
    Ok(out)
}

/// The failure message of a file: its failed `error` results, or None when it may load.
pub fn blocking_failure(results: &[QualityResult], file_id: i64) -> Option<String> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.file_id == file_id && !r.passed && r.severity == "error")
        .map(|r| r.message.as_str())
        .collect();
    (!failed.is_empty()).then(|| format!("quality: {}", failed.join("; ")))
}

/// Log every failed result (`warn` ones only alert; `error` ones also fail their file).
pub fn log_breaches(results: &[QualityResult]) {
    for r in results.iter().filter(|r| !r.passed) {
        tracing::warn!(
            run_id = r.run_id,
            table = %r.table_name,
            file_id = r.file_id,
            expectation = %r.name,
            severity = %r.severity,
            observed = ?r.observed,
            "quality breach: {}",
            r.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Decimal128Array};

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    /// Evaluate `table`'s rules (from `toml`) over batches of one or more files.
    fn eval(
        toml: &str,
        table: &str,
        batches: &[RecordBatch],
        facts: Vec<FileFacts>,
    ) -> Vec<QualityResult> {
        let rules = rules(&config(toml), table).unwrap();
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let mut e = Evaluation::new(table, rules, facts, rows);
        for b in batches {
            e.observe(b).unwrap();
        }
        let mut counts = RecheckCounts::default();
        if !e.recheck_columns().is_empty() {
            for b in batches {
                e.recheck(b, &mut counts).unwrap();
            }
        }
        let now = Utc.with_ymd_and_hms(2025, 6, 30, 12, 0, 0).unwrap();
        e.finish(1, &HashMap::new(), counts, now)
    }

    fn facts(file_id: i64, rows_in: i64) -> FileFacts {
        FileFacts {
            file_id,
            rows_in,
            missing: BTreeMap::new(),
        }
    }

    fn text_batch(name: &str, files: &[i64], values: &[Option<&str>]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("file_id", DataType::Int64, false),
                Field::new(name, DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(files.to_vec())),
                Arc::new(StringArray::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn unique_finds_repeats_per_file_only() {
        let toml = "[[quality.fact_sales]]\ncheck = \"unique\"\ncolumn = \"transaction_id\"\n";
        // File 1 repeats "a" twice across two batches; file 2 has "a" once: not a repeat.
        let b1 = text_batch(
            "transaction_id",
            &[1, 1, 1, 2],
            &[Some("a"), Some("b"), None, Some("a")],
        );
        let b2 = text_batch(
            "transaction_id",
            &[1, 1, 2],
            &[Some("a"), Some("a"), Some("c")],
        );
        let r = eval(
            toml,
            "fact_sales",
            &[b1, b2],
            vec![facts(1, 5), facts(2, 2)],
        );
        assert_eq!(r.len(), 2);
        assert!(!r[0].passed, "{r:?}");
        assert_eq!(r[0].observed, Some(2.0));
        assert!(
            r[0].message.contains("2 of 5 rows repeat"),
            "{}",
            r[0].message
        );
        assert!(r[1].passed, "{r:?}");
    }

    #[test]
    fn accepted_values_names_what_it_refused() {
        let toml = "[[quality.fact_sales]]\ncheck = \"accepted_values\"\ncolumn = \"status\"\nvalues = [\"COMPLETED\", \"REFUNDED\"]\nseverity = \"warn\"\n";
        let b = text_batch(
            "status",
            &[1, 1, 1, 1, 2],
            &[
                Some("COMPLETED"),
                Some("LOST"),
                Some("LOST"),
                None,
                Some("REFUNDED"),
            ],
        );
        let r = eval(toml, "fact_sales", &[b], vec![facts(1, 4), facts(2, 1)]);
        assert!(!r[0].passed);
        assert_eq!(r[0].severity, "warn");
        assert_eq!(r[0].observed, Some(2.0));
        assert!(r[0].message.contains("\"LOST\" (2)"), "{}", r[0].message);
        assert!(r[1].passed);
    }

    #[test]
    fn range_compares_decimals_and_dates_exactly() {
        let toml = "[[quality.fact_sales]]\ncheck = \"range\"\ncolumn = \"amount\"\nmin = 0\nmax = \"100.00\"\n[[quality.fact_sales]]\ncheck = \"range\"\ncolumn = \"sales_date\"\nmin = 2024-01-01\n";
        let schema = Arc::new(Schema::new(vec![
            Field::new("file_id", DataType::Int64, false),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new("sales_date", DataType::Date32, true),
        ]));
        let day = |y, m, d| crate::dim::days_since_epoch(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 1, 2])),
                Arc::new(
                    Decimal128Array::from(vec![Some(10000), Some(10001), Some(-1), Some(0)])
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(Date32Array::from(vec![
                    day(2024, 1, 1),
                    day(2023, 12, 31),
                    day(2024, 5, 1),
                    day(2024, 1, 2),
                ])),
            ],
        )
        .unwrap();
        let r = eval(toml, "fact_sales", &[b], vec![facts(1, 3), facts(2, 1)]);
        // file 1: amount 100.01 and -0.01 are out; 2023-12-31 is out.
        assert_eq!(
            (r[0].file_id, r[0].passed, r[0].observed),
            (1, false, Some(2.0))
        );
        assert_eq!(
            (r[1].file_id, r[1].passed, r[1].observed),
            (1, false, Some(1.0))
        );
        assert!(r[2].passed && r[3].passed, "{r:?}");
    }

    #[test]
    fn min_rows_counts_the_rows_a_file_brings() {
        let toml = "[[quality.dim_store]]\ncheck = \"min_rows\"\nmin = 2\n";
        let rows = vec![vec![Some("S1".to_string())]];
        let b = reference_batch(Entity::Stores, 7, &rows, &["file_id".to_string()]).unwrap();
        let r = eval(toml, "dim_store", &[b], vec![facts(7, 5), facts(8, 0)]);
        assert!(!r[0].passed);
        assert_eq!(r[0].observed, Some(1.0));
        assert!(
            r[0].message.contains("1 rows to load (min 2)"),
            "{}",
            r[0].message
        );
        // A file none of whose rows reached the stage has 0.
        assert_eq!(
            (r[1].file_id, r[1].observed, r[1].passed),
            (8, Some(0.0), false)
        );
    }

    #[test]
    fn freshness_takes_the_newest_of_file_and_table() {
        let toml = "[[quality.fact_sales]]\ncheck = \"freshness\"\ncolumn = \"sales_date\"\nmax_age_days = 3\n";
        let rules = rules(&config(toml), "fact_sales").unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("file_id", DataType::Int64, false),
            Field::new("sales_date", DataType::Date32, true),
        ]));
        let day = |y, m, d| crate::dim::days_since_epoch(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1])),
                Arc::new(Date32Array::from(vec![day(2025, 6, 1), day(2025, 6, 20)])),
            ],
        )
        .unwrap();
        let now = Utc.with_ymd_and_hms(2025, 6, 30, 12, 0, 0).unwrap();
        let run = |table: HashMap<String, i128>| {
            let mut e = Evaluation::new("fact_sales", rules.clone(), vec![facts(1, 2)], 2);
            e.observe(&b).unwrap();
            e.finish(1, &table, RecheckCounts::default(), now).remove(0)
        };
        let stale = run(HashMap::new());
        assert!(!stale.passed);
        assert_eq!(stale.observed, Some(10.0));
        assert!(
            stale.message.contains("2025-06-20, 10 days old (max 3)"),
            "{}",
            stale.message
        );
        let fresh = run(HashMap::from([(
            "sales_date".to_string(),
            day(2025, 6, 28) as i128,
        )]));
        assert!(fresh.passed, "{fresh:?}");
    }

    #[test]
    fn null_rate_counts_quarantined_rows_of_the_file() {
        let toml = "[[quality.fact_sales]]\ncheck = \"max_null_rate\"\ncolumn = \"customer_id\"\nmax = 0.10\n[[quality.fact_sales]]\ncheck = \"not_null\"\ncolumn = \"customer_id\"\nseverity = \"warn\"\n";
        // 9 staged rows, 1 null; 1 more row quarantined as missing_key customer_id: 2 of 10.
        let mut values = vec![Some("c"); 8];
        values.push(None);
        let b = text_batch("customer_id", &[1; 9], &values);
        let mut f = facts(1, 10);
        for c in missing_columns(ReasonCode::MissingKey, "customer_id is empty") {
            *f.missing.entry(c.to_string()).or_default() += 1;
        }
        let r = eval(toml, "fact_sales", std::slice::from_ref(&b), vec![f]);
        assert!(!r[0].passed);
        assert_eq!(r[0].observed, Some(0.2));
        assert_eq!(
            r[0].message,
            "customer_id missing on 20.0% of rows (2 of 10; max 10%)"
        );
        assert!(!r[1].passed);
        // Exactly at the limit passes: 1 of 10 is 10%.
        let r = eval(toml, "fact_sales", &[b], vec![facts(1, 10)]);
        assert!(r[0].passed, "{r:?}");
    }

    #[test]
    fn columns_and_types_are_checked_against_the_schemas() {
        let c = config(
            "[[quality.fact_sale]]\ncheck = \"min_rows\"\nmin = 1\n[[quality.fact_sales]]\ncheck = \"not_null\"\ncolumn = \"amout\"\n[[quality.fact_sales]]\ncheck = \"range\"\ncolumn = \"status\"\nmin = 1\n[[quality.dim_customer]]\ncheck = \"unique\"\ncolumn = \"email\"\n[[quality.dim_customer]]\ncheck = \"freshness\"\ncolumn = \"customer_id\"\nmax_age_days = 1\n",
        );
        let p = problems(&c).join("\n");
        for needle in [
            "quality.fact_sale: not a table loaded from files; did you mean \"fact_sales\"?",
            "has no column \"amout\" that files fill; did you mean \"amount\"?",
            "range needs a number or date column; status is Utf8",
            "did you mean \"email_hash\"?",
            "freshness needs a date or timestamp column",
        ] {
            assert!(p.contains(needle), "{needle}: {p}");
        }
        assert_eq!(problems(&Config::default()), Vec::<String>::new());
    }

    #[test]
    fn quarantine_details_name_their_columns() {
        assert_eq!(
            missing_columns(ReasonCode::MissingAmount, "amount is empty and ..."),
            vec!["amount", "amount_usd"]
        );
        assert_eq!(
            missing_columns(ReasonCode::BadDate, "sales_date: \"x\" is not a date"),
            vec!["sales_date"]
        );
        assert_eq!(
            missing_columns(
                ReasonCode::MissingKey,
                "neither product_id nor product_name is given"
            ),
            vec!["product_id", "product_name"]
        );
        assert!(missing_columns(ReasonCode::BadNumber, "amount: x").is_empty());
    }
}
