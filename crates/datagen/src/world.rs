//! Reference data: stores, their sales teams, products, customers, campaigns and monthly FX
//! rates. [`World::build`] derives all of it from the seed; the sales writers look rows up in it,
//! and [`World::write_reference_files`] writes it out in each source's own shape.

use crate::rng::{Rng, stream};
use crate::text::{date_bytes, digits, micros_text};
use crate::{FileReport, GenerateConfig, GenerateError, write_atomically};
use chrono::{Datelike, Days, NaiveDate};
use serde::Serialize;
use shoplake_core::values::REGIONS;
use std::io::Write;
use std::path::Path;

/// Currencies the generated stores and customers trade in, with an approximate rate (USD per
/// unit, in millionths) used both for local prices and as the centre of the monthly rates.
pub(crate) const CURRENCY_TABLE: [(&str, u64); 6] = [
    ("USD", 1_000_000),
    ("EUR", 1_083_000),
    ("GBP", 1_268_000),
    ("INR", 11_950),
    ("CAD", 738_000),
    ("JPY", 6_650),
];
pub(crate) const USD: u8 = 0;
pub(crate) const JPY: u8 = 5;

/// Currency of store `i` (0-based): most stores sell in USD, every tenth store in each other one.
const STORE_CURRENCY_CYCLE: [u8; 10] = [0, 0, 0, 0, 0, 1, 2, 3, 4, 5];

const CITIES: [[&str; 4]; 5] = [
    ["Springfield", "Lakeview", "Northbrook", "Pine Ridge"],
    ["Riverside", "Magnolia", "Port Haven", "Cedar Bluff"],
    ["Fairview", "Harbor City", "Brookside", "Maple Heights"],
    ["Sunset Valley", "Mesa Verde", "Westport", "Redwood"],
    ["Centerville", "Oak Park", "Midland", "Franklin"],
];
const STREETS: [&str; 16] = [
    "Maple Street",
    "Oak Avenue",
    "Main Street",
    "Park Road",
    "Cedar Lane",
    "Elm Street",
    "Hill Road",
    "Lake Drive",
    "Station Road",
    "Church Lane",
    "Market Street",
    "River Road",
    "Garden Way",
    "Mill Lane",
    "High Street",
    "Forest Avenue",
];
const FIRST_NAMES: [&str; 40] = [
    "Ava", "Liam", "Olivia", "Noah", "Emma", "Arjun", "Sophia", "Mateo", "Isabella", "Lucas",
    "Mia", "Ethan", "Amelia", "Aiden", "Harper", "Rohan", "Evelyn", "James", "Priya", "Benjamin",
    "Chloe", "Daniel", "Zoe", "Samuel", "Nora", "Kenji", "Leah", "Omar", "Grace", "Diego",
    "Hannah", "Yuki", "Aria", "Elijah", "Maya", "Ravi", "Lily", "Henry", "Sara", "Jack",
];
const LAST_NAMES: [&str; 40] = [
    "Smith", "Patel", "Johnson", "Garcia", "Brown", "Nguyen", "Williams", "Khan", "Jones",
    "Martinez", "Miller", "Sharma", "Davis", "Lopez", "Wilson", "Tanaka", "Anderson", "Singh",
    "Thomas", "Kim", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
    "Harris", "Clark", "Lewis", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green",
    "Baker", "Hall",
];
const ADJECTIVES: [&str; 24] = [
    "Classic",
    "Premium",
    "Organic",
    "Everyday",
    "Deluxe",
    "Compact",
    "Eco",
    "Vintage",
    "Ultra",
    "Essential",
    "Signature",
    "Urban",
    "Coastal",
    "Alpine",
    "Bright",
    "Midnight",
    "Golden",
    "Rustic",
    "Nordic",
    "Sunny",
    "Modern",
    "Pure",
    "Bold",
    "Royal",
];
const SIZES: [&str; 10] = [
    "Small",
    "Medium",
    "Large",
    "XL",
    "Mini",
    "Twin Pack",
    "Family Size",
    "Travel Size",
    "Pack of 3",
    "Pack of 6",
];
/// Categories: name, nouns, price range in whole dollars.
const CATEGORIES: [(&str, &[&str], u64, u64); 8] = [
    (
        "Groceries",
        &[
            "Coffee Beans",
            "Green Tea",
            "Olive Oil",
            "Pasta",
            "Granola",
            "Honey",
            "Dark Chocolate",
            "Rice",
        ],
        2,
        25,
    ),
    (
        "Beverages",
        &[
            "Sparkling Water",
            "Orange Juice",
            "Cold Brew",
            "Kombucha",
            "Lemonade",
            "Iced Tea",
        ],
        1,
        12,
    ),
    (
        "Electronics",
        &[
            "Headphones",
            "Power Bank",
            "USB-C Cable",
            "Smart Speaker",
            "Keyboard",
            "Webcam",
            "Phone Case",
        ],
        10,
        300,
    ),
    (
        "Home & Kitchen",
        &[
            "Ceramic Mug",
            "Chef Knife",
            "Cutting Board",
            "Table Lamp",
            "Throw Pillow",
            "Bath Towel",
            "Candle",
        ],
        5,
        120,
    ),
    (
        "Apparel",
        &[
            "T-Shirt",
            "Hoodie",
            "Jeans",
            "Rain Jacket",
            "Sneakers",
            "Wool Socks",
        ],
        8,
        150,
    ),
    (
        "Beauty",
        &[
            "Face Cream",
            "Shampoo",
            "Lip Balm",
            "Sunscreen",
            "Body Lotion",
            "Perfume",
        ],
        3,
        90,
    ),
    (
        "Sports & Outdoors",
        &[
            "Yoga Mat",
            "Water Bottle",
            "Tennis Balls",
            "Camping Chair",
            "Dumbbell",
            "Backpack",
        ],
        6,
        200,
    ),
    (
        "Toys & Games",
        &[
            "Puzzle",
            "Board Game",
            "Building Blocks",
            "Plush Bear",
            "Card Game",
            "Kite",
        ],
        5,
        80,
    ),
];
const PRICE_ENDINGS: [u64; 4] = [99, 49, 95, 0];
const CAMPAIGNS: [(&str, &str); 6] = [
    ("New Year Kickoff", "email"),
    ("Spring Refresh", "social"),
    ("Weekend Flash Sale", "search"),
    ("Loyalty Rewards", "email"),
    ("Summer Preview", "display"),
    ("Clearance Event", "affiliate"),
];

pub(crate) struct Store {
    pub region: u8,
    pub currency: u8,
    /// Sales people of this store are ids `team_first .. team_first + team_len`.
    pub team_first: u64,
    pub team_len: u64,
    name: String,
    address: String,
    city: &'static str,
    pincode: u64,
    manager_name: String,
    opening_date: NaiveDate,
}

struct TeamMember {
    id: u64,
    first_name: &'static str,
    last_name: &'static str,
    store_id: u64,
    manager_id: Option<u64>,
    joining_date: NaiveDate,
}

pub(crate) struct Product {
    /// The name as a JSON string literal, quotes included.
    pub name_json: String,
    /// Price in cents in each currency of [`CURRENCY_TABLE`].
    pub local_cents: [u64; 6],
    name: String,
    category: &'static str,
    usd_cents: u64,
}

pub(crate) struct Customer {
    pub region: u8,
    /// The currency this customer pays in online.
    pub currency: u8,
}

#[derive(Serialize)]
struct CustomerRecord<'a> {
    customer_id: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    phone: &'a str,
    address: &'a str,
    city: &'a str,
    region: &'a str,
    join_date: NaiveDate,
}

#[derive(Serialize)]
struct ProductRecord<'a> {
    product_id: String,
    product_name: &'a str,
    category: &'a str,
    unit_price: f64,
}

#[derive(Serialize)]
struct CampaignRecord<'a> {
    campaign_id: String,
    campaign_name: String,
    channel: &'a str,
    start_date: NaiveDate,
    end_date: NaiveDate,
    budget: f64,
}

pub(crate) struct World {
    seed: u64,
    start: NaiveDate,
    /// `YYYY-MM-DD` of every day of the range, by day index.
    pub days: Vec<[u8; 10]>,
    /// Index of the first day of the range's last month: JPY has no rate from here on.
    pub last_month_start: u64,
    pub stores: Vec<Store>,
    team: Vec<TeamMember>,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    /// Day-index windows (inclusive) of campaigns `CMP01..`.
    pub campaigns: Vec<(u64, u64)>,
    /// Digits in product ids (`P0001`) and customer ids (`C00001`).
    pub product_width: usize,
    pub customer_width: usize,
}

impl World {
    pub(crate) fn build(config: &GenerateConfig) -> World {
        let seed = config.seed;
        let start = config.start_date;
        let ndays = (config.end_date - start).num_days() as u64 + 1;
        let days: Vec<[u8; 10]> = (0..ndays)
            .map(|i| date_bytes(start + Days::new(i)))
            .collect();
        let last_month_first = config.end_date.with_day(1).expect("day 1 exists");
        let last_month_start = (last_month_first - start).num_days().max(0) as u64;

        let (stores, team) = build_stores(seed, config.stores);
        let products = build_products(seed, config.products);
        let customers = (0..config.customers)
            .map(|i| {
                let mut rng = Rng::from_parts(&[seed, stream::CUSTOMERS, i]);
                customer_basics(&mut rng)
            })
            .collect();
        let campaigns = (0..CAMPAIGNS.len() as u64)
            .map(|c| {
                let n = CAMPAIGNS.len() as u64;
                let from = c * ndays / n;
                let to = ((c + 1) * ndays / n + 6).min(ndays - 1).max(from);
                (from, to)
            })
            .collect();
        World {
            seed,
            start,
            days,
            last_month_start,
            stores,
            team,
            products,
            customers,
            campaigns,
            product_width: digits(config.products).max(4),
            customer_width: digits(config.customers).max(5),
        }
    }

    pub(crate) fn day(&self, index: u64) -> NaiveDate {
        self.start + Days::new(index)
    }

    /// Writes the six reference files; returns their reports in write order.
    pub(crate) fn write_reference_files(
        &self,
        config: &GenerateConfig,
        out_dir: &Path,
    ) -> Result<Vec<FileReport>, GenerateError> {
        let mut files = Vec::new();
        let mut put = |source: &str,
                       name: &str,
                       rows: u64,
                       f: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
            let rel = format!("{source}/{name}");
            write_atomically(&out_dir.join(&rel), f)?;
            files.push(FileReport {
                path: rel,
                source: source.to_string(),
                rows,
                expected: None,
            });
            Ok::<(), GenerateError>(())
        };

        let months = self.months(config.end_date);
        let fx_rows =
            months.len() as u64 * (CURRENCY_TABLE.len() as u64 - 1) + months.len() as u64 - 1;
        put("fx_rates", "fx_rates.csv", fx_rows, &|w| {
            self.write_fx(w, &months)
        })?;
        put("stores", "stores.csv", self.stores.len() as u64, &|w| {
            self.write_stores(w)
        })?;
        put(
            "products",
            "products.json",
            self.products.len() as u64,
            &|w| self.write_products(w),
        )?;
        put(
            "customers",
            "customers.ndjson",
            self.customers.len() as u64,
            &|w| self.write_customers(w),
        )?;
        put(
            "sales_team",
            "sales_team.csv",
            self.team.len() as u64,
            &|w| self.write_team(w),
        )?;
        put(
            "campaigns",
            "campaigns.json",
            self.campaigns.len() as u64,
            &|w| self.write_campaigns(w),
        )?;
        Ok(files)
    }

    /// First day of every month of the range.
    fn months(&self, end: NaiveDate) -> Vec<NaiveDate> {
        let mut out = Vec::new();
        let mut m = self.start.with_day(1).expect("day 1 exists");
        while m <= end {
            out.push(m);
            m = m
                .checked_add_months(chrono::Months::new(1))
                .expect("date in range");
        }
        out
    }

    fn write_fx(&self, w: &mut dyn Write, months: &[NaiveDate]) -> std::io::Result<()> {
        writeln!(w, "currency,month,rate_to_usd")?;
        for (c, (code, base)) in CURRENCY_TABLE.iter().enumerate() {
            for (i, m) in months.iter().enumerate() {
                if c == usize::from(JPY) && i + 1 == months.len() {
                    continue; // the gap that makes `missing_fx_rate`
                }
                let rate = if c == usize::from(USD) {
                    1_000_000
                } else {
                    // Within +-2.5% of the base rate, drifting month to month.
                    let mut rng =
                        Rng::from_parts(&[self.seed, stream::FX_RATES, c as u64, i as u64]);
                    let basis_points = 9_750 + rng.below(501);
                    base * basis_points / 10_000
                };
                writeln!(
                    w,
                    "{code},{:04}-{:02},{}",
                    m.year(),
                    m.month(),
                    micros_text(rate)
                )?;
            }
        }
        Ok(())
    }

    fn write_stores(&self, w: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            w,
            "id,store_name,address,city,store_pincode,region,store_manager_name,store_opening_date"
        )?;
        for (i, s) in self.stores.iter().enumerate() {
            let fields = [
                (i + 1).to_string(),
                s.name.clone(),
                s.address.clone(),
                s.city.to_string(),
                s.pincode.to_string(),
                REGIONS[usize::from(s.region)].to_string(),
                s.manager_name.clone(),
                s.opening_date.to_string(),
            ];
            write_csv_record(w, &fields)?;
        }
        Ok(())
    }

    fn write_team(&self, w: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            w,
            "id,first_name,last_name,store_id,manager_id,is_manager,joining_date"
        )?;
        for m in &self.team {
            let fields = [
                m.id.to_string(),
                m.first_name.to_string(),
                m.last_name.to_string(),
                m.store_id.to_string(),
                m.manager_id.map(|id| id.to_string()).unwrap_or_default(),
                if m.manager_id.is_none() { "Y" } else { "N" }.to_string(),
                m.joining_date.to_string(),
            ];
            write_csv_record(w, &fields)?;
        }
        Ok(())
    }

    fn write_products(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let records: Vec<ProductRecord<'_>> = self
            .products
            .iter()
            .enumerate()
            .map(|(i, p)| ProductRecord {
                product_id: self.product_id(i as u64),
                product_name: &p.name,
                category: p.category,
                unit_price: p.usd_cents as f64 / 100.0,
            })
            .collect();
        serde_json::to_writer_pretty(&mut *w, &records)?;
        writeln!(w)
    }

    fn write_customers(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for i in 0..self.customers.len() as u64 {
            let mut rng = Rng::from_parts(&[self.seed, stream::CUSTOMERS, i]);
            let basics = customer_basics(&mut rng);
            let first = rng.pick(&FIRST_NAMES);
            let last = rng.pick(&LAST_NAMES);
            let id = self.customer_id(i);
            let email = format!(
                "{}.{}{}@example.com",
                first.to_lowercase(),
                last.to_lowercase(),
                i + 1
            );
            let phone = format!("+1-555-{:03}-{:04}", rng.below(1000), rng.below(10_000));
            let address = format!("{} {}", rng.range(1, 999), rng.pick(&STREETS));
            let city = rng.pick(&CITIES[usize::from(basics.region)]);
            let earliest = self.start - Days::new(5 * 365);
            let join_date = earliest + Days::new(rng.below(5 * 365));
            let record = CustomerRecord {
                customer_id: &id,
                first_name: first,
                last_name: last,
                email: &email,
                phone: &phone,
                address: &address,
                city,
                region: REGIONS[usize::from(basics.region)],
                join_date,
            };
            serde_json::to_writer(&mut *w, &record)?;
            writeln!(w)?;
        }
        Ok(())
    }

    fn write_campaigns(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let records: Vec<CampaignRecord<'_>> = self
            .campaigns
            .iter()
            .enumerate()
            .map(|(i, &(from, to))| {
                let mut rng = Rng::from_parts(&[self.seed, stream::CAMPAIGNS, i as u64]);
                let (name, channel) = CAMPAIGNS[i];
                let start_date = self.day(from);
                CampaignRecord {
                    campaign_id: campaign_id(i),
                    campaign_name: format!("{name} {}", start_date.year()),
                    channel,
                    start_date,
                    end_date: self.day(to),
                    budget: (rng.range(50, 500) * 100) as f64,
                }
            })
            .collect();
        serde_json::to_writer_pretty(&mut *w, &records)?;
        writeln!(w)
    }

    pub(crate) fn product_id(&self, index: u64) -> String {
        format!("P{:0w$}", index + 1, w = self.product_width)
    }

    pub(crate) fn customer_id(&self, index: u64) -> String {
        format!("C{:0w$}", index + 1, w = self.customer_width)
    }
}

/// `CMP01`, `CMP02`, ... for campaign index 0, 1, ... (the order writer spells it out too).
fn campaign_id(index: usize) -> String {
    format!("CMP{:02}", index + 1)
}

fn customer_basics(rng: &mut Rng) -> Customer {
    let region = rng.below(REGIONS.len() as u64) as u8;
    // 88% USD, 3% EUR, 3% GBP, 2% each INR, CAD, JPY.
    let currency = match rng.below(100) {
        0..88 => 0,
        88..91 => 1,
        91..94 => 2,
        94..96 => 3,
        96..98 => 4,
        _ => JPY,
    };
    Customer { region, currency }
}

fn build_stores(seed: u64, count: u64) -> (Vec<Store>, Vec<TeamMember>) {
    let mut stores = Vec::new();
    let mut team = Vec::new();
    for i in 0..count {
        let mut rng = Rng::from_parts(&[seed, stream::STORES, i]);
        let region = (i % REGIONS.len() as u64) as u8;
        let city = rng.pick(&CITIES[usize::from(region)]);
        let opening_date =
            NaiveDate::from_ymd_opt(2012, 1, 1).expect("valid") + Days::new(rng.below(10 * 365));
        let team_first = team.len() as u64 + 1;
        let team_len = rng.range(3, 6);
        for k in 0..team_len {
            team.push(TeamMember {
                id: team_first + k,
                first_name: rng.pick(&FIRST_NAMES),
                last_name: rng.pick(&LAST_NAMES),
                store_id: i + 1,
                manager_id: (k > 0).then_some(team_first),
                joining_date: opening_date + Days::new(rng.below(3 * 365)),
            });
        }
        let manager = &team[team_first as usize - 1];
        stores.push(Store {
            region,
            currency: STORE_CURRENCY_CYCLE[(i % 10) as usize],
            team_first,
            team_len,
            name: format!("ShopLake {city} #{}", i + 1),
            address: format!("{} {}", rng.range(1, 999), rng.pick(&STREETS)),
            city,
            pincode: rng.range(100_000, 999_999),
            manager_name: format!("{} {}", manager.first_name, manager.last_name),
            opening_date,
        });
    }
    (stores, team)
}

fn build_products(seed: u64, count: u64) -> Vec<Product> {
    let nouns: Vec<(usize, &str)> = CATEGORIES
        .iter()
        .enumerate()
        .flat_map(|(c, (_, nouns, _, _))| nouns.iter().map(move |n| (c, *n)))
        .collect();
    let space = (ADJECTIVES.len() * nouns.len() * SIZES.len()) as u64;
    // A seeded shuffle of every (adjective, noun, size): names are unique until the space runs
    // out, then a series number keeps them unique.
    let mut rng = Rng::from_parts(&[seed, stream::PRODUCTS]);
    let mut order: Vec<u64> = (0..space).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    (0..count)
        .map(|i| {
            let mut rng = Rng::from_parts(&[seed, stream::PRODUCTS, i + 1]);
            let combo = order[(i % space) as usize] as usize;
            let size = SIZES[combo % SIZES.len()];
            let (category, noun) = nouns[combo / SIZES.len() % nouns.len()];
            let adjective = ADJECTIVES[combo / SIZES.len() / nouns.len()];
            let mut name = format!("{adjective} {noun} {size}");
            if i >= space {
                name.push_str(&format!(" Series {}", i / space + 1));
            }
            let (category_name, _, lo, hi) = CATEGORIES[category];
            let usd_cents = (rng.range(lo, hi) * 100 + rng.pick(&PRICE_ENDINGS)).max(99);
            let local_cents = std::array::from_fn(|c| local_price(usd_cents, c));
            Product {
                name_json: serde_json::to_string(&name).expect("a string serialises"),
                local_cents,
                name,
                category: category_name,
                usd_cents,
            }
        })
        .collect()
}

/// The price a store in currency `c` charges for something worth `usd_cents`: converted at the
/// table rate, to whole units for INR and JPY, to the cent otherwise.
fn local_price(usd_cents: u64, c: usize) -> u64 {
    let rate = CURRENCY_TABLE[c].1;
    let cents = (usd_cents * 1_000_000 + rate / 2) / rate;
    if c == 3 || c == usize::from(JPY) {
        (cents + 50) / 100 * 100
    } else {
        cents
    }
}

/// One CSV record; fields holding a comma, quote or line break are quoted.
fn write_csv_record(w: &mut dyn Write, fields: &[String]) -> std::io::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        if f.contains([',', '"', '\n', '\r']) {
            write!(w, "\"{}\"", f.replace('"', "\"\""))?;
        } else {
            w.write_all(f.as_bytes())?;
        }
    }
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoplake_core::values::{CURRENCIES, name_match_key};
    use std::collections::HashSet;

    #[test]
    fn currencies_are_known_to_core() {
        for (code, _) in CURRENCY_TABLE {
            assert!(CURRENCIES.contains(&code), "{code}");
        }
        assert_eq!(CURRENCY_TABLE[usize::from(JPY)].0, "JPY");
        assert_eq!(CURRENCY_TABLE[usize::from(USD)].0, "USD");
    }

    #[test]
    fn product_names_are_unique_as_the_pipeline_matches_them() {
        for count in [500, 20_000] {
            let products = build_products(9, count);
            let keys: HashSet<String> = products.iter().map(|p| name_match_key(&p.name)).collect();
            assert_eq!(keys.len() as u64, count);
        }
    }

    #[test]
    fn local_prices() {
        assert_eq!(local_price(1299, 0), 1299);
        // 12.99 USD at 0.00665 USD/JPY = 1953.38 JPY -> 1953 yen.
        assert_eq!(local_price(1299, usize::from(JPY)), 195_300);
        assert_eq!(local_price(1000, 1), 923);
    }

    #[test]
    fn stores_have_one_manager_and_three_to_six_people() {
        let (stores, team) = build_stores(3, 20);
        for (i, s) in stores.iter().enumerate() {
            assert!((3..=6).contains(&s.team_len));
            let members: Vec<_> = team.iter().filter(|m| m.store_id == i as u64 + 1).collect();
            assert_eq!(members.len() as u64, s.team_len);
            assert_eq!(members.iter().filter(|m| m.manager_id.is_none()).count(), 1);
            assert_eq!(members[0].id, s.team_first);
        }
    }
}
