//! `shoplake export`: load the star schema and the marts into PostgreSQL or MySQL/MariaDB.
//! The target URL comes from `--to`, `SHOPLAKE_EXPORT_URL` or `export.url` in shoplake.toml;
//! a password missing from the URL from the variable named by `export.password_env`, then
//! `PGPASSWORD` / `MYSQL_PWD`. Every URL printed is redacted.

use crate::context::{App, GlobalArgs};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoplake_export::{Change, Dialect, ExportOptions, ExportProgress, TableReport, Target};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Target database: postgres://user[:password]@host[:port]/database or mysql://...
    /// [default: $SHOPLAKE_EXPORT_URL, then export.url in shoplake.toml]
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Export only this table (repeatable) [default: every table under processed/ and marts/]
    #[arg(long = "table", value_name = "NAME")]
    tables: Vec<String>,
    /// Replace every table whole, even where only new rows would be appended
    #[arg(long)]
    full: bool,
}

pub async fn run(a: ExportArgs, g: &GlobalArgs) -> Result<ExitCode> {
    let app = App::open(g)?;
    let raw = match a.to.or_else(|| std::env::var("SHOPLAKE_EXPORT_URL").ok()) {
        Some(u) => u,
        None => match &app.config.export.url {
            Some(u) => u.clone(),
            None => bail!(
                "no export target: pass --to postgres://user@host/db (or mysql://...), set \
                 SHOPLAKE_EXPORT_URL, or set export.url in shoplake.toml"
            ),
        },
    };
    let env = &app.config.export.password_env;
    let driver_env = |t: &Target| match t.dialect {
        Dialect::Postgres => "PGPASSWORD",
        Dialect::MySql => "MYSQL_PWD",
    };
    let target = Target::parse(&raw)?;
    let driver = driver_env(&target);
    let target = target
        .with_fallback_password(std::env::var(env).ok(), env)
        .with_fallback_password(std::env::var(driver).ok(), driver);
    let options = ExportOptions {
        tables: a.tables,
        full: a.full,
    };
    println!("exporting to {target}");
    let progress = Progress::new(g.quiet);
    let report =
        shoplake_export::export(app.pipeline.tables(), &target, &options, &progress).await?;
    let count = |mode: &str| report.tables.iter().filter(|t| t.mode == mode).count();
    println!(
        "exported {} tables to {} in {:.1}s: {} rows written ({} replaced, {} appended, {} unchanged)",
        report.tables.len(),
        report.target,
        report.elapsed.as_secs_f64(),
        report.rows(),
        count("replace"),
        count("append"),
        count("unchanged"),
    );
    Ok(ExitCode::SUCCESS)
}

/// A spinner per table on a terminal, and one line per table on stdout.
struct Progress {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            bar: Mutex::new(None),
            enabled: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

impl ExportProgress for Progress {
    fn table_started(&self, table: &str, change: &Change) {
        if !self.enabled || *change == Change::Unchanged {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:<26} {human_pos} rows ({per_sec})")
                .expect("valid template"),
        );
        bar.set_message(format!("{table} ({})", change.mode()));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }

    fn rows(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(n);
        }
    }

    fn table_done(&self, r: &TableReport) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
        let versions = match r.previous_version {
            Some(p) if p != r.version => format!("v{p} -> v{}", r.version),
            _ => format!("v{}", r.version),
        };
        let mut notes = vec![versions, format!("{} rows in the target", r.total_rows)];
        if let Some(reason) = &r.reason {
            notes.push(reason.clone());
        }
        if r.created {
            notes.push("table created".into());
        }
        if !r.added_columns.is_empty() {
            notes.push(format!("added columns {}", r.added_columns.join(", ")));
        }
        println!(
            "  {:<26} {:<9} {:>10} rows  ({})",
            r.name,
            r.mode,
            r.rows,
            notes.join("; ")
        );
    }
}
