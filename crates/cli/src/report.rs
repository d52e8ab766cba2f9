//! `shoplake report daily [--date D]` and `shoplake report monthly [--month M]`.

use crate::context::App;
use anyhow::{Result, bail};
use chrono::{Local, NaiveDate};
use shoplake_marts::report::{self, Period};
use shoplake_marts::{Action, RefreshMode, YearMonth};
use shoplake_query::LakeQuery;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub kind: ReportKind,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReportKind {
    /// One day: sales by store and region, top products and customers, refunds, data quality.
    Daily {
        /// The day, YYYY-MM-DD [default: yesterday]
        #[arg(long)]
        date: Option<String>,
    },
    /// One month: the daily sections for the month, sales by day, incentives and coupons.
    Monthly {
        /// The month, YYYY-MM [default: last month]
        #[arg(long)]
        month: Option<String>,
    },
}

fn period(kind: &ReportKind) -> Result<Period> {
    let today = Local::now().date_naive();
    Ok(match kind {
        ReportKind::Daily { date: None } => Period::Day(today.pred_opt().unwrap_or(today)),
        ReportKind::Daily { date: Some(d) } => {
            match NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d") {
                Ok(d) => Period::Day(d),
                Err(_) => {
                    bail!("--date {d:?} is not a date; write it as YYYY-MM-DD, e.g. 2025-03-01")
                }
            }
        }
        ReportKind::Monthly { month: None } => Period::Month(YearMonth::of(today).previous()),
        ReportKind::Monthly { month: Some(m) } => match YearMonth::parse(m) {
            Some(m) => Period::Month(m),
            None => bail!("--month {m:?} is not a month; write it as YYYY-MM, e.g. 2025-03"),
        },
    })
}

pub async fn command(app: &App, a: ReportArgs) -> Result<ExitCode> {
    let period = period(&a.kind)?;
    if app
        .pipeline
        .tables()
        .version(&shoplake_tables::TableId::processed("fact_sales"))
        .await?
        .is_none()
    {
        bail!(
            "the lake at {} has no sales yet: run `shoplake ingest`, `shoplake crawl` and `shoplake run` first",
            app.lake.root()
        );
    }
    // The lists of a monthly report come from the marts: bring them up to date first.
    if matches!(period, Period::Month(_)) {
        let run_id = app.ledger.runs()?.last().map(|r| r.run_id).unwrap_or(0);
        for r in crate::marts::marts(app)?
            .refresh(RefreshMode::Incremental, run_id)
            .await?
        {
            if !matches!(r.action, Action::UpToDate) {
                println!(
                    "marts: {} brought up to date first ({:?})",
                    r.mart.name(),
                    r.action
                );
            }
        }
    }
    let q = LakeQuery::open(
        app.pipeline.tables().clone(),
        &app.ledger,
        app.config.pipeline.memory_limit_mb * 1024 * 1024,
    )
    .await?;
    let (built, published) = report::write(&app.lake, &q, period, app.config.reports.top_n).await?;
    let location = match app.lake.local_root() {
        Some(root) => root.join(&published.folder).display().to_string(),
        None => format!("{}{}", app.lake.root(), published.folder),
    };
    let summary = built.section("summary");
    let sales = summary
        .and_then(|s| s.batches.iter().find(|b| b.num_rows() > 0))
        .and_then(|b| b.column_by_name("sales_usd").cloned())
        .and_then(|c| datafusion::arrow::util::display::array_value_to_string(&c, 0).ok())
        .unwrap_or_default();
    println!(
        "{} report {}: sales {sales} USD; {} files in {location}/",
        period.kind(),
        period.key(),
        published.manifest.files.len()
    );
    for s in &built.sections {
        println!("  {:<28} {:>8} rows", format!("{}.csv", s.name), s.rows());
    }
    println!("  {:<28}", "report.html");
    if published.replaced > 0 {
        println!("replaced the earlier report of {}", period.key());
    }
    if summary.map(|s| s.rows()).unwrap_or(0) > 0 && sales == "0.00" {
        println!("note: no completed sales on {} in fact_sales", period.key());
    }
    Ok(ExitCode::SUCCESS)
}
