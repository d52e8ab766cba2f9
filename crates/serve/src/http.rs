//! The HTTP API (axum). Every route but `/healthz` and `/readyz` needs a bearer token; what a
//! token may do follows its user's role (`docs/serve.md` has the matrix). SQL results stream
//! as JSON, CSV or Arrow IPC, cut at the row limit and bounded by the query timeout.

use crate::metrics::Protocol;
use crate::tls::Tls;
use crate::users::{AuditEntry, User};
use crate::{AbortOnDrop, App, ServeError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use shoplake_etl::ingest::{self, Candidate, Ingested};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

// ------------------------------------------------------------------ errors

/// An error as the client sees it: a status and `{"error": message}`. Internals are logged,
/// not sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The audit log's word for how a request with this error ended.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::FORBIDDEN => "denied",
            StatusCode::GATEWAY_TIMEOUT => "cancelled",
            _ => "error",
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        let status = match &e {
            ServeError::Usage(_) => StatusCode::BAD_REQUEST,
            ServeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServeError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Conflict(_) => StatusCode::CONFLICT,
            ServeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ServeError::Query(
                shoplake_query::QueryError::Engine(_)
                | shoplake_query::QueryError::UnknownTable { .. }
                | shoplake_query::QueryError::Usage(_),
            ) => StatusCode::BAD_REQUEST,
            ServeError::Etl(shoplake_etl::EtlError::Locked { .. }) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{e}");
            return ApiError::new(status, "internal error; the server log has the details");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for ApiError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        ApiError::from(ServeError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shoplake\""),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ------------------------------------------------------------------ auth

/// The authenticated caller.
pub struct Caller {
    pub user: User,
    pub client: SocketAddr,
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> ApiResult<Caller> {
        let client = parts
            .extensions
            .get::<SocketAddr>()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            app.metrics.auth_failure();
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no credentials: send `Authorization: Bearer <token>` (`shoplake users add` issues tokens)",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let directory = app.sessions.directory().await?;
        match directory.by_token(token) {
            Some(u) => Ok(Caller {
                user: u.clone(),
                client,
            }),
            None => {
                app.metrics.auth_failure();
                let app = app.clone();
                let entry = AuditEntry {
                    protocol: "http",
                    client: Some(client.to_string()),
                    action: "login".into(),
                    detail: format!("{} {}", parts.method, parts.uri.path()),
                    outcome: "denied",
                    error: Some("invalid token".into()),
                    ..AuditEntry::default()
                };
                audit(&app, entry).await;
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid token: check it, or ask an admin for a new one (`shoplake users token NAME`)",
                ))
            }
        }
    }
}

impl Caller {
    pub(crate) fn require(&self, app: &App, ok: bool, what: &str) -> ApiResult<()> {
        if ok {
            return Ok(());
        }
        app.metrics.denied();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "user {} (role {}) may not {what}",
                self.user.name,
                self.user.role.as_str()
            ),
        ))
    }

    pub(crate) fn entry(&self, action: &str, detail: impl Into<String>) -> AuditEntry {
        AuditEntry {
            user: Some(self.user.name.clone()),
            role: Some(self.user.role),
            protocol: "http",
            client: Some(self.client.to_string()),
            action: action.to_string(),
            detail: detail.into(),
            outcome: "ok",
            ..AuditEntry::default()
        }
    }
}

/// Write an audit record off the async threads; a failure to audit is logged.
pub async fn audit(app: &Arc<App>, entry: AuditEntry) {
    let control = app.sessions.control().clone();
    let r = tokio::task::spawn_blocking(move || control.audit(&entry)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("audit log: {e}"),
        Err(e) => tracing::error!("audit log: {e}"),
    }
}

/// Audit the outcome of a handler and pass it on.
async fn audited<T>(app: &Arc<App>, mut entry: AuditEntry, r: ApiResult<T>) -> ApiResult<T> {
    if let Err(e) = &r {
        entry.outcome = e.outcome();
        entry.error = Some(e.message.clone());
    }
    audit(app, entry).await;
    r
}

// ------------------------------------------------------------------ router

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tables", get(tables))
        .route("/api/v1/tables/{name}", get(table))
        .route(
            "/api/v1/sql",
            axum::routing::post(sql).layer(DefaultBodyLimit::max(1024 * 1024)),
        )
        .route(
            "/api/v1/files",
            get(files).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/runs", get(runs).post(start_run))
        .route("/api/v1/quarantine", get(quarantine))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/users", get(users))
        .route("/api/v1/dashboard", get(crate::dashboard::describe))
        .route("/api/v1/dashboard/{panel}", get(crate::dashboard::panel))
        .route("/", get(crate::dashboard::index))
        .route("/assets/{name}", get(crate::dashboard::assets))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {}; GET /openapi.json lists them",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if *app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match app.sessions.directory().await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => {
            tracing::error!("not ready: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "control database unavailable\n",
            )
                .into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Response> {
    caller.require(&app, caller.user.role.can_operate(), "read metrics")?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response())
}

async fn openapi(_caller: Caller) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn whoami(caller: Caller) -> axum::Json<Value> {
    axum::Json(json!({
        "user": caller.user.name,
        "role": caller.user.role,
        "row_filter": caller.user.row_filter,
    }))
}

// ------------------------------------------------------------------ tables

async fn tables(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    caller.require(&app, caller.user.role.can_query(), "list tables")?;
    let session = app.sessions.session(&caller.user).await?;
    let ctx = session.context();
    let mut out = Vec::new();
    let mut names: Vec<String> = ctx
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
        .map(|s| s.table_names())
        .unwrap_or_default();
    names.sort();
    for name in names {
        let provider = ctx.table_provider(name.as_str()).await?;
        let kind = match session.query.table_id(&name) {
            Ok(id) => id.zone.prefix().trim_end_matches('/').to_string(),
            Err(_) => "system".to_string(),
        };
        out.push(json!({"name": name, "zone": kind, "columns": columns(&provider.schema())}));
    }
    Ok(axum::Json(json!({ "tables": out })))
}

fn columns(schema: &SchemaRef) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
            .collect(),
    )
}

async fn table(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    caller.require(&app, caller.user.role.can_query(), "read table schemas")?;
    let session = app.sessions.session(&caller.user).await?;
    let ctx = session.context();
    if !ctx.table_exist(name.as_str()).unwrap_or(false) || name.contains('.') {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no table {name:?} for user {}; GET /api/v1/tables lists the tables you can read",
                caller.user.name
            ),
        ));
    }
    let provider = ctx.table_provider(name.as_str()).await?;
    Ok(axum::Json(
        json!({"name": name, "columns": columns(&provider.schema())}),
    ))
}

// ------------------------------------------------------------------ SQL

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    fn pick(requested: Option<&str>, headers: &HeaderMap) -> ApiResult<Format> {
        let name = match requested {
            Some(f) => f.to_ascii_lowercase(),
            None => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.contains("text/csv") {
                    "csv".into()
                } else if accept.contains("application/vnd.apache.arrow.stream") {
                    "arrow".into()
                } else {
                    "json".into()
                }
            }
        };
        match name.as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" | "arrow_ipc" | "ipc" => Ok(Format::Arrow),
            other => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("format {other:?}: use json, csv or arrow"),
            )),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// The statement options every SQL endpoint enforces: queries only. No DDL (which includes
/// `CREATE EXTERNAL TABLE`, the way to read arbitrary files), no DML or `COPY` (writes), no
/// `SET`-style statements.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

async fn sql(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<axum::Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let started = Instant::now();
    let axum::Json(req) = body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("{}; send {{\"sql\": \"SELECT ...\", \"format\": \"json|csv|arrow\", \"limit\": N}}", e.body_text()),
        )
    })?;
    let entry = caller.entry("sql", req.sql.clone());
    match run_sql(&app, &caller, &headers, req, entry.clone()).await {
        Ok(r) => Ok(r),
        Err(e) => {
            app.metrics.query(Protocol::Http, false, started.elapsed());
            let mut entry = entry;
            entry.duration_ms = Some(started.elapsed().as_millis() as i64);
            audited(&app, entry, Err(e)).await
        }
    }
}

async fn run_sql(
    app: &Arc<App>,
    caller: &Caller,
    headers: &HeaderMap,
    req: SqlRequest,
    entry: AuditEntry,
) -> ApiResult<Response> {
    caller.require(app, caller.user.role.can_query(), "run SQL")?;
    let format = Format::pick(req.format.as_deref(), headers)?;
    let max = app.config.max_rows;
    let limit = match req.limit {
        Some(l) if l > max => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "limit {l} is over this server's max_rows {max}; ask for at most {max} rows, or aggregate"
                ),
            ));
        }
        Some(l) => l,
        None => max,
    };
    if req.sql.trim().is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty SQL"));
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + app.query_timeout();
    let session = app.sessions.session(&caller.user).await?;
    let timeout_msg = || {
        ServeError::Timeout(format!(
            "query ran longer than the {}s query timeout and was cancelled; narrow it down or aggregate",
            app.config.query_timeout_secs
        ))
    };
    let ctx = session.context().clone();
    let plan = async {
        let df = ctx
            .sql_with_options(&req.sql, read_only())
            .await
            .map_err(sql_error)?;
        // EXPLAIN must stay the root of its plan, and its few rows need no limit.
        let explain = matches!(
            df.logical_plan(),
            datafusion::logical_expr::LogicalPlan::Explain(_)
                | datafusion::logical_expr::LogicalPlan::Analyze(_)
        );
        let df = if explain {
            df
        } else {
            df.limit(0, Some(limit as usize + 1))
                .map_err(ServeError::from)?
        };
        df.execute_stream().await.map_err(sql_error)
    };
    let mut stream = tokio::time::timeout_at(deadline, plan)
        .await
        .map_err(|_| timeout_msg())??;
    // The first batch before the status line, so an error early in execution is a clear status.
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Err(_) => return Err(timeout_msg().into()),
        Ok(Some(Err(e))) => return Err(sql_error(e).into()),
        Ok(Some(Ok(b))) => Some(b),
        Ok(None) => None,
    };
    let schema = stream.schema();
    let body = encode(
        format,
        schema,
        first,
        stream,
        limit,
        deadline,
        app.clone(),
        started,
        session,
        entry,
    );
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r.headers_mut()
        .insert("x-shoplake-row-limit", HeaderValue::from(limit));
    Ok(r)
}

fn sql_error(e: datafusion::error::DataFusionError) -> ServeError {
    let msg = e.to_string();
    if msg.contains("DDL not supported")
        || msg.contains("DML not supported")
        || msg.contains("Statement not supported")
    {
        return ServeError::Forbidden(format!(
            "{msg}: SQL here is read-only (SELECT, WITH, EXPLAIN, SHOW); the lake is written by runs"
        ));
    }
    ServeError::Usage(msg)
}

/// Stream the result in `format`: at most `limit` rows, then a footer saying whether it was cut
/// (JSON only) — or, when the query fails or times out mid-way, the error (JSON) or a broken
/// stream (CSV, Arrow) so no client takes a partial result for a whole one.
#[allow(clippy::too_many_arguments)]
fn encode(
    format: Format,
    schema: SchemaRef,
    first: Option<RecordBatch>,
    stream: SendableRecordBatchStream,
    limit: u64,
    deadline: tokio::time::Instant,
    app: Arc<App>,
    started: Instant,
    session: Arc<crate::sessions::UserSession>,
    entry: AuditEntry,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct St {
        enc: Encoder,
        first: Option<RecordBatch>,
        stream: SendableRecordBatchStream,
        rows: u64,
        done: bool,
        limit: u64,
        deadline: tokio::time::Instant,
        app: Arc<App>,
        started: Instant,
        _session: Arc<crate::sessions::UserSession>,
        timeout_secs: u64,
        entry: AuditEntry,
    }
    impl St {
        /// The audit record of the query, written when the result is complete.
        async fn ended(&mut self, error: Option<String>) {
            let mut e = std::mem::take(&mut self.entry);
            e.rows = Some(self.rows as i64);
            e.duration_ms = Some(self.started.elapsed().as_millis() as i64);
            if let Some(err) = error {
                e.outcome = if err.contains("timeout") {
                    "cancelled"
                } else {
                    "error"
                };
                e.error = Some(err);
            }
            audit(&self.app, e).await;
        }
    }
    let enc = Encoder::new(format, &schema);
    let timeout_secs = app.config.query_timeout_secs;
    let st = St {
        enc,
        first,
        stream,
        rows: 0,
        done: false,
        limit,
        deadline,
        app,
        started,
        _session: session,
        timeout_secs,
        entry,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out = Vec::new();
        if let Some(h) = st.enc.header.take() {
            out.extend_from_slice(&h);
        }
        let next = match st.first.take() {
            Some(b) => Some(Ok(b)),
            None => match tokio::time::timeout_at(st.deadline, st.stream.next()).await {
                Ok(n) => n,
                Err(_) => Some(Err(datafusion::error::DataFusionError::Execution(format!(
                    "query ran longer than the {}s query timeout and was cancelled",
                    st.timeout_secs
                )))),
            },
        };
        match next {
            Some(Ok(batch)) => {
                let room = st.limit - st.rows;
                let truncated = batch.num_rows() as u64 > room;
                let batch = if truncated {
                    batch.slice(0, room as usize)
                } else {
                    batch
                };
                st.rows += batch.num_rows() as u64;
                if let Err(e) = st.enc.batch(&batch, &mut out) {
                    st.done = true;
                    return Some((Err(std::io::Error::other(e)), st));
                }
                if truncated {
                    st.enc.finish(st.rows, true, None, &mut out);
                    st.done = true;
                    st.app
                        .metrics
                        .query(Protocol::Http, true, st.started.elapsed());
                    st.ended(None).await;
                }
                Some((Ok(Bytes::from(out)), st))
            }
            None => {
                st.enc.finish(st.rows, false, None, &mut out);
                st.done = true;
                st.app
                    .metrics
                    .query(Protocol::Http, true, st.started.elapsed());
                st.ended(None).await;
                Some((Ok(Bytes::from(out)), st))
            }
            Some(Err(e)) => {
                st.done = true;
                st.app
                    .metrics
                    .query(Protocol::Http, false, st.started.elapsed());
                st.ended(Some(e.to_string())).await;
                if st.enc.format == Format::Json {
                    st.enc
                        .finish(st.rows, false, Some(&e.to_string()), &mut out);
                    Some((Ok(Bytes::from(out)), st))
                } else {
                    Some((Err(std::io::Error::other(e.to_string())), st))
                }
            }
        }
    })
}

struct Encoder {
    format: Format,
    header: Option<Vec<u8>>,
    first_row: bool,
    ipc: Option<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef) -> Encoder {
        let mut ipc = None;
        let header = match format {
            Format::Json => {
                let cols: Vec<Value> = schema
                    .fields()
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                let mut h = b"{\"columns\":".to_vec();
                h.extend_from_slice(Value::Array(cols).to_string().as_bytes());
                h.extend_from_slice(b",\"rows\":[");
                Some(h)
            }
            Format::Csv => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(Vec::new());
                let header_batch = RecordBatch::try_new(
                    Arc::new(datafusion::arrow::datatypes::Schema::new(
                        names
                            .iter()
                            .map(|n| {
                                datafusion::arrow::datatypes::Field::new(
                                    *n,
                                    datafusion::arrow::datatypes::DataType::Utf8,
                                    false,
                                )
                            })
                            .collect::<Vec<_>>(),
                    )),
                    names
                        .iter()
                        .map(|n| {
                            Arc::new(datafusion::arrow::array::StringArray::from(vec![*n]))
                                as datafusion::arrow::array::ArrayRef
                        })
                        .collect(),
                );
                match header_batch {
                    Ok(b) if !names.is_empty() => {
                        let _ = w.write(&b);
                        Some(w.into_inner())
                    }
                    _ => Some(Vec::new()),
                }
            }
            Format::Arrow => {
                match datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema) {
                    Ok(mut w) => {
                        let h = std::mem::take(w.get_mut());
                        ipc = Some(w);
                        Some(h)
                    }
                    Err(e) => {
                        tracing::error!("arrow ipc: {e}");
                        Some(Vec::new())
                    }
                }
            }
        };
        Encoder {
            format,
            header,
            first_row: true,
            ipc,
        }
    }

    fn batch(
        &mut self,
        batch: &RecordBatch,
        out: &mut Vec<u8>,
    ) -> Result<(), datafusion::arrow::error::ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.format {
            Format::Json => {
                let mut w = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, datafusion::arrow::json::writer::LineDelimited>(Vec::new());
                w.write(batch)?;
                w.finish()?;
                let text = w.into_inner();
                // One JSON object per line; objects never hold a raw newline.
                for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if !self.first_row {
                        out.push(b',');
                    }
                    self.first_row = false;
                    out.extend_from_slice(line);
                }
            }
            Format::Csv => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(Vec::new());
                w.write(batch)?;
                out.extend_from_slice(&w.into_inner());
            }
            Format::Arrow => {
                if let Some(w) = &mut self.ipc {
                    w.write(batch)?;
                    out.extend_from_slice(&std::mem::take(w.get_mut()));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, rows: u64, truncated: bool, error: Option<&str>, out: &mut Vec<u8>) {
        match self.format {
            Format::Json => {
                let tail = match error {
                    None => json!({"row_count": rows, "truncated": truncated}),
                    Some(e) => json!({"row_count": rows, "error": e}),
                };
                out.extend_from_slice(b"],");
                let t = tail.to_string();
                out.extend_from_slice(&t.as_bytes()[1..]);
            }
            Format::Csv => {}
            Format::Arrow => {
                if let Some(w) = &mut self.ipc {
                    let _ = w.finish();
                    out.extend_from_slice(&std::mem::take(w.get_mut()));
                }
            }
        }
    }
}

// ------------------------------------------------------------------ operations

/// Run a SQL query in the caller's session and return rows as JSON objects.
async fn rows_json(app: &Arc<App>, user: &User, sql: &str) -> ApiResult<Vec<Value>> {
    let session = app.sessions.session(user).await?;
    let batches = tokio::time::timeout(app.query_timeout(), async {
        session
            .context()
            .sql_with_options(sql, read_only())
            .await?
            .collect()
            .await
    })
    .await
    .map_err(|_| ServeError::Timeout("listing timed out".into()))??;
    let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b)
            .map_err(|e| ServeError::Internal(e.to_string()))?;
    }
    w.finish()
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| ServeError::Internal(e.to_string()).into())
}

async fn files(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    let entry = caller.entry("list_files", "");
    let r = async {
        caller.require(&app, caller.user.role.can_operate(), "list files")?;
        let rows = rows_json(&app, &caller.user, "SELECT * FROM files ORDER BY file_id").await?;
        Ok(axum::Json(json!({ "files": rows })))
    }
    .await;
    audited(&app, entry, r).await
}

async fn runs(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    let entry = caller.entry("list_runs", "");
    let r = async {
        caller.require(&app, caller.user.role.can_operate(), "list runs")?;
        let rows = rows_json(&app, &caller.user, "SELECT * FROM runs ORDER BY run_id").await?;
        let running = app.run.lock().await.as_ref().is_some_and(|r| !r.finished());
        Ok(axum::Json(
            json!({ "runs": rows, "run_in_progress": running }),
        ))
    }
    .await;
    audited(&app, entry, r).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineQuery {
    source: Option<String>,
    reason: Option<String>,
    limit: Option<u64>,
}

async fn quarantine(
    State(app): State<Arc<App>>,
    caller: Caller,
    q: Result<Query<QuarantineQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let entry = caller.entry("list_quarantine", "");
    let r = async {
        caller.require(&app, caller.user.role.can_operate(), "read the quarantine")?;
        let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let session = app.sessions.session(&caller.user).await?;
        if !session.context().table_exist("quarantine").unwrap_or(false) {
            return Ok(axum::Json(json!({ "rows": [] })));
        }
        let limit = q.limit.unwrap_or(100).min(app.config.max_rows);
        let mut df = session.context().table("quarantine").await?;
        use datafusion::prelude::{col, lit};
        if let Some(s) = &q.source {
            df = df.filter(col("source").eq(lit(s.clone())))?;
        }
        if let Some(r) = &q.reason {
            df = df.filter(col("reason").eq(lit(r.clone())))?;
        }
        let df = df
            .sort(vec![
                col("file_id").sort(true, false),
                col("line").sort(true, false),
            ])?
            .limit(0, Some(limit as usize))?;
        let batches = tokio::time::timeout(app.query_timeout(), df.collect())
            .await
            .map_err(|_| ServeError::Timeout("listing timed out".into()))??;
        let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
        for b in &batches {
            w.write(b)
                .map_err(|e| ServeError::Internal(e.to_string()))?;
        }
        w.finish()
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        let bytes = w.into_inner();
        let rows: Value = if bytes.is_empty() {
            json!([])
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ServeError::Internal(e.to_string()))?
        };
        Ok(axum::Json(json!({ "rows": rows })))
    }
    .await;
    audited(&app, entry, r).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<u64>,
}

async fn audit_log(
    State(app): State<Arc<App>>,
    caller: Caller,
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    caller.require(&app, caller.user.role.is_admin(), "read the audit log")?;
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let control = app.sessions.control().clone();
    let log = tokio::task::spawn_blocking(move || control.audit_log())
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))??;
    let n = q.limit.unwrap_or(1000) as usize;
    let tail = &log[log.len().saturating_sub(n)..];
    Ok(axum::Json(json!({ "audit": tail })))
}

async fn users(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    caller.require(&app, caller.user.role.is_admin(), "list users")?;
    let d = app.sessions.control().users()?;
    Ok(axum::Json(json!({ "users": d })))
}

// ------------------------------------------------------------------ uploads

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: String,
    source: Option<String>,
}

/// A file name as given by a client: a plain name, no path, nothing hidden.
fn check_file_name(name: &str) -> ApiResult<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\\', '\0'])
        || name.starts_with('.')
        || name.chars().any(char::is_control)
        || name == "manifest.json";
    if bad {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "file name {name:?}: give a plain file name (no '/', '\\', leading '.', or control characters), e.g. store_sales_2025-03.csv"
            ),
        ));
    }
    Ok(())
}

async fn upload(
    State(app): State<Arc<App>>,
    caller: Caller,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let detail = q.as_ref().map(|q| q.name.clone()).unwrap_or_default();
    let entry = caller.entry("upload", detail);
    let r = async {
        caller.require(&app, caller.user.role.can_ingest(), "upload files")?;
        let Query(q) = q.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{}; POST /api/v1/files?name=FILE[&source=SOURCE] with the file as the body", e.body_text()),
            )
        })?;
        check_file_name(&q.name)?;
        let source = match &q.source {
            Some(s) if !shoplake_core::is_valid_source_name(s) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("source {s:?}: use lower-case letters, digits, '_' and '-'"),
                ));
            }
            Some(s) => s.clone(),
            None => ingest::source_from_name(std::path::Path::new(&q.name)),
        };
        // Staged under the state directory in a fresh folder, then ingested (copied into the
        // raw zone with its hash); the staging folder goes away either way.
        let staging = tempdir_in(&app.upload_dir)?;
        let path = staging.path().join(&q.name);
        let max = app.config.max_upload_mb * 1024 * 1024;
        receive(&app, body, &path, max).await?;
        let candidate = Candidate {
            path: path.clone(),
            source,
        };
        let results = ingest::ingest(app.pipeline.lake(), &app.ledger, &[candidate])
            .await
            .map_err(ServeError::from)?;
        app.metrics.uploaded();
        let out = match results.into_iter().next().map(|(_, r)| r) {
            Some(Ingested::New {
                file_id,
                source,
                raw_path,
                size,
            }) => (
                StatusCode::CREATED,
                json!({"status": "ingested", "file_id": file_id, "source": source, "raw_path": raw_path, "size_bytes": size}),
            ),
            Some(Ingested::AlreadyIngested {
                file_id,
                name,
                status,
            }) => (
                StatusCode::OK,
                json!({"status": "already_ingested", "file_id": file_id, "name": name, "file_status": status}),
            ),
            Some(Ingested::Failed { file_id, error }) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"status": "failed", "file_id": file_id, "error": error}),
            ),
            None => return Err(ServeError::Internal("ingest returned nothing".into()).into()),
        };
        Ok((out.0, axum::Json(out.1)))
    }
    .await;
    audited(&app, entry, r).await
}

fn tempdir_in(dir: &std::path::Path) -> ApiResult<TempDir> {
    std::fs::create_dir_all(dir).map_err(|e| ServeError::Io {
        context: format!("creating {}", dir.display()),
        source: e,
    })?;
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| ServeError::Internal(e.to_string()))?;
    let path = dir.join(hex::encode(bytes));
    std::fs::create_dir(&path).map_err(|e| ServeError::Io {
        context: format!("creating {}", path.display()),
        source: e,
    })?;
    Ok(TempDir(path))
}

/// A staging folder removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stream the body to `path`, refusing more than `max` bytes and a client that stalls.
async fn receive(app: &App, body: Body, path: &std::path::Path, max: u64) -> ApiResult<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ServeError::Io {
            context: format!("creating {}", path.display()),
            source: e,
        })?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    let idle = app.client_timeout();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "upload stalled: no data for {}s; nothing was stored",
                        idle.as_secs()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("upload broke off: {e}; nothing was stored"),
                ));
            }
            Ok(Some(Ok(c))) => c,
        };
        written += chunk.len() as u64;
        if written > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "upload is over this server's limit of {} MiB (serve.max_upload_mb); nothing was stored",
                    app.config.max_upload_mb
                ),
            ));
        }
        file.write_all(&chunk).await.map_err(|e| ServeError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        })?;
    }
    if written == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty upload: send the file's bytes as the request body",
        ));
    }
    file.flush().await.map_err(|e| ServeError::Io {
        context: format!("writing {}", path.display()),
        source: e,
    })?;
    Ok(())
}

// ------------------------------------------------------------------ runs

/// A run triggered over HTTP.
pub struct RunHandle {
    task: AbortOnDrop<()>,
}

impl RunHandle {
    pub fn finished(&self) -> bool {
        self.task.0.is_finished()
    }
    pub async fn wait(self) {
        self.task.wait().await;
    }
}

async fn start_run(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let entry = caller.entry("run", "");
    let r = async {
        caller.require(&app, caller.user.role.can_ingest(), "start runs")?;
        if *app.shutdown.borrow() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down; start the run elsewhere or after the restart",
            ));
        }
        let mut slot = app.run.lock().await;
        if slot.as_ref().is_some_and(|r| !r.finished()) || app.run_gate.try_lock().is_err() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "a run is already in progress; GET /api/v1/runs shows it",
            ));
        }
        let app2 = app.clone();
        let user = caller.user.clone();
        let client = caller.client;
        let task = AbortOnDrop::spawn(async move {
            let started = Instant::now();
            let result = crate::triggers::run_job(
                &app2,
                shoplake_jobs::Trigger::Api(user.name.clone()),
                shoplake_jobs::Work::default(),
            )
            .await;
            let mut e = AuditEntry {
                user: Some(user.name.clone()),
                role: Some(user.role),
                protocol: "http",
                client: Some(client.to_string()),
                action: "run_finished".into(),
                duration_ms: Some(started.elapsed().as_millis() as i64),
                outcome: "ok",
                ..AuditEntry::default()
            };
            match &result {
                Ok(out) => {
                    e.detail = format!("run {}", out.run_id);
                    e.rows = out.report.as_ref().map(|r| r.totals().loaded);
                    if !out.succeeded() {
                        e.outcome = "error";
                        e.error = Some(
                            out.error
                                .clone()
                                .unwrap_or_else(|| "some files or tasks failed".into()),
                        );
                    }
                }
                Err(err) => {
                    tracing::error!("run started over HTTP by {} failed: {err}", user.name);
                    e.outcome = "error";
                    e.error = Some(err.to_string());
                }
            }
            audit(&app2, e).await;
        });
        *slot = Some(RunHandle { task });
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"status": "started", "poll": "/api/v1/runs"})),
        ))
    }
    .await;
    audited(&app, entry, r).await
}

// ------------------------------------------------------------------ server

/// Accept connections until shutdown: TLS handshakes and request headers have the client
/// timeout, so a slow client holds only its own connection; on shutdown, connections finish
/// their requests in flight and close.
pub async fn serve(app: Arc<App>, listener: TcpListener, tls: Option<Tls>) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let router = router(app.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = app.shutdown.clone();
    let mut conns = tokio::task::JoinSet::new();
    let timeout = app.client_timeout();
    loop {
        let accepted = tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            r = listener.accept() => r,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (socket, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let metrics = app.metrics.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    metrics.request();
                    req.extensions_mut().insert(addr);
                    let router = router.clone();
                    async move {
                        use tower::ServiceExt;
                        router.oneshot(req.map(Body::new)).await
                    }
                },
            );
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let builder = builder.http1_only();
            match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(tls) => {
                    let stream = match tokio::time::timeout(timeout, tls.http.accept(socket)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {addr}: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    while conns.join_next().await.is_some() {}
}
