//! A lake in a temporary folder, driven through the library, plus helpers to run the binary.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use shoplake_catalog::ledger::Ledger;
use shoplake_core::Config;
use shoplake_etl::ingest::{self, Ingested};
use shoplake_etl::pii::PiiKey;
use shoplake_etl::pipeline::Quiet;
use shoplake_etl::{Pipeline, RunReport};
use shoplake_query::LakeQuery;
use shoplake_storage::Lake;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const PII_KEY: &str = "test-pii-key";

pub struct TestLake {
    pub dir: tempfile::TempDir,
    pub pipeline: Pipeline,
    pub ledger: Arc<Ledger>,
}

impl TestLake {
    pub fn new() -> TestLake {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> TestLake {
        let dir = tempfile::tempdir().unwrap();
        Self::at(dir, config)
    }

    pub fn at(dir: tempfile::TempDir, config: Config) -> TestLake {
        let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
        let state = dir.path().join("lake/_control");
        let ledger = Arc::new(Ledger::open(&state.join("shoplake.db")).unwrap());
        let pipeline = Pipeline::new(
            lake,
            ledger.clone(),
            config,
            PiiKey::new(PII_KEY.as_bytes().to_vec()),
            state,
        );
        TestLake {
            dir,
            pipeline,
            ledger,
        }
    }

    /// Re-open the same lake with another configuration.
    pub fn reconfigure(self, config: Config) -> TestLake {
        Self::at(self.dir, config)
    }

    pub async fn ingest(&self, paths: &[PathBuf], source: Option<&str>) -> Vec<Ingested> {
        let c = ingest::candidates(paths, source).unwrap();
        ingest::ingest(self.pipeline.lake(), &self.ledger, &c)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    pub async fn run(&self) -> RunReport {
        self.pipeline.run(&Quiet).await.unwrap()
    }

    pub async fn query(&self, sql: &str) -> Vec<RecordBatch> {
        let q = LakeQuery::open(self.pipeline.tables().clone(), &self.ledger, 512 << 20)
            .await
            .unwrap();
        q.sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of a query as strings (cells joined by `|`).
    pub async fn rows(&self, sql: &str) -> Vec<String> {
        rows_of(&self.query(sql).await)
    }

    /// The single value of a query, as a string.
    pub async fn scalar(&self, sql: &str) -> String {
        let rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "{sql} returned {rows:?}");
        rows[0].clone()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.scalar(sql)
            .await
            .parse()
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

pub fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        "NULL".to_string()
                    } else {
                        array_value_to_string(c, r).unwrap()
                    }
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

pub fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Generate a small messy data set into `dir/data`.
pub fn generate(dir: &Path, rows: u64, seed: u64) -> (PathBuf, shoplake_datagen::GenerateReport) {
    let out = dir.join("data");
    let config = shoplake_datagen::GenerateConfig {
        seed,
        sales_rows: rows,
        rows_per_file: rows / 4 + 1,
        customers: 400,
        products: 80,
        stores: 10,
        threads: 1,
        ..Default::default()
    };
    let report = shoplake_datagen::generate(&config, &out, &|_| {}).unwrap();
    (out, report)
}

/// The `shoplake` binary, with a fixed PII key and no user configuration around.
pub fn shoplake(lake: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_shoplake"));
    c.arg("--lake")
        .arg(lake)
        .arg("--quiet")
        .env("SHOPLAKE_PII_KEY", PII_KEY)
        .env_remove("SHOPLAKE_FAILPOINT");
    c
}
