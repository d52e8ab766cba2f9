//! `shoplake schedule`: the schedules of shoplake.toml and when each fires next, in its own
//! time zone and in UTC. Reads the configuration only; the lake is not opened.

use crate::context::{GlobalArgs, load_config};
use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use shoplake_orchestrate::schedule::{Schedule, upcoming};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// Fire times to list per schedule.
    #[arg(long, default_value_t = 3)]
    pub count: usize,
    /// List fire times after this instant (RFC 3339, e.g. 2025-03-29T12:00:00Z) instead of now.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
}

pub fn command(a: ScheduleArgs, g: &GlobalArgs) -> Result<ExitCode> {
    let config = load_config(g)?;
    let schedules = Schedule::from_config(&config)?;
    let from = match &a.from {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("--from {t:?}: use RFC 3339, e.g. 2025-03-29T12:00:00Z"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    if schedules.is_empty() {
        println!("no schedules: the [schedules] table of the configuration is empty");
        return Ok(ExitCode::SUCCESS);
    }
    let next = upcoming(&schedules, from, a.count);
    for (i, s) in schedules.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}: {} ({}), job {}", s.name, s.cron, s.tz.name(), s.job);
        let mut any = false;
        for u in next.iter().filter(|u| u.name == s.name) {
            any = true;
            println!(
                "  {:<24} {}",
                u.local,
                u.at.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
        if !any {
            println!("  never fires again");
        }
    }
    Ok(ExitCode::SUCCESS)
}
