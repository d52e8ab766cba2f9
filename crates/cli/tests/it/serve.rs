//! `shoplake serve` against real clients on loopback: curl for HTTP, psql and psycopg for the
//! PostgreSQL wire protocol, a hand-driven socket for a slow client. Each test starts the
//! real binary on free ports over a generated lake.

use crate::util::{generate, shoplake};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A lake with a small generated data set, loaded.
pub(crate) fn lake(dir: &Path) -> PathBuf {
    let (data, _) = generate(dir, 3000, 7);
    // Through the binary, as a user would.
    let lake = dir.join("lake");
    for args in [
        vec!["ingest".to_string(), data.display().to_string()],
        vec!["run".to_string()],
    ] {
        let out = shoplake(&lake).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    lake
}

pub(crate) fn add_user(lake: &Path, name: &str, role: &str, filters: &[&str]) -> String {
    let mut c = shoplake(lake);
    c.args(["users", "add", name, "--role", role]);
    for f in filters {
        c.args(["--filter", f]);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "users add {name}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("slk_")))
        .unwrap_or_else(|| panic!("no token in {stdout}"))
        .to_string()
}

pub(crate) struct Server {
    child: Child,
    pub(crate) http: SocketAddr,
    pg: SocketAddr,
    scheme: &'static str,
}

impl Server {
    pub(crate) fn start(lake: &Path, extra: &[&str]) -> Server {
        Self::start_with(shoplake(lake), extra)
    }

    fn start_with(mut cmd: Command, extra: &[&str]) -> Server {
        cmd.args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--postgres",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut http, mut pg, mut scheme) = (None, None, "http");
        let mut seen = String::new();
        while pg.is_none() {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("serve exited before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("serving HTTP on ") {
                if rest.starts_with("https://") {
                    scheme = "https";
                }
                http = Some(rest.split("://").nth(1).unwrap().parse().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("serving PostgreSQL on ") {
                pg = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        Server {
            child,
            http: http.unwrap(),
            pg: pg.unwrap(),
            scheme,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme, self.http.port())
    }

    /// (status, body) of a request made with curl.
    pub(crate) fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        self.curl_with(method, path, token, body, &[])
    }

    fn curl_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        extra: &[&str],
    ) -> (u16, String) {
        let (code, body, stderr) = self.curl_raw(method, path, token, body, extra);
        (code, format!("{}{stderr}", String::from_utf8_lossy(&body)))
    }

    /// (status, body bytes, curl's stderr) of a request made with curl.
    fn curl_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        extra: &[&str],
    ) -> (u16, Vec<u8>, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .args(extra)
            .arg(self.url(path))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if body.is_some() {
            c.args(["--data-binary", "@-"]);
        }
        let mut child = c
            .spawn()
            .expect("curl is missing: run scripts/deps/psql.sh");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(b) = body {
            stdin.write_all(b).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let split = out.stdout.iter().rposition(|&b| b == b'\n').unwrap();
        let code = String::from_utf8_lossy(&out.stdout[split + 1..]);
        (
            code.trim().parse().unwrap_or(0),
            out.stdout[..split].to_vec(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn sql(&self, token: &str, sql: &str) -> (u16, serde_json::Value) {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let (code, text) = self.curl_with(
            "POST",
            "/api/v1/sql",
            Some(token),
            Some(body.as_bytes()),
            &["-H", "Content-Type: application/json"],
        );
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql}: {e}: {text}"));
        (code, v)
    }

    /// Rows of a JSON SQL result as `a|b|c` lines (values printed as JSON scalars).
    pub(crate) fn sql_rows(&self, token: &str, sql: &str) -> Vec<String> {
        let (code, v) = self.sql(token, sql);
        assert_eq!(code, 200, "{sql}: {v}");
        let cols: Vec<String> = v["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                cols.iter()
                    .map(|c| match &r[c] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    /// psql -At: (success, stdout, stderr).
    fn psql(&self, user: &str, password: &str, sql: &str, ssl: &str) -> (bool, String, String) {
        let out = Command::new("psql")
            .arg(format!(
                "host=localhost port={} user={user} dbname=shoplake {ssl}",
                self.pg.port()
            ))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is missing: run scripts/deps/psql.sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn psql_ok(&self, user: &str, password: &str, sql: &str) -> Vec<String> {
        let (ok, out, err) = self.psql(user, password, sql, "sslmode=disable");
        assert!(ok, "psql {sql}: {err}");
        out.lines().map(str::to_string).collect()
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    let venv = std::env::var("SHOPLAKE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/shoplake/venv")
        });
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import psycopg"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "psycopg is missing: run scripts/deps/python.sh");
    py
}

/// Rows through psycopg (extended protocol, server-side parameters).
fn psycopg(server: &Server, user: &str, password: &str, sql: &str) -> Result<Vec<String>, String> {
    let script = r#"
import sys, psycopg
port, user, password, sql = sys.argv[1:5]
try:
    with psycopg.connect(host="localhost", port=int(port), user=user, password=password, dbname="shoplake", sslmode="disable") as conn:
        for row in conn.execute(sql).fetchall():
            print("|".join("" if v is None else str(v) for v in row))
except psycopg.Error as e:
    print(str(e), file=sys.stderr)
    sys.exit(3)
"#;
    let out = Command::new(python())
        .args([
            "-c",
            script,
            &server.pg.port().to_string(),
            user,
            password,
            sql,
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const REVENUE: &str = "SELECT region, CAST(SUM(amount_usd) AS VARCHAR) AS revenue, COUNT(*) AS sales \
                       FROM fact_sales WHERE status = 'COMPLETED' GROUP BY region ORDER BY region";

#[test]
fn psql_psycopg_and_http_agree_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let admin = add_user(&lake, "alice", "admin", &[]);
    let cli = shoplake(&lake)
        .args(["sql", REVENUE, "--format", "csv"])
        .output()
        .unwrap();
    assert!(cli.status.success());
    let expected: Vec<String> = String::from_utf8_lossy(&cli.stdout)
        .lines()
        .skip(1)
        .map(|l| l.replace(',', "|"))
        .collect();
    assert!(expected.len() >= 3, "{expected:?}");

    let s = Server::start(&lake, &[]);
    assert_eq!(s.sql_rows(&admin, REVENUE), expected);
    assert_eq!(s.psql_ok("alice", &admin, REVENUE), expected);
    assert_eq!(psycopg(&s, "alice", &admin, REVENUE).unwrap(), expected);

    // The catalog look-ups tools make on connect.
    let tables = s.psql_ok(
        "alice",
        &admin,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    assert!(
        tables.contains(&"fact_sales".to_string()) && tables.contains(&"runs".to_string()),
        "{tables:?}"
    );
    let (ok, out, err) = s.psql("alice", &admin, "\\dt", "sslmode=disable");
    assert!(ok && out.contains("fact_sales"), "{out}{err}");
    let pg_class = psycopg(
        &s,
        "alice",
        &admin,
        "SELECT relname FROM pg_catalog.pg_class WHERE relname = 'dim_customer'",
    )
    .unwrap();
    assert_eq!(pg_class, vec!["dim_customer"]);
    let param = psycopg(
        &s,
        "alice",
        &admin,
        "SELECT COUNT(*) FROM fact_sales WHERE region = 'North'",
    )
    .unwrap();
    assert_eq!(param.len(), 1);

    // CSV and Arrow IPC formats carry the same result.
    let body = serde_json::json!({"sql": REVENUE, "format": "csv"}).to_string();
    let (code, csv) = s.curl_with(
        "POST",
        "/api/v1/sql",
        Some(&admin),
        Some(body.as_bytes()),
        &["-H", "Content-Type: application/json"],
    );
    assert_eq!(code, 200);
    let csv_rows: Vec<String> = csv.lines().skip(1).map(|l| l.replace(',', "|")).collect();
    assert_eq!(csv_rows, expected);
    let body = serde_json::json!({"sql": REVENUE, "format": "arrow"}).to_string();
    let (code, ipc, _) = s.curl_raw(
        "POST",
        "/api/v1/sql",
        Some(&admin),
        Some(body.as_bytes()),
        &["-H", "Content-Type: application/json"],
    );
    assert_eq!(code, 200);
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
            .expect("an Arrow IPC stream");
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let ipc_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(ipc_rows, expected.len(), "rows of the Arrow result");

    // The row limit cuts and says so.
    let body = serde_json::json!({"sql": "SELECT * FROM fact_sales", "limit": 5}).to_string();
    let (code, text) = s.curl_with(
        "POST",
        "/api/v1/sql",
        Some(&admin),
        Some(body.as_bytes()),
        &["-H", "Content-Type: application/json"],
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 5);
    assert_eq!(v["truncated"], true);

    // Metrics count queries by protocol; the audit log names who ran what.
    let (code, metrics) = s.curl("GET", "/metrics", Some(&admin), None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("shoplake_query_duration_seconds_count{protocol=\"http\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("shoplake_query_duration_seconds_count{protocol=\"postgres\"} 0"),
        "{metrics}"
    );
    let audit = s.psql_ok("alice", &admin, "SELECT user_name, protocol, outcome FROM audit WHERE action = 'sql' AND detail LIKE '%SUM(amount_usd)%' ORDER BY audit_id");
    assert!(
        audit.contains(&"alice|http|ok".to_string())
            && audit.contains(&"alice|postgres|ok".to_string()),
        "{audit:?}"
    );
    assert!(s.stop().success());
}

#[test]
fn analysts_see_masked_pii_and_only_their_rows_on_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let admin = add_user(&lake, "root", "admin", &[]);
    let eng = add_user(&lake, "ed", "engineer", &[]);
    let ann = add_user(&lake, "ann", "analyst", &["region=north"]);
    let s = Server::start(&lake, &[]);

    let north = s.sql_rows(
        &admin,
        "SELECT COUNT(*) FROM fact_sales WHERE region = 'North'",
    );
    let all = s.sql_rows(&admin, "SELECT COUNT(*) FROM fact_sales");
    assert_ne!(north, all, "the data set has more than one region");
    // Every path the analyst has: HTTP SQL, psql, psycopg.
    let q = "SELECT COUNT(*) FROM fact_sales";
    assert_eq!(s.sql_rows(&ann, q), north);
    assert_eq!(s.psql_ok("ann", &ann, q), north);
    assert_eq!(psycopg(&s, "ann", &ann, q).unwrap(), north);
    let regions = "SELECT DISTINCT region FROM fact_sales UNION SELECT DISTINCT region FROM dim_customer WHERE region IS NOT NULL";
    assert_eq!(s.sql_rows(&ann, regions), vec!["North"]);
    assert_eq!(s.psql_ok("ann", &ann, regions), vec!["North"]);
    // A filter cannot be escaped by a subquery, a join or a CTE.
    let sneaky = "WITH x AS (SELECT * FROM fact_sales) SELECT COUNT(*) FROM x WHERE region <> 'North' OR region IS NULL";
    assert_eq!(s.psql_ok("ann", &ann, sneaky), vec!["0"]);

    // PII: names and street addresses masked for the analyst, as stored for the engineer.
    let names = "SELECT DISTINCT full_name FROM dim_customer WHERE full_name IS NOT NULL";
    assert_eq!(s.sql_rows(&ann, names), vec!["***"]);
    assert_eq!(s.psql_ok("ann", &ann, names), vec!["***"]);
    assert_eq!(
        psycopg(
            &s,
            "ann",
            &ann,
            "SELECT DISTINCT address FROM dim_customer WHERE address IS NOT NULL"
        )
        .unwrap(),
        vec!["***"]
    );
    let eng_names = s.sql_rows(&eng, names);
    assert!(
        eng_names.len() > 1 && !eng_names.contains(&"***".to_string()),
        "{eng_names:?}"
    );

    // System tables and the quarantine are not theirs, nor is the audit log.
    for t in ["files", "runs", "quarantine", "audit"] {
        let (code, v) = s.sql(&ann, &format!("SELECT * FROM {t}"));
        assert_eq!(code, 400, "{t}: {v}");
        let (ok, _, err) = s.psql(
            "ann",
            &ann,
            &format!("SELECT * FROM {t}"),
            "sslmode=disable",
        );
        assert!(!ok && err.contains(t), "{t}: {err}");
    }
    let (_, v) = s.curl("GET", "/api/v1/tables", Some(&ann), None);
    assert!(v.contains("fact_sales") && !v.contains("\"runs\""), "{v}");

    // Read-only: no DDL, DML, COPY or reading files.
    for bad in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/shoplake-should-not-exist.csv'",
        "INSERT INTO fact_sales SELECT * FROM fact_sales",
        "DROP TABLE fact_sales",
    ] {
        let (code, v) = s.sql(&ann, bad);
        assert!(code == 403 || code == 400, "{bad}: {code} {v}");
        let (ok, _, err) = s.psql("ann", &ann, bad, "sslmode=disable");
        assert!(!ok, "{bad} went through psql: {err}");
        assert!(
            psycopg(&s, "ann", &ann, bad).is_err(),
            "{bad} went through psycopg"
        );
    }
    assert!(!Path::new("/tmp/shoplake-should-not-exist.csv").exists());
    // ... and nothing changed.
    assert_eq!(s.sql_rows(&admin, "SELECT COUNT(*) FROM fact_sales"), all);
    assert!(s.stop().success());
}

#[test]
fn every_role_on_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let tokens = [
        ("admin", add_user(&lake, "ad", "admin", &[])),
        ("engineer", add_user(&lake, "en", "engineer", &[])),
        ("analyst", add_user(&lake, "an", "analyst", &[])),
        ("viewer", add_user(&lake, "vi", "viewer", &[])),
    ];
    let s = Server::start(&lake, &[]);
    let sql = br#"{"sql": "SELECT 1"}"#.as_slice();
    // (method, path, body, which roles may)
    type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, &'a [&'a str]);
    let matrix: &[Case] = &[
        (
            "GET",
            "/api/v1/whoami",
            None,
            &["admin", "engineer", "analyst", "viewer"],
        ),
        (
            "GET",
            "/openapi.json",
            None,
            &["admin", "engineer", "analyst", "viewer"],
        ),
        (
            "GET",
            "/api/v1/tables",
            None,
            &["admin", "engineer", "analyst"],
        ),
        (
            "GET",
            "/api/v1/tables/fact_sales",
            None,
            &["admin", "engineer", "analyst"],
        ),
        (
            "POST",
            "/api/v1/sql",
            Some(sql),
            &["admin", "engineer", "analyst"],
        ),
        ("GET", "/api/v1/files", None, &["admin", "engineer"]),
        ("GET", "/api/v1/runs", None, &["admin", "engineer"]),
        (
            "GET",
            "/api/v1/quarantine?limit=3",
            None,
            &["admin", "engineer"],
        ),
        ("GET", "/metrics", None, &["admin", "engineer"]),
        (
            "POST",
            "/api/v1/files?name=extra_stores.csv&source=stores",
            Some(b"store_id,store_name,region\nS900,New,North\n"),
            &["admin", "engineer"],
        ),
        ("GET", "/api/v1/audit", None, &["admin"]),
        ("GET", "/api/v1/users", None, &["admin"]),
    ];
    for (method, path, body, allowed) in matrix {
        let extra: &[&str] = if path.ends_with("/sql") {
            &["-H", "Content-Type: application/json"]
        } else {
            &[]
        };
        for (role, token) in &tokens {
            let (code, text) = s.curl_with(method, path, Some(token), *body, extra);
            if allowed.contains(role) {
                assert!(
                    (200..300).contains(&code),
                    "{role} {method} {path}: {code} {text}"
                );
            } else {
                assert_eq!(code, 403, "{role} {method} {path}: {text}");
                assert!(text.contains(&format!("role {role}")), "{text}");
            }
        }
        // No credentials, or bad ones: 401 and nothing else.
        let (code, text) = s.curl_with(method, path, None, *body, extra);
        assert_eq!(code, 401, "{method} {path}: {text}");
        assert!(
            text.contains("no credentials") && !text.contains("fact_sales"),
            "{text}"
        );
        let (code, text) = s.curl_with(method, path, Some("slk_0000"), *body, extra);
        assert_eq!(code, 401, "{method} {path}: {text}");
    }
    // Runs: engineers and admins may start one; a second while it runs is a conflict or starts anew.
    let (code, text) = s.curl("POST", "/api/v1/runs", Some(&tokens[2].1), None);
    assert_eq!(code, 403, "{text}");
    let (code, text) = s.curl("POST", "/api/v1/runs", Some(&tokens[1].1), None);
    assert_eq!(code, 202, "{text}");
    // Health needs no token.
    assert_eq!(s.curl("GET", "/healthz", None, None).0, 200);
    assert_eq!(s.curl("GET", "/readyz", None, None).0, 200);

    // PostgreSQL: every role but viewer logs in; a wrong password or user does not.
    for (role, token) in &tokens {
        let user = &role[..2];
        let (ok, out, err) = s.psql(user, token, "SELECT 1", "sslmode=disable");
        assert_eq!(ok, *role != "viewer", "{role}: {out}{err}");
        if *role == "viewer" {
            assert!(err.contains("no SQL access"), "{err}");
        }
    }
    let (ok, _, err) = s.psql("an", &tokens[0].1, "SELECT 1", "sslmode=disable");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (ok, _, err) = s.psql("nobody", "slk_x", "SELECT 1", "sslmode=disable");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    // Admins see the audit log, including the denials above.
    let denied = s.psql_ok(
        "ad",
        &tokens[0].1,
        "SELECT COUNT(*) FROM audit WHERE outcome = 'denied'",
    );
    assert_ne!(denied, vec!["0"]);
    assert!(s.stop().success());
}

#[test]
fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let admin = add_user(&lake, "admin", "admin", &[]);
    let config = dir.path().join("shoplake.toml");
    std::fs::write(
        &config,
        "[serve]\nmax_upload_mb = 1\nmax_rows = 1000\nquery_timeout_secs = 2\nclient_timeout_secs = 2\n",
    )
    .unwrap();
    let mut cmd = shoplake(&lake);
    cmd.arg("--config").arg(&config);
    let s = Server::start_with(cmd, &[]);

    let (code, v) = s.sql(&admin, "SELEC region FROM fact_sales");
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("SELEC"), "{v}");
    let (code, v) = s.sql(&admin, "SELECT nope FROM fact_sales");
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    // EXPLAIN is a query too (it once failed: the row limit wrapped it, and EXPLAIN must be
    // the root of its plan).
    let (code, v) = s.sql(
        &admin,
        "EXPLAIN SELECT region, COUNT(*) FROM fact_sales GROUP BY region",
    );
    assert_eq!(code, 200, "{v}");
    assert!(v.to_string().contains("physical_plan"), "{v}");
    // Over the limits: a limit beyond max_rows, and a query longer than the timeout.
    let body = br#"{"sql": "SELECT 1", "limit": 5000}"#;
    let (code, text) = s.curl_with(
        "POST",
        "/api/v1/sql",
        Some(&admin),
        Some(body),
        &["-H", "Content-Type: application/json"],
    );
    assert_eq!(code, 400);
    assert!(text.contains("max_rows 1000"), "{text}");
    let (code, v) = s.sql(
        &admin,
        "SELECT COUNT(*) FROM generate_series(1, 100000000000) a",
    );
    assert_eq!(code, 504, "{v}");
    assert!(v["error"].as_str().unwrap().contains("timeout"), "{v}");
    let (ok, _, err) = s.psql(
        "admin",
        &admin,
        "SELECT COUNT(*) FROM generate_series(1, 100000000000) a",
        "sslmode=disable",
    );
    assert!(!ok && err.contains("timeout"), "{err}");
    let (code, text) = s.curl_with(
        "POST",
        "/api/v1/sql",
        Some(&admin),
        Some(b"{not json"),
        &["-H", "Content-Type: application/json"],
    );
    assert_eq!(code, 400, "{text}");

    // A path in an upload's name: refused, nothing written outside the lake.
    for name in [
        "../../etc/passwd",
        "..%2F..%2Fescape.csv",
        "a/b.csv",
        ".hidden.csv",
    ] {
        let (code, text) = s.curl(
            "POST",
            &format!("/api/v1/files?name={name}"),
            Some(&admin),
            Some(b"x,y\n1,2\n"),
        );
        assert_eq!(code, 400, "{name}: {text}");
        assert!(text.contains("plain file name"), "{text}");
    }
    assert!(!dir.path().join("escape.csv").exists() && !lake.join("escape.csv").exists());
    // Larger than allowed.
    let big = vec![b'a'; 2 * 1024 * 1024];
    let (code, text) = s.curl(
        "POST",
        "/api/v1/files?name=big.csv",
        Some(&admin),
        Some(&big),
    );
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("1 MiB"), "{text}");
    // A bad token, a wrong password.
    assert_eq!(
        s.curl("GET", "/api/v1/tables", Some("slk_bad"), None).0,
        401
    );
    let (ok, _, err) = s.psql("admin", "wrong", "SELECT 1", "sslmode=disable");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );

    // A slow client: one that stops half-way through its headers, one that stalls an upload.
    let mut slow = TcpStream::connect(s.http).unwrap();
    slow.write_all(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut stall = TcpStream::connect(s.http).unwrap();
    write!(
        stall,
        "POST /api/v1/files?name=stall.csv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Length: 1000\r\n\r\nstore_id\n"
    )
    .unwrap();
    // ... meanwhile everyone else is served.
    assert_eq!(s.sql_rows(&admin, "SELECT 1 AS one"), vec!["1"]);
    let mut answer = String::new();
    stall
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stall.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("upload stalled"),
        "{answer}"
    );
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let closed = slow.read_to_end(&mut buf);
    assert!(
        closed.is_ok() || buf.is_empty(),
        "the slow client's connection is closed"
    );
    let (ok, out, err) = s.psql("admin", &admin, "SELECT 2", "sslmode=disable");
    assert!(ok && out == "2", "{err}");
    assert_eq!(s.curl("GET", "/healthz", None, None).0, 200);
    assert!(s.stop().success());
}

#[test]
fn tls_on_both_endpoints_and_plain_text_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let admin = add_user(&lake, "admin", "admin", &[]);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is missing: run scripts/deps/psql.sh");
    assert!(ok.success());
    let s = Server::start(
        &lake,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(s.scheme, "https");
    let cacert = ["--cacert", cert.to_str().unwrap()];
    let (code, text) = s.curl_with("GET", "/api/v1/whoami", Some(&admin), None, &cacert);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"admin\""), "{text}");
    let ssl = format!("sslmode=verify-full sslrootcert={}", cert.display());
    let (ok, out, err) = s.psql("admin", &admin, "SELECT COUNT(*) > 0 FROM fact_sales", &ssl);
    assert!(ok && out == "t", "{err}");
    let (ok, out, _) = s.psql("admin", &admin, "SHOW ssl", &ssl);
    let _ = (ok, out);
    assert!(s.stop().success());

    // Plain text on a non-loopback address is refused unless explicitly allowed.
    let out = shoplake(&lake)
        .args(["serve", "--http", "0.0.0.0:0", "--postgres", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("allow_plaintext"),
        "{err}"
    );
}

#[test]
fn upload_then_run_over_http_and_shut_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let eng = add_user(&lake, "eng", "engineer", &[]);
    let s = Server::start(&lake, &[]);
    let before = s.sql_rows(&eng, "SELECT COUNT(*) FROM dim_store");
    let csv = b"store_id,store_name,city,region\nS9001,Harbour Point,Port Town,north\n";
    let (code, text) = s.curl(
        "POST",
        "/api/v1/files?name=stores_extra.csv&source=stores",
        Some(&eng),
        Some(csv),
    );
    assert_eq!(code, 201, "{text}");
    let (code, text) = s.curl(
        "POST",
        "/api/v1/files?name=stores_extra.csv&source=stores",
        Some(&eng),
        Some(csv),
    );
    assert_eq!(code, 200, "the same content again: {text}");
    assert!(text.contains("already_ingested"), "{text}");
    let (code, text) = s.curl("POST", "/api/v1/runs", Some(&eng), None);
    assert_eq!(code, 202, "{text}");
    // Poll until the run is over (no timing assumption: as long as it takes).
    loop {
        let (_, text) = s.curl("GET", "/api/v1/runs", Some(&eng), None);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["run_in_progress"] == false {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = s.sql_rows(
        &eng,
        "SELECT region FROM dim_store WHERE store_id = 'S9001'",
    );
    let (_, runs) = s.curl("GET", "/api/v1/runs", Some(&eng), None);
    assert_eq!(after, vec!["North"], "before: {before:?}; runs: {runs}");
    let (_, metrics) = s.curl("GET", "/metrics", Some(&eng), None);
    assert!(
        metrics.contains("shoplake_runs_succeeded_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoplake_files_uploaded_total 1")
            || metrics.contains("shoplake_files_uploaded_total 2"),
        "{metrics}"
    );
    // SIGTERM: exits cleanly.
    let status = s.stop();
    assert!(status.success(), "{status:?}");
}
