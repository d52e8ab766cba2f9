//! One query session per user, built from the user's role and row filter, cached until the
//! lake or the users change (another process's commit to the control database moves its
//! `data_version`: a run, an ingest, `shoplake users add`).

use crate::audit_table::AuditTable;
use crate::users::{ControlDb, Directory, Role, User};
use crate::{Result, ServeError};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use shoplake_catalog::ledger::Ledger;
use shoplake_query::{Access, LakeQuery};
use shoplake_tables::Tables;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Customer columns an analyst sees masked: names and the street address identify a person.
/// City, state, country and region stay (analysis by place); `email_hash`/`phone_hash` are
/// already keyed hashes that cannot be read back, kept so analysts can count and join customers.
/// The customer mart copies the name and the address from `dim_customer`, so they are masked
/// there too.
pub const ANALYST_MASKED: [(&str, &str); 7] = [
    ("dim_customer", "first_name"),
    ("dim_customer", "last_name"),
    ("dim_customer", "full_name"),
    ("dim_customer", "address"),
    ("dim_customer", "postal_code"),
    ("mart_customer_monthly", "full_name"),
    ("mart_customer_monthly", "address"),
];

/// A user's session: the restricted SQL context.
pub struct UserSession {
    pub user: User,
    pub query: LakeQuery,
}

impl UserSession {
    pub fn context(&self) -> &SessionContext {
        self.query.context()
    }
}

struct State {
    version: Option<i64>,
    /// Bumped each time the cached sessions are dropped: results computed under another
    /// generation may be stale.
    generation: u64,
    directory: Arc<Directory>,
    base: Option<Arc<LakeQuery>>,
    sessions: HashMap<String, Arc<UserSession>>,
}

/// The sessions of every user, over one lake.
pub struct Sessions {
    tables: Tables,
    ledger: Arc<Ledger>,
    control: Arc<ControlDb>,
    memory_limit: usize,
    state: Mutex<State>,
}

/// What a role's session shows.
pub fn access_for(user: &User) -> Access {
    let mut access = Access {
        system_tables: user.role.can_operate(),
        row_filter: user.row_filter.clone(),
        masked: Vec::new(),
    };
    if !matches!(user.role, Role::Admin | Role::Engineer) {
        access.masked = ANALYST_MASKED
            .iter()
            .map(|(t, c)| (t.to_string(), c.to_string()))
            .collect();
    }
    access
}

impl Sessions {
    pub fn new(
        tables: Tables,
        ledger: Arc<Ledger>,
        control: Arc<ControlDb>,
        memory_limit: usize,
    ) -> Sessions {
        Sessions {
            tables,
            ledger,
            control,
            memory_limit,
            state: Mutex::new(State {
                version: None,
                generation: 0,
                directory: Arc::new(Directory::default()),
                base: None,
                sessions: HashMap::new(),
            }),
        }
    }

    pub fn control(&self) -> &Arc<ControlDb> {
        &self.control
    }

    /// Drop cached sessions when someone else changed the control database.
    async fn fresh(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let mut state = self.state.lock().await;
        let version = self.control.data_version()?;
        if state.version != Some(version) {
            state.directory = Arc::new(Directory::new(self.control.users()?));
            state.base = None;
            state.sessions.clear();
            state.version = Some(version);
            state.generation += 1;
        }
        Ok(state)
    }

    /// Forget every session (after a run this process triggered).
    pub async fn invalidate(&self) {
        let mut state = self.state.lock().await;
        state.version = None;
    }

    /// The current users.
    pub async fn directory(&self) -> Result<Arc<Directory>> {
        Ok(self.fresh().await?.directory.clone())
    }

    /// The generation of the lake the sessions show: it changes whenever they are rebuilt
    /// (after a run, an ingest, a change of users).
    pub async fn generation(&self) -> Result<u64> {
        Ok(self.fresh().await?.generation)
    }

    /// The session of `user` (who must still exist with the same role and filter) for SQL.
    pub async fn session(&self, user: &User) -> Result<Arc<UserSession>> {
        if !user.role.can_query() {
            return Err(ServeError::Forbidden(format!(
                "role {} has no SQL access",
                user.role.as_str()
            )));
        }
        self.any_session(user).await
    }

    /// The session the dashboard's fixed queries run in, for every role: a viewer's shows what
    /// an analyst's does (masked, filtered), but a viewer never gets it for their own SQL.
    pub async fn dashboard_session(&self, user: &User) -> Result<Arc<UserSession>> {
        self.any_session(user).await
    }

    async fn any_session(&self, user: &User) -> Result<Arc<UserSession>> {
        let mut state = self.fresh().await?;
        if let Some(s) = state.sessions.get(&user.name)
            && s.user == *user
        {
            return Ok(s.clone());
        }
        let base = match &state.base {
            Some(b) => b.clone(),
            None => {
                let b = Arc::new(
                    LakeQuery::open(self.tables.clone(), &self.ledger, self.memory_limit).await?,
                );
                state.base = Some(b.clone());
                b
            }
        };
        let query = base.restricted(&access_for(user)).await?;
        if user.role.is_admin() {
            query
                .context()
                .register_table("audit", Arc::new(AuditTable::new(self.control.clone())))?;
        }
        setup_pg_catalog(query.context(), "datafusion", EmptyContextProvider)
            .map_err(|e| ServeError::Query(shoplake_query::QueryError::from(*e)))?;
        let session = Arc::new(UserSession {
            user: user.clone(),
            query,
        });
        state.sessions.insert(user.name.clone(), session.clone());
        Ok(session)
    }
}
