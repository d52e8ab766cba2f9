//! Seeded generator of messy retail source files: the start of shoplake's flow
//! (sources -> raw zone -> crawl -> validate -> ...), used by `shoplake generate`, the demo,
//! tests and benchmarks.
//!
//! [`generate`] writes one folder per source under an output folder — reference data (FX rates,
//! stores, products, customers, sales team, campaigns) and sales split into many files (store
//! sales as CSV and gzipped CSV, e-commerce orders as NDJSON and JSON arrays) — with defects
//! planted at the rates of [`DefectRates`]: each defective row carries exactly one defect. The
//! returned [`GenerateReport`] (also written to `manifest.json`) says exactly what the pipeline
//! must make of the sales rows: how many load, how many are duplicates, how many are
//! quarantined and why. The output is a pure function of the [`GenerateConfig`], whatever the
//! number of threads.
//!
//! ```
//! use shoplake_datagen::{GenerateConfig, generate};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = GenerateConfig { sales_rows: 2_000, rows_per_file: 500, ..GenerateConfig::default() };
//! let report = generate(&config, dir.path(), &|_rows| {}).unwrap();
//! let e = &report.expected;
//! assert_eq!(report.sales_rows_in, 2_000);
//! assert_eq!(report.sales_rows_in, e.loaded + e.duplicates + e.quarantined.values().sum::<u64>());
//! assert!(dir.path().join("store_sales/store_sales_0003.csv.gz").exists());
//! assert!(dir.path().join("ecommerce/orders_0001.ndjson").exists());
//! ```

mod rng;
mod sales;
mod text;
mod world;

use chrono::{Datelike, NaiveDate};
use sales::{Plan, Sales, Source, Tally};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use world::World;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// Everything generated follows from the seed.
    pub seed: u64,
    /// Sales rows across all sales files, duplicates and defective rows included: about 70% store
    /// sales, 30% e-commerce orders.
    pub sales_rows: u64,
    /// First day of sales (default 2025-01-01).
    pub start_date: NaiveDate,
    /// Last day of sales, inclusive (default 2025-06-30).
    pub end_date: NaiveDate,
    pub customers: u64,
    pub products: u64,
    pub stores: u64,
    /// Sales rows per file; the last file of each source holds the rest.
    pub rows_per_file: u64,
    /// Compress every third store sales file (`store_sales_0003.csv.gz`, ...).
    pub gzip: bool,
    pub defects: DefectRates,
    /// Files written at once; 0 means one per available core.
    pub threads: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            seed: 42,
            sales_rows: 100_000,
            start_date: NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date"),
            end_date: NaiveDate::from_ymd_opt(2025, 6, 30).expect("valid date"),
            customers: 5_000,
            products: 500,
            stores: 20,
            rows_per_file: 250_000,
            gzip: true,
            defects: DefectRates::default(),
            threads: 0,
        }
    }
}

/// Per-row probabilities of each defect (except `unfillable_share`, a share of the
/// missing-amount rows). A row carries at most one defect. All zero gives clean data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefectRates {
    /// Amount left empty (`null` in JSON).
    pub missing_amount: f64,
    /// Share of the missing-amount rows whose unit price is empty too, so the amount cannot be
    /// computed (quarantined `missing_amount`); the others load with amount = quantity x price.
    pub unfillable_share: f64,
    /// Status `OUT` with a large quantity: loaded and flagged.
    pub outlier: f64,
    /// A clean row repeated verbatim later in the same file.
    pub dup_in_file: f64,
    /// A clean row of the previous file of the same source repeated verbatim.
    pub dup_across_files: f64,
    /// A date (timestamp) no date format reads.
    pub bad_date: f64,
    /// Quantity (store sales only) or amount that is not a number.
    pub bad_number: f64,
    /// Region written messily (` north `, `N.`, `Northern` ...): loaded, normalised.
    pub messy_region: f64,
    /// A currency code shoplake does not know (`XYZ` ...).
    pub unknown_currency: f64,
    /// JPY in the last month of the range, which `fx_rates.csv` has no JPY rate for.
    pub missing_fx_rate: f64,
    /// A product id not in `products.json` (store sales only; orders name real products).
    pub unknown_product: f64,
    /// A customer id not in `customers.ndjson`.
    pub unknown_customer: f64,
    /// Empty customer id (`""`, or `null` in some orders).
    pub missing_key: f64,
}

impl Default for DefectRates {
    fn default() -> Self {
        DefectRates {
            missing_amount: 0.05,
            unfillable_share: 0.4,
            outlier: 0.01,
            dup_in_file: 0.005,
            dup_across_files: 0.005,
            bad_date: 0.003,
            bad_number: 0.003,
            messy_region: 0.05,
            unknown_currency: 0.002,
            missing_fx_rate: 0.002,
            unknown_product: 0.002,
            unknown_customer: 0.003,
            missing_key: 0.002,
        }
    }
}

impl DefectRates {
    /// The per-row rates by name, in the order the generator stacks them on `[0, 1)` (see
    /// `sales::DEFECT_FATES`); `unfillable_share` is not one of them.
    fn per_row(&self) -> [(&'static str, f64); 12] {
        [
            ("missing_amount", self.missing_amount),
            ("outlier", self.outlier),
            ("dup_in_file", self.dup_in_file),
            ("dup_across_files", self.dup_across_files),
            ("bad_date", self.bad_date),
            ("bad_number", self.bad_number),
            ("messy_region", self.messy_region),
            ("unknown_currency", self.unknown_currency),
            ("missing_fx_rate", self.missing_fx_rate),
            ("unknown_product", self.unknown_product),
            ("unknown_customer", self.unknown_customer),
            ("missing_key", self.missing_key),
        ]
    }

    /// No defects at all: clean data.
    pub fn none() -> Self {
        DefectRates {
            missing_amount: 0.0,
            unfillable_share: 0.0,
            outlier: 0.0,
            dup_in_file: 0.0,
            dup_across_files: 0.0,
            bad_date: 0.0,
            bad_number: 0.0,
            messy_region: 0.0,
            unknown_currency: 0.0,
            missing_fx_rate: 0.0,
            unknown_product: 0.0,
            unknown_customer: 0.0,
            missing_key: 0.0,
        }
    }
}

/// What was written, and what the pipeline must make of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateReport {
    /// Every file written, reference data first, then sales files in name order per source.
    pub files: Vec<FileReport>,
    /// Sales data rows written (header lines excluded), duplicates and defective rows included;
    /// equal to `config.sales_rows`, and to `loaded + duplicates + sum(quarantined)`.
    pub sales_rows_in: u64,
    /// Outcome of all sales rows under the default pipeline policy (unknown members inferred).
    pub expected: Expected,
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    /// Relative to the output folder, `/`-separated: `store_sales/store_sales_0001.csv`.
    pub path: String,
    /// The source, which is also the folder name: `store_sales`, `ecommerce`, `stores` ...
    pub source: String,
    /// Data rows (records) in the file, header excluded.
    pub rows: u64,
    /// For sales files: the outcome of this file's rows when the source's files are processed
    /// in name order (a copy of a row of the previous file is this file's duplicate).
    /// `inferred_customers`/`inferred_products` count distinct ids within this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

/// What the pipeline must do with the sales rows. Every sales row is exactly one of loaded,
/// duplicate or quarantined; the other counts are subsets of `loaded`, and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Rows that land in `fact_sales`: clean rows, and rows with a defect the pipeline repairs
    /// or flags (amount filled, outlier, messy region, unknown customer or product).
    pub loaded: u64,
    /// Copies of a transaction already seen (same file or an earlier one): dropped.
    pub duplicates: u64,
    /// Rows quarantined, by `ReasonCode::as_str()`; only reasons with at least one row appear.
    pub quarantined: BTreeMap<String, u64>,
    /// Loaded rows whose empty amount was computed as quantity x unit price.
    pub amount_filled: u64,
    /// Loaded rows with status `OUT`.
    pub outliers: u64,
    /// Loaded rows whose region text is not canonical but normalises to a canonical region.
    pub messy_region: u64,
    /// Loaded rows whose customer id is not in `customers.ndjson` (loaded against an inferred
    /// member).
    pub inferred_customer_rows: u64,
    /// Loaded store sales rows whose product id is not in `products.json`.
    pub inferred_product_rows: u64,
    /// Distinct unknown customer ids among those rows: inferred members of `dim_customer`.
    pub inferred_customers: u64,
    /// Distinct unknown product ids among those rows: inferred members of `dim_product`.
    pub inferred_products: u64,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The settings do not hold together: every problem, not just the first.
    #[error("invalid generator settings:\n  - {}", .0.join("\n  - "))]
    InvalidConfig(Vec<String>),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = GenerateError> = std::result::Result<T, E>;

impl GenerateConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.end_date < self.start_date {
            out.push(format!(
                "end_date {} is before start_date {}",
                self.end_date, self.start_date
            ));
        }
        for (name, d) in [("start_date", self.start_date), ("end_date", self.end_date)] {
            if !(1900..=9998).contains(&d.year()) {
                out.push(format!("{name} {d} must be within the years 1900..=9998"));
            }
        }
        if self.rows_per_file == 0 {
            out.push("rows_per_file must be at least 1".to_string());
        }
        // Upper bounds keep the reference tables in memory small.
        for (name, n, max) in [
            ("customers", self.customers, 10_000_000),
            ("products", self.products, 1_000_000),
            ("stores", self.stores, 100_000),
        ] {
            if !(1..=max).contains(&n) {
                out.push(format!("{name} = {n} must be between 1 and {max}"));
            }
        }
        let d = &self.defects;
        let mut rates = d.per_row().to_vec();
        let sum: f64 = rates.iter().map(|(_, r)| r).sum();
        rates.push(("unfillable_share", d.unfillable_share));
        for (name, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                out.push(format!("defects.{name} = {r} must be between 0 and 1"));
            }
        }
        if sum > 1.0 {
            out.push(format!(
                "the per-row defect rates add up to {sum}, more than 1 (a row carries one defect at most)"
            ));
        }
        out
    }
}

/// Generates the data set into `out_dir` (created if needed) and writes `manifest.json` there.
///
/// Files are written under a temporary name and renamed when complete, so a watcher never sees
/// half a file. Sales files left by an earlier run in `store_sales/` and `ecommerce/` that this
/// run does not write (a bigger run before) are removed, so the folder holds one data set.
///
/// `progress` is called, from the writing threads, with the number of sales rows written since
/// its previous call (a delta, not a total); the deltas add up to `sales_rows_in`.
pub fn generate(
    config: &GenerateConfig,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenerateReport> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(GenerateError::InvalidConfig(problems));
    }
    let world = World::build(config);
    let mut files = world.write_reference_files(config, out_dir)?;

    let plan = Plan::new(config.sales_rows, config.rows_per_file, config.gzip);
    let jobs: Vec<(Source, u64)> = Source::ALL
        .iter()
        .flat_map(|&src| (0..plan.files(src)).map(move |f| (src, f)))
        .collect();
    for src in Source::ALL {
        let dir = out_dir.join(src.dir());
        fs::create_dir_all(&dir).map_err(|source| GenerateError::Io {
            path: dir.clone(),
            source,
        })?;
        let wanted: Vec<String> = (0..plan.files(src))
            .map(|f| plan.file_name(src, f))
            .collect();
        remove_stale(&dir, src, &wanted)?;
    }

    let sales = Sales::new(&world, &plan, config.seed, &config.defects);
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut results: Vec<(usize, Result<(FileReport, Tally)>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(src, file)) = jobs.get(i) else {
                            break;
                        };
                        let result = write_sales_file(&sales, &plan, src, file, out_dir, progress);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        done.push((i, result));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a generator thread panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);

    let mut total = Tally::default();
    let mut sales_rows_in = 0;
    for (_, result) in results {
        let (report, tally) = result?;
        total.merge(&tally);
        sales_rows_in += report.rows;
        files.push(report);
    }
    let report = GenerateReport {
        files,
        sales_rows_in,
        expected: total.expected(),
    };
    write_atomically(&out_dir.join("manifest.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &report)?;
        writeln!(w)
    })?;
    Ok(report)
}

fn write_sales_file(
    sales: &Sales<'_>,
    plan: &Plan,
    src: Source,
    file: u64,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(FileReport, Tally)> {
    let path = format!("{}/{}", src.dir(), plan.file_name(src, file));
    let tally = write_atomically(&out_dir.join(&path), |w| {
        sales.write_file(src, file, w, progress)
    })?;
    let report = FileReport {
        path,
        source: src.dir().to_string(),
        rows: plan.rows_in(src, file),
        expected: Some(tally.expected()),
    };
    Ok((report, tally))
}

/// Writes `path` through `write` into `.<name>.partial` beside it, then renames it into place.
pub(crate) fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> Result<T> {
    let io_err = |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .expect("files are written inside the output folder");
    fs::create_dir_all(dir).map_err(io_err)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let partial = dir.join(format!(".{name}.partial"));
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 16, File::create(&partial)?);
        let value = write(&mut w)?;
        w.into_inner().map_err(io::IntoInnerError::into_error)?;
        fs::rename(&partial, path)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result.map_err(io_err)
}

/// Removes sales files of `src` in `dir` that an earlier run wrote and this one does not.
fn remove_stale(dir: &Path, src: Source, wanted: &[String]) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|source| GenerateError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| GenerateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let inner = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"));
        let stale = match inner {
            Some(inner) => src.owns_file_name(inner),
            None => src.owns_file_name(&name) && !wanted.contains(&name),
        };
        if stale {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| GenerateError::Io { path, source })?;
        }
    }
    Ok(())
}
