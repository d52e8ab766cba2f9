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
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
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

/// Write `files` as the new report of `kind`/`key`, replacing any earlier one atomically.
pub async fn publish(
    lake: &Lake,
    kind: &str,
    key: &str,
    files: Vec<(String, Bytes)>,
) -> Result<Published> {
    let now = Utc::now();
    let generation = format!(
        "g{}-{}",
        now.format("%Y%m%dT%H%M%S%6fZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let base = base(kind, key);
    let folder = format!("{base}/{generation}");
    let mut listed = Vec::new();
    for (name, bytes) in files {
        let path = ObjectPath::from(format!("{folder}/{name}"));
        listed.push(ManifestFile {
            name,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        lake.put(&path, bytes).await?;
    }
    let manifest = Manifest {
        kind: kind.to_string(),
        key: key.to_string(),
        generation: generation.clone(),
        created_at: now.to_rfc3339(),
        files: listed,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| crate::MartError::Internal(e.to_string()))?;
    // The flip: readers see the new report from here on.
    lake.put(
        &ObjectPath::from(format!("{base}/{MANIFEST}")),
        Bytes::from(json),
    )
    .await?;

    // Remove every generation the manifest does not name (a concurrent writer may have flipped
    // to its own since: keep that one too).
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
        if name == generation || Some(&name) == pointed.as_ref() || !name.starts_with('g') {
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
    Ok(Published {
        manifest,
        folder,
        replaced,
    })
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
