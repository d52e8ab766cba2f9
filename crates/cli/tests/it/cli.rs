//! The binary as a user runs it: the demo end to end, then every query command and output form.

use crate::util::shoplake;

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_then_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let lake = demo.join("lake");
    let out = run(shoplake(&lake)
        .current_dir(dir.path())
        .args(["demo", "--no-serve", "--rows", "4000", "--dir"])
        .arg(&demo));
    assert!(out.contains("generated 4000 sales rows"), "{out}");
    assert!(
        out.contains("= loaded") && out.contains(": ok"),
        "the run summary adds up:\n{out}"
    );
    assert!(
        out.contains("revenue by region and month") && out.contains("top 10 products"),
        "{out}"
    );

    let tables = run(shoplake(&lake).arg("tables"));
    for t in [
        "fact_sales",
        "dim_customer",
        "dim_product",
        "dim_store",
        "dim_sales_person",
        "dim_date",
        "fx_rates",
        "quarantine",
        "files",
        "runs",
        "catalog",
    ] {
        assert!(tables.contains(t), "{t} missing from:\n{tables}");
    }
    let describe = run(shoplake(&lake).args(["describe", "fact_sales"]));
    assert!(
        describe.contains("amount_usd") && describe.contains("partitioned by: region, year, month"),
        "{describe}"
    );
    let history = run(shoplake(&lake).args(["history", "fact_sales"]));
    // The first load creates the table and adds its files in one commit.
    assert!(history.contains("CREATE TABLE"), "{history}");

    let csv = run(shoplake(&lake).args([
        "sql",
        "--format",
        "csv",
        "SELECT COUNT(*) AS n FROM fact_sales",
    ]));
    let n: i64 = csv.lines().nth(1).unwrap().parse().unwrap();
    let json = run(shoplake(&lake).args([
        "sql",
        "--format",
        "json",
        "SELECT SUM(rows_loaded) AS n FROM files WHERE entity = 'sales'",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["n"].as_i64(), Some(n), "{json}");
    let parquet = dir.path().join("out.parquet");
    run(shoplake(&lake)
        .args(["sql", "--format", "parquet", "-o"])
        .arg(&parquet)
        .arg("SELECT region, SUM(amount_usd) AS usd FROM fact_sales GROUP BY region"));
    assert!(std::fs::read(&parquet).unwrap().starts_with(b"PAR1"));
    let v1 = run(shoplake(&lake).args([
        "sql",
        "--format",
        "csv",
        "--as-of",
        "fact_sales@0",
        "SELECT COUNT(*) AS n FROM fact_sales",
    ]));
    assert_eq!(v1.lines().nth(1), Some(n.to_string().as_str()));

    let q = run(shoplake(&lake).arg("quarantine"));
    assert!(q.contains("store_sales") && q.contains("bad_date"), "{q}");
    let rows =
        run(shoplake(&lake).args(["quarantine", "rows", "--reason", "bad_date", "--limit", "3"]));
    assert!(
        rows.contains("store_sales_") || rows.contains("orders_"),
        "{rows}"
    );
    let files = run(shoplake(&lake).arg("files"));
    assert!(files.contains("loaded"), "{files}");

    // Mistakes get clear messages.
    let bad = shoplake(&lake)
        .args(["sql", "SELECT * FROM fact_sale"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fact_sale"));
    let bad = shoplake(&lake)
        .args(["describe", "fact_sale"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("did you mean \"fact_sales\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = shoplake(&lake)
        .args(["quarantine", "--reason", "bad_dat"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected one of"));

    // Running the demo again reuses the data and finds nothing new.
    let again = run(shoplake(&lake)
        .current_dir(dir.path())
        .args(["demo", "--no-serve", "--rows", "4000", "--dir"])
        .arg(&demo));
    assert!(
        again.contains("already in the lake") && again.contains("nothing to do"),
        "{again}"
    );
}
