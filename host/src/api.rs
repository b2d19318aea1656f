//! `callhost api serve`: the authenticated HTTP admin API (H8 in
//! `docs/FEATURES.md`).
//!
//! JSON over HTTP for the web UI and scripts (routes in
//! `docs/admin-guide.md`, "HTTP API"):
//!
//! - Every request needs `Authorization: Bearer <token>`. Tokens are made by
//!   `callhost api token create`; the database keeps only their SHA-256, and
//!   a request's token is checked by comparing digests in constant time.
//!   Tokens are never logged.
//! - The token check comes first, against the token set in memory
//!   ([`TokenSet`]): a request without a valid token is answered 401 with a
//!   fixed body before anything touches the database or the files. The set
//!   is read again when another process committed to `callhost.db`: before
//!   each request with a known token (so a revocation applies at once) and
//!   every quarter second in the background (new tokens; live feeds whose
//!   token was revoked end).
//! - The host's own failures are answered 500 with a generic message and
//!   an error id; the detail (paths, SQLite's words) goes to the log under
//!   that id. Refusals by a module or of the input keep their message.
//! - Module code never runs on the async workers: building an instance and
//!   the synchronous part of an action run on blocking threads, and only the
//!   action's `FfiFuture` (a join handle on the module's runtime) is awaited
//!   here. Dropping it (a client went away) aborts the action.
//! - Module errors are answers (404 unknown instance or action, 422 the
//!   module's message), never a 500.
//! - The database is opened per request (WAL, like every other process);
//!   the library loader is shared, so a library has one handle per process.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Extension, Json, Router,
};
use futures::Stream;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use crate::{
    commands,
    instances::{action_answer, start_action, ActionError, ActionFuture, LiveInstance, Refusal},
    loader::{Library, Loader},
    Host,
};

/// How often the token set is looked at without requests.
const TOKEN_POLL: Duration = Duration::from_millis(250);

/// The one answer to a request without a valid token.
const UNAUTHORIZED: &str =
    "missing, unknown or revoked token: send `Authorization: Bearer <token>`";

/// How long building an instance (the module's `new_instance` and
/// `configure`) may take before the request is answered with an error.
const START_LIMIT: Duration = Duration::from_secs(5);

/// What the live feed asks the module to wait for (seconds) per poll.
const LIVE_WAIT: &str = "25";

/// A live feed poll answered sooner than this without lookups is followed
/// by a pause, so a module that does not wait cannot make the feed spin.
const LIVE_MIN_POLL: Duration = Duration::from_secs(1);

/// A new API token: 32 random bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database keeps of a token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without stopping at the first difference.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Serves the API on `listen` until SIGTERM or SIGINT; then stops taking
/// connections, ends the live feeds and waits for requests in progress.
pub fn serve(host: Host, listen: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = watch::channel(false);
    let state = Arc::new(ApiState {
        data: host.data.root().to_path_buf(),
        loader: host.loader.clone(),
        libraries: Mutex::default(),
        tokens: TokenSet::open(&host.data.database())?,
        stopped,
    });
    drop(host);
    let served = runtime.block_on(async move {
        tokio::spawn(watch_tokens(state.clone()));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "HTTP API listening");
        // Scripts and tests wait for this line.
        eprintln!("listening on http://{address}");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                let _ = stop.send(true);
            })
            .await
            .context("serving the HTTP API")
    });
    // A module stuck in a blocking call must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    served
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!("cannot watch for SIGTERM: {error}");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

struct ApiState {
    data: PathBuf,
    loader: Arc<Loader>,
    /// Each module's current library, kept loaded while the server runs:
    /// otherwise every request would load it again and start and stop its
    /// runtime. An upgrade replaces the entry, which retires the old one.
    libraries: Mutex<HashMap<String, Arc<Library>>>,
    /// The API tokens, checked before anything else.
    tokens: TokenSet,
    /// Turns true at shutdown: the live feeds end.
    stopped: watch::Receiver<bool>,
}

impl ApiState {
    /// The data directory's database and configuration (blocking).
    fn host(&self) -> Result<Host> {
        Host::open_with_loader(&self.data, self.loader.clone())
    }
}

/// The API tokens by name and SHA-256 digest, as last read.
#[derive(Default)]
struct Tokens(Vec<(String, [u8; 32])>);

impl Tokens {
    fn read(conn: &rusqlite::Connection) -> rusqlite::Result<Tokens> {
        let mut tokens = Vec::new();
        for (name, stored) in crate::db::api_token_hashes(conn)? {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&stored, &mut digest).is_ok() {
                tokens.push((name, digest));
            }
        }
        Ok(Tokens(tokens))
    }

    /// The name of the token with `digest`; every entry is compared, each
    /// in constant time.
    fn name_of(&self, digest: &[u8; 32]) -> Option<&str> {
        let mut found = None;
        for (name, stored) in &self.0 {
            if same_digest(stored, digest) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The token set in memory, with its own connection to `callhost.db` to
/// notice other processes' commits (`PRAGMA data_version`, which changes
/// exactly then and costs no disk read when nothing changed).
struct TokenSet {
    /// The connection and the `data_version` the set was read at.
    conn: Mutex<(rusqlite::Connection, i64)>,
    current: watch::Sender<Arc<Tokens>>,
}

impl TokenSet {
    fn open(database: &std::path::Path) -> Result<TokenSet> {
        let conn = rusqlite::Connection::open(database)
            .with_context(|| format!("opening {}", database.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version = data_version(&conn)?;
        let tokens = Tokens::read(&conn).context("reading the API tokens")?;
        Ok(TokenSet {
            conn: Mutex::new((conn, version)),
            current: watch::Sender::new(Arc::new(tokens)),
        })
    }

    fn current(&self) -> Arc<Tokens> {
        self.current.borrow().clone()
    }

    /// Reads the tokens again if another process committed since the last
    /// read (blocking; cheap when nothing changed).
    fn refresh(&self) -> rusqlite::Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (conn, seen) = &mut *guard;
        let version = data_version(conn)?;
        if version == *seen {
            return Ok(());
        }
        // A commit between the two reads is seen again next time.
        let tokens = Tokens::read(conn)?;
        *seen = version;
        self.current.send_replace(Arc::new(tokens));
        Ok(())
    }
}

fn data_version(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// Keeps the token set current while no request comes (new tokens; live
/// feeds end when theirs is revoked). Errors are logged when they start
/// and when they stop.
async fn watch_tokens(state: Arc<ApiState>) {
    let mut stopped = state.stopped.clone();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TOKEN_POLL) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let refreshing = state.clone();
        match tokio::task::spawn_blocking(move || refreshing.tokens.refresh()).await {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!("the API tokens can be read again");
            }
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::error!("cannot read the API tokens: {error}");
            }
            _ => {}
        }
    }
}

fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v1/instances", get(list_instances))
        .route(
            "/api/v1/instances/{name}/actions/{action}",
            post(run_instance_action),
        )
        .route("/api/v1/instances/{name}/live", get(live_feed))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        // Also in front of the fallback: without a token, nothing is told.
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// An error answer: `{"error": "..."}` with a status (and `"error_id"`
/// for the host's own failures).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    error_id: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            error_id: None,
        }
    }

    /// The host itself failed: the client learns only that and an id; the
    /// log has the detail under the same id.
    fn internal(error: anyhow::Error) -> ApiError {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(error_id = %id, "API request failed: {error:#}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("internal error {id}: the server's log has the details"),
            error_id: Some(id),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.error_id {
            Some(id) => json!({ "error": self.message, "error_id": id }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

/// A module's or the input's refusal is a 422 with its message; anything
/// else is the host's own failure (database, files, threads).
impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        match error.downcast_ref::<Refusal>() {
            Some(refusal) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, refusal.to_string()),
            None => ApiError::internal(error),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> ApiError {
        match error {
            ActionError::Unknown(message) => ApiError::new(StatusCode::NOT_FOUND, message),
            ActionError::Failed(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
        }
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(anyhow::anyhow!("a blocking task failed: {error}")))?
}

/// The token's name, in the response for the request log.
#[derive(Clone)]
struct TokenName(String);

/// The digest of the request's token, for handlers (a live feed ends when
/// its token is revoked).
#[derive(Clone, Copy)]
struct Caller([u8; 32]);

/// Checks the bearer token before anything else: an unknown token is
/// refused from memory; a known one once more after looking for changes
/// (a revocation in another process).
async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return unauthorized();
    };
    let digest = token_digest(token);
    if state.tokens.current().name_of(&digest).is_none() {
        return unauthorized();
    }
    let refreshing = state.clone();
    let refreshed = blocking(move || {
        refreshing
            .tokens
            .refresh()
            .context("reading the API tokens")
            .map_err(ApiError::internal)
    })
    .await;
    if let Err(error) = refreshed {
        return error.into_response();
    }
    let Some(name) = state.tokens.current().name_of(&digest).map(str::to_owned) else {
        return unauthorized();
    };
    request.extensions_mut().insert(Caller(digest));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(TokenName(name));
    response
}

fn unauthorized() -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// One line per request; headers (the token) are never logged.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let token_name = response
        .extensions()
        .get::<TokenName>()
        .map_or("-", |name| name.0.as_str());
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        duration_ms = %format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        token_name,
        "request"
    );
    response
}

/// `GET /api/v1/instances`: what `callhost instance list --json` prints.
async fn list_instances(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let listing = blocking(move || Ok(commands::instance_list(&state.host()?, true)?)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], listing).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    args: Vec<String>,
}

/// `POST /api/v1/instances/{name}/actions/{action}` with an optional
/// `{"args": [...]}`: what `callhost instance action NAME ACTION ARGS…` does.
async fn run_instance_action(
    State(state): State<Arc<ApiState>>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("body: expected {{\"args\": [\"...\"]}}: {error}"),
            )
        })?
    };
    let live = Arc::new(live_instance(&state, name).await?);
    let started = {
        let live = live.clone();
        blocking(move || Ok(start_action(&live, &action, body.args)?)).await
    };
    let answer = match started {
        Ok(future) => action_answer(future).await.map_err(ApiError::from),
        Err(error) => Err(error),
    };
    drop_off_workers(live);
    Ok(Json(answer?))
}

/// Builds the instance `name` for actions, as the CLI does, on a blocking
/// thread and within `START_LIMIT`.
async fn live_instance(state: &Arc<ApiState>, name: String) -> Result<LiveInstance, ApiError> {
    let state = state.clone();
    let building = tokio::task::spawn_blocking(move || {
        let host = state.host()?;
        let row = host.db.find_instance(&name)?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no instance named `{name}`"))
        })?;
        let live = commands::action_instance(&host, &row).map_err(ApiError::from)?;
        state
            .libraries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(live.module_id.clone(), live.library.clone());
        Ok(live)
    });
    match tokio::time::timeout(START_LIMIT, building).await {
        Ok(Ok(built)) => built,
        Ok(Err(error)) => Err(ApiError::internal(anyhow::anyhow!(
            "building the instance failed: {error:#}"
        ))),
        Err(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the module did not create and configure the instance within {} s",
                START_LIMIT.as_secs()
            ),
        )),
    }
}

/// Drops an instance on a blocking thread: dropping runs module code.
fn drop_off_workers(live: Arc<LiveInstance>) {
    tokio::task::spawn_blocking(move || drop(live));
}

/// `GET /api/v1/instances/{name}/live`: the instance's `live` action as a
/// Server-Sent Events stream, one `lookup` event per lookup. A reconnecting
/// client's `Last-Event-ID` is where the feed resumes.
async fn live_feed(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(digest)): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok())
        .map(|id| id.to_string());
    let live = Arc::new(live_instance(&state, name).await?);
    // The first poll starts here: a module without `live` is a 404.
    let first = {
        let (live, args) = (live.clone(), live_args(after.as_deref()));
        blocking(move || Ok(start_action(&live, "live", args)?)).await
    };
    let first = match first {
        Ok(first) => first,
        Err(error) => {
            drop_off_workers(live);
            return Err(error);
        }
    };
    let feed = Feed {
        live: Some(live),
        after,
        pending: Some(first),
        ready: VecDeque::new(),
        stopped: state.stopped.clone(),
        tokens: state.tokens.current.subscribe(),
        digest,
        ended: false,
    };
    Ok(Sse::new(feed_events(feed)).keep_alive(KeepAlive::default()))
}

/// The `live` action's arguments: none at first, then `[AFTER_ID, WAIT]`.
fn live_args(after: Option<&str>) -> Vec<String> {
    match after {
        Some(after) => vec![after.to_string(), LIVE_WAIT.to_string()],
        None => Vec::new(),
    }
}

/// One client's feed: one live instance for the whole stream.
struct Feed {
    live: Option<Arc<LiveInstance>>,
    /// The `next` of the last answer.
    after: Option<String>,
    /// A poll already started.
    pending: Option<ActionFuture>,
    ready: VecDeque<Event>,
    stopped: watch::Receiver<bool>,
    /// The token set; the feed ends when its token is no longer in it.
    tokens: watch::Receiver<Arc<Tokens>>,
    digest: [u8; 32],
    ended: bool,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // The poll in progress is aborted with its future; the instance is
        // dropped off the async workers.
        self.pending = None;
        if let Some(live) = self.live.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drop_off_workers(live);
            }
        }
    }
}

impl Feed {
    /// Polls the module once and queues what it answered.
    async fn poll(&mut self) -> Result<(), ApiError> {
        let started = Instant::now();
        let future = match self.pending.take() {
            Some(future) => future,
            None => {
                let live = self.live.clone().expect("a feed has its instance");
                let args = live_args(self.after.as_deref());
                blocking(move || Ok(start_action(&live, "live", args)?)).await?
            }
        };
        let answer = action_answer(future).await?;
        let next = match &answer["next"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) if s.parse::<i64>().is_ok() => s.clone(),
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the `live` action answered without a numeric `next` ({other})"),
                ))
            }
        };
        let lookups = answer["lookups"].as_array().cloned().unwrap_or_default();
        let quiet = lookups.is_empty();
        for lookup in lookups {
            let mut event = Event::default().event("lookup");
            match &lookup["id"] {
                Value::Number(id) => event = event.id(id.to_string()),
                Value::String(id) if !id.contains(['\r', '\n', '\0']) => event = event.id(id),
                _ => {}
            }
            self.ready.push_back(event.data(lookup.to_string()));
        }
        self.after = Some(next);
        if quiet && started.elapsed() < LIVE_MIN_POLL {
            tokio::time::sleep(LIVE_MIN_POLL - started.elapsed()).await;
        }
        Ok(())
    }
}

/// What ended a wait of the feed.
enum Woken {
    Polled(Result<(), ApiError>),
    Stopped,
    Revoked,
}

/// The feed's events; an error is sent as an `error` event and ends the
/// stream (a browser's `EventSource` reconnects with `Last-Event-ID`). The
/// stream also ends, with an `error` event, when its token is revoked.
fn feed_events(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    let error_event = |message: &str| {
        Event::default()
            .event("error")
            .data(json!({ "error": message }).to_string())
    };
    futures::stream::unfold(feed, move |mut feed| async move {
        loop {
            if !feed.ended && feed.tokens.borrow().name_of(&feed.digest).is_none() {
                feed.ended = true;
                feed.ready.clear();
                return Some((Ok(error_event("the token was revoked")), feed));
            }
            if let Some(event) = feed.ready.pop_front() {
                return Some((Ok(event), feed));
            }
            if feed.ended || *feed.stopped.borrow() {
                return None;
            }
            let mut stopped = feed.stopped.clone();
            let mut tokens = feed.tokens.clone();
            let digest = feed.digest;
            let woken = tokio::select! {
                polled = feed.poll() => Woken::Polled(polled),
                _ = stopped.wait_for(|stop| *stop) => Woken::Stopped,
                _ = tokens.wait_for(|tokens| tokens.name_of(&digest).is_none()) => Woken::Revoked,
            };
            match woken {
                Woken::Polled(Ok(())) => {}
                Woken::Polled(Err(error)) => {
                    feed.ended = true;
                    return Some((Ok(error_event(&error.message)), feed));
                }
                Woken::Stopped => return None,
                // Said at the top of the loop.
                Woken::Revoked => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_compared_by_digest() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_digest(&token_digest(&a), &token_digest(&a)));
        assert!(!same_digest(&token_digest(&a), &token_digest(&b)));
    }

    #[test]
    fn live_args_start_empty_then_pass_back_next() {
        assert!(live_args(None).is_empty());
        assert_eq!(live_args(Some("17")), ["17", LIVE_WAIT]);
    }
}
