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

    // The prompt reads statements from stdin (one may span lines), prints each result and
    // reports its rows and time on stderr; an error does not end the session. (The benchmark
    // of the dashboard queries reads these lines.)
    let mut prompt = shoplake(&lake)
        .arg("sql")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        prompt.stdin.as_mut().unwrap(),
        b"SELECT COUNT(*) AS n\nFROM fact_sales;\nSELECT * FROM fact_sale;\n\
          SELECT region FROM fact_sales GROUP BY region;\n\\q\n",
    )
    .unwrap();
    let out = prompt.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&n.to_string()), "{stdout}");
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" rows in ") || l.starts_with("error:"))
        .collect();
    assert_eq!(reports.len(), 3, "{stderr}");
    // "N rows in T ms": the rows and the time, in milliseconds below a second.
    let rows_of = |line: &str| -> usize {
        let (rows, time) = line.split_once(" rows in ").unwrap_or(("", ""));
        let ms: Option<f64> = time.strip_suffix(" ms").and_then(|t| t.parse().ok());
        assert!(ms.is_some_and(|ms| ms < 1000.0), "{line:?}");
        rows.parse().unwrap()
    };
    assert_eq!(rows_of(reports[0]), 1);
    assert!(reports[1].contains("fact_sale"), "{}", reports[1]);
    let regions = ["North", "South", "East", "West", "Central"];
    let shown = regions.iter().filter(|r| stdout.contains(*r)).count();
    assert_eq!(rows_of(reports[2]), shown, "{stdout}");

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
