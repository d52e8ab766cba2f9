//! `shoplake marts refresh [--full]`, and the refresh that ends every `shoplake run`.

use crate::context::App;
use anyhow::Result;
use shoplake_marts::{Action, MartRefresh, Marts, RefreshMode};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct MartsArgs {
    #[command(subcommand)]
    pub action: MartsAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum MartsAction {
    /// Recompute the months changed since the last refresh (`shoplake run` does this itself).
    Refresh {
        /// Rebuild every month, not only the changed ones.
        #[arg(long)]
        full: bool,
    },
}

pub async fn command(app: &App, a: MartsArgs) -> Result<ExitCode> {
    match a.action {
        MartsAction::Refresh { full } => {
            let run_id = app.ledger.runs()?.last().map(|r| r.run_id).unwrap_or(0);
            let mode = if full {
                RefreshMode::Full
            } else {
                RefreshMode::Incremental
            };
            refresh(app, mode, run_id).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The marts of the app's lake.
pub fn marts(app: &App) -> Result<Marts> {
    Ok(Marts::new(
        app.pipeline.tables().clone(),
        &app.config.marts,
        app.config.pipeline.memory_limit_mb * 1024 * 1024,
    )?)
}

/// Refresh the marts and print what happened to each.
pub async fn refresh(app: &App, mode: RefreshMode, run_id: i64) -> Result<Vec<MartRefresh>> {
    let done = marts(app)?.refresh(mode, run_id).await?;
    for r in &done {
        println!("{}", describe(r));
    }
    Ok(done)
}

/// After a run committed: refresh the marts unless `[marts] refresh_on_run = false`. A failed
/// refresh leaves the marts as they were (one commit per mart or none) and is reported; the
/// load itself stays committed and the next run or `shoplake marts refresh` catches up.
pub async fn after_run(app: &App, run_id: i64) -> ExitCode {
    if !app.config.marts.refresh_on_run {
        return ExitCode::SUCCESS;
    }
    match refresh(app, RefreshMode::Incremental, run_id).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: refreshing the marts failed: {e:#}\n  the load is committed; the marts are unchanged. \
                 `shoplake marts refresh` (or the next run) catches up."
            );
            ExitCode::from(3)
        }
    }
}

pub fn describe(r: &MartRefresh) -> String {
    let name = r.mart.name();
    let version = r
        .version
        .map(|v| format!("v{v}"))
        .unwrap_or_else(|| "-".into());
    match &r.action {
        Action::UpToDate => format!("marts: {name:<24} up to date ({version})"),
        Action::NoChange => {
            format!("marts: {name:<24} no month changed; new source versions recorded ({version})")
        }
        Action::Incremental { months } => {
            let list: Vec<String> = months.iter().map(|m| m.to_string()).collect();
            let shown = if list.len() > 6 {
                format!(
                    "{} ... {}",
                    list[..3].join(", "),
                    list[list.len() - 2..].join(", ")
                )
            } else {
                list.join(", ")
            };
            format!(
                "marts: {name:<24} recomputed {} month(s) ({shown}): {} rows -> {version}",
                months.len(),
                r.rows
            )
        }
        Action::Full { reason } => format!(
            "marts: {name:<24} rebuilt in full ({reason}): {} rows -> {version}",
            r.rows
        ),
        Action::Skipped { reason } => format!("marts: {name:<24} skipped: {reason}"),
    }
}
