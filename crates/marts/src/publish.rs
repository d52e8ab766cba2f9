//! Publishing a report atomically on an object store, which has no directory rename.
//!
//! A report of a period lives under `reports/<kind>/<key>/` (e.g. `reports/daily/2025-03-01/`):
//!
//! ```text
//! reports/daily/2025-03-01/manifest.json          the pointer: which generation is current
//! reports/daily/2025-03-01/g20250302T061500123456Z-1a2b3c4d/report.html, *.csv
//! ```
//!
//! Writing a report puts every file into a new generation folder first, then writes
//! `manifest.json` last: one object PUT, which is atomic on object stores (and on a local disk,
//! where the object store writes a temporary file and renames it). Readers go through the
//! manifest, so they see the old report or the new one, never a mix. Then the generations the
//! manifest no longer names are deleted, so a period never holds two reports; a folder left by a
//! writer that died before its flip is cleaned up the same way by the next write.

use crate::Result;
use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoplake_storage::{Lake, Zone};

/// The pointer object of a report.
pub const MANIFEST: &str = "manifest.json";

/// What `manifest.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub key: String,
    /// The current generation folder (under `reports/<kind>/<key>/`).
    pub generation: String,
    pub created_at: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A published report.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest: Manifest,
    /// Object path of the generation folder (`reports/daily/2025-03-01/g.../`).
    pub folder: String,
    /// Earlier generations removed.
    pub replaced: usize,
}

fn base(kind: &str, key: &str) -> String {
    format!("{}/{kind}/{key}", Zone::Reports.prefix())
}

/// The current report of a period, if any.
pub async fn current(lake: &Lake, kind: &str, key: &str) -> Result<Option<Manifest>> {
    let path = ObjectPath::from(format!("{}/{MANIFEST}", base(kind, key)));
    match lake.get(&path).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(shoplake_storage::StorageError::Store(object_store::Error::NotFound { .. })) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A report being written: files go into its own generation folder; [`Generation::commit`]
/// makes it the current report. Dropped without a commit, it leaves a folder that the next
/// commit of the same period removes.
pub struct Generation {
    lake: Lake,
    kind: String,
    key: String,
    generation: String,
    files: Vec<ManifestFile>,
    created_at: chrono::DateTime<Utc>,
}

/// A file of a generation, written in parts (multipart upload), so a large section never has
/// to be held in memory whole.
pub struct FileWriter {
    name: String,
    upload: WriteMultipart,
    hasher: Sha256,
    bytes: u64,
}

impl FileWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.upload.wait_for_capacity(4).await?;
        self.upload.write(data);
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        Ok(())
    }
}

impl Generation {
    /// Start a new report of `kind` (`daily`, `monthly`) for `key` (the period).
    pub fn begin(lake: &Lake, kind: &str, key: &str) -> Generation {
        let now = Utc::now();
        let generation = format!(
            "g{}-{}",
            now.format("%Y%m%dT%H%M%S%6fZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Generation {
            lake: lake.clone(),
            kind: kind.to_string(),
            key: key.to_string(),
            generation,
            files: Vec::new(),
            created_at: now,
        }
    }

    /// Object path of the generation folder.
    pub fn folder(&self) -> String {
        format!("{}/{}", base(&self.kind, &self.key), self.generation)
    }

    fn path(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}", self.folder()))
    }

    /// Write a whole small file.
    pub async fn put(&mut self, name: &str, bytes: Bytes) -> Result<()> {
        self.files.push(ManifestFile {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        self.lake.put(&self.path(name), bytes).await?;
        Ok(())
    }

    /// Start a file written in parts.
    pub async fn create(&self, name: &str) -> Result<FileWriter> {
        let upload = self.lake.store().put_multipart(&self.path(name)).await?;
        Ok(FileWriter {
            name: name.to_string(),
            upload: WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// Finish a file started with [`Generation::create`].
    pub async fn close(&mut self, file: FileWriter) -> Result<()> {
        file.upload.finish().await?;
        self.files.push(ManifestFile {
            name: file.name,
            bytes: file.bytes,
            sha256: hex::encode(file.hasher.finalize()),
        });
        Ok(())
    }

    /// Make this the current report of its period (the manifest flip), then delete the other
    /// generations.
    pub async fn commit(self) -> Result<Published> {
        let base = base(&self.kind, &self.key);
        let folder = self.folder();
        let manifest = Manifest {
            kind: self.kind.clone(),
            key: self.key.clone(),
            generation: self.generation.clone(),
            created_at: self.created_at.to_rfc3339(),
            files: self.files,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| crate::MartError::Internal(e.to_string()))?;
        // The flip: readers see the new report from here on.
        self.lake
            .put(
                &ObjectPath::from(format!("{base}/{MANIFEST}")),
                Bytes::from(json),
            )
            .await?;
        let replaced = remove_others(&self.lake, &self.kind, &self.key, &self.generation).await?;
        Ok(Published {
            manifest,
            folder,
            replaced,
        })
    }
}

/// Remove every generation of a period but `keep` and the one the manifest names (a concurrent
/// writer may have flipped to its own since).
async fn remove_others(lake: &Lake, kind: &str, key: &str, keep: &str) -> Result<usize> {
    let base = base(kind, key);
    let pointed = current(lake, kind, key).await?.map(|m| m.generation);
    let store = lake.store();
    let listing = store
        .list_with_delimiter(Some(&ObjectPath::from(base.as_str())))
        .await?;
    let mut replaced = 0;
    for prefix in listing.common_prefixes {
        let Some(name) = prefix.filename().map(str::to_string) else {
            continue;
        };
        if name == keep || Some(&name) == pointed.as_ref() || !name.starts_with('g') {
            continue;
        }
        let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        for o in objects {
            match store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = lake.local_root() {
            // The local store leaves empty folders behind.
            let _ = std::fs::remove_dir(root.join(prefix.as_ref()));
        }
        replaced += 1;
    }
    Ok(replaced)
}

/// Write `files` as the new report of `kind`/`key`, replacing any earlier one atomically.
pub async fn publish(
    lake: &Lake,
    kind: &str,
    key: &str,
    files: Vec<(String, Bytes)>,
) -> Result<Published> {
    let mut g = Generation::begin(lake, kind, key);
    for (name, bytes) in files {
        g.put(&name, bytes).await?;
    }
    g.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_report_replaces_the_first_and_leftovers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        // A folder left by a writer that died before its flip.
        lake.put(
            &ObjectPath::from("reports/daily/2025-03-01/g20000101T000000000000Z-dead/a.csv"),
            Bytes::from_static(b"x\n"),
        )
        .await
        .unwrap();
        let one = publish(
            &lake,
            "daily",
            "2025-03-01",
            vec![("a.csv".into(), Bytes::from_static(b"1\n"))],
        )
        .await
        .unwrap();
        assert_eq!(one.replaced, 1);
        let two = publish(
            &lake,
            "daily",
            "2025-03-01",
            vec![("a.csv".into(), Bytes::from_static(b"2\n"))],
        )
        .await
        .unwrap();
        assert_eq!(two.replaced, 1);
        let m = current(&lake, "daily", "2025-03-01")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.generation, two.manifest.generation);
        let folders: Vec<_> = std::fs::read_dir(dir.path().join("reports/daily/2025-03-01"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(folders.len(), 2, "{folders:?}"); // manifest.json + one generation
        let got = lake
            .get(&ObjectPath::from(format!("{}/a.csv", two.folder)))
            .await
            .unwrap();
        assert_eq!(got.as_ref(), b"2\n");
    }
}
