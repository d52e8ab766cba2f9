//! Replaying quarantined rows after their cause was fixed (a mapping corrected in
//! `shoplake.toml`, a missing FX rate or product added). Each row is read back from its
//! original values and goes through exactly the checks of a normal run, with the source's
//! current mapping and the current reference data. Rows that now load (or turn out to be
//! duplicates) leave the quarantine; the rest stay, with their reason brought up to date.
//! The ledger moves the counts, so rows in = loaded + quarantined + duplicates still holds.

use super::*;
use crate::quarantine::{self, QuarantinedRow};

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    pub run_id: i64,
    pub replayed: u64,
    pub loaded: u64,
    pub duplicates: u64,
    pub still_quarantined: u64,
    pub still_by_reason: BTreeMap<String, u64>,
}

/// The values of a record's columns, from the JSON object kept in quarantine.
fn values_from_record(record: &str, columns: &[String]) -> Vec<Option<String>> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(record).unwrap_or_default();
    columns
        .iter()
        .map(|c| match obj.get(c) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        })
        .collect()
}

struct FilePlan {
    file: FileRecord,
    entity: Entity,
    schema: FileSchema,
    mapping: Mapping,
}

impl Pipeline {
    /// Replay quarantined rows, optionally only of one source and/or reason. Malformed rows
    /// (records that could not be parsed at all) are not replayed: fix the file and ingest it.
    pub async fn replay(
        &self,
        source: Option<&str>,
        reason: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<ReplayReport> {
        let _lock = RunLock::acquire(&self.state_dir)?;
        self.recover(progress).await?;
        let Some((_, batches)) = self.tables.read_all(&TableId::quarantine()).await? else {
            return Ok(ReplayReport::default());
        };
        let all = quarantine::from_batches(&batches).map_err(EtlError::Internal)?;
        let (selected, keep): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| {
            source.is_none_or(|s| r.source == s)
                && reason.is_none_or(|x| r.reason.as_str() == x)
                && r.reason != ReasonCode::MalformedRow
        });
        if selected.is_empty() {
            return Ok(ReplayReport::default());
        }
        let versions = self.table_versions().await?;
        let run_id = self.ledger.start_run("replay", &versions)?;
        match self.replay_inner(run_id, selected, keep, progress).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.rollback(run_id, &versions).await?;
                self.ledger.fail_run(run_id, &e.to_string())?;
                Err(e)
            }
        }
    }

    async fn replay_inner(
        &self,
        run_id: i64,
        mut selected: Vec<QuarantinedRow>,
        mut keep: Vec<QuarantinedRow>,
        progress: &dyn Progress,
    ) -> Result<ReplayReport> {
        let now = Utc::now().timestamp_micros();
        let mut report = ReplayReport {
            run_id,
            replayed: selected.len() as u64,
            ..Default::default()
        };
        progress.stage("replay", selected.len() as u64);

        // How each file reads now: its layout from the catalog, its mapping re-proposed with
        // the current configuration.
        let mut plans: HashMap<i64, Option<FilePlan>> = HashMap::new();
        for r in &selected {
            if plans.contains_key(&r.file_id) {
                continue;
            }
            let plan = self.plan_for(r.file_id)?;
            if plan.is_none() {
                progress.note(&format!(
                    "{}: its mapping still does not work; its rows stay in quarantine",
                    r.file_name
                ));
            }
            plans.insert(r.file_id, plan);
        }
        let order = |e: &str| {
            Entity::ALL
                .iter()
                .position(|x| x.as_str() == e)
                .unwrap_or(usize::MAX)
        };
        selected.sort_by_key(|r| (order(&r.entity), r.file_id, r.line));

        let mut reasons: BTreeMap<(i64, String), i64> = BTreeMap::new();
        let mut files: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        let mut dims = self.load_dims().await?;
        let mut failed_again: Vec<(QuarantinedRow, ReasonCode, String)> = Vec::new();

        // Reference rows first, so sales resolve against them.
        let (reference, sales): (Vec<_>, Vec<_>) = selected
            .into_iter()
            .partition(|r| r.entity != Entity::Sales.as_str());
        for row in reference {
            progress.advance(1);
            let Some(Some(plan)) = plans.get(&row.file_id) else {
                keep.push(row);
                continue;
            };
            let values = values_from_record(&row.record, &plan.schema.layout.columns);
            let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
            let sink = RefSink::new(
                plan.entity,
                &plan.file,
                &plan.schema,
                &plan.mapping,
                self.pii.clone(),
            );
            match sink.convert(&refs) {
                Ok(v) => {
                    let dim = dims
                        .by_entity
                        .get_mut(&plan.entity)
                        .expect("reference entity");
                    let entry = files.entry(row.file_id).or_default();
                    match dim.apply(v, now, row.file_id) {
                        Applied::Loaded => entry.0 += 1,
                        Applied::Duplicate => entry.1 += 1,
                    }
                    *reasons
                        .entry((row.file_id, row.reason.as_str().to_string()))
                        .or_default() -= 1;
                }
                Err((r, d)) => failed_again.push((row, r, d)),
            }
        }

        // Sales rows, file by file, through the normal transform.
        let mut fact_batches = Vec::new();
        let mut date_range: Option<(NaiveDate, NaiveDate)> = None;
        if !sales.is_empty() {
            let mut lookups = make_lookups(dims.clone(), self.existing_sale_keys().await?);
            let mut by_file: BTreeMap<i64, Vec<QuarantinedRow>> = BTreeMap::new();
            for r in sales {
                by_file.entry(r.file_id).or_default().push(r);
            }
            for (file_id, rows) in by_file {
                let Some(Some(plan)) = plans.get(&file_id) else {
                    keep.extend(rows);
                    continue;
                };
                let columns = field_columns(&plan.mapping, &plan.schema);
                let rules = self.rules(&plan.file, &plan.mapping);
                let mut t = SalesTransform::new(
                    &mut lookups,
                    rules,
                    &columns,
                    file_id,
                    run_id,
                    now,
                    rows.len(),
                );
                for row in rows {
                    progress.advance(1);
                    let values = values_from_record(&row.record, &plan.schema.layout.columns);
                    let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
                    match t.process(row.line as u64, &refs) {
                        Outcome::Loaded => {
                            files.entry(file_id).or_default().0 += 1;
                            *reasons
                                .entry((file_id, row.reason.as_str().to_string()))
                                .or_default() -= 1;
                        }
                        Outcome::Duplicate => {
                            files.entry(file_id).or_default().1 += 1;
                            *reasons
                                .entry((file_id, row.reason.as_str().to_string()))
                                .or_default() -= 1;
                        }
                        Outcome::Rejected(r, d) => failed_again.push((row, r, d)),
                    }
                }
                if let Some((lo, hi)) = t.date_range {
                    date_range = Some(date_range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                }
                if t.out.rows() > 0 {
                    fact_batches.push(t.out.finish());
                }
            }
            dims.by_entity.insert(Entity::Products, lookups.products);
            dims.by_entity.insert(Entity::Customers, lookups.customers);
            dims.by_entity.insert(Entity::Stores, lookups.stores);
            dims.by_entity.insert(Entity::SalesTeam, lookups.sales_team);
        }
        progress.done();

        for (mut row, r, d) in failed_again {
            if r != row.reason {
                *reasons
                    .entry((row.file_id, row.reason.as_str().to_string()))
                    .or_default() -= 1;
                *reasons
                    .entry((row.file_id, r.as_str().to_string()))
                    .or_default() += 1;
                row.reason = r;
            }
            row.detail = d;
            *report
                .still_by_reason
                .entry(r.as_str().to_string())
                .or_default() += 1;
            report.still_quarantined += 1;
            keep.push(row);
        }

        // Commit: facts, dimensions, calendar, the quarantine without the rows that left it.
        if !fact_batches.is_empty() {
            let id = TableId::processed("fact_sales");
            self.tables
                .write_batches(
                    &id,
                    FACT_SALES.clone(),
                    fact_batches,
                    &FACT_PARTITIONS,
                    WriteMode::Append,
                    run_id,
                )
                .await?;
        }
        for (entity, dim) in &dims.by_entity {
            if dim.changed() {
                let (schema, batch) = dim.to_batch()?;
                let id = TableId::processed(dim_table(*entity).0);
                self.tables
                    .write_batches(&id, schema, vec![batch], &[], WriteMode::Overwrite, run_id)
                    .await?;
            }
        }
        if let Some((lo, hi)) = date_range {
            self.extend_dim_date(lo, hi, run_id).await?;
        }
        keep.sort_by_key(|r| (r.file_id, r.line));
        let batch = quarantine::to_batch(&keep, run_id, now);
        self.tables
            .write_batches(
                &TableId::quarantine(),
                QUARANTINE.clone(),
                vec![batch],
                &["source"],
                WriteMode::Overwrite,
                run_id,
            )
            .await?;
        failpoint("replay-before-ledger");

        report.loaded = files.values().map(|f| f.0 as u64).sum();
        report.duplicates = files.values().map(|f| f.1 as u64).sum();
        let reasons: Vec<(i64, String, i64)> = reasons
            .into_iter()
            .filter(|(_, d)| *d != 0)
            .map(|((f, r), d)| (f, r, d))
            .collect();
        let files: Vec<(i64, i64, i64)> = files.into_iter().map(|(f, (l, d))| (f, l, d)).collect();
        self.ledger.record_replay(run_id, &reasons, &files)?;
        Ok(report)
    }

    fn plan_for(&self, file_id: i64) -> Result<Option<FilePlan>> {
        let Some(file) = self.ledger.file(file_id)? else {
            return Ok(None);
        };
        let Some(version) = file.catalog_version else {
            return Ok(None);
        };
        let Some(entry) = self.ledger.catalog_version(&file.source, version)? else {
            return Ok(None);
        };
        let (schema, _) = parse_entry(&entry)?;
        let Ok(mapping) = crawl::propose_mapping(
            &file.source,
            &file.name,
            &schema,
            self.config.sources.get(&file.source),
        ) else {
            return Ok(None);
        };
        Ok(Some(FilePlan {
            entity: mapping.entity,
            file,
            schema,
            mapping,
        }))
    }
}
