//! The API's routes: one handler per CLI function (and a few the browser
//! needs), each a thin shell over `crate::commands` run on a blocking
//! thread. Documented for `/api/openapi.json` by their `utoipa::path`.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post, put},
    Extension, Json, Router,
};
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

use super::{
    auth::{Actor, SESSION_COOKIE},
    config_form,
    error::{blocking, ApiError},
    openapi::Security,
    server::{refresh_credentials, session_cookie, write_audit, AuditTarget, Credential, Csrf},
    ui, AppState,
};
use crate::{
    commands,
    instances::{action_answer, start_action, ActionFuture, LiveInstance},
    Host,
};

type Shared = State<Arc<AppState>>;
type JsonResult = Result<Json<Value>, ApiError>;

/// How long building an instance (the module's `new_instance` and
/// `configure`) may take before the request is answered with an error.
const START_LIMIT: Duration = Duration::from_secs(5);
/// What the live feed asks the module to wait for (seconds) per poll.
const LIVE_WAIT: &str = "25";
/// A live feed poll answered sooner than this without lookups is followed
/// by a pause, so a module that does not wait cannot make the feed spin.
const LIVE_MIN_POLL: Duration = Duration::from_secs(1);
/// How often a log tail looks at the file.
const TAIL_POLL: Duration = Duration::from_millis(500);
/// A login's body: at most this long, within this time.
const LOGIN_BODY_BYTES: usize = 4096;
const LOGIN_BODY_TIME: Duration = Duration::from_secs(10);
/// The largest module package taken.
const MAX_PACKAGE_BYTES: usize = 256 * 1024 * 1024;
/// The largest asset (a prompt of several minutes as WAV).
const MAX_ASSET_BYTES: usize = 50 * 1024 * 1024;

/// What anyone may fetch: the UI's files, the API description, the login.
pub(super) fn public() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/api/openapi.json", get(super::openapi::document))
        .route("/api/v1/login", post(login))
}

/// Everything else, behind authentication.
pub(super) fn private() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/session", get(session))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/status", get(status))
        .route(
            "/api/v1/modules",
            get(list_modules)
                .post(install_module)
                .layer(DefaultBodyLimit::max(MAX_PACKAGE_BYTES)),
        )
        .route(
            "/api/v1/modules/{id}",
            get(show_module).delete(remove_module),
        )
        .route(
            "/api/v1/instances",
            get(list_instances).post(create_instance),
        )
        .route("/api/v1/instances/import", post(import_instance))
        .route(
            "/api/v1/instances/{name}",
            get(show_instance).delete(delete_instance),
        )
        .route("/api/v1/instances/{name}/config", put(configure_instance))
        .route(
            "/api/v1/instances/{name}/description",
            put(describe_instance),
        )
        .route("/api/v1/instances/{name}/activate", post(activate_instance))
        .route(
            "/api/v1/instances/{name}/deactivate",
            post(deactivate_instance),
        )
        .route("/api/v1/instances/{name}/position", put(order_instance))
        .route("/api/v1/instances/{name}/level", put(set_instance_level))
        .route("/api/v1/instances/{name}/log", get(instance_log))
        .route("/api/v1/instances/{name}/log/tail", get(tail_instance_log))
        .route("/api/v1/instances/{name}/export", get(export_instance))
        .route("/api/v1/instances/{name}/assets", get(list_assets))
        .route(
            "/api/v1/instances/{name}/assets/{file}",
            put(add_asset)
                .delete(remove_asset)
                .layer(DefaultBodyLimit::max(MAX_ASSET_BYTES)),
        )
        .route(
            "/api/v1/instances/{name}/actions/{action}",
            post(run_instance_action),
        )
        .route(
            "/api/v1/instances/{name}/actions/{action}/events",
            post(run_instance_action_with_progress),
        )
        .route("/api/v1/instances/{name}/live", get(live_feed))
        .route("/api/v1/instances/{name}/audio", get(play_audio))
        .route("/api/v1/directory", get(show_directory).put(load_directory))
        .route("/api/v1/calls/{user}", get(call_list))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/api/v1/admins", get(list_admins).post(add_admin))
        .route("/api/v1/admins/{name}", axum::routing::delete(remove_admin))
        .route("/api/v1/admins/{name}/password", put(set_admin_password))
        .route("/api/v1/trust", post(trust_key))
        .route("/api/v1/simulate", post(simulate))
        .route("/api/v1/tls/self-signed", post(tls_self_signed))
}

/// Runs `work` with the data directory opened, on a blocking thread.
async fn with_host<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&mut Host) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    blocking(move || {
        let mut host = state.host()?;
        Ok(work(&mut host)?)
    })
    .await
}

/// A CLI command's JSON listing, passed through.
fn json_text(text: String) -> JsonResult {
    let value: Value = serde_json::from_str(&text)
        .map_err(|error| ApiError::internal(anyhow::anyhow!("listing is not JSON: {error}")))?;
    Ok(Json(value))
}

/// `{"message": ...}`: what the CLI prints after a change.
fn done(message: String) -> Json<Value> {
    Json(json!({ "message": message }))
}

/// A response that names what a change was done to, for the audit log.
fn about(target: &str, answer: impl IntoResponse) -> Response {
    let mut response = answer.into_response();
    response
        .extensions_mut()
        .insert(AuditTarget(target.to_string()));
    response
}

// ---------------------------------------------------------------- sessions

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    name: String,
    password: String,
}

/// Log in as an administrator: sets the session cookie and answers the
/// session's CSRF token.
#[utoipa::path(post, path = "/api/v1/login", request_body = LoginBody, security(()),
    responses((status = 200, description = "logged in: `{admin, csrf}`"),
              (status = 401, description = "wrong name or password"),
              (status = 429, description = "too many failed logins; see Retry-After")))]
async fn login(
    State(state): Shared,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Body,
) -> Response {
    // The one route anyone may send a body to: small, and all of it soon.
    let bytes = match tokio::time::timeout(
        LOGIN_BODY_TIME,
        axum::body::to_bytes(body, LOGIN_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: a login is at most {LOGIN_BODY_BYTES} bytes"),
            )
            .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("body: not sent within {} s", LOGIN_BODY_TIME.as_secs()),
            )
            .into_response()
        }
    };
    let body: LoginBody = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(error) => {
            return ApiError::bad_request(format!(
                "body: expected {{\"name\": \"...\", \"password\": \"...\"}}: {error}"
            ))
            .into_response()
        }
    };
    let source = remote.ip();
    let audit = |outcome: &str| crate::db::AuditEntry {
        id: 0,
        at: crate::db::now(),
        actor: format!("login:{}", body.name.chars().take(64).collect::<String>()),
        source: source.to_string(),
        action: "POST /api/v1/login".into(),
        target: String::new(),
        outcome: outcome.to_string(),
    };
    if let Err(refused) = state.logins.check(source, &body.name) {
        let _ = write_audit(&state, audit("429 too many failed logins")).await;
        let seconds = refused.retry_after.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins: try again in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    // An administrator added a moment ago counts (the background look
    // comes every quarter second).
    if let Err(error) = refresh_credentials(&state).await {
        return error.into_response();
    }
    let known = state.credentials.current();
    let Some(phc) = state
        .passwords
        .check(&known, &body.name, body.password.clone())
        .await
    else {
        state.logins.failed(source, &body.name);
        let _ = write_audit(&state, audit("401 wrong name or password")).await;
        return ApiError::new(StatusCode::UNAUTHORIZED, "wrong name or password").into_response();
    };
    state.logins.succeeded(source, &body.name);
    let (id, csrf) = state.sessions.create(&body.name, &phc);
    if let Err(error) = write_audit(&state, audit("ok")).await {
        tracing::error!("audit log not written: {}", error.message);
    }
    let mut cookie = cookie::Cookie::build((SESSION_COOKIE, id))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict);
    if state.secure {
        cookie = cookie.secure(true);
    }
    let mut response = Json(json!({ "admin": body.name, "csrf": csrf })).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.build().to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Who is logged in, and the session's CSRF token for changes.
#[utoipa::path(get, path = "/api/v1/session",
    responses((status = 200, description = "`{admin, csrf}` or `{token}`"), (status = 401)))]
async fn session(Extension(actor): Extension<Actor>, csrf: Option<Extension<Csrf>>) -> Json<Value> {
    match actor {
        Actor::Admin(name) => Json(json!({
            "admin": name,
            "csrf": csrf.map(|Extension(Csrf(token))| token),
        })),
        Actor::Token(name) => Json(json!({ "token": name })),
    }
}

/// Ends the browser session (a token stays valid).
#[utoipa::path(post, path = "/api/v1/logout", responses((status = 200), (status = 401)))]
async fn logout(State(state): Shared, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.remove(&id);
    }
    let expired = cookie::Cookie::build((SESSION_COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = done("logged out".into()).into_response();
    if let Ok(value) = HeaderValue::from_str(&expired.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

// ---------------------------------------------------------------- dashboard

/// The dashboard: registrations, calls in progress (with what each module
/// decided), the calls that ended last, instances and their faults.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200), (status = 401)))]
async fn status(State(state): Shared) -> JsonResult {
    let live = state.live.as_ref().map(|live| live.snapshot());
    let instances = with_host(&state, |host| commands::instance_list(host, true)).await?;
    let instances: Value = serde_json::from_str(&instances).unwrap_or(Value::Null);
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "serving_sip": live.is_some(),
        "live": live,
        "instances": instances,
    })))
}

// ---------------------------------------------------------------- modules

/// Installed modules with version, ABI and signature.
#[utoipa::path(get, path = "/api/v1/modules", responses((status = 200), (status = 401)))]
async fn list_modules(State(state): Shared) -> JsonResult {
    json_text(with_host(&state, |host| commands::module_list(host, true)).await?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InstallQuery {
    /// Install a package that carries no signature.
    #[serde(default)]
    allow_unsigned: bool,
}

/// Install or upgrade a module from a `.cmod` package (the request body);
/// an installed module of the same id is replaced and its instances keep
/// their configuration.
#[utoipa::path(post, path = "/api/v1/modules", params(InstallQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200), (status = 422, description = "not a valid, trusted package")))]
async fn install_module(
    State(state): Shared,
    Query(query): Query<InstallQuery>,
    body: Bytes,
) -> JsonResult {
    let installing = state.clone();
    let answer = blocking(move || {
        let host = installing.host()?;
        let upload = Upload::write(&host, "package.cmod", &body)?;
        commands::module_install(&host, upload.path(), query.allow_unsigned).map_err(|error| {
            // A library of the upload that does not load (another ABI, say)
            // is the upload's fault; loading an installed one is not.
            if error.downcast_ref::<crate::loader::LoadError>().is_some() {
                ApiError::refused(format!("{error:#}"))
            } else {
                ApiError::from(error)
            }
        })
    })
    .await?;
    // A new version: the next request loads it.
    state
        .libraries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    Ok(done(answer))
}

/// A file uploaded over HTTP, in a directory of its own under
/// `<data>/uploads/`, removed when dropped: the CLI's file-based commands
/// then run unchanged.
struct Upload {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl Upload {
    fn write(host: &Host, file_name: &str, bytes: &[u8]) -> anyhow::Result<Upload> {
        let dir = host
            .data
            .root()
            .join("uploads")
            .join(super::auth::random_token());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(file_name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(Upload { dir, path })
    }

    fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A module: its row, its actions and its configuration schema.
#[utoipa::path(get, path = "/api/v1/modules/{id}", params(("id" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn show_module(State(state): Shared, Path(id): Path<String>) -> JsonResult {
    let library = library_of(&state, id.clone()).await?;
    let row = with_host(&state, move |host| {
        host.db
            .module(&id)?
            .ok_or_else(|| crate::instances::Refusal::NotInstalled { module: id }.into())
    })
    .await?;
    Ok(Json(json!({
        "module": row,
        "actions": actions_of(&library),
        "schema": config_form::schema_of(&library),
    })))
}

fn actions_of(library: &crate::loader::Library) -> Value {
    library
        .manifest
        .actions
        .iter()
        .map(|action| {
            json!({
                "name": action.name.as_str(),
                "usage": action.usage.as_str(),
                "help": action.help.as_str(),
            })
        })
        .collect()
}

/// The current library of module `id`, loaded once per server.
async fn library_of(
    state: &Arc<AppState>,
    id: String,
) -> Result<Arc<crate::loader::Library>, ApiError> {
    if let Some(library) = state
        .libraries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
    {
        return Ok(library.clone());
    }
    let state_now = state.clone();
    let library = with_host(state, move |host| {
        Ok(
            crate::instances::Instances::new(&host.data, &host.db, &host.loader)
                .library_of(&id)?
                .library,
        )
    })
    .await?;
    state_now
        .libraries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(library.manifest.id.to_string(), library.clone());
    Ok(library)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RemoveQuery {
    /// Delete the module's instances too (export them first).
    #[serde(default)]
    with_instances: bool,
}

/// Remove a module (refused while it has instances, unless `with_instances`).
#[utoipa::path(delete, path = "/api/v1/modules/{id}", params(("id" = String, Path), RemoveQuery),
    responses((status = 200), (status = 404), (status = 409, description = "it has instances")))]
async fn remove_module(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let target = id.clone();
    let answer = with_host(&state, move |host| {
        commands::module_remove(host, &id, query.with_instances)
    })
    .await?;
    state
        .libraries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&target);
    Ok(about(&target, done(answer)))
}

// ---------------------------------------------------------------- instances

/// Instances in execution order with status and level.
#[utoipa::path(get, path = "/api/v1/instances", responses((status = 200), (status = 401)))]
async fn list_instances(State(state): Shared) -> JsonResult {
    json_text(with_host(&state, |host| commands::instance_list(host, true)).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    module: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// The configuration as TOML (empty: the module's defaults).
    #[serde(default)]
    config: Option<String>,
    /// Create it deactivated.
    #[serde(default)]
    inactive: bool,
}

/// Create an instance of an installed module.
#[utoipa::path(post, path = "/api/v1/instances", request_body = CreateBody,
    responses((status = 200), (status = 404, description = "no such module"),
              (status = 409, description = "the name is taken"),
              (status = 422, description = "refused; `field` names the configuration field")))]
async fn create_instance(
    State(state): Shared,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let target = body.name.clone();
    let answer = with_host(&state, move |host| {
        commands::instance_create_text(
            host,
            &body.module,
            &body.name,
            body.config.as_deref().unwrap_or_default(),
            body.description.as_deref(),
            body.inactive,
        )
    })
    .await?;
    Ok(about(&target, done(answer)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ImportQuery {
    /// Overwrite an existing instance of the same name.
    #[serde(default)]
    replace: bool,
}

/// Create an instance from an exported file (the body, TOML).
#[utoipa::path(post, path = "/api/v1/instances/import", params(ImportQuery),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200), (status = 409), (status = 422)))]
async fn import_instance(
    State(state): Shared,
    Query(query): Query<ImportQuery>,
    body: Bytes,
) -> JsonResult {
    let text = utf8(&body)?;
    Ok(done(
        with_host(&state, move |host| {
            commands::instance_import_text(host, &text, "the uploaded file", query.replace)
        })
        .await?,
    ))
}

fn utf8(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("body: not UTF-8 text"))
}

/// An instance: its row, its configuration in force (as TOML and as
/// values for the form; secrets masked), its module's schema and actions.
#[utoipa::path(get, path = "/api/v1/instances/{name}", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn show_instance(State(state): Shared, Path(name): Path<String>) -> JsonResult {
    let row = {
        let name = name.clone();
        with_host(&state, move |host| host.db.instance(&name)).await?
    };
    let library = library_of(&state, row.module_id.clone()).await?;
    // A configuration that no longer opens or that the module refuses is
    // still shown (the row says why), so it can be replaced.
    let effective = match &row.config_error {
        Some(_) => None,
        None => match live_instance(&state, name).await {
            Ok(live) => {
                let live = Arc::new(live);
                let text = live.instance.effective_config().into_string();
                drop_off_workers(live);
                Some(text)
            }
            Err(error) => {
                tracing::debug!("instance not built for showing: {}", error.message);
                None
            }
        },
    };
    let values = effective
        .as_deref()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .map(|table| config_form::toml_to_json(&toml::Value::Table(table)));
    Ok(Json(json!({
        "instance": row,
        "status": row.status(),
        "config_toml": effective,
        "config": values,
        "schema": config_form::schema_of(&library),
        "actions": actions_of(&library),
    })))
}

/// Delete an instance (its files are kept aside).
#[utoipa::path(delete, path = "/api/v1/instances/{name}", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn delete_instance(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| commands::instance_delete(host, &name)).await?;
    Ok(about(&target, done(answer)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigBody {
    /// The form's values (JSON, as `config` of `GET /api/v1/instances/{name}`).
    #[serde(default)]
    values: Option<Value>,
    /// Or the configuration as TOML (the raw editor).
    #[serde(default)]
    toml: Option<String>,
}

/// Replace an instance's configuration, from the form's values or as TOML.
/// A secret left as it was shown (`********`) keeps its stored value.
#[utoipa::path(put, path = "/api/v1/instances/{name}/config", params(("name" = String, Path)),
    request_body = ConfigBody,
    responses((status = 200), (status = 404),
              (status = 422, description = "refused; `field` names the field")))]
async fn configure_instance(
    State(state): Shared,
    Path(name): Path<String>,
    Json(body): Json<ConfigBody>,
) -> Result<Response, ApiError> {
    let submitted = match (body.values, body.toml) {
        (Some(values), None) => config_form::json_to_toml(&values)
            .map_err(|message| ApiError::refused(format!("values: {message}")))?,
        (None, Some(text)) => toml::Value::Table(
            text.parse::<toml::Table>()
                .map_err(|e| ApiError::refused(format!("TOML: {}", e.message())))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "body: send either `values` or `toml`",
            ))
        }
    };
    let target = name.clone();
    let answer = with_host(&state, move |host| {
        let row = host.db.instance(&name)?;
        let stored = row.config.parse::<toml::Table>().unwrap_or_default();
        let restored = config_form::restore_secrets(submitted, &toml::Value::Table(stored));
        let text = toml::to_string(&restored).context("writing the configuration as TOML")?;
        commands::instance_configure_text(host, &name, &text)
    })
    .await?;
    Ok(about(&target, done(answer)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DescriptionBody {
    description: String,
}

/// Set an instance's description.
#[utoipa::path(put, path = "/api/v1/instances/{name}/description", params(("name" = String, Path)),
    request_body = DescriptionBody, responses((status = 200), (status = 404)))]
async fn describe_instance(
    State(state): Shared,
    Path(name): Path<String>,
    Json(body): Json<DescriptionBody>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| {
        commands::instance_describe(host, &name, &body.description)
    })
    .await?;
    Ok(about(&target, done(answer)))
}

/// Activate an instance (also clears a fault: another try).
#[utoipa::path(post, path = "/api/v1/instances/{name}/activate", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn activate_instance(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_active(state, name, true).await
}

/// Deactivate an instance; its configuration stays.
#[utoipa::path(post, path = "/api/v1/instances/{name}/deactivate", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn deactivate_instance(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_active(state, name, false).await
}

async fn set_active(
    state: Arc<AppState>,
    name: String,
    active: bool,
) -> Result<Response, ApiError> {
    let target = name.clone();
    with_host(&state, move |host| host.db.set_active(&name, active)).await?;
    let word = if active { "activated" } else { "deactivated" };
    Ok(about(&target, done(format!("{word} {target}"))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PositionBody {
    /// 1-based position in the execution order.
    #[schema(minimum = 1)]
    position: usize,
}

/// Move an instance in the execution order.
#[utoipa::path(put, path = "/api/v1/instances/{name}/position", params(("name" = String, Path)),
    request_body = PositionBody, responses((status = 200), (status = 404), (status = 422)))]
async fn order_instance(
    State(state): Shared,
    Path(name): Path<String>,
    Json(body): Json<PositionBody>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let position = body.position;
    with_host(&state, move |host| host.db.reorder(&name, position)).await?;
    Ok(about(
        &target,
        done(format!("{target} is now at position {position}")),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LevelBody {
    /// ERROR, WARN, INFO, DEBUG or TRACE.
    level: String,
}

/// Set an instance's log level.
#[utoipa::path(put, path = "/api/v1/instances/{name}/level", params(("name" = String, Path)),
    request_body = LevelBody, responses((status = 200), (status = 404), (status = 422)))]
async fn set_instance_level(
    State(state): Shared,
    Path(name): Path<String>,
    Json(body): Json<LevelBody>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| {
        commands::instance_set_level(host, &name, &body.level)
    })
    .await?;
    Ok(about(&target, done(answer)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Only lines at this level or more severe (ERROR … TRACE).
    #[serde(default)]
    level: Option<String>,
    /// Answer as a file to save (`text/plain` attachment).
    #[serde(default)]
    download: bool,
}

/// An instance's log, optionally down to a level; as JSON lines or, with
/// `download`, as a text file.
#[utoipa::path(get, path = "/api/v1/instances/{name}/log", params(("name" = String, Path), LogQuery),
    responses((status = 200), (status = 404), (status = 422)))]
async fn instance_log(
    State(state): Shared,
    Path(name): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let file_name = format!("{name}.log");
    let level = query.level.clone();
    let text = with_host(&state, move |host| {
        commands::instance_log(host, &name, level.as_deref())
    })
    .await?;
    if query.download {
        let disposition = format!("attachment; filename=\"{}\"", file_name.replace('"', ""));
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            text,
        )
            .into_response());
    }
    let lines: Vec<&str> = text.lines().collect();
    Ok(Json(json!({ "lines": lines })).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TailQuery {
    /// Only lines at this level or more severe (default: every line).
    #[serde(default)]
    level: Option<String>,
}

/// New lines of an instance's log as they are written (Server-Sent
/// Events, one `line` event each).
#[utoipa::path(get, path = "/api/v1/instances/{name}/log/tail",
    params(("name" = String, Path), TailQuery),
    responses((status = 200, content_type = "text/event-stream"), (status = 404), (status = 422)))]
async fn tail_instance_log(
    State(state): Shared,
    Path(name): Path<String>,
    Query(query): Query<TailQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let level = crate::instance_log::parse_level(query.level.as_deref().unwrap_or("TRACE"))?;
    let path = with_host(&state, move |host| {
        host.db.instance(&name)?;
        Ok(host.data.instance_log(&name))
    })
    .await?;
    // From the end: what was there is what `log` shows.
    let start = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
    let tail = Tail {
        path,
        offset: start,
        partial: String::new(),
        level,
        ready: VecDeque::new(),
        stopped: state.stopped.clone(),
    };
    let stream = futures::stream::unfold(tail, |mut tail| async move {
        loop {
            if let Some(line) = tail.ready.pop_front() {
                return Some((Ok(Event::default().event("line").data(line)), tail));
            }
            let mut stopped = tail.stopped.clone();
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return None,
                _ = tokio::time::sleep(TAIL_POLL) => {}
            }
            tail.read_more().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A log file followed from an offset.
struct Tail {
    path: std::path::PathBuf,
    offset: u64,
    /// A line not finished yet.
    partial: String,
    level: callhost_plugin_abi::LogLevel,
    ready: VecDeque<String>,
    stopped: watch::Receiver<bool>,
}

impl Tail {
    /// Reads what was appended (at most a megabyte per look); a file that
    /// became shorter (a new log) is read from its start.
    async fn read_more(&mut self) {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let Ok(metadata) = tokio::fs::metadata(&self.path).await else {
            return;
        };
        if metadata.len() < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if metadata.len() == self.offset {
            return;
        }
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else {
            return;
        };
        if file
            .seek(std::io::SeekFrom::Start(self.offset))
            .await
            .is_err()
        {
            return;
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.take(1 << 20).read_to_end(&mut bytes).await else {
            return;
        };
        self.offset += read as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            let line = line.trim_end();
            if crate::instance_log::at_least(line, self.level) {
                // An SSE event cannot carry a carriage return (axum panics
                // on one): a line a module wrote with one shows it escaped.
                self.ready.push_back(line.replace('\r', "\\r"));
            }
        }
    }
}

/// An instance (configuration, description, level) as TOML, for import
/// elsewhere.
#[utoipa::path(get, path = "/api/v1/instances/{name}/export", params(("name" = String, Path)),
    responses((status = 200, content_type = "application/toml"), (status = 404)))]
async fn export_instance(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let file_name = format!("{name}.toml");
    let text = with_host(&state, move |host| commands::instance_export(host, &name)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/toml".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", file_name.replace('"', "")),
            ),
        ],
        text,
    )
        .into_response())
}

/// An instance's own assets (prompts), as `instance/<file>` names.
#[utoipa::path(get, path = "/api/v1/instances/{name}/assets", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn list_assets(State(state): Shared, Path(name): Path<String>) -> JsonResult {
    let text = with_host(&state, move |host| {
        commands::instance_asset_list(host, &name)
    })
    .await?;
    let names: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    Ok(Json(json!({ "assets": names })))
}

/// Add a sound file (the body) as an asset of the instance; checked to
/// decode.
#[utoipa::path(put, path = "/api/v1/instances/{name}/assets/{file}",
    params(("name" = String, Path), ("file" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200), (status = 404), (status = 422)))]
async fn add_asset(
    State(state): Shared,
    Path((name, file)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| {
        host.db.instance(&name)?;
        // Checked before it names a file here; the command checks again.
        commands::asset_name(&file)?;
        let upload = Upload::write(host, &file, &body)?;
        commands::instance_asset_add(host, &name, upload.path())
    })
    .await?;
    Ok(about(&target, done(answer)))
}

/// Delete an asset of the instance.
#[utoipa::path(delete, path = "/api/v1/instances/{name}/assets/{file}",
    params(("name" = String, Path), ("file" = String, Path)),
    responses((status = 200), (status = 404), (status = 422)))]
async fn remove_asset(
    State(state): Shared,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| {
        commands::instance_asset_remove(host, &name, &file)
    })
    .await?;
    Ok(about(&target, done(answer)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    /// Passed to the module as they are.
    #[serde(default)]
    args: Vec<String>,
}

/// Run a module's admin action; answers its JSON.
#[utoipa::path(post, path = "/api/v1/instances/{name}/actions/{action}",
    params(("name" = String, Path), ("action" = String, Path)),
    request_body = ActionBody,
    responses((status = 200), (status = 404, description = "no such instance or action"),
              (status = 422, description = "the module's refusal")))]
async fn run_instance_action(
    State(state): Shared,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let args = action_args(&body)?;
    let target = name.clone();
    let live = Arc::new(live_instance(&state, name).await?);
    let started = {
        let live = live.clone();
        blocking(move || Ok(start_action(&live, &action, args)?)).await
    };
    let answer = match started {
        Ok(future) => action_answer(future).await.map_err(ApiError::from),
        Err(error) => Err(error),
    };
    drop_off_workers(live);
    let answer = answer?;
    state.playable.note(&target, &answer);
    Ok(about(&target, Json(answer)))
}

/// The arguments of an action request: an empty body, or `{"args": [...]}`.
fn action_args(body: &Bytes) -> Result<Vec<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice::<ActionBody>(body)
        .map(|body| body.args)
        .map_err(|error| {
            ApiError::bad_request(format!("body: expected {{\"args\": [\"...\"]}}: {error}"))
        })
}

/// How often a running action's progress is looked at.
const PROGRESS_POLL: Duration = Duration::from_millis(100);

/// Run a module's admin action and follow it (Server-Sent Events): a
/// `progress` event (`{"done", "total"}`) whenever the module reports one,
/// then one `answer` event with the action's JSON, or an `error` event
/// (`{"error"}`). Closing the stream cancels the action.
#[utoipa::path(post, path = "/api/v1/instances/{name}/actions/{action}/events",
    params(("name" = String, Path), ("action" = String, Path)),
    request_body = ActionBody,
    responses((status = 200, content_type = "text/event-stream"), (status = 404), (status = 422)))]
async fn run_instance_action_with_progress(
    State(state): Shared,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let args = action_args(&body)?;
    let target = name.clone();
    let live = Arc::new(live_instance(&state, name).await?);
    let started = {
        let live = live.clone();
        blocking(move || Ok(start_action(&live, &action, args)?)).await
    };
    let future = match started {
        Ok(future) => future,
        Err(error) => {
            drop_off_workers(live);
            return Err(error);
        }
    };
    let noting = state.clone();
    let instance = target.clone();
    let answer = async move {
        let answer = action_answer(future).await;
        if let Ok(answer) = &answer {
            noting.playable.note(&instance, answer);
        }
        answer
    };
    let run = ActionRun {
        answer: Some(Box::pin(answer)),
        live: Some(live),
        reports_sent: 0,
    };
    let events = futures::stream::unfold(run, |mut run| async move {
        loop {
            let answer = run.answer.as_mut()?;
            let finished = tokio::select! {
                answer = answer.as_mut() => Some(answer),
                _ = tokio::time::sleep(PROGRESS_POLL) => None,
            };
            // The last report before the answer is always sent.
            if let Some(event) = run.progress_event() {
                if let Some(answer) = finished {
                    run.answer = Some(Box::pin(std::future::ready(answer)));
                }
                return Some((Ok::<_, Infallible>(event), run));
            }
            if let Some(answer) = finished {
                run.answer = None;
                let event = match answer {
                    Ok(value) => Event::default().event("answer").data(value.to_string()),
                    Err(error) => Event::default()
                        .event("error")
                        .data(json!({ "error": error.to_string() }).to_string()),
                };
                return Some((Ok(event), run));
            }
        }
    });
    Ok(about(
        &target,
        Sse::new(events).keep_alive(KeepAlive::default()),
    ))
}

type AnswerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Value, crate::instances::ActionError>> + Send>,
>;

/// One followed action: its answer to come and its instance.
struct ActionRun {
    answer: Option<AnswerFuture>,
    live: Option<Arc<LiveInstance>>,
    reports_sent: u64,
}

impl ActionRun {
    /// A `progress` event when the module reported since the last one.
    fn progress_event(&mut self) -> Option<Event> {
        let (done, total, reports) = self.live.as_ref()?.progress.read();
        if reports == self.reports_sent {
            return None;
        }
        self.reports_sent = reports;
        Some(
            Event::default()
                .event("progress")
                .data(json!({ "done": done, "total": total }).to_string()),
        )
    }
}

impl Drop for ActionRun {
    fn drop(&mut self) {
        // The action in progress is cancelled with its future; the
        // instance is dropped off the async workers.
        self.answer = None;
        if let Some(live) = self.live.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drop_off_workers(live);
            }
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AudioQuery {
    /// The file's path exactly as an action of the instance listed it.
    file: String,
}

/// A WAV file an action of the instance listed (under `files`) in an
/// answer this server delivered, as 16-bit PCM for the browser's player:
/// A-law and µ-law are decoded on the fly, the stored file is only read.
/// No module code runs here, and nothing a module did not list is served.
#[utoipa::path(get, path = "/api/v1/instances/{name}/audio", params(("name" = String, Path), AudioQuery),
    responses((status = 200, content_type = "audio/wav"), (status = 404, description = "not a WAV file an action listed"),
              (status = 415, description = "a format the browser cannot be given (G.722)")))]
async fn play_audio(
    State(state): Shared,
    Path(name): Path<String>,
    Query(query): Query<AudioQuery>,
) -> Result<Response, ApiError> {
    if !state.playable.contains(&name, &query.file) {
        return Err(ApiError::not_found(format!(
            "no action of `{name}` listed a WAV file {:?} (run the action that lists it first)",
            query.file
        )));
    }
    let path = std::path::PathBuf::from(&query.file);
    let opened = blocking(move || {
        let file = std::fs::File::open(&path)
            .map_err(|error| ApiError::not_found(format!("{}: {error}", path.display())))?;
        let len = file
            .metadata()
            .map_err(|error| ApiError::internal(error.into()))?
            .len();
        callhost_media::wav::PcmPlayback::open(std::io::BufReader::new(file), len).map_err(
            |error| match error {
                callhost_media::wav::WavError::NoPlayback(_) => {
                    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.to_string())
                }
                other => ApiError::refused(format!("not a recording this host wrote: {other}")),
            },
        )
    })
    .await?;
    let header = Bytes::from(opened.header().to_vec());
    // Converted a chunk at a time on a blocking thread, as the browser reads.
    let chunks = futures::stream::unfold(Some(opened), |playback| async move {
        let mut playback = playback?;
        match tokio::task::spawn_blocking(move || (playback.next_chunk(), playback)).await {
            Ok((Ok(Some(chunk)), playback)) => {
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), Some(playback)))
            }
            Ok((Ok(None), _)) => None,
            Ok((Err(error), _)) => Some((Err(std::io::Error::other(error.to_string())), None)),
            Err(error) => Some((Err(std::io::Error::other(error.to_string())), None)),
        }
    });
    let body = futures::stream::once(async move { Ok(header) }).chain(chunks);
    Ok((
        [(header::CONTENT_TYPE, "audio/wav")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The WAV files under `files` anywhere in `answer`.
fn listed_wav_files(answer: &Value, found: &mut Vec<String>) {
    match answer {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_array()) {
                    ("files", Some(files)) => found.extend(
                        files
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|file| file.to_ascii_lowercase().ends_with(".wav"))
                            .map(str::to_string),
                    ),
                    _ => listed_wav_files(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| listed_wav_files(item, found)),
        _ => {}
    }
}

/// The WAV files actions listed in answers this server delivered, per
/// instance, for an hour: what `audio` may serve. Bounded: the oldest go
/// first.
#[derive(Default)]
pub(super) struct Playable {
    files: std::sync::Mutex<HashMap<(String, String), Instant>>,
}

/// How long a listed file stays playable.
const PLAYABLE_FOR: Duration = Duration::from_secs(3600);
/// Files remembered at most.
const MAX_PLAYABLE: usize = 20_000;

impl Playable {
    /// Remembers the WAV files `answer` lists for `instance`.
    pub(super) fn note(&self, instance: &str, answer: &Value) {
        let mut found = Vec::new();
        listed_wav_files(answer, &mut found);
        if found.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|_, noted| now.duration_since(*noted) < PLAYABLE_FOR);
        for file in found.into_iter().take(MAX_PLAYABLE) {
            if files.len() >= MAX_PLAYABLE {
                let oldest = files
                    .iter()
                    .min_by_key(|(_, noted)| **noted)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    files.remove(&oldest);
                }
            }
            files.insert((instance.to_string(), file), now);
        }
    }

    fn contains(&self, instance: &str, file: &str) -> bool {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(instance.to_string(), file.to_string()))
            .is_some_and(|noted| noted.elapsed() < PLAYABLE_FOR)
    }
}

/// Builds the instance `name` for actions, as the CLI does, on a blocking
/// thread and within `START_LIMIT`.
async fn live_instance(state: &Arc<AppState>, name: String) -> Result<LiveInstance, ApiError> {
    let state = state.clone();
    let building = tokio::task::spawn_blocking(move || -> Result<LiveInstance, ApiError> {
        let host = state.host()?;
        let row = host.db.instance(&name)?;
        let live = commands::action_instance(&host, &row)?;
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
        Err(_) => Err(ApiError::refused(format!(
            "the module did not create and configure the instance within {} s",
            START_LIMIT.as_secs()
        ))),
    }
}

/// Drops an instance on a blocking thread: dropping runs module code.
fn drop_off_workers(live: Arc<LiveInstance>) {
    tokio::task::spawn_blocking(move || drop(live));
}

/// The instance's `live` action as Server-Sent Events, one `lookup` event
/// per lookup. A reconnecting client's `Last-Event-ID` is where the feed
/// resumes; the feed ends when its credentials do.
#[utoipa::path(get, path = "/api/v1/instances/{name}/live", params(("name" = String, Path)),
    responses((status = 200, content_type = "text/event-stream"), (status = 404)))]
async fn live_feed(
    State(state): Shared,
    Extension(credential): Extension<Credential>,
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
        known: state.credentials.subscribe(),
        credential,
        state: state.clone(),
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
    /// The credentials; the feed ends when its own are no longer valid.
    known: watch::Receiver<Arc<super::auth::Known>>,
    credential: Credential,
    state: Arc<AppState>,
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
    fn still_allowed(&self) -> bool {
        let known = self.known.borrow().clone();
        self.credential.valid(&self.state, &known)
    }

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
                return Err(ApiError::refused(format!(
                    "the `live` action answered without a numeric `next` ({other})"
                )))
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
/// stream also ends, with an `error` event, when its credentials are
/// revoked (a token) or end (a session).
fn feed_events(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    let error_event = |message: &str| {
        Event::default()
            .event("error")
            .data(json!({ "error": message }).to_string())
    };
    futures::stream::unfold(feed, move |mut feed| async move {
        loop {
            if !feed.ended && !feed.still_allowed() {
                feed.ended = true;
                feed.ready.clear();
                let message = match feed.credential {
                    Credential::Token(_) => "the token was revoked",
                    Credential::Session(_) => "the session ended",
                };
                return Some((Ok(error_event(message)), feed));
            }
            if let Some(event) = feed.ready.pop_front() {
                return Some((Ok(event), feed));
            }
            if feed.ended || *feed.stopped.borrow() {
                return None;
            }
            let mut stopped = feed.stopped.clone();
            let mut known = feed.known.clone();
            let (credential, state) = (feed.credential.clone(), feed.state.clone());
            // Only a change that ends this feed's credentials interrupts
            // the poll (every commit to callhost.db renews the set).
            let woken = tokio::select! {
                polled = feed.poll() => Woken::Polled(polled),
                _ = stopped.wait_for(|stop| *stop) => Woken::Stopped,
                _ = known.wait_for(move |known| !credential.valid(&state, known)) => Woken::Revoked,
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

// ---------------------------------------------------------------- directory

/// The directory: users (passwords never shown), groups and who is logged
/// out of them, the address book and each user's state (DND, forwards,
/// call waiting), with its schema for the form.
#[utoipa::path(get, path = "/api/v1/directory", responses((status = 200), (status = 401)))]
async fn show_directory(State(state): Shared) -> JsonResult {
    let directory = with_host(&state, |host| {
        host.db.store.load_directory().map_err(Into::into)
    })
    .await?;
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<callhost_pbx::directory::Directory>();
    let mut shown =
        serde_json::to_value(&directory).map_err(|error| ApiError::internal(error.into()))?;
    // A password is never shown; that one is set is.
    if let (Some(directory), Some(users)) = (&directory, shown["users"].as_array_mut()) {
        for (user, shown) in directory.users.iter().zip(users) {
            if user.sip_ha1.is_some() {
                shown["password"] = Value::String(config_form::SECRET_MASK.into());
            }
        }
    }
    Ok(Json(json!({
        "directory": shown,
        "schema": schema,
    })))
}

/// Replace the directory (call lists are kept), checked like
/// `callhost directory load`. A user sent without a password keeps the
/// one stored. JSON (the form's values) or TOML (`text/plain`).
#[utoipa::path(put, path = "/api/v1/directory",
    request_body(content = Object, description = "the directory as JSON, or as TOML with `Content-Type: text/plain`"),
    responses((status = 200), (status = 422, description = "refused, with the field named")))]
async fn load_directory(State(state): Shared, headers: HeaderMap, body: Bytes) -> JsonResult {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let text = if is_json {
        let values: Value = serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("body: not JSON: {error}")))?;
        let table = config_form::json_to_toml(&values)
            .map_err(|message| ApiError::refused(format!("directory: {message}")))?;
        toml::to_string(&table).map_err(|error| ApiError::refused(format!("directory: {error}")))?
    } else {
        utf8(&body)?
    };
    Ok(done(
        with_host(&state, move |host| {
            commands::directory_load_keeping_passwords(host, &text, "directory")
        })
        .await?,
    ))
}

/// A user's call list, newest first, with the names modules resolved.
#[utoipa::path(get, path = "/api/v1/calls/{user}", params(("user" = String, Path)),
    responses((status = 200), (status = 401)))]
async fn call_list(State(state): Shared, Path(user): Path<String>) -> JsonResult {
    json_text(with_host(&state, move |host| commands::call_list(host, &user, true)).await?)
}

// ---------------------------------------------------------------- audit, access

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Entries older than this id (paging).
    #[serde(default)]
    before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
}

/// The audit log, newest first: who changed what, when, and how it ended.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = [crate::db::AuditEntry]), (status = 401)))]
async fn audit_log(State(state): Shared, Query(query): Query<AuditQuery>) -> JsonResult {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let entries = with_host(&state, move |host| host.db.audit_log(query.before, limit)).await?;
    Ok(Json(json!({ "entries": entries })))
}

/// API tokens: names and creation times.
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200), (status = 401)))]
async fn list_tokens(State(state): Shared) -> JsonResult {
    json_text(with_host(&state, |host| commands::api_token_list(host, true)).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
    name: String,
}

/// Create an API token; it is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NameBody,
    responses((status = 200, description = "`{name, token}`"), (status = 409), (status = 422)))]
async fn create_token(
    State(state): Shared,
    Json(body): Json<NameBody>,
) -> Result<Response, ApiError> {
    let name = body.name.clone();
    let token = with_host(&state, move |host| {
        commands::api_token_create(host, &body.name)
    })
    .await?;
    Ok(about(&name, Json(json!({ "name": name, "token": token }))))
}

/// Revoke an API token.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn revoke_token(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| commands::api_token_revoke(host, &name)).await?;
    Ok(about(&target, done(answer)))
}

/// Administrators: names and creation times.
#[utoipa::path(get, path = "/api/v1/admins", responses((status = 200), (status = 401)))]
async fn list_admins(State(state): Shared) -> JsonResult {
    json_text(with_host(&state, |host| commands::admin_list(host, true)).await?)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminBody {
    name: String,
    password: String,
}

/// Add an administrator.
#[utoipa::path(post, path = "/api/v1/admins", request_body = AdminBody,
    responses((status = 200), (status = 409), (status = 422)))]
async fn add_admin(
    State(state): Shared,
    Json(body): Json<AdminBody>,
) -> Result<Response, ApiError> {
    let target = body.name.clone();
    let answer = with_host(&state, move |host| {
        commands::admin_add(host, &body.name, &body.password)
    })
    .await?;
    Ok(about(&target, done(answer)))
}

/// Remove an administrator (their sessions end).
#[utoipa::path(delete, path = "/api/v1/admins/{name}", params(("name" = String, Path)),
    responses((status = 200), (status = 404)))]
async fn remove_admin(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| commands::admin_remove(host, &name)).await?;
    Ok(about(&target, done(answer)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordBody {
    password: String,
}

/// Set an administrator's password (their other sessions end).
#[utoipa::path(put, path = "/api/v1/admins/{name}/password", params(("name" = String, Path)),
    request_body = PasswordBody, responses((status = 200), (status = 404), (status = 422)))]
async fn set_admin_password(
    State(state): Shared,
    Path(name): Path<String>,
    Json(body): Json<PasswordBody>,
) -> Result<Response, ApiError> {
    let target = name.clone();
    let answer = with_host(&state, move |host| {
        commands::admin_password(host, &name, &body.password)
    })
    .await?;
    Ok(about(&target, done(answer)))
}

/// Trust a public key (the body, as `callhost trust add` reads it) for
/// package signatures.
#[utoipa::path(post, path = "/api/v1/trust",
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200), (status = 422)))]
async fn trust_key(State(state): Shared, body: Bytes) -> JsonResult {
    utf8(&body)?;
    Ok(done(
        with_host(&state, move |host| {
            let upload = Upload::write(host, "key.pub", &body)?;
            let path = crate::library::trust(&host.data, upload.path())
                .map_err(|error| crate::db::Invalid(format!("{error:#}")))?;
            Ok(format!("trusted {}", path.display()))
        })
        .await?,
    ))
}

/// The OpenAPI document of every route above (`/api/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "callhost",
        description = "The callhost PBX module host's HTTP API: what the CLI does, for the web UI and for scripts. \
            Authenticate with `Authorization: Bearer <token>` (`callhost api token create`) or log in \
            (`POST /api/v1/login`) and send the session's CSRF token in `X-CSRF-Token` with every change."
    ),
    paths(
        login, session, logout, status,
        list_modules, install_module, show_module, remove_module,
        list_instances, create_instance, import_instance, show_instance, delete_instance,
        configure_instance, describe_instance, activate_instance, deactivate_instance,
        order_instance, set_instance_level, instance_log, tail_instance_log, export_instance,
        list_assets, add_asset, remove_asset, run_instance_action,
        run_instance_action_with_progress, live_feed, play_audio,
        show_directory, load_directory, call_list, audit_log,
        list_tokens, create_token, revoke_token,
        list_admins, add_admin, remove_admin, set_admin_password, trust_key, simulate,
        tls_self_signed,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&Security),
    security(("bearer" = []), ("session" = []))
)]
pub(super) struct ApiDoc;

/// Calls one simulation over HTTP may place (the CLI has no limit).
const MAX_SIMULATED_CALLS: u64 = 10_000;

/// Run a call scenario (the body, TOML as `callhost simulate` reads it)
/// through the engine and the active instances; one JSON object per call.
/// Calls on the stored directory land in the users' call lists.
#[utoipa::path(post, path = "/api/v1/simulate",
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, description = "`{calls: [...], warnings: [...]}`"), (status = 422)))]
async fn simulate(State(state): Shared, body: Bytes) -> JsonResult {
    utf8(&body)?;
    let (lines, warnings) = with_host(&state, move |host| {
        let upload = Upload::write(host, "scenario.toml", &body)?;
        let scenario = crate::simulate::Scenario::load(upload.path())?;
        let calls: u64 = scenario.calls.iter().map(|call| u64::from(call.repeat)).sum();
        if calls > MAX_SIMULATED_CALLS {
            return Err(crate::db::Invalid(format!(
                "scenario: {calls} calls; over HTTP at most {MAX_SIMULATED_CALLS} (the CLI has no limit)"
            ))
            .into());
        }
        let (mut out, mut warn) = (Vec::new(), Vec::new());
        crate::simulate::run(host, &scenario, &mut out, &mut warn)?;
        Ok((out, warn))
    })
    .await?;
    let calls: Vec<Value> = String::from_utf8_lossy(&lines)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let warnings: Vec<String> = String::from_utf8_lossy(&warnings)
        .lines()
        .map(str::to_string)
        .collect();
    Ok(Json(json!({ "calls": calls, "warnings": warnings })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SelfSignedBody {
    /// DNS names or IP addresses (default: localhost and the IP of `sip.listen`).
    #[serde(default)]
    names: Vec<String>,
    /// Replace existing files.
    #[serde(default)]
    force: bool,
}

/// Write a self-signed certificate and key for SIP over TLS (and HTTPS)
/// into `<data>/tls/`, for a test setup.
#[utoipa::path(post, path = "/api/v1/tls/self-signed", request_body = SelfSignedBody,
    responses((status = 200), (status = 409, description = "the files exist (send `force`)"), (status = 422)))]
async fn tls_self_signed(State(state): Shared, Json(body): Json<SelfSignedBody>) -> JsonResult {
    Ok(done(
        with_host(&state, move |host| {
            commands::tls_self_signed(host, &body.names, None, body.force)
        })
        .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tail_reads_whole_lines_at_its_level_and_escapes_carriage_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "old INFO before\n").unwrap();
        let (_stop, stopped) = watch::channel(false);
        let mut tail = Tail {
            offset: std::fs::metadata(&path).unwrap().len(),
            path: path.clone(),
            partial: String::new(),
            level: callhost_plugin_abi::LogLevel::Info,
            ready: VecDeque::new(),
            stopped,
        };
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(file, "t DEBUG hidden\nt WARN a\rb\nt INFO half").unwrap();
        tail.read_more().await;
        assert_eq!(Vec::from(tail.ready.clone()), ["t WARN a\\rb"]);
        // The line not finished yet comes once it is.
        writeln!(file, " done").unwrap();
        tail.read_more().await;
        assert_eq!(tail.ready.back().unwrap(), "t INFO half done");
        // Every line given to an event is one axum takes.
        for line in &tail.ready {
            let _ = Event::default().event("line").data(line);
        }
    }
}
