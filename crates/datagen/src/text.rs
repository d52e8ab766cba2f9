//! Writing numbers and dates straight into a byte buffer, without allocating: the hot path of
//! the sales writers.

use chrono::{Datelike, NaiveDate};

/// Number of decimal digits of `n` (1 for 0).
pub(crate) fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// `n` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 24];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    push_padded(out, n, 1);
}

/// An amount in cents as `units.cc` (`1299` -> `12.99`, `5` -> `0.05`).
pub(crate) fn push_cents(out: &mut Vec<u8>, cents: u64) {
    push_u64(out, cents / 100);
    out.push(b'.');
    push_padded(out, cents % 100, 2);
}

/// A rate in millionths as `units.dddddd`.
pub(crate) fn micros_text(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `YYYY-MM-DD` (years 1000..=9999).
pub(crate) fn date_bytes(d: NaiveDate) -> [u8; 10] {
    let mut v = Vec::with_capacity(10);
    push_padded(&mut v, d.year() as u64, 4);
    v.push(b'-');
    push_padded(&mut v, u64::from(d.month()), 2);
    v.push(b'-');
    push_padded(&mut v, u64::from(d.day()), 2);
    v.try_into()
        .expect("a date within years 1000..=9999 is 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(s(|v| push_u64(v, 0)), "0");
        assert_eq!(s(|v| push_u64(v, u64::MAX)), u64::MAX.to_string());
        assert_eq!(s(|v| push_padded(v, 42, 5)), "00042");
        assert_eq!(s(|v| push_padded(v, 123_456, 4)), "123456");
        assert_eq!(s(|v| push_cents(v, 1299)), "12.99");
        assert_eq!(s(|v| push_cents(v, 5)), "0.05");
        assert_eq!(s(|v| push_cents(v, 120_000)), "1200.00");
        assert_eq!(micros_text(6_650), "0.006650");
        assert_eq!(micros_text(1_083_000), "1.083000");
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9_999), 4);
        assert_eq!(digits(10_000), 5);
    }

    #[test]
    fn formats_dates() {
        let d = NaiveDate::from_ymd_opt(2025, 3, 7).unwrap();
        assert_eq!(&date_bytes(d), b"2025-03-07");
        assert_eq!(&date_bytes(d), d.to_string().as_bytes());
    }
}
