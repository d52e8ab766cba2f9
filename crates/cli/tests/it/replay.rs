//! Quarantined rows replayed after their cause is fixed load once, leave quarantine, and the
//! counts still add up.

use crate::util::{TestLake, generate};
use shoplake_core::Config;
use shoplake_etl::pipeline::Quiet;
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_fx_rate_added_later() {
    let lake = TestLake::new();
    let (data, gen_report) = generate(lake.dir.path(), 20_000, 5);
    let missing = gen_report
        .expected
        .quarantined
        .get("missing_fx_rate")
        .copied()
        .unwrap_or(0) as i64;
    assert!(
        missing > 0,
        "the generator leaves JPY without a rate in the last month"
    );
    lake.ingest(std::slice::from_ref(&data), None).await;
    lake.run().await;
    let loaded_before = lake.count("SELECT COUNT(*) FROM fact_sales").await;

    // Replaying before the fix changes nothing.
    let r = lake
        .pipeline
        .replay(None, Some("missing_fx_rate"), &Quiet)
        .await
        .unwrap();
    assert_eq!(
        (r.replayed, r.loaded, r.still_quarantined),
        (missing as u64, 0, missing as u64)
    );

    // The missing rate arrives.
    let fix = lake.dir.path().join("fix");
    std::fs::create_dir_all(&fix).unwrap();
    std::fs::write(
        fix.join("fx_rates_fix.csv"),
        "currency,month,rate_to_usd\nJPY,2025-06,0.0069\n",
    )
    .unwrap();
    lake.ingest(&[fix], Some("fx_rates")).await;
    lake.run().await;

    let r = lake
        .pipeline
        .replay(None, Some("missing_fx_rate"), &Quiet)
        .await
        .unwrap();
    assert_eq!(
        (r.replayed, r.loaded + r.duplicates, r.still_quarantined),
        (missing as u64, missing as u64, 0)
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await,
        loaded_before + r.loaded as i64
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM quarantine WHERE reason = 'missing_fx_rate'")
            .await,
        0
    );
    assert_eq!(
        lake.count(
            "SELECT COALESCE(SUM(rows), 0) FROM file_reasons WHERE reason = 'missing_fx_rate'"
        )
        .await,
        0
    );
    assert_eq!(lake.count("SELECT COUNT(*) FROM files WHERE rows_in <> rows_loaded + rows_quarantined + rows_duplicate").await, 0);
    // The other quarantined rows are untouched.
    let others: u64 = gen_report
        .expected
        .quarantined
        .iter()
        .filter(|(k, _)| *k != "missing_fx_rate")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM quarantine").await as u64,
        others
    );
    // JPY sales of June convert with the new rate.
    assert_eq!(lake.count("SELECT COUNT(*) FROM fact_sales WHERE currency = 'JPY' AND month = 6 AND fx_rate = 0.0069").await, r.loaded as i64);

    // Replaying again: they load once.
    let again = lake
        .pipeline
        .replay(None, Some("missing_fx_rate"), &Quiet)
        .await
        .unwrap();
    assert_eq!(again.replayed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_corrected_in_the_configuration() {
    // The source maps `note` onto amount by mistake: every row fails as a bad number.
    let wrong = Config::parse(
        "[sources.pos]\nentity = \"sales\"\n[sources.pos.mapping]\nnote = \"amount\"\ntotal = \"\"\n",
        Path::new("shoplake.toml"),
    )
    .unwrap();
    let lake = TestLake::with_config(wrong);
    let dir = lake.dir.path().join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pos.csv"),
        "txn,date,product_id,total,note\nA1,2025-02-01,P1,10.00,gift wrap\nA2,2025-02-02,P2,12.50,none given\n",
    )
    .unwrap();
    lake.ingest(&[dir], Some("pos")).await;
    let report = lake.run().await;
    assert_eq!(
        report.files[0].outcome.quarantined.get("bad_number"),
        Some(&2),
        "{report:?}"
    );

    // Fixed: `total` is the amount.
    let lake = lake.reconfigure(Config::parse("[sources.pos]\nentity = \"sales\"\n[sources.pos.mapping]\ntotal = \"amount\"\nnote = \"\"\n", Path::new("shoplake.toml")).unwrap());
    let r = lake
        .pipeline
        .replay(Some("pos"), None, &Quiet)
        .await
        .unwrap();
    assert_eq!((r.replayed, r.loaded), (2, 2));
    assert_eq!(
        lake.scalar("SELECT SUM(amount) FROM fact_sales").await,
        "22.50"
    );
    assert_eq!(
        lake.rows("SELECT rows_in, rows_loaded, rows_quarantined FROM files")
            .await,
        vec!["2|2|0"]
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM runs WHERE kind = 'replay'")
            .await,
        1
    );
}
