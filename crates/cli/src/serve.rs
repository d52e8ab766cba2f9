//! `shoplake serve` and `shoplake users`: the composition of the servers and the identities
//! they accept.

use crate::context::App;
use anyhow::{Context, Result, bail};
use shoplake_serve::users::{ControlDb, Role, parse_row_filter};
use shoplake_serve::{Bound, Parts};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// HTTP API address [default: serve.http, 127.0.0.1:8080]
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// PostgreSQL wire address [default: serve.postgres, 127.0.0.1:5433]
    #[arg(long)]
    pub postgres: Option<SocketAddr>,
    /// PEM certificate chain: TLS on both endpoints (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Allow plain text on a non-loopback address (only behind a TLS-terminating proxy).
    #[arg(long)]
    pub allow_plaintext: bool,
}

#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub action: UsersAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersAction {
    /// Add a user and print their API token (shown once; also their PostgreSQL password).
    Add {
        name: String,
        /// admin, engineer, analyst or viewer.
        #[arg(long)]
        role: String,
        /// Row filter COLUMN=VALUE[,VALUE...] (repeatable), e.g. region=North: the user sees
        /// only those rows in every table and query.
        #[arg(long = "filter", value_name = "COLUMN=VALUES")]
        filters: Vec<String>,
    },
    /// List users, roles and row filters (never tokens).
    List,
    /// Issue a new token for a user; the old one stops working.
    Token { name: String },
    /// Remove a user.
    Remove { name: String },
}

fn control(app: &App) -> Result<ControlDb> {
    Ok(ControlDb::open(&app.state_dir.join("shoplake.db"))?)
}

pub fn users(app: &App, a: UsersArgs) -> Result<ExitCode> {
    let db = control(app)?;
    match a.action {
        UsersAction::Add {
            name,
            role,
            filters,
        } => {
            let role = Role::parse(&role)?;
            let filter = parse_row_filter(&filters)?;
            if !filter.is_empty() && role.can_operate() {
                bail!(
                    "row filters are for analysts and viewers: a {} reads the system tables and \
                     the quarantine, which a filter cannot narrow",
                    role.as_str()
                );
            }
            let token = db.add_user(&name, role, &filter)?;
            println!("added {name} ({})", role.as_str());
            println!("token (shown once; also the PostgreSQL password): {token}");
        }
        UsersAction::List => {
            println!("{:<24} {:<9} {:<25} row filter", "name", "role", "created");
            for u in db.users()? {
                let f: Vec<String> = u
                    .row_filter
                    .iter()
                    .map(|(c, v)| format!("{c}={}", v.join(",")))
                    .collect();
                println!(
                    "{:<24} {:<9} {:<25} {}",
                    u.name,
                    u.role.as_str(),
                    u.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    f.join(" ")
                );
            }
        }
        UsersAction::Token { name } => {
            let token = db.rotate_token(&name)?;
            println!("new token for {name} (shown once; the old one no longer works): {token}");
        }
        UsersAction::Remove { name } => {
            db.remove_user(&name)?;
            println!("removed {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn serve(app: App, a: ServeArgs) -> Result<ExitCode> {
    let mut config = app.config.serve.clone();
    if let Some(h) = a.http {
        config.http = h;
    }
    if let Some(p) = a.postgres {
        config.postgres = p;
    }
    if a.tls_cert.is_some() || a.tls_key.is_some() {
        config.tls_cert = a.tls_cert;
        config.tls_key = a.tls_key;
    }
    config.allow_plaintext |= a.allow_plaintext;
    run(app, config).await
}

/// `shoplake demo` without `--no-serve`: serve the demo lake, with an admin user to try it.
pub async fn demo_serve(app: App) -> Result<ExitCode> {
    let db = control(&app)?;
    if db.users()?.is_empty() {
        let token = db.add_user("demo", Role::Admin, &Default::default())?;
        println!("\nadded user demo (admin); token (shown once): {token}");
        println!(
            "  dashboard: http://{}/ (sign in with the token)",
            app.config.serve.http
        );
        println!(
            "  curl -H 'Authorization: Bearer {token}' http://{}/api/v1/tables",
            app.config.serve.http
        );
        println!(
            "  psql 'postgresql://demo:{token}@{}:{}/shoplake'",
            app.config.serve.postgres.ip(),
            app.config.serve.postgres.port()
        );
    }
    let config = app.config.serve.clone();
    run(app, config).await
}

async fn run(app: App, config: shoplake_core::ServeConfig) -> Result<ExitCode> {
    let memory_limit = app.config.pipeline.memory_limit_mb * 1024 * 1024;
    let bound = Bound::bind(Parts {
        config,
        jobs: Arc::new(crate::commands::jobs(&app)?),
        ledger: app.ledger,
        state_dir: app.state_dir,
        memory_limit,
    })
    .await
    .context("starting the servers")?;
    let scheme = if bound.tls() { "https" } else { "http" };
    println!("serving HTTP on {scheme}://{}", bound.http_addr());
    println!("dashboard at {scheme}://{}/", bound.http_addr());
    println!(
        "serving PostgreSQL on {} ({})",
        bound.postgres_addr(),
        if bound.tls() {
            "TLS"
        } else {
            "plain text, loopback"
        }
    );
    println!("SIGTERM or Ctrl-C stops both, finishing work in progress");
    std::io::stdout().flush().ok();
    bound.run(stop()).await?;
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C.
async fn stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
