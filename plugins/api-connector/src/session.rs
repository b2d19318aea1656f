//! One client connection, from the TCP accept to its close:
//!
//! ```text
//! Handshake (TLS, WebSocket upgrade: 10 s) → AwaitingHello (10 s)
//!   → SigningIn (key, password on a blocking thread, seat)
//!   → SignedIn (commands, events) → Closing (last words, close frame)
//! ```
//!
//! A signed-in connection runs two halves: the reader (commands, each
//! answered by a task of its own) and the writer (the bounded queue, the
//! pings). Whoever decides the connection ends sets its [`Farewell`]
//! once; both halves stop on it, the writer says the last words and the
//! close frame, and the seat is given back.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use callhost_plugin_sdk::tracing;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::instrument::WithSubscriber as _;

use crate::config::Settings;
use crate::hub::{Farewell, Outbox, OUTGOING_QUEUE};
use crate::limits::{RateLimiter, Verdict};
use crate::protocol::{self, Command, Ending, ErrorCode, Refusal, Request};
use crate::seats::ConnectionId;
use crate::server::{Server, HANDSHAKE_TIME, HELLO_TIME};

/// Commands of one client running at once; more are answered
/// `rate_limited`.
const COMMANDS_IN_FLIGHT: usize = 16;
/// How long the last words and close frame may take to go out.
const FAREWELL_TIME: Duration = Duration::from_secs(2);
/// What a client may send between the upgrade and its sign-in: a hello
/// is a few kilobytes (key and password at most 1 KiB each), and nobody
/// unknown may make the connector hold `max_message_bytes` (up to
/// 16 MiB) for each of `max_clients` connections.
pub const HELLO_BYTES: usize = 16 * 1024;

/// A connection's stream that lets at most [`HELLO_BYTES`] be read after
/// the upgrade until the client is signed in ([`Budgeted::lift`]); past
/// that, reading fails with [`HelloTooBig`] (closed with 1009).
pub struct Budgeted<S> {
    inner: S,
    /// Bytes that may still be read; `None`: no limit.
    remaining: Option<usize>,
}

/// A client sent more than [`HELLO_BYTES`] before it was signed in.
#[derive(Debug, thiserror::Error)]
#[error("more than {HELLO_BYTES} bytes before the sign-in")]
pub struct HelloTooBig;

impl<S> Budgeted<S> {
    /// Unlimited until [`Budgeted::limit`] (the upgrade has its own limit).
    pub fn new(inner: S) -> Budgeted<S> {
        Budgeted {
            inner,
            remaining: None,
        }
    }

    pub fn limit(&mut self, bytes: usize) {
        self.remaining = Some(bytes);
    }

    pub fn lift(&mut self) {
        self.remaining = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let Some(remaining) = this.remaining else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if remaining == 0 {
            return Poll::Ready(Err(std::io::Error::other(HelloTooBig)));
        }
        let read = {
            let mut limited =
                ReadBuf::new(buf.initialize_unfilled_to(remaining.min(buf.remaining())));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            limited.filled().len()
        };
        buf.advance(read);
        this.remaining = Some(remaining - read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The WebSocket settings of every connection: messages up to the
/// configured size, small buffers (a thousand clients must stay cheap).
fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes.max(64 * 1024) * 2)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Runs one accepted connection to its end. `_counted` holds its place
/// in the connection limits until then.
pub async fn run<C: Send + 'static>(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    connection: ConnectionId,
    settings: Arc<Settings>,
    _counted: C,
) {
    let _ = stream.set_nodelay(true);
    let config = websocket_config(settings.max_message_bytes);
    match settings.tls.clone() {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
            let upgraded = tokio::time::timeout(HANDSHAKE_TIME, async {
                let tls = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
                tokio_tungstenite::accept_async_with_config(Budgeted::new(tls), Some(config))
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            match upgraded {
                Ok(Ok(websocket)) => serve(server, websocket, peer, connection, settings).await,
                Ok(Err(error)) => tracing::debug!(%peer, "handshake failed: {error}"),
                Err(_) => tracing::debug!(%peer, "no TLS and WebSocket handshake within 10 s"),
            }
        }
        None => {
            let upgraded = tokio::time::timeout(
                HANDSHAKE_TIME,
                tokio_tungstenite::accept_async_with_config(Budgeted::new(stream), Some(config)),
            )
            .await;
            match upgraded {
                Ok(Ok(websocket)) => serve(server, websocket, peer, connection, settings).await,
                Ok(Err(error)) => tracing::debug!(%peer, "handshake failed: {error}"),
                Err(_) => tracing::debug!(%peer, "no WebSocket handshake within 10 s"),
            }
        }
    }
}

/// What reading one message gave.
enum Read {
    Text(Utf8Bytes),
    /// A binary frame: the protocol is text only.
    Binary,
    Ended(Ending),
}

async fn read<S: AsyncRead + AsyncWrite + Unpin>(websocket: &mut WebSocketStream<S>) -> Read {
    loop {
        match websocket.next().await {
            Some(Ok(Message::Text(text))) => return Read::Text(text),
            Some(Ok(Message::Binary(_))) => return Read::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Read::Ended(Ending::Gone),
            Some(Err(error)) => return Read::Ended(ending_of(&error)),
        }
    }
}

fn ending_of(error: &WsError) -> Ending {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Ending::TooBig,
        WsError::Io(error)
            if error
                .get_ref()
                .is_some_and(|inner| inner.is::<HelloTooBig>()) =>
        {
            Ending::TooBig
        }
        _ => Ending::Gone,
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    server: Arc<Server>,
    mut websocket: WebSocketStream<Budgeted<S>>,
    peer: SocketAddr,
    connection: ConnectionId,
    settings: Arc<Settings>,
) {
    let connected = SystemTime::now();
    websocket.get_mut().limit(HELLO_BYTES);
    // AwaitingHello
    let first = tokio::select! {
        _ = server.stop.cancelled() => Read::Ended(Ending::Stopping),
        read = tokio::time::timeout(HELLO_TIME, read(&mut websocket)) => {
            read.unwrap_or(Read::Ended(Ending::Refused(ErrorCode::HelloTimeout)))
        }
    };
    let hello = match first {
        Read::Text(text) => protocol::parse_hello(&text),
        Read::Binary => Err(Refusal::new(
            None,
            ErrorCode::BadMessage,
            "messages are JSON text frames",
        )),
        Read::Ended(Ending::Refused(ErrorCode::HelloTimeout)) => Err(Refusal::new(
            None,
            ErrorCode::HelloTimeout,
            "no hello within 10 s",
        )),
        Read::Ended(ending) => {
            close(&mut websocket, &Farewell::new(ending)).await;
            return;
        }
    };
    // SigningIn
    let (queue, queued) = mpsc::channel::<Utf8Bytes>(OUTGOING_QUEUE);
    let (end, ended) = watch::channel::<Option<Farewell>>(None);
    let outbox = Outbox::new(queue, end);
    let signed_in = match hello {
        Ok(hello) => {
            server
                .sign_in(&hello, peer, connection, connected, &outbox)
                .await
        }
        Err(refusal) => Err(refusal),
    };
    let signed_in = match signed_in {
        Ok(signed_in) => signed_in,
        Err(refusal) => {
            let farewell = Farewell::saying(Ending::Refused(refusal.code), refusal.to_json());
            close(&mut websocket, &farewell).await;
            return;
        }
    };
    // SignedIn (the welcome is queued, the hub knows the client)
    let user = signed_in.user.clone();
    if !signed_in.registered {
        outbox.finish(Farewell::new(Ending::Stopping));
    }
    websocket.get_mut().lift();
    tracing::debug!(%user, %peer, connection, "signed in");

    let (sink, stream) = websocket.split();
    let started = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(
        write(
            sink,
            queued,
            ended.clone(),
            outbox.clone(),
            settings.ping,
            heard.clone(),
            started,
        )
        .with_current_subscriber(),
    );
    let session = Session {
        server: server.clone(),
        user: user.clone(),
        connection,
        outbox: outbox.clone(),
        limiter: RateLimiter::new(settings.commands_per_second, Instant::now()),
        in_flight: Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT)),
        commands: tokio::task::JoinSet::new(),
    };
    let stream = session.read(stream, ended.clone(), heard, started).await;
    // Whoever ended it set the farewell; a reader that simply stopped
    // (the client went) sets one now.
    outbox.finish(Farewell::new(Ending::Gone));
    let ending = ended
        .borrow()
        .as_ref()
        .map(|f| f.ending.clone())
        .unwrap_or(Ending::Gone);
    let sink = writer.await;
    // The session is over: the seat goes now, not after the close handshake.
    server.left(connection, &ending);
    if let Ok(sink) = sink {
        if let Ok(mut websocket) = stream.reunite(sink) {
            match ending {
                // It reads nothing (or is gone): nothing is worth waiting for.
                Ending::TooSlow | Ending::PingTimeout => {}
                // It closed: our reply to its close frame goes out.
                Ending::Gone => {
                    let _ = tokio::time::timeout(FAREWELL_TIME, websocket.flush()).await;
                }
                _ => drain(&mut websocket).await,
            }
        }
    }
    match ending {
        Ending::Gone | Ending::SignedOut | Ending::Stopping => {
            tracing::debug!(%user, %peer, connection, "connection closed: {}", ending.reason())
        }
        // The ones an administrator may want to know about.
        _ => tracing::info!(%user, %peer, connection, "disconnected: {}", ending.reason()),
    }
}

/// Says the last words and the close frame (within [`FAREWELL_TIME`]),
/// then waits briefly for the client's close reply, so the client reads
/// the close frame before the connection goes.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    websocket: &mut WebSocketStream<S>,
    farewell: &Farewell,
) {
    if farewell.ending == Ending::Gone {
        return;
    }
    let said = tokio::time::timeout(FAREWELL_TIME, async {
        if let Some(words) = &farewell.last_words {
            websocket.feed(Message::text(words.as_str())).await?;
        }
        websocket.send(close_message(&farewell.ending)).await
    })
    .await;
    if matches!(said, Ok(Ok(()))) {
        drain(websocket).await;
    }
}

fn close_message(ending: &Ending) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(ending.close_code()),
        reason: Utf8Bytes::from_static(ending.reason()),
    }))
}

/// Reads (and drops) until the client's close reply or [`FAREWELL_TIME`].
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(websocket: &mut WebSocketStream<S>) {
    let _ = tokio::time::timeout(FAREWELL_TIME, async {
        while let Some(Ok(message)) = websocket.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
}

type Sink<S> = futures::stream::SplitSink<WebSocketStream<S>, Message>;
type Stream<S> = futures::stream::SplitStream<WebSocketStream<S>>;

/// The writer: queued messages and pings out, until the farewell, which
/// it says; gives the sink back for the close handshake.
async fn write<S: AsyncRead + AsyncWrite + Unpin>(
    mut sink: Sink<S>,
    mut queued: mpsc::Receiver<Utf8Bytes>,
    mut ended: watch::Receiver<Option<Farewell>>,
    outbox: Outbox,
    ping: Duration,
    heard: Arc<AtomicU64>,
    started: Instant,
) -> Sink<S> {
    let mut pings = tokio::time::interval(ping);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.tick().await;
    // Nothing heard from the client (no pong, no message) for too long.
    let silent_too_long = || {
        let heard = Duration::from_millis(heard.load(Ordering::Relaxed));
        started.elapsed().saturating_sub(heard) > 2 * ping
    };
    loop {
        let message = tokio::select! {
            biased;
            _ = ended.wait_for(Option::is_some) => break,
            _ = pings.tick() => {
                if silent_too_long() {
                    outbox.finish(Farewell::new(Ending::PingTimeout));
                    break;
                }
                Message::Ping(Bytes::new())
            }
            text = queued.recv() => match text {
                Some(text) => {
                    outbox.taken(&text);
                    Message::Text(text)
                }
                None => break,
            },
        };
        // A client that stops reading blocks this send: its farewell (too
        // slow, revoked, stopping) must still end it, and so must the
        // ping deadline. A half-open connection (the peer gone, or
        // keeping its window shut) with output pending answers no ping,
        // since none can be sent, and would otherwise hold its seat until
        // TCP gives up, many minutes later, or never.
        let sent = {
            let send = sink.send(message);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    biased;
                    _ = ended.wait_for(Option::is_some) => break None,
                    _ = pings.tick() => if silent_too_long() {
                        outbox.finish(Farewell::new(Ending::PingTimeout));
                        break None;
                    },
                    sent = &mut send => break Some(sent),
                }
            }
        };
        match sent {
            Some(Ok(())) => {}
            Some(Err(_)) => {
                outbox.finish(Farewell::new(Ending::Gone));
                break;
            }
            None => break,
        }
    }
    let farewell = ended.borrow().clone();
    if let Some(farewell) = farewell {
        if !matches!(farewell.ending, Ending::Gone | Ending::TooSlow) {
            let _ = tokio::time::timeout(FAREWELL_TIME, async {
                if let Some(words) = &farewell.last_words {
                    sink.feed(Message::text(words.as_str())).await?;
                }
                sink.send(close_message(&farewell.ending)).await
            })
            .await;
        }
    }
    sink
}

/// The reader's side of a signed-in connection.
struct Session {
    server: Arc<Server>,
    user: String,
    connection: ConnectionId,
    outbox: Outbox,
    limiter: RateLimiter,
    in_flight: Arc<Semaphore>,
    /// The commands running; dropped with the session, which aborts them:
    /// a client that leaves (or reconnects, again and again) must not
    /// leave its commands waiting for the host behind, beyond any limit
    /// per connection.
    commands: tokio::task::JoinSet<()>,
}

impl Session {
    async fn read<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut stream: Stream<S>,
        mut ended: watch::Receiver<Option<Farewell>>,
        heard: Arc<AtomicU64>,
        started: Instant,
    ) -> Stream<S> {
        loop {
            let message = tokio::select! {
                biased;
                _ = ended.wait_for(Option::is_some) => return stream,
                message = stream.next() => message,
            };
            heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            match message {
                Some(Ok(Message::Text(text))) => self.command(&text),
                Some(Ok(Message::Binary(_))) => self.refuse(Refusal::new(
                    None,
                    ErrorCode::BadMessage,
                    "messages are JSON text frames",
                )),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    self.outbox.finish(Farewell::new(Ending::Gone));
                    return stream;
                }
                Some(Err(error)) => {
                    self.outbox.finish(Farewell::new(ending_of(&error)));
                    return stream;
                }
            }
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        if self.limited(refusal.id.clone()) {
            return;
        }
        self.outbox.send(refusal.to_json());
    }

    /// Counts a message against the rate; true when it is refused.
    fn limited(&mut self, id: Option<Value>) -> bool {
        match self.limiter.check(Instant::now()) {
            Verdict::Allowed => false,
            Verdict::Refused => {
                self.outbox.send(protocol::error_message(
                    id.as_ref(),
                    ErrorCode::RateLimited,
                    "too many commands: slow down",
                ));
                true
            }
            Verdict::Disconnect => {
                tracing::info!(user = %self.user, "disconnected: commands over the rate 100 times in a row");
                self.outbox.finish(Farewell::saying(
                    Ending::Flooding,
                    protocol::error_message(
                        id.as_ref(),
                        ErrorCode::RateLimited,
                        "too many commands over the rate: disconnected",
                    ),
                ));
                true
            }
        }
    }

    fn command(&mut self, text: &str) {
        let request = match protocol::parse_request(text) {
            Ok(request) => request,
            Err(refusal) => return self.refuse(refusal),
        };
        if self.limited(Some(request.id.clone())) {
            return;
        }
        if request.command == Command::SignOut {
            // The seat is free at once, before the close handshake.
            self.server
                .free_seat(self.connection, crate::seats::Leaving::SignedOut);
            self.outbox.finish(Farewell::saying(
                Ending::SignedOut,
                protocol::result_message(&request.id, json!({})),
            ));
            return;
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.outbox.send(protocol::error_message(
                Some(&request.id),
                ErrorCode::RateLimited,
                "too many commands in progress: wait for their answers",
            ));
            return;
        };
        let (server, user, connection, outbox) = (
            self.server.clone(),
            self.user.clone(),
            self.connection,
            self.outbox.clone(),
        );
        // The finished ones (at most 16 run at once) are let go here.
        while self.commands.try_join_next().is_some() {}
        self.commands.spawn(
            async move {
                let _permit = permit;
                let Request { id, command } = request;
                let answer = match execute(&server, &user, connection, command).await {
                    Ok(fields) => protocol::result_message(&id, fields),
                    Err(refusal) => {
                        protocol::error_message(Some(&id), refusal.code, &refusal.message)
                    }
                };
                outbox.send(answer);
            }
            .with_current_subscriber(),
        );
    }
}

/// A host service's failure as the client's `failed` error.
fn failed(message: String) -> Refusal {
    Refusal::new(None, ErrorCode::Failed, message)
}

/// Runs one command for `user`; the answer's fields.
async fn execute(
    server: &Server,
    user: &str,
    connection: ConnectionId,
    command: Command,
) -> Result<Value, Refusal> {
    let owned = user.to_string();
    match command {
        Command::Dial { number } => {
            tracing::info!(user, number = %number, "click-to-dial");
            let call_id = server
                .blocking(move |ctx| ctx.originate(&owned, &number))
                .await?
                .map_err(failed)?;
            Ok(json!({ "call_id": call_id }))
        }
        Command::HangUp { call_id } => {
            tracing::info!(user, call_id = %call_id, "hang up");
            server
                .blocking(move |ctx| ctx.hang_up(&owned, &call_id))
                .await?
                .map_err(failed)?;
            Ok(json!({}))
        }
        Command::SetDnd { on } => {
            tracing::info!(user, on, "set DND");
            server
                .blocking(move |ctx| ctx.set_dnd(&owned, on))
                .await?
                .map_err(failed)?;
            Ok(json!({}))
        }
        Command::SetForward { kind, target } => {
            tracing::info!(user, kind = ?kind, target = ?target, "set forward");
            server
                .blocking(move |ctx| ctx.set_forward(&owned, kind, target.as_deref()))
                .await?
                .map_err(failed)?;
            Ok(json!({}))
        }
        Command::GroupLogin { group, logged_in } => {
            tracing::info!(user, group = %group, logged_in, "group login");
            server
                .blocking(move |ctx| ctx.set_group_login(&owned, &group, logged_in))
                .await?
                .map_err(failed)?;
            Ok(json!({}))
        }
        Command::Lookup { number } => {
            let pending = server.ctx().lookup_caller(user, &number);
            let decision = tokio::time::timeout(crate::server::HOST_CALL_TIME, pending)
                .await
                .map_err(|_| Refusal::new(None, ErrorCode::Timeout, "the lookup took too long"))?
                .map_err(failed)?;
            Ok(protocol::lookup_json(&number, &decision))
        }
        Command::CallList { limit } => {
            let entries = server
                .blocking(move |ctx| ctx.call_list(&owned, limit))
                .await?
                .map_err(failed)?;
            Ok(json!({
                "entries": entries.iter().map(protocol::call_list_entry_json).collect::<Vec<_>>()
            }))
        }
        Command::Subscribe { users } => {
            // Watched first, read second: a change in between is sent.
            server
                .hub
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .subscribe(connection, &users)
                .map_err(|message| Refusal::new(None, ErrorCode::InvalidArgument, message))?;
            let wanted = users.clone();
            let presences = server
                .blocking(move |ctx| {
                    wanted
                        .iter()
                        .map(|user| (user.clone(), ctx.user_presence(user)))
                        .collect::<Vec<_>>()
                })
                .await?;
            let unknown: Vec<&String> = presences
                .iter()
                .filter(|(_, presence)| presence.is_none())
                .map(|(user, _)| user)
                .collect();
            if !unknown.is_empty() {
                let unknown: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
                server
                    .hub
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unsubscribe(connection, &unknown);
            }
            Ok(json!({
                "users": presences
                    .iter()
                    .filter_map(|(_, presence)| presence.as_ref().map(protocol::presence_json))
                    .collect::<Vec<_>>(),
                "unknown": unknown,
            }))
        }
        Command::Unsubscribe { users } => {
            let remaining = server
                .hub
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unsubscribe(connection, &users);
            Ok(json!({ "users": remaining }))
        }
        // Handled by the reader (it ends the connection).
        Command::SignOut => Ok(json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A connection whose peer keeps its window shut: a pipe of 1 KiB
    /// that nobody reads, as a half-open TCP connection with output
    /// pending looks to the writer.
    async fn stuck_connection() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let websocket =
            WebSocketStream::from_raw_socket(ours, Role::Server, Some(websocket_config(65_536)))
                .await;
        (websocket, theirs)
    }

    #[tokio::test]
    async fn a_send_that_never_completes_still_ends_at_the_ping_deadline() {
        let (websocket, _peer) = stuck_connection().await;
        let (sink, _stream) = websocket.split();
        let (queue, queued) = mpsc::channel(OUTGOING_QUEUE);
        let (end, ended) = watch::channel(None);
        let outbox = Outbox::new(queue, end);
        // More than the pipe takes: the send blocks for good.
        outbox.send("x".repeat(32 * 1024));
        let ping = Duration::from_millis(100);
        let writer = tokio::spawn(write(
            sink,
            queued,
            ended.clone(),
            outbox.clone(),
            ping,
            Arc::new(AtomicU64::new(0)),
            Instant::now(),
        ));
        // Three pings without a pong, then at most the 2 s the close frame may take.
        let finished = tokio::time::timeout(60 * ping, writer).await;
        assert!(
            finished.is_ok(),
            "the writer still waits on a client that reads nothing and answers no ping"
        );
        assert_eq!(
            ended.borrow().as_ref().map(|f| f.ending.clone()),
            Some(Ending::PingTimeout)
        );
    }

    #[tokio::test]
    async fn reading_past_the_budget_fails_until_it_is_lifted() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut budgeted = Budgeted::new(ours);
        budgeted.limit(10);
        theirs.write_all(&[7u8; 30]).await.unwrap();
        let mut buffer = [0u8; 64];
        assert_eq!(
            budgeted.read(&mut buffer).await.unwrap(),
            10,
            "no more than the budget"
        );
        let error = budgeted.read(&mut buffer).await.unwrap_err();
        assert!(
            error.get_ref().is_some_and(|e| e.is::<HelloTooBig>()),
            "{error}"
        );
        budgeted.lift();
        assert_eq!(budgeted.read(&mut buffer).await.unwrap(), 20);
    }
}
