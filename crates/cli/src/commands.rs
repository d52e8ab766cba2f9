//! The subcommands.

use crate::Command;
use crate::context::{App, GlobalArgs};
use crate::output::{self, Format};
use crate::progress::Bars;
use anyhow::{Context, Result, bail};
use datafusion::arrow::record_batch::RecordBatch;
use shoplake_datagen::{GenerateConfig, GenerateReport};
use shoplake_etl::RunReport;
use shoplake_etl::ingest::{self, Ingested};
use shoplake_jobs::{Jobs, Trigger, Work};
use shoplake_orchestrate::Notifier;
use shoplake_query::{LakeQuery, SYSTEM_TABLES};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Sales rows to generate (store and e-commerce together).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Random seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output folder (one sub-folder per source).
    #[arg(long, default_value = "data")]
    pub out: PathBuf,
    /// Sales rows per file.
    #[arg(long)]
    pub rows_per_file: Option<u64>,
    /// Generate clean data (no injected defects).
    #[arg(long)]
    pub clean: bool,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Sales rows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Folder for the demo's data and lake.
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// Do not start the server afterwards (the form CI runs).
    #[arg(long)]
    pub no_serve: bool,
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The query; without one, an interactive prompt.
    pub query: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the result to a file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Read a table as of an older version: TABLE@VERSION (repeatable).
    #[arg(long = "as-of", value_name = "TABLE@VERSION")]
    pub as_of: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub action: Option<QuarantineAction>,
    /// Only this source.
    #[arg(long, global = true)]
    pub source: Option<String>,
    /// Only this reason code.
    #[arg(long, global = true)]
    pub reason: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineAction {
    /// Counts by source and reason (the default).
    List,
    /// Show quarantined rows with file, line and original values.
    Rows {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Load quarantined rows again, after the mapping or reference data was fixed.
    Replay,
}

/// `shoplake runs [show ID]`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Option<RunsAction>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsAction {
    /// The tasks of one run: state, attempts, times, rows, error.
    Show { run_id: i64 },
}

/// The task graph over the app's lake, with the configured webhooks.
pub fn jobs(app: &App) -> Result<Jobs> {
    let notifier = if app.config.notify.webhooks.is_empty() {
        None
    } else {
        Some(Arc::new(Notifier::from_config(
            &app.config,
            &app.state_dir,
        )?))
    };
    Ok(Jobs::new(app.pipeline.clone(), notifier))
}

fn runs(app: &App, a: RunsArgs) -> Result<ExitCode> {
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    match a.action {
        None => {
            let runs = app.ledger.runs()?;
            if runs.is_empty() {
                println!("no runs yet: `shoplake run` starts one");
            }
            println!(
                "{:>5}  {:<24} {:<24} {:<19} {:>8} {:>6} {:>10} {:>10} {:>11} {:>10}",
                "run",
                "kind",
                "status",
                "started",
                "seconds",
                "files",
                "rows_in",
                "loaded",
                "quarantined",
                "duplicates"
            );
            for r in runs {
                let secs = r
                    .ended_at
                    .map(|e| {
                        format!(
                            "{:.1}",
                            (e - r.started_at).num_milliseconds() as f64 / 1000.0
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>5}  {:<24} {:<24} {:<19} {:>8} {:>6} {:>10} {:>10} {:>11} {:>10}",
                    r.run_id,
                    r.kind,
                    r.status,
                    time(&Some(r.started_at)),
                    secs,
                    r.files,
                    r.rows_in,
                    r.loaded,
                    r.quarantined,
                    r.duplicates
                );
                if let Some(e) = &r.error {
                    println!("       error: {e}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsAction::Show { run_id }) => {
            let Some(r) = app.ledger.run(run_id)? else {
                bail!("there is no run {run_id}; `shoplake runs` lists them");
            };
            println!(
                "run {} ({}): {}, started {}, ended {}",
                r.run_id,
                r.kind,
                r.status,
                time(&Some(r.started_at)),
                time(&r.ended_at)
            );
            if let Some(e) = &r.error {
                println!("error: {e}");
            }
            println!(
                "{:<15} {:<10} {:>8} {:<19} {:<19} {:>10}  detail",
                "task", "state", "attempts", "started", "ended", "rows"
            );
            for t in app.ledger.tasks(Some(run_id))? {
                println!(
                    "{:<15} {:<10} {:>8} {:<19} {:<19} {:>10}  {}",
                    t.name,
                    t.state,
                    t.attempts,
                    time(&t.started_at),
                    time(&t.ended_at),
                    t.rows.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    t.detail.as_deref().unwrap_or("")
                );
                if let Some(e) = &t.error {
                    println!("{:<15} error: {e}", "");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn dispatch(command: Command, g: &GlobalArgs) -> Result<ExitCode> {
    match command {
        Command::Generate(a) => generate(&a, g.quiet).map(|_| ExitCode::SUCCESS),
        Command::Demo(a) => demo(a, g).await,
        Command::Ingest { paths, source } => {
            let app = App::open(g)?;
            ingest_paths(&app, &paths, source.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crawl => crawl(&App::open(g)?, g.quiet).await,
        Command::Run => {
            let app = App::open(g)?;
            let bars = Bars::new(g.quiet);
            let jobs = jobs(&app)?;
            let out = jobs.run(Trigger::Manual, Work::default(), &bars).await?;
            if let Some(report) = &out.report {
                print_report(report);
            }
            for r in &out.marts {
                println!("{}", crate::marts::describe(r));
            }
            if let Some(e) = &out.error {
                bail!(
                    "run {} failed: {e}\n  every table is as it was before the run; fix the cause and run again (`shoplake runs show {}` has the tasks)",
                    out.run_id,
                    out.run_id
                );
            }
            if let Some(e) = &out.marts_error {
                eprintln!(
                    "error: refreshing the marts failed: {e}\n  the load is committed; the marts are unchanged. \
                     `shoplake marts refresh` (or the next run) catches up."
                );
                return Ok(ExitCode::from(3));
            }
            Ok(
                if out.report.as_ref().is_some_and(|r| !r.failed.is_empty()) {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Runs(a) => runs(&App::open(g)?, a),
        Command::Serve(a) => crate::serve::serve(App::open(g)?, a).await,
        Command::Users(a) => crate::serve::users(&App::open(g)?, a),
        Command::Sql(a) => sql(&App::open(g)?, a).await,
        Command::Tables => tables(&App::open(g)?).await,
        Command::Describe { table } => describe(&App::open(g)?, &table).await,
        Command::History { table } => history(&App::open(g)?, &table).await,
        Command::Quarantine(a) => quarantine(&App::open(g)?, a, g.quiet).await,
        Command::Marts(a) => crate::marts::command(&App::open(g)?, a).await,
        Command::Report(a) => crate::report::command(&App::open(g)?, a).await,
        Command::Export(a) => crate::export::run(a, g).await,
        Command::Schedule(a) => crate::schedule::command(a, g),
        Command::Files => {
            let app = App::open(g)?;
            let q = open_query(&app).await?;
            let b = collect(&q, "SELECT file_id, source, name, entity, status, rows_in, rows_loaded, rows_quarantined, rows_duplicate, error FROM files ORDER BY file_id").await?;
            output::write(&b, Format::Table, None)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn generate(a: &GenerateArgs, quiet: bool) -> Result<GenerateReport> {
    let mut config = GenerateConfig {
        seed: a.seed,
        sales_rows: a.rows,
        ..GenerateConfig::default()
    };
    if let Some(n) = a.rows_per_file {
        config.rows_per_file = n.max(1);
    }
    if a.clean {
        config.defects = shoplake_datagen::DefectRates::none();
    }
    let bars = Bars::new(quiet);
    let bar = bars.rows("generate", a.rows);
    let started = Instant::now();
    let report = shoplake_datagen::generate(&config, &a.out, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    println!(
        "generated {} sales rows in {} files under {} in {:.1}s (seed {})",
        report.sales_rows_in,
        report.files.len(),
        a.out.display(),
        started.elapsed().as_secs_f64(),
        a.seed
    );
    let e = &report.expected;
    println!("injected defects (each on its own row):");
    println!("  {:<28}{:>10}", "duplicates", e.duplicates);
    for (reason, n) in &e.quarantined {
        println!("  {:<28}{:>10}", format!("quarantine: {reason}"), n);
    }
    println!(
        "  {:<28}{:>10}",
        "missing amount, fillable", e.amount_filled
    );
    println!("  {:<28}{:>10}", "outliers (status OUT)", e.outliers);
    println!("  {:<28}{:>10}", "messy region text", e.messy_region);
    println!(
        "  {:<28}{:>10}",
        "unknown customer rows", e.inferred_customer_rows
    );
    println!(
        "  {:<28}{:>10}",
        "unknown product rows", e.inferred_product_rows
    );
    println!(
        "expected after `shoplake run`: {} loaded, {} quarantined, {} duplicates",
        e.loaded,
        e.quarantined.values().sum::<u64>(),
        e.duplicates
    );
    println!("manifest: {}", a.out.join("manifest.json").display());
    Ok(report)
}

async fn ingest_paths(app: &App, paths: &[PathBuf], source: Option<&str>) -> Result<()> {
    if let Some(s) = source
        && !shoplake_core::is_valid_source_name(s)
    {
        bail!("source name {s:?}: use lower-case letters, digits, '_' and '-'");
    }
    let candidates = ingest::candidates(paths, source)?;
    if candidates.is_empty() {
        bail!(
            "no files found under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let results = ingest::ingest(&app.lake, &app.ledger, &candidates).await?;
    let (mut new, mut same, mut failed) = (0, 0, 0);
    for (c, r) in &results {
        match r {
            Ingested::New {
                file_id,
                source,
                raw_path,
                size,
            } => {
                new += 1;
                println!(
                    "ingested   #{file_id:<5} {source:<14} {} ({size} bytes) -> {raw_path}",
                    c.path.display()
                );
            }
            Ingested::AlreadyIngested {
                file_id,
                name,
                status,
            } => {
                same += 1;
                println!(
                    "unchanged  #{file_id:<5} {} is already in the lake as {name} ({status}); nothing to do",
                    c.path.display()
                );
            }
            Ingested::Failed { file_id, error } => {
                failed += 1;
                println!("failed     #{file_id:<5} {error}");
            }
        }
    }
    println!("{new} new, {same} already ingested, {failed} failed");
    Ok(())
}

async fn crawl(app: &App, quiet: bool) -> Result<ExitCode> {
    let bars = Bars::new(quiet);
    let results = app.pipeline.crawl_pending(&bars).await?;
    if results.is_empty() {
        println!("no new files to crawl");
    }
    let mut failures = 0;
    for c in &results {
        match &c.result {
            Ok(info) => {
                let version = if info.new_version {
                    format!("v{} (new)", info.catalog_version)
                } else {
                    format!("v{}", info.catalog_version)
                };
                println!(
                    "#{:<5} {:<14} {:<32} -> {} {version}",
                    c.file_id, c.source, c.name, info.entity
                );
                if info.new_version {
                    let m: Vec<String> = info
                        .mapping
                        .iter()
                        .map(|(s, t)| {
                            if s == t {
                                s.clone()
                            } else {
                                format!("{s}->{t}")
                            }
                        })
                        .collect();
                    println!("       mapping: {}", m.join(", "));
                    if !info.unmapped.is_empty() {
                        println!("       not mapped: {}", info.unmapped.join(", "));
                    }
                }
                if let Some(d) = &info.drift {
                    println!(
                        "       schema drift: added {:?}, removed {:?}, retyped {:?}",
                        d.added, d.removed, d.retyped
                    );
                }
            }
            Err(e) => {
                failures += 1;
                println!(
                    "#{:<5} {:<14} {:<32} FAILED: {e}",
                    c.file_id, c.source, c.name
                );
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn print_report(report: &RunReport) {
    for r in &report.recovered {
        println!(
            "recovered: run {r} had been interrupted; its changes were rolled back and its files loaded again"
        );
    }
    if report.files.is_empty() && report.failed.is_empty() {
        println!("run {}: nothing to do (no pending files)", report.run_id);
        return;
    }
    println!("run {}:", report.run_id);
    println!(
        "{:<6} {:<34} {:<11} {:>10} {:>10} {:>10} {:>10}  quarantined by reason",
        "file", "name", "entity", "rows in", "loaded", "quarant.", "dups"
    );
    for f in &report.files {
        let o = &f.outcome;
        let reasons: Vec<String> = o
            .quarantined
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        println!(
            "#{:<5} {:<34} {:<11} {:>10} {:>10} {:>10} {:>10}  {}",
            f.file_id,
            truncate(&f.name, 34),
            f.entity,
            o.rows_in,
            o.loaded,
            o.quarantined_total(),
            o.duplicates,
            reasons.join(" ")
        );
    }
    let t = report.totals();
    let reasons: Vec<String> = t
        .quarantined
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    println!(
        "{:<6} {:<34} {:<11} {:>10} {:>10} {:>10} {:>10}  {}",
        "total",
        "",
        "",
        t.rows_in,
        t.loaded,
        t.quarantined_total(),
        t.duplicates,
        reasons.join(" ")
    );
    println!(
        "check: rows in {} = loaded {} + quarantined {} + duplicates {}: {}",
        t.rows_in,
        t.loaded,
        t.quarantined_total(),
        t.duplicates,
        if t.adds_up() { "ok" } else { "MISMATCH" }
    );
    if report.inferred_rows != (0, 0) {
        println!(
            "late-arriving members: {} rows loaded against inferred customers, {} against inferred products",
            report.inferred_rows.0, report.inferred_rows.1
        );
    }
    for f in &report.failed {
        println!(
            "FAILED #{} {}: {}",
            f.file_id,
            f.name,
            f.error.as_deref().unwrap_or("unknown error")
        );
    }
    for q in report.quality_breaches() {
        println!(
            "quality {} #{} {} {}: {}",
            if q.severity == "error" {
                "FAILED"
            } else {
                "warning"
            },
            q.file_id,
            q.table_name,
            q.name,
            q.message
        );
    }
    if !report.failed.is_empty() {
        println!(
            "failed files loaded nothing; fix them and ingest again (the other files are committed)"
        );
    }
    let commits: Vec<String> = report
        .commits
        .iter()
        .map(|(t, v)| format!("{t}@v{v}"))
        .collect();
    if !commits.is_empty() {
        println!("committed: {}", commits.join(", "));
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

async fn open_query(app: &App) -> Result<LakeQuery> {
    Ok(LakeQuery::open(
        app.pipeline.tables().clone(),
        &app.ledger,
        app.config.pipeline.memory_limit_mb * 1024 * 1024,
    )
    .await?)
}

async fn collect(q: &LakeQuery, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(q.sql(sql).await?.collect().await?)
}

async fn sql(app: &App, a: SqlArgs) -> Result<ExitCode> {
    let q = open_query(app).await?;
    for spec in &a.as_of {
        let (table, version) = spec
            .rsplit_once('@')
            .context("--as-of takes TABLE@VERSION, e.g. fact_sales@3")?;
        let version: i64 = version
            .parse()
            .with_context(|| format!("{version:?} is not a version number"))?;
        q.as_of(table, version).await?;
    }
    match a.query {
        Some(query) => {
            let batches = collect(&q, &query).await?;
            output::write(&batches, a.format, a.output.as_deref())?;
        }
        None => repl(&q).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn repl(q: &LakeQuery) -> Result<()> {
    let mut rl = rustyline::DefaultEditor::new()?;
    eprintln!("shoplake SQL. End statements with ';'. \\q quits, \\d lists tables.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "shoplake> "
        } else {
            "      ..> "
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(_) => break,
        };
        let trimmed = line.trim();
        if buffer.is_empty() && (trimmed == "\\q" || trimmed == "quit" || trimmed == "exit") {
            break;
        }
        if buffer.is_empty() && trimmed == "\\d" {
            buffer.push_str("SHOW TABLES;");
        } else {
            buffer.push_str(&line);
            buffer.push('\n');
        }
        if !buffer.trim_end().ends_with(';') {
            continue;
        }
        let _ = rl.add_history_entry(buffer.trim());
        let started = Instant::now();
        match collect(q, buffer.trim().trim_end_matches(';')).await {
            Ok(b) => {
                output::write(&b, Format::Table, None)?;
                let rows: usize = b.iter().map(|b| b.num_rows()).sum();
                eprintln!("{rows} rows in {}", elapsed(started.elapsed()));
            }
            Err(e) => eprintln!("error: {e:#}"),
        }
        buffer.clear();
    }
    Ok(())
}

/// A statement's time for the prompt: milliseconds to a tenth below a second (a dashboard
/// query on a small lake takes a few), seconds to a hundredth above.
fn elapsed(time: std::time::Duration) -> String {
    let seconds = time.as_secs_f64();
    if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2} s")
    }
}

async fn tables(app: &App) -> Result<ExitCode> {
    let q = open_query(app).await?;
    println!(
        "{:<24} {:<11} {:>8} {:>12}",
        "table", "zone", "version", "rows"
    );
    for (name, id) in q.lake_tables() {
        let version = app.pipeline.tables().version(id).await?.unwrap_or(0);
        let b = collect(&q, &format!("SELECT COUNT(*) FROM \"{name}\"")).await?;
        let rows = b
            .first()
            .map(|b| {
                datafusion::arrow::util::display::array_value_to_string(b.column(0), 0)
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        println!(
            "{name:<24} {:<11} {version:>8} {rows:>12}",
            id.zone.prefix()
        );
    }
    for (name, what) in SYSTEM_TABLES {
        println!("{name:<24} {:<11} {:>8} {:>12}  {what}", "system", "-", "");
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe(app: &App, table: &str) -> Result<ExitCode> {
    let q = open_query(app).await?;
    let b = collect(&q, &format!("SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position", table.replace('\'', "''"))).await?;
    if b.iter().map(|b| b.num_rows()).sum::<usize>() == 0 {
        q.table_id(table)?;
    }
    output::write(&b, Format::Table, None)?;
    if let Ok(id) = q.table_id(table)
        && let Some(t) = app.pipeline.tables().open(&id).await?
    {
        let snapshot = t.snapshot()?;
        let parts = snapshot.metadata().partition_columns().to_vec();
        println!(
            "version {}; partitioned by: {}",
            t.version().unwrap_or(0),
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(app: &App, table: &str) -> Result<ExitCode> {
    let q = open_query(app).await?;
    let id = q.table_id(table)?;
    println!(
        "{:>7}  {:<25} {:<10} {:>6}",
        "version", "committed at (UTC)", "operation", "run"
    );
    for h in app.pipeline.tables().history(&id).await? {
        let at = chrono::DateTime::from_timestamp_millis(h.timestamp_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:>7}  {at:<25} {:<10} {:>6}",
            h.version,
            h.operation,
            h.run_id.map(|r| r.to_string()).unwrap_or_default()
        );
    }
    println!("read an older version with: shoplake sql --as-of {table}@VERSION \"SELECT ...\"");
    Ok(ExitCode::SUCCESS)
}

async fn quarantine(app: &App, a: QuarantineArgs, quiet: bool) -> Result<ExitCode> {
    let mut filter = Vec::new();
    if let Some(s) = &a.source {
        filter.push(format!("source = '{}'", s.replace('\'', "''")));
    }
    if let Some(r) = &a.reason {
        shoplake_core::ReasonCode::from_str_checked(r).map_err(anyhow::Error::msg)?;
        filter.push(format!("reason = '{}'", r.replace('\'', "''")));
    }
    let where_ = if filter.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filter.join(" AND "))
    };
    match a.action.unwrap_or(QuarantineAction::List) {
        QuarantineAction::List => {
            let q = open_query(app).await?;
            if q.table_id("quarantine").is_err() {
                println!("the quarantine is empty");
                return Ok(ExitCode::SUCCESS);
            }
            let b = collect(&q, &format!("SELECT source, reason, COUNT(*) AS rows, COUNT(DISTINCT file_id) AS files FROM quarantine {where_} GROUP BY source, reason ORDER BY source, rows DESC")).await?;
            output::write(&b, Format::Table, None)?;
        }
        QuarantineAction::Rows { limit } => {
            let q = open_query(app).await?;
            if q.table_id("quarantine").is_err() {
                println!("the quarantine is empty");
                return Ok(ExitCode::SUCCESS);
            }
            let b = collect(&q, &format!("SELECT file_name, line, reason, detail, record FROM quarantine {where_} ORDER BY file_id, line LIMIT {limit}")).await?;
            output::write(&b, Format::Table, None)?;
        }
        QuarantineAction::Replay => {
            let bars = Bars::new(quiet);
            let report = app
                .pipeline
                .replay(a.source.as_deref(), a.reason.as_deref(), &bars)
                .await?;
            println!(
                "replayed {} quarantined rows: {} loaded, {} duplicates, {} still quarantined",
                report.replayed, report.loaded, report.duplicates, report.still_quarantined
            );
            for (reason, n) in &report.still_by_reason {
                println!("  still quarantined: {reason}={n}");
            }
            return Ok(crate::marts::after_run(app, report.run_id).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn demo(a: DemoArgs, g: &GlobalArgs) -> Result<ExitCode> {
    let data = a.dir.join("data");
    let lake = a.dir.join("lake");
    if data.join("manifest.json").exists() {
        println!("using the data already generated in {}", data.display());
    } else {
        generate(
            &GenerateArgs {
                rows: a.rows,
                seed: 42,
                out: data.clone(),
                rows_per_file: None,
                clean: false,
            },
            g.quiet,
        )?;
    }
    let mut global = g.clone();
    global.lake = Some(lake.display().to_string());
    let app = App::open(&global)?;
    println!("\n== ingest into {}", lake.display());
    ingest_paths(&app, std::slice::from_ref(&data), None).await?;
    println!("\n== crawl");
    crawl(&app, g.quiet).await?;
    println!("\n== run");
    let started = Instant::now();
    let bars = Bars::new(g.quiet);
    let out = jobs(&app)?
        .run(Trigger::Manual, Work::default(), &bars)
        .await?;
    if let Some(report) = &out.report {
        print_report(report);
    }
    for r in &out.marts {
        println!("{}", crate::marts::describe(r));
    }
    if let Some(e) = &out.error {
        bail!("the demo run failed: {e}");
    }
    println!("run took {:.1}s", started.elapsed().as_secs_f64());
    println!("\n== tasks of run {}", out.run_id);
    for t in app.ledger.tasks(Some(out.run_id))? {
        println!(
            "  {:<15} {:<10} {}",
            t.name,
            t.state,
            t.error.or(t.detail).unwrap_or_default()
        );
    }
    headline(&app).await?;
    println!(
        "\nexplore: shoplake --lake {} sql \"SELECT * FROM fact_sales LIMIT 10\"",
        lake.display()
    );
    if !a.no_serve {
        return crate::serve::demo_serve(app).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn headline(app: &App) -> Result<()> {
    let q = open_query(app).await?;
    if q.table_id("fact_sales").is_err() {
        return Ok(());
    }
    println!("\n== revenue by region and month (USD, completed sales)");
    let b = collect(&q, "SELECT region, year, month, CAST(SUM(amount_usd) AS DECIMAL(18,2)) AS revenue_usd, COUNT(*) AS sales FROM fact_sales WHERE status = 'COMPLETED' GROUP BY region, year, month ORDER BY region, year, month").await?;
    output::write(&b, Format::Table, None)?;
    println!("\n== top 10 products (USD, completed sales)");
    let b = collect(&q, "SELECT product_id, product_name, category, CAST(SUM(amount_usd) AS DECIMAL(18,2)) AS revenue_usd, SUM(quantity) AS units FROM fact_sales WHERE status = 'COMPLETED' GROUP BY product_id, product_name, category ORDER BY revenue_usd DESC LIMIT 10").await?;
    output::write(&b, Format::Table, None)?;
    Ok(())
}
