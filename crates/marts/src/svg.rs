//! Small inline SVG charts for the HTML reports: no script, no fonts or files to fetch. Values
//! come as exact decimal text; they are turned into floating point only to size the bars, and
//! the labels show the exact text.

use std::fmt::Write;

/// One bar: label, value (exact text, e.g. `1234.50`), and the text shown next to it.
pub struct Bar {
    pub label: String,
    pub value: String,
    pub shown: String,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn magnitude(v: &str) -> f64 {
    v.parse::<f64>().unwrap_or(0.0).max(0.0)
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Horizontal bars, one per item, longest = largest value.
pub fn hbars(title: &str, bars: &[Bar]) -> String {
    let (w, label_w, row_h, pad) = (720.0, 200.0, 26.0, 8.0);
    let value_w = 120.0;
    let bar_max = w - label_w - value_w - 2.0 * pad;
    let h = pad * 2.0 + row_h * bars.len().max(1) as f64;
    let max = bars.iter().map(|b| magnitude(&b.value)).fold(0.0, f64::max);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{t}</title>"#,
        t = escape(title)
    );
    if bars.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{pad}" y="{y}" class="muted">no data</text>"#,
            y = pad + row_h * 0.65
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = pad + row_h * i as f64;
        let len = if max > 0.0 {
            (magnitude(&b.value) / max * bar_max).max(1.0)
        } else {
            1.0
        };
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect x="{bx}" y="{by}" width="{len:.1}" height="{bh}" rx="3"><title>{label}: {shown}</title></rect><text x="{vx:.1}" y="{ty}">{shown}</text>"#,
            lx = label_w - 6.0,
            ty = y + row_h * 0.65,
            label = escape(&shorten(&b.label, 28)),
            bx = label_w,
            by = y + 4.0,
            bh = row_h - 8.0,
            vx = label_w + len + 6.0,
            shown = escape(&b.shown),
        );
    }
    s.push_str("</svg>");
    s
}

/// Vertical columns over an ordered axis (days of a month).
pub fn columns(title: &str, bars: &[Bar]) -> String {
    let (w, h, pad_l, pad_b, pad_t) = (720.0, 240.0, 70.0, 28.0, 16.0);
    let n = bars.len().max(1) as f64;
    let plot_w = w - pad_l - 10.0;
    let plot_h = h - pad_b - pad_t;
    let slot = plot_w / n;
    let max = bars.iter().map(|b| magnitude(&b.value)).fold(0.0, f64::max);
    let max_label = bars
        .iter()
        .max_by(|a, b| magnitude(&a.value).total_cmp(&magnitude(&b.value)))
        .map(|b| b.shown.clone())
        .unwrap_or_default();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{t}</title>"#,
        t = escape(title)
    );
    let _ = write!(
        s,
        r#"<line x1="{pad_l}" y1="{y0}" x2="{x1}" y2="{y0}" class="axis"/><text x="{tx}" y="{ty}" text-anchor="end" class="muted">{m}</text><text x="{tx}" y="{y0}" text-anchor="end" class="muted">0</text>"#,
        y0 = pad_t + plot_h,
        x1 = w - 10.0,
        tx = pad_l - 6.0,
        ty = pad_t + 10.0,
        m = escape(&max_label)
    );
    let every = (bars.len() / 16).max(1);
    for (i, b) in bars.iter().enumerate() {
        let bh = if max > 0.0 {
            magnitude(&b.value) / max * plot_h
        } else {
            0.0
        };
        let x = pad_l + slot * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" rx="2"><title>{label}: {shown}</title></rect>"#,
            y = pad_t + plot_h - bh,
            bw = (slot * 0.8).max(1.0),
            label = escape(&b.label),
            shown = escape(&b.shown),
        );
        if i % every == 0 {
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{ly}" text-anchor="middle" class="muted">{label}</text>"#,
                cx = x + slot * 0.4,
                ly = h - 8.0,
                label = escape(&shorten(&b.label, 6)),
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let bars = vec![
            Bar {
                label: "North <1>".into(),
                value: "200.00".into(),
                shown: "200.00".into(),
            },
            Bar {
                label: "South".into(),
                value: "100.00".into(),
                shown: "100.00".into(),
            },
        ];
        let svg = hbars("Sales", &bars);
        assert!(svg.contains("North &lt;1&gt;"), "{svg}");
        assert!(svg.contains(r#"width="384.0""#), "{svg}"); // the largest bar fills the plot
        assert!(svg.contains(r#"width="192.0""#), "{svg}");
        assert!(!svg.contains("<script"));
        assert!(columns("Days", &bars).contains("<rect"));
    }
}
