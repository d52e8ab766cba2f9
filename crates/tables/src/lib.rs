//! Delta tables of the lake: the star schema under `processed/`, the marts under `marts/` and
//! the quarantine. [`Tables`] opens, writes (streamed, partitioned, zstd Parquet), restores and
//! reads them; every write is one Delta commit that carries the run id as an application
//! transaction, so a reader sees all of a run's rows in a table or none of them.
//!
//! ```no_run
//! # async fn f(lake: shoplake_storage::Lake) -> shoplake_tables::Result<()> {
//! use shoplake_tables::{TableId, Tables};
//! let tables = Tables::new(lake);
//! let version = tables.version(&TableId::processed("fact_sales")).await?;
//! # Ok(()) }
//! ```

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::provider_as_source;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use shoplake_storage::{Lake, Zone};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

mod aggregate;
mod case_group;
mod dates;
mod scan;
mod spill;
#[cfg(test)]
mod testing;
mod text_eq;
mod view_group;
pub use aggregate::{PartitionRunAggregate, RunAggregateExec};
pub use case_group::CaseGroupLabels;
pub use dates::{FastDatePart, FastExtract};
pub use spill::PartitionedAppend;
pub use text_eq::{InlineTextEq, InlineTextEquality};
pub use view_group::{ViewGroupAggregate, ViewGroupAggregateExec};

/// A query session over lake tables: DataFusion's defaults plus the lake's own rules and
/// functions:
/// - [`PartitionRunAggregate`] (physical): grouping by partition columns without hashing rows;
/// - [`InlineTextEquality`] (physical): comparing text with a short literal by its views;
/// - [`ViewGroupAggregate`] (physical): grouping by one text column by its views, or by one
///   bucketing `CASE` by indexing its numbers;
/// - [`CaseGroupLabels`] (logical): grouping by a bucketing `CASE` on the buckets' numbers;
/// - [`FastDatePart`]: `date_part` and `EXTRACT` ([`FastExtract`]) on dates without chrono.
pub fn session(
    config: datafusion::prelude::SessionConfig,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> datafusion::prelude::SessionContext {
    let state = datafusion::execution::session_state::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        // Before DataFusion's planners, which the defaults append: the first one to plan
        // `EXTRACT` wins.
        .with_expr_planners(vec![Arc::new(FastExtract)])
        .with_default_features()
        .with_optimizer_rule(Arc::new(CaseGroupLabels))
        // Text comparisons first: the run aggregate may take a filter inside itself.
        .with_physical_optimizer_rule(Arc::new(InlineTextEquality))
        .with_physical_optimizer_rule(Arc::new(PartitionRunAggregate))
        .with_physical_optimizer_rule(Arc::new(ViewGroupAggregate))
        .build();
    let ctx = datafusion::prelude::SessionContext::new_with_state(state);
    // Replaces DataFusion's `date_part` (and its alias) in the function registry.
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        FastDatePart::new(),
    ));
    ctx
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        source: Box<DeltaTableError>,
    },
    #[error("table {table}: {source}")]
    Engine {
        table: String,
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("table {table} has no version {version} (latest is {latest})")]
    NoSuchVersion {
        table: String,
        version: i64,
        latest: i64,
    },
    #[error("table {0} does not exist yet; run `shoplake run` to build it")]
    Missing(String),
    /// A storage failure injected for testing (`SHOPLAKE_FAULT_STORAGE`).
    #[error("table {0}: injected storage error (SHOPLAKE_FAULT_STORAGE)")]
    Injected(String),
}

impl TableError {
    /// Whether another try may succeed: the object store or the file system failed, or another
    /// writer committed the same version first.
    pub fn is_transient(&self) -> bool {
        use deltalake::DeltaTableError as E;
        match self {
            TableError::Injected(_) => true,
            TableError::Delta { source, .. } => matches!(
                source.as_ref(),
                E::ObjectStore { .. } | E::Io { .. } | E::VersionAlreadyExists(_)
            ),
            _ => false,
        }
    }
}

/// Injected faults, for the tests of retries: `SHOPLAKE_FAULT_STORAGE=N` makes the first `N`
/// commits of large appends in this process fail with a transient storage error, and
/// `SHOPLAKE_FAULT_SPILL=N` the first `N` spill writes with a full disk.
pub mod fault {
    use super::{Result, TableError, TableId};
    use std::sync::atomic::{AtomicI64, Ordering};

    static STORAGE: AtomicI64 = AtomicI64::new(-1);
    static SPILL: AtomicI64 = AtomicI64::new(-1);

    /// Whether to fail now: the first time, `left` is set from `var`; then it counts down.
    fn take(left: &AtomicI64, var: &str) -> bool {
        if left.load(Ordering::SeqCst) == -1 {
            let n = std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let _ = left.compare_exchange(-1, n.max(0), Ordering::SeqCst, Ordering::SeqCst);
        }
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n > 0).then(|| n - 1)
        })
        .is_ok()
    }

    pub fn storage(id: &TableId) -> Result<()> {
        if take(&STORAGE, "SHOPLAKE_FAULT_STORAGE") {
            return Err(TableError::Injected(id.display()));
        }
        Ok(())
    }

    /// A full disk for the next spill write, if `SHOPLAKE_FAULT_SPILL` asks for one.
    pub fn spill() -> std::io::Result<()> {
        if take(&SPILL, "SHOPLAKE_FAULT_SPILL") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected by SHOPLAKE_FAULT_SPILL)",
            ));
        }
        Ok(())
    }
}

pub type Result<T, E = TableError> = std::result::Result<T, E>;

/// The Delta application id under which shoplake records which run wrote a commit.
pub const APP_ID: &str = "shoplake";

/// A table's place in the lake.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableId {
    pub zone: Zone,
    pub name: String,
}

impl TableId {
    pub fn processed(name: &str) -> TableId {
        TableId {
            zone: Zone::Processed,
            name: name.to_string(),
        }
    }
    pub fn marts(name: &str) -> TableId {
        TableId {
            zone: Zone::Marts,
            name: name.to_string(),
        }
    }
    pub fn quarantine() -> TableId {
        TableId {
            zone: Zone::Quarantine,
            name: "rows".to_string(),
        }
    }
    /// Name used in messages and SQL.
    pub fn display(&self) -> String {
        match self.zone {
            Zone::Quarantine => "quarantine".to_string(),
            _ => self.name.clone(),
        }
    }
}

/// How a write treats what the table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Append,
    /// Replace the whole table (small dimensions).
    Overwrite,
}

/// Extras of a write: see [`Tables::write_stream_with`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// With [`WriteMode::Overwrite`]: replace only the rows matching this SQL predicate; the
    /// written rows must match it too.
    pub replace_where: Option<String>,
    /// More commit metadata (`commitInfo`), next to the run id.
    pub metadata: Vec<(String, serde_json::Value)>,
    /// `shoplake.operation` in the commit metadata (default `write`).
    pub operation: Option<&'static str>,
}

/// The lake's Delta tables.
#[derive(Debug, Clone)]
pub struct Tables {
    lake: Lake,
    target_file_size: u64,
}

impl Tables {
    pub fn new(lake: Lake) -> Tables {
        Tables {
            lake,
            target_file_size: 64 * 1024 * 1024,
        }
    }

    pub fn with_target_file_size(mut self, bytes: u64) -> Tables {
        self.target_file_size = bytes.max(1024 * 1024);
        self
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    fn delta_err(id: &TableId) -> impl Fn(DeltaTableError) -> TableError + '_ {
        move |source| TableError::Delta {
            table: id.display(),
            source: Box::new(source),
        }
    }

    /// Open a table at its latest version; `None` when it was never written.
    pub async fn open(&self, id: &TableId) -> Result<Option<DeltaTable>> {
        if !self.exists(id).await? {
            return Ok(None);
        }
        let table = self.handle(id).await?;
        Ok(table.version().is_some().then_some(table))
    }

    /// Names of the folders under a zone (the tables, and any folder not yet a table), sorted.
    pub async fn list(&self, zone: Zone) -> Result<Vec<String>> {
        let prefix = deltalake::Path::from(zone.prefix());
        let listing = self
            .lake
            .store()
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| TableError::Delta {
                table: format!("{}/", zone.prefix()),
                source: Box::new(DeltaTableError::ObjectStore { source: e }),
            })?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Whether a table has a transaction log.
    pub async fn exists(&self, id: &TableId) -> Result<bool> {
        use futures::TryStreamExt;
        let prefix = self.lake.path(id.zone, &format!("{}/_delta_log", id.name));
        let mut listing = self.lake.store().list(Some(&prefix));
        let first = listing.try_next().await.map_err(|e| TableError::Delta {
            table: id.display(),
            source: Box::new(DeltaTableError::ObjectStore { source: e }),
        })?;
        Ok(first.is_some())
    }

    /// Open a table as of a version.
    pub async fn open_at(&self, id: &TableId, version: i64) -> Result<DeltaTable> {
        let mut table = self
            .open(id)
            .await?
            .ok_or_else(|| TableError::Missing(id.display()))?;
        let latest = table.version().map_or(-1, |v| v as i64);
        if version < 0 || version > latest {
            return Err(TableError::NoSuchVersion {
                table: id.display(),
                version,
                latest,
            });
        }
        table
            .load_version(version as u64)
            .await
            .map_err(Self::delta_err(id))?;
        Ok(table)
    }

    async fn handle(&self, id: &TableId) -> Result<DeltaTable> {
        let url = self.lake.table_url(id.zone, &id.name);
        if let Some(root) = self.lake.local_root() {
            // delta-rs wants a local table's folder to exist before its first commit.
            let dir = root.join(id.zone.prefix()).join(&id.name);
            std::fs::create_dir_all(&dir).map_err(|e| TableError::Delta {
                table: id.display(),
                source: Box::new(DeltaTableError::Generic(format!(
                    "cannot create {}: {e}",
                    dir.display()
                ))),
            })?;
        }
        DeltaTable::try_from_url(url)
            .await
            .map_err(Self::delta_err(id))
    }

    /// Latest version of a table, `None` when it does not exist.
    pub async fn version(&self, id: &TableId) -> Result<Option<i64>> {
        Ok(self
            .open(id)
            .await?
            .and_then(|t| t.version())
            .map(|v| v as i64))
    }
    /// Row groups of 122,880 rows (DuckDB's default): a write through delta-rs keeps every
    /// partition's writer open, each holding at most one row group being encoded, so memory
    /// does not grow with the input.
    fn writer_properties() -> WriterProperties {
        Self::writer_properties_with(122_880)
    }

    /// zstd Parquet in row groups of up to `rows` rows.
    fn writer_properties_with(rows: usize) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid zstd level"),
            ))
            .set_max_row_group_row_count(Some(rows))
            .build()
    }

    fn commit_properties(run_id: i64, operation: &str) -> CommitProperties {
        Self::commit_properties_with(run_id, operation, Vec::new())
    }

    fn commit_properties_with(
        run_id: i64,
        operation: &str,
        extra: Vec<(String, serde_json::Value)>,
    ) -> CommitProperties {
        // with_metadata replaces the whole map: everything goes in one call.
        let mut metadata = vec![
            ("shoplake.run_id".to_string(), serde_json::json!(run_id)),
            (
                "shoplake.operation".to_string(),
                serde_json::json!(operation),
            ),
        ];
        metadata.extend(extra);
        CommitProperties::default()
            .with_application_transaction(Transaction::new(APP_ID, run_id))
            .with_metadata(metadata)
    }

    /// Write batches in one commit. Returns the new version.
    pub async fn write_batches(
        &self,
        id: &TableId,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        partitions: &[&str],
        mode: WriteMode,
        run_id: i64,
    ) -> Result<i64> {
        let (tx, rx) = mpsc::channel(batches.len().max(1));
        for b in batches {
            tx.send(Ok(b)).await.expect("receiver is alive");
        }
        drop(tx);
        self.write_stream(id, schema, rx, partitions, mode, run_id)
            .await
    }

    /// Write a stream of batches (received until the sender is dropped) in one commit,
    /// partitioned by `partitions`. Memory stays bounded: batches are written as they come.
    /// An `Err` in the stream aborts the write: nothing is committed.
    pub async fn write_stream(
        &self,
        id: &TableId,
        schema: SchemaRef,
        input: mpsc::Receiver<BatchResult>,
        partitions: &[&str],
        mode: WriteMode,
        run_id: i64,
    ) -> Result<i64> {
        self.write_stream_with(
            id,
            schema,
            input,
            partitions,
            mode,
            run_id,
            WriteOptions::default(),
        )
        .await
    }

    /// [`Tables::write_stream`] with a `replaceWhere` predicate (an overwrite that replaces only
    /// the rows matching it, e.g. some partitions, in the same single commit) and extra commit
    /// metadata.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_stream_with(
        &self,
        id: &TableId,
        schema: SchemaRef,
        input: mpsc::Receiver<BatchResult>,
        partitions: &[&str],
        mode: WriteMode,
        run_id: i64,
        options: WriteOptions,
    ) -> Result<i64> {
        let engine = |source: datafusion::error::DataFusionError| TableError::Engine {
            table: id.display(),
            source: Box::new(source),
        };
        let stream = Arc::new(ChannelStream {
            schema: schema.clone(),
            rx: Mutex::new(Some(input)),
        });
        let provider = StreamingTable::try_new(schema, vec![stream]).map_err(engine)?;
        let plan = LogicalPlanBuilder::scan("input", provider_as_source(Arc::new(provider)), None)
            .and_then(|b| b.build())
            .map_err(engine)?;
        let table = self.handle(id).await?;
        let mut builder = table
            .write(Vec::new())
            .with_input_plan(plan)
            .with_save_mode(match mode {
                WriteMode::Append => SaveMode::Append,
                WriteMode::Overwrite => SaveMode::Overwrite,
            })
            .with_target_file_size(NonZeroU64::new(self.target_file_size))
            .with_writer_properties(Self::writer_properties())
            .with_commit_properties(Self::commit_properties_with(
                run_id,
                options.operation.unwrap_or("write"),
                options.metadata,
            ))
            .with_table_name(id.display());
        match (mode, options.replace_where) {
            (WriteMode::Overwrite, Some(predicate)) => {
                builder = builder.with_replace_where(predicate);
            }
            (WriteMode::Overwrite, None) => {
                builder = builder.with_schema_mode(SchemaMode::Overwrite);
            }
            (WriteMode::Append, Some(_)) => {
                return Err(TableError::Delta {
                    table: id.display(),
                    source: Box::new(DeltaTableError::Generic(
                        "internal error: replace_where needs WriteMode::Overwrite".into(),
                    )),
                });
            }
            (WriteMode::Append, None) => {}
        }
        if !partitions.is_empty() {
            builder = builder.with_partition_columns(partitions.iter().map(|p| p.to_string()));
        }
        let table = builder.await.map_err(Self::delta_err(id))?;
        Ok(table.version().unwrap_or(0) as i64)
    }

    /// Restore a table to an earlier version (crash recovery). A table created after that
    /// version is emptied by an overwrite with no rows.
    pub async fn restore(&self, id: &TableId, version: Option<i64>, run_id: i64) -> Result<()> {
        let Some(table) = self.open(id).await? else {
            return Ok(());
        };
        match version {
            Some(v) if table.version() == Some(v as u64) => Ok(()),
            Some(v) => {
                table
                    .restore()
                    .with_version_to_restore(v as u64)
                    .with_commit_properties(Self::commit_properties(run_id, "restore"))
                    .await
                    .map_err(Self::delta_err(id))?;
                Ok(())
            }
            None => {
                let schema = self.arrow_schema(&table, id)?;
                let partitions = table
                    .snapshot()
                    .map_err(Self::delta_err(id))?
                    .metadata()
                    .partition_columns()
                    .to_vec();
                let parts: Vec<&str> = partitions.iter().map(|s| s.as_str()).collect();
                self.write_batches(id, schema, Vec::new(), &parts, WriteMode::Overwrite, run_id)
                    .await?;
                Ok(())
            }
        }
    }

    fn arrow_schema(&self, table: &DeltaTable, id: &TableId) -> Result<SchemaRef> {
        let state = table.snapshot().map_err(Self::delta_err(id))?;
        Ok(state.snapshot().arrow_schema())
    }

    /// A DataFusion provider for a table, at its latest or a given version.
    pub async fn provider(
        &self,
        id: &TableId,
        version: Option<i64>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = match version {
            Some(v) => self.open_at(id, v).await?,
            None => match self.open(id).await? {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        let provider = table
            .table_provider()
            .await
            .map_err(|source| TableError::Engine {
                table: id.display(),
                source: Box::new(source),
            })?;
        // delta-rs's provider gives the columns and their types; DataFusion's Parquet scan
        // reads the files (see `scan`), unless the table needs a feature only delta-rs reads.
        let prefix = format!("{}/{}", id.zone.prefix(), id.name);
        match scan::LakeScan::try_new(
            &table,
            id.display(),
            provider.schema(),
            self.lake.store(),
            &prefix,
        ) {
            Ok(Some(scan)) => Ok(Some(Arc::new(scan))),
            Ok(None) => Ok(Some(provider)),
            Err(reason) => Err(TableError::Delta {
                table: id.display(),
                source: Box::new(DeltaTableError::Generic(reason)),
            }),
        }
    }

    /// Read a whole (small) table into memory.
    pub async fn read_all(&self, id: &TableId) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        let Some(provider) = self.provider(id, None).await? else {
            return Ok(None);
        };
        let engine = |source: datafusion::error::DataFusionError| TableError::Engine {
            table: id.display(),
            source: Box::new(source),
        };
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx.read_table(provider).map_err(engine)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(engine)?;
        Ok(Some((schema, batches)))
    }

    /// Commit history, newest first: (version, timestamp ms, operation, run id).
    pub async fn history(&self, id: &TableId) -> Result<Vec<HistoryEntry>> {
        let Some(table) = self.open(id).await? else {
            return Err(TableError::Missing(id.display()));
        };
        let mut out = Vec::new();
        let latest = table.version().unwrap_or(0) as i64;
        let mut stream = table.history(None);
        let mut version = latest;
        while let Some(info) = stream.next().await {
            let info = info.map_err(Self::delta_err(id))?;
            out.push(HistoryEntry {
                version: info.read_version.map(|v| v as i64 + 1).unwrap_or(version),
                timestamp_ms: info.timestamp.unwrap_or_default(),
                operation: info.operation.clone().unwrap_or_default(),
                run_id: info.info.get("shoplake.run_id").and_then(|v| v.as_i64()),
                parameters: serde_json::to_string(&info.operation_parameters).unwrap_or_default(),
            });
            version -= 1;
        }
        Ok(out)
    }
}

/// One commit of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub version: i64,
    pub timestamp_ms: i64,
    pub operation: String,
    pub run_id: Option<i64>,
    pub parameters: String,
}

/// A batch, or the error that aborts a streamed write.
pub type BatchResult = datafusion::error::Result<RecordBatch>;

/// A one-shot partition stream fed by a channel: the bridge from our transform to the writer.
#[derive(Debug)]
struct ChannelStream {
    schema: SchemaRef,
    rx: Mutex<Option<mpsc::Receiver<BatchResult>>>,
}

impl PartitionStream for ChannelStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let batch = rx.recv().await?;
            Some((batch, Some(rx)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}
