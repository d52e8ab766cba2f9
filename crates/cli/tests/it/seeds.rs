//! Files shaped like each seed's data load with no configuration, and give the totals the test
//! computes on its own from the raw files.

use crate::util::{TestLake, fixtures};
use std::collections::{BTreeMap, HashSet};

/// Parse a simple CSV fixture (no quoted commas) into header-keyed rows.
fn csv(path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(|v| v.trim().to_string()))
                .collect()
        })
        .collect()
}

fn cents(s: &str) -> i64 {
    let v: f64 = s.parse().unwrap();
    (v * 100.0).round() as i64
}

async fn cents_of(lake: &TestLake, sql: &str) -> i64 {
    let s = lake.scalar(sql).await;
    cents(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_transactions() {
    let lake = TestLake::new();
    let rows = csv(&fixtures("seed001").join("transactions.csv"));
    lake.ingest(&[fixtures("seed001")], None).await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // No transaction id: identical rows are one sale; an empty amount with no quantity or
    // price cannot be filled.
    let mut seen = HashSet::new();
    let (mut loaded, mut dups, mut missing, mut total) = (0, 0, 0, 0i64);
    for r in &rows {
        if r["amount"].is_empty() {
            missing += 1;
        } else if !seen.insert(format!("{r:?}")) {
            dups += 1;
        } else {
            loaded += 1;
            total += cents(&r["amount"]);
        }
    }
    let o = &report.files[0].outcome;
    assert_eq!(
        (
            o.loaded,
            o.duplicates,
            o.quarantined.get("missing_amount").copied().unwrap_or(0)
        ),
        (loaded, dups, missing)
    );
    assert_eq!(
        cents_of(&lake, "SELECT SUM(amount_usd) FROM fact_sales").await,
        total
    );
    let out: i64 = rows.iter().filter(|r| r["status"] == "OUT").count() as i64;
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE is_outlier")
            .await,
        out
    );
    assert_eq!(
        lake.rows("SELECT DISTINCT region FROM fact_sales ORDER BY region")
            .await,
        vec!["East", "North", "South", "West"]
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE year = 2025 AND month = 8")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_bookstore_csv_and_json() {
    let lake = TestLake::new();
    lake.ingest(&[fixtures("seed002")], None).await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let csv_rows = csv(&fixtures("seed002").join("transactions.csv"));
    let json: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures("seed002").join("transactions.json")).unwrap(),
    )
    .unwrap();

    // Expected: each transaction id once; an empty total is quantity x unit price.
    let mut by_txn: BTreeMap<String, i64> = BTreeMap::new();
    for r in &csv_rows {
        let amount = if r["total_amount"].is_empty() {
            r["quantity"].parse::<i64>().unwrap() * cents(&r["unit_price"])
        } else {
            cents(&r["total_amount"])
        };
        by_txn.entry(r["transaction_id"].clone()).or_insert(amount);
    }
    for r in &json {
        let amount = (r["total_amount"].as_f64().unwrap() * 100.0).round() as i64;
        by_txn
            .entry(r["transaction_id"].as_str().unwrap().to_string())
            .or_insert(amount);
    }
    let total: i64 = by_txn.values().sum();
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await,
        by_txn.len() as i64
    );
    assert_eq!(
        cents_of(&lake, "SELECT SUM(amount_usd) FROM fact_sales").await,
        total
    );
    assert_eq!(
        lake.count("SELECT SUM(rows_duplicate) FROM files").await,
        1,
        "T1002 came twice"
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales WHERE amount_filled")
            .await,
        1
    );
    // Books are known only by title: one inferred product per title.
    let titles: HashSet<String> = csv_rows.iter().map(|r| r["book_title"].clone()).collect();
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_product WHERE is_inferred")
            .await,
        titles.len() as i64
    );
    assert_eq!(
        lake.count("SELECT COUNT(DISTINCT payment_method) FROM fact_sales")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_sales_and_dimensions() {
    let lake = TestLake::new();
    lake.ingest(&[fixtures("seed003")], None).await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let entities: BTreeMap<String, String> = report
        .files
        .iter()
        .map(|f| (f.name.clone(), f.entity.clone()))
        .collect();
    assert_eq!(entities["customer.csv"], "customers");
    assert_eq!(entities["store.csv"], "stores");
    assert_eq!(entities["product.csv"], "products");
    assert_eq!(entities["sales_team.csv"], "sales_team");
    assert_eq!(entities["sales.csv"], "sales");

    let sales = csv(&fixtures("seed003").join("sales.csv"));
    let total: i64 = sales.iter().map(|r| cents(&r["total_cost"])).sum();
    assert_eq!(
        cents_of(&lake, "SELECT SUM(amount) FROM fact_sales").await,
        total
    );
    // Products are given by name and resolve to the product table's ids.
    let products = csv(&fixtures("seed003").join("product.csv"));
    let ids: BTreeMap<String, String> = products
        .iter()
        .map(|p| (p["name"].clone(), p["id"].clone()))
        .collect();
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_product WHERE is_inferred")
            .await,
        0
    );
    for (name, id) in &ids {
        let expected: i64 = sales
            .iter()
            .filter(|s| &s["product_name"] == name)
            .map(|s| cents(&s["total_cost"]))
            .sum();
        let got = lake
            .scalar(&format!(
                "SELECT COALESCE(SUM(amount), 0) FROM fact_sales WHERE product_id = '{id}'"
            ))
            .await;
        assert_eq!(cents(&got), expected, "{name}");
    }
    // Sales per store, month and sales person (the incentive mart's input).
    let mut per: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for s in &sales {
        *per.entry((
            s["store_id"].clone(),
            s["sales_date"][..7].to_string(),
            s["sales_person_id"].clone(),
        ))
        .or_default() += cents(&s["total_cost"]);
    }
    let rows = lake.rows("SELECT store_id, CONCAT(CAST(year AS VARCHAR), '-', LPAD(CAST(month AS VARCHAR), 2, '0')), sales_person_id, SUM(amount) FROM fact_sales GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").await;
    let expected: Vec<String> = per
        .iter()
        .map(|((st, m, sp), c)| format!("{st}|{m}|{sp}|{}.{:02}", c / 100, c % 100))
        .collect();
    assert_eq!(rows, expected);
    // Full names are derived, phone numbers are hashed.
    assert_eq!(
        lake.scalar("SELECT full_name FROM dim_sales_person WHERE sales_person_id = '10'")
            .await,
        "Rakesh Kumar"
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_customer WHERE phone_hash IS NOT NULL")
            .await,
        3
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_sales_person WHERE is_manager")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_customers_products_orders() {
    let lake = TestLake::new();
    lake.ingest(&[fixtures("seed004")], None).await;
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let orders = csv(&fixtures("seed004").join("orders.csv"));
    let products = csv(&fixtures("seed004").join("products.csv"));
    let customers = csv(&fixtures("seed004").join("customers.csv"));
    let category: BTreeMap<String, String> = products
        .iter()
        .map(|p| (p["product_id"].clone(), p["category"].clone()))
        .collect();
    let mut by_cat: BTreeMap<String, i64> = BTreeMap::new();
    for o in &orders {
        *by_cat
            .entry(category[&o["product_id"]].clone())
            .or_default() += cents(&o["total_amount"]);
    }
    let rows = lake
        .rows(
            "SELECT category, SUM(amount_usd) FROM fact_sales GROUP BY category ORDER BY category",
        )
        .await;
    let expected: Vec<String> = by_cat
        .iter()
        .map(|(c, v)| format!("{c}|{}.{:02}", v / 100, v % 100))
        .collect();
    assert_eq!(rows, expected);
    // Customer 104 is not in customers.csv: the sale loads against an inferred member.
    let known: HashSet<&String> = customers.iter().map(|c| &c["customer_id"]).collect();
    let unknown = orders
        .iter()
        .filter(|o| !known.contains(&o["customer_id"]))
        .count() as i64;
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM dim_customer WHERE is_inferred")
            .await,
        unknown
    );
    assert_eq!(
        lake.count("SELECT COUNT(*) FROM fact_sales").await,
        orders.len() as i64
    );
    // Emails are hashed case-insensitively, never stored in clear.
    assert_eq!(
        lake.count(
            "SELECT COUNT(DISTINCT email_hash) FROM dim_customer WHERE email_hash IS NOT NULL"
        )
        .await,
        3
    );

    // The customer file arrives again with a changed city: history is kept (type 2).
    let dir = lake.dir.path().join("update");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixtures("seed004").join("customers.csv"))
        .unwrap()
        .replace("Austin", "Dallas")
        + "104,Dev,Patel,dev@example.com,Boston,MA,US,2025-02-01\n";
    std::fs::write(dir.join("customers.csv"), text).unwrap();
    lake.ingest(&[dir], None).await;
    let report = lake.run().await;
    let o = &report.files[0].outcome;
    assert_eq!(
        (o.rows_in, o.loaded, o.duplicates),
        (4, 2, 2),
        "one change, one late member, two unchanged"
    );
    assert_eq!(lake.rows("SELECT city, is_current FROM dim_customer WHERE customer_id = '101' ORDER BY valid_from").await, vec!["Austin|false", "Dallas|true"]);
    assert_eq!(
        lake.rows("SELECT city, is_inferred FROM dim_customer WHERE customer_id = '104'")
            .await,
        vec!["Boston|false"]
    );
}
