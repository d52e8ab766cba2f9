//! Warehouse export: the last step of the flow, after the star schema and the marts. Every
//! Delta table under `processed/` and `marts/` is loaded into a PostgreSQL or MySQL/MariaDB
//! database: tables created with SQL types and primary keys, rows bulk-loaded (`COPY` for
//! PostgreSQL, multi-row `INSERT` for MySQL), the whole export in one database transaction
//! so a reader sees the warehouse before or after, never half-loaded. A state table
//! (`shoplake_export_state`) records the Delta version each table was exported at: a table
//! whose history since then only appended rows gets only the new data files; any other
//! change replaces the table's rows; nothing new changes nothing.
//!
//! ```no_run
//! # async fn f(tables: shoplake_tables::Tables) -> shoplake_export::Result<()> {
//! use shoplake_export::{ExportOptions, Quiet, Target, export};
//! let target = Target::parse("postgres://dw@127.0.0.1:5432/shop")?;
//! let report = export(&tables, &target, &ExportOptions::default(), &Quiet).await?;
//! println!("{} rows", report.rows());
//! # Ok(()) }
//! ```

mod lake;
mod mysql;
mod postgres;
mod sql;
mod target;

pub use lake::{Change, Exported, key_columns};
pub use target::{Dialect, Target, redact};

use datafusion::arrow::datatypes::DataType;
use futures::StreamExt;
use lake::LakeTable;
use shoplake_tables::{TableId, Tables};
use std::time::{Duration, Instant};

/// Name of the table in the target that records what was exported.
pub const STATE_TABLE: &str = "shoplake_export_state";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The user's mistake: a bad URL, an unknown table, a target that does not fit.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Connect(Box<ConnectError>),
    #[error(transparent)]
    Auth(Box<AuthError>),
    #[error(transparent)]
    Schema(Box<SchemaError>),
    #[error("{dialect}: {context}: {source}")]
    Database {
        dialect: &'static str,
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("lake: {0}")]
    Lake(String),
    #[error(transparent)]
    Table(Box<shoplake_tables::TableError>),
}

/// The server could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {dialect} at {address}: {reason}\n  hint: {hint}")]
pub struct ConnectError {
    pub dialect: &'static str,
    pub address: String,
    pub reason: String,
    pub hint: String,
}

/// The server refused the user.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dialect} at {address} refused user {user:?}: {reason}\n  hint: check the password \
     ({password_hint}) and that the user may connect to database {database:?}"
)]
pub struct AuthError {
    pub dialect: &'static str,
    pub address: String,
    pub user: String,
    pub database: String,
    pub reason: String,
    pub password_hint: String,
}

/// A table in the target that the lake's table cannot be loaded into.
#[derive(Debug, thiserror::Error)]
#[error("table {table} in the target does not match the lake: {problem}\n  hint: {hint}")]
pub struct SchemaError {
    pub table: String,
    pub problem: String,
    pub hint: String,
}

impl From<shoplake_tables::TableError> for ExportError {
    fn from(e: shoplake_tables::TableError) -> Self {
        ExportError::Table(Box::new(e))
    }
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only these tables (by name); empty: every table of the lake.
    pub tables: Vec<String>,
    /// Replace every table whole, even those that could be appended to.
    pub full: bool,
}

/// What happened to one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReport {
    pub name: String,
    /// `unchanged`, `append` or `replace`.
    pub mode: &'static str,
    /// Why a table was replaced.
    pub reason: Option<String>,
    /// Rows written by this export.
    pub rows: u64,
    /// Rows the target table holds after the export.
    pub total_rows: i64,
    /// The lake version exported, and the one exported before (if any).
    pub version: i64,
    pub previous_version: Option<i64>,
    /// Columns the target table gained, and whether it was created.
    pub added_columns: Vec<String>,
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The target, password redacted.
    pub target: String,
    pub tables: Vec<TableReport>,
    pub elapsed: Duration,
}

impl ExportReport {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Progress of an export, table by table.
pub trait ExportProgress {
    fn table_started(&self, _table: &str, _change: &Change) {}
    fn rows(&self, _n: u64) {}
    fn table_done(&self, _report: &TableReport) {}
}

/// No progress output.
pub struct Quiet;
impl ExportProgress for Quiet {}

/// Export the lake's tables to `target`. See the crate docs for the rules.
pub async fn export(
    tables: &Tables,
    target: &Target,
    options: &ExportOptions,
    progress: &dyn ExportProgress,
) -> Result<ExportReport> {
    let started = Instant::now();
    let lake_tables = open_lake_tables(tables, &options.tables).await?;
    tracing::info!(target = %target, tables = lake_tables.len(), "export starting");
    let reports = match target.dialect {
        Dialect::Postgres => {
            let mut sink = postgres::PgSink::connect(target).await?;
            run(&mut sink, &lake_tables, options, progress).await?
        }
        Dialect::MySql => {
            let mut sink = mysql::MySink::connect(target).await?;
            run(&mut sink, &lake_tables, options, progress).await?
        }
    };
    Ok(ExportReport {
        target: target.to_string(),
        tables: reports,
        elapsed: started.elapsed(),
    })
}

async fn open_lake_tables(tables: &Tables, only: &[String]) -> Result<Vec<LakeTable>> {
    let ids = lake::list(tables).await?;
    let names: Vec<String> = ids.iter().map(TableId::display).collect();
    for want in only {
        if !names.contains(want) {
            let hint = shoplake_core::did_you_mean(want, names.iter().map(String::as_str))
                .map(|n| format!("; did you mean {n:?}?"))
                .unwrap_or_else(|| format!("; the lake has: {}", names.join(", ")));
            return Err(ExportError::Usage(format!(
                "no table {want:?} in the lake{hint}"
            )));
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if !only.is_empty() && !only.contains(&id.display()) {
            continue;
        }
        if let Some(t) = LakeTable::open(tables, id).await? {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(ExportError::Usage(
            "the lake has no tables to export yet; run `shoplake run` first".into(),
        ));
    }
    Ok(out)
}

/// A database the export writes to. Statements run on one connection; `begin_data` starts
/// the transaction that holds every row change and the state updates.
pub(crate) trait Sink {
    fn dialect(&self) -> Dialect;
    /// Take the export lock, create the state table, set the session up.
    async fn prepare(&mut self) -> Result<()>;
    /// Columns of a table and their types as the database reports them; `None`: no table.
    async fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>>;
    async fn execute(&mut self, sql: &str, context: &str) -> Result<()>;
    async fn begin_data(&mut self) -> Result<()>;
    async fn exported(&mut self, table: &str) -> Result<Option<Exported>>;
    /// Load rows into a table; returns the number of rows written.
    async fn load(
        &mut self,
        table: &LakeTable,
        stream: datafusion::physical_plan::SendableRecordBatchStream,
        progress: &dyn ExportProgress,
    ) -> Result<u64>;
    async fn record(&mut self, table: &str, state: &Exported, mode: &str, rows: u64) -> Result<()>;
    async fn commit(&mut self) -> Result<()>;
}

async fn run<S: Sink>(
    sink: &mut S,
    lake_tables: &[LakeTable],
    options: &ExportOptions,
    progress: &dyn ExportProgress,
) -> Result<Vec<TableReport>> {
    sink.prepare().await?;
    // Schema first: on MySQL DDL commits on its own, so it runs before the data transaction
    // (only CREATE TABLE and ADD COLUMN, which change no rows a reader sees).
    let mut ddl = Vec::new();
    for t in lake_tables {
        ddl.push(reconcile(sink, t).await?);
    }
    sink.begin_data().await?;
    let mut reports = Vec::new();
    for (t, (created, added_columns)) in lake_tables.iter().zip(ddl) {
        let exported = if created {
            None
        } else {
            sink.exported(&t.name).await?
        };
        let change = if options.full {
            Change::Replace {
                reason: "--full".into(),
            }
        } else {
            t.change_since(exported.as_ref()).await?
        };
        progress.table_started(&t.name, &change);
        let previous_rows = exported.as_ref().map_or(0, |e| e.rows);
        let (rows, total_rows) = match &change {
            Change::Unchanged => (0, previous_rows),
            Change::Append { files, .. } => {
                let rows = if files.is_empty() {
                    0
                } else {
                    let stream = t.scan(Some(files)).await?;
                    sink.load(t, stream, progress).await?
                };
                (rows, previous_rows + rows as i64)
            }
            Change::Replace { .. } => {
                let q = sql::ident(sink.dialect(), &t.name);
                sink.execute(&format!("DELETE FROM {q}"), &format!("emptying {}", t.name))
                    .await?;
                let stream = t.scan(None).await?;
                let rows = sink.load(t, stream, progress).await?;
                (rows, rows as i64)
            }
        };
        if change != Change::Unchanged {
            let state = Exported {
                table_uid: t.table_uid.clone(),
                version: t.version,
                rows: total_rows,
            };
            sink.record(&t.name, &state, change.mode(), rows).await?;
        }
        let report = TableReport {
            name: t.name.clone(),
            mode: change.mode(),
            reason: match &change {
                Change::Replace { reason } => Some(reason.clone()),
                _ => None,
            },
            rows,
            total_rows,
            version: t.version,
            previous_version: exported.as_ref().map(|e| e.version),
            added_columns,
            created,
        };
        progress.table_done(&report);
        reports.push(report);
    }
    failpoint("export-before-commit");
    sink.commit().await?;
    Ok(reports)
}

/// Create the table or add the lake's new columns; refuse what cannot be reconciled.
/// Returns whether the table was created and the columns added.
async fn reconcile<S: Sink>(sink: &mut S, t: &LakeTable) -> Result<(bool, Vec<String>)> {
    let d = sink.dialect();
    let q = |s: &str| sql::ident(d, s);
    let Some(existing) = sink.columns(&t.name).await? else {
        let mut cols: Vec<String> = t
            .schema
            .fields()
            .iter()
            .map(|f| {
                let is_key = t.key.contains(f.name());
                let null = if f.is_nullable() { "" } else { " NOT NULL" };
                format!("{} {}{null}", q(f.name()), sql::sql_type(d, f, is_key))
            })
            .collect();
        if !t.key.is_empty() {
            let keys: Vec<String> = t.key.iter().map(|k| q(k)).collect();
            let nullable = t
                .key
                .iter()
                .any(|k| t.schema.field_with_name(k).is_ok_and(|f| f.is_nullable()));
            // A key column that may be NULL (an anonymous customer in a mart) cannot be part
            // of a primary key; a unique constraint still keeps the grain.
            let kind = if nullable { "UNIQUE" } else { "PRIMARY KEY" };
            cols.push(format!("{kind} ({})", keys.join(", ")));
        }
        let suffix = match d {
            Dialect::Postgres => "",
            Dialect::MySql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        };
        let ddl = format!(
            "CREATE TABLE {} (\n  {}\n){suffix}",
            q(&t.name),
            cols.join(",\n  ")
        );
        sink.execute(&ddl, &format!("creating table {}", t.name))
            .await?;
        return Ok((true, Vec::new()));
    };
    let mut added = Vec::new();
    for (name, reported) in &existing {
        let Ok(field) = t.schema.field_with_name(name) else {
            return Err(ExportError::Schema(Box::new(SchemaError {
                table: t.name.clone(),
                problem: format!("the target has a column {name:?} that the lake table has not"),
                hint: format!(
                    "drop that column or the table in the target (DROP TABLE {}), then export again",
                    q(&t.name)
                ),
            })));
        };
        let want = sql::sql_type(d, field, t.key.contains(name));
        if sql::normalize_reported(d, reported) != want {
            return Err(ExportError::Schema(Box::new(SchemaError {
                table: t.name.clone(),
                problem: format!(
                    "column {name:?} is {reported} in the target but {want} from the lake ({})",
                    field.data_type()
                ),
                hint: format!(
                    "drop the table in the target (DROP TABLE {}) and export again to reload it",
                    q(&t.name)
                ),
            })));
        }
    }
    for f in t.schema.fields() {
        if existing.iter().any(|(n, _)| n == f.name()) {
            continue;
        }
        // New columns are nullable: the rows already exported have no value for them, as
        // they have none in the lake either.
        let ddl = format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            q(&t.name),
            q(f.name()),
            sql::sql_type(d, f, false)
        );
        sink.execute(&ddl, &format!("adding column {} to {}", f.name(), t.name))
            .await?;
        tracing::info!(table = %t.name, column = %f.name(), "added a column the lake gained");
        added.push(f.name().clone());
    }
    Ok((false, added))
}

/// Batches of a table's rows as text, columns in the order of the table's schema.
pub(crate) async fn next_rows(
    t: &LakeTable,
    stream: &mut datafusion::physical_plan::SendableRecordBatchStream,
) -> Result<Option<sql::Rows>> {
    let types: Vec<DataType> = t
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    loop {
        let Some(batch) = stream.next().await else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| ExportError::Lake(format!("reading {}: {e}", t.name)))?;
        if batch.num_rows() == 0 {
            continue;
        }
        return sql::Rows::new(&batch, &types)
            .map(Some)
            .map_err(|e| ExportError::Lake(format!("converting {}: {e}", t.name)));
    }
}

/// Crash-test hook: `SHOPLAKE_FAILPOINT=<name>` aborts the process at that point, as a power
/// cut would: the database sees the connection drop and rolls the transaction back.
fn failpoint(name: &str) {
    if std::env::var("SHOPLAKE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// A spawned task aborted when its owner drops it (the connection driver of a client).
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
