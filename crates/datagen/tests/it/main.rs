//! Generates data sets and reads them back the way the pipeline will: a small reference
//! pipeline (dedupe, validate, fill, resolve) built only on `shoplake_core::values` must arrive at
//! exactly the counts the generator reports.

use flate2::read::GzDecoder;
use serde_json::Value;
use shoplake_core::Format;
use shoplake_core::values::{
    REGIONS, clean_key, name_match_key, normalize_currency, normalize_region, normalize_status,
    parse_date_iso, parse_decimal, parse_integer,
};
use shoplake_datagen::{
    DefectRates, Expected, GenerateConfig, GenerateError, GenerateReport, generate,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn small(seed: u64, sales_rows: u64, rows_per_file: u64) -> GenerateConfig {
    GenerateConfig {
        seed,
        sales_rows,
        rows_per_file,
        customers: 800,
        products: 120,
        stores: 12,
        threads: 2,
        ..GenerateConfig::default()
    }
}

fn run(config: &GenerateConfig, dir: &Path) -> GenerateReport {
    generate(config, dir, &|_| {}).expect("generate")
}

/// Every file under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        GzDecoder::new(&bytes[..]).read_to_string(&mut s).unwrap();
        s
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

/// A sales record with canonical field names; `None` for empty or null.
type Record = HashMap<String, Option<String>>;

fn json_record(v: &Value) -> Record {
    fn canonical(k: &str) -> &str {
        match k {
            "order_id" => "transaction_id",
            "order_date" => "sales_date",
            "price" => "unit_price",
            "total_amount" => "amount",
            other => other,
        }
    }
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                other => panic!("unexpected value {other}"),
            };
            (canonical(k).to_string(), text)
        })
        .collect()
}

fn read_records(path: &Path) -> Vec<Record> {
    let text = read_text(path);
    let name = path.file_name().unwrap().to_string_lossy();
    if name.contains(".csv") {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        lines
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                assert_eq!(fields.len(), header.len(), "{l}");
                header
                    .iter()
                    .zip(fields)
                    .map(|(h, f)| (h.to_string(), (!f.is_empty()).then(|| f.to_string())))
                    .collect()
            })
            .collect()
    } else if name.ends_with(".ndjson") {
        text.lines()
            .map(|l| json_record(&serde_json::from_str(l).unwrap()))
            .collect()
    } else {
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(text.lines().count() > 2, "a JSON array spread over lines");
        v.as_array().unwrap().iter().map(json_record).collect()
    }
}

struct Reference {
    fx: HashSet<(String, String)>,
    products: HashSet<String>,
    product_names: HashMap<String, String>,
    customers: HashSet<String>,
}

fn reference(dir: &Path) -> Reference {
    let fx_text = read_text(&dir.join("fx_rates/fx_rates.csv"));
    let mut lines = fx_text.lines();
    assert_eq!(lines.next(), Some("currency,month,rate_to_usd"));
    let fx = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let rate = parse_decimal(f[2], 8).unwrap().unwrap();
            assert!(rate > 0, "{l}");
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    let products: Vec<Value> =
        serde_json::from_str(&read_text(&dir.join("products/products.json"))).unwrap();
    let customers = read_text(&dir.join("customers/customers.ndjson"))
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["customer_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    Reference {
        fx,
        products: products
            .iter()
            .map(|p| p["product_id"].as_str().unwrap().to_string())
            .collect(),
        product_names: products
            .iter()
            .map(|p| {
                let name = p["product_name"].as_str().unwrap();
                (
                    name_match_key(name),
                    p["product_id"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        customers,
    }
}

/// Distinct unknown ids seen, for the inferred-member counts.
#[derive(Default)]
struct Seen {
    customers: HashSet<String>,
    products: HashSet<String>,
}

/// The pipeline's rules, applied to one record after dedupe.
fn validate(r: &Record, refs: &Reference, e: &mut Expected, seen: &mut Seen) {
    let get = |k: &str| r.get(k).cloned().flatten();
    let mut quarantine = |reason: &str| *e.quarantined.entry(reason.to_string()).or_default() += 1;
    let Some(date) = get("sales_date").as_deref().and_then(parse_date_iso) else {
        return quarantine("bad_date");
    };
    let Some(customer) = get("customer_id").as_deref().and_then(clean_key) else {
        return quarantine("missing_key");
    };
    let number = |k: &str, scale| {
        get(k)
            .map(|t| parse_decimal(&t, scale))
            .transpose()
            .map(Option::flatten)
    };
    let (Ok(qty), Ok(price), Ok(amount)) = (
        get("quantity")
            .map(|t| parse_integer(&t))
            .transpose()
            .map(Option::flatten),
        number("unit_price", 4),
        number("amount", 2),
    ) else {
        return quarantine("bad_number");
    };
    let filled = match (amount, qty, price) {
        (Some(a), Some(q), Some(p)) => {
            assert_eq!(
                a * 100,
                i128::from(q) * p,
                "amount = quantity x price in {r:?}"
            );
            false
        }
        (None, Some(_), Some(_)) => true,
        _ => return quarantine("missing_amount"),
    };
    let Ok(currency) = normalize_currency(&get("currency").unwrap_or_default()) else {
        return quarantine("unknown_currency");
    };
    let month = date.format("%Y-%m").to_string();
    if !refs
        .fx
        .contains(&(currency.unwrap_or("USD").to_string(), month))
    {
        return quarantine("missing_fx_rate");
    }
    e.loaded += 1;
    e.amount_filled += u64::from(filled);
    if normalize_status(&get("status").unwrap_or_default()) == "OUT" {
        e.outliers += 1;
    }
    let region = get("region").unwrap();
    let normal = normalize_region(&region).unwrap();
    assert!(REGIONS.contains(&normal.as_str()), "{region:?}");
    e.messy_region += u64::from(normal != region);
    if !refs.customers.contains(&customer) {
        e.inferred_customer_rows += 1;
        seen.customers.insert(customer);
    }
    let product = match get("product_id") {
        Some(id) => id,
        None => refs.product_names[&name_match_key(&get("product_name").unwrap())].clone(),
    };
    if !refs.products.contains(&product) {
        e.inferred_product_rows += 1;
        seen.products.insert(product);
    }
}

/// Runs the reference pipeline over a generated folder: overall and per-file expectations.
fn reference_pipeline(dir: &Path) -> (Expected, BTreeMap<String, Expected>, u64) {
    let refs = reference(dir);
    let mut total = Expected::default();
    let mut total_seen = Seen::default();
    let mut per_file = BTreeMap::new();
    let mut rows_in = 0;
    let mut ids = HashSet::new();
    for source in ["store_sales", "ecommerce"] {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(source))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| Format::from_file_name(n).is_some())
            .collect();
        names.sort();
        for name in names {
            let mut e = Expected::default();
            let mut seen = Seen::default();
            for r in read_records(&dir.join(source).join(&name)) {
                rows_in += 1;
                let id = r["transaction_id"].clone().expect("every row has an id");
                if !ids.insert(id) {
                    e.duplicates += 1;
                    continue;
                }
                validate(&r, &refs, &mut e, &mut seen);
            }
            e.inferred_customers = seen.customers.len() as u64;
            e.inferred_products = seen.products.len() as u64;
            total.loaded += e.loaded;
            total.duplicates += e.duplicates;
            for (k, v) in &e.quarantined {
                *total.quarantined.entry(k.clone()).or_default() += v;
            }
            total.amount_filled += e.amount_filled;
            total.outliers += e.outliers;
            total.messy_region += e.messy_region;
            total.inferred_customer_rows += e.inferred_customer_rows;
            total.inferred_product_rows += e.inferred_product_rows;
            total_seen.customers.extend(seen.customers);
            total_seen.products.extend(seen.products);
            per_file.insert(format!("{source}/{name}"), e);
        }
    }
    total.inferred_customers = total_seen.customers.len() as u64;
    total.inferred_products = total_seen.products.len() as u64;
    (total, per_file, rows_in)
}

#[test]
fn same_seed_gives_the_same_bytes_whatever_the_threads() {
    let mut config = small(7, 30_000, 2_500);
    let mut trees = Vec::new();
    for threads in [1, 2, 3] {
        config.threads = threads;
        let dir = tempfile::tempdir().unwrap();
        run(&config, dir.path());
        trees.push(tree(dir.path()));
    }
    assert!(trees[0].contains_key(Path::new("store_sales/store_sales_0003.csv.gz")));
    assert!(trees[0].contains_key(Path::new("ecommerce/orders_0004.json")));
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);

    config.seed = 8;
    let dir = tempfile::tempdir().unwrap();
    run(&config, dir.path());
    let other = tree(dir.path());
    let key = Path::new("store_sales/store_sales_0001.csv");
    assert_ne!(trees[0][key], other[key]);
}

#[test]
fn report_reconciles_and_progress_adds_up() {
    let config = small(11, 60_000, 7_000);
    let dir = tempfile::tempdir().unwrap();
    let written = AtomicU64::new(0);
    let report = generate(&config, dir.path(), &|n| {
        written.fetch_add(n, Ordering::Relaxed);
    })
    .unwrap();
    let e = &report.expected;
    assert_eq!(report.sales_rows_in, 60_000);
    assert_eq!(written.into_inner(), 60_000);
    assert_eq!(
        report.sales_rows_in,
        e.loaded + e.duplicates + e.quarantined.values().sum::<u64>()
    );
    let sales_files: Vec<_> = report
        .files
        .iter()
        .filter(|f| f.expected.is_some())
        .collect();
    assert_eq!(sales_files.iter().map(|f| f.rows).sum::<u64>(), 60_000);
    for f in &sales_files {
        let fe = f.expected.as_ref().unwrap();
        assert_eq!(
            f.rows,
            fe.loaded + fe.duplicates + fe.quarantined.values().sum::<u64>(),
            "{}",
            f.path
        );
    }
    let store_rows: u64 = sales_files
        .iter()
        .filter(|f| f.source == "store_sales")
        .map(|f| f.rows)
        .sum();
    assert_eq!(store_rows, 42_000);
    // At these rates and this size every defect shows up.
    for reason in [
        "bad_date",
        "bad_number",
        "missing_key",
        "missing_amount",
        "unknown_currency",
        "missing_fx_rate",
    ] {
        assert!(
            e.quarantined.get(reason).is_some_and(|n| *n > 0),
            "{reason}: {e:?}"
        );
    }
    assert!(e.duplicates > 0 && e.amount_filled > 0 && e.outliers > 0 && e.messy_region > 0);
    assert!(e.inferred_customers > 0 && e.inferred_customers < e.inferred_customer_rows);
    assert!(e.inferred_products > 0 && e.inferred_products < e.inferred_product_rows);
    // Rates are rates: the counts land near them.
    let near = |count: u64, rate: f64| {
        (count as f64 - rate * 60_000.0).abs() < 6.0 * (rate * 60_000.0).sqrt() + 5.0
    };
    assert!(near(e.outliers, config.defects.outlier), "{e:?}");
    assert!(near(e.messy_region, config.defects.messy_region), "{e:?}");

    let manifest: GenerateReport =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest, report);
}

#[test]
fn files_read_back_give_exactly_the_reported_counts() {
    let config = small(3, 40_000, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let report = run(&config, dir.path());
    let (derived, per_file, rows_in) = reference_pipeline(dir.path());
    assert_eq!(rows_in, report.sales_rows_in);
    assert_eq!(derived, report.expected);
    for f in report.files.iter().filter(|f| f.expected.is_some()) {
        assert_eq!(Some(&per_file[&f.path]), f.expected.as_ref(), "{}", f.path);
    }

    // A few counts straight from the text, without the reference pipeline.
    let mut csv = String::new();
    let mut json = String::new();
    for f in &report.files {
        match f.source.as_str() {
            "store_sales" => csv.push_str(&read_text(&dir.path().join(&f.path))),
            "ecommerce" => json.push_str(&read_text(&dir.path().join(&f.path))),
            _ => {}
        }
    }
    let e = &report.expected;
    let outliers = csv.matches(",OUT\n").count() + json.matches("\"status\":\"OUT\"").count();
    assert_eq!(outliers as u64, e.outliers);
    let unknown_currency =
        csv.matches(",XYZ,").count() + json.matches("\"currency\":\"XYZ\"").count();
    assert!(unknown_currency > 0 && unknown_currency as u64 <= e.quarantined["unknown_currency"]);
    let empty_amounts = csv
        .lines()
        .filter(|l| l.split(',').nth(8) == Some(""))
        .count()
        + json.matches("\"total_amount\":null").count();
    assert_eq!(
        empty_amounts as u64,
        e.amount_filled + e.quarantined["missing_amount"]
    );
    let jpy_in_june = csv
        .lines()
        .filter(|l| l.contains(",2025-06-") && l.contains(",JPY,"))
        .count()
        + json
            .lines()
            .filter(|l| l.contains("\"2025-06-") && l.contains("\"JPY\""))
            .count();
    assert_eq!(jpy_in_june as u64, e.quarantined["missing_fx_rate"]);
}

#[test]
fn zero_rates_give_clean_data() {
    let config = GenerateConfig {
        defects: DefectRates::none(),
        ..small(5, 20_000, 4_000)
    };
    let dir = tempfile::tempdir().unwrap();
    let report = run(&config, dir.path());
    let clean = Expected {
        loaded: 20_000,
        ..Expected::default()
    };
    assert_eq!(report.expected, clean);
    let (derived, _, rows_in) = reference_pipeline(dir.path());
    assert_eq!(rows_in, 20_000);
    assert_eq!(derived, clean);
}

#[test]
fn reference_files_have_their_shapes() {
    let config = small(1, 1_000, 1_000);
    let dir = tempfile::tempdir().unwrap();
    let report = run(&config, dir.path());
    let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "fx_rates/fx_rates.csv",
            "stores/stores.csv",
            "products/products.json",
            "customers/customers.ndjson",
            "sales_team/sales_team.csv",
            "campaigns/campaigns.json",
            "store_sales/store_sales_0001.csv",
            "ecommerce/orders_0001.ndjson",
        ]
    );
    for f in &report.files {
        let text = read_text(&dir.path().join(&f.path));
        let records = match f.path.rsplit_once('.').unwrap().1 {
            "csv" => text.lines().count() - 1,
            "ndjson" => text.lines().count(),
            _ => serde_json::from_str::<Vec<Value>>(&text).unwrap().len(),
        };
        assert_eq!(records as u64, f.rows, "{}", f.path);
    }

    // Six months, six currencies, no JPY in June.
    let fx = read_text(&dir.path().join("fx_rates/fx_rates.csv"));
    assert_eq!(fx.lines().count(), 1 + 6 * 6 - 1);
    assert!(fx.contains("\nJPY,2025-05,0.00"));
    assert!(!fx.contains("JPY,2025-06"));
    assert!(fx.contains("\nUSD,2025-06,1.000000\n"));

    let stores = read_text(&dir.path().join("stores/stores.csv"));
    assert!(stores.starts_with(
        "id,store_name,address,city,store_pincode,region,store_manager_name,store_opening_date\n"
    ));
    for l in stores.lines().skip(1) {
        assert!(REGIONS.contains(&l.split(',').nth(5).unwrap()), "{l}");
    }
    let team = read_text(&dir.path().join("sales_team/sales_team.csv"));
    assert!(
        team.starts_with("id,first_name,last_name,store_id,manager_id,is_manager,joining_date\n")
    );
    for store in 1..=12 {
        let members: Vec<Vec<&str>> = team
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[3] == store.to_string())
            .collect();
        assert!((3..=6).contains(&members.len()));
        assert_eq!(
            members
                .iter()
                .filter(|f| f[5] == "Y" && f[4].is_empty())
                .count(),
            1
        );
    }

    let products: Vec<Value> =
        serde_json::from_str(&read_text(&dir.path().join("products/products.json"))).unwrap();
    assert_eq!(products[0]["product_id"], "P0001");
    let names: HashSet<&str> = products
        .iter()
        .map(|p| p["product_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 120);
    assert!(
        products
            .iter()
            .all(|p| p["unit_price"].as_f64().unwrap() > 0.0)
    );

    let customer: Value = serde_json::from_str(
        read_text(&dir.path().join("customers/customers.ndjson"))
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(customer["customer_id"], "C00001");
    for k in [
        "first_name",
        "last_name",
        "email",
        "phone",
        "address",
        "city",
        "region",
        "join_date",
    ] {
        assert!(customer[k].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    }
    assert!(parse_date_iso(customer["join_date"].as_str().unwrap()).is_some());

    let campaigns: Vec<Value> =
        serde_json::from_str(&read_text(&dir.path().join("campaigns/campaigns.json"))).unwrap();
    assert_eq!(campaigns.len(), 6);
    assert_eq!(campaigns[2]["campaign_id"], "CMP03");

    let sales = read_text(&dir.path().join("store_sales/store_sales_0001.csv"));
    assert!(sales.starts_with("transaction_id,sales_date,customer_id,product_id,store_id,sales_person_id,quantity,unit_price,amount,currency,region,status\nS000000001,"));
    let order: Value = serde_json::from_str(
        read_text(&dir.path().join("ecommerce/orders_0001.ndjson"))
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let keys: Vec<&str> = order
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "order_id",
        "order_date",
        "customer_id",
        "product_name",
        "quantity",
        "price",
        "total_amount",
        "currency",
        "status",
        "channel",
        "campaign_id",
        "region",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert!(order["order_id"].as_str().unwrap().starts_with("E000000"));
}

#[test]
fn a_smaller_run_removes_the_files_of_a_bigger_one() {
    let dir = tempfile::tempdir().unwrap();
    run(&small(2, 10_000, 1_000), dir.path());
    assert!(dir.path().join("store_sales/store_sales_0007.csv").exists());
    std::fs::write(dir.path().join("store_sales/notes.md"), "mine").unwrap();
    let report = run(
        &GenerateConfig {
            gzip: false,
            ..small(2, 3_000, 1_000)
        },
        dir.path(),
    );
    let mut store_files: Vec<String> = std::fs::read_dir(dir.path().join("store_sales"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    store_files.sort();
    assert_eq!(
        store_files,
        [
            "notes.md",
            "store_sales_0001.csv",
            "store_sales_0002.csv",
            "store_sales_0003.csv"
        ]
    );
    let (derived, _, _) = reference_pipeline(dir.path());
    assert_eq!(derived, report.expected);
}

#[test]
fn edge_sizes_still_reconcile() {
    for (rows, per_file, days) in [
        (0, 10, 30),
        (1, 1, 0),
        (7, 2, 0),
        (500, 37, 3),
        (3_000, 400, 45),
    ] {
        let mut config = small(rows + per_file, rows, per_file);
        config.end_date = config.start_date + chrono::Days::new(days);
        config.defects.missing_fx_rate = 0.05;
        config.defects.dup_across_files = 0.2;
        let dir = tempfile::tempdir().unwrap();
        let report = run(&config, dir.path());
        let (derived, _, rows_in) = reference_pipeline(dir.path());
        assert_eq!(rows_in, rows);
        assert_eq!(
            derived, report.expected,
            "{rows} rows, {per_file} per file, {days} days"
        );
    }
}

#[test]
fn invalid_settings_are_all_reported() {
    let mut config = GenerateConfig {
        rows_per_file: 0,
        stores: 0,
        ..GenerateConfig::default()
    };
    config.end_date = config.start_date - chrono::Days::new(1);
    config.defects.outlier = 1.5;
    let dir = tempfile::tempdir().unwrap();
    let err = generate(&config, dir.path(), &|_| {}).unwrap_err();
    let GenerateError::InvalidConfig(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert!(err.to_string().contains("defects.outlier"));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}
