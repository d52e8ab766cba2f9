//! The control plane, in SQLite: the file ledger (the staging/audit table of the seeds: every
//! file, its hash, status and row counts), the versioned catalog of source schemas and mappings,
//! and the history of runs. One [`Ledger`] per lake; every change is a single SQLite transaction,
//! so the ledger is never half-updated.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("control database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("control database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("control database holds invalid JSON in {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl LedgerError {
    /// Another process holds the database longer than the busy timeout: worth another try.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LedgerError::Sql(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Where a file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// In the raw zone, not yet crawled.
    Ingested,
    /// Schema and mapping known; waiting to be loaded.
    Crawled,
    /// Processed: its rows are loaded, quarantined or counted as duplicates.
    Loaded,
    /// Could not be read; nothing of it is in the tables. `error` says why.
    Failed,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Ingested => "ingested",
            FileStatus::Crawled => "crawled",
            FileStatus::Loaded => "loaded",
            FileStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> FileStatus {
        match s {
            "crawled" => FileStatus::Crawled,
            "loaded" => FileStatus::Loaded,
            "failed" => FileStatus::Failed,
            _ => FileStatus::Ingested,
        }
    }
}

/// One row of the file ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    pub file_id: i64,
    pub source: String,
    pub name: String,
    pub raw_path: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub received_at: DateTime<Utc>,
    pub status: FileStatus,
    pub entity: Option<String>,
    pub catalog_version: Option<i64>,
    pub rows_in: i64,
    pub rows_loaded: i64,
    pub rows_quarantined: i64,
    pub rows_duplicate: i64,
    pub run_id: Option<i64>,
    pub error: Option<String>,
}

/// A file to add to the ledger.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub source: &'a str,
    pub name: &'a str,
    pub raw_path: &'a str,
    pub sha256: &'a str,
    pub size_bytes: u64,
    pub received_at: DateTime<Utc>,
    pub status: FileStatus,
    pub error: Option<&'a str>,
}

/// One version of a source's schema and mapping in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogEntry {
    pub source: String,
    pub version: i64,
    pub entity: String,
    pub file_id: i64,
    pub schema_json: String,
    pub mapping_json: String,
    pub drift_json: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The outcome of one file in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileOutcome {
    pub file_id: i64,
    pub rows_in: i64,
    pub loaded: i64,
    pub duplicates: i64,
    /// Rows quarantined, by reason code.
    pub quarantined: BTreeMap<String, i64>,
}

impl FileOutcome {
    pub fn quarantined_total(&self) -> i64 {
        self.quarantined.values().sum()
    }
    /// Rows in = loaded + quarantined + duplicates.
    pub fn adds_up(&self) -> bool {
        self.rows_in == self.loaded + self.duplicates + self.quarantined_total()
    }
}

/// The outcome of one file in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFileRecord {
    pub run_id: i64,
    pub file_id: i64,
    pub rows_in: i64,
    pub loaded: i64,
    pub quarantined: i64,
    pub duplicates: i64,
    /// Quarantined rows by reason, as a JSON object.
    pub reasons_json: String,
}

/// One row of the run history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: i64,
    pub kind: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub files: i64,
    pub rows_in: i64,
    pub loaded: i64,
    pub quarantined: i64,
    pub duplicates: i64,
    pub error: Option<String>,
    /// Table -> Delta version before the run started (for recovery after a crash).
    pub table_versions: BTreeMap<String, i64>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS files (
  file_id INTEGER PRIMARY KEY,
  source TEXT NOT NULL,
  name TEXT NOT NULL,
  raw_path TEXT NOT NULL,
  sha256 TEXT NOT NULL UNIQUE,
  size_bytes INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  status TEXT NOT NULL,
  entity TEXT,
  catalog_version INTEGER,
  rows_in INTEGER NOT NULL DEFAULT 0,
  rows_loaded INTEGER NOT NULL DEFAULT 0,
  rows_quarantined INTEGER NOT NULL DEFAULT 0,
  rows_duplicate INTEGER NOT NULL DEFAULT 0,
  run_id INTEGER,
  error TEXT
);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
CREATE TABLE IF NOT EXISTS file_reasons (
  file_id INTEGER NOT NULL REFERENCES files(file_id),
  reason TEXT NOT NULL,
  rows INTEGER NOT NULL,
  PRIMARY KEY (file_id, reason)
);
CREATE TABLE IF NOT EXISTS catalog (
  source TEXT NOT NULL,
  version INTEGER NOT NULL,
  entity TEXT NOT NULL,
  file_id INTEGER NOT NULL,
  schema_json TEXT NOT NULL,
  mapping_json TEXT NOT NULL,
  drift_json TEXT,
  created_at TEXT NOT NULL,
  PRIMARY KEY (source, version)
);
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at TEXT NOT NULL,
  ended_at TEXT,
  files INTEGER NOT NULL DEFAULT 0,
  rows_in INTEGER NOT NULL DEFAULT 0,
  loaded INTEGER NOT NULL DEFAULT 0,
  quarantined INTEGER NOT NULL DEFAULT 0,
  duplicates INTEGER NOT NULL DEFAULT 0,
  error TEXT,
  table_versions TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS run_files (
  run_id INTEGER NOT NULL REFERENCES runs(run_id),
  file_id INTEGER NOT NULL REFERENCES files(file_id),
  rows_in INTEGER NOT NULL,
  loaded INTEGER NOT NULL,
  quarantined INTEGER NOT NULL,
  duplicates INTEGER NOT NULL,
  reasons TEXT NOT NULL,
  PRIMARY KEY (run_id, file_id)
);
CREATE TABLE IF NOT EXISTS tasks (
  run_id INTEGER NOT NULL REFERENCES runs(run_id),
  seq INTEGER NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  started_at TEXT,
  ended_at TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  rows INTEGER,
  detail TEXT,
  error TEXT,
  PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
"#;

/// The control-plane database.
pub struct Ledger {
    conn: Mutex<Connection>,
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

const FILE_COLS: &str = "file_id, source, name, raw_path, sha256, size_bytes, received_at, status, entity, \
    catalog_version, rows_in, rows_loaded, rows_quarantined, rows_duplicate, run_id, error";

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        file_id: r.get(0)?,
        source: r.get(1)?,
        name: r.get(2)?,
        raw_path: r.get(3)?,
        sha256: r.get(4)?,
        size_bytes: r.get(5)?,
        received_at: parse_ts(&r.get::<_, String>(6)?),
        status: FileStatus::parse(&r.get::<_, String>(7)?),
        entity: r.get(8)?,
        catalog_version: r.get(9)?,
        rows_in: r.get(10)?,
        rows_loaded: r.get(11)?,
        rows_quarantined: r.get(12)?,
        rows_duplicate: r.get(13)?,
        run_id: r.get(14)?,
        error: r.get(15)?,
    })
}

const RUN_COLS: &str = "run_id, kind, status, started_at, ended_at, files, rows_in, loaded, quarantined, duplicates, error, table_versions";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let versions: String = r.get(11)?;
    Ok(RunRecord {
        run_id: r.get(0)?,
        kind: r.get(1)?,
        status: r.get(2)?,
        started_at: parse_ts(&r.get::<_, String>(3)?),
        ended_at: r.get::<_, Option<String>>(4)?.map(|s| parse_ts(&s)),
        files: r.get(5)?,
        rows_in: r.get(6)?,
        loaded: r.get(7)?,
        quarantined: r.get(8)?,
        duplicates: r.get(9)?,
        error: r.get(10)?,
        table_versions: serde_json::from_str(&versions).unwrap_or_default(),
    })
}

impl Ledger {
    /// Open (and create or migrate) the control database at `path`.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Ledger> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Ledger> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Ledger {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- settings ----

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // ---- files ----

    /// The ledger entry of a content hash, if this content was seen before.
    pub fn file_by_hash(&self, sha256: &str) -> Result<Option<FileRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {FILE_COLS} FROM files WHERE sha256 = ?1"),
                [sha256],
                file_row,
            )
            .optional()?)
    }

    pub fn file(&self, file_id: i64) -> Result<Option<FileRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {FILE_COLS} FROM files WHERE file_id = ?1"),
                [file_id],
                file_row,
            )
            .optional()?)
    }

    /// Add a file to the ledger and return its id.
    pub fn add_file(&self, f: &NewFile<'_>) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO files(source, name, raw_path, sha256, size_bytes, received_at, status, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                f.source,
                f.name,
                f.raw_path,
                f.sha256,
                f.size_bytes as i64,
                ts(&f.received_at),
                f.status.as_str(),
                f.error
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// All files, in ledger order, optionally only those with one of `statuses`.
    pub fn files(&self, statuses: &[FileStatus]) -> Result<Vec<FileRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {FILE_COLS} FROM files ORDER BY file_id"))?;
        let rows = stmt.query_map([], file_row)?;
        let mut out = Vec::new();
        for r in rows {
            let r = r?;
            if statuses.is_empty() || statuses.contains(&r.status) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Record that a file was crawled: its entity and the catalog version that describes it.
    pub fn set_crawled(&self, file_id: i64, entity: &str, catalog_version: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE files SET status = 'crawled', entity = ?2, catalog_version = ?3, error = NULL WHERE file_id = ?1",
            params![file_id, entity, catalog_version],
        )?;
        Ok(())
    }

    /// Mark a file failed with the reason; none of its rows are in the tables.
    pub fn set_failed(&self, file_id: i64, error: &str, run_id: Option<i64>) -> Result<()> {
        self.conn().execute(
            "UPDATE files SET status = 'failed', error = ?2, run_id = COALESCE(?3, run_id) WHERE file_id = ?1",
            params![file_id, error, run_id],
        )?;
        Ok(())
    }
    /// Per-file quarantine counts by reason, for all files.
    pub fn file_reasons(&self) -> Result<Vec<(i64, String, i64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT file_id, reason, rows FROM file_reasons ORDER BY file_id, reason")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Per-file outcomes of every run.
    pub fn run_files(&self) -> Result<Vec<RunFileRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, file_id, rows_in, loaded, quarantined, duplicates, reasons FROM run_files ORDER BY run_id, file_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RunFileRecord {
                run_id: r.get(0)?,
                file_id: r.get(1)?,
                rows_in: r.get(2)?,
                loaded: r.get(3)?,
                quarantined: r.get(4)?,
                duplicates: r.get(5)?,
                reasons_json: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ---- catalog ----

    pub fn latest_catalog(&self, source: &str) -> Result<Option<CatalogEntry>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT source, version, entity, file_id, schema_json, mapping_json, drift_json, created_at
                 FROM catalog WHERE source = ?1 ORDER BY version DESC LIMIT 1",
                [source],
                catalog_row,
            )
            .optional()?)
    }

    pub fn catalog_version(&self, source: &str, version: i64) -> Result<Option<CatalogEntry>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT source, version, entity, file_id, schema_json, mapping_json, drift_json, created_at
                 FROM catalog WHERE source = ?1 AND version = ?2",
                params![source, version],
                catalog_row,
            )
            .optional()?)
    }

    /// Every catalog version of every source.
    pub fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT source, version, entity, file_id, schema_json, mapping_json, drift_json, created_at
             FROM catalog ORDER BY source, version",
        )?;
        let rows = stmt.query_map([], catalog_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Add a catalog version for a source and return its number.
    pub fn add_catalog_version(
        &self,
        source: &str,
        entity: &str,
        file_id: i64,
        schema_json: &str,
        mapping_json: &str,
        drift_json: Option<&str>,
    ) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM catalog WHERE source = ?1",
            [source],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO catalog(source, version, entity, file_id, schema_json, mapping_json, drift_json, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![source, version, entity, file_id, schema_json, mapping_json, drift_json, ts(&Utc::now())],
        )?;
        tx.commit()?;
        Ok(version)
    }

    // ---- runs ----

    /// Start a run, remembering the table versions it starts from.
    pub fn start_run(&self, kind: &str, table_versions: &BTreeMap<String, i64>) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs(kind, status, started_at, table_versions) VALUES (?1, 'running', ?2, ?3)",
            params![kind, ts(&Utc::now()), serde_json::to_string(table_versions).unwrap_or_default()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Runs still marked running (their process died if no run is active now).
    pub fn running_runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE status = 'running' ORDER BY run_id"
        ))?;
        let rows = stmt.query_map([], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {RUN_COLS} FROM runs ORDER BY run_id"))?;
        let rows = stmt.query_map([], run_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn run(&self, run_id: i64) -> Result<Option<RunRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE run_id = ?1"),
                [run_id],
                run_row,
            )
            .optional()?)
    }

    /// Mark a run failed (a crash found at start-up, or an error).
    pub fn fail_run(&self, run_id: i64, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET status = 'failed', ended_at = ?2, error = ?3 WHERE run_id = ?1",
            params![run_id, ts(&Utc::now()), error],
        )?;
        Ok(())
    }

    /// Finish a run in one transaction: per-file outcomes (added to what the files already had,
    /// so replays accumulate), file statuses, failed files, and the run's totals.
    pub fn finish_run(
        &self,
        run_id: i64,
        outcomes: &[FileOutcome],
        failed: &[(i64, String)],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut rows_in, mut loaded, mut quarantined, mut dups) = (0i64, 0i64, 0i64, 0i64);
        for o in outcomes {
            let q = o.quarantined_total();
            rows_in += o.rows_in;
            loaded += o.loaded;
            quarantined += q;
            dups += o.duplicates;
            tx.execute(
                "UPDATE files SET status = 'loaded', rows_in = rows_in + ?2, rows_loaded = rows_loaded + ?3,
                   rows_quarantined = rows_quarantined + ?4, rows_duplicate = rows_duplicate + ?5, run_id = ?6, error = NULL
                 WHERE file_id = ?1",
                params![o.file_id, o.rows_in, o.loaded, q, o.duplicates, run_id],
            )?;
            for (reason, n) in &o.quarantined {
                tx.execute(
                    "INSERT INTO file_reasons(file_id, reason, rows) VALUES (?1, ?2, ?3)
                     ON CONFLICT(file_id, reason) DO UPDATE SET rows = rows + excluded.rows",
                    params![o.file_id, reason, n],
                )?;
            }
            tx.execute(
                "INSERT INTO run_files(run_id, file_id, rows_in, loaded, quarantined, duplicates, reasons)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    run_id,
                    o.file_id,
                    o.rows_in,
                    o.loaded,
                    q,
                    o.duplicates,
                    serde_json::to_string(&o.quarantined).unwrap_or_default()
                ],
            )?;
        }
        for (file_id, error) in failed {
            tx.execute(
                "UPDATE files SET status = 'failed', error = ?2, run_id = ?3 WHERE file_id = ?1",
                params![file_id, error, run_id],
            )?;
        }
        let status = if failed.is_empty() {
            "succeeded"
        } else {
            "succeeded_with_failures"
        };
        tx.execute(
            "UPDATE runs SET status = ?2, ended_at = ?3, files = ?4, rows_in = ?5, loaded = ?6, quarantined = ?7, duplicates = ?8
             WHERE run_id = ?1",
            params![run_id, status, ts(&Utc::now()), (outcomes.len() + failed.len()) as i64, rows_in, loaded, quarantined, dups],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Record a quarantine replay in one transaction. `reasons` holds per file and reason the
    /// change in quarantined rows (negative: rows that left, positive: rows that failed again
    /// with a new reason); `files` holds per file the rows that loaded and the rows that turned
    /// out to be duplicates.
    pub fn record_replay(
        &self,
        run_id: i64,
        reasons: &[(i64, String, i64)],
        files: &[(i64, i64, i64)],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut loaded, mut dups, mut quarantined) = (0, 0, 0);
        for (file_id, reason, delta) in reasons {
            tx.execute(
                "INSERT INTO file_reasons(file_id, reason, rows) VALUES (?1, ?2, ?3)
                 ON CONFLICT(file_id, reason) DO UPDATE SET rows = rows + excluded.rows",
                params![file_id, reason, delta],
            )?;
            tx.execute(
                "UPDATE files SET rows_quarantined = rows_quarantined + ?2 WHERE file_id = ?1",
                params![file_id, delta],
            )?;
            quarantined += delta;
        }
        tx.execute("DELETE FROM file_reasons WHERE rows = 0", [])?;
        for (file_id, l, d) in files {
            tx.execute(
                "UPDATE files SET rows_loaded = rows_loaded + ?2, rows_duplicate = rows_duplicate + ?3 WHERE file_id = ?1",
                params![file_id, l, d],
            )?;
            loaded += l;
            dups += d;
        }
        tx.execute(
            "UPDATE runs SET status = 'succeeded', ended_at = ?2, files = ?3, loaded = ?4, duplicates = ?5, quarantined = ?6
             WHERE run_id = ?1",
            params![run_id, ts(&Utc::now()), files.len() as i64, loaded, dups, quarantined],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn catalog_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CatalogEntry> {
    Ok(CatalogEntry {
        source: r.get(0)?,
        version: r.get(1)?,
        entity: r.get(2)?,
        file_id: r.get(3)?,
        schema_json: r.get(4)?,
        mapping_json: r.get(5)?,
        drift_json: r.get(6)?,
        created_at: parse_ts(&r.get::<_, String>(7)?),
    })
}

/// The result of one data-quality expectation on one file (see `shoplake_etl::quality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    pub run_id: i64,
    pub table_name: String,
    pub file_id: i64,
    /// The expectation's name (`max_null_rate(amount)` unless configured).
    pub name: String,
    /// not_null, unique, accepted_values, range, max_null_rate, min_rows or freshness.
    pub check: String,
    pub column: Option<String>,
    /// `error` or `warn`.
    pub severity: String,
    pub passed: bool,
    /// What was measured: a share of rows for max_null_rate, a row count for the others, an
    /// age in days for freshness.
    pub observed: Option<f64>,
    /// The limit it was held to (None where the check has no single number).
    pub threshold: Option<f64>,
    pub message: String,
    pub checked_at: DateTime<Utc>,
}

const QUALITY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS quality (
  run_id INTEGER NOT NULL,
  table_name TEXT NOT NULL,
  file_id INTEGER NOT NULL,
  name TEXT NOT NULL,
  check_name TEXT NOT NULL,
  column_name TEXT,
  severity TEXT NOT NULL,
  passed INTEGER NOT NULL,
  observed REAL,
  threshold REAL,
  message TEXT NOT NULL,
  checked_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quality_run ON quality(run_id);
";

impl Ledger {
    /// Record data-quality results, in one transaction.
    pub fn record_quality(&self, results: &[QualityResult]) -> Result<()> {
        let mut conn = self.conn();
        conn.execute_batch(QUALITY_SCHEMA)?;
        let tx = conn.transaction()?;
        for r in results {
            tx.execute(
                "INSERT INTO quality(run_id, table_name, file_id, name, check_name, column_name, severity, passed, observed, threshold, message, checked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.run_id,
                    r.table_name,
                    r.file_id,
                    r.name,
                    r.check,
                    r.column,
                    r.severity,
                    r.passed,
                    r.observed,
                    r.threshold,
                    r.message,
                    ts(&r.checked_at)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every data-quality result, oldest first.
    pub fn quality_results(&self) -> Result<Vec<QualityResult>> {
        let conn = self.conn();
        conn.execute_batch(QUALITY_SCHEMA)?;
        let mut stmt = conn.prepare(
            "SELECT run_id, table_name, file_id, name, check_name, column_name, severity, passed, observed, threshold, message, checked_at
             FROM quality ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(QualityResult {
                run_id: r.get(0)?,
                table_name: r.get(1)?,
                file_id: r.get(2)?,
                name: r.get(3)?,
                check: r.get(4)?,
                column: r.get(5)?,
                severity: r.get(6)?,
                passed: r.get(7)?,
                observed: r.get(8)?,
                threshold: r.get(9)?,
                message: r.get(10)?,
                checked_at: parse_ts(&r.get::<_, String>(11)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// One task of a run (see `shoplake runs show`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskRecord {
    pub run_id: i64,
    pub seq: i64,
    pub name: String,
    /// queued, running, succeeded, failed, retrying or skipped.
    pub state: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub rows: Option<i64>,
    pub detail: Option<String>,
    pub error: Option<String>,
}

const TASK_COLS: &str =
    "run_id, seq, name, state, started_at, ended_at, attempts, rows, detail, error";

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        run_id: r.get(0)?,
        seq: r.get(1)?,
        name: r.get(2)?,
        state: r.get(3)?,
        started_at: r.get::<_, Option<String>>(4)?.map(|s| parse_ts(&s)),
        ended_at: r.get::<_, Option<String>>(5)?.map(|s| parse_ts(&s)),
        attempts: r.get(6)?,
        rows: r.get(7)?,
        detail: r.get(8)?,
        error: r.get(9)?,
    })
}

impl Ledger {
    /// Queue a run's tasks, in order.
    pub fn queue_tasks(&self, run_id: i64, names: &[&str]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (seq, name) in names.iter().enumerate() {
            tx.execute(
                "INSERT OR IGNORE INTO tasks(run_id, seq, name, state) VALUES (?1, ?2, ?3, 'queued')",
                params![run_id, seq as i64, name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A task starts (or starts again after a transient failure: `attempts` counts them).
    pub fn task_running(&self, run_id: i64, name: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1,
               started_at = COALESCE(started_at, ?3), error = NULL
             WHERE run_id = ?1 AND name = ?2",
            params![run_id, name, ts(&Utc::now())],
        )?;
        Ok(())
    }

    /// A task failed for a reason that may pass; it runs again after a delay.
    pub fn task_retrying(&self, run_id: i64, name: &str, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = 'retrying', error = ?3 WHERE run_id = ?1 AND name = ?2",
            params![run_id, name, error],
        )?;
        Ok(())
    }

    /// A task ended: `state` is succeeded, failed or skipped.
    pub fn task_ended(
        &self,
        run_id: i64,
        name: &str,
        state: &str,
        rows: Option<i64>,
        detail: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = ?3, ended_at = ?4, rows = ?5, detail = ?6, error = ?7
             WHERE run_id = ?1 AND name = ?2",
            params![run_id, name, state, ts(&Utc::now()), rows, detail, error],
        )?;
        Ok(())
    }

    /// Tasks of one run (`Some`) or of every run, in order.
    pub fn tasks(&self, run_id: Option<i64>) -> Result<Vec<TaskRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TASK_COLS} FROM tasks WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, seq"
        ))?;
        let rows = stmt.query_map([run_id], task_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Tasks left queued, running or retrying by a run that was interrupted: failed.
    pub fn fail_open_tasks(&self, run_id: i64, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = CASE WHEN state = 'queued' THEN 'skipped' ELSE 'failed' END,
               ended_at = ?3, error = CASE WHEN state = 'queued' THEN NULL ELSE ?2 END
             WHERE run_id = ?1 AND state IN ('queued', 'running', 'retrying')",
            params![run_id, error, ts(&Utc::now())],
        )?;
        Ok(())
    }

    /// Forget runs that ended before `before`, with their tasks and per-file rows (the file
    /// ledger keeps each file's totals). Returns the runs removed.
    pub fn prune_runs(&self, before: DateTime<Utc>) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let cut = ts(&before);
        let old = "SELECT run_id FROM runs WHERE status <> 'running' AND ended_at IS NOT NULL AND ended_at < ?1";
        tx.execute(
            &format!("DELETE FROM tasks WHERE run_id IN ({old})"),
            [&cut],
        )?;
        tx.execute(
            &format!("DELETE FROM run_files WHERE run_id IN ({old})"),
            [&cut],
        )?;
        let has_quality: bool = tx
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'quality'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        if has_quality {
            tx.execute(
                &format!("DELETE FROM quality WHERE run_id IN ({old})"),
                [&cut],
            )?;
        }
        // A file keeps the id of the last run that touched it, as history.
        let n = tx.execute(
            "DELETE FROM runs WHERE status <> 'running' AND ended_at IS NOT NULL AND ended_at < ?1",
            [&cut],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file<'a>(sha: &'a str) -> NewFile<'a> {
        NewFile {
            source: "pos",
            name: "a.csv",
            raw_path: "raw/pos/a.csv",
            sha256: sha,
            size_bytes: 10,
            received_at: Utc::now(),
            status: FileStatus::Ingested,
            error: None,
        }
    }

    #[test]
    fn file_lifecycle_and_counts_add_up() {
        let l = Ledger::open_in_memory().unwrap();
        let id = l.add_file(&new_file("aa")).unwrap();
        assert!(
            l.add_file(&new_file("aa")).is_err(),
            "same content twice is refused"
        );
        assert_eq!(l.file_by_hash("aa").unwrap().unwrap().file_id, id);
        let v = l
            .add_catalog_version("pos", "sales", id, "{}", "{}", None)
            .unwrap();
        assert_eq!(v, 1);
        l.set_crawled(id, "sales", v).unwrap();
        assert_eq!(l.files(&[FileStatus::Crawled]).unwrap().len(), 1);
        let run = l
            .start_run("manual", &BTreeMap::from([("fact_sales".to_string(), 3)]))
            .unwrap();
        assert_eq!(l.running_runs().unwrap()[0].table_versions["fact_sales"], 3);
        let outcome = FileOutcome {
            file_id: id,
            rows_in: 10,
            loaded: 7,
            duplicates: 1,
            quarantined: BTreeMap::from([("bad_date".to_string(), 2)]),
        };
        assert!(outcome.adds_up());
        l.finish_run(run, &[outcome], &[]).unwrap();
        let f = l.file(id).unwrap().unwrap();
        assert_eq!(
            (f.status, f.rows_loaded, f.rows_quarantined),
            (FileStatus::Loaded, 7, 2)
        );
        l.record_replay(run, &[(id, "bad_date".to_string(), -2)], &[(id, 2, 0)])
            .unwrap();
        let f = l.file(id).unwrap().unwrap();
        assert_eq!((f.rows_in, f.rows_loaded, f.rows_quarantined), (10, 9, 0));
        assert!(l.file_reasons().unwrap().is_empty());
    }
}
