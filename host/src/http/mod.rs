//! The web UI and the HTTP API (H8 in `docs/FEATURES.md`): served by
//! `callhost serve` next to SIP (`[http]` in `callhost.toml`), or alone by
//! `callhost api serve`.
//!
//! - One JSON API (`/api/v1/…`, described by `/api/openapi.json`) serves
//!   the browser and scripts alike; the UI (`/`, `/ui/…`) is static files
//!   embedded in the binary that call it.
//! - Who may call what: [`auth`]. Every change (any method but GET) is
//!   written to the audit log before it is answered.
//! - HTTP runs on a runtime of its own (two threads) in `callhost serve`,
//!   so a slow request never shares a scheduler with SIP or RTP; module
//!   code, the database and the files are reached on blocking threads.
//! - The host's own failures are answered 500 with a generic message and
//!   an error id; the detail goes to the log under that id. Refusals by a
//!   module or of the input are 4xx with their message (and the field, for
//!   a configuration).

mod auth;
mod config_form;
mod error;
mod openapi;
mod routes;
mod server;
mod ui;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tokio::sync::watch;

pub use auth::{
    check_password_rules, hash_password, random_token as new_token, same_bytes, token_digest,
};
pub use config_form::SECRET_MASK;
pub use server::{serve_api, HttpServer};

use crate::{
    loader::{Library, Loader},
    Host,
};

/// What a running `callhost serve` shows on the dashboard.
pub trait LiveView: Send + Sync {
    /// Registrations, calls in progress and the calls that ended last.
    fn snapshot(&self) -> serde_json::Value;
}

/// What every request handler shares.
pub(crate) struct AppState {
    data: PathBuf,
    loader: Arc<Loader>,
    /// Each module's current library, kept loaded while the server runs:
    /// otherwise every request would load it again and start and stop its
    /// runtime. An upgrade replaces the entry, which retires the old one.
    libraries: Mutex<HashMap<String, Arc<Library>>>,
    credentials: auth::Credentials,
    /// Recordings actions listed: what the player may fetch.
    playable: routes::Playable,
    sessions: auth::Sessions,
    logins: auth::LoginLimiter,
    passwords: auth::PasswordChecker,
    /// The session cookie gets `Secure` (HTTPS).
    secure: bool,
    /// The live state of `callhost serve`; `None` in `callhost api serve`.
    live: Option<Arc<dyn LiveView>>,
    /// Turns true at shutdown: live feeds end.
    stopped: watch::Receiver<bool>,
}

impl AppState {
    fn new(
        host: &Host,
        secure: bool,
        live: Option<Arc<dyn LiveView>>,
        stopped: watch::Receiver<bool>,
    ) -> Result<AppState> {
        let http = &host.config.http;
        Ok(AppState {
            data: host.data.root().to_path_buf(),
            loader: host.loader.clone(),
            libraries: Mutex::default(),
            credentials: auth::Credentials::open(&host.data.database())?,
            playable: routes::Playable::default(),
            sessions: auth::Sessions::new(
                Duration::from_secs(http.session_idle_minutes.saturating_mul(60)),
                Duration::from_secs(http.session_hours.saturating_mul(3600)),
            ),
            logins: auth::LoginLimiter::default(),
            passwords: auth::PasswordChecker::default(),
            secure,
            live,
            stopped,
        })
    }

    /// The data directory's database and configuration (blocking).
    fn host(&self) -> Result<Host> {
        Host::open_with_loader(&self.data, self.loader.clone())
    }
}
