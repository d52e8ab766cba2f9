//! Runs as task graphs: the landing folder watched by a running `serve`, retries of a flaky
//! storage layer, and webhooks received by a real HTTP server.

use crate::util::{fixtures, shoplake};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn sql_csv(lake: &Path, config: &Path, sql: &str) -> String {
    let out = shoplake(lake)
        .arg("--config")
        .arg(config)
        .args(["sql", "--format", "csv", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Poll `check` until it holds; the deadline only stops a hung test, it measures nothing.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(lake: &Path, config: &Path) -> Serve {
    let mut child = shoplake(lake)
        .arg("--config")
        .arg(config)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--postgres",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let server = Serve(child);
    let mut seen = String::new();
    // The watcher announces itself once the endpoints are up.
    while !seen.contains("watching") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("serve exited: {seen}");
        }
        seen.push_str(&line);
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = out.read_to_string(&mut sink);
    });
    server
}

#[test]
fn a_file_dropped_into_the_landing_folder_loads_once_without_any_command() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let landing = dir.path().join("landing");
    let config = dir.path().join("shoplake.toml");
    std::fs::write(
        &config,
        format!(
            "[orchestrate]\nlanding = {:?}\nlanding_poll_ms = 100\nlanding_settle_ms = 300\n[schedules]\n",
            landing.display().to_string()
        ),
    )
    .unwrap();
    let _server = serve(&lake, &config);

    // A stores file lands in its source's folder, written through a temporary name first.
    std::fs::create_dir_all(landing.join("stores")).unwrap();
    let stores = std::fs::read(fixtures("seed003").join("store.csv")).unwrap();
    std::fs::write(landing.join("stores/stores.csv.part"), &stores).unwrap();
    std::fs::rename(
        landing.join("stores/stores.csv.part"),
        landing.join("stores/stores.csv"),
    )
    .unwrap();
    let loaded = || {
        let n = sql_csv(
            &lake,
            &config,
            "SELECT COUNT(*) AS n FROM files WHERE status = 'loaded'",
        );
        n == "n\n1"
    };
    eventually("the landed file is loaded", loaded);
    let stores_rows = sql_csv(&lake, &config, "SELECT COUNT(*) AS n FROM dim_store");
    assert_ne!(stores_rows, "n\n0");
    eventually("the file moves to .done", || {
        !landing.join("stores/stores.csv").exists()
    });

    // The same content dropped again, under another name: ingested once, loaded once.
    std::fs::write(landing.join("stores/stores_again.csv"), &stores).unwrap();
    eventually("the second drop is handled", || {
        !landing.join("stores/stores_again.csv").exists()
    });
    assert_eq!(
        sql_csv(&lake, &config, "SELECT COUNT(*) AS n FROM files"),
        "n\n1",
        "one file in the ledger"
    );
    assert_eq!(
        sql_csv(&lake, &config, "SELECT COUNT(*) AS n FROM dim_store"),
        stores_rows
    );
    // Every run was started by the file arrival and recorded its tasks.
    let runs = sql_csv(
        &lake,
        &config,
        "SELECT DISTINCT kind, status FROM runs ORDER BY 1, 2",
    );
    assert_eq!(runs, "kind,status\nfile_arrival,succeeded", "{runs}");
    let discover = sql_csv(
        &lake,
        &config,
        "SELECT state, rows FROM tasks WHERE task = 'discover' ORDER BY run_id",
    );
    assert_eq!(
        discover, "state,rows\nsucceeded,1\nsucceeded,0",
        "{discover}"
    );
}

/// Requests received: (path, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver: records each request's path and body, answers 200.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            g.lock()
                .unwrap()
                .push((path, String::from_utf8_lossy(&body).into_owned()));
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (format!("http://{addr}"), got)
}

#[test]
fn flaky_storage_is_retried_and_failures_reach_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = receiver();
    let config = dir.path().join("shoplake.toml");
    std::fs::write(
        &config,
        format!(
            r#"[orchestrate]
retry_attempts = 3
retry_base_ms = 20
retry_max_ms = 100
[[notify.webhooks]]
url = "{url}/hooks/SECRET-TOKEN-123"
events = ["run_failed", "run_succeeded", "quality_breach"]
max_attempts = 2
"#
        ),
    )
    .unwrap();
    let run = |lake: &Path, faults: &str| {
        let ingest = shoplake(lake)
            .arg("--config")
            .arg(&config)
            .arg("ingest")
            .arg(fixtures("seed001"))
            .output()
            .unwrap();
        assert!(ingest.status.success());
        shoplake(lake)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("SHOPLAKE_FAULT_STORAGE", faults)
            .output()
            .unwrap()
    };

    // Two injected storage errors: the load is retried and the run succeeds.
    let lake = dir.path().join("flaky");
    let out = run(&lake, "2");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("SECRET-TOKEN-123"), "{text}");
    let task = sql_csv(
        &lake,
        &config,
        "SELECT state, attempts FROM tasks WHERE run_id = 1 AND task = 'transform_load'",
    );
    assert_eq!(task, "state,attempts\nsucceeded,3");
    let clean = dir.path().join("clean");
    assert!(run(&clean, "0").status.success());
    let count = "SELECT COUNT(*) AS n, SUM(amount_usd) AS usd FROM fact_sales";
    assert_eq!(
        sql_csv(&lake, &config, count),
        sql_csv(&clean, &config, count)
    );

    // More errors than attempts: the run fails, the lake stays as it was, the webhook hears.
    let broken = dir.path().join("broken");
    let out = run(&broken, "10");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("injected storage error"), "{err}");
    assert!(!err.contains("SECRET-TOKEN-123"), "{err}");
    let state = sql_csv(
        &broken,
        &config,
        "SELECT r.status, t.task, t.state, t.attempts FROM runs r JOIN tasks t USING (run_id) ORDER BY t.seq",
    );
    assert_eq!(
        state,
        "status,task,state,attempts\nfailed,discover,skipped,0\nfailed,crawl,succeeded,1\n\
         failed,transform_load,failed,3\nfailed,refresh_marts,skipped,0\nfailed,reports,skipped,0\n\
         failed,notify,succeeded,1"
    );
    assert_eq!(
        sql_csv(
            &broken,
            &config,
            "SELECT COUNT(*) AS n FROM files WHERE status = 'loaded'"
        ),
        "n\n0"
    );

    let events: Vec<serde_json::Value> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(path, body)| {
            assert_eq!(path, "/hooks/SECRET-TOKEN-123");
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
        })
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "run_succeeded").count(),
        2,
        "{kinds:?}"
    );
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "run_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{kinds:?}");
    assert_eq!(failed[0]["run_id"], 1);
    let message = failed[0]["message"].as_str().unwrap();
    assert!(
        message.contains("transform_load") && message.contains("injected storage error"),
        "{message}"
    );
}

/// A spill write that fails (a full disk) fails the load, not the file being read at the
/// time: the error says where the spill files are and what to do, no file is marked failed,
/// and the next run loads everything.
#[test]
fn a_full_spill_disk_fails_the_run_and_blames_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shoplake.toml");
    std::fs::write(&config, "[orchestrate]\nretry_attempts = 1\n").unwrap();
    let lake = dir.path().join("lake");
    let ingest = shoplake(&lake)
        .arg("ingest")
        .arg(fixtures("seed001"))
        .output()
        .unwrap();
    assert!(ingest.status.success());
    let run = |faults: &str| {
        shoplake(&lake)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("SHOPLAKE_FAULT_SPILL", faults)
            .output()
            .unwrap()
    };

    let out = run("1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write spill files under"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("SHOPLAKE_TMP"), "{err}");
    assert!(!err.contains("writer stopped"), "{err}");
    let failed = "SELECT COUNT(*) AS n FROM files WHERE status = 'failed'";
    assert_eq!(sql_csv(&lake, &config, failed), "n\n0");

    let out = run("0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sales = "SELECT COUNT(*) AS n FROM files WHERE entity = 'sales' AND status <> 'loaded'";
    assert_eq!(sql_csv(&lake, &config, sales), "n\n0");
    assert_eq!(sql_csv(&lake, &config, failed), "n\n0");
}
