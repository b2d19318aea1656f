//! `callhost serve`: the PBX on real SIP. Phones register and call through
//! the SIP front end (`callhost-sip`); every call goes through the same
//! engine and module hooks as `callhost simulate`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use callhost_media::relay::{Leg, TapFrame};
use callhost_pbx::directory::DirectoryIndex;
use callhost_pbx::engine::{Engine, Hooks, Presence};
use callhost_plugin_abi::TapRequest;
use callhost_sip::{CallControl, CallRecord, MediaSink, SipServer};
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::instances::EngineSlot;
use crate::Host;

/// How long calls get to end (BYE, CANCEL) after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct HostControl {
    engine: EngineSlot,
    dispatcher: Arc<Dispatcher>,
    /// The database connection is not shareable; call records are rare.
    host: Mutex<Host>,
    /// The SIP server's registrations and calls, for every engine built.
    presence: Arc<dyn Presence>,
    /// SQLite's `data_version` when the engine and instances were loaded,
    /// and when it was last looked at: `directory load` or an instance
    /// change in another process reaches new calls within a second.
    seen: Mutex<(i64, std::time::Instant)>,
}

/// How often a running server looks for changes by other processes.
const CHANGE_CHECK: Duration = Duration::from_secs(1);

impl HostControl {
    /// Reloads the directory and the instance set when another process
    /// committed to `callhost.db` since the last look.
    fn reload_if_changed(&self) {
        let mut seen = self.seen.lock().expect("seen");
        if seen.1.elapsed() < CHANGE_CHECK {
            return;
        }
        seen.1 = std::time::Instant::now();
        let host = self.host.lock().expect("host");
        let Ok(version) = data_version(&host) else {
            return;
        };
        if version == seen.0 {
            return;
        }
        seen.0 = version;
        if let Err(error) = self.dispatcher.refresh(&host.data, &host.db, &host.loader) {
            tracing::error!("reloading instances: {error:#}");
        }
        match host.stored_directory() {
            Ok(Some(directory)) => match DirectoryIndex::new(directory) {
                Ok(index) => {
                    let engine = Engine::new(Arc::new(index), host.config.engine())
                        .with_presence(self.presence.clone());
                    self.engine.store(Some(Arc::new(engine)));
                    tracing::info!("directory reloaded");
                }
                Err(error) => tracing::error!(
                    "stored directory not usable, keeping the previous one: {error}"
                ),
            },
            Ok(None) => {}
            Err(error) => tracing::error!("reading the stored directory: {error:#}"),
        }
    }
}

/// Changes whenever another connection commits to `callhost.db`.
fn data_version(host: &Host) -> rusqlite::Result<i64> {
    host.db
        .store
        .conn()
        .query_row("PRAGMA data_version", [], |row| row.get(0))
}

impl CallControl for HostControl {
    fn engine(&self) -> Option<Arc<Engine>> {
        self.reload_if_changed();
        self.engine.load_full()
    }

    fn hooks(&self) -> Arc<dyn Hooks> {
        self.dispatcher.clone()
    }

    fn media_sink(&self, instance: &str) -> Option<Arc<dyn MediaSink>> {
        let instances = self.dispatcher.current();
        let live = instances.iter().find(|live| live.name == instance)?;
        let queue = live.media.get()?.clone();
        Some(Arc::new(InstanceMedia { queue }))
    }

    fn prompt_file(&self, instance: &str, asset: &str) -> Option<std::path::PathBuf> {
        let instances = self.dispatcher.current();
        let live = instances.iter().find(|live| live.name == instance)?;
        // Only files inside the module's own assets.
        let relative = std::path::Path::new(asset);
        if relative.is_absolute()
            || relative
                .components()
                .any(|part| !matches!(part, std::path::Component::Normal(_)))
        {
            tracing::warn!(
                instance,
                asset,
                "prompt path outside the module's assets refused"
            );
            return None;
        }
        let path = live.assets_dir.join(relative);
        path.is_file().then_some(path)
    }

    fn call_ended(&self, record: CallRecord) {
        let Some(engine) = self.engine.load_full() else {
            return;
        };
        let host = self.host.lock().expect("host");
        if let Err(error) =
            crate::simulate::record_call_lists(&host, &engine, &record.request, &record.outcome)
        {
            tracing::error!("writing call lists: {error:#}");
        }
    }
}

/// An instance's media queue as the relay sees it.
struct InstanceMedia {
    queue: std::sync::mpsc::SyncSender<crate::dispatch::MediaJob>,
}

impl MediaSink for InstanceMedia {
    fn frame(&self, call_id: &Arc<str>, frame: &TapFrame) {
        // A full queue drops the frame: the module is slow, the call is not.
        let _ = self.queue.try_send(crate::dispatch::MediaJob {
            call_id: call_id.clone(),
            leg: match frame.leg {
                Leg::Caller => TapRequest::Caller,
                Leg::Callee => TapRequest::Callee,
            },
            sequence: frame.sequence,
            timestamp: frame.timestamp,
            payload_type: frame.payload_type,
            marker: frame.marker,
            payload: frame.payload.clone(),
        });
    }
}

/// Runs until SIGTERM or SIGINT.
pub fn run(host: Host, ready: impl FnOnce(&str)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shutdown = CancellationToken::new();
    let watcher = shutdown.clone();
    runtime.spawn(async move {
        crate::api::shutdown_signal().await;
        tracing::info!("stopping: ending calls");
        watcher.cancel();
    });
    let result = runtime.block_on(serve(host, shutdown, ready));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Serves on `host` until `shutdown` is cancelled.
pub async fn serve(
    host: Host,
    shutdown: CancellationToken,
    ready: impl FnOnce(&str),
) -> Result<()> {
    let directory = host.stored_directory()?.context(
        "no directory loaded: run `callhost directory load FILE` before `callhost serve`",
    )?;
    let server = SipServer::bind(host.config.sip.clone(), host.config.media.clone()).await?;
    let presence: Arc<dyn Presence> = server.live();
    let version = data_version(&host)?;
    let engine = Engine::new(
        Arc::new(DirectoryIndex::new(directory.clone())?),
        host.config.engine(),
    )
    .with_presence(presence.clone());
    let slot = EngineSlot::default();
    slot.store(Some(Arc::new(engine)));
    let dispatcher = Arc::new(Dispatcher::new(slot.clone(), host.config.hook_reserve()));
    dispatcher.refresh(&host.data, &host.db, &host.loader)?;

    let mut banner = format!(
        "callhost serve: SIP on {} (UDP{}), realm \"{}\"\n",
        server.local_addr(),
        if host.config.sip.tcp { " and TCP" } else { "" },
        callhost_pbx::directory::SIP_REALM
    );
    for user in &directory.users {
        banner.push_str(&format!(
            "  user {} ({}): number {}\n",
            user.id,
            user.name,
            user.primary_number()
        ));
    }
    let instances = dispatcher.current();
    banner.push_str(&format!("  {} active module instance(s)", instances.len()));
    for instance in instances.iter() {
        banner.push_str(&format!(" {}", instance.name));
    }
    ready(&banner);

    let control = Arc::new(HostControl {
        engine: slot,
        dispatcher: dispatcher.clone(),
        host: Mutex::new(host),
        presence,
        seen: Mutex::new((version, std::time::Instant::now())),
    });
    server
        .serve(control.clone(), shutdown, SHUTDOWN_GRACE)
        .await?;
    dispatcher.flush_events(Duration::from_secs(2));
    let host = control.host.lock().expect("host");
    dispatcher.record_faults(&host.db);
    tracing::info!("stopped");
    Ok(())
}
