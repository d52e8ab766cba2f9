//! `shoplake schedule`: the configured schedules and their next fire times, through the binary.

use crate::util::shoplake;

fn schedule(dir: &std::path::Path, config: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = shoplake(&dir.join("lake"));
    cmd.current_dir(dir).env_remove("SHOPLAKE_CONFIG");
    if let Some(text) = config {
        let path = dir.join("shoplake.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(&path);
    }
    let out = cmd.arg("schedule").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn schedule_lists_next_fire_times_in_local_time_and_utc() {
    let dir = tempfile::tempdir().unwrap();
    // No configuration: the two default report schedules, in UTC.
    let (ok, out, err) = schedule(dir.path(), None, &["--from", "2025-01-30T12:00:00Z"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "daily_report: 0 2 * * * (UTC), job daily_report
  2025-01-31 02:00 UTC     2025-01-31T02:00:00Z
  2025-02-01 02:00 UTC     2025-02-01T02:00:00Z
  2025-02-02 02:00 UTC     2025-02-02T02:00:00Z

monthly_report: 0 2 1 * * (UTC), job monthly_report
  2025-02-01 02:00 UTC     2025-02-01T02:00:00Z
  2025-03-01 02:00 UTC     2025-03-01T02:00:00Z
  2025-04-01 02:00 UTC     2025-04-01T02:00:00Z
"
    );

    // A default time zone, a schedule with its own (Friday 08:00 in New York: 09:00 is still
    // to come that day, then Monday), and a spring-forward day in Berlin.
    let config = r#"
[orchestrate]
timezone = "Europe/Berlin"
[schedules]
nightly = { cron = "30 2 * * *", job = "run" }
ny_report = { cron = "0 9 * * MON-FRI", job = "daily_report", tz = "America/New_York" }
"#;
    let (ok, out, err) = schedule(
        dir.path(),
        Some(config),
        &["--from", "2025-03-28T12:00:00Z", "--count", "2"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "nightly: 30 2 * * * (Europe/Berlin), job run
  2025-03-29 02:30 CET     2025-03-29T01:30:00Z
  2025-03-30 03:00 CEST    2025-03-30T01:00:00Z

ny_report: 0 9 * * MON-FRI (America/New_York), job daily_report
  2025-03-28 09:00 EDT     2025-03-28T13:00:00Z
  2025-03-31 09:00 EDT     2025-03-31T13:00:00Z
"
    );

    // Schedules turned off.
    let (ok, out, _) = schedule(dir.path(), Some("[schedules]\n"), &[]);
    assert!(ok);
    assert!(out.contains("no schedules"), "{out}");
}

#[test]
fn schedule_reports_bad_cron_and_time_zones() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[schedules]
a = { cron = "0 25 * * *", job = "run" }
b = { cron = "0 1 * * *", job = "run", tz = "Europe/Berln" }
"#;
    let (ok, _, err) = schedule(dir.path(), Some(config), &[]);
    assert!(!ok);
    assert!(
        err.contains(r#"schedules.a.cron: cron "0 25 * * *": hour 25 is out of range 0-23"#),
        "{err}"
    );
    assert!(err.contains(r#"did you mean "Europe/Berlin"?"#), "{err}");
    let other = tempfile::tempdir().unwrap();
    let (ok, _, err) = schedule(other.path(), None, &["--from", "yesterday"]);
    assert!(!ok);
    assert!(err.contains("--from \"yesterday\": use RFC 3339"), "{err}");
}
