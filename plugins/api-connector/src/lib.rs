//! The API connector (TC1–TC5): a WebSocket server for CRM plugins,
//! desktop and chat apps. A client signs in with the installation key and
//! a directory user's password, takes a floating seat (or the user's fixed
//! one), and then gets its user's calls and presence, its colleagues'
//! presence, and commands: click-to-dial, hang up, DND, forwards, group
//! login, lookups and the call list. Clients connect to the host itself;
//! nothing phones home. See `docs/modules/api-connector.md`.
//!
//! Where the work happens:
//! - the hooks (host threads) only hand what they see to the hub's
//!   channel and return;
//! - the server (the module's runtime) listens, runs every connection and
//!   the hub, and keeps the seats ([`server`], [`session`], [`hub`]);
//! - host calls that may block run on blocking threads;
//! - actions run in whichever process asks: in the serving process they
//!   reach the server directly, elsewhere over its control socket
//!   ([`control`]); the key actions need neither.

pub mod calls;
pub mod config;
pub mod control;
pub mod files;
pub mod hub;
pub mod key;
pub mod limits;
pub mod protocol;
pub mod seats;
pub mod server;
pub mod session;
pub mod time;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use callhost_plugin_sdk::{
    config_error, export_module, serde_json, serde_json::json, tracing, Action, CallEvent,
    CallListItem, CallSetup, ConfigError, Context, Decision, Module, UserPresence,
};

use crate::calls::Observation;
use crate::config::{Config, Settings};
use crate::control::{ControlAnswer, ControlError, ControlRequest};
use crate::hub::HubEvent;
use crate::key::KeyMaterial;
use crate::server::Server;

/// The running servers of this library, by instance directory: a new
/// instance value (a reconfiguration) finds and adopts its instance's
/// server here, and actions in this process reach it.
static SERVERS: Mutex<BTreeMap<PathBuf, Arc<Server>>> = Mutex::new(BTreeMap::new());

/// Numbers instance values, so a server knows which one owns it.
static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);

fn running_server(data_dir: &Path) -> Option<Arc<Server>> {
    SERVERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(data_dir)
        .filter(|server| !server.is_stopped())
        .cloned()
}

pub struct ApiConnector {
    ctx: Context,
    config: Config,
    settings: Arc<Settings>,
    key: KeyMaterial,
    /// This value's number (see `Server::owner`).
    value: u64,
    /// The server this value runs or adopted, once activated.
    server: OnceLock<Arc<Server>>,
}

/// Whether `listen` can be had by this instance: free, or held by this
/// instance's own connector (in this process or in the one that serves).
fn listen_available(listen: SocketAddr, data_dir: &Path) -> Result<(), String> {
    if running_server(data_dir).is_some_and(|server| server.settings().listen == listen) {
        return Ok(());
    }
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            let ours = files::listening_holder(data_dir).is_some_and(|held| {
                held == listen || (listen.port() == 0 && held.ip() == listen.ip())
            });
            if ours {
                Ok(())
            } else {
                Err(format!("{listen} is in use by another program"))
            }
        }
        Err(error) => Err(format!("cannot listen on {listen}: {error}")),
    }
}

impl ApiConnector {
    fn server(&self) -> Option<&Arc<Server>> {
        self.server.get()
    }

    fn observe(&self, event: HubEvent) {
        if let Some(server) = self.server() {
            server.observe(event);
        }
    }

    /// The address the running server listens on in this process, waiting
    /// up to `timeout` for it to bind (for tests and benches).
    pub async fn listening(&self, timeout: Duration) -> Option<SocketAddr> {
        let server = running_server(&self.ctx.data_dir)?;
        server.wait_listening(timeout).await
    }

    /// The installation key in force (for tests and benches; the `key`
    /// action shows it to administrators).
    pub fn current_key(&self) -> Result<String, String> {
        self.key
            .current()
            .map(|key| key.expose().to_string())
            .map_err(|e| e.to_string())
    }

    /// Connected clients and the longest outgoing queue of any, in this
    /// process (for tests and benches).
    pub fn client_statistics(&self) -> Option<(usize, usize)> {
        let server = running_server(&self.ctx.data_dir)?;
        let hub = server.hub.lock().unwrap_or_else(|p| p.into_inner());
        Some((hub.clients(), hub.longest_queue()))
    }

    fn url(&self) -> String {
        let listening = running_server(&self.ctx.data_dir).and_then(|s| s.listening());
        self.settings.url(listening)
    }

    /// `seats`
    fn seats(&self, _args: &[String]) -> Action {
        if let Some(server) = running_server(&self.ctx.data_dir) {
            return Action::Ready(Ok(server.seats_report()));
        }
        let data_dir = self.ctx.data_dir.clone();
        let rules = self.settings.seats.clone();
        Action::Later(Box::pin(async move {
            match control::ask(&data_dir, &ControlRequest::Seats).await {
                Ok(ControlAnswer::Ok(report)) => Ok(report),
                Ok(ControlAnswer::Err(message)) => Err(message),
                Err(ControlError::NotRunning { .. }) => {
                    // Nothing serves the instance: the last holders on file.
                    let file =
                        tokio::task::spawn_blocking(move || seats::SeatsFile::read(&data_dir))
                            .await
                            .map_err(|e| e.to_string())??;
                    let mut table = seats::SeatTable::new(rules);
                    if let Some(file) = file {
                        table.restore(
                            &file,
                            std::time::SystemTime::now(),
                            server::SEATS_HEARTBEAT * 2,
                        );
                    }
                    let mut report = server::report(&table, false);
                    report["note"] = json!(
                        "no connector is running for this instance (is `callhost serve` running with it active?); \
                         the holders shown are those who would get their seats back if it started now"
                    );
                    Ok(report)
                }
                Err(error) => Err(error.to_string()),
            }
        }))
    }

    /// `revoke USER [REASON…]`
    fn revoke(&self, args: &[String]) -> Action {
        let Some(user) = args.first().cloned() else {
            return Action::Ready(Err("usage: revoke USER [REASON…]".into()));
        };
        let reason = args[1..].join(" ");
        if let Some(server) = running_server(&self.ctx.data_dir) {
            return Action::Ready(server.revoke(&user, &reason));
        }
        let data_dir = self.ctx.data_dir.clone();
        Action::Later(Box::pin(async move {
            match control::ask(&data_dir, &ControlRequest::Revoke { user, reason }).await {
                Ok(ControlAnswer::Ok(answer)) => Ok(answer),
                Ok(ControlAnswer::Err(message)) => Err(message),
                Err(ControlError::NotRunning { .. }) => Err(
                    "no connector is running for this instance (is `callhost serve` running with it active?): nobody holds a seat to revoke"
                        .into(),
                ),
                Err(error) => Err(error.to_string()),
            }
        }))
    }

    /// `key`
    fn key(&self, _args: &[String]) -> Result<serde_json::Value, String> {
        let key = self.key.current().map_err(|e| e.to_string())?;
        Ok(json!({
            "key": key.expose(),
            "url": self.url(),
            "instance": self.ctx.instance,
            "generation": key.generation,
        }))
    }

    /// `key-file`
    fn key_file(&self, _args: &[String]) -> Result<serde_json::Value, String> {
        let key = self.key.current().map_err(|e| e.to_string())?;
        Ok(json!({
            "format": "callhost-api-key",
            "version": 1,
            "url": self.url(),
            "key": key.expose(),
            "instance": self.ctx.instance,
            "installation": self.ctx.installation_id(),
        }))
    }

    /// `rotate-key`
    fn rotate_key(&self, _args: &[String]) -> Result<serde_json::Value, String> {
        let key = self.key.rotate().map_err(|e| e.to_string())?;
        tracing::info!(
            generation = key.generation,
            "installation key rotated: connected clients stay signed in, new sign-ins need the new key"
        );
        Ok(json!({
            "key": key.expose(),
            "url": self.url(),
            "instance": self.ctx.instance,
            "generation": key.generation,
            "note": "connected clients stay signed in; new sign-ins need the new key",
        }))
    }
}

impl Module for ApiConnector {
    type Config = Config;

    fn new(ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        let secret = ctx.module_secret(key::SECRET_PURPOSE).ok_or_else(|| {
            config_error(
                "(host)",
                "the host offers no module secret, so no installation key can be derived: the connector cannot run on this host",
            )
        })?;
        let data_dir = ctx.data_dir.clone();
        let settings = config.settings(|listen| listen_available(listen, &data_dir))?;
        Ok(ApiConnector {
            key: KeyMaterial::new(secret, &ctx.instance, &ctx.data_dir),
            settings: Arc::new(settings),
            config,
            ctx: ctx.clone(),
            value: NEXT_VALUE.fetch_add(1, Ordering::Relaxed),
            server: OnceLock::new(),
        })
    }

    fn activate(&self) {
        let mut servers = SERVERS.lock().unwrap_or_else(|p| p.into_inner());
        let running = servers
            .get(&self.ctx.data_dir)
            .filter(|server| !server.is_stopped())
            .cloned();
        let server = match running {
            Some(server) => {
                server.adopt(self.value, self.ctx.clone(), self.settings.clone());
                server
            }
            None => {
                let server = Server::new(
                    self.ctx.clone(),
                    self.settings.clone(),
                    self.key.clone(),
                    self.value,
                );
                server.start();
                servers.insert(self.ctx.data_dir.clone(), server.clone());
                server
            }
        };
        drop(servers);
        if !self.settings.seats.fixed_users.is_empty() {
            tracing::debug!(fixed_users = ?self.settings.seats.fixed_users, "fixed seats");
        }
        let _ = self.server.set(server);
    }

    fn deactivate(&self) {
        let Some(server) = self.server() else {
            return;
        };
        // A newer value (a new configuration) runs it now: it stays.
        if server.owner() != self.value {
            return;
        }
        server.stop();
        let mut servers = SERVERS.lock().unwrap_or_else(|p| p.into_inner());
        if servers
            .get(&self.ctx.data_dir)
            .is_some_and(|running| Arc::ptr_eq(running, server))
        {
            servers.remove(&self.ctx.data_dir);
        }
    }

    fn uninstall(&self) {
        let removed = SERVERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.ctx.data_dir);
        if let Some(server) = removed {
            server.stop();
        }
        // The seats of a deleted instance are nobody's to get back.
        let _ = std::fs::remove_file(self.ctx.data_dir.join(seats::SeatsFile::NAME));
    }

    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        self.observe(HubEvent::Call(Observation::decided(setup, decision)));
    }

    fn call_event(&self, event: &CallEvent) {
        self.observe(HubEvent::Call(Observation::event(event)));
    }

    fn call_listed(&self, entry: &CallListItem) {
        self.observe(HubEvent::Call(Observation::listed(entry)));
    }

    fn presence_changed(&self, presence: &UserPresence) {
        self.observe(HubEvent::Presence(presence.clone()));
    }
}

impl std::fmt::Debug for ApiConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConnector")
            .field("instance", &self.ctx.instance)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

export_module! {
    module: ApiConnector,
    id: "api-connector",
    name: "API connector",
    description: "A WebSocket API for CRM plugins, desktop and chat apps: floating seats, call and presence events, click-to-dial",
    hooks: [call_event, call_details, presence],
    actions: [
        { name: "seats", usage: "", help: "Who holds which seat: user, kind, clients (name, version, address, since); free seats and pool size", handler: ApiConnector::seats },
        { name: "revoke", usage: "USER [REASON…]", help: "Close the user's connections (they are told the reason) and free their seats", handler: ApiConnector::revoke },
        { name: "key", usage: "", help: "The installation key clients sign in with, and the URL they connect to", handler: ApiConnector::key },
        { name: "key-file", usage: "", help: "A key file clients can import (JSON: format, version, url, key, instance)", handler: ApiConnector::key_file },
        { name: "rotate-key", usage: "", help: "Make a new installation key: connected clients stay signed in, new sign-ins need the new key", handler: ApiConnector::rotate_key },
    ],
}

#[cfg(test)]
pub(crate) mod testing_support {
    use std::path::{Path, PathBuf};

    /// A self-signed certificate for `localhost` and its key, as PEM files.
    pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let certificate = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&certificate, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (certificate, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_plugin_sdk::testing;

    #[test]
    fn the_schema_describes_the_documented_options() {
        testing::config_schema_naming::<Config>(&[
            "listen",
            "certificate",
            "private_key",
            "allow_plain",
            "seats",
            "fixed_users",
            "one_seat_per_user",
            "grace_seconds",
            "ping_seconds",
            "max_message_bytes",
            "commands_per_second",
            "max_clients",
            "max_clients_per_address",
        ]);
    }

    #[test]
    fn the_effective_configuration_fills_in_the_defaults() {
        let text = testing::configure::<ApiConnector>("listen = \"127.0.0.1:0\"").unwrap();
        for default in [
            "seats = 5",
            "one_seat_per_user = true",
            "grace_seconds = 30",
            "max_clients = 1000",
        ] {
            assert!(text.contains(default), "{default} missing from {text}");
        }
        let refused = testing::configure::<ApiConnector>("listen = \"nowhere\"").unwrap_err();
        assert_eq!(refused.field.as_str(), "listen");
    }

    #[test]
    fn a_host_without_a_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = testing::TestHost::default();
        let ctx = testing::context_with("crm", dir.path(), host);
        let error = ApiConnector::new(&ctx, Config::default()).err().unwrap();
        assert_eq!(error.field.as_str(), "(host)");
    }

    #[test]
    fn an_address_in_use_by_another_program_names_listen() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ctx = testing::context_in("crm", dir.path());
        let config = Config {
            listen: taken.local_addr().unwrap().to_string(),
            ..Config::default()
        };
        let error = ApiConnector::new(&ctx, config.clone()).err().unwrap();
        assert_eq!(error.field.as_str(), "listen");
        assert!(error.message.contains("in use"), "{}", error.message);
        // Held by this instance's own connector (the lock says so), it is fine.
        let mut lock = files::ListenerLock::try_take(dir.path()).unwrap().unwrap();
        lock.record(taken.local_addr().unwrap()).unwrap();
        assert!(ApiConnector::new(&ctx, config).is_ok());
    }

    #[test]
    fn the_key_actions_answer_without_a_running_connector() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = testing::context_in("crm", dir.path());
        let module = ApiConnector::new(&ctx, Config::default()).unwrap();
        let key = module.key(&[]).unwrap();
        assert_eq!(key["url"], "ws://127.0.0.1:8443/");
        assert_eq!(key["generation"], 0);
        let file = module.key_file(&[]).unwrap();
        assert_eq!(file["format"], "callhost-api-key");
        assert_eq!(file["version"], 1);
        assert_eq!(file["key"], key["key"]);
        assert_eq!(file["instance"], "crm");
        let rotated = module.rotate_key(&[]).unwrap();
        assert_eq!(rotated["generation"], 1);
        assert_ne!(rotated["key"], key["key"]);
        assert_eq!(module.key(&[]).unwrap()["key"], rotated["key"]);
    }
}
