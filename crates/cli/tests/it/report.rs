//! `shoplake report daily|monthly` through the binary: the files exist with the rows the test
//! computes from the raw fixtures, a second report of the same period replaces the first, and
//! the HTML page renders in headless Chromium with the numbers on it.

use crate::marts::{cents, money, read_csv};
use crate::util::{fixtures, shoplake};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn ok(c: &mut std::process::Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lake loaded with the seed 001 and 003 fixtures.
fn loaded_lake(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    ok(shoplake(&lake)
        .arg("ingest")
        .arg(fixtures("seed001"))
        .arg(fixtures("seed003")));
    ok(shoplake(&lake).arg("run"));
    lake
}

/// The current generation folder of a report, from its manifest.
fn current(lake: &Path, kind: &str, key: &str) -> PathBuf {
    let base = lake.join("reports").join(kind).join(key);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("manifest.json")).unwrap()).unwrap();
    base.join(manifest["generation"].as_str().unwrap())
}

/// A CSV file of a report: its rows as `a|b|c` strings (quoted fields kept whole).
fn rows(path: &Path) -> Vec<String> {
    csv_reader(path).into_iter().skip(1).collect()
}

fn csv_reader(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut cells = Vec::new();
            let mut cur = String::new();
            let mut quoted = false;
            for c in l.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => cells.push(std::mem::take(&mut cur)),
                    c => cur.push(c),
                }
            }
            cells.push(cur);
            cells.join("|")
        })
        .collect()
}

#[test]
fn monthly_and_daily_reports_hold_the_right_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = loaded_lake(dir.path());
    ok(shoplake(&lake).args(["report", "monthly", "--month", "2023-03"]));
    let m = current(&lake, "monthly", "2023-03");

    // Expected from the raw seed 003 sales file.
    let sales: Vec<_> = read_csv(&fixtures("seed003").join("sales.csv"))
        .into_iter()
        .filter(|r| r["sales_date"].starts_with("2023-03"))
        .collect();
    let total: i64 = sales.iter().map(|r| cents(&r["total_cost"])).sum();
    let summary = rows(&m.join("summary.csv"));
    assert_eq!(summary.len(), 1);
    assert!(
        summary[0].starts_with(&format!("2023-03|{}|{}|", money(total), sales.len())),
        "{summary:?}"
    );

    let mut by_person: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &sales {
        *by_person
            .entry((r["store_id"].clone(), r["sales_person_id"].clone()))
            .or_default() += cents(&r["total_cost"]);
    }
    let incentives = rows(&m.join("incentives.csv"));
    assert_eq!(incentives.len(), by_person.len(), "{incentives:?}");
    for ((store, person), t) in &by_person {
        let best = by_person
            .iter()
            .filter(|((s, _), _)| s == store)
            .map(|(_, v)| *v)
            .max()
            .unwrap();
        let incentive = if *t == best { (t + 50) / 100 } else { 0 };
        let row = incentives
            .iter()
            .find(|r| r.starts_with(&format!("{store}||{person}|")))
            .unwrap_or_else(|| panic!("{store}/{person} not in {incentives:?}"));
        assert!(row.contains(&format!("|{}|", money(*t))), "{row}");
        assert!(
            row.ends_with(&format!("|{}", money(incentive))),
            "{row}: want {}",
            money(incentive)
        );
    }

    let mut by_customer: BTreeMap<String, i64> = BTreeMap::new();
    for r in &sales {
        *by_customer.entry(r["customer_id"].clone()).or_default() += cents(&r["total_cost"]);
    }
    let coupons = rows(&m.join("coupons.csv"));
    let with_coupon = by_customer.values().filter(|v| **v >= 10_000).count();
    assert_eq!(coupons.len(), with_coupon, "{coupons:?}");
    assert!(
        coupons[0].starts_with("2|Dhanush Sahni|Delhi, 122009|******8165|2|574.00|silver|10"),
        "{coupons:?}"
    );

    assert_eq!(
        rows(&m.join("sales_by_region.csv")),
        vec![format!("Unknown|{}|{}|0|0.00", sales.len(), money(total))]
    );
    // The manifest lists every file with its checksum.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lake.join("reports/monthly/2023-03/manifest.json")).unwrap(),
    )
    .unwrap();
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(listed.len(), std::fs::read_dir(&m).unwrap().count());
    for f in listed {
        let bytes = std::fs::read(m.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(f["bytes"].as_u64().unwrap(), bytes.len() as u64, "{f}");
    }
    let days = rows(&m.join("sales_by_day.csv"));
    assert_eq!(days.len(), 5, "{days:?}");
    assert_eq!(
        rows(&m.join("top_products.csv"))[0],
        "1|1|quaker oats||3|2|636.00"
    );
    assert!(m.join("report.html").exists());

    // A day of seed 001: one refund, one outlier, no completed sale.
    ok(shoplake(&lake).args(["report", "daily", "--date", "2025-01-05"]));
    let d = current(&lake, "daily", "2025-01-05");
    let raw = read_csv(&fixtures("seed001").join("transactions.csv"));
    let refunded: Vec<_> = raw
        .iter()
        .filter(|r| r["purchase_date"] == "2025-01-05" && r["status"] == "REFUNDED")
        .collect();
    let refunds = rows(&d.join("refunds.csv"));
    assert_eq!(refunds.len(), refunded.len());
    assert!(
        refunds[0].contains(&format!("|{}|", refunded[0]["customer_id"])),
        "{refunds:?}"
    );
    assert!(
        refunds[0].ends_with(&format!("|{}", refunded[0]["amount"])),
        "{refunds:?}"
    );
    assert_eq!(
        rows(&d.join("summary.csv")),
        vec!["2025-01-05|0.00|0|0|2|1|18.25|1"]
    );
    assert!(rows(&d.join("top_products.csv")).is_empty());
    assert_eq!(
        csv_reader(&d.join("top_products.csv"))[0],
        "rank|product_id|product_name|category|units|orders|sales_usd"
    );

    // Data quality of the day the files were received: every file, rows in = loaded +
    // quarantined + duplicates, and the reasons.
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    ok(shoplake(&lake).args(["report", "daily", "--date", &today]));
    let q = current(&lake, "daily", &today);
    let files = rows(&q.join("data_quality.csv"));
    let fixture_files = std::fs::read_dir(fixtures("seed001")).unwrap().count()
        + std::fs::read_dir(fixtures("seed003")).unwrap().count();
    assert_eq!(files.len(), fixture_files, "{files:?}");
    let tx = files
        .iter()
        .find(|f| f.contains("|transactions.csv|"))
        .unwrap();
    let missing = raw.iter().filter(|r| r["amount"].is_empty()).count();
    assert!(
        tx.ends_with(&format!(
            "|{}|{}|{missing}|1|",
            raw.len(),
            raw.len() - missing - 1
        )),
        "{tx}"
    );
    assert_eq!(
        rows(&q.join("data_quality_reasons.csv")),
        vec![format!("missing_amount|{missing}|1")]
    );
}

#[test]
fn a_report_written_again_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let lake = loaded_lake(dir.path());
    ok(shoplake(&lake).args(["report", "daily", "--date", "2023-03-24"]));
    let first = current(&lake, "daily", "2023-03-24");
    let out = ok(shoplake(&lake).args(["report", "daily", "--date", "2023-03-24"]));
    assert!(out.contains("replaced the earlier report"), "{out}");
    let second = current(&lake, "daily", "2023-03-24");
    assert_ne!(first, second);
    assert!(!first.exists(), "the old generation is gone");
    let entries: Vec<String> = std::fs::read_dir(lake.join("reports/daily/2023-03-24"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "manifest.json and one report: {entries:?}"
    );
    assert_eq!(
        rows(&second.join("sales_by_store_region.csv")),
        vec!["Unknown|121||2|250.00|0|0.00"]
    );

    let bad = shoplake(&lake)
        .args(["report", "daily", "--date", "2023-02-30"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM-DD"));
}

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!(
        "headless Chromium is needed by this test: run scripts/deps/chromium.sh (or apt-get install -y chromium)"
    );
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let lake = loaded_lake(dir.path());
    ok(shoplake(&lake).args(["report", "monthly", "--month", "2023-03"]));
    let page = current(&lake, "monthly", "2023-03").join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "nothing is fetched"
    );
    let profile = dir.path().join("chromium-profile");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    // The month's sales (212 + 150 + 100 + 100 + 424 + 20 in the raw file), the incentive of
    // store 122's top seller, and the charts.
    let total: i64 = read_csv(&fixtures("seed003").join("sales.csv"))
        .iter()
        .filter(|r| r["sales_date"].starts_with("2023-03"))
        .map(|r| cents(&r["total_cost"]))
        .sum();
    assert_eq!(total, 100_600);
    assert!(
        dom.contains("1,006.00"),
        "the month's sales are on the page"
    );
    assert!(
        dom.contains("Sneha Gupta (store 122)") && dom.contains("4.24"),
        "the incentive chart"
    );
    assert!(dom.matches("<svg").count() >= 3, "charts render as SVG");
    assert!(dom.contains("Monthly report, March 2023"));
}
