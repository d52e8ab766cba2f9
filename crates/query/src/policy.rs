//! Per-identity sessions: the same lake, seen through an [`Access`] policy. Every table is
//! registered as a view — a logical plan over the shared table provider with the identity's row
//! filter applied and masked columns replaced — so no SQL, however written, reaches the rows or
//! values the policy hides. Tables the policy does not grant are not registered at all, so they
//! are missing from `information_schema` and `pg_catalog` too.

use crate::{LakeQuery, Result, SYSTEM_TABLES};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, col, lit, when};
use datafusion::prelude::SessionConfig;
use shoplake_storage::Zone;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one identity may see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    /// The system tables (`files`, `runs`, ...) and `quarantine`: the raw values of rejected
    /// rows live there, so only operators get them.
    pub system_tables: bool,
    /// Columns shown masked, as `(table, column)`: a non-null value reads as `***`.
    pub masked: Vec<(String, String)>,
    /// Row filter: column -> allowed values. A table with any of these columns shows only rows
    /// whose values are among the allowed ones (every listed column present must match). A mart
    /// without any of the columns aggregates over everything, so it is hidden from a filtered
    /// identity; processed reference tables without them (products, dates, ...) stay visible.
    pub row_filter: BTreeMap<String, Vec<String>>,
}

/// The text a masked value reads as.
pub const MASK: &str = "***";

impl Access {
    /// Everything, unmasked and unfiltered.
    pub fn all() -> Access {
        Access {
            system_tables: true,
            ..Access::default()
        }
    }
}

impl LakeQuery {
    /// A new session over the same tables and memory pool, restricted by `access`.
    pub async fn restricted(&self, access: &Access) -> Result<LakeQuery> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = shoplake_tables::session(config, self.ctx.runtime_env());
        let mut registered = Vec::new();
        for (name, id) in &self.registered {
            let is_quarantine = id == &shoplake_tables::TableId::quarantine();
            if is_quarantine && !access.system_tables {
                continue;
            }
            let provider = self.ctx.table_provider(name.as_str()).await?;
            let Some(view) = restrict(name, id.zone, provider, access)? else {
                continue;
            };
            ctx.register_table(name.as_str(), view)?;
            registered.push((name.clone(), id.clone()));
        }
        if access.system_tables {
            for (name, _) in SYSTEM_TABLES {
                let provider = self.ctx.table_provider(name).await?;
                ctx.register_table(name, provider)?;
            }
        }
        Ok(LakeQuery {
            ctx,
            tables: self.tables.clone(),
            registered,
        })
    }
}

/// The table as `access` shows it, or `None` when it is hidden.
fn restrict(
    name: &str,
    zone: Zone,
    provider: Arc<dyn TableProvider>,
    access: &Access,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let schema = provider.schema();
    let has = |c: &str| schema.column_with_name(c).is_some();
    let filters: Vec<(&String, &Vec<String>)> =
        access.row_filter.iter().filter(|(c, _)| has(c)).collect();
    if !access.row_filter.is_empty() && filters.is_empty() && zone == Zone::Marts {
        return Ok(None);
    }
    let masked: Vec<&str> = access
        .masked
        .iter()
        .filter(|(t, c)| t == name && has(c))
        .map(|(_, c)| c.as_str())
        .collect();
    if filters.is_empty() && masked.is_empty() {
        return Ok(Some(provider));
    }
    let mut plan = LogicalPlanBuilder::scan(name, provider_as_source(provider.clone()), None)?;
    for (column, values) in filters {
        let allowed = values.iter().map(|v| lit(v.clone())).collect();
        plan = plan.filter(col(column.as_str()).in_list(allowed, false))?;
    }
    let projection: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = col(datafusion::common::Column::new(Some(name), f.name()));
            if !masked.contains(&f.name().as_str()) {
                return Ok(c);
            }
            let masked_value = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    cast(lit(MASK), f.data_type().clone())
                }
                other => lit(datafusion::common::ScalarValue::try_from(other)?),
            };
            Ok(when(c.clone().is_null(), c.clone())
                .otherwise(masked_value)?
                .alias(f.name()))
        })
        .collect::<Result<_>>()?;
    let plan = plan.project(projection)?.build()?;
    Ok(Some(Arc::new(ViewTable::new(plan, None))))
}
