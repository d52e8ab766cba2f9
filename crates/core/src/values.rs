//! Parsing and normalising source text into canonical values. Pure functions, shared by the
//! validator, the crawler and the generator's own checks, so all three agree on what is valid.

use chrono::NaiveDate;

/// Scale (digits after the point) of money amounts stored as `Decimal128(18, 2)`.
pub const AMOUNT_SCALE: u32 = 2;
/// Scale of unit prices, stored as `Decimal128(18, 4)`.
pub const PRICE_SCALE: u32 = 4;
/// Scale of FX rates (USD per unit of currency), stored as `Decimal128(18, 8)`.
pub const RATE_SCALE: u32 = 8;

/// Why a number did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberError(pub String);

/// Parse a decimal number written by people or spreadsheets into an integer scaled by
/// `10^scale`, rounding half away from zero. Accepts surrounding spaces, a leading currency
/// symbol (`$ € £ ¥ ₹`), thousands separators (`1,234.50`), a sign, and accounting negatives
/// (`(12.00)`). Returns `Ok(None)` for an empty value or a null marker (`NULL`, `NA`, `N/A`,
/// `null`, `-`, `nan`).
pub fn parse_decimal(text: &str, scale: u32) -> Result<Option<i128>, NumberError> {
    let s = text.trim();
    if is_null_marker(s) {
        return Ok(None);
    }
    let err = || NumberError(format!("{text:?} is not a number"));
    let (mut negative, mut s) = match s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(inner) => (true, inner.trim()),
        None => (false, s),
    };
    if let Some(r) = s.strip_prefix('-') {
        negative = !negative;
        s = r.trim_start();
    } else if let Some(r) = s.strip_prefix('+') {
        s = r.trim_start();
    }
    for sym in ['$', '€', '£', '¥', '₹'] {
        if let Some(r) = s.strip_prefix(sym) {
            s = r.trim_start();
            break;
        }
    }
    if s.is_empty() {
        return Err(err());
    }
    let bytes = s.as_bytes();
    let mut int: i128 = 0;
    let mut frac: i128 = 0;
    let mut frac_digits = 0u32;
    let mut seen_point = false;
    let mut seen_digit = false;
    let mut round_up = false;
    let mut group_len: Option<usize> = None; // digits since the last thousands separator
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                let d = (b - b'0') as i128;
                if seen_point {
                    if frac_digits < scale {
                        frac = frac * 10 + d;
                        frac_digits += 1;
                    } else if frac_digits == scale {
                        round_up = d >= 5;
                        frac_digits += 1;
                    }
                } else {
                    int = int
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(d))
                        .ok_or_else(err)?;
                    if int > 10i128.pow(30) {
                        return Err(NumberError(format!("{text:?} is too large")));
                    }
                    if let Some(g) = group_len.as_mut() {
                        *g += 1;
                    }
                }
            }
            b'.' if !seen_point => {
                if group_len.is_some_and(|g| g != 3) {
                    return Err(err());
                }
                seen_point = true;
            }
            b',' if !seen_point && seen_digit => {
                if group_len.is_some_and(|g| g != 3) || i + 1 == bytes.len() {
                    return Err(err());
                }
                group_len = Some(0);
            }
            _ => return Err(err()),
        }
    }
    if !seen_digit || (!seen_point && group_len.is_some_and(|g| g != 3)) {
        return Err(err());
    }
    let frac = frac * 10i128.pow(scale - frac_digits.min(scale));
    let mut v = int * 10i128.pow(scale) + frac + i128::from(round_up);
    if negative {
        v = -v;
    }
    Ok(Some(v))
}

/// Parse a whole number (`12`, `12.0`, ` 1,200 `). Fractions other than `.0` are an error.
pub fn parse_integer(text: &str) -> Result<Option<i64>, NumberError> {
    match parse_decimal(text, 2)? {
        None => Ok(None),
        Some(v) if v % 100 == 0 => i64::try_from(v / 100)
            .map(Some)
            .map_err(|_| NumberError(format!("{text:?} is too large"))),
        Some(_) => Err(NumberError(format!("{text:?} is not a whole number"))),
    }
}

/// Values that mean "no value" in exported files.
pub fn is_null_marker(s: &str) -> bool {
    let s = s.trim();
    s.is_empty()
        || s == "-"
        || ["null", "na", "n/a", "nan", "none", "nil", "#n/a"]
            .iter()
            .any(|m| s.eq_ignore_ascii_case(m))
}

/// Format a scaled integer as decimal text (`1234, 2` -> `12.34`).
pub fn format_decimal(v: i128, scale: u32) -> String {
    if scale == 0 {
        return v.to_string();
    }
    let p = 10i128.pow(scale);
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        a / p as u128,
        a % p as u128,
        width = scale as usize
    )
}

/// Multiply two scaled decimals and round half away from zero to `out_scale`.
/// Saturates instead of overflowing, so callers can range-check the result.
pub fn mul_round(a: i128, a_scale: u32, b: i128, b_scale: u32, out_scale: u32) -> i128 {
    let prod = a.checked_mul(b).unwrap_or(if (a < 0) != (b < 0) {
        i128::MIN + 1
    } else {
        i128::MAX
    });
    let shift = a_scale + b_scale;
    if shift <= out_scale {
        return prod.saturating_mul(10i128.pow(out_scale - shift));
    }
    let div = 10i128.pow(shift - out_scale);
    let q = prod / div;
    let r = prod % div;
    if r.abs() * 2 >= div {
        q + prod.signum()
    } else {
        q
    }
}

/// A phone number safe to show to anyone: its digits, all but the last four replaced by `*`
/// (`+91 917-312-1081` -> `********1081`). Fewer than seven digits reveal nothing (`****`);
/// no digits at all give `None`.
pub fn mask_phone(text: &str) -> Option<String> {
    let digits: Vec<char> = text.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    if digits.len() < 7 {
        return Some("*".repeat(digits.len()));
    }
    let keep = digits.len() - 4;
    Some(
        digits
            .iter()
            .enumerate()
            .map(|(i, c)| if i < keep { '*' } else { *c })
            .collect(),
    )
}

/// Date formats the crawler chooses from, most specific first. chrono syntax.
/// Ambiguous day/month orders are both listed; the crawler picks the one every sample fits.
pub const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%d %b %Y",
    "%b %d, %Y",
    "%d-%b-%Y",
];

/// Parse a date (or the date part of a date-time) with a chrono format. Date-times written as
/// `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±hh:mm]` are accepted by the ISO formats.
pub fn parse_date_with(text: &str, format: &str) -> Option<NaiveDate> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, format) {
        return Some(d);
    }
    // A date-time: take the date before 'T' or ' ' when the rest looks like a time.
    let cut = s.find(['T', ' ']).filter(|&i| {
        let rest = &s[i + 1..];
        rest.len() >= 4 && rest.as_bytes()[0].is_ascii_digit() && rest.contains(':')
    })?;
    NaiveDate::parse_from_str(&s[..cut], format).ok()
}

/// Parse a date with the unambiguous formats only (year first). Used when no format was
/// inferred (JSON sources, replays).
pub fn parse_date_iso(text: &str) -> Option<NaiveDate> {
    ["%Y-%m-%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| parse_date_with(text, f))
}

/// The canonical regions. Anything else is kept, title-cased, so no sale loses its region.
pub const REGIONS: &[&str] = &["North", "South", "East", "West", "Central"];

/// Normalise messy region text: trim, case, punctuation, abbreviations and common synonyms.
/// `"  north "`, `"NORTH"`, `"N."`, `"Northern"`, `"north region"` -> `North`. Empty -> `None`.
pub fn normalize_region(text: &str) -> Option<String> {
    let letters: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    let words: Vec<&str> = letters
        .split_whitespace()
        .filter(|w| *w != "region" && *w != "zone")
        .collect();
    if words.is_empty() {
        return None;
    }
    let joined = words.join(" ");
    let canonical = match joined.as_str() {
        "n" | "north" | "northern" | "nord" | "nrth" => "North",
        "s" | "south" | "southern" | "sud" | "sth" => "South",
        "e" | "east" | "eastern" | "est" => "East",
        "w" | "west" | "western" | "wst" => "West",
        "c" | "central" | "centre" | "center" | "mid" | "middle" => "Central",
        _ => return Some(title_case(&joined)),
    };
    Some(canonical.to_string())
}

fn title_case(s: &str) -> String {
    s.split_whitespace()
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Transaction statuses. `OUT` marks an outlier: flagged, never dropped.
pub const STATUSES: &[&str] = &["COMPLETED", "REFUNDED", "CANCELLED", "PENDING", "OUT"];

/// Normalise a status. Empty means `COMPLETED` (sources such as seed 003's sales have no status:
/// every row is a completed sale). Unknown values are upper-cased and kept.
pub fn normalize_status(text: &str) -> String {
    let s = text.trim().to_ascii_uppercase();
    let canonical = match s.as_str() {
        "" | "COMPLETED" | "COMPLETE" | "DONE" | "PAID" | "SUCCESS" | "FULFILLED" | "DELIVERED"
        | "SHIPPED" | "CLOSED" => "COMPLETED",
        "REFUNDED" | "REFUND" | "RETURNED" | "RETURN" => "REFUNDED",
        "CANCELLED" | "CANCELED" | "VOID" | "VOIDED" => "CANCELLED",
        "PENDING" | "PROCESSING" | "OPEN" => "PENDING",
        "OUT" | "OUTLIER" => "OUT",
        _ => return s,
    };
    canonical.to_string()
}

/// Sales channels. Empty means the source's default channel.
pub fn normalize_channel(text: &str) -> Option<String> {
    let s = text.trim().to_ascii_lowercase();
    let c = match s.as_str() {
        "" => return None,
        "store" | "in-store" | "instore" | "in store" | "pos" | "retail" | "offline" => "store",
        "ecommerce" | "e-commerce" | "online" | "web" | "app" | "mobile" | "website" => "ecommerce",
        "marketing" => "marketing",
        other => return Some(other.to_string()),
    };
    Some(c.to_string())
}

/// ISO 4217 codes shoplake knows. A code outside this list is `unknown_currency`; a code inside it
/// without a rate for the month is `missing_fx_rate`.
pub const CURRENCIES: &[&str] = &[
    "USD", "EUR", "GBP", "JPY", "CNY", "INR", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK",
    "PLN", "CZK", "HUF", "RON", "BGN", "TRY", "RUB", "BRL", "MXN", "ARS", "CLP", "COP", "PEN",
    "ZAR", "NGN", "EGP", "KES", "MAD", "AED", "SAR", "QAR", "ILS", "SGD", "HKD", "TWD", "KRW",
    "THB", "MYR", "IDR", "PHP", "VND", "PKR", "BDT", "LKR",
];

/// Upper-case and check a currency code; `$`, `€`, `£`, `₹` and `¥` are read as USD, EUR, GBP,
/// INR and JPY. Empty -> `Ok(None)`; unknown -> `Err(cleaned code)`.
pub fn normalize_currency(text: &str) -> Result<Option<&'static str>, String> {
    let s = text.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let code = match s {
        "$" | "US$" => "USD",
        "€" => "EUR",
        "£" => "GBP",
        "₹" | "Rs" | "Rs." => "INR",
        "¥" => "JPY",
        _ => s,
    };
    let upper = code.to_ascii_uppercase();
    CURRENCIES
        .iter()
        .find(|c| **c == upper)
        .copied()
        .map(Some)
        .ok_or(upper)
}

/// Trim and collapse inner whitespace; `None` when nothing (or a null marker) is left.
pub fn clean_text(text: &str) -> Option<String> {
    let t = text.trim();
    if is_null_marker(t) && t != "-" {
        return None;
    }
    if t.is_empty() {
        return None;
    }
    if t.split_whitespace().count() == 1 {
        return Some(t.to_string());
    }
    Some(t.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Clean a key (ids): trimmed; empty or a null marker is no key.
pub fn clean_key(text: &str) -> Option<String> {
    let t = text.trim();
    if is_null_marker(t) {
        None
    } else {
        Some(t.to_string())
    }
}

/// A product name reduced for matching: lower case, alphanumerics, single spaces.
pub fn name_match_key(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked_to_the_last_four_digits() {
        assert_eq!(mask_phone("9173121081").as_deref(), Some("******1081"));
        assert_eq!(
            mask_phone("+1 (555) 010-2000").as_deref(),
            Some("*******2000")
        );
        assert_eq!(mask_phone("12345").as_deref(), Some("*****"));
        assert_eq!(mask_phone("n/a"), None);
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("12.34", 2), Ok(Some(1234)));
        assert_eq!(parse_decimal(" $1,234.5 ", 2), Ok(Some(123450)));
        assert_eq!(parse_decimal("(3.00)", 2), Ok(Some(-300)));
        assert_eq!(parse_decimal("-0.005", 2), Ok(Some(-1)));
        assert_eq!(parse_decimal("0.004", 2), Ok(Some(0)));
        assert_eq!(parse_decimal("7", 4), Ok(Some(70000)));
        assert_eq!(parse_decimal("", 2), Ok(None));
        assert_eq!(parse_decimal("N/A", 2), Ok(None));
        for bad in [
            "12.3.4", "abc", "1,23.00", "12a", "$", "1,2345", "--1", "12,",
        ] {
            assert!(parse_decimal(bad, 2).is_err(), "{bad}");
        }
        assert_eq!(parse_integer("3"), Ok(Some(3)));
        assert_eq!(parse_integer("3.0"), Ok(Some(3)));
        assert!(parse_integer("3.5").is_err());
    }

    #[test]
    fn decimal_arithmetic() {
        assert_eq!(format_decimal(-1234, 2), "-12.34");
        assert_eq!(format_decimal(5, 2), "0.05");
        // 10.00 EUR at 1.08345 USD/EUR = 10.8345 -> 10.83
        assert_eq!(mul_round(1000, 2, 108_345_000, 8, 2), 1083);
        assert_eq!(mul_round(-1000, 2, 108_350_000, 8, 2), -1084);
        // 3 x 2.5000 = 7.50
        assert_eq!(mul_round(3, 0, 25000, 4, 2), 750);
    }

    #[test]
    fn dates() {
        let d = NaiveDate::from_ymd_opt(2025, 3, 7).unwrap();
        assert_eq!(parse_date_with("2025-03-07", "%Y-%m-%d"), Some(d));
        assert_eq!(parse_date_with("2025-03-07T10:11:12Z", "%Y-%m-%d"), Some(d));
        assert_eq!(parse_date_with("2025-03-07 10:11", "%Y-%m-%d"), Some(d));
        assert_eq!(parse_date_with("07/03/2025", "%d/%m/%Y"), Some(d));
        assert_eq!(parse_date_with("2025-13-07", "%Y-%m-%d"), None);
        assert_eq!(parse_date_with("2025-02-30", "%Y-%m-%d"), None);
        assert_eq!(parse_date_iso("2025/03/07"), Some(d));
    }

    #[test]
    fn regions_statuses_currencies() {
        for r in [
            "north",
            " NORTH ",
            "N.",
            "Northern",
            "north region",
            "nOrTh",
        ] {
            assert_eq!(normalize_region(r).as_deref(), Some("North"), "{r}");
        }
        assert_eq!(normalize_region("  ").as_deref(), None);
        assert_eq!(
            normalize_region("pacific  northwest").as_deref(),
            Some("Pacific Northwest")
        );
        assert_eq!(normalize_status(" refund "), "REFUNDED");
        assert_eq!(normalize_status(""), "COMPLETED");
        assert_eq!(normalize_status("out"), "OUT");
        assert_eq!(normalize_currency(" eur"), Ok(Some("EUR")));
        assert_eq!(normalize_currency("€"), Ok(Some("EUR")));
        assert_eq!(normalize_currency("XYZ"), Err("XYZ".to_string()));
        assert_eq!(normalize_currency(""), Ok(None));
    }
}
