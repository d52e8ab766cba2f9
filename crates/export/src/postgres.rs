//! PostgreSQL: one connection, one transaction for schema changes and rows alike (DDL is
//! transactional there), rows sent with `COPY ... FROM STDIN` in the text format.

use crate::lake::{Exported, LakeTable};
use crate::target::{Dialect, Target};
use crate::{AbortOnDrop, ExportError, ExportProgress, Result, STATE_TABLE, Sink, next_rows};
use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::error::SqlState;

/// COPY data is sent in chunks of about this size.
const CHUNK: usize = 1 << 20;

pub struct PgSink {
    client: tokio_postgres::Client,
    target: Target,
    _driver: AbortOnDrop<()>,
}

impl PgSink {
    pub async fn connect(target: &Target) -> Result<PgSink> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&target.host)
            .port(target.port)
            .user(&target.user)
            .dbname(&target.database)
            .application_name("shoplake export")
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(p) = target.password() {
            config.password(p);
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| connect_error(target, &e))?;
        #[allow(clippy::disallowed_methods)] // wrapped: aborted when the sink is dropped
        let driver = AbortOnDrop(tokio::task::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        }));
        Ok(PgSink {
            client,
            target: target.clone(),
            _driver: driver,
        })
    }

    fn db_error(&self, context: &str) -> impl Fn(tokio_postgres::Error) -> ExportError + '_ {
        let context = context.to_string();
        move |e| ExportError::Database {
            dialect: Dialect::Postgres.name(),
            context: context.clone(),
            source: Box::new(DbError(e)),
        }
    }
}

/// A driver error shown with the server's message, detail and hint.
#[derive(Debug)]
struct DbError(tokio_postgres::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{} ({})", db.message(), db.code().code())?;
                if let Some(d) = db.detail() {
                    write!(f, "; {d}")?;
                }
                if let Some(h) = db.hint() {
                    write!(f, "; hint: {h}")?;
                }
                Ok(())
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for DbError {}

fn connect_error(target: &Target, e: &tokio_postgres::Error) -> ExportError {
    let dialect = Dialect::Postgres.name();
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return ExportError::Auth(Box::new(crate::AuthError {
                dialect,
                address: target.address(),
                user: target.user.clone(),
                database: target.database.clone(),
                reason: db.message().to_string(),
                password_hint: password_hint(target, "PGPASSWORD"),
            }));
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return ExportError::Usage(format!(
                "{dialect} at {} has no database {:?}; create it first (CREATE DATABASE {})",
                target.address(),
                target.database,
                target.database
            ));
        }
        return ExportError::Connect(Box::new(crate::ConnectError {
            dialect,
            address: target.address(),
            reason: server_message(e),
            hint: "check the URL".into(),
        }));
    }
    let text = source_chain(e);
    let hint = if text.contains("password") {
        return ExportError::Auth(Box::new(crate::AuthError {
            dialect,
            address: target.address(),
            user: target.user.clone(),
            database: target.database.clone(),
            reason: text,
            password_hint: password_hint(target, "PGPASSWORD"),
        }));
    } else if text.contains("refused") {
        format!(
            "is PostgreSQL running and listening on {}? (listen_addresses and port in \
             postgresql.conf)",
            target.address()
        )
    } else {
        "check the host and port in the URL and that the network reaches them".to_string()
    };
    ExportError::Connect(Box::new(crate::ConnectError {
        dialect,
        address: target.address(),
        reason: text,
        hint,
    }))
}

fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// An error with its causes, `a: b: c`.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        cur = s.source();
    }
    text
}

/// Where a password may come from, for an authentication error.
pub(crate) fn password_hint(target: &Target, driver_env: &str) -> String {
    match &target.password_source {
        Some(s) => format!("it came from {s}"),
        None => format!(
            "none was given: put it in the URL, SHOPLAKE_EXPORT_PASSWORD (or the variable named \
             by export.password_env) or {driver_env}"
        ),
    }
}

impl Sink for PgSink {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn prepare(&mut self) -> Result<()> {
        // One export at a time per database: a second one waits for the first, a while.
        let locked = self
            .client
            .batch_execute(
                "SET lock_timeout = '30s';
                 SELECT pg_advisory_lock(hashtext('shoplake_export'));
                 SET lock_timeout = 0",
            )
            .await;
        if let Err(e) = locked {
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                return Err(ExportError::Usage(format!(
                    "another shoplake export to {} has been running for 30 s or more; \
                     wait for it to finish",
                    self.target
                )));
            }
            return Err(self.db_error("taking the export lock")(e));
        }
        let ddl = format!(
            "SET client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
               table_name text PRIMARY KEY,
               lake_table_id text NOT NULL,
               lake_version bigint NOT NULL,
               rows_total bigint NOT NULL,
               last_mode text NOT NULL,
               last_rows bigint NOT NULL,
               exported_at timestamp with time zone NOT NULL DEFAULT now()
             );
             BEGIN"
        );
        self.client
            .batch_execute(&ddl)
            .await
            .map_err(self.db_error("creating the state table"))
    }

    async fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                   FROM pg_attribute a
                  WHERE a.attrelid = to_regclass(quote_ident($1))
                    AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&table],
            )
            .await
            .map_err(self.db_error(&format!("reading the columns of {table}")))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    async fn execute(&mut self, sql: &str, context: &str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(self.db_error(context))
    }

    async fn begin_data(&mut self) -> Result<()> {
        Ok(()) // the transaction began in `prepare`, before the DDL
    }

    async fn exported(&mut self, table: &str) -> Result<Option<Exported>> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT lake_table_id, lake_version, rows_total FROM {STATE_TABLE} \
                     WHERE table_name = $1"
                ),
                &[&table],
            )
            .await
            .map_err(self.db_error("reading the export state"))?;
        Ok(row.map(|r| Exported {
            table_uid: r.get(0),
            version: r.get(1),
            rows: r.get(2),
        }))
    }

    async fn load(
        &mut self,
        table: &LakeTable,
        mut stream: datafusion::physical_plan::SendableRecordBatchStream,
        progress: &dyn ExportProgress,
    ) -> Result<u64> {
        let d = Dialect::Postgres;
        let cols: Vec<String> = table
            .schema
            .fields()
            .iter()
            .map(|f| crate::sql::ident(d, f.name()))
            .collect();
        let copy = format!(
            "COPY {} ({}) FROM STDIN",
            crate::sql::ident(d, &table.name),
            cols.join(", ")
        );
        let context = format!("loading {}", table.name);
        let sink = self
            .client
            .copy_in::<_, Bytes>(&copy)
            .await
            .map_err(self.db_error(&context))?;
        let mut sink = std::pin::pin!(sink);
        let mut buf = String::with_capacity(CHUNK + CHUNK / 4);
        while let Some(rows) = next_rows(table, &mut stream).await? {
            rows.write_copy_text(&mut buf);
            progress.rows(rows.len as u64);
            if buf.len() >= CHUNK {
                let chunk = Bytes::from(std::mem::take(&mut buf));
                sink.send(chunk).await.map_err(self.db_error(&context))?;
            }
        }
        if !buf.is_empty() {
            sink.send(Bytes::from(buf))
                .await
                .map_err(self.db_error(&context))?;
        }
        let n = sink.finish().await.map_err(self.db_error(&context))?;
        Ok(n)
    }

    async fn record(&mut self, table: &str, state: &Exported, mode: &str, rows: u64) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO {STATE_TABLE}
                       (table_name, lake_table_id, lake_version, rows_total, last_mode, last_rows, exported_at)
                     VALUES ($1, $2, $3, $4, $5, $6, now())
                     ON CONFLICT (table_name) DO UPDATE SET
                       lake_table_id = EXCLUDED.lake_table_id,
                       lake_version = EXCLUDED.lake_version,
                       rows_total = EXCLUDED.rows_total,
                       last_mode = EXCLUDED.last_mode,
                       last_rows = EXCLUDED.last_rows,
                       exported_at = EXCLUDED.exported_at"
                ),
                &[
                    &table,
                    &state.table_uid,
                    &state.version,
                    &state.rows,
                    &mode,
                    &(rows as i64),
                ],
            )
            .await
            .map_err(self.db_error("recording the export state"))?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(self.db_error("committing the export"))
    }
}
