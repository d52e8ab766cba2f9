//! The ETL stage: from files in the raw zone to the star schema. [`Pipeline`] crawls pending
//! files, validates every record (bad ones go to quarantine with a reason, file and line),
//! cleans and normalises, de-duplicates within the run and against `fact_sales`, fills missing
//! amounts, converts to USD, resolves and enriches products, stores and customers (inferring
//! late-arriving members), hashes PII, and commits the dimensions, `fact_sales` (partitioned by
//! region/year/month) and the quarantine as Delta tables. A run that dies part-way is rolled
//! back by the next one, so the result always equals an uninterrupted run.
//!
//! ```
//! use shoplake_etl::ingest::source_from_name;
//! assert_eq!(source_from_name(std::path::Path::new("store_sales_0001.csv.gz")), "store_sales");
//! ```

pub mod convert;
pub mod dedupe;
pub mod dim;
pub mod ingest;
pub mod pii;
pub mod pipeline;
pub mod quality;
pub mod quarantine;
pub mod sales;
pub mod schema;

pub use pipeline::{FileSummary, Pipeline, Progress, RunReport};

/// Errors of the ETL stage.
#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error(transparent)]
    Storage(#[from] shoplake_storage::StorageError),
    #[error(transparent)]
    Ledger(#[from] shoplake_catalog::ledger::LedgerError),
    #[error(transparent)]
    Table(Box<shoplake_tables::TableError>),
    #[error("query engine: {0}")]
    Engine(Box<datafusion::error::DataFusionError>),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(
        "another run (pid {pid}) holds the lock on this lake since {since}; wait for it to finish \
         (or, if that process is gone, delete {path})"
    )]
    Locked {
        pid: u32,
        since: String,
        path: String,
    },
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for EtlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        EtlError::Engine(Box::new(e))
    }
}

impl From<shoplake_tables::TableError> for EtlError {
    fn from(e: shoplake_tables::TableError) -> Self {
        EtlError::Table(Box::new(e))
    }
}

impl EtlError {
    /// Whether retrying may help (storage hiccups) rather than needing a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            EtlError::Storage(e) => e.is_transient(),
            EtlError::Table(e) => e.is_transient(),
            EtlError::Ledger(e) => e.is_transient(),
            EtlError::Locked { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = EtlError> = std::result::Result<T, E>;
