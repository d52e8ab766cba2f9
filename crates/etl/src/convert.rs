//! Turning a source value into its canonical text form, or a quarantine reason. One place for
//! the rules, used by reference data and sales alike.

use chrono::{Datelike, NaiveDate};
use shoplake_core::model::Field;
use shoplake_core::values::{self, clean_text, parse_date_iso, parse_date_with};
use shoplake_core::{FieldType, ReasonCode};

/// A rejected value: the reason code and a message naming the field and the value.
pub type Rejection = (ReasonCode, String);

/// Parse a date with the source's format, falling back to unambiguous ISO forms.
pub fn parse_date(raw: &str, format: Option<&str>) -> Option<NaiveDate> {
    format
        .and_then(|f| parse_date_with(raw, f))
        .or_else(|| parse_date_iso(raw))
}

/// Convert one value of a canonical field into canonical text (`None` = no value).
/// Dates become `YYYY-MM-DD`, decimals their exact decimal text at the table's scale.
pub fn canonical(
    field: &Field,
    raw: &str,
    date_format: Option<&str>,
) -> Result<Option<String>, Rejection> {
    let Some(text) = clean_text(raw) else {
        return Ok(None);
    };
    match field.ty {
        FieldType::Text => Ok(Some(match field.name {
            "region" => values::normalize_region(&text).unwrap_or(text),
            _ => text,
        })),
        FieldType::Date => match parse_date(&text, date_format) {
            Some(d) => Ok(Some(d.format("%Y-%m-%d").to_string())),
            None => Err((
                ReasonCode::BadDate,
                format!("{}: {text:?} is not a date", field.name),
            )),
        },
        FieldType::Decimal => {
            let scale = crate::schema::decimal_scale(field.name);
            match values::parse_decimal(&text, scale) {
                Ok(v) => Ok(v.map(|v| values::format_decimal(v, scale))),
                Err(e) => Err((ReasonCode::BadNumber, format!("{}: {}", field.name, e.0))),
            }
        }
        FieldType::Integer => match values::parse_integer(&text) {
            Ok(v) => Ok(v.map(|v| v.to_string())),
            Err(e) => Err((ReasonCode::BadNumber, format!("{}: {}", field.name, e.0))),
        },
        FieldType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Ok(Some("true".into())),
            "false" | "f" | "no" | "n" | "0" => Ok(Some("false".into())),
            _ => Err((
                ReasonCode::BadValue,
                format!("{}: {text:?} is not true or false", field.name),
            )),
        },
    }
}

/// A month written as `YYYY-MM`, `YYYY/MM`, `YYYYMM` or as any date in that month.
pub fn parse_month(raw: &str, date_format: Option<&str>) -> Option<String> {
    let t = raw.trim();
    let ym = |y: i32, m: u32| (1..=12).contains(&m).then(|| format!("{y:04}-{m:02}"));
    let bytes = t.as_bytes();
    if bytes.len() == 7 && (bytes[4] == b'-' || bytes[4] == b'/') {
        let y = t[..4].parse().ok()?;
        let m = t[5..].parse().ok()?;
        return ym(y, m);
    }
    if bytes.len() == 6 && bytes.iter().all(u8::is_ascii_digit) {
        return ym(t[..4].parse().ok()?, t[4..].parse().ok()?);
    }
    parse_date(t, date_format).and_then(|d| ym(d.year(), d.month()))
}

/// `YYYY-MM-DD` text back to a date (canonical text only).
pub fn iso_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoplake_core::Entity;

    #[test]
    fn canonical_forms() {
        let price = Entity::Products.field("unit_price").unwrap();
        assert_eq!(
            canonical(price, " $12.5 ", None),
            Ok(Some("12.5000".into()))
        );
        assert_eq!(canonical(price, "", None), Ok(None));
        assert_eq!(
            canonical(price, "1.2.3", None).unwrap_err().0,
            ReasonCode::BadNumber
        );
        let date = Entity::Customers.field("join_date").unwrap();
        assert_eq!(
            canonical(date, "07/03/2025", Some("%d/%m/%Y")),
            Ok(Some("2025-03-07".into()))
        );
        assert_eq!(
            canonical(date, "2025-03-07", Some("%d/%m/%Y")),
            Ok(Some("2025-03-07".into()))
        );
        assert_eq!(
            canonical(date, "yesterday", None).unwrap_err().0,
            ReasonCode::BadDate
        );
        let region = Entity::Stores.field("region").unwrap();
        assert_eq!(canonical(region, " NORTH ", None), Ok(Some("North".into())));
        assert_eq!(parse_month("2025-03", None).as_deref(), Some("2025-03"));
        assert_eq!(parse_month("2025-03-31", None).as_deref(), Some("2025-03"));
        assert_eq!(parse_month("202503", None).as_deref(), Some("2025-03"));
        assert_eq!(parse_month("2025-13", None), None);
    }
}
