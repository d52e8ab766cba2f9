//! Partial aggregation by partition columns, without hashing rows.
//!
//! A `GROUP BY` on partition columns only (`GROUP BY region, year, month` over `fact_sales`)
//! groups by values that are the same on every row of a file. DataFusion's partial
//! `AggregateExec` still converts each row's keys to its row format and hashes them: on 9M
//! rows of the 10M benchmark lake that is most of the query's time. [`PartitionRunAggregate`]
//! replaces such a partial aggregate with [`RunAggregateExec`], which finds the runs of equal
//! keys in each batch (one run per batch, since a batch never spans two files) and feeds each
//! run to plain accumulators, emitting one state row per run. The final aggregate above merges
//! those rows as it merges any partial output, so the answer is the same; only the hashing is
//! gone.

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::partition;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ScalarValue, internal_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use std::fmt;
use std::sync::Arc;

/// The physical optimizer rule: a partial aggregate grouped only by partition columns of a
/// file scan becomes a [`RunAggregateExec`]. Added after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct PartitionRunAggregate;

impl PhysicalOptimizerRule for PartitionRunAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node
                .downcast_ref::<AggregateExec>()
                .is_some_and(groups_by_partitions)
            {
                Ok(Transformed::yes(
                    Arc::new(RunAggregateExec::new(node)?) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "partition_run_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `agg` is a plain partial aggregate (no grouping sets, per-aggregate filters,
/// ordered aggregates, limits or sorted input) whose every key is a partition column.
fn groups_by_partitions(agg: &AggregateExec) -> bool {
    let group = agg.group_expr();
    *agg.mode() == AggregateMode::Partial
        && group.is_single()
        && !group.expr().is_empty()
        && agg.limit_options().is_none()
        && agg.dynamic_expressions_produced().is_empty()
        && *agg.input_order_mode() == InputOrderMode::Linear
        && agg.filter_expr().iter().all(Option::is_none)
        && agg.aggr_expr().iter().all(|a| a.order_bys().is_empty())
        && group.expr().iter().all(|(expr, _)| {
            expr.downcast_ref::<Column>()
                .is_some_and(|c| is_partition_column(agg.input(), c.index()))
        })
}

/// Whether column `index` of `plan`'s output is, unchanged, a partition column of a file
/// scan below it, through operators that keep each batch's rows from one file together.
fn is_partition_column(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        let schema = plan.schema();
        return index < schema.fields().len()
            && config
                .table_partition_cols()
                .iter()
                .any(|f| f.name() == schema.field(index).name());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(p) => match p.get(index) {
                Some(&i) => i,
                None => return false,
            },
            None => index,
        };
        return is_partition_column(filter.input(), index);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return projection
            .expr()
            .get(index)
            .and_then(|e| e.expr.downcast_ref::<Column>())
            .is_some_and(|c| is_partition_column(projection.input(), c.index()));
    }
    if plan.is::<RepartitionExec>() || plan.is::<CoalescePartitionsExec>() {
        return is_partition_column(plan.children()[0], index);
    }
    false
}

/// A partial aggregate that accumulates runs of equal keys instead of hashing each row.
/// Output: the schema of the partial `AggregateExec` it replaces, one row per run.
#[derive(Debug)]
pub struct RunAggregateExec {
    /// The partial `AggregateExec` replaced: its expressions, schema and properties.
    agg: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunAggregateExec {
    fn new(agg: Arc<dyn ExecutionPlan>) -> Result<RunAggregateExec> {
        if agg.downcast_ref::<AggregateExec>().is_none() {
            return internal_err!("RunAggregateExec replaces an AggregateExec");
        }
        Ok(RunAggregateExec {
            agg,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn aggregate(&self) -> &AggregateExec {
        self.agg
            .downcast_ref::<AggregateExec>()
            .expect("checked in new")
    }
}

impl DisplayAs for RunAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let agg = self.aggregate();
        let keys: Vec<String> = agg
            .group_expr()
            .expr()
            .iter()
            .map(|(e, alias)| format!("{e} as {alias}"))
            .collect();
        let aggr: Vec<&str> = agg.aggr_expr().iter().map(|a| a.name()).collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "RunAggregateExec: mode=Partial, gby=[{}], aggr=[{}]",
                keys.join(", "),
                aggr.join(", ")
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "gby={}", keys.join(", "))?;
                write!(f, "aggr={}", aggr.join(", "))
            }
        }
    }
}

impl ExecutionPlan for RunAggregateExec {
    fn name(&self) -> &'static str {
        "RunAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        // Same rows per partition as the partial aggregate, in the order of the input.
        self.agg.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate().input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.agg.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::clone(&self.agg).replace_children(children, options)?;
        Ok(Arc::new(RunAggregateExec::new(agg)?))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let agg = self.aggregate();
        let input = agg.input().execute(partition, context)?;
        let mut runs = Runs {
            keys: agg
                .group_expr()
                .expr()
                .iter()
                .map(|(e, _)| e.clone())
                .collect(),
            aggs: agg.aggr_expr().to_vec(),
            schema: agg.schema(),
            open: None,
            done: Vec::new(),
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = agg.schema();
        // `None` marks the end of the input: the open run is closed then.
        let batches = input
            .map(Some)
            .chain(futures::stream::iter([None]))
            .filter_map(move |item| {
                let _timer = baseline.elapsed_compute().timer();
                let out = match item {
                    Some(Err(e)) => Some(Err(e)),
                    Some(Ok(batch)) => runs.absorb(&batch).and_then(|()| runs.emit()).transpose(),
                    None => runs.close().and_then(|()| runs.emit()).transpose(),
                };
                if let Some(Ok(batch)) = &out {
                    baseline.record_output(batch.num_rows());
                }
                std::future::ready(out)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// A run's key values and its accumulators.
type Run = (Vec<ScalarValue>, Vec<Box<dyn Accumulator>>);

/// The state of one partition's stream: the run still open and the rows of closed runs.
struct Runs {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    schema: SchemaRef,
    open: Option<Run>,
    /// Closed runs: the key values, then every aggregate's state values.
    done: Vec<Vec<ScalarValue>>,
}

impl Runs {
    fn absorb(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self
            .keys
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let args = self
            .aggs
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(rows))
                    .collect::<Result<Vec<ArrayRef>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        for range in partition(&keys)?.ranges() {
            let key = keys
                .iter()
                .map(|k| ScalarValue::try_from_array(k, range.start))
                .collect::<Result<Vec<_>>>()?;
            if self.open.as_ref().is_none_or(|(open, _)| *open != key) {
                self.close()?;
                let accumulators = self
                    .aggs
                    .iter()
                    .map(|a| a.create_accumulator())
                    .collect::<Result<Vec<_>>>()?;
                self.open = Some((key, accumulators));
            }
            let (_, accumulators) = self.open.as_mut().expect("opened above");
            for (acc, values) in accumulators.iter_mut().zip(&args) {
                let slices: Vec<ArrayRef> = values
                    .iter()
                    .map(|v| v.slice(range.start, range.len()))
                    .collect();
                acc.update_batch(&slices)?;
            }
        }
        Ok(())
    }

    /// Close the open run: its key and states become an output row.
    fn close(&mut self) -> Result<()> {
        if let Some((mut row, mut accumulators)) = self.open.take() {
            for acc in &mut accumulators {
                row.extend(acc.state()?);
            }
            self.done.push(row);
        }
        Ok(())
    }

    /// The closed runs as a batch, if there are any.
    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        if self.done.is_empty() {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.done);
        let columns = (0..self.schema.fields().len())
            .map(|j| ScalarValue::iter_to_array(rows.iter().map(|r| r[j].clone())))
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{partitioned_rows, partitioned_schema, temp_tables};
    use crate::{TableId, WriteMode};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use std::sync::Arc;

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap();
        let plan = plan.collect().await.unwrap();
        (
            pretty_format_batches(&batches).unwrap().to_string(),
            pretty_format_batches(&plan).unwrap().to_string(),
        )
    }

    /// Grouping by partition columns gives what DataFusion's hash aggregate gives, with the
    /// runs of a file spread over many small batches; other groupings keep the hash aggregate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_by_partitions_as_the_hash_aggregate_does() {
        let (_dir, tables) = temp_tables();
        let id = TableId::processed("t");
        let schema = partitioned_schema();
        for start in [0, 1000] {
            let batches = vec![
                partitioned_rows(&schema, start, 40, Some(7)),
                partitioned_rows(&schema, start + 500, 23, Some(7)),
            ];
            tables
                .write_batches(
                    &id,
                    schema.clone(),
                    batches,
                    &["region", "month"],
                    WriteMode::Append,
                    1,
                )
                .await
                .unwrap();
        }
        let provider = tables.provider(&id, None).await.unwrap().unwrap();
        // Batches of 4 rows: every file's run crosses batch boundaries.
        let config = || {
            SessionConfig::new()
                .with_batch_size(4)
                .with_target_partitions(2)
        };
        let ours = crate::session(config(), Arc::new(RuntimeEnv::default()));
        let plain = SessionContext::new_with_config(config());
        for ctx in [&ours, &plain] {
            ctx.register_table("t", provider.clone()).unwrap();
        }

        let by_partitions = [
            "SELECT region, month, COUNT(*), SUM(id), MIN(note), MAX(id), AVG(id) \
             FROM t GROUP BY region, month ORDER BY region, month",
            "SELECT month, region, COUNT(*) AS n, SUM(id) FROM t WHERE id % 3 <> 1 AND note <> 'note 2' \
             GROUP BY month, region ORDER BY month, region",
            "SELECT month, COUNT(*), SUM(id) FROM t WHERE region IS NOT NULL GROUP BY month ORDER BY month",
            "SELECT region, COUNT(*) FROM t GROUP BY region HAVING COUNT(*) > 10 ORDER BY region",
            "SELECT r, COUNT(*) FROM (SELECT region AS r, id FROM t WHERE id > 3) GROUP BY r ORDER BY r",
            "SELECT region, COUNT(*) FROM t WHERE month = 7 GROUP BY region",
        ];
        let others = [
            "SELECT region, note, COUNT(*) FROM t GROUP BY region, note ORDER BY region, note",
            "SELECT region, SUM(id) FILTER (WHERE id > 30) FROM t GROUP BY region ORDER BY region",
            "SELECT upper(region), COUNT(*) FROM t GROUP BY upper(region) ORDER BY 1",
            "SELECT region, COUNT(DISTINCT note) FROM t GROUP BY region ORDER BY region",
            "SELECT COUNT(*), SUM(id) FROM t",
        ];
        for (sql, replaced) in by_partitions
            .iter()
            .map(|q| (q, true))
            .chain(others.iter().map(|q| (q, false)))
        {
            let (expected, plain_plan) = run(&plain, sql).await;
            assert!(!plain_plan.contains("RunAggregateExec"));
            let (got, plan) = run(&ours, sql).await;
            assert_eq!(got, expected, "{sql}");
            if !sql.contains("month = 7") {
                assert_eq!(plan.contains("RunAggregateExec"), replaced, "{sql}\n{plan}");
            }
        }
        // The first query saw every row of both appends.
        let (all, _) = run(
            &ours,
            "SELECT SUM(n) AS rows FROM (SELECT region, COUNT(*) AS n FROM t GROUP BY region)",
        )
        .await;
        assert!(all.contains("| 126  |"), "{all}");
    }
}
