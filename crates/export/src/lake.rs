//! The lake side of the export: which Delta tables there are, their columns and keys, and
//! what changed in a table since the version last exported (read from the Delta log).

use crate::{ExportError, Result};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add};
use shoplake_storage::Zone;
use shoplake_tables::{TableId, Tables};
use std::collections::HashSet;

/// One Delta table of the lake, opened at the version being exported.
pub struct LakeTable {
    pub name: String,
    pub table: DeltaTable,
    pub version: i64,
    /// The Delta table's id: a table deleted and created again gets a new one.
    pub table_uid: String,
    /// Columns as the export writes them (types normalised, see `sql::canonical`).
    pub schema: SchemaRef,
    /// Key columns: the primary key in the target, empty when none is known.
    pub key: Vec<String>,
}

/// What the target needs to catch up with the lake.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The target holds this version already.
    Unchanged,
    /// Only appends since the exported version: these data files hold the new rows.
    Append { files: Vec<Add>, since: i64 },
    /// Replace the table's rows whole, for the reason given.
    Replace { reason: String },
}

impl Change {
    pub fn mode(&self) -> &'static str {
        match self {
            Change::Unchanged => "unchanged",
            Change::Append { .. } => "append",
            Change::Replace { .. } => "replace",
        }
    }
}

/// What the target recorded about a table at its last export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub table_uid: String,
    pub version: i64,
    pub rows: i64,
}

/// Every Delta table under `processed/` and `marts/`, in that order and by name.
pub async fn list(tables: &Tables) -> Result<Vec<TableId>> {
    let mut out = Vec::new();
    for zone in [Zone::Processed, Zone::Marts] {
        for name in tables.list(zone).await? {
            let id = TableId { zone, name };
            if tables.exists(&id).await? {
                out.push(id);
            }
        }
    }
    Ok(out)
}

impl LakeTable {
    /// Open a table at its latest version; `None` when it has no commit yet.
    pub async fn open(tables: &Tables, id: TableId) -> Result<Option<LakeTable>> {
        let Some(table) = tables.open(&id).await? else {
            return Ok(None);
        };
        let name = id.display();
        let delta = |e: deltalake::DeltaTableError| ExportError::Lake(format!("{name}: {e}"));
        let state = table.snapshot().map_err(delta)?;
        let table_uid = state.metadata().id().to_string();
        let raw = state.snapshot().arrow_schema();
        let mut fields = Vec::with_capacity(raw.fields().len());
        for f in raw.fields() {
            let ty = crate::sql::canonical(f.data_type()).ok_or_else(|| {
                ExportError::Usage(format!(
                    "table {name}, column {}: type {} has no SQL counterpart in the export; \
                     export the other tables with --table NAME",
                    f.name(),
                    f.data_type()
                ))
            })?;
            fields.push(f.as_ref().clone().with_data_type(ty));
        }
        let schema = SchemaRef::new(Schema::new(fields));
        let key = key_columns(&name, &schema);
        let version = table.version().map_or(0, |v| v as i64);
        Ok(Some(LakeTable {
            name,
            table,
            version,
            table_uid,
            schema,
            key,
        }))
    }

    /// Decide how to bring a target that holds `exported` up to this version.
    pub async fn change_since(&self, exported: Option<&Exported>) -> Result<Change> {
        let replace = |reason: &str| {
            Ok(Change::Replace {
                reason: reason.to_string(),
            })
        };
        let Some(ex) = exported else {
            return replace("first export");
        };
        if ex.table_uid != self.table_uid {
            return replace("the lake table was created anew");
        }
        if ex.version == self.version {
            return Ok(Change::Unchanged);
        }
        if ex.version > self.version {
            return replace("the target holds a newer version than the lake");
        }
        let store = self.table.log_store();
        let mut added: Vec<Add> = Vec::new();
        for v in (ex.version + 1)..=self.version {
            let Some(bytes) = store
                .read_commit_entry(v as u64)
                .await
                .map_err(|e| ExportError::Lake(format!("{} version {v}: {e}", self.name)))?
            else {
                return replace(&format!("the log of version {v} was cleaned up"));
            };
            let actions = deltalake::logstore::get_actions(v as u64, &bytes)
                .map_err(|e| ExportError::Lake(format!("{} version {v}: {e}", self.name)))?;
            for action in actions {
                match action {
                    Action::Add(a) if a.data_change => added.push(a),
                    Action::Remove(r) if r.data_change => {
                        return replace(&format!("version {v} removed or rewrote rows"));
                    }
                    // Compaction moves rows without changing them: harmless unless it moved
                    // rows we are about to read from their new-since-export file.
                    Action::Remove(r) if added.iter().any(|a| a.path == r.path) => {
                        return replace(&format!("version {v} compacted new files"));
                    }
                    Action::Cdc(_) => {
                        return replace(&format!("version {v} changed rows"));
                    }
                    _ => {}
                }
            }
        }
        let mut seen = HashSet::new();
        added.retain(|a| seen.insert(a.path.clone()));
        Ok(Change::Append {
            files: added,
            since: ex.version,
        })
    }

    /// Stream the rows to load: all of them, or those in `files`.
    pub async fn scan(&self, files: Option<&[Add]>) -> Result<SendableRecordBatchStream> {
        let engine = |e: datafusion::error::DataFusionError| {
            ExportError::Lake(format!("reading {}: {e}", self.name))
        };
        let mut builder = self.table.table_provider();
        if let Some(files) = files {
            builder = builder.with_adds(files.iter().cloned());
        }
        let provider = builder.await.map_err(engine)?;
        let ctx = datafusion::prelude::SessionContext::new();
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let df = ctx
            .read_table(provider)
            .and_then(|df| df.select_columns(&columns))
            .map_err(engine)?;
        df.execute_stream().await.map_err(engine)
    }
}

/// The primary key of a table in the target. Dimensions: their surrogate key, the first column
/// (`dim_customer` keeps history, so its key is the surrogate `customer_key`, not the
/// customer's id). `fact_sales`: the dedupe key, one per sale line. Marts: their grain
/// (customer + month; store + sales person + month). Other tables: none.
pub fn key_columns(table: &str, schema: &Schema) -> Vec<String> {
    let has = |c: &str| schema.column_with_name(c).is_some();
    let first = |candidates: &[&str]| candidates.iter().find(|c| has(c)).map(|c| c.to_string());
    let month = || -> Option<Vec<String>> {
        if let Some(c) = first(&["year_month", "month_start", "month_key"]) {
            Some(vec![c])
        } else if has("month_of_year") && has("month") {
            // The marts: `month` is the period (`2025-03`), `month_of_year` its number.
            Some(vec!["month".into()])
        } else if has("year") && has("month") {
            Some(vec!["year".into(), "month".into()])
        } else {
            first(&["month"]).map(|c| vec![c])
        }
    };
    let grain = |parts: &[&[&str]]| -> Vec<String> {
        let mut key = Vec::new();
        for candidates in parts {
            match first(candidates) {
                Some(c) => key.push(c),
                None => return Vec::new(),
            }
        }
        match month() {
            Some(m) => key.into_iter().chain(m).collect(),
            None => Vec::new(),
        }
    };
    match table {
        "fact_sales" if has("dedupe_key") => vec!["dedupe_key".into()],
        t if t.starts_with("dim_") || t == "fx_rates" => schema
            .fields()
            .first()
            .filter(|f| f.name().ends_with("_key"))
            .map(|f| vec![f.name().clone()])
            .unwrap_or_default(),
        "mart_customer_monthly" => grain(&[&["customer_key", "customer_id"]]),
        "mart_sales_team_monthly" => grain(&[
            &["store_key", "store_id"],
            &["sales_person_key", "sales_person_id"],
        ]),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn schema(cols: &[&str]) -> Schema {
        Schema::new(
            cols.iter()
                .map(|c| Field::new(*c, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn keys_of_the_star_schema_and_marts() {
        let s = |c: &[&str]| schema(c);
        assert_eq!(
            key_columns("dim_customer", &s(&["customer_key", "customer_id"])),
            ["customer_key"]
        );
        assert_eq!(
            key_columns("dim_date", &s(&["date_key", "date"])),
            ["date_key"]
        );
        assert_eq!(
            key_columns("fact_sales", &s(&["transaction_id", "dedupe_key"])),
            ["dedupe_key"]
        );
        assert_eq!(
            key_columns(
                "mart_customer_monthly",
                &s(&["customer_id", "year", "month", "total"])
            ),
            ["customer_id", "year", "month"]
        );
        assert_eq!(
            key_columns(
                "mart_sales_team_monthly",
                &s(&["store_id", "sales_person_id", "year_month", "rank"])
            ),
            ["store_id", "sales_person_id", "year_month"]
        );
        assert_eq!(
            key_columns(
                "mart_customer_monthly",
                &s(&["customer_id", "year", "month_of_year", "month"])
            ),
            ["customer_id", "month"]
        );
        assert!(key_columns("mart_sales_team_monthly", &s(&["store_id", "month"])).is_empty());
        assert!(key_columns("something_else", &s(&["a_key"])).is_empty());
    }

    async fn write(tables: &Tables, values: &[i64], mode: shoplake_tables::WriteMode) -> i64 {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::record_batch::RecordBatch;
        let schema = SchemaRef::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap();
        tables
            .write_batches(&TableId::processed("t"), schema, vec![batch], &[], mode, 1)
            .await
            .unwrap()
    }

    async fn rows(t: &LakeTable, files: Option<&[Add]>) -> Vec<i64> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        use futures::TryStreamExt;
        let batches: Vec<_> = t.scan(files).await.unwrap().try_collect().await.unwrap();
        let mut out: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn appends_are_read_from_the_log_and_rewrites_replace() {
        use shoplake_tables::WriteMode::{Append, Overwrite};
        let dir = tempfile::tempdir().unwrap();
        let lake = shoplake_storage::Lake::open(dir.path().to_str().unwrap()).unwrap();
        let tables = Tables::new(lake);
        write(&tables, &[1, 2], Append).await;
        let open = || async {
            LakeTable::open(&tables, TableId::processed("t"))
                .await
                .unwrap()
                .unwrap()
        };
        let t = open().await;
        let first = Exported {
            table_uid: t.table_uid.clone(),
            version: t.version,
            rows: 2,
        };
        assert_eq!(
            t.change_since(Some(&first)).await.unwrap(),
            Change::Unchanged
        );
        assert!(matches!(
            t.change_since(None).await.unwrap(),
            Change::Replace { .. }
        ));

        // Two appends: only their files, whose rows are the new ones.
        write(&tables, &[3], Append).await;
        write(&tables, &[4, 5], Append).await;
        let t = open().await;
        let Change::Append { files, since } = t.change_since(Some(&first)).await.unwrap() else {
            panic!("appends only")
        };
        assert_eq!((files.len(), since), (2, first.version));
        assert_eq!(rows(&t, Some(&files)).await, [3, 4, 5]);
        assert_eq!(rows(&t, None).await, [1, 2, 3, 4, 5]);

        // A rewrite since the exported version: replace.
        write(&tables, &[9], Overwrite).await;
        let t = open().await;
        assert!(matches!(
            t.change_since(Some(&first)).await.unwrap(),
            Change::Replace { reason } if reason.contains("removed or rewrote")
        ));
        // Another table under the same name (a new Delta id): replace.
        let other = Exported {
            table_uid: "another".into(),
            ..first
        };
        assert!(matches!(
            t.change_since(Some(&other)).await.unwrap(),
            Change::Replace { reason } if reason.contains("anew")
        ));
    }
}
