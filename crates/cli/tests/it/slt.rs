//! SQL result tests over the star schema, in a sqllogictest-like format: each `.slt` file under
//! `tests/slt/` runs against a lake loaded from the seed fixtures.
//!
//! ```text
//! query <column count as letters> [rowsort]
//! SELECT ...
//! ----
//! expected row, cells separated by a space
//! ```
//! Set `SLT_COMPLETE=1` to rewrite the expected results from what the queries return (then
//! review the diff).

use crate::util::{TestLake, fixtures, rows_of};
use std::path::Path;

struct Case {
    sql: String,
    sort: bool,
    expected: Vec<String>,
    header: String,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end();
        if !line.starts_with("query") {
            continue;
        }
        let sort = line.contains("rowsort");
        let mut sql = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "----" {
                break;
            }
            sql.push(l);
        }
        let mut expected = Vec::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push(lines.next().unwrap().trim_end().to_string());
        }
        cases.push(Case {
            sql: sql.join("\n"),
            sort,
            expected,
            header: line.to_string(),
        });
    }
    cases
}

async fn run_file(lake: &TestLake, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let cases = parse(&text);
    assert!(!cases.is_empty(), "{}: no queries", path.display());
    let mut completed: String = text
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let mut failures = Vec::new();
    for case in &cases {
        let mut got: Vec<String> = rows_of(&lake.query(&case.sql).await)
            .into_iter()
            .map(|r| r.replace('|', " "))
            .collect();
        if case.sort {
            got.sort();
        }
        if got != case.expected {
            failures.push(format!(
                "{}\n{}\nexpected:\n{}\ngot:\n{}",
                case.header,
                case.sql,
                case.expected.join("\n"),
                got.join("\n")
            ));
        }
        completed.push_str(&format!(
            "{}\n{}\n----\n{}\n\n",
            case.header,
            case.sql,
            got.join("\n")
        ));
    }
    if std::env::var("SLT_COMPLETE").is_ok() {
        std::fs::write(path, completed).unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "{}:\n{}",
        path.display(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_schema_queries() {
    let lake = TestLake::new();
    for seed in ["seed003", "seed004"] {
        lake.ingest(&[fixtures(seed)], None).await;
    }
    let report = lake.run().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    crate::marts::refresh(&lake, shoplake_marts::RefreshMode::Incremental).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        run_file(&lake, &f).await;
    }
}
