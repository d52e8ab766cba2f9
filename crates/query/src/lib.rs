//! Query: one DataFusion [`SessionContext`] over the lake. Every Delta table under `processed/`
//! and `marts/` is registered by name, the quarantine as `quarantine`, and the control plane as
//! system tables (`files`, `file_reasons`, `runs`, `tasks`, `run_files`, `quality`, `catalog`), so the figures of
//! every load are answerable with SQL. Any table can be read as of an older version.
//!
//! ```no_run
//! # async fn f(q: shoplake_query::LakeQuery) -> shoplake_query::Result<()> {
//! let batches = q.sql("SELECT region, SUM(amount_usd) FROM fact_sales GROUP BY region").await?.collect().await?;
//! # Ok(()) }
//! ```

mod policy;
pub use policy::{Access, MASK};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use shoplake_catalog::ledger::Ledger;
use shoplake_storage::Zone;
use shoplake_tables::{TableId, Tables};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Engine(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Table(Box<shoplake_tables::TableError>),
    #[error(transparent)]
    Ledger(#[from] shoplake_catalog::ledger::LedgerError),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("unknown table {name:?}{hint}")]
    UnknownTable { name: String, hint: String },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Engine(Box::new(e))
    }
}

impl From<shoplake_tables::TableError> for QueryError {
    fn from(e: shoplake_tables::TableError) -> Self {
        QueryError::Table(Box::new(e))
    }
}

/// The system tables and what they hold.
pub const SYSTEM_TABLES: [(&str, &str); 7] = [
    (
        "files",
        "the file ledger: every file, its status and row counts",
    ),
    ("file_reasons", "quarantined rows per file and reason"),
    ("runs", "every run with its totals"),
    ("run_files", "per-file outcome of every run"),
    (
        "tasks",
        "the tasks of every run: state, attempts, times, rows, error",
    ),
    (
        "quality",
        "data-quality expectations checked on every file of every run",
    ),
    (
        "catalog",
        "every version of every source's schema and mapping, with drift",
    ),
];

/// A query session over the lake.
pub struct LakeQuery {
    ctx: SessionContext,
    tables: Tables,
    /// Lake tables registered: (SQL name, id).
    registered: Vec<(String, TableId)>,
}

impl LakeQuery {
    /// Register every table of the lake and the system tables. `memory_limit` bounds the
    /// engine's memory; sorts and aggregations spill to disk beyond it.
    pub async fn open(tables: Tables, ledger: &Ledger, memory_limit: usize) -> Result<LakeQuery> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = shoplake_tables::session(config, runtime);
        let mut q = LakeQuery {
            ctx,
            tables,
            registered: Vec::new(),
        };
        for zone in [Zone::Processed, Zone::Marts] {
            for name in q.list_tables(zone).await? {
                let id = TableId {
                    zone,
                    name: name.clone(),
                };
                if let Some(p) = q.tables.provider(&id, None).await? {
                    q.ctx.register_table(name.as_str(), p)?;
                    q.registered.push((name, id));
                }
            }
        }
        let qid = TableId::quarantine();
        if let Some(p) = q.tables.provider(&qid, None).await? {
            q.ctx.register_table("quarantine", p)?;
            q.registered.push(("quarantine".into(), qid));
        }
        q.register_system(ledger)?;
        Ok(q)
    }

    async fn list_tables(&self, zone: Zone) -> Result<Vec<String>> {
        Ok(self.tables.list(zone).await?)
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Lake tables (not system tables), with their ids.
    pub fn lake_tables(&self) -> &[(String, TableId)] {
        &self.registered
    }

    /// The id of a lake table by its SQL name, with a suggestion when it is misspelt.
    pub fn table_id(&self, name: &str) -> Result<TableId> {
        if let Some((_, id)) = self.registered.iter().find(|(n, _)| n == name) {
            return Ok(id.clone());
        }
        let best =
            shoplake_core::did_you_mean(name, self.registered.iter().map(|(n, _)| n.as_str()))
                .map(|n| format!("; did you mean {n:?}?"))
                .unwrap_or_else(|| "; `shoplake tables` lists them".to_string());
        Err(QueryError::UnknownTable {
            name: name.to_string(),
            hint: best,
        })
    }

    /// Replace a table's registration with the table as of `version` (time travel).
    pub async fn as_of(&self, name: &str, version: i64) -> Result<()> {
        let id = self.table_id(name)?;
        let p = self
            .tables
            .provider(&id, Some(version))
            .await?
            .ok_or_else(|| QueryError::Usage(format!("{name} is empty")))?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, p)?;
        Ok(())
    }

    /// Plan a SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        Ok(self.ctx.sql(sql).await?)
    }

    fn register_system(&self, ledger: &Ledger) -> Result<()> {
        let files = ledger.files(&[])?;
        let batch = batch_of(&[
            (
                "file_id",
                Col::I(files.iter().map(|f| Some(f.file_id)).collect()),
            ),
            (
                "source",
                Col::S(files.iter().map(|f| Some(f.source.clone())).collect()),
            ),
            (
                "name",
                Col::S(files.iter().map(|f| Some(f.name.clone())).collect()),
            ),
            (
                "entity",
                Col::S(files.iter().map(|f| f.entity.clone()).collect()),
            ),
            (
                "status",
                Col::S(
                    files
                        .iter()
                        .map(|f| Some(f.status.as_str().to_string()))
                        .collect(),
                ),
            ),
            (
                "raw_path",
                Col::S(files.iter().map(|f| Some(f.raw_path.clone())).collect()),
            ),
            (
                "sha256",
                Col::S(files.iter().map(|f| Some(f.sha256.clone())).collect()),
            ),
            (
                "size_bytes",
                Col::I(files.iter().map(|f| Some(f.size_bytes)).collect()),
            ),
            (
                "received_at",
                Col::T(
                    files
                        .iter()
                        .map(|f| Some(f.received_at.timestamp_micros()))
                        .collect(),
                ),
            ),
            (
                "catalog_version",
                Col::I(files.iter().map(|f| f.catalog_version).collect()),
            ),
            (
                "rows_in",
                Col::I(files.iter().map(|f| Some(f.rows_in)).collect()),
            ),
            (
                "rows_loaded",
                Col::I(files.iter().map(|f| Some(f.rows_loaded)).collect()),
            ),
            (
                "rows_quarantined",
                Col::I(files.iter().map(|f| Some(f.rows_quarantined)).collect()),
            ),
            (
                "rows_duplicate",
                Col::I(files.iter().map(|f| Some(f.rows_duplicate)).collect()),
            ),
            ("run_id", Col::I(files.iter().map(|f| f.run_id).collect())),
            (
                "error",
                Col::S(files.iter().map(|f| f.error.clone()).collect()),
            ),
        ])?;
        self.register_batch("files", batch)?;

        let reasons = ledger.file_reasons()?;
        let batch = batch_of(&[
            (
                "file_id",
                Col::I(reasons.iter().map(|r| Some(r.0)).collect()),
            ),
            (
                "reason",
                Col::S(reasons.iter().map(|r| Some(r.1.clone())).collect()),
            ),
            ("rows", Col::I(reasons.iter().map(|r| Some(r.2)).collect())),
        ])?;
        self.register_batch("file_reasons", batch)?;

        let runs = ledger.runs()?;
        let batch = batch_of(&[
            (
                "run_id",
                Col::I(runs.iter().map(|r| Some(r.run_id)).collect()),
            ),
            (
                "kind",
                Col::S(runs.iter().map(|r| Some(r.kind.clone())).collect()),
            ),
            (
                "status",
                Col::S(runs.iter().map(|r| Some(r.status.clone())).collect()),
            ),
            (
                "started_at",
                Col::T(
                    runs.iter()
                        .map(|r| Some(r.started_at.timestamp_micros()))
                        .collect(),
                ),
            ),
            (
                "ended_at",
                Col::T(
                    runs.iter()
                        .map(|r| r.ended_at.map(|t| t.timestamp_micros()))
                        .collect(),
                ),
            ),
            (
                "files",
                Col::I(runs.iter().map(|r| Some(r.files)).collect()),
            ),
            (
                "rows_in",
                Col::I(runs.iter().map(|r| Some(r.rows_in)).collect()),
            ),
            (
                "loaded",
                Col::I(runs.iter().map(|r| Some(r.loaded)).collect()),
            ),
            (
                "quarantined",
                Col::I(runs.iter().map(|r| Some(r.quarantined)).collect()),
            ),
            (
                "duplicates",
                Col::I(runs.iter().map(|r| Some(r.duplicates)).collect()),
            ),
            (
                "error",
                Col::S(runs.iter().map(|r| r.error.clone()).collect()),
            ),
        ])?;
        self.register_batch("runs", batch)?;

        let rf = ledger.run_files()?;
        let batch = batch_of(&[
            (
                "run_id",
                Col::I(rf.iter().map(|r| Some(r.run_id)).collect()),
            ),
            (
                "file_id",
                Col::I(rf.iter().map(|r| Some(r.file_id)).collect()),
            ),
            (
                "rows_in",
                Col::I(rf.iter().map(|r| Some(r.rows_in)).collect()),
            ),
            (
                "loaded",
                Col::I(rf.iter().map(|r| Some(r.loaded)).collect()),
            ),
            (
                "quarantined",
                Col::I(rf.iter().map(|r| Some(r.quarantined)).collect()),
            ),
            (
                "duplicates",
                Col::I(rf.iter().map(|r| Some(r.duplicates)).collect()),
            ),
            (
                "reasons",
                Col::S(rf.iter().map(|r| Some(r.reasons_json.clone())).collect()),
            ),
        ])?;
        self.register_batch("run_files", batch)?;

        let tasks = ledger.tasks(None)?;
        let ts = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_micros());
        let batch = batch_of(&[
            (
                "run_id",
                Col::I(tasks.iter().map(|t| Some(t.run_id)).collect()),
            ),
            ("seq", Col::I(tasks.iter().map(|t| Some(t.seq)).collect())),
            (
                "task",
                Col::S(tasks.iter().map(|t| Some(t.name.clone())).collect()),
            ),
            (
                "state",
                Col::S(tasks.iter().map(|t| Some(t.state.clone())).collect()),
            ),
            (
                "started_at",
                Col::T(tasks.iter().map(|t| ts(&t.started_at)).collect()),
            ),
            (
                "ended_at",
                Col::T(tasks.iter().map(|t| ts(&t.ended_at)).collect()),
            ),
            (
                "attempts",
                Col::I(tasks.iter().map(|t| Some(t.attempts)).collect()),
            ),
            ("rows", Col::I(tasks.iter().map(|t| t.rows).collect())),
            (
                "detail",
                Col::S(tasks.iter().map(|t| t.detail.clone()).collect()),
            ),
            (
                "error",
                Col::S(tasks.iter().map(|t| t.error.clone()).collect()),
            ),
        ])?;
        self.register_batch("tasks", batch)?;

        let q = ledger.quality_results()?;
        let batch = batch_of(&[
            ("run_id", Col::I(q.iter().map(|r| Some(r.run_id)).collect())),
            (
                "table_name",
                Col::S(q.iter().map(|r| Some(r.table_name.clone())).collect()),
            ),
            (
                "file_id",
                Col::I(q.iter().map(|r| Some(r.file_id)).collect()),
            ),
            (
                "name",
                Col::S(q.iter().map(|r| Some(r.name.clone())).collect()),
            ),
            (
                "check",
                Col::S(q.iter().map(|r| Some(r.check.clone())).collect()),
            ),
            (
                "column",
                Col::S(q.iter().map(|r| r.column.clone()).collect()),
            ),
            (
                "severity",
                Col::S(q.iter().map(|r| Some(r.severity.clone())).collect()),
            ),
            ("passed", Col::B(q.iter().map(|r| Some(r.passed)).collect())),
            ("observed", Col::F(q.iter().map(|r| r.observed).collect())),
            ("threshold", Col::F(q.iter().map(|r| r.threshold).collect())),
            (
                "message",
                Col::S(q.iter().map(|r| Some(r.message.clone())).collect()),
            ),
            (
                "checked_at",
                Col::T(
                    q.iter()
                        .map(|r| Some(r.checked_at.timestamp_micros()))
                        .collect(),
                ),
            ),
        ])?;
        self.register_batch("quality", batch)?;

        let cat = ledger.catalog()?;
        let batch = batch_of(&[
            (
                "source",
                Col::S(cat.iter().map(|c| Some(c.source.clone())).collect()),
            ),
            (
                "version",
                Col::I(cat.iter().map(|c| Some(c.version)).collect()),
            ),
            (
                "entity",
                Col::S(cat.iter().map(|c| Some(c.entity.clone())).collect()),
            ),
            (
                "file_id",
                Col::I(cat.iter().map(|c| Some(c.file_id)).collect()),
            ),
            (
                "schema",
                Col::S(cat.iter().map(|c| Some(c.schema_json.clone())).collect()),
            ),
            (
                "mapping",
                Col::S(cat.iter().map(|c| Some(c.mapping_json.clone())).collect()),
            ),
            (
                "drift",
                Col::S(cat.iter().map(|c| c.drift_json.clone()).collect()),
            ),
            (
                "created_at",
                Col::T(
                    cat.iter()
                        .map(|c| Some(c.created_at.timestamp_micros()))
                        .collect(),
                ),
            ),
        ])?;
        self.register_batch("catalog", batch)?;
        Ok(())
    }

    fn register_batch(&self, name: &str, batch: RecordBatch) -> Result<()> {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        self.ctx.register_table(name, Arc::new(table))?;
        Ok(())
    }
}

enum Col {
    I(Vec<Option<i64>>),
    S(Vec<Option<String>>),
    T(Vec<Option<i64>>),
    F(Vec<Option<f64>>),
    B(Vec<Option<bool>>),
}

fn batch_of(cols: &[(&str, Col)]) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, col) in cols {
        let (ty, arr): (DataType, ArrayRef) = match col {
            Col::I(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Col::S(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
            Col::T(v) => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Arc::new(TimestampMicrosecondArray::from(v.clone()).with_timezone("UTC")),
            ),
            Col::F(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Col::B(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
        };
        fields.push(Field::new(*name, ty, true));
        arrays.push(arr);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, arrays).map_err(datafusion::error::DataFusionError::from)?)
}
