//! The data marts: numbers checked against totals the test computes on its own from the raw
//! fixture files (never from fact_sales), ranks and incentives per store-month with ties, and an
//! incremental refresh that equals a full rebuild.

use crate::util::{TestLake, fixtures, generate, shoplake};
use shoplake_core::{DecimalSetting, MartsConfig};
use shoplake_marts::{Action, Mart, MartRefresh, Marts, RefreshMode};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Parse a simple CSV fixture (no quoted commas) into header-keyed rows.
pub fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(|v| v.trim().to_string()))
                .collect()
        })
        .collect()
}

/// Exact cents of a decimal text (`212`, `120.5`, `18.25`), no floating point.
pub fn cents(text: &str) -> i64 {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let frac = format!("{frac:0<2}");
    assert!(frac.len() == 2, "{text} has more than two decimals");
    let v = int.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    if neg { -v } else { v }
}

pub fn money(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

pub fn marts_of(lake: &TestLake, config: &MartsConfig) -> Marts {
    Marts::new(lake.pipeline.tables().clone(), config, 256 << 20).unwrap()
}

pub async fn refresh(lake: &TestLake, mode: RefreshMode) -> Vec<MartRefresh> {
    marts_of(lake, &MartsConfig::default())
        .refresh(mode, 0)
        .await
        .unwrap()
}

/// Every row of a mart, in a stable order.
pub async fn mart_rows(lake: &TestLake, mart: Mart) -> Vec<String> {
    let order = match mart {
        Mart::CustomerMonthly => "month, customer_id",
        Mart::SalesTeamMonthly => "month, store_id, sales_person_id",
    };
    lake.rows(&format!("SELECT * FROM {} ORDER BY {order}", mart.name()))
        .await
}

/// Expected (customer, month) -> (orders, sales cents, refunds, refunded cents), from the raw
/// files, by the rules of docs/marts.md: a completed line that is not an outlier is a sale; a
/// refunded line is counted apart; a line with no amount is quarantined; an identical line
/// without a transaction id is a duplicate.
type CustomerMonth = BTreeMap<(String, String), (BTreeSet<String>, i64, i64, i64)>;

fn add_line(
    out: &mut CustomerMonth,
    customer: &str,
    date: &str,
    order: String,
    status: &str,
    amount: &str,
) {
    let e = out
        .entry((customer.to_string(), date[..7].to_string()))
        .or_default();
    match status.trim().to_ascii_uppercase().as_str() {
        "" | "COMPLETED" => {
            e.0.insert(order);
            e.1 += cents(amount);
        }
        "REFUNDED" => {
            e.2 += 1;
            e.3 += cents(amount);
        }
        _ => {}
    }
}

fn tier(c: i64) -> &'static str {
    match c {
        c if c >= 100_000 => "gold",
        c if c >= 50_000 => "silver",
        c if c >= 10_000 => "bronze",
        _ => "NULL",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_mart_matches_totals_from_the_raw_files() {
    let lake = TestLake::new();
    lake.ingest(
        &[
            fixtures("seed001"),
            fixtures("seed003"),
            fixtures("seed004"),
        ],
        None,
    )
    .await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let done = refresh(&lake, RefreshMode::Incremental).await;
    assert!(
        done.iter().all(|r| matches!(r.action, Action::Full { .. })),
        "the first refresh builds everything: {done:?}"
    );

    let mut expected = CustomerMonth::new();
    let mut seen = BTreeSet::new();
    for (i, r) in read_csv(&fixtures("seed001").join("transactions.csv"))
        .iter()
        .enumerate()
    {
        if r["amount"].is_empty() || !seen.insert(format!("{r:?}")) {
            continue; // quarantined (missing amount) or a duplicate
        }
        let status = if r["status"] == "OUT" {
            "OUT"
        } else {
            &r["status"]
        };
        add_line(
            &mut expected,
            &r["customer_id"],
            &r["purchase_date"],
            format!("001:{i}"),
            status,
            &r["amount"],
        );
    }
    for (i, r) in read_csv(&fixtures("seed003").join("sales.csv"))
        .iter()
        .enumerate()
    {
        add_line(
            &mut expected,
            &r["customer_id"],
            &r["sales_date"],
            format!("003:{i}"),
            "",
            &r["total_cost"],
        );
    }
    for r in read_csv(&fixtures("seed004").join("orders.csv")) {
        add_line(
            &mut expected,
            &r["customer_id"],
            &r["order_date"],
            r["order_id"].clone(),
            "",
            &r["total_amount"],
        );
    }
    let want: Vec<String> = expected
        .iter()
        .map(|((c, m), (orders, sales, refunds, refunded))| {
            format!(
                "{c}|{m}|{}|{}|{refunds}|{}|{}",
                orders.len(),
                money(*sales),
                money(*refunded),
                tier(*sales)
            )
        })
        .collect();
    let got = lake
        .rows("SELECT customer_id, month, orders, total_sales_usd, refunds, refunded_usd, coupon_tier FROM mart_customer_monthly ORDER BY customer_id, month")
        .await;
    assert_eq!(got, want);

    // Names and addresses come from the customer files (the current version of each customer).
    let mut people = BTreeMap::new();
    let mut phones = BTreeMap::new();
    for r in read_csv(&fixtures("seed003").join("customer.csv")) {
        people.insert(
            r["customer_id"].clone(),
            (
                format!("{} {}", r["first_name"], r["last_name"]),
                format!("{}, {}", r["address"], r["pincode"]),
            ),
        );
        // Masked: every digit but the last four hidden.
        let digits: String = r["phone_number"]
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let masked = "*".repeat(digits.len() - 4) + &digits[digits.len() - 4..];
        phones.insert(r["customer_id"].clone(), masked);
    }
    for r in read_csv(&fixtures("seed004").join("customers.csv")) {
        people.insert(
            r["customer_id"].clone(),
            (
                format!("{} {}", r["first_name"], r["last_name"]),
                format!("{}, {}, {}", r["city"], r["state"], r["country"]),
            ),
        );
    }
    for (id, (name, address)) in &people {
        let rows = lake
            .rows(&format!("SELECT DISTINCT full_name, address, customer_inferred FROM mart_customer_monthly WHERE customer_id = '{id}'"))
            .await;
        assert_eq!(
            rows,
            vec![format!("{name}|{address}|false")],
            "customer {id}"
        );
    }
    for (id, masked) in &phones {
        let rows = lake
            .rows(&format!(
                "SELECT DISTINCT phone_masked FROM mart_customer_monthly WHERE customer_id = '{id}'"
            ))
            .await;
        // Customers without sales are not in the mart.
        assert!(
            rows.is_empty() || rows == vec![masked.clone()],
            "customer {id}: {rows:?}"
        );
    }
    assert!(
        lake.count("SELECT COUNT(*) FROM mart_customer_monthly WHERE phone_masked LIKE '******%'")
            .await
            > 0
    );
    // A customer known only from a sale is in the mart, flagged, without a name.
    assert_eq!(
        lake.rows("SELECT full_name, customer_inferred FROM mart_customer_monthly WHERE customer_id = '104'").await,
        vec!["NULL|true"]
    );
}

/// Write a seed 003-shaped data set (stores, sales team, sales) into `dir`.
fn seed003_with(dir: &Path, extra_sales: &str) -> PathBuf {
    let out = dir.join("seed003x");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["customer.csv", "product.csv", "store.csv", "sales_team.csv"] {
        std::fs::copy(fixtures("seed003").join(f), out.join(f)).unwrap();
    }
    let mut sales = std::fs::read_to_string(fixtures("seed003").join("sales.csv")).unwrap();
    sales.push_str(extra_sales);
    std::fs::write(out.join("sales.csv"), sales).unwrap();
    out
}

/// Rank and incentive per store-month computed from the raw sales file: rank = 1 + the number
/// of sellers of the store-month with more sales; incentive = share × sales, rounded half away
/// from zero to cents, for rank 1 (every tied top seller), else 0.
fn expected_team(sales: &Path, share_ppm: i64) -> Vec<String> {
    let mut totals: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for r in read_csv(sales) {
        *totals
            .entry((
                r["sales_date"][..7].to_string(),
                r["store_id"].clone(),
                r["sales_person_id"].clone(),
            ))
            .or_default() += cents(&r["total_cost"]);
    }
    let mut out = Vec::new();
    for ((month, store, person), total) in &totals {
        let peers: Vec<i64> = totals
            .iter()
            .filter(|((m, s, _), _)| m == month && s == store)
            .map(|(_, t)| *t)
            .collect();
        let rank = 1 + peers.iter().filter(|t| **t > *total).count();
        let best = *peers.iter().max().unwrap();
        let top_sellers = peers.iter().filter(|t| **t == best).count();
        // cents x share (parts per million of a unit), half away from zero (amounts > 0).
        let incentive = if rank == 1 {
            (total * share_ppm + 500_000) / 1_000_000
        } else {
            0
        };
        out.push(format!(
            "{month}|{store}|{person}|{}|{rank}|{top_sellers}|{}",
            money(*total),
            money(incentive)
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_team_ranks_and_incentives_per_store_month_with_ties() {
    let lake = TestLake::new();
    // Store 130 in May: sellers 1 and 2 tie at the top; store 131: 1% of 212.50 is 2.125,
    // which rounds half away from zero to 2.13.
    let data = seed003_with(
        lake.dir.path(),
        "1,130,sugar,2023-05-02,1,50,2,100\n2,130,sugar,2023-05-03,2,50,2,100\n3,130,maida,2023-05-04,3,20,2,40\n1,131,quaker oats,2023-05-05,4,212.5,1,212.5\n",
    );
    lake.ingest(std::slice::from_ref(&data), None).await;
    assert!(lake.run().await.failed.is_empty());
    refresh(&lake, RefreshMode::Incremental).await;
    let got = lake
        .rows("SELECT month, store_id, sales_person_id, total_sales_usd, rank_in_store, top_sellers, incentive_usd FROM mart_sales_team_monthly ORDER BY month, store_id, sales_person_id")
        .await;
    let want = expected_team(&data.join("sales.csv"), 10_000);
    assert_eq!(got, want);
    // The seed's store-months: the top seller of each gets 1% of their month's sales.
    for row in [
        "2023-03|121|1|312.00|1|1|3.12",
        "2023-03|121|2|150.00|2|1|0.00",
        "2023-03|122|4|424.00|1|1|4.24",
        "2023-03|122|3|120.00|2|1|0.00",
        "2023-04|121|2|424.00|1|1|4.24",
        "2023-05|130|1|100.00|1|2|1.00",
        "2023-05|130|2|100.00|1|2|1.00",
        "2023-05|130|3|40.00|3|2|0.00",
        "2023-05|131|4|212.50|1|1|2.13",
    ] {
        assert!(got.contains(&row.to_string()), "{row} not in {got:#?}");
    }
    assert_eq!(
        lake.rows(
            "SELECT DISTINCT full_name FROM mart_sales_team_monthly WHERE sales_person_id = '4'"
        )
        .await,
        vec!["Sneha Gupta"]
    );

    // Another share is applied to every month: a rule change rebuilds the mart in full.
    let config = MartsConfig {
        incentive_share: DecimalSetting::Text("0.025".into()),
        ..MartsConfig::default()
    };
    let done = marts_of(&lake, &config)
        .refresh(RefreshMode::Incremental, 0)
        .await
        .unwrap();
    let team = done
        .iter()
        .find(|r| r.mart == Mart::SalesTeamMonthly)
        .unwrap();
    assert!(
        matches!(&team.action, Action::Full { reason } if reason.contains("rules changed")),
        "{team:?}"
    );
    let got = lake
        .rows("SELECT month, store_id, sales_person_id, total_sales_usd, rank_in_store, top_sellers, incentive_usd FROM mart_sales_team_monthly ORDER BY month, store_id, sales_person_id")
        .await;
    assert_eq!(got, expected_team(&data.join("sales.csv"), 25_000));
    assert!(
        got.contains(&"2023-05|131|4|212.50|1|1|5.31".to_string()),
        "{got:?}"
    ); // 5.3125
}

/// Refresh incrementally, then check the result equals a full rebuild row by row.
async fn incremental_equals_full(lake: &TestLake) -> Vec<MartRefresh> {
    let done = refresh(lake, RefreshMode::Incremental).await;
    let incremental = (
        mart_rows(lake, Mart::CustomerMonthly).await,
        mart_rows(lake, Mart::SalesTeamMonthly).await,
    );
    let full = refresh(lake, RefreshMode::Full).await;
    assert!(full.iter().all(|r| matches!(r.action, Action::Full { .. })));
    let rebuilt = (
        mart_rows(lake, Mart::CustomerMonthly).await,
        mart_rows(lake, Mart::SalesTeamMonthly).await,
    );
    assert_eq!(
        incremental.0, rebuilt.0,
        "customer mart: incremental != full after {done:?}"
    );
    assert_eq!(
        incremental.1, rebuilt.1,
        "sales team mart: incremental != full after {done:?}"
    );
    assert!(!rebuilt.0.is_empty());
    done
}

fn months_of(r: &[MartRefresh], mart: Mart) -> Option<Vec<String>> {
    match &r.iter().find(|r| r.mart == mart).unwrap().action {
        Action::Incremental { months } => Some(months.iter().map(|m| m.to_string()).collect()),
        Action::NoChange | Action::UpToDate => Some(Vec::new()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_refresh_replaces_only_touched_months_and_equals_a_full_rebuild() {
    let lake = TestLake::new();
    lake.ingest(&[fixtures("seed001"), fixtures("seed003")], None)
        .await;
    lake.run().await;
    refresh(&lake, RefreshMode::Incremental).await;

    // New sales in January and February 2025 (and new customers with them).
    lake.ingest(&[fixtures("seed004")], None).await;
    lake.run().await;
    let done = incremental_equals_full(&lake).await;
    assert_eq!(
        months_of(&done, Mart::CustomerMonthly),
        Some(vec!["2025-01".into(), "2025-02".into()]),
        "{done:?}"
    );
    assert_eq!(
        months_of(&done, Mart::SalesTeamMonthly),
        Some(vec!["2025-01".into(), "2025-02".into()]),
        "{done:?}"
    );

    // Nothing new: up to date.
    let again = refresh(&lake, RefreshMode::Incremental).await;
    assert!(
        again.iter().all(|r| r.action == Action::UpToDate),
        "{again:?}"
    );

    // Only a dimension changes: customer 1 moved. The months with its sales are recomputed
    // (current name and address in every month), nothing else.
    let moved = lake.dir.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::write(
        moved.join("customer.csv"),
        "customer_id,first_name,last_name,address,pincode,phone_number,customer_joining_date\n1,Saanvi,Krishnan,Mumbai,400001,9173121081,2021-01-20\n",
    )
    .unwrap();
    lake.ingest(&[moved], Some("customer")).await;
    lake.run().await;
    let done = incremental_equals_full(&lake).await;
    assert_eq!(
        months_of(&done, Mart::CustomerMonthly),
        Some(vec!["2023-03".into(), "2023-04".into()]),
        "{done:?}"
    );
    assert_eq!(
        months_of(&done, Mart::SalesTeamMonthly),
        Some(vec![]),
        "{done:?}"
    );
    assert_eq!(
        lake.rows("SELECT DISTINCT address FROM mart_customer_monthly WHERE customer_id = '1'")
            .await,
        vec!["Mumbai, 400001"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_refresh_of_generated_data_equals_a_full_rebuild() {
    let lake = TestLake::new();
    let (data, _) = generate(lake.dir.path(), 6_000, 5);
    // Reference data and the first sales file of each source first, the rest later.
    let mut first = Vec::new();
    let mut later = Vec::new();
    for source in std::fs::read_dir(&data).unwrap() {
        let source = source.unwrap().path();
        if !source.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&source)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        if files.len() > 1 {
            later.extend(files.split_off(1));
        }
        first.extend(files);
    }
    assert!(!later.is_empty());
    lake.ingest(&first, None).await;
    lake.run().await;
    let done = incremental_equals_full(&lake).await;
    assert!(
        done.iter().all(|r| matches!(r.action, Action::Full { .. })),
        "{done:?}"
    );
    lake.ingest(&later, None).await;
    lake.run().await;
    let done = incremental_equals_full(&lake).await;
    assert!(
        done.iter()
            .all(|r| matches!(r.action, Action::Incremental { .. })),
        "{done:?}"
    );
}

#[test]
fn a_refresh_killed_part_way_changes_nothing_and_the_next_run_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let ok = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(shoplake(&lake).arg("ingest").arg(fixtures("seed003")));
    let out = ok(shoplake(&lake).arg("run"));
    assert!(
        out.contains("mart_customer_monthly") && out.contains("rebuilt in full"),
        "{out}"
    );

    ok(shoplake(&lake).arg("ingest").arg(fixtures("seed001")));
    let killed = shoplake(&lake)
        .arg("run")
        .env("SHOPLAKE_FAILPOINT", "marts-mid-write")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let count = |sql: &str| {
        let out = ok(shoplake(&lake).args(["sql", "--format", "csv", sql]));
        out.lines().nth(1).unwrap_or_default().to_string()
    };
    // The load committed; the mart still shows only what it had.
    assert_eq!(
        count("SELECT COUNT(*) FROM fact_sales WHERE year = 2025"),
        "7"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM mart_customer_monthly WHERE month LIKE '2025-%'"),
        "0"
    );

    // The next run has nothing to load and brings the marts up to date.
    let out = ok(shoplake(&lake).arg("run"));
    assert!(out.contains("recomputed"), "{out}");
    assert_eq!(
        count("SELECT COUNT(*) FROM mart_customer_monthly WHERE month LIKE '2025-%'"),
        "6"
    );
    let before = ok(shoplake(&lake).args([
        "sql",
        "--format",
        "csv",
        "SELECT * FROM mart_customer_monthly ORDER BY month, customer_id",
    ]));
    ok(shoplake(&lake).args(["marts", "refresh", "--full"]));
    let after = ok(shoplake(&lake).args([
        "sql",
        "--format",
        "csv",
        "SELECT * FROM mart_customer_monthly ORDER BY month, customer_id",
    ]));
    assert_eq!(before, after);
}

#[test]
fn a_run_rolled_back_and_redone_refreshes_only_its_months() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let ok = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(shoplake(&lake).arg("ingest").arg(fixtures("seed003")));
    ok(shoplake(&lake).arg("run"));
    ok(shoplake(&lake).arg("ingest").arg(fixtures("seed001")));
    // The run dies after its fact_sales commit; the next one restores fact_sales (a RESTORE
    // commit, which restates the table's metadata) and loads the files again.
    let killed = shoplake(&lake)
        .arg("run")
        .env("SHOPLAKE_FAILPOINT", "after-fact-commit")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let out = ok(shoplake(&lake).arg("run"));
    assert!(
        out.contains("mart_customer_monthly    recomputed 3 month(s) (2025-01, 2025-02, 2025-08)"),
        "{out}"
    );
    let rows = |lake: &Path| {
        ok(shoplake(lake).args([
            "sql",
            "--format",
            "csv",
            "SELECT * FROM mart_customer_monthly ORDER BY month, customer_id",
        ]))
    };
    let incremental = rows(&lake);
    ok(shoplake(&lake).args(["marts", "refresh", "--full"]));
    assert_eq!(incremental, rows(&lake));
}
