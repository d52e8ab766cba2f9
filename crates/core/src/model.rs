//! The retail model: canonical entities, their fields and the aliases the crawler maps from.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A canonical entity that sources are mapped onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    FxRates,
    Stores,
    Products,
    Customers,
    SalesTeam,
    Campaigns,
    Sales,
}

impl Entity {
    /// Every entity, in load order: reference data first, so sales resolve against it.
    pub const ALL: [Entity; 7] = [
        Entity::FxRates,
        Entity::Stores,
        Entity::Products,
        Entity::Customers,
        Entity::SalesTeam,
        Entity::Campaigns,
        Entity::Sales,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Entity::FxRates => "fx_rates",
            Entity::Stores => "stores",
            Entity::Products => "products",
            Entity::Customers => "customers",
            Entity::SalesTeam => "sales_team",
            Entity::Campaigns => "campaigns",
            Entity::Sales => "sales",
        }
    }

    /// The canonical fields of this entity.
    pub fn fields(self) -> &'static [Field] {
        match self {
            Entity::Sales => SALES_FIELDS,
            Entity::Customers => CUSTOMER_FIELDS,
            Entity::Products => PRODUCT_FIELDS,
            Entity::Stores => STORE_FIELDS,
            Entity::SalesTeam => SALES_TEAM_FIELDS,
            Entity::FxRates => FX_FIELDS,
            Entity::Campaigns => CAMPAIGN_FIELDS,
        }
    }

    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// Words in a source or file name that suggest this entity.
    pub fn name_hints(self) -> &'static [&'static str] {
        match self {
            Entity::Sales => &[
                "sales",
                "sale",
                "orders",
                "order",
                "transactions",
                "transaction",
                "purchases",
                "ecommerce",
                "pos",
                "store_sales",
            ],
            Entity::Customers => &["customers", "customer", "clients", "members"],
            Entity::Products => &["products", "product", "items", "catalog", "books"],
            Entity::Stores => &["stores", "store", "shops", "branches", "locations"],
            Entity::SalesTeam => &[
                "sales_team",
                "salesteam",
                "staff",
                "employees",
                "sales_person",
                "salespeople",
            ],
            Entity::FxRates => &[
                "fx_rates",
                "fx",
                "rates",
                "currency_rates",
                "exchange_rates",
            ],
            Entity::Campaigns => &["campaigns", "campaign", "marketing", "promotions"],
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Entity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Entity::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Entity::ALL.iter().map(|e| e.as_str()).collect();
                format!("unknown entity {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// The logical type of a canonical field; the validator parses source text into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    /// Whole number (quantities).
    Integer,
    /// Money or rates: parsed exactly as a decimal.
    Decimal,
    Date,
    Boolean,
}

/// A canonical field and the source column names that map onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    /// Normalised source column names (see [`normalize_column`]) recognised as this field.
    pub aliases: &'static [&'static str],
    /// The entity's natural key (or part of it).
    pub key: bool,
    /// Personal data: kept only as a keyed hash in analytical tables.
    pub pii: bool,
}

const fn f(name: &'static str, ty: FieldType, aliases: &'static [&'static str]) -> Field {
    Field {
        name,
        ty,
        aliases,
        key: false,
        pii: false,
    }
}
const fn k(name: &'static str, ty: FieldType, aliases: &'static [&'static str]) -> Field {
    Field {
        name,
        ty,
        aliases,
        key: true,
        pii: false,
    }
}
const fn p(name: &'static str, aliases: &'static [&'static str]) -> Field {
    Field {
        name,
        ty: Text,
        aliases,
        key: false,
        pii: true,
    }
}

use FieldType::*;

pub const SALES_FIELDS: &[Field] = &[
    f(
        "transaction_id",
        Text,
        &[
            "transaction_id",
            "txn_id",
            "order_id",
            "invoice_id",
            "receipt_id",
            "sale_id",
            "sales_id",
            "transactionid",
            "orderid",
            "invoice_no",
            "order_number",
        ],
    ),
    f(
        "line_number",
        Integer,
        &["line_number", "line_no", "line", "order_line", "item_no"],
    ),
    f(
        "sales_date",
        Date,
        &[
            "sales_date",
            "sale_date",
            "purchase_date",
            "order_date",
            "transaction_date",
            "date",
            "invoice_date",
            "timestamp",
            "order_timestamp",
            "purchased_at",
            "created_at",
            "txn_date",
        ],
    ),
    f(
        "customer_id",
        Text,
        &[
            "customer_id",
            "cust_id",
            "customerid",
            "client_id",
            "buyer_id",
            "member_id",
        ],
    ),
    f(
        "product_id",
        Text,
        &[
            "product_id",
            "prod_id",
            "productid",
            "sku",
            "item_id",
            "book_id",
            "isbn",
        ],
    ),
    f(
        "product_name",
        Text,
        &[
            "product_name",
            "product",
            "item_name",
            "item",
            "book_title",
            "title",
            "productname",
            "product_title",
        ],
    ),
    f(
        "store_id",
        Text,
        &[
            "store_id",
            "storeid",
            "shop_id",
            "branch_id",
            "location_id",
            "store",
        ],
    ),
    f(
        "sales_person_id",
        Text,
        &[
            "sales_person_id",
            "salesperson_id",
            "sales_rep_id",
            "employee_id",
            "staff_id",
            "cashier_id",
            "seller_id",
        ],
    ),
    f(
        "quantity",
        Integer,
        &[
            "quantity",
            "qty",
            "units",
            "quantity_sold",
            "count",
            "num_items",
        ],
    ),
    f(
        "unit_price",
        Decimal,
        &[
            "unit_price",
            "price",
            "item_price",
            "unitprice",
            "price_per_unit",
            "list_price",
        ],
    ),
    f(
        "amount",
        Decimal,
        &[
            "amount",
            "total_cost",
            "total_amount",
            "total",
            "total_price",
            "sale_amount",
            "sales_amount",
            "order_total",
            "line_total",
            "revenue",
            "value",
            "total_sales",
            "net_amount",
        ],
    ),
    f(
        "currency",
        Text,
        &["currency", "currency_code", "ccy", "cur"],
    ),
    f(
        "region",
        Text,
        &[
            "region",
            "sales_region",
            "area",
            "zone",
            "territory",
            "store_location",
            "location",
        ],
    ),
    f(
        "status",
        Text,
        &[
            "status",
            "order_status",
            "transaction_status",
            "state_code",
            "txn_status",
        ],
    ),
    f(
        "channel",
        Text,
        &[
            "channel",
            "sales_channel",
            "source_channel",
            "order_channel",
            "platform",
        ],
    ),
    f(
        "campaign_id",
        Text,
        &[
            "campaign_id",
            "campaign",
            "promo_id",
            "promotion_id",
            "utm_campaign",
        ],
    ),
    f(
        "payment_method",
        Text,
        &["payment_method", "payment_type", "payment", "tender_type"],
    ),
];

pub const CUSTOMER_FIELDS: &[Field] = &[
    k(
        "customer_id",
        Text,
        &["customer_id", "id", "cust_id", "customerid", "client_id"],
    ),
    f(
        "first_name",
        Text,
        &["first_name", "firstname", "given_name", "fname"],
    ),
    f(
        "last_name",
        Text,
        &["last_name", "lastname", "surname", "family_name", "lname"],
    ),
    f(
        "full_name",
        Text,
        &["full_name", "name", "customer_name", "fullname"],
    ),
    p("email", &["email", "email_address", "e_mail", "mail"]),
    p(
        "phone",
        &[
            "phone",
            "phone_number",
            "mobile",
            "telephone",
            "contact_number",
            "phone_no",
        ],
    ),
    // Derived from `phone` at load time (`values::mask_phone`), never mapped from a column:
    // the last four digits, for the marts and reports that must not show PII in clear.
    f("phone_masked", Text, &[]),
    f(
        "address",
        Text,
        &[
            "address",
            "street",
            "street_address",
            "address_line_1",
            "addr",
        ],
    ),
    f("city", Text, &["city", "town"]),
    f("state", Text, &["state", "province", "county"]),
    f(
        "postal_code",
        Text,
        &["postal_code", "pincode", "zip", "zip_code", "postcode"],
    ),
    f("country", Text, &["country", "country_code"]),
    f("region", Text, &["region", "area", "zone"]),
    f(
        "join_date",
        Date,
        &[
            "join_date",
            "customer_joining_date",
            "signup_date",
            "registration_date",
            "created_at",
            "joined",
            "joining_date",
            "member_since",
        ],
    ),
];

pub const PRODUCT_FIELDS: &[Field] = &[
    k(
        "product_id",
        Text,
        &["product_id", "id", "prod_id", "sku", "item_id", "productid"],
    ),
    f(
        "product_name",
        Text,
        &["product_name", "name", "product", "title", "item_name"],
    ),
    f(
        "category",
        Text,
        &[
            "category",
            "product_category",
            "department",
            "genre",
            "category_name",
        ],
    ),
    f(
        "unit_price",
        Decimal,
        &[
            "unit_price",
            "price",
            "current_price",
            "list_price",
            "retail_price",
        ],
    ),
    f("old_price", Decimal, &["old_price", "previous_price"]),
    f("cost", Decimal, &["cost", "unit_cost", "cost_price"]),
    f("brand", Text, &["brand", "manufacturer"]),
];

pub const STORE_FIELDS: &[Field] = &[
    k(
        "store_id",
        Text,
        &["store_id", "id", "storeid", "shop_id", "branch_id"],
    ),
    f(
        "store_name",
        Text,
        &["store_name", "name", "shop_name", "branch_name"],
    ),
    f("address", Text, &["address", "store_address", "street"]),
    f("city", Text, &["city", "town"]),
    f(
        "postal_code",
        Text,
        &["postal_code", "store_pincode", "pincode", "zip", "zip_code"],
    ),
    f("region", Text, &["region", "area", "zone", "territory"]),
    f(
        "manager_name",
        Text,
        &["manager_name", "store_manager_name", "manager"],
    ),
    f(
        "opening_date",
        Date,
        &["opening_date", "store_opening_date", "opened", "opened_at"],
    ),
];

pub const SALES_TEAM_FIELDS: &[Field] = &[
    k(
        "sales_person_id",
        Text,
        &[
            "sales_person_id",
            "id",
            "salesperson_id",
            "employee_id",
            "staff_id",
        ],
    ),
    f("first_name", Text, &["first_name", "firstname", "fname"]),
    f(
        "last_name",
        Text,
        &["last_name", "lastname", "surname", "lname"],
    ),
    f("full_name", Text, &["full_name", "name"]),
    f(
        "store_id",
        Text,
        &["store_id", "storeid", "shop_id", "branch_id"],
    ),
    f(
        "manager_id",
        Text,
        &["manager_id", "reports_to", "supervisor_id"],
    ),
    f("is_manager", Boolean, &["is_manager", "manager_flag"]),
    f("address", Text, &["address"]),
    f("postal_code", Text, &["postal_code", "pincode", "zip"]),
    f(
        "joining_date",
        Date,
        &[
            "joining_date",
            "join_date",
            "hire_date",
            "hired_at",
            "start_date",
        ],
    ),
];

pub const FX_FIELDS: &[Field] = &[
    k(
        "currency",
        Text,
        &["currency", "currency_code", "ccy", "from_currency", "code"],
    ),
    k(
        "month",
        Text,
        &[
            "month",
            "rate_month",
            "period",
            "year_month",
            "date",
            "rate_date",
            "as_of",
        ],
    ),
    f(
        "rate_to_usd",
        Decimal,
        &[
            "rate_to_usd",
            "usd_rate",
            "rate",
            "to_usd",
            "exchange_rate",
            "fx_rate",
        ],
    ),
];

pub const CAMPAIGN_FIELDS: &[Field] = &[
    k(
        "campaign_id",
        Text,
        &["campaign_id", "id", "promo_id", "promotion_id"],
    ),
    f("campaign_name", Text, &["campaign_name", "name", "title"]),
    f("channel", Text, &["channel", "medium", "marketing_channel"]),
    f(
        "start_date",
        Date,
        &["start_date", "starts", "start", "from_date", "begin_date"],
    ),
    f("end_date", Date, &["end_date", "ends", "end", "to_date"]),
    f("budget", Decimal, &["budget", "spend", "cost"]),
    f("region", Text, &["region", "target_region"]),
];

/// Normalise a source column name for alias matching: lower case, runs of anything that is
/// not a letter or digit become one `_`, camelCase is split (`purchaseDate` -> `purchase_date`).
pub fn normalize_column(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.trim().trim_start_matches('\u{feff}').chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Why a row was quarantined. The set is ours: matched in one place, stored by [`ReasonCode::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The record could not be parsed (wrong number of fields, not an object).
    MalformedRow,
    /// A date that no accepted format parses.
    BadDate,
    /// A number that does not parse (quantity, price, amount, rate).
    BadNumber,
    /// An empty natural key (customer, product, store, transaction date...).
    MissingKey,
    /// No amount, and no quantity x unit price to compute it from.
    MissingAmount,
    /// A currency code we do not know.
    UnknownCurrency,
    /// A known currency with no rate for the sale's month.
    MissingFxRate,
    /// A customer not in dim_customer, when the source opts out of inferred members.
    UnknownCustomer,
    /// A product not in dim_product (or a product name that resolves to none), when the source
    /// opts out of inferred members.
    UnknownProduct,
    /// A value outside what the field accepts (negative quantity, unknown status ...).
    BadValue,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 10] = [
        ReasonCode::MalformedRow,
        ReasonCode::BadDate,
        ReasonCode::BadNumber,
        ReasonCode::MissingKey,
        ReasonCode::MissingAmount,
        ReasonCode::UnknownCurrency,
        ReasonCode::MissingFxRate,
        ReasonCode::UnknownCustomer,
        ReasonCode::UnknownProduct,
        ReasonCode::BadValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::MalformedRow => "malformed_row",
            ReasonCode::BadDate => "bad_date",
            ReasonCode::BadNumber => "bad_number",
            ReasonCode::MissingKey => "missing_key",
            ReasonCode::MissingAmount => "missing_amount",
            ReasonCode::UnknownCurrency => "unknown_currency",
            ReasonCode::MissingFxRate => "missing_fx_rate",
            ReasonCode::UnknownCustomer => "unknown_customer",
            ReasonCode::UnknownProduct => "unknown_product",
            ReasonCode::BadValue => "bad_value",
        }
    }
}

impl ReasonCode {
    /// Parse a reason code, with the list of valid ones in the error.
    pub fn from_str_checked(s: &str) -> Result<ReasonCode, String> {
        s.parse().map_err(|e: String| {
            let all: Vec<_> = ReasonCode::ALL.iter().map(|r| r.as_str()).collect();
            format!("{e}; expected one of {}", all.join(", "))
        })
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReasonCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ReasonCode::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown reason code {s:?}"))
    }
}

/// A file format the crawler recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    /// One JSON document: an array of objects, or an object holding one such array.
    Json,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        }
    }

    /// The format a file name implies (`.gz` is looked through), if any.
    pub fn from_file_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        let base = lower.strip_suffix(".gz").unwrap_or(&lower);
        let ext = base.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "csv" | "tsv" | "txt" | "psv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            _ => Err(format!(
                "unknown format {s:?}; expected csv, json or ndjson"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_column_names() {
        assert_eq!(normalize_column(" Purchase Date "), "purchase_date");
        assert_eq!(normalize_column("purchaseDate"), "purchase_date");
        assert_eq!(normalize_column("\u{feff}Order-ID"), "order_id");
        assert_eq!(normalize_column("total_cost($)"), "total_cost");
    }

    #[test]
    fn aliases_are_normalized_and_unique_per_entity() {
        for e in Entity::ALL {
            let mut seen = std::collections::HashMap::new();
            for field in e.fields() {
                for a in field.aliases {
                    assert_eq!(normalize_column(a), *a, "{e}.{} alias {a}", field.name);
                    if let Some(other) = seen.insert(*a, field.name) {
                        panic!("{e}: alias {a} used by {other} and {}", field.name);
                    }
                }
            }
        }
    }
}
