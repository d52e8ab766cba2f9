//! Schedules: a cron expression read in a time zone, and the [`Scheduler`] that says which job
//! is due, driven by a [`Clock`] (the system clock, or a [`ManualClock`] in tests).
//!
//! Daylight-saving changes: a local time skipped by a spring-forward gap fires once, at the
//! first instant after the gap (02:30 on a day that jumps from 02:00 to 03:00 fires at 03:00); a
//! local time repeated by a fall-back change fires once, at its first occurrence.

use crate::{Error, Result};
use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use shoplake_core::cron::Cron;
use shoplake_core::{Config, Job};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so [`Clock`] can be used as `Arc<dyn Clock>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Wall-clock time, and waiting for it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolve once `now() >= deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()>;
}

/// The system's wall clock. Sleeps are cut into slices of at most [`SystemClock::SLICE`] and
/// the wall clock read again after each, so a machine suspended, or a clock set by NTP, wakes
/// the sleeper at the right wall-clock time (tokio's timers follow a monotonic clock, which
/// stops while the machine is suspended).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    pub const SLICE: std::time::Duration = std::time::Duration::from_secs(15);
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let left = deadline - Utc::now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(Self::SLICE)).await;
            }
        })
    }
}

/// A clock that only moves when told to; sleepers wake when it passes their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<tokio::sync::watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: Arc::new(tokio::sync::watch::Sender::new(start)),
        }
    }

    /// Move the clock to `t` (backwards too, as a wall clock can be set back).
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_replace(t);
    }

    pub fn advance(&self, by: TimeDelta) {
        self.now.send_modify(|t| *t += by);
    }

    /// How many tasks are waiting in `sleep_until` (lets a test advance the clock only once a
    /// sleeper is parked).
    pub fn sleepers(&self) -> usize {
        self.now.receiver_count()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'_, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // wait_for checks the current value first, so an advance made before this
            // future is polled is not missed. The sender lives as long as `self`.
            let _ = rx.wait_for(|t| *t >= deadline).await;
        })
    }
}

/// A named cron schedule in a time zone and the job it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub cron: Cron,
    pub tz: Tz,
    pub job: Job,
}

impl Schedule {
    pub fn new(name: &str, cron: &str, tz: &str, job: Job) -> Result<Schedule> {
        let cron = cron.parse::<Cron>().map_err(|e| Error::Config {
            problems: vec![format!("schedules.{name}.cron: {e}")],
        })?;
        let tz = shoplake_core::parse_tz(tz).map_err(|e| Error::Config {
            problems: vec![format!("schedules.{name}.tz: {e}")],
        })?;
        Ok(Schedule {
            name: name.to_string(),
            cron,
            tz,
            job,
        })
    }

    /// The schedules of a configuration (`[schedules]`, each in its `tz` or
    /// `orchestrate.timezone`), in name order.
    pub fn from_config(config: &Config) -> Result<Vec<Schedule>> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (name, s) in &config.schedules {
            let tz = s.tz.as_deref().unwrap_or(&config.orchestrate.timezone);
            match Schedule::new(name, &s.cron, tz, s.job) {
                Ok(s) => out.push(s),
                Err(Error::Config { problems: p }) => problems.extend(p),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(Error::Config { problems })
        }
    }

    /// The first instant strictly after `t` at which this schedule fires, or None when it never
    /// fires again (within the next eight years: Feb 29 on a Monday can take that long).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t.with_timezone(&self.tz).date_naive();
        // The day before too: the first instant after a gap can fall on the next local day.
        let mut day = start.checked_sub_days(Days::new(1))?;
        let last = start.checked_add_days(Days::new(366 * 8 + 2))?;
        while day <= last {
            if self.cron.matches_date(day) {
                for (h, m) in self.cron.times() {
                    let Some(local) = day.and_hms_opt(h, m, 0) else {
                        continue;
                    };
                    if let Some(at) = self.instant(local)
                        && at > t
                    {
                        return Some(at);
                    }
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The instant a local wall-clock time fires at: itself; the first occurrence when the
    /// clocks go back; the end of the gap when they go forward.
    fn instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => {
                // Walk to the first minute that exists; gaps are at most a few hours.
                (1..=24 * 60).find_map(|m| {
                    self.tz
                        .from_local_datetime(&(local + TimeDelta::minutes(m)))
                        .earliest()
                        .map(|t| {
                            // The gap ends exactly at a whole minute; the first local minute
                            // after it is that instant.
                            t.with_timezone(&Utc)
                        })
                })
            }
        }
    }

    /// `t` as local time of this schedule, e.g. `2025-03-30 03:00 CEST`.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// One coming fire time, for `shoplake schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcoming {
    pub name: String,
    pub at: DateTime<Utc>,
    /// The same instant in the schedule's time zone, e.g. `2025-03-30 03:00 CEST`.
    pub local: String,
}

/// The next `n` fire times after `now` of every schedule, schedule by schedule.
pub fn upcoming(schedules: &[Schedule], now: DateTime<Utc>, n: usize) -> Vec<Upcoming> {
    let mut out = Vec::new();
    for s in schedules {
        let mut t = now;
        for _ in 0..n {
            let Some(at) = s.next_after(t) else { break };
            out.push(Upcoming {
                name: s.name.clone(),
                at,
                local: s.local(at),
            });
            t = at;
        }
    }
    out
}

/// A job whose time has come.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub schedule: Schedule,
    /// The occurrence that fired (the latest one that had passed, after a long sleep).
    pub at: DateTime<Utc>,
    /// Earlier occurrences missed while the process was not running or the machine slept:
    /// they are not fired (catch-up, not a burst).
    pub skipped: u64,
}

/// Owns the schedules and a clock and hands out due jobs, each occurrence once.
pub struct Scheduler {
    clock: Arc<dyn Clock>,
    entries: Vec<(Schedule, Option<DateTime<Utc>>)>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// Past this many missed occurrences, stop counting them.
const MAX_SKIPPED_COUNT: u64 = 100_000;

impl Scheduler {
    /// Schedules fire from the first occurrence after `clock.now()`.
    pub fn new(schedules: Vec<Schedule>, clock: Arc<dyn Clock>) -> Scheduler {
        let now = clock.now();
        let entries = schedules
            .into_iter()
            .map(|s| {
                let next = s.next_after(now);
                (s, next)
            })
            .collect();
        Scheduler { clock, entries }
    }

    /// Resume a schedule from the last time it fired (kept by the caller, e.g. in the
    /// ledger): an occurrence missed while the process was down fires once, at the next
    /// [`Scheduler::due_now`]. Unknown names are ignored.
    pub fn resume_from(&mut self, name: &str, last_fired: DateTime<Utc>) {
        for (s, next) in &mut self.entries {
            if s.name == name {
                *next = s.next_after(last_fired);
            }
        }
    }

    /// The next instant any schedule fires.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|(_, n)| *n).min()
    }

    /// A job that is due at the clock's current time, if any; at most one per call (the
    /// earliest). Never waits.
    pub fn due_now(&mut self) -> Option<Due> {
        let now = self.clock.now();
        let (i, at) = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, (_, n))| n.filter(|n| *n <= now).map(|n| (i, n)))
            .min_by_key(|(_, n)| *n)?;
        let (schedule, next) = &mut self.entries[i];
        // Catch up: fire the latest passed occurrence once, skip the ones before it.
        let (mut fire, mut skipped) = (at, 0u64);
        while let Some(n) = schedule.next_after(fire) {
            if n > now || skipped >= MAX_SKIPPED_COUNT {
                break;
            }
            fire = n;
            skipped += 1;
        }
        *next = schedule.next_after(fire.max(now));
        if skipped > 0 {
            tracing::warn!(
                schedule = %schedule.name,
                skipped,
                first_missed = %at,
                fired = %fire,
                "missed {skipped} earlier occurrence(s) while not running; firing once for the latest"
            );
        }
        tracing::info!(schedule = %schedule.name, job = %schedule.job, at = %fire, "schedule due");
        Some(Due {
            schedule: schedule.clone(),
            at: fire,
            skipped,
        })
    }

    /// Wait for the next due job. Pending forever when no schedule fires again.
    pub async fn next_due(&mut self) -> Due {
        loop {
            if let Some(due) = self.due_now() {
                return due;
            }
            match self.next_deadline() {
                Some(deadline) => self.clock.sleep_until(deadline).await,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// The instant of a local wall-clock time in `tz` (the first one when it happens twice); None
/// when it does not exist there (a spring-forward gap).
pub fn local_time(tz: Tz, date: NaiveDate, hour: u32, minute: u32) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&date.and_hms_opt(hour, minute, 0)?)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Shared by tests of the crate.
#[cfg(test)]
pub(crate) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cron: &str, tz: &str) -> Schedule {
        Schedule::new("t", cron, tz, Job::Run).unwrap()
    }

    fn fires(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_rfc3339());
        }
        out
    }

    #[test]
    fn next_after_in_utc_and_across_a_month() {
        let s = sched("0 2 1 * *", "UTC");
        assert_eq!(
            fires(&s, "2025-01-15T00:00:00Z", 3),
            [
                "2025-02-01T02:00:00+00:00",
                "2025-03-01T02:00:00+00:00",
                "2025-04-01T02:00:00+00:00"
            ]
        );
        // Strictly after: at the instant itself, the next one.
        assert_eq!(
            s.next_after(utc("2025-02-01T02:00:00Z")).unwrap(),
            utc("2025-03-01T02:00:00Z")
        );
        let s = sched("0 0 29 2 *", "UTC");
        assert_eq!(
            s.next_after(utc("2025-01-01T00:00:00Z")).unwrap(),
            utc("2028-02-29T00:00:00Z")
        );
    }

    #[test]
    fn berlin_spring_forward_gap_fires_once_after_the_gap() {
        // 2025-03-30: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2025-03-29T00:00:00Z", 3),
            [
                "2025-03-29T01:30:00+00:00", // 02:30 CET
                "2025-03-30T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST
                "2025-03-31T00:30:00+00:00", // 02:30 CEST
            ]
        );
        // Every quarter hour in the gap hour collapses into one firing at 03:00 CEST, which
        // a 03:00 entry shares.
        let s = sched("*/15 2,3 30 3 *", "Europe/Berlin");
        let got = fires(&s, "2025-03-30T00:00:00Z", 4);
        assert_eq!(
            got,
            [
                "2025-03-30T01:00:00+00:00",
                "2025-03-30T01:15:00+00:00",
                "2025-03-30T01:30:00+00:00",
                "2025-03-30T01:45:00+00:00",
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_the_first_occurrence_only() {
        // 2025-10-26: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2025-10-25T12:00:00Z", 2),
            [
                "2025-10-26T00:30:00+00:00", // 02:30 CEST, the first
                "2025-10-27T01:30:00+00:00", // next day 02:30 CET; not 01:30 UTC on the 26th
            ]
        );
        // Hourly through the change: 02:00 local fires once.
        let s = sched("0 * * * *", "Europe/Berlin");
        let got = fires(&s, "2025-10-25T23:30:00Z", 4);
        assert_eq!(
            got,
            [
                "2025-10-26T00:00:00+00:00", // 02:00 CEST
                "2025-10-26T02:00:00+00:00", // 03:00 CET (02:00 CET is the repeat)
                "2025-10-26T03:00:00+00:00",
                "2025-10-26T04:00:00+00:00",
            ]
        );
    }

    #[test]
    fn new_york_dst_days() {
        // 2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST.
        let s = sched("30 2 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2025-03-08T12:00:00Z", 2),
            ["2025-03-09T07:00:00+00:00", "2025-03-10T06:30:00+00:00"]
        );
        let s = sched("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2025-11-01T12:00:00Z", 2),
            ["2025-11-02T05:30:00+00:00", "2025-11-03T06:30:00+00:00"]
        );
        // Starting inside the repeated hour (01:10 EST, the second pass): the repeat of
        // 01:30 is not fired.
        assert_eq!(
            s.next_after(utc("2025-11-02T06:10:00Z")).unwrap(),
            utc("2025-11-03T06:30:00Z")
        );
        assert_eq!(s.local(utc("2025-11-02T05:30:00Z")), "2025-11-02 01:30 EDT");
    }

    #[test]
    fn upcoming_lists_n_per_schedule_with_local_time() {
        let a = Schedule::new(
            "daily_report",
            "0 2 * * *",
            "Europe/Berlin",
            Job::DailyReport,
        )
        .unwrap();
        let b = Schedule::new("monthly_report", "@monthly", "UTC", Job::MonthlyReport).unwrap();
        let u = upcoming(&[a, b], utc("2025-03-29T12:00:00Z"), 3);
        let got: Vec<_> = u
            .iter()
            .map(|u| format!("{} {} {}", u.name, u.at.to_rfc3339(), u.local))
            .collect();
        assert_eq!(
            got,
            [
                "daily_report 2025-03-30T01:00:00+00:00 2025-03-30 03:00 CEST",
                "daily_report 2025-03-31T00:00:00+00:00 2025-03-31 02:00 CEST",
                "daily_report 2025-04-01T00:00:00+00:00 2025-04-01 02:00 CEST",
                "monthly_report 2025-04-01T00:00:00+00:00 2025-04-01 00:00 UTC",
                "monthly_report 2025-05-01T00:00:00+00:00 2025-05-01 00:00 UTC",
                "monthly_report 2025-06-01T00:00:00+00:00 2025-06-01 00:00 UTC",
            ]
        );
    }

    #[test]
    fn schedules_from_config_with_default_and_own_time_zones() {
        let config = Config::parse(
            "[orchestrate]\ntimezone = \"America/New_York\"\n[schedules.nightly]\ncron = \"0 3 * * *\"\njob = \"run\"\n[schedules.berlin]\ncron = \"@daily\"\njob = \"daily_report\"\ntz = \"Europe/Berlin\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap();
        let s = Schedule::from_config(&config).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].tz),
            ("berlin", Tz::Europe__Berlin)
        );
        assert_eq!(
            (s[1].name.as_str(), s[1].tz),
            ("nightly", Tz::America__New_York)
        );
        assert_eq!(s[1].job, Job::Run);
        // No [schedules]: the two reports, in UTC.
        let s = Schedule::from_config(&Config::default()).unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.name.as_str(), s.cron.as_str(), s.tz, s.job))
            .collect();
        assert_eq!(
            got,
            [
                ("daily_report", "0 2 * * *", Tz::UTC, Job::DailyReport),
                ("monthly_report", "0 2 1 * *", Tz::UTC, Job::MonthlyReport)
            ]
        );
    }

    #[test]
    fn bad_schedules_are_reported_all_at_once() {
        let err = Config::parse(
            "[schedules.a]\ncron = \"0 25 * * *\"\njob = \"run\"\n[schedules.b]\ncron = \"0 1 * * *\"\njob = \"run\"\ntz = \"Europe/Berln\"\n[orchestrate]\ntimezone = \"Mars/Base\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            r#"schedules.a.cron: cron "0 25 * * *": hour 25 is out of range 0-23"#,
            r#"schedules.b.tz: "Europe/Berln" is not an IANA time zone name"#,
            r#"did you mean "Europe/Berlin"?"#,
            r#"orchestrate.timezone: "Mars/Base""#,
        ] {
            assert!(err.contains(needle), "{needle}\n{err}");
        }
        let err = Config::parse(
            "[schedules.a]\ncron = \"0 1 * * *\"\njob = \"weekly\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("weekly") && err.contains("daily_report"),
            "{err}"
        );
    }

    fn scheduler(schedules: &[(&str, &str, &str)], start: &str) -> (Scheduler, ManualClock) {
        let clock = ManualClock::new(utc(start));
        let s = schedules
            .iter()
            .map(|(name, cron, tz)| Schedule::new(name, cron, tz, Job::Run).unwrap())
            .collect();
        (Scheduler::new(s, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn scheduler_fires_each_occurrence_once_across_dst_and_a_month() {
        let (mut s, clock) = scheduler(
            &[
                ("daily", "0 2 * * *", "Europe/Berlin"),
                ("monthly", "0 2 1 * *", "Europe/Berlin"),
            ],
            "2025-03-29T00:00:00Z",
        );
        assert_eq!(s.due_now(), None);
        let mut fired = Vec::new();
        // Walk the clock minute by minute over three days: every firing is seen at its minute.
        let end = utc("2025-04-01T12:00:00Z");
        while clock.now() < end {
            clock.advance(TimeDelta::minutes(1));
            while let Some(d) = s.due_now() {
                assert_eq!(d.skipped, 0);
                assert!(d.at <= clock.now() && clock.now() - d.at < TimeDelta::minutes(1));
                fired.push(format!("{} {}", d.schedule.name, d.at.to_rfc3339()));
            }
        }
        assert_eq!(
            fired,
            [
                "daily 2025-03-29T01:00:00+00:00",   // 02:00 CET
                "daily 2025-03-30T01:00:00+00:00",   // 02:00 does not exist: 03:00 CEST
                "daily 2025-03-31T00:00:00+00:00",   // 02:00 CEST
                "daily 2025-04-01T00:00:00+00:00",   // both at 02:00 CEST on the 1st,
                "monthly 2025-04-01T00:00:00+00:00", // each once
            ]
        );
        // The clock set back an hour: nothing fires twice.
        clock.set(utc("2025-03-31T23:30:00Z"));
        assert_eq!(s.due_now(), None);
        clock.set(utc("2025-04-01T12:00:00Z"));
        assert_eq!(s.due_now(), None);
    }

    #[test]
    fn scheduler_catches_up_once_after_a_long_sleep() {
        let (mut s, clock) = scheduler(&[("hourly", "0 * * * *", "UTC")], "2025-01-01T00:30:00Z");
        // Asleep from 00:30 to 05:10: 01:00 .. 05:00 passed.
        clock.set(utc("2025-01-01T05:10:00Z"));
        let d = s.due_now().unwrap();
        assert_eq!(d.at, utc("2025-01-01T05:00:00Z"));
        assert_eq!(d.skipped, 4);
        assert_eq!(s.due_now(), None, "one firing, not a burst");
        assert_eq!(s.next_deadline(), Some(utc("2025-01-01T06:00:00Z")));
        // Resuming from a last firing kept elsewhere: the missed one fires once at start.
        let (mut s, _clock) = scheduler(&[("daily", "0 2 * * *", "UTC")], "2025-01-03T10:00:00Z");
        assert_eq!(s.due_now(), None);
        s.resume_from("daily", utc("2025-01-02T02:00:00Z"));
        let d = s.due_now().unwrap();
        assert_eq!((d.at, d.skipped), (utc("2025-01-03T02:00:00Z"), 0));
        assert_eq!(s.due_now(), None);
    }

    #[tokio::test]
    async fn next_due_sleeps_until_the_clock_reaches_the_deadline() {
        let (mut s, clock) = scheduler(
            &[("a", "0 2 * * *", "UTC"), ("b", "30 2 * * *", "UTC")],
            "2025-01-01T00:00:00Z",
        );
        let advancer = {
            let clock = clock.clone();
            async move {
                // Once the scheduler is parked in sleep_until, move past its deadline.
                while clock.sleepers() == 0 {
                    tokio::task::yield_now().await;
                }
                clock.set(utc("2025-01-01T02:00:00Z"));
            }
        };
        let (due, ()) = tokio::join!(s.next_due(), advancer);
        assert_eq!(
            (due.schedule.name.as_str(), due.at),
            ("a", utc("2025-01-01T02:00:00Z"))
        );
        // b is not due until 02:30.
        assert_eq!(s.due_now(), None);
        clock.set(utc("2025-01-01T02:45:00Z"));
        let due = s.next_due().await;
        assert_eq!(
            (due.schedule.name.as_str(), due.at),
            ("b", utc("2025-01-01T02:30:00Z"))
        );
    }

    /// `shoplake serve` runs the scheduler in a spawned task.
    #[test]
    fn next_due_is_send() {
        fn send<T: Send>(_: T) {}
        let (mut s, _clock) = scheduler(&[], "2025-01-01T00:00:00Z");
        send(s.next_due());
    }

    #[tokio::test]
    async fn system_clock_sleep_until_the_past_returns() {
        let c = SystemClock;
        c.sleep_until(c.now() - TimeDelta::seconds(5)).await;
        let local = local_time(
            Tz::Europe__Berlin,
            NaiveDate::from_ymd_opt(2025, 3, 30).unwrap(),
            2,
            30,
        );
        assert_eq!(local, None, "02:30 does not exist in Berlin on 2025-03-30");
    }
}
