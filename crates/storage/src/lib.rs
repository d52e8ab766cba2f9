//! Storage: the lake root and its zones. A [`Lake`] turns the configured location (a folder or
//! an object-store URL) into one [`ObjectStore`]; every read and write of lake data goes through
//! it, so local disk and S3 share one code path. The raw zone is written here: content-addressed,
//! immutable objects under `raw/<source>/<yyyy>/<mm>/<dd>/<sha256-prefix>-<name>`.
//!
//! ```
//! # tokio_test_shim::block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let lake = shoplake_storage::Lake::open(dir.path().to_str().unwrap()).unwrap();
//! assert_eq!(lake.table_url(shoplake_storage::Zone::Processed, "fact_sales").scheme(), "file");
//! # });
//! # mod tokio_test_shim { pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #   tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) } }
//! ```

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use url::Url;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("lake location {location:?} is not a folder or a supported URL: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("cannot read {path}: {source}")]
    ReadLocal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: the gzip stream is damaged or cut short ({source}); re-export or re-copy the file"
    )]
    BadGzip {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StorageError {
    /// Whether trying again may succeed (a storage hiccup rather than bad input).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Store(e) if !matches!(e, object_store::Error::NotFound { .. } | object_store::Error::AlreadyExists { .. }))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The zones of the lake layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    Raw,
    Quarantine,
    Processed,
    Marts,
    Reports,
    Archive,
}

impl Zone {
    pub fn prefix(self) -> &'static str {
        match self {
            Zone::Raw => "raw",
            Zone::Quarantine => "quarantine",
            Zone::Processed => "processed",
            Zone::Marts => "marts",
            Zone::Reports => "reports",
            Zone::Archive => "archive",
        }
    }
}

/// The lake root and the object store that reaches it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl Lake {
    /// Open a lake at a folder path or a `file://` URL, creating the folder if needed.
    pub fn open(location: &str) -> Result<Lake> {
        let bad = |reason: String| StorageError::BadLocation {
            location: location.to_string(),
            reason,
        };
        let local: PathBuf = if let Some(rest) = location.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if location.contains("://") {
            let scheme = location.split("://").next().unwrap_or_default();
            return Err(bad(format!(
                "the {scheme}:// scheme is not built into this binary yet; use a folder path"
            )));
        } else {
            PathBuf::from(location)
        };
        std::fs::create_dir_all(&local).map_err(|source| StorageError::CreateDir {
            path: local.clone(),
            source,
        })?;
        let abs = local
            .canonicalize()
            .map_err(|source| StorageError::CreateDir {
                path: local.clone(),
                source,
            })?;
        let root =
            Url::from_directory_path(&abs).map_err(|_| bad("not an absolute path".into()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Lake {
            root,
            store: Arc::new(store),
            local_root: Some(abs),
        })
    }

    /// Build a lake over any object store (tests use the in-memory store).
    pub fn with_store(root: Url, store: Arc<dyn ObjectStore>) -> Lake {
        Lake {
            root,
            store,
            local_root: None,
        }
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The local folder of the lake, when it is on local disk.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// URL of a table (a Delta table folder) in a zone, e.g. `processed/fact_sales/`.
    pub fn table_url(&self, zone: Zone, name: &str) -> Url {
        self.root
            .join(&format!("{}/{}/", zone.prefix(), name))
            .expect("zone and table names are plain path segments")
    }

    /// Object path of a file under a zone.
    pub fn path(&self, zone: Zone, rest: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{}", zone.prefix(), rest))
    }

    /// Read a whole object.
    pub async fn get(&self, path: &ObjectPath) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// Write an object, replacing any previous one atomically (reports, manifests).
    pub async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Copy a local file into the raw zone under its content address. Returns the object path,
    /// and whether it was already there (the same content is never written twice).
    pub async fn put_raw(
        &self,
        file: &RawFile,
        received: DateTime<Utc>,
    ) -> Result<(ObjectPath, bool)> {
        let path = raw_object_path(&file.source, received, &file.sha256, &file.name);
        if self.store.head(&path).await.is_ok() {
            return Ok((path, true));
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
        let mut input =
            std::fs::File::open(&file.local_path).map_err(|source| StorageError::ReadLocal {
                path: file.local_path.clone(),
                source,
            })?;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|source| StorageError::ReadLocal {
                    path: file.local_path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok((path, false))
    }

    /// Stream an object's bytes through a blocking reader (for parsers that want `Read`).
    /// Local lakes open the file directly; other stores are fetched in chunks.
    pub async fn open_read(&self, path: &ObjectPath) -> Result<Box<dyn Read + Send>> {
        if let Some(root) = &self.local_root {
            let p = root.join(path.as_ref());
            let f = std::fs::File::open(&p)
                .map_err(|source| StorageError::ReadLocal { path: p, source })?;
            return Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)));
        }
        let mut stream = self.store.get(path).await?.into_stream();
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(Box::new(std::io::Cursor::new(all)))
    }
}

/// `raw/<source>/<yyyy>/<mm>/<dd>/<sha256-prefix>-<name>`
pub fn raw_object_path(
    source: &str,
    received: DateTime<Utc>,
    sha256: &str,
    name: &str,
) -> ObjectPath {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    ObjectPath::from(format!(
        "raw/{source}/{:04}/{:02}/{:02}/{}-{safe}",
        received.year(),
        received.month(),
        received.day(),
        &sha256[..16]
    ))
}

/// A local file about to be ingested: its content hash and size, and (for `.gz`) proof that it
/// decompresses to the end.
#[derive(Debug, Clone)]
pub struct RawFile {
    pub local_path: PathBuf,
    pub source: String,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub gzip: bool,
}

impl RawFile {
    /// Hash a local file (streaming) and check a gzip stream is whole.
    pub fn inspect(local_path: &Path, source: &str) -> Result<RawFile> {
        let raw = Self::inspect_plain(local_path, source)?;
        if raw.gzip {
            let read_err = |source| StorageError::ReadLocal {
                path: local_path.to_path_buf(),
                source,
            };
            let f = std::fs::File::open(local_path).map_err(read_err)?;
            let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
            let mut sink = vec![0u8; 1 << 20];
            loop {
                match dec.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(source) => {
                        return Err(StorageError::BadGzip {
                            path: local_path.to_path_buf(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(raw)
    }

    /// Hash a local file without looking inside it.
    pub fn inspect_plain(local_path: &Path, source: &str) -> Result<RawFile> {
        let read_err = |source| StorageError::ReadLocal {
            path: local_path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(local_path).map_err(read_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let name = local_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let gzip = name.to_ascii_lowercase().ends_with(".gz");
        Ok(RawFile {
            local_path: local_path.to_path_buf(),
            source: source.to_string(),
            name,
            sha256: hex::encode(hasher.finalize()),
            size,
            gzip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn raw_zone_is_content_addressed_and_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
        let src = dir.path().join("sales.csv");
        std::fs::write(&src, "a,b\n1,2\n").unwrap();
        let raw = RawFile::inspect(&src, "pos").unwrap();
        assert_eq!(raw.size, 8);
        let t = DateTime::parse_from_rfc3339("2025-03-07T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (path, existed) = lake.put_raw(&raw, t).await.unwrap();
        assert!(!existed);
        assert!(path.as_ref().starts_with("raw/pos/2025/03/07/"), "{path}");
        assert!(path.as_ref().ends_with("-sales.csv"));
        let (again, existed) = lake.put_raw(&raw, t).await.unwrap();
        assert_eq!(again, path);
        assert!(existed);
        assert_eq!(lake.get(&path).await.unwrap().as_ref(), b"a,b\n1,2\n");
    }

    #[test]
    fn truncated_gzip_is_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..10_000 {
            writeln!(enc, "{i},{i}").unwrap();
        }
        let full = enc.finish().unwrap();
        let p = dir.path().join("cut.csv.gz");
        std::fs::write(&p, &full[..full.len() / 2]).unwrap();
        let err = RawFile::inspect(&p, "pos").unwrap_err().to_string();
        assert!(err.contains("cut.csv.gz") && err.contains("gzip"), "{err}");
    }
}
