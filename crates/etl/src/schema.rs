//! Arrow schemas of the tables the pipeline writes: the star schema under `processed/` and the
//! quarantine. These column names are the contract the marts, the SQL and the dashboards use.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use shoplake_core::{Entity, FieldType};
use std::sync::{Arc, LazyLock};

pub const AMOUNT: DataType = DataType::Decimal128(18, 2);
pub const PRICE: DataType = DataType::Decimal128(18, 4);
pub const RATE: DataType = DataType::Decimal128(18, 8);

pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Partition columns of `fact_sales`.
pub const FACT_PARTITIONS: [&str; 3] = ["region", "year", "month"];

/// `fact_sales`: one row per sales line, amounts in the original currency and in USD.
pub static FACT_SALES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, true),
        Field::new("line_number", DataType::Int64, true),
        Field::new("sales_date", DataType::Date32, false),
        Field::new("date_key", DataType::Int32, false),
        Field::new("customer_key", DataType::Int64, true),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("product_key", DataType::Int64, false),
        Field::new("product_id", DataType::Utf8, false),
        Field::new("product_name", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("store_key", DataType::Int64, true),
        Field::new("store_id", DataType::Utf8, true),
        Field::new("sales_person_key", DataType::Int64, true),
        Field::new("sales_person_id", DataType::Utf8, true),
        Field::new("campaign_id", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, false),
        Field::new("payment_method", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("is_outlier", DataType::Boolean, false),
        Field::new("quantity", DataType::Int64, true),
        Field::new("unit_price", PRICE, true),
        Field::new("amount", AMOUNT, false),
        Field::new("amount_filled", DataType::Boolean, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("fx_rate", RATE, false),
        Field::new("amount_usd", AMOUNT, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("file_id", DataType::Int64, false),
        Field::new("source_line", DataType::Int64, false),
        Field::new("run_id", DataType::Int64, false),
        Field::new("dedupe_key", DataType::Binary, false),
        Field::new("loaded_at", utc_micros(), false),
        Field::new("region", DataType::Utf8, false),
        Field::new("year", DataType::Int32, false),
        Field::new("month", DataType::Int32, false),
    ]))
});

/// The quarantine table: rejected rows with their original values, reason, file and line.
pub static QUARANTINE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("entity", DataType::Utf8, false),
        Field::new("file_id", DataType::Int64, false),
        Field::new("file_name", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new("run_id", DataType::Int64, false),
        Field::new("quarantined_at", utc_micros(), false),
        Field::new("source", DataType::Utf8, false),
    ]))
});

/// `dim_date`: one row per calendar day covering the sales.
pub static DIM_DATE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date_key", DataType::Int32, false),
        Field::new("date", DataType::Date32, false),
        Field::new("year", DataType::Int32, false),
        Field::new("quarter", DataType::Int32, false),
        Field::new("month", DataType::Int32, false),
        Field::new("month_name", DataType::Utf8, false),
        Field::new("year_month", DataType::Utf8, false),
        Field::new("day", DataType::Int32, false),
        Field::new("day_of_week", DataType::Int32, false),
        Field::new("day_name", DataType::Utf8, false),
        Field::new("is_weekend", DataType::Boolean, false),
        Field::new("week_of_year", DataType::Int32, false),
    ]))
});

/// The Delta table that holds a reference entity, and its surrogate key column.
pub fn dim_table(entity: Entity) -> (&'static str, &'static str) {
    match entity {
        Entity::Stores => ("dim_store", "store_key"),
        Entity::Products => ("dim_product", "product_key"),
        Entity::Customers => ("dim_customer", "customer_key"),
        Entity::SalesTeam => ("dim_sales_person", "sales_person_key"),
        Entity::Campaigns => ("dim_campaign", "campaign_key"),
        Entity::FxRates => ("fx_rates", "fx_key"),
        Entity::Sales => ("fact_sales", ""),
    }
}

/// Arrow type of a canonical field in the tables.
pub fn field_type(name: &str, ty: FieldType) -> DataType {
    match ty {
        FieldType::Text => DataType::Utf8,
        FieldType::Integer => DataType::Int64,
        FieldType::Decimal => match name {
            "unit_price" | "old_price" | "cost" => PRICE,
            "rate_to_usd" => RATE,
            _ => AMOUNT,
        },
        FieldType::Date => DataType::Date32,
        FieldType::Boolean => DataType::Boolean,
    }
}

/// Decimal scale of a decimal field.
pub fn decimal_scale(name: &str) -> u32 {
    match field_type(name, FieldType::Decimal) {
        DataType::Decimal128(_, s) => s as u32,
        _ => 2,
    }
}

/// Columns of a dimension table: key, canonical fields (PII as `<field>_hash`), then
/// bookkeeping. Customers keep history (type 2): `valid_from`, `valid_to`, `is_current`.
pub fn dim_schema(entity: Entity) -> SchemaRef {
    let (_, key) = dim_table(entity);
    let mut fields = vec![Field::new(key, DataType::Int64, false)];
    for f in entity.fields() {
        if f.pii {
            fields.push(Field::new(format!("{}_hash", f.name), DataType::Utf8, true));
        } else {
            fields.push(Field::new(f.name, field_type(f.name, f.ty), !f.key));
        }
    }
    fields.push(Field::new("is_inferred", DataType::Boolean, false));
    fields.push(Field::new("valid_from", utc_micros(), false));
    fields.push(Field::new("valid_to", utc_micros(), true));
    fields.push(Field::new("is_current", DataType::Boolean, false));
    fields.push(Field::new("file_id", DataType::Int64, true));
    Arc::new(Schema::new(fields))
}
