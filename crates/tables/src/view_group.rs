//! Partial aggregation by one text column, keyed by its views (or by a `CASE`'s buckets).
//!
//! Grouping by one text column (`GROUP BY product_id`) is a common dashboard shape. DataFusion's
//! partial aggregate hashes each row's bytes and compares them with the group's: a seventh
//! of the top-products query at 10M rows. Ids are short, and a `Utf8View` value of up to 12
//! bytes is stored whole in its 16-byte view (length, then the bytes, zero-padded), so two
//! such values are equal exactly when their views are: the view itself is the key, hashed as
//! one 128-bit number. [`ViewGroupAggregate`] replaces such a partial aggregate with
//! [`ViewGroupAggregateExec`], which finds each row's group that way (longer values by their
//! bytes, in a second map) and feeds DataFusion's own group accumulators. Its output is the
//! partial aggregate's, so the final aggregate above is unchanged. It emits its groups and
//! starts afresh past [`EMIT_AT`] groups, as a partial aggregate may, so its memory stays
//! bounded however many groups there are.
//!
//! It takes the buckets of [`crate::CaseGroupLabels`] the same way: a `CASE` whose results
//! are the numbers 0, 1, ... as `Int32` literals (`CASE WHEN EXTRACT(DOW FROM sales_date) IN
//! (0, 6) THEN 0 ELSE 1 END`) is grouped by indexing a table of each number's group, where
//! DataFusion's aggregate hashes every row's number (8% of weekday versus weekend at 1M rows).
//!
//! A filter right below (`WHERE status = 'COMPLETED'`) is applied inside when the aggregates
//! ignore nulls (`COUNT`, `SUM`, `MIN`, `MAX`, `AVG` of columns): a dropped row makes no
//! group and its values are made null, where the filter would copy the key and the values of
//! every kept row (9% of top products' time at 10M rows).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int32Builder, RecordBatch, StringViewArray,
    StringViewBuilder, make_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, internal_err};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{CaseExpr, Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::aggregate::{FusedFilter, Replaced, fusable, plain_partial, replace_aggregates};

/// Past this many groups a partition emits its partial states and starts afresh (in tests,
/// soon, so that they emit many times).
pub const EMIT_AT: usize = if cfg!(test) { 1000 } else { 1 << 16 };

/// The longest text a view holds inline.
const INLINE: u32 = 12;

/// The most buckets a `CASE` may number for [`ViewGroupAggregateExec`] to take it: the table
/// of their groups has one slot per number.
const MAX_BUCKETS: i32 = 1024;

/// The physical optimizer rule: a plain partial aggregate grouped by one `Utf8View` column or
/// by one bucket-numbering `CASE`, with aggregates that have group accumulators, becomes a
/// [`ViewGroupAggregateExec`]. Added after [`crate::PartitionRunAggregate`], which takes
/// partition columns.
#[derive(Debug, Default)]
pub struct ViewGroupAggregate;

impl PhysicalOptimizerRule for ViewGroupAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_aggregates(plan, groups_by_one_key, |node| {
            let fused = node
                .downcast_ref::<AggregateExec>()
                .is_some_and(|agg| fusable(agg.input()) && ignores_dropped_rows(agg));
            Ok(Arc::new(ViewGroupAggregateExec::new(node, fused)?))
        })
    }

    fn name(&self) -> &str {
        "view_group_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `agg` is a [plain partial](crate::aggregate::plain_partial) aggregate grouped by
/// a single `Utf8View` column or a single [bucket-numbering `CASE`](buckets), whose
/// aggregates all have group accumulators.
fn groups_by_one_key(agg: &AggregateExec) -> bool {
    let input = agg.input().schema();
    plain_partial(agg)
        && agg
            .aggr_expr()
            .iter()
            .all(|a| a.groups_accumulator_supported())
        && matches!(agg.group_expr().expr(), [(key, _)] if key.downcast_ref::<Column>().is_some_and(|c| {
            c.index() < input.fields().len()
                && input.field(c.index()).data_type() == &DataType::Utf8View
        }) || buckets(key).is_some())
}

/// How many buckets `key` numbers, when it is a `CASE` whose results (every `THEN`, and the
/// `ELSE` if there is one) are `Int32` literals below [`MAX_BUCKETS`], none negative: one more
/// than the largest. A `CASE` without `ELSE` may also give null.
fn buckets(key: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    let case = key.downcast_ref::<CaseExpr>()?;
    let results = case.when_then_expr().iter().map(|(_, then)| then);
    let mut largest = 0;
    for result in results.chain(case.else_expr()) {
        match result.downcast_ref::<Literal>()?.value() {
            ScalarValue::Int32(Some(n)) if (0..MAX_BUCKETS).contains(n) => {
                largest = largest.max(*n)
            }
            _ => return None,
        }
    }
    usize::try_from(largest).ok().map(|n| n + 1)
}

/// Whether a filter below `agg` can be applied by making the rows it drops null: every
/// aggregate ignores nulls, is not `DISTINCT`, and reads only columns and literals, which can
/// be read on the rows the filter drops too (`SUM(1000 / id) WHERE id <> 0` could not).
fn ignores_dropped_rows(agg: &AggregateExec) -> bool {
    agg.aggr_expr().iter().all(|a| {
        NULL_IGNORING.contains(&a.fun().name())
            && !a.is_distinct()
            && a.expressions().iter().all(|e| {
                e.downcast_ref::<Column>().is_some() || e.downcast_ref::<Literal>().is_some()
            })
    })
}

/// Aggregates whose answer is that of their arguments' non-null values (`COUNT(*)` is
/// `count(1)`, and counts the kept rows once the others are null).
const NULL_IGNORING: [&str; 5] = ["count", "sum", "min", "max", "avg"];

/// A partial aggregate by one text column that finds groups by their views, or by one
/// bucket-numbering `CASE` that finds them by the number.
/// Output: the schema of the partial `AggregateExec` it replaces.
#[derive(Debug)]
pub struct ViewGroupAggregateExec {
    inner: Replaced,
    metrics: ExecutionPlanMetricsSet,
}

impl ViewGroupAggregateExec {
    /// `fused`: apply the aggregate's input filter here (see [`Replaced`]).
    fn new(agg: Arc<dyn ExecutionPlan>, fused: bool) -> Result<ViewGroupAggregateExec> {
        Ok(ViewGroupAggregateExec {
            inner: Replaced::new(agg, fused)?,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for ViewGroupAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as("ViewGroupAggregateExec", t, f)
    }
}

impl ExecutionPlan for ViewGroupAggregateExec {
    fn name(&self) -> &'static str {
        "ViewGroupAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.inner.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ViewGroupAggregateExec {
            inner: self.inner.replace_children(children, options)?,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
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
        let agg = self.inner.aggregate();
        let input = self.inner.input().execute(partition, context)?;
        let mut groups = Groups::new(agg, self.inner.fused_filter())?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // `None` marks the end of the input: the groups left are emitted then.
        let batches = input
            .map(Some)
            .chain(futures::stream::iter([None]))
            .filter_map(move |item| {
                let _timer = baseline.elapsed_compute().timer();
                let out = match item {
                    Some(Err(e)) => Some(Err(e)),
                    Some(Ok(batch)) => match groups.absorb(&batch) {
                        Ok(()) if groups.len() >= EMIT_AT => groups.emit().transpose(),
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    },
                    None => groups.emit().transpose(),
                };
                if let Some(Ok(batch)) = &out {
                    baseline.record_output(batch.num_rows());
                }
                std::future::ready(out)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            agg.schema(),
            batches,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Groups of inline views: open addressing with linear probing over a power-of-two table
/// kept at most half full, so that finding a row's group is one multiply and, nearly always,
/// one comparison. (A general hash map spent as long on this as DataFusion's byte hashing.)
struct InlineGroups {
    views: Vec<u128>,
    groups: Vec<u32>,
    len: usize,
}

impl InlineGroups {
    /// Marks a free slot (group numbers stay below [`EMIT_AT`]).
    const FREE: u32 = u32::MAX;

    fn with_slots(slots: usize) -> InlineGroups {
        InlineGroups {
            views: vec![0; slots],
            groups: vec![Self::FREE; slots],
            len: 0,
        }
    }

    /// A slot for `view`: a folded multiply of its two halves. The keys are the lake's own
    /// values, so there is no adversary to resist, only clustering to avoid.
    #[inline]
    fn hash(view: u128) -> usize {
        let lo = (view as u64) ^ 0x243f_6a88_85a3_08d3;
        let hi = ((view >> 64) as u64) ^ 0x1319_8a2e_0370_7344;
        let product = u128::from(lo) * u128::from(hi);
        ((product as u64) ^ ((product >> 64) as u64)) as usize
    }

    /// Where `view` is: `Ok(its group)`, or `Err(the free slot that ends its probe)`.
    #[inline(always)]
    fn probe(&self, view: u128) -> Result<u32, usize> {
        let mask = self.groups.len() - 1;
        // One length for both, so that `at & mask` needs no bounds check on either.
        let slot_views = &self.views[..self.groups.len()];
        let mut at = Self::hash(view) & mask;
        loop {
            let group = self.groups[at];
            if group == Self::FREE {
                return Err(at);
            }
            if slot_views[at] == view {
                return Ok(group);
            }
            at = (at + 1) & mask;
        }
    }

    /// The group of `view`; a view not seen before gets `new()`.
    #[inline]
    fn find_or_insert(&mut self, view: u128, new: impl FnOnce() -> usize) -> usize {
        let at = match self.probe(view) {
            Ok(group) => return group as usize,
            Err(at) => at,
        };
        if 2 * (self.len + 1) > self.groups.len() {
            self.grow();
            return self.find_or_insert(view, new);
        }
        let group = new();
        self.views[at] = view;
        self.groups[at] = group as u32;
        self.len += 1;
        group
    }

    /// Writes the groups of the rows at the front of `views` that already have one to `out`,
    /// and returns how many there were: it stops at the first value longer than [`INLINE`] or
    /// not seen before (`views.len()` when there is none). This is the loop nearly every row
    /// takes; with the table borrowed only to read and the output a separate slice, it keeps
    /// the table's pointers in registers (31 instructions a row, against 57 through `find_or_insert`, which reloads
    /// `self` after each store). Not inlined: on its own it has the registers to itself, and
    /// it is called again only after a new group or a long value, not for each row.
    #[inline(never)]
    fn known(&self, views: &[u128], out: &mut [usize]) -> usize {
        for (row, (&view, out)) in views.iter().zip(out.iter_mut()).enumerate() {
            if (view as u32) > INLINE {
                return row;
            }
            match self.probe(view) {
                Ok(group) => *out = group as usize,
                Err(_) => return row,
            }
        }
        views.len()
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, InlineGroups::with_slots(2 * self.groups.len()));
        for (view, group) in old.views.into_iter().zip(old.groups) {
            if group != Self::FREE {
                self.find_or_insert(view, || group as usize);
            }
        }
    }

    fn clear(&mut self) {
        self.groups.fill(Self::FREE);
        self.len = 0;
    }
}

/// One partition's groups: their keys, where to find them, and their accumulators.
struct Groups {
    /// The fused filter, on the input batches.
    filter: Option<FusedFilter>,
    key: Arc<dyn PhysicalExpr>,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Groups of values of up to 12 bytes, by view; of longer values, by bytes; of null.
    inline: InlineGroups,
    long: HashMap<Box<[u8]>, usize>,
    null: Option<usize>,
    /// Each group's value, in group order.
    values: StringViewBuilder,
    /// For a `CASE` key, the groups of its numbers instead of text.
    buckets: Option<Buckets>,
    count: usize,
    /// Each row's group, for the batch at hand.
    indices: Vec<usize>,
    schema: SchemaRef,
}

impl Groups {
    fn new(agg: &AggregateExec, filter: Option<FusedFilter>) -> Result<Groups> {
        let aggs = agg.aggr_expr().to_vec();
        let accumulators = aggs
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        Ok(Groups {
            filter,
            key: Arc::clone(&agg.group_expr().expr()[0].0),
            args: aggs.iter().map(|a| a.expressions()).collect(),
            aggs,
            accumulators,
            inline: InlineGroups::with_slots(1024),
            long: HashMap::new(),
            null: None,
            values: StringViewBuilder::new(),
            buckets: buckets(&agg.group_expr().expr()[0].0).map(Buckets::new),
            count: 0,
            indices: Vec::new(),
            schema: agg.schema(),
        })
    }

    fn len(&self) -> usize {
        self.count
    }

    fn absorb(&mut self, input: &RecordBatch) -> Result<()> {
        let rows = input.num_rows();
        if rows == 0 {
            return Ok(());
        }
        // With a fused filter: the rows it keeps, unless it keeps them all.
        let (keep, batch) = match &self.filter {
            Some(filter) => {
                let (keep, batch) = filter.apply(input)?;
                match keep.true_count() {
                    0 => return Ok(()),
                    n if n == rows => (None, batch),
                    _ => (Some(keep), batch),
                }
            }
            None => (None, input.clone()),
        };
        let keys = self.key.evaluate(&batch)?.into_array(rows)?;
        // Every row's index is written below, so the last batch's need no clearing.
        self.indices.resize(rows, 0);
        let keep = keep.map(|k| NullBuffer::new(k.values().clone()));
        if let Some(buckets) = &mut self.buckets {
            let Some(keys) = keys.as_primitive_opt::<Int32Type>() else {
                return internal_err!("the group key {} gave {}", self.key, keys.data_type());
            };
            for row in 0..rows {
                self.indices[row] = match &keep {
                    Some(keep) if keep.is_null(row) => 0,
                    _ => buckets.group_of(keys, row, &mut self.null, &mut self.count)?,
                };
            }
        } else {
            self.view_groups(&keys, keep.as_ref())?;
        }
        for (acc, exprs) in self.accumulators.iter_mut().zip(&self.args) {
            let values = exprs
                .iter()
                .map(|e| {
                    let values = e.evaluate(&batch)?.into_array(rows)?;
                    match &keep {
                        Some(keep) => without(&values, keep),
                        None => Ok(values),
                    }
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            acc.update_batch(&values, &self.indices, None, self.count)?;
        }
        Ok(())
    }

    /// Each row's group by its text key (see [`Self::kept_group_of`]), into `indices`.
    fn view_groups(&mut self, keys: &ArrayRef, keep: Option<&NullBuffer>) -> Result<()> {
        let Some(keys) = keys.as_string_view_opt() else {
            return internal_err!("the group key {} gave {}", self.key, keys.data_type());
        };
        let rows = keys.len();
        if keys.null_count() == 0 {
            // Runs of rows whose groups exist, then one row that needs more (a new group or
            // a long value).
            let views = keys.views();
            let mut row = 0;
            while row < rows {
                row += self.inline.known(&views[row..], &mut self.indices[row..]);
                if row < rows {
                    self.indices[row] = self.kept_group_of(keys, row, keep);
                    row += 1;
                }
            }
        } else {
            for row in 0..rows {
                self.indices[row] = self.kept_group_of(keys, row, keep);
            }
        }
        Ok(())
    }

    /// The group of `keys[row]` if the fused filter keeps the row (made if it is new), else
    /// group 0. A dropped row must not make a group; group 0 exists once the batch's first
    /// kept row has its group, and a dropped row's values are null to the accumulators.
    /// (The loop over known views gives a dropped row its key's group when there is one,
    /// which is as good.)
    fn kept_group_of(
        &mut self,
        keys: &StringViewArray,
        row: usize,
        keep: Option<&NullBuffer>,
    ) -> usize {
        match keep {
            Some(keep) if keep.is_null(row) => 0,
            _ => self.group_of(keys, row),
        }
    }

    /// The group of `keys[row]`, made if it is new.
    fn group_of(&mut self, keys: &StringViewArray, row: usize) -> usize {
        let view = keys.views()[row];
        if keys.is_null(row) {
            match self.null {
                Some(group) => group,
                None => {
                    self.values.append_null();
                    *self.null.insert(new_group(&mut self.count))
                }
            }
        } else if (view as u32) <= INLINE {
            let (values, count) = (&mut self.values, &mut self.count);
            self.inline.find_or_insert(view, || {
                values.append_value(keys.value(row));
                new_group(count)
            })
        } else {
            let value = keys.value(row);
            match self.long.get(value.as_bytes()) {
                Some(group) => *group,
                None => {
                    self.values.append_value(value);
                    let group = new_group(&mut self.count);
                    self.long.insert(value.as_bytes().into(), group);
                    group
                }
            }
        }
    }

    /// Every group's key and partial states as a batch (if there are groups), and no groups.
    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        if self.count == 0 {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = match &mut self.buckets {
            Some(buckets) => vec![buckets.finish()],
            None => vec![Arc::new(self.values.finish())],
        };
        for acc in &mut self.accumulators {
            columns.extend(acc.state(EmitTo::All)?);
        }
        self.accumulators = self
            .aggs
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        self.inline.clear();
        self.long.clear();
        self.null = None;
        self.count = 0;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

/// The groups of a bucket-numbering `CASE`'s numbers.
struct Buckets {
    /// Each number's group plus one, 0 while it has none.
    groups: Vec<usize>,
    /// Each group's number, in group order.
    values: Int32Builder,
}

impl Buckets {
    fn new(buckets: usize) -> Buckets {
        Buckets {
            groups: vec![0; buckets],
            values: Int32Builder::new(),
        }
    }

    /// The group of `keys[row]`, made if it is new (null's is `null`'s, as for text).
    fn group_of(
        &mut self,
        keys: &Int32Array,
        row: usize,
        null: &mut Option<usize>,
        count: &mut usize,
    ) -> Result<usize> {
        if keys.is_null(row) {
            return Ok(match null {
                Some(group) => *group,
                None => {
                    self.values.append_null();
                    *null.insert(new_group(count))
                }
            });
        }
        let n = keys.value(row);
        let Some(slot) = usize::try_from(n).ok().and_then(|i| self.groups.get_mut(i)) else {
            return internal_err!("bucket {n} is not one of the CASE's results");
        };
        if *slot == 0 {
            self.values.append_value(n);
            *slot = new_group(count) + 1;
        }
        Ok(*slot - 1)
    }

    /// The groups' numbers, in group order, and no groups.
    fn finish(&mut self) -> ArrayRef {
        self.groups.fill(0);
        Arc::new(self.values.finish())
    }
}

/// `values` with the rows `keep` drops made null: what a null-ignoring aggregate gives for
/// the kept rows. (DataFusion's accumulators skip nulls in a tight loop over 64 rows at a
/// time, and a filter row by row.)
fn without(values: &ArrayRef, keep: &NullBuffer) -> Result<ArrayRef> {
    let nulls = NullBuffer::union(values.nulls(), Some(keep));
    let data = values.to_data().into_builder().nulls(nulls).build()?;
    Ok(make_array(data))
}

/// The next group's number.
fn new_group(count: &mut usize) -> usize {
    *count += 1;
    *count - 1
}

#[cfg(test)]
mod tests {
    use super::{EMIT_AT, InlineGroups};
    use crate::testing::run;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// `known` gives the groups of the views already in the table and stops at the first
    /// view that is long or new, wherever it is, also after the table has grown.
    #[test]
    fn known_views_stop_at_the_first_long_or_new_one() {
        let view = |text: &str| StringViewArray::from(vec![text]).views()[0];
        let mut table = InlineGroups::with_slots(4);
        let names: Vec<String> = (0..40).map(|i| format!("P{i:04}")).collect();
        for (group, name) in names.iter().enumerate() {
            assert_eq!(table.find_or_insert(view(name), || group), group);
        }
        let all: Vec<u128> = names.iter().map(|n| view(n)).collect();
        let mut out = vec![usize::MAX; all.len()];
        assert_eq!(table.known(&all, &mut out), all.len());
        assert_eq!(out, (0..all.len()).collect::<Vec<_>>());
        assert_eq!(table.known(&[], &mut []), 0);
        for stop in [0, 1, 17, 39] {
            for odd in [
                view("P9999"),
                view("thirteen byte"),
                view("P0001\0"),
                view(""),
            ] {
                let mut views = all.clone();
                views[stop] = odd;
                let mut out = vec![usize::MAX; views.len()];
                assert_eq!(table.known(&views, &mut out), stop);
                assert_eq!(&out[..stop], &(0..stop).collect::<Vec<_>>()[..]);
                assert!(out[stop..].iter().all(|&g| g == usize::MAX));
            }
        }
    }

    /// Rows with short keys, keys of 12 and 13 bytes, keys that differ only past the 12th
    /// byte or by a trailing zero byte, nulls, and enough distinct keys to emit early.
    fn rows() -> RecordBatch {
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut amounts = Vec::new();
        let distinct = 20 * EMIT_AT as i64;
        for i in 0..3 * distinct {
            let key = match i % 9 {
                0 => None,
                1 => Some(format!("P{:04}", i % 50)),
                2 => Some("exactly12byt".to_string()),
                3 => Some("thirteen byte".to_string()),
                4 => Some(format!("a long product name {}", i % 3)),
                5 => Some("P0001\0".to_string()),
                6 => Some("".to_string()),
                _ => Some(format!("C{}", i % distinct)),
            };
            keys.push(key);
            amounts.push(if i % 11 == 0 { None } else { Some(i % 997) });
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("amount", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringViewArray::from(keys)),
                Arc::new(Int64Array::from(amounts)),
            ],
        )
        .unwrap()
    }

    /// Grouping by one text column, or by the buckets of a `CASE`, gives DataFusion's
    /// answers; the plan uses the views or the bucket numbers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_by_views_and_buckets_as_the_hash_aggregate_does() {
        let with = crate::session(Default::default(), Default::default());
        let without = SessionContext::new();
        let batch = rows();
        for ctx in [&with, &without] {
            // Several batches, so each partition sees many.
            let batches = (0..batch.num_rows())
                .step_by(4096)
                .map(|at| batch.slice(at, 4096.min(batch.num_rows() - at)))
                .collect();
            let table = MemTable::try_new(batch.schema(), vec![batches]).unwrap();
            ctx.register_table("t", Arc::new(table)).unwrap();
        }
        let queries = [
            "SELECT k, COUNT(*) AS n, SUM(amount) AS s, MIN(amount) AS lo, AVG(amount) AS mean, \
             COUNT(amount) AS c FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, COUNT(*) AS n FROM t WHERE amount > 500 GROUP BY k \
             ORDER BY n DESC, k LIMIT 10",
            "SELECT COUNT(*) AS groups, SUM(n) AS rows FROM \
             (SELECT k, COUNT(*) AS n FROM t GROUP BY k)",
            // DISTINCT groups by key and value first, then by key on the result.
            "SELECT k, COUNT(DISTINCT amount) AS d FROM t GROUP BY k ORDER BY d DESC, k LIMIT 5",
            // No null keys: the batches take the loop over known views.
            "SELECT k, COUNT(*) AS n, SUM(amount) AS s FROM t WHERE k IS NOT NULL \
             GROUP BY k ORDER BY k",
            "SELECT k, COUNT(*) AS n FROM t WHERE k IS NOT NULL AND amount % 3 = 1 \
             GROUP BY k ORDER BY n DESC, k LIMIT 10",
            // The filter applied inside: most `C` keys have every row dropped and must make
            // no group; a null amount makes the predicate null, which drops the row too.
            "SELECT COUNT(*) AS groups, SUM(n) AS rows, SUM(s) AS s, MIN(k) AS lo, MAX(k) AS hi \
             FROM (SELECT k, COUNT(*) AS n, SUM(amount) AS s FROM t WHERE amount > 900 \
             GROUP BY k)",
            "SELECT k, COUNT(*) AS n, SUM(amount) AS s, COUNT(amount) AS c FROM t \
             WHERE amount < 40 OR k = 'thirteen byte' GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, COUNT(*) AS n FROM t WHERE k <> 'exactly12byt' AND k NOT LIKE 'C%' \
             GROUP BY k ORDER BY k",
            // Every row kept, and none.
            "SELECT COUNT(*) AS groups, SUM(n) AS rows FROM (SELECT k, COUNT(*) AS n FROM t \
             WHERE amount IS NULL OR amount >= 0 GROUP BY k)",
            "SELECT k, COUNT(*) AS n FROM t WHERE amount > 5000 GROUP BY k",
            // Buckets of a `CASE` (`crate::CaseGroupLabels` numbers them): with the filter
            // inside, with a `CASE` that gives null (no `ELSE`) and names a bucket twice, with
            // nothing dropped, and with every row dropped.
            "SELECT CASE WHEN amount % 7 IN (0, 6) THEN 'weekend' ELSE 'weekday' END AS d, \
             COUNT(*) AS n, SUM(amount) AS s, MAX(k) AS k FROM t WHERE amount > 100 \
             GROUP BY CASE WHEN amount % 7 IN (0, 6) THEN 'weekend' ELSE 'weekday' END \
             ORDER BY d",
            "SELECT CASE WHEN amount < 300 THEN 'low' WHEN amount < 600 THEN 'mid' \
             WHEN amount >= 900 THEN 'low' END AS b, COUNT(*) AS n, SUM(amount) AS s, \
             MAX(amount) AS hi FROM t WHERE k IS NOT NULL GROUP BY CASE WHEN amount < 300 \
             THEN 'low' WHEN amount < 600 THEN 'mid' WHEN amount >= 900 THEN 'low' END \
             ORDER BY b NULLS FIRST",
            "SELECT CASE WHEN amount % 2 = 0 THEN 'even' ELSE 'odd' END AS p, COUNT(*) AS n, \
             MIN(amount) AS lo FROM t GROUP BY CASE WHEN amount % 2 = 0 THEN 'even' \
             ELSE 'odd' END ORDER BY p",
            // Every row of the odd bucket dropped: it makes no group.
            "SELECT CASE WHEN amount % 2 = 0 THEN 'even' ELSE 'odd' END AS p, COUNT(*) AS n, \
             SUM(amount) AS s FROM t WHERE amount % 4 = 0 GROUP BY CASE WHEN amount % 2 = 0 \
             THEN 'even' ELSE 'odd' END ORDER BY p",
            "SELECT CASE WHEN amount % 2 = 0 THEN 'even' ELSE 'odd' END AS p, COUNT(*) AS n \
             FROM t WHERE amount > 5000 GROUP BY CASE WHEN amount % 2 = 0 THEN 'even' \
             ELSE 'odd' END",
            // An argument that could fail on a dropped row (division by zero): the filter
            // stays below.
            "SELECT k, SUM(1000 / amount) AS s FROM t WHERE amount <> 0 GROUP BY k \
             ORDER BY k NULLS FIRST",
        ];
        for sql in queries {
            let (ours, plan) = run(&with, sql).await;
            let (theirs, _) = run(&without, sql).await;
            assert_eq!(ours, theirs, "{sql}\n{plan}");
            assert!(plan.contains("ViewGroupAggregateExec"), "{sql}\n{plan}");
            let fused = sql.contains("WHERE") && !sql.contains("1000 / amount");
            assert_eq!(plan.contains(", filter="), fused, "{sql}\n{plan}");
            assert_eq!(
                plan.contains("FilterExec"),
                !fused && sql.contains("WHERE"),
                "{sql}\n{plan}"
            );
        }
        // Two keys, a key that is an expression, a key that is not text, a `CASE` of
        // numbers that are not buckets and an ordered aggregate keep DataFusion's aggregate.
        for sql in [
            "SELECT k, amount % 2 AS odd, COUNT(*) FROM t GROUP BY k, amount % 2",
            "SELECT lower(k), COUNT(*) FROM t GROUP BY lower(k)",
            "SELECT CASE WHEN amount > 5 THEN -1 ELSE 1 END AS sign, COUNT(*) FROM t \
             GROUP BY CASE WHEN amount > 5 THEN -1 ELSE 1 END",
            "SELECT amount, COUNT(*) FROM t GROUP BY amount",
            "SELECT k, first_value(amount ORDER BY amount) FROM t GROUP BY k",
        ] {
            let (_, plan) = run(&with, sql).await;
            assert!(!plan.contains("ViewGroupAggregateExec"), "{sql}\n{plan}");
        }
    }
}
