//! `shoplake`: the one binary. The composition root: parses the command line, opens the lake
//! (config < environment < flags), wires the stages together and prints what happened.

mod commands;
mod context;
mod export;
mod marts;
mod output;
mod progress;
mod report;
mod schedule;
mod serve;

use clap::{Parser, Subcommand};
use context::GlobalArgs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "shoplake", version, about = "Retail analytics data lake and ETL pipeline", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate sample data, ingest, crawl and run it, and print headline numbers.
    Demo(commands::DemoArgs),
    /// Generate seeded, messy retail source files (CSV, JSON, NDJSON).
    Generate(commands::GenerateArgs),
    /// Copy files (or folders of files) into the raw zone and the file ledger.
    Ingest {
        /// Files or folders; a folder's sub-folders name the sources.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Source name for every file (default: from the folder or file name).
        #[arg(long)]
        source: Option<String>,
    },
    /// Infer the schema and mapping of new files and report schema drift.
    Crawl,
    /// Process every pending file into the star schema (then refresh the marts and notify).
    Run,
    /// List runs, or show the tasks of one (`runs show ID`).
    Runs(commands::RunsArgs),
    /// Run SQL over the lake (no query: an interactive prompt).
    Sql(commands::SqlArgs),
    /// List the lake's tables and the system tables.
    Tables,
    /// Show a table's columns.
    Describe { table: String },
    /// Show a table's versions.
    History { table: String },
    /// List quarantined rows by source and reason, or replay them.
    Quarantine(commands::QuarantineArgs),
    /// List the file ledger.
    Files,
    /// Refresh the data marts (`shoplake run` does it after every load).
    Marts(marts::MartsArgs),
    /// Write the daily or monthly report (CSV files and an HTML page) into reports/.
    Report(report::ReportArgs),
    /// Load the star schema and the marts into PostgreSQL or MySQL/MariaDB.
    Export(export::ExportArgs),
    /// Serve the lake: HTTP API and PostgreSQL wire protocol, until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Manage who may use `serve`: users, roles, row filters and API tokens.
    Users(serve::UsersArgs),
    /// List the schedules of shoplake.toml and their next fire times.
    Schedule(schedule::ScheduleArgs),
}

/// One glibc malloc arena per core, instead of up to eight. Arrow buffers are allocated on
/// one thread (a tokio worker, a blocking scan thread) and freed on another, and glibc kept
/// the freed memory spread over its many arenas: a 10M-row `run` peaked at 479 MB of resident
/// memory, 350 MB with one arena per core, in the same time, and the dashboard queries were
/// no slower (bench/README.md, "Memory at 50M"). `MALLOC_ARENA_MAX`, when set, decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena_per_core() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt sets a parameter of the allocator and takes no pointers; it runs
        // first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    one_malloc_arena_per_core();
    let cli = Cli::parse();
    init_tracing(cli.global.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(commands::dispatch(cli.command, &cli.global));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    // delta-rs logs expected conditions at warn/error level (a table not created yet, binary
    // columns without statistics); its real failures reach us as errors and are printed once.
    // SHOPLAKE_LOG (EnvFilter syntax) shows everything when wanted.
    let filter = EnvFilter::try_from_env("SHOPLAKE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,deltalake_core=off,deltalake=off,buoyant_kernel=off,buoyant_kernel_engine=off",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}
