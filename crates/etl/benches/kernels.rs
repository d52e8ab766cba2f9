//! Criterion benchmarks of the ETL's hot kernels (issue 7): CSV parse + validation, the value
//! parsers, dedupe, the FX conversion and the `fact_sales` Parquet/Delta write.
//!
//! Everything runs on data from `shoplake-datagen` and through the same calls the pipeline
//! makes (`scan::scan` into `SalesTransform::process`, the run's Bloom filters, the
//! `PartitionedAppend` that writes `fact_sales`), and each bench checks its result against the
//! generator's manifest once before it is timed, so a broken kernel cannot look fast.
//!
//! ```text
//! cargo bench -p shoplake-etl --profile quick --bench kernels
//! ```

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::RecordBatch;
use shoplake_catalog::crawl::{self, FileSchema, Mapping};
use shoplake_catalog::ledger::Ledger;
use shoplake_catalog::scan::{self, ScanError, ScanSink};
use shoplake_core::values::{self, AMOUNT_SCALE, RATE_SCALE};
use shoplake_core::{Config, Entity};
use shoplake_datagen::{Expected, GenerateConfig};
use shoplake_etl::convert::parse_date;
use shoplake_etl::dedupe::{self, Bloom, InLake, LakeKeys, RunKeys};
use shoplake_etl::dim::Dim;
use shoplake_etl::pii::PiiKey;
use shoplake_etl::pipeline::{Quiet, fx_rates};
use shoplake_etl::quarantine::record_json;
use shoplake_etl::sales::{Lookups, Outcome, SalesTransform, SourceRules};
use shoplake_etl::schema::{FACT_PARTITIONS, FACT_SALES, dim_table};
use shoplake_etl::{Pipeline, ingest};
use shoplake_storage::Lake;
use shoplake_tables::{PartitionedAppend, TableId, Tables};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Sales rows generated: about 70% store sales, so the first store sales file is full.
const SALES_ROWS: u64 = 150_000;
/// Rows of that file (`rows_per_file`).
const FILE_ROWS: u64 = 100_000;
/// Keys in the dedupe benches, ~1% of them repeats.
const DEDUPE_KEYS: usize = 1_000_000;
const SOURCE: &str = "store_sales";

fn runtime() -> tokio::runtime::Runtime {
    // Multi-threaded like the CLI's: the pipeline and the writer use `block_in_place`.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A generated data set, its reference data loaded into dimensions by a real pipeline run,
/// and the first store sales file crawled the way the pipeline crawls it.
struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    csv: PathBuf,
    file_name: String,
    file_bytes: u64,
    /// What the pipeline must make of the file (from the generator's manifest).
    expected: Expected,
    rows_in: u64,
    schema: FileSchema,
    mapping: Mapping,
    dims: BTreeMap<Entity, Dim>,
    fx: HashMap<(String, i32), i128>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let generate = GenerateConfig {
            sales_rows: SALES_ROWS,
            rows_per_file: FILE_ROWS,
            ..GenerateConfig::default()
        };
        let report = shoplake_datagen::generate(&generate, &data, &|_| {}).expect("generate");
        let sales_file = report
            .files
            .iter()
            .find(|f| f.source == SOURCE && f.path.ends_with(".csv"))
            .expect("a plain CSV store sales file");
        assert_eq!(sales_file.rows, FILE_ROWS, "{}", sales_file.path);
        let csv = data.join(&sales_file.path);
        let file_name = csv.file_name().unwrap().to_string_lossy().into_owned();
        let file_bytes = std::fs::metadata(&csv).expect("sales file").len();

        // The reference data through the pipeline, then the dimensions as a run loads them.
        let config = Config::default();
        let lake_dir = dir.path().join("lake");
        let lake = Lake::open(lake_dir.to_str().unwrap()).expect("lake");
        let state = lake_dir.join("_control");
        let ledger = Arc::new(Ledger::open(&state.join("shoplake.db")).expect("ledger"));
        let pipeline = Pipeline::new(
            lake,
            ledger.clone(),
            config.clone(),
            PiiKey::new(b"bench-pii-key".to_vec()),
            state,
        );
        let dims = runtime().block_on(async {
            let mut candidates = Vec::new();
            for f in report.files.iter().filter(|f| f.expected.is_none()) {
                candidates.extend(
                    ingest::candidates(&[data.join(&f.path)], Some(&f.source)).expect("candidate"),
                );
            }
            ingest::ingest(pipeline.lake(), &ledger, &candidates)
                .await
                .expect("ingest");
            let run = pipeline.run(&Quiet).await.expect("reference run");
            assert!(run.failed.is_empty(), "{:?}", run.failed);
            let mut dims = BTreeMap::new();
            for e in [
                Entity::Products,
                Entity::Customers,
                Entity::Stores,
                Entity::SalesTeam,
                Entity::FxRates,
            ] {
                let id = TableId::processed(dim_table(e).0);
                let (_, batches) = pipeline
                    .tables()
                    .read_all(&id)
                    .await
                    .expect("read dim")
                    .unwrap_or_else(|| panic!("{} was not written", id.display()));
                let dim = Dim::from_batches(e, &batches).expect("dim");
                assert!(!dim.is_empty(), "{} is empty", id.display());
                dims.insert(e, dim);
            }
            dims
        });
        let fx = fx_rates(&dims[&Entity::FxRates]);
        assert!(!fx.is_empty());

        // Crawl as `Pipeline::crawl_file` does: infer from the head, propose a mapping.
        let mut sample = Vec::new();
        std::fs::File::open(&csv)
            .expect("sales file")
            .take((1 << 20) + 1)
            .read_to_end(&mut sample)
            .expect("read head");
        let complete = sample.len() <= 1 << 20;
        sample.truncate(1 << 20);
        let sources = config.sources.get(SOURCE);
        let schema = crawl::infer_with(&file_name, &sample, complete, sources).expect("infer");
        let mapping =
            crawl::propose_mapping(SOURCE, &file_name, &schema, sources).expect("mapping");
        assert_eq!(mapping.entity, Entity::Sales);

        Fixture {
            _dir: dir,
            config,
            csv,
            file_name,
            file_bytes,
            expected: sales_file.expected.clone().expect("sales file outcome"),
            rows_in: sales_file.rows,
            schema,
            mapping,
            dims,
            fx,
        }
    }

    /// Canonical field -> record column, as `pipeline::field_columns`.
    fn columns(&self) -> HashMap<String, usize> {
        self.mapping
            .columns
            .iter()
            .filter_map(|(src, canon)| {
                self.schema
                    .layout
                    .columns
                    .iter()
                    .position(|c| c == src)
                    .map(|i| (canon.clone(), i))
            })
            .collect()
    }

    /// The source's transform settings, as `Pipeline::rules` makes them with this config.
    fn rules(&self) -> SourceRules {
        let p = &self.config.pipeline;
        SourceRules {
            source: SOURCE.to_string(),
            date_format: self.mapping.date_format.clone(),
            default_currency: values::normalize_currency(&p.default_currency)
                .ok()
                .flatten()
                .unwrap_or("USD"),
            // `store_sales` names no online channel.
            default_channel: "store".to_string(),
            unknown_members: p.unknown_members,
        }
    }

    /// Fresh lookups for one run over the file into an empty lake, as `Pipeline::load_sales`
    /// sets them up (the run's keys in a filter sized from the input).
    fn lookups(&self) -> Lookups {
        Lookups {
            products: self.dims[&Entity::Products].clone(),
            customers: self.dims[&Entity::Customers].clone(),
            stores: self.dims[&Entity::Stores].clone(),
            sales_team: self.dims[&Entity::SalesTeam].clone(),
            fx: self.fx.clone(),
            seen: RunKeys::Filter(Bloom::with_capacity((self.file_bytes / 40) as usize)),
            lake: LakeKeys::Empty,
        }
    }

    /// The text of some source columns (by canonical field) of every record.
    fn column_values(&self, fields: &[&str]) -> Vec<Vec<String>> {
        let by_field: HashMap<&str, &str> = self
            .mapping
            .columns
            .iter()
            .map(|(src, canon)| (canon.as_str(), src.as_str()))
            .collect();
        let wanted: Vec<String> = fields.iter().map(|f| by_field[f].to_string()).collect();
        struct Collect(Vec<Vec<String>>);
        impl ScanSink for Collect {
            fn record(&mut self, _: u64, values: &[Option<&str>]) -> Result<(), ScanError> {
                let row = values.iter().map(|v| v.unwrap_or("").to_string());
                self.0.push(row.collect());
                Ok(())
            }
            fn malformed(&mut self, line: u64, problem: &str, _: &str) -> Result<(), ScanError> {
                panic!("line {line}: {problem}")
            }
        }
        let mut sink = Collect(Vec::new());
        let file = std::fs::File::open(&self.csv).expect("sales file");
        scan::scan(
            &self.file_name,
            file,
            &self.schema.layout,
            &wanted,
            &mut sink,
        )
        .expect("scan");
        sink.0
    }

    fn quarantined(&self, reason: &str) -> u64 {
        self.expected.quarantined.get(reason).copied().unwrap_or(0)
    }
}

// ------------------------------------------------------------------------- CSV + validation

/// The pipeline's `SalesSink`, minus the channels: fact batches of `batch_size` rows are kept
/// instead of sent to the writer, rejects are turned into their quarantine record JSON.
struct Sink<'a, 'l> {
    t: SalesTransform<'l>,
    columns: &'a [String],
    batch_size: usize,
    out: Scanned,
    quarantine: Vec<String>,
}

impl Sink<'_, '_> {
    fn flush(&mut self, end: bool) {
        let min = if end { 1 } else { self.batch_size };
        if self.t.out.rows() >= min {
            self.out.facts.push(self.t.out.finish());
        }
        if self.t.held.rows() >= min {
            let batch = self.t.held.finish();
            self.out
                .held
                .push((batch, std::mem::take(&mut self.t.held_inferred)));
        }
    }
}

impl ScanSink for Sink<'_, '_> {
    fn record(&mut self, line: u64, values: &[Option<&str>]) -> Result<(), ScanError> {
        self.out.rows_in += 1;
        match self.t.process(line, values) {
            Outcome::Loaded => self.out.loaded += 1,
            Outcome::Duplicate => self.out.duplicates += 1,
            Outcome::Rejected(reason, detail) => {
                *self
                    .out
                    .rejected
                    .entry(reason.as_str().to_string())
                    .or_default() += 1;
                self.quarantine.push(record_json(self.columns, values));
                black_box(detail);
            }
        }
        self.flush(false);
        Ok(())
    }

    fn malformed(&mut self, line: u64, problem: &str, _raw: &str) -> Result<(), ScanError> {
        panic!("line {line}: {problem}")
    }
}

#[derive(Default)]
struct Scanned {
    facts: Vec<RecordBatch>,
    held: Vec<(RecordBatch, Vec<u8>)>,
    rows_in: u64,
    loaded: u64,
    duplicates: u64,
    rejected: BTreeMap<String, u64>,
}

/// Scan the file and run every record through the sales transform, as `scan_sales` does.
fn scan_sales(fx: &Fixture, lookups: &mut Lookups) -> Scanned {
    let columns = fx.columns();
    let batch_size = fx.config.pipeline.batch_size;
    let mut sink = Sink {
        t: SalesTransform::new(lookups, fx.rules(), &columns, 1, 1, 0, batch_size),
        columns: &fx.schema.layout.columns,
        batch_size,
        out: Scanned::default(),
        quarantine: Vec::new(),
    };
    let file = std::fs::File::open(&fx.csv).expect("sales file");
    scan::scan(
        &fx.file_name,
        file,
        &fx.schema.layout,
        &fx.schema.layout.columns,
        &mut sink,
    )
    .expect("scan");
    sink.flush(true);
    sink.out
}

/// Settle the held rows exactly, as `Pipeline::settle_held` does for a run into an empty
/// lake, and check the whole outcome against the manifest. Returns every `fact_sales` row.
fn check_scan(fx: &Fixture, s: Scanned) -> Vec<RecordBatch> {
    let e = &fx.expected;
    assert_eq!(s.rows_in, fx.rows_in);
    assert_eq!(s.rejected, e.quarantined, "quarantine reasons");
    assert_eq!(s.duplicates, 0, "the run's filter holds rows back instead");
    assert_eq!(s.loaded, e.loaded + e.duplicates);
    let key_set = |b: &RecordBatch| -> HashSet<u128> {
        dedupe::key_column(b)
            .unwrap()
            .iter()
            .flatten()
            .filter_map(dedupe::key_of)
            .collect()
    };
    let held_keys: HashSet<u128> = s.held.iter().flat_map(|(b, _)| key_set(b)).collect();
    let existing: HashSet<u128> = s
        .facts
        .iter()
        .flat_map(key_set)
        .filter(|k| held_keys.contains(k))
        .collect();
    let (mut earlier, mut dropped, mut dropped_inferred) =
        (HashSet::new(), BTreeMap::new(), (0, 0));
    let mut rows = s.facts;
    for (batch, inferred) in &s.held {
        rows.push(
            dedupe::settle(
                batch,
                inferred,
                &existing,
                &mut earlier,
                &mut dropped,
                &mut dropped_inferred,
            )
            .unwrap(),
        );
    }
    let loaded: usize = rows.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(loaded as u64, e.loaded, "rows loaded after the exact check");
    assert_eq!(
        dropped.values().sum::<i64>() as u64,
        e.duplicates,
        "duplicates"
    );
    rows
}

fn bench_csv(c: &mut Criterion, fx: &Fixture) -> Vec<RecordBatch> {
    let facts = check_scan(fx, scan_sales(fx, &mut fx.lookups()));
    let mut g = c.benchmark_group("csv");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(fx.rows_in));
    g.bench_function("parse_validate_transform", |b| {
        b.iter_batched(
            || fx.lookups(),
            |mut lookups| {
                let s = scan_sales(fx, &mut lookups);
                (s, lookups)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    facts
}

// ------------------------------------------------------------------------- value kernels

fn bench_values(c: &mut Criterion, fx: &Fixture) {
    let rows = fx.column_values(&["sales_date", "amount", "region"]);
    let n = rows.len();
    assert_eq!(n as u64, fx.rows_in);
    let dates: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let amounts: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    let regions: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();

    // Every unreadable date is a planted bad date, and the other way round.
    let bad_dates = dates
        .iter()
        .filter(|d| values::parse_date_iso(d).is_none())
        .count();
    assert_eq!(bad_dates as u64, fx.quarantined("bad_date"));
    // Unreadable amounts are some of the planted bad numbers (the others are quantities).
    let parsed: Vec<_> = amounts
        .iter()
        .map(|a| values::parse_decimal(a, AMOUNT_SCALE))
        .collect();
    let bad = parsed.iter().filter(|p| p.is_err()).count() as u64;
    assert!(bad > 0 && bad <= fx.quarantined("bad_number"), "{bad}");
    assert!(parsed.iter().filter(|p| matches!(p, Ok(Some(_)))).count() > n * 9 / 10);
    assert_eq!(
        values::parse_decimal("1,234.565", AMOUNT_SCALE),
        Ok(Some(123_457))
    );
    // Every region normalises to a canonical one; the messy spellings are the planted ones.
    let mut messy = 0;
    for r in &regions {
        let canon = values::normalize_region(r).expect("a region");
        assert!(
            values::REGIONS.contains(&canon.as_str()),
            "{r:?} -> {canon}"
        );
        messy += u64::from(canon != *r);
    }
    assert_eq!(messy, fx.expected.messy_region);

    let mut g = c.benchmark_group("values");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(n as u64));
    g.bench_function("parse_decimal", |b| {
        b.iter(|| {
            amounts
                .iter()
                .filter(|a| {
                    matches!(
                        values::parse_decimal(black_box(a), AMOUNT_SCALE),
                        Ok(Some(_))
                    )
                })
                .count()
        })
    });
    g.bench_function("parse_date_iso", |b| {
        b.iter(|| {
            dates
                .iter()
                .filter(|d| values::parse_date_iso(black_box(d)).is_some())
                .count()
        })
    });
    g.bench_function("normalize_region", |b| {
        b.iter(|| {
            regions
                .iter()
                .filter_map(|r| values::normalize_region(black_box(r)))
                .count()
        })
    });
    g.finish();
}

// ------------------------------------------------------------------------- dedupe

fn key(i: u64) -> u128 {
    xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
}

/// `n` keys, every 100th a repeat of a key 50 places earlier.
fn keys_with_repeats(n: usize) -> (Vec<u128>, usize) {
    let mut keys = Vec::with_capacity(n);
    let mut repeats = 0;
    for i in 0..n {
        if i % 100 == 99 {
            keys.push(keys[i - 50]);
            repeats += 1;
        } else {
            keys.push(key(i as u64));
        }
    }
    (keys, repeats)
}

/// Every key through the run's filter, then (when new) the lake's, as `SalesTransform::process`.
fn run_dedupe(keys: &[u128], lake: &LakeKeys) -> (usize, usize) {
    let mut seen = RunKeys::Filter(Bloom::with_capacity(keys.len()));
    let (mut held, mut dup) = (0, 0);
    for &k in keys {
        let state = match seen.check_insert(k) {
            InLake::No => lake.check(k),
            s => s,
        };
        match state {
            InLake::No => {}
            InLake::Maybe => held += 1,
            InLake::Yes => dup += 1,
        }
    }
    (held, dup)
}

fn bench_dedupe(c: &mut Criterion) {
    let n = DEDUPE_KEYS;
    let (keys, repeats) = keys_with_repeats(n);
    // Every repeat is held for the exact check, and at most 0.5% of the new keys with it.
    let (held, dup) = run_dedupe(&keys, &LakeKeys::Empty);
    assert_eq!(dup, 0);
    assert!(held >= repeats && held < repeats + n / 200, "{held}");

    // An incremental load: the lake holds 1M keys, 1% of the new keys are among them.
    let mut bloom = Bloom::with_capacity(n);
    (0..n as u64).for_each(|i| bloom.insert(key(i + (1 << 40))));
    let lake = LakeKeys::Filter { bloom, version: 0 };
    let incoming: Vec<u128> = (0..n as u64)
        .map(|i| {
            if i % 100 == 0 {
                key(i + (1 << 40))
            } else {
                key(i)
            }
        })
        .collect();
    let in_lake = n.div_ceil(100);
    let (held, dup) = run_dedupe(&incoming, &lake);
    assert_eq!(dup, 0);
    assert!(held >= in_lake && held < in_lake + n / 100, "{held}");

    let mut g = c.benchmark_group("dedupe");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(n as u64));
    g.bench_function("run_filter_1m", |b| {
        b.iter(|| run_dedupe(black_box(&keys), &LakeKeys::Empty))
    });
    g.bench_function("run_and_lake_filter_1m", |b| {
        b.iter(|| run_dedupe(black_box(&incoming), &lake))
    });
    g.finish();
}

// ------------------------------------------------------------------------- FX

/// Rate lookup and conversion as `SalesTransform` does them; `None` when no rate is known.
fn to_usd(
    fx: &HashMap<(String, i32), i128>,
    amount: i128,
    currency: &str,
    ym: i32,
) -> Option<i128> {
    let rate = if currency == "USD" {
        10i128.pow(RATE_SCALE)
    } else {
        *fx.get(&(currency.to_string(), ym))?
    };
    Some(values::mul_round(
        amount,
        AMOUNT_SCALE,
        rate,
        RATE_SCALE,
        AMOUNT_SCALE,
    ))
}

fn convert_all(
    fx: &HashMap<(String, i32), i128>,
    rows: &[(i128, &'static str, i32)],
) -> (i128, usize) {
    let (mut total, mut missing) = (0i128, 0);
    for &(amount, currency, ym) in rows {
        match to_usd(fx, amount, currency, ym) {
            Some(usd) => total += usd,
            None => missing += 1,
        }
    }
    (total, missing)
}

fn bench_fx(c: &mut Criterion, fx: &Fixture) {
    let date_format = fx.mapping.date_format.as_deref();
    let default_currency = fx.rules().default_currency;
    // Rows whose date, amount and currency are readable.
    let rows: Vec<(i128, &'static str, i32)> = fx
        .column_values(&["sales_date", "amount", "currency"])
        .iter()
        .filter_map(|r| {
            use chrono::Datelike;
            let date = parse_date(&r[0], date_format)?;
            let amount = values::parse_decimal(&r[1], AMOUNT_SCALE).ok().flatten()?;
            let currency = values::normalize_currency(&r[2])
                .ok()?
                .unwrap_or(default_currency);
            Some((amount, currency, date.year() * 100 + date.month() as i32))
        })
        .collect();
    let (_, missing) = convert_all(&fx.fx, &rows);
    // The only rates missing are the planted ones.
    assert_eq!(missing as u64, fx.quarantined("missing_fx_rate"));
    let foreign = rows.iter().filter(|r| r.1 != "USD").count();
    assert!(
        foreign > rows.len() / 20,
        "{foreign} of {} not in USD",
        rows.len()
    );
    for &(amount, currency, ym) in &rows {
        let Some(usd) = to_usd(&fx.fx, amount, currency, ym) else {
            continue;
        };
        let rate = if currency == "USD" {
            1.0
        } else {
            fx.fx[&(currency.to_string(), ym)] as f64 / 1e8
        };
        let want = (amount as f64 / 100.0 * rate * 100.0).round();
        assert!(
            (usd as f64 - want).abs() <= 1.0,
            "{amount} {currency} -> {usd}"
        );
    }

    let mut g = c.benchmark_group("fx");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("lookup_and_convert", |b| {
        b.iter(|| convert_all(&fx.fx, black_box(&rows)))
    });
    g.finish();
}

// ------------------------------------------------------------------------- Parquet/Delta write

/// Write the rows into `fact_sales` of a new lake as `Pipeline::load_sales` does: spill by
/// partition, then encode and commit. Returns the new version.
fn write_facts(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    root: &Path,
    batches: &[RecordBatch],
) -> i64 {
    let lake = Lake::open(root.join("lake").to_str().unwrap()).expect("lake");
    let tables = Tables::new(lake)
        .with_target_file_size(config.pipeline.target_file_mb as u64 * 1024 * 1024);
    let mut append = PartitionedAppend::new(
        &TableId::processed("fact_sales"),
        FACT_SALES.clone(),
        &FACT_PARTITIONS,
        &root.join("tmp"),
    )
    .expect("spill dir");
    for b in batches {
        append.push(b).expect("spill");
    }
    rt.block_on(append.commit(&tables, 1, &|_: u64| {}))
        .expect("commit")
}

fn bench_write(c: &mut Criterion, fx: &Fixture, facts: &[RecordBatch]) {
    let rt = runtime();
    let rows: usize = facts.iter().map(RecordBatch::num_rows).sum();
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(write_facts(&rt, &fx.config, dir.path(), facts), 0);
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    let (_, back) = rt
        .block_on(Tables::new(lake).read_all(&TableId::processed("fact_sales")))
        .unwrap()
        .expect("fact_sales written");
    assert_eq!(back.iter().map(RecordBatch::num_rows).sum::<usize>(), rows);
    drop(dir);

    let mut g = c.benchmark_group("write");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(rows as u64));
    g.bench_function("fact_sales_partitioned_delta", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |dir| {
                let v = write_facts(&rt, &fx.config, dir.path(), facts);
                (v, dir)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    bench_dedupe(c);
    let fx = Fixture::new();
    bench_values(c, &fx);
    bench_fx(c, &fx);
    let facts = bench_csv(c, &fx);
    bench_write(c, &fx, &facts);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
