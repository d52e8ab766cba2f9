//! Ingest: copy files into the raw zone (content-addressed, immutable) and record each in the
//! file ledger. The same content twice is a no-op that says so.

use crate::{EtlError, Result};
use chrono::Utc;
use shoplake_catalog::ledger::{FileStatus, Ledger, NewFile};
use shoplake_storage::{Lake, RawFile, StorageError};
use std::path::{Path, PathBuf};

/// What happened to one input file.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    New {
        file_id: i64,
        source: String,
        raw_path: String,
        size: u64,
    },
    /// Content already in the lake: no-op.
    AlreadyIngested {
        file_id: i64,
        name: String,
        status: String,
    },
    /// Recorded as failed (e.g. a damaged gzip stream); nothing of it will load.
    Failed { file_id: i64, error: String },
}

/// A file to ingest and the source it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub path: PathBuf,
    pub source: String,
}

/// Expand paths into files. A folder's files take their source from the first folder level
/// under it (`drop/stores/a.csv` -> `stores`); a file given directly, or at a folder's top
/// level, takes it from its name (`store_sales_0001.csv` -> `store_sales`). `source` overrides.
pub fn candidates(paths: &[PathBuf], source: Option<&str>) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| EtlError::Input {
            path: p.display().to_string(),
            message: format!("{e}; check the path"),
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            files.sort();
            for f in files {
                let rel = f.strip_prefix(p).unwrap_or(&f);
                let src = match source {
                    Some(s) => s.to_string(),
                    None if rel.components().count() > 1 => sanitize(
                        &rel.components()
                            .next()
                            .unwrap()
                            .as_os_str()
                            .to_string_lossy(),
                    ),
                    None => source_from_name(&f),
                };
                out.push(Candidate {
                    path: f,
                    source: src,
                });
            }
        } else {
            let src = source
                .map(str::to_string)
                .unwrap_or_else(|| source_from_name(p));
            out.push(Candidate {
                path: p.clone(),
                source: src,
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| EtlError::Input {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    for entry in rd {
        let entry = entry.map_err(|e| EtlError::Input {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "manifest.json" {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `Store Sales 2025-03-07.csv.gz` -> `store_sales`: the name without extensions, dates and
/// numbers, as a valid source name.
pub fn source_from_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    let words: Vec<String> = shoplake_core::model::normalize_column(stem)
        .split('_')
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    let s = sanitize(&words.join("_"));
    if s.is_empty() {
        "default".to_string()
    } else {
        s
    }
}

fn sanitize(s: &str) -> String {
    let n = shoplake_core::model::normalize_column(s);
    n.chars().take(64).collect()
}

/// Ingest files into the raw zone and the ledger.
pub async fn ingest(
    lake: &Lake,
    ledger: &Ledger,
    files: &[Candidate],
) -> Result<Vec<(Candidate, Ingested)>> {
    let mut out = Vec::new();
    for c in files {
        let path = c.path.clone();
        let source = c.source.clone();
        let inspected = tokio::task::spawn_blocking(move || RawFile::inspect(&path, &source))
            .await
            .map_err(|e| EtlError::Internal(e.to_string()))?;
        let (raw, error) = match inspected {
            Ok(raw) => (raw, None),
            Err(StorageError::BadGzip { path, source }) => {
                // Keep the damaged file as received, and record why it will not load.
                let mut raw = RawFile::inspect_plain(&path, &c.source)?;
                raw.gzip = true;
                let msg = format!(
                    "{}: the gzip stream is damaged or cut short ({source}); re-export or re-copy the file",
                    path.display()
                );
                (raw, Some(msg))
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(existing) = ledger.file_by_hash(&raw.sha256)? {
            out.push((
                c.clone(),
                Ingested::AlreadyIngested {
                    file_id: existing.file_id,
                    name: existing.name,
                    status: existing.status.as_str().into(),
                },
            ));
            continue;
        }
        let received = Utc::now();
        let (object, _) = lake.put_raw(&raw, received).await?;
        let status = if error.is_some() {
            FileStatus::Failed
        } else {
            FileStatus::Ingested
        };
        let file_id = ledger.add_file(&NewFile {
            source: &c.source,
            name: &raw.name,
            raw_path: object.as_ref(),
            sha256: &raw.sha256,
            size_bytes: raw.size,
            received_at: received,
            status,
            error: error.as_deref(),
        })?;
        let result = match error {
            Some(error) => Ingested::Failed { file_id, error },
            None => Ingested::New {
                file_id,
                source: c.source.clone(),
                raw_path: object.to_string(),
                size: raw.size,
            },
        };
        out.push((c.clone(), result));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_from_names() {
        assert_eq!(
            source_from_name(Path::new("x/store_sales_0001.csv.gz")),
            "store_sales"
        );
        assert_eq!(
            source_from_name(Path::new("Orders 2025-03-07.ndjson")),
            "orders"
        );
        assert_eq!(source_from_name(Path::new("customers.csv")), "customers");
        assert_eq!(source_from_name(Path::new("2025.csv")), "default");
    }
}
