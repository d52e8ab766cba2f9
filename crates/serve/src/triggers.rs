//! The triggers `serve` runs besides its endpoints: the landing-folder watcher (a file dropped
//! into `orchestrate.landing` is ingested and loaded with no command) and the schedules of
//! `shoplake.toml` (cron in a time zone). Both start runs through the same task graph as
//! `shoplake run` and the HTTP API ([`shoplake_jobs::Jobs`]), one at a time in this process
//! ([`App::run_gate`]) and one at a time per lake across processes (the run lock).

use crate::{AbortOnDrop, App, Result, ServeError};
use shoplake_etl::EtlError;
use shoplake_etl::ingest::{self, Candidate, Ingested};
use shoplake_etl::pipeline::Quiet;
use shoplake_jobs::{JobOutcome, Trigger, Work, due_report};
use shoplake_orchestrate::watch::Outcome;
use shoplake_orchestrate::{Schedule, Scheduler, SystemClock, Watcher};
use std::sync::Arc;
use std::time::Instant;

/// Run the task graph once, after any run of this process in progress; metrics and query
/// sessions follow the result.
pub async fn run_job(app: &Arc<App>, trigger: Trigger, work: Work) -> Result<JobOutcome, EtlError> {
    let _gate = app.run_gate.lock().await;
    let started = Instant::now();
    let result = app.jobs.run(trigger, work, &Quiet).await;
    match &result {
        Ok(out) => {
            let t = out.report.as_ref().map(|r| r.totals()).unwrap_or_default();
            app.metrics.run_finished(
                out.succeeded(),
                t.loaded.max(0) as u64,
                t.quarantined_total().max(0) as u64,
                t.duplicates.max(0) as u64,
                started.elapsed(),
            );
        }
        Err(_) => app.metrics.run_finished(false, 0, 0, 0, started.elapsed()),
    }
    app.sessions.invalidate().await;
    result
}

/// The trigger tasks; they end when the server shuts down.
pub struct Triggers {
    tasks: Vec<AbortOnDrop<()>>,
}

impl Triggers {
    /// Wait for the trigger loops to end (a run they started finishes first).
    pub async fn wait(self) {
        for t in self.tasks {
            t.wait().await;
        }
    }
}

/// Start the watcher (when `orchestrate.landing` is set) and the scheduler (when there are
/// schedules).
pub fn start(app: &Arc<App>) -> Result<Triggers> {
    let config = app.pipeline.config();
    let clock = Arc::new(SystemClock);
    let mut tasks = Vec::new();
    let watcher = Watcher::from_config(config, clock.clone())
        .map_err(|e| ServeError::Usage(e.to_string()))?;
    if let Some(w) = watcher {
        println!("watching {} for new files", w.dir().display());
        tasks.push(AbortOnDrop::spawn(watch_loop(app.clone(), w)));
    }
    let schedules = Schedule::from_config(config).map_err(|e| ServeError::Usage(e.to_string()))?;
    if !schedules.is_empty() {
        let mut scheduler = Scheduler::new(schedules.clone(), clock);
        for s in &schedules {
            let key = format!("schedule.{}.last_fired", s.name);
            if let Ok(Some(last)) = app.ledger.setting(&key)
                && let Ok(t) = chrono::DateTime::parse_from_rfc3339(&last)
            {
                scheduler.resume_from(&s.name, t.with_timezone(&chrono::Utc));
            }
        }
        tasks.push(AbortOnDrop::spawn(schedule_loop(app.clone(), scheduler)));
    }
    Ok(Triggers { tasks })
}

async fn watch_loop(app: Arc<App>, mut watcher: Watcher) {
    let mut shutdown = app.shutdown.clone();
    loop {
        let batch = tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            b = watcher.next_batch() => b,
        };
        if batch.is_empty() {
            continue;
        }
        let candidates: Vec<Candidate> = batch
            .iter()
            .map(|f| Candidate {
                path: f.path.clone(),
                source: f
                    .source
                    .clone()
                    .unwrap_or_else(|| ingest::source_from_name(&f.path)),
            })
            .collect();
        tracing::info!(files = candidates.len(), "files landed; starting a run");
        let work = Work {
            files: candidates,
            reports: Vec::new(),
        };
        let result = run_job(&app, Trigger::FileArrival, work).await;
        for f in &batch {
            let outcome = landed_outcome(&app, &f.path, &result);
            if let Err(e) = watcher.done(&f.path, outcome) {
                tracing::warn!("moving {} out of the landing folder: {e}", f.path.display());
            }
        }
    }
}

/// What became of one landed file: loaded (or already in the lake), or failed with the reason.
fn landed_outcome(
    app: &App,
    path: &std::path::Path,
    result: &Result<JobOutcome, EtlError>,
) -> Outcome {
    let out = match result {
        Ok(out) => out,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let Some((_, ingested)) = out.ingested.iter().find(|(c, _)| c.path == path) else {
        return Outcome::Failed(
            out.error
                .clone()
                .unwrap_or_else(|| "the run did not ingest this file".into()),
        );
    };
    let file_id = match ingested {
        Ingested::Failed { error, .. } => return Outcome::Failed(error.clone()),
        Ingested::New { file_id, .. } | Ingested::AlreadyIngested { file_id, .. } => *file_id,
    };
    match app.ledger.file(file_id) {
        Ok(Some(f)) if f.status.as_str() == "failed" => {
            Outcome::Failed(f.error.unwrap_or_else(|| "failed".into()))
        }
        // In the raw zone and the ledger: this run loaded it, or a later one will.
        _ => Outcome::Loaded,
    }
}

async fn schedule_loop(app: Arc<App>, mut scheduler: Scheduler) {
    let mut shutdown = app.shutdown.clone();
    loop {
        let due = tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            d = scheduler.next_due() => d,
        };
        let name = due.schedule.name.clone();
        tracing::info!(schedule = %name, at = %due.at, skipped = due.skipped, "schedule fired");
        let work = Work {
            files: Vec::new(),
            reports: due_report(due.schedule.job, due.at, due.schedule.tz)
                .into_iter()
                .collect(),
        };
        if let Err(e) = run_job(&app, Trigger::Schedule(name.clone()), work).await {
            tracing::error!(schedule = %name, "scheduled run could not start: {e}");
        }
        let key = format!("schedule.{name}.last_fired");
        if let Err(e) = app.ledger.set_setting(&key, &due.at.to_rfc3339()) {
            tracing::warn!("recording when {name} fired: {e}");
        }
    }
}
