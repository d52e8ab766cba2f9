//! The audit log as a SQL table (`audit`, admins only), read from the control database at
//! every scan so it is always current.

use crate::users::ControlDb;
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::{Arc, LazyLock};

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let i = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
    Arc::new(Schema::new(vec![
        i("audit_id", false),
        s("at", false),
        s("user_name", true),
        s("role", true),
        s("protocol", false),
        s("client", true),
        s("action", false),
        s("detail", false),
        s("outcome", false),
        s("error", true),
        i("rows", true),
        i("duration_ms", true),
    ]))
});

#[derive(Clone)]
pub struct AuditTable {
    control: Arc<ControlDb>,
}

impl std::fmt::Debug for AuditTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditTable")
    }
}

impl AuditTable {
    pub fn new(control: Arc<ControlDb>) -> AuditTable {
        AuditTable { control }
    }

    fn batch(&self) -> Result<RecordBatch> {
        let log = self
            .control
            .audit_log()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let strs = |f: &dyn Fn(&crate::users::AuditRecord) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(log.iter().map(f).collect::<Vec<_>>()))
        };
        let ints = |f: &dyn Fn(&crate::users::AuditRecord) -> Option<i64>| -> ArrayRef {
            Arc::new(Int64Array::from(log.iter().map(f).collect::<Vec<_>>()))
        };
        let cols = vec![
            ints(&|r| Some(r.audit_id)),
            strs(&|r| Some(r.at.clone())),
            strs(&|r| r.user_name.clone()),
            strs(&|r| r.role.clone()),
            strs(&|r| Some(r.protocol.clone())),
            strs(&|r| r.client.clone()),
            strs(&|r| Some(r.action.clone())),
            strs(&|r| Some(r.detail.clone())),
            strs(&|r| Some(r.outcome.clone())),
            strs(&|r| r.error.clone()),
            ints(&|r| r.rows),
            ints(&|r| r.duration_ms),
        ];
        Ok(RecordBatch::try_new(SCHEMA.clone(), cols)?)
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let this = self.clone();
        let batch = tokio::task::spawn_blocking(move || this.batch())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            SCHEMA.clone(),
            projection.cloned(),
        )?)
    }
}
