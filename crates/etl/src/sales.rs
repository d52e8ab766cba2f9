//! The sales transform: one source record in, one `fact_sales` row, a quarantined row, or a
//! duplicate out. Validation first (every check that can reject a row), then de-duplication
//! (within the run and against what `fact_sales` already holds), then the side effects:
//! late-arriving members are inferred, amounts filled, converted to USD and enriched.

use crate::convert::{Rejection, parse_date};
use crate::dedupe::{InLake, LakeKeys, RunKeys};
use crate::dim::{Dim, days_since_epoch};
use crate::schema::{AMOUNT, FACT_SALES, PRICE, RATE};
use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::DataType;
use shoplake_core::values::{self, AMOUNT_SCALE, PRICE_SCALE, RATE_SCALE};
use shoplake_core::{ReasonCode, UnknownMembers};
use std::collections::HashMap;
use std::sync::Arc;

/// Sales fields the transform reads, in `SALES_FIELDS` order.
pub const FIELDS: [&str; 17] = [
    "transaction_id",
    "line_number",
    "sales_date",
    "customer_id",
    "product_id",
    "product_name",
    "store_id",
    "sales_person_id",
    "quantity",
    "unit_price",
    "amount",
    "currency",
    "region",
    "status",
    "channel",
    "campaign_id",
    "payment_method",
];

const TXN: usize = 0;
const LINE: usize = 1;
const DATE: usize = 2;
const CUSTOMER: usize = 3;
const PRODUCT: usize = 4;
const PRODUCT_NAME: usize = 5;
const STORE: usize = 6;
const PERSON: usize = 7;
const QTY: usize = 8;
const PRICE_F: usize = 9;
const AMOUNT_F: usize = 10;
const CURRENCY: usize = 11;
const REGION: usize = 12;
const STATUS: usize = 13;
const CHANNEL: usize = 14;
const CAMPAIGN: usize = 15;
const PAYMENT: usize = 16;

/// Values stored as `Decimal128(18, s)` must stay below 10^18 in their scaled form.
const DECIMAL_LIMIT: i128 = 1_000_000_000_000_000_000;

/// The dimensions and reference data a sale resolves against.
pub struct Lookups {
    pub products: Dim,
    pub customers: Dim,
    pub stores: Dim,
    pub sales_team: Dim,
    /// (currency, year * 100 + month) -> USD per unit, scaled by 10^8.
    pub fx: HashMap<(String, i32), i128>,
    /// Dedupe keys of the sales of this run.
    pub seen: RunKeys,
    /// The keys `fact_sales` already holds.
    pub lake: LakeKeys,
}

/// Per-source settings of the transform.
#[derive(Debug, Clone)]
pub struct SourceRules {
    pub source: String,
    pub date_format: Option<String>,
    pub default_currency: &'static str,
    pub default_channel: String,
    pub unknown_members: UnknownMembers,
}

/// A sale that passed validation, before de-duplication.
struct Valid<'a> {
    date: NaiveDate,
    customer: Option<&'a str>,
    product_id: Option<&'a str>,
    product_name: Option<&'a str>,
    store: Option<&'a str>,
    person: Option<&'a str>,
    quantity: Option<i64>,
    unit_price: Option<i128>,
    amount: i128,
    filled: bool,
    currency: &'static str,
    rate: i128,
    status: String,
    txn: Option<&'a str>,
    line_number: Option<i64>,
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    Duplicate,
    Rejected(ReasonCode, String),
}

/// Turns records of one file into `fact_sales` rows.
pub struct SalesTransform<'l> {
    pub lookups: &'l mut Lookups,
    pub rules: SourceRules,
    /// Record column index of each of [`FIELDS`].
    idx: [Option<usize>; 17],
    pub out: FactBuilder,
    /// Rows whose key `fact_sales` may hold: loaded only once the exact check says it does
    /// not (see [`crate::dedupe`]).
    pub held: FactBuilder,
    /// Per held row: bit 0 for an inferred customer, bit 1 for an inferred product.
    pub held_inferred: Vec<u8>,
    file_id: i64,
    run_id: i64,
    now_micros: i64,
    /// Rows loaded against inferred customers and products.
    pub inferred_rows: (u64, u64),
    /// First and last sales date loaded.
    pub date_range: Option<(NaiveDate, NaiveDate)>,
}

fn get<'a>(idx: &[Option<usize>; 17], values: &[Option<&'a str>], f: usize) -> Option<&'a str> {
    idx[f].and_then(|i| values.get(i).copied().flatten())
}

impl<'l> SalesTransform<'l> {
    /// `columns` maps each canonical field name to its column index in the records.
    pub fn new(
        lookups: &'l mut Lookups,
        rules: SourceRules,
        columns: &HashMap<String, usize>,
        file_id: i64,
        run_id: i64,
        now_micros: i64,
        capacity: usize,
    ) -> Self {
        let mut idx = [None; 17];
        for (i, f) in FIELDS.iter().enumerate() {
            idx[i] = columns.get(*f).copied();
        }
        SalesTransform {
            lookups,
            rules,
            idx,
            out: FactBuilder::new(capacity),
            held: FactBuilder::new(0),
            held_inferred: Vec::new(),
            file_id,
            run_id,
            now_micros,
            inferred_rows: (0, 0),
            date_range: None,
        }
    }

    /// Process one record.
    pub fn process(&mut self, line: u64, values: &[Option<&str>]) -> Outcome {
        let v = match self.validate(values) {
            Ok(v) => v,
            Err((reason, detail)) => return Outcome::Rejected(reason, detail),
        };
        let key = self.dedupe_key(&v, values);
        let held = match self.lookups.seen.check_insert(key) {
            InLake::Yes => return Outcome::Duplicate,
            // Seen earlier in the run, maybe: settled after the scan.
            InLake::Maybe => true,
            InLake::No => match self.lookups.lake.check(key) {
                InLake::Yes => return Outcome::Duplicate,
                InLake::Maybe => true,
                InLake::No => false,
            },
        };
        self.load(line, &v, values, key, held);
        Outcome::Loaded
    }

    fn validate<'a>(&self, values: &[Option<&'a str>]) -> Result<Valid<'a>, Rejection> {
        let idx = &self.idx;
        let g = |f| get(idx, values, f);
        let date_raw = g(DATE)
            .and_then(values::clean_key)
            .ok_or((ReasonCode::MissingKey, "sales_date is empty".to_string()))?;
        let date = parse_date(&date_raw, self.rules.date_format.as_deref()).ok_or_else(|| {
            (
                ReasonCode::BadDate,
                format!("sales_date: {date_raw:?} is not a date"),
            )
        })?;
        let num = |f: usize, name: &str, scale: u32| -> Result<Option<i128>, Rejection> {
            match g(f) {
                None => Ok(None),
                Some(t) => match values::parse_decimal(t, scale) {
                    Ok(Some(v)) if v.abs() >= DECIMAL_LIMIT => Err((
                        ReasonCode::BadNumber,
                        format!("{name}: {t:?} is too large for an 18-digit decimal"),
                    )),
                    Ok(v) => Ok(v),
                    Err(e) => Err((ReasonCode::BadNumber, format!("{name}: {}", e.0))),
                },
            }
        };
        let quantity = match g(QTY) {
            None => None,
            Some(t) => values::parse_integer(t)
                .map_err(|e| (ReasonCode::BadNumber, format!("quantity: {}", e.0)))?,
        };
        let unit_price = num(PRICE_F, "unit_price", PRICE_SCALE)?;
        let amount = num(AMOUNT_F, "amount", AMOUNT_SCALE)?;
        let customer = match idx[CUSTOMER] {
            Some(_) => Some(
                g(CUSTOMER)
                    .map(str::trim)
                    .filter(|s| !values::is_null_marker(s))
                    .ok_or((ReasonCode::MissingKey, "customer_id is empty".to_string()))?,
            ),
            None => None,
        };
        let product_id = g(PRODUCT)
            .map(str::trim)
            .filter(|s| !values::is_null_marker(s));
        let product_name = g(PRODUCT_NAME)
            .map(str::trim)
            .filter(|s| !values::is_null_marker(s));
        if product_id.is_none() && product_name.is_none() {
            return Err((
                ReasonCode::MissingKey,
                "neither product_id nor product_name is given".into(),
            ));
        }
        let (amount, filled) = match (amount, quantity, unit_price) {
            (Some(a), _, _) => (a, false),
            (None, Some(q), Some(p)) => {
                let a = values::mul_round(q as i128, 0, p, PRICE_SCALE, AMOUNT_SCALE);
                if a.abs() >= DECIMAL_LIMIT {
                    return Err((
                        ReasonCode::BadNumber,
                        "quantity x unit_price is too large for an 18-digit decimal".into(),
                    ));
                }
                (a, true)
            }
            _ => {
                return Err((
                    ReasonCode::MissingAmount,
                    "amount is empty and quantity x unit_price is not known".into(),
                ));
            }
        };
        let currency = match values::normalize_currency(g(CURRENCY).unwrap_or("")) {
            Ok(Some(c)) => c,
            Ok(None) => self.rules.default_currency,
            Err(code) => {
                return Err((
                    ReasonCode::UnknownCurrency,
                    format!("currency {code:?} is not a known ISO 4217 code"),
                ));
            }
        };
        let ym = date.year() * 100 + date.month() as i32;
        let rate = if currency == "USD" {
            10i128.pow(RATE_SCALE)
        } else {
            *self.lookups.fx.get(&(currency.to_string(), ym)).ok_or_else(|| {
                (
                    ReasonCode::MissingFxRate,
                    format!("no {currency} rate for {}-{:02}; add it to an fx_rates file and replay", date.year(), date.month()),
                )
            })?
        };
        if self.rules.unknown_members == UnknownMembers::Quarantine {
            if let Some(c) = customer
                && self.lookups.customers.get(c).is_none()
            {
                return Err((
                    ReasonCode::UnknownCustomer,
                    format!("customer {c:?} is not in dim_customer"),
                ));
            }
            let known = match (product_id, product_name) {
                (Some(p), _) => self.lookups.products.get(p).is_some(),
                (None, Some(n)) => self.lookups.products.by_name(n).is_some(),
                (None, None) => false,
            };
            if !known {
                let p = product_id.or(product_name).unwrap_or_default();
                return Err((
                    ReasonCode::UnknownProduct,
                    format!("product {p:?} is not in dim_product"),
                ));
            }
        }
        if values::mul_round(amount, AMOUNT_SCALE, rate, RATE_SCALE, AMOUNT_SCALE).abs()
            >= DECIMAL_LIMIT
        {
            return Err((
                ReasonCode::BadNumber,
                "amount: too large for an 18-digit decimal in USD".into(),
            ));
        }
        let line_number = g(LINE).and_then(|t| values::parse_integer(t).ok().flatten());
        Ok(Valid {
            date,
            customer,
            product_id,
            product_name,
            store: g(STORE)
                .map(str::trim)
                .filter(|s| !values::is_null_marker(s)),
            person: g(PERSON)
                .map(str::trim)
                .filter(|s| !values::is_null_marker(s)),
            quantity,
            unit_price,
            amount,
            filled,
            currency,
            rate,
            status: values::normalize_status(g(STATUS).unwrap_or("")),
            txn: g(TXN).map(str::trim).filter(|s| !values::is_null_marker(s)),
            line_number,
        })
    }

    /// The identity of a sale: its transaction id (and line, or product) where it has one,
    /// otherwise a fingerprint of its normalised values.
    fn dedupe_key(&self, v: &Valid<'_>, values: &[Option<&str>]) -> u128 {
        let mut buf = Vec::with_capacity(128);
        let mut put = |s: &str| {
            buf.extend_from_slice(s.as_bytes());
            buf.push(0);
        };
        let product = v.product_id.map(|p| p.to_string()).unwrap_or_else(|| {
            format!("n:{}", values::name_match_key(v.product_name.unwrap_or("")))
        });
        if let Some(t) = v.txn {
            put("t");
            put(t);
            match v.line_number {
                Some(l) => put(&l.to_string()),
                None => put(&product),
            }
        } else {
            put("f");
            put(&v.date.to_string());
            put(v.customer.unwrap_or(""));
            put(&product);
            put(v.store.unwrap_or(""));
            put(v.person.unwrap_or(""));
            put(&v.quantity.map(|q| q.to_string()).unwrap_or_default());
            put(&v.unit_price.map(|p| p.to_string()).unwrap_or_default());
            put(&v.amount.to_string());
            put(v.currency);
            put(&v.status);
            let g = |f| get(&self.idx, values, f).unwrap_or("");
            put(&values::normalize_region(g(REGION)).unwrap_or_default());
            put(&values::normalize_channel(g(CHANNEL)).unwrap_or_default());
            put(g(CAMPAIGN).trim());
        }
        xxhash_rust::xxh3::xxh3_128(&buf)
    }

    /// Resolve and enrich a sale and append it to `out`, or to `held` when `held` is set.
    fn load(&mut self, line: u64, v: &Valid<'_>, values: &[Option<&str>], key: u128, held: bool) {
        let now = self.now_micros;
        let l = &mut *self.lookups;
        // Product: by id, else by name; unknown ones become inferred members.
        let (product_natural, name_hint) = match (v.product_id, v.product_name) {
            (Some(p), n) => (p.to_string(), n),
            (None, Some(n)) => match l.products.by_name(n) {
                Some(id) => (id.to_string(), Some(n)),
                None => (format!("name:{}", values::name_match_key(n)), Some(n)),
            },
            (None, None) => unreachable!("validated"),
        };
        let hints: Vec<(&str, &str)> = name_hint.map(|n| ("product_name", n)).into_iter().collect();
        let (product_key, inferred_p) = l.products.key_or_infer(&product_natural, &hints, now);
        let prow = l.products.get(&product_natural).expect("just resolved");
        let product_name = l
            .products
            .value(prow, "product_name")
            .map(str::to_string)
            .or(v.product_name.map(str::to_string));
        let category = l.products.value(prow, "category").map(str::to_string);

        let (customer_key, inferred_c) = match v.customer {
            Some(c) => {
                let (k, new) = l.customers.key_or_infer(c, &[], now);
                (
                    Some(k),
                    new || l.customers.get(c).is_some_and(|r| r.inferred),
                )
            }
            None => (None, false),
        };
        let store_key = v.store.map(|s| l.stores.key_or_infer(s, &[], now).0);
        let person_key = v.person.map(|p| l.sales_team.key_or_infer(p, &[], now).0);
        let inferred_p = inferred_p || l.products.get(&product_natural).is_some_and(|r| r.inferred);
        self.inferred_rows.0 += u64::from(inferred_c);
        self.inferred_rows.1 += u64::from(inferred_p);
        if held {
            self.held_inferred
                .push(u8::from(inferred_c) | (u8::from(inferred_p) << 1));
        }

        let g = |f| get(&self.idx, values, f);
        let region = g(REGION)
            .and_then(values::normalize_region)
            .or_else(|| {
                v.store
                    .and_then(|s| l.stores.get(s))
                    .and_then(|r| l.stores.value(r, "region"))
                    .map(str::to_string)
            })
            .or_else(|| {
                v.customer
                    .and_then(|c| l.customers.get(c))
                    .and_then(|r| l.customers.value(r, "region"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "Unknown".to_string());
        let channel = g(CHANNEL)
            .and_then(values::normalize_channel)
            .unwrap_or_else(|| self.rules.default_channel.clone());
        self.date_range = Some(
            self.date_range
                .map_or((v.date, v.date), |(a, b)| (a.min(v.date), b.max(v.date))),
        );
        let amount_usd =
            values::mul_round(v.amount, AMOUNT_SCALE, v.rate, RATE_SCALE, AMOUNT_SCALE);

        let o = if held { &mut self.held } else { &mut self.out };
        o.transaction_id.append_option(v.txn);
        o.line_number.append_option(v.line_number);
        o.sales_date.append_value(days_since_epoch(v.date));
        o.date_key.append_value(
            v.date.year() * 10_000 + v.date.month() as i32 * 100 + v.date.day() as i32,
        );
        o.customer_key.append_option(customer_key);
        o.customer_id.append_option(v.customer);
        o.product_key.append_value(product_key);
        o.product_id.append_value(&product_natural);
        o.product_name.append_option(product_name);
        o.category.append_option(category);
        o.store_key.append_option(store_key);
        o.store_id.append_option(v.store);
        o.sales_person_key.append_option(person_key);
        o.sales_person_id.append_option(v.person);
        o.campaign_id
            .append_option(g(CAMPAIGN).and_then(values::clean_key));
        o.channel.append_value(&channel);
        o.payment_method.append_option(
            g(PAYMENT)
                .and_then(values::clean_text)
                .map(|p| p.to_lowercase()),
        );
        o.is_outlier.append_value(v.status == "OUT");
        o.status.append_value(&v.status);
        o.quantity.append_option(v.quantity);
        o.unit_price.append_option(v.unit_price);
        o.amount.append_value(v.amount);
        o.amount_filled.append_value(v.filled);
        o.currency.append_value(v.currency);
        o.fx_rate.append_value(v.rate);
        o.amount_usd.append_value(amount_usd);
        o.source.append_value(&self.rules.source);
        o.file_id.append_value(self.file_id);
        o.source_line.append_value(line as i64);
        o.run_id.append_value(self.run_id);
        o.dedupe_key.append_value(key.to_be_bytes());
        o.loaded_at.append_value(now);
        o.region.append_value(&region);
        o.year.append_value(v.date.year());
        o.month.append_value(v.date.month() as i32);
        o.rows += 1;
    }
}

/// Arrow builders for `fact_sales` rows.
pub struct FactBuilder {
    transaction_id: StringBuilder,
    line_number: Int64Builder,
    sales_date: Date32Builder,
    date_key: Int32Builder,
    customer_key: Int64Builder,
    customer_id: StringBuilder,
    product_key: Int64Builder,
    product_id: StringBuilder,
    product_name: StringBuilder,
    category: StringBuilder,
    store_key: Int64Builder,
    store_id: StringBuilder,
    sales_person_key: Int64Builder,
    sales_person_id: StringBuilder,
    campaign_id: StringBuilder,
    channel: StringBuilder,
    payment_method: StringBuilder,
    status: StringBuilder,
    is_outlier: BooleanBuilder,
    quantity: Int64Builder,
    unit_price: Decimal128Builder,
    amount: Decimal128Builder,
    amount_filled: BooleanBuilder,
    currency: StringBuilder,
    fx_rate: Decimal128Builder,
    amount_usd: Decimal128Builder,
    source: StringBuilder,
    file_id: Int64Builder,
    source_line: Int64Builder,
    run_id: Int64Builder,
    dedupe_key: BinaryBuilder,
    loaded_at: TimestampMicrosecondBuilder,
    region: StringBuilder,
    year: Int32Builder,
    month: Int32Builder,
    rows: usize,
}

fn dec(ty: &DataType, n: usize) -> Decimal128Builder {
    let DataType::Decimal128(p, s) = ty else {
        unreachable!()
    };
    Decimal128Builder::with_capacity(n)
        .with_precision_and_scale(*p, *s)
        .expect("valid decimal type")
}

impl FactBuilder {
    pub fn new(n: usize) -> FactBuilder {
        let s = || StringBuilder::with_capacity(n, n * 8);
        FactBuilder {
            transaction_id: s(),
            line_number: Int64Builder::with_capacity(n),
            sales_date: Date32Builder::with_capacity(n),
            date_key: Int32Builder::with_capacity(n),
            customer_key: Int64Builder::with_capacity(n),
            customer_id: s(),
            product_key: Int64Builder::with_capacity(n),
            product_id: s(),
            product_name: s(),
            category: s(),
            store_key: Int64Builder::with_capacity(n),
            store_id: s(),
            sales_person_key: Int64Builder::with_capacity(n),
            sales_person_id: s(),
            campaign_id: s(),
            channel: s(),
            payment_method: s(),
            status: s(),
            is_outlier: BooleanBuilder::with_capacity(n),
            quantity: Int64Builder::with_capacity(n),
            unit_price: dec(&PRICE, n),
            amount: dec(&AMOUNT, n),
            amount_filled: BooleanBuilder::with_capacity(n),
            currency: s(),
            fx_rate: dec(&RATE, n),
            amount_usd: dec(&AMOUNT, n),
            source: s(),
            file_id: Int64Builder::with_capacity(n),
            source_line: Int64Builder::with_capacity(n),
            run_id: Int64Builder::with_capacity(n),
            dedupe_key: BinaryBuilder::with_capacity(n, n * 16),
            loaded_at: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            region: s(),
            year: Int32Builder::with_capacity(n),
            month: Int32Builder::with_capacity(n),
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Take the rows built so far as a batch, leaving the builder empty.
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.transaction_id.finish()),
            Arc::new(self.line_number.finish()),
            Arc::new(self.sales_date.finish()),
            Arc::new(self.date_key.finish()),
            Arc::new(self.customer_key.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.product_key.finish()),
            Arc::new(self.product_id.finish()),
            Arc::new(self.product_name.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.store_key.finish()),
            Arc::new(self.store_id.finish()),
            Arc::new(self.sales_person_key.finish()),
            Arc::new(self.sales_person_id.finish()),
            Arc::new(self.campaign_id.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.payment_method.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.is_outlier.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.unit_price.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.amount_filled.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.fx_rate.finish()),
            Arc::new(self.amount_usd.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.file_id.finish()),
            Arc::new(self.source_line.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.dedupe_key.finish()),
            Arc::new(self.loaded_at.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.year.finish()),
            Arc::new(self.month.finish()),
        ];
        RecordBatch::try_new(FACT_SALES.clone(), cols)
            .expect("builders match the fact_sales schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::display::array_value_to_string;
    use std::collections::HashSet;

    fn lookups() -> Lookups {
        let mut products = Dim::new(shoplake_core::Entity::Products);
        let p = |id: &str, name: &str, cat: &str| -> Vec<Option<String>> {
            shoplake_core::Entity::Products
                .fields()
                .iter()
                .map(|f| match f.name {
                    "product_id" => Some(id.to_string()),
                    "product_name" => Some(name.to_string()),
                    "category" => Some(cat.to_string()),
                    _ => None,
                })
                .collect()
        };
        products.apply(p("P1", "Blue Mug", "Home"), 0, 1);
        let mut stores = Dim::new(shoplake_core::Entity::Stores);
        let s: Vec<Option<String>> = shoplake_core::Entity::Stores
            .fields()
            .iter()
            .map(|f| match f.name {
                "store_id" => Some("7".to_string()),
                "region" => Some("West".to_string()),
                _ => None,
            })
            .collect();
        stores.apply(s, 0, 1);
        Lookups {
            products,
            customers: Dim::new(shoplake_core::Entity::Customers),
            stores,
            sales_team: Dim::new(shoplake_core::Entity::SalesTeam),
            fx: HashMap::from([(("EUR".to_string(), 202503), 108_000_000)]),
            seen: RunKeys::Exact(HashSet::new()),
            lake: LakeKeys::Empty,
        }
    }

    fn rules(policy: UnknownMembers) -> SourceRules {
        SourceRules {
            source: "pos".into(),
            date_format: Some("%Y-%m-%d".into()),
            default_currency: "USD",
            default_channel: "store".into(),
            unknown_members: policy,
        }
    }

    const COLS: [&str; 9] = [
        "transaction_id",
        "sales_date",
        "customer_id",
        "product_id",
        "product_name",
        "store_id",
        "quantity",
        "unit_price",
        "amount",
    ];
    const CURRENCY: usize = 9;

    fn transform(l: &mut Lookups, policy: UnknownMembers) -> SalesTransform<'_> {
        SalesTransform::new(l, rules(policy), &columns(), 1, 1, 0, 16)
    }

    fn columns() -> HashMap<String, usize> {
        let mut m: HashMap<String, usize> = COLS
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i))
            .collect();
        m.insert("currency".into(), CURRENCY);
        m
    }

    fn row<'a>(
        txn: &'a str,
        date: &'a str,
        product: &'a str,
        qty: &'a str,
        price: &'a str,
        amount: &'a str,
        currency: &'a str,
    ) -> Vec<Option<&'a str>> {
        vec![
            Some(txn),
            Some(date),
            Some("C1"),
            Some(product).filter(|p| !p.is_empty()),
            None,
            Some("7"),
            Some(qty),
            Some(price),
            Some(amount),
            Some(currency),
        ]
    }

    #[test]
    fn validates_fills_converts_and_dedupes() {
        let mut l = lookups();
        let mut t = transform(&mut l, UnknownMembers::Infer);
        assert_eq!(
            t.process(2, &row("T1", "2025-03-04", "P1", "2", "2.50", "", "EUR")),
            Outcome::Loaded
        );
        assert_eq!(
            t.process(3, &row("T1", "2025-03-04", "P1", "2", "2.50", "", "EUR")),
            Outcome::Duplicate
        );
        let rejected = |o: Outcome| match o {
            Outcome::Rejected(r, _) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            rejected(t.process(4, &row("T2", "2025-02-30", "P1", "1", "1", "1", ""))),
            ReasonCode::BadDate
        );
        assert_eq!(
            rejected(t.process(5, &row("T3", "2025-03-04", "P1", "x", "1", "1", ""))),
            ReasonCode::BadNumber
        );
        assert_eq!(
            rejected(t.process(6, &row("T4", "2025-03-04", "P1", "1", "", "", ""))),
            ReasonCode::MissingAmount
        );
        assert_eq!(
            rejected(t.process(7, &row("T5", "2025-03-04", "P1", "1", "1", "1", "XYZ"))),
            ReasonCode::UnknownCurrency
        );
        assert_eq!(
            rejected(t.process(8, &row("T6", "2025-04-04", "P1", "1", "1", "1", "EUR"))),
            ReasonCode::MissingFxRate
        );
        assert_eq!(
            rejected(t.process(9, &row("T7", "2025-03-04", "", "1", "1", "1", ""))),
            ReasonCode::MissingKey
        );
        assert_eq!(
            rejected(t.process(
                10,
                &row("T8", "2025-03-04", "P1", "1", "1", "99999999999999999", "")
            )),
            ReasonCode::BadNumber
        );
        // An unknown product loads against an inferred member.
        assert_eq!(
            t.process(11, &row("T9", "2025-03-05", "P404", "1", "4", "4.00", "")),
            Outcome::Loaded
        );
        let batch = t.out.finish();
        assert_eq!(batch.num_rows(), 2);
        let cell = |name: &str, r: usize| {
            array_value_to_string(batch.column_by_name(name).unwrap(), r).unwrap()
        };
        // 2 x 2.50 = 5.00 EUR at 1.08 USD/EUR = 5.40 USD; region from the store; category from the product.
        assert_eq!(
            (
                cell("amount", 0),
                cell("amount_filled", 0),
                cell("amount_usd", 0)
            ),
            ("5.00".into(), "true".into(), "5.40".into())
        );
        assert_eq!(
            (cell("region", 0), cell("category", 0), cell("channel", 0)),
            ("West".into(), "Home".into(), "store".into())
        );
        assert_eq!(
            (cell("currency", 1), cell("fx_rate", 1)),
            ("USD".into(), "1.00000000".into())
        );
        assert!(l.products.get("P404").unwrap().inferred);
        assert!(l.customers.get("C1").unwrap().inferred);
    }

    #[test]
    fn quarantines_unknown_members_when_the_source_asks() {
        let mut l = lookups();
        let mut t = transform(&mut l, UnknownMembers::Quarantine);
        match t.process(2, &row("T1", "2025-03-04", "P1", "1", "1", "1", "")) {
            Outcome::Rejected(ReasonCode::UnknownCustomer, _) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            l.customers.is_empty(),
            "nothing is inferred for a quarantined row"
        );
    }

    #[test]
    fn rows_without_a_transaction_id_dedupe_by_fingerprint() {
        let mut l = lookups();
        let mut t = transform(&mut l, UnknownMembers::Infer);
        assert_eq!(
            t.process(2, &row(" ", "2025-03-04", "P1", "1", "1", "1", "")),
            Outcome::Loaded
        );
        assert_eq!(
            t.process(3, &row("", "2025-03-04", "P1", "1", "1", "1.00", "usd")),
            Outcome::Duplicate,
            "same values, normalised"
        );
        assert_eq!(
            t.process(4, &row("", "2025-03-04", "P1", "2", "1", "2", "")),
            Outcome::Loaded
        );
    }
}
