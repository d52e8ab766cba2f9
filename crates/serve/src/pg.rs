//! The PostgreSQL wire endpoint: datafusion-postgres (pgwire, `pg_catalog` emulation, Arrow to
//! Postgres encoding) over each user's own session. Login is the user's name and their API
//! token as the password (cleartext password message: over TLS, or loopback without it). The
//! session of a connection is chosen from the identity stored at login, never from anything
//! the client can change later (`SET`), and every statement is checked read-only before it is
//! planned for execution.

use crate::metrics::Protocol;
use crate::tls::Tls;
use crate::users::{AuditEntry, User};
use crate::{App, http};
use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatementKind;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use datafusion_postgres::pgwire;

type DfStatement = (String, Option<(Statement, LogicalPlan)>);

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// The identity a connection logged in as.
struct LoggedIn(User);

// ------------------------------------------------------------------ login

struct Startup {
    app: Arc<App>,
    params: DefaultServerParameterProvider,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !client.is_secure()
                    && !client.socket_addr().ip().is_loopback()
                    && !self.app.config.allow_plaintext
                {
                    return Err(fatal(
                        "28000",
                        "this server takes passwords only over TLS from other hosts: connect with sslmode=require",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                let name = client.metadata().get("user").cloned().unwrap_or_default();
                let mut entry = AuditEntry {
                    user: Some(name.clone()),
                    protocol: "postgres",
                    client: Some(client.socket_addr().to_string()),
                    action: "login".into(),
                    outcome: "ok",
                    ..AuditEntry::default()
                };
                let directory = self
                    .app
                    .sessions
                    .directory()
                    .await
                    .map_err(|e| fatal("XX000", e.to_string()))?;
                let user = directory.by_name_and_token(&name, &pwd.password).cloned();
                let Some(user) = user else {
                    self.app.metrics.auth_failure();
                    entry.outcome = "denied";
                    entry.error = Some("wrong user name or password".into());
                    http::audit(&self.app, entry).await;
                    return Err(fatal(
                        "28P01",
                        format!(
                            "password authentication failed for user \"{name}\": the password is the user's API token"
                        ),
                    ));
                };
                entry.role = Some(user.role);
                if !user.role.can_query() {
                    self.app.metrics.denied();
                    entry.outcome = "denied";
                    entry.error = Some("role has no SQL access".into());
                    http::audit(&self.app, entry).await;
                    return Err(fatal(
                        "42501",
                        format!(
                            "user \"{name}\" has role {}, which has no SQL access",
                            user.role.as_str()
                        ),
                    ));
                }
                http::audit(&self.app, entry).await;
                client.session_extensions().insert(LoggedIn(user));
                let t = self.app.config.query_timeout_secs * 1000;
                client
                    .metadata_mut()
                    .insert("statement_timeout_ms".into(), t.to_string());
                let mut key = [0u8; 8];
                let _ = getrandom::fill(&mut key);
                let pid = i32::from_le_bytes([key[0], key[1], key[2], key[3] & 0x7f]);
                client.set_pid_and_secret_key(
                    pid,
                    pgwire::messages::startup::SecretKey::I32(i32::from_le_bytes([
                        key[4], key[5], key[6], key[7],
                    ])),
                );
                finish_authentication(client, &self.params).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ read-only

/// Refuses anything but queries (see [`http::read_only`]): planned with the user's session and
/// checked before any hook or the engine executes it. Fail-closed: a statement kind not on the
/// list below is refused without being planned (the engine's own parser would accept `COPY`
/// and other writes that the SQL planner here cannot plan), and a query whose plan writes is
/// refused after planning.
struct ReadOnly;

/// Statement kinds that can only read.
fn reads_only(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCatalogs { .. } => true,
        Statement::Explain { statement, .. } => reads_only(statement),
        _ => false,
    }
}

fn denied(what: impl std::fmt::Display) -> PgWireError {
    user_error(
        "42501",
        format!(
            "{what}: SQL here is read-only (SELECT, WITH, EXPLAIN, SHOW); the lake is written by runs"
        ),
    )
}

async fn check(statement: &Statement, ctx: &SessionContext) -> Option<PgWireError> {
    if !reads_only(statement) {
        let kind = statement.to_string();
        let kind = kind.split_whitespace().next().unwrap_or("this statement");
        return Some(denied(format!("{} is not allowed", kind.to_uppercase())));
    }
    // A query that does not plan fails the same way when it runs; one that plans must not write.
    let plan = ctx
        .state()
        .statement_to_plan(DfStatementKind::Statement(Box::new(statement.clone())))
        .await
        .ok()?;
    http::read_only().verify_plan(&plan).err().map(denied)
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        check(statement, ctx).await.map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        check(statement, ctx).await.map(Err)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &datafusion::common::ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

fn hooks() -> Vec<Arc<dyn QueryHook>> {
    vec![
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
        // Cursors only take a query (`DECLARE c CURSOR FOR SELECT ...`).
        Arc::new(CursorStatementHook),
        Arc::new(ReadOnly),
    ]
}

// ------------------------------------------------------------------ queries

type ServiceEntry = (Arc<crate::sessions::UserSession>, Arc<DfSessionService>);

/// Dispatches every query to the logged-in user's session.
struct Handlers {
    app: Arc<App>,
    startup: Arc<Startup>,
    /// Per user: the session a service was built on, and the service.
    services: tokio::sync::Mutex<HashMap<String, ServiceEntry>>,
    busy: Arc<AtomicUsize>,
}

impl Handlers {
    async fn service<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
    ) -> PgWireResult<Arc<DfSessionService>> {
        let Some(who) = client.session_extensions().get::<LoggedIn>() else {
            return Err(fatal("28000", "not logged in"));
        };
        let session = self
            .app
            .sessions
            .session(&who.0)
            .await
            .map_err(|e| user_error("XX000", e.to_string()))?;
        let mut services = self.services.lock().await;
        if let Some((k, s)) = services.get(&who.0.name)
            && Arc::ptr_eq(k, &session)
        {
            return Ok(s.clone());
        }
        let service = Arc::new(DfSessionService::new_with_hooks(
            Arc::new(session.context().clone()),
            hooks(),
        ));
        services.insert(who.0.name.clone(), (session, service.clone()));
        Ok(service)
    }

    fn entry<C: ClientInfo + ?Sized>(client: &C, sql: &str) -> AuditEntry {
        let who = client.session_extensions().get::<LoggedIn>();
        AuditEntry {
            user: who.as_ref().map(|w| w.0.name.clone()),
            role: who.as_ref().map(|w| w.0.role),
            protocol: "postgres",
            client: Some(client.socket_addr().to_string()),
            action: "sql".into(),
            detail: sql.to_string(),
            outcome: "ok",
            ..AuditEntry::default()
        }
    }

    /// Bound the rows' stream by the query deadline, and audit and measure the outcome.
    async fn finish(
        &self,
        mut entry: AuditEntry,
        started: Instant,
        result: Result<PgWireResult<Vec<Response>>, tokio::time::error::Elapsed>,
    ) -> PgWireResult<Vec<Response>> {
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(user_error(
                "57014",
                format!(
                    "canceling statement due to statement timeout ({}s)",
                    self.app.config.query_timeout_secs
                ),
            )),
        };
        let ok = result.is_ok();
        if let Err(e) = &result {
            entry.outcome = match e {
                PgWireError::UserError(i) if i.code == "42501" => "denied",
                PgWireError::UserError(i) if i.code == "57014" => "cancelled",
                _ => "error",
            };
            entry.error = Some(e.to_string());
        }
        entry.duration_ms = Some(started.elapsed().as_millis() as i64);
        self.app
            .metrics
            .query(Protocol::Postgres, ok, started.elapsed());
        http::audit(&self.app, entry).await;
        let deadline = tokio::time::Instant::from_std(started) + self.app.query_timeout();
        result.map(|rs| rs.into_iter().map(|r| bound(r, deadline)).collect())
    }
}

/// A result whose rows stop with a timeout error at `deadline`.
fn bound(r: Response, deadline: tokio::time::Instant) -> Response {
    let mut q = match r {
        Response::Query(q) => q,
        other => return other,
    };
    let rows = std::mem::replace(q.data_rows(), Box::pin(futures::stream::empty()));
    let timed = futures::stream::unfold((rows, false), move |(mut rows, done)| async move {
        if done {
            return None;
        }
        match tokio::time::timeout_at(deadline, rows.next()).await {
            Ok(Some(item)) => Some((item, (rows, false))),
            Ok(None) => None,
            Err(_) => Some((
                Err(user_error(
                    "57014",
                    "canceling statement due to statement timeout",
                )),
                (rows, true),
            )),
        }
    });
    *q.data_rows() = Box::pin(timed);
    Response::Query(q)
}

struct Busy(Arc<AtomicUsize>);
impl Busy {
    fn new(n: &Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::SeqCst);
        Busy(n.clone())
    }
}
impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SimpleQueryHandler for Handlers {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = Busy::new(&self.busy);
        let started = Instant::now();
        let entry = Self::entry(client, query);
        let service = self.service(client).await?;
        let r = tokio::time::timeout(
            self.app.query_timeout(),
            SimpleQueryHandler::do_query(&*service, client, query),
        )
        .await;
        self.finish(entry, started, r).await
    }
}

/// Parses with the logged-in user's session.
struct UserParser {
    handlers: std::sync::Weak<Handlers>,
    /// For the parts of the protocol that need no session (parameter and result types).
    fallback: Arc<Parser>,
}

#[async_trait]
impl QueryParser for UserParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let Some(h) = self.handlers.upgrade() else {
            return Err(fatal("57P01", "the server is shutting down"));
        };
        let service = h.service(client).await?;
        let parser = ExtendedQueryHandler::query_parser(&*service);
        parser.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        self.fallback.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &DfStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.fallback.get_result_schema(stmt, format)
    }
}

/// The extended-protocol face of [`Handlers`].
struct Extended {
    handlers: Arc<Handlers>,
    parser: Arc<UserParser>,
}

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = DfStatement;
    type QueryParser = UserParser;

    fn query_parser(&self) -> Arc<UserParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let h = &self.handlers;
        let _busy = Busy::new(&h.busy);
        let started = Instant::now();
        let entry = Handlers::entry(client, &portal.statement.statement.0);
        let service = h.service(client).await?;
        let r = tokio::time::timeout(
            h.app.query_timeout(),
            ExtendedQueryHandler::do_query(&*service, client, portal, max_rows),
        )
        .await
        .map(|r| r.map(|one| vec![one]));
        let mut out = h.finish(entry, started, r).await?;
        Ok(out.pop().unwrap_or(Response::EmptyQuery))
    }
}

struct Factory {
    handlers: Arc<Handlers>,
    extended: Arc<Extended>,
}

impl PgWireServerHandlers for Factory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handlers.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.extended.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.handlers.startup.clone()
    }
}

// ------------------------------------------------------------------ server

/// Accept PostgreSQL connections until shutdown; then let queries in flight finish (within
/// the grace period, enforced by the caller) and close every connection.
pub async fn serve(app: Arc<App>, listener: TcpListener, tls: Option<Tls>) {
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = format!("16.0 (shoplake {})", env!("CARGO_PKG_VERSION"));
    let fallback = Arc::new(DfSessionService::new(Arc::new(SessionContext::new())));
    let handlers = Arc::new(Handlers {
        app: app.clone(),
        startup: Arc::new(Startup {
            app: app.clone(),
            params,
        }),
        services: tokio::sync::Mutex::new(HashMap::new()),
        busy: Arc::new(AtomicUsize::new(0)),
    });
    let parser = Arc::new(UserParser {
        handlers: Arc::downgrade(&handlers),
        fallback: ExtendedQueryHandler::query_parser(&*fallback),
    });
    let factory = Arc::new(Factory {
        handlers: handlers.clone(),
        extended: Arc::new(Extended {
            handlers: handlers.clone(),
            parser,
        }),
    });
    let limiter = Arc::new(tokio::sync::Semaphore::new(app.config.max_connections));
    let mut shutdown = app.shutdown.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            r = listener.accept() => r,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (socket, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("postgres accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limiter.clone().try_acquire_owned() else {
            tracing::warn!(
                "postgres connection from {addr} refused: {} connections already (serve.max_connections)",
                app.config.max_connections
            );
            drop(socket);
            continue;
        };
        let factory = factory.clone();
        let acceptor = tls.as_ref().map(|t| t.pg.clone());
        conns.spawn(async move {
            let _permit = permit;
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, factory).await {
                tracing::debug!("postgres connection from {addr}: {e}");
            }
        });
    }
    drop(listener);
    // Queries in flight finish; idle connections are closed.
    while handlers.busy.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
