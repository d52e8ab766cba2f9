//! Arrow types to SQL types, and Arrow values to the text each database loads: PostgreSQL's
//! `COPY ... FROM STDIN` text format and MySQL's SQL literals.

use crate::target::Dialect;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use std::fmt::Write;

/// The type a column is exported as, or `None` when the export has no SQL type for it.
/// Strings, binaries and dictionaries become their plain form; timestamps become microseconds
/// (the precision of both databases).
pub fn canonical(ty: &DataType) -> Option<DataType> {
    use DataType::*;
    Some(match ty {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float32
        | Float64 | Date32 | Utf8 | Binary => ty.clone(),
        Float16 => Float32,
        Decimal128(p, s) if *s >= 0 && s <= &(*p as i8) => ty.clone(),
        Decimal32(p, s) | Decimal64(p, s) if *s >= 0 => Decimal128(*p, *s),
        Date64 => Date32,
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.clone()),
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        Dictionary(_, value) => return canonical(value),
        _ => return None,
    })
}

/// Known widths of binary columns (the dedupe key is 16 bytes), so MySQL can index them.
fn binary_width(column: &str) -> Option<usize> {
    (column == "dedupe_key").then_some(16)
}

/// The SQL type of a column, written the way the database itself reports it back
/// (PostgreSQL's `format_type`, MySQL's `COLUMN_TYPE` less integer display widths), so the
/// schema check compares like with like.
pub fn sql_type(dialect: Dialect, field: &Field, is_key: bool) -> String {
    use DataType::*;
    let name = field.name().as_str();
    match dialect {
        Dialect::Postgres => match field.data_type() {
            Boolean => "boolean".into(),
            Int8 | Int16 | UInt8 => "smallint".into(),
            Int32 | UInt16 => "integer".into(),
            Int64 | UInt32 => "bigint".into(),
            UInt64 => "numeric(20,0)".into(),
            Float32 => "real".into(),
            Float64 => "double precision".into(),
            Decimal128(p, s) => format!("numeric({p},{s})"),
            Date32 => "date".into(),
            Timestamp(_, Some(_)) => "timestamp with time zone".into(),
            Timestamp(_, None) => "timestamp without time zone".into(),
            Binary => "bytea".into(),
            _ => "text".into(),
        },
        Dialect::MySql => match field.data_type() {
            Boolean => "tinyint(1)".into(),
            Int8 => "tinyint".into(),
            Int16 | UInt8 => "smallint".into(),
            Int32 | UInt16 => "int".into(),
            Int64 | UInt32 => "bigint".into(),
            UInt64 => "bigint unsigned".into(),
            Float32 => "float".into(),
            Float64 => "double".into(),
            Decimal128(p, s) => format!("decimal({p},{s})"),
            Date32 => "date".into(),
            // DATETIME, not TIMESTAMP: no 2038 limit and no session time zone applied; the
            // values are UTC.
            Timestamp(..) => "datetime(6)".into(),
            Binary => match binary_width(name) {
                Some(n) => format!("binary({n})"),
                None if is_key => "varbinary(255)".into(),
                None => "longblob".into(),
            },
            _ if is_key => "varchar(255)".into(),
            _ => "longtext".into(),
        },
    }
}

/// Normalise a type as the database reports it, for comparison with [`sql_type`].
pub fn normalize_reported(dialect: Dialect, reported: &str) -> String {
    let t = reported.trim().to_ascii_lowercase();
    match dialect {
        Dialect::Postgres => t,
        Dialect::MySql => {
            // MariaDB and MySQL 5.7 report display widths (`bigint(20)`); MySQL 8 does not.
            for int in ["tinyint", "smallint", "mediumint", "int", "bigint"] {
                if let Some(rest) = t.strip_prefix(int)
                    && rest.starts_with('(')
                    && let Some(close) = rest.find(')')
                {
                    let width = &rest[1..close];
                    if int == "tinyint" && width == "1" {
                        return format!("tinyint(1){}", &rest[close + 1..]);
                    }
                    return format!("{int}{}", &rest[close + 1..]);
                }
            }
            t
        }
    }
}

/// Quote an identifier.
pub fn ident(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        Dialect::MySql => format!("`{}`", name.replace('`', "``")),
    }
}

/// A column of a batch, downcast once.
enum Col<'a> {
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Dec(&'a Decimal128Array, i8),
    Date(&'a Date32Array),
    Ts(&'a TimestampMicrosecondArray, bool),
    Str(&'a StringArray),
    Bin(&'a BinaryArray),
}

/// Rows of a batch ready to be written as text, columns cast to the exported types.
pub struct Rows {
    columns: Vec<ArrayRef>,
    types: Vec<DataType>,
    pub len: usize,
}

impl Rows {
    /// Cast the batch's columns to `types` (from [`canonical`]).
    pub fn new(batch: &RecordBatch, types: &[DataType]) -> Result<Rows, ArrowError> {
        let columns = batch
            .columns()
            .iter()
            .zip(types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    cast(c, t)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rows {
            columns,
            types: types.to_vec(),
            len: batch.num_rows(),
        })
    }

    fn cols(&self) -> Vec<Col<'_>> {
        use DataType::*;
        self.columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| match t {
                Boolean => Col::Bool(c.as_boolean()),
                Int8 => Col::I8(c.as_primitive()),
                Int16 => Col::I16(c.as_primitive()),
                Int32 => Col::I32(c.as_primitive()),
                Int64 => Col::I64(c.as_primitive()),
                UInt8 => Col::U8(c.as_primitive()),
                UInt16 => Col::U16(c.as_primitive()),
                UInt32 => Col::U32(c.as_primitive()),
                UInt64 => Col::U64(c.as_primitive()),
                Float32 => Col::F32(c.as_primitive()),
                Float64 => Col::F64(c.as_primitive()),
                Decimal128(_, s) => Col::Dec(c.as_primitive(), *s),
                Date32 => Col::Date(c.as_primitive()),
                Timestamp(_, tz) => Col::Ts(c.as_primitive(), tz.is_some()),
                Binary => Col::Bin(c.as_binary()),
                _ => Col::Str(c.as_string()),
            })
            .collect()
    }

    /// The rows in PostgreSQL's COPY text format, appended to `out`.
    pub fn write_copy_text(&self, out: &mut String) {
        let cols = self.cols();
        for r in 0..self.len {
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    out.push('\t');
                }
                write_value(out, c, r, Dialect::Postgres);
            }
            out.push('\n');
        }
    }

    /// Row `r` as a MySQL tuple `(v1,v2,...)`, appended to `out`.
    fn write_mysql_tuple(&self, cols: &[Col<'_>], r: usize, out: &mut String) {
        out.push('(');
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_value(out, c, r, Dialect::MySql);
        }
        out.push(')');
    }

    /// MySQL `VALUES` tuples in chunks of at most about `max_bytes` each.
    pub fn mysql_chunks(&self, max_bytes: usize) -> Vec<(String, usize)> {
        let cols = self.cols();
        let mut chunks = Vec::new();
        let mut cur = String::new();
        let mut n = 0;
        for r in 0..self.len {
            if n > 0 {
                cur.push(',');
            }
            self.write_mysql_tuple(&cols, r, &mut cur);
            n += 1;
            if cur.len() >= max_bytes {
                chunks.push((std::mem::take(&mut cur), n));
                n = 0;
            }
        }
        if n > 0 {
            chunks.push((cur, n));
        }
        chunks
    }
}

fn write_decimal(out: &mut String, v: i128, scale: i8) {
    if scale <= 0 {
        let _ = write!(out, "{v}");
        return;
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    if v < 0 {
        out.push('-');
    }
    if digits.len() <= scale {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
}

fn write_date(out: &mut String, days: i32) {
    match chrono::DateTime::from_timestamp(days as i64 * 86_400, 0) {
        Some(d) => {
            let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        }
        None => out.push_str("invalid-date"),
    }
}

fn write_timestamp(out: &mut String, micros: i64) {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => {
            let _ = write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
        None => out.push_str("invalid-timestamp"),
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

fn write_float(out: &mut String, v: f64, dialect: Dialect) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else if dialect == Dialect::MySql {
        // MySQL has no NaN or infinity.
        out.push_str("NULL");
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v > 0.0 {
        out.push_str("Infinity");
    } else {
        out.push_str("-Infinity");
    }
}

fn write_value(out: &mut String, col: &Col<'_>, r: usize, dialect: Dialect) {
    let is_null = match col {
        Col::Bool(a) => a.is_null(r),
        Col::I8(a) => a.is_null(r),
        Col::I16(a) => a.is_null(r),
        Col::I32(a) => a.is_null(r),
        Col::I64(a) => a.is_null(r),
        Col::U8(a) => a.is_null(r),
        Col::U16(a) => a.is_null(r),
        Col::U32(a) => a.is_null(r),
        Col::U64(a) => a.is_null(r),
        Col::F32(a) => a.is_null(r),
        Col::F64(a) => a.is_null(r),
        Col::Dec(a, _) => a.is_null(r),
        Col::Date(a) => a.is_null(r),
        Col::Ts(a, _) => a.is_null(r),
        Col::Str(a) => a.is_null(r),
        Col::Bin(a) => a.is_null(r),
    };
    let pg = dialect == Dialect::Postgres;
    if is_null {
        out.push_str(if pg { "\\N" } else { "NULL" });
        return;
    }
    match col {
        Col::Bool(a) => out.push_str(match (a.value(r), pg) {
            (true, true) => "t",
            (false, true) => "f",
            (true, false) => "1",
            (false, false) => "0",
        }),
        Col::I8(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::I16(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::I32(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::I64(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::U8(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::U16(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::U32(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::U64(a) => {
            let _ = write!(out, "{}", a.value(r));
        }
        Col::F32(a) => write_float(out, a.value(r) as f64, dialect),
        Col::F64(a) => write_float(out, a.value(r), dialect),
        Col::Dec(a, s) => write_decimal(out, a.value(r), *s),
        Col::Date(a) => {
            if !pg {
                out.push('\'');
            }
            write_date(out, a.value(r));
            if !pg {
                out.push('\'');
            }
        }
        Col::Ts(a, utc) => {
            if !pg {
                out.push('\'');
            }
            write_timestamp(out, a.value(r));
            if pg && *utc {
                out.push_str("+00");
            }
            if !pg {
                out.push('\'');
            }
        }
        Col::Bin(a) => {
            // COPY text: the bytea hex form `\x...` with its backslash escaped.
            out.push_str(if pg { "\\\\x" } else { "X'" });
            write_hex(out, a.value(r));
            if !pg {
                out.push('\'');
            }
        }
        Col::Str(a) => {
            let s = a.value(r);
            if pg {
                for ch in s.chars() {
                    match ch {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        // PostgreSQL text cannot hold NUL.
                        '\0' => {}
                        c => out.push(c),
                    }
                }
            } else {
                out.push('\'');
                for ch in s.chars() {
                    match ch {
                        '\\' => out.push_str("\\\\"),
                        '\'' => out.push_str("\\'"),
                        '\0' => out.push_str("\\0"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\x1a' => out.push_str("\\Z"),
                        c => out.push(c),
                    }
                }
                out.push('\'');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use std::sync::Arc;

    fn batch() -> (RecordBatch, Vec<DataType>) {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Decimal128(18, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new("t", ts.clone(), true),
            Field::new("b", DataType::Binary, true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a\tb\\c'd\n"), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(-5), Some(123456)])
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(Date32Array::from(vec![Some(19_723), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(BinaryArray::from(vec![Some(&[0u8, 255][..]), None])),
                Arc::new(BooleanArray::from(vec![Some(true), None])),
            ],
        )
        .unwrap();
        let types = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        (b, types)
    }

    #[test]
    fn copy_text_escapes_and_formats() {
        let (b, types) = batch();
        let rows = Rows::new(&b, &types).unwrap();
        let mut out = String::new();
        rows.write_copy_text(&mut out);
        assert_eq!(
            out,
            "a\\tb\\\\c'd\\n\t-0.05\t2024-01-01\t2023-11-14 22:13:20.123456+00\t\\\\x00ff\tt\n\
             \\N\t1234.56\t\\N\t\\N\t\\N\t\\N\n"
        );
    }

    #[test]
    fn mysql_literals_escape_and_chunk() {
        let (b, types) = batch();
        let rows = Rows::new(&b, &types).unwrap();
        let chunks = rows.mysql_chunks(1 << 20);
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0].0,
            "('a\tb\\\\c\\'d\\n',-0.05,'2024-01-01','2023-11-14 22:13:20.123456',X'00ff',1),\
             (NULL,1234.56,NULL,NULL,NULL,NULL)"
        );
        assert_eq!(
            rows.mysql_chunks(1).len(),
            2,
            "one row per chunk when small"
        );
    }

    #[test]
    fn types_are_written_as_the_database_reports_them() {
        let f = Field::new("amount", DataType::Decimal128(18, 2), false);
        assert_eq!(sql_type(Dialect::Postgres, &f, false), "numeric(18,2)");
        assert_eq!(sql_type(Dialect::MySql, &f, false), "decimal(18,2)");
        let k = Field::new("dedupe_key", DataType::Binary, false);
        assert_eq!(sql_type(Dialect::MySql, &k, true), "binary(16)");
        assert_eq!(
            normalize_reported(Dialect::MySql, "bigint(20)"),
            normalize_reported(Dialect::MySql, "bigint")
        );
        assert_eq!(
            normalize_reported(Dialect::MySql, "tinyint(1)"),
            "tinyint(1)"
        );
        assert_eq!(
            canonical(&DataType::Dictionary(
                Box::new(DataType::UInt16),
                Box::new(DataType::LargeUtf8)
            )),
            Some(DataType::Utf8)
        );
        assert_eq!(canonical(&DataType::new_list(DataType::Int32, true)), None);
    }
}
