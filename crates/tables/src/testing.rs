//! Fixtures shared by the tests of the scan, the partition-run aggregate, the text equality
//! rule and the spill.

use crate::Tables;
use datafusion::arrow::array::{Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use shoplake_storage::Lake;
use std::sync::Arc;

/// A lake in a temporary folder (kept while the `TempDir` lives) and its tables.
pub fn temp_tables() -> (tempfile::TempDir, Tables) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    (dir, Tables::new(lake))
}

/// `id`, `region`, `note`, `month`, `amount`: the partition columns (`region`, `month`) sit
/// between the data columns.
pub fn partitioned_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, false),
        Field::new("month", DataType::Int32, false),
        Field::new("amount", DataType::Decimal128(12, 2), true),
    ]))
}

/// Rows `start..start + n` of [`partitioned_schema`], in an order unrelated to the
/// partitions: `region` is null on one row in three and has characters that paths must
/// encode on another; `note` is `note {id}`, or with `notes`, `note {id % notes}`; `amount`
/// is `id * 1.01`, negative on even ids and null on one row in five.
pub fn partitioned_rows(schema: &SchemaRef, start: i64, n: i64, notes: Option<i64>) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n).collect();
    let region: Vec<Option<&str>> = ids
        .iter()
        .map(|i| [Some("North"), Some("50% Off / East"), None][(*i % 3) as usize])
        .collect();
    let note: Vec<String> = ids
        .iter()
        .map(|i| format!("note {}", notes.map_or(*i, |m| i % m)))
        .collect();
    let month: Vec<i32> = ids.iter().map(|i| (*i % 2) as i32 + 1).collect();
    let amount = Decimal128Array::from_iter(ids.iter().map(|i| {
        let cents = i128::from(*i) * 101 * if i % 2 == 0 { -1 } else { 1 };
        (i % 5 != 0).then_some(cents)
    }))
    .with_precision_and_scale(12, 2)
    .unwrap();
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(region)),
            Arc::new(StringArray::from(note)),
            Arc::new(Int32Array::from(month)),
            Arc::new(amount),
        ],
    )
    .unwrap()
}

/// `sql`'s answer and its `EXPLAIN`, both as printed tables.
pub async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap();
    let plan = plan.collect().await.unwrap();
    (
        pretty_format_batches(&batches).unwrap().to_string(),
        pretty_format_batches(&plan).unwrap().to_string(),
    )
}

/// `ours`'s plan for `sql`, after checking that its answer is `plain`'s and that `plain`'s
/// plan does not show `marker` (the mark of the rule under test).
pub async fn same_answer(
    plain: &SessionContext,
    ours: &SessionContext,
    sql: &str,
    marker: &str,
) -> String {
    let (expected, plain_plan) = run(plain, sql).await;
    assert!(!plain_plan.contains(marker));
    let (got, plan) = run(ours, sql).await;
    assert_eq!(got, expected, "{sql}");
    plan
}
