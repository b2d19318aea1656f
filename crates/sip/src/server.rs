//! The server: transports, the request loop, and routing each request to
//! REGISTER (`register.rs`), a new call (`call`) or the dialog it belongs
//! to. Every request is judged by its real source address (`peer.rs`).

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use callhost_media::relay::{MediaRelay, RelayConfig};
use callhost_media::sdp::AddressPolicy;
use callhost_pbx::engine::{CallOutcome, CallRequest, Engine, Hooks};
use rsipstack::dialog::dialog::Dialog;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{Endpoint, EndpointBuilder};
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use tokio_util::sync::CancellationToken;

use crate::call::originate::Telephony;
use crate::call::CallCommands;
use crate::config::{ConfigError, LatchingMode, MediaConfig, SipConfig};
use crate::digest::Nonces;
use crate::guard::AuthGuard;
use crate::limits::CallLimits;
use crate::peer::{Peer, TrunkMatcher};
use crate::policy::DialPolicy;
use crate::presence::LiveCalls;
use crate::registrar::Registrar;
use crate::tls::{TlsListener, VerifiedClients};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen for SIP on {address}: {message}")]
    Listen {
        address: SocketAddr,
        message: String,
    },
    #[error("media relay: {0}")]
    Media(String),
    #[error("SIP over TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// What the SIP front end needs from the host.
pub trait CallControl: Send + Sync + 'static {
    /// The engine of the moment (`None` while no directory is loaded).
    fn engine(&self) -> Option<Arc<Engine>>;
    /// The modules' hooks.
    fn hooks(&self) -> Arc<dyn Hooks>;
    /// A call ended; the host writes call lists and the like. Runs on the
    /// call's task after both legs are gone: may block briefly.
    fn call_ended(&self, record: CallRecord);

    /// A call was placed and rings (what the modules decided is in
    /// `outcome`). On the call's task: must not block.
    fn call_started(&self, request: &CallRequest, outcome: &CallOutcome) {
        let _ = (request, outcome);
    }

    /// Where the frames an instance tapped go (`None`: the instance is gone
    /// or has no media hook).
    fn media_sink(&self, instance: &str) -> Option<Arc<dyn MediaSink>>;

    /// The file of a prompt an instance asked for (an asset of its module).
    fn prompt_file(&self, instance: &str, asset: &str) -> Option<std::path::PathBuf>;
}

/// Takes a tapped call's frames; must never block (drop instead).
pub trait MediaSink: Send + Sync {
    fn frame(&self, call_id: &Arc<str>, frame: &callhost_media::relay::TapFrame);
    /// `frames` frames of `leg` the relay's tap dropped (it was full),
    /// before the next frame passed on.
    fn gap(&self, call_id: &Arc<str>, leg: callhost_media::relay::Leg, frames: u64);
    /// The call's media is over: no frame follows. Called from a task of
    /// the runtime; must not block.
    fn end(&self, call_id: &Arc<str>);
}

/// One finished call as the host records it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub request: CallRequest,
    pub outcome: CallOutcome,
    /// The user whose phone took the call (or the number, via the trunk).
    pub answered_by: Option<String>,
    pub answered_for: Option<Duration>,
    /// Per-leg media counters as JSON (`[caller, callee]`, the relay's
    /// `LegStats`).
    pub media: Option<String>,
}

/// Who is on the far side of one of our dialogs, so that its in-dialog
/// requests are taken from there only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialogPeer {
    /// Any of the trunk's addresses.
    Trunk,
    /// A phone (or anyone else) at this address.
    Host(IpAddr),
}

/// Where a dialog's requests go: the call that owns it, and who may send
/// them.
#[derive(Clone)]
pub(crate) struct DialogRoute {
    pub call: CallCommands,
    pub peer: DialogPeer,
}

/// State every request handler shares.
pub(crate) struct Shared {
    pub config: SipConfig,
    pub trunk: TrunkMatcher,
    pub policy: DialPolicy,
    pub limits: Arc<CallLimits>,
    pub dialogs: Arc<DialogLayer>,
    pub nonces: Nonces,
    pub guard: AuthGuard,
    pub live: Arc<LiveCalls>,
    pub relay: MediaRelay,
    /// Which SDP connection addresses peers may name.
    pub address_policy: AddressPolicy,
    pub control: Arc<dyn CallControl>,
    /// Our address as it goes into Contact, Via and From.
    pub local: SocketAddr,
    /// Where SIP over TLS is answered (Contact of dialogs on TLS).
    pub tls_local: Option<SocketAddr>,
    /// Cancelled on SIGTERM: calls end, new ones are refused.
    pub shutdown: CancellationToken,
    /// Every dialog's Call-ID → its call and its peer: how in-dialog
    /// requests are checked, and how an attended transfer (REFER with
    /// Replaces) finds the call it replaces.
    routes: Mutex<HashMap<String, DialogRoute>>,
}

/// How loudly a refusal is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// Normal operation (a busy user, an unknown number).
    Info,
    /// Security-relevant (failed authentication, a block, a denied number).
    Warn,
}

impl Shared {
    pub fn routes(&self) -> MutexGuard<'_, HashMap<String, DialogRoute>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The dialog's peer for a request from `peer`.
    pub fn dialog_peer(&self, peer: &Peer) -> DialogPeer {
        if self.trunk.is_trunk(peer) {
            DialogPeer::Trunk
        } else {
            DialogPeer::Host(peer.address.ip())
        }
    }

    /// The HA1 of a directory user, by user id: `Err(())` for no such user.
    pub fn ha1_of(&self, user: &str) -> Result<Option<String>, ()> {
        let engine = self.control.engine().ok_or(())?;
        let user = engine.directory().user(user).ok_or(())?;
        Ok(user.digest_ha1())
    }

    /// Answers `tx` with `status` and logs why, once per request.
    pub async fn refuse(
        &self,
        tx: &mut Transaction,
        peer: &Peer,
        status: StatusCode,
        headers: Vec<Header>,
        severity: Severity,
        why: &(dyn Display + Sync),
    ) {
        log_refusal(tx, peer, &status, severity, why);
        tx.reply_with(status, headers, None).await.ok();
    }
}

/// The one log line of a refused request.
pub(crate) fn log_refusal(
    tx: &Transaction,
    peer: &Peer,
    status: &StatusCode,
    severity: Severity,
    why: &(dyn Display + Sync),
) {
    let method = tx.original.method.to_string();
    let code = u16::from(status.clone());
    let source = peer.address;
    match severity {
        Severity::Info => {
            tracing::info!(%source, %method, status = code, reason = %why, "request refused")
        }
        Severity::Warn => {
            tracing::warn!(%source, %method, status = code, reason = %why, "request refused")
        }
    }
}

pub struct SipServer {
    endpoint: Endpoint,
    /// The endpoint's transport loop, started by `bind` so that the TCP
    /// listener accepts before anyone is told the server is ready.
    endpoint_task: tokio::task::JoinHandle<()>,
    config: SipConfig,
    relay: MediaRelay,
    address_policy: AddressPolicy,
    live: Arc<LiveCalls>,
    telephony: Telephony,
    local: SocketAddr,
    tls_local: Option<SocketAddr>,
    /// The TLS connections whose client certificate verified (with
    /// `sip.tls.trunk_client_ca`).
    certified: Option<Arc<VerifiedClients>>,
    transport_cancel: CancellationToken,
    media_runtime: MediaRuntime,
}

/// The relay's runtime, shut down without waiting when the server goes
/// (dropping a runtime inside another one's task would panic).
struct MediaRuntime(Option<tokio::runtime::Runtime>);

impl MediaRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime is there until dropped")
            .handle()
            .clone()
    }
}

impl Drop for MediaRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl SipServer {
    /// Binds the SIP sockets (UDP, TCP unless switched off, TLS when
    /// configured) and the media relay's port range.
    pub async fn bind(config: SipConfig, media: MediaConfig) -> Result<SipServer, ServeError> {
        config.validate()?;
        let ports = media.port_range()?;
        let latching = match media.latching {
            LatchingMode::Strict => callhost_media::Latching::Strict,
            LatchingMode::Follow => callhost_media::Latching::Follow,
        };
        // RTP never waits behind SIP transactions, hooks or anything else
        // on the server's runtime: the relay has a runtime of its own.
        // Held by its guard from the start: a bind error below returns
        // while this runs inside the server's runtime, where dropping a
        // runtime the plain way panics.
        let media_runtime = MediaRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("callhost-media")
                .enable_all()
                .build()
                .map_err(|e| ServeError::Media(format!("cannot start the media runtime: {e}")))?,
        ));
        let relay = MediaRelay::new(RelayConfig {
            latching,
            ..RelayConfig::new(media.address, ports)
        })
        .on_runtime(media_runtime.handle());
        let address_policy = if media.allow_local_addresses {
            AddressPolicy::AllowLocal
        } else {
            AddressPolicy::Strict
        };
        let transport_cancel = CancellationToken::new();
        let transport = TransportLayer::new(transport_cancel.clone());
        let listen_error = |message: String| ServeError::Listen {
            address: config.listen,
            message,
        };
        let udp = UdpConnection::create_connection(
            config.listen,
            None,
            Some(transport_cancel.child_token()),
        )
        .await
        .map_err(|e| listen_error(e.to_string()))?;
        let local = udp
            .get_addr()
            .get_socketaddr()
            .map_err(|e| listen_error(e.to_string()))?;
        transport.add_transport(udp.into());
        if config.tcp {
            let tcp = TcpListenerConnection::new(local, None)
                .await
                .map_err(|e| listen_error(format!("TCP: {e}")))?;
            transport.add_transport(tcp.into());
        }
        let tls = match &config.tls {
            Some(tls) => {
                transport.set_tls_config(crate::tls::trunk_client_config(tls)?);
                Some(TlsListener::bind(tls, local).await?)
            }
            None => None,
        };
        let endpoint = EndpointBuilder::new()
            .with_transport_layer(transport)
            .with_cancel_token(transport_cancel.clone())
            .with_user_agent(concat!("callhost/", env!("CARGO_PKG_VERSION")))
            .build();
        let endpoint_inner = endpoint.inner.clone();
        let endpoint_task = tokio::spawn(async move {
            if let Err(error) = endpoint_inner.serve().await {
                tracing::error!(%error, "SIP endpoint stopped");
            }
        });
        if config.tcp {
            // rsipstack binds the TCP listener when the endpoint starts
            // serving; wait until it accepts (a few ms).
            let deadline = Instant::now() + Duration::from_secs(2);
            while tokio::net::TcpStream::connect(local).await.is_err() {
                if Instant::now() >= deadline {
                    return Err(listen_error("TCP listener did not start".into()));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let (tls_local, certified) = match tls {
            Some(listener) => {
                let address = listener.local_addr();
                let certified = config
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.trunk_client_ca.is_some())
                    .then(|| listener.verified());
                listener.spawn(endpoint.inner.clone(), transport_cancel.child_token());
                tracing::info!(%address, "SIP over TLS listening");
                (Some(address), certified)
            }
            None => (None, None),
        };
        let registrar = Registrar::new(config.limits.registrations_per_user);
        Ok(SipServer {
            endpoint,
            endpoint_task,
            config,
            relay,
            address_policy,
            live: Arc::new(LiveCalls::new(registrar)),
            telephony: Telephony::default(),
            local,
            tls_local,
            certified,
            transport_cancel,
            media_runtime,
        })
    }

    /// Where SIP is answered (the bound port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where SIP over TLS is answered, when configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    /// The live registrations and calls, for the engine's presence.
    pub fn live(&self) -> Arc<LiveCalls> {
        self.live.clone()
    }

    /// Places and ends calls for the host's services (click-to-dial);
    /// refuses until `serve` runs.
    pub fn telephony(&self) -> Telephony {
        self.telephony.clone()
    }

    /// Serves until `shutdown` is cancelled, then ends every call (BYE to
    /// answered legs, CANCEL to ringing ones, 503 to unanswered callers)
    /// and returns once they are gone or `grace` has passed.
    pub async fn serve(
        self,
        control: Arc<dyn CallControl>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), ServeError> {
        let mut incoming =
            self.endpoint
                .incoming_transactions()
                .map_err(|e| ServeError::Listen {
                    address: self.local,
                    message: e.to_string(),
                })?;
        let shared = Arc::new(Shared {
            guard: AuthGuard::new(
                self.config.auth_failures,
                self.config.auth_failures_per_user,
                Duration::from_secs(self.config.auth_block_seconds),
            ),
            trunk: TrunkMatcher::new(self.config.trunk.as_ref(), self.certified)?,
            policy: DialPolicy::new(&self.config),
            limits: CallLimits::new(self.config.limits.clone()),
            config: self.config,
            dialogs: Arc::new(DialogLayer::new(self.endpoint.inner.clone())),
            nonces: Nonces::default(),
            live: self.live,
            relay: self.relay,
            address_policy: self.address_policy,
            control,
            local: self.local,
            tls_local: self.tls_local,
            shutdown: shutdown.clone(),
            routes: Mutex::default(),
        });
        self.telephony.start(&shared);
        let endpoint_task = self.endpoint_task;
        tokio::spawn(shared.limits.clone().watch_lag(shutdown.clone()));
        tokio::spawn(sweep_registrations(shared.live.clone(), shutdown.clone()));
        tracing::info!(address = %shared.local, "SIP listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                tx = incoming.recv() => {
                    let Some(tx) = tx else { break };
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.handle(tx).await });
                }
            }
        }
        // Calls see the token themselves; wait for them to wind down while
        // the endpoint still carries their BYEs and CANCELs.
        let deadline = Instant::now() + grace;
        loop {
            // Requests still arriving (BYE answers, ACKs) go to the dialogs.
            while let Ok(tx) = incoming.try_recv() {
                let shared = shared.clone();
                tokio::spawn(async move { shared.handle(tx).await });
            }
            if shared.limits.calls() == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = shared.limits.calls();
        if left > 0 {
            tracing::warn!(
                calls = left,
                "shutdown: calls still open after the grace period"
            );
        }
        // What ended calls left behind (the stack's dialogs, our routes):
        // nothing, unless calls are still open.
        tracing::info!(
            dialogs = shared.dialogs.len(),
            routes = shared.routes().len(),
            "SIP stopped"
        );
        self.transport_cancel.cancel();
        endpoint_task.abort();
        drop(self.media_runtime);
        Ok(())
    }
}

/// How often expired registrations are taken out (and logged).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Takes out the registrations phones stopped refreshing, one log line
/// each, until `stop`.
async fn sweep_registrations(live: Arc<LiveCalls>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let expired = live.registrar.sweep();
                let mut users: Vec<String> = expired.iter().map(|(user, _)| user.clone()).collect();
                users.dedup();
                crate::register::log_expired(expired);
                for user in users.iter().filter(|user| !live.registrar.is_registered(user)) {
                    live.changed(user);
                }
            }
        }
    }
}

impl Shared {
    async fn handle(self: Arc<Self>, mut tx: Transaction) {
        let Some(peer) = Peer::of(&tx) else {
            // Not from a socket: nothing to answer to.
            return;
        };
        let method = tx.original.method;
        let in_dialog = tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.tag().ok().flatten())
            .is_some();
        if in_dialog || matches!(method, Method::Ack | Method::Cancel | Method::Bye) {
            self.in_dialog(tx, peer).await;
            return;
        }
        match method {
            Method::Register => crate::register::register(&self, tx, peer).await,
            Method::Invite => {
                if self.shutdown.is_cancelled() {
                    self.refuse(
                        &mut tx,
                        &peer,
                        StatusCode::ServiceUnavailable,
                        Vec::new(),
                        Severity::Info,
                        &"the host is stopping",
                    )
                    .await;
                    return;
                }
                crate::call::incoming(self, tx, peer).await;
            }
            Method::Options => {
                tx.reply(StatusCode::OK).await.ok();
            }
            _ => {
                self.refuse(
                    &mut tx,
                    &peer,
                    StatusCode::MethodNotAllowed,
                    Vec::new(),
                    Severity::Info,
                    &"method not supported outside a dialog",
                )
                .await;
            }
        }
    }

    /// A request within a dialog (or an ACK/CANCEL/BYE): taken only from
    /// the dialog's own peer, then handed to the dialog, whose call sees it
    /// as a dialog state.
    async fn in_dialog(&self, mut tx: Transaction, peer: Peer) {
        let method = tx.original.method;
        let call_id = tx
            .original
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default();
        let expected = self.routes().get(&call_id).map(|route| route.peer);
        let from_peer = match expected {
            Some(DialogPeer::Trunk) => self.trunk.is_trunk(&peer),
            Some(DialogPeer::Host(ip)) => ip == peer.address.ip(),
            None => true,
        };
        if !from_peer {
            if method != Method::Ack {
                self.refuse(
                    &mut tx,
                    &peer,
                    StatusCode::Forbidden,
                    Vec::new(),
                    Severity::Warn,
                    &format!("{method} for a dialog of another address"),
                )
                .await;
            }
            return;
        }
        match self.dialogs.match_dialog(&tx) {
            Some(Dialog::Invite(mut dialog)) => {
                // REFER, BYE and the rest reach the call as dialog states.
                if let Err(error) = dialog.handle(&mut tx).await {
                    tracing::debug!(%error, %method, "in-dialog request");
                }
            }
            _ if method == Method::Ack => {}
            _ => {
                self.refuse(
                    &mut tx,
                    &peer,
                    StatusCode::CallTransactionDoesNotExist,
                    Vec::new(),
                    Severity::Info,
                    &"no such dialog",
                )
                .await;
            }
        }
    }
}
