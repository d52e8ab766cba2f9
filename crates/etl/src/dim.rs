//! Dimensions in memory while a run applies reference data and late-arriving members, then
//! written back as one Delta commit per changed dimension. Customers keep history (type 2: a
//! changed customer closes its current row and opens a new one with a new surrogate key);
//! the other dimensions are updated in place (type 1). A member first seen in a sale is
//! *inferred*: it gets a key at once and its attributes when its dimension row arrives.

use crate::schema::{decimal_scale, dim_schema, dim_table, field_type};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use shoplake_core::{Entity, FieldType, values};
use std::collections::HashMap;
use std::sync::Arc;

/// What applying one reference row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new member, a changed one, or an inferred one filled in.
    Loaded,
    /// The dimension already holds exactly these attributes.
    Duplicate,
}

/// One row of a dimension. `values` follow `entity.fields()`; PII fields hold their hash.
#[derive(Debug, Clone, PartialEq)]
pub struct DimRow {
    pub key: i64,
    pub natural: String,
    pub values: Vec<Option<String>>,
    pub inferred: bool,
    pub valid_from: i64,
    pub valid_to: Option<i64>,
    pub is_current: bool,
    pub file_id: Option<i64>,
}

/// A dimension being updated by a run.
#[derive(Debug, Clone)]
pub struct Dim {
    pub entity: Entity,
    rows: Vec<DimRow>,
    current: HashMap<String, usize>,
    /// Lookup by product name (products only): name match key -> natural key.
    by_name: HashMap<String, String>,
    next_key: i64,
    changed: bool,
}

/// The natural key of a row: the key fields' values joined by `|`.
pub fn natural_key(entity: Entity, values: &[Option<String>]) -> Option<String> {
    let mut parts = Vec::new();
    for (f, v) in entity.fields().iter().zip(values) {
        if f.key {
            parts.push(v.as_deref()?.to_string());
        }
    }
    Some(parts.join("|"))
}

impl Dim {
    pub fn new(entity: Entity) -> Dim {
        Dim {
            entity,
            rows: Vec::new(),
            current: HashMap::new(),
            by_name: HashMap::new(),
            next_key: 1,
            changed: false,
        }
    }

    /// Rebuild from the table's rows.
    pub fn from_batches(entity: Entity, batches: &[RecordBatch]) -> Result<Dim, String> {
        let mut dim = Dim::new(entity);
        let (_, key_col) = dim_table(entity);
        let opts = FormatOptions::default();
        for batch in batches {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| format!("{} has no column {name}", dim_table(entity).0))
            };
            let keys = col(key_col)?
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .cloned()
                .ok_or("surrogate key is not Int64")?;
            let mut field_cols = Vec::new();
            for f in entity.fields() {
                let name = if f.pii {
                    format!("{}_hash", f.name)
                } else {
                    f.name.to_string()
                };
                field_cols.push(batch.column_by_name(&name).cloned());
            }
            let formatters: Vec<Option<ArrayFormatter<'_>>> = field_cols
                .iter()
                .map(|c| {
                    c.as_ref()
                        .and_then(|c| ArrayFormatter::try_new(c.as_ref(), &opts).ok())
                })
                .collect();
            let bools = |name: &str| -> Result<datafusion::arrow::array::BooleanArray, String> {
                col(name)?
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                    .cloned()
                    .ok_or(format!("{name} is not boolean"))
            };
            let ts = |name: &str| -> Result<datafusion::arrow::array::TimestampMicrosecondArray, String> {
                col(name)?.as_any().downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>().cloned().ok_or(format!("{name} is not a timestamp"))
            };
            let inferred = bools("is_inferred")?;
            let current = bools("is_current")?;
            let from = ts("valid_from")?;
            let to = ts("valid_to")?;
            let file = col("file_id")?
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .cloned()
                .ok_or("file_id is not Int64")?;
            for i in 0..batch.num_rows() {
                let values: Vec<Option<String>> = field_cols
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| match (c, f) {
                        (Some(c), Some(f)) if c.is_valid(i) => Some(f.value(i).to_string()),
                        _ => None,
                    })
                    .collect();
                let natural = natural_key(entity, &values).unwrap_or_default();
                let row = DimRow {
                    key: keys.value(i),
                    natural,
                    values,
                    inferred: inferred.value(i),
                    valid_from: from.value(i),
                    valid_to: to.is_valid(i).then(|| to.value(i)),
                    is_current: current.value(i),
                    file_id: file.is_valid(i).then(|| file.value(i)),
                };
                dim.next_key = dim.next_key.max(row.key + 1);
                dim.push(row);
            }
        }
        dim.rows.sort_by_key(|r| r.key);
        dim.reindex();
        dim.changed = false;
        Ok(dim)
    }

    fn reindex(&mut self) {
        self.current.clear();
        self.by_name.clear();
        let name_idx = self.name_index();
        for (i, r) in self.rows.iter().enumerate() {
            if r.is_current {
                self.current.insert(r.natural.clone(), i);
                if let Some(n) = name_idx.and_then(|ni| r.values[ni].as_deref()) {
                    self.by_name
                        .entry(values::name_match_key(n))
                        .or_insert_with(|| r.natural.clone());
                }
            }
        }
    }

    fn name_index(&self) -> Option<usize> {
        (self.entity == Entity::Products)
            .then(|| {
                self.entity
                    .fields()
                    .iter()
                    .position(|f| f.name == "product_name")
            })
            .flatten()
    }

    fn push(&mut self, row: DimRow) {
        let i = self.rows.len();
        if row.is_current {
            self.current.insert(row.natural.clone(), i);
            if let Some(ni) = self.name_index()
                && let Some(n) = row.values[ni].as_deref()
            {
                self.by_name
                    .entry(values::name_match_key(n))
                    .or_insert_with(|| row.natural.clone());
            }
        }
        self.rows.push(row);
    }

    pub fn changed(&self) -> bool {
        self.changed
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> &[DimRow] {
        &self.rows
    }

    /// The current row of a natural key.
    pub fn get(&self, natural: &str) -> Option<&DimRow> {
        self.current.get(natural).map(|&i| &self.rows[i])
    }

    /// The natural key of a product by its name.
    pub fn by_name(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(&values::name_match_key(name))
            .map(String::as_str)
    }

    /// The value of a field in a current row.
    pub fn value<'a>(&'a self, row: &'a DimRow, field: &str) -> Option<&'a str> {
        let i = self.entity.fields().iter().position(|f| f.name == field)?;
        row.values[i].as_deref()
    }

    /// Apply a validated reference row. Fields the row does not carry (`None`) keep their
    /// current value.
    pub fn apply(&mut self, values: Vec<Option<String>>, now: i64, file_id: i64) -> Applied {
        let natural = natural_key(self.entity, &values).expect("caller checked the key");
        let Some(&i) = self.current.get(&natural) else {
            let key = self.next_key;
            self.next_key += 1;
            self.push(DimRow {
                key,
                natural,
                values,
                inferred: false,
                valid_from: now,
                valid_to: None,
                is_current: true,
                file_id: Some(file_id),
            });
            self.changed = true;
            return Applied::Loaded;
        };
        let existing = &self.rows[i];
        let merged: Vec<Option<String>> = values
            .into_iter()
            .zip(&existing.values)
            .map(|(new, old)| new.or_else(|| old.clone()))
            .collect();
        if merged == existing.values && !existing.inferred {
            return Applied::Duplicate;
        }
        self.changed = true;
        if existing.inferred || self.entity != Entity::Customers {
            let row = &mut self.rows[i];
            row.values = merged;
            row.inferred = false;
            row.file_id = Some(file_id);
            self.reindex_one(i);
            return Applied::Loaded;
        }
        // Type 2: close the current version and open a new one.
        let row = &mut self.rows[i];
        row.valid_to = Some(now);
        row.is_current = false;
        let key = self.next_key;
        self.next_key += 1;
        self.push(DimRow {
            key,
            natural,
            values: merged,
            inferred: false,
            valid_from: now,
            valid_to: None,
            is_current: true,
            file_id: Some(file_id),
        });
        Applied::Loaded
    }

    fn reindex_one(&mut self, i: usize) {
        if let Some(ni) = self.name_index()
            && let Some(n) = self.rows[i].values[ni].clone()
        {
            self.by_name
                .entry(values::name_match_key(&n))
                .or_insert_with(|| self.rows[i].natural.clone());
        }
    }

    /// The surrogate key of a member, creating an inferred member when it is unknown.
    /// Returns (key, whether it was inferred just now).
    pub fn key_or_infer(&mut self, natural: &str, hints: &[(&str, &str)], now: i64) -> (i64, bool) {
        if let Some(&i) = self.current.get(natural) {
            return (self.rows[i].key, false);
        }
        let mut values = vec![None; self.entity.fields().len()];
        for (i, f) in self.entity.fields().iter().enumerate() {
            if f.key {
                values[i] = Some(natural.to_string());
            } else if let Some((_, v)) = hints.iter().find(|(n, _)| *n == f.name) {
                values[i] = Some(v.to_string());
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        self.push(DimRow {
            key,
            natural: natural.to_string(),
            values,
            inferred: true,
            valid_from: now,
            valid_to: None,
            is_current: true,
            file_id: None,
        });
        self.changed = true;
        (key, true)
    }

    /// The whole dimension as one Arrow batch in its table schema.
    pub fn to_batch(
        &self,
    ) -> Result<(SchemaRef, RecordBatch), datafusion::arrow::error::ArrowError> {
        let schema = dim_schema(self.entity);
        let n = self.rows.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut keys = Int64Builder::with_capacity(n);
        for r in &self.rows {
            keys.append_value(r.key);
        }
        cols.push(Arc::new(keys.finish()));
        for (i, f) in self.entity.fields().iter().enumerate() {
            let ty = if f.pii { FieldType::Text } else { f.ty };
            let texts = self.rows.iter().map(|r| r.values[i].as_deref());
            cols.push(typed_column(f.name, ty, texts, n)?);
        }
        let mut inferred = BooleanBuilder::with_capacity(n);
        let mut from = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut to = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut current = BooleanBuilder::with_capacity(n);
        let mut file = Int64Builder::with_capacity(n);
        for r in &self.rows {
            inferred.append_value(r.inferred);
            from.append_value(r.valid_from);
            to.append_option(r.valid_to);
            current.append_value(r.is_current);
            file.append_option(r.file_id);
        }
        cols.push(Arc::new(inferred.finish()));
        cols.push(Arc::new(from.finish()));
        cols.push(Arc::new(to.finish()));
        cols.push(Arc::new(current.finish()));
        cols.push(Arc::new(file.finish()));
        let batch = RecordBatch::try_new(schema.clone(), cols)?;
        Ok((schema, batch))
    }
}

/// Build a typed Arrow column from canonical text values.
pub fn typed_column<'a>(
    name: &str,
    ty: FieldType,
    texts: impl Iterator<Item = Option<&'a str>>,
    n: usize,
) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    Ok(match field_type(name, ty) {
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            texts.for_each(|t| b.append_option(t));
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            texts.for_each(|t| b.append_option(t.and_then(|t| t.parse().ok())));
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            texts.for_each(|t| b.append_option(t.map(|t| t == "true")));
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let mut b = Date32Builder::with_capacity(n);
            texts.for_each(|t| {
                b.append_option(t.and_then(crate::convert::iso_date).map(days_since_epoch))
            });
            Arc::new(b.finish())
        }
        DataType::Decimal128(p, s) => {
            let scale = decimal_scale(name);
            let mut b = Decimal128Builder::with_capacity(n);
            texts.for_each(|t| {
                b.append_option(t.and_then(|t| values::parse_decimal(t, scale).ok().flatten()))
            });
            Arc::new(b.finish().with_precision_and_scale(p, s)?)
        }
        other => unreachable!("no canonical field has type {other}"),
    })
}

/// Days since 1970-01-01 (Arrow Date32).
pub fn days_since_epoch(d: chrono::NaiveDate) -> i32 {
    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str, city: &str) -> Vec<Option<String>> {
        Entity::Customers
            .fields()
            .iter()
            .map(|f| match f.name {
                "customer_id" => Some(id.to_string()),
                "city" => Some(city.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn customers_keep_history_and_inferred_members_fill_in() {
        let mut d = Dim::new(Entity::Customers);
        assert_eq!(d.apply(customer("C1", "Pune"), 10, 1), Applied::Loaded);
        assert_eq!(d.apply(customer("C1", "Pune"), 11, 1), Applied::Duplicate);
        assert_eq!(d.apply(customer("C1", "Oslo"), 12, 2), Applied::Loaded);
        assert_eq!(d.len(), 2);
        let cur = d.get("C1").unwrap();
        assert_eq!((cur.key, cur.is_current), (2, true));
        assert_eq!(d.rows()[0].valid_to, Some(12));
        let (k, new) = d.key_or_infer("C9", &[], 13);
        assert_eq!((k, new), (3, true));
        assert_eq!(d.key_or_infer("C9", &[], 14), (3, false));
        assert_eq!(d.apply(customer("C9", "Rome"), 15, 3), Applied::Loaded);
        assert_eq!(d.len(), 3, "an inferred member is filled in place");
        assert!(!d.get("C9").unwrap().inferred);

        let (_, batch) = d.to_batch().unwrap();
        let mut back = Dim::from_batches(Entity::Customers, &[batch]).unwrap();
        assert_eq!(back.rows(), d.rows());
        assert_eq!(back.key_or_infer("C10", &[], 1).0, 4);
    }

    #[test]
    fn products_resolve_by_name() {
        let mut d = Dim::new(Entity::Products);
        let vals: Vec<Option<String>> = Entity::Products
            .fields()
            .iter()
            .map(|f| match f.name {
                "product_id" => Some("P1".into()),
                "product_name" => Some("Blue Mug (Large)".into()),
                "unit_price" => Some("9.5000".into()),
                _ => None,
            })
            .collect();
        d.apply(vals, 1, 1);
        assert_eq!(d.by_name("blue mug large"), Some("P1"));
        let (_, batch) = d.to_batch().unwrap();
        assert_eq!(batch.num_rows(), 1);
    }
}
