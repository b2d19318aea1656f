//! Accepting connections (HTTP or HTTPS), the router and the layers every
//! request passes: the request log, security headers, authentication and
//! the audit log.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use callhost_sip::tls::OpenConnection;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::{
    auth::{same_bytes, token_digest, Actor, SESSION_COOKIE},
    error::{blocking, ApiError},
    routes, AppState, LiveView,
};
use crate::Host;

/// Connections open at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// Connections one address may hold open (a browser uses a handful, plus
/// one per live view); more are closed at once.
const CONNECTIONS_PER_SOURCE: usize = 32;
/// A client has this long after connecting to send the first byte of its
/// first request (hyper's header timeout starts only with that byte).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client has this long to send a request's headers (slow clients that
/// never finish would otherwise hold a connection each).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// And this long for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in progress get this long after the stop before they are cut.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The one answer to a request without valid credentials.
const UNAUTHORIZED: &str = "not logged in: log in, or send `Authorization: Bearer <token>`";

/// The HTTP server of a process, on a runtime and thread of its own.
pub struct HttpServer {
    address: SocketAddr,
    https: bool,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `[http] listen` now (an error names it) and serves from a
    /// thread of its own until [`HttpServer::stop`].
    pub fn start(host: &Host, live: Option<Arc<dyn LiveView>>) -> Result<HttpServer> {
        let config = &host.config.http;
        let listener = std::net::TcpListener::bind(config.listen).with_context(|| {
            format!(
                "field `http.listen`: cannot listen on {} (set another address, or `enabled = false` under [http])",
                config.listen
            )
        })?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("callhost-http")
            .enable_all()
            .build()?;
        let (stop, stopped) = watch::channel(false);
        let tls_files = config.tls_files(&host.config.sip);
        let state = Arc::new(AppState::new(
            host,
            tls_files.is_some(),
            live,
            stopped.clone(),
        )?);
        let cancel = CancellationToken::new();
        let acceptor = match &tls_files {
            Some((certificate, key)) => {
                let _entered = runtime.enter();
                let config = callhost_sip::tls::reloading_server_config(
                    certificate,
                    key,
                    &[b"h2", b"http/1.1"],
                    cancel.clone(),
                )
                .context("HTTPS (`[http]` certificate)")?;
                Some(tokio_rustls::TlsAcceptor::from(config))
            }
            None => None,
        };
        let thread = std::thread::Builder::new()
            .name("callhost-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(watch_credentials(state.clone()));
                            accept(listener, acceptor, router(state), stopped).await
                        }
                        Err(error) => tracing::error!(%error, "HTTP listener unusable"),
                    }
                    cancel.cancel();
                });
                // A module stuck in a blocking call must not keep the process alive.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(HttpServer {
            address,
            https: tls_files.is_some(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://…` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// Stops taking connections, ends live feeds and waits (a few seconds
    /// at most) for requests in progress.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `callhost api serve`: the HTTP side alone, until SIGTERM or SIGINT.
pub fn serve_api(mut host: Host, listen: SocketAddr) -> Result<()> {
    host.config.http.listen = listen;
    let server = HttpServer::start(&host, None)?;
    drop(host);
    tracing::info!(address = %server.address(), "HTTP API listening");
    // Scripts and tests wait for this line.
    eprintln!("listening on {}", server.url());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::serve::shutdown_signal());
    tracing::info!("shutting down");
    server.stop();
    Ok(())
}

/// Keeps the credentials current while no request comes (live feeds end
/// when theirs is revoked). Errors are logged when they start and stop.
async fn watch_credentials(state: Arc<AppState>) {
    let mut stopped = state.stopped.clone();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let refreshing = state.clone();
        match tokio::task::spawn_blocking(move || refreshing.credentials.refresh()).await {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!("the credentials can be read again");
            }
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::error!("cannot read the API tokens and administrators: {error}");
            }
            _ => {}
        }
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_source: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut refused = Refusals::default();
    loop {
        let (stream, remote) = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(counted) = OpenConnection::count(&per_source, remote.ip(), CONNECTIONS_PER_SOURCE)
        else {
            refused.note(remote, "its address has as many open as it may");
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused.note(remote, "as many are open as may be");
            continue;
        };
        let service = {
            let app = app.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                app.clone().oneshot(request.map(axum::body::Body::new))
            })
        };
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _held = (permit, counted);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let spoke = Arc::new(AtomicBool::new(false));
            let served = match acceptor {
                None => {
                    let stream = FirstByte::new(stream, spoke.clone());
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    until_silent(watcher.watch(connection.into_owned()), &spoke).await
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let stream = FirstByte::new(stream, spoke.clone());
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    until_silent(watcher.watch(connection.into_owned()), &spoke).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%remote, "HTTP connection ended: {error}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in progress at the stop were cut");
    }
}

/// Serves `connection` unless its client sends nothing within
/// [`FIRST_BYTE_TIMEOUT`] of connecting (a silent connection would hold a
/// slot for ever: hyper's header timeout starts with the first byte).
async fn until_silent<F, E>(connection: F, spoke: &AtomicBool) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let silent = async {
        tokio::time::sleep(FIRST_BYTE_TIMEOUT).await;
        if spoke.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = connection => served,
        () = silent => Ok(()),
    }
}

/// A connection's stream that notes when its client sent the first byte.
struct FirstByte<S> {
    inner: S,
    spoke: Arc<AtomicBool>,
}

impl<S> FirstByte<S> {
    fn new(inner: S, spoke: Arc<AtomicBool>) -> FirstByte<S> {
        FirstByte { inner, spoke }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.spoke.store(true, Ordering::Release);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refused connections, logged at most every ten seconds with a count: a
/// flood of them must not flood the log.
#[derive(Default)]
struct Refusals {
    last: Option<Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, remote: SocketAddr, why: &str) {
        self.since += 1;
        if self
            .last
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(%remote, refused = self.since, "HTTP connections refused: {why}");
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

pub(super) fn router(state: Arc<AppState>) -> Router {
    let private = routes::private()
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), audit))
        // Also in front of the fallback: without credentials, nothing is told.
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    routes::public()
        .merge(private)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Where a request came from.
pub(super) fn client(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0)
}

/// How a request was authenticated, for handlers (a live feed ends when
/// its credentials do).
#[derive(Clone)]
pub(super) enum Credential {
    Token([u8; 32]),
    Session(String),
}

impl Credential {
    /// Whether these credentials are still good.
    pub fn valid(&self, state: &AppState, known: &super::auth::Known) -> bool {
        match self {
            Credential::Token(digest) => known.token_name(digest).is_some(),
            Credential::Session(id) => state.sessions.find(id, known).is_some(),
        }
    }
}

/// The session's CSRF token, for `GET /api/v1/session`.
#[derive(Clone)]
pub(super) struct Csrf(pub String);

/// The session cookie of a request.
pub(super) fn session_cookie(request: &axum::http::HeaderMap) -> Option<String> {
    request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_string())
}

fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Bearer token or session cookie, checked before anything else; an
/// unknown token is refused from memory, a known one once more after
/// looking for changes (a revocation in another process). A change made
/// with the cookie needs the session's CSRF token.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string())
        .filter(|token| !token.is_empty());
    let cookie = session_cookie(request.headers());
    if bearer.is_none() && cookie.is_none() {
        return unauthorized();
    }
    if let Some(token) = &bearer {
        if state
            .credentials
            .current()
            .token_name(&token_digest(token))
            .is_none()
        {
            return unauthorized();
        }
    }
    if let Err(error) = refresh_credentials(&state).await {
        return error.into_response();
    }
    let known = state.credentials.current();
    let (actor, credential) = match (bearer, cookie) {
        (Some(token), _) => {
            let digest = token_digest(&token);
            let Some(name) = known.token_name(&digest) else {
                return unauthorized();
            };
            (Actor::Token(name.to_string()), Credential::Token(digest))
        }
        (None, Some(id)) => {
            let Some(session) = state.sessions.find(&id, &known) else {
                return unauthorized();
            };
            if is_change(request.method()) {
                let sent = request
                    .headers()
                    .get("x-csrf-token")
                    .map(HeaderValue::as_bytes)
                    .unwrap_or_default();
                if !same_bytes(sent, session.csrf.as_bytes()) {
                    return ApiError::new(
                        StatusCode::FORBIDDEN,
                        "missing or wrong CSRF token: send the session's token in `X-CSRF-Token`",
                    )
                    .into_response();
                }
            }
            request.extensions_mut().insert(Csrf(session.csrf));
            (Actor::Admin(session.admin), Credential::Session(id))
        }
        (None, None) => return unauthorized(),
    };
    request.extensions_mut().insert(actor.clone());
    request.extensions_mut().insert(credential);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(actor);
    response
}

/// Reads the credentials again if another process changed them (on a
/// blocking thread): a revocation or a new administrator counts at once.
pub(super) async fn refresh_credentials(state: &Arc<AppState>) -> Result<(), ApiError> {
    let refreshing = state.clone();
    blocking(move || {
        refreshing
            .credentials
            .refresh()
            .context("reading the API tokens and administrators")
            .map_err(ApiError::internal)
    })
    .await
}

fn unauthorized() -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// What a refused request's audit entry says (the error answer's message).
#[derive(Clone)]
pub(super) struct AuditNote(pub String);

/// What a change was done to, when the handler says (else the path says).
#[derive(Clone)]
pub(super) struct AuditTarget(pub String);

/// Every change is in the audit log (who, what, when, how it ended)
/// before its answer leaves.
async fn audit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if !is_change(request.method()) {
        return next.run(request).await;
    }
    let actor = request
        .extensions()
        .get::<Actor>()
        .map_or_else(|| "-".to_string(), ToString::to_string);
    let source = client(&request).ip().to_string();
    let action = format!("{} {}", request.method(), request.uri().path());
    let mut response = next.run(request).await;
    let status = response.status();
    let outcome = if status.is_success() {
        "ok".to_string()
    } else {
        let note = response
            .extensions()
            .get::<AuditNote>()
            .map(|note| note.0.clone())
            .unwrap_or_default();
        format!("{} {note}", status.as_u16()).trim_end().to_string()
    };
    let target = response
        .extensions_mut()
        .remove::<AuditTarget>()
        .map(|target| target.0)
        .unwrap_or_default();
    let entry = crate::db::AuditEntry {
        id: 0,
        at: crate::db::now(),
        actor,
        source,
        action,
        target,
        outcome,
    };
    if let Err(error) = write_audit(&state, entry).await {
        tracing::error!("audit log not written: {}", error.message);
    }
    response
}

pub(super) async fn write_audit(
    state: &Arc<AppState>,
    entry: crate::db::AuditEntry,
) -> Result<(), ApiError> {
    let state = state.clone();
    blocking(move || Ok(state.host()?.db.audit(&entry)?)).await
}

/// The framework's own refusals (a body that is not JSON, a wrong
/// content type, a query that does not parse) come as plain text: they are
/// answered in the API's `{"error": ...}` form like every other.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain"));
    if !plain || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let status = response.status();
    let text = match axum::body::to_bytes(response.into_body(), 16 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => status.canonical_reason().unwrap_or("refused").to_string(),
    };
    ApiError::new(status, text).into_response()
}

async fn security_headers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // Every script, style and image comes from the host itself.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.secure {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// One line per request; headers (tokens, cookies) are never logged.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let actor = response
        .extensions()
        .get::<Actor>()
        .map_or_else(|| "-".to_string(), ToString::to_string);
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        duration_ms = %format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        %actor,
        "request"
    );
    response
}
