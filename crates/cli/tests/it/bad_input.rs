//! Bad files: each fails with a clear error naming the file and the problem, is marked failed in
//! the ledger, and every other file still loads.

use crate::util::TestLake;
use shoplake_core::Config;
use shoplake_etl::ingest::Ingested;
use std::io::Write;
use std::path::Path;

const GOOD: &str = "transaction_id,sales_date,customer_id,product_id,quantity,unit_price,amount,currency,region,status\n\
T1,2025-01-02,C1,P1,2,5.00,10.00,USD,North,COMPLETED\n\
T2,2025-01-03,C2,P2,1,7.50,7.50,USD,South,COMPLETED\n";

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_fail_alone_and_say_why() {
    let lake = TestLake::new();
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "good.csv", GOOD.as_bytes());
    write(&dir, "empty.csv", b"");
    write(
        &dir,
        "header_only.csv",
        b"transaction_id,sales_date,customer_id,product_id,amount\n",
    );
    let mut binary = vec![0u8; 4096];
    for (i, b) in binary.iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    write(&dir, "binary.csv", &binary);
    write(
        &dir,
        "latin1.csv",
        b"transaction_id,sales_date,amount,product_id\nT9,2025-01-02,10.00,Caf\xe9 cr\xe8me\n",
    );
    let mut long = Vec::from(&b"transaction_id,sales_date,product_id,amount\nT10,2025-01-02,"[..]);
    long.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    long.extend_from_slice(b",5.00\n");
    write(&dir, "long_line.csv", &long);
    write(&dir, "numbers.json", b"[1, 2, 3]");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..20_000 {
        writeln!(enc, "T{i},2025-01-02,C1,P1,1,1.00,1.00,USD,North,COMPLETED").unwrap();
    }
    let gz = enc.finish().unwrap();
    write(&dir, "truncated.csv.gz", &gz[..gz.len() / 2]);

    let ingested = lake.ingest(std::slice::from_ref(&dir), Some("pos")).await;
    assert_eq!(ingested.len(), 8);
    let gz_failure = ingested.iter().find_map(|r| match r {
        Ingested::Failed { error, .. } => Some(error.clone()),
        _ => None,
    });
    let gz_failure = gz_failure.expect("the truncated gzip is refused at ingest");
    assert!(
        gz_failure.contains("truncated.csv.gz") && gz_failure.contains("gzip"),
        "{gz_failure}"
    );

    let report = lake.run().await;
    assert_eq!(
        report.files.len(),
        1,
        "only good.csv loads: {:?}",
        report.files
    );
    assert_eq!(report.files[0].name, "good.csv");
    assert_eq!(report.files[0].outcome.loaded, 2);
    assert_eq!(lake.count("SELECT COUNT(*) FROM fact_sales").await, 2);

    let failed = lake
        .rows("SELECT name, error FROM files WHERE status = 'failed' ORDER BY name")
        .await;
    assert_eq!(failed.len(), 7, "{failed:#?}");
    let expect = [
        ("binary.csv", "binary"),
        ("empty.csv", "empty"),
        ("header_only.csv", "no data rows"),
        ("latin1.csv", "UTF-8"),
        ("long_line.csv", "MiB"),
        ("numbers.json", "number"),
        ("truncated.csv.gz", "gzip"),
    ];
    for (name, needle) in expect {
        let row = failed
            .iter()
            .find(|r| r.starts_with(&format!("{name}|")))
            .unwrap_or_else(|| panic!("{name} not failed: {failed:#?}"));
        assert!(
            row.contains(name) && row.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_the_wrong_delimiter_is_refused_with_a_hint() {
    let config = Config::parse(
        "[sources.pos]\nentity = \"sales\"\ndelimiter = ','\n",
        Path::new("shoplake.toml"),
    )
    .unwrap();
    let lake = TestLake::with_config(config);
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "a_good.csv", GOOD.as_bytes());
    write(&dir, "b_semicolons.csv", GOOD.replace(',', ";").as_bytes());
    lake.ingest(&[dir], Some("pos")).await;
    let report = lake.run().await;
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.failed.len(), 1);
    let err = report.failed[0].error.clone().unwrap();
    assert!(
        err.contains("b_semicolons.csv") && err.contains("delimiter"),
        "{err}"
    );
    assert_eq!(lake.count("SELECT COUNT(*) FROM fact_sales").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semicolon_files_are_detected_without_configuration() {
    let lake = TestLake::new();
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "sales.csv", GOOD.replace(',', ";").as_bytes());
    lake.ingest(&[dir], None).await;
    let report = lake.run().await;
    assert_eq!(report.files[0].outcome.loaded, 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_quarantined_with_file_and_line() {
    let lake = TestLake::new();
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "{GOOD}T3,2025-01-04,C3\nT4,2025-13-01,C1,P1,1,1.00,1.00,USD,North,COMPLETED\nT5,2025-01-05,C1,P1,1,1.00,1.00,XYZ,North,COMPLETED\n"
    );
    write(&dir, "sales.csv", text.as_bytes());
    lake.ingest(&[dir], None).await;
    let report = lake.run().await;
    let o = &report.files[0].outcome;
    assert_eq!((o.rows_in, o.loaded), (5, 2));
    let rows = lake
        .rows("SELECT file_name, line, reason FROM quarantine ORDER BY line")
        .await;
    assert_eq!(
        rows,
        vec![
            "sales.csv|4|malformed_row",
            "sales.csv|5|bad_date",
            "sales.csv|6|unknown_currency"
        ]
    );
    let record = lake
        .scalar("SELECT record FROM quarantine WHERE line = 6")
        .await;
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(v["currency"], "XYZ", "the original values are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_breaks_after_the_crawl_sample_loads_nothing() {
    let lake = TestLake::new();
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "a_good.csv", GOOD.as_bytes());
    // 3 MB of valid records, then the array's structure breaks: the crawler's 1 MiB sample is
    // fine, the scan fails part-way, after many of its rows went to the writer.
    let mut json = String::from("[\n");
    let mut i = 0;
    while json.len() < 3 << 20 {
        json.push_str(&format!(
            "{{\"transaction_id\": \"J{i}\", \"sales_date\": \"2025-01-05\", \"customer_id\": \"C1\", \"product_id\": \"P1\", \"amount\": 1.00}},\n"
        ));
        i += 1;
    }
    // Cut mid-record, as a copy interrupted part-way leaves it.
    json.push_str("{\"transaction_id\": \"J-cut\", \"sales_da");
    write(&dir, "b_broken.json", json.as_bytes());
    lake.ingest(&[dir], Some("pos")).await;
    let report = lake.run().await;
    assert_eq!(report.files.len(), 1, "{:?}", report.files);
    assert_eq!(report.failed.len(), 1);
    let err = report.failed[0].error.clone().unwrap();
    assert!(err.contains("b_broken.json"), "{err}");
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await,
        2,
        "none of the broken file's rows are committed"
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM files WHERE status = 'failed'")
            .await,
        1
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM runs WHERE status LIKE 'succeeded%'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_only_sales_file_fails_commits_no_fact_version() {
    let lake = TestLake::new();
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    let mut json = String::from("[\n");
    while json.len() < 2 << 20 {
        json.push_str("{\"transaction_id\": \"J\", \"sales_date\": \"2025-01-05\", \"product_id\": \"P1\", \"amount\": 1.00},\n");
    }
    json.push_str("]]]");
    write(&dir, "broken.json", json.as_bytes());
    lake.ingest(&[dir], Some("pos")).await;
    let report = lake.run().await;
    assert_eq!(report.failed.len(), 1);
    assert!(
        !lake
            .pipeline
            .tables()
            .exists(&shoplake_tables::TableId::processed("fact_sales"))
            .await
            .unwrap()
    );
}
