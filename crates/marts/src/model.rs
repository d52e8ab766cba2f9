//! The marts as SQL models over the star schema, and the business rules they apply.
//!
//! What counts (see `docs/marts.md`): a line's money is a *sale* when its status is `COMPLETED`
//! and it is not an outlier; a `REFUNDED` line is a sale whose money went back, so it is not
//! counted as a sale and is shown apart (`refunds`, `refunded_usd`); `OUT` (outliers),
//! `CANCELLED` and `PENDING` lines are no sales. Orders are distinct transactions with a
//! completed line (a source without transaction ids: every line is an order).

use crate::{MartError, Result};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use shoplake_core::MartsConfig;
use shoplake_core::values::{AMOUNT_SCALE, RATE_SCALE, format_decimal};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// Bumped whenever the SQL or the columns of a mart change: a mart built by another model
/// version is rebuilt in full.
pub const MODEL_VERSION: i64 = 1;

/// The partition column of every mart: the month as `YYYY-MM`.
pub const PARTITION: &str = "month";

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth {
    pub year: i32,
    pub month: u32,
}

impl YearMonth {
    pub fn new(year: i32, month: u32) -> Option<YearMonth> {
        ((1..=12).contains(&month) && (1..=9999).contains(&year))
            .then_some(YearMonth { year, month })
    }

    /// Parse `YYYY-MM`.
    pub fn parse(text: &str) -> Option<YearMonth> {
        let (y, m) = text.trim().split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        YearMonth::new(y.parse().ok()?, m.parse().ok()?)
    }

    pub fn first_day(self) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("valid month")
    }

    /// The month before.
    pub fn previous(self) -> YearMonth {
        if self.month == 1 {
            YearMonth {
                year: self.year - 1,
                month: 12,
            }
        } else {
            YearMonth {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    pub fn of(date: chrono::NaiveDate) -> YearMonth {
        use chrono::Datelike;
        YearMonth {
            year: date.year(),
            month: date.month(),
        }
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A SQL filter on `fact_sales` partitions (`year`, `month`) selecting `months`, so the scan
/// reads only their files.
pub fn fact_month_filter(months: &BTreeSet<YearMonth>) -> String {
    let mut by_year: std::collections::BTreeMap<i32, Vec<u32>> = Default::default();
    for m in months {
        by_year.entry(m.year).or_default().push(m.month);
    }
    let terms: Vec<String> = by_year
        .iter()
        .map(|(y, ms)| {
            let list: Vec<String> = ms.iter().map(u32::to_string).collect();
            format!("(year = {y} AND month IN ({}))", list.join(", "))
        })
        .collect();
    if terms.is_empty() {
        "FALSE".to_string()
    } else {
        format!("({})", terms.join(" OR "))
    }
}

/// The mart partitions holding `months` (the `replaceWhere` predicate of a refresh).
pub fn mart_month_predicate(months: &BTreeSet<YearMonth>) -> String {
    let list: Vec<String> = months.iter().map(|m| format!("'{m}'")).collect();
    format!("{PARTITION} IN ({})", list.join(", "))
}

/// The business rules of the marts, validated from `[marts]`: exact scaled integers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// Incentive share, scaled by 10^8 (0.01 -> 1_000_000).
    pub incentive_share: i128,
    /// Coupon tiers, highest threshold first: (name, min spend in cents, discount percent).
    pub coupon_tiers: Vec<(String, i128, u32)>,
}

impl Rules {
    pub fn from_config(c: &MartsConfig) -> Result<Rules> {
        let problems = c.problems();
        if !problems.is_empty() {
            return Err(MartError::Usage(format!(
                "invalid [marts] settings in shoplake.toml:\n  - {}",
                problems.join("\n  - ")
            )));
        }
        let share = c
            .incentive_share
            .scaled(RATE_SCALE)
            .map_err(MartError::Usage)?;
        let mut tiers = Vec::new();
        for t in &c.coupon_tiers {
            let min = t
                .min_spend_usd
                .scaled(AMOUNT_SCALE)
                .map_err(MartError::Usage)?;
            tiers.push((t.name.trim().to_string(), min, t.discount_percent));
        }
        tiers.sort_by_key(|t| std::cmp::Reverse(t.1));
        Ok(Rules {
            incentive_share: share,
            coupon_tiers: tiers,
        })
    }

    /// The rules one mart depends on, as recorded with it (a change rebuilds that mart).
    pub fn fingerprint(&self, mart: Mart) -> serde_json::Value {
        match mart {
            Mart::CustomerMonthly => serde_json::json!({
                "coupon_tiers": self.coupon_tiers.iter().map(|(n, m, p)| serde_json::json!([n, format_decimal(*m, AMOUNT_SCALE), p])).collect::<Vec<_>>(),
            }),
            Mart::SalesTeamMonthly => serde_json::json!({
                "incentive_share": format_decimal(self.incentive_share, RATE_SCALE),
            }),
        }
    }

    /// The incentive share as a decimal literal.
    pub fn share_text(&self) -> String {
        format_decimal(self.incentive_share, RATE_SCALE)
    }
}

/// A dimension a mart reads: the table, its natural key, the fact column that references it,
/// and the attributes the mart shows (a change to them recomputes the months of the member).
#[derive(Debug, Clone, Copy)]
pub struct DimUse {
    pub table: &'static str,
    pub key: &'static str,
    pub fact_key: &'static str,
    pub attributes: &'static [&'static str],
}

/// The data marts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mart {
    CustomerMonthly,
    SalesTeamMonthly,
}

const CUSTOMER_DIMS: &[DimUse] = &[DimUse {
    table: "dim_customer",
    key: "customer_id",
    fact_key: "customer_id",
    attributes: &[
        "full_name",
        "address",
        "city",
        "state",
        "postal_code",
        "country",
        "phone_masked",
        "is_inferred",
    ],
}];

const SALES_TEAM_DIMS: &[DimUse] = &[
    DimUse {
        table: "dim_sales_person",
        key: "sales_person_id",
        fact_key: "sales_person_id",
        attributes: &["full_name", "first_name", "last_name"],
    },
    DimUse {
        table: "dim_store",
        key: "store_id",
        fact_key: "store_id",
        attributes: &["store_name"],
    },
];

/// A sale (see the module docs), as a SQL condition on `fact_sales`.
pub const IS_SALE: &str = "status = 'COMPLETED' AND NOT is_outlier";
pub const IS_REFUND: &str = "status = 'REFUNDED'";
/// One order: its transaction, or the line itself when the source has no transaction ids.
pub(crate) const ORDER_KEY: &str = "COALESCE(transaction_id, concat('line:', CAST(file_id AS VARCHAR), ':', CAST(source_line AS VARCHAR)))";
const MONTH_TEXT: &str =
    "concat(lpad(CAST(year AS VARCHAR), 4, '0'), '-', lpad(CAST(month AS VARCHAR), 2, '0'))";

/// Orders, sales, units and refunds per `keys` over the `fact_sales` rows matching `filter`.
///
/// Orders are counted in two steps (per key and order first, then per key) rather than with a
/// grouped `COUNT(DISTINCT ...)`, whose per-group sets are neither bounded nor spillable: both
/// steps are plain hash aggregations that spill to disk under the memory limit.
pub(crate) fn per_key_sql(keys: &str, filter: &str) -> String {
    format!(
        "SELECT {keys},
  CAST(SUM(has_sale) AS BIGINT) AS orders,
  CAST(COALESCE(SUM(sales), 0) AS DECIMAL(18,2)) AS total_sales_usd,
  CAST(SUM(units) AS BIGINT) AS units,
  CAST(SUM(refunds) AS BIGINT) AS refunds,
  CAST(COALESCE(SUM(refunded), 0) AS DECIMAL(18,2)) AS refunded_usd
FROM (
  SELECT {keys}, order_key,
    MAX(CASE WHEN {IS_SALE} THEN 1 ELSE 0 END) AS has_sale,
    SUM(CASE WHEN {IS_SALE} THEN amount_usd END) AS sales,
    SUM(CASE WHEN {IS_SALE} THEN quantity END) AS units,
    COUNT(CASE WHEN {IS_REFUND} THEN 1 END) AS refunds,
    SUM(CASE WHEN {IS_REFUND} THEN amount_usd END) AS refunded
  FROM (SELECT {keys}, status, is_outlier, amount_usd, quantity, {ORDER_KEY} AS order_key
        FROM fact_sales WHERE {filter}) l
  GROUP BY {keys}, order_key
) o
GROUP BY {keys}"
    )
}

impl Mart {
    pub const ALL: [Mart; 2] = [Mart::CustomerMonthly, Mart::SalesTeamMonthly];

    pub fn name(self) -> &'static str {
        match self {
            Mart::CustomerMonthly => "mart_customer_monthly",
            Mart::SalesTeamMonthly => "mart_sales_team_monthly",
        }
    }

    /// The dimensions the mart joins.
    pub fn dims(self) -> &'static [DimUse] {
        match self {
            Mart::CustomerMonthly => CUSTOMER_DIMS,
            Mart::SalesTeamMonthly => SALES_TEAM_DIMS,
        }
    }

    /// The mart's columns, in order; `month` (the partition) last.
    pub fn schema(self) -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        let money = |n: &str| Field::new(n, DataType::Decimal128(18, 2), true);
        let int = |n: &str| Field::new(n, DataType::Int64, true);
        let fields = match self {
            Mart::CustomerMonthly => vec![
                text("customer_id"),
                text("full_name"),
                text("address"),
                text("phone_masked"),
                int("orders"),
                money("total_sales_usd"),
                int("refunds"),
                money("refunded_usd"),
                text("coupon_tier"),
                Field::new("coupon_discount_percent", DataType::Int32, true),
                Field::new("customer_inferred", DataType::Boolean, true),
                Field::new("year", DataType::Int32, true),
                Field::new("month_of_year", DataType::Int32, true),
                text(PARTITION),
            ],
            Mart::SalesTeamMonthly => vec![
                text("store_id"),
                text("store_name"),
                text("sales_person_id"),
                text("full_name"),
                int("orders"),
                money("total_sales_usd"),
                int("refunds"),
                money("refunded_usd"),
                int("rank_in_store"),
                int("top_sellers"),
                money("incentive_usd"),
                Field::new("year", DataType::Int32, true),
                Field::new("month_of_year", DataType::Int32, true),
                text(PARTITION),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// The SQL computing the mart for `months` (all months when `None`). It reads the tables
    /// `fact_sales` and the mart's dimensions; `has_phone_masked` says whether `dim_customer`
    /// has that column yet (lakes loaded before it existed).
    pub fn sql(
        self,
        rules: &Rules,
        months: Option<&BTreeSet<YearMonth>>,
        has_phone_masked: bool,
    ) -> String {
        let filter = months
            .map(|m| format!(" AND {}", fact_month_filter(m)))
            .unwrap_or_default();
        match self {
            Mart::CustomerMonthly => {
                let mut tier = String::from("CASE");
                let mut pct = String::from("CASE");
                for (name, min, p) in &rules.coupon_tiers {
                    let min = format_decimal(*min, AMOUNT_SCALE);
                    let cond = format!(" WHEN total_sales_usd >= CAST('{min}' AS DECIMAL(18,2))");
                    tier.push_str(&format!("{cond} THEN '{}'", name.replace('\'', "''")));
                    pct.push_str(&format!("{cond} THEN {p}"));
                }
                tier.push_str(" END");
                pct.push_str(" END");
                if rules.coupon_tiers.is_empty() {
                    tier = "CAST(NULL AS VARCHAR)".into();
                    pct = "CAST(NULL AS INT)".into();
                }
                let agg = per_key_sql(
                    "customer_id, year, month",
                    &format!("customer_id IS NOT NULL{filter}"),
                );
                let phone = if has_phone_masked {
                    "phone_masked"
                } else {
                    "CAST(NULL AS VARCHAR) AS phone_masked"
                };
                format!(
                    "WITH agg AS ({agg}), c AS (
  SELECT customer_id, full_name,
    NULLIF(concat_ws(', ', address, city, state, postal_code, country), '') AS address,
    {phone}, is_inferred
  FROM dim_customer WHERE is_current
)
SELECT agg.customer_id, c.full_name, c.address, c.phone_masked,
  CAST(agg.orders AS BIGINT) AS orders, agg.total_sales_usd,
  CAST(agg.refunds AS BIGINT) AS refunds, agg.refunded_usd,
  {tier} AS coupon_tier,
  CAST({pct} AS INT) AS coupon_discount_percent,
  COALESCE(c.is_inferred, true) AS customer_inferred,
  CAST(agg.year AS INT) AS year, CAST(agg.month AS INT) AS month_of_year,
  {MONTH_TEXT} AS month
FROM agg LEFT JOIN c ON agg.customer_id = c.customer_id"
                )
            }
            Mart::SalesTeamMonthly => {
                let share = rules.share_text();
                let agg = per_key_sql(
                    "store_id, sales_person_id, year, month",
                    &format!("store_id IS NOT NULL AND sales_person_id IS NOT NULL{filter}"),
                );
                format!(
                    "WITH agg AS ({agg}), ranked AS (
  SELECT agg.*, RANK() OVER (PARTITION BY store_id, year, month ORDER BY total_sales_usd DESC) AS rnk
  FROM agg
), tops AS (
  SELECT ranked.*, SUM(CASE WHEN rnk = 1 THEN 1 ELSE 0 END) OVER (PARTITION BY store_id, year, month) AS top_sellers
  FROM ranked
), sp AS (
  SELECT sales_person_id, COALESCE(full_name, NULLIF(concat_ws(' ', first_name, last_name), '')) AS full_name
  FROM dim_sales_person WHERE is_current
), st AS (
  SELECT store_id, store_name FROM dim_store WHERE is_current
)
SELECT tops.store_id, st.store_name, tops.sales_person_id, sp.full_name,
  CAST(tops.orders AS BIGINT) AS orders, tops.total_sales_usd,
  CAST(tops.refunds AS BIGINT) AS refunds, tops.refunded_usd,
  CAST(tops.rnk AS BIGINT) AS rank_in_store,
  CAST(tops.top_sellers AS BIGINT) AS top_sellers,
  CAST(CASE WHEN tops.rnk = 1
    THEN round(tops.total_sales_usd * CAST('{share}' AS DECIMAL(18,8)), 2)
    ELSE CAST(0 AS DECIMAL(18,2)) END AS DECIMAL(18,2)) AS incentive_usd,
  CAST(tops.year AS INT) AS year, CAST(tops.month AS INT) AS month_of_year,
  {MONTH_TEXT} AS month
FROM tops
LEFT JOIN sp ON tops.sales_person_id = sp.sales_person_id
LEFT JOIN st ON tops.store_id = st.store_id"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_and_filter() {
        assert_eq!(YearMonth::parse("2025-1"), None);
        assert_eq!(YearMonth::parse("2025-13"), None);
        let m: BTreeSet<YearMonth> = ["2023-04", "2023-03", "2025-01"]
            .iter()
            .map(|t| YearMonth::parse(t).unwrap())
            .collect();
        assert_eq!(
            fact_month_filter(&m),
            "((year = 2023 AND month IN (3, 4)) OR (year = 2025 AND month IN (1)))"
        );
        assert_eq!(
            mart_month_predicate(&m),
            "month IN ('2023-03', '2023-04', '2025-01')"
        );
        assert_eq!(
            YearMonth::parse("2025-01").unwrap().previous().to_string(),
            "2024-12"
        );
    }

    #[test]
    fn rules_are_exact_and_tiers_sorted() {
        let r = Rules::from_config(&MartsConfig::default()).unwrap();
        assert_eq!(r.incentive_share, 1_000_000);
        assert_eq!(r.share_text(), "0.01000000");
        let names: Vec<&str> = r.coupon_tiers.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["gold", "silver", "bronze"]);
    }
}
