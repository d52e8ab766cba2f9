//! Sales files: store sales as CSV (some gzipped), e-commerce orders as NDJSON and JSON arrays.
//!
//! Every row is a pure function of (seed, source, file index, row index): [`Sales::row`] draws
//! the row's fate first (clean, or exactly one defect), then its content. A duplicate is a
//! verbatim copy of a clean row, regenerated from that row's own coordinates, so files can be
//! written in any order on any number of threads and still come out byte for byte the same.

use crate::rng::{Rng, stream};
use crate::text::{digits, push_cents, push_padded, push_u64};
use crate::world::{CURRENCY_TABLE, JPY, USD, World};
use crate::{DefectRates, Expected};
use shoplake_core::ReasonCode;
use shoplake_core::values::REGIONS;
use std::collections::BTreeMap;
use std::io::{self, Write};

/// Unknown (late-arriving) customers and products come from small pools, so the same inferred
/// member is hit by several rows. At most 128 each: they are tracked in a `u128` bit set.
const CUSTOMER_POOL: u64 = 100;
const PRODUCT_POOL: u64 = 40;

const REFUND_RATE: f64 = 0.04;
const QUANTITIES: [u64; 12] = [1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5];
/// Share of e-commerce orders in a campaign window that carry the campaign.
const CAMPAIGN_SHARE: f64 = 0.35;

/// Dates no format of `shoplake_core::values::DATE_FORMATS` reads.
pub(crate) const BAD_DATES: [&str; 6] = [
    "2025-13-45",
    "31/02/2025",
    "yesterday",
    "2025-02-30",
    "00/00/0000",
    "2025-06-31",
];
/// Timestamps whose date part no format reads.
pub(crate) const BAD_TIMESTAMPS: [&str; 5] = [
    "2025-13-45T14:22:05Z",
    "2025-02-30T09:15:00Z",
    "yesterday",
    "0000-00-00T00:00:00Z",
    "31/02/2025 10:00",
];
/// Quantities that are not numbers.
pub(crate) const BAD_QUANTITIES: [&str; 4] = ["abc", "two", "3 pcs", "x2"];
/// Codes that are not ISO 4217 currencies shoplake knows.
pub(crate) const UNKNOWN_CURRENCIES: [&str; 3] = ["XYZ", "EURO", "ABC"];
/// Messy spellings of each region of `REGIONS`, in the same order.
pub(crate) const MESSY_REGIONS: [[&str; 6]; 5] = [
    [
        " north ",
        "NORTH",
        "N.",
        "Northern",
        "north region",
        "nOrTh",
    ],
    [
        " south ",
        "SOUTH",
        "S.",
        "Southern",
        "south region",
        "sOuTh",
    ],
    [" east ", "EAST", "E.", "Eastern", "east zone", "eAsT"],
    [" west ", "WEST", "W.", "Western", "west region", "wEsT"],
    [
        " central ",
        "CENTRAL",
        "C.",
        "Centre",
        "central zone",
        "cEnTrAl",
    ],
];

pub(crate) const STORE_HEADER: &str = "transaction_id,sales_date,customer_id,product_id,store_id,sales_person_id,quantity,unit_price,amount,currency,region,status\n";

/// A sales source: the folder its files go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Store,
    Ecommerce,
}

impl Source {
    pub(crate) const ALL: [Source; 2] = [Source::Store, Source::Ecommerce];

    pub(crate) fn dir(self) -> &'static str {
        match self {
            Source::Store => "store_sales",
            Source::Ecommerce => "ecommerce",
        }
    }

    fn stream(self) -> u64 {
        match self {
            Source::Store => stream::STORE_SALES,
            Source::Ecommerce => stream::ECOMMERCE,
        }
    }

    /// Whether `name` is a file this generator writes into the source's folder (any index).
    pub(crate) fn owns_file_name(self, name: &str) -> bool {
        let (prefix, suffixes): (&str, &[&str]) = match self {
            Source::Store => ("store_sales_", &[".csv.gz", ".csv"]),
            Source::Ecommerce => ("orders_", &[".ndjson", ".json"]),
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            return false;
        };
        suffixes.iter().any(|s| {
            rest.strip_suffix(s)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    }
}

/// How one sales file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Csv,
    CsvGz,
    Ndjson,
    /// One JSON array, one object per line.
    JsonArray,
}

/// How the sales rows are split into files.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub rows_per_file: u64,
    store_rows: u64,
    ecommerce_rows: u64,
    gzip: bool,
}

impl Plan {
    /// 70% of the rows (rounded) are store sales, the rest e-commerce orders.
    pub(crate) fn new(sales_rows: u64, rows_per_file: u64, gzip: bool) -> Plan {
        let store_rows = ((u128::from(sales_rows) * 7 + 5) / 10) as u64;
        Plan {
            rows_per_file,
            store_rows,
            ecommerce_rows: sales_rows - store_rows,
            gzip,
        }
    }

    fn rows(&self, src: Source) -> u64 {
        match src {
            Source::Store => self.store_rows,
            Source::Ecommerce => self.ecommerce_rows,
        }
    }

    pub(crate) fn files(&self, src: Source) -> u64 {
        self.rows(src).div_ceil(self.rows_per_file)
    }

    pub(crate) fn rows_in(&self, src: Source, file: u64) -> u64 {
        self.rows_per_file
            .min(self.rows(src) - file * self.rows_per_file)
    }

    pub(crate) fn layout(&self, src: Source, file: u64) -> Layout {
        let number = file + 1;
        match src {
            Source::Store if self.gzip && number.is_multiple_of(3) => Layout::CsvGz,
            Source::Store => Layout::Csv,
            Source::Ecommerce if number.is_multiple_of(4) => Layout::JsonArray,
            Source::Ecommerce => Layout::Ndjson,
        }
    }

    /// File name within the source folder; numbers are zero-padded to at least four digits so
    /// that name order is file order.
    pub(crate) fn file_name(&self, src: Source, file: u64) -> String {
        let width = digits(self.files(src)).max(4);
        let number = file + 1;
        match self.layout(src, file) {
            Layout::Csv => format!("store_sales_{number:0width$}.csv"),
            Layout::CsvGz => format!("store_sales_{number:0width$}.csv.gz"),
            Layout::Ndjson => format!("orders_{number:0width$}.ndjson"),
            Layout::JsonArray => format!("orders_{number:0width$}.json"),
        }
    }
}

/// What the row draws before anything else. `Clean` rows are the only ones ever duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Clean,
    MissingAmount,
    Outlier,
    DupInFile,
    DupAcrossFiles,
    BadDate,
    BadNumber,
    MessyRegion,
    UnknownCurrency,
    MissingFxRate,
    UnknownProduct,
    UnknownCustomer,
    MissingKey,
}

/// The defect fates, in the order of `DefectRates::per_row`, which stacks their rates on `[0, 1)`.
const DEFECT_FATES: [Fate; 12] = [
    Fate::MissingAmount,
    Fate::Outlier,
    Fate::DupInFile,
    Fate::DupAcrossFiles,
    Fate::BadDate,
    Fate::BadNumber,
    Fate::MessyRegion,
    Fate::UnknownCurrency,
    Fate::MissingFxRate,
    Fate::UnknownProduct,
    Fate::UnknownCustomer,
    Fate::MissingKey,
];

/// What the pipeline makes of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Loaded(Note),
    Duplicate,
    Quarantined(ReasonCode),
}

/// The one thing worth counting about a loaded row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    Plain,
    AmountFilled,
    Outlier,
    MessyRegion,
    InferredCustomer(u64),
    InferredProduct(u64),
}

#[derive(Debug, Clone, Copy)]
enum Key {
    /// Index into the reference data.
    Known(u64),
    /// Index into the pool of unknown ids.
    Unknown(u64),
    /// Empty (`""`), or JSON `null` when `null` is set.
    Missing { null: bool },
}

#[derive(Debug, Clone, Copy)]
enum Amount {
    Cents(u64),
    Missing,
    /// Variant of malformed number text.
    Malformed(u8),
}

/// One sales row before it is written.
#[derive(Debug, Clone)]
struct Line {
    ordinal: u64,
    day: u64,
    bad_date: Option<&'static str>,
    /// Seconds after midnight (e-commerce timestamps).
    secs: u64,
    customer: Key,
    product: Key,
    store: u64,
    person: u64,
    quantity: u64,
    bad_quantity: Option<&'static str>,
    unit_price: Option<u64>,
    amount: Amount,
    currency: &'static str,
    region: u8,
    messy_region: Option<&'static str>,
    status: &'static str,
    campaign: Option<usize>,
}

/// Counts of row outcomes, for one file or many.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    loaded: u64,
    duplicates: u64,
    quarantined: [u64; ReasonCode::ALL.len()],
    amount_filled: u64,
    outliers: u64,
    messy_region: u64,
    inferred_customer_rows: u64,
    inferred_product_rows: u64,
    /// Bit k set: unknown customer k of the pool was used.
    customer_pool: u128,
    product_pool: u128,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Quarantined(reason) => {
                let i = ReasonCode::ALL
                    .iter()
                    .position(|r| *r == reason)
                    .expect("listed");
                self.quarantined[i] += 1;
            }
            Outcome::Loaded(note) => {
                self.loaded += 1;
                match note {
                    Note::Plain => {}
                    Note::AmountFilled => self.amount_filled += 1,
                    Note::Outlier => self.outliers += 1,
                    Note::MessyRegion => self.messy_region += 1,
                    Note::InferredCustomer(k) => {
                        self.inferred_customer_rows += 1;
                        self.customer_pool |= 1 << k;
                    }
                    Note::InferredProduct(k) => {
                        self.inferred_product_rows += 1;
                        self.product_pool |= 1 << k;
                    }
                }
            }
        }
    }

    pub(crate) fn merge(&mut self, o: &Tally) {
        self.loaded += o.loaded;
        self.duplicates += o.duplicates;
        for (a, b) in self.quarantined.iter_mut().zip(o.quarantined) {
            *a += b;
        }
        self.amount_filled += o.amount_filled;
        self.outliers += o.outliers;
        self.messy_region += o.messy_region;
        self.inferred_customer_rows += o.inferred_customer_rows;
        self.inferred_product_rows += o.inferred_product_rows;
        self.customer_pool |= o.customer_pool;
        self.product_pool |= o.product_pool;
    }

    pub(crate) fn expected(&self) -> Expected {
        let quarantined: BTreeMap<String, u64> = ReasonCode::ALL
            .iter()
            .zip(self.quarantined)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str().to_string(), n))
            .collect();
        Expected {
            loaded: self.loaded,
            duplicates: self.duplicates,
            quarantined,
            amount_filled: self.amount_filled,
            outliers: self.outliers,
            messy_region: self.messy_region,
            inferred_customer_rows: self.inferred_customer_rows,
            inferred_product_rows: self.inferred_product_rows,
            inferred_customers: u64::from(self.customer_pool.count_ones()),
            inferred_products: u64::from(self.product_pool.count_ones()),
        }
    }
}

/// The row generator: reference data, the file plan and the defect thresholds.
pub(crate) struct Sales<'a> {
    world: &'a World,
    plan: &'a Plan,
    seed: u64,
    /// Cumulative thresholds of [`DEFECT_FATES`] on `[0, 1)`.
    thresholds: [f64; 12],
    unfillable_share: f64,
}

impl<'a> Sales<'a> {
    pub(crate) fn new(world: &'a World, plan: &'a Plan, seed: u64, defects: &DefectRates) -> Self {
        let mut sum = 0.0;
        let thresholds = defects.per_row().map(|(_, rate)| {
            sum += rate;
            sum
        });
        Sales {
            world,
            plan,
            seed,
            thresholds,
            unfillable_share: defects.unfillable_share,
        }
    }

    fn rng(&self, src: Source, file: u64, row: u64) -> Rng {
        Rng::from_parts(&[self.seed, src.stream(), file, row])
    }

    /// The row's fate: always the first draw of its stream.
    fn fate(&self, rng: &mut Rng) -> Fate {
        let u = rng.unit();
        self.thresholds
            .iter()
            .position(|t| u < *t)
            .map_or(Fate::Clean, |i| DEFECT_FATES[i])
    }

    fn is_clean(&self, src: Source, file: u64, row: u64) -> bool {
        self.fate(&mut self.rng(src, file, row)) == Fate::Clean
    }

    /// A clean row of `file` among its first `rows`, if a few tries find one.
    fn find_clean(&self, src: Source, file: u64, rows: u64, rng: &mut Rng) -> Option<u64> {
        if rows == 0 {
            return None;
        }
        (0..8)
            .map(|_| rng.below(rows))
            .find(|&j| self.is_clean(src, file, j))
    }

    /// The clean row at (file, row), exactly as it is written there.
    fn clean_copy(&self, src: Source, file: u64, row: u64) -> Line {
        let mut rng = self.rng(src, file, row);
        let fate = self.fate(&mut rng);
        debug_assert_eq!(fate, Fate::Clean);
        self.base(src, file, row, &mut rng)
    }

    fn row(&self, src: Source, file: u64, row: u64) -> (Outcome, Line) {
        let mut rng = self.rng(src, file, row);
        let fate = self.fate(&mut rng);
        match fate {
            Fate::DupInFile => {
                if let Some(j) = self.find_clean(src, file, row, &mut rng) {
                    return (Outcome::Duplicate, self.clean_copy(src, file, j));
                }
            }
            Fate::DupAcrossFiles if file > 0 => {
                let prev_rows = self.plan.rows_in(src, file - 1);
                if let Some(j) = self.find_clean(src, file - 1, prev_rows, &mut rng) {
                    return (Outcome::Duplicate, self.clean_copy(src, file - 1, j));
                }
            }
            _ => {}
        }
        // A duplicate with nothing to copy is written as a clean row of its own.
        let mut line = self.base(src, file, row, &mut rng);
        let w = self.world;
        let outcome = match fate {
            Fate::Clean | Fate::DupInFile | Fate::DupAcrossFiles => Outcome::Loaded(Note::Plain),
            Fate::MissingAmount => {
                line.amount = Amount::Missing;
                if rng.chance(self.unfillable_share) {
                    line.unit_price = None;
                    Outcome::Quarantined(ReasonCode::MissingAmount)
                } else {
                    Outcome::Loaded(Note::AmountFilled)
                }
            }
            Fate::Outlier => {
                line.quantity = rng.range(40, 120);
                let price = line.unit_price.expect("clean rows have a price");
                line.amount = Amount::Cents(line.quantity * price);
                line.status = "OUT";
                Outcome::Loaded(Note::Outlier)
            }
            Fate::BadDate => {
                let bad = match src {
                    Source::Store => rng.pick(&BAD_DATES),
                    Source::Ecommerce => rng.pick(&BAD_TIMESTAMPS),
                };
                line.bad_date = Some(bad);
                Outcome::Quarantined(ReasonCode::BadDate)
            }
            Fate::BadNumber => {
                if src == Source::Store && rng.chance(0.5) {
                    line.bad_quantity = Some(rng.pick(&BAD_QUANTITIES));
                } else {
                    line.amount = Amount::Malformed(rng.below(2) as u8);
                }
                Outcome::Quarantined(ReasonCode::BadNumber)
            }
            Fate::MessyRegion => {
                line.messy_region = Some(rng.pick(&MESSY_REGIONS[usize::from(line.region)]));
                Outcome::Loaded(Note::MessyRegion)
            }
            Fate::UnknownCurrency => {
                line.currency = rng.pick(&UNKNOWN_CURRENCIES);
                Outcome::Quarantined(ReasonCode::UnknownCurrency)
            }
            Fate::MissingFxRate => {
                let days = w.days.len() as u64;
                line.day = w.last_month_start + rng.below(days - w.last_month_start);
                self.price_in(&mut line, JPY);
                Outcome::Quarantined(ReasonCode::MissingFxRate)
            }
            // Orders name products, always real ones: nothing to make unknown.
            Fate::UnknownProduct if src == Source::Ecommerce => Outcome::Loaded(Note::Plain),
            Fate::UnknownProduct => {
                let k = rng.below(PRODUCT_POOL);
                line.product = Key::Unknown(k);
                Outcome::Loaded(Note::InferredProduct(k))
            }
            Fate::UnknownCustomer => {
                let k = rng.below(CUSTOMER_POOL);
                line.customer = Key::Unknown(k);
                Outcome::Loaded(Note::InferredCustomer(k))
            }
            Fate::MissingKey => {
                line.customer = Key::Missing {
                    null: src == Source::Ecommerce && rng.chance(0.5),
                };
                Outcome::Quarantined(ReasonCode::MissingKey)
            }
        };
        (outcome, line)
    }

    /// A clean row.
    fn base(&self, src: Source, file: u64, row: u64, rng: &mut Rng) -> Line {
        let w = self.world;
        let day = rng.below(w.days.len() as u64);
        let customer = rng.skewed(w.customers.len() as u64);
        let product = rng.skewed(w.products.len() as u64);
        let quantity = rng.pick(&QUANTITIES);
        let status = if rng.chance(REFUND_RATE) {
            "REFUNDED"
        } else {
            "COMPLETED"
        };
        let (store, person, currency, region, secs, campaign) = match src {
            Source::Store => {
                let store = rng.below(w.stores.len() as u64);
                let s = &w.stores[store as usize];
                let person = s.team_first + rng.below(s.team_len);
                (store, person, s.currency, s.region, 0, None)
            }
            Source::Ecommerce => {
                let secs = rng.below(86_400);
                let c = &w.customers[customer as usize];
                let campaign = w
                    .campaigns
                    .iter()
                    .position(|&(from, to)| (from..=to).contains(&day))
                    .filter(|_| rng.chance(CAMPAIGN_SHARE));
                (0, 0, c.currency, c.region, secs, campaign)
            }
        };
        let mut line = Line {
            ordinal: file * self.plan.rows_per_file + row,
            day,
            bad_date: None,
            secs,
            customer: Key::Known(customer),
            product: Key::Known(product),
            store,
            person,
            quantity,
            bad_quantity: None,
            unit_price: None,
            amount: Amount::Missing,
            currency: "",
            region,
            messy_region: None,
            status,
            campaign,
        };
        // No JPY rate for the last month: clean rows pay in USD then.
        let currency = if currency == JPY && day >= w.last_month_start {
            USD
        } else {
            currency
        };
        self.price_in(&mut line, currency);
        line
    }

    /// Sets currency, unit price and amount of a row in currency `c`.
    fn price_in(&self, line: &mut Line, c: u8) {
        let Key::Known(p) = line.product else {
            unreachable!("priced before the product changes")
        };
        let price = self.world.products[p as usize].local_cents[usize::from(c)];
        line.currency = CURRENCY_TABLE[usize::from(c)].0;
        line.unit_price = Some(price);
        line.amount = Amount::Cents(line.quantity * price);
    }

    fn push_id(&self, out: &mut Vec<u8>, prefix: u8, key: Key, width: usize) {
        match key {
            Key::Known(i) => {
                out.push(prefix);
                push_padded(out, i + 1, width);
            }
            Key::Unknown(k) => {
                // One digit longer than any real id: never collides with one.
                out.push(prefix);
                out.push(b'9');
                push_padded(out, k + 1, width);
            }
            Key::Missing { .. } => {}
        }
    }

    fn render_csv(&self, line: &Line, out: &mut Vec<u8>) {
        let w = self.world;
        out.push(b'S');
        push_padded(out, line.ordinal + 1, 9);
        out.push(b',');
        match line.bad_date {
            Some(bad) => out.extend_from_slice(bad.as_bytes()),
            None => out.extend_from_slice(&w.days[line.day as usize]),
        }
        out.push(b',');
        self.push_id(out, b'C', line.customer, w.customer_width);
        out.push(b',');
        self.push_id(out, b'P', line.product, w.product_width);
        out.push(b',');
        push_u64(out, line.store + 1);
        out.push(b',');
        push_u64(out, line.person);
        out.push(b',');
        match line.bad_quantity {
            Some(bad) => out.extend_from_slice(bad.as_bytes()),
            None => push_u64(out, line.quantity),
        }
        out.push(b',');
        if let Some(p) = line.unit_price {
            push_cents(out, p);
        }
        out.push(b',');
        push_amount_text(out, line);
        out.push(b',');
        out.extend_from_slice(line.currency.as_bytes());
        out.push(b',');
        out.extend_from_slice(region_text(line).as_bytes());
        out.push(b',');
        out.extend_from_slice(line.status.as_bytes());
        out.push(b'\n');
    }

    fn render_json(&self, line: &Line, out: &mut Vec<u8>) {
        let w = self.world;
        out.extend_from_slice(b"{\"order_id\":\"E");
        push_padded(out, line.ordinal + 1, 9);
        out.extend_from_slice(b"\",\"order_date\":\"");
        match line.bad_date {
            Some(bad) => out.extend_from_slice(bad.as_bytes()),
            None => {
                out.extend_from_slice(&w.days[line.day as usize]);
                out.push(b'T');
                push_padded(out, line.secs / 3600, 2);
                out.push(b':');
                push_padded(out, line.secs / 60 % 60, 2);
                out.push(b':');
                push_padded(out, line.secs % 60, 2);
                out.push(b'Z');
            }
        }
        out.extend_from_slice(b"\",\"customer_id\":");
        match line.customer {
            Key::Missing { null: true } => out.extend_from_slice(b"null"),
            key => {
                out.push(b'"');
                self.push_id(out, b'C', key, w.customer_width);
                out.push(b'"');
            }
        }
        out.extend_from_slice(b",\"product_name\":");
        let Key::Known(p) = line.product else {
            unreachable!("orders name real products")
        };
        out.extend_from_slice(w.products[p as usize].name_json.as_bytes());
        out.extend_from_slice(b",\"quantity\":");
        push_u64(out, line.quantity);
        out.extend_from_slice(b",\"price\":");
        match line.unit_price {
            Some(p) => push_cents(out, p),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"total_amount\":");
        match line.amount {
            Amount::Cents(c) => push_cents(out, c),
            Amount::Missing => out.extend_from_slice(b"null"),
            Amount::Malformed(_) => {
                out.push(b'"');
                push_amount_text(out, line);
                out.push(b'"');
            }
        }
        out.extend_from_slice(b",\"currency\":\"");
        out.extend_from_slice(line.currency.as_bytes());
        out.extend_from_slice(b"\",\"status\":\"");
        out.extend_from_slice(line.status.as_bytes());
        out.extend_from_slice(b"\",\"channel\":\"ecommerce\",\"campaign_id\":");
        match line.campaign {
            Some(c) => {
                out.extend_from_slice(b"\"CMP");
                push_padded(out, c as u64 + 1, 2);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"region\":\"");
        out.extend_from_slice(region_text(line).as_bytes());
        out.extend_from_slice(b"\"}");
    }

    /// Writes sales file `file` of `src` to `w`; returns what the pipeline will make of it.
    /// `progress` hears of every `PROGRESS_EVERY` rows, and of the rest at the end.
    pub(crate) fn write_file(
        &self,
        src: Source,
        file: u64,
        w: &mut dyn Write,
        progress: &(dyn Fn(u64) + Sync),
    ) -> io::Result<Tally> {
        const CHUNK: usize = 1 << 20;
        const PROGRESS_EVERY: u64 = 1 << 16;
        let layout = self.plan.layout(src, file);
        let rows = self.plan.rows_in(src, file);
        let mut tally = Tally::default();
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        let mut sink = match layout {
            Layout::CsvGz => Sink::Gzip(Box::new(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::fast(),
            ))),
            _ => Sink::Plain(w),
        };
        match layout {
            Layout::Csv | Layout::CsvGz => buf.extend_from_slice(STORE_HEADER.as_bytes()),
            Layout::JsonArray => buf.extend_from_slice(b"["),
            Layout::Ndjson => {}
        }
        for row in 0..rows {
            let (outcome, line) = self.row(src, file, row);
            tally.add(outcome);
            match layout {
                Layout::Csv | Layout::CsvGz => self.render_csv(&line, &mut buf),
                Layout::Ndjson => {
                    self.render_json(&line, &mut buf);
                    buf.push(b'\n');
                }
                Layout::JsonArray => {
                    buf.extend_from_slice(if row == 0 { b"\n  " } else { b",\n  " });
                    self.render_json(&line, &mut buf);
                }
            }
            if buf.len() >= CHUNK {
                sink.write_all(&buf)?;
                buf.clear();
            }
            if (row + 1).is_multiple_of(PROGRESS_EVERY) {
                progress(PROGRESS_EVERY);
            }
        }
        if layout == Layout::JsonArray {
            buf.extend_from_slice(b"\n]\n");
        }
        sink.write_all(&buf)?;
        sink.finish()?;
        if !rows.is_multiple_of(PROGRESS_EVERY) {
            progress(rows % PROGRESS_EVERY);
        }
        Ok(tally)
    }
}

fn region_text(line: &Line) -> &'static str {
    line.messy_region
        .unwrap_or(REGIONS[usize::from(line.region)])
}

/// The amount as text: `12.34`, nothing when missing, or malformed (`12.34.5`, `12..34`).
fn push_amount_text(out: &mut Vec<u8>, line: &Line) {
    match line.amount {
        Amount::Cents(c) => push_cents(out, c),
        Amount::Missing => {}
        Amount::Malformed(variant) => {
            let c = line.quantity * line.unit_price.unwrap_or(100);
            push_u64(out, c / 100);
            if variant == 0 {
                out.push(b'.');
                push_padded(out, c % 100, 2);
                out.push(b'.');
                push_u64(out, 1 + c % 9);
            } else {
                out.extend_from_slice(b"..");
                push_padded(out, c % 100, 2);
            }
        }
    }
}

enum Sink<'w> {
    Plain(&'w mut dyn Write),
    Gzip(Box<flate2::write::GzEncoder<&'w mut dyn Write>>),
}

impl Sink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(bytes),
            Sink::Gzip(g) => g.write_all(bytes),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(g) => g.finish()?.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoplake_core::values::{
        DATE_FORMATS, normalize_currency, normalize_region, parse_date_iso, parse_date_with,
        parse_decimal, parse_integer,
    };

    #[test]
    fn bad_dates_fail_every_date_format() {
        for bad in BAD_DATES.iter().chain(&BAD_TIMESTAMPS) {
            assert_eq!(parse_date_iso(bad), None, "{bad}");
            for f in DATE_FORMATS {
                assert_eq!(parse_date_with(bad, f), None, "{bad} as {f}");
            }
            assert!(
                !shoplake_core::values::is_null_marker(bad),
                "{bad} would read as empty"
            );
        }
    }

    #[test]
    fn bad_numbers_do_not_parse() {
        for bad in BAD_QUANTITIES {
            assert!(parse_integer(bad).is_err(), "{bad}");
        }
        for cents in [0, 5, 1299, 120_000, 987_654] {
            for variant in 0..2 {
                let line = Line {
                    ordinal: 0,
                    day: 0,
                    bad_date: None,
                    secs: 0,
                    customer: Key::Known(0),
                    product: Key::Known(0),
                    store: 0,
                    person: 1,
                    quantity: 1,
                    bad_quantity: None,
                    unit_price: Some(cents),
                    amount: Amount::Malformed(variant),
                    currency: "USD",
                    region: 0,
                    messy_region: None,
                    status: "COMPLETED",
                    campaign: None,
                };
                let mut text = Vec::new();
                push_amount_text(&mut text, &line);
                let text = String::from_utf8(text).unwrap();
                assert!(parse_decimal(&text, 2).is_err(), "{text}");
                assert!(parse_decimal(&text, 4).is_err(), "{text}");
                assert!(!text.contains(','), "{text}");
            }
        }
    }

    #[test]
    fn unknown_currencies_are_unknown() {
        for code in UNKNOWN_CURRENCIES {
            assert!(normalize_currency(code).is_err(), "{code}");
        }
    }

    #[test]
    fn messy_regions_normalise_back() {
        for (clean, variants) in REGIONS.iter().zip(MESSY_REGIONS) {
            for v in variants {
                assert_ne!(v, *clean);
                assert_eq!(normalize_region(v).as_deref(), Some(*clean), "{v:?}");
                assert!(!v.contains([',', '"']), "{v:?}");
            }
        }
    }

    #[test]
    fn file_plan() {
        let plan = Plan::new(10, 3, true);
        assert_eq!(
            (plan.files(Source::Store), plan.files(Source::Ecommerce)),
            (3, 1)
        );
        assert_eq!(plan.rows_in(Source::Store, 2), 1);
        assert_eq!(plan.file_name(Source::Store, 2), "store_sales_0003.csv.gz");
        assert_eq!(
            Plan::new(10, 3, false).file_name(Source::Store, 2),
            "store_sales_0003.csv"
        );
        let plan = Plan::new(100_000, 3, true);
        assert_eq!(plan.file_name(Source::Ecommerce, 3), "orders_00004.json");
        assert_eq!(plan.file_name(Source::Ecommerce, 4), "orders_00005.ndjson");
        assert!(Source::Store.owns_file_name("store_sales_0001.csv.gz"));
        assert!(Source::Ecommerce.owns_file_name("orders_12345.json"));
        for other in [
            "store_sales_.csv",
            "store_sales_01.csv.bak",
            "orders_1.csv",
            "notes.txt",
        ] {
            assert!(!Source::Store.owns_file_name(other), "{other}");
            assert!(!Source::Ecommerce.owns_file_name(other), "{other}");
        }
    }
}
