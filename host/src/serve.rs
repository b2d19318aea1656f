//! `callhost serve`: the PBX on real SIP. Phones register and call through
//! the SIP front end (`callhost-sip`); every call goes through the same
//! engine and module hooks as `callhost simulate`.

use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{MediaFrameJob, MediaJob};
use anyhow::{Context as _, Result};
use callhost_media::relay::{Leg, TapFrame};
use callhost_pbx::directory::DirectoryIndex;
use callhost_pbx::engine::{Engine, Hooks, Presence};
use callhost_plugin_abi::TapRequest;
use callhost_sip::{CallControl, CallRecord, MediaSink, SipServer};
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::instances::{call_list_item, EngineSlot};
use crate::simulate::call_list_entries;
use crate::writer::CallListWriter;
use crate::Host;
use callhost_pbx::store::rfc3339_utc;

/// How long calls get to end (BYE, CANCEL) after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct HostControl {
    engine: EngineSlot,
    /// Calls in progress and the last ones, for the dashboard.
    live: Arc<crate::live::LiveState>,
    dispatcher: Arc<Dispatcher>,
    /// Call lists of ended calls, written off the call path.
    call_lists: CallListWriter,
}

/// How often a running server looks for changes by other processes.
const CHANGE_CHECK: Duration = Duration::from_secs(1);

/// Watches `callhost.db` for commits of other processes (`directory load`,
/// instance changes) and reloads the directory and the instance set when
/// one happened, on a thread of its own: calls only ever read the slot.
struct ChangeWatcher {
    host: Host,
    dispatcher: Arc<Dispatcher>,
    presence: Arc<dyn Presence>,
    /// SQLite's `data_version` at the last look.
    seen: i64,
}

impl ChangeWatcher {
    fn run(mut self, stop: CancellationToken) -> Host {
        while !stop.is_cancelled() {
            std::thread::sleep(CHANGE_CHECK);
            self.reload_if_changed();
        }
        self.host
    }

    fn reload_if_changed(&mut self) {
        let host = &self.host;
        self.dispatcher.record_faults(&host.db);
        let Ok(version) = data_version(host) else {
            return;
        };
        if version == self.seen {
            return;
        }
        self.seen = version;
        // Cheap when no instance changed (the host's generation).
        if let Err(error) = self.dispatcher.refresh(&host.data, &host.db, &host.loader) {
            tracing::error!("reloading instances: {error:#}");
        }
        // Most commits are the call lists' writer, and a change the
        // instances' services made here is in force already: the directory
        // is built again only when its generation is not the engine's.
        let presence = self.presence.clone();
        let config = host.config.engine();
        let reloaded = self
            .dispatcher
            .slots
            .reload_directory(&host.db.store, |index| {
                Engine::new(index, config).with_presence(presence)
            });
        match reloaded {
            Ok(true) => tracing::info!("directory reloaded"),
            Ok(false) => {}
            Err(error) => tracing::error!("{error:#}"),
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
        self.engine.load_full()
    }

    fn hooks(&self) -> Arc<dyn Hooks> {
        self.dispatcher.clone()
    }

    fn media_sink(&self, instance: &str) -> Option<Arc<dyn MediaSink>> {
        let instances = self.dispatcher.current();
        let live = instances.iter().find(|live| live.name == instance)?;
        let queue = live.media.get()?.clone();
        Some(Arc::new(InstanceMedia {
            queue,
            pending: std::sync::Mutex::default(),
        }))
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
        // Not looked at here (a disk access on the call's task): loading
        // the prompt, on a blocking thread, says if it is missing.
        // `instance/<file>` is one the administrator added to the instance.
        match relative.strip_prefix("instance") {
            Ok(own) if !own.as_os_str().is_empty() => Some(live.instance_assets_dir.join(own)),
            _ => Some(live.assets_dir.join(relative)),
        }
    }

    fn call_started(
        &self,
        request: &callhost_pbx::engine::CallRequest,
        outcome: &callhost_pbx::engine::CallOutcome,
    ) {
        self.live.started(request, outcome);
    }

    fn call_ended(&self, record: CallRecord) {
        self.live.ended(&record);
        let Some(engine) = self.engine.load_full() else {
            return;
        };
        let time = rfc3339_utc(std::time::SystemTime::now());
        let entries = call_list_entries(&engine, &record.request, &record.outcome, &time);
        // On the instances' event queues before the call's hangup event.
        for entry in &entries {
            self.dispatcher.call_listed(&call_list_item(entry));
        }
        self.call_lists.write(entries);
    }
}

/// Hears from the SIP server's live presence (registrations, calls) and
/// passes the user on to the presence thread: on a SIP task, so it only
/// queues.
struct PresenceRelay {
    dispatcher: std::sync::Weak<Dispatcher>,
}

impl callhost_sip::PresenceListener for PresenceRelay {
    fn presence_changed(&self, user: &str) {
        if let Some(dispatcher) = self.dispatcher.upgrade() {
            dispatcher.note_presence(vec![user.to_string()]);
        }
    }
}

/// An instance's media queue as one tapped call sees it. Every frame the
/// relay saw reaches the module or is counted in a gap: a frame that does
/// not fit is added to its leg's pending gap, which goes in ahead of the
/// next frame that fits, and in any case before the end.
struct InstanceMedia {
    queue: tokio::sync::mpsc::Sender<MediaJob>,
    /// Frames per leg dropped here (or by the relay) not yet reported.
    pending: std::sync::Mutex<[u64; 2]>,
}

impl InstanceMedia {
    fn pending(&self) -> std::sync::MutexGuard<'_, [u64; 2]> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the pending gap of `leg` over; false when the queue is full.
    fn flush_gap(&self, call_id: &Arc<str>, leg: Leg, pending: &mut [u64; 2]) -> bool {
        let frames = pending[leg.index()];
        if frames == 0 {
            return true;
        }
        let job = MediaJob::Gap {
            call_id: call_id.clone(),
            leg: tap_request(leg),
            frames: u32::try_from(frames).unwrap_or(u32::MAX),
        };
        if self.queue.try_send(job).is_err() {
            return false;
        }
        pending[leg.index()] = 0;
        true
    }
}

fn tap_request(leg: Leg) -> TapRequest {
    match leg {
        Leg::Caller => TapRequest::Caller,
        Leg::Callee => TapRequest::Callee,
    }
}

impl MediaSink for InstanceMedia {
    fn frame(&self, call_id: &Arc<str>, frame: &TapFrame) {
        let mut pending = self.pending();
        let job = MediaJob::Frame(MediaFrameJob {
            call_id: call_id.clone(),
            leg: tap_request(frame.leg),
            sequence: frame.sequence,
            timestamp: frame.timestamp,
            payload_type: frame.payload_type,
            marker: frame.marker,
            payload: frame.payload.clone(),
        });
        // A full queue drops the frame (the module is slow, the call is
        // not) and counts it.
        if !self.flush_gap(call_id, frame.leg, &mut pending) || self.queue.try_send(job).is_err() {
            pending[frame.leg.index()] += 1;
        }
    }

    fn gap(&self, _call_id: &Arc<str>, leg: Leg, frames: u64) {
        self.pending()[leg.index()] += frames;
    }

    fn end(&self, call_id: &Arc<str>) {
        // Waits for room, on a task: the gaps and the end are never lost,
        // and the relay never waits for them.
        let pending = std::mem::take(&mut *self.pending());
        let queue = self.queue.clone();
        let call_id = call_id.clone();
        tokio::spawn(async move {
            for leg in Leg::BOTH {
                let frames = pending[leg.index()];
                if frames > 0 {
                    let gap = MediaJob::Gap {
                        call_id: call_id.clone(),
                        leg: tap_request(leg),
                        frames: u32::try_from(frames).unwrap_or(u32::MAX),
                    };
                    if queue.send(gap).await.is_err() {
                        return;
                    }
                }
            }
            let _ = queue.send(MediaJob::End { call_id }).await;
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
        shutdown_signal().await;
        tracing::info!("stopping: ending calls");
        watcher.cancel();
    });
    let result = runtime.block_on(serve(host, shutdown, ready));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Resolves at SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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

/// Serves on `host` until `shutdown` is cancelled.
pub async fn serve(
    host: Host,
    shutdown: CancellationToken,
    ready: impl FnOnce(&str),
) -> Result<()> {
    let version = data_version(&host)?;
    // The directory and the generation it is at, in one snapshot.
    let (directory, directory_generation) = host.db.store.directory_snapshot()?.context(
        "no directory loaded: run `callhost directory load FILE` before `callhost serve`",
    )?;
    let server = SipServer::bind(host.config.sip.clone(), host.config.media.clone()).await?;
    let presence: Arc<dyn Presence> = server.live();
    let engine = Engine::new(
        Arc::new(DirectoryIndex::new(directory.clone())?),
        host.config.engine(),
    )
    .with_presence(presence.clone());
    let slot = EngineSlot::default();
    let dispatcher = Arc::new(Dispatcher::new(slot.clone(), host.config.hook_reserve()));
    {
        let slots = &dispatcher.slots;
        let mut at = slots.directory();
        slots.install(&mut at, Arc::new(engine), Some(directory_generation));
    }
    // Before any instance starts: their services place calls, look
    // callers up and hear of presence changes from the start.
    dispatcher.attach(tokio::runtime::Handle::current());
    dispatcher.slots.set_telephony(server.telephony());
    server.live().listen(Arc::new(PresenceRelay {
        dispatcher: Arc::downgrade(&dispatcher),
    }));
    dispatcher.refresh(&host.data, &host.db, &host.loader)?;

    let mut banner = format!(
        "callhost serve: SIP on {} (UDP{}){}, realm \"{}\"\n",
        server.local_addr(),
        if host.config.sip.tcp { " and TCP" } else { "" },
        server
            .tls_addr()
            .map(|address| format!(", TLS on {address}"))
            .unwrap_or_default(),
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
    let live = Arc::new(crate::live::LiveState::new(server.live()));
    // Bound before anyone is told the server is ready; its own runtime.
    let http = if host.config.http.enabled {
        let view: Arc<dyn crate::http::LiveView> = live.clone();
        let http = crate::http::HttpServer::start(&host, Some(view))?;
        banner.push_str(&format!("  web UI and HTTP API on {}\n", http.url()));
        Some(http)
    } else {
        None
    };
    let instances = dispatcher.current();
    banner.push_str(&format!("  {} active module instance(s)", instances.len()));
    for instance in instances.iter() {
        banner.push_str(&format!(" {}", instance.name));
    }
    ready(&banner);

    let call_lists = CallListWriter::start(
        callhost_pbx::store::Store::open(&host.data.database(), host.db.sealer())?,
        host.data.root(),
    )?;
    let control = Arc::new(HostControl {
        engine: slot.clone(),
        live,
        dispatcher: dispatcher.clone(),
        call_lists,
    });
    let watcher = ChangeWatcher {
        host,
        dispatcher: dispatcher.clone(),
        presence,
        seen: version,
    };
    let stop_watching = CancellationToken::new();
    let stop = stop_watching.clone();
    let watching = std::thread::Builder::new()
        .name("callhost-changes".into())
        .spawn(move || watcher.run(stop))?;
    let served = server
        .serve(control.clone(), shutdown, SHUTDOWN_GRACE)
        .await;
    stop_watching.cancel();
    if let Some(http) = http {
        tokio::task::spawn_blocking(move || http.stop()).await?;
    }
    let host = tokio::task::spawn_blocking(move || watching.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the change watcher failed"))?;
    served?;
    // Recordings are finalised here (checksums, signature, chain).
    dispatcher.flush_events(Duration::from_secs(10));
    if !control.call_lists.flush(Duration::from_secs(10)) {
        tracing::error!(
            entries = control.call_lists.backlog(),
            "call lists not written at shutdown"
        );
    }
    dispatcher.record_faults(&host.db);
    tracing::info!("stopped");
    Ok(())
}
