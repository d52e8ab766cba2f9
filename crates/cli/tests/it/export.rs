//! `shoplake export` against real servers started for the test: a private PostgreSQL and a
//! private MariaDB. The same story on both: a first export equals the lake; a second changes
//! nothing; new data is appended and only it; an export killed before its commit leaves the
//! target as it was while readers only ever see whole states; the password never shows.

use crate::servers::{MariaDb, PASSWORD, Postgres};
use crate::util::{generate, rows_of, shoplake};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};

/// A target database as the tests see it.
trait Db: Sync {
    fn url(&self) -> String;
    /// Rows of a query as `a|b` lines.
    fn query(&self, sql: &str) -> String;
}

impl Db for Postgres {
    fn url(&self) -> String {
        Postgres::url(self)
    }
    fn query(&self, sql: &str) -> String {
        Postgres::query(self, sql)
    }
}

impl Db for MariaDb {
    fn url(&self) -> String {
        MariaDb::url(self)
    }
    fn query(&self, sql: &str) -> String {
        MariaDb::query(self, sql)
    }
}

/// Rows of SQL over the lake.
async fn lake_rows(lake: &Path, sql: &str) -> Vec<String> {
    let probe = shoplake_storage::Lake::open(lake.to_str().unwrap()).unwrap();
    let ledger =
        shoplake_catalog::ledger::Ledger::open(&lake.join("_control/shoplake.db")).unwrap();
    let q =
        shoplake_query::LakeQuery::open(shoplake_tables::Tables::new(probe), &ledger, 256 << 20)
            .await
            .unwrap();
    let b = q.sql(sql).await.unwrap().collect().await.unwrap();
    rows_of(&b)
}

fn lake(lake: &Path, sql: &str) -> Vec<String> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(lake_rows(lake, sql))
}

fn ingest_and_run(lake_dir: &Path, data: &Path) {
    for args in [vec!["ingest", data.to_str().unwrap()], vec!["run"]] {
        let out = shoplake(lake_dir).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `shoplake export` with the password in the URL; checks it never shows.
fn export(lake_dir: &Path, db: &dyn Db, extra: &[(&str, &str)]) -> Output {
    let mut c = shoplake(lake_dir);
    c.arg("export").arg("--to").arg(db.url());
    c.env("SHOPLAKE_LOG", "debug");
    for (k, v) in extra {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        !text(&out).contains(PASSWORD),
        "the password shows in the output:\n{}",
        text(&out)
    );
    out
}

fn export_ok(lake_dir: &Path, db: &dyn Db) -> String {
    let out = export(lake_dir, db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of the export's output about one table.
fn line<'a>(stdout: &'a str, table: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no line for {table} in:\n{stdout}"))
}

/// The target holds exactly what the lake holds: every table's row count, the fact table's
/// totals and its split by region.
fn assert_same(lake_dir: &Path, db: &dyn Db) {
    let tables = lake(
        lake_dir,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    );
    let lake_tables: BTreeSet<String> = tables
        .into_iter()
        .filter(|t| {
            t.starts_with("dim_")
                || t.starts_with("fact_")
                || t.starts_with("mart_")
                || t == "fx_rates"
        })
        .collect();
    assert!(lake_tables.contains("fact_sales"), "{lake_tables:?}");
    for t in &lake_tables {
        let expected = &lake(lake_dir, &format!("SELECT COUNT(*) FROM {t}"))[0];
        assert_eq!(
            &db.query(&format!("SELECT COUNT(*) FROM {t}")),
            expected,
            "{t}"
        );
    }
    let sums = "SELECT COUNT(*), SUM(amount_usd), SUM(amount), SUM(quantity) FROM fact_sales";
    assert_eq!(db.query(sums), lake(lake_dir, sums)[0]);
    let by_region =
        "SELECT region, COUNT(*), SUM(amount_usd) FROM fact_sales GROUP BY region ORDER BY region";
    assert_eq!(db.query(by_region), lake(lake_dir, by_region).join("\n"));
    let current = "SELECT COUNT(*) FROM dim_customer WHERE is_current";
    assert_eq!(db.query(current), lake(lake_dir, current)[0]);
    let distinct = "SELECT COUNT(DISTINCT dedupe_key) FROM fact_sales";
    assert_eq!(
        db.query(distinct),
        lake(lake_dir, "SELECT COUNT(*) FROM fact_sales")[0],
        "no duplicates"
    );
}

fn fact_version(lake_dir: &Path) -> String {
    let lake = shoplake_storage::Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let tables = shoplake_tables::Tables::new(lake);
    let id = shoplake_tables::TableId::processed("fact_sales");
    let v = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tables.version(&id))
        .unwrap()
        .unwrap();
    v.to_string()
}

/// The whole story against one database.
fn full_story(db: &dyn Db) {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let (data, _) = generate(&dir.path().join("first"), 8_000, 21);
    ingest_and_run(&lake_dir, &data);

    // First export: everything is created and loaded.
    let out = export_ok(&lake_dir, db);
    assert!(line(&out, "fact_sales").contains("replace"), "{out}");
    assert!(line(&out, "fact_sales").contains("table created"), "{out}");
    assert!(
        out.contains(":***@127.0.0.1"),
        "the target is shown redacted: {out}"
    );
    assert_same(&lake_dir, db);
    let v1 = fact_version(&lake_dir);
    assert_eq!(
        db.query("SELECT lake_version, last_mode FROM shoplake_export_state WHERE table_name = 'fact_sales'"),
        format!("{v1}|replace")
    );

    // Again: nothing changes.
    let state_before = db.query("SELECT table_name, lake_version, rows_total, exported_at FROM shoplake_export_state ORDER BY table_name");
    let out = export_ok(&lake_dir, db);
    for l in out.lines().skip(1).filter(|l| l.starts_with("  ")) {
        assert!(l.contains("unchanged"), "{l}");
    }
    assert!(out.contains("0 rows written"), "{out}");
    assert_eq!(
        db.query("SELECT table_name, lake_version, rows_total, exported_at FROM shoplake_export_state ORDER BY table_name"),
        state_before
    );
    assert_same(&lake_dir, db);

    // New data arrives: only the new fact rows are sent.
    let before = lake(&lake_dir, "SELECT COUNT(*) FROM fact_sales")[0]
        .parse::<u64>()
        .unwrap();
    let (more, _) = generate(&dir.path().join("second"), 3_000, 22);
    ingest_and_run(&lake_dir, &more);
    let after = lake(&lake_dir, "SELECT COUNT(*) FROM fact_sales")[0]
        .parse::<u64>()
        .unwrap();
    assert!(after > before, "the second data set adds sales");

    // A reader polls the fact table during the export that crashes before its commit, then
    // during the real one: it only ever sees the old or the new count.
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let n: u64 = db.query("SELECT COUNT(*) FROM fact_sales").parse().unwrap();
                seen.lock().unwrap().insert(n);
            }
        });
        let crashed = export(
            &lake_dir,
            db,
            &[("SHOPLAKE_FAILPOINT", "export-before-commit")],
        );
        assert!(!crashed.status.success(), "the failpoint aborts the export");
        assert!(
            text(&crashed).contains("failpoint export-before-commit"),
            "{}",
            text(&crashed)
        );
        assert_eq!(
            db.query("SELECT COUNT(*) FROM fact_sales"),
            before.to_string(),
            "nothing of an export that died before its commit is visible"
        );
        assert_eq!(
            db.query(
                "SELECT lake_version FROM shoplake_export_state WHERE table_name = 'fact_sales'"
            ),
            v1
        );
        let out = export_ok(&lake_dir, db);
        done.store(true, Ordering::SeqCst);
        let fact = line(&out, "fact_sales");
        assert!(fact.contains("append"), "{out}");
        let sent: u64 = fact.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(sent, after - before, "only the new rows are sent: {fact}");
    });
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.iter().all(|n| *n == before || *n == after),
        "a reader saw a half-loaded table: {seen:?} (before {before}, after {after})"
    );
    assert_same(&lake_dir, db);
    let v2 = fact_version(&lake_dir);
    assert_eq!(
        db.query("SELECT lake_version, last_mode, last_rows, rows_total FROM shoplake_export_state WHERE table_name = 'fact_sales'"),
        format!("{v2}|append|{}|{after}", after - before)
    );

    // --full replaces everything and lands on the same rows.
    let mut c = shoplake(&lake_dir);
    let out = c
        .args(["export", "--full", "--to"])
        .arg(db.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(line(&String::from_utf8_lossy(&out.stdout), "fact_sales").contains("replace"));
    assert_same(&lake_dir, db);
}

#[test]
fn export_to_postgres() {
    let pg = Postgres::start();
    full_story(&pg);
    // Keys and types as declared.
    assert_eq!(
        pg.query("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'dim_customer'::regclass AND i.indisprimary"),
        "customer_key"
    );
    assert_eq!(
        pg.query("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'fact_sales'::regclass AND attname IN ('amount_usd', 'sales_date', 'loaded_at', 'dedupe_key', 'is_outlier') ORDER BY attname"),
        "numeric(18,2)\nbytea\nboolean\ntimestamp with time zone\ndate"
    );
}

#[test]
fn export_to_mariadb() {
    let db = MariaDb::start();
    full_story(&db);
    // The password from MYSQL_PWD when the URL has none.
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let (data, _) = generate(&dir.path().join("d"), 300, 3);
    ingest_and_run(&lake_dir, &data);
    let out = shoplake(&lake_dir)
        .args(["export", "--table", "dim_store", "--to"])
        .arg(db.url_without_password())
        .env("MYSQL_PWD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD));
    assert_eq!(
        db.query("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fact_sales' AND CONSTRAINT_NAME = 'PRIMARY'"),
        "dedupe_key"
    );
    assert_eq!(
        db.query("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fact_sales' AND COLUMN_NAME IN ('amount_usd', 'dedupe_key', 'sales_date', 'loaded_at') ORDER BY COLUMN_NAME"),
        "decimal(18,2)\nbinary(16)\ndatetime(6)\ndate"
    );
}

/// Credentials from the environment, and clear errors that never show the password.
#[test]
fn credentials_and_connection_errors() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let (data, _) = generate(&dir.path().join("d"), 500, 5);
    ingest_and_run(&lake_dir, &data);

    // The URL from SHOPLAKE_EXPORT_URL, the password from SHOPLAKE_EXPORT_PASSWORD.
    let out = shoplake(&lake_dir)
        .arg("export")
        .env("SHOPLAKE_EXPORT_URL", pg.url_without_password())
        .env("SHOPLAKE_EXPORT_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD));

    // A wrong password: an authentication error naming the user and where it came from.
    let wrong = "Wr0ng-pass-not-shown";
    let out = shoplake(&lake_dir)
        .args(["export", "--to"])
        .arg(pg.url().replace(PASSWORD, wrong))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("refused user \"dw_loader\"") && t.contains("the URL"),
        "{t}"
    );
    assert!(!t.contains(wrong), "{t}");

    // PGPASSWORD when neither the URL nor SHOPLAKE_EXPORT_PASSWORD has one.
    let out = shoplake(&lake_dir)
        .args(["export", "--to"])
        .arg(pg.url_without_password())
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Nothing listening: the address and what to check.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for scheme in ["postgres", "mysql"] {
        let out = shoplake(&lake_dir)
            .args(["export", "--to"])
            .arg(format!("{scheme}://u:{wrong}@127.0.0.1:{port}/db"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let t = text(&out);
        assert!(
            t.contains(&format!("127.0.0.1:{port}")) && t.contains("listening"),
            "{t}"
        );
        assert!(!t.contains(wrong), "{t}");
    }

    // A misspelt scheme.
    let out = shoplake(&lake_dir)
        .args(["export", "--to"])
        .arg(format!("postgress://u:{wrong}@127.0.0.1/db"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("did you mean postgres://"),
        "{t}"
    );
    assert!(!t.contains(wrong), "{t}");
}

/// Write a small mart straight into the lake (overwriting it), as the marts stage would.
fn write_mart(lake_dir: &Path, columns: Vec<(&str, datafusion::arrow::array::ArrayRef, bool)>) {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a, nullable)| Field::new(*n, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )
    .unwrap();
    let lake = shoplake_storage::Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let tables = shoplake_tables::Tables::new(lake);
    let id = shoplake_tables::TableId::marts("mart_customer_monthly");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tables.write_batches(
            &id,
            schema,
            vec![batch],
            &[],
            shoplake_tables::WriteMode::Overwrite,
            1,
        ))
        .unwrap();
}

/// Marts are found wherever they are, keyed by their grain; a column the lake gains is added
/// to the target; a column whose type changed is refused with the fix.
#[test]
fn marts_and_schema_changes() {
    use datafusion::arrow::array::{ArrayRef, Decimal128Array, Int64Array, StringArray};
    use std::sync::Arc;
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let customers: ArrayRef = Arc::new(StringArray::from(vec![Some("C1"), Some("C2"), None]));
    let months: ArrayRef = Arc::new(StringArray::from(vec!["2024-01", "2024-01", "2024-01"]));
    let totals: ArrayRef = Arc::new(
        Decimal128Array::from(vec![1050, 99, 7])
            .with_precision_and_scale(18, 2)
            .unwrap(),
    );
    write_mart(
        &lake_dir,
        vec![
            ("customer_id", customers.clone(), true),
            ("year_month", months.clone(), false),
            ("total_usd", totals.clone(), false),
        ],
    );
    let out = export_ok(&lake_dir, &pg);
    assert!(
        line(&out, "mart_customer_monthly").contains("table created"),
        "{out}"
    );
    assert_eq!(
        pg.query("SELECT coalesce(customer_id, '-'), year_month, total_usd FROM mart_customer_monthly ORDER BY 1"),
        "-|2024-01|0.07\nC1|2024-01|10.50\nC2|2024-01|0.99"
    );
    // The grain is customer + month; a NULL customer allowed, so UNIQUE, not PRIMARY KEY.
    assert_eq!(
        pg.query("SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'mart_customer_monthly'::regclass"),
        "u|UNIQUE (customer_id, year_month)"
    );

    // The mart gains a column: added, and filled.
    let orders: ArrayRef = Arc::new(Int64Array::from(vec![3, 1, 1]));
    write_mart(
        &lake_dir,
        vec![
            ("customer_id", customers.clone(), true),
            ("year_month", months.clone(), false),
            ("total_usd", totals, false),
            ("orders", orders, false),
        ],
    );
    let out = export_ok(&lake_dir, &pg);
    let l = line(&out, "mart_customer_monthly");
    assert!(
        l.contains("replace") && l.contains("added columns orders"),
        "{out}"
    );
    assert_eq!(
        pg.query("SELECT SUM(orders), COUNT(*) FROM mart_customer_monthly"),
        "5|3"
    );

    // A column changes type: refused, naming the column and the fix; the target is unchanged.
    let as_text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    write_mart(
        &lake_dir,
        vec![
            ("customer_id", customers, true),
            ("year_month", months, false),
            ("total_usd", as_text, false),
        ],
    );
    let out = export(&lake_dir, &pg, &[]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("\"total_usd\" is numeric(18,2) in the target but text")
            && t.contains("DROP TABLE \"mart_customer_monthly\""),
        "{t}"
    );
    assert_eq!(
        pg.query("SELECT SUM(orders), COUNT(*) FROM mart_customer_monthly"),
        "5|3"
    );
}
