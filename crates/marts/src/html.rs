//! The HTML page of a report: one self-contained file (inline CSS and SVG, no script, nothing
//! fetched), readable offline and printable.

use crate::report::{Period, Report, Section};
use crate::svg::{self, Bar, escape};
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use shoplake_core::values::{AMOUNT_SCALE, format_decimal, parse_decimal};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Rows of a section shown on the page; the CSV file has them all.
const MAX_ROWS: usize = 200;

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; margin: 0; background: #f5f7fa; }
header, main, footer { max-width: 1040px; margin: 0 auto; padding: 16px 24px; }
header { padding-top: 28px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 12px; }
.muted, footer { color: #616e7c; }
section { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 16px 20px; margin: 0 0 16px; overflow-x: auto; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; background: none; border: 0; padding: 0; }
.tile { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 12px 16px; min-width: 140px; }
.tile .v { font-size: 22px; font-weight: 600; }
.tile .k { color: #616e7c; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e4e7eb; white-space: nowrap; }
th { color: #616e7c; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { max-width: 100%; height: auto; font-size: 12px; }
svg.chart rect { fill: #2f6fdf; }
svg.chart text { fill: #1f2933; }
svg.chart text.muted { fill: #616e7c; }
svg.chart line.axis { stroke: #9aa5b1; }
"#;

/// `1234567.50` -> `1,234,567.50`.
pub fn group_digits(text: &str) -> String {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", text),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) {
        return text.to_string();
    }
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

fn is_count(name: &str, ty: &DataType) -> bool {
    matches!(ty, DataType::Int64 | DataType::Int32 | DataType::UInt64)
        && !(name.ends_with("_id")
            || name.starts_with("rank")
            || name == "year"
            || name.starts_with("month")
            || name.ends_with("percent"))
}

fn is_number(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Decimal128(..) | DataType::Int64 | DataType::Int32 | DataType::UInt64
    )
}

/// The cell as text for the page (money and counts with digit groups).
fn cell(section: &Section, col: usize, batch: usize, row: usize) -> String {
    let b = &section.batches[batch];
    let a = b.column(col);
    if a.is_null(row) {
        return String::new();
    }
    let text = array_value_to_string(a, row).unwrap_or_default();
    let field = section.schema.field(col);
    if matches!(field.data_type(), DataType::Decimal128(..))
        || is_count(field.name(), field.data_type())
    {
        group_digits(&text)
    } else {
        text
    }
}

/// The values of a named column, as exact text.
fn column(section: &Section, name: &str) -> Vec<String> {
    let Ok(i) = section.schema.index_of(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in &section.batches {
        let a = b.column(i);
        for r in 0..b.num_rows() {
            out.push(if a.is_null(r) {
                String::new()
            } else {
                array_value_to_string(a, r).unwrap_or_default()
            });
        }
    }
    out
}

fn table(out: &mut String, s: &Section) {
    let _ = write!(out, "<table><thead><tr>");
    for f in s.schema.fields() {
        let class = if is_number(f.data_type()) {
            " class=\"n\""
        } else {
            ""
        };
        let _ = write!(out, "<th{class}>{}</th>", escape(f.name()));
    }
    out.push_str("</tr></thead><tbody>");
    let mut shown = 0;
    'rows: for (bi, b) in s.batches.iter().enumerate() {
        for r in 0..b.num_rows() {
            if shown == MAX_ROWS {
                break 'rows;
            }
            out.push_str("<tr>");
            for (ci, f) in s.schema.fields().iter().enumerate() {
                let class = if is_number(f.data_type()) {
                    " class=\"n\""
                } else {
                    ""
                };
                let _ = write!(out, "<td{class}>{}</td>", escape(&cell(s, ci, bi, r)));
            }
            out.push_str("</tr>");
            shown += 1;
        }
    }
    out.push_str("</tbody></table>");
    let rows = s.rows();
    if rows == 0 {
        out.push_str("<p class=\"muted\">none</p>");
    } else if rows > shown {
        let _ = write!(
            out,
            "<p class=\"muted\">first {shown} of {} rows; all of them are in <a href=\"{n}.csv\">{n}.csv</a></p>",
            group_digits(&rows.to_string()),
            n = s.name
        );
    }
}

fn cents(text: &str) -> i128 {
    parse_decimal(text, AMOUNT_SCALE)
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn money(v: i128) -> String {
    group_digits(&format_decimal(v, AMOUNT_SCALE))
}

fn tile(out: &mut String, label: &str, value: &str) {
    let _ = write!(
        out,
        "<div class=\"tile\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>",
        escape(value),
        escape(label)
    );
}

/// Render the page.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = report.period.title();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>shoplake: {t}</title><style>{STYLE}</style></head><body>",
        t = escape(&title)
    );
    let _ = write!(
        out,
        "<header><h1>{}</h1><div class=\"muted\">Sales in USD: completed sales, outliers and refunds excluded (refunds shown apart). Generated {} UTC by shoplake.</div></header><main>",
        escape(&title),
        report.generated_at.format("%Y-%m-%d %H:%M:%S")
    );

    // Headline tiles.
    out.push_str("<section class=\"tiles\">");
    if let Some(s) = report.section("summary") {
        let one = |n: &str| column(s, n).into_iter().next().unwrap_or_default();
        tile(&mut out, "sales (USD)", &money(cents(&one("sales_usd"))));
        tile(&mut out, "orders", &group_digits(&one("orders")));
        tile(&mut out, "customers", &group_digits(&one("customers")));
        tile(
            &mut out,
            "refunds (USD)",
            &format!(
                "{} ({})",
                money(cents(&one("refunded_usd"))),
                one("refunds")
            ),
        );
        tile(&mut out, "outlier lines", &group_digits(&one("outliers")));
    }
    if let Some(s) = report.section("data_quality") {
        let total = |n: &str| -> i64 {
            column(s, n)
                .iter()
                .filter_map(|v| v.parse::<i64>().ok())
                .sum()
        };
        tile(
            &mut out,
            "files received",
            &group_digits(&s.rows().to_string()),
        );
        tile(
            &mut out,
            "rows loaded",
            &group_digits(&total("rows_loaded").to_string()),
        );
        tile(
            &mut out,
            "rows quarantined",
            &group_digits(&total("rows_quarantined").to_string()),
        );
        tile(
            &mut out,
            "duplicates",
            &group_digits(&total("rows_duplicate").to_string()),
        );
    }
    out.push_str("</section>");

    // Charts.
    if let Some(s) = report.section("sales_by_region") {
        let bars: Vec<Bar> = column(s, "region")
            .into_iter()
            .zip(column(s, "sales_usd"))
            .map(|(label, v)| Bar {
                label,
                shown: money(cents(&v)),
                value: v,
            })
            .collect();
        let _ = write!(
            out,
            "<section><h2>Sales by region (USD)</h2>{}",
            svg::hbars("Sales by region (USD)", &bars)
        );
        table(&mut out, s);
        out.push_str("</section>");
    }
    if let (Some(s), Period::Month(m)) = (report.section("sales_by_day"), report.period) {
        // Every day of the month, days without sales as zero.
        let by_day: BTreeMap<String, String> = column(s, "day")
            .into_iter()
            .zip(column(s, "sales_usd"))
            .collect();
        let mut bars = Vec::new();
        let mut day = m.first_day();
        while crate::model::YearMonth::of(day) == m {
            let key = day.format("%Y-%m-%d").to_string();
            let v = by_day.get(&key).cloned().unwrap_or_else(|| "0.00".into());
            bars.push(Bar {
                label: day.format("%-d").to_string(),
                shown: money(cents(&v)),
                value: v,
            });
            day = day.succ_opt().expect("a next day");
        }
        let _ = write!(
            out,
            "<section><h2>Sales by day (USD)</h2>{}",
            svg::columns("Sales by day (USD)", &bars)
        );
        table(&mut out, s);
        out.push_str("</section>");
    }
    if let Some(s) = report.section("top_products") {
        let bars: Vec<Bar> = column(s, "product_name")
            .into_iter()
            .zip(column(s, "product_id"))
            .zip(column(s, "sales_usd"))
            .map(|((n, id), v)| Bar {
                label: if n.is_empty() { id } else { n },
                shown: money(cents(&v)),
                value: v,
            })
            .collect();
        let _ = write!(
            out,
            "<section><h2>{}</h2>{}",
            escape(s.title),
            svg::hbars("Top products (USD)", &bars)
        );
        table(&mut out, s);
        out.push_str("</section>");
    }
    if let Some(s) = report.section("incentives") {
        let bars: Vec<Bar> = column(s, "full_name")
            .into_iter()
            .zip(column(s, "sales_person_id"))
            .zip(column(s, "store_id"))
            .zip(column(s, "incentive_usd"))
            .filter(|(_, v)| cents(v) > 0)
            .map(|(((n, id), store), v)| Bar {
                label: format!("{} (store {store})", if n.is_empty() { id } else { n }),
                shown: money(cents(&v)),
                value: v,
            })
            .collect();
        let _ = write!(
            out,
            "<section><h2>{}</h2><p class=\"muted\">The top seller of each store and month earns the incentive; tied top sellers each earn it in full.</p>{}",
            escape(s.title),
            svg::hbars("Incentives (USD)", &bars)
        );
        table(&mut out, s);
        out.push_str("</section>");
    }
    for name in [
        "coupons",
        "top_customers",
        "sales_by_store_region",
        "refunds",
        "data_quality",
        "data_quality_reasons",
    ] {
        if let Some(s) = report.section(name) {
            let _ = write!(out, "<section><h2>{}</h2>", escape(s.title));
            table(&mut out, s);
            out.push_str("</section>");
        }
    }
    out.push_str("</main><footer>Files of this report: ");
    let links: Vec<String> = report
        .sections
        .iter()
        .map(|s| format!("<a href=\"{n}.csv\">{n}.csv</a>", n = s.name))
        .collect();
    out.push_str(&links.join(", "));
    let _ = writeln!(
        out,
        ". Period: {} ({}).</footer></body></html>",
        escape(&report.period.key()),
        match report.period {
            Period::Day(_) => "day",
            Period::Month(_) => "month",
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits("1234567.50"), "1,234,567.50");
        assert_eq!(group_digits("-1000"), "-1,000");
        assert_eq!(group_digits("999.99"), "999.99");
        assert_eq!(group_digits("2025-03-01"), "2025-03-01");
    }
}
