//! Serve: the lake to people, scripts and BI tools from one long-running process. An HTTP API
//! ([`http`]: uploads, runs, listings, SQL as JSON/CSV/Arrow, health and Prometheus metrics)
//! and the PostgreSQL wire protocol ([`pg`]: psql, psycopg, BI tools) share one [`Sessions`]
//! cache of per-user query sessions, so a user's role, masking and row filter hold on every
//! path. Identities, tokens and the audit log live in the control database ([`users`]).
//!
//! It sits at the end of the flow (sources -> raw -> crawl -> transform -> star schema ->
//! **serve**) and depends on the stages only through their public APIs.
//!
//! ```
//! use shoplake_serve::users::Role;
//! assert!(Role::Engineer.can_ingest() && !Role::Analyst.can_ingest());
//! ```

pub mod audit_table;
pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod sessions;
pub mod tls;
pub mod triggers;
pub mod users;

pub use sessions::Sessions;

use shoplake_catalog::ledger::Ledger;
use shoplake_core::ServeConfig;
use shoplake_etl::Pipeline;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Errors of the servers. Each knows the status a client sees.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request is wrong: the message says what to change.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Query(#[from] shoplake_query::QueryError),
    #[error(transparent)]
    Etl(#[from] shoplake_etl::EtlError),
    #[error("control database {what}: {source}")]
    Control {
        what: String,
        source: rusqlite::Error,
    },
    #[error("control database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("internal error (please report): {0}")]
    Internal(String),
}

pub type Result<T, E = ServeError> = std::result::Result<T, E>;

impl From<datafusion::error::DataFusionError> for ServeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        ServeError::Query(shoplake_query::QueryError::from(e))
    }
}

/// Everything the servers share.
pub struct App {
    pub config: ServeConfig,
    pub pipeline: Arc<Pipeline>,
    pub ledger: Arc<Ledger>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<metrics::Metrics>,
    /// Where uploads are staged before they are ingested (inside the state directory).
    pub upload_dir: PathBuf,
    /// Runs the pipeline's task graph (every trigger goes through it).
    pub jobs: Arc<shoplake_jobs::Jobs>,
    /// The run triggered over HTTP, if one is going.
    pub run: tokio::sync::Mutex<Option<http::RunHandle>>,
    /// Held by the run in progress in this process, whatever started it: one at a time.
    pub run_gate: tokio::sync::Mutex<()>,
    /// The dashboard's panel results for the current lake generation.
    pub dashboard: dashboard::Cache,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

impl App {
    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.config.query_timeout_secs)
    }
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.config.client_timeout_secs)
    }
}

/// A spawned task that is aborted when its handle is dropped: no task outlives its owner.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    #[allow(clippy::disallowed_methods)] // the one place we spawn; the handle aborts on drop
    pub fn spawn<F>(f: F) -> AbortOnDrop<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        AbortOnDrop(tokio::task::spawn(f))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Both endpoints, bound and ready to run.
pub struct Bound {
    app: Arc<App>,
    http: TcpListener,
    pg: TcpListener,
    tls: Option<tls::Tls>,
    shutdown_tx: watch::Sender<bool>,
}

/// The parts `bind` needs from the composition root.
pub struct Parts {
    pub config: ServeConfig,
    pub jobs: Arc<shoplake_jobs::Jobs>,
    pub ledger: Arc<Ledger>,
    pub state_dir: PathBuf,
    pub memory_limit: usize,
}

/// Plain text is only for loopback unless explicitly allowed.
fn check_plaintext(config: &ServeConfig) -> Result<()> {
    if config.tls_cert.is_some() || config.allow_plaintext {
        return Ok(());
    }
    for (name, addr) in [("http", config.http), ("postgres", config.postgres)] {
        if !addr.ip().is_loopback() {
            return Err(ServeError::Usage(format!(
                "serve.{name} = {addr} is not a loopback address and no TLS is configured: tokens \
                 would cross the network in clear. Set serve.tls_cert and serve.tls_key, or \
                 serve.allow_plaintext = true behind a TLS-terminating proxy"
            )));
        }
    }
    Ok(())
}

impl Bound {
    /// Check the configuration, open the control tables and bind both addresses.
    pub async fn bind(parts: Parts) -> Result<Bound> {
        let problems = parts.config.problems();
        if !problems.is_empty() {
            return Err(ServeError::Usage(problems.join("; ")));
        }
        check_plaintext(&parts.config)?;
        let tls = match (&parts.config.tls_cert, &parts.config.tls_key) {
            (Some(c), Some(k)) => Some(tls::Tls::load(c, k)?),
            _ => None,
        };
        let control = Arc::new(users::ControlDb::open(
            &parts.state_dir.join("shoplake.db"),
        )?);
        let sessions = Arc::new(Sessions::new(
            parts.jobs.pipeline().tables().clone(),
            parts.ledger.clone(),
            control,
            parts.memory_limit,
        ));
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|e| ServeError::Io {
                context: format!(
                    "binding the {what} endpoint to {addr} (is another server on that port? \
                     set serve.{what} to another address)"
                ),
                source: e,
            })
        };
        let http = bind(parts.config.http, "http").await?;
        let pg = bind(parts.config.postgres, "postgres").await?;
        let upload_dir = parts.state_dir.join("uploads");
        let (shutdown_tx, shutdown) = watch::channel(false);
        let app = Arc::new(App {
            config: parts.config,
            pipeline: parts.jobs.pipeline().clone(),
            jobs: parts.jobs,
            run_gate: tokio::sync::Mutex::new(()),
            ledger: parts.ledger,
            sessions,
            metrics: Arc::new(metrics::Metrics::default()),
            upload_dir,
            run: tokio::sync::Mutex::new(None),
            dashboard: dashboard::Cache::default(),
            shutdown,
        });
        Ok(Bound {
            app,
            http,
            pg,
            tls,
            shutdown_tx,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.app.config.http)
    }

    pub fn postgres_addr(&self) -> SocketAddr {
        self.pg.local_addr().unwrap_or(self.app.config.postgres)
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serve until `stop` resolves (SIGTERM, Ctrl-C), then shut down gracefully: stop
    /// accepting, let requests, connections and a triggered run finish within the grace
    /// period, and cancel what is left.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        let Bound {
            app,
            http,
            pg,
            tls,
            shutdown_tx,
        } = self;
        let grace = Duration::from_secs(app.config.shutdown_grace_secs);
        let http_task = AbortOnDrop::spawn(http::serve(app.clone(), http, tls.clone()));
        let pg_task = AbortOnDrop::spawn(pg::serve(app.clone(), pg, tls));
        let triggers = triggers::start(&app)?;
        let _warm = AbortOnDrop::spawn(dashboard::warm_loop(app.clone()));
        stop.await;
        tracing::info!("shutting down: no new connections; finishing work in progress");
        let _ = shutdown_tx.send(true);
        let run = app.run.lock().await.take();
        let drain = async {
            let _ = tokio::join!(http_task.wait(), pg_task.wait(), triggers.wait());
            if let Some(run) = run {
                run.wait().await;
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                "work still running after {}s: cancelled (an interrupted run is rolled back by the next run)",
                grace.as_secs()
            );
        }
        Ok(())
    }
}

impl<T> AbortOnDrop<T> {
    /// Wait for the task (a panic or an abort counts as finished).
    pub async fn wait(mut self) -> Option<T> {
        (&mut self.0).await.ok()
    }
}
