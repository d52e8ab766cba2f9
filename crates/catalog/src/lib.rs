//! The catalog: what we know about every file and source. The crawler ([`crawl`]) infers a
//! file's layout and schema and proposes its mapping onto a canonical entity; the scanner
//! ([`scan`]) streams a file's records by that layout; the control plane ([`ledger`]) keeps the
//! file ledger, the versioned catalog and the run history in SQLite.

pub mod crawl;
pub mod ledger;
pub mod scan;
