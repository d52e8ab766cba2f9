//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by `playwright-core`
//! from `tests/e2e/dashboard.mjs`) against `shoplake serve` on loopback over a generated lake.
//! The script checks the page's figures against SQL, the filters, the CSV downloads and the
//! roles; screenshots of every page land in `target/tmp/dashboard-screenshots/`.

use crate::serve::{Server, add_user, lake};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(c).output()
            && out.status.success()
        {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
    }
    panic!("no Chromium on this machine: run scripts/deps/chromium.sh");
}

#[test]
fn the_dashboard_in_a_browser_shows_the_numbers_sql_gives_and_respects_roles() {
    let root = repo_root();
    assert!(
        root.join("tests/e2e/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/deps/node.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let admin = add_user(&lake, "ada", "admin", &[]);
    let analyst = add_user(&lake, "nora", "analyst", &["region=North"]);
    let viewer = add_user(&lake, "vic", "viewer", &[]);
    let analyst_all = add_user(&lake, "ana", "analyst", &[]);
    let server = Server::start(&lake, &[]);

    // The page and its assets come from the binary, with no credentials needed for them.
    let (code, html) = server.curl("GET", "/", None, None);
    assert_eq!(code, 200, "{html}");
    assert!(
        html.contains("/assets/app.js") && !html.contains("http"),
        "{html}"
    );
    let (code, _) = server.curl("GET", "/assets/app.js", None, None);
    assert_eq!(code, 200);
    let (code, body) = server.curl("GET", "/api/v1/dashboard/kpis", None, None);
    assert_eq!(code, 401, "panels need a token: {body}");
    let (code, body) = server.curl("GET", "/api/v1/dashboard/nope", Some(&admin), None);
    assert!(
        code == 404 && body.contains("the panels are"),
        "{code} {body}"
    );
    let (code, body) = server.curl(
        "GET",
        "/api/v1/dashboard/kpis?from=31/01/2025",
        Some(&admin),
        None,
    );
    assert!(code == 400 && body.contains("YYYY-MM-DD"), "{code} {body}");

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let out = Command::new("node")
        .arg(root.join("tests/e2e/dashboard.mjs"))
        .current_dir(root.join("tests/e2e"))
        .env("SHOPLAKE_URL", server.url(""))
        .env("ADMIN_TOKEN", &admin)
        .env("ANALYST_TOKEN", &analyst)
        .env("ANALYST_REGION", "North")
        .env("VIEWER_TOKEN", &viewer)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", chromium())
        .output()
        .expect("node is missing: run scripts/deps/node.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}{stderr}"
    );
    for page in [
        "admin-sales",
        "admin-customers",
        "admin-team",
        "admin-campaigns",
        "admin-pipeline",
        "phone-sales",
    ] {
        let png = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 10_000,
            "screenshot {} is missing or empty",
            png.display()
        );
    }

    // The customer mart copies names and addresses from dim_customer: masked there too.
    let names = server.sql_rows(
        &analyst_all,
        "SELECT DISTINCT full_name || '|' || COALESCE(address, '') FROM mart_customer_monthly WHERE full_name IS NOT NULL",
    );
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "***|***" || n == "***|"),
        "{names:?}"
    );

    // Every panel request was audited under its user.
    let rows = server.sql_rows(
        &admin,
        "SELECT user_name, COUNT(*) FROM audit WHERE action = 'dashboard' GROUP BY user_name ORDER BY user_name",
    );
    assert!(
        rows.iter().any(|r| r.starts_with("vic|")) && rows.iter().any(|r| r.starts_with("nora|")),
        "{rows:?}"
    );
}
