//! The landing folder: files dropped into it are handed to the pipeline once they have
//! stopped changing, each (path, size, modification time) once.
//!
//! The folder is polled: listing a folder every second costs little and works on every
//! filesystem (network mounts, container volumes, FUSE) where change notifications do not.
//!
//! Layout: `<landing>/<source>/file.csv` is source `<source>` (deeper folders keep the first
//! one as the source); a file directly in `<landing>` has no source (inferred from its name).
//! Names starting with `.`, and names ending in `.tmp`, `.part` or `.crdownload` (files still
//! being written by common copy tools and browsers) are ignored, and so are the `.done/` and
//! `.failed/` folders where handled files go.

use crate::schedule::Clock;
use crate::{Error, Result};
use chrono::{DateTime, TimeDelta, Utc};
use shoplake_core::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A file ready to be ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandedFile {
    pub path: PathBuf,
    /// The source: the sub-folder of the landing folder it was dropped in, normalised as
    /// `shoplake ingest` does (`Stores EU/` -> `stores_eu`); None for a file directly in the
    /// landing folder (its source is then inferred from its name).
    pub source: Option<String>,
    pub size: u64,
    pub mtime: SystemTime,
}

/// What became of a landed file, told to [`Watcher::done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ingested (or found to be a duplicate of a file already in the lake).
    Loaded,
    /// Could not be ingested; the message is written beside the file.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: SystemTime,
}

/// Polls a landing folder. See the module docs.
pub struct Watcher {
    dir: PathBuf,
    settle: TimeDelta,
    poll: Duration,
    keep: bool,
    clock: Arc<dyn Clock>,
    /// Every file seen, with its stamp and since when it has had that stamp.
    seen: HashMap<PathBuf, (Stamp, DateTime<Utc>)>,
    /// Files handed out, with the stamp they had then.
    returned: HashMap<PathBuf, Stamp>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.dir)
            .field("settle", &self.settle)
            .field("poll", &self.poll)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

const IGNORED_SUFFIXES: [&str; 3] = [".tmp", ".part", ".crdownload"];

/// Whether a file or folder name is skipped by the watcher.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

impl Watcher {
    /// Watch `dir` (created when missing); a file is taken once its size and modification time
    /// have not changed for `settle`. Polls every second; see [`Watcher::poll_every`].
    pub fn new(
        dir: impl Into<PathBuf>,
        settle: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Watcher> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Watcher {
            dir,
            settle: TimeDelta::from_std(settle).unwrap_or(TimeDelta::MAX),
            poll: Duration::from_secs(1),
            keep: true,
            clock,
            seen: HashMap::new(),
            returned: HashMap::new(),
        })
    }

    /// The watcher `[orchestrate]` asks for, or None when `landing` is not set.
    pub fn from_config(config: &Config, clock: Arc<dyn Clock>) -> Result<Option<Watcher>> {
        let o = &config.orchestrate;
        let Some(dir) = &o.landing else {
            return Ok(None);
        };
        Ok(Some(
            Watcher::new(dir, Duration::from_millis(o.landing_settle_ms), clock)?
                .poll_every(Duration::from_millis(o.landing_poll_ms))
                .keep_loaded(o.landing_keep),
        ))
    }

    /// How often [`Watcher::next_batch`] lists the folder.
    pub fn poll_every(mut self, poll: Duration) -> Watcher {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Keep loaded files under `.done/` (true, the default) or delete them.
    pub fn keep_loaded(mut self, keep: bool) -> Watcher {
        self.keep = keep;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Wait until some files are ready and return them (sorted by path).
    pub async fn next_batch(&mut self) -> Vec<LandedFile> {
        loop {
            let batch = self.scan();
            if !batch.is_empty() {
                return batch;
            }
            let deadline =
                self.clock.now() + TimeDelta::from_std(self.poll).unwrap_or(TimeDelta::MAX);
            self.clock.sleep_until(deadline).await;
        }
    }

    /// List the folder once and return the files that have settled and were not returned
    /// before with the same size and modification time. Never waits.
    pub fn scan(&mut self) -> Vec<LandedFile> {
        let now = self.clock.now();
        let mut files = Vec::new();
        walk(&self.dir, &mut files);
        let mut present = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (path, stamp) in files {
            present.insert(path.clone());
            let since = match self.seen.get(&path) {
                Some((s, since)) if *s == stamp => *since,
                _ => {
                    self.seen.insert(path.clone(), (stamp, now));
                    now
                }
            };
            if now - since < self.settle || self.returned.get(&path) == Some(&stamp) {
                continue;
            }
            self.returned.insert(path.clone(), stamp);
            let source = path
                .strip_prefix(&self.dir)
                .ok()
                .filter(|rel| rel.components().count() > 1)
                .and_then(|rel| rel.components().next())
                .map(|c| source_name(&c.as_os_str().to_string_lossy()))
                .filter(|s| !s.is_empty());
            tracing::info!(path = %path.display(), source = ?source, size = stamp.size, "landed file ready");
            out.push(LandedFile {
                path,
                source,
                size: stamp.size,
                mtime: stamp.mtime,
            });
        }
        // Files gone from the folder are forgotten, so the maps stay as small as the folder.
        self.seen.retain(|p, _| present.contains(p));
        self.returned.retain(|p, _| present.contains(p));
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Move a handled file out of the landing folder: a loaded one to
    /// `.done/<yyyy-mm-dd>/<its path under landing>` (or delete it when loaded files are not
    /// kept), a failed one to `.failed/<its path>` with `<name>.error.txt` beside it. Returns
    /// where the file went (None when deleted). A file dropped again at the same path
    /// afterwards is a new file.
    pub fn done(&mut self, path: &Path, outcome: Outcome) -> Result<Option<PathBuf>> {
        let rel = path
            .strip_prefix(&self.dir)
            .map_err(|_| Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("is not under the landing folder {}", self.dir.display()),
                ),
            })?
            .to_path_buf();
        self.seen.remove(path);
        self.returned.remove(path);
        let moved = match &outcome {
            Outcome::Loaded if !self.keep => {
                std::fs::remove_file(path).map_err(Error::io(path))?;
                None
            }
            Outcome::Loaded => {
                let day = self.clock.now().format("%Y-%m-%d").to_string();
                Some(move_to(path, &self.dir.join(".done").join(day).join(&rel))?)
            }
            Outcome::Failed(message) => {
                let dest = move_to(path, &self.dir.join(".failed").join(&rel))?;
                let mut note = dest.clone().into_os_string();
                note.push(".error.txt");
                let note = PathBuf::from(note);
                std::fs::write(&note, format!("{}\n", message.trim_end()))
                    .map_err(Error::io(&note))?;
                Some(dest)
            }
        };
        match &moved {
            Some(dest) => {
                tracing::info!(from = %path.display(), to = %dest.display(), ok = outcome == Outcome::Loaded, "landed file handled")
            }
            None => tracing::info!(path = %path.display(), "landed file loaded and deleted"),
        }
        Ok(moved)
    }
}

/// A folder name as a source name, normalised as `shoplake ingest` does: `Stores EU` ->
/// `stores_eu`.
fn source_name(folder: &str) -> String {
    shoplake_core::model::normalize_column(folder)
        .chars()
        .take(64)
        .collect()
}

/// Rename `from` to `to`, or to `stem-1.ext`, `stem-2.ext`, ... when `to` exists.
fn move_to(from: &Path, to: &Path) -> Result<PathBuf> {
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    let mut dest = to.to_path_buf();
    let stem = to
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = to
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut n = 1;
    while dest.exists() {
        dest = parent.join(format!("{stem}-{n}{ext}"));
        n += 1;
    }
    std::fs::rename(from, &dest).map_err(Error::io(from))?;
    Ok(dest)
}

/// Every regular file under `dir` that is not ignored, with its stamp. A file or folder that
/// cannot be read is logged and skipped (it may have been moved away while listing).
fn walk(dir: &Path, out: &mut Vec<(PathBuf, Stamp)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list landing folder");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_ignored(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // gone since the listing, or a dangling link
        };
        if meta.is_dir() {
            walk(&path, out);
        } else if meta.is_file() {
            out.push((
                path,
                Stamp {
                    size: meta.len(),
                    mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ManualClock, utc};
    use std::io::Write;

    fn setup() -> (tempfile::TempDir, Watcher, ManualClock) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(utc("2025-05-06T10:00:00Z"));
        let w = Watcher::new(
            dir.path().join("landing"),
            Duration::from_secs(2),
            Arc::new(clock.clone()),
        )
        .unwrap();
        (dir, w, clock)
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn names(files: &[LandedFile], root: &Path) -> Vec<String> {
        files
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn a_partial_file_is_taken_only_once_it_settles() {
        let (_d, mut w, clock) = setup();
        let f = w.dir().join("sales.csv");
        write(&f, "id,amount\n");
        assert!(w.scan().is_empty(), "just seen");
        clock.advance(TimeDelta::seconds(1));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(b"1,10.00\n")
            .unwrap();
        assert!(w.scan().is_empty(), "still growing");
        clock.advance(TimeDelta::milliseconds(1500));
        assert!(w.scan().is_empty(), "1.5 s since it last changed");
        clock.advance(TimeDelta::milliseconds(500));
        let got = w.scan();
        assert_eq!(names(&got, w.dir()), ["sales.csv"]);
        assert_eq!(got[0].size, 18);
        assert_eq!(got[0].source, None);
    }

    #[test]
    fn the_same_file_is_returned_once_and_a_new_copy_again() {
        let (_d, mut w, clock) = setup();
        let f = w.dir().join("stores").join("a.csv");
        write(&f, "x\n1\n");
        w.scan();
        clock.advance(TimeDelta::seconds(3));
        assert_eq!(w.scan().len(), 1);
        // The same file seen by later polls (or reported by two events): not again.
        for _ in 0..3 {
            clock.advance(TimeDelta::seconds(3));
            assert!(w.scan().is_empty());
        }
        // Copied over with other content: a new file once it settles.
        write(&f, "x\n1\n2\n");
        assert!(w.scan().is_empty());
        clock.advance(TimeDelta::seconds(2));
        let got = w.scan();
        assert_eq!((got.len(), got[0].size), (1, 6));
    }

    #[test]
    fn sub_folders_name_sources_and_temporary_names_are_ignored() {
        let (_d, mut w, clock) = setup();
        let root = w.dir().to_path_buf();
        for p in [
            "loose.csv",
            "stores/s1.csv",
            "ecommerce/2025/05/orders.json",
            "Stores EU/x.csv",
            ".hidden.csv",
            "stores/.~lock.s1.csv#",
            "stores/big.csv.part",
            "x.tmp",
            "download.csv.crdownload",
            ".done/2025-05-05/old.csv",
            ".failed/bad.csv",
            ".staging/y.csv",
        ] {
            write(&root.join(p), "a\n");
        }
        w.scan();
        clock.advance(TimeDelta::seconds(2));
        let got = w.scan();
        assert_eq!(
            names(&got, &root),
            [
                "Stores EU/x.csv",
                "ecommerce/2025/05/orders.json",
                "loose.csv",
                "stores/s1.csv"
            ]
        );
        let sources: Vec<_> = got.iter().map(|f| f.source.as_deref()).collect();
        assert_eq!(
            sources,
            [Some("stores_eu"), Some("ecommerce"), None, Some("stores")]
        );
    }

    #[test]
    fn done_moves_loaded_and_failed_files_out_of_the_way() {
        let (_d, mut w, clock) = setup();
        let root = w.dir().to_path_buf();
        write(&root.join("stores/a.csv"), "a\n");
        write(&root.join("b.csv"), "b\n");
        w.scan();
        clock.advance(TimeDelta::seconds(2));
        let got = w.scan();
        assert_eq!(got.len(), 2);
        let to = w.done(&got[1].path, Outcome::Loaded).unwrap().unwrap();
        assert_eq!(to, root.join(".done/2025-05-06/stores/a.csv"));
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "a\n");
        let to = w
            .done(
                &got[0].path,
                Outcome::Failed("line 3: bad date \"x\"".into()),
            )
            .unwrap()
            .unwrap();
        assert_eq!(to, root.join(".failed/b.csv"));
        assert_eq!(
            std::fs::read_to_string(root.join(".failed/b.csv.error.txt")).unwrap(),
            "line 3: bad date \"x\"\n"
        );
        assert!(!root.join("b.csv").exists() && !root.join("stores/a.csv").exists());
        // Nothing is left to take, and the moved files are not picked up from .done/.failed.
        clock.advance(TimeDelta::seconds(5));
        assert!(w.scan().is_empty());
        // The same name dropped again is a new file, and does not overwrite the first copy.
        write(&root.join("stores/a.csv"), "a\n");
        w.scan();
        clock.advance(TimeDelta::seconds(2));
        let again = w.scan();
        assert_eq!(again.len(), 1);
        let to = w.done(&again[0].path, Outcome::Loaded).unwrap().unwrap();
        assert_eq!(to, root.join(".done/2025-05-06/stores/a-1.csv"));
        // A path outside the landing folder is refused.
        let err = w
            .done(Path::new("/etc/passwd"), Outcome::Loaded)
            .unwrap_err();
        assert!(
            err.to_string().contains("not under the landing folder"),
            "{err}"
        );
    }

    #[test]
    fn loaded_files_are_deleted_when_not_kept() {
        let (_d, w, clock) = setup();
        let mut w = w.keep_loaded(false);
        let f = w.dir().join("a.csv");
        write(&f, "a\n");
        w.scan();
        clock.advance(TimeDelta::seconds(2));
        let got = w.scan();
        assert_eq!(w.done(&got[0].path, Outcome::Loaded).unwrap(), None);
        assert!(!f.exists());
        assert!(!w.dir().join(".done").exists());
    }

    #[tokio::test]
    async fn next_batch_waits_for_files_to_settle() {
        let (_d, w, clock) = setup();
        let mut w = w.poll_every(Duration::from_millis(500));
        write(&w.dir().join("stores/a.csv"), "a\n");
        let advancer = {
            let clock = clock.clone();
            async move {
                // Each time the watcher parks, move the clock on by one poll.
                for _ in 0..10 {
                    while clock.sleepers() == 0 {
                        tokio::task::yield_now().await;
                    }
                    clock.advance(TimeDelta::milliseconds(500));
                    tokio::task::yield_now().await;
                }
            }
        };
        let batch = tokio::select! {
            b = w.next_batch() => b,
            () = advancer => panic!("no batch after 10 polls"),
        };
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].source.as_deref(), Some("stores"));
        assert!(clock.now() >= utc("2025-05-06T10:00:02Z"));
    }

    #[test]
    fn from_config() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(utc("2025-01-01T00:00:00Z")));
        assert!(
            Watcher::from_config(&Config::default(), clock.clone())
                .unwrap()
                .is_none()
        );
        let mut c = Config::default();
        c.orchestrate.landing = Some(dir.path().join("in"));
        c.orchestrate.landing_keep = false;
        let w = Watcher::from_config(&c, clock).unwrap().unwrap();
        assert!(dir.path().join("in").is_dir(), "created");
        assert_eq!(
            (w.poll, w.settle, w.keep),
            (Duration::from_secs(1), TimeDelta::seconds(2), false)
        );
    }
}
