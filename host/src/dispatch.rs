//! Hook dispatch: runs the active instances' hooks for the call engine.
//!
//! - A hook's synchronous part runs on a blocking thread, or, for a module
//!   that declared it quick (`Hooks::QUICK_SETUP`: it only computes), right
//!   on the call's thread, one call at a time per instance. A quick hook
//!   that takes longer than [`QUICK_LIMIT`] [`QUICK_STRIKES`] times in a
//!   row is moved to the thread path for good; one that blocks for
//!   [`INLINE_STALL`] is faulted by a watchdog (it still holds that one call
//!   thread). Its future is polled once at once: a ready answer needs no
//!   timer. Any other is awaited under the call's deadline, so neither a
//!   module that blocks on its thread nor one that never answers can hold
//!   a call: at the deadline the call goes on without that instance's
//!   opinion.
//! - A panic or a missed deadline marks the instance faulted (in memory at
//!   once, in the database and its log right after) and it is skipped until
//!   an administrator activates it again.
//! - Each instance still to run keeps a small reserve of the budget
//!   (`calls.hook_reserve_ms`), so a hanging instance cannot starve the
//!   ones after it.
//! - The instance set is an `ArcSwap`: a reload (module upgrade, new
//!   configuration) swaps in new instances for new calls while calls in
//!   progress finish on the set they started with. Retired libraries stop
//!   their runtime when the last call using them ends.
//! - Events and observations (`call_event`, `call_decided`, `call_listed`,
//!   `presence_changed`) share each instance's one event thread and
//!   bounded queue, so they reach it in the order they happened; a full
//!   queue drops (and counts), a delivery stuck for [`EVENT_LIMIT`] faults.
//!   Presence changes are computed on a thread of their own (the SIP
//!   tasks that report them only queue a user id).
//! - Caller lookups (`HostServices::lookup_caller`) run the `call_setup`
//!   of the instances with the lookup hook through the same deadline and
//!   fault rules as a call's hop ([`Dispatcher::lookup`]).

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, mpsc, Arc, Mutex},
    task::Poll,
    time::Instant,
};

use abi_stable::std_types::{RResult, RSlice, RStr};
use anyhow::Result;
use arc_swap::ArcSwap;
use callhost_pbx::engine::{HookDecision, Hooks};
use callhost_plugin_abi::{
    CallEvent, CallListItem, CallSetup, Decision, Hooks as HookSet, LogLevel, MediaFrame,
    ModuleError, ModuleErrorKind, TapRequest, UserPresence,
};
use futures::FutureExt as _;

use crate::{
    db::{Db, InstanceRow},
    instances::{
        live_instance, user_presence, EngineSlot, HostSlots, Instances, LiveInstance, ModuleLibrary,
    },
    loader::Loader,
    paths::DataDir,
};

/// Events waiting for delivery; beyond this they are dropped (and logged),
/// never allowed to slow a call.
const EVENT_QUEUE: usize = 4096;

/// A fault found on a live instance, for the database.
struct FaultReport {
    name: String,
    config: String,
    library: String,
    reason: String,
}

/// How long a module may take to create, configure and activate an instance.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds and activates an instance on a thread of its own, so a module
/// that hangs there cannot stop the host (the thread is abandoned).
fn start_instance(
    data: &DataDir,
    sealer: &Arc<callhost_seal::Sealer>,
    library: ModuleLibrary,
    row: &InstanceRow,
    slots: &HostSlots,
) -> Result<LiveInstance> {
    let (done, wait) = mpsc::channel();
    let (data, sealer, row, slots) = (data.clone(), sealer.clone(), row.clone(), slots.clone());
    std::thread::Builder::new()
        .name("callhost-start".into())
        .spawn(move || {
            let started = live_instance(&data, &sealer, &library, &row, &row.config, &slots)
                .and_then(|live| match live.instance.activate() {
                    RResult::ROk(()) => Ok(live),
                    RResult::RErr(error) => {
                        Err(anyhow::anyhow!("activation failed: {}", error.message))
                    }
                });
            let _ = done.send(started);
        })?;
    match wait.recv_timeout(START_LIMIT) {
        Ok(started) => started,
        Err(_) => Err(anyhow::anyhow!(
            "the module did not create, configure and activate the instance within {} s",
            START_LIMIT.as_secs()
        )),
    }
}

/// Media frames waiting for an instance; beyond this they are dropped,
/// counted, and reported to the module as gaps (`media_gap`). At 50
/// frames/s per leg this holds a third of a second of 500 two-leg calls.
pub const MEDIA_QUEUE: usize = 16_384;

/// Work for an instance's media thread, in the order it happened per call.
pub enum MediaJob {
    Frame(MediaFrameJob),
    /// Frames of `leg` dropped on the way (a queue was full).
    Gap {
        call_id: Arc<str>,
        leg: TapRequest,
        frames: u32,
    },
    /// The call's media is over: nothing of it follows.
    End {
        call_id: Arc<str>,
    },
    /// Answered once everything queued before it was delivered.
    Flush(std::sync::mpsc::Sender<()>),
}

/// One tapped frame on its way to an instance's media thread.
pub struct MediaFrameJob {
    pub call_id: Arc<str>,
    pub leg: TapRequest,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload: bytes::Bytes,
}

/// Gives `live` its own media thread: frames reach the module in order,
/// and a slow module only loses its own frames.
fn start_media_worker(live: &Arc<LiveInstance>) {
    if !live.hooks.contains(HookSet::MEDIA) {
        return;
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<MediaJob>(MEDIA_QUEUE);
    let weak = Arc::downgrade(live);
    let spawned = std::thread::Builder::new()
        .name(format!("callhost-media-{}", live.name))
        .spawn(move || {
            while let Some(job) = receiver.blocking_recv() {
                let Some(live) = weak.upgrade() else { break };
                if live.is_faulted() {
                    continue;
                }
                match &job {
                    MediaJob::Frame(frame) => live.instance.media(&MediaFrame {
                        call_id: RStr::from_str(&frame.call_id),
                        leg: frame.leg,
                        sequence: frame.sequence,
                        timestamp: frame.timestamp,
                        payload_type: frame.payload_type,
                        marker: frame.marker,
                        payload: RSlice::from_slice(&frame.payload),
                    }),
                    MediaJob::Gap {
                        call_id,
                        leg,
                        frames,
                    } => live
                        .instance
                        .media_gap(RStr::from_str(call_id), *leg, *frames),
                    MediaJob::End { call_id } => live.instance.media_end(RStr::from_str(call_id)),
                    MediaJob::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    match spawned {
        Ok(_) => {
            let _ = live.media.set(sender);
        }
        Err(error) => tracing::error!(instance = %live.name, "cannot start media worker: {error}"),
    }
}

/// Work for an instance's event worker, in the order it happened.
pub enum EventJob {
    Deliver(Box<CallEvent>),
    /// `call_decided`: a hop's setup and its merged decision.
    Decided(Box<(CallSetup, Decision)>),
    /// `call_listed`: a call-list entry an ended call made.
    Listed(Box<CallListItem>),
    /// `presence_changed`: a user's presence now.
    Presence(Box<UserPresence>),
    /// Answered once everything queued before it was delivered.
    Flush(mpsc::Sender<()>),
}

/// The hooks delivered by an instance's event worker.
const EVENT_HOOKS: [HookSet; 3] = [
    HookSet::CALL_EVENT,
    HookSet::CALL_DETAILS,
    HookSet::PRESENCE,
];

/// Presence notes waiting for the presence thread; beyond this they are
/// dropped (and counted), never allowed to hold a SIP task.
const PRESENCE_QUEUE: usize = 4096;

/// An event delivery (`call_event`, `call_decided`, `call_listed`,
/// `presence_changed`) that has not returned after this long faults its
/// instance: its events pile up, and the module is evidently stuck.
const EVENT_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Gives `live` its own event worker: a module that blocks in `call_event`
/// delays only its own events. The worker holds the instance weakly and
/// ends when the instance is dropped (its queue's sender goes with it).
fn start_event_worker(live: &Arc<LiveInstance>) {
    if !EVENT_HOOKS.iter().any(|hook| live.hooks.contains(*hook)) {
        return;
    }
    let (sender, receiver) = mpsc::sync_channel::<EventJob>(EVENT_QUEUE);
    let weak = Arc::downgrade(live);
    let spawned = std::thread::Builder::new()
        .name(format!("callhost-events-{}", live.name))
        .spawn(move || {
            for job in receiver {
                if let EventJob::Flush(done) = job {
                    let _ = done.send(());
                    continue;
                }
                let Some(live) = weak.upgrade() else { break };
                if live.is_faulted() {
                    continue;
                }
                // Every delivery must return at once; the stall watchdog
                // (in `deliver`) times them all.
                let hook = match &job {
                    EventJob::Deliver(_) => "call_event",
                    EventJob::Decided(_) => "call_decided",
                    EventJob::Listed(_) => "call_listed",
                    EventJob::Presence(_) => "presence_changed",
                    EventJob::Flush(_) => "flush",
                };
                live.event_started(Some((Instant::now(), hook)));
                match &job {
                    EventJob::Deliver(event) => live.instance.call_event(event),
                    EventJob::Decided(decided) => {
                        live.instance.call_decided(&decided.0, &decided.1)
                    }
                    EventJob::Listed(entry) => live.instance.call_listed(entry),
                    EventJob::Presence(presence) => live.instance.presence_changed(presence),
                    EventJob::Flush(_) => {}
                }
                live.event_started(None);
            }
        });
    match spawned {
        Ok(_) => {
            let _ = live.events.set(sender);
        }
        Err(error) => tracing::error!(instance = %live.name, "cannot start event worker: {error}"),
    }
}

pub struct Dispatcher {
    instances: Arc<ArcSwap<Vec<Arc<LiveInstance>>>>,
    generation: Mutex<Option<i64>>,
    faults: mpsc::Sender<FaultReport>,
    fault_receiver: Mutex<mpsc::Receiver<FaultReport>>,
    persist_faults: bool,
    /// Budget kept back for each instance still to run.
    hook_reserve: std::time::Duration,
    pub engine: EngineSlot,
    /// What the instances' services share (the engine above among them).
    pub slots: HostSlots,
    /// Users whose presence changed, for the presence thread (set by
    /// [`Dispatcher::attach`]).
    presence: std::sync::OnceLock<mpsc::SyncSender<Vec<String>>>,
    /// Presence notes the full queue did not take.
    presence_dropped: std::sync::atomic::AtomicU64,
}

impl Dispatcher {
    pub fn new(engine: EngineSlot, hook_reserve: std::time::Duration) -> Dispatcher {
        let (faults, fault_receiver) = mpsc::channel();
        let instances = Arc::new(ArcSwap::from_pointee(Vec::new()));
        start_inline_watchdog(Arc::downgrade(&instances), faults.clone());
        Dispatcher {
            instances,
            generation: Mutex::new(None),
            faults,
            fault_receiver: Mutex::new(fault_receiver),
            hook_reserve,
            persist_faults: true,
            slots: HostSlots::on(engine.clone()),
            engine,
            presence: std::sync::OnceLock::new(),
            presence_dropped: Default::default(),
        }
    }

    /// Makes this dispatcher the process's: the instances' services run
    /// caller lookups through it on `runtime`, and presence changes reach
    /// its instances through a thread of its own. Call before the first
    /// [`Dispatcher::refresh`].
    pub fn attach(self: &Arc<Self>, runtime: tokio::runtime::Handle) {
        self.slots.attach(Arc::downgrade(self), runtime);
        let (sender, receiver) = mpsc::sync_channel::<Vec<String>>(PRESENCE_QUEUE);
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("callhost-presence".into())
            .spawn(move || {
                for users in receiver {
                    let Some(dispatcher) = weak.upgrade() else {
                        break;
                    };
                    // The presence as it is when computed: notes are taken
                    // in order, so the last one delivered is the latest.
                    let Some(engine) = dispatcher.engine.load_full() else {
                        continue;
                    };
                    for user in users {
                        if let Some(presence) = user_presence(&engine, &user) {
                            dispatcher.presence_changed(&presence);
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => {
                let _ = self.presence.set(sender);
            }
            Err(error) => tracing::error!("cannot start the presence thread: {error}"),
        }
    }

    /// The call-setup budget of the engine in force.
    fn budget(&self) -> std::time::Duration {
        self.engine
            .load()
            .as_ref()
            .map_or(std::time::Duration::from_millis(700), |engine| {
                engine.config().setup_budget
            })
    }

    /// Whether an instance listens to presence changes.
    pub fn wants_presence(&self) -> bool {
        self.current().iter().any(|live| {
            live.hooks.contains(HookSet::PRESENCE)
                && live.events.get().is_some()
                && !live.is_faulted()
        })
    }

    /// `users`' presence changed: their presence now reaches the instances
    /// with the presence hook, computed on the presence thread. Returns at
    /// once (a SIP task calls it); a full queue drops the note and counts.
    pub fn note_presence(&self, users: Vec<String>) {
        if users.is_empty() || !self.wants_presence() {
            return;
        }
        let Some(presence) = self.presence.get() else {
            return;
        };
        if let Err(mpsc::TrySendError::Full(users)) = presence.try_send(users) {
            let dropped = self
                .presence_dropped
                .fetch_add(users.len() as u64, Ordering::Relaxed)
                + users.len() as u64;
            if dropped <= 10 || dropped % 1000 < users.len() as u64 {
                tracing::warn!(dropped, "presence queue full: changes of {users:?} dropped");
            }
        }
    }

    /// Hands `presence` to every instance with the presence hook.
    pub fn presence_changed(&self, presence: &UserPresence) {
        self.deliver(
            HookSet::PRESENCE,
            || EventJob::Presence(Box::new(presence.clone())),
            || format!("presence change of {}", presence.user),
        );
    }

    /// Hands a call-list entry of an ended call to every instance with the
    /// call-details hook.
    pub fn call_listed(&self, entry: &CallListItem) {
        self.deliver(
            HookSet::CALL_DETAILS,
            || EventJob::Listed(Box::new(entry.clone())),
            || format!("call-list entry of call {}", entry.call_id),
        );
    }

    /// Queues `job` for every live instance with `hook`; a full queue drops
    /// it (counted, `what` in the instance's log), one stuck in a delivery
    /// is faulted. Never waits.
    fn deliver(&self, hook: HookSet, job: impl Fn() -> EventJob, what: impl Fn() -> String) {
        for live in self.current().iter() {
            if !live.hooks.contains(hook) {
                continue;
            }
            let Some(events) = live.events.get() else {
                continue;
            };
            if live.is_faulted() {
                continue;
            }
            if let Some((_, stuck)) = live
                .event_running_for()
                .filter(|(busy, _)| *busy > EVENT_LIMIT)
            {
                self.fault(
                    live,
                    format!("{stuck} did not return within {} s", EVENT_LIMIT.as_secs()),
                );
                continue;
            }
            if events.try_send(job()).is_err() {
                live.event_dropped(&what);
            }
        }
    }

    /// What the active instances with the lookup hook decide for `setup`
    /// (a call that never rings), in the administrator's order, under the
    /// call-setup budget and its fault rules: their merged decision.
    pub async fn lookup(&self, mut setup: CallSetup) -> Decision {
        let instances = self.current();
        let deciding: Vec<&Arc<LiveInstance>> = instances
            .iter()
            .filter(|live| {
                live.hooks
                    .contains(HookSet::CALL_SETUP.union(HookSet::LOOKUP))
                    && !live.is_faulted()
            })
            .collect();
        let budget = self.budget();
        self.decide(&deciding, &mut setup, Instant::now() + budget, budget)
            .await;
        setup.prior
    }

    pub fn current(&self) -> Arc<Vec<Arc<LiveInstance>>> {
        self.instances.load_full()
    }

    /// Reloads the instance set if the database changed since the last
    /// look; also records faults found since. Cheap when nothing changed.
    pub fn refresh(&self, data: &DataDir, db: &Db, loader: &Loader) -> Result<()> {
        self.record_faults(db);
        // Read once, before the rows: a change committed while we load is
        // seen next time rather than mistaken for loaded.
        let generation = db.generation()?;
        let mut seen = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == Some(generation) {
            return Ok(());
        }
        let previous = self.current();
        let instances = Instances::new(data, db, loader);
        let mut next = Vec::new();
        for row in db.instances()? {
            if let (true, Some(error)) = (row.active, &row.config_error) {
                tracing::error!(instance = %row.name, "not started: {error}");
            }
            if !row.active || row.fault.is_some() {
                continue;
            }
            let Some(module) = db.module(&row.module_id)? else {
                continue;
            };
            // Unchanged instances keep their live object (and its state).
            let reusable = previous.iter().find(|live| {
                live.name == row.name
                    && live.config == row.config
                    && live.stored_library == module.library_path
            });
            if let Some(live) = reusable {
                if let Ok(level) = crate::instance_log::parse_level(&row.log_level) {
                    live.log.set_level(level);
                }
                next.push(live.clone());
                continue;
            }
            let started = instances.library_of(&row.module_id).and_then(|library| {
                start_instance(data, db.store.sealer(), library, &row, &self.slots)
            });
            match started {
                Ok(live) => {
                    live.log.write(
                        LogLevel::Info,
                        "callhost",
                        &format!("running on {} {}", live.module_id, live.version),
                    );
                    let live = Arc::new(live);
                    start_event_worker(&live);
                    start_media_worker(&live);
                    next.push(live);
                }
                Err(error) => {
                    let reason = format!("{error:#}");
                    tracing::error!(instance = %row.name, "cannot start instance: {reason}");
                    crate::instance_log::InstanceLog::new(
                        data.instance_log(&row.name),
                        LogLevel::Error,
                    )
                    .write(
                        LogLevel::Error,
                        "callhost",
                        &format!("cannot start: {reason}"),
                    );
                    if self.persist_faults {
                        db.set_fault(&row.name, &reason)?;
                    }
                }
            }
        }
        // Instances no longer in the set (deactivated, deleted, replaced)
        // hear so, off this thread: a module that hangs there holds nothing.
        // Calls in progress still hold them until they end.
        for old in previous.iter() {
            if !next.iter().any(|live| Arc::ptr_eq(live, old)) {
                let old = old.clone();
                std::thread::spawn(move || {
                    let _ = old.instance.deactivate();
                });
            }
        }
        self.instances.store(Arc::new(next));
        *seen = Some(generation);
        Ok(())
    }

    /// Faults found in this process are written to the database unless the
    /// run is a what-if (an inline directory): then they stay in memory.
    pub fn set_persist_faults(&mut self, persist: bool) {
        self.persist_faults = persist;
    }

    /// Waits (at most `timeout`) until queued events are delivered, so a
    /// process that ends does not lose the last calls' events.
    pub fn flush_events(&self, timeout: std::time::Duration) {
        let until = Instant::now() + timeout;
        let waits: Vec<_> = self
            .current()
            .iter()
            .filter_map(|live| {
                let (done, wait) = mpsc::channel();
                let sent = live.events.get()?.try_send(EventJob::Flush(done)).is_ok();
                sent.then_some(wait)
            })
            .collect();
        // And the media threads (a call's end reaches its recorder).
        let media_waits: Vec<_> = self
            .current()
            .iter()
            .filter_map(|live| {
                let (done, wait) = mpsc::channel();
                let sent = live.media.get()?.try_send(MediaJob::Flush(done)).is_ok();
                sent.then_some(wait)
            })
            .collect();
        for wait in waits.into_iter().chain(media_waits) {
            let _ = wait.recv_timeout(until.saturating_duration_since(Instant::now()));
        }
        // Then the modules' own background work (history, contacts,
        // recordings being finalised).
        for live in self.current().iter().filter(|live| !live.is_faulted()) {
            let left = until.saturating_duration_since(Instant::now());
            let instance = &live.instance;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                instance.settle(left.as_millis() as u64)
            }));
        }
    }

    /// Writes faults found during calls to the database.
    pub fn record_faults(&self, db: &Db) {
        let receiver = self
            .fault_receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while let Ok(fault) = receiver.try_recv() {
            if !self.persist_faults {
                continue;
            }
            let recorded =
                db.set_fault_if_current(&fault.name, &fault.config, &fault.library, &fault.reason);
            if let Err(error) = recorded {
                tracing::error!(instance = %fault.name, "cannot record fault: {error:#}");
            }
        }
    }

    fn fault(&self, live: &LiveInstance, reason: String) {
        mark_faulted(live, &self.faults, reason);
    }
}

/// Faults `live` once: in memory at once, in its log, and as a report for
/// the database.
fn mark_faulted(live: &LiveInstance, faults: &mpsc::Sender<FaultReport>, reason: String) {
    if live.faulted.swap(true, Ordering::Relaxed) {
        return;
    }
    live.log
        .write(LogLevel::Error, "callhost", &format!("faulted: {reason}"));
    tracing::error!(instance = %live.name, "instance faulted: {reason}");
    let _ = faults.send(FaultReport {
        name: live.name.clone(),
        config: live.config.clone(),
        library: live.stored_library.clone(),
        reason,
    });
}

/// A quick `call_setup` slower than this runs on a thread of its own from
/// then on: it evidently does more than compute.
pub const QUICK_LIMIT: std::time::Duration = std::time::Duration::from_millis(5);
/// Slow inline calls in a row that move a quick hook to the thread path:
/// one can be the machine's fault (preemption on a loaded host), two in a
/// row are the module's.
pub const QUICK_STRIKES: u32 = 2;
/// An inline `call_setup` still running after this faults its instance.
pub const INLINE_STALL: std::time::Duration = std::time::Duration::from_secs(1);

/// Watches inline `call_setup`s of the instance set behind `instances`
/// (until the dispatcher is dropped) and faults an instance whose inline
/// call has not returned within [`INLINE_STALL`].
fn start_inline_watchdog(
    instances: std::sync::Weak<ArcSwap<Vec<Arc<LiveInstance>>>>,
    faults: mpsc::Sender<FaultReport>,
) {
    let spawned = std::thread::Builder::new()
        .name("callhost-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let Some(instances) = instances.upgrade() else {
                return;
            };
            for live in instances.load().iter() {
                if live
                    .inline_running_for()
                    .is_some_and(|running| running > INLINE_STALL)
                {
                    live.demote();
                    mark_faulted(
                        live,
                        &faults,
                        format!(
                            "its quick call_setup blocked a call thread for more than {} s",
                            INLINE_STALL.as_secs()
                        ),
                    );
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!("cannot start the hook watchdog: {error}");
    }
}

/// Runs one instance's setup hook under the deadline.
async fn run_hook(
    live: &Arc<LiveInstance>,
    setup: &CallSetup,
    started: Instant,
    deadline: Instant,
) -> Result<Decision, HookError> {
    let remaining = deadline.saturating_duration_since(started);
    if remaining.is_zero() {
        return Err(HookError::NoTime);
    }
    let missed = || HookError::Deadline(remaining.as_millis() as u64);
    let future = if live.begin_inline(started) {
        // Declared quick: no thread hop. The SDK turns a panic in the
        // module into an error; this guards against one that does not.
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            live.instance.call_setup(setup)
        }));
        let took = live.inline_done();
        if live.inline_slow(took > QUICK_LIMIT) >= QUICK_STRIKES {
            live.demote();
            let message = format!(
                "its quick call_setup took over {} ms on a call thread {QUICK_STRIKES} times in a row (last {} ms): it runs on a thread of its own from now on",
                QUICK_LIMIT.as_millis(),
                took.as_millis()
            );
            live.log.write(LogLevel::Warn, "callhost", &message);
            tracing::warn!(instance = %live.name, "{message}");
        }
        called.map_err(|_| HookError::Panicked("panicked in call_setup".into()))?
    } else {
        // Off the engine's threads: a module that blocks there holds
        // only that thread.
        let (live, setup) = (live.clone(), setup.clone());
        let thread = tokio::task::spawn_blocking(move || live.instance.call_setup(&setup));
        // Boxed, like the timer below: the slow paths' state stays out of
        // the future every call allocates.
        match Box::pin(tokio::time::timeout_at(deadline.into(), thread)).await {
            Ok(Ok(future)) => future,
            Ok(Err(_)) => return Err(HookError::Failed("the hook's thread failed".into())),
            Err(_) => return Err(missed()),
        }
    };
    // A panic re-raised while polling the module's future stays here.
    let mut answer = std::panic::AssertUnwindSafe(future).catch_unwind();
    // Most answers are ready at the first poll (a quick module answers from
    // memory); only one that is not needs a timer for the deadline.
    let first = std::future::poll_fn(|context| Poll::Ready(Pin::new(&mut answer).poll(context)));
    let polled = match first.await {
        Poll::Ready(polled) => polled,
        Poll::Pending => match Box::pin(tokio::time::timeout_at(deadline.into(), answer)).await {
            Ok(polled) => polled,
            Err(_) => return Err(missed()),
        },
    };
    match polled {
        Ok(answer) => answer.into_result().map_err(HookError::from),
        Err(_) => Err(HookError::Panicked(
            "panicked while its future was polled".into(),
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HookError {
    NoTime,
    Deadline(u64),
    Panicked(String),
    Failed(String),
}

/// A module's own error, classified by its kind (never by its text).
impl From<ModuleError> for HookError {
    fn from(error: ModuleError) -> HookError {
        let message = error.message.into_string();
        match error.kind {
            ModuleErrorKind::Panicked => HookError::Panicked(message),
            ModuleErrorKind::Failed => HookError::Failed(message),
        }
    }
}

impl Dispatcher {
    /// Runs the setup hook of each of `deciding`, in order, for `hop`
    /// under `deadline`; each sees the decisions of the ones before it in
    /// `hop.prior`, which is left merged.
    async fn decide(
        &self,
        deciding: &[&Arc<LiveInstance>],
        hop: &mut CallSetup,
        deadline: Instant,
        budget: std::time::Duration,
    ) -> Vec<HookDecision> {
        let mut made = Vec::with_capacity(deciding.len());
        // One clock reading per hook: each one's end is the next one's start.
        let mut started = Instant::now();
        for (index, live) in deciding.iter().enumerate() {
            // Keep a slice for every instance after this one, so one that
            // hangs cannot silence the others.
            // The reserve never takes more than half of what is left.
            let after = (deciding.len() - index - 1) as u32;
            let left = deadline.saturating_duration_since(started);
            let reserve = (self.hook_reserve * after).min(left / 2);
            let own_deadline = deadline.checked_sub(reserve).unwrap_or(deadline);
            let allotted = own_deadline.saturating_duration_since(started);
            let result = run_hook(live, hop, started, own_deadline).await;
            let finished = Instant::now();
            let elapsed = finished.saturating_duration_since(started);
            started = finished;
            let (decision, error) = match result {
                Ok(decision) => (decision, None),
                Err(HookError::NoTime) => (
                    Decision::default(),
                    Some("skipped: the call-setup budget was used up".to_string()),
                ),
                // Only a hook that had a fair share of the budget is
                // faulted; one squeezed by earlier hops is just late.
                Err(HookError::Deadline(ms)) if allotted >= budget / 2 => {
                    let reason = format!(
                        "missed the call-setup deadline (it had {ms} ms) on call {}",
                        hop.call_id
                    );
                    self.fault(live.as_ref(), reason.clone());
                    (Decision::default(), Some(reason))
                }
                Err(HookError::Deadline(ms)) => (
                    Decision::default(),
                    Some(format!("late: only {ms} ms of the budget were left for it")),
                ),
                Err(HookError::Panicked(message)) => {
                    let reason = format!("call setup {message} (call {})", hop.call_id);
                    self.fault(live.as_ref(), reason.clone());
                    (Decision::default(), Some(reason))
                }
                Err(HookError::Failed(message)) => {
                    live.log.write(
                        LogLevel::Warn,
                        "callhost",
                        &format!("call setup failed: {message}"),
                    );
                    (Decision::default(), Some(message))
                }
            };
            hop.prior.merge(&decision);
            made.push(HookDecision {
                source: live.source.clone(),
                decision,
                error,
                elapsed,
            });
        }
        made
    }
}

impl Hooks for Dispatcher {
    fn call_setup<'a>(
        &'a self,
        setup: &'a mut CallSetup,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Vec<HookDecision>> + Send + 'a>> {
        let instances = self.current();
        let budget = self.budget();
        Box::pin(async move {
            // One setup for every instance; each sees the decisions of the
            // ones before it in `prior`.
            let deciding: Vec<&Arc<LiveInstance>> = instances
                .iter()
                .filter(|live| live.hooks.contains(HookSet::CALL_SETUP) && !live.is_faulted())
                .collect();
            self.decide(&deciding, setup, deadline, budget).await
        })
    }

    fn wants_events(&self) -> bool {
        self.current()
            .iter()
            .any(|live| live.hooks.contains(HookSet::CALL_EVENT) && live.events.get().is_some())
    }

    fn call_event(&self, event: &CallEvent) {
        self.deliver(
            HookSet::CALL_EVENT,
            || EventJob::Deliver(Box::new(event.clone())),
            || format!("{} event of call {}", event.kind.name(), event.call_id),
        );
    }

    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        self.deliver(
            HookSet::CALL_DETAILS,
            || EventJob::Decided(Box::new((setup.clone(), decision.clone()))),
            || format!("decision of call {}", setup.call_id),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_error_is_a_panic_by_its_kind_not_its_text() {
        assert_eq!(
            HookError::from(ModuleError::panicked("boom")),
            HookError::Panicked("boom".into())
        );
        // A module may well report a failure in words that start so.
        assert_eq!(
            HookError::from(ModuleError::new("panicked dependency: upstream is down")),
            HookError::Failed("panicked dependency: upstream is down".into())
        );
    }
}
