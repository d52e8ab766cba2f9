//! Where the export goes: a `postgres://` or `mysql://` URL, parsed once into its parts so the
//! password is never formatted anywhere. [`Target`] prints itself redacted (`user:***@host`).

use crate::{ExportError, Result};
use std::fmt;

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL/MariaDB",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Dialect::Postgres => 5432,
            Dialect::MySql => 3306,
        }
    }
}

/// URL schemes we accept, with the database they name.
const SCHEMES: [(&str, Dialect); 4] = [
    ("postgres", Dialect::Postgres),
    ("postgresql", Dialect::Postgres),
    ("mysql", Dialect::MySql),
    ("mariadb", Dialect::MySql),
];

/// A parsed export target. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub dialect: Dialect,
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub database: String,
    /// Where the password came from, for messages ("the URL", "PGPASSWORD", ...).
    pub password_source: Option<String>,
}

impl Target {
    /// Parse a target URL: `postgres://user[:password]@host[:port]/database` or
    /// `mysql://user[:password]@host[:port]/database` (`postgresql://`, `mariadb://` too).
    /// Errors quote the URL redacted.
    pub fn parse(raw: &str) -> Result<Target> {
        let shown = redact(raw);
        let bad = |problem: String| ExportError::Usage(format!("export URL {shown}: {problem}"));
        let url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
        let scheme = url.scheme().to_ascii_lowercase();
        let Some(&(_, dialect)) = SCHEMES.iter().find(|(s, _)| *s == scheme) else {
            let hint = shoplake_core::did_you_mean(&scheme, SCHEMES.iter().map(|(s, _)| *s))
                .map(|s| format!("; did you mean {s}://?"))
                .unwrap_or_default();
            return Err(bad(format!(
                "unsupported scheme {scheme:?}: use postgres:// or mysql://{hint}"
            )));
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host; write e.g. postgres://user@127.0.0.1:5432/db".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = decode(&url.username().replace('+', "%2B"));
        if user.is_empty() {
            return Err(bad(
                "no user; write e.g. postgres://user@host/db (the password can come from \
                 an environment variable)"
                    .into(),
            ));
        }
        let password = url.password().map(|p| decode(&p.replace('+', "%2B")));
        let database = decode(url.path().trim_start_matches('/'));
        if database.is_empty() || database.contains('/') {
            return Err(bad(
                "name one database after the host, e.g. .../shop_dw".into()
            ));
        }
        if let Some((k, _)) = url.query_pairs().next() {
            return Err(bad(format!(
                "option {k:?} is not supported yet (TLS and other options come later)"
            )));
        }
        Ok(Target {
            dialect,
            port: url.port().unwrap_or(dialect.default_port()),
            host,
            user,
            password_source: password.as_ref().map(|_| "the URL".to_string()),
            password,
            database,
        })
    }

    /// Use this password when the URL has none. `source` names where it came from.
    pub fn with_fallback_password(mut self, password: Option<String>, source: &str) -> Target {
        if self.password.is_none()
            && let Some(p) = password
        {
            self.password = Some(p);
            self.password_source = Some(source.to_string());
        }
        self
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `host:port` for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.dialect {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        };
        let pw = if self.password.is_some() { ":***" } else { "" };
        write!(
            f,
            "{scheme}://{}{pw}@{}/{}",
            self.user,
            self.address(),
            self.database
        )
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// A URL with any password replaced by `***`, also when the URL does not parse.
pub fn redact(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_string();
    };
    let rest = &raw[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return raw.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_string()
    };
    format!(
        "{}{masked}{}",
        &raw[..scheme_end + 3],
        &raw[scheme_end + 3 + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_with_defaults() {
        let t = Target::parse("postgres://dw:s3cr%40t@db.local/shop").unwrap();
        assert_eq!(t.dialect, Dialect::Postgres);
        assert_eq!((t.host.as_str(), t.port), ("db.local", 5432));
        assert_eq!(t.user, "dw");
        assert_eq!(t.password(), Some("s3cr@t"));
        assert_eq!(t.database, "shop");
        assert_eq!(t.to_string(), "postgres://dw:***@db.local:5432/shop");
        assert!(!format!("{t:?}").contains("s3cr"));

        let t = Target::parse("mariadb://root@127.0.0.1:3307/dw").unwrap();
        assert_eq!(t.dialect, Dialect::MySql);
        assert_eq!(t.port, 3307);
        assert_eq!(t.password(), None);
        assert_eq!(t.to_string(), "mysql://root@127.0.0.1:3307/dw");
        let t = t.with_fallback_password(Some("pw".into()), "MYSQL_PWD");
        assert_eq!(t.password(), Some("pw"));
        assert_eq!(t.password_source.as_deref(), Some("MYSQL_PWD"));
    }

    #[test]
    fn errors_are_redacted_and_helpful() {
        let e = Target::parse("postgress://u:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = Target::parse("postgres://u:hunter2@h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = Target::parse("mysql://:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no user"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn redacts_what_does_not_parse() {
        assert_eq!(redact("pg://a:b@c/d"), "pg://a:***@c/d");
        assert_eq!(redact("pg://a:b:c@h@x/d"), "pg://a:***@x/d");
        assert_eq!(redact("pg://a@c/d"), "pg://a@c/d");
        assert_eq!(redact("no url"), "no url");
    }
}
