//! One run of the pipeline: recover an interrupted run, crawl what is new, load reference data
//! into the dimensions, stream sales into `fact_sales`, then commit the dimensions, `dim_date`
//! and the quarantine, and record every file's outcome in the ledger.
//!
//! Commit order and recovery: each table write is one Delta commit tagged with the run id. The
//! versions of all tables are recorded when the run starts; a run that fails, or whose process
//! dies, is rolled back (each table restored to its recorded version) before anything else
//! happens, and its files stay pending. So running again gives exactly the result of an
//! uninterrupted run.

use crate::convert::{Rejection, canonical, parse_month};
use crate::dedupe::{self, Bloom, Held, LakeKeys, RunKeys};
use crate::dim::{Applied, Dim, days_since_epoch, natural_key};
use crate::pii::PiiKey;
use crate::quality::{self, Evaluation, FileFacts, QualityResult, RecheckCounts};
use crate::quarantine::{QuarantinedRow, record_json};
use crate::sales::{Lookups, Outcome, SalesTransform, SourceRules};
use crate::schema::{DIM_DATE, FACT_PARTITIONS, FACT_SALES, QUARANTINE, dim_table};
use crate::{EtlError, Result};
use chrono::{Datelike, NaiveDate, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use futures::StreamExt;
use shoplake_catalog::crawl::{self, FileSchema, Mapping};
use shoplake_catalog::ledger::{CatalogEntry, FileOutcome, FileRecord, FileStatus, Ledger};
use shoplake_catalog::scan::{self, ScanError, ScanSink};
use shoplake_core::values::{self, RATE_SCALE};
use shoplake_core::{Config, Entity, ReasonCode};
use shoplake_storage::Lake;
use shoplake_tables::{BatchResult, PartitionedAppend, TableId, Tables, WriteMode};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

mod replay;
pub use replay::ReplayReport;

/// How a long step reports progress (the CLI draws bars; tests stay quiet).
pub trait Progress: Send + Sync {
    /// A step starts; `total` is in bytes (0 when unknown).
    fn stage(&self, name: &str, total: u64);
    /// A step counted in rows starts.
    fn stage_rows(&self, name: &str, total: u64) {
        self.stage(name, total)
    }
    fn advance(&self, n: u64);
    fn done(&self);
    /// A line worth telling the user.
    fn note(&self, message: &str);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn done(&self) {}
    fn note(&self, _: &str) {}
}

/// The outcome of one file, for the run summary.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    pub file_id: i64,
    pub source: String,
    pub name: String,
    pub entity: String,
    pub outcome: FileOutcome,
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    pub run_id: i64,
    pub files: Vec<FileSummary>,
    pub failed: Vec<FileSummary>,
    /// Runs found interrupted and rolled back before this one.
    pub recovered: Vec<i64>,
    /// Tables committed, with their new versions.
    pub commits: Vec<(String, i64)>,
    /// Sales rows loaded against inferred customers / products.
    pub inferred_rows: (u64, u64),
    /// Every data-quality expectation checked, per file (see [`crate::quality`]); failed
    /// `error` ones are why their files are in `failed`.
    pub quality: Vec<QualityResult>,
}

impl RunReport {
    /// The expectations that failed, `error` and `warn`.
    pub fn quality_breaches(&self) -> impl Iterator<Item = &QualityResult> {
        self.quality.iter().filter(|r| !r.passed)
    }

    pub fn totals(&self) -> FileOutcome {
        let mut t = FileOutcome::default();
        for f in &self.files {
            t.rows_in += f.outcome.rows_in;
            t.loaded += f.outcome.loaded;
            t.duplicates += f.outcome.duplicates;
            for (r, n) in &f.outcome.quarantined {
                *t.quarantined.entry(r.clone()).or_default() += n;
            }
        }
        t
    }
}

/// What crawling one file found.
#[derive(Debug, Clone, PartialEq)]
pub struct Crawled {
    pub file_id: i64,
    pub source: String,
    pub name: String,
    pub result: std::result::Result<CrawlInfo, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CrawlInfo {
    pub entity: Entity,
    pub catalog_version: i64,
    pub new_version: bool,
    pub drift: Option<crawl::Drift>,
    pub mapping: Vec<(String, String)>,
    pub unmapped: Vec<String>,
}

/// The reference dimensions a run updates.
#[derive(Clone)]
struct Dims {
    by_entity: BTreeMap<Entity, Dim>,
}

/// Reference entities in load order (everything a sale resolves against).
fn reference_entities() -> impl Iterator<Item = Entity> {
    Entity::ALL.into_iter().filter(|e| *e != Entity::Sales)
}

/// Every table a run may write (for version snapshots and rollback).
fn all_tables() -> Vec<TableId> {
    let mut t: Vec<TableId> = reference_entities()
        .map(|e| TableId::processed(dim_table(e).0))
        .collect();
    t.push(TableId::processed("dim_date"));
    t.push(TableId::processed("fact_sales"));
    t.push(TableId::quarantine());
    t
}

/// The pipeline over one lake.
pub struct Pipeline {
    lake: Lake,
    tables: Tables,
    ledger: Arc<Ledger>,
    config: Config,
    pii: PiiKey,
    state_dir: PathBuf,
}

impl Pipeline {
    pub fn new(
        lake: Lake,
        ledger: Arc<Ledger>,
        config: Config,
        pii: PiiKey,
        state_dir: PathBuf,
    ) -> Pipeline {
        let tables = Tables::new(lake.clone())
            .with_target_file_size(config.pipeline.target_file_mb as u64 * 1024 * 1024);
        Pipeline {
            lake,
            tables,
            ledger,
            config,
            pii,
            state_dir,
        }
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---------------------------------------------------------------- crawl

    /// Crawl every ingested file that has not been crawled yet.
    pub async fn crawl_pending(&self, progress: &dyn Progress) -> Result<Vec<Crawled>> {
        let files = self.ledger.files(&[FileStatus::Ingested])?;
        let mut out = Vec::new();
        if files.is_empty() {
            return Ok(out);
        }
        progress.stage("crawl", files.len() as u64);
        for f in files {
            let result = self.crawl_file(&f).await?;
            if let Err(e) = &result {
                self.ledger.set_failed(f.file_id, e, None)?;
                progress.note(&format!("failed: {e}"));
            }
            out.push(Crawled {
                file_id: f.file_id,
                source: f.source.clone(),
                name: f.name.clone(),
                result,
            });
            progress.advance(1);
        }
        progress.done();
        Ok(out)
    }

    /// Read the head of a raw file (decompressed), up to `limit` bytes, and whether that is all.
    async fn read_head(&self, f: &FileRecord, limit: usize) -> Result<(Vec<u8>, bool)> {
        let reader = self.open_raw(f).await?;
        let name = f.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(limit.min(1 << 20));
            let mut r = reader.take(limit as u64 + 1);
            r.read_to_end(&mut buf).map_err(|e| EtlError::Input {
                path: name,
                message: format!("cannot read: {e}"),
            })?;
            let complete = buf.len() <= limit;
            buf.truncate(limit);
            Ok((buf, complete))
        })
        .await
        .map_err(|e| EtlError::Internal(e.to_string()))?
    }

    /// About how many rows a line-based file holds, for sizing filters: its size over the
    /// bytes per line of its first 256 KB (decompressed; a `.gz` file is taken to be a fifth
    /// of its text, which overstates most), plus a quarter. Without a line break in the
    /// sample, or when it cannot be read (the scan reports that), 40 bytes a row.
    async fn rows_guess(&self, f: &FileRecord) -> u64 {
        let (head, complete) = self.read_head(f, 1 << 18).await.unwrap_or_default();
        let lines = head.iter().filter(|&&b| b == b'\n').count() as u64;
        if complete {
            return lines + 1;
        }
        let mut text_bytes = f.size_bytes.max(0) as u64;
        if f.name.to_ascii_lowercase().ends_with(".gz") {
            text_bytes *= 5;
        }
        let per_row = (head.len() as u64)
            .checked_div(lines)
            .map_or(40, |b| b.max(1));
        text_bytes / per_row * 5 / 4
    }

    /// A reader over a raw file's content (decompressed when it is `.gz`).
    async fn open_raw(&self, f: &FileRecord) -> Result<Box<dyn Read + Send>> {
        let path = object_store::path::Path::from(f.raw_path.as_str());
        let reader = self.lake.open_read(&path).await?;
        Ok(if f.name.to_ascii_lowercase().ends_with(".gz") {
            Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(reader),
            ))
        } else {
            reader
        })
    }

    async fn crawl_file(&self, f: &FileRecord) -> Result<std::result::Result<CrawlInfo, String>> {
        let (sample, complete) = match self.read_head(f, 1 << 20).await {
            Ok(s) => s,
            Err(EtlError::Input { message, .. }) => {
                return Ok(Err(format!("{}: {message}", f.name)));
            }
            Err(e) => return Err(e),
        };
        let config = self.config.sources.get(&f.source);
        let mut inferred = crawl::infer_with(&f.name, &sample, complete, config);
        if !complete
            && matches!(
                inferred,
                Err(crawl::CrawlError::HeaderOnly { .. } | crawl::CrawlError::Empty { .. })
            )
        {
            // The first record did not fit in the sample: look further before judging the file.
            let (bigger, whole) = self.read_head(f, 16 << 20).await?;
            inferred = crawl::infer_with(&f.name, &bigger, whole, config);
        }
        let schema = match inferred {
            Ok(s) => s,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mapping = match crawl::propose_mapping(
            &f.source,
            &f.name,
            &schema,
            self.config.sources.get(&f.source),
        ) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let schema_json =
            serde_json::to_string(&schema).map_err(|e| EtlError::Internal(e.to_string()))?;
        let mapping_json =
            serde_json::to_string(&mapping).map_err(|e| EtlError::Internal(e.to_string()))?;
        let latest = self.ledger.latest_catalog(&f.source)?;
        let mut drift = None;
        let (version, new_version) = match &latest {
            Some(l) if l.mapping_json == mapping_json && same_shape(&l.schema_json, &schema) => {
                (l.version, false)
            }
            _ => {
                if let Some(l) = &latest
                    && let Ok(prev) = serde_json::from_str::<FileSchema>(&l.schema_json)
                {
                    let d = crawl::drift(&prev, &schema);
                    if !d.is_empty() {
                        drift = Some(d);
                    }
                }
                let drift_json = drift
                    .as_ref()
                    .map(|d| serde_json::to_string(d).unwrap_or_default());
                let v = self.ledger.add_catalog_version(
                    &f.source,
                    mapping.entity.as_str(),
                    f.file_id,
                    &schema_json,
                    &mapping_json,
                    drift_json.as_deref(),
                )?;
                (v, true)
            }
        };
        self.ledger
            .set_crawled(f.file_id, mapping.entity.as_str(), version)?;
        Ok(Ok(CrawlInfo {
            entity: mapping.entity,
            catalog_version: version,
            new_version,
            drift,
            mapping: mapping.columns.clone(),
            unmapped: mapping.unmapped.clone(),
        }))
    }

    // ---------------------------------------------------------------- run

    /// Process every pending file. See the module docs for the guarantees.
    pub async fn run(&self, progress: &dyn Progress) -> Result<RunReport> {
        let run = self.begin_run("manual", progress).await?;
        match self.load_pending(&run, progress).await {
            Ok(report) => Ok(report),
            Err(e) => {
                self.ledger.fail_run(run.run_id, &e.to_string())?;
                Err(e)
            }
        }
    }

    /// Start a run: take the lake's run lock, roll back runs a dead process left open, and
    /// record the run (`kind` says what started it) with the table versions it starts from.
    pub async fn begin_run(&self, kind: &str, progress: &dyn Progress) -> Result<RunStart> {
        let problems = quality::problems(&self.config);
        if !problems.is_empty() {
            return Err(EtlError::Input {
                path: "shoplake.toml".into(),
                message: format!(
                    "invalid quality expectations (fix them and run again):\n  - {}",
                    problems.join("\n  - ")
                ),
            });
        }
        let lock = RunLock::acquire(&self.state_dir)?;
        let recovered = self.recover(progress).await?;
        let versions = self.table_versions().await?;
        let run_id = self.ledger.start_run(kind, &versions)?;
        Ok(RunStart {
            run_id,
            recovered,
            versions,
            _lock: lock,
        })
    }

    /// Crawl and load every pending file in `run` (see [`Pipeline::load_crawled`]).
    pub async fn load_pending(&self, run: &RunStart, progress: &dyn Progress) -> Result<RunReport> {
        let crawled = match self.crawl_pending(progress).await {
            Ok(c) => c,
            Err(e) => {
                self.rollback(run.run_id, &run.versions).await?;
                return Err(e);
            }
        };
        self.load_crawled(run, crawled, progress).await
    }

    /// Load every crawled file in `run`; `crawled` holds this run's crawl results (its files
    /// that failed to crawl are reported as failed). On an error every table is restored to
    /// the version the run began from and the run stays open: the caller tries again (the
    /// error is [`EtlError::is_transient`]) or marks it failed with [`Ledger::fail_run`].
    pub async fn load_crawled(
        &self,
        run: &RunStart,
        crawled: Vec<Crawled>,
        progress: &dyn Progress,
    ) -> Result<RunReport> {
        failpoint("after-start");
        let result = async {
            let pending = self.ledger.files(&[FileStatus::Crawled])?;
            let mut report = self.run_inner(run.run_id, pending, progress).await?;
            report.recovered = run.recovered.clone();
            for c in crawled {
                if let Err(error) = c.result {
                    report.failed.push(FileSummary {
                        file_id: c.file_id,
                        source: c.source,
                        name: c.name,
                        entity: String::new(),
                        outcome: FileOutcome {
                            file_id: c.file_id,
                            ..Default::default()
                        },
                        error: Some(error),
                    });
                }
            }
            Ok(report)
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(run_id = run.run_id, error = %e, "run failed; rolling back");
            self.rollback(run.run_id, &run.versions).await?;
        }
        result
    }

    async fn table_versions(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for t in all_tables() {
            if let Some(v) = self.tables.version(&t).await? {
                out.insert(table_key(&t), v);
            }
        }
        Ok(out)
    }

    /// Roll back runs whose process died, so their files load again from a clean state.
    async fn recover(&self, progress: &dyn Progress) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for run in self.ledger.running_runs()? {
            progress.note(&format!(
                "run {} was interrupted; rolling back its changes",
                run.run_id
            ));
            self.rollback(run.run_id, &run.table_versions).await?;
            let why = "interrupted: the process stopped before the run finished; its changes were rolled back";
            self.ledger.fail_run(run.run_id, why)?;
            self.ledger.fail_open_tasks(run.run_id, why)?;
            out.push(run.run_id);
        }
        Ok(out)
    }

    /// Restore every table to the version it had before `run_id`.
    async fn rollback(&self, run_id: i64, versions: &BTreeMap<String, i64>) -> Result<()> {
        for t in all_tables() {
            let before = versions.get(&table_key(&t)).copied();
            let now = self.tables.version(&t).await?;
            if now.is_some() && now != before {
                tracing::warn!(table = %t.display(), ?before, ?now, run_id, "restoring table");
                self.tables.restore(&t, before, run_id).await?;
            }
        }
        Ok(())
    }

    async fn run_inner(
        &self,
        run_id: i64,
        pending: Vec<FileRecord>,
        progress: &dyn Progress,
    ) -> Result<RunReport> {
        let now = Utc::now().timestamp_micros();
        let mut report = RunReport {
            run_id,
            ..Default::default()
        };
        let mut quarantine: Vec<QuarantinedRow> = Vec::new();
        let mut failed: Vec<(i64, String)> = Vec::new();

        // Files with their catalog entry, grouped by entity, in ledger order.
        let mut by_entity: BTreeMap<Entity, Vec<(FileRecord, CatalogEntry)>> = BTreeMap::new();
        for f in pending {
            let Some(version) = f.catalog_version else {
                continue;
            };
            let Some(entry) = self.ledger.catalog_version(&f.source, version)? else {
                failed.push((f.file_id, format!("{}: catalog version {version} of source {} is missing; run `shoplake crawl`", f.name, f.source)));
                continue;
            };
            let entity: Entity = entry.entity.parse().map_err(EtlError::Internal)?;
            by_entity.entry(entity).or_default().push((f, entry));
        }

        let mut dims = self.load_dims().await?;
        for entity in reference_entities() {
            for (f, entry) in by_entity.remove(&entity).unwrap_or_default() {
                match self
                    .load_reference(
                        entity,
                        &f,
                        &entry,
                        &mut dims,
                        (run_id, now),
                        &mut report.quality,
                        progress,
                    )
                    .await?
                {
                    Ok((outcome, rows)) => {
                        quarantine.extend(rows);
                        report.files.push(summary(&f, entity, outcome, None));
                    }
                    Err(e) => {
                        progress.note(&format!("failed: {e}"));
                        failed.push((f.file_id, e));
                    }
                }
            }
        }

        // Sales: stream into fact_sales. A file that turns out unreadable part-way aborts the
        // write; the sales step then runs again without it.
        let mut sales_files = by_entity.remove(&Entity::Sales).unwrap_or_default();
        let mut date_range = None;
        if !sales_files.is_empty() {
            let reference = dims.clone();
            let lake_keys = self.lake_keys(progress).await?;
            let mut lake_keys = Some(lake_keys);
            while !sales_files.is_empty() {
                let lake = match lake_keys.take() {
                    Some(k) => k,
                    None => self.lake_keys(progress).await?,
                };
                let lookups = make_lookups(dims.clone(), lake);
                // The reference files' rejects travel in the same quarantine commit.
                match self
                    .load_sales(
                        run_id,
                        &sales_files,
                        lookups,
                        quarantine.clone(),
                        now,
                        progress,
                    )
                    .await?
                {
                    SalesStep::Done {
                        lookups,
                        outcomes,
                        quarantine_version,
                        version,
                        range,
                        inferred_rows,
                        quality,
                    } => {
                        report.quality.extend(quality);
                        for (f, entry, outcome) in outcomes {
                            let entity: Entity =
                                entry.entity.parse().map_err(EtlError::Internal)?;
                            report.files.push(summary(&f, entity, outcome, None));
                        }
                        quarantine.clear();
                        report.commits.push(("fact_sales".into(), version));
                        if let Some(v) = quarantine_version {
                            report.commits.push(("quarantine".into(), v));
                        }
                        report.inferred_rows = inferred_rows;
                        date_range = range;
                        dims.by_entity.insert(Entity::Products, lookups.products);
                        dims.by_entity.insert(Entity::Customers, lookups.customers);
                        dims.by_entity.insert(Entity::Stores, lookups.stores);
                        dims.by_entity.insert(Entity::SalesTeam, lookups.sales_team);
                        break;
                    }
                    SalesStep::FileFailed { file_id, error } => {
                        progress.note(&format!("failed: {error}"));
                        failed.push((file_id, error));
                        sales_files.retain(|(f, _)| f.file_id != file_id);
                        dims = reference.clone();
                    }
                    // Nothing was committed: the sales step runs again without these files
                    // (their rows must not count as seen, infer members or be quarantined).
                    SalesStep::QualityFailed { files, results } => {
                        for (file_id, error) in files {
                            progress.note(&format!("failed: {error}"));
                            sales_files.retain(|(f, _)| f.file_id != file_id);
                            failed.push((file_id, error));
                        }
                        report.quality.extend(results);
                        dims = reference.clone();
                    }
                }
            }
        }
        failpoint("after-fact-commit");

        // Dimensions, calendar and quarantine.
        for (entity, dim) in &dims.by_entity {
            if dim.changed() {
                let (schema, batch) = dim.to_batch()?;
                let id = TableId::processed(dim_table(*entity).0);
                let v = self
                    .tables
                    .write_batches(&id, schema, vec![batch], &[], WriteMode::Overwrite, run_id)
                    .await?;
                report.commits.push((id.display(), v));
            }
        }
        if let Some((lo, hi)) = date_range
            && let Some(v) = self.extend_dim_date(lo, hi, run_id).await?
        {
            report.commits.push(("dim_date".into(), v));
        }
        if !quarantine.is_empty() {
            let batch = crate::quarantine::to_batch(&quarantine, run_id, now);
            let v = self
                .tables
                .write_batches(
                    &TableId::quarantine(),
                    QUARANTINE.clone(),
                    vec![batch],
                    &["source"],
                    WriteMode::Append,
                    run_id,
                )
                .await?;
            report.commits.push(("quarantine".into(), v));
        }
        failpoint("before-ledger");

        for f in &report.files {
            if !f.outcome.adds_up() {
                return Err(EtlError::Internal(format!(
                    "{}: rows in ({}) != loaded ({}) + quarantined ({}) + duplicates ({})",
                    f.name,
                    f.outcome.rows_in,
                    f.outcome.loaded,
                    f.outcome.quarantined_total(),
                    f.outcome.duplicates
                )));
            }
        }
        let outcomes: Vec<FileOutcome> = report.files.iter().map(|f| f.outcome.clone()).collect();
        quality::log_breaches(&report.quality);
        self.ledger.record_quality(&report.quality)?;
        self.ledger.finish_run(run_id, &outcomes, &failed)?;
        for (file_id, error) in failed {
            if let Some(f) = self.ledger.file(file_id)? {
                report.failed.push(FileSummary {
                    file_id,
                    source: f.source,
                    name: f.name,
                    entity: f.entity.unwrap_or_default(),
                    outcome: FileOutcome {
                        file_id,
                        ..Default::default()
                    },
                    error: Some(error),
                });
            }
        }
        Ok(report)
    }

    async fn load_dims(&self) -> Result<Dims> {
        let mut by_entity = BTreeMap::new();
        for e in reference_entities() {
            let id = TableId::processed(dim_table(e).0);
            let dim = match self.tables.read_all(&id).await? {
                Some((_, batches)) => Dim::from_batches(e, &batches)
                    .map_err(|m| EtlError::Internal(format!("{}: {m}", id.display())))?,
                None => Dim::new(e),
            };
            by_entity.insert(e, dim);
        }
        Ok(Dims { by_entity })
    }

    /// Every dedupe key in `fact_sales`, exactly. For small loads (a quarantine replay); a run
    /// uses [`Self::lake_keys`].
    async fn existing_sale_keys(&self) -> Result<LakeKeys> {
        let mut seen = HashSet::new();
        let found = self
            .for_each_lake_key(None, |chunk| seen.extend(chunk))
            .await?;
        Ok(if found {
            LakeKeys::Exact(seen)
        } else {
            LakeKeys::Empty
        })
    }

    /// A Bloom filter over the dedupe keys of `fact_sales` as it is now (see [`dedupe`]).
    async fn lake_keys(&self, progress: &dyn Progress) -> Result<LakeKeys> {
        let id = TableId::processed("fact_sales");
        let Some(version) = self.tables.version(&id).await? else {
            return Ok(LakeKeys::Empty);
        };
        let Some(provider) = self.tables.provider(&id, Some(version)).await? else {
            return Ok(LakeKeys::Empty);
        };
        let ctx = datafusion::prelude::SessionContext::new();
        let rows = ctx.read_table(provider)?.count().await?;
        if rows == 0 {
            return Ok(LakeKeys::Empty);
        }
        progress.stage_rows("reading fact_sales keys", rows as u64);
        let mut bloom = Bloom::with_capacity(rows);
        self.for_each_lake_key(Some(version), |chunk| {
            progress.advance(chunk.len() as u64);
            for k in chunk {
                bloom.insert(k);
            }
        })
        .await?;
        progress.done();
        Ok(LakeKeys::Filter { bloom, version })
    }

    /// Of `keys`, those `fact_sales` holds at `version`.
    async fn lake_keys_in(&self, version: i64, keys: &HashSet<u128>) -> Result<HashSet<u128>> {
        let mut found = HashSet::new();
        self.for_each_lake_key(Some(version), |chunk| {
            found.extend(chunk.into_iter().filter(|k| keys.contains(k)))
        })
        .await?;
        Ok(found)
    }

    /// Stream the dedupe keys of `fact_sales` (latest, or at `version`) in chunks. Returns
    /// false when there is no table.
    async fn for_each_lake_key(
        &self,
        version: Option<i64>,
        mut f: impl FnMut(Vec<u128>),
    ) -> Result<bool> {
        let Some(provider) = self
            .tables
            .provider(&TableId::processed("fact_sales"), version)
            .await?
        else {
            return Ok(false);
        };
        let ctx = datafusion::prelude::SessionContext::new();
        let mut stream = ctx
            .read_table(provider)?
            .select_columns(&["dedupe_key"])?
            .execute_stream()
            .await?;
        while let Some(batch) = stream.next().await {
            let keys = dedupe::key_column(&batch?)?;
            f(keys.iter().flatten().filter_map(dedupe::key_of).collect());
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn load_reference(
        &self,
        entity: Entity,
        f: &FileRecord,
        entry: &CatalogEntry,
        dims: &mut Dims,
        (run_id, now): (i64, i64),
        results: &mut Vec<QualityResult>,
        progress: &dyn Progress,
    ) -> Result<std::result::Result<(FileOutcome, Vec<QuarantinedRow>), String>> {
        let (schema, mapping) = parse_entry(entry)?;
        let reader = self.open_raw(f).await?;
        progress.stage(&format!("{} ({entity})", f.name), f.size_bytes as u64);
        let mut sink = RefSink::new(entity, f, &schema, &mapping, self.pii.clone());
        let file = f.clone();
        let layout = schema.layout.clone();
        let columns = layout.columns.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = scan::scan(&file.name, reader, &layout, &columns, &mut sink);
            (sink, r)
        })
        .await
        .map_err(|e| EtlError::Internal(e.to_string()))?;
        progress.done();
        let (sink, scanned) = result;
        if let Err(e) = scanned {
            return Ok(Err(e.to_string()));
        }
        // Quality, on the file's valid rows before they change the dimension.
        let table = dim_table(entity).0;
        let rules = self.quality_rules(table)?;
        if !rules.is_empty() {
            let facts = vec![FileFacts {
                file_id: f.file_id,
                rows_in: sink.tally.outcome.rows_in,
                missing: sink.tally.missing.clone(),
            }];
            let newest = quality::table_newest(&self.tables, table, &rules).await?;
            let mut eval = Evaluation::new(table, rules, facts, sink.rows.len() as u64);
            let batch = quality::reference_batch(entity, f.file_id, &sink.rows, &eval.columns())?;
            eval.observe(&batch)?;
            let mut counts = RecheckCounts::default();
            if !eval.recheck_columns().is_empty() {
                eval.recheck(&batch, &mut counts)?;
            }
            let checked = eval.finish(run_id, &newest, counts, micros_to_time(now));
            let blocked = quality::blocking_failure(&checked, f.file_id);
            results.extend(checked);
            if let Some(error) = blocked {
                return Ok(Err(error));
            }
        }
        let dim = dims
            .by_entity
            .get_mut(&entity)
            .expect("every reference entity has a dim");
        let mut outcome = sink.tally.outcome;
        for values in sink.rows {
            match dim.apply(values, now, f.file_id) {
                Applied::Loaded => outcome.loaded += 1,
                Applied::Duplicate => outcome.duplicates += 1,
            }
        }
        Ok(Ok((outcome, sink.tally.quarantine)))
    }

    async fn load_sales(
        &self,
        run_id: i64,
        files: &[(FileRecord, CatalogEntry)],
        lookups: Lookups,
        reference_rejects: Vec<QuarantinedRow>,
        now: i64,
        progress: &dyn Progress,
    ) -> Result<SalesStep> {
        let mut prepared = Vec::new();
        let total: u64 = files.iter().map(|(f, _)| f.size_bytes as u64).sum();
        // The run's keys in a filter sized from the input; a wrong guess only holds back
        // more rows for the exact check, or takes more memory than needed.
        let mut lookups = lookups;
        let mut rows_guess = 0u64;
        for (f, _) in files {
            rows_guess += self.rows_guess(f).await;
        }
        lookups.seen = RunKeys::Filter(Bloom::with_capacity(rows_guess as usize));
        for (f, entry) in files {
            let (schema, mapping) = parse_entry(entry)?;
            let reader = self.open_raw(f).await?;
            let rules = self.rules(f, &mapping);
            prepared.push((f.clone(), entry.clone(), schema, mapping, reader, rules));
        }
        // Facts go to spill files by partition while the scan runs, and are encoded and
        // committed after it (see `shoplake_tables::PartitionedAppend`).
        let (tx, rx) = mpsc::channel::<BatchResult>(2);
        let append = PartitionedAppend::new(
            &TableId::processed("fact_sales"),
            FACT_SALES.clone(),
            &FACT_PARTITIONS,
            &self.spill_dir(),
        )?;
        #[allow(clippy::disallowed_methods)] // wrapped: aborted on drop
        let mut writer = AbortOnDrop(tokio::spawn(append.receive(rx)));
        let mut quarantine =
            QuarantineStream::new(self.tables.clone(), run_id, now, reference_rejects);
        let mut held = Held::new(&self.spill_dir(), HELD_MEMORY_BYTES);
        progress.stage("sales", total);
        let batch_size = self.config.pipeline.batch_size;
        // The scan is CPU work on this thread; the writers run on the other workers.
        let scan_result = tokio::task::block_in_place(|| {
            scan_sales(
                prepared,
                lookups,
                Channels {
                    facts: &tx,
                    quarantine: &mut quarantine,
                    held: &mut held,
                },
                batch_size,
                run_id,
                now,
                progress,
            )
        });
        progress.done();
        let (mut lookups, mut outcomes, range, mut inferred_rows, missing) = match scan_result {
            ScanResult::Failed { file_id, error } => {
                // The scan sent an error down the stream: the write aborts and commits nothing,
                // and the quarantine writer is aborted when dropped.
                drop(tx);
                let write_result = (&mut writer.0)
                    .await
                    .map_err(|e| EtlError::Internal(e.to_string()))?;
                return match write_result {
                    Ok(_) => Err(EtlError::Internal(
                        "the fact_sales writer finished although a file failed".into(),
                    )),
                    // The writer stopped first (a full spill disk, say): no file is to blame,
                    // and the step fails with the writer's own error.
                    Err(e) if error.ends_with(WRITER_STOPPED) => Err(e.into()),
                    Err(_) => Ok(SalesStep::FileFailed { file_id, error }),
                };
            }
            ScanResult::Done {
                lookups,
                outcomes,
                range,
                inferred_rows,
                missing,
            } => (lookups, outcomes, range, inferred_rows, missing),
        };

        // The scan is over: the spill files hold every row that was not held back, and the
        // run's key filter (2 bytes or more a row) is no longer needed.
        drop(tx);
        lookups.seen = RunKeys::Exact(HashSet::new());
        let mut append = (&mut writer.0)
            .await
            .map_err(|e| EtlError::Internal(e.to_string()))??;
        // Held rows have keys the table or this run may already have: check them exactly and
        // add the new ones to the same commit.
        let mut dropped = BTreeMap::new();
        let mut dropped_inferred = (0, 0);
        if held.rows() > 0 {
            self.settle_held(
                &lookups.lake,
                &mut held,
                &mut append,
                &mut dropped,
                &mut dropped_inferred,
                progress,
            )
            .await?;
        }
        // Quality, on exactly the rows about to be committed. A file failing an `error`
        // expectation keeps the whole step from committing; it runs again without the file.
        let checked = self
            .sales_quality(run_id, &mut append, &outcomes, missing, now, progress)
            .await?;
        let blocked: Vec<(i64, String)> = outcomes
            .iter()
            .filter_map(|(f, _, _)| {
                quality::blocking_failure(&checked, f.file_id).map(|e| (f.file_id, e))
            })
            .collect();
        if !blocked.is_empty() {
            let results = checked
                .into_iter()
                .filter(|r| blocked.iter().any(|(id, _)| *id == r.file_id))
                .collect();
            return Ok(SalesStep::QualityFailed {
                files: blocked,
                results,
            });
        }
        progress.stage_rows("writing fact_sales", append.rows());
        let version = append
            .commit(&self.tables, run_id, &|rows| progress.advance(rows))
            .await?;
        progress.done();
        let quarantine_version = quarantine.finish().await?;
        for (f, _, outcome) in &mut outcomes {
            if let Some(n) = dropped.get(&f.file_id) {
                outcome.loaded -= n;
                outcome.duplicates += n;
            }
        }
        inferred_rows.0 -= dropped_inferred.0;
        inferred_rows.1 -= dropped_inferred.1;
        // Only this run's keys stay with the lookups.
        lookups.lake = LakeKeys::Empty;
        Ok(SalesStep::Done {
            lookups,
            outcomes,
            quarantine_version,
            version,
            range,
            inferred_rows,
            quality: checked,
        })
    }

    /// The validated quality rules of `table` (checked when the run started).
    fn quality_rules(&self, table: &str) -> Result<Vec<quality::Rule>> {
        quality::rules(&self.config, table).map_err(|p| EtlError::Input {
            path: "shoplake.toml".into(),
            message: p.join("; "),
        })
    }

    /// Check the `fact_sales` expectations on the rows staged in `append`, per file: one pass
    /// over the needed columns of the spill files, and a second over the `unique` columns
    /// when a value may repeat.
    async fn sales_quality(
        &self,
        run_id: i64,
        append: &mut PartitionedAppend,
        outcomes: &[(FileRecord, CatalogEntry, FileOutcome)],
        mut missing: HashMap<i64, BTreeMap<String, i64>>,
        now: i64,
        progress: &dyn Progress,
    ) -> Result<Vec<QualityResult>> {
        let rules = self.quality_rules("fact_sales")?;
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        let facts = outcomes
            .iter()
            .map(|(f, _, o)| FileFacts {
                file_id: f.file_id,
                rows_in: o.rows_in,
                missing: missing.remove(&f.file_id).unwrap_or_default(),
            })
            .collect();
        let newest = quality::table_newest(&self.tables, "fact_sales", &rules).await?;
        let mut eval = Evaluation::new("fact_sales", rules, facts, append.rows());
        let mut counts = RecheckCounts::default();
        progress.stage_rows("checking quality", append.rows());
        tokio::task::block_in_place(|| -> Result<()> {
            let mut failed = None;
            let columns = eval.columns();
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            append.scan_columns(&columns, |batch| {
                progress.advance(batch.num_rows() as u64);
                if failed.is_none() {
                    failed = eval.observe(batch).err();
                }
            })?;
            let columns = eval.recheck_columns();
            if failed.is_none() && !columns.is_empty() {
                let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
                append.scan_columns(&columns, |batch| {
                    if failed.is_none() {
                        failed = eval.recheck(batch, &mut counts).err();
                    }
                })?;
            }
            failed.map_or(Ok(()), Err)
        })?;
        progress.done();
        Ok(eval.finish(run_id, &newest, counts, micros_to_time(now)))
    }

    /// Check the held rows against the keys of `fact_sales`, the rows of this run that were
    /// not held, and each other, and add the new ones to `append`; `dropped` counts the
    /// duplicates per file.
    async fn settle_held(
        &self,
        lake: &LakeKeys,
        held: &mut Held,
        append: &mut PartitionedAppend,
        dropped: &mut BTreeMap<i64, i64>,
        dropped_inferred: &mut (u64, u64),
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.stage_rows("checking duplicates", held.rows() as u64);
        let keys = held.keys()?;
        let mut existing = match lake {
            LakeKeys::Filter { version, .. } => self.lake_keys_in(*version, &keys).await?,
            LakeKeys::Exact(all) => keys.iter().filter(|k| all.contains(k)).copied().collect(),
            LakeKeys::Empty => HashSet::new(),
        };
        tokio::task::block_in_place(|| {
            append.scan_column("dedupe_key", |col| {
                if let Ok(col) = datafusion::arrow::compute::cast(
                    col,
                    &datafusion::arrow::datatypes::DataType::Binary,
                ) && let Some(col) = col
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::BinaryArray>()
                {
                    existing.extend(
                        col.iter()
                            .flatten()
                            .filter_map(dedupe::key_of)
                            .filter(|k| keys.contains(k)),
                    );
                }
            })
        })?;
        drop(keys);
        let inferred = std::mem::take(&mut held.inferred);
        let mut earlier = HashSet::new();
        let mut offset = 0;
        for batch in held.batches()? {
            let batch = batch?;
            let n = batch.num_rows();
            let kept = dedupe::settle(
                &batch,
                &inferred[offset..offset + n],
                &existing,
                &mut earlier,
                dropped,
                dropped_inferred,
            )?;
            offset += n;
            progress.advance(n as u64);
            tokio::task::block_in_place(|| append.push(&kept))?;
        }
        progress.done();
        Ok(())
    }

    /// Where a run puts its temporary files: `SHOPLAKE_TMP`, else `<state dir>/tmp`.
    fn spill_dir(&self) -> PathBuf {
        std::env::var_os("SHOPLAKE_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.state_dir.join("tmp"))
    }

    /// The transform settings of a file's source.
    fn rules(&self, f: &FileRecord, mapping: &Mapping) -> SourceRules {
        SourceRules {
            source: f.source.clone(),
            date_format: mapping.date_format.clone(),
            default_currency: self.default_currency(&f.source),
            default_channel: self.default_channel(&f.source),
            unknown_members: self
                .config
                .sources
                .get(&f.source)
                .and_then(|s| s.unknown_members)
                .unwrap_or(self.config.pipeline.unknown_members),
        }
    }

    fn default_currency(&self, source: &str) -> &'static str {
        let c = self
            .config
            .sources
            .get(source)
            .and_then(|s| s.currency.clone())
            .unwrap_or_else(|| self.config.pipeline.default_currency.clone());
        values::normalize_currency(&c)
            .ok()
            .flatten()
            .unwrap_or("USD")
    }

    fn default_channel(&self, source: &str) -> String {
        if let Some(c) = self
            .config
            .sources
            .get(source)
            .and_then(|s| s.channel.as_deref())
            .and_then(values::normalize_channel)
        {
            return c;
        }
        let online = ["ecom", "online", "web", "shop", "order", "app"];
        if online.iter().any(|w| source.contains(w)) {
            "ecommerce".into()
        } else {
            "store".into()
        }
    }

    /// Make `dim_date` cover [lo, hi] (and what it covered before).
    async fn extend_dim_date(
        &self,
        lo: NaiveDate,
        hi: NaiveDate,
        run_id: i64,
    ) -> Result<Option<i64>> {
        let id = TableId::processed("dim_date");
        let (mut start, mut end) = (lo, hi);
        if let Some((_, batches)) = self.tables.read_all(&id).await? {
            let mut old = (None::<i32>, None::<i32>);
            for b in &batches {
                let d = b
                    .column_by_name("date")
                    .and_then(|c| c.as_any().downcast_ref::<Date32Array>().cloned());
                if let Some(d) = d {
                    for v in d.iter().flatten() {
                        old.0 = Some(old.0.map_or(v, |o: i32| o.min(v)));
                        old.1 = Some(old.1.map_or(v, |o: i32| o.max(v)));
                    }
                }
            }
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");
            if let (Some(a), Some(b)) = old {
                let (a, b) = (
                    epoch + chrono::Days::new(a as u64),
                    epoch + chrono::Days::new(b as u64),
                );
                if a <= lo && b >= hi {
                    return Ok(None);
                }
                start = start.min(a);
                end = end.max(b);
            }
        }
        let batch = dim_date_batch(start, end)?;
        let v = self
            .tables
            .write_batches(
                &id,
                DIM_DATE.clone(),
                vec![batch],
                &[],
                WriteMode::Overwrite,
                run_id,
            )
            .await?;
        Ok(Some(v))
    }
}

fn table_key(t: &TableId) -> String {
    format!("{}/{}", t.zone.prefix(), t.name)
}

/// Whether a catalog entry's schema has the same shape (layout, column names, types, date
/// formats) as a newly inferred one; counts of nulls and samples may differ.
fn same_shape(schema_json: &str, schema: &FileSchema) -> bool {
    let Ok(prev) = serde_json::from_str::<FileSchema>(schema_json) else {
        return false;
    };
    prev.layout == schema.layout
        && prev.columns.len() == schema.columns.len()
        && prev
            .columns
            .iter()
            .zip(&schema.columns)
            .all(|(a, b)| a.name == b.name && a.ty == b.ty && a.date_format == b.date_format)
}

fn parse_entry(entry: &CatalogEntry) -> Result<(FileSchema, Mapping)> {
    let schema: FileSchema = serde_json::from_str(&entry.schema_json).map_err(|e| {
        EtlError::Internal(format!("catalog {} v{}: {e}", entry.source, entry.version))
    })?;
    let mapping: Mapping = serde_json::from_str(&entry.mapping_json).map_err(|e| {
        EtlError::Internal(format!("catalog {} v{}: {e}", entry.source, entry.version))
    })?;
    Ok((schema, mapping))
}

fn summary(
    f: &FileRecord,
    entity: Entity,
    outcome: FileOutcome,
    error: Option<String>,
) -> FileSummary {
    FileSummary {
        file_id: f.file_id,
        source: f.source.clone(),
        name: f.name.clone(),
        entity: entity.to_string(),
        outcome,
        error,
    }
}

/// Canonical field -> record column index, for a file read by `schema.layout.columns`.
fn field_columns(mapping: &Mapping, schema: &FileSchema) -> HashMap<String, usize> {
    mapping
        .columns
        .iter()
        .filter_map(|(src, canon)| {
            schema
                .layout
                .columns
                .iter()
                .position(|c| c == src)
                .map(|i| (canon.clone(), i))
        })
        .collect()
}

/// The FX table of a run: (currency, year * 100 + month) -> rate to USD at `RATE_SCALE`, from
/// the current rows of `fx_rates` (rows without a readable month or rate are left out).
pub fn fx_rates(fxd: &Dim) -> HashMap<(String, i32), i128> {
    let mut fx = HashMap::new();
    for r in fxd.rows().iter().filter(|r| r.is_current) {
        let (Some(c), Some(m), Some(rate)) = (
            fxd.value(r, "currency"),
            fxd.value(r, "month"),
            fxd.value(r, "rate_to_usd"),
        ) else {
            continue;
        };
        let ym: Option<i32> = m
            .get(..4)
            .and_then(|y| y.parse::<i32>().ok())
            .zip(m.get(5..7).and_then(|mm| mm.parse::<i32>().ok()))
            .map(|(y, mm)| y * 100 + mm);
        if let (Some(ym), Ok(Some(rate))) = (ym, values::parse_decimal(rate, RATE_SCALE)) {
            fx.insert((c.to_string(), ym), rate);
        }
    }
    fx
}

fn make_lookups(dims: Dims, lake: LakeKeys) -> Lookups {
    let mut d = dims.by_entity;
    let fx = d.get(&Entity::FxRates).map(fx_rates).unwrap_or_default();
    Lookups {
        products: d
            .remove(&Entity::Products)
            .unwrap_or_else(|| Dim::new(Entity::Products)),
        customers: d
            .remove(&Entity::Customers)
            .unwrap_or_else(|| Dim::new(Entity::Customers)),
        stores: d
            .remove(&Entity::Stores)
            .unwrap_or_else(|| Dim::new(Entity::Stores)),
        sales_team: d
            .remove(&Entity::SalesTeam)
            .unwrap_or_else(|| Dim::new(Entity::SalesTeam)),
        fx,
        seen: RunKeys::Exact(HashSet::new()),
        lake,
    }
}

enum SalesStep {
    Done {
        lookups: Box<Lookups>,
        outcomes: Vec<(FileRecord, CatalogEntry, FileOutcome)>,
        quarantine_version: Option<i64>,
        version: i64,
        range: Option<(NaiveDate, NaiveDate)>,
        inferred_rows: (u64, u64),
        quality: Vec<QualityResult>,
    },
    FileFailed {
        file_id: i64,
        error: String,
    },
    /// Files that failed an `error` expectation, with their results; nothing was committed.
    QualityFailed {
        files: Vec<(i64, String)>,
        results: Vec<QualityResult>,
    },
}

enum ScanResult {
    Done {
        lookups: Box<Lookups>,
        outcomes: Vec<(FileRecord, CatalogEntry, FileOutcome)>,
        range: Option<(NaiveDate, NaiveDate)>,
        inferred_rows: (u64, u64),
        /// Per file, rows quarantined with a column missing, by column (for quality).
        missing: HashMap<i64, BTreeMap<String, i64>>,
    },
    Failed {
        file_id: i64,
        error: String,
    },
}

type Prepared = (
    FileRecord,
    CatalogEntry,
    FileSchema,
    Mapping,
    Box<dyn Read + Send>,
    SourceRules,
);

/// Where the sales scan sends its rows.
struct Channels<'a> {
    facts: &'a mpsc::Sender<BatchResult>,
    quarantine: &'a mut QuarantineStream,
    held: &'a mut Held,
}

/// Scan every sales file in order, sending fact batches to the writer and rejects to the
/// quarantine writer. Runs on its own thread.
#[allow(clippy::too_many_arguments)]
fn scan_sales(
    files: Vec<Prepared>,
    mut lookups: Lookups,
    out: Channels<'_>,
    batch_size: usize,
    run_id: i64,
    now: i64,
    progress: &dyn Progress,
) -> ScanResult {
    let Channels {
        facts: tx,
        quarantine,
        held,
    } = out;
    let mut outcomes = Vec::new();
    let mut missing = HashMap::new();
    let mut range: Option<(NaiveDate, NaiveDate)> = None;
    let mut inferred_rows = (0, 0);
    for (f, entry, schema, mapping, reader, rules) in files {
        let columns = field_columns(&mapping, &schema);
        let mut sink = SalesSink {
            t: SalesTransform::new(
                &mut lookups,
                rules,
                &columns,
                f.file_id,
                run_id,
                now,
                batch_size,
            ),
            tally: FileTally::new(Entity::Sales, &f, &schema.layout.columns),
            tx,
            quarantine: &mut *quarantine,
            held: &mut *held,
            batch_size,
            closed: None,
        };
        let reader = CountingReader {
            inner: reader,
            progress,
        };
        let scanned = scan::scan(
            &f.name,
            reader,
            &schema.layout,
            &schema.layout.columns,
            &mut sink,
        );
        let flushed = if scanned.is_ok() {
            sink.flush(true)
        } else {
            Ok(())
        };
        if let Err(e) = scanned {
            let error = e.to_string();
            let _ = tx.blocking_send(Err(DataFusionError::External(
                format!("file {} failed: {error}", f.name).into(),
            )));
            return ScanResult::Failed {
                file_id: f.file_id,
                error,
            };
        }
        if let Some(error) = flushed.err().or(sink.closed.take()) {
            let _ = tx.blocking_send(Err(DataFusionError::External(error.clone().into())));
            return ScanResult::Failed {
                file_id: f.file_id,
                error: format!("{}: {error}", f.name),
            };
        }
        let (c, p) = sink.t.inferred_rows;
        inferred_rows.0 += c;
        inferred_rows.1 += p;
        if let Some((lo, hi)) = sink.t.date_range {
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        missing.insert(f.file_id, std::mem::take(&mut sink.tally.missing));
        outcomes.push((f, entry, sink.tally.outcome));
    }
    ScanResult::Done {
        lookups: Box::new(lookups),
        outcomes,
        range,
        inferred_rows,
        missing,
    }
}

struct SalesSink<'a, 'l> {
    t: SalesTransform<'l>,
    tally: FileTally,
    tx: &'a mpsc::Sender<BatchResult>,
    quarantine: &'a mut QuarantineStream,
    held: &'a mut Held,
    batch_size: usize,
    /// Why the sink stopped taking rows.
    closed: Option<String>,
}

impl SalesSink<'_, '_> {
    /// Send what is full (or, at the end of the file, everything) on its way.
    fn flush(&mut self, end: bool) -> std::result::Result<(), String> {
        let min = if end { 1 } else { self.batch_size };
        if self.t.out.rows() >= min {
            let batch = self.t.out.finish();
            self.tx
                .blocking_send(Ok(batch))
                .map_err(|_| WRITER_STOPPED.to_string())?;
        }
        if self.t.held.rows() >= min {
            let batch = self.t.held.finish();
            let inferred = std::mem::take(&mut self.t.held_inferred);
            self.held
                .push(batch, &inferred)
                .map_err(|e| e.to_string())?;
        }
        if end || self.tally.quarantine.len() >= QUARANTINE_BATCH {
            self.quarantine.push_blocking(&mut self.tally.quarantine)?;
        }
        Ok(())
    }

    fn flush_or_stop(&mut self) -> std::result::Result<(), ScanError> {
        match self.flush(false) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.closed = Some(e.clone());
                Err(ScanError::sink(e))
            }
        }
    }
}

impl ScanSink for SalesSink<'_, '_> {
    fn record(&mut self, line: u64, values: &[Option<&str>]) -> std::result::Result<(), ScanError> {
        self.tally.outcome.rows_in += 1;
        match self.t.process(line, values) {
            Outcome::Loaded => self.tally.outcome.loaded += 1,
            Outcome::Duplicate => self.tally.outcome.duplicates += 1,
            Outcome::Rejected(reason, detail) => self.tally.reject(line, reason, detail, values),
        }
        self.flush_or_stop()
    }

    fn malformed(
        &mut self,
        line: u64,
        problem: &str,
        raw: &str,
    ) -> std::result::Result<(), ScanError> {
        self.tally.malformed(line, problem, raw);
        self.flush_or_stop()
    }
}

/// Rows per quarantine batch.
const QUARANTINE_BATCH: usize = 8192;
/// Held rows kept in memory before they spill to a temporary file.
const HELD_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// The scan's error when the `fact_sales` writer is gone; the writer's own error says why.
const WRITER_STOPPED: &str = "the fact_sales writer stopped";

/// Quarantined rows on their way to the quarantine table, in batches, to a writer that starts
/// with the first full batch: a run's rejects never pile up in memory. Dropped without
/// [`QuarantineStream::finish`], the write is aborted and commits nothing.
struct QuarantineStream {
    tables: Tables,
    run_id: i64,
    now: i64,
    pending: Vec<QuarantinedRow>,
    writer: Option<(
        mpsc::Sender<BatchResult>,
        AbortOnDrop<shoplake_tables::Result<i64>>,
    )>,
}

impl QuarantineStream {
    fn new(tables: Tables, run_id: i64, now: i64, rows: Vec<QuarantinedRow>) -> Self {
        QuarantineStream {
            tables,
            run_id,
            now,
            pending: rows,
            writer: None,
        }
    }

    fn sender(&mut self) -> &mpsc::Sender<BatchResult> {
        let (tables, run_id) = (self.tables.clone(), self.run_id);
        &self
            .writer
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel::<BatchResult>(2);
                #[allow(clippy::disallowed_methods)] // wrapped: aborted on drop
                let task = AbortOnDrop(tokio::spawn(async move {
                    tables
                        .write_stream(
                            &TableId::quarantine(),
                            QUARANTINE.clone(),
                            rx,
                            &["source"],
                            WriteMode::Append,
                            run_id,
                        )
                        .await
                }));
                (tx, task)
            })
            .0
    }

    fn take_batch(&mut self) -> RecordBatch {
        let batch = crate::quarantine::to_batch(&self.pending, self.run_id, self.now);
        self.pending.clear();
        batch
    }

    /// Take `rows`; send a batch once enough are pending. For blocking code only.
    fn push_blocking(&mut self, rows: &mut Vec<QuarantinedRow>) -> std::result::Result<(), String> {
        self.pending.append(rows);
        if self.pending.len() < QUARANTINE_BATCH {
            return Ok(());
        }
        let batch = self.take_batch();
        self.sender()
            .blocking_send(Ok(batch))
            .map_err(|_| "the quarantine writer stopped".to_string())
    }

    /// Send what is pending and commit. `None` when there was nothing to quarantine.
    async fn finish(mut self) -> Result<Option<i64>> {
        if !self.pending.is_empty() {
            let batch = self.take_batch();
            // A send fails only when the writer stopped; awaiting it below gives its error.
            let _ = self.sender().send(Ok(batch)).await;
        }
        let Some((tx, mut task)) = self.writer.take() else {
            return Ok(None);
        };
        drop(tx);
        let version = (&mut task.0)
            .await
            .map_err(|e| EtlError::Internal(e.to_string()))??;
        Ok(Some(version))
    }
}

/// One file's row accounting: its counts by outcome and its quarantined rows.
struct FileTally {
    entity: Entity,
    file: FileRecord,
    columns: Vec<String>,
    outcome: FileOutcome,
    quarantine: Vec<QuarantinedRow>,
    /// Rows quarantined with a column missing, by column (see [`quality::missing_columns`]).
    missing: BTreeMap<String, i64>,
}

impl FileTally {
    fn new(entity: Entity, file: &FileRecord, columns: &[String]) -> FileTally {
        FileTally {
            entity,
            file: file.clone(),
            columns: columns.to_vec(),
            outcome: FileOutcome {
                file_id: file.file_id,
                ..Default::default()
            },
            quarantine: Vec::new(),
            missing: BTreeMap::new(),
        }
    }

    /// A record rejected for a reason: counted, and kept with its original values.
    fn reject(&mut self, line: u64, reason: ReasonCode, detail: String, values: &[Option<&str>]) {
        let record = record_json(&self.columns, values);
        self.push(line, reason, detail, record);
    }

    /// A record that could not be parsed at all: kept as its raw text.
    fn malformed(&mut self, line: u64, problem: &str, raw: &str) {
        self.outcome.rows_in += 1;
        let raw: String = raw.chars().take(4096).collect();
        let record = serde_json::json!({ "_raw": raw }).to_string();
        self.push(line, ReasonCode::MalformedRow, problem.to_string(), record);
    }

    fn push(&mut self, line: u64, reason: ReasonCode, detail: String, record: String) {
        for column in quality::missing_columns(reason, &detail) {
            *self.missing.entry(column.to_string()).or_default() += 1;
        }
        *self
            .outcome
            .quarantined
            .entry(reason.as_str().to_string())
            .or_default() += 1;
        self.quarantine.push(QuarantinedRow {
            entity: self.entity.to_string(),
            source: self.file.source.clone(),
            file_id: self.file.file_id,
            file_name: self.file.name.clone(),
            line: line as i64,
            reason,
            detail,
            record,
            origin: None,
        });
    }
}

/// Validates reference records into canonical values.
struct RefSink {
    entity: Entity,
    /// Record column of each entity field.
    idx: Vec<Option<usize>>,
    date_format: Option<String>,
    pii: PiiKey,
    rows: Vec<Vec<Option<String>>>,
    tally: FileTally,
}

impl RefSink {
    fn new(
        entity: Entity,
        file: &FileRecord,
        schema: &FileSchema,
        mapping: &Mapping,
        pii: PiiKey,
    ) -> RefSink {
        let idx = entity
            .fields()
            .iter()
            .map(|f| {
                mapping
                    .columns
                    .iter()
                    .find(|(_, c)| c == f.name)
                    .and_then(|(src, _)| schema.layout.columns.iter().position(|c| c == src))
            })
            .collect();
        RefSink {
            entity,
            idx,
            date_format: mapping.date_format.clone(),
            pii,
            rows: Vec::new(),
            tally: FileTally::new(entity, file, &schema.layout.columns),
        }
    }

    fn convert(
        &self,
        values: &[Option<&str>],
    ) -> std::result::Result<Vec<Option<String>>, Rejection> {
        let fields = self.entity.fields();
        let mut out = Vec::with_capacity(fields.len());
        for (f, idx) in fields.iter().zip(&self.idx) {
            let raw = idx
                .and_then(|i| values.get(i).copied().flatten())
                .unwrap_or("");
            let v = if f.pii {
                values::clean_text(raw).and_then(|t| self.pii.hash(f.name, &t))
            } else if self.entity == Entity::FxRates && f.name == "month" {
                match values::clean_text(raw) {
                    None => None,
                    Some(t) => Some(
                        parse_month(&t, self.date_format.as_deref())
                            .ok_or((ReasonCode::BadDate, format!("month: {t:?} is not a month")))?,
                    ),
                }
            } else if f.name == "currency" {
                match values::normalize_currency(raw) {
                    Ok(c) => c.map(str::to_string),
                    Err(code) => {
                        return Err((
                            ReasonCode::UnknownCurrency,
                            format!("currency {code:?} is not a known ISO 4217 code"),
                        ));
                    }
                }
            } else {
                canonical(f, raw, self.date_format.as_deref())?
            };
            if f.key && v.is_none() {
                return Err((ReasonCode::MissingKey, format!("{} is empty", f.name)));
            }
            out.push(v);
        }
        // Derived: full names from first and last names.
        if let (Some(fi), Some(li), Some(ni)) = (
            pos(self.entity, "first_name"),
            pos(self.entity, "last_name"),
            pos(self.entity, "full_name"),
        ) && out[ni].is_none()
        {
            let parts: Vec<&str> = [&out[fi], &out[li]]
                .iter()
                .filter_map(|v| v.as_deref())
                .collect();
            if !parts.is_empty() {
                out[ni] = Some(parts.join(" "));
            }
        }
        // Derived: the masked phone (last four digits), the only clear form of a phone kept.
        if let (Some(pi), Some(mi)) = (pos(self.entity, "phone"), pos(self.entity, "phone_masked"))
            && out[mi].is_none()
            && let Some(raw) = self.idx[pi].and_then(|i| values.get(i).copied().flatten())
        {
            out[mi] = values::mask_phone(raw);
        }
        debug_assert!(natural_key(self.entity, &out).is_some());
        Ok(out)
    }
}

fn pos(entity: Entity, name: &str) -> Option<usize> {
    entity.fields().iter().position(|f| f.name == name)
}

impl ScanSink for RefSink {
    fn record(&mut self, line: u64, values: &[Option<&str>]) -> std::result::Result<(), ScanError> {
        self.tally.outcome.rows_in += 1;
        match self.convert(values) {
            Ok(v) => self.rows.push(v),
            Err((reason, detail)) => self.tally.reject(line, reason, detail, values),
        }
        Ok(())
    }

    fn malformed(
        &mut self,
        line: u64,
        problem: &str,
        raw: &str,
    ) -> std::result::Result<(), ScanError> {
        self.tally.malformed(line, problem, raw);
        Ok(())
    }
}

/// A reader that reports the bytes it reads as progress.
struct CountingReader<'a> {
    inner: Box<dyn Read + Send>,
    progress: &'a dyn Progress,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// A spawned task that is aborted when its handle is dropped (an early return or a panic
/// never leaves a writer running behind the run's back).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn micros_to_time(micros: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now)
}

/// The calendar from `start` to `end`.
fn dim_date_batch(start: NaiveDate, end: NaiveDate) -> Result<RecordBatch> {
    let days: Vec<NaiveDate> = start.iter_days().take_while(|d| *d <= end).collect();
    let i32s = |f: &dyn Fn(&NaiveDate) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(days.iter().map(f)))
    };
    let strs = |f: &dyn Fn(&NaiveDate) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(days.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        i32s(&|d| d.year() * 10_000 + d.month() as i32 * 100 + d.day() as i32),
        Arc::new(Date32Array::from_iter_values(
            days.iter().map(|d| days_since_epoch(*d)),
        )),
        i32s(&|d| d.year()),
        i32s(&|d| (d.month0() / 3 + 1) as i32),
        i32s(&|d| d.month() as i32),
        strs(&|d| d.format("%B").to_string()),
        strs(&|d| d.format("%Y-%m").to_string()),
        i32s(&|d| d.day() as i32),
        i32s(&|d| d.weekday().number_from_monday() as i32),
        strs(&|d| d.format("%A").to_string()),
        Arc::new(BooleanArray::from_iter(
            days.iter()
                .map(|d| Some(d.weekday().number_from_monday() >= 6)),
        )),
        i32s(&|d| d.iso_week().week() as i32),
    ];
    let schema: SchemaRef = DIM_DATE.clone();
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// Crash-test hook: `SHOPLAKE_FAILPOINT=<name>` aborts the process at that point, as a power
/// cut would. Used by the recovery tests; inert otherwise.
fn failpoint(name: &str) {
    if std::env::var("SHOPLAKE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// A run that has begun (see [`Pipeline::begin_run`]); it holds the lake's run lock until dropped.
pub struct RunStart {
    pub run_id: i64,
    /// Runs found interrupted and rolled back before this one.
    pub recovered: Vec<i64>,
    versions: BTreeMap<String, i64>,
    _lock: RunLock,
}

/// One run at a time per lake: a lock file holding the owner's pid. A lock left by a process
/// that no longer exists is taken over.
struct RunLock {
    path: PathBuf,
}

impl RunLock {
    fn acquire(state_dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(state_dir).map_err(|e| EtlError::Input {
            path: state_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = state_dir.join("run.lock");
        let me = std::process::id();
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = writeln!(f, "{me} {}", Utc::now().to_rfc3339());
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut parts = text.split_whitespace();
                    let pid: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    let since = parts.next().unwrap_or("?").to_string();
                    if pid != 0 && pid != me && Path::new(&format!("/proc/{pid}")).exists() {
                        return Err(EtlError::Locked {
                            pid,
                            since,
                            path: path.display().to_string(),
                        });
                    }
                    tracing::warn!(pid, "taking over a lock left by a process that is gone");
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    return Err(EtlError::Input {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(EtlError::Input {
            path: path.display().to_string(),
            message: "cannot take the run lock".into(),
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
