//! Rows that cannot be trusted, kept with their original values, the reason, the file and the
//! line, in the Delta table `quarantine/` (partitioned by source).

use crate::schema::QUARANTINE;
use datafusion::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use shoplake_core::ReasonCode;
use std::sync::Arc;

/// One quarantined row.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedRow {
    pub entity: String,
    pub source: String,
    pub file_id: i64,
    pub file_name: String,
    pub line: i64,
    pub reason: ReasonCode,
    pub detail: String,
    /// The original record: a JSON object of source column -> value.
    pub record: String,
    /// (run id, time) of the run that first quarantined a row being kept; `None` for new rows.
    pub origin: Option<(i64, i64)>,
}

/// The original values of a record as a JSON object (absent values are left out).
pub fn record_json(columns: &[String], values: &[Option<&str>]) -> String {
    let mut map = serde_json::Map::new();
    for (c, v) in columns.iter().zip(values) {
        if let Some(v) = v {
            map.insert(c.clone(), serde_json::Value::String((*v).to_string()));
        }
    }
    serde_json::Value::Object(map).to_string()
}

/// Rows as a batch of the quarantine table.
pub fn to_batch(rows: &[QuarantinedRow], run_id: i64, now_micros: i64) -> RecordBatch {
    let n = rows.len();
    let s = || StringBuilder::with_capacity(n, n * 16);
    let (mut entity, mut file_name, mut reason, mut detail, mut record, mut source) =
        (s(), s(), s(), s(), s(), s());
    let mut file_id = Int64Builder::with_capacity(n);
    let mut line = Int64Builder::with_capacity(n);
    let mut run = Int64Builder::with_capacity(n);
    let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in rows {
        entity.append_value(&r.entity);
        file_id.append_value(r.file_id);
        file_name.append_value(&r.file_name);
        line.append_value(r.line);
        reason.append_value(r.reason.as_str());
        detail.append_value(&r.detail);
        record.append_value(&r.record);
        let (r_run, r_at) = r.origin.unwrap_or((run_id, now_micros));
        run.append_value(r_run);
        at.append_value(r_at);
        source.append_value(&r.source);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(entity.finish()),
        Arc::new(file_id.finish()),
        Arc::new(file_name.finish()),
        Arc::new(line.finish()),
        Arc::new(reason.finish()),
        Arc::new(detail.finish()),
        Arc::new(record.finish()),
        Arc::new(run.finish()),
        Arc::new(at.finish()),
        Arc::new(source.finish()),
    ];
    RecordBatch::try_new(QUARANTINE.clone(), cols).expect("builders match the quarantine schema")
}

/// Read quarantine rows back from batches of the quarantine table.
pub fn from_batches(batches: &[RecordBatch]) -> Result<Vec<QuarantinedRow>, String> {
    use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
    let mut out = Vec::new();
    for b in batches {
        let s = |n: &str| -> Result<StringArray, String> {
            let c = b
                .column_by_name(n)
                .ok_or(format!("quarantine.{n} is missing"))?;
            let c =
                datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8)
                    .map_err(|e| e.to_string())?;
            c.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or(format!("quarantine.{n} is not text"))
        };
        let i = |n: &str| -> Result<Int64Array, String> {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .ok_or(format!("quarantine.{n} is missing"))
        };
        let (entity, file_name, reason, detail, record, source) = (
            s("entity")?,
            s("file_name")?,
            s("reason")?,
            s("detail")?,
            s("record")?,
            s("source")?,
        );
        let (file_id, line, run) = (i("file_id")?, i("line")?, i("run_id")?);
        let at = b
            .column_by_name("quarantined_at")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .cloned()
            })
            .ok_or("quarantine.quarantined_at is missing")?;
        for r in 0..b.num_rows() {
            out.push(QuarantinedRow {
                entity: entity.value(r).to_string(),
                source: source.value(r).to_string(),
                file_id: file_id.value(r),
                file_name: file_name.value(r).to_string(),
                line: line.value(r),
                reason: reason.value(r).parse().unwrap_or(ReasonCode::BadValue),
                detail: detail.value(r).to_string(),
                record: record.value(r).to_string(),
                origin: Some((run.value(r), if at.is_valid(r) { at.value(r) } else { 0 })),
            });
        }
    }
    out.sort_by_key(|r| (r.file_id, r.line));
    Ok(out)
}
