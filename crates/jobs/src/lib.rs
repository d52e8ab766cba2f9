//! The built-in retail pipeline as a graph of recorded tasks: discover (ingest landed files) ->
//! crawl -> transform and load -> refresh marts -> reports (when a schedule asks for one) ->
//! notify. Every run, however it was started (`shoplake run`, the HTTP API, a file landing, a
//! schedule), goes through [`Jobs::run`], so each one leaves the same record: the run in `runs`,
//! its tasks in `tasks` (state, attempts, times, rows, error), and events for the webhooks.
//!
//! Transient failures (storage errors, a busy control database, another run holding the lake)
//! are retried with exponential backoff and full jitter; a task that keeps failing, or fails
//! for a reason retrying cannot fix, fails the run: every table goes back to the version it had
//! when the run began, and the run's files load again next time.

use chrono::{Datelike, NaiveDate, Utc};
use shoplake_core::EventKind;
use shoplake_etl::ingest::{self, Candidate, Ingested};
use shoplake_etl::pipeline::{Crawled, Progress, RunReport, RunStart};
use shoplake_etl::{EtlError, Pipeline};
use shoplake_marts::report::{self, Period};
use shoplake_marts::{Marts, RefreshMode, YearMonth};
use shoplake_orchestrate::{Event, Notifier, RetryPolicy, Transience};
use std::future::Future;
use std::sync::Arc;

/// The tasks of every run, in order.
pub const TASKS: [&str; 6] = [
    "discover",
    "crawl",
    "transform_load",
    "refresh_marts",
    "reports",
    "notify",
];

/// What started a run; recorded as the run's `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// `shoplake run`.
    Manual,
    /// `POST /api/v1/runs`, by this user.
    Api(String),
    /// Files dropped into the landing folder.
    FileArrival,
    /// A schedule of `shoplake.toml`, by name.
    Schedule(String),
}

impl Trigger {
    pub fn kind(&self) -> String {
        match self {
            Trigger::Manual => "manual".into(),
            Trigger::Api(user) => format!("api:{user}"),
            Trigger::FileArrival => "file_arrival".into(),
            Trigger::Schedule(name) => format!("schedule:{name}"),
        }
    }

    /// A run nobody is waiting on at a terminal waits for a run in progress to end; a run
    /// started by hand says another run holds the lake, and exits.
    fn waits_for_lock(&self) -> bool {
        !matches!(self, Trigger::Manual)
    }
}

/// What a run is asked to do besides loading every pending file.
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// Files to ingest first (the landing folder's).
    pub files: Vec<Candidate>,
    /// Reports to publish after the marts are refreshed.
    pub reports: Vec<Period>,
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct JobOutcome {
    pub run_id: i64,
    /// Each landed file and what ingest made of it.
    pub ingested: Vec<(Candidate, Ingested)>,
    /// The load's report, when it got that far.
    pub report: Option<RunReport>,
    /// Why the run failed (nothing of it is committed).
    pub error: Option<String>,
    /// What the marts refresh did to each mart.
    pub marts: Vec<shoplake_marts::MartRefresh>,
    /// Why refreshing the marts failed (the load is committed; the marts are unchanged).
    pub marts_error: Option<String>,
    /// Reports published: `kind period` and the folder.
    pub reports: Vec<(String, String)>,
    /// Why a report failed.
    pub report_errors: Vec<String>,
    /// Events sent (also logged).
    pub events: Vec<Event>,
}

impl JobOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self.report.as_ref().is_some_and(|r| r.failed.is_empty())
            && self.marts_error.is_none()
            && self.report_errors.is_empty()
    }
}

/// Runs the task graph over one lake.
pub struct Jobs {
    pipeline: Arc<Pipeline>,
    notifier: Option<Arc<Notifier>>,
    retry: RetryPolicy,
}

impl Jobs {
    pub fn new(pipeline: Arc<Pipeline>, notifier: Option<Arc<Notifier>>) -> Jobs {
        let retry = RetryPolicy::from_config(&pipeline.config().orchestrate);
        Jobs {
            pipeline,
            notifier,
            retry,
        }
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// One run of the graph. `Err` only when the run could not begin (the lake is locked by a
    /// run started by hand, the configuration is invalid): then nothing was recorded.
    pub async fn run(
        &self,
        trigger: Trigger,
        work: Work,
        progress: &dyn Progress,
    ) -> Result<JobOutcome, EtlError> {
        let p = &self.pipeline;
        let kind = trigger.kind();
        let start = if trigger.waits_for_lock() {
            self.with_retry(None, "begin", || p.begin_run(&kind, progress))
                .await?
        } else {
            p.begin_run(&kind, progress).await?
        };
        let run_id = start.run_id;
        let ledger = p.ledger().clone();
        ledger.queue_tasks(run_id, &TASKS)?;
        tracing::info!(run_id, trigger = %kind, "run started");
        let mut out = JobOutcome {
            run_id,
            ..JobOutcome::default()
        };

        // discover
        if work.files.is_empty() {
            ledger.task_ended(
                run_id,
                "discover",
                "skipped",
                None,
                Some("no landed files"),
                None,
            )?;
        } else {
            let lake = p.lake().clone();
            match self
                .with_retry(Some(run_id), "discover", || {
                    ingest::ingest(&lake, &ledger, &work.files)
                })
                .await
            {
                Ok(results) => {
                    let new = results
                        .iter()
                        .filter(|(_, r)| matches!(r, Ingested::New { .. }))
                        .count();
                    let detail = format!("{new} new of {} landed", results.len());
                    ledger.task_ended(
                        run_id,
                        "discover",
                        "succeeded",
                        Some(new as i64),
                        Some(&detail),
                        None,
                    )?;
                    out.ingested = results;
                }
                Err(e) => return self.fail(start, out, "discover", e).await,
            }
        }

        // crawl
        let crawled: Vec<Crawled> = match self
            .with_retry(Some(run_id), "crawl", || p.crawl_pending(progress))
            .await
        {
            Ok(c) => c,
            Err(e) => return self.fail(start, out, "crawl", e).await,
        };
        let drift: Vec<&Crawled> = crawled
            .iter()
            .filter(|c| c.result.as_ref().is_ok_and(|i| i.drift.is_some()))
            .collect();
        ledger.task_ended(
            run_id,
            "crawl",
            "succeeded",
            Some(crawled.len() as i64),
            Some(&format!(
                "{} files crawled, {} with schema drift",
                crawled.len(),
                drift.len()
            )),
            None,
        )?;
        let lake_name = p.lake().root().to_string();
        for c in drift {
            if let Ok(info) = &c.result {
                out.events.push(
                    Event::new(
                        EventKind::SchemaDrift,
                        &lake_name,
                        format!("schema drift in {} (source {})", c.name, c.source),
                    )
                    .with_run(run_id)
                    .with_details(serde_json::json!({
                        "file_id": c.file_id,
                        "file": c.name,
                        "source": c.source,
                        "catalog_version": info.catalog_version,
                        "drift": format!("{:?}", info.drift),
                    })),
                );
            }
        }

        // transform_load
        let report = match self
            .with_retry(Some(run_id), "transform_load", || {
                p.load_crawled(&start, crawled.clone(), progress)
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return self.fail(start, out, "transform_load", e).await,
        };
        let totals = report.totals();
        let detail = format!(
            "{} files loaded, {} failed; {} rows in, {} loaded, {} quarantined, {} duplicates",
            report.files.len(),
            report.failed.len(),
            totals.rows_in,
            totals.loaded,
            totals.quarantined_total(),
            totals.duplicates
        );
        let error = (!report.failed.is_empty()).then(|| {
            report
                .failed
                .iter()
                .map(|f| format!("{}: {}", f.name, f.error.as_deref().unwrap_or("failed")))
                .collect::<Vec<_>>()
                .join("; ")
        });
        ledger.task_ended(
            run_id,
            "transform_load",
            if error.is_some() {
                "failed"
            } else {
                "succeeded"
            },
            Some(totals.loaded),
            Some(&detail),
            error.as_deref(),
        )?;
        // The run's own lock is released here: the marts and reports only read the lake's
        // committed tables, and a killed refresh changes nothing.
        drop(start);

        // refresh_marts
        let config = p.config();
        if !config.marts.refresh_on_run && work.reports.is_empty() {
            ledger.task_ended(
                run_id,
                "refresh_marts",
                "skipped",
                None,
                Some("marts.refresh_on_run = false"),
                None,
            )?;
        } else {
            let marts = Marts::new(
                p.tables().clone(),
                &config.marts,
                config.pipeline.memory_limit_mb * 1024 * 1024,
            );
            let result = match marts {
                Ok(m) => {
                    self.with_retry(Some(run_id), "refresh_marts", || {
                        m.refresh(RefreshMode::Incremental, run_id)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(done) => {
                    let detail = done
                        .iter()
                        .map(|r| format!("{}: {:?}", r.mart.name(), r.action))
                        .collect::<Vec<_>>()
                        .join("; ");
                    ledger.task_ended(
                        run_id,
                        "refresh_marts",
                        "succeeded",
                        None,
                        Some(&detail),
                        None,
                    )?;
                    out.marts = done;
                }
                Err(e) => {
                    let msg = e.to_string();
                    ledger.task_ended(run_id, "refresh_marts", "failed", None, None, Some(&msg))?;
                    out.marts_error = Some(msg);
                }
            }
        }

        // reports
        if work.reports.is_empty() {
            ledger.task_ended(
                run_id,
                "reports",
                "skipped",
                None,
                Some("no report due"),
                None,
            )?;
        } else {
            ledger.task_running(run_id, "reports")?;
            self.reports(&work.reports, &mut out).await;
            let detail = out
                .reports
                .iter()
                .map(|(k, f)| format!("{k} -> {f}"))
                .collect::<Vec<_>>()
                .join("; ");
            let error = (!out.report_errors.is_empty()).then(|| out.report_errors.join("; "));
            ledger.task_ended(
                run_id,
                "reports",
                if error.is_some() {
                    "failed"
                } else {
                    "succeeded"
                },
                Some(out.reports.len() as i64),
                Some(&detail),
                error.as_deref(),
            )?;
        }

        // notify
        let spike = config.notify.quarantine_spike_rate;
        if let Some(e) = Event::quarantine_spike(
            &lake_name,
            run_id,
            totals.rows_in.max(0) as u64,
            totals.quarantined_total().max(0) as u64,
            spike,
        ) {
            out.events.push(e);
        }
        for q in report.quality_breaches() {
            out.events.push(
                Event::new(
                    EventKind::QualityBreach,
                    &lake_name,
                    format!("{} {}: {}", q.severity, q.table_name, q.message),
                )
                .with_run(run_id)
                .with_details(serde_json::to_value(q).unwrap_or_default()),
            );
        }
        out.report = Some(report);
        let failed = !out.succeeded();
        let summary = format!("run {run_id} ({kind}): {detail}");
        out.events.push(if failed {
            let mut why = Vec::new();
            why.extend(error.clone());
            why.extend(out.marts_error.clone().map(|e| format!("marts: {e}")));
            why.extend(out.report_errors.iter().map(|e| format!("report: {e}")));
            Event::new(
                EventKind::RunFailed,
                &lake_name,
                format!("{summary}; {}", why.join("; ")),
            )
            .with_run(run_id)
        } else {
            Event::new(EventKind::RunSucceeded, &lake_name, summary).with_run(run_id)
        });
        self.notify(run_id, &out.events).await?;
        self.prune();
        Ok(out)
    }

    /// Publish the reports asked for.
    async fn reports(&self, periods: &[Period], out: &mut JobOutcome) {
        let p = &self.pipeline;
        let fact = shoplake_tables::TableId::processed("fact_sales");
        match p.tables().version(&fact).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                out.report_errors
                    .push("no sales in the lake yet: nothing to report".into());
                return;
            }
            Err(e) => {
                out.report_errors.push(e.to_string());
                return;
            }
        }
        let config = p.config();
        let q = match shoplake_query::LakeQuery::open(
            p.tables().clone(),
            p.ledger(),
            config.pipeline.memory_limit_mb * 1024 * 1024,
        )
        .await
        {
            Ok(q) => q,
            Err(e) => {
                out.report_errors.push(e.to_string());
                return;
            }
        };
        for period in periods {
            let what = format!("{} {}", period.kind(), period.key());
            match report::write(p.lake(), &q, *period, config.reports.top_n).await {
                Ok((_, published)) => out.reports.push((what, published.folder)),
                Err(e) => out.report_errors.push(format!("{what}: {e}")),
            }
        }
    }

    /// Send every event (each is logged too); deliveries that fail for good are in the
    /// notifier's dead-letter log.
    async fn notify(&self, run_id: i64, events: &[Event]) -> Result<(), EtlError> {
        let ledger = self.pipeline.ledger();
        ledger.task_running(run_id, "notify")?;
        let mut failed = Vec::new();
        for e in events {
            match &self.notifier {
                Some(n) => {
                    for d in n.send(e).await {
                        if let Some(err) = d.error {
                            failed.push(format!("{}: {err}", d.webhook));
                        }
                    }
                }
                None => shoplake_orchestrate::notify::log_event(e),
            }
        }
        let detail = format!("{} events", events.len());
        let error = (!failed.is_empty()).then(|| {
            format!(
                "{}; see the dead-letter log notify-dead-letter.jsonl",
                failed.join("; ")
            )
        });
        ledger.task_ended(
            run_id,
            "notify",
            if error.is_some() {
                "failed"
            } else {
                "succeeded"
            },
            Some(events.len() as i64),
            Some(&detail),
            error.as_deref(),
        )?;
        Ok(())
    }

    /// A task failed for good: restore the tables (done by the pipeline), fail the run and the
    /// tasks after it, and tell the webhooks.
    async fn fail(
        &self,
        start: RunStart,
        mut out: JobOutcome,
        task: &str,
        e: EtlError,
    ) -> Result<JobOutcome, EtlError> {
        let run_id = start.run_id;
        let ledger = self.pipeline.ledger().clone();
        let msg = e.to_string();
        ledger.task_ended(run_id, task, "failed", None, None, Some(&msg))?;
        ledger.fail_run(run_id, &msg)?;
        drop(start);
        let lake_name = self.pipeline.lake().root().to_string();
        out.events.push(
            Event::new(
                EventKind::RunFailed,
                &lake_name,
                format!("run {run_id} failed in {task}: {msg}"),
            )
            .with_run(run_id),
        );
        // Everything after the failed task is skipped, except the notification itself.
        for t in TASKS.iter().skip_while(|t| **t != task).skip(1) {
            if *t != "notify" {
                ledger.task_ended(
                    run_id,
                    t,
                    "skipped",
                    None,
                    Some(&format!("{task} failed")),
                    None,
                )?;
            }
        }
        self.notify(run_id, &out.events).await?;
        out.error = Some(msg);
        self.prune();
        Ok(out)
    }

    /// Retry `op` while it fails transiently ([`shoplake_orchestrate::retry`]), recording each
    /// attempt of the task as running and each transient failure as retrying.
    async fn with_retry<T, E, F, Fut>(
        &self,
        run_id: Option<i64>,
        task: &str,
        mut op: F,
    ) -> Result<T, E>
    where
        E: RetryError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ledger = self.pipeline.ledger();
        let classify = |e: &E| {
            if e.transient() {
                Transience::Transient
            } else {
                Transience::Permanent
            }
        };
        shoplake_orchestrate::retry(&self.retry, task, classify, || {
            let attempt = op();
            async move {
                if let Some(run_id) = run_id {
                    let _ = ledger.task_running(run_id, task);
                }
                let result = attempt.await;
                if let (Some(run_id), Err(e)) = (run_id, &result)
                    && e.transient()
                {
                    let _ = ledger.task_retrying(run_id, task, &e.to_string());
                }
                result
            }
        })
        .await
    }

    /// Forget runs past the retention (`orchestrate.keep_runs_days`).
    fn prune(&self) {
        let days = self.pipeline.config().orchestrate.keep_runs_days;
        let before = Utc::now() - chrono::Duration::days(i64::from(days));
        match self.pipeline.ledger().prune_runs(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, days, "pruned old run history"),
            Err(e) => tracing::warn!("pruning old runs: {e}"),
        }
    }
}

/// Errors a task may retry.
trait RetryError: std::fmt::Display {
    fn transient(&self) -> bool;
}

impl RetryError for EtlError {
    fn transient(&self) -> bool {
        self.is_transient()
    }
}

impl RetryError for shoplake_marts::MartError {
    fn transient(&self) -> bool {
        use shoplake_marts::MartError as E;
        match self {
            E::Table(e) => e.is_transient(),
            E::Storage(e) => e.is_transient(),
            E::Store(_) => true,
            E::Ledger(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// The report a schedule's job asks for at `at` in time zone `tz`: the day before, or the
/// month before.
pub fn due_report(
    job: shoplake_core::Job,
    at: chrono::DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Option<Period> {
    let local: NaiveDate = at.with_timezone(&tz).date_naive();
    match job {
        shoplake_core::Job::DailyReport => Some(Period::Day(local.pred_opt().unwrap_or(local))),
        shoplake_core::Job::MonthlyReport => {
            let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap_or(local);
            Some(Period::Month(YearMonth::of(first).previous()))
        }
        shoplake_core::Job::Run => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_for_the_day_or_month_before_in_local_time() {
        let at: chrono::DateTime<Utc> = "2025-03-01T01:30:00Z".parse().unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        // 02:30 in Berlin on March 1st: yesterday is February 28th, last month February.
        assert_eq!(
            due_report(shoplake_core::Job::DailyReport, at, berlin),
            Some(Period::Day(NaiveDate::from_ymd_opt(2025, 2, 28).unwrap()))
        );
        assert_eq!(
            due_report(shoplake_core::Job::MonthlyReport, at, berlin).map(|p| p.key()),
            Some("2025-02".to_string())
        );
        // In New York it is still February 28th: the daily report is for the 27th.
        assert_eq!(
            due_report(
                shoplake_core::Job::DailyReport,
                at,
                chrono_tz::America::New_York
            ),
            Some(Period::Day(NaiveDate::from_ymd_opt(2025, 2, 27).unwrap()))
        );
        assert_eq!(due_report(shoplake_core::Job::Run, at, berlin), None);
    }

    #[test]
    fn triggers_name_the_run_kind() {
        assert_eq!(Trigger::Manual.kind(), "manual");
        assert_eq!(Trigger::Api("ann".into()).kind(), "api:ann");
        assert_eq!(
            Trigger::Schedule("daily_report".into()).kind(),
            "schedule:daily_report"
        );
        assert!(!Trigger::Manual.waits_for_lock() && Trigger::FileArrival.waits_for_lock());
    }
}
