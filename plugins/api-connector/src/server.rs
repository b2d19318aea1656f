//! The connector of one instance: the listener, its connections, the
//! seats and the hub, for as long as the instance is active in this
//! process.
//!
//! A server outlives reconfigurations: the instance value that a new
//! configuration builds adopts the running server ([`Server::adopt`]),
//! which then rebinds only if `listen` changed and takes the new TLS
//! configuration for new connections, so signed-in clients stay. It stops
//! when its owner is deactivated or the instance uninstalled.
//!
//! Which process serves an instance is decided by the listener lock in the
//! instance's directory: a server binds only once it holds it, and lets it
//! go only after it wrote the seats file for the next one. So a new
//! library version (a module upgrade, whose instance starts before the
//! old one stops) waits for the old server, then restores its seats.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use callhost_plugin_sdk::{tracing, Context, UserPresence};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

use crate::config::Settings;
use crate::files::ListenerLock;
use crate::hub::{Farewell, Hub, HubEvent, Outbox};
use crate::key::KeyMaterial;
use crate::limits::{ConnectionCounter, LogThrottle, SignInGuard};
use crate::protocol::{Ending, ErrorCode, Refusal};
use crate::seats::{SeatChange, SeatTable, SeatsFile};
use crate::time::rfc3339;

/// TLS and WebSocket handshake together, from the TCP accept.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// From the upgrade to the `hello`.
pub const HELLO_TIME: Duration = Duration::from_secs(10);
/// How often the seats file is rewritten while seats are in use, so that
/// after a crash its age tells whether its holders may come back.
pub const SEATS_HEARTBEAT: Duration = Duration::from_secs(10);
/// Events waiting for the hub at most (the hooks never wait).
const HUB_QUEUE: usize = 16_384;
/// Host calls that may block, at once, for all clients.
const BLOCKING_HOST_CALLS: usize = 16;
/// How long a host call may take before the client is answered `timeout`.
pub const HOST_CALL_TIME: Duration = Duration::from_secs(15);

pub struct Server {
    pub(crate) data_dir: PathBuf,
    pub(crate) instance: String,
    /// The instance value that runs it now (see `ApiConnector::activate`).
    owner: AtomicU64,
    ctx: RwLock<Context>,
    settings: watch::Sender<Arc<Settings>>,
    pub(crate) key: KeyMaterial,
    pub(crate) seats: Mutex<SeatTable>,
    seats_changed: Notify,
    pub(crate) hub: Mutex<Hub>,
    hub_events: mpsc::Sender<HubEvent>,
    hub_receiver: Mutex<Option<mpsc::Receiver<HubEvent>>>,
    hub_dropped: AtomicU64,
    hub_warned: Mutex<Option<Instant>>,
    sign_ins: Arc<Mutex<SignInGuard>>,
    /// A sign-in's check ended: one waiting for its source's checks in
    /// progress may be admitted now.
    sign_in_checked: Notify,
    /// `too_many_failures` refusals: anyone can cause them at any rate.
    refused_sign_ins: Mutex<LogThrottle>,
    connections: Mutex<ConnectionCounter>,
    refused_connections: AtomicU64,
    refusal_warned: Mutex<Option<Instant>>,
    next_connection: AtomicU64,
    blocking: Arc<Semaphore>,
    pub(crate) stop: CancellationToken,
    /// Set once the lock is held and the address bound: the address.
    listening: watch::Sender<Option<SocketAddr>>,
    lock: Mutex<Option<ListenerLock>>,
    running: AtomicBool,
}

/// A connection counted against the limits while it exists.
struct Counted {
    server: Arc<Server>,
    address: std::net::IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.server
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close(self.address);
    }
}

/// A signed-in client's identity.
pub struct SignedIn {
    pub user: String,
    pub grant: crate::seats::Grant,
    pub presence: Value,
    /// False when the hub is closed (the connector stops): the client is
    /// to go at once.
    pub registered: bool,
}

impl Server {
    pub fn new(ctx: Context, settings: Arc<Settings>, key: KeyMaterial, owner: u64) -> Arc<Server> {
        let (hub_events, hub_receiver) = mpsc::channel(HUB_QUEUE);
        Arc::new(Server {
            data_dir: ctx.data_dir.clone(),
            instance: ctx.instance.clone(),
            owner: AtomicU64::new(owner),
            seats: Mutex::new(SeatTable::new(settings.seats.clone())),
            settings: watch::Sender::new(settings),
            ctx: RwLock::new(ctx),
            key,
            seats_changed: Notify::new(),
            hub: Mutex::new(Hub::default()),
            hub_events,
            hub_receiver: Mutex::new(Some(hub_receiver)),
            hub_dropped: AtomicU64::new(0),
            hub_warned: Mutex::new(None),
            sign_ins: Arc::new(Mutex::new(SignInGuard::default())),
            sign_in_checked: Notify::new(),
            refused_sign_ins: Mutex::new(LogThrottle::default()),
            connections: Mutex::new(ConnectionCounter::default()),
            refused_connections: AtomicU64::new(0),
            refusal_warned: Mutex::new(None),
            next_connection: AtomicU64::new(1),
            blocking: Arc::new(Semaphore::new(BLOCKING_HOST_CALLS)),
            stop: CancellationToken::new(),
            listening: watch::Sender::new(None),
            lock: Mutex::new(None),
            running: AtomicBool::new(false),
        })
    }

    /// Starts the server's tasks on the module's runtime.
    pub fn start(self: &Arc<Self>) {
        let ctx = self.ctx();
        ctx.spawn_service(self.clone().run());
    }

    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::SeqCst)
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    pub fn ctx(&self) -> Context {
        self.ctx.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The address it listens on, once it does.
    pub fn listening(&self) -> Option<SocketAddr> {
        *self.listening.borrow()
    }

    /// Waits until it listens (or `timeout` passes).
    pub async fn wait_listening(&self, timeout: Duration) -> Option<SocketAddr> {
        let mut listening = self.listening.subscribe();
        let waited = tokio::time::timeout(timeout, listening.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(address)) => *address,
            _ => None,
        }
    }

    /// A newer instance value (a new configuration) takes the server over.
    pub fn adopt(&self, owner: u64, ctx: Context, settings: Arc<Settings>) {
        self.owner.store(owner, Ordering::SeqCst);
        *self.ctx.write().unwrap_or_else(|p| p.into_inner()) = ctx;
        let changes = self
            .seats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconfigure(settings.seats.clone());
        self.log_seat_changes(&changes);
        tracing::info!(listen = %settings.listen, "configuration changed; signed-in clients stay");
        self.settings.send_replace(settings);
        self.seats_changed.notify_one();
    }

    /// Hands a hook's observation to the hub; never waits.
    pub fn observe(&self, event: HubEvent) {
        // A server still waiting for its address has no clients to tell
        // (and no hub task emptying the queue yet).
        if !self.running.load(Ordering::Relaxed) || self.stop.is_cancelled() {
            return;
        }
        if self.hub_events.try_send(event).is_err() {
            let dropped = self.hub_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let mut warned = self.hub_warned.lock().unwrap_or_else(|p| p.into_inner());
            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                *warned = Some(Instant::now());
                tracing::warn!(
                    dropped,
                    "events arrive faster than clients are sent them: events dropped"
                );
            }
        }
    }

    pub(crate) fn log_seat_changes(&self, changes: &[SeatChange]) {
        for change in changes {
            tracing::info!("{change}");
        }
    }

    fn seats_changed(&self) {
        self.seats_changed.notify_one();
    }

    /// Stops listening, tells every client to go and hands the seats on
    /// (the seats file, then the lock). Safe to call twice.
    pub fn stop(&self) {
        if self.stop.is_cancelled() {
            return;
        }
        self.stop.cancel();
        let now = SystemTime::now();
        let snapshot = {
            let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
            seats.hold_all(now);
            seats.snapshot(now)
        };
        if self.running.load(Ordering::SeqCst) {
            if let Err(error) = snapshot.write(&self.data_dir) {
                tracing::error!("the seats could not be saved for the next start: {error}");
            }
            let held = snapshot.seats.len();
            tracing::info!(
                held,
                "connector stopped; seats held for their users' reconnect"
            );
            let _ = std::fs::remove_file(self.data_dir.join(crate::control::SOCKET));
        }
        self.hub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close(Farewell::new(Ending::Stopping));
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.listening.send_replace(None);
    }

    async fn run(self: Arc<Self>) {
        let Some(listener) = self.acquire().await else {
            return;
        };
        self.running.store(true, Ordering::SeqCst);
        self.restore_seats().await;
        if let Some(receiver) = self
            .hub_receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            tokio::spawn(self.clone().run_hub(receiver).with_current_subscriber());
        }
        tokio::spawn(self.clone().keep_seats().with_current_subscriber());
        tokio::spawn(crate::control::serve(self.clone()).with_current_subscriber());
        self.accept(listener).await;
    }

    /// Takes the listener lock and binds, retrying while another server of
    /// this instance (an older library version, another process) has
    /// them; `None` when stopped meanwhile.
    async fn acquire(&self) -> Option<TcpListener> {
        let mut said_waiting = false;
        let mut lock: Option<ListenerLock> = None;
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            if lock.is_none() {
                match ListenerLock::try_take(&self.data_dir) {
                    Ok(taken) => lock = taken,
                    Err(error) => {
                        tracing::error!(
                            "cannot open the listener lock in {}: {error}",
                            self.data_dir.display()
                        );
                    }
                }
            }
            let listen = self.settings().listen;
            if let Some(held) = &mut lock {
                match TcpListener::bind(listen).await {
                    Ok(listener) => {
                        let bound = listener.local_addr().unwrap_or(listen);
                        if let Err(error) = held.record(bound) {
                            tracing::warn!(
                                "cannot record the listening address in the lock file: {error}"
                            );
                        }
                        *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = lock.take();
                        self.listening.send_replace(Some(bound));
                        tracing::info!(
                            url = %self.settings().url(Some(bound)),
                            "listening on {bound}"
                        );
                        return Some(listener);
                    }
                    Err(error) if !said_waiting => {
                        said_waiting = true;
                        tracing::warn!("cannot listen on {listen} yet ({error}); trying again");
                    }
                    Err(_) => {}
                }
            } else if !said_waiting {
                said_waiting = true;
                tracing::info!("another connector of this instance is running (a module upgrade, another process); waiting for it to stop");
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// The previous connector's holders get their seats back first.
    async fn restore_seats(&self) {
        let data_dir = self.data_dir.clone();
        let read = tokio::task::spawn_blocking(move || SeatsFile::read(&data_dir)).await;
        let file = match read {
            Ok(Ok(Some(file))) => file,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::warn!("seats of the previous start not restored: {error}");
                return;
            }
            Err(_) => return,
        };
        let changes = self
            .seats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(&file, SystemTime::now(), SEATS_HEARTBEAT * 2);
        self.log_seat_changes(&changes);
        self.seats_changed();
    }

    async fn run_hub(self: Arc<Self>, mut events: mpsc::Receiver<HubEvent>) {
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return,
                event = events.recv() => event,
            };
            let Some(event) = event else {
                return;
            };
            self.hub
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .handle(event, Instant::now());
        }
    }

    /// Frees seats whose grace is over and writes the seats file after
    /// every change (and while seats are in use, every
    /// [`SEATS_HEARTBEAT`]).
    async fn keep_seats(self: Arc<Self>) {
        let mut expiry = tokio::time::interval(Duration::from_millis(250));
        let mut last_write = Instant::now();
        let mut dirty = true;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.seats_changed.notified() => dirty = true,
                _ = expiry.tick() => {}
            }
            let (changes, any) = {
                let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
                let changes = if seats.any_held() {
                    seats.expire(SystemTime::now())
                } else {
                    Vec::new()
                };
                (changes, !seats.seats().is_empty())
            };
            if !changes.is_empty() {
                self.log_seat_changes(&changes);
                dirty = true;
            }
            let heartbeat = any && last_write.elapsed() >= SEATS_HEARTBEAT;
            if !(dirty || heartbeat) {
                continue;
            }
            dirty = false;
            last_write = Instant::now();
            let snapshot = self
                .seats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot(SystemTime::now());
            let data_dir = self.data_dir.clone();
            let written = tokio::task::spawn_blocking(move || snapshot.write(&data_dir)).await;
            if self.stop.is_cancelled() {
                // `stop` wrote the final state; this one may be older.
                return;
            }
            if let Ok(Err(error)) = written {
                tracing::warn!("cannot write the seats file: {error}");
            }
        }
    }

    async fn accept(self: Arc<Self>, mut listener: TcpListener) {
        let mut settings = self.settings.subscribe();
        let mut configured = settings.borrow().listen;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let listen = settings.borrow_and_update().listen;
                    if listen != configured {
                        match TcpListener::bind(listen).await {
                            Ok(rebound) => {
                                let bound = rebound.local_addr().unwrap_or(listen);
                                listener = rebound;
                                configured = listen;
                                if let Some(lock) = self.lock.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                                    let _ = lock.record(bound);
                                }
                                self.listening.send_replace(Some(bound));
                                tracing::info!("now listening on {bound}; connected clients stay");
                            }
                            Err(error) => tracing::error!(
                                "cannot listen on {listen}: {error}; still listening on {}",
                                self.listening().map_or_else(|| configured.to_string(), |a| a.to_string())
                            ),
                        }
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.admit(stream, peer),
                    Err(error) => {
                        // Out of file descriptors, say: do not spin.
                        tracing::warn!("accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let settings = self.settings();
        let opened = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open(
                peer.ip(),
                settings.max_clients,
                settings.max_clients_per_address,
            );
        if let Err(refusal) = opened {
            // Closed unanswered: an answer costs what the limit saves.
            let refused = self.refused_connections.fetch_add(1, Ordering::Relaxed) + 1;
            let mut warned = self
                .refusal_warned
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                *warned = Some(Instant::now());
                tracing::warn!(refused, %peer, "connection refused: {refusal:?}");
            }
            return;
        }
        let counted = Counted {
            server: self.clone(),
            address: peer.ip(),
        };
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(
            crate::session::run(self.clone(), stream, peer, connection, settings, counted)
                .with_current_subscriber(),
        );
    }

    /// Checks a hello's key and credentials (on a blocking thread), gives
    /// the user a seat, queues the welcome on `outbox` and registers it
    /// with the hub.
    pub async fn sign_in(
        &self,
        hello: &crate::protocol::Hello,
        peer: SocketAddr,
        connection: crate::seats::ConnectionId,
        client_since: SystemTime,
        outbox: &Outbox,
    ) -> Result<SignedIn, Refusal> {
        let admitted = self.admit_sign_in(hello, peer).await?;
        let user = hello.user.trim().to_string();
        let checked = {
            let (key, user, sent_key, password, guard) = (
                self.key.clone(),
                user.clone(),
                hello.key.clone(),
                hello.password.clone(),
                self.sign_ins.clone(),
            );
            self.blocking(move |ctx| {
                check_credentials(ctx, &key, &guard, &user, &sent_key, &password)
            })
            .await
            .and_then(|checked| checked)
        };
        // Whatever it gave, a sign-in waiting behind this one may go on.
        let _checked = NotifyOnDrop(&self.sign_in_checked);
        let presence = match checked {
            Ok(presence) => {
                self.sign_ins
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeeded(admitted);
                presence
            }
            Err(refusal) => {
                let mut guard = self.sign_ins.lock().unwrap_or_else(|p| p.into_inner());
                match refusal.code {
                    // The connector's own trouble is no guess of the client's;
                    // nor is a user blocked by somebody else's guesses.
                    ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::TooManyFailures => {
                        guard.succeeded(admitted)
                    }
                    ErrorCode::WrongPassword => {
                        guard.wrong_password(admitted, &user, Instant::now())
                    }
                    _ => guard.failed(admitted, Instant::now()),
                }
                drop(guard);
                if refusal.code == ErrorCode::TooManyFailures {
                    self.log_too_many_failures(&user, peer);
                } else {
                    tracing::info!(user = %user, %peer, code = %refusal.code, "sign-in refused");
                }
                return Err(refusal);
            }
        };
        // Who signed in is the host's answer, not what the client wrote:
        // the seat, the fixed seats, the events and every command go by
        // the directory's id of the user the password was checked for.
        let user = presence
            .as_ref()
            .map(|presence| presence.user.to_string())
            .filter(|id| !id.is_empty())
            .unwrap_or(user);
        let presence = presence
            .as_ref()
            .map(crate::protocol::presence_json)
            .unwrap_or_else(|| crate::protocol::bare_presence_json(&user));
        let client = crate::seats::ClientInfo {
            name: hello.client.name.clone(),
            version: hello.client.version.clone(),
            address: peer.to_string(),
            since: client_since,
        };
        // The seat is taken and the client registered with the hub under
        // one hold of the seats: a revoke (which takes the seats, then
        // tells the hub's clients to go) either comes first, and this
        // client takes a new seat, or finds it registered. In between it
        // would free the seat and miss the client, which would then stay
        // signed in without one.
        let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        let taken = seats.take(&user, connection, client, SystemTime::now());
        let (grant, change) = match taken {
            Ok(taken) => taken,
            Err(no_seat) => {
                drop(seats);
                self.log_seat_changes(&[no_seat.change()]);
                return Err(Refusal::new(
                    None,
                    ErrorCode::NoSeat,
                    format!(
                        "all {} floating seats are taken (by {} user(s)); try again when one signs out, or ask an administrator",
                        no_seat.pool, no_seat.holders
                    ),
                ));
            }
        };
        // Queued before the registration, so that no event comes first.
        outbox.send(self.welcome(&presence, &grant));
        outbox.send(crate::protocol::presence_event(&presence));
        let registered = self.hub.lock().unwrap_or_else(|p| p.into_inner()).register(
            connection,
            &user,
            outbox.clone(),
        );
        drop(seats);
        self.log_seat_changes(&[change]);
        self.seats_changed();
        Ok(SignedIn {
            user,
            grant,
            presence,
            registered,
        })
    }

    /// Admits a sign-in from `peer` by the failure limit. While its
    /// source has as many checks in progress as it may still fail, it
    /// waits for one of them to end: many clients behind one address (an
    /// office's NAT reconnecting after a restart) sign in one after the
    /// other instead of being refused, and guesses still cannot be
    /// checked in parallel past the limit.
    async fn admit_sign_in(
        &self,
        hello: &crate::protocol::Hello,
        peer: SocketAddr,
    ) -> Result<crate::limits::Admitted, Refusal> {
        let deadline = tokio::time::Instant::now() + HOST_CALL_TIME;
        loop {
            // Listening before looking, so an end in between is not missed.
            let checked = self.sign_in_checked.notified();
            tokio::pin!(checked);
            checked.as_mut().enable();
            {
                let mut guard = self.sign_ins.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(admitted) = guard.admit(peer.ip(), Instant::now()) {
                    return Ok(admitted);
                }
                if guard.failed_too_often(peer.ip()) {
                    drop(guard);
                    self.log_too_many_failures(&hello.user, peer);
                    return Err(Refusal::new(
                        None,
                        ErrorCode::TooManyFailures,
                        format!(
                            "more than {} failed sign-ins from your address within a minute: try again later",
                            SignInGuard::MAX_FAILURES
                        ),
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, checked).await.is_err() {
                return Err(Refusal::new(
                    None,
                    ErrorCode::Timeout,
                    "too many sign-ins from your address are being checked: try again later",
                ));
            }
        }
    }

    fn welcome(&self, presence: &Value, grant: &crate::seats::Grant) -> String {
        let settings = self.settings();
        json!({
            "type": "welcome",
            "version": crate::protocol::VERSION,
            "user": presence,
            "seat": { "kind": grant.kind, "since": rfc3339(grant.since) },
            "instance": self.instance,
            "limits": {
                "max_message_bytes": settings.max_message_bytes,
                "commands_per_second": settings.commands_per_second,
                "ping_seconds": settings.ping.as_secs(),
                "subscriptions": crate::protocol::MAX_SUBSCRIPTIONS,
            },
        })
        .to_string()
    }

    /// A `too_many_failures` refusal, at most one line per 10 s.
    fn log_too_many_failures(&self, user: &str, peer: SocketAddr) {
        let due = self
            .refused_sign_ins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due(Instant::now());
        if let Some(refused) = due {
            tracing::info!(user = %user, %peer, refused, "sign-in refused: too many failed sign-ins (from this address, or for this user); such refusals are logged once per 10 s");
        }
    }

    /// Runs a host call that may block (the host's database, a lookup) on
    /// a blocking thread, at most [`BLOCKING_HOST_CALLS`] at once, within
    /// [`HOST_CALL_TIME`]; with the instance's log.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Context) -> T + Send + 'static,
    ) -> Result<T, Refusal> {
        let busy = || Refusal::new(None, ErrorCode::Timeout, "the PBX did not answer in time");
        let permit = tokio::time::timeout(HOST_CALL_TIME, self.blocking.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| Refusal::new(None, ErrorCode::Unavailable, "the connector is stopping"))?;
        let ctx = self.ctx();
        let dispatch = tracing::dispatcher::get_default(|dispatch| dispatch.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            tracing::dispatcher::with_default(&dispatch, || work(&ctx))
        });
        match tokio::time::timeout(HOST_CALL_TIME, task).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Refusal::new(
                None,
                ErrorCode::Failed,
                "the PBX's service failed",
            )),
            Err(_) => Err(busy()),
        }
    }

    /// A client's connection ended: its seat is given back (at once after
    /// a sign-out, after the grace period otherwise).
    pub fn left(&self, connection: crate::seats::ConnectionId, ending: &Ending) {
        self.hub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unregister(connection);
        let how = if *ending == Ending::SignedOut {
            crate::seats::Leaving::SignedOut
        } else {
            crate::seats::Leaving::Disconnected
        };
        self.free_seat(connection, how);
    }

    /// `connection` leaves its seat (nothing when it holds none any more:
    /// revoked, signed out already, or the connector stopped and holds
    /// every seat for the next one).
    pub fn free_seat(&self, connection: crate::seats::ConnectionId, how: crate::seats::Leaving) {
        if self.stop.is_cancelled() {
            return;
        }
        let change = self.seats.lock().unwrap_or_else(|p| p.into_inner()).leave(
            connection,
            how,
            SystemTime::now(),
        );
        if let Some(change) = change {
            self.log_seat_changes(&[change]);
            self.seats_changed();
        }
    }

    /// `revoke USER [REASON…]`: closes the user's connections with
    /// `revoked` and frees their seats.
    pub fn revoke(&self, user: &str, reason: &str) -> Result<Value, String> {
        let (connections, changes) = self
            .seats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revoke(user, reason);
        if changes.is_empty() {
            return Err(format!("{user} holds no seat"));
        }
        self.log_seat_changes(&changes);
        self.seats_changed();
        let message = if reason.is_empty() {
            "Your seat was revoked by an administrator."
        } else {
            reason
        };
        let last_words = json!({ "type": "revoked", "reason": message }).to_string();
        let farewell = Farewell::saying(Ending::Revoked, last_words);
        let hub = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        for connection in &connections {
            hub.finish(*connection, farewell.clone());
        }
        let closed = connections.len();
        drop(hub);
        Ok(
            json!({ "revoked": user, "seats": changes.len(), "clients_closed": closed, "reason": reason }),
        )
    }

    /// The `seats` action's answer.
    pub fn seats_report(&self) -> Value {
        let settings = self.settings();
        let seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        let hub = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        let report = report(&seats, true);
        let mut report = report;
        report["listening"] = json!(self.listening().map(|a| a.to_string()));
        report["url"] = json!(settings.url(self.listening()));
        report["clients_connected"] = json!(hub.clients());
        report["calls_tracked"] = json!(hub.tracked_calls());
        report
    }
}

/// Wakes every waiter of a [`Notify`] when dropped (on every way out of
/// the scope that holds it).
struct NotifyOnDrop<'a>(&'a Notify);

impl Drop for NotifyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

/// The seats as the `seats` action shows them (also from the seats file
/// when no connector runs).
pub fn report(seats: &SeatTable, running: bool) -> Value {
    let rules = seats.rules();
    let holders: Vec<Value> = seats
        .seats()
        .iter()
        .map(|seat| {
            let (state, held_until) = match &seat.state {
                crate::seats::SeatState::InUse { .. } => ("in_use", None),
                crate::seats::SeatState::Held { until, .. } => ("held", Some(rfc3339(*until))),
            };
            json!({
                "user": seat.user,
                "kind": seat.kind,
                "since": rfc3339(seat.since),
                "state": state,
                "held_until": held_until,
                "clients": seat.clients().iter().map(|c| json!({
                    "name": c.name,
                    "version": c.version,
                    "address": c.address,
                    "since": rfc3339(c.since),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "running": running,
        "pool": rules.pool,
        "free": seats.free(),
        "fixed_users": rules.fixed_users,
        "one_seat_per_user": rules.one_seat_per_user,
        "grace_seconds": rules.grace.as_secs(),
        "holders": holders,
    })
}

/// The key, then whether the user is blocked by recent wrong passwords
/// (only a client with the key learns that), then the password; the
/// user's presence when all is right.
fn check_credentials(
    ctx: &Context,
    key: &KeyMaterial,
    guard: &Mutex<SignInGuard>,
    user: &str,
    sent_key: &crate::protocol::Sensitive,
    password: &crate::protocol::Sensitive,
) -> Result<Option<UserPresence>, Refusal> {
    use callhost_plugin_sdk::PasswordCheck;
    let expected = key.current().map_err(|error| {
        tracing::error!("the installation key cannot be derived: {error}");
        Refusal::new(
            None,
            ErrorCode::Unavailable,
            "the connector cannot check keys right now",
        )
    })?;
    if !expected.matches(sent_key.expose()) {
        return Err(Refusal::new(
            None,
            ErrorCode::BadKey,
            format!(
                "No open connection to this PBX with key {}…: the key is wrong or was rotated; \
                 ask your administrator for the current key or key file",
                crate::key::sent_prefix(sent_key.expose())
            ),
        ));
    }
    let blocked = guard
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .user_blocked(user, Instant::now());
    if blocked {
        return Err(Refusal::new(
            None,
            ErrorCode::TooManyFailures,
            format!(
                "more than {} wrong passwords for {user} within a minute: try again later",
                SignInGuard::MAX_USER_FAILURES
            ),
        ));
    }
    match ctx.verify_password(user, password.expose()) {
        PasswordCheck::Valid => Ok(ctx.user_presence(user)),
        PasswordCheck::Wrong => Err(Refusal::new(
            None,
            ErrorCode::WrongPassword,
            format!("wrong password for {user}"),
        )),
        PasswordCheck::UnknownUser => Err(Refusal::new(
            None,
            ErrorCode::UnknownUser,
            format!("no user {user} in this PBX's directory"),
        )),
        PasswordCheck::NoPassword => Err(Refusal::new(
            None,
            ErrorCode::NoPassword,
            format!("{user} has no password set: ask an administrator to set one"),
        )),
    }
}
