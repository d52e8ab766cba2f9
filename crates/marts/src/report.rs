//! The daily and monthly reports: sections computed with SQL over the lake (the star schema,
//! the marts and the control plane), written as CSV files and one self-contained HTML page.
//!
//! Daily (`reports/daily/YYYY-MM-DD/`): summary, sales by store and region, top products, top
//! customers, refunds, and the data quality of the files received that day. Monthly
//! (`reports/monthly/YYYY-MM/`): the same for the month, plus sales by day, the sales team's
//! incentives and the coupon list (from the marts).

use crate::model::{IS_REFUND, IS_SALE, Mart, YearMonth, per_key_sql};
use crate::publish::{Generation, Published};
use crate::{MartError, Result};
use bytes::Bytes;
use chrono::{Datelike, NaiveDate, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use futures::StreamExt;
use shoplake_core::Entity;
use shoplake_query::LakeQuery;
use shoplake_storage::Lake;
use std::sync::Arc;

/// The period a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day(NaiveDate),
    Month(YearMonth),
}

impl Period {
    /// `daily` or `monthly`: the folder under `reports/`.
    pub fn kind(self) -> &'static str {
        match self {
            Period::Day(_) => "daily",
            Period::Month(_) => "monthly",
        }
    }

    /// `YYYY-MM-DD` or `YYYY-MM`: the report's folder.
    pub fn key(self) -> String {
        match self {
            Period::Day(d) => d.format("%Y-%m-%d").to_string(),
            Period::Month(m) => m.to_string(),
        }
    }

    pub fn title(self) -> String {
        match self {
            Period::Day(d) => format!("Daily report, {}", d.format("%A %-d %B %Y")),
            Period::Month(m) => format!("Monthly report, {}", m.first_day().format("%B %Y")),
        }
    }

    fn first_and_last(self) -> (NaiveDate, NaiveDate) {
        match self {
            Period::Day(d) => (d, d),
            Period::Month(m) => {
                let first = m.first_day();
                let next = if m.month == 12 {
                    NaiveDate::from_ymd_opt(m.year + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(m.year, m.month + 1, 1)
                }
                .expect("valid month");
                (first, next.pred_opt().expect("a day before"))
            }
        }
    }

    /// The period's rows of `fact_sales`, with its partitions named so the scan prunes.
    fn fact_filter(self) -> String {
        match self {
            Period::Day(d) => format!(
                "year = {} AND month = {} AND sales_date = DATE '{}'",
                d.year(),
                d.month(),
                d.format("%Y-%m-%d")
            ),
            Period::Month(m) => format!("year = {} AND month = {}", m.year, m.month),
        }
    }

    /// Files of the control plane received in the period (UTC).
    fn received_filter(self, column: &str) -> String {
        let (first, last) = self.first_and_last();
        format!("CAST({column} AS DATE) BETWEEN DATE '{first}' AND DATE '{last}'")
    }
}

/// Rows of a section kept in memory for the page (the CSV file has them all).
pub const PREVIEW_ROWS: usize = 200;

/// One part of a report: a CSV file (streamed to the lake) and a part of the page.
#[derive(Debug, Clone)]
pub struct Section {
    /// File name without `.csv`.
    pub name: &'static str,
    pub title: &'static str,
    pub schema: SchemaRef,
    /// The first [`PREVIEW_ROWS`] rows.
    pub batches: Vec<RecordBatch>,
    /// All rows (in the CSV file).
    pub total_rows: usize,
}

impl Section {
    pub fn rows(&self) -> usize {
        self.total_rows
    }
}

/// A written report: its sections (with their first rows) and where it was published.
#[derive(Debug, Clone)]
pub struct Report {
    pub period: Period,
    pub sections: Vec<Section>,
    pub generated_at: chrono::DateTime<Utc>,
}

impl Report {
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

fn csv_into(buf: &mut Vec<u8>, batch: &RecordBatch, header: bool) -> Result<()> {
    let mut w = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(header)
        .build(&mut *buf);
    w.write(batch)?;
    Ok(())
}

/// Register empty stand-ins for the dimensions and marts a lake does not have yet, so every
/// report query plans.
async fn ensure_tables(q: &LakeQuery) -> Result<()> {
    let ctx = q.context();
    if ctx.table_exist("fact_sales")? {
        for (table, entity) in [
            ("dim_customer", Entity::Customers),
            ("dim_store", Entity::Stores),
            ("dim_product", Entity::Products),
        ] {
            if !ctx.table_exist(table)? {
                let schema = shoplake_etl::schema::dim_schema(entity);
                ctx.register_table(table, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
            }
        }
        for mart in Mart::ALL {
            if !ctx.table_exist(mart.name())? {
                ctx.register_table(
                    mart.name(),
                    Arc::new(MemTable::try_new(mart.schema(), vec![vec![]])?),
                )?;
            }
        }
        Ok(())
    } else {
        Err(MartError::Usage(
            "the lake has no fact_sales yet: load data with `shoplake ingest`, `shoplake crawl` and `shoplake run` first".into(),
        ))
    }
}

/// Run a section's query and stream its rows into `<name>.csv` of the generation, keeping the
/// first rows for the page.
async fn section(
    q: &LakeQuery,
    g: &mut Generation,
    name: &'static str,
    title: &'static str,
    sql: &str,
) -> Result<Section> {
    let df = q.context().sql(sql).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut file = g.create(&format!("{name}.csv")).await?;
    let mut buf = Vec::new();
    csv_into(&mut buf, &RecordBatch::new_empty(schema.clone()), true)?;
    let (mut batches, mut kept, mut total_rows) = (Vec::new(), 0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        total_rows += batch.num_rows();
        if kept < PREVIEW_ROWS && batch.num_rows() > 0 {
            let take = (PREVIEW_ROWS - kept).min(batch.num_rows());
            batches.push(batch.slice(0, take));
            kept += take;
        }
        csv_into(&mut buf, &batch, false)?;
        if buf.len() >= 4 << 20 {
            file.write(&buf).await?;
            buf.clear();
        }
    }
    file.write(&buf).await?;
    g.close(file).await?;
    Ok(Section {
        name,
        title,
        schema,
        batches,
        total_rows,
    })
}

/// Write the report of a period into the lake (see [`crate::publish`]): every section's CSV
/// file, streamed, then `report.html`, then the manifest flip. `top_n` bounds the
/// top-products and top-customers lists.
pub async fn write(
    lake: &Lake,
    q: &LakeQuery,
    period: Period,
    top_n: usize,
) -> Result<(Report, Published)> {
    ensure_tables(q).await?;
    let mut g = Generation::begin(lake, period.kind(), &period.key());
    let f = period.fact_filter();
    let key = period.key();
    let mut sections = Vec::new();
    let per = |keys: &str, extra: &str| per_key_sql(keys, &format!("{f}{extra}"));
    // Within a day or a month `year` is one value: grouping by it gives the period's totals.
    let totals = per("year", "");
    sections.push(section(q, &mut g, "summary", "Summary", &format!(
        "SELECT '{key}' AS period,
           COALESCE(a.total_sales_usd, CAST(0 AS DECIMAL(18,2))) AS sales_usd,
           COALESCE(a.orders, 0) AS orders,
           (SELECT COUNT(*) FROM (SELECT customer_id FROM fact_sales
              WHERE {f} AND {IS_SALE} AND customer_id IS NOT NULL GROUP BY customer_id) c) AS customers,
           (SELECT COUNT(*) FROM fact_sales WHERE {f}) AS lines,
           COALESCE(a.refunds, 0) AS refunds,
           COALESCE(a.refunded_usd, CAST(0 AS DECIMAL(18,2))) AS refunded_usd,
           (SELECT COUNT(*) FROM fact_sales WHERE {f} AND is_outlier) AS outliers
         FROM (SELECT 1 AS one) d LEFT JOIN ({totals}) a ON TRUE"
    )).await?);

    if let Period::Month(_) = period {
        sections.push(
            section(
                q,
                &mut g,
                "sales_by_day",
                "Sales by day",
                &format!(
                    "SELECT sales_date AS day, orders, total_sales_usd AS sales_usd, refunded_usd
             FROM ({}) d ORDER BY day",
                    per("sales_date", "")
                ),
            )
            .await?,
        );
    }

    sections.push(
        section(
            q,
            &mut g,
            "sales_by_region",
            "Sales by region",
            &format!(
                "SELECT region, orders, total_sales_usd AS sales_usd, refunds, refunded_usd
         FROM ({}) r ORDER BY total_sales_usd DESC, region",
                per("region", "")
            ),
        )
        .await?,
    );

    sections.push(section(q, &mut g, "sales_by_store_region", "Sales by store and region", &format!(
        "SELECT s.region, s.store_id, st.store_name, s.orders, s.total_sales_usd AS sales_usd,
           s.refunds, s.refunded_usd
         FROM ({}) s
         LEFT JOIN (SELECT store_id, store_name FROM dim_store WHERE is_current) st ON s.store_id = st.store_id
         ORDER BY s.region, s.total_sales_usd DESC, s.store_id NULLS FIRST",
        per("region, store_id", "")
    )).await?);

    sections.push(section(q, &mut g, "top_products", "Top products", &format!(
        "SELECT CAST(ROW_NUMBER() OVER (ORDER BY p.total_sales_usd DESC, p.product_id) AS BIGINT) AS rank,
           p.product_id, d.product_name, d.category, p.units, p.orders, p.total_sales_usd AS sales_usd
         FROM ({}) p
         LEFT JOIN (SELECT product_id, product_name, category FROM dim_product WHERE is_current) d
           ON p.product_id = d.product_id
         WHERE p.total_sales_usd > 0 ORDER BY rank LIMIT {top_n}",
        per("product_id", "")
    )).await?);

    sections.push(section(q, &mut g, "top_customers", "Top customers", &format!(
        "SELECT CAST(ROW_NUMBER() OVER (ORDER BY t.total_sales_usd DESC, t.customer_id) AS BIGINT) AS rank,
           t.customer_id, c.full_name, t.orders, t.total_sales_usd AS sales_usd
         FROM ({}) t
         LEFT JOIN (SELECT customer_id, full_name FROM dim_customer WHERE is_current) c ON t.customer_id = c.customer_id
         WHERE t.total_sales_usd > 0 ORDER BY rank LIMIT {top_n}",
        per("customer_id", " AND customer_id IS NOT NULL")
    )).await?);

    sections.push(
        section(
            q,
            &mut g,
            "refunds",
            "Refunds",
            &format!(
        "SELECT sales_date, transaction_id, customer_id, product_id, product_name, store_id, region,
           amount, currency, amount_usd
         FROM fact_sales WHERE {f} AND {IS_REFUND}
         ORDER BY sales_date, transaction_id, file_id, source_line"
    ),
        )
        .await?,
    );

    if let Period::Month(m) = period {
        sections.push(
            section(
                q,
                &mut g,
                "incentives",
                "Sales team incentives",
                &format!(
            "SELECT store_id, store_name, sales_person_id, full_name, orders, total_sales_usd,
               rank_in_store, top_sellers, incentive_usd
             FROM {} WHERE month = '{m}' ORDER BY store_id, rank_in_store, sales_person_id",
            Mart::SalesTeamMonthly.name()
        ),
            )
            .await?,
        );
        sections.push(
            section(
                q,
                &mut g,
                "coupons",
                "Coupons",
                &format!(
                    "SELECT customer_id, full_name, address, phone_masked, orders, total_sales_usd,
               coupon_tier, coupon_discount_percent
             FROM {} WHERE month = '{m}' AND coupon_tier IS NOT NULL
             ORDER BY total_sales_usd DESC, customer_id",
                    Mart::CustomerMonthly.name()
                ),
            )
            .await?,
        );
    }

    let received = period.received_filter("received_at");
    sections.push(
        section(
            q,
            &mut g,
            "data_quality",
            "Data quality: files received",
            &format!(
                "SELECT file_id, source, name, entity, status, received_at, rows_in, rows_loaded,
           rows_quarantined, rows_duplicate, error
         FROM files WHERE {received} ORDER BY file_id"
            ),
        )
        .await?,
    );
    let received_f = period.received_filter("f.received_at");
    sections.push(
        section(
            q,
            &mut g,
            "data_quality_reasons",
            "Data quality: quarantined rows by reason",
            &format!(
        "SELECT r.reason, CAST(SUM(r.rows) AS BIGINT) AS rows, COUNT(DISTINCT r.file_id) AS files
         FROM file_reasons r JOIN files f ON r.file_id = f.file_id
         WHERE {received_f} AND r.rows > 0
         GROUP BY r.reason ORDER BY rows DESC, r.reason"
    ),
        )
        .await?,
    );

    let report = Report {
        period,
        sections,
        generated_at: Utc::now(),
    };
    g.put("report.html", Bytes::from(crate::html::render(&report)))
        .await?;
    let published = g.commit().await?;
    Ok((report, published))
}
