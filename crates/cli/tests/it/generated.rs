//! Generated messy data through the whole pipeline: every defect the generator injected is
//! accounted for exactly, per file and per reason.

use crate::util::{TestLake, generate};
use shoplake_etl::ingest::Ingested;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_defect_is_accounted_for() {
    let lake = TestLake::new();
    let (data, gen_report) = generate(lake.dir.path(), 40_000, 7);
    let e = &gen_report.expected;
    assert!(
        e.duplicates > 0 && e.amount_filled > 0 && e.outliers > 0,
        "the data set has defects: {e:?}"
    );

    let ingested = lake.ingest(std::slice::from_ref(&data), None).await;
    assert!(
        ingested.iter().all(|r| matches!(r, Ingested::New { .. })),
        "{ingested:?}"
    );
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // Sales files: totals and reasons equal what the generator injected.
    let sales: Vec<_> = report
        .files
        .iter()
        .filter(|f| f.entity == "sales")
        .collect();
    let rows_in: i64 = sales.iter().map(|f| f.outcome.rows_in).sum();
    let loaded: i64 = sales.iter().map(|f| f.outcome.loaded).sum();
    let dups: i64 = sales.iter().map(|f| f.outcome.duplicates).sum();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for f in &sales {
        assert!(f.outcome.adds_up(), "{f:?}");
        for (r, n) in &f.outcome.quarantined {
            *reasons.entry(r.clone()).or_default() += *n as u64;
        }
    }
    assert_eq!(rows_in as u64, gen_report.sales_rows_in);
    assert_eq!(loaded as u64, e.loaded);
    assert_eq!(dups as u64, e.duplicates);
    assert_eq!(reasons, e.quarantined);
    assert_eq!(
        report.inferred_rows,
        (e.inferred_customer_rows, e.inferred_product_rows)
    );

    // Per file too, where the generator knows it.
    for f in &gen_report.files {
        let Some(expected) = &f.expected else {
            continue;
        };
        let name = f.path.rsplit('/').next().unwrap();
        let got = report
            .files
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} not in the report"));
        assert_eq!(got.outcome.loaded as u64, expected.loaded, "{name}");
        assert_eq!(got.outcome.duplicates as u64, expected.duplicates, "{name}");
    }

    // Reference files load whole.
    for f in report.files.iter().filter(|f| f.entity != "sales") {
        assert_eq!(f.outcome.rows_in, f.outcome.loaded, "{f:?}");
    }

    // The same figures through SQL: tables and system tables.
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await as u64,
        e.loaded
    );
    assert_eq!(
        lake.count("SELECT SUM(rows_loaded) FROM files WHERE entity = 'sales'")
            .await as u64,
        e.loaded
    );
    assert_eq!(
        lake.count("SELECT SUM(rows_duplicate) FROM files").await as u64,
        e.duplicates
    );
    let by_reason = lake
        .rows("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason")
        .await;
    let expected: Vec<String> = e
        .quarantined
        .iter()
        .map(|(r, n)| format!("{r}|{n}"))
        .collect();
    assert_eq!(by_reason, expected);
    let from_ledger = lake
        .rows("SELECT reason, SUM(rows) FROM file_reasons GROUP BY reason ORDER BY reason")
        .await;
    assert_eq!(from_ledger, expected);
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM files WHERE rows_in <> rows_loaded + rows_quarantined + rows_duplicate").await,
        0
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE amount_filled")
            .await as u64,
        e.amount_filled
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE is_outlier")
            .await as u64,
        e.outliers
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE region NOT IN ('North', 'South', 'East', 'West', 'Central')").await,
        0,
        "messy region text is normalised"
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_customer WHERE is_inferred")
            .await as u64,
        e.inferred_customers
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_product WHERE is_inferred")
            .await as u64,
        e.inferred_products
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE amount_usd IS NULL OR fx_rate IS NULL")
            .await,
        0
    );
    assert_eq!(
        lake.count(
            "SELECT COUNT(*) FROM fact_sales WHERE currency = 'USD' AND amount <> amount_usd"
        )
        .await,
        0
    );
    // Every e-commerce sale found its product by name.
    assert_eq!(lake.count("SELECT COUNT(*) FROM fact_sales WHERE channel = 'ecommerce' AND product_id LIKE 'name:%'").await, 0);
    // Fact rows join their dimensions.
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales f LEFT JOIN dim_product p ON f.product_key = p.product_key WHERE p.product_key IS NULL").await,
        0
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales f LEFT JOIN dim_date d ON f.date_key = d.date_key WHERE d.date_key IS NULL").await,
        0
    );
    // PII is only kept hashed.
    let cols = lake.rows("SELECT column_name FROM information_schema.columns WHERE table_name = 'dim_customer' AND column_name IN ('email', 'phone', 'email_hash', 'phone_hash') ORDER BY column_name").await;
    assert_eq!(cols, vec!["email_hash", "phone_hash"]);

    // Running again: nothing to do. Ingesting the same files again: no-ops.
    let again = lake.run().await;
    assert!(again.files.is_empty());
    let reingested = lake.ingest(std::slice::from_ref(&data), None).await;
    assert!(
        reingested
            .iter()
            .all(|r| matches!(r, Ingested::AlreadyIngested { .. }))
    );
    assert!(lake.run().await.files.is_empty());
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await as u64,
        e.loaded
    );

    // A later file repeating loaded transactions: duplicates against fact_sales.
    let first = data.join("store_sales");
    let mut names: Vec<_> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let csv = names
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .unwrap();
    let text = std::fs::read_to_string(csv).unwrap();
    let head: Vec<&str> = text.lines().take(51).collect();
    let redelivered = lake.dir.path().join("redelivered_store_sales.csv");
    std::fs::write(&redelivered, head.join("\n") + "\n").unwrap();
    lake.ingest(&[redelivered], Some("store_sales")).await;
    let late = lake.run().await;
    let f = &late.files[0];
    assert_eq!(f.outcome.rows_in, 50);
    assert_eq!(f.outcome.loaded, 0, "{f:?}");
    assert_eq!(f.outcome.duplicates + f.outcome.quarantined_total(), 50);
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await as u64,
        e.loaded
    );

    // Old and new transactions mixed in one file: the held rows that are new after all load
    // in the same commit, the old ones count as duplicates.
    let mut mixed: Vec<String> = text.lines().take(301).map(str::to_string).collect();
    let fresh: Vec<String> = text
        .lines()
        .skip(301)
        .take(300)
        .map(|l| l.replacen(',', "X,", 1))
        .collect();
    mixed.extend(fresh);
    let path = lake.dir.path().join("mixed_store_sales.csv");
    std::fs::write(&path, mixed.join("\n") + "\n").unwrap();
    lake.ingest(&[path], Some("store_sales")).await;
    let run = lake.run().await;
    let f = &run.files[0];
    assert_eq!(f.outcome.rows_in, 600);
    assert!(f.outcome.loaded > 200, "{f:?}");
    assert!(f.outcome.adds_up(), "{f:?}");
    let loaded_new = lake
        .count("SELECT COUNT(*) FROM fact_sales WHERE transaction_id LIKE '%X'")
        .await;
    assert_eq!(loaded_new, f.outcome.loaded);
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await as u64,
        e.loaded + f.outcome.loaded as u64
    );
    assert_eq!(
        lake.count("SELECT COUNT(DISTINCT dedupe_key) FROM fact_sales")
            .await as u64,
        e.loaded + f.outcome.loaded as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_keep_versions_and_read_as_of() {
    let lake = TestLake::new();
    let (data, _) = generate(lake.dir.path(), 2_000, 3);
    // First only the reference data and one store file, then the rest.
    let files: Vec<_> = [
        "fx_rates",
        "stores",
        "products",
        "customers",
        "sales_team",
        "campaigns",
    ]
    .iter()
    .map(|s| data.join(s))
    .collect();
    lake.ingest(&files, None).await;
    lake.ingest(&[data.join("store_sales")], Some("store_sales"))
        .await;
    lake.run().await;
    let v1 = lake
        .pipeline
        .tables()
        .version(&shoplake_tables::TableId::processed("fact_sales"))
        .await
        .unwrap()
        .unwrap();
    let n1 = lake.count("SELECT COUNT(*) FROM fact_sales").await;
    lake.ingest(&[data.join("ecommerce")], Some("ecommerce"))
        .await;
    lake.run().await;
    let n2 = lake.count("SELECT COUNT(*) FROM fact_sales").await;
    assert!(n2 > n1);
    let history = lake
        .pipeline
        .tables()
        .history(&shoplake_tables::TableId::processed("fact_sales"))
        .await
        .unwrap();
    assert!(history.len() >= 2, "{history:?}");
    assert!(history.iter().any(|h| h.version == v1));
    let q =
        shoplake_query::LakeQuery::open(lake.pipeline.tables().clone(), &lake.ledger, 256 << 20)
            .await
            .unwrap();
    q.as_of("fact_sales", v1).await.unwrap();
    let old = q
        .sql("SELECT COUNT(*) FROM fact_sales")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(crate::util::rows_of(&old), vec![n1.to_string()]);
    assert!(q.as_of("fact_sales", 999).await.is_err());
    assert!(
        q.as_of("fact_sale", 1)
            .await
            .unwrap_err()
            .to_string()
            .contains("did you mean \"fact_sales\"")
    );
}
