//! The dashboard: the pages at `/` (HTML, script and styles compiled into the binary, nothing
//! fetched from elsewhere) and the data behind every chart at `/api/v1/dashboard/{panel}`.
//!
//! Each panel is a fixed query, run in the caller's own session, so a viewer or an analyst gets
//! masked PII and their row filter exactly as in SQL. Results are cached per lake generation
//! and per access policy (not per user: two analysts with the same filter share them), and the
//! default view of every page is computed again in the background as soon as a run changes the
//! lake, so opening the dashboard reads cached results.
//!
//! The money rules are the marts' ([`shoplake_marts::model::IS_SALE`] and friends), so the
//! dashboard's revenue equals the marts' and the reports'.

use crate::http::{ApiError, Caller, audit, read_only};
use crate::sessions::access_for;
use crate::users::User;
use crate::{App, ServeError};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use shoplake_marts::model::{IS_REFUND, IS_SALE};
use shoplake_storage::Zone;
use shoplake_tables::TableId;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ assets

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON: &str = include_str!("../assets/favicon.svg");

/// `GET /`: the dashboard page. It holds no data; the script asks for a token and then loads
/// the panels with it.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/{name}`: the script, the styles and the icon, from inside the binary.
pub async fn assets(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "app.css" => asset("text/css; charset=utf-8", APP_CSS),
        "favicon.svg" => asset("image/svg+xml", FAVICON),
        _ => ApiError::new(StatusCode::NOT_FOUND, format!("no asset {name:?}")).into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The binary is the version: revalidate, but the bytes never change under a running server.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

// ------------------------------------------------------------------ panels

/// The dashboard's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Sales,
    Customers,
    Team,
    Campaigns,
    Pipeline,
}

impl Page {
    pub const ALL: [Page; 5] = [
        Page::Sales,
        Page::Customers,
        Page::Team,
        Page::Campaigns,
        Page::Pipeline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Page::Sales => "sales",
            Page::Customers => "customers",
            Page::Team => "team",
            Page::Campaigns => "campaigns",
            Page::Pipeline => "pipeline",
        }
    }
}

/// One chart or table of the dashboard and the query behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Panel {
    Options,
    Kpis,
    RevenueOverTime,
    ByRegion,
    ByCategory,
    TopProducts,
    ByChannel,
    Weekday,
    TopCustomers,
    NewReturning,
    CouponTiers,
    SalesTeam,
    Incentives,
    Campaigns,
    Runs,
    Tasks,
    FilesByStatus,
    RecentFiles,
    QuarantineReasons,
    QuarantineRows,
    Quality,
    SchemaDrift,
    TableVersions,
}

impl Panel {
    pub const ALL: [Panel; 23] = [
        Panel::Options,
        Panel::Kpis,
        Panel::RevenueOverTime,
        Panel::ByRegion,
        Panel::ByCategory,
        Panel::TopProducts,
        Panel::ByChannel,
        Panel::Weekday,
        Panel::TopCustomers,
        Panel::NewReturning,
        Panel::CouponTiers,
        Panel::SalesTeam,
        Panel::Incentives,
        Panel::Campaigns,
        Panel::Runs,
        Panel::Tasks,
        Panel::FilesByStatus,
        Panel::RecentFiles,
        Panel::QuarantineReasons,
        Panel::QuarantineRows,
        Panel::Quality,
        Panel::SchemaDrift,
        Panel::TableVersions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Panel::Options => "options",
            Panel::Kpis => "kpis",
            Panel::RevenueOverTime => "revenue_over_time",
            Panel::ByRegion => "by_region",
            Panel::ByCategory => "by_category",
            Panel::TopProducts => "top_products",
            Panel::ByChannel => "by_channel",
            Panel::Weekday => "weekday",
            Panel::TopCustomers => "top_customers",
            Panel::NewReturning => "new_returning",
            Panel::CouponTiers => "coupon_tiers",
            Panel::SalesTeam => "sales_team",
            Panel::Incentives => "incentives",
            Panel::Campaigns => "campaigns",
            Panel::Runs => "runs",
            Panel::Tasks => "tasks",
            Panel::FilesByStatus => "files_by_status",
            Panel::RecentFiles => "recent_files",
            Panel::QuarantineReasons => "quarantine_reasons",
            Panel::QuarantineRows => "quarantine_rows",
            Panel::Quality => "quality",
            Panel::SchemaDrift => "schema_drift",
            Panel::TableVersions => "table_versions",
        }
    }

    pub fn parse(name: &str) -> Option<Panel> {
        Panel::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn page(self) -> Page {
        match self {
            Panel::Options
            | Panel::Kpis
            | Panel::RevenueOverTime
            | Panel::ByRegion
            | Panel::ByCategory
            | Panel::TopProducts
            | Panel::ByChannel
            | Panel::Weekday => Page::Sales,
            Panel::TopCustomers | Panel::NewReturning | Panel::CouponTiers => Page::Customers,
            Panel::SalesTeam | Panel::Incentives => Page::Team,
            Panel::Campaigns => Page::Campaigns,
            _ => Page::Pipeline,
        }
    }

    /// The pipeline's health is for the people who run it (`can_operate`).
    fn operators_only(self) -> bool {
        self.page() == Page::Pipeline
    }

    /// Business panels are cached per lake generation; the pipeline's are always fresh.
    fn cached(self) -> bool {
        self.page() != Page::Pipeline
    }
}

// ------------------------------------------------------------------ filters

/// The query string of a panel request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    region: Option<String>,
    store: Option<String>,
    channel: Option<String>,
    grain: Option<String>,
    top: Option<u32>,
    run_id: Option<i64>,
    reason: Option<String>,
    offset: Option<u64>,
    format: Option<String>,
}

/// Validated filters. Text values only ever reach SQL as escaped literals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub region: Option<String>,
    pub store: Option<String>,
    pub channel: Option<String>,
    pub grain: Grain,
    pub top: u32,
    pub run_id: Option<i64>,
    pub reason: Option<String>,
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Grain {
    Day,
    Week,
    #[default]
    Month,
}

impl Grain {
    fn sql(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
        }
    }
}

/// Most rows a top-N panel shows.
const MAX_TOP: u32 = 100;

impl Filters {
    /// The filters of the default view: every date, region, store and channel; top 10.
    pub fn default_view() -> Filters {
        Filters {
            top: 10,
            ..Filters::default()
        }
    }

    pub fn parse(p: &Params) -> Result<Filters, ServeError> {
        let date = |name: &str, v: &Option<String>| -> Result<Option<NaiveDate>, ServeError> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| {
                        ServeError::Usage(format!("{name}={s:?}: give a date as YYYY-MM-DD"))
                    }),
            }
        };
        let text = |name: &str, v: &Option<String>| -> Result<Option<String>, ServeError> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) if s.len() > 200 || s.chars().any(char::is_control) => Err(
                    ServeError::Usage(format!("{name}: at most 200 printable characters")),
                ),
                Some(s) => Ok(Some(s.to_string())),
            }
        };
        let from = date("from", &p.from)?;
        let to = date("to", &p.to)?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(ServeError::Usage(format!(
                "from={f} is after to={t}: swap them"
            )));
        }
        let grain = match p.grain.as_deref().map(str::trim) {
            None | Some("") | Some("month") => Grain::Month,
            Some("week") => Grain::Week,
            Some("day") => Grain::Day,
            Some(g) => {
                return Err(ServeError::Usage(format!(
                    "grain={g:?}: use day, week or month"
                )));
            }
        };
        let top = match p.top {
            None => 10,
            Some(n @ 1..=MAX_TOP) => n,
            Some(n) => {
                return Err(ServeError::Usage(format!(
                    "top={n}: ask for 1 to {MAX_TOP} rows"
                )));
            }
        };
        Ok(Filters {
            from,
            to,
            region: text("region", &p.region)?,
            store: text("store", &p.store)?,
            channel: text("channel", &p.channel)?,
            grain,
            top,
            run_id: p.run_id,
            reason: text("reason", &p.reason)?,
            offset: p.offset.unwrap_or(0),
        })
    }

    /// The canonical text of the filters (the cache key part).
    fn key(&self) -> String {
        format!("{self:?}")
    }

    /// Conditions on `fact_sales` for region, store and channel.
    fn place(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(r) = &self.region {
            w.push(format!("region = {}", lit(r)));
        }
        if let Some(s) = &self.store {
            w.push(format!("store_id = {}", lit(s)));
        }
        if let Some(c) = &self.channel {
            w.push(format!("channel = {}", lit(c)));
        }
        w
    }

    /// Conditions on `fact_sales` for the date range, on the date and on the `year`/`month`
    /// partition columns, so a range reads only its months' files.
    fn dates(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(f) = self.from {
            w.push(format!("sales_date >= DATE '{f}'"));
            w.push(format!(
                "(year > {y} OR (year = {y} AND month >= {m}))",
                y = f.year(),
                m = f.month()
            ));
        }
        if let Some(t) = self.to {
            w.push(format!("sales_date <= DATE '{t}'"));
            w.push(format!(
                "(year < {y} OR (year = {y} AND month <= {m}))",
                y = t.year(),
                m = t.month()
            ));
        }
        w
    }

    /// The whole `WHERE` condition on `fact_sales`.
    fn fact(&self) -> String {
        and(self.place().into_iter().chain(self.dates()))
    }

    /// ` AND {table}store_id = '...'` for a store filter on a mart, or nothing.
    fn store_in(&self, table: &str) -> String {
        self.store
            .as_ref()
            .map(|s| format!(" AND {table}store_id = {}", lit(s)))
            .unwrap_or_default()
    }

    /// The month range as `YYYY-MM` text, for the marts' `month` column.
    fn months(&self) -> String {
        let mut w = Vec::new();
        if let Some(f) = self.from {
            w.push(format!("month >= '{:04}-{:02}'", f.year(), f.month()));
        }
        if let Some(t) = self.to {
            w.push(format!("month <= '{:04}-{:02}'", t.year(), t.month()));
        }
        and(w)
    }
}

fn and(terms: impl IntoIterator<Item = String>) -> String {
    let terms: Vec<String> = terms.into_iter().collect();
    if terms.is_empty() {
        "TRUE".to_string()
    } else {
        terms.join(" AND ")
    }
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

const SALES_USD: &str = "COALESCE(SUM(CASE WHEN status = 'COMPLETED' AND NOT is_outlier THEN amount_usd END), 0) AS revenue_usd";
const REFUNDED_USD: &str =
    "COALESCE(SUM(CASE WHEN status = 'REFUNDED' THEN amount_usd END), 0) AS refunded_usd";

/// The query of a panel over `fact_sales` and the marts, or `None` for the panels built
/// otherwise (campaigns, table versions).
fn panel_sql(panel: Panel, f: &Filters) -> Option<String> {
    debug_assert!(SALES_USD.contains(IS_SALE) && REFUNDED_USD.contains(IS_REFUND));
    let w = f.fact();
    let top = f.top;
    Some(match panel {
        Panel::Options => "WITH s AS (SELECT region, channel, MIN(sales_date) AS first_date, MAX(sales_date) AS last_date
               FROM fact_sales GROUP BY region, channel)
             SELECT 'region' AS kind, region AS value, CAST(NULL AS VARCHAR) AS label FROM s GROUP BY region
             UNION ALL SELECT 'channel', channel, NULL FROM s GROUP BY channel
             UNION ALL SELECT 'store', store_id, MAX(store_name) FROM dim_store WHERE is_current GROUP BY store_id
             UNION ALL SELECT 'first_date', CAST(MIN(first_date) AS VARCHAR), NULL FROM s
             UNION ALL SELECT 'last_date', CAST(MAX(last_date) AS VARCHAR), NULL FROM s
             ORDER BY kind, value"
            .to_string(),
        // Orders as the marts count them (`shoplake_marts::model::ORDER_KEY`: the transaction, or the line when there is
        // no transaction id), without building that key for every row: distinct transaction
        // ids, plus one order per sale line that has none.
        Panel::Kpis => format!(
            "WITH f AS (SELECT status, is_outlier, amount_usd, quantity, customer_id, transaction_id
               FROM fact_sales WHERE {w}),
             t AS (SELECT {SALES_USD}, {REFUNDED_USD},
               CAST(COALESCE(SUM(CASE WHEN {IS_SALE} THEN quantity END), 0) AS BIGINT) AS units,
               COUNT(CASE WHEN {IS_SALE} THEN 1 END) AS sale_lines,
               COUNT(CASE WHEN {IS_SALE} AND transaction_id IS NULL THEN 1 END) AS untracked,
               COUNT(CASE WHEN {IS_REFUND} THEN 1 END) AS refund_lines FROM f),
             o AS (SELECT COUNT(*) AS orders FROM (SELECT transaction_id FROM f
               WHERE {IS_SALE} AND transaction_id IS NOT NULL GROUP BY transaction_id)),
             c AS (SELECT COUNT(*) AS customers FROM (SELECT customer_id FROM f
               WHERE {IS_SALE} AND customer_id IS NOT NULL GROUP BY customer_id))
             SELECT t.revenue_usd, o.orders + t.untracked AS orders, t.units, c.customers, t.sale_lines,
               t.refunded_usd, t.refund_lines
             FROM t CROSS JOIN o CROSS JOIN c"
        ),
        Panel::RevenueOverTime => format!(
            "SELECT CAST(date_trunc('{g}', sales_date) AS DATE) AS period, {SALES_USD}, {REFUNDED_USD},
               COUNT(CASE WHEN {IS_SALE} THEN 1 END) AS sale_lines
             FROM fact_sales WHERE {w} GROUP BY 1 ORDER BY 1",
            g = f.grain.sql()
        ),
        Panel::ByRegion => format!(
            "SELECT region, {SALES_USD}, {REFUNDED_USD}, COUNT(CASE WHEN {IS_SALE} THEN 1 END) AS sale_lines
             FROM fact_sales WHERE {w} GROUP BY region ORDER BY revenue_usd DESC, region"
        ),
        Panel::ByCategory => format!(
            "SELECT COALESCE(category, '(unknown)') AS category, {SALES_USD},
               CAST(COALESCE(SUM(CASE WHEN {IS_SALE} THEN quantity END), 0) AS BIGINT) AS units
             FROM fact_sales WHERE {w} GROUP BY 1 ORDER BY revenue_usd DESC, category"
        ),
        Panel::TopProducts => format!(
            "SELECT product_id, MAX(product_name) AS product_name, MAX(category) AS category,
               SUM(amount_usd) AS revenue_usd, CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS units
             FROM fact_sales WHERE {w} AND {IS_SALE}
             GROUP BY product_id ORDER BY revenue_usd DESC, product_id LIMIT {top}"
        ),
        Panel::ByChannel => format!(
            "SELECT channel, {SALES_USD}, {REFUNDED_USD}, COUNT(CASE WHEN {IS_SALE} THEN 1 END) AS sale_lines
             FROM fact_sales WHERE {w} GROUP BY channel ORDER BY revenue_usd DESC, channel"
        ),
        Panel::Weekday => format!(
            "WITH d AS (SELECT sales_date, {SALES_USD}, {REFUNDED_USD}
               FROM fact_sales WHERE {w} GROUP BY sales_date),
             k AS (SELECT CAST(date_part('dow', sales_date) AS INT) AS dow, revenue_usd, refunded_usd FROM d)
             SELECT CASE dow WHEN 0 THEN 'Sunday' WHEN 1 THEN 'Monday' WHEN 2 THEN 'Tuesday'
                 WHEN 3 THEN 'Wednesday' WHEN 4 THEN 'Thursday' WHEN 5 THEN 'Friday' ELSE 'Saturday' END AS day_of_week,
               dow IN (0, 6) AS is_weekend, COUNT(*) AS days, SUM(revenue_usd) AS revenue_usd,
               SUM(refunded_usd) AS refunded_usd
             FROM k GROUP BY dow ORDER BY (dow + 6) % 7"
        ),
        Panel::TopCustomers => format!(
            "WITH t AS (SELECT customer_id, SUM(amount_usd) AS revenue_usd, COUNT(*) AS sale_lines
               FROM fact_sales WHERE {w} AND {IS_SALE} AND customer_id IS NOT NULL
               GROUP BY customer_id ORDER BY revenue_usd DESC, customer_id LIMIT {top}),
             c AS (SELECT customer_id, MAX(full_name) AS full_name, MAX(city) AS city
               FROM dim_customer WHERE is_current GROUP BY customer_id)
             SELECT t.customer_id, c.full_name, c.city, t.revenue_usd, t.sale_lines
             FROM t LEFT JOIN c ON t.customer_id = c.customer_id
             ORDER BY t.revenue_usd DESC, t.customer_id"
        ),
        Panel::NewReturning => {
            let place = and(f.place());
            let dates = and(f.dates());
            format!(
                "WITH s AS (SELECT customer_id, sales_date, year, month FROM fact_sales
                   WHERE {place} AND {IS_SALE} AND customer_id IS NOT NULL),
                 first AS (SELECT customer_id, CAST(date_trunc('month', MIN(sales_date)) AS DATE) AS first_month
                   FROM s GROUP BY customer_id),
                 m AS (SELECT customer_id, CAST(date_trunc('month', sales_date) AS DATE) AS month
                   FROM s WHERE {dates} GROUP BY 1, 2)
                 SELECT m.month, COUNT(CASE WHEN first.first_month = m.month THEN 1 END) AS new_customers,
                   COUNT(CASE WHEN first.first_month < m.month THEN 1 END) AS returning_customers
                 FROM m JOIN first ON m.customer_id = first.customer_id
                 GROUP BY m.month ORDER BY m.month"
            )
        }
        Panel::CouponTiers => format!(
            "WITH last AS (SELECT MAX(month) AS month FROM mart_customer_monthly WHERE {months})
             SELECT m.month, COALESCE(m.coupon_tier, '(none)') AS coupon_tier,
               MAX(m.coupon_discount_percent) AS discount_percent, COUNT(*) AS customers,
               SUM(m.total_sales_usd) AS total_sales_usd
             FROM mart_customer_monthly m JOIN last ON m.month = last.month
             GROUP BY 1, 2 ORDER BY total_sales_usd DESC",
            months = f.months()
        ),
        Panel::SalesTeam => {
            let store = f.store_in("t.");
            format!(
                "WITH last AS (SELECT MAX(month) AS month FROM mart_sales_team_monthly WHERE {months})
                 SELECT t.month, t.store_id, t.store_name, t.rank_in_store, t.sales_person_id, t.full_name,
                   t.orders, t.total_sales_usd, t.incentive_usd
                 FROM mart_sales_team_monthly t JOIN last ON t.month = last.month
                 WHERE TRUE{store}
                 ORDER BY t.store_id, t.rank_in_store, t.sales_person_id LIMIT 1000",
                months = f.months()
            )
        }
        Panel::Incentives => {
            let store = f.store_in("");
            format!(
                "SELECT month, SUM(total_sales_usd) AS total_sales_usd, SUM(incentive_usd) AS incentive_usd,
                   COUNT(CASE WHEN rank_in_store = 1 THEN 1 END) AS top_sellers
                 FROM mart_sales_team_monthly WHERE {months}{store}
                 GROUP BY month ORDER BY month",
                months = f.months()
            )
        }
        Panel::Campaigns | Panel::TableVersions => return None,
        Panel::Runs => "SELECT * FROM runs ORDER BY run_id DESC LIMIT 20".to_string(),
        Panel::Tasks => {
            let run = match f.run_id {
                Some(id) => id.to_string(),
                None => "(SELECT MAX(run_id) FROM tasks)".to_string(),
            };
            format!("SELECT * FROM tasks WHERE run_id = {run} ORDER BY seq")
        }
        Panel::FilesByStatus => {
            "SELECT status, COUNT(*) AS files FROM files GROUP BY status ORDER BY files DESC, status"
                .to_string()
        }
        Panel::RecentFiles => "SELECT * FROM files ORDER BY file_id DESC LIMIT 50".to_string(),
        Panel::QuarantineReasons => "SELECT source, reason, COUNT(*) AS quarantined_rows
             FROM quarantine GROUP BY source, reason ORDER BY quarantined_rows DESC, source, reason"
            .to_string(),
        Panel::QuarantineRows => {
            let reason = f
                .reason
                .as_ref()
                .map(|r| format!("WHERE reason = {}", lit(r)))
                .unwrap_or_default();
            format!(
                "SELECT file_name, line, source, reason, detail, record, run_id FROM quarantine {reason}
                 ORDER BY file_id, line LIMIT 50 OFFSET {}",
                f.offset
            )
        }
        Panel::Quality => "SELECT * FROM quality ORDER BY checked_at DESC LIMIT 100".to_string(),
        Panel::SchemaDrift => "SELECT source, version, entity, file_id, drift, created_at
             FROM catalog WHERE drift IS NOT NULL ORDER BY created_at DESC LIMIT 50"
            .to_string(),
    })
}

/// The tables a panel needs; a panel whose table is hidden from the caller (a mart under a row
/// filter) or not built yet answers with the reason instead of an error.
fn needs(panel: Panel) -> &'static [&'static str] {
    match panel {
        Panel::CouponTiers => &["mart_customer_monthly"],
        Panel::SalesTeam | Panel::Incentives => &["mart_sales_team_monthly"],
        Panel::TopCustomers => &["fact_sales", "dim_customer"],
        Panel::Options => &["fact_sales", "dim_store"],
        Panel::Campaigns => &["fact_sales", "dim_campaign"],
        Panel::QuarantineReasons | Panel::QuarantineRows => &["quarantine"],
        Panel::Runs
        | Panel::Tasks
        | Panel::FilesByStatus
        | Panel::RecentFiles
        | Panel::Quality
        | Panel::SchemaDrift
        | Panel::TableVersions => &[],
        _ => &["fact_sales"],
    }
}

// ------------------------------------------------------------------ results

/// A panel's rows.
pub struct Computed {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Why the panel is empty when it cannot be shown to this caller.
    unavailable: Option<String>,
    compute_ms: u64,
}

impl Computed {
    fn unavailable(why: String) -> Computed {
        Computed {
            schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            batches: Vec::new(),
            unavailable: Some(why),
            compute_ms: 0,
        }
    }

    /// `{"columns": [{name, type}], "rows": [[...]]}`: integers and floats as JSON numbers,
    /// decimals as exact strings, dates as `YYYY-MM-DD`.
    fn json(&self, panel: Panel, cached: bool) -> Value {
        let columns: Vec<Value> = self
            .schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": kind(f.data_type())}))
            .collect();
        let mut rows = Vec::new();
        for b in &self.batches {
            let cols: Vec<Vec<Value>> = b.columns().iter().map(json_values).collect();
            for i in 0..b.num_rows() {
                rows.push(Value::Array(cols.iter().map(|c| c[i].clone()).collect()));
            }
        }
        json!({
            "panel": panel.name(),
            "columns": columns,
            "rows": rows,
            "unavailable": self.unavailable,
            "cached": cached,
            "compute_ms": self.compute_ms,
        })
    }

    fn csv(&self) -> Result<Vec<u8>, ServeError> {
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(Vec::new());
        let internal =
            |e: datafusion::arrow::error::ArrowError| ServeError::Internal(e.to_string());
        if self.batches.is_empty() {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Ok(format!("{}\n", names.join(",")).into_bytes());
        }
        for b in &self.batches {
            w.write(b).map_err(internal)?;
        }
        Ok(w.into_inner())
    }
}

/// How the page should treat a column.
fn kind(t: &DataType) -> &'static str {
    match t {
        DataType::Decimal128(..) | DataType::Decimal256(..) => "decimal",
        t if t.is_integer() => "integer",
        t if t.is_floating() => "float",
        DataType::Boolean => "boolean",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(..) => "timestamp",
        _ => "text",
    }
}

fn json_values(a: &ArrayRef) -> Vec<Value> {
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    // Each column is widened once, then read row by row.
    let widened = |to: DataType| datafusion::arrow::compute::cast(a, &to).ok();
    let values: Box<dyn Fn(usize) -> Value + '_> = match a.data_type() {
        DataType::Boolean => {
            let b = a.as_boolean().clone();
            Box::new(move |i| Value::Bool(b.value(i)))
        }
        t if t.is_signed_integer() => match widened(DataType::Int64) {
            Some(c) => Box::new(move |i| Value::from(c.as_primitive::<Int64Type>().value(i))),
            None => Box::new(|_| Value::Null),
        },
        t if t.is_unsigned_integer() => match widened(DataType::UInt64) {
            Some(c) => Box::new(move |i| Value::from(c.as_primitive::<UInt64Type>().value(i))),
            None => Box::new(|_| Value::Null),
        },
        t if t.is_floating() => match widened(DataType::Float64) {
            Some(c) => Box::new(move |i| {
                serde_json::Number::from_f64(c.as_primitive::<Float64Type>().value(i))
                    .map_or(Value::Null, Value::Number)
            }),
            None => Box::new(|_| Value::Null),
        },
        _ => match ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()) {
            Ok(f) => Box::new(move |i| Value::String(f.value(i).to_string())),
            Err(_) => Box::new(|_| Value::Null),
        },
    };
    (0..a.len())
        .map(|i| if a.is_null(i) { Value::Null } else { values(i) })
        .collect()
}

// ------------------------------------------------------------------ cache

/// Panel results per lake generation and access policy.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    generation: u64,
    entries: HashMap<String, Arc<tokio::sync::OnceCell<Arc<Computed>>>>,
}

/// Most results kept for one generation; past it the cache starts over (every entry is small,
/// this bounds a client that walks through thousands of filter combinations).
const CACHE_ENTRIES: usize = 4096;

impl Cache {
    fn cell(&self, generation: u64, key: String) -> Arc<tokio::sync::OnceCell<Arc<Computed>>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation != generation || inner.entries.len() >= CACHE_ENTRIES {
            inner.entries.clear();
            inner.generation = generation;
        }
        inner.entries.entry(key).or_default().clone()
    }
}

// ------------------------------------------------------------------ computing

/// The rows of `panel` for `user` with `filters`, from the cache when it has them.
/// Returns the rows and whether they came from the cache.
pub async fn compute(
    app: &Arc<App>,
    user: &User,
    panel: Panel,
    filters: &Filters,
) -> Result<(Arc<Computed>, bool), ServeError> {
    if !panel.cached() {
        return Ok((Arc::new(run_panel(app, user, panel, filters).await?), false));
    }
    let generation = app.sessions.generation().await?;
    let key = format!(
        "{:?}\u{1f}{}\u{1f}{}",
        access_for(user),
        panel.name(),
        filters.key()
    );
    let cell = app.dashboard.cell(generation, key);
    let mut hit = true;
    let computed = cell
        .get_or_try_init(|| {
            hit = false;
            async { run_panel(app, user, panel, filters).await.map(Arc::new) }
        })
        .await?
        .clone();
    Ok((computed, hit))
}

async fn run_panel(
    app: &Arc<App>,
    user: &User,
    panel: Panel,
    filters: &Filters,
) -> Result<Computed, ServeError> {
    let started = Instant::now();
    let session = app.sessions.dashboard_session(user).await?;
    let ctx = session.context().clone();
    for table in needs(panel) {
        if !ctx.table_exist(*table).unwrap_or(false) {
            let why = if table.starts_with("mart_") && !user.row_filter.is_empty() {
                format!(
                    "{table} sums every region, so it is hidden under a row filter ({})",
                    filter_text(user)
                )
            } else {
                format!("no {table} in the lake yet: it appears after a run loads it")
            };
            return Ok(Computed::unavailable(why));
        }
    }
    let timeout = app.query_timeout();
    let work = async {
        let sql = match panel {
            Panel::Campaigns => match campaigns_sql(&ctx, filters).await? {
                Some(sql) => sql,
                None => {
                    return Ok(Computed::unavailable(
                        "no campaign overlaps the selected dates".into(),
                    ));
                }
            },
            Panel::TableVersions => return table_versions(app).await,
            _ => panel_sql(panel, filters).expect("every other panel has SQL"),
        };
        let df = ctx.sql_with_options(&sql, read_only()).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok::<_, ServeError>(Computed {
            schema,
            batches,
            unavailable: None,
            compute_ms: 0,
        })
    };
    let mut computed = tokio::time::timeout(timeout, work).await.map_err(|_| {
        ServeError::Timeout(format!(
            "panel {} ran longer than the {}s query timeout",
            panel.name(),
            timeout.as_secs()
        ))
    })??;
    computed.compute_ms = started.elapsed().as_millis() as u64;
    Ok(computed)
}

fn filter_text(user: &User) -> String {
    user.row_filter
        .iter()
        .map(|(c, v)| format!("{c}={}", v.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Campaign windows come from `dim_campaign`; each is compared with the period of the same
/// length just before it. The windows are computed here and handed to SQL as literals.
async fn campaigns_sql(
    ctx: &datafusion::prelude::SessionContext,
    f: &Filters,
) -> Result<Option<String>, ServeError> {
    let df = ctx
        .sql_with_options(
            "SELECT campaign_id, MAX(campaign_name) AS campaign_name, MIN(start_date) AS start_date,
               MAX(end_date) AS end_date
             FROM dim_campaign WHERE is_current AND start_date IS NOT NULL AND end_date IS NOT NULL
             GROUP BY campaign_id ORDER BY start_date, campaign_id",
            read_only(),
        )
        .await?;
    let batches = df.collect().await?;
    let mut windows = Vec::new();
    for b in &batches {
        let text = |i: usize| {
            datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8)
                .map_err(datafusion::error::DataFusionError::from)
        };
        let (id, name) = (text(0)?, text(1)?);
        let (id, name) = (id.as_string::<i32>(), name.as_string::<i32>());
        let start = b
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        let end = b
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        for i in 0..b.num_rows() {
            let (Some(s), Some(e)) = (start.value_as_date(i), end.value_as_date(i)) else {
                continue;
            };
            if e < s || f.to.is_some_and(|t| s > t) || f.from.is_some_and(|from| e < from) {
                continue;
            }
            let days = (e - s).num_days() + 1;
            let before_end = s - chrono::Duration::days(1);
            let before_start = s - chrono::Duration::days(days);
            windows.push((
                id.value(i).to_string(),
                if name.is_null(i) {
                    String::new()
                } else {
                    name.value(i).to_string()
                },
                s,
                e,
                days,
                before_start,
                before_end,
            ));
        }
    }
    if windows.is_empty() {
        return Ok(None);
    }
    let first = windows.iter().map(|w| w.5).min().expect("not empty");
    let last = windows.iter().map(|w| w.3).max().expect("not empty");
    let mut values = String::new();
    for (i, (id, name, s, e, days, bs, be)) in windows.iter().enumerate() {
        if i > 0 {
            values.push_str(", ");
        }
        let _ = write!(
            values,
            "({}, {}, DATE '{s}', DATE '{e}', CAST({days} AS BIGINT), DATE '{bs}', DATE '{be}')",
            lit(id),
            lit(name)
        );
    }
    let range = Filters {
        from: Some(first),
        to: Some(last),
        ..f.clone()
    };
    let w = range.fact();
    Ok(Some(format!(
        "WITH w (campaign_id, campaign_name, start_date, end_date, days, before_start, before_end) AS (VALUES {values}),
         d AS (SELECT sales_date, campaign_id, SUM(amount_usd) AS revenue_usd
           FROM fact_sales WHERE {w} AND {IS_SALE} GROUP BY sales_date, campaign_id)
         SELECT w.campaign_id, w.campaign_name, w.start_date, w.end_date, w.days,
           COALESCE(SUM(CASE WHEN d.sales_date >= w.start_date AND d.sales_date <= w.end_date THEN d.revenue_usd END), 0) AS during_usd,
           COALESCE(SUM(CASE WHEN d.sales_date >= w.before_start AND d.sales_date <= w.before_end THEN d.revenue_usd END), 0) AS before_usd,
           COALESCE(SUM(CASE WHEN d.sales_date >= w.start_date AND d.sales_date <= w.end_date
             AND d.campaign_id = w.campaign_id THEN d.revenue_usd END), 0) AS attributed_usd
         FROM w LEFT JOIN d ON d.sales_date >= w.before_start AND d.sales_date <= w.end_date
         GROUP BY w.campaign_id, w.campaign_name, w.start_date, w.end_date, w.days
         ORDER BY w.start_date, w.campaign_id"
    )))
}

/// Every lake table and its current Delta version.
async fn table_versions(app: &Arc<App>) -> Result<Computed, ServeError> {
    use datafusion::arrow::array::{Int64Array, StringArray};
    let tables = app.pipeline.tables();
    let (mut zones, mut names, mut versions) = (Vec::new(), Vec::new(), Vec::new());
    for zone in [Zone::Processed, Zone::Marts] {
        let list = tables
            .list(zone)
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        for name in list {
            let id = TableId {
                zone,
                name: name.clone(),
            };
            let v = tables
                .version(&id)
                .await
                .map_err(|e| ServeError::Internal(e.to_string()))?;
            zones.push(zone.prefix().trim_end_matches('/').to_string());
            names.push(name);
            versions.push(v);
        }
    }
    let zone_col: ArrayRef = Arc::new(StringArray::from(zones));
    let name_col: ArrayRef = Arc::new(StringArray::from(names));
    let version_col: ArrayRef = Arc::new(Int64Array::from(versions));
    let batch = RecordBatch::try_from_iter([
        ("zone", zone_col),
        ("table_name", name_col),
        ("version", version_col),
    ])
    .map_err(|e| ServeError::Internal(e.to_string()))?;
    Ok(Computed {
        schema: batch.schema(),
        batches: vec![batch],
        unavailable: None,
        compute_ms: 0,
    })
}

// ------------------------------------------------------------------ handlers

/// `GET /api/v1/dashboard`: who the caller is, which pages they get, the refresh interval.
pub async fn describe(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<axum::Json<Value>, ApiError> {
    let role = caller.user.role;
    let pages: Vec<&str> = Page::ALL
        .into_iter()
        .filter(|p| *p != Page::Pipeline || role.can_operate())
        .map(Page::name)
        .collect();
    let access = access_for(&caller.user);
    Ok(axum::Json(json!({
        "user": caller.user.name,
        "role": role,
        "row_filter": caller.user.row_filter,
        "masked": !access.masked.is_empty(),
        "pages": pages,
        "panels": Panel::ALL.iter().filter(|p| pages.contains(&p.page().name())).map(|p| p.name()).collect::<Vec<_>>(),
        "refresh_secs": app.config.dashboard_refresh_secs,
        "can_query": role.can_query(),
    })))
}

/// `GET /api/v1/dashboard/{panel}`: a panel's rows as JSON (default) or CSV (`format=csv`).
pub async fn panel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut entry = caller.entry("dashboard", name.clone());
    let r = async {
        let Query(params) = q.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; the parameters are from, to, region, store, channel, grain, top, run_id, reason, offset, format",
                    e.body_text()
                ),
            )
        })?;
        let Some(panel) = Panel::parse(&name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no dashboard panel {name:?}; the panels are {}",
                    Panel::ALL.map(Panel::name).join(", ")
                ),
            ));
        };
        if panel.operators_only() {
            caller.require(
                &app,
                caller.user.role.can_operate(),
                "see the pipeline's health",
            )?;
        }
        let filters = Filters::parse(&params)?;
        let csv = match params.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("format={other:?}: use json or csv"),
                ));
            }
        };
        let (computed, hit) = compute(&app, &caller.user, panel, &filters).await?;
        let mut r = if csv {
            let mut r = computed.csv()?.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"shoplake-{}.csv\"",
                panel.name()
            )) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        } else {
            axum::Json(computed.json(panel, hit)).into_response()
        };
        r.headers_mut().insert(
            "x-shoplake-cache",
            HeaderValue::from_static(if hit { "hit" } else { "miss" }),
        );
        Ok(r)
    }
    .await;
    let elapsed = started.elapsed();
    app.metrics
        .query(crate::metrics::Protocol::Http, r.is_ok(), elapsed);
    entry.duration_ms = Some(elapsed.as_millis() as i64);
    if let Err(e) = &r {
        entry.outcome = e.outcome();
        entry.error = Some(e.message().to_string());
    }
    audit(&app, entry).await;
    r
}

// ------------------------------------------------------------------ warming

/// Compute the default view of every business page for each distinct access policy among the
/// users, so the first page load after a run reads cached results. Returns how many panels ran.
pub async fn warm(app: &Arc<App>) -> Result<usize, ServeError> {
    let directory = app.sessions.directory().await?;
    let mut seen = BTreeSet::new();
    let mut n = 0;
    let filters = Filters::default_view();
    for user in directory.users() {
        if !seen.insert(format!("{:?}", access_for(user))) {
            continue;
        }
        for panel in Panel::ALL.into_iter().filter(|p| p.cached()) {
            if *app.shutdown.borrow() {
                return Ok(n);
            }
            match compute(app, user, panel, &filters).await {
                Ok((_, false)) => n += 1,
                Ok((_, true)) => {}
                Err(e) => tracing::warn!(
                    "dashboard: warming {} for {} failed: {e}",
                    panel.name(),
                    user.name
                ),
            }
        }
    }
    Ok(n)
}

/// Warm the cache at start and whenever the lake's generation moves, until shutdown.
pub async fn warm_loop(app: Arc<App>) {
    let mut shutdown = app.shutdown.clone();
    let mut warmed = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match app.sessions.generation().await {
            Ok(g) if warmed != Some(g) => {
                let started = Instant::now();
                match warm(&app).await {
                    Ok(n) if n > 0 => tracing::info!(
                        "dashboard: {n} panels computed for the default view in {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("dashboard: warming the cache failed: {e}"),
                }
                warmed = Some(g);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("dashboard: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "from" => p.from = v,
                "to" => p.to = v,
                "region" => p.region = v,
                "channel" => p.channel = v,
                "grain" => p.grain = v,
                "top" => p.top = v.and_then(|v| v.parse().ok()),
                other => panic!("{other}"),
            }
        }
        p
    }

    #[test]
    fn filters_become_escaped_conditions_with_partition_pruning() {
        let f = Filters::parse(&params(&[
            ("from", "2025-02-10"),
            ("to", "2025-03-05"),
            ("region", "North' OR '1'='1"),
            ("channel", "store"),
        ]))
        .unwrap();
        let w = f.fact();
        assert!(w.contains("region = 'North'' OR ''1''=''1'"), "{w}");
        assert!(w.contains("sales_date >= DATE '2025-02-10'"), "{w}");
        assert!(
            w.contains("(year > 2025 OR (year = 2025 AND month >= 2))"),
            "{w}"
        );
        assert!(
            w.contains("(year < 2025 OR (year = 2025 AND month <= 3))"),
            "{w}"
        );
        assert_eq!(f.months(), "month >= '2025-02' AND month <= '2025-03'");
        assert_eq!(Filters::default_view().fact(), "TRUE");
    }

    #[test]
    fn bad_filters_say_what_to_send() {
        let e = Filters::parse(&params(&[("from", "10/02/2025")])).unwrap_err();
        assert!(e.to_string().contains("YYYY-MM-DD"), "{e}");
        let e =
            Filters::parse(&params(&[("from", "2025-03-01"), ("to", "2025-02-01")])).unwrap_err();
        assert!(e.to_string().contains("swap"), "{e}");
        let e = Filters::parse(&params(&[("grain", "year")])).unwrap_err();
        assert!(e.to_string().contains("day, week or month"), "{e}");
        let e = Filters::parse(&params(&[("top", "1000")])).unwrap_err();
        assert!(e.to_string().contains("1 to 100"), "{e}");
    }

    #[test]
    fn every_panel_has_a_name_a_page_and_a_query_or_a_builder() {
        for p in Panel::ALL {
            assert_eq!(Panel::parse(p.name()), Some(p));
            let sql = panel_sql(p, &Filters::default_view());
            assert_eq!(
                sql.is_none(),
                matches!(p, Panel::Campaigns | Panel::TableVersions),
                "{p:?}"
            );
        }
        assert!(Panel::Runs.operators_only() && !Panel::Kpis.operators_only());
    }

    #[test]
    fn the_openapi_document_lists_every_panel() {
        let doc: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let listed: Vec<&str> =
            doc["paths"]["/api/v1/dashboard/{panel}"]["get"]["parameters"][0]["schema"]["enum"]
                .as_array()
                .expect("the panel enum")
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
        assert_eq!(listed, Panel::ALL.map(Panel::name).to_vec());
    }
}
