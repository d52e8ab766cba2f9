//! The scanner: streams every record of a (decompressed) file by its [`Layout`], handing the
//! wanted source columns to a [`ScanSink`] as text with the 1-based line the record starts on.
//!
//! Memory stays bounded whatever the file size: CSV is read through the `csv` crate one
//! [`csv::ByteRecord`] at a time (values are borrowed from it, never copied), NDJSON one line at a
//! time, and a JSON array one element at a time by a small byte-level splitter. A record that
//! cannot be read (wrong field count, invalid UTF-8, not a JSON object, longer than
//! [`MAX_RECORD_BYTES`]) goes to [`ScanSink::malformed`] and the scan goes on; only a file that
//! cannot be read any further (an I/O error such as a truncated gzip stream, a broken JSON array,
//! a quote that never closes) stops it with a [`ScanError`].

use crate::crawl::{Layout, header_names, json_lookup, json_text};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoplake_core::Format;
use shoplake_core::model::normalize_column;
use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};

/// The longest record (a CSV record, an NDJSON line, a JSON array element) read as data: 1 MiB.
/// Longer records are reported as malformed and skipped.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A CSV record still open after this many bytes stops the scan: it almost always means a quote
/// that never closes, which would otherwise swallow the rest of the file into one field.
pub const MAX_OPEN_RECORD_BYTES: u64 = 64 << 20;

/// The most of a malformed record's text passed to [`ScanSink::malformed`]; longer text is cut
/// and marked `… [cut: N bytes]`.
pub const MAX_RAW_BYTES: usize = 64 << 10;

const IO_BUFFER: usize = 256 << 10;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Receives the records of a scan, in file order.
pub trait ScanSink {
    /// One readable record: `values[i]` is the text of `wanted[i]`, `None` when the record has no
    /// such column (or, in JSON, holds `null` there).
    fn record(&mut self, line: u64, values: &[Option<&str>]) -> Result<(), ScanError>;
    /// One record that cannot be read as data: `problem` says why, `raw` is its text (CSV
    /// fields re-joined with the delimiter, the JSON text as written), cut to [`MAX_RAW_BYTES`].
    fn malformed(&mut self, line: u64, problem: &str, raw: &str) -> Result<(), ScanError>;
}

/// What a scan saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Data records seen (header excluded, blank lines excluded), malformed ones included.
    pub records: u64,
    /// Records passed to [`ScanSink::malformed`].
    pub malformed: u64,
    /// Bytes read from the (decompressed) input.
    pub bytes: u64,
}

/// A scan that had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The input failed to read (a truncated or corrupt compressed stream, a vanished file...).
    #[error(
        "{file}: line {line}: cannot read the file any further: {source}. If it is compressed, the \
         archive is probably truncated or corrupt: fetch or upload the file again and re-ingest it"
    )]
    Read {
        file: String,
        line: u64,
        #[source]
        source: io::Error,
    },
    /// A CSV record still open after [`MAX_OPEN_RECORD_BYTES`].
    #[error(
        "{file}: line {line}: the record starting here runs on for more than {limit} bytes, so a \
         quote in it probably never closes. Fix the quoting in the file (or set the source's \
         format/delimiter in shoplake.toml if it is not this CSV layout) and ingest it again"
    )]
    UnclosedRecord { file: String, line: u64, limit: u64 },
    /// The structure of a JSON document is broken, so no later record can be found.
    #[error(
        "{file}: line {line}: {problem}. The JSON structure is broken here, so the rest of the \
         file cannot be read: fix the file (or re-export it) and ingest it again"
    )]
    BrokenJson {
        file: String,
        line: u64,
        problem: String,
    },
    /// The sink refused a record; its error is passed through unchanged.
    #[error(transparent)]
    Sink(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl ScanError {
    /// Wrap a sink's own error.
    pub fn sink(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        ScanError::Sink(error.into())
    }
}

/// Stream every record of `input` (already decompressed) by `layout`, handing `wanted` source
/// columns to `sink`. `file_name` is used in messages only.
pub fn scan<R: Read>(
    file_name: &str,
    input: R,
    layout: &Layout,
    wanted: &[String],
    sink: &mut dyn ScanSink,
) -> Result<ScanStats, ScanError> {
    let input = Counted::new(input);
    match layout.format {
        Format::Csv => scan_csv(file_name, input, layout, wanted, sink),
        Format::Ndjson => scan_ndjson(file_name, input, wanted, sink),
        Format::Json => scan_json(file_name, input, wanted, sink),
    }
}

// ---------------------------------------------------------------------------------------------
// Input wrapper: counts bytes, drops a leading UTF-8 byte-order mark, and stops a CSV record that
// never ends.

/// Marks the I/O error raised when a CSV record stays open past [`MAX_OPEN_RECORD_BYTES`].
#[derive(Debug)]
struct OpenRecordLimit;

impl std::fmt::Display for OpenRecordLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a record is open for more than {MAX_OPEN_RECORD_BYTES} bytes"
        )
    }
}

impl std::error::Error for OpenRecordLimit {}

struct Counted<R> {
    inner: R,
    /// Bytes read from `inner`, the byte-order mark included.
    bytes: u64,
    /// Where the record being read started, in bytes after the byte-order mark; `None` disables
    /// the open-record limit.
    record_start: Option<u64>,
    bom_checked: bool,
    /// Bytes read while looking for the byte-order mark, still to be handed out.
    head: [u8; 3],
    head_pos: usize,
    head_len: usize,
    bom_len: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            bytes: 0,
            record_start: None,
            bom_checked: false,
            head: [0; 3],
            head_pos: 0,
            head_len: 0,
            bom_len: 0,
        }
    }

    fn check_bom(&mut self) -> io::Result<()> {
        while self.head_len < 3 {
            match self.inner.read(&mut self.head[self.head_len..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.head_len += n;
                    self.bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.head[..self.head_len] == *UTF8_BOM {
            self.head_len = 0;
            self.bom_len = 3;
        }
        self.bom_checked = true;
        Ok(())
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.bom_checked {
            self.check_bom()?;
        }
        if self.head_pos < self.head_len {
            let n = (self.head_len - self.head_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        if let Some(start) = self.record_start
            && (self.bytes - self.bom_len).saturating_sub(start) > MAX_OPEN_RECORD_BYTES
        {
            return Err(io::Error::other(OpenRecordLimit));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

fn is_open_record_limit(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<OpenRecordLimit>())
}

/// Cut text for [`ScanSink::malformed`] to [`MAX_RAW_BYTES`] (lossy UTF-8).
fn raw_text(bytes: &[u8], total: usize) -> String {
    if total <= MAX_RAW_BYTES && bytes.len() == total {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let cut = &bytes[..bytes.len().min(MAX_RAW_BYTES)];
    format!("{}… [cut: {total} bytes]", String::from_utf8_lossy(cut))
}

fn too_long(len: usize) -> String {
    format!("the record is {len} bytes long, over the {MAX_RECORD_BYTES}-byte (1 MiB) limit")
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Where each wanted column sits among `names`: exact name first, then by normalised name.
fn locate(wanted: &[String], names: &[String]) -> Vec<Option<usize>> {
    let normalized: Vec<String> = names.iter().map(|n| normalize_column(n)).collect();
    wanted
        .iter()
        .map(|w| {
            names.iter().position(|n| n == w).or_else(|| {
                let nw = normalize_column(w);
                if nw.is_empty() {
                    None
                } else {
                    normalized.iter().position(|n| *n == nw)
                }
            })
        })
        .collect()
}

/// Field `i` of a record. Records are split at `\n` only (the `csv` crate's CRLF mode misnumbers
/// lines), so a `\r` ending the last field is the first half of a CRLF line ending.
fn field(rec: &csv::ByteRecord, i: usize) -> Option<&[u8]> {
    let f = rec.get(i)?;
    if i + 1 == rec.len() {
        Some(f.strip_suffix(b"\r").unwrap_or(f))
    } else {
        Some(f)
    }
}

/// Re-join a record's fields as CSV text (quoting where needed) for the quarantine.
fn join_record(rec: &csv::ByteRecord, delimiter: u8, quote: u8) -> String {
    let total = rec.as_slice().len() + rec.len().saturating_sub(1);
    let mut out = Vec::with_capacity(total.min(MAX_RAW_BYTES) + 16);
    let mut cut = false;
    for i in 0..rec.len() {
        let field = field(rec, i).unwrap_or_default();
        if out.len() > MAX_RAW_BYTES {
            cut = true;
            break;
        }
        if i > 0 {
            out.push(delimiter);
        }
        let needs_quotes = field
            .iter()
            .any(|&b| b == delimiter || b == quote || b == b'\n' || b == b'\r');
        if needs_quotes {
            out.push(quote);
            for &b in field {
                if b == quote {
                    out.push(quote);
                }
                out.push(b);
            }
            out.push(quote);
        } else {
            out.extend_from_slice(field);
        }
    }
    if cut || out.len() > MAX_RAW_BYTES {
        let len = total.max(out.len());
        raw_text(&out, len)
    } else {
        raw_text(&out, out.len())
    }
}

/// Reuse a vector's allocation for borrows of a new lifetime (no allocation per record).
fn recycle<'a>(mut v: Vec<Option<&str>>) -> Vec<Option<&'a str>> {
    v.clear();
    v.into_iter().map(|_| None).collect()
}

fn scan_csv<R: Read>(
    file: &str,
    input: Counted<R>,
    layout: &Layout,
    wanted: &[String],
    sink: &mut dyn ScanSink,
) -> Result<ScanStats, ScanError> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(layout.delimiter)
        .quote(layout.quote)
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .buffer_capacity(IO_BUFFER)
        .from_reader(input);
    rdr.get_mut().record_start = Some(0);
    let mut rec = csv::ByteRecord::new();
    let mut stats = ScanStats::default();

    let read = |rdr: &mut csv::Reader<Counted<R>>, rec: &mut csv::ByteRecord| {
        let line = rdr.position().line();
        match rdr.read_byte_record(rec) {
            Ok(more) => {
                let next = rdr.position().byte();
                rdr.get_mut().record_start = Some(next);
                Ok(more)
            }
            Err(e) => Err(match e.into_kind() {
                csv::ErrorKind::Io(source) if is_open_record_limit(&source) => {
                    ScanError::UnclosedRecord {
                        file: file.to_string(),
                        line,
                        limit: MAX_OPEN_RECORD_BYTES,
                    }
                }
                csv::ErrorKind::Io(source) => ScanError::Read {
                    file: file.to_string(),
                    line: rdr.position().line(),
                    source,
                },
                other => ScanError::Read {
                    file: file.to_string(),
                    line,
                    source: io::Error::other(format!("{other:?}")),
                },
            }),
        }
    };

    let (index, expected) = if layout.has_header {
        if !read(&mut rdr, &mut rec)? {
            stats.bytes = rdr.get_ref().bytes;
            return Ok(stats);
        }
        let cells: Vec<Cow<'_, str>> = rec.iter().map(String::from_utf8_lossy).collect();
        let names = header_names(cells.iter().map(|c| c.as_ref()));
        (locate(wanted, &names), names.len())
    } else {
        (locate(wanted, &layout.columns), layout.columns.len())
    };

    let mut values: Vec<Option<&str>> = Vec::with_capacity(wanted.len());
    while read(&mut rdr, &mut rec)? {
        if rec.len() == 1 && field(&rec, 0).is_some_and(|f| f.iter().all(u8::is_ascii_whitespace)) {
            // A blank line (csv skips only empty ones; `\r` or spaces remain).
            continue;
        }
        stats.records += 1;
        let line = rec.position().map_or(0, |p| p.line());
        let size = rec.as_slice().len();
        let problem = if size > MAX_RECORD_BYTES {
            Some(too_long(size))
        } else if rec.len() != expected {
            Some(format!("expected {expected} fields, found {}", rec.len()))
        } else if let Err(e) = std::str::from_utf8(rec.as_slice()) {
            Some(format!(
                "invalid UTF-8 at byte {} of the record's values; is the file in another \
                 encoding (Latin-1, Windows-1252)? Re-save it as UTF-8",
                e.valid_up_to()
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            stats.malformed += 1;
            sink.malformed(
                line,
                &problem,
                &join_record(&rec, layout.delimiter, layout.quote),
            )?;
            continue;
        }
        let mut row = recycle(values);
        let mut bad_field = None;
        for idx in &index {
            let value = match idx.and_then(|i| field(&rec, i)) {
                Some(bytes) => match std::str::from_utf8(bytes) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        bad_field = Some(e.valid_up_to());
                        None
                    }
                },
                None => None,
            };
            row.push(value);
        }
        if let Some(at) = bad_field {
            stats.malformed += 1;
            let problem = format!(
                "invalid UTF-8 at byte {at} of a field; is the file in another encoding \
                 (Latin-1, Windows-1252)? Re-save it as UTF-8"
            );
            sink.malformed(
                line,
                &problem,
                &join_record(&rec, layout.delimiter, layout.quote),
            )?;
        } else {
            sink.record(line, &row)?;
        }
        values = recycle(row);
    }
    stats.bytes = rdr.get_ref().bytes;
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// JSON values

/// Describe a JSON value's kind for messages: "a number", "an array"...
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A serde_json error without its own "at line L column C" suffix, which would count from the
/// start of the record rather than the file; the column is kept when the record is one line.
pub(crate) fn json_problem(e: &serde_json::Error, one_line: bool) -> String {
    let text = e.to_string();
    let message = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    if one_line && e.column() > 0 {
        format!("{message} (column {})", e.column())
    } else {
        message.to_string()
    }
}

/// Hand one parsed JSON record to the sink.
fn emit_json(
    sink: &mut dyn ScanSink,
    stats: &mut ScanStats,
    line: u64,
    text: &[u8],
    one_line: bool,
    wanted: &[String],
) -> Result<(), ScanError> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(obj)) => {
            let owned: Vec<Option<Cow<'_, str>>> = wanted
                .iter()
                .map(|w| json_lookup(&obj, w).and_then(json_text))
                .collect();
            let values: Vec<Option<&str>> = owned.iter().map(|v| v.as_deref()).collect();
            sink.record(line, &values)
        }
        Ok(other) => {
            stats.malformed += 1;
            let problem = format!("expected a JSON object, found {}", json_kind(&other));
            sink.malformed(line, &problem, &raw_text(text, text.len()))
        }
        Err(e) => {
            stats.malformed += 1;
            sink.malformed(
                line,
                &json_problem(&e, one_line),
                &raw_text(text, text.len()),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NDJSON

/// Read one line (without its `\n`) into `out`, keeping at most `max` bytes of it. Returns the
/// line's full length and whether anything was read at all.
fn read_line_bounded<B: BufRead>(
    input: &mut B,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<usize>> {
    out.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len += chunk.len();
        let used = chunk.len() + usize::from(done);
        input.consume(used);
        if done {
            return Ok(Some(len));
        }
    }
}

fn scan_ndjson<R: Read>(
    file: &str,
    input: Counted<R>,
    wanted: &[String],
    sink: &mut dyn ScanSink,
) -> Result<ScanStats, ScanError> {
    let mut reader = BufReader::with_capacity(IO_BUFFER, input);
    let mut stats = ScanStats::default();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        let len = match read_line_bounded(&mut reader, &mut buf, MAX_RECORD_BYTES) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(source) => {
                return Err(ScanError::Read {
                    file: file.to_string(),
                    line: line + 1,
                    source,
                });
            }
        };
        line += 1;
        if buf.last() == Some(&b'\r') && len == buf.len() {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) && len == buf.len() {
            continue;
        }
        stats.records += 1;
        if len > MAX_RECORD_BYTES {
            stats.malformed += 1;
            sink.malformed(line, &too_long(len), &raw_text(&buf, len))?;
            continue;
        }
        emit_json(sink, &mut stats, line, &buf, true, wanted)?;
    }
    stats.bytes = reader.get_ref().bytes;
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------
// JSON array splitter

/// One element of a JSON array, as found by [`JsonArraySplitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element {
    /// The line the element starts on (1-based).
    pub line: u64,
    /// Its size in bytes.
    pub len: usize,
    /// Whether it was longer than the capture limit (only a prefix was kept).
    pub truncated: bool,
}

/// Why the splitter stopped.
#[derive(Debug)]
pub(crate) enum SplitError {
    Io {
        line: u64,
        error: io::Error,
    },
    /// The document is not an array, nor an object holding one. `found` describes what it is.
    Shape {
        line: u64,
        found: String,
    },
    /// The array's structure is broken. `at_eof`: the input ended inside it (a cut sample).
    Syntax {
        line: u64,
        problem: String,
        at_eof: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitState {
    Start,
    Array { first: bool },
    Done,
}

/// Streams the elements of a top-level JSON array (or of the first array-valued member of a
/// top-level object, such as `{"records": [...]}`) without parsing them: it tracks nesting,
/// strings and escapes byte by byte and counts lines, so each element can then be handed to
/// `serde_json::from_slice`.
pub(crate) struct JsonArraySplitter<R> {
    input: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    eof: bool,
    line: u64,
    state: SplitState,
    array_line: u64,
    wrapper: bool,
    last_element_line: u64,
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

fn describe_value_start(b: u8) -> String {
    match b {
        b'"' => "a string".to_string(),
        b'-' | b'0'..=b'9' => "a number".to_string(),
        b't' | b'f' => "a boolean".to_string(),
        b'n' => "null".to_string(),
        other => describe_byte(other),
    }
}

/// Where captured element bytes go.
struct Capture<'a> {
    out: Option<&'a mut Vec<u8>>,
    max: usize,
    len: usize,
}

impl Capture<'_> {
    fn push(&mut self, bytes: &[u8]) {
        if let Some(out) = self.out.as_deref_mut() {
            let room = self.max.saturating_sub(out.len());
            out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.len += bytes.len();
    }
}

impl<R: Read> JsonArraySplitter<R> {
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            buf: vec![0; IO_BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            line: 1,
            state: SplitState::Start,
            array_line: 1,
            wrapper: false,
            last_element_line: 1,
        }
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.input
    }

    fn fill(&mut self) -> Result<bool, SplitError> {
        if self.pos < self.end {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(SplitError::Io {
                        line: self.line,
                        error,
                    });
                }
            }
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, SplitError> {
        Ok(if self.fill()? {
            Some(self.buf[self.pos])
        } else {
            None
        })
    }

    fn bump(&mut self) {
        if self.buf[self.pos] == b'\n' {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn skip_ws(&mut self) -> Result<Option<u8>, SplitError> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.bump(),
                other => return Ok(other),
            }
        }
    }

    fn eof_error(&self, inside: String) -> SplitError {
        SplitError::Syntax {
            line: self.line,
            problem: format!("the file ends inside {inside}; is it truncated?"),
            at_eof: true,
        }
    }

    fn syntax(&self, problem: String) -> SplitError {
        SplitError::Syntax {
            line: self.line,
            problem,
            at_eof: false,
        }
    }

    /// Step over one JSON value, capturing its bytes. Returns its length.
    fn value(&mut self, mut capture: Capture<'_>) -> Result<usize, SplitError> {
        let start_line = self.line;
        let Some(first) = self.peek()? else {
            return Err(self.eof_error("a value".to_string()));
        };
        match first {
            b'{' | b'[' | b'"' => {
                let mut depth = 0u32;
                let mut in_string = false;
                let mut escaped = false;
                loop {
                    if !self.fill()? {
                        let what = if first == b'"' {
                            "a string"
                        } else {
                            "the record"
                        };
                        return Err(
                            self.eof_error(format!("{what} that starts on line {start_line}"))
                        );
                    }
                    let chunk = &self.buf[self.pos..self.end];
                    let mut i = 0;
                    let mut newlines = 0u64;
                    let mut done = false;
                    while i < chunk.len() {
                        let b = chunk[i];
                        i += 1;
                        if b == b'\n' {
                            newlines += 1;
                        }
                        if in_string {
                            if escaped {
                                escaped = false;
                            } else if b == b'\\' {
                                escaped = true;
                            } else if b == b'"' {
                                in_string = false;
                                if depth == 0 {
                                    done = true;
                                    break;
                                }
                            }
                            continue;
                        }
                        match b {
                            b'"' => in_string = true,
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    done = true;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    capture.push(&self.buf[self.pos..self.pos + i]);
                    self.pos += i;
                    self.line += newlines;
                    if done {
                        return Ok(capture.len);
                    }
                }
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => loop {
                if !self.fill()? {
                    return Ok(capture.len);
                }
                let chunk = &self.buf[self.pos..self.end];
                let n = chunk
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')))
                    .unwrap_or(chunk.len());
                capture.push(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                if self.pos < self.end {
                    return Ok(capture.len);
                }
            },
            other => Err(self.syntax(format!("expected a value, found {}", describe_byte(other)))),
        }
    }

    fn skip_value(&mut self) -> Result<(), SplitError> {
        self.value(Capture {
            out: None,
            max: 0,
            len: 0,
        })
        .map(|_| ())
    }

    fn expect_colon(&mut self) -> Result<(), SplitError> {
        match self.skip_ws()? {
            Some(b':') => {
                self.bump();
                Ok(())
            }
            Some(b) => Err(self.syntax(format!(
                "expected ':' after a key, found {}",
                describe_byte(b)
            ))),
            None => Err(self.eof_error("the top-level object".to_string())),
        }
    }

    /// Read the start of the document: `[`, or `{` and members up to the first array value.
    fn start(&mut self) -> Result<(), SplitError> {
        if self.fill()? && self.buf[self.pos..self.end].starts_with(UTF8_BOM) {
            self.pos += UTF8_BOM.len();
        }
        match self.skip_ws()? {
            None => {
                self.state = SplitState::Done;
                Ok(())
            }
            Some(b'[') => {
                self.bump();
                self.array_line = self.line;
                self.state = SplitState::Array { first: true };
                Ok(())
            }
            Some(b'{') => {
                let object_line = self.line;
                self.bump();
                let mut keys: Vec<String> = Vec::new();
                loop {
                    match self.skip_ws()? {
                        None => {
                            return Err(self.eof_error(format!(
                                "the object that opens on line {object_line}"
                            )));
                        }
                        Some(b'}') => {
                            let found = if keys.is_empty() {
                                "an empty object".to_string()
                            } else {
                                format!("an object with no array in it (keys: {})", keys.join(", "))
                            };
                            return Err(SplitError::Shape {
                                line: object_line,
                                found,
                            });
                        }
                        Some(b'"') => {
                            let mut key = Vec::new();
                            self.value(Capture {
                                out: Some(&mut key),
                                max: 256,
                                len: 0,
                            })?;
                            let text = String::from_utf8_lossy(&key);
                            keys.push(text.trim_matches('"').to_string());
                        }
                        Some(b) => {
                            return Err(self.syntax(format!(
                                "expected a key in the top-level object, found {}",
                                describe_byte(b)
                            )));
                        }
                    }
                    self.expect_colon()?;
                    match self.skip_ws()? {
                        Some(b'[') => {
                            self.bump();
                            self.array_line = self.line;
                            self.wrapper = true;
                            self.state = SplitState::Array { first: true };
                            return Ok(());
                        }
                        Some(_) => self.skip_value()?,
                        None => return Err(self.eof_error("the top-level object".to_string())),
                    }
                    match self.skip_ws()? {
                        Some(b',') => self.bump(),
                        Some(b'}') => {}
                        Some(b) => {
                            return Err(self.syntax(format!(
                                "expected ',' or '}}' in the top-level object, found {}",
                                describe_byte(b)
                            )));
                        }
                        None => return Err(self.eof_error("the top-level object".to_string())),
                    }
                }
            }
            Some(b) => Err(SplitError::Shape {
                line: self.line,
                found: describe_value_start(b),
            }),
        }
    }

    /// After the array's `]`: the rest of a wrapper object, then only whitespace.
    fn finish(&mut self) -> Result<(), SplitError> {
        self.state = SplitState::Done;
        if self.wrapper {
            loop {
                match self.skip_ws()? {
                    Some(b',') => {
                        self.bump();
                        match self.skip_ws()? {
                            Some(b'"') => self.skip_value()?,
                            Some(b) => {
                                return Err(self.syntax(format!(
                                    "expected a key in the top-level object, found {}",
                                    describe_byte(b)
                                )));
                            }
                            None => return Err(self.eof_error("the top-level object".to_string())),
                        }
                        self.expect_colon()?;
                        if self.skip_ws()?.is_none() {
                            return Err(self.eof_error("the top-level object".to_string()));
                        }
                        self.skip_value()?;
                    }
                    Some(b'}') => {
                        self.bump();
                        break;
                    }
                    Some(b) => {
                        return Err(self.syntax(format!(
                            "expected ',' or '}}' after the array of records, found {}",
                            describe_byte(b)
                        )));
                    }
                    None => return Err(self.eof_error("the top-level object".to_string())),
                }
            }
        }
        match self.skip_ws()? {
            None => Ok(()),
            Some(b) => Err(self.syntax(format!(
                "unexpected {} after the end of the JSON document",
                describe_byte(b)
            ))),
        }
    }

    /// The next element, its bytes (at most `max` of them) in `out`; `None` after the last.
    pub(crate) fn next_element(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<Option<Element>, SplitError> {
        loop {
            match self.state {
                SplitState::Done => return Ok(None),
                SplitState::Start => self.start()?,
                SplitState::Array { first } => {
                    let array = format!("the JSON array that opens on line {}", self.array_line);
                    match self.skip_ws()? {
                        None => return Err(self.eof_error(array)),
                        Some(b']') => {
                            self.bump();
                            self.finish()?;
                            return Ok(None);
                        }
                        Some(b',') if !first => {
                            self.bump();
                            match self.skip_ws()? {
                                None => return Err(self.eof_error(array)),
                                Some(b']') => {
                                    // A trailing comma: tolerated.
                                    self.bump();
                                    self.finish()?;
                                    return Ok(None);
                                }
                                Some(_) => {}
                            }
                        }
                        Some(_) if first => {}
                        Some(b) => {
                            return Err(self.syntax(format!(
                                "expected ',' or ']' after the record that starts on line {}, \
                                 found {}",
                                self.last_element_line,
                                describe_byte(b)
                            )));
                        }
                    }
                    out.clear();
                    let line = self.line;
                    let len = self.value(Capture {
                        out: Some(out),
                        max,
                        len: 0,
                    })?;
                    self.state = SplitState::Array { first: false };
                    self.last_element_line = line;
                    return Ok(Some(Element {
                        line,
                        len,
                        truncated: len > max,
                    }));
                }
            }
        }
    }
}

fn scan_json<R: Read>(
    file: &str,
    input: Counted<R>,
    wanted: &[String],
    sink: &mut dyn ScanSink,
) -> Result<ScanStats, ScanError> {
    let mut splitter = JsonArraySplitter::new(input);
    let mut stats = ScanStats::default();
    let mut element = Vec::new();
    loop {
        let found = splitter
            .next_element(&mut element, MAX_RECORD_BYTES)
            .map_err(|e| match e {
                SplitError::Io { line, error } => ScanError::Read {
                    file: file.to_string(),
                    line,
                    source: error,
                },
                SplitError::Shape { line, found } => ScanError::BrokenJson {
                    file: file.to_string(),
                    line,
                    problem: format!(
                        "expected a JSON array of records (or an object holding one), found {found}"
                    ),
                },
                SplitError::Syntax { line, problem, .. } => ScanError::BrokenJson {
                    file: file.to_string(),
                    line,
                    problem,
                },
            })?;
        let Some(el) = found else { break };
        stats.records += 1;
        if el.truncated {
            stats.malformed += 1;
            sink.malformed(el.line, &too_long(el.len), &raw_text(&element, el.len))?;
            continue;
        }
        let one_line = !element.contains(&b'\n');
        emit_json(sink, &mut stats, el.line, &element, one_line, wanted)?;
    }
    stats.bytes = splitter.get_ref().bytes;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::read::GzDecoder;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// Collects what a scan hands out.
    #[derive(Default)]
    struct Collect {
        rows: Vec<(u64, Vec<Option<String>>)>,
        bad: Vec<(u64, String, String)>,
    }

    impl ScanSink for Collect {
        fn record(&mut self, line: u64, values: &[Option<&str>]) -> Result<(), ScanError> {
            self.rows
                .push((line, values.iter().map(|v| v.map(str::to_string)).collect()));
            Ok(())
        }
        fn malformed(&mut self, line: u64, problem: &str, raw: &str) -> Result<(), ScanError> {
            self.bad.push((line, problem.to_string(), raw.to_string()));
            Ok(())
        }
    }

    fn layout(format: Format, columns: &[&str], has_header: bool) -> Layout {
        Layout {
            format,
            delimiter: b',',
            quote: b'"',
            has_header,
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn wanted(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn run(format: Format, data: &[u8], w: &[&str]) -> (ScanStats, Collect) {
        let mut sink = Collect::default();
        let stats = scan("f", data, &layout(format, &[], true), &wanted(w), &mut sink).unwrap();
        (stats, sink)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn csv_quotes_newlines_crlf_and_bom() {
        let data = "\u{feff}id,name,amount\r\n1,\"Smith, J\",10.5\r\n2,\"multi\r\nline \"\"q\"\"\",\r\n3,plain,\"7\"\r\n\r\n  \r\n";
        let (stats, sink) = run(
            Format::Csv,
            data.as_bytes(),
            &["amount", "id", "name", "missing"],
        );
        assert_eq!(
            stats,
            ScanStats {
                records: 3,
                malformed: 0,
                bytes: data.len() as u64
            }
        );
        assert_eq!(sink.rows.len(), 3);
        assert_eq!(
            sink.rows[0],
            (2, vec![s("10.5"), s("1"), s("Smith, J"), None])
        );
        assert_eq!(
            sink.rows[1],
            (3, vec![s(""), s("2"), s("multi\r\nline \"q\""), None])
        );
        assert_eq!(sink.rows[2], (5, vec![s("7"), s("3"), s("plain"), None]));
    }

    #[test]
    fn csv_columns_are_found_by_name_in_each_file() {
        // The layout was inferred from a file with another column order.
        let l = layout(Format::Csv, &["a", "b", "c"], true);
        let mut sink = Collect::default();
        scan(
            "f.csv",
            "C,A\n3,1\n".as_bytes(),
            &l,
            &wanted(&["a", "b", "c"]),
            &mut sink,
        )
        .unwrap();
        assert_eq!(sink.rows, vec![(2, vec![s("1"), None, s("3")])]);
    }

    #[test]
    fn csv_headerless_by_position() {
        let l = layout(Format::Csv, &["column_1", "column_2"], false);
        let mut sink = Collect::default();
        let stats = scan(
            "f.csv",
            "x,1\ny,2\n".as_bytes(),
            &l,
            &wanted(&["column_2"]),
            &mut sink,
        )
        .unwrap();
        assert_eq!(stats.records, 2);
        assert_eq!(sink.rows, vec![(1, vec![s("1")]), (2, vec![s("2")])]);
    }

    #[test]
    fn csv_field_count_and_utf8_problems_are_malformed() {
        let mut data = b"a,b\n1,2\n3\n4,5,6\n".to_vec();
        data.extend_from_slice(b"7,caf\xe9\n8,9\n");
        let (stats, sink) = run(Format::Csv, &data, &["a", "b"]);
        assert_eq!(stats.records, 5);
        assert_eq!(stats.malformed, 3);
        assert_eq!(
            sink.rows,
            vec![(2, vec![s("1"), s("2")]), (6, vec![s("8"), s("9")])]
        );
        assert_eq!(sink.bad[0].0, 3);
        assert_eq!(sink.bad[0].1, "expected 2 fields, found 1");
        assert_eq!(sink.bad[0].2, "3");
        assert_eq!(sink.bad[1].1, "expected 2 fields, found 3");
        assert_eq!(sink.bad[1].2, "4,5,6");
        assert_eq!(sink.bad[2].0, 5);
        assert!(sink.bad[2].1.contains("invalid UTF-8"), "{}", sink.bad[2].1);
        assert_eq!(sink.bad[2].2, "7,caf\u{fffd}");
    }

    #[test]
    fn csv_ten_megabyte_value_is_malformed_and_the_scan_goes_on() {
        let mut data = b"id,note\n1,short\n2,".to_vec();
        data.extend(std::iter::repeat_n(b'x', 10 << 20));
        data.extend_from_slice(b"\n3,after\n");
        let (stats, sink) = run(Format::Csv, &data, &["id", "note"]);
        assert_eq!(stats.records, 3);
        assert_eq!(stats.malformed, 1);
        assert_eq!(
            sink.rows,
            vec![(2, vec![s("1"), s("short")]), (4, vec![s("3"), s("after")])]
        );
        let (line, problem, raw) = &sink.bad[0];
        assert_eq!(*line, 3);
        assert!(problem.contains("over the 1048576-byte"), "{problem}");
        assert!(
            raw.len() < MAX_RAW_BYTES + 100 && raw.ends_with("bytes]"),
            "{}",
            raw.len()
        );
    }

    #[test]
    fn csv_unclosed_quote_stops_with_the_line() {
        let mut data = b"id,note\n1,ok\n2,\"never closed".to_vec();
        data.extend(std::iter::repeat_n(
            b'y',
            (MAX_OPEN_RECORD_BYTES + (2 << 20)) as usize,
        ));
        let mut sink = Collect::default();
        let err = scan(
            "big.csv",
            &data[..],
            &layout(Format::Csv, &[], true),
            &wanted(&["id"]),
            &mut sink,
        )
        .unwrap_err();
        assert!(
            matches!(err, ScanError::UnclosedRecord { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("big.csv: line 3: "), "{err}");
        assert_eq!(sink.rows.len(), 1);
    }

    #[test]
    fn ndjson_bad_lines_are_malformed() {
        let data = "{\"a\": 1, \"b\": {\"c\": \"x\", \"d\": [1,2]}}\n\n[1]\n{\"a\": tru}\r\n{\"a\": null, \"e\": 2.50, \"f\": true}\n";
        let (stats, sink) = run(
            Format::Ndjson,
            data.as_bytes(),
            &["a", "b_c", "b_d", "e", "f", "b"],
        );
        assert_eq!(stats.records, 4);
        assert_eq!(stats.malformed, 2);
        assert_eq!(
            sink.rows[0],
            (
                1,
                vec![
                    s("1"),
                    s("x"),
                    s("[1,2]"),
                    None,
                    None,
                    s(r#"{"c":"x","d":[1,2]}"#)
                ]
            )
        );
        assert_eq!(
            sink.rows[1],
            (5, vec![None, None, None, s("2.5"), s("true"), None])
        );
        assert_eq!(sink.bad[0].0, 3);
        assert_eq!(sink.bad[0].1, "expected a JSON object, found an array");
        assert_eq!(sink.bad[1].0, 4);
        assert!(
            sink.bad[1].1.starts_with("expected ident (column"),
            "{}",
            sink.bad[1].1
        );
        assert_eq!(sink.bad[1].2, "{\"a\": tru}");
    }

    #[test]
    fn json_array_spanning_lines_has_element_start_lines() {
        let data = "[\n  {\"id\": 1,\n   \"s\": \"a]b\\\"}\"},\n  {\"id\": 2}, 7,\n\n  {\"id\": {\"x\": [3]}}\n]\n";
        let (stats, sink) = run(Format::Json, data.as_bytes(), &["id", "s"]);
        assert_eq!(stats.records, 4);
        assert_eq!(stats.malformed, 1);
        assert_eq!(
            sink.rows,
            vec![
                (2, vec![s("1"), s("a]b\"}")]),
                (4, vec![s("2"), None]),
                (6, vec![s(r#"{"x":[3]}"#), None]),
            ]
        );
        assert_eq!(sink.bad[0].0, 4);
        assert_eq!(sink.bad[0].1, "expected a JSON object, found a number");
    }

    #[test]
    fn json_wrapper_object() {
        let data = "{\"count\": 2, \"meta\": {\"a\": [1]},\n \"records\": [{\"id\": \"x\"},\n{\"id\": \"y\"}], \"next\": null}\n";
        let (stats, sink) = run(Format::Json, data.as_bytes(), &["id"]);
        assert_eq!(stats.records, 2);
        assert_eq!(sink.rows, vec![(2, vec![s("x")]), (3, vec![s("y")])]);
        let mut sink = Collect::default();
        let err = scan(
            "w.json",
            "{\"a\": 1}".as_bytes(),
            &layout(Format::Json, &[], false),
            &wanted(&["a"]),
            &mut sink,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no array in it (keys: a)"),
            "{err}"
        );
    }

    #[test]
    fn json_broken_structure_is_fatal_with_line() {
        for (data, line, text) in [
            ("[{\"a\":1}\n{\"a\":2}]", 2, "expected ',' or ']'"),
            (
                "[{\"a\":1},\n{\"a\":2",
                2,
                "ends inside the record that starts on line 2",
            ),
            ("[{\"a\":1}]\nx", 2, "unexpected 'x'"),
            ("\n\n42", 3, "found a number"),
        ] {
            let mut sink = Collect::default();
            let err = scan(
                "b.json",
                data.as_bytes(),
                &layout(Format::Json, &[], false),
                &wanted(&["a"]),
                &mut sink,
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("b.json: line {line}: ")), "{msg}");
            assert!(msg.contains(text), "{msg}");
        }
    }

    #[test]
    fn json_element_syntax_error_is_malformed_not_fatal() {
        let data = "[{\"a\": 1}, {\"a\": }, {\"a\": 3}]";
        let (stats, sink) = run(Format::Json, data.as_bytes(), &["a"]);
        assert_eq!(stats.records, 3);
        assert_eq!(stats.malformed, 1);
        assert_eq!(sink.rows.len(), 2);
        assert_eq!(sink.bad[0].2, "{\"a\": }");
    }

    #[test]
    fn truncated_gzip_is_fatal_and_names_the_file() {
        let mut text = String::from("id,amount\n");
        for i in 0..20_000 {
            text.push_str(&format!("{i},{}.{:02}\n", i * 7 % 1000, i % 100));
        }
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let cut = &gz[..gz.len() / 2];
        let mut sink = Collect::default();
        let err = scan(
            "sales.csv.gz",
            GzDecoder::new(cut),
            &layout(Format::Csv, &[], true),
            &wanted(&["id"]),
            &mut sink,
        )
        .unwrap_err();
        assert!(matches!(err, ScanError::Read { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("sales.csv.gz: line "), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
        assert!(!sink.rows.is_empty());
        // The whole stream reads fine.
        let mut sink = Collect::default();
        let stats = scan(
            "sales.csv.gz",
            GzDecoder::new(&gz[..]),
            &layout(Format::Csv, &[], true),
            &wanted(&["id"]),
            &mut sink,
        )
        .unwrap();
        assert_eq!(stats.records, 20_000);
        assert_eq!(stats.bytes, text.len() as u64);
    }

    #[test]
    fn empty_inputs_have_no_records() {
        for format in [Format::Csv, Format::Ndjson, Format::Json] {
            let (stats, _) = run(format, b"", &["a"]);
            assert_eq!(stats.records, 0, "{format}");
        }
    }

    #[test]
    fn sink_errors_pass_through() {
        struct Refuse;
        impl ScanSink for Refuse {
            fn record(&mut self, line: u64, _: &[Option<&str>]) -> Result<(), ScanError> {
                Err(ScanError::sink(format!("disk full at line {line}")))
            }
            fn malformed(&mut self, _: u64, _: &str, _: &str) -> Result<(), ScanError> {
                Ok(())
            }
        }
        let err = scan(
            "f.csv",
            "a\n1\n".as_bytes(),
            &layout(Format::Csv, &[], true),
            &wanted(&["a"]),
            &mut Refuse,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full at line 2");
    }

    /// Throughput check: `cargo test --release -p shoplake-catalog -- --ignored csv_throughput`.
    #[test]
    #[ignore = "throughput check; run in release"]
    fn csv_throughput() {
        let mut data = Vec::with_capacity(210 << 20);
        data.extend_from_slice(b"transaction_id,sales_date,customer_id,product_id,quantity,unit_price,amount,region,status\n");
        let mut i = 0u64;
        while data.len() < 200 << 20 {
            writeln!(
                data,
                "T{i:09},2025-{:02}-{:02},C{:06},P{:05},{},{}.{:02},{}.{:02},\"North, East\",COMPLETED",
                i % 12 + 1,
                i % 28 + 1,
                i % 100_000,
                i % 5000,
                i % 9 + 1,
                i % 500,
                i % 100,
                i % 4000,
                i % 100
            )
            .unwrap();
            i += 1;
        }
        struct Count(u64);
        impl ScanSink for Count {
            fn record(&mut self, _: u64, v: &[Option<&str>]) -> Result<(), ScanError> {
                self.0 += v.iter().map(|x| x.map_or(0, str::len) as u64).sum::<u64>();
                Ok(())
            }
            fn malformed(&mut self, _: u64, _: &str, _: &str) -> Result<(), ScanError> {
                Ok(())
            }
        }
        let w = wanted(&[
            "transaction_id",
            "sales_date",
            "customer_id",
            "product_id",
            "quantity",
            "unit_price",
            "amount",
            "region",
            "status",
        ]);
        let start = std::time::Instant::now();
        let mut sink = Count(0);
        let stats = scan(
            "t.csv",
            &data[..],
            &layout(Format::Csv, &[], true),
            &w,
            &mut sink,
        )
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let mbps = data.len() as f64 / secs / 1e6;
        eprintln!("{} records, {:.0} MB/s", stats.records, mbps);
        assert_eq!(stats.malformed, 0);
        assert!(mbps >= 100.0, "{mbps:.0} MB/s");
    }
}
