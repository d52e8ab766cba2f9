//! `[serve]` in `shoplake.toml`: the long-running `shoplake serve` process (HTTP API and the
//! PostgreSQL wire endpoint). Spec types only; `shoplake-serve` builds the servers from them.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address of the HTTP API and the dashboard (`/`).
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// Address of the PostgreSQL wire endpoint.
    #[serde(default = "default_postgres")]
    pub postgres: SocketAddr,
    /// PEM certificate chain for TLS on both endpoints (needs `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or SEC1) for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve without TLS on an address other than loopback. Tokens and passwords then cross
    /// the network in clear: only behind a TLS-terminating proxy.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Largest upload into the raw zone, in MiB.
    #[serde(default = "default_max_upload_mb")]
    pub max_upload_mb: u64,
    /// Most rows one SQL result may return over HTTP; a larger result is cut at this many rows
    /// and flagged as truncated. A request may ask for fewer (`limit`), never more.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Longest a query may run, in seconds (HTTP and PostgreSQL wire).
    #[serde(default = "default_query_timeout_secs")]
    pub query_timeout_secs: u64,
    /// Longest a client may take to send a request's headers or finish its startup, in seconds.
    #[serde(default = "default_client_timeout_secs")]
    pub client_timeout_secs: u64,
    /// Most PostgreSQL connections at once; more are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest to wait on SIGTERM for requests and a triggered run to finish, in seconds;
    /// what is still running then is cancelled.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// How often an open dashboard reloads its charts, in seconds (0: only on demand).
    #[serde(default = "default_dashboard_refresh_secs")]
    pub dashboard_refresh_secs: u64,
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_postgres() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5433))
}
fn default_max_upload_mb() -> u64 {
    1024
}
fn default_max_rows() -> u64 {
    1_000_000
}
fn default_query_timeout_secs() -> u64 {
    300
}
fn default_client_timeout_secs() -> u64 {
    30
}
fn default_max_connections() -> usize {
    64
}
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_dashboard_refresh_secs() -> u64 {
    300
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            http: default_http(),
            postgres: default_postgres(),
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            max_upload_mb: default_max_upload_mb(),
            max_rows: default_max_rows(),
            query_timeout_secs: default_query_timeout_secs(),
            client_timeout_secs: default_client_timeout_secs(),
            max_connections: default_max_connections(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            dashboard_refresh_secs: default_dashboard_refresh_secs(),
        }
    }
}

impl ServeConfig {
    /// Every inconsistency, as `serve.<field>: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            out.push("serve: tls_cert and tls_key go together; set both or neither".to_string());
        }
        for (name, v) in [
            ("max_upload_mb", self.max_upload_mb),
            ("max_rows", self.max_rows),
            ("query_timeout_secs", self.query_timeout_secs),
            ("client_timeout_secs", self.client_timeout_secs),
        ] {
            if v == 0 {
                out.push(format!("serve.{name} must be at least 1"));
            }
        }
        if self.max_connections == 0 {
            out.push("serve.max_connections must be at least 1".to_string());
        }
        // Port 0 asks the system for a free port, a different one for each endpoint.
        if self.http == self.postgres && self.http.port() != 0 {
            out.push(format!(
                "serve.http and serve.postgres are both {}; give them different ports",
                self.http
            ));
        }
        out
    }
}
