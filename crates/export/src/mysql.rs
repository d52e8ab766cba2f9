//! MySQL and MariaDB: DDL first (it commits implicitly there), then one InnoDB transaction for
//! every row change and the state updates. Rows go as multi-row `INSERT` statements sized to
//! the server's `max_allowed_packet`: that works on every server as configured out of the
//! box, where `LOAD DATA LOCAL INFILE` needs `local_infile` enabled on both sides (off by
//! default in MySQL 8, and often kept off for security).

use crate::lake::{Exported, LakeTable};
use crate::postgres::{password_hint, source_chain};
use crate::target::{Dialect, Target};
use crate::{ExportError, ExportProgress, Result, STATE_TABLE, Sink, next_rows};
use mysql_async::prelude::Queryable;

pub struct MySink {
    conn: mysql_async::Conn,
    target: Target,
    /// Bytes of row values per INSERT statement.
    statement_bytes: usize,
}

const LOCK_NAME: &str = "shoplake_export";

impl MySink {
    pub async fn connect(target: &Target) -> Result<MySink> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(target.host.clone())
            .tcp_port(target.port)
            .user(Some(target.user.clone()))
            .pass(target.password().map(str::to_string))
            .db_name(Some(target.database.clone()))
            // Use the address given, not a socket the server reports.
            .prefer_socket(false)
            .stmt_cache_size(0);
        let conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| connect_error(target, &e))?;
        Ok(MySink {
            conn,
            target: target.clone(),
            statement_bytes: 4 << 20,
        })
    }

    fn db_error(context: &str) -> impl Fn(mysql_async::Error) -> ExportError + '_ {
        move |e| ExportError::Database {
            dialect: Dialect::MySql.name(),
            context: context.to_string(),
            source: Box::new(e),
        }
    }
}

fn connect_error(target: &Target, e: &mysql_async::Error) -> ExportError {
    let dialect = Dialect::MySql.name();
    if let mysql_async::Error::Server(s) = e {
        // 1045: access denied (user or password); 1044: no access to the database.
        if s.code == 1045 || s.code == 1044 || s.code == 1698 {
            return ExportError::Auth(Box::new(crate::AuthError {
                dialect,
                address: target.address(),
                user: target.user.clone(),
                database: target.database.clone(),
                reason: s.message.clone(),
                password_hint: password_hint(target, "MYSQL_PWD"),
            }));
        }
        if s.code == 1049 {
            return ExportError::Usage(format!(
                "{dialect} at {} has no database {:?}; create it first (CREATE DATABASE {})",
                target.address(),
                target.database,
                target.database
            ));
        }
    }
    let reason = source_chain(e);
    let hint = if reason.contains("refused") {
        format!(
            "is MySQL/MariaDB running and listening on {}? (bind-address and port in the \
             server's configuration)",
            target.address()
        )
    } else {
        "check the host and port in the URL and that the network reaches them".to_string()
    };
    ExportError::Connect(Box::new(crate::ConnectError {
        dialect,
        address: target.address(),
        reason,
        hint,
    }))
}

impl Sink for MySink {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    async fn prepare(&mut self) -> Result<()> {
        let context = "setting the session up";
        // A known session: standard escapes (no NO_BACKSLASH_ESCAPES, no ANSI_QUOTES), strict
        // types, UTC, utf8mb4.
        self.conn
            .query_drop(
                "SET NAMES utf8mb4; \
                 SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
                 ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'; \
                 SET SESSION time_zone = '+00:00'",
            )
            .await
            .map_err(Self::db_error(context))?;
        let locked: Option<Option<i64>> = self
            .conn
            .query_first(format!("SELECT GET_LOCK('{LOCK_NAME}', 30)"))
            .await
            .map_err(Self::db_error("taking the export lock"))?;
        if locked.flatten() != Some(1) {
            return Err(ExportError::Usage(format!(
                "another shoplake export to {} has been running for 30 s or more; wait for it \
                 to finish",
                self.target
            )));
        }
        let packet: Option<u64> = self
            .conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(Self::db_error(context))?;
        if let Some(p) = packet {
            // Leave room for the statement around the values.
            self.statement_bytes = ((p as usize) / 2).clamp(64 << 10, 8 << 20);
        }
        self.conn
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
                   table_name varchar(255) NOT NULL PRIMARY KEY,
                   lake_table_id varchar(64) NOT NULL,
                   lake_version bigint NOT NULL,
                   rows_total bigint NOT NULL,
                   last_mode varchar(16) NOT NULL,
                   last_rows bigint NOT NULL,
                   exported_at datetime(6) NOT NULL
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ))
            .await
            .map_err(Self::db_error("creating the state table"))
    }

    async fn columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>> {
        let rows: Vec<(String, String)> = self
            .conn
            .exec(
                "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR)
                   FROM information_schema.COLUMNS
                  WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?
                  ORDER BY ORDINAL_POSITION",
                (table,),
            )
            .await
            .map_err(Self::db_error(&format!("reading the columns of {table}")))?;
        Ok((!rows.is_empty()).then_some(rows))
    }

    async fn execute(&mut self, sql: &str, context: &str) -> Result<()> {
        self.conn
            .query_drop(sql)
            .await
            .map_err(Self::db_error(context))
    }

    async fn begin_data(&mut self) -> Result<()> {
        self.conn
            .query_drop("START TRANSACTION")
            .await
            .map_err(Self::db_error("starting the transaction"))
    }

    async fn exported(&mut self, table: &str) -> Result<Option<Exported>> {
        let row: Option<(String, i64, i64)> = self
            .conn
            .exec_first(
                format!(
                    "SELECT lake_table_id, lake_version, rows_total FROM {STATE_TABLE} \
                     WHERE table_name = ? FOR UPDATE"
                ),
                (table,),
            )
            .await
            .map_err(Self::db_error("reading the export state"))?;
        Ok(row.map(|(table_uid, version, rows)| Exported {
            table_uid,
            version,
            rows,
        }))
    }

    async fn load(
        &mut self,
        table: &LakeTable,
        mut stream: datafusion::physical_plan::SendableRecordBatchStream,
        progress: &dyn ExportProgress,
    ) -> Result<u64> {
        let d = Dialect::MySql;
        let cols: Vec<String> = table
            .schema
            .fields()
            .iter()
            .map(|f| crate::sql::ident(d, f.name()))
            .collect();
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            crate::sql::ident(d, &table.name),
            cols.join(", ")
        );
        let context = format!("loading {}", table.name);
        let mut total = 0u64;
        while let Some(rows) = next_rows(table, &mut stream).await? {
            for (values, n) in rows.mysql_chunks(self.statement_bytes) {
                let mut stmt = String::with_capacity(head.len() + values.len());
                stmt.push_str(&head);
                stmt.push_str(&values);
                self.conn
                    .query_drop(stmt)
                    .await
                    .map_err(Self::db_error(&context))?;
                total += n as u64;
                progress.rows(n as u64);
            }
        }
        Ok(total)
    }

    async fn record(&mut self, table: &str, state: &Exported, mode: &str, rows: u64) -> Result<()> {
        self.conn
            .exec_drop(
                format!(
                    "INSERT INTO {STATE_TABLE}
                       (table_name, lake_table_id, lake_version, rows_total, last_mode, last_rows, exported_at)
                     VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))
                     ON DUPLICATE KEY UPDATE
                       lake_table_id = VALUES(lake_table_id),
                       lake_version = VALUES(lake_version),
                       rows_total = VALUES(rows_total),
                       last_mode = VALUES(last_mode),
                       last_rows = VALUES(last_rows),
                       exported_at = VALUES(exported_at)"
                ),
                (
                    table,
                    &state.table_uid,
                    state.version,
                    state.rows,
                    mode,
                    rows as i64,
                ),
            )
            .await
            .map_err(Self::db_error("recording the export state"))
    }

    async fn commit(&mut self) -> Result<()> {
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(Self::db_error("committing the export"))?;
        let _ = self
            .conn
            .query_drop(format!("DO RELEASE_LOCK('{LOCK_NAME}')"))
            .await;
        Ok(())
    }
}
