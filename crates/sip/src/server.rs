//! The server: transport, the request loop, REGISTER, and handing new
//! INVITEs to [`crate::call`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callhost_media::relay::{MediaRelay, RelayConfig};
use callhost_pbx::engine::{CallOutcome, CallRequest, Engine, Hooks, Presence};
use rsipstack::dialog::dialog::Dialog;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{Endpoint, EndpointBuilder};
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipConnection, TransportLayer};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, MediaConfig, SipConfig};
use crate::digest::{DigestCheck, Nonces};
use crate::guard::{AuthGuard, Verdict};
use crate::registrar::{Binding, Registrar};

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

    /// Where the frames an instance tapped go (`None`: the instance is gone
    /// or has no media hook).
    fn media_sink(&self, instance: &str) -> Option<Arc<dyn MediaSink>>;

    /// The file of a prompt an instance asked for (an asset of its module).
    fn prompt_file(&self, instance: &str, asset: &str) -> Option<std::path::PathBuf>;
}

/// Takes a tapped call's frames; must never block (drop instead).
pub trait MediaSink: Send + Sync {
    fn frame(&self, call_id: &Arc<str>, frame: &callhost_media::relay::TapFrame);
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

/// Registrations and calls in progress: the engine's live presence.
pub struct LiveCalls {
    pub registrar: Registrar,
    in_call: Mutex<HashMap<String, usize>>,
}

impl LiveCalls {
    pub(crate) fn enter(&self, user: &str) {
        *self
            .in_call
            .lock()
            .expect("in_call")
            .entry(user.to_string())
            .or_default() += 1;
    }

    pub(crate) fn leave(&self, user: &str) {
        let mut in_call = self.in_call.lock().expect("in_call");
        if let Some(count) = in_call.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                in_call.remove(user);
            }
        }
    }

    /// Calls in progress with this user in them.
    pub fn calls_of(&self, user: &str) -> usize {
        self.in_call
            .lock()
            .expect("in_call")
            .get(user)
            .copied()
            .unwrap_or(0)
    }
}

impl Presence for LiveCalls {
    fn registered(&self, user_id: &str) -> bool {
        self.registrar.is_registered(user_id)
    }

    fn busy(&self, user_id: &str) -> bool {
        self.calls_of(user_id) > 0
    }
}

/// State every request handler shares.
pub(crate) struct Shared {
    pub config: SipConfig,
    pub dialogs: Arc<DialogLayer>,
    pub nonces: Nonces,
    pub guard: AuthGuard,
    pub live: Arc<LiveCalls>,
    pub relay: MediaRelay,
    pub control: Arc<dyn CallControl>,
    /// Our address as it goes into Contact, Via and From.
    pub local: SocketAddr,
    /// Cancelled on SIGTERM: calls end, new ones are refused.
    pub shutdown: CancellationToken,
    /// Calls in progress (A-leg Call-ID), for a clean shutdown.
    pub calls: Mutex<HashMap<String, ()>>,
    /// Every dialog's Call-ID → its call's command channel: how an attended
    /// transfer (REFER with Replaces) finds the call it replaces.
    pub dialogs_to_calls: Mutex<HashMap<String, crate::call::CallCommands>>,
}

pub struct SipServer {
    endpoint: Endpoint,
    /// The endpoint's transport loop, started by `bind` so that the TCP
    /// listener accepts before anyone is told the server is ready.
    endpoint_task: tokio::task::JoinHandle<()>,
    config: SipConfig,
    relay: MediaRelay,
    live: Arc<LiveCalls>,
    local: SocketAddr,
    transport_cancel: CancellationToken,
}

impl SipServer {
    /// Binds the SIP sockets (UDP, and TCP unless switched off) and the
    /// media relay's port range.
    pub async fn bind(config: SipConfig, media: MediaConfig) -> Result<SipServer, ServeError> {
        config.validate()?;
        let ports = media.port_range()?;
        let relay = MediaRelay::new(RelayConfig {
            address: media.address,
            ports,
        });
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
        Ok(SipServer {
            endpoint,
            endpoint_task,
            config,
            relay,
            live: Arc::new(LiveCalls {
                registrar: Registrar::default(),
                in_call: Mutex::default(),
            }),
            local,
            transport_cancel,
        })
    }

    /// Where SIP is answered (the bound port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The live registrations and calls, for the engine's presence.
    pub fn live(&self) -> Arc<LiveCalls> {
        self.live.clone()
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
                Duration::from_secs(self.config.auth_block_seconds),
            ),
            config: self.config,
            dialogs: Arc::new(DialogLayer::new(self.endpoint.inner.clone())),
            nonces: Nonces::default(),
            live: self.live,
            relay: self.relay,
            control,
            local: self.local,
            shutdown: shutdown.clone(),
            calls: Mutex::default(),
            dialogs_to_calls: Mutex::default(),
        });
        let endpoint_task = self.endpoint_task;
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
            if shared.calls.lock().expect("calls").is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = shared.calls.lock().expect("calls").len();
        if left > 0 {
            tracing::warn!(
                calls = left,
                "shutdown: calls still open after the grace period"
            );
        }
        self.transport_cancel.cancel();
        endpoint_task.abort();
        Ok(())
    }
}

/// Where a request came from: the top Via with `received`/`rport` applied.
pub(crate) fn source_of(tx: &Transaction) -> Option<SocketAddr> {
    let via = tx.original.via_header().ok()?;
    let (_, host_with_port) = SipConnection::parse_target_from_via(via).ok()?;
    host_with_port.try_into().ok()
}

impl Shared {
    async fn handle(self: Arc<Self>, mut tx: Transaction) {
        let Some(source) = source_of(&tx) else {
            tx.reply(StatusCode::BadRequest).await.ok();
            return;
        };
        match self.guard.verdict(source.ip()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                tx.reply(StatusCode::Forbidden).await.ok();
                return;
            }
            Verdict::Drop => return,
        }
        let method = tx.original.method;
        let in_dialog = tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.tag().ok().flatten())
            .is_some();
        if in_dialog || matches!(method, Method::Ack | Method::Cancel | Method::Bye) {
            match self.dialogs.match_dialog(&tx) {
                Some(Dialog::Invite(mut dialog)) => {
                    // REFER, BYE and the rest reach the call as dialog states.
                    if let Err(error) = dialog.handle(&mut tx).await {
                        tracing::debug!(%error, %method, "in-dialog request");
                    }
                }
                _ if method == Method::Ack => {}
                _ => {
                    tx.reply(StatusCode::CallTransactionDoesNotExist).await.ok();
                }
            }
            return;
        }
        match method {
            Method::Register => self.register(tx, source).await,
            Method::Invite => {
                if self.shutdown.is_cancelled() {
                    tx.reply(StatusCode::ServiceUnavailable).await.ok();
                    return;
                }
                crate::call::incoming(self, tx, source).await;
            }
            Method::Options => {
                tx.reply(StatusCode::OK).await.ok();
            }
            _ => {
                tx.reply(StatusCode::MethodNotAllowed).await.ok();
            }
        }
    }

    /// The HA1 of a directory user, by user id.
    pub fn ha1_of(&self, user: &str) -> Option<String> {
        let engine = self.control.engine()?;
        engine.directory().user(user)?.digest_ha1()
    }

    /// Checks the request's credentials; on anything but success answers
    /// it (401/407 challenge or 403) and returns `None`.
    pub async fn authenticate(
        &self,
        tx: &mut Transaction,
        source: SocketAddr,
        proxy: bool,
    ) -> Option<String> {
        let header = tx.original.headers.iter().find_map(|header| match header {
            Header::Authorization(h) if !proxy => Some(h.value().to_string()),
            Header::ProxyAuthorization(h) if proxy => Some(h.value().to_string()),
            _ => None,
        });
        let method = tx.original.method.to_string();
        match self
            .nonces
            .check(header.as_deref(), &method, |user| self.ha1_of(user))
        {
            DigestCheck::Valid(user) => {
                self.guard.succeeded(source.ip());
                Some(user)
            }
            check @ (DigestCheck::Missing | DigestCheck::Stale) => {
                let challenge = self.nonces.challenge(check == DigestCheck::Stale);
                let (status, header) = if proxy {
                    (
                        StatusCode::ProxyAuthenticationRequired,
                        Header::ProxyAuthenticate(challenge.into()),
                    )
                } else {
                    (
                        StatusCode::Unauthorized,
                        Header::WwwAuthenticate(challenge.into()),
                    )
                };
                tx.reply_with(status, vec![header], None).await.ok();
                None
            }
            DigestCheck::Invalid(why) => {
                // The reason names the user, never the password or digest.
                tracing::warn!(source = %source, method = %method, reason = %why, "SIP authentication failed");
                self.guard.failed(source.ip());
                tx.reply(StatusCode::Forbidden).await.ok();
                None
            }
        }
    }

    async fn register(&self, mut tx: Transaction, source: SocketAddr) {
        let Some(user) = self.authenticate(&mut tx, source, false).await else {
            return;
        };
        // The address of record must be the authenticated user's.
        let aor_user = tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.uri().ok())
            .and_then(|uri| uri.auth.map(|auth| auth.user));
        if aor_user.as_deref() != Some(user.as_str()) {
            tracing::warn!(source = %source, user = %user, aor = ?aor_user, "REGISTER for another user's address refused");
            tx.reply(StatusCode::Forbidden).await.ok();
            return;
        }
        let header_expires = tx
            .original
            .expires_header()
            .and_then(|h| h.value().trim().parse::<u32>().ok());
        let call_id = tx
            .original
            .call_id_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default();
        let reliable = tx
            .connection
            .as_ref()
            .is_some_and(|connection| connection.is_reliable());
        let contacts = tx.original.typed_contact_headers().unwrap_or_default();
        let star = tx
            .original
            .contact_header()
            .is_ok_and(|h| h.value().trim() == "*");
        if star {
            if header_expires != Some(0) {
                tx.reply(StatusCode::BadRequest).await.ok();
                return;
            }
            self.live.registrar.clear(&user);
            tracing::info!(user = %user, "all devices unregistered");
        }
        for contact in &contacts {
            let asked = contact.expires().or(header_expires).unwrap_or(3600);
            if asked > 0 && asked < self.config.min_expires {
                let min = Header::MinExpires(self.config.min_expires.to_string().into());
                tx.reply_with(StatusCode::IntervalTooBrief, vec![min], None)
                    .await
                    .ok();
                return;
            }
            let expires = Duration::from_secs(asked.min(self.config.max_expires) as u64);
            let contact_uri = contact.uri.to_string();
            tracing::info!(
                user = %user,
                contact = %contact_uri,
                source = %source,
                seconds = expires.as_secs(),
                "{}",
                if expires.is_zero() { "device unregistered" } else { "device registered" }
            );
            self.live.registrar.update(
                &user,
                Binding {
                    contact: contact_uri,
                    source,
                    reliable,
                    call_id: call_id.clone(),
                    expires_at: Instant::now() + expires,
                },
                expires,
            );
        }
        let now = Instant::now();
        let headers: Vec<Header> = self
            .live
            .registrar
            .bindings(&user)
            .into_iter()
            .map(|b| {
                Header::Contact(
                    format!(
                        "<{}>;expires={}",
                        b.contact,
                        b.expires_at.saturating_duration_since(now).as_secs()
                    )
                    .into(),
                )
            })
            .collect();
        tx.reply_with(StatusCode::OK, headers, None).await.ok();
    }
}
