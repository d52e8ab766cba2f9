//! Refreshing the marts, incrementally.
//!
//! Every refresh commit of a mart records, in its Delta commit metadata (`shoplake.marts`), the
//! model version, the rules it applied and the versions of `fact_sales` and of the dimensions it
//! was computed from. The next refresh reads that state and recomputes only the months that can
//! have changed since:
//!
//! - months whose `fact_sales` partitions were added to or removed from in the commits since
//!   (read from the partition values of the `add`/`remove` actions in the log), and
//! - months holding sales of a dimension member whose shown attributes changed (the current rows
//!   of the dimension then and now are compared).
//!
//! Those months are replaced in ONE Delta commit (`replaceWhere month IN (...)`), computed from
//! the tables pinned at the versions recorded with it, so the mart always equals a full rebuild
//! over those versions. A refresh that fails commits nothing; the next one starts from the last
//! recorded state and catches up. When the state is missing or cannot be trusted (a mart never
//! built, another model version, changed rules, a vanished log, a schema change, an unreadable
//! older dimension version) the mart is rebuilt in full, and the reason is reported.

use crate::deltalog;
use crate::model::{DimUse, MODEL_VERSION, Mart, PARTITION, Rules, YearMonth};
use crate::{MartError, Result};
use datafusion::arrow::array::{Array, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shoplake_core::{Entity, MartsConfig};
use shoplake_tables::{TableId, Tables, WriteMode, WriteOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Commit metadata key holding what a mart was built from (model, rules, source versions).
pub const STATE_KEY: &str = "shoplake.marts";

/// How much to recompute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Only the months changed since the last refresh (a full rebuild when that is unknown).
    Incremental,
    /// Every month.
    Full,
}

/// What a refresh did to one mart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Built from the current versions already.
    UpToDate,
    /// The sources moved on without changing any month of this mart: only the new source
    /// versions were recorded (an empty commit).
    NoChange,
    /// These months were recomputed and replaced.
    Incremental { months: Vec<YearMonth> },
    /// Rebuilt in full, and why.
    Full { reason: String },
    /// Nothing to build from yet.
    Skipped { reason: String },
}

/// The outcome of refreshing one mart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MartRefresh {
    pub mart: Mart,
    pub action: Action,
    /// The mart's version after the refresh.
    pub version: Option<i64>,
    /// Rows written.
    pub rows: u64,
}

/// What a mart was built from, recorded with each of its commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MartState {
    model: i64,
    rules: serde_json::Value,
    /// Source table -> Delta version (-1: the table did not exist).
    sources: BTreeMap<String, i64>,
}

/// The marts of a lake.
pub struct Marts {
    tables: Tables,
    rules: Rules,
    memory_limit: usize,
}

fn entity_of(dim_table: &str) -> Entity {
    match dim_table {
        "dim_customer" => Entity::Customers,
        "dim_sales_person" => Entity::SalesTeam,
        "dim_store" => Entity::Stores,
        "dim_product" => Entity::Products,
        other => unreachable!("the marts read no dimension {other}"),
    }
}

impl Marts {
    /// `memory_limit` bounds the query engine (aggregations spill to disk beyond it).
    pub fn new(tables: Tables, config: &MartsConfig, memory_limit: usize) -> Result<Marts> {
        Ok(Marts {
            tables,
            rules: Rules::from_config(config)?,
            memory_limit,
        })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Refresh every mart. `run_id` tags the commits (the run whose data they reflect).
    pub async fn refresh(&self, mode: RefreshMode, run_id: i64) -> Result<Vec<MartRefresh>> {
        let mut out = Vec::new();
        for mart in Mart::ALL {
            out.push(self.refresh_one(mart, mode, run_id).await?);
        }
        Ok(out)
    }

    fn session(&self) -> Result<SessionContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(self.memory_limit)))
            .build_arc()?;
        Ok(shoplake_tables::session(SessionConfig::new(), runtime))
    }

    /// Versions of the tables a mart reads, now (-1: absent).
    async fn source_versions(&self, mart: Mart) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        let fact = TableId::processed("fact_sales");
        out.insert(
            "fact_sales".to_string(),
            self.tables.version(&fact).await?.unwrap_or(-1),
        );
        for d in mart.dims() {
            let v = self
                .tables
                .version(&TableId::processed(d.table))
                .await?
                .unwrap_or(-1);
            out.insert(d.table.to_string(), v);
        }
        Ok(out)
    }

    /// The state recorded by the mart's last refresh commit (maintenance commits that do not
    /// change data, such as OPTIMIZE and VACUUM, are looked through).
    async fn recorded_state(&self, mart: Mart) -> Result<std::result::Result<MartState, String>> {
        let id = TableId::marts(mart.name());
        let Some(latest) = self.tables.version(&id).await? else {
            return Ok(Err("it was never built".to_string()));
        };
        let mut version = latest;
        while version >= 0 {
            let Some(info) = deltalog::commit_info(self.tables.lake(), &id, version).await? else {
                return Ok(Err(format!(
                    "commit {version} of the mart is no longer in its log"
                )));
            };
            if let Some(state) = info.get(STATE_KEY) {
                return Ok(serde_json::from_value(state.clone())
                    .map_err(|e| format!("its recorded state is unreadable ({e})")));
            }
            let op = info.get("operation").and_then(|o| o.as_str()).unwrap_or("");
            if !matches!(op, "OPTIMIZE" | "VACUUM START" | "VACUUM END") {
                return Ok(Err(format!(
                    "its last commit ({}) was not a refresh",
                    if op.is_empty() {
                        "unknown operation"
                    } else {
                        op
                    }
                )));
            }
            version -= 1;
        }
        Ok(Err("no refresh commit found in its log".to_string()))
    }

    async fn refresh_one(&self, mart: Mart, mode: RefreshMode, run_id: i64) -> Result<MartRefresh> {
        let now = self.source_versions(mart).await?;
        if now["fact_sales"] < 0 {
            return Ok(MartRefresh {
                mart,
                action: Action::Skipped {
                    reason: "fact_sales does not exist yet; run `shoplake run` first".into(),
                },
                version: self.tables.version(&TableId::marts(mart.name())).await?,
                rows: 0,
            });
        }
        let state = MartState {
            model: MODEL_VERSION,
            rules: self.rules.fingerprint(mart),
            sources: now.clone(),
        };
        let ctx = self.session()?;
        self.register_sources(&ctx, &now).await?;

        let plan = match mode {
            RefreshMode::Full => Err("a full rebuild was asked for".to_string()),
            RefreshMode::Incremental => self.plan_incremental(&ctx, mart, &state).await?,
        };
        match plan {
            Ok(None) => Ok(MartRefresh {
                mart,
                action: Action::UpToDate,
                version: self.tables.version(&TableId::marts(mart.name())).await?,
                rows: 0,
            }),
            Ok(Some(months)) if months.is_empty() => {
                let version = self
                    .write(&ctx, mart, Some(&months), &state, run_id)
                    .await?
                    .0;
                Ok(MartRefresh {
                    mart,
                    action: Action::NoChange,
                    version: Some(version),
                    rows: 0,
                })
            }
            Ok(Some(months)) => {
                let (version, rows) = self
                    .write(&ctx, mart, Some(&months), &state, run_id)
                    .await?;
                Ok(MartRefresh {
                    mart,
                    action: Action::Incremental {
                        months: months.into_iter().collect(),
                    },
                    version: Some(version),
                    rows,
                })
            }
            Err(reason) => {
                tracing::info!(mart = mart.name(), %reason, "rebuilding the mart in full");
                let (version, rows) = self.write(&ctx, mart, None, &state, run_id).await?;
                Ok(MartRefresh {
                    mart,
                    action: Action::Full { reason },
                    version: Some(version),
                    rows,
                })
            }
        }
    }

    /// The months to recompute: `Ok(None)` when up to date, `Err(reason)` to rebuild in full.
    async fn plan_incremental(
        &self,
        ctx: &SessionContext,
        mart: Mart,
        target: &MartState,
    ) -> Result<std::result::Result<Option<BTreeSet<YearMonth>>, String>> {
        let recorded = match self.recorded_state(mart).await? {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        if recorded.model != target.model {
            return Ok(Err(format!(
                "it was built by model version {} (now {})",
                recorded.model, target.model
            )));
        }
        if recorded.rules != target.rules {
            return Ok(Err(format!(
                "the rules changed ({} -> {})",
                recorded.rules, target.rules
            )));
        }
        if recorded.sources == target.sources {
            return Ok(Ok(None));
        }
        let mut months = BTreeSet::new();
        let before = recorded.sources.get("fact_sales").copied().unwrap_or(-1);
        let after = target.sources["fact_sales"];
        if after < before {
            return Ok(Err(format!(
                "fact_sales is at version {after}, older than the version {before} the mart was built from (the table was re-created)"
            )));
        }
        let baseline = self.fact_layout(before).await;
        match deltalog::touched_months(
            self.tables.lake(),
            &TableId::processed("fact_sales"),
            before,
            after,
            baseline.as_ref(),
        )
        .await?
        {
            Ok(m) => months.extend(m),
            Err(reason) => return Ok(Err(reason)),
        }
        for dim in mart.dims() {
            let before = recorded.sources.get(dim.table).copied().unwrap_or(-1);
            let after = target.sources[dim.table];
            if before == after {
                continue;
            }
            if after < before {
                return Ok(Err(format!(
                    "{} is at version {after}, older than the version {before} the mart was built from",
                    dim.table
                )));
            }
            match self.dim_changed_months(ctx, dim, before).await {
                Ok(Ok(m)) => months.extend(m),
                Ok(Err(reason)) => return Ok(Err(reason)),
                Err(e) => {
                    return Ok(Err(format!(
                        "{} version {before} cannot be compared with the current one ({e})",
                        dim.table
                    )));
                }
            }
        }
        Ok(Ok(Some(months)))
    }

    /// Partition columns and schema of `fact_sales` at a version, `None` when unreadable.
    async fn fact_layout(&self, version: i64) -> Option<deltalog::Layout> {
        if version < 0 {
            return None;
        }
        let table = self
            .tables
            .open_at(&TableId::processed("fact_sales"), version)
            .await
            .ok()?;
        let snapshot = table.snapshot().ok()?;
        let partitions = snapshot.metadata().partition_columns().to_vec();
        let schema = serde_json::to_value(snapshot.schema().as_ref()).ok()?;
        Some((partitions, schema))
    }

    /// Register `fact_sales` and the mart's dimensions at the given versions (an absent
    /// dimension as an empty table of its schema).
    async fn register_sources(
        &self,
        ctx: &SessionContext,
        versions: &BTreeMap<String, i64>,
    ) -> Result<()> {
        for (name, &v) in versions {
            let id = TableId::processed(name);
            if v >= 0 {
                let p = self
                    .tables
                    .provider(&id, Some(v))
                    .await?
                    .ok_or_else(|| MartError::Internal(format!("{name} vanished")))?;
                ctx.register_table(name.as_str(), p)?;
            } else {
                ctx.register_table(name.as_str(), empty_dim(name))?;
            }
        }
        Ok(())
    }

    /// Months of `fact_sales` holding members of `dim` whose shown attributes differ between
    /// the dimension's current rows at version `before` and now.
    async fn dim_changed_months(
        &self,
        ctx: &SessionContext,
        dim: &DimUse,
        before: i64,
    ) -> Result<std::result::Result<BTreeSet<YearMonth>, String>> {
        let old_name = format!("__before_{}", dim.table);
        let old = if before >= 0 {
            self.tables
                .provider(&TableId::processed(dim.table), Some(before))
                .await?
                .ok_or_else(|| MartError::Internal(format!("{} vanished", dim.table)))?
        } else {
            empty_dim(dim.table)
        };
        let old_cols: BTreeSet<String> = old
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let new_cols: BTreeSet<String> = ctx
            .table_provider(dim.table)
            .await?
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let attrs: Vec<&str> = dim
            .attributes
            .iter()
            .copied()
            .filter(|a| new_cols.contains(*a))
            .collect();
        if attrs.iter().any(|a| !old_cols.contains(*a)) {
            return Ok(Err(format!("the columns of {} changed", dim.table)));
        }
        ctx.register_table(old_name.as_str(), old)?;
        let cols = attrs.join(", ");
        let side = |t: &str| {
            format!(
                "SELECT CAST({key} AS VARCHAR) AS k, {cols} FROM {t} WHERE is_current",
                key = dim.key
            )
        };
        let (new, old) = (side(dim.table), side(&old_name));
        let sql = format!(
            "SELECT DISTINCT CAST(year AS INT) AS y, CAST(month AS INT) AS m FROM fact_sales
             WHERE {fk} IN (SELECT k FROM ({new} EXCEPT {old}) UNION ALL SELECT k FROM ({old} EXCEPT {new}))",
            fk = dim.fact_key
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        ctx.deregister_table(old_name.as_str())?;
        let mut months = BTreeSet::new();
        for b in &batches {
            let ys = int32(b, 0)?;
            let ms = int32(b, 1)?;
            for i in 0..b.num_rows() {
                if let Some(ym) = YearMonth::new(ys.value(i), ms.value(i) as u32) {
                    months.insert(ym);
                }
            }
        }
        Ok(Ok(months))
    }

    /// Compute the mart (for `months`, or all of it) and commit it in one Delta commit:
    /// replacing those months' partitions, or the whole table. Returns (version, rows).
    async fn write(
        &self,
        ctx: &SessionContext,
        mart: Mart,
        months: Option<&BTreeSet<YearMonth>>,
        state: &MartState,
        run_id: i64,
    ) -> Result<(i64, u64)> {
        let id = TableId::marts(mart.name());
        let schema = mart.schema();
        let has_phone = ctx
            .table_provider("dim_customer")
            .await
            .map(|p| p.schema().field_with_name("phone_masked").is_ok())
            .unwrap_or(false);
        let options = WriteOptions {
            replace_where: months
                .filter(|m| !m.is_empty())
                .map(crate::model::mart_month_predicate),
            metadata: vec![(
                STATE_KEY.to_string(),
                serde_json::to_value(state).map_err(|e| MartError::Internal(e.to_string()))?,
            )],
            operation: Some("marts_refresh"),
        };
        let mode = match months {
            Some(m) if m.is_empty() => WriteMode::Append,
            _ => WriteMode::Overwrite,
        };
        let (tx, rx) = mpsc::channel(4);
        let writer = self.tables.write_stream_with(
            &id,
            schema.clone(),
            rx,
            &[PARTITION],
            mode,
            run_id,
            options,
        );
        if mode == WriteMode::Append {
            // Nothing to recompute: an empty commit that records the new source versions.
            drop(tx);
            return Ok((writer.await?, 0));
        }
        let sql = mart.sql(&self.rules, months, has_phone);
        let (rows, version) = tokio::join!(produce(ctx, sql, schema, tx), writer);
        // A failed query is the cause of a failed write; otherwise the writer's error stands.
        let rows = rows?;
        Ok((version?, rows))
    }
}

/// Run the mart's SQL and stream its batches to the writer. An error is passed on as an `Err`
/// batch, which aborts the write: nothing is committed.
async fn produce(
    ctx: &SessionContext,
    sql: String,
    schema: SchemaRef,
    tx: mpsc::Sender<shoplake_tables::BatchResult>,
) -> Result<u64> {
    let mut stream = match ctx.sql(&sql).await {
        Ok(df) => df.execute_stream().await,
        Err(e) => Err(e),
    };
    let mut rows = 0u64;
    loop {
        let next = match &mut stream {
            Ok(s) => s.next().await,
            Err(_) => None,
        };
        let batch = match (&stream, next) {
            (Err(e), _) => Err(datafusion::error::DataFusionError::Execution(e.to_string())),
            (Ok(_), None) => return Ok(rows),
            (Ok(_), Some(b)) => b.and_then(|b| conform(b, &schema).map_err(Into::into)),
        };
        match batch {
            Ok(b) => {
                rows += b.num_rows() as u64;
                if tx.send(Ok(b)).await.is_err() {
                    return Ok(rows);
                }
                // Tests kill the process here, in the middle of a refresh.
                if std::env::var("SHOPLAKE_FAILPOINT").is_ok_and(|v| v == "marts-mid-write") {
                    eprintln!("failpoint marts-mid-write: aborting");
                    std::process::abort();
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(datafusion::error::DataFusionError::Execution(
                        e.to_string(),
                    )))
                    .await;
                return Err(MartError::Engine(Box::new(e)));
            }
        }
    }
}

fn int32(b: &RecordBatch, i: usize) -> Result<&Int32Array> {
    b.column(i)
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| MartError::Internal("expected an Int32 column".into()))
}

fn empty_dim(table: &str) -> Arc<dyn datafusion::catalog::TableProvider> {
    let schema = shoplake_etl::schema::dim_schema(entity_of(table));
    Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("an empty table of a valid schema"))
}

/// Cast a computed batch to the mart's declared column types (the engine may produce string
/// views or other equivalent types).
fn conform(
    batch: RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut cols = Vec::with_capacity(schema.fields().len());
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        if col.data_type() == field.data_type() {
            cols.push(col.clone());
        } else {
            cols.push(datafusion::arrow::compute::cast(
                col.as_ref(),
                field.data_type(),
            )?);
        }
    }
    RecordBatch::try_new(schema.clone(), cols)
}
