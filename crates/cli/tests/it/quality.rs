//! Data-quality expectations: an `error` expectation keeps a bad file out of the lake while the
//! rest of the run loads; a `warn` one lets it load and records the breach; results are in the
//! `quality` system table.

use crate::util::{TestLake, shoplake};
use shoplake_core::Config;
use shoplake_tables::TableId;
use std::path::Path;

const HEADER: &str =
    "transaction_id,sales_date,customer_id,product_id,amount,currency,region,status\n";

/// A sales file of `rows` rows, the first `missing` of them without an amount (and without
/// quantity and unit price, so they are quarantined as missing_amount).
fn sales(prefix: &str, rows: usize, missing: usize) -> String {
    let mut s = HEADER.to_string();
    for i in 0..rows {
        let amount = if i < missing { "" } else { "12.50" };
        s.push_str(&format!(
            "{prefix}{i},2025-03-0{},C{},P{},{amount},USD,North,COMPLETED\n",
            i % 9 + 1,
            i % 4,
            i % 3
        ));
    }
    s
}

fn drop_files(lake: &TestLake, folder: &str, files: &[(&str, String)]) -> std::path::PathBuf {
    let dir = lake.dir.path().join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

async fn file_id(lake: &TestLake, name: &str) -> i64 {
    lake.count(&format!("SELECT file_id FROM files WHERE name = '{name}'"))
        .await
}

fn sql(lake: &Path, query: &str) -> String {
    let out = shoplake(lake)
        .args(["sql", "--format", "csv", query])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_expectation_blocks_a_bad_file_and_the_lake_keeps_its_state() {
    // The built-in expectations: at most 50% of a sales file's rows without an amount (error),
    // at most 10% (warn).
    let lake = TestLake::new();
    // 1 of 20 rows without an amount: 5%, within the limit (and the quarantine exists).
    let first = drop_files(&lake, "day1", &[("day1.csv", sales("A", 20, 1))]);
    lake.ingest(&[first], Some("pos")).await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let fact = TableId::processed("fact_sales");
    let history_before = lake.pipeline.tables().history(&fact).await.unwrap().len();
    let quarantine_before = lake.count("SELECT COUNT(*) FROM quarantine").await;

    // 6 of 10 rows without an amount: 60% > 50%. The good file has one missing of 20 (5%).
    let second = drop_files(
        &lake,
        "day2",
        &[
            ("bad.csv", sales("B", 10, 6)),
            ("good.csv", sales("G", 20, 1)),
        ],
    );
    lake.ingest(&[second], Some("pos")).await;
    let report = lake.run().await;
    let bad = file_id(&lake, "bad.csv").await;
    let good = file_id(&lake, "good.csv").await;

    assert_eq!(report.failed.len(), 1, "{:#?}", report.quality);
    let error = report.failed[0].error.clone().unwrap();
    assert_eq!(report.failed[0].file_id, bad);
    assert_eq!(
        error,
        "quality: amount missing on 60.0% of rows (6 of 10; max 50%)"
    );
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.files[0].file_id, good);
    assert_eq!(report.files[0].outcome.loaded, 19);
    // The bad file breaks the error expectation and the 10% warning.
    let breaches: Vec<_> = report
        .quality_breaches()
        .map(|r| (r.file_id, r.name.as_str(), r.severity.as_str()))
        .collect();
    assert_eq!(
        breaches,
        vec![
            (bad, "max_null_rate(amount)", "error"),
            (bad, "amount_often_missing", "warn")
        ]
    );

    // The lake: the good file's rows in one new commit, nothing of the bad file anywhere.
    assert_eq!(lake.count("SELECT COUNT(*) FROM fact_sales").await, 19 + 19);
    assert_eq!(
        lake.count(&format!(
            "SELECT COUNT(*) FROM fact_sales WHERE file_id = {bad}"
        ))
        .await,
        0
    );
    let history = lake.pipeline.tables().history(&fact).await.unwrap();
    assert_eq!(history.len(), history_before + 1, "{history:?}");
    assert_eq!(
        lake.count(&format!(
            "SELECT COUNT(*) FROM quarantine WHERE file_id = {bad}"
        ))
        .await,
        0
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM quarantine").await,
        quarantine_before + 1,
        "only the good file's missing amount"
    );
    // The ledger: the bad file failed with the reason and counts nothing; the run adds up.
    assert_eq!(
        lake.rows(&format!(
            "SELECT status, error, rows_in, rows_loaded FROM files WHERE file_id = {bad}"
        ))
        .await,
        vec![format!("failed|{error}|0|0")]
    );
    assert_eq!(
        lake.count(&format!(
            "SELECT COUNT(*) FROM run_files WHERE file_id = {bad}"
        ))
        .await,
        0
    );
    assert_eq!(
        lake.rows(&format!(
            "SELECT rows_in, loaded, quarantined, duplicates FROM runs WHERE run_id = {}",
            report.run_id
        ))
        .await,
        vec!["20|19|1|0".to_string()]
    );

    // The quality system table, through the CLI.
    let lake_dir = lake.dir.path().join("lake");
    let csv = sql(
        &lake_dir,
        &format!(
            "SELECT file_id, name, check, \"column\", severity, passed, observed, threshold, message \
             FROM quality WHERE run_id = {} AND check = 'max_null_rate' AND severity = 'error' \
             ORDER BY file_id",
            report.run_id
        ),
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        vec![
            "file_id,name,check,column,severity,passed,observed,threshold,message",
            &format!(
                "{bad},max_null_rate(amount),max_null_rate,amount,error,false,0.6,0.5,\
                 amount missing on 60.0% of rows (6 of 10; max 50%)"
            ),
            &format!(
                "{good},max_null_rate(amount),max_null_rate,amount,error,true,0.05,0.5,\
                 amount missing on 5.0% of rows (1 of 20; max 50%)"
            ),
        ],
        "{csv}"
    );

    // Fixed and ingested again, the file loads.
    let fixed = drop_files(&lake, "day3", &[("bad_fixed.csv", sales("B", 10, 0))]);
    lake.ingest(&[fixed], Some("pos")).await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await,
        19 + 19 + 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_expectation_loads_the_file_and_records_the_breach() {
    let config = Config::parse(
        r#"
[[quality.fact_sales]]
check = "max_null_rate"
column = "amount"
max = 0.10
severity = "warn"

[[quality.dim_store]]
check = "not_null"
column = "region"
"#,
        Path::new("shoplake.toml"),
    )
    .unwrap();
    let lake = TestLake::with_config(config);
    let sales_dir = drop_files(&lake, "sales", &[("bad.csv", sales("B", 10, 4))]);
    // A reference file failing an error expectation: it is not applied to dim_store.
    let stores = drop_files(
        &lake,
        "stores",
        &[(
            "stores.csv",
            "store_id,store_name,region\nS1,Main,North\nS2,Side,\n".to_string(),
        )],
    );
    lake.ingest(&[sales_dir], Some("pos")).await;
    lake.ingest(&[stores], Some("stores")).await;
    let report = lake.run().await;

    let bad = file_id(&lake, "bad.csv").await;
    let stores_id = file_id(&lake, "stores.csv").await;
    assert_eq!(report.files.len(), 1, "{:?}", report.files);
    assert_eq!(report.files[0].file_id, bad);
    assert_eq!(report.files[0].outcome.loaded, 6);
    assert_eq!(lake.count("SELECT COUNT(*) FROM fact_sales").await, 6);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].file_id, stores_id);
    assert_eq!(
        report.failed[0].error.as_deref(),
        Some("quality: region is empty on 1 of 2 rows")
    );
    assert!(
        !lake
            .pipeline
            .tables()
            .exists(&TableId::processed("dim_store"))
            .await
            .unwrap(),
        "the failed stores file created no dim_store"
    );

    let rows = lake
        .rows(
            "SELECT table_name, file_id, name, severity, passed FROM quality \
             WHERE NOT passed ORDER BY table_name",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            format!("dim_store|{stores_id}|not_null(region)|error|false"),
            format!("fact_sales|{bad}|max_null_rate(amount)|warn|false"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_expectation_stops_the_run_before_anything_loads() {
    let config = Config::parse(
        "[[quality.fact_sales]]\ncheck = \"unique\"\ncolumn = \"txn_id\"\n",
        Path::new("shoplake.toml"),
    )
    .unwrap();
    let lake = TestLake::with_config(config);
    let dir = drop_files(&lake, "sales", &[("a.csv", sales("A", 3, 0))]);
    lake.ingest(&[dir], Some("pos")).await;
    let err = lake
        .pipeline
        .run(&shoplake_etl::pipeline::Quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("quality.fact_sales[0]") && err.contains("no column \"txn_id\""),
        "{err}"
    );
    assert!(
        !lake
            .pipeline
            .tables()
            .exists(&TableId::processed("fact_sales"))
            .await
            .unwrap()
    );
}
