//! Marts and reports: the last steps of the flow (star schema -> marts -> reports).
//!
//! [`Marts`] keeps two Delta tables under `marts/` as SQL models over the star schema:
//! `mart_customer_monthly` (per customer and month: name, address, masked phone, orders, sales,
//! refunds and a coupon tier) and `mart_sales_team_monthly` (per store, sales person and month:
//! sales, rank in the store-month and the top seller's incentive). A refresh recomputes only the
//! months that changed since the versions of `fact_sales` and the dimensions the mart was built
//! from (recorded in the mart's own commit), replacing exactly those `month` partitions in one
//! Delta commit; anything it cannot trust (a vanished log, changed rules, a new model) makes it
//! rebuild in full and say why. [`report`] builds the daily and monthly reports (CSV files and
//! one self-contained HTML page with inline SVG charts) and [`publish`] replaces them atomically
//! under `reports/`. The rules (what counts as a sale, refunds, ties) are in `docs/marts.md`.
//!
//! ```
//! use shoplake_marts::{Mart, YearMonth};
//! assert_eq!(Mart::CustomerMonthly.name(), "mart_customer_monthly");
//! assert_eq!(YearMonth::parse("2025-03").unwrap().to_string(), "2025-03");
//! ```

mod deltalog;
mod html;
pub mod model;
pub mod publish;
pub mod refresh;
pub mod report;
mod svg;

pub use model::{Mart, Rules, YearMonth};
pub use refresh::{Action, MartRefresh, Marts, RefreshMode};

/// Errors of the marts and reports.
#[derive(Debug, thiserror::Error)]
pub enum MartError {
    #[error(transparent)]
    Table(Box<shoplake_tables::TableError>),
    #[error(transparent)]
    Query(Box<shoplake_query::QueryError>),
    #[error("query engine: {0}")]
    Engine(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Storage(#[from] shoplake_storage::StorageError),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Ledger(#[from] shoplake_catalog::ledger::LedgerError),
    /// The user's mistake: a bad argument or setting, with what to do.
    #[error("{0}")]
    Usage(String),
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for MartError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        MartError::Engine(Box::new(e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for MartError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        MartError::Engine(Box::new(e.into()))
    }
}

impl From<shoplake_tables::TableError> for MartError {
    fn from(e: shoplake_tables::TableError) -> Self {
        MartError::Table(Box::new(e))
    }
}

impl From<shoplake_query::QueryError> for MartError {
    fn from(e: shoplake_query::QueryError) -> Self {
        MartError::Query(Box::new(e))
    }
}

pub type Result<T, E = MartError> = std::result::Result<T, E>;
