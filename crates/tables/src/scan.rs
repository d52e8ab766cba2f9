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
//! It reads what shoplake writes: reader version 1 (no deletion vectors, no column mapping).
//! Any other table keeps delta-rs's provider.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics, stats::Precision};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::ExecutionProps;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::fmt;
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
            let mut file = PartitionedFile::new(location.to_string(), size)
                .with_partition_values(partition_values);
            file.object_meta.location = location;
            if let Some(rows) = view.num_records() {
                let mut stats = Statistics::new_unknown(&scan_schema);
                stats.num_rows = Precision::Exact(rows);
                file = file.with_statistics(Arc::new(stats));
            }
            files.push(file);
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

        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_cols.clone())
            .build();
        let source = format.file_source(table_schema);
        let groups = balanced_groups(files, state.config().target_partitions());
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
        format
            .create_physical_plan(state, config)
            .await
            .map_err(|e| DataFusionError::Context(format!("table {}", self.table), Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{partitioned_rows, partitioned_schema, temp_tables};
    use crate::{TableId, WriteMode};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::catalog::TableProvider;
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
}
