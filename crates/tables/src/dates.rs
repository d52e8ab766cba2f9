//! `EXTRACT` and `date_part` on dates, computed from the day number.
//!
//! The lake keeps dates as `Date32` (days since 1970-01-01). DataFusion's `date_part` goes
//! through arrow-rs, which turns every row into a chrono date and asks it for the part: a
//! seventh of the weekday-versus-weekend query at 10M rows. The day of the week is the day
//! number modulo 7, and the civil date (year, month, day) follows from it with a few integer
//! operations (Howard Hinnant's `civil_from_days`); both run over a whole column without
//! branches. [`FastDatePart`] is DataFusion's `date_part` with that path for `Date32`
//! columns and the parts `year`, `quarter`, `month`, `day`, `doy`, `dow` and `isodow`; any
//! other input goes to DataFusion's own function, so the answers, names, types and errors are
//! DataFusion's. [`FastExtract`] plans `EXTRACT` with it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::cast_utils::IntervalUnit;
use datafusion::arrow::datatypes::{DataType, Date32Type, FieldRef, Int32Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// The parts computed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Year,
    Quarter,
    Month,
    Day,
    DayOfYear,
    /// 0 = Sunday ... 6 = Saturday.
    DayOfWeek,
    /// 1 = Monday ... 7 = Sunday.
    IsoDayOfWeek,
}

impl Part {
    /// The part a `date_part` argument names, read the way DataFusion reads it (quotes
    /// stripped, then an interval unit with its plurals and synonyms, then the special
    /// names); `None` for a part left to DataFusion.
    fn parse(part: &str) -> Option<Part> {
        let part = part
            .strip_prefix(['\'', '"'])
            .and_then(|s| s.strip_suffix(['\'', '"']))
            .unwrap_or(part);
        if let Ok(unit) = part.parse::<IntervalUnit>() {
            return match unit {
                IntervalUnit::Year => Some(Part::Year),
                IntervalUnit::Month => Some(Part::Month),
                IntervalUnit::Day => Some(Part::Day),
                _ => None,
            };
        }
        match part.to_lowercase().as_str() {
            "qtr" | "quarter" => Some(Part::Quarter),
            "doy" => Some(Part::DayOfYear),
            "dow" => Some(Part::DayOfWeek),
            "isodow" => Some(Part::IsoDayOfWeek),
            _ => None,
        }
    }

    /// The part of the date `days` days after 1970-01-01.
    #[inline]
    fn of(self, days: i32) -> i32 {
        let days = i64::from(days);
        match self {
            // 1970-01-01 was a Thursday.
            Part::DayOfWeek => (days + 4).rem_euclid(7) as i32,
            Part::IsoDayOfWeek => ((days + 3).rem_euclid(7) + 1) as i32,
            Part::DayOfYear => {
                let (year, _, _) = civil_from_days(days);
                (days - days_from_civil(year, 1, 1) + 1) as i32
            }
            _ => {
                let (year, month, day) = civil_from_days(days);
                match self {
                    Part::Year => year as i32,
                    Part::Quarter => ((month - 1) / 3 + 1) as i32,
                    Part::Month => month as i32,
                    _ => day as i32,
                }
            }
        }
    }
}

/// Dates this far from 1970 (about ±200,000 years) are inside chrono's range, so arrow-rs
/// gives a part for each of them; beyond, it gives none, and such a column goes to it.
const SAFE_DAYS: i32 = 73_000_000;

/// The proleptic Gregorian (year, month, day) of day `z` since 1970-01-01.
/// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>
#[inline]
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
/// <https://howardhinnant.github.io/date_algorithms.html#days_from_civil>
#[inline]
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `part` of every date of `dates`, or `None` when a date lies outside [`SAFE_DAYS`].
fn extract(part: Part, dates: &dyn Array) -> Option<ArrayRef> {
    let dates = dates.as_primitive::<Date32Type>();
    // Min and max over the raw values (nulls included: their slots hold whatever was
    // written, and a stray large one only sends the column the slow way).
    let (min, max) = dates
        .values()
        .iter()
        .fold((0, 0), |(lo, hi), &d| (i32::min(lo, d), i32::max(hi, d)));
    if min < -SAFE_DAYS || max > SAFE_DAYS {
        return None;
    }
    Some(Arc::new(dates.unary::<_, Int32Type>(|d| part.of(d))))
}

/// DataFusion's `date_part` (and so `datepart` and `EXTRACT`), computed here for `Date32`
/// columns and the parts [`Part`] lists.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FastDatePart {
    inner: Arc<ScalarUDF>,
}

impl FastDatePart {
    pub fn new() -> FastDatePart {
        FastDatePart {
            inner: datafusion::functions::datetime::date_part(),
        }
    }

    /// The function as DataFusion registers it.
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(FastDatePart::new()))
    }
}

impl Default for FastDatePart {
    fn default() -> Self {
        FastDatePart::new()
    }
}

impl ScalarUDFImpl for FastDatePart {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Scalar(part), ColumnarValue::Array(dates)] = args.args.as_slice()
            && dates.data_type() == &DataType::Date32
            && let ScalarValue::Utf8(Some(part)) | ScalarValue::Utf8View(Some(part)) = part
            && let Some(part) = Part::parse(part)
            && let Some(parts) = extract(part, dates.as_ref())
        {
            return Ok(ColumnarValue::Array(parts));
        }
        self.inner.invoke_with_args(args)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Plans `EXTRACT(part FROM value)` as [`FastDatePart`]; put before DataFusion's planners,
/// which plan it as their own `date_part`.
#[derive(Debug, Default)]
pub struct FastExtract;

impl ExprPlanner for FastExtract {
    fn plan_extract(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(FastDatePart::udf(), args),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Date32Array;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::config::ConfigOptions;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};

    /// Every part name DataFusion accepts for these parts, in several spellings.
    const PARTS: &[&str] = &[
        "year",
        "YEARS",
        "'year'",
        "quarter",
        "qtr",
        "month",
        "Months",
        "day",
        "days",
        "doy",
        "dow",
        "DOW",
        "isodow",
        "\"isodow\"",
    ];

    fn invoke(udf: &ScalarUDF, part: &str, dates: &ArrayRef) -> Result<ArrayRef> {
        let args = vec![
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(part.to_string()))),
            ColumnarValue::Array(Arc::clone(dates)),
        ];
        let arg_fields = vec![
            Arc::new(Field::new("part", DataType::Utf8, false)),
            Arc::new(Field::new("d", DataType::Date32, true)),
        ];
        let return_field = udf.return_field_from_args(ReturnFieldArgs {
            arg_fields: &arg_fields,
            scalar_arguments: &[Some(&ScalarValue::Utf8(Some(part.to_string()))), None],
        })?;
        let result = udf.invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: dates.len(),
            return_field,
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        result.into_array(dates.len())
    }

    /// Every part of every day from 2,500 years before 1970 to 2,500 after, of the
    /// extremes of the fast range and beyond it, and of nulls, equals DataFusion's answer.
    #[test]
    fn every_part_of_every_day_matches_datafusion() {
        let ours = FastDatePart::udf();
        let theirs = datafusion::functions::datetime::date_part();
        let mut days: Vec<Option<i32>> = (-913_000..913_000).map(Some).collect();
        days.extend([None, Some(-SAFE_DAYS), Some(SAFE_DAYS), Some(0), None]);
        let near: ArrayRef = Arc::new(Date32Array::from(days));
        let far: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(1),
            None,
            Some(SAFE_DAYS + 1),
            Some(i32::MIN),
            Some(i32::MAX),
        ]));
        for part in PARTS {
            for dates in [&near, &far] {
                let expected = invoke(&theirs, part, dates).unwrap();
                let got = invoke(&ours, part, dates).unwrap();
                assert_eq!(got.data_type(), expected.data_type(), "{part}");
                assert_eq!(&got, &expected, "{part}");
            }
        }
        // The near dates take the fast path, the far ones DataFusion's.
        assert!(extract(Part::Day, near.as_ref()).is_some());
        assert!(extract(Part::Day, far.as_ref()).is_none());
        assert_eq!(Part::parse("'Years'"), Some(Part::Year));
        assert_eq!(Part::parse("week"), None);
    }

    /// Parts and inputs left to DataFusion give its answers and its errors.
    #[test]
    fn other_parts_and_types_go_to_datafusion() {
        let ours = FastDatePart::udf();
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(20_000), None]));
        for part in ["week", "isoyear", "epoch", "hour"] {
            let theirs = datafusion::functions::datetime::date_part();
            assert_eq!(
                &invoke(&ours, part, &dates).unwrap(),
                &invoke(&theirs, part, &dates).unwrap(),
                "{part}"
            );
        }
        let err = invoke(&ours, "fortnight", &dates).unwrap_err().to_string();
        assert!(err.contains("'fortnight' not supported"), "{err}");
    }

    /// `EXTRACT` and `date_part` in SQL both use this function, and give DataFusion's
    /// answers.
    #[tokio::test]
    async fn sql_extract_uses_it() {
        let ctx = crate::session(Default::default(), Default::default());
        let sql = "SELECT EXTRACT(DOW FROM d) AS dow, date_part('year', d) AS y, \
                   datepart('isodow', d) AS iso, EXTRACT(MONTH FROM d) AS m \
                   FROM (VALUES (DATE '2025-03-01'), (DATE '1969-12-31'), (NULL)) AS t(d)";
        let (answer, _) = crate::testing::run(&ctx, sql).await;
        let expected = "\
+-----+------+-----+----+
| dow | y    | iso | m  |
+-----+------+-----+----+
| 6   | 2025 | 6   | 3  |
| 3   | 1969 | 3   | 12 |
|     |      |     |    |
+-----+------+-----+----+";
        assert_eq!(answer, expected);
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let mut found = 0;
        plan.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    assert!(
                        f.func.inner().downcast_ref::<FastDatePart>().is_some(),
                        "{}",
                        f.name()
                    );
                    found += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
        .unwrap();
        assert_eq!(found, 4);
    }
}
