//! A run killed part-way: the lake stays readable at its previous state, and the next run gives
//! exactly the result of an uninterrupted run.

use crate::util::{generate, shoplake};
use std::path::Path;

/// The business content of a lake, in a stable order (ids of runs and load times differ).
async fn content(lake_dir: &Path) -> Vec<Vec<String>> {
    let probe = shoplake_storage::Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let ledger =
        shoplake_catalog::ledger::Ledger::open(&lake_dir.join("_control/shoplake.db")).unwrap();
    let q =
        shoplake_query::LakeQuery::open(shoplake_tables::Tables::new(probe), &ledger, 256 << 20)
            .await
            .unwrap();
    let queries = [
        "SELECT transaction_id, sales_date, customer_id, customer_key, product_id, product_key, store_id, quantity, amount, currency, amount_usd, region, status, is_outlier, source, source_line FROM fact_sales ORDER BY source, transaction_id, source_line",
        "SELECT customer_key, customer_id, full_name, email_hash, city, is_inferred, is_current FROM dim_customer ORDER BY customer_key",
        "SELECT product_key, product_id, product_name, category, is_inferred FROM dim_product ORDER BY product_key",
        "SELECT source, file_name, line, reason, detail, record FROM quarantine ORDER BY file_name, line",
        "SELECT name, status, rows_in, rows_loaded, rows_quarantined, rows_duplicate FROM files ORDER BY name",
        "SELECT COUNT(*), MIN(date), MAX(date) FROM dim_date",
    ];
    let mut out = Vec::new();
    for sql in queries {
        let b = q.sql(sql).await.unwrap().collect().await.unwrap();
        out.push(crate::util::rows_of(&b));
    }
    out
}

fn ingest_and_run(lake: &Path, data: &Path, failpoint: Option<&str>) -> std::process::Output {
    let ok = shoplake(lake).arg("ingest").arg(data).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut run = shoplake(lake);
    run.arg("run");
    if let Some(fp) = failpoint {
        run.env("SHOPLAKE_FAILPOINT", fp);
    }
    run.output().unwrap()
}

#[test]
fn a_run_killed_part_way_is_redone_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = generate(dir.path(), 6_000, 11);
    let reference = dir.path().join("reference");
    let out = ingest_and_run(&reference, &data, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expected = rt.block_on(content(&reference));
    assert!(!expected[0].is_empty());

    for failpoint in ["after-start", "after-fact-commit", "before-ledger"] {
        let lake = dir.path().join(format!("crash-{failpoint}"));
        let crashed = ingest_and_run(&lake, &data, Some(failpoint));
        assert!(
            !crashed.status.success(),
            "{failpoint}: the run should have died"
        );
        // The lake is readable meanwhile, and nothing is marked loaded.
        let files = shoplake(&lake)
            .args([
                "sql",
                "--format",
                "csv",
                "SELECT COUNT(*) AS n FROM files WHERE status = 'loaded'",
            ])
            .output()
            .unwrap();
        assert!(
            files.status.success(),
            "{}",
            String::from_utf8_lossy(&files.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&files.stdout).trim(),
            "n\n0",
            "{failpoint}"
        );

        let rerun = shoplake(&lake).arg("run").output().unwrap();
        let stdout = String::from_utf8_lossy(&rerun.stdout);
        assert!(
            rerun.status.success(),
            "{failpoint}: {}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        assert!(stdout.contains("interrupted"), "{failpoint}: {stdout}");
        // The killed run is marked failed, and so is the task it died in.
        let tasks = shoplake(&lake)
            .args([
                "sql",
                "--format",
                "csv",
                "SELECT r.status, t.task, t.state FROM runs r JOIN tasks t ON t.run_id = r.run_id \
                 WHERE r.run_id = 1 AND t.task = 'transform_load'",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&tasks.stdout).trim(),
            "status,task,state\nfailed,transform_load,failed",
            "{failpoint}"
        );
        let got = rt.block_on(content(&lake));
        assert_eq!(
            got, expected,
            "{failpoint}: the recovered lake differs from an uninterrupted run"
        );

        let again = shoplake(&lake).arg("run").output().unwrap();
        assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    }
}

#[test]
fn a_second_run_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(lake.join("_control")).unwrap();
    // A live process (this test) holds the lock.
    std::fs::write(
        lake.join("_control/run.lock"),
        format!("{} 2025-01-01T00:00:00Z\n", std::process::id()),
    )
    .unwrap();
    let out = shoplake(&lake).arg("run").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds the lock"), "{err}");
    // A lock left by a process that is gone is taken over.
    std::fs::write(
        lake.join("_control/run.lock"),
        "999999999 2025-01-01T00:00:00Z\n",
    )
    .unwrap();
    let out = shoplake(&lake).arg("run").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
