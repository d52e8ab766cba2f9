//! Cron expressions: the five standard fields (minute hour day-of-month month day-of-week) and
//! the `@hourly`-style macros. Parsing and matching only; turning an expression into instants in
//! a time zone (with daylight-saving changes) is `shoplake_orchestrate::schedule`.
//!
//! It lives in `core` so that `Config::problems()` can report a bad expression together with
//! every other configuration problem, before any command runs.
//!
//! Semantics follow Vixie cron: `*`, lists `a,b`, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`
//! (from `a` to the end of the range), month and weekday names (`JAN`, `MON`, any case), `7`
//! as Sunday. When both day-of-month and day-of-week are restricted (do not start with `*`), a
//! day matches when EITHER matches.
//!
//! ```
//! use shoplake_core::cron::Cron;
//! let c: Cron = "30 2 * * MON-FRI".parse().unwrap();
//! assert!(c.matches_time(2, 30));
//! let err = "0 25 * * *".parse::<Cron>().unwrap_err();
//! assert_eq!(err.to_string(), r#"cron "0 25 * * *": hour 25 is out of range 0-23"#);
//! ```

use chrono::{Datelike, NaiveDate};
use std::fmt;
use std::str::FromStr;

/// A parsed cron expression. Each field is a bit set of the values it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

/// A cron expression that does not parse: the expression and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron {text:?}: {problem}")]
pub struct CronError {
    pub text: String,
    pub problem: String,
}

#[derive(Clone, Copy)]
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// 0-7, both 0 and 7 are Sunday.
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

const MACROS: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Cron, CronError> {
        Cron::parse(text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Cron {
    /// Parse an expression; the error names the field and the bad value.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let err = |problem: String| CronError {
            text: text.to_string(),
            problem,
        };
        let trimmed = text.trim();
        let expanded = if trimmed.starts_with('@') {
            match MACROS.iter().find(|(m, _)| m.eq_ignore_ascii_case(trimmed)) {
                Some((_, e)) => *e,
                None => {
                    let known: Vec<_> = MACROS.iter().map(|(m, _)| *m).collect();
                    return Err(err(format!(
                        "unknown macro {trimmed}; use one of {}",
                        known.join(" ")
                    )));
                }
            }
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "has {} fields, a cron expression has 5: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\")",
                fields.len()
            )));
        }
        let minutes = parse_field(fields[0], MINUTE).map_err(err)?;
        let hours = parse_field(fields[1], HOUR).map_err(err)?;
        let dom = parse_field(fields[2], DAY_OF_MONTH).map_err(err)?;
        let months = parse_field(fields[3], MONTH).map_err(err)?;
        let mut dow = parse_field(fields[4], DAY_OF_WEEK).map_err(err)?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        let cron = Cron {
            text: trimmed.to_string(),
            minutes,
            hours: hours as u32,
            days_of_month: dom as u32,
            months: months as u16,
            days_of_week: dow as u8,
            dom_restricted: !fields[2].starts_with('*'),
            dow_restricted: !fields[4].starts_with('*'),
        };
        if let Some(problem) = cron.never_fires() {
            return Err(err(problem));
        }
        Ok(cron)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the expression fires at this hour and minute (of a matching day).
    pub fn matches_time(&self, hour: u32, minute: u32) -> bool {
        hour < 24
            && minute < 60
            && self.hours & (1 << hour) != 0
            && self.minutes & (1 << minute) != 0
    }

    /// The (hour, minute) pairs of a matching day, in order.
    pub fn times(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..24u32)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                (0..60u32)
                    .filter(|m| self.minutes & (1 << m) != 0)
                    .map(move |m| (h, m))
            })
    }

    /// Whether the expression fires on this calendar day (month, day-of-month, day-of-week).
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        // A field written with `*` (even `*/2`) makes it AND; two restricted fields are OR.
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Why the expression can never fire (e.g. `30 * 31 4 *`: April has no 31st), if so.
    fn never_fires(&self) -> Option<String> {
        if self.dow_restricted && self.dom_restricted {
            return None; // OR: every month has every weekday
        }
        const DAYS_IN_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let possible = (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=DAYS_IN_MONTH[m as usize - 1]).any(|d| self.days_of_month & (1 << d) != 0)
        });
        (!possible)
            .then(|| "never fires: none of the months given has any of the days given".to_string())
    }
}

fn parse_field(field: &str, spec: FieldSpec) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("{} {field:?} has an empty list item", spec.name));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{} step {s:?} in {item:?} is not a number", spec.name))?;
                if step == 0 {
                    return Err(format!("{} step in {item:?} must be at least 1", spec.name));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        // The day-of-week `*` is 0-6: 7 is only another name for Sunday.
        let top = if spec.name == DAY_OF_WEEK.name {
            6
        } else {
            spec.max
        };
        let (lo, hi) = if range == "*" {
            (spec.min, top)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, spec)?, value(b, spec)?);
            if a > b {
                return Err(format!(
                    "{} range {range:?} goes backwards ({a} is after {b})",
                    spec.name
                ));
            }
            (a, b)
        } else {
            let v = value(range, spec)?;
            // `a/n` means from a to the end of the range, as in Vixie cron.
            (v, if step.is_some() { top } else { v })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, spec: FieldSpec) -> Result<u32, String> {
    if let Some(i) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + if spec.min == 1 { 1 } else { 0 });
    }
    let v: u32 = text.parse().map_err(|_| {
        let names = if spec.names.is_empty() {
            String::new()
        } else {
            format!(
                " or a name ({}-{})",
                spec.names[0],
                spec.names[spec.names.len() - 1]
            )
        };
        format!("{} {text:?} is not a number{names}", spec.name)
    })?;
    if v < spec.min || v > spec.max {
        return Err(format!(
            "{} {v} is out of range {}-{}",
            spec.name, spec.min, spec.max
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cron {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn fields_lists_ranges_and_steps() {
        let e = c("*/15 9-17/4 * * *");
        let times: Vec<_> = e.times().collect();
        assert_eq!(times.len(), 4 * 3);
        assert_eq!(times[0], (9, 0));
        assert_eq!(times[4], (13, 0));
        assert_eq!(times[11], (17, 45));
        let e = c("5,10,50-52 0 * * *");
        let mins: Vec<_> = e.times().map(|(_, m)| m).collect();
        assert_eq!(mins, vec![5, 10, 50, 51, 52]);
        // a/n runs from a to the end of the range.
        let e = c("50/5 * * * *");
        let mins: Vec<_> = e.times().filter(|(h, _)| *h == 0).map(|(_, m)| m).collect();
        assert_eq!(mins, vec![50, 55]);
    }

    #[test]
    fn names_and_sunday_as_seven() {
        let e = c("0 0 * jan,Mar mon-WED");
        assert!(e.matches_date(d(2025, 1, 6))); // Monday
        assert!(e.matches_date(d(2025, 3, 5))); // Wednesday
        assert!(!e.matches_date(d(2025, 3, 6))); // Thursday
        assert!(!e.matches_date(d(2025, 2, 3))); // Monday in February
        let seven = c("0 0 * * 7");
        let zero = c("0 0 * * 0");
        assert!(seven.matches_date(d(2025, 1, 5))); // Sunday
        assert!(!seven.matches_date(d(2025, 1, 6)));
        assert_eq!(seven.days_of_week, zero.days_of_week);
        // 5-7 is Friday to Sunday.
        let weekend = c("0 0 * * 5-7");
        assert!(weekend.matches_date(d(2025, 1, 5)));
        assert!(weekend.matches_date(d(2025, 1, 3)));
        assert!(!weekend.matches_date(d(2025, 1, 6)));
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // The 13th, and every Friday.
        let e = c("0 0 13 * FRI");
        assert!(e.matches_date(d(2025, 1, 13))); // Monday the 13th
        assert!(e.matches_date(d(2025, 1, 3))); // Friday the 3rd
        assert!(!e.matches_date(d(2025, 1, 14)));
        // Only one restricted: that one alone decides.
        let e = c("0 0 13 * *");
        assert!(!e.matches_date(d(2025, 1, 3)));
        let e = c("0 0 * * FRI");
        assert!(!e.matches_date(d(2025, 1, 13)));
        // `*/2` (days 1, 3, 5, ...) starts with `*`: both must match (Vixie cron).
        let e = c("0 0 */2 * MON");
        assert!(e.matches_date(d(2025, 1, 13))); // Monday the 13th
        assert!(!e.matches_date(d(2025, 1, 6))); // Monday the 6th: an even day
        assert!(!e.matches_date(d(2025, 1, 15))); // Wednesday the 15th
    }

    #[test]
    fn macros() {
        assert_eq!(c("@daily").times().collect::<Vec<_>>(), vec![(0, 0)]);
        assert_eq!(c("@hourly").times().count(), 24);
        let w = c("@weekly");
        assert!(w.matches_date(d(2025, 1, 5)) && !w.matches_date(d(2025, 1, 6)));
        let m = c("@MONTHLY");
        assert!(m.matches_date(d(2025, 2, 1)) && !m.matches_date(d(2025, 2, 2)));
        let y = c("@yearly");
        assert!(y.matches_date(d(2025, 1, 1)) && !y.matches_date(d(2025, 2, 1)));
        assert_eq!(c("@daily").as_str(), "@daily");
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        let cases = [
            (
                "0 25 * * *",
                r#"cron "0 25 * * *": hour 25 is out of range 0-23"#,
            ),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
            ("0 0 * 13 *", "month 13 is out of range 1-12"),
            ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
            (
                "0 0 * FOO *",
                "month \"FOO\" is not a number or a name (JAN-DEC)",
            ),
            ("*/0 * * * *", "minute step in \"*/0\" must be at least 1"),
            ("0 10-2 * * *", "hour range \"10-2\" goes backwards"),
            ("0 0 * *", "has 4 fields"),
            ("@reboot", "unknown macro @reboot"),
            ("0 0 30 2 *", "never fires"),
            ("1,,2 * * * *", "empty list item"),
        ];
        for (text, needle) in cases {
            let err = text.parse::<Cron>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        // February 29th exists (in leap years), and a weekday makes any day possible.
        c("0 0 29 2 *");
        c("0 0 30 2 MON");
    }
}
