//! Identities: users, their role, their row filter and the hash of their API token, in the
//! control database (`<state_dir>/shoplake.db`, tables `users` and `audit`).
//!
//! A token is 32 random bytes from the operating system, shown once as `slk_<64 hex>`. We keep
//! only its SHA-256: a token has 256 bits of entropy, so a fast hash is as good as a slow one
//! against guessing (there is no dictionary to try), and a stolen database yields no usable
//! token. Every presented token is compared against every stored hash in constant time.

use crate::{Result, ServeError};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// What a user may do. See `docs/serve.md` for the full matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: users' data in clear, the audit log, every endpoint.
    Admin,
    /// Upload, run, read every table (PII as stored: keyed hashes), system tables, quarantine.
    Engineer,
    /// Read processed tables and marts, customer PII masked, SQL read-only.
    Analyst,
    /// The dashboard only; no SQL.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Engineer, Role::Analyst, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Engineer => "engineer",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ServeError::Usage(format!(
                    "unknown role {s:?}; roles are admin, engineer, analyst and viewer"
                ))
            })
    }

    /// Upload files and trigger runs.
    pub fn can_ingest(self) -> bool {
        matches!(self, Role::Admin | Role::Engineer)
    }
    /// Run SQL and list tables.
    pub fn can_query(self) -> bool {
        !matches!(self, Role::Viewer)
    }
    /// Files, runs, quarantine, system tables and metrics.
    pub fn can_operate(self) -> bool {
        matches!(self, Role::Admin | Role::Engineer)
    }
    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

/// A user as the servers see it (never the token).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Column -> allowed values (see `shoplake_query::Access::row_filter`).
    pub row_filter: BTreeMap<String, Vec<String>>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    token_sha256: [u8; 32],
}

/// The `users` and `audit` tables, behind one connection. Writes of this connection do not
/// change its `data_version`, so [`ControlDb::data_version`] tells changes made by anyone else
/// (a run, `shoplake users add`) apart from our own audit records.
pub struct ControlDb {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  token_sha256 TEXT NOT NULL UNIQUE,
  row_filter TEXT NOT NULL DEFAULT '{}',
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  user_name TEXT,
  role TEXT,
  protocol TEXT NOT NULL,
  client TEXT,
  action TEXT NOT NULL,
  detail TEXT NOT NULL,
  outcome TEXT NOT NULL,
  error TEXT,
  rows INTEGER,
  duration_ms INTEGER
);
";

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: 32 bytes from the OS, hex-encoded behind a recognisable prefix.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ServeError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(format!("slk_{}", hex::encode(bytes)))
}

/// Parse `column=value[,value...]` filter specs into a row filter. Region values are
/// normalised like the pipeline normalises them (`north` -> `North`).
pub fn parse_row_filter(specs: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for spec in specs {
        let Some((column, values)) = spec.split_once('=') else {
            return Err(ServeError::Usage(format!(
                "row filter {spec:?}: write COLUMN=VALUE[,VALUE...], e.g. region=North"
            )));
        };
        let column = column.trim().to_ascii_lowercase();
        if column.is_empty()
            || !column
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ServeError::Usage(format!(
                "row filter {spec:?}: {column:?} is not a column name"
            )));
        }
        let mut vals = Vec::new();
        for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let v = if column == "region" {
                shoplake_core::values::normalize_region(v).unwrap_or_else(|| v.to_string())
            } else {
                v.to_string()
            };
            vals.push(v);
        }
        if vals.is_empty() {
            return Err(ServeError::Usage(format!(
                "row filter {spec:?}: give at least one value after '='"
            )));
        }
        out.entry(column).or_default().extend(vals);
    }
    Ok(out)
}

impl ControlDb {
    pub fn open(path: &Path) -> Result<ControlDb> {
        let conn = Connection::open(path).map_err(|e| ServeError::Control {
            what: format!("opening {}", path.display()),
            source: e,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(ControlDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes when another connection (or process) commits to the database.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Add a user; returns the token, which is not stored and cannot be shown again.
    pub fn add_user(
        &self,
        name: &str,
        role: Role,
        row_filter: &BTreeMap<String, Vec<String>>,
    ) -> Result<String> {
        if !valid_user_name(name) {
            return Err(ServeError::Usage(format!(
                "user name {name:?}: use a lower-case letter, then letters, digits, '_' or '-' (at most 63)"
            )));
        }
        let token = new_token()?;
        let conn = self.conn();
        let exists: Option<String> = conn
            .query_row("SELECT name FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Err(ServeError::Usage(format!(
                "user {name:?} exists already; `shoplake users token {name}` issues a new token, \
                 `shoplake users remove {name}` removes it"
            )));
        }
        conn.execute(
            "INSERT INTO users (name, role, token_sha256, row_filter, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name,
                role.as_str(),
                hex::encode(sha256(&token)),
                serde_json::to_string(row_filter).map_err(|e| ServeError::Internal(e.to_string()))?,
                Utc::now().to_rfc3339(),
            ],
        )?;
        Ok(token)
    }

    /// Replace a user's token; the old one stops working at once.
    pub fn rotate_token(&self, name: &str) -> Result<String> {
        let token = new_token()?;
        let n = self.conn().execute(
            "UPDATE users SET token_sha256 = ?2 WHERE name = ?1",
            params![name, hex::encode(sha256(&token))],
        )?;
        if n == 0 {
            return Err(unknown_user(name));
        }
        Ok(token)
    }

    pub fn remove_user(&self, name: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(unknown_user(name));
        }
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<User>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, role, token_sha256, row_filter, created_at FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role, hash, filter, created) = row?;
            let mut token_sha256 = [0u8; 32];
            hex::decode_to_slice(&hash, &mut token_sha256)
                .map_err(|e| ServeError::Internal(format!("users.token_sha256 of {name}: {e}")))?;
            out.push(User {
                role: Role::parse(&role)?,
                row_filter: serde_json::from_str(&filter).map_err(|e| {
                    ServeError::Internal(format!("users.row_filter of {name}: {e}"))
                })?,
                created_at: DateTime::parse_from_rfc3339(&created)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_default(),
                name,
                token_sha256,
            });
        }
        Ok(out)
    }

    /// Append to the audit log.
    pub fn audit(&self, e: &AuditEntry) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit (at, user_name, role, protocol, client, action, detail, outcome, error, rows, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                e.user,
                e.role.map(Role::as_str),
                e.protocol,
                e.client,
                e.action,
                e.detail,
                e.outcome,
                e.error,
                e.rows,
                e.duration_ms,
            ],
        )?;
        Ok(())
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT audit_id, at, user_name, role, protocol, client, action, detail, outcome, error, rows, duration_ms
             FROM audit ORDER BY audit_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditRecord {
                audit_id: r.get(0)?,
                at: r.get(1)?,
                user_name: r.get(2)?,
                role: r.get(3)?,
                protocol: r.get(4)?,
                client: r.get(5)?,
                action: r.get(6)?,
                detail: r.get(7)?,
                outcome: r.get(8)?,
                error: r.get(9)?,
                rows: r.get(10)?,
                duration_ms: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn unknown_user(name: &str) -> ServeError {
    ServeError::Usage(format!(
        "no user {name:?}; `shoplake users list` shows them"
    ))
}

/// The users, loaded once and checked in constant time.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: Vec<User>,
}

impl Directory {
    pub fn new(users: Vec<User>) -> Directory {
        Directory { users }
    }

    /// Every user, by name.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The user holding this token. Every stored hash is compared, without an early exit.
    pub fn by_token(&self, token: &str) -> Option<&User> {
        let presented = sha256(token);
        let mut found = None;
        for u in &self.users {
            if bool::from(u.token_sha256.ct_eq(&presented)) {
                found = Some(u);
            }
        }
        found
    }

    /// The user `name` when `password` is their token (the PostgreSQL password).
    pub fn by_name_and_token(&self, name: &str, password: &str) -> Option<&User> {
        let presented = sha256(password);
        let u = self.users.iter().find(|u| u.name == name)?;
        bool::from(u.token_sha256.ct_eq(&presented)).then_some(u)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// One line of the audit log, as written.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub user: Option<String>,
    pub role: Option<Role>,
    /// `http` or `postgres`.
    pub protocol: &'static str,
    pub client: Option<String>,
    /// `sql`, `upload`, `run`, `login`, `list_files`, ...
    pub action: String,
    /// The SQL text, the file name, the path.
    pub detail: String,
    /// `ok`, `denied`, `error`, `cancelled`.
    pub outcome: &'static str,
    pub error: Option<String>,
    pub rows: Option<i64>,
    pub duration_ms: Option<i64>,
}

/// One line of the audit log, as read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    pub audit_id: i64,
    pub at: String,
    pub user_name: Option<String>,
    pub role: Option<String>,
    pub protocol: String,
    pub client: Option<String>,
    pub action: String,
    pub detail: String,
    pub outcome: String,
    pub error: Option<String>,
    pub rows: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hashed_and_found_in_constant_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = ControlDb::open(&dir.path().join("c.db")).unwrap();
        let t = db.add_user("ann", Role::Analyst, &BTreeMap::new()).unwrap();
        assert!(t.starts_with("slk_") && t.len() == 68);
        let users = db.users().unwrap();
        let d = Directory::new(users);
        assert_eq!(d.by_token(&t).unwrap().name, "ann");
        assert!(d.by_token("slk_nope").is_none());
        assert!(d.by_name_and_token("ann", &t).is_some());
        assert!(d.by_name_and_token("bob", &t).is_none());
        let raw: String = db
            .conn()
            .query_row("SELECT token_sha256 FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.contains(&t[4..]));
        assert!(db.add_user("ann", Role::Admin, &BTreeMap::new()).is_err());
        let t2 = db.rotate_token("ann").unwrap();
        let d = Directory::new(db.users().unwrap());
        assert!(d.by_token(&t).is_none());
        assert!(d.by_token(&t2).is_some());
    }

    #[test]
    fn row_filters_parse_and_normalise_regions() {
        let f = parse_row_filter(&["region=north, S".into()]).unwrap();
        assert_eq!(f["region"], vec!["North", "South"]);
        assert!(parse_row_filter(&["region".into()]).is_err());
        assert!(parse_row_filter(&["re gion=x".into()]).is_err());
        assert!(parse_row_filter(&["region=".into()]).is_err());
    }
}
