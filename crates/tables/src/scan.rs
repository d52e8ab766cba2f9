//! Reading a Delta table with DataFusion's own Parquet scan, over the file list of its log.
//!
//! delta-rs's provider reads each Parquet file with a file-id column and then rebuilds every
//! row's partition values (`region`, `year`, `month` of `fact_sales`) with the kernel's
//! expression evaluator: on the dashboard's queries that was a third of the time (the profile
//! is in `bench/README.md`). [`LakeScan`] hands the same files to DataFusion as a partitioned
//! Parquet scan instead: each file's partition values are constants of the file, filters on
//! partition columns drop whole files before anything is opened, other filters prune row
//! groups and pages, and the row count of the log answers `COUNT(*)`.
//!
//! Opening a file costs little on the second query of a session: files carry no column
//! statistics (which would make DataFusion build a file pruner per open), bloom filters are not
//! looked for (shoplake writes none), and the session's metadata cache keeps each footer with
//! its page index ([`LakeReaders`]).
//!
//! It reads what shoplake writes: reader version 1 (no deletion vectors, no column mapping).
//! Any other table keeps delta-rs's provider.

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics, stats::Precision};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory, source::ParquetSource,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::ExecutionProps;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::Result as ParquetResult;
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use deltalake::DeltaTable;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A Delta table's live files, scanned as partitioned Parquet.
pub(crate) struct LakeScan {
    /// The table's columns in the order of its Delta schema (what `SELECT *` shows).
    schema: SchemaRef,
    /// The columns stored in the files (the table's, less the partition columns).
    file_schema: SchemaRef,
    /// The scan's own column order: the file columns, then the partition columns.
    scan_schema: Schema,
    partition_cols: Vec<FieldRef>,
    /// For each column of `schema`, its index in the scan's own order: the file columns, then
    /// the partition columns.
    scan_index: Vec<usize>,
    files: Vec<PartitionedFile>,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    table: String,
}

impl fmt::Debug for LakeScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeScan")
            .field("table", &self.table)
            .field("files", &self.files.len())
            .finish()
    }
}

impl LakeScan {
    /// The scan of `table` at its loaded version. `schema` is what delta-rs's provider shows,
    /// so both read the same columns and types (text partition columns aside, see below).
    /// `None` when the table needs a reader feature this scan does not implement. `prefix` is
    /// the table's folder in `store`.
    pub(crate) fn try_new(
        table: &DeltaTable,
        name: String,
        schema: SchemaRef,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Result<Option<LakeScan>, String> {
        let state = table.snapshot().map_err(|e| e.to_string())?;
        if state.protocol().min_reader_version() != 1 {
            return Ok(None);
        }
        let partition_names = state.metadata().partition_columns().to_vec();
        // delta-rs shows text partition columns as dictionaries; DataFusion groups by those
        // through its row format, by `Utf8View` column by column, so they are read as
        // `Utf8View`, the type of every other text column.
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Dictionary(_, value)
                        if partition_names.contains(f.name())
                            && matches!(
                                **value,
                                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                            ) =>
                    {
                        Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
                    }
                    _ => f.clone(),
                })
                .collect::<Vec<FieldRef>>(),
            schema.metadata().clone(),
        ));
        let mut partition_cols = Vec::with_capacity(partition_names.len());
        for p in &partition_names {
            let field = schema
                .field_with_name(p)
                .map_err(|_| format!("partition column {p} is not in the table's schema"))?;
            partition_cols.push(Arc::new(field.clone()));
        }
        let file_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !partition_names.contains(f.name()))
            .cloned()
            .collect();
        let scan_index = schema
            .fields()
            .iter()
            .map(
                |f| match partition_names.iter().position(|p| p == f.name()) {
                    Some(i) => file_fields.len() + i,
                    None => file_fields
                        .iter()
                        .position(|g| g.name() == f.name())
                        .expect("a column is a file column or a partition column"),
                },
            )
            .collect();
        let scan_schema = Schema::new(
            file_fields
                .iter()
                .chain(partition_cols.iter())
                .cloned()
                .collect::<Vec<_>>(),
        );

        let mut files = Vec::new();
        for view in state.log_data().iter() {
            let values = view.partition_values_map();
            let mut partition_values = Vec::with_capacity(partition_cols.len());
            for field in &partition_cols {
                let text = values.get(field.name()).cloned().flatten();
                partition_values.push(
                    partition_value(text.as_deref(), field.data_type()).map_err(|e| {
                        format!("{}: partition value of {}: {e}", view.path(), field.name())
                    })?,
                );
            }
            let location = ObjectPath::parse(format!("{prefix}/{}", view.object_store_path()))
                .map_err(|e| format!("{}: {e}", view.path()))?;
            let size = u64::try_from(view.size()).unwrap_or(0);
            let mut file = PartitionedFile::new(location.to_string(), size);
            file.object_meta.location = location;
            // The row count, and no column statistics. Set before the partition values:
            // `with_statistics` appends exact statistics for the partition columns when the
            // file has partition values, and a file with any column statistics gets a file
            // pruner that builds and evaluates a pruning predicate on every open. That was 5%
            // of a dashboard query on the 1M lake, and it could never prune: `pruned_files`
            // has already dropped the files outside the partition filters.
            if let Some(rows) = view.num_records() {
                let mut stats = Statistics::new_unknown(&scan_schema);
                stats.num_rows = Precision::Exact(rows);
                file = file.with_statistics(Arc::new(stats));
            }
            files.push(file.with_partition_values(partition_values));
        }
        // The same order on every open, so that plans and results are repeatable.
        files.sort_by(|a, b| a.object_meta.location.cmp(&b.object_meta.location));

        // One URL per store: sessions can read several lakes (tests do) and each scan
        // registers its store under its own name.
        let store_url = ObjectStoreUrl::parse(format!(
            "shoplake-lake://{:x}",
            Arc::as_ptr(&store) as *const () as usize
        ))
        .map_err(|e| e.to_string())?;
        Ok(Some(LakeScan {
            schema,
            file_schema: Arc::new(Schema::new(file_fields)),
            scan_schema,
            partition_cols,
            scan_index,
            files,
            store_url,
            store,
            table: name,
        }))
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_cols
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    /// The files whose partition values satisfy `filters` (filters on partition columns only).
    fn pruned_files(&self, filters: &[Expr]) -> Result<Vec<PartitionedFile>> {
        if filters.is_empty() {
            return Ok(self.files.clone());
        }
        let schema = DFSchema::try_from(Schema::new(self.partition_cols.clone()))?;
        // The planner qualifies columns with the table's name; the partition schema does not.
        let filters: Vec<Expr> = filters
            .iter()
            .map(|f| {
                f.clone()
                    .transform(|e| {
                        Ok(match e {
                            Expr::Column(c) if c.relation.is_some() => {
                                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                            }
                            other => Transformed::no(other),
                        })
                    })
                    .map(|t| t.data)
            })
            .collect::<Result<_>>()?;
        // One row per file, its partition values; the filters evaluated over all of them at
        // once. A null result drops the file, as a WHERE clause drops a row (DataFusion's own
        // `filter_partitioned_file` reads the value under a null and kept the files of a null
        // partition for `region <> 'North'`).
        let columns = (0..self.partition_cols.len())
            .map(|i| {
                ScalarValue::iter_to_array(self.files.iter().map(|f| f.partition_values[i].clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(Arc::clone(schema.inner()), columns)?;
        let filter = conjunction(filters).expect("at least one filter");
        let expr = create_physical_expr(
            &filter,
            &schema,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )?;
        let keep = expr.evaluate(&batch)?.into_array(self.files.len())?;
        let keep = keep
            .as_boolean_opt()
            .ok_or_else(|| DataFusionError::Internal("a filter gave no booleans".into()))?;
        Ok(self
            .files
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.is_valid(*i) && keep.value(*i))
            .map(|(_, f)| f.clone())
            .collect())
    }
}

/// A partition value of the log (text, or null) as a value of the column's type.
fn partition_value(text: Option<&str>, data_type: &DataType) -> Result<ScalarValue> {
    if let DataType::Dictionary(key, value) = data_type {
        let inner = partition_value(text, value)?;
        return Ok(ScalarValue::Dictionary(key.clone(), Box::new(inner)));
    }
    match text {
        None => ScalarValue::try_new_null(data_type),
        Some(text) => ScalarValue::try_from_string(text.to_string(), data_type),
    }
}

/// Files shared out over `n` groups by size, the largest first into the lightest group, so
/// that the scan's partitions finish together.
fn balanced_groups(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, files.len().max(1));
    files.sort_by(|a, b| {
        b.object_meta
            .size
            .cmp(&a.object_meta.size)
            .then_with(|| a.object_meta.location.cmp(&b.object_meta.location))
    });
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for file in files {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += file.object_meta.size;
        lightest.1.push(file);
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

#[async_trait::async_trait]
impl TableProvider for LakeScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty() && expr_applicable_for_cols(&names, f) {
                    // Applied exactly: the files outside the partitions are not read.
                    TableProviderFilterPushDown::Exact
                } else {
                    // Used to skip row groups and pages; the rows are still filtered above.
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let names = self.partition_names();
        let partition_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        let files = self.pruned_files(&partition_filters)?;
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(Arc::new(
                self.schema.project(&columns)?,
            ))));
        }
        // The scan's columns in the order asked for.
        let projection: Vec<usize> = columns.iter().map(|&i| self.scan_index[i]).collect();

        state
            .runtime_env()
            .register_object_store(self.store_url.as_ref(), self.store.clone());

        let mut statistics = Statistics::new_unknown(&self.scan_schema);
        statistics.num_rows = files
            .iter()
            .map(|f| match f.statistics.as_deref() {
                Some(s) => s.num_rows,
                None => Precision::Absent,
            })
            .fold(Precision::Exact(0), |sum, n| sum.add(&n));

        // What `ParquetFormat::create_physical_plan` builds (the session's Parquet options and
        // metadata cache), except that it looks for no bloom filters and keeps page indexes.
        let mut options = state.table_options().parquet.clone();
        // shoplake writes no bloom filters (`writer_properties`); looking for them still
        // evaluates the pruning predicate over every row group on every open.
        options.global.bloom_filter_on_read = false;
        let readers = LakeReaders {
            cached: CachedParquetFileReaderFactory::new(
                self.store.clone(),
                state.runtime_env().cache_manager.get_file_metadata_cache(),
            ),
            page_index: options.global.enable_page_index,
        };
        let metadata_size_hint = options.global.metadata_size_hint;
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_cols.clone())
            .build();
        let mut source = ParquetSource::new(table_schema)
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(readers));
        if let Some(hint) = metadata_size_hint {
            source = source.with_metadata_size_hint(hint);
        }
        let groups = balanced_groups(files, state.config().target_partitions());
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// DataFusion's cached Parquet readers, asked for the page index with the footer.
///
/// The session's metadata cache keeps each file's footer across queries, but DataFusion's
/// opener asks for the footer without the page index and then reads and parses the index on
/// its own, outside the cache: on every query, for every file with a filter to prune pages
/// by (6.5% of a dashboard query on the 1M lake, `bench/README.md`). These readers ask for
/// the index with the footer, so the cache keeps both and the opener finds the index there.
#[derive(Debug)]
struct LakeReaders {
    cached: CachedParquetFileReaderFactory,
    /// The session's `enable_page_index`: without it the opener never reads the index.
    page_index: bool,
}

impl ParquetFileReaderFactory for LakeReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let reader =
            self.cached
                .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(if self.page_index {
            Box::new(WithPageIndex(reader))
        } else {
            reader
        })
    }
}

/// A reader whose footer comes with the page index, where the file has one.
struct WithPageIndex(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for WithPageIndex {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{partitioned_rows, partitioned_schema, temp_tables};
    use crate::{TableId, WriteMode};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::catalog::TableProvider;
    use datafusion::common::stats::Precision;
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    async fn rows(provider: Arc<dyn TableProvider>, sql: &str) -> String {
        let ctx = SessionContext::new();
        ctx.register_table("t", provider).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    /// Every query gives through the scan what it gives through delta-rs's own provider, at
    /// every version: appends, then an overwrite that removes the first files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_what_delta_rs_reads_at_every_version() {
        let (_dir, tables) = temp_tables();
        let id = TableId::processed("t");
        let schema = partitioned_schema();
        let parts = ["region", "month"];
        for (start, mode) in [
            (0, WriteMode::Append),
            (100, WriteMode::Append),
            (200, WriteMode::Overwrite),
        ] {
            tables
                .write_batches(
                    &id,
                    schema.clone(),
                    vec![
                        partitioned_rows(&schema, start, 12, None),
                        partitioned_rows(&schema, start + 50, 7, None),
                    ],
                    &parts,
                    mode,
                    1,
                )
                .await
                .unwrap();
        }

        let queries = [
            "SELECT * FROM t ORDER BY id",
            "SELECT month, id, region FROM t ORDER BY id",
            "SELECT id FROM t WHERE region = '50% Off / East' AND month = 2 ORDER BY id",
            "SELECT id, note FROM t WHERE region IS NULL ORDER BY id",
            "SELECT region, month, COUNT(*), MIN(id), MAX(id) FROM t GROUP BY region, month ORDER BY region, month",
            "SELECT COUNT(*) FROM t",
            "SELECT COUNT(*) FROM t WHERE month = 1",
            "SELECT id FROM t WHERE note LIKE 'note 5%' AND region <> 'North' ORDER BY id",
            "SELECT COUNT(*) FROM t WHERE region = 'nowhere'",
        ];
        for version in [0, 1, 2] {
            let table = tables.open_at(&id, version).await.unwrap();
            let delta: Arc<dyn TableProvider> = table.table_provider().await.unwrap();
            let ours = tables.provider(&id, Some(version)).await.unwrap().unwrap();
            // The same columns; the text partition column is read as Utf8View, not a dictionary.
            let types = |p: &Arc<dyn TableProvider>| {
                p.schema()
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(types(&delta)[1], "region Dictionary(UInt16, Utf8)");
            let mut expected = types(&delta);
            expected[1] = "region Utf8View".into();
            assert_eq!(types(&ours), expected);
            let plan = rows(ours.clone(), "EXPLAIN SELECT * FROM t").await;
            assert!(
                plan.contains("DataSourceExec") && !plan.contains("DeltaScan"),
                "{plan}"
            );
            for q in queries {
                let expected = rows(delta.clone(), q).await;
                assert_eq!(
                    rows(ours.clone(), q).await,
                    expected,
                    "version {version}: {q}"
                );
            }
        }
        // The latest version holds only the overwrite's rows.
        let latest = tables.provider(&id, None).await.unwrap().unwrap();
        let summary = rows(
            latest.clone(),
            "SELECT CAST(MIN(id) AS VARCHAR) || '/' || CAST(COUNT(*) AS VARCHAR) AS s FROM t",
        )
        .await;
        assert!(summary.contains("| 200/19 |"), "{summary}");

        // A filter on partition columns leaves the other partitions' files unread.
        let plan = rows(
            latest,
            "EXPLAIN SELECT id FROM t WHERE region = '50% Off / East' AND month = 2",
        )
        .await;
        assert_eq!(plan.matches(".parquet").count(), 1, "{plan}");
    }

    /// The files of the scans below `plan`.
    fn scanned_files(plan: &Arc<dyn ExecutionPlan>) -> Vec<PartitionedFile> {
        let mut files = Vec::new();
        if let Some(scan) = plan.downcast_ref::<DataSourceExec>()
            && let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>()
        {
            files.extend(config.file_groups.iter().flat_map(|g| g.files().to_vec()));
        }
        for child in plan.children() {
            files.extend(scanned_files(child));
        }
        files
    }

    /// What DataFusion's opener gets for each file: no column statistics, which would give
    /// the file a pruner that builds a pruning predicate on every open and can prune nothing
    /// here; and a footer read with its page index, which the session's metadata cache keeps
    /// for the next query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_open_without_a_pruner_and_the_cache_keeps_their_page_index() {
        let (_dir, tables) = temp_tables();
        let id = TableId::processed("t");
        let schema = partitioned_schema();
        tables
            .write_batches(
                &id,
                schema.clone(),
                vec![partitioned_rows(&schema, 0, 30, None)],
                &["region", "month"],
                WriteMode::Append,
                1,
            )
            .await
            .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("t", tables.provider(&id, None).await.unwrap().unwrap())
            .unwrap();
        // A filter on a file column: the opener prunes row groups and pages with it.
        let plan = ctx
            .sql("SELECT COUNT(*) AS n FROM t WHERE id > 3")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let files = scanned_files(&plan);
        // Three regions (one of them null) by two months.
        assert_eq!(files.len(), 6);
        for file in &files {
            let stats = file.statistics.as_deref().expect("the log's row count");
            assert!(matches!(stats.num_rows, Precision::Exact(5)), "{stats:?}");
            assert_eq!(stats.column_statistics.len(), schema.fields().len());
            assert!(!file.has_statistics(), "{stats:?}");
        }
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        assert!(
            pretty_format_batches(&batches)
                .unwrap()
                .to_string()
                .contains("| 26 |")
        );
        let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
        for file in &files {
            let entry = cache
                .get(&file.object_meta.location)
                .expect("the footer is cached");
            let metadata = entry
                .file_metadata
                .as_any()
                .downcast_ref::<CachedParquetMetaData>()
                .expect("Parquet metadata")
                .parquet_metadata();
            assert!(
                metadata.column_index().is_some() && metadata.offset_index().is_some(),
                "{}: the cached footer has no page index",
                file.object_meta.location
            );
        }
    }
}
