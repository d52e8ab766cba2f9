//! The crawler: infers a file's layout (format, CSV delimiter and header, column names) and
//! schema (a type, and for dates a chrono format, per column) from a sample of its head, proposes
//! how its columns map onto a canonical [`Entity`] from the fields' aliases and the source and
//! file names, and reports schema drift between two versions of a source's files.

use crate::scan::{JsonArraySplitter, MAX_RECORD_BYTES, SplitError, json_problem};
use chrono::Datelike;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shoplake_core::SourceConfig;
use shoplake_core::model::{Entity, FieldType, Format, normalize_column};
use shoplake_core::values::{self, DATE_FORMATS};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How a file's records are laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub format: Format,
    /// CSV field delimiter (`,` for JSON formats, where it is unused).
    pub delimiter: u8,
    /// CSV quote character (`"`).
    pub quote: u8,
    /// Whether a CSV file starts with a header row (`false` for JSON formats).
    pub has_header: bool,
    /// Source column names in file order. Headerless CSV: `column_1`, `column_2`, ... JSON: the
    /// union of the records' keys in first-seen order, a nested object flattened one level as
    /// `parent_child`.
    pub columns: Vec<String>,
}

/// The type a column's sampled values fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferredType {
    /// Every sampled value is empty or a null marker.
    Null,
    Boolean,
    Integer,
    Decimal,
    Date,
    Text,
}

impl InferredType {
    pub fn as_str(self) -> &'static str {
        match self {
            InferredType::Null => "null",
            InferredType::Boolean => "boolean",
            InferredType::Integer => "integer",
            InferredType::Decimal => "decimal",
            InferredType::Date => "date",
            InferredType::Text => "text",
        }
    }
}

impl fmt::Display for InferredType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column as sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    pub ty: InferredType,
    /// For a date column: the format of [`DATE_FORMATS`] its values fit.
    pub date_format: Option<String>,
    /// Sampled values that were empty, a null marker, JSON `null` or absent.
    pub nulls: u64,
    /// Sampled values, nulls included (one per sampled row).
    pub samples: u64,
}

/// What the crawler inferred from a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSchema {
    pub layout: Layout,
    /// One per layout column, in the same order.
    pub columns: Vec<ColumnSchema>,
    /// Data rows (records) in the sample, the header excluded.
    pub rows_sampled: u64,
}

impl FileSchema {
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A proposed mapping of a file's columns onto an entity's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub entity: Entity,
    /// (source column, canonical field), in file order.
    pub columns: Vec<(String, String)>,
    /// Source columns mapped to nothing, in file order.
    pub unmapped: Vec<String>,
    /// The chrono format of the mapped date field(s).
    pub date_format: Option<String>,
    /// Share of the columns that match the entity's aliases (0..=1), plus 0.5 when the file
    /// name and 0.25 when the source name suggests the entity.
    pub score: f64,
}

/// How a file's schema differs from an earlier one of the same source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// Columns (by normalised name) new in the next schema, named as in the next file.
    pub added: Vec<String>,
    /// Columns of the previous schema gone from the next, named as in the previous file.
    pub removed: Vec<String>,
    /// (column, previous type, next type) where the type changed; `Null` on either side does
    /// not count.
    pub retyped: Vec<(String, InferredType, InferredType)>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.retyped.is_empty()
    }
}

/// Why a file could not be crawled or mapped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrawlError {
    #[error(
        "{file}: {what}, so there is nothing to load. Check the export that produced it and \
         ingest the file again"
    )]
    Empty { file: String, what: String },
    #[error(
        "{file}: line 1 is a header ({columns}) but no data rows follow, so there is nothing to \
         load. Check the export that produced it, or set `has_header = false` under \
         [sources.<name>] in shoplake.toml if line 1 is data"
    )]
    HeaderOnly { file: String, columns: String },
    #[error(
        "{file}: line {line} (byte offset {offset}): {problem}, so this is not a UTF-8 text file. \
         {hint}"
    )]
    NotText {
        file: String,
        line: u64,
        offset: u64,
        problem: String,
        hint: String,
    },
    #[error(
        "{file}: line {line} is {} bytes long, over the {MAX_RECORD_BYTES}-byte (1 MiB) limit for \
         one line. Is the format right (a CSV or NDJSON file holds one record per line)? Check \
         the line endings, or set `format` under [sources.<name>] in shoplake.toml",
        len_text(*.len, *.whole)
    )]
    LineTooLong {
        file: String,
        line: u64,
        len: u64,
        whole: bool,
    },
    #[error(
        "{file}: line 1: lines end with a lone carriage return (classic Mac OS line endings), \
         which shoplake does not read. Convert them to \\n or \\r\\n (e.g. `tr '\\r' '\\n'`) \
         and ingest the file again"
    )]
    CarriageReturns { file: String },
    #[error(
        "{file}: line {line}: the record starting here is {} bytes long, over the \
         {MAX_RECORD_BYTES}-byte (1 MiB) limit for one record. Split such records up, or keep \
         large blobs out of the file",
        len_text(*.len, *.whole)
    )]
    RecordTooLong {
        file: String,
        line: u64,
        len: u64,
        whole: bool,
    },
    #[error(
        "{file}: line {line}: {problem}. The file is not valid JSON: fix it (or re-export it), or \
         set `format` under [sources.<name>] in shoplake.toml if it is not JSON"
    )]
    BadJson {
        file: String,
        line: u64,
        problem: String,
    },
    #[error(
        "{file}: line {line}: expected {expected}, found {found}. shoplake reads a JSON array of \
         objects, an object holding one such array (e.g. {{\"records\": [...]}}), or one object \
         per line (NDJSON)"
    )]
    NotRecords {
        file: String,
        line: u64,
        expected: String,
        found: String,
    },
    #[error(
        "{file}: line {line}: only one column was found, but {share} of the sampled lines contain \
         {shown}: is the delimiter right? shoplake detects ',', ';', tab and '|'; for another \
         one set `delimiter = \"{}\"` under [sources.<name>] in shoplake.toml",
        delimiter_toml(*.delimiter)
    )]
    SuspectDelimiter {
        file: String,
        line: u64,
        delimiter: char,
        shown: String,
        share: String,
    },
    #[error(
        "{file}: no entity fits its columns ({columns}). Say what the file holds in \
         shoplake.toml, e.g.\n[sources.{source_name}]\nentity = \"sales\"  # or {entities}\n\
         [sources.{source_name}.mapping]\n\"{example}\" = \"sales_date\"  # source column = canonical \
         field; \"\" ignores a column"
    )]
    NoEntity {
        file: String,
        source_name: String,
        columns: String,
        example: String,
        entities: String,
    },
    #[error(
        "{file}: cannot load it as {entity}: {missing}. Columns found: {columns}. Map one of them \
         in shoplake.toml:\n[sources.{source_name}]\nentity = \"{entity}\"\n\
         [sources.{source_name}.mapping]\n\"<column>\" = \"{field}\""
    )]
    MissingField {
        file: String,
        source_name: String,
        entity: Entity,
        field: String,
        missing: String,
        columns: String,
    },
    #[error(
        "{file}: shoplake.toml maps column {column:?} to {field:?}, which is not a field of \
         {entity} (fields: {fields}). Fix [sources.{source_name}.mapping]"
    )]
    UnknownField {
        file: String,
        source_name: String,
        column: String,
        field: String,
        entity: Entity,
        fields: String,
    },
}

fn len_text(len: u64, whole: bool) -> String {
    if whole {
        len.to_string()
    } else {
        format!("at least {len}")
    }
}

fn delimiter_toml(c: char) -> String {
    match c {
        '\t' => "\\t".to_string(),
        '"' => "\\\"".to_string(),
        '\\' => "\\\\".to_string(),
        c => c.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Inference

/// Infer a file's layout and schema from `sample`, the decompressed head of the file (up to about
/// 1 MiB); `complete` says whether the sample is the whole file (if not, its last line may be
/// cut and is left out).
pub fn infer(file_name: &str, sample: &[u8], complete: bool) -> Result<FileSchema, CrawlError> {
    infer_with(file_name, sample, complete, None)
}

/// [`infer`], with a source's `format`, `delimiter` and `has_header` settings taking precedence
/// over what the sample suggests.
pub fn infer_with(
    file_name: &str,
    sample: &[u8],
    complete: bool,
    config: Option<&SourceConfig>,
) -> Result<FileSchema, CrawlError> {
    let text = decode_text(file_name, sample, complete)?;
    if text.trim().is_empty() {
        let what = if sample.is_empty() {
            "the file is empty"
        } else {
            "the file holds only blank lines"
        };
        return Err(CrawlError::Empty {
            file: file_name.to_string(),
            what: what.to_string(),
        });
    }
    let format = match config.and_then(|c| c.format) {
        Some(f) => f,
        None => match Format::from_file_name(file_name) {
            Some(Format::Json) if looks_like_ndjson(text) => Format::Ndjson,
            Some(f) => f,
            None => sniff(text),
        },
    };
    match format {
        Format::Csv => infer_csv(file_name, text, complete, config),
        Format::Ndjson => infer_ndjson(file_name, text, complete),
        Format::Json => infer_json(file_name, text, complete),
    }
}

/// The sample as text, without a UTF-8 byte-order mark (and, in a cut sample, without a
/// character cut in two at the end).
fn decode_text<'a>(file: &str, sample: &'a [u8], complete: bool) -> Result<&'a str, CrawlError> {
    let not_text = |offset: usize, problem: String, hint: &str| {
        let line = 1 + sample[..offset].iter().filter(|&&b| b == b'\n').count() as u64;
        CrawlError::NotText {
            file: file.to_string(),
            line,
            offset: offset as u64,
            problem,
            hint: hint.to_string(),
        }
    };
    const SAVE: &str = "Save it as UTF-8 CSV, JSON or NDJSON and ingest it again";
    if sample.starts_with(&[0xFF, 0xFE]) || sample.starts_with(&[0xFE, 0xFF]) {
        return Err(not_text(
            0,
            "it starts with a UTF-16 byte-order mark".to_string(),
            "Re-save it as UTF-8 (in Excel: \"CSV UTF-8\") and ingest it again",
        ));
    }
    if sample.starts_with(&[0x1F, 0x8B]) {
        return Err(not_text(
            0,
            "it starts like a gzip archive".to_string(),
            "Give it a name ending in .gz so it is decompressed, and ingest it again",
        ));
    }
    if sample.starts_with(b"PK\x03\x04") {
        return Err(not_text(
            0,
            "it starts like a zip archive (or an .xlsx workbook)".to_string(),
            "Unpack it, or export the sheet as CSV, and ingest that",
        ));
    }
    if let Some(at) = sample.iter().position(|&b| b == 0) {
        return Err(not_text(at, "it holds a NUL byte".to_string(), SAVE));
    }
    let base = if sample.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let body = &sample[base..];
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text),
        Err(e) if e.error_len().is_none() && !complete => {
            // The sample cut a character in two.
            Ok(std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default())
        }
        Err(e) => {
            let at = base + e.valid_up_to();
            Err(not_text(
                at,
                format!("byte 0x{:02x} is not valid UTF-8", sample[at]),
                "Is it in another encoding (Latin-1, Windows-1252)? Re-save it as UTF-8 and \
                 ingest it again",
            ))
        }
    }
}

/// The format of a file whose name says nothing: `[` starts a JSON array, `{` a JSON object or
/// NDJSON, anything else is CSV.
fn sniff(text: &str) -> Format {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => Format::Json,
        Some(b'{') if looks_like_ndjson(text) => Format::Ndjson,
        Some(b'{') => Format::Json,
        _ => Format::Csv,
    }
}

/// Whether text starting with `{` is one object per line: its first line is a whole object, and
/// either another line follows or the object holds no array of records.
fn looks_like_ndjson(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    if !first.starts_with('{') {
        return false;
    }
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(first) else {
        return false;
    };
    match lines.next() {
        Some(second) => second.starts_with('{'),
        None => !obj.values().any(Value::is_array),
    }
}

/// The physical lines of `text` (line `i + 1` at index `i`), without line terminators. Refuses
/// a file whose lines end with a lone `\r` (classic Mac OS), which the scanner does not split.
fn physical_lines<'a>(file: &str, text: &'a str) -> Result<Vec<&'a str>, CrawlError> {
    if !text.contains('\n') && text.trim_end().contains('\r') {
        return Err(CrawlError::CarriageReturns {
            file: file.to_string(),
        });
    }
    Ok(text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect())
}

/// Refuse a line over [`MAX_RECORD_BYTES`]. The last line of a cut sample counts only if it is
/// already over the limit.
fn check_line_lengths(file: &str, lines: &[&str], complete: bool) -> Result<(), CrawlError> {
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.len() > MAX_RECORD_BYTES {
            return Err(CrawlError::LineTooLong {
                file: file.to_string(),
                line: i as u64 + 1,
                len: line.len() as u64,
                whole: complete || i < last,
            });
        }
    }
    Ok(())
}

/// The header cells of a CSV file as column names: trimmed, without a byte-order mark; an empty
/// cell becomes `column_N` (N its 1-based position) and a repeated name gets `_2`, `_3`...
pub(crate) fn header_names<'a>(cells: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, cell) in cells.enumerate() {
        let cell = cell.trim_start_matches('\u{feff}').trim();
        let base = if cell.is_empty() {
            format!("column_{}", i + 1)
        } else {
            cell.to_string()
        };
        let mut name = base.clone();
        let mut n = 2;
        while seen.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        seen.insert(name.clone());
        names.push(name);
    }
    names
}

fn generated_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("column_{i}")).collect()
}

/// Date formats from most to least preferred when several fit every value equally well
/// (day/month ambiguity: month first, as `%m/%d/%Y` is the usual export).
const DATE_PREFERENCE: &[&str] = &[
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%m-%d-%Y",
    "%d-%m-%Y",
    "%d.%m.%Y",
    "%d %b %Y",
    "%b %d, %Y",
    "%d-%b-%Y",
];

fn date_rank(format: &str) -> usize {
    DATE_PREFERENCE
        .iter()
        .position(|f| *f == format)
        .unwrap_or_else(|| {
            DATE_PREFERENCE.len() + DATE_FORMATS.iter().position(|f| *f == format).unwrap_or(0)
        })
}

const COMPACT_DATE: &str = "%Y%m%d";

fn fits_date(value: &str, format: &str) -> bool {
    values::parse_date_with(value, format).is_some_and(|d| (1900..=2200).contains(&d.year()))
}

/// Whether `value` holds every literal character of `format` (`-` for `%Y-%m-%d`): a cheap test
/// that spares most chrono parses.
fn has_literals(value: &str, format: &str) -> bool {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            chars.next();
        } else if !value.contains(c) {
            return false;
        }
    }
    true
}

fn is_boolean(v: &str) -> bool {
    ["true", "false", "yes", "no", "y", "n", "t", "f"]
        .iter()
        .any(|b| v.eq_ignore_ascii_case(b))
}

/// Digits with a leading zero (`007`, `02139`) are codes, not numbers.
fn is_code_with_leading_zero(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The types one column's values fit, counted.
#[derive(Debug, Default, Clone)]
struct ColumnStats {
    samples: u64,
    nulls: u64,
    booleans: u64,
    integers: u64,
    numbers: u64,
    compact_dates: u64,
    /// Per format of [`DATE_FORMATS`]: values it parses.
    dates: Vec<u64>,
    /// Length of every non-null value, if all have the same one.
    same_len: Option<Option<usize>>,
}

impl ColumnStats {
    fn add(&mut self, value: Option<&str>) {
        self.samples += 1;
        let v = match value {
            Some(v) if !values::is_null_marker(v) => v.trim(),
            _ => {
                self.nulls += 1;
                return;
            }
        };
        self.same_len = match self.same_len {
            None => Some(Some(v.len())),
            Some(Some(l)) if l == v.len() => Some(Some(l)),
            Some(_) => Some(None),
        };
        if is_boolean(v) {
            self.booleans += 1;
            return;
        }
        if !is_code_with_leading_zero(v) {
            if !v.contains('.') && values::parse_integer(v).is_ok() {
                self.integers += 1;
                self.numbers += 1;
                if v.len() == 8
                    && v.bytes().all(|b| b.is_ascii_digit())
                    && fits_date(v, COMPACT_DATE)
                {
                    self.compact_dates += 1;
                }
                return;
            }
            if values::parse_decimal(v, 4).is_ok() {
                self.numbers += 1;
                return;
            }
        }
        let date_like = (6..=40).contains(&v.len())
            && v.bytes().any(|b| b.is_ascii_digit())
            && v.as_bytes()[0].is_ascii_alphanumeric();
        if date_like {
            if self.dates.is_empty() {
                self.dates = vec![0; DATE_FORMATS.len()];
            }
            for (i, f) in DATE_FORMATS.iter().enumerate() {
                if *f != COMPACT_DATE && has_literals(v, f) && fits_date(v, f) {
                    self.dates[i] += 1;
                }
            }
        }
    }

    fn non_null(&self) -> u64 {
        self.samples - self.nulls
    }

    /// Whether `count` of the non-null values is all of them, allowing 2% misfits (dirty values)
    /// once there are 50 or more.
    fn fits(&self, count: u64) -> bool {
        let n = self.non_null();
        count > 0 && n - count <= n / 50
    }

    fn best_date(&self) -> Option<(&'static str, u64)> {
        DATE_FORMATS
            .iter()
            .zip(&self.dates)
            .filter(|(_, n)| **n > 0)
            .min_by_key(|(f, n)| (std::cmp::Reverse(**n), date_rank(f)))
            .map(|(f, n)| (*f, *n))
    }

    fn ty(&self) -> (InferredType, Option<&'static str>) {
        if self.non_null() == 0 {
            return (InferredType::Null, None);
        }
        if self.fits(self.booleans) {
            return (InferredType::Boolean, None);
        }
        if self.fits(self.integers) {
            if self.compact_dates == self.integers {
                return (InferredType::Date, Some(COMPACT_DATE));
            }
            return (InferredType::Integer, None);
        }
        if self.fits(self.numbers) {
            return (InferredType::Decimal, None);
        }
        match self.best_date() {
            Some((f, n)) if self.fits(n) => (InferredType::Date, Some(f)),
            _ => (InferredType::Text, None),
        }
    }

    fn schema(&self, name: &str) -> ColumnSchema {
        let (ty, date_format) = self.ty();
        ColumnSchema {
            name: name.to_string(),
            ty,
            date_format: date_format.map(str::to_string),
            nulls: self.nulls,
            samples: self.samples,
        }
    }
}

/// Whether a header cell looks like data: a number, a date or a null marker.
fn looks_like_data(cell: &str) -> bool {
    let c = cell.trim();
    if c.is_empty() {
        return false;
    }
    values::is_null_marker(c)
        || values::parse_decimal(c, 4).is_ok()
        || DATE_FORMATS.iter().any(|f| fits_date(c, f))
}

fn is_known_alias(normalized: &str) -> bool {
    Entity::ALL
        .iter()
        .flat_map(|e| e.fields())
        .any(|f| f.aliases.contains(&normalized))
}

const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];
/// Characters people delimit with that the crawler does not pick by itself.
const OTHER_DELIMITERS: [char; 3] = [':', '~', '^'];

/// A CSV reader split at `\n` only, as the scanner reads (a `\r` left on the last field is
/// trimmed with the rest of the value's whitespace).
fn csv_reader(text: &str, delimiter: u8, quote: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quote(quote)
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(text.as_bytes())
}

/// A line holding nothing but whitespace (the scanner skips it too).
fn is_blank(r: &csv::StringRecord) -> bool {
    r.len() == 1 && r[0].trim().is_empty()
}

/// The delimiter giving the most consistent field count above one, if any does.
fn detect_delimiter(text: &str, complete: bool) -> Option<u8> {
    let mut best: Option<(bool, usize, u64, u8)> = None; // (consistent, fields, share‰, delim)
    for &d in &DELIMITERS {
        let mut counts: Vec<usize> = csv_reader(text, d, b'"')
            .into_records()
            .filter_map(Result::ok)
            .filter(|r| !is_blank(r))
            .take(500)
            .map(|r| r.len())
            .collect();
        if !complete && counts.len() > 1 {
            counts.pop();
        }
        if counts.is_empty() {
            continue;
        }
        let mut freq: HashMap<usize, u64> = HashMap::new();
        for c in &counts {
            *freq.entry(*c).or_default() += 1;
        }
        let (fields, n) = freq
            .into_iter()
            .max_by_key(|(c, n)| (*n, *c))
            .unwrap_or((1, 0));
        if fields < 2 {
            continue;
        }
        let share = n * 1000 / counts.len() as u64;
        let key = (share >= 900, fields, share, d);
        let better = match best {
            None => true,
            Some((c, f, s, _)) => (key.0, key.1, key.2) > (c, f, s),
        };
        if better {
            best = Some(key);
        }
    }
    best.map(|(_, _, _, d)| d)
}

/// One column found: complain when most lines hold another delimiter-like character.
fn check_single_column(file: &str, lines: &[&str]) -> Result<(), CrawlError> {
    let sampled: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .take(200)
        .collect();
    if sampled.is_empty() {
        return Ok(());
    }
    let candidates = DELIMITERS
        .iter()
        .map(|&b| b as char)
        .chain(OTHER_DELIMITERS);
    for c in candidates {
        let with = sampled.iter().filter(|l| l.contains(c)).count();
        if with * 5 >= sampled.len() * 4 {
            let line = lines.iter().position(|l| l.contains(c)).unwrap_or(0) as u64 + 1;
            let shown = match c {
                '\t' => "a tab".to_string(),
                c => format!("'{c}'"),
            };
            let share = if with == sampled.len() {
                "all".to_string()
            } else {
                format!("{with} of {}", sampled.len())
            };
            return Err(CrawlError::SuspectDelimiter {
                file: file.to_string(),
                line,
                delimiter: c,
                shown,
                share,
            });
        }
    }
    Ok(())
}

fn infer_csv(
    file: &str,
    text: &str,
    complete: bool,
    config: Option<&SourceConfig>,
) -> Result<FileSchema, CrawlError> {
    let lines = physical_lines(file, text)?;
    check_line_lengths(file, &lines, complete)?;
    let delimiter = match config.and_then(|c| c.delimiter).filter(char::is_ascii) {
        Some(c) => c as u8,
        None => match detect_delimiter(text, complete) {
            Some(d) => d,
            None => {
                check_single_column(file, &lines)?;
                b','
            }
        },
    };
    let quote = b'"';
    if config.and_then(|c| c.delimiter).is_some()
        && csv_reader(text, delimiter, quote)
            .into_records()
            .filter_map(Result::ok)
            .next()
            .is_some_and(|r| r.len() == 1)
    {
        // The configured delimiter splits nothing: say so if another one is there.
        check_single_column(file, &lines)?;
    }
    let mut records: Vec<csv::StringRecord> = csv_reader(text, delimiter, quote)
        .into_records()
        .filter_map(Result::ok)
        .filter(|r| !is_blank(r))
        .collect();
    if !complete && records.len() > 1 {
        records.pop();
    }
    let Some(first) = records.first() else {
        return Err(CrawlError::Empty {
            file: file.to_string(),
            what: "the file holds no records".to_string(),
        });
    };
    let width = {
        let mut freq: HashMap<usize, u64> = HashMap::new();
        for r in &records {
            *freq.entry(r.len()).or_default() += 1;
        }
        freq.into_iter()
            .max_by_key(|(c, n)| (*n, *c))
            .map_or(1, |(c, _)| c)
    };

    // Column statistics over the rows after the first, then decide on the header.
    let tally = |rows: &[csv::StringRecord], width: usize| {
        let mut stats = vec![ColumnStats::default(); width];
        for r in rows.iter().filter(|r| r.len() == width) {
            for (s, v) in stats.iter_mut().zip(r.iter()) {
                s.add(Some(v));
            }
        }
        stats
    };
    let header_width = first.len();
    let rest = tally(&records[1..], header_width);
    let has_header = match config.and_then(|c| c.has_header) {
        Some(h) => h,
        None => detect_header(first, &rest, records.len() > 1),
    };
    if has_header {
        let names = header_names(first.iter());
        if records.len() == 1 {
            return Err(CrawlError::HeaderOnly {
                file: file.to_string(),
                columns: names.join(", "),
            });
        }
        let columns = names.iter().zip(&rest).map(|(n, s)| s.schema(n)).collect();
        Ok(FileSchema {
            layout: Layout {
                format: Format::Csv,
                delimiter,
                quote,
                has_header,
                columns: names,
            },
            columns,
            rows_sampled: records.len() as u64 - 1,
        })
    } else {
        let names = generated_names(width);
        let stats = tally(&records, width);
        let columns = names.iter().zip(&stats).map(|(n, s)| s.schema(n)).collect();
        Ok(FileSchema {
            layout: Layout {
                format: Format::Csv,
                delimiter,
                quote,
                has_header,
                columns: names,
            },
            columns,
            rows_sampled: records.len() as u64,
        })
    }
}

/// Whether the first CSV row is a header: no cell looks like data (number, date, null marker),
/// and either a cell is a known column alias, or a column's values are typed where its header
/// is text, or (all text) the cells are distinct and differ in length from fixed-width columns.
fn detect_header(first: &csv::StringRecord, rest: &[ColumnStats], has_rows: bool) -> bool {
    if first.iter().all(|c| c.trim().is_empty()) || first.iter().any(looks_like_data) {
        return false;
    }
    if !has_rows {
        return true;
    }
    let normalized: Vec<String> = first
        .iter()
        .map(normalize_column)
        .filter(|n| !n.is_empty())
        .collect();
    if normalized.iter().any(|n| is_known_alias(n)) {
        return true;
    }
    let typed = rest
        .iter()
        .any(|s| !matches!(s.ty().0, InferredType::Text | InferredType::Null));
    if typed {
        return true;
    }
    let distinct: HashSet<&String> = normalized.iter().collect();
    if distinct.len() != normalized.len() {
        return false;
    }
    let (mut yes, mut no) = (0, 0);
    for (cell, s) in first.iter().zip(rest) {
        if let Some(Some(len)) = s.same_len
            && s.non_null() >= 2
        {
            if cell.trim().len() == len {
                no += 1;
            } else {
                yes += 1;
            }
        }
    }
    yes >= no
}

/// Column statistics keyed by name, in first-seen order (JSON formats).
#[derive(Default)]
struct Columns {
    names: Vec<String>,
    index: HashMap<String, usize>,
    stats: Vec<ColumnStats>,
}

impl Columns {
    fn add(&mut self, name: Cow<'_, str>, value: Option<&str>) {
        let i = match self.index.get(name.as_ref()) {
            Some(i) => *i,
            None => {
                let i = self.names.len();
                self.index.insert(name.to_string(), i);
                self.names.push(name.into_owned());
                self.stats.push(ColumnStats::default());
                i
            }
        };
        self.stats[i].add(value);
    }

    fn add_object(&mut self, entries: &[(String, Ordered)]) {
        for (key, value) in entries {
            match value {
                Ordered::Object(inner) if !inner.is_empty() => {
                    for (child, v) in inner {
                        let v = v.to_value();
                        self.add(
                            Cow::Owned(format!("{key}_{child}")),
                            json_text(&v).as_deref(),
                        );
                    }
                }
                other => {
                    let v = other.to_value();
                    self.add(Cow::Borrowed(key), json_text(&v).as_deref());
                }
            }
        }
    }

    /// The schema, counting a record without a column as a null in it.
    fn finish(mut self, layout_format: Format, rows: u64) -> FileSchema {
        for s in &mut self.stats {
            let missing = rows.saturating_sub(s.samples);
            s.samples += missing;
            s.nulls += missing;
        }
        let columns = self
            .names
            .iter()
            .zip(&self.stats)
            .map(|(n, s)| s.schema(n))
            .collect();
        FileSchema {
            layout: Layout {
                format: layout_format,
                delimiter: b',',
                quote: b'"',
                has_header: false,
                columns: self.names,
            },
            columns,
            rows_sampled: rows,
        }
    }
}

fn infer_ndjson(file: &str, text: &str, complete: bool) -> Result<FileSchema, CrawlError> {
    let lines = physical_lines(file, text)?;
    check_line_lengths(file, &lines, complete)?;
    let usable = if !complete && !text.ends_with('\n') {
        lines.len().saturating_sub(1)
    } else {
        lines.len()
    };
    let mut columns = Columns::default();
    let mut rows = 0u64;
    for (i, line) in lines[..usable].iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let number = i as u64 + 1;
        match serde_json::from_str::<Ordered>(line) {
            Ok(Ordered::Object(entries)) => {
                columns.add_object(&entries);
                rows += 1;
            }
            Ok(Ordered::Value(v)) if rows == 0 => {
                return Err(CrawlError::NotRecords {
                    file: file.to_string(),
                    line: number,
                    expected: "an object".to_string(),
                    found: crate::scan::json_kind(&v).to_string(),
                });
            }
            Err(e) if rows == 0 => {
                return Err(CrawlError::BadJson {
                    file: file.to_string(),
                    line: number,
                    problem: json_problem(&e, true),
                });
            }
            // A later bad line is the scanner's to report as malformed.
            Ok(_) | Err(_) => {}
        }
    }
    if rows == 0 {
        return Err(CrawlError::Empty {
            file: file.to_string(),
            what: "the file holds no complete JSON line within the sample".to_string(),
        });
    }
    Ok(columns.finish(Format::Ndjson, rows))
}

fn infer_json(file: &str, text: &str, complete: bool) -> Result<FileSchema, CrawlError> {
    let mut splitter = JsonArraySplitter::new(text.as_bytes());
    let mut element = Vec::new();
    let mut columns = Columns::default();
    let mut rows = 0u64;
    let mut seen = 0u64;
    loop {
        let el = match splitter.next_element(&mut element, MAX_RECORD_BYTES) {
            Ok(Some(el)) => el,
            Ok(None) => break,
            Err(SplitError::Syntax {
                at_eof: true, line, ..
            }) if !complete => {
                if seen == 0 && rows == 0 && text.len() >= MAX_RECORD_BYTES {
                    return Err(CrawlError::RecordTooLong {
                        file: file.to_string(),
                        line,
                        len: text.len() as u64,
                        whole: false,
                    });
                }
                break;
            }
            Err(SplitError::Syntax { line, problem, .. }) => {
                return Err(CrawlError::BadJson {
                    file: file.to_string(),
                    line,
                    problem,
                });
            }
            Err(SplitError::Shape { line, found }) => {
                return Err(CrawlError::NotRecords {
                    file: file.to_string(),
                    line,
                    expected: "an array of objects, or an object holding one".to_string(),
                    found,
                });
            }
            Err(SplitError::Io { line, error }) => {
                return Err(CrawlError::BadJson {
                    file: file.to_string(),
                    line,
                    problem: error.to_string(),
                });
            }
        };
        seen += 1;
        if el.truncated {
            return Err(CrawlError::RecordTooLong {
                file: file.to_string(),
                line: el.line,
                len: el.len as u64,
                whole: true,
            });
        }
        match serde_json::from_slice::<Ordered>(&element) {
            Ok(Ordered::Object(entries)) => {
                columns.add_object(&entries);
                rows += 1;
            }
            Ok(Ordered::Value(v)) if rows == 0 => {
                return Err(CrawlError::NotRecords {
                    file: file.to_string(),
                    line: el.line,
                    expected: "an object".to_string(),
                    found: crate::scan::json_kind(&v).to_string(),
                });
            }
            Err(e) if rows == 0 => {
                return Err(CrawlError::BadJson {
                    file: file.to_string(),
                    line: el.line,
                    problem: json_problem(&e, !element.contains(&b'\n')),
                });
            }
            Ok(_) | Err(_) => {}
        }
    }
    if rows == 0 {
        return Err(CrawlError::Empty {
            file: file.to_string(),
            what: "the JSON array holds no records".to_string(),
        });
    }
    Ok(columns.finish(Format::Json, rows))
}

/// A JSON value whose objects keep their keys in file order (serde_json's `Map` sorts them).
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Value(Value),
}

impl Ordered {
    fn to_value(&self) -> Value {
        match self {
            Ordered::Value(v) => v.clone(),
            Ordered::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Ordered, E> {
        Ok(Ordered::Value(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Ordered, D::Error> {
        Ordered::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Ordered::Value(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Ordered>()? {
            entries.push((k, v));
        }
        Ok(Ordered::Object(entries))
    }
}

/// A JSON value as source text: `None` for null, strings as they are, numbers and booleans as
/// serde_json writes them, arrays and objects as compact JSON.
pub(crate) fn json_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// The value of a (possibly flattened, `parent_child`) column in a JSON record: the key itself,
/// else a child of an object-valued parent.
pub(crate) fn json_lookup<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    name.match_indices('_')
        .find_map(|(i, _)| match obj.get(&name[..i]) {
            Some(Value::Object(inner)) => inner.get(&name[i + 1..]),
            _ => None,
        })
}

// ---------------------------------------------------------------------------------------------
// Mapping

/// Words of a source or file name, for matching [`Entity::name_hints`]: the normalised name (file
/// extensions and `.gz` dropped) split at `_` and between letters and digits; digits dropped.
fn name_words(name: &str) -> Vec<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    let mut stem = lower.strip_suffix(".gz").unwrap_or(&lower);
    if let Some((s, ext)) = stem.rsplit_once('.')
        && !ext.is_empty()
        && ext.len() <= 7
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        stem = s;
    }
    let mut words = Vec::new();
    for part in normalize_column(stem).split('_') {
        let mut word = String::new();
        for c in part.chars() {
            if c.is_ascii_alphabetic() {
                word.push(c);
            } else if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words
}

/// Entities whose hint matches the most words of `words` (longest hint wins: `sales_team` beats
/// `sales`).
fn hinted(words: &[String]) -> Vec<Entity> {
    let mut best: Vec<(Entity, usize)> = Vec::new();
    for e in Entity::ALL {
        let longest = e
            .name_hints()
            .iter()
            .filter_map(|hint| {
                let parts: Vec<&str> = hint.split('_').collect();
                words
                    .windows(parts.len())
                    .any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
                    .then_some(parts.len())
            })
            .max();
        if let Some(n) = longest {
            best.push((e, n));
        }
    }
    let top = best.iter().map(|(_, n)| *n).max().unwrap_or(0);
    best.into_iter()
        .filter(|(_, n)| *n == top)
        .map(|(e, _)| e)
        .collect()
}

/// The field of `entity` a normalised column name is an alias of, with the alias' rank.
fn field_for(entity: Entity, normalized: &str) -> Option<(usize, usize)> {
    entity.fields().iter().enumerate().find_map(|(fi, f)| {
        f.aliases
            .iter()
            .position(|a| *a == normalized)
            .map(|ai| (fi, ai))
    })
}

const FILE_HINT_BONUS: f64 = 0.5;
const SOURCE_HINT_BONUS: f64 = 0.25;

/// Propose how `schema`'s columns map onto an entity: the entity whose aliases match the most
/// columns (plus a bonus when the file or source name hints at it), each column on the field it
/// is an alias of (a field takes one column: the one with the best-ranked alias, then the first).
/// `config` overrides the entity, single columns (`mapping`; `""` ignores a column) and the date
/// format. Fails when no entity fits or a required field stays unmapped.
pub fn propose_mapping(
    source: &str,
    file_name: &str,
    schema: &FileSchema,
    config: Option<&SourceConfig>,
) -> Result<Mapping, CrawlError> {
    let columns = &schema.layout.columns;
    let normalized: Vec<String> = columns.iter().map(|c| normalize_column(c)).collect();
    let by_file = hinted(&name_words(file_name));
    let by_source = hinted(&name_words(source));
    let score_of = |e: Entity| -> (f64, usize) {
        let matched = normalized
            .iter()
            .filter(|n| field_for(e, n).is_some())
            .count();
        let share = if columns.is_empty() {
            0.0
        } else {
            matched as f64 / columns.len() as f64
        };
        let mut score = share;
        if by_file.contains(&e) {
            score += FILE_HINT_BONUS;
        }
        if by_source.contains(&e) {
            score += SOURCE_HINT_BONUS;
        }
        (score, matched)
    };
    let list = |names: &[String]| -> String {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };

    let (entity, score) = match config.and_then(|c| c.entity) {
        Some(e) => (e, score_of(e).0),
        None => {
            let mut best: Option<(Entity, f64, usize)> = None;
            for e in Entity::ALL {
                let (score, matched) = score_of(e);
                if matched > 0 && best.is_none_or(|(_, s, _)| score > s) {
                    best = Some((e, score, matched));
                }
            }
            match best {
                Some((e, s, _)) => (e, s),
                None => {
                    return Err(CrawlError::NoEntity {
                        file: file_name.to_string(),
                        source_name: source.to_string(),
                        columns: list(columns),
                        example: columns
                            .first()
                            .cloned()
                            .unwrap_or_else(|| "column".to_string()),
                        entities: Entity::ALL
                            .iter()
                            .filter(|e| **e != Entity::Sales)
                            .map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    };

    // Each field takes the column with its best-ranked alias; ties go to the earlier column.
    let fields = entity.fields();
    let mut assigned: Vec<Option<&'static str>> = vec![None; columns.len()];
    let mut taken: Vec<Option<(usize, usize)>> = vec![None; fields.len()]; // (alias rank, column)
    for (ci, n) in normalized.iter().enumerate() {
        if let Some((fi, rank)) = field_for(entity, n)
            && taken[fi].is_none_or(|(r, _)| rank < r)
        {
            taken[fi] = Some((rank, ci));
        }
    }
    for (fi, t) in taken.iter().enumerate() {
        if let Some((_, ci)) = t {
            assigned[*ci] = Some(fields[fi].name);
        }
    }

    if let Some(config) = config {
        for (column, target) in &config.mapping {
            let wanted = normalize_column(column);
            let Some(ci) = columns.iter().position(|c| c == column).or_else(|| {
                normalized
                    .iter()
                    .position(|n| !wanted.is_empty() && *n == wanted)
            }) else {
                // A column of the source that this file does not have.
                continue;
            };
            if target.is_empty() {
                assigned[ci] = None;
                continue;
            }
            let Some(field) = entity.field(target) else {
                return Err(CrawlError::UnknownField {
                    file: file_name.to_string(),
                    source_name: source.to_string(),
                    column: column.clone(),
                    field: target.clone(),
                    entity,
                    fields: fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
                });
            };
            for a in assigned.iter_mut() {
                if *a == Some(field.name) {
                    *a = None;
                }
            }
            assigned[ci] = Some(field.name);
        }
    }

    let mapped = |field: &str| assigned.iter().position(|a| *a == Some(field));
    let missing_field = |field: &str, missing: String| CrawlError::MissingField {
        file: file_name.to_string(),
        source_name: source.to_string(),
        entity,
        field: field.to_string(),
        missing,
        columns: list(columns),
    };
    if entity == Entity::Sales {
        if mapped("sales_date").is_none() {
            return Err(missing_field(
                "sales_date",
                "no column maps to sales_date (the date of the sale)".to_string(),
            ));
        }
        if mapped("amount").is_none() && mapped("unit_price").is_none() {
            return Err(missing_field(
                "amount",
                "no column maps to amount or unit_price, so the sale has no value".to_string(),
            ));
        }
        if mapped("product_id").is_none() && mapped("product_name").is_none() {
            return Err(missing_field(
                "product_id",
                "no column maps to product_id or product_name".to_string(),
            ));
        }
    } else {
        let required = fields
            .iter()
            .filter(|f| f.key || (entity == Entity::FxRates && f.name == "rate_to_usd"));
        for f in required {
            if mapped(f.name).is_none() {
                return Err(missing_field(
                    f.name,
                    format!("no column maps to {} (required for {entity})", f.name),
                ));
            }
        }
    }

    let date_format = config.and_then(|c| c.date_format.clone()).or_else(|| {
        fields
            .iter()
            .filter(|f| f.ty == FieldType::Date)
            .filter_map(|f| mapped(f.name))
            .find_map(|ci| schema.columns.get(ci).and_then(|c| c.date_format.clone()))
    });

    let mut mapping_columns = Vec::new();
    let mut unmapped = Vec::new();
    for (column, field) in columns.iter().zip(&assigned) {
        match field {
            Some(f) => mapping_columns.push((column.clone(), f.to_string())),
            None => unmapped.push(column.clone()),
        }
    }
    Ok(Mapping {
        entity,
        columns: mapping_columns,
        unmapped,
        date_format,
        score,
    })
}

// ---------------------------------------------------------------------------------------------
// Drift

/// How `next` differs from `previous`: columns added and removed (compared by normalised name)
/// and columns whose type changed (`Null` on either side is no change; Integer -> Decimal is).
pub fn drift(previous: &FileSchema, next: &FileSchema) -> Drift {
    let key = |c: &ColumnSchema| normalize_column(&c.name);
    let before: HashMap<String, &ColumnSchema> =
        previous.columns.iter().map(|c| (key(c), c)).collect();
    let after: HashSet<String> = next.columns.iter().map(key).collect();
    let mut out = Drift::default();
    for c in &next.columns {
        match before.get(&key(c)) {
            None => out.added.push(c.name.clone()),
            Some(old) => {
                if old.ty != c.ty && old.ty != InferredType::Null && c.ty != InferredType::Null {
                    out.retyped.push((c.name.clone(), old.ty, c.ty));
                }
            }
        }
    }
    for c in &previous.columns {
        if !after.contains(&key(c)) {
            out.removed.push(c.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn schema(name: &str, text: &str) -> FileSchema {
        infer(name, text.as_bytes(), true).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn map(source: &str, name: &str, text: &str) -> Mapping {
        let s = schema(name, text);
        propose_mapping(source, name, &s, None).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn field_of<'a>(m: &'a Mapping, column: &str) -> Option<&'a str> {
        m.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, f)| f.as_str())
    }

    fn ty(s: &FileSchema, column: &str) -> InferredType {
        s.column(column)
            .unwrap_or_else(|| panic!("no column {column}"))
            .ty
    }

    fn assert_maps(m: &Mapping, pairs: &[(&str, &str)]) {
        for (column, field) in pairs {
            assert_eq!(field_of(m, column), Some(*field), "{column} in {m:?}");
        }
    }

    const SEED_001: &str = "purchase_date,customer_id,product_id,amount,region,status\n\
        2025-01-01,C1001,P200,129.99,North,COMPLETED\n\
        2025-01-01,C1002,P201,,south,REFUNDED\n\
        2025-01-02,C1003,P200,99999.00,East,OUT\n\
        2025-01-03,C1001,P202,15.50, west ,COMPLETED\n";

    #[test]
    fn seed_001_transactional_sales() {
        let s = schema("sales_2025.csv", SEED_001);
        assert_eq!(s.layout.format, Format::Csv);
        assert_eq!(s.layout.delimiter, b',');
        assert!(s.layout.has_header);
        assert_eq!(s.rows_sampled, 4);
        assert_eq!(ty(&s, "purchase_date"), InferredType::Date);
        assert_eq!(
            s.column("purchase_date").unwrap().date_format.as_deref(),
            Some("%Y-%m-%d")
        );
        assert_eq!(ty(&s, "amount"), InferredType::Decimal);
        assert_eq!(s.column("amount").unwrap().nulls, 1);
        assert_eq!(s.column("amount").unwrap().samples, 4);
        assert_eq!(ty(&s, "customer_id"), InferredType::Text);
        let m = propose_mapping("crm", "sales_2025.csv", &s, None).unwrap();
        assert_eq!(m.entity, Entity::Sales);
        assert_maps(
            &m,
            &[
                ("purchase_date", "sales_date"),
                ("customer_id", "customer_id"),
                ("product_id", "product_id"),
                ("amount", "amount"),
                ("region", "region"),
                ("status", "status"),
            ],
        );
        assert!(m.unmapped.is_empty());
        assert_eq!(m.date_format.as_deref(), Some("%Y-%m-%d"));
        // Any name will do.
        assert_eq!(map("upload", "export.csv", SEED_001).entity, Entity::Sales);
    }

    const SEED_002_CSV: &str = "transaction_id,timestamp,customer_id,book_title,quantity,unit_price,total_amount,payment_method,store_location\n\
        T1001,2024-03-01 10:15:00,C001,Dune,2,9.99,19.98,card,Seattle\n\
        T1002,2024-03-01 11:02:31,C002,\"Good Omens, Deluxe\",1,14.50,14.50,cash,Portland\n\
        T1003,2024-03-02 09:00:00,C001,Emma,3,5.00,15.00,card,Seattle\n";

    const SEED_002_JSON: &str = r#"[
  {"transaction_id": "T1001", "timestamp": "2024-03-01T10:15:00Z", "customer_id": "C001",
   "book_title": "Dune", "quantity": 2, "unit_price": 9.99, "total_amount": 19.98,
   "payment_method": "card", "store_location": "Seattle"},
  {"transaction_id": "T1002", "timestamp": "2024-03-01T11:02:31Z", "customer_id": "C002",
   "book_title": "Good Omens", "quantity": 1, "unit_price": 14.5, "total_amount": 14.5,
   "payment_method": "cash", "store_location": "Portland"}
]"#;

    #[test]
    fn seed_002_bookstore_transactions_csv_and_json() {
        let expected = [
            ("transaction_id", "transaction_id"),
            ("timestamp", "sales_date"),
            ("customer_id", "customer_id"),
            ("book_title", "product_name"),
            ("quantity", "quantity"),
            ("unit_price", "unit_price"),
            ("total_amount", "amount"),
            ("payment_method", "payment_method"),
            ("store_location", "region"),
        ];
        for (name, text, format) in [
            ("bookstore_transactions.csv", SEED_002_CSV, Format::Csv),
            ("bookstore_transactions.json", SEED_002_JSON, Format::Json),
            ("transactions", SEED_002_JSON, Format::Json),
        ] {
            let s = schema(name, text);
            assert_eq!(s.layout.format, format, "{name}");
            assert_eq!(
                s.rows_sampled as usize,
                if format == Format::Csv { 3 } else { 2 }
            );
            let names: Vec<&str> = s.layout.columns.iter().map(String::as_str).collect();
            assert_eq!(
                names,
                expected.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(ty(&s, "timestamp"), InferredType::Date, "{name}");
            assert_eq!(ty(&s, "quantity"), InferredType::Integer, "{name}");
            assert_eq!(ty(&s, "unit_price"), InferredType::Decimal, "{name}");
            let m = propose_mapping("bookstore", name, &s, None).unwrap();
            assert_eq!(m.entity, Entity::Sales, "{name}");
            assert_maps(&m, &expected);
            assert_eq!(m.date_format.as_deref(), Some("%Y-%m-%d"), "{name}");
        }
    }

    #[test]
    fn seed_003_sales_and_dimension_tables() {
        let sales = map(
            "retail",
            "sales_data_2023-12-17.csv",
            "customer_id,store_id,product_name,sales_date,sales_person_id,price,quantity,total_cost\n\
             11,121,quaker oats,2023-03-21,7,212,3,636\n\
             14,121,sugar,2023-03-22,8,50,2,100\n",
        );
        assert_eq!(sales.entity, Entity::Sales);
        assert_maps(
            &sales,
            &[
                ("customer_id", "customer_id"),
                ("store_id", "store_id"),
                ("product_name", "product_name"),
                ("sales_date", "sales_date"),
                ("sales_person_id", "sales_person_id"),
                ("price", "unit_price"),
                ("quantity", "quantity"),
                ("total_cost", "amount"),
            ],
        );

        let customer = map(
            "retail",
            "customer.csv",
            "customer_id,first_name,last_name,address,pincode,phone_number,customer_joining_date\n\
             1,Rahul,Sharma,Delhi,122009,9999911111,2022-05-07\n\
             2,Anita,Verma,Noida,201301,9999922222,2022-06-15\n",
        );
        assert_eq!(customer.entity, Entity::Customers);
        assert_maps(
            &customer,
            &[
                ("customer_id", "customer_id"),
                ("pincode", "postal_code"),
                ("phone_number", "phone"),
                ("customer_joining_date", "join_date"),
            ],
        );

        let store = map(
            "retail",
            "store.csv",
            "id,address,store_pincode,store_manager_name,store_opening_date,reviews\n\
             121,Delhi,122009,Manish,2022-01-15,Great store\n\
             122,Delhi,110011,Nikita,2021-01-15,Good\n",
        );
        assert_eq!(store.entity, Entity::Stores);
        assert_maps(
            &store,
            &[
                ("id", "store_id"),
                ("store_pincode", "postal_code"),
                ("store_manager_name", "manager_name"),
                ("store_opening_date", "opening_date"),
            ],
        );
        assert_eq!(store.unmapped, vec!["reviews".to_string()]);

        let product = map(
            "retail",
            "product.csv",
            "id,name,current_price,old_price,created_date,updated_date,expiry_date\n\
             1,quaker oats,212,212,2022-05-15,,2025-01-01\n\
             2,sugar,50,50,2021-08-10,,2025-01-01\n",
        );
        assert_eq!(product.entity, Entity::Products);
        assert_maps(
            &product,
            &[
                ("id", "product_id"),
                ("name", "product_name"),
                ("current_price", "unit_price"),
                ("old_price", "old_price"),
            ],
        );

        let team_text = "id,first_name,last_name,manager_id,is_manager,address,pincode,joining_date\n\
             1,Rahul,Verma,10,N,Delhi,122007,2020-05-01\n\
             10,Abhishek,Sharma,10,Y,Delhi,122007,2019-01-01\n";
        let team = map("retail", "sales_team.csv", team_text);
        assert_eq!(team.entity, Entity::SalesTeam);
        assert_maps(
            &team,
            &[
                ("id", "sales_person_id"),
                ("manager_id", "manager_id"),
                ("is_manager", "is_manager"),
            ],
        );
        assert_eq!(
            ty(&schema("sales_team.csv", team_text), "is_manager"),
            InferredType::Boolean
        );
    }

    #[test]
    fn seed_004_customers_products_orders() {
        let customers = map(
            "shop",
            "customers.csv",
            "customer_id,first_name,last_name,email,city,state,country,signup_date\n\
             1,Ann,Lee,ann@example.com,Austin,TX,USA,2023-01-05\n\
             2,Bo,Chan,bo@example.com,Reno,NV,USA,2023-02-11\n",
        );
        assert_eq!(customers.entity, Entity::Customers);
        assert_maps(
            &customers,
            &[
                ("email", "email"),
                ("state", "state"),
                ("signup_date", "join_date"),
            ],
        );

        let products = map(
            "shop",
            "products.csv",
            "product_id,product_name,category,price\nP1,Laptop,Electronics,999.00\nP2,Mug,Home,8.50\n",
        );
        assert_eq!(products.entity, Entity::Products);
        assert_maps(
            &products,
            &[("product_id", "product_id"), ("price", "unit_price")],
        );

        let orders = map(
            "shop",
            "orders.csv",
            "order_id,customer_id,product_id,quantity,order_date,total_amount\n\
             O1,1,P1,1,2023-03-01,999.00\nO2,2,P2,4,2023-03-02,34.00\n",
        );
        assert_eq!(orders.entity, Entity::Sales);
        assert_maps(
            &orders,
            &[
                ("order_id", "transaction_id"),
                ("order_date", "sales_date"),
                ("total_amount", "amount"),
            ],
        );
    }

    #[test]
    fn delimiters_and_quotes() {
        let s = schema(
            "eu.csv",
            "datum;kunde;betrag\n01.02.2025;K1;1,50\n03.02.2025;K2;2,75\n",
        );
        assert_eq!(s.layout.delimiter, b';');
        assert_eq!(s.layout.columns, vec!["datum", "kunde", "betrag"]);
        assert_eq!(
            s.column("datum").unwrap().date_format.as_deref(),
            Some("%d.%m.%Y")
        );
        let s = schema("t.tsv", "a\tb\tc\n1\tx, y\t2\n3\tz\t4\n");
        assert_eq!(s.layout.delimiter, b'\t');
        let s = schema("p.txt", "a|b\n1|\"x|y\"\n2|z\n");
        assert_eq!(s.layout.delimiter, b'|');
        let s = schema(
            "q.csv",
            "name,note\n\"Smith, J\",\"said \"\"hi\"\"\nthen left\"\nLee,ok\r\n\r\n",
        );
        assert_eq!(s.layout.columns, vec!["name", "note"]);
        assert_eq!(s.rows_sampled, 2);
    }

    #[test]
    fn headerless_csv_gets_generated_names() {
        let text = "2024-01-05,C1,P1,10.50\n2024-01-06,C2,P2,11.00\n";
        let s = schema("feed.csv", text);
        assert!(!s.layout.has_header);
        assert_eq!(
            s.layout.columns,
            vec!["column_1", "column_2", "column_3", "column_4"]
        );
        assert_eq!(s.rows_sampled, 2);
        assert_eq!(ty(&s, "column_1"), InferredType::Date);
        assert_eq!(ty(&s, "column_4"), InferredType::Decimal);
        let err = propose_mapping("pos", "feed.csv", &s, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no entity fits its columns (column_1, column_2"),
            "{err}"
        );
        assert!(
            err.contains("[sources.pos]") && err.contains("\"column_1\" = \"sales_date\""),
            "{err}"
        );
        // ... and loads once configured.
        let config = SourceConfig {
            entity: Some(Entity::Sales),
            mapping: BTreeMap::from([
                ("column_1".to_string(), "sales_date".to_string()),
                ("column_2".to_string(), "customer_id".to_string()),
                ("column_3".to_string(), "product_id".to_string()),
                ("column_4".to_string(), "amount".to_string()),
            ]),
            ..SourceConfig::default()
        };
        let m = propose_mapping("pos", "feed.csv", &s, Some(&config)).unwrap();
        assert_eq!(m.unmapped, Vec::<String>::new());
        assert_eq!(m.date_format.as_deref(), Some("%Y-%m-%d"));
        // All-text rows: a header is told apart by fixed-width columns.
        let s = schema("codes.csv", "code,label\nAB12,Alpha one\nCD34,Beta\n");
        assert!(s.layout.has_header);
        let s = schema("codes.csv", "AB12,Alpha one\nCD34,Beta\nEF56,Gamma\n");
        assert!(!s.layout.has_header);
        // A configured header setting wins.
        let config = SourceConfig {
            has_header: Some(false),
            ..SourceConfig::default()
        };
        let s = infer_with("x.csv", SEED_001.as_bytes(), true, Some(&config)).unwrap();
        assert_eq!(s.rows_sampled, 5);
        assert_eq!(ty(&s, "column_4"), InferredType::Text);
    }

    #[test]
    fn header_names_are_cleaned() {
        let s = schema("h.csv", "\u{feff} id ,,name,name\n1,2,a,b\n");
        assert_eq!(s.layout.columns, vec!["id", "column_2", "name", "name_2"]);
    }

    #[test]
    fn date_formats() {
        let fmt = |text: &str| {
            let s = schema("d.csv", text);
            (ty(&s, "d"), s.column("d").unwrap().date_format.clone())
        };
        let date = |f: &str| (InferredType::Date, Some(f.to_string()));
        assert_eq!(fmt("d,n\n03/04/2025,1\n25/04/2025,2\n"), date("%d/%m/%Y"));
        assert_eq!(fmt("d,n\n03/04/2025,1\n04/05/2025,2\n"), date("%m/%d/%Y"));
        assert_eq!(fmt("d,n\n04/13/2025,1\n04/05/2025,2\n"), date("%m/%d/%Y"));
        assert_eq!(
            fmt("d,n\n2025-03-04,1\n2025-03-05T10:00:00Z,2\n"),
            date("%Y-%m-%d")
        );
        assert_eq!(fmt("d,n\n2025/03/04,1\n"), date("%Y/%m/%d"));
        assert_eq!(fmt("d,n\n20250304,1\n20251231,2\n"), date("%Y%m%d"));
        assert_eq!(fmt("d,n\n7 Mar 2025,1\n12 Apr 2025,2\n"), date("%d %b %Y"));
        assert_eq!(fmt("d,n\n\"Mar 07, 2025\",1\n"), date("%b %d, %Y"));
        assert_eq!(
            fmt("d,n\n2025-03-04,1\nyesterday,2\n"),
            (InferredType::Text, None)
        );
        // A few dirty values in a large sample do not change the type.
        let mut text = "d,n\n".to_string();
        for i in 0..99 {
            text.push_str(&format!("{:02}/03/2025,{i}\n", i % 28 + 1));
        }
        text.push_str("not a date,100\n");
        assert_eq!(fmt(&text), date("%d/%m/%Y"));
    }

    #[test]
    fn value_types_and_nulls() {
        let s = schema(
            "t.csv",
            "i,d,b,z,e,t,m\n1,1.5,true,02139,,x,$1\n-2,\"1,200.25\",No,10001,NULL,y,(3.00)\n3,7,yes,00501,N/A,z,\n",
        );
        assert_eq!(ty(&s, "i"), InferredType::Integer);
        assert_eq!(ty(&s, "d"), InferredType::Decimal);
        assert_eq!(ty(&s, "b"), InferredType::Boolean);
        assert_eq!(ty(&s, "z"), InferredType::Text);
        assert_eq!(ty(&s, "e"), InferredType::Null);
        assert_eq!(s.column("e").unwrap().nulls, 3);
        assert_eq!(ty(&s, "t"), InferredType::Text);
        assert_eq!(ty(&s, "m"), InferredType::Decimal);
        assert_eq!(s.column("m").unwrap().nulls, 1);
    }

    #[test]
    fn ndjson_flattening_and_key_order() {
        let text = "{\"zeta\": 1, \"order\": {\"id\": \"O1\", \"date\": \"2025-01-02\"}, \"items\": [1], \"amount\": 3.5}\n\
                    \n\
                    {\"alpha\": null, \"zeta\": 2, \"order\": {\"id\": \"O2\", \"date\": \"2025-01-03\", \"customer\": {\"id\": 7}}}\n";
        for name in ["orders.ndjson", "orders.json", "orders"] {
            let s = schema(name, text);
            assert_eq!(s.layout.format, Format::Ndjson, "{name}");
            assert_eq!(
                s.layout.columns,
                vec![
                    "zeta",
                    "order_id",
                    "order_date",
                    "items",
                    "amount",
                    "alpha",
                    "order_customer"
                ],
                "{name}"
            );
            assert_eq!(s.rows_sampled, 2);
            assert_eq!(ty(&s, "alpha"), InferredType::Null);
            assert_eq!(s.column("amount").unwrap().nulls, 1);
            assert_eq!(ty(&s, "order_date"), InferredType::Date);
        }
    }

    #[test]
    fn json_wrapper_object() {
        let text = "{\n  \"count\": 2,\n  \"records\": [\n    {\"sku\": \"A\", \"price\": 1},\n    {\"sku\": \"B\", \"price\": 2.5}\n  ]\n}\n";
        let s = schema("catalog.json", text);
        assert_eq!(s.layout.format, Format::Json);
        assert_eq!(s.layout.columns, vec!["sku", "price"]);
        assert_eq!(ty(&s, "price"), InferredType::Decimal);
        let m = propose_mapping("web", "catalog.json", &s, None).unwrap();
        assert_eq!(m.entity, Entity::Products);
    }

    #[test]
    fn cut_sample_drops_its_last_line() {
        let s = infer("s.csv", b"id,amount\n1,10\n2,20\n3,3x", false).unwrap();
        assert_eq!(s.rows_sampled, 2);
        assert_eq!(ty(&s, "amount"), InferredType::Integer);
        // A character cut in two at the end of the sample is not an encoding error.
        let s = infer("s.csv", b"id,name\n1,a\n2,b\n3,caf\xc3", false).unwrap();
        assert_eq!(s.rows_sampled, 2);
        let s = infer("s.ndjson", b"{\"a\":1}\n{\"a\":2}\n{\"a\":", false).unwrap();
        assert_eq!(s.rows_sampled, 2);
        let s = infer("s.json", b"[{\"a\":1},{\"a\":2},{\"a\":", false).unwrap();
        assert_eq!(s.rows_sampled, 2);
        let err = infer("s.json", b"[{\"a\":1},{\"a\":2},{\"a\":", true).unwrap_err();
        assert!(matches!(err, CrawlError::BadJson { line: 1, .. }), "{err}");
    }

    #[test]
    fn bad_input_errors() {
        let err = |name: &str, data: &[u8]| infer(name, data, true).unwrap_err();

        let e = err("e.csv", b"");
        assert!(matches!(e, CrawlError::Empty { .. }));
        assert!(e.to_string().starts_with("e.csv: the file is empty"), "{e}");
        assert!(matches!(err("e.csv", b"\n \r\n"), CrawlError::Empty { .. }));

        let e = err("h.csv", b"purchase_date,customer_id,amount\n");
        assert!(matches!(e, CrawlError::HeaderOnly { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("line 1 is a header (purchase_date, customer_id, amount)")
        );

        let e = err("n.csv", b"a,b\n1,\x002\n");
        assert_eq!(e.to_string().split(':').next(), Some("n.csv"));
        assert!(
            matches!(
                e,
                CrawlError::NotText {
                    line: 2,
                    offset: 6,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("NUL byte"), "{e}");

        let e = err("l.csv", b"a,b\n1,caf\xe9\n");
        assert!(
            matches!(
                e,
                CrawlError::NotText {
                    line: 2,
                    offset: 9,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("0xe9 is not valid UTF-8"), "{e}");
        assert!(matches!(
            err("u.csv", b"\xff\xfea\x00"),
            CrawlError::NotText { .. }
        ));

        let mut long = b"a,b\n1,2\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        long.extend_from_slice(b",3\n");
        let e = err("long.csv", &long);
        assert_eq!(
            e,
            CrawlError::LineTooLong {
                file: "long.csv".into(),
                line: 3,
                len: MAX_RECORD_BYTES as u64 + 12,
                whole: true
            }
        );
        assert!(
            e.to_string().contains("line 3 is 1048588 bytes long"),
            "{e}"
        );

        let e = err("nums.json", b"[1, 2]");
        assert_eq!(
            e.to_string().split(". ").next(),
            Some("nums.json: line 1: expected an object, found a number")
        );
        let e = err("obj.json", b"{\n  \"a\": 1\n}");
        assert!(
            e.to_string()
                .contains("found an object with no array in it (keys: a)"),
            "{e}"
        );
        let e = err("x.ndjson", b"\n5\n{\"a\": 1}\n");
        assert!(
            e.to_string()
                .starts_with("x.ndjson: line 2: expected an object, found a number"),
            "{e}"
        );
        let e = err("x.ndjson", b"{\"a\" 1}\n");
        assert!(matches!(e, CrawlError::BadJson { line: 1, .. }), "{e}");
        assert!(e.to_string().contains("expected `:` (column 6)"), "{e}");
        let e = err("y.json", b"[{\"a\": 1}\n{\"a\": 2}]");
        assert!(matches!(e, CrawlError::BadJson { line: 2, .. }), "{e}");

        let e = err(
            "colon.csv",
            b"date:customer:amount\n2025-01-01:C1:5\n2025-01-02:C2:6\n",
        );
        assert!(
            matches!(e, CrawlError::SuspectDelimiter { delimiter: ':', .. }),
            "{e}"
        );
        assert!(e.to_string().contains("is the delimiter right?"), "{e}");
        assert!(e.to_string().contains("delimiter = \":\""), "{e}");
        assert!(matches!(
            err("mac.csv", b"a,b\r1,2\r3,4\r"),
            CrawlError::CarriageReturns { .. }
        ));

        // A genuinely single-column file is fine.
        let s = schema("ids.csv", "product_id\nP1\nP2\n");
        assert_eq!(s.layout.columns, vec!["product_id"]);
        assert_eq!(
            map("x", "ids.csv", "product_id\nP1\nP2\n").entity,
            Entity::Products
        );
    }

    #[test]
    fn configured_delimiter_and_format() {
        let config = SourceConfig {
            delimiter: Some(':'),
            ..SourceConfig::default()
        };
        let s = infer_with(
            "colon.csv",
            b"date:customer:amount\n2025-01-01:C1:5\n",
            true,
            Some(&config),
        )
        .unwrap();
        assert_eq!(s.layout.delimiter, b':');
        assert_eq!(s.layout.columns, vec!["date", "customer", "amount"]);
        let config = SourceConfig {
            format: Some(Format::Ndjson),
            ..SourceConfig::default()
        };
        let s = infer_with("feed.dat", b"{\"a\":1}\n", true, Some(&config)).unwrap();
        assert_eq!(s.layout.format, Format::Ndjson);
    }

    #[test]
    fn missing_required_fields() {
        let s = schema(
            "orders.csv",
            "order_id,customer_id,order_date,total_amount\nO1,C1,2025-01-01,5\n",
        );
        let e = propose_mapping("shop", "orders.csv", &s, None).unwrap_err();
        assert!(
            matches!(&e, CrawlError::MissingField { field, .. } if field == "product_id"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("cannot load it as sales: no column maps to product_id or product_name"),
            "{msg}"
        );
        assert!(
            msg.contains("Columns found: order_id, customer_id, order_date, total_amount"),
            "{msg}"
        );
        assert!(
            msg.contains("[sources.shop.mapping]\n\"<column>\" = \"product_id\""),
            "{msg}"
        );

        let s = schema("s.csv", "sales_date,product_id,quantity\n2025-01-01,P1,2\n");
        let e = propose_mapping("shop", "sales.csv", &s, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("no column maps to amount or unit_price"),
            "{e}"
        );

        let s = schema("customers.csv", "first_name,last_name,email\nA,B,a@b.c\n");
        let e = propose_mapping("crm", "customers.csv", &s, None).unwrap_err();
        assert!(
            matches!(&e, CrawlError::MissingField { entity: Entity::Customers, field, .. } if field == "customer_id"),
            "{e}"
        );

        let s = schema("fx.csv", "currency,month\nEUR,2025-01\n");
        let e = propose_mapping("fx", "fx_rates.csv", &s, None).unwrap_err();
        assert!(
            matches!(&e, CrawlError::MissingField { field, .. } if field == "rate_to_usd"),
            "{e}"
        );
        let m = map(
            "fx",
            "fx_rates.csv",
            "currency,month,rate_to_usd\nEUR,2025-01,1.08\n",
        );
        assert_eq!(m.entity, Entity::FxRates);
    }

    #[test]
    fn best_column_wins_a_field() {
        let m = map(
            "shop",
            "sales.csv",
            "date,order_date,price,unit_price,product_id,region,store_location\n2025-01-01,2025-01-02,1,2,P1,N,S\n",
        );
        assert_maps(
            &m,
            &[
                ("order_date", "sales_date"),
                ("unit_price", "unit_price"),
                ("region", "region"),
            ],
        );
        assert_eq!(m.unmapped, vec!["date", "price", "store_location"]);
        // Ties go to the earlier column.
        let m = map(
            "shop",
            "sales.csv",
            "qty,units,amount,sku,date\n1,2,3,P,2025-01-01\n",
        );
        assert_maps(&m, &[("qty", "quantity")]);
        assert_eq!(m.unmapped, vec!["units"]);
    }

    #[test]
    fn config_overrides() {
        let s = schema(
            "pos.csv",
            "Sale Amt,When,Item,notes,total\n5.00,01.02.2025,P1,hello,5.00\n",
        );
        let config = SourceConfig {
            entity: Some(Entity::Sales),
            date_format: Some("%d.%m.%Y".to_string()),
            mapping: BTreeMap::from([
                ("sale_amt".to_string(), "amount".to_string()),
                ("When".to_string(), "sales_date".to_string()),
                ("notes".to_string(), String::new()),
                ("absent".to_string(), "region".to_string()),
            ]),
            ..SourceConfig::default()
        };
        let m = propose_mapping("pos", "pos.csv", &s, Some(&config)).unwrap();
        assert_eq!(m.entity, Entity::Sales);
        assert_maps(
            &m,
            &[
                ("Sale Amt", "amount"),
                ("When", "sales_date"),
                ("Item", "product_name"),
            ],
        );
        assert_eq!(m.unmapped, vec!["notes", "total"]);
        assert_eq!(m.date_format.as_deref(), Some("%d.%m.%Y"));

        let bad = SourceConfig {
            entity: Some(Entity::Sales),
            mapping: BTreeMap::from([("notes".to_string(), "amout".to_string())]),
            ..SourceConfig::default()
        };
        let e = propose_mapping("pos", "pos.csv", &s, Some(&bad)).unwrap_err();
        assert!(matches!(e, CrawlError::UnknownField { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("\"amout\", which is not a field of sales"),
            "{e}"
        );
    }

    #[test]
    fn name_hints() {
        assert_eq!(name_words("Sales-Team_2024.CSV.gz"), vec!["sales", "team"]);
        assert_eq!(
            name_words("raw/bookstore_transactions.json"),
            vec!["bookstore", "transactions"]
        );
        assert_eq!(
            hinted(&name_words("sales_team.csv")),
            vec![Entity::SalesTeam]
        );
        assert_eq!(hinted(&name_words("store_sales.csv")), vec![Entity::Sales]);
        assert!(hinted(&name_words("bookstore.csv")).is_empty());
        // `id,name` means a different key depending on the file.
        let text = "id,name\n1,x\n2,y\n";
        assert_eq!(map("s", "stores.csv", text).entity, Entity::Stores);
        assert_eq!(map("s", "products.csv", text).entity, Entity::Products);
        assert_eq!(map("s", "customers.csv", text).entity, Entity::Customers);
        assert_eq!(map("s", "campaigns.csv", text).entity, Entity::Campaigns);
        assert_eq!(
            field_of(&map("s", "staff.csv", text), "id"),
            Some("sales_person_id")
        );
    }

    #[test]
    fn drift_between_schemas() {
        let before = schema("a.csv", "id,amount,status,note\n1,5,OK,\n2,6,OK,\n");
        let after = schema("b.csv", "ID,amount,channel,note\n1,5.5,web,x\n2,6,web,y\n");
        let d = drift(&before, &after);
        assert_eq!(d.added, vec!["channel"]);
        assert_eq!(d.removed, vec!["status"]);
        assert_eq!(
            d.retyped,
            vec![(
                "amount".to_string(),
                InferredType::Integer,
                InferredType::Decimal
            )]
        );
        assert!(!d.is_empty());
        assert!(drift(&before, &before).is_empty());
    }

    #[test]
    fn schemas_round_trip_as_json() {
        let s = schema("sales.csv", SEED_001);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<FileSchema>(&text).unwrap(), s);
        assert!(text.contains("\"ty\":\"date\""), "{text}");
    }
}
