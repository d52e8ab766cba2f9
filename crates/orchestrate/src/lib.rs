//! Orchestration building blocks, knowing no pipeline stage: cron [`schedule`]s in a time zone
//! and the [`Scheduler`] that fires them, the landing-folder [`Watcher`], [`retry`](mod@retry)
//! with backoff and jitter, and webhook notifications ([`Notifier`]) with a dead-letter log.
//! `shoplake serve` and `shoplake run` compose them with the pipeline; every piece takes its
//! clock, folder or HTTP endpoint from the caller, so tests drive them with a [`ManualClock`],
//! temporary folders and a loopback server.
//!
//! ```
//! use shoplake_orchestrate::schedule::{Schedule, upcoming};
//! use shoplake_core::Job;
//! let s = Schedule::new("daily_report", "0 2 * * *", "Europe/Berlin", Job::DailyReport).unwrap();
//! let now = "2025-03-29T12:00:00Z".parse().unwrap();
//! // 02:00 does not exist in Berlin on 2025-03-30: the report runs at 03:00 CEST instead.
//! assert_eq!(upcoming(&[s], now, 1)[0].local, "2025-03-30 03:00 CEST");
//! ```

pub mod notify;
pub mod retry;
pub mod schedule;
pub mod watch;

pub use notify::{Event, Notifier, NotifyQueue, redact_url};
pub use retry::{RetryPolicy, Transience, retry};
pub use schedule::{Clock, Due, ManualClock, Schedule, Scheduler, SystemClock, Upcoming, upcoming};
pub use watch::{LandedFile, Outcome, Watcher};

use std::path::PathBuf;

/// What can go wrong in orchestration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not hold together (the user's to fix).
    #[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
    Config { problems: Vec<String> },
    /// A file or folder could not be read, moved or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A webhook could not be reached or refused the event. `webhook` is redacted.
    #[error("webhook {webhook}: {message}")]
    Webhook { webhook: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// A spawned task aborted when its owner drops it, so no task outlives what started it.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
