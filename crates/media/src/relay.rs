//! The anchored media relay: two UDP sockets per call, one facing each party,
//! and one task that forwards RTP between them unchanged.
//!
//! The relay never transcodes: G.711, G.722 and telephone events pass through
//! byte for byte. While forwarding, it watches each leg: RFC 3550 receive
//! statistics ([`crate::stats`]), RFC 4733 key presses ([`crate::dtmf`]) and
//! taps that hand out received packets without copying them.
//!
//! Symmetric RTP: the address a leg sends to starts as the one from SDP
//! ([`CallMedia::set_remote`]) and then follows the source of the RTP actually
//! received on that leg, so parties behind NAT are reached where their
//! packets come from. Latching follows every change of source (a phone that
//! roams or re-binds keeps working); the price is that anyone who can send a
//! well-formed RTP packet to the port can redirect the leg, as with every
//! latching SBC, so the port range should not be reachable beyond the
//! networks the phones are on.
//!
//! The per-call task awaits only its two sockets (and its cancellation).
//! Everything it hands out goes through `try_send`, so a slow consumer of
//! events or taps loses frames, never delays audio.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dtmf::{DtmfDetector, DtmfPress};
use crate::error::MediaError;
use crate::rtp::RtpPacket;
use crate::stats::ReceiveStats;

/// All codecs the relay carries use an 8 kHz RTP clock (G.722 too, by the
/// RFC 3551 quirk), and so does telephone-event alongside them.
const RTP_CLOCK: NonZeroU32 = match NonZeroU32::new(8000) {
    Some(rate) => rate,
    None => unreachable!(),
};
/// Larger than any RTP packet the relay expects (no jumbo frames on SIP
/// trunks); a longer datagram is truncated by the kernel and then dropped.
const RECV_BUFFER: usize = 2048;
/// DTMF and other events waiting for the B2BUA; more are dropped and counted.
const EVENT_QUEUE: usize = 64;

/// One side of a call, as seen from the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// Faces the calling party (A).
    Caller,
    /// Faces the called party (B).
    Callee,
}

impl Leg {
    /// Both legs, in index order.
    pub const BOTH: [Leg; 2] = [Leg::Caller, Leg::Callee];

    /// The leg packets received on this one are forwarded to.
    pub fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Callee,
            Leg::Callee => Leg::Caller,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which legs a tap listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapLegs {
    /// Packets received from the caller.
    Caller,
    /// Packets received from the callee.
    Callee,
    /// Both directions, interleaved in arrival order.
    Both,
}

impl TapLegs {
    fn includes(self, leg: Leg) -> bool {
        match self {
            TapLegs::Caller => leg == Leg::Caller,
            TapLegs::Callee => leg == Leg::Callee,
            TapLegs::Both => true,
        }
    }
}

/// One RTP packet received on a leg, as a tap sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapFrame {
    /// The leg it was received on.
    pub leg: Leg,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// The payload, a slice of the received datagram (no copy).
    pub payload: Bytes,
}

/// Something the relay noticed on a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// A key press (RFC 4733), reported once.
    Dtmf {
        /// The leg it came from.
        leg: Leg,
        /// `0-9`, `*`, `#` or `A-D`.
        digit: char,
        /// How long the key was held.
        duration_ms: u32,
    },
}

/// Counters of one leg. "In" is what the party sent to the relay, "out" what
/// the relay sent to the party.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LegStats {
    /// Where the relay sends this leg's audio (from SDP or latched).
    pub remote: Option<SocketAddr>,
    /// Datagrams received (RTP and multiplexed RTCP).
    pub packets_in: u64,
    /// Bytes received (whole datagrams).
    pub bytes_in: u64,
    /// Datagrams sent: relayed from the other leg plus prompt packets.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Prompt packets among `packets_out`.
    pub prompt_packets_out: u64,
    /// RFC 3550 cumulative loss of received RTP (negative with duplicates).
    pub packets_lost: i64,
    /// RFC 3550 interarrival jitter of received RTP, in 8 kHz timestamp units.
    pub jitter: u32,
    /// [`LegStats::jitter`] in milliseconds.
    pub jitter_ms: f64,
    /// Received datagrams that are not RTP/RTCP and were dropped.
    pub invalid_packets: u64,
    /// Received packets not forwarded because a prompt was playing to the
    /// other leg, or the other leg had no remote address yet.
    pub packets_not_forwarded: u64,
    /// Sends that failed (e.g. ICMP unreachable reported on the socket).
    pub send_errors: u64,
    /// Tap frames of this leg dropped because a tap's channel was full.
    pub tap_dropped: u64,
    /// Events of this leg dropped because the event channel was full.
    pub events_dropped: u64,
    /// Key presses detected on this leg.
    pub dtmf_digits: u64,
    /// How often the remote address changed because RTP came from elsewhere.
    pub latch_changes: u64,
}

/// Where and on which ports the relay binds.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address to bind and to write into SDP (must be this machine's).
    pub address: IpAddr,
    /// RTP ports to use; only even ones are bound (RFC 3550 §11 leaves the
    /// odd one above for RTCP).
    pub ports: RangeInclusive<u16>,
}

/// Hands out [`CallMedia`]: a socket pair per call from a port range.
#[derive(Debug, Clone)]
pub struct MediaRelay {
    config: Arc<RelayConfig>,
    pool: Arc<PortPool>,
}

#[derive(Debug, Default)]
struct PortPool {
    in_use: Mutex<HashSet<u16>>,
    /// Where the next search starts: allocation walks the range round-robin
    /// so a port just freed is not reused at once (late packets of the old
    /// call would land in the new one).
    cursor: Mutex<u32>,
}

/// Ports of one call; returned to the pool when the call's last owner drops.
#[derive(Debug)]
struct PortLease {
    pool: Arc<PortPool>,
    ports: [u16; 2],
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut in_use = lock(&self.pool.in_use);
        for port in self.ports {
            in_use.remove(&port);
        }
    }
}

impl MediaRelay {
    /// A relay binding `config.address` on even ports of `config.ports`.
    pub fn new(config: RelayConfig) -> Self {
        MediaRelay {
            config: Arc::new(config),
            pool: Arc::default(),
        }
    }

    /// The relay's address, to write into SDP.
    pub fn address(&self) -> IpAddr {
        self.config.address
    }

    /// Binds a socket pair for one call and starts its relay task.
    ///
    /// Must be called within a tokio runtime. Ports that this relay already
    /// uses or that another process has bound are skipped.
    pub fn allocate(&self) -> Result<CallMedia, MediaError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?;
        let (caller, caller_port) = self.bind_next()?;
        let (callee, callee_port) = match self.bind_next() {
            Ok(bound) => bound,
            Err(e) => {
                lock(&self.pool.in_use).remove(&caller_port);
                return Err(e);
            }
        };
        let lease = PortLease {
            pool: self.pool.clone(),
            ports: [caller_port, callee_port],
        };
        let _guard = runtime.enter();
        let sockets = [UdpSocket::from_std(caller), UdpSocket::from_std(callee)];
        let [Ok(caller), Ok(callee)] = sockets else {
            let [a, b] = sockets;
            let source = a.err().or(b.err()).expect("one registration failed");
            return Err(MediaError::Bind {
                address: SocketAddr::new(self.config.address, caller_port),
                source,
            });
        };
        let local = [
            SocketAddr::new(self.config.address, caller_port),
            SocketAddr::new(self.config.address, callee_port),
        ];
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(CallShared {
            sockets: [caller, callee],
            local,
            legs: [Mutex::default(), Mutex::default()],
            prompts_playing: [AtomicUsize::new(0), AtomicUsize::new(0)],
            events: events_tx,
            _lease: lease,
        });
        let cancel = CancellationToken::new();
        let task = runtime.spawn(relay_task(shared.clone(), cancel.clone()));
        tracing::debug!(caller = %local[0], callee = %local[1], "call media allocated");
        Ok(CallMedia {
            shared,
            cancel,
            events: Mutex::new(Some(events_rx)),
            task: Some(task),
        })
    }

    /// Reserves and binds the next free even port.
    fn bind_next(&self) -> Result<(std::net::UdpSocket, u16), MediaError> {
        let first = *self.config.ports.start();
        let last = *self.config.ports.end();
        let first_even = u32::from(first) + u32::from(first) % 2;
        let count = if u32::from(last) >= first_even {
            (u32::from(last) - first_even) / 2 + 1
        } else {
            0
        };
        let start = {
            let mut cursor = lock(&self.pool.cursor);
            let start = *cursor;
            *cursor = cursor.wrapping_add(1);
            start
        };
        for step in 0..count {
            let port = (first_even + 2 * (start.wrapping_add(step) % count)) as u16;
            if !lock(&self.pool.in_use).insert(port) {
                continue;
            }
            let address = SocketAddr::new(self.config.address, port);
            match std::net::UdpSocket::bind(address).and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            }) {
                Ok(socket) => {
                    *lock(&self.pool.cursor) = start.wrapping_add(step).wrapping_add(1);
                    return Ok((socket, port));
                }
                Err(e) => {
                    lock(&self.pool.in_use).remove(&port);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        return Err(MediaError::Bind { address, source: e });
                    }
                    tracing::trace!(%address, "RTP port in use elsewhere, skipped");
                }
            }
        }
        Err(MediaError::PortsExhausted {
            address: self.config.address,
            first,
            last,
        })
    }
}

/// State shared by the call's handle, its relay task and prompt players.
#[derive(Debug)]
struct CallShared {
    sockets: [UdpSocket; 2],
    local: [SocketAddr; 2],
    legs: [Mutex<LegState>; 2],
    /// Prompts playing to each leg; while non-zero, the other leg's packets
    /// are not forwarded to it.
    prompts_playing: [AtomicUsize; 2],
    events: mpsc::Sender<MediaEvent>,
    _lease: PortLease,
}

impl CallShared {
    fn leg(&self, leg: Leg) -> MutexGuard<'_, LegState> {
        lock(&self.legs[leg.index()])
    }
}

#[derive(Debug, Default)]
struct LegState {
    counters: LegStats,
    receive: ReceiveStats,
    dtmf_payload_type: Option<u8>,
    dtmf: DtmfDetector,
    taps: Vec<mpsc::Sender<TapFrame>>,
}

/// The media of one call: a socket per leg and the task relaying between
/// them. Dropping it (or [`CallMedia::close`]) stops the task and frees the
/// ports.
#[derive(Debug)]
pub struct CallMedia {
    shared: Arc<CallShared>,
    cancel: CancellationToken,
    events: Mutex<Option<mpsc::Receiver<MediaEvent>>>,
    task: Option<JoinHandle<()>>,
}

impl CallMedia {
    /// The relay's address and port facing `leg`: what goes into the SDP
    /// sent to that party.
    pub fn local_addr(&self, leg: Leg) -> SocketAddr {
        self.shared.local[leg.index()]
    }

    /// Where to send `leg`'s audio, from that party's SDP. Replaced again as
    /// soon as RTP arrives from elsewhere (symmetric RTP).
    pub fn set_remote(&self, leg: Leg, remote: SocketAddr) {
        self.shared.leg(leg).counters.remote = Some(remote);
    }

    /// The telephone-event payload type negotiated for `leg` (`None`: no
    /// DTMF detection on it).
    pub fn set_dtmf_payload_type(&self, leg: Leg, payload_type: Option<u8>) {
        self.shared.leg(leg).dtmf_payload_type = payload_type;
    }

    /// The event channel. Returns it the first time only.
    pub fn events(&self) -> Option<mpsc::Receiver<MediaEvent>> {
        lock(&self.events).take()
    }

    /// A tap on received packets of `which` legs, holding up to `capacity`
    /// frames (at least 1). Frames that do not fit are dropped and counted in
    /// [`LegStats::tap_dropped`]. The tap ends when the receiver is dropped
    /// or the call closes.
    pub fn tap(&self, which: TapLegs, capacity: usize) -> mpsc::Receiver<TapFrame> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        for leg in Leg::BOTH {
            if which.includes(leg) {
                self.shared.leg(leg).taps.push(tx.clone());
            }
        }
        rx
    }

    /// Counters of both legs, indexed like [`Leg::BOTH`].
    pub fn stats(&self) -> [LegStats; 2] {
        Leg::BOTH.map(|leg| snapshot(&self.shared.leg(leg)))
    }

    /// Stops relaying, waits for the task to finish (reporting any key press
    /// whose end was lost) and frees the ports. Returns the final counters.
    pub async fn close(mut self) -> [LegStats; 2] {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "media relay task failed");
            }
        }
        self.stats()
    }

    pub(crate) fn shared_for_prompt(&self) -> PromptHandle {
        PromptHandle {
            shared: self.shared.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What a prompt player needs of a call: its socket, remote and counters.
pub(crate) struct PromptHandle {
    shared: Arc<CallShared>,
    cancel: CancellationToken,
}

/// Marks a prompt as playing to a leg until dropped, so the other leg's
/// audio resumes even if the playing future is cancelled.
pub(crate) struct PlayingGuard {
    shared: Arc<CallShared>,
    leg: Leg,
}

impl Drop for PlayingGuard {
    fn drop(&mut self) {
        self.shared.prompts_playing[self.leg.index()].fetch_sub(1, Ordering::AcqRel);
    }
}

impl PromptHandle {
    /// Starts muting the other leg towards `leg`.
    pub(crate) fn start_playing(&self, leg: Leg) -> PlayingGuard {
        self.shared.prompts_playing[leg.index()].fetch_add(1, Ordering::AcqRel);
        PlayingGuard {
            shared: self.shared.clone(),
            leg,
        }
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Sends one prompt packet to `leg`'s current remote.
    pub(crate) async fn send(&self, leg: Leg, packet: &[u8]) -> Result<(), MediaError> {
        let remote = self
            .shared
            .leg(leg)
            .counters
            .remote
            .ok_or(MediaError::NoRemote { leg })?;
        let sent = self.shared.sockets[leg.index()]
            .send_to(packet, remote)
            .await;
        let mut state = self.shared.leg(leg);
        match sent {
            Ok(n) => {
                state.counters.packets_out += 1;
                state.counters.prompt_packets_out += 1;
                state.counters.bytes_out += n as u64;
                Ok(())
            }
            Err(source) => {
                state.counters.send_errors += 1;
                Err(MediaError::Send { leg, source })
            }
        }
    }
}

fn snapshot(state: &LegState) -> LegStats {
    let mut stats = state.counters.clone();
    stats.packets_lost = state.receive.cumulative_lost();
    stats.jitter = state.receive.jitter();
    stats.jitter_ms = f64::from(stats.jitter) * 1000.0 / f64::from(RTP_CLOCK.get());
    stats
}

/// Poisoning only means another thread panicked mid-update of counters;
/// they are still usable, and the relay must keep running.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A random-enough u32 for SSRCs and initial sequence numbers, without a
/// dependency: std's hasher keys are random per process and per instance.
pub(crate) fn random_u32() -> u32 {
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// The per-call loop: receive on either socket, account, forward.
async fn relay_task(shared: Arc<CallShared>, cancel: CancellationToken) {
    let start = Instant::now();
    let mut buffers = [
        BytesMut::with_capacity(RECV_BUFFER),
        BytesMut::with_capacity(RECV_BUFFER),
    ];
    loop {
        for buf in &mut buffers {
            // Reclaims the allocation once every frame handed out is gone.
            buf.reserve(RECV_BUFFER);
        }
        let [caller_buf, callee_buf] = &mut buffers;
        let (leg, received) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = shared.sockets[0].recv_buf_from(caller_buf) => (Leg::Caller, r),
            r = shared.sockets[1].recv_buf_from(callee_buf) => (Leg::Callee, r),
        };
        let datagram = buffers[leg.index()].split().freeze();
        match received {
            Ok((_, source)) => {
                let arrival = start.elapsed();
                if let Some(remote) = on_receive(&shared, leg, source, datagram.clone(), arrival) {
                    forward(&shared, leg.other(), &datagram, remote).await;
                }
            }
            // ICMP port unreachable from an earlier send shows up here on
            // Linux; it concerns the peer, not this socket.
            Err(e) => tracing::trace!(?leg, error = %e, "RTP receive error"),
        }
    }
    // Key presses whose end reports were all lost.
    for leg in Leg::BOTH {
        let press = shared.leg(leg).dtmf.flush();
        if let Some(press) = press {
            deliver_dtmf(&shared, leg, press);
        }
    }
    tracing::debug!(caller = %shared.local[0], callee = %shared.local[1], "call media closed");
}

/// Accounts a received datagram on `leg`. Returns where to forward it, if
/// anywhere.
fn on_receive(
    shared: &CallShared,
    leg: Leg,
    source: SocketAddr,
    datagram: Bytes,
    arrival: Duration,
) -> Option<SocketAddr> {
    let mut presses: Vec<DtmfPress> = Vec::new();
    {
        let mut state = shared.leg(leg);
        state.counters.packets_in += 1;
        state.counters.bytes_in += datagram.len() as u64;
        let Ok(packet) = RtpPacket::parse(&datagram) else {
            state.counters.invalid_packets += 1;
            return None;
        };
        // RTCP multiplexed on the RTP port (RFC 5761): packet types 200-204
        // read as marker + PT 72-76. Forwarded, but not RTP to account.
        let is_rtcp = (72..=76).contains(&packet.payload_type()) && packet.marker();
        if !is_rtcp {
            if state.counters.remote != Some(source) {
                tracing::debug!(?leg, from = ?state.counters.remote, to = %source, "RTP source latched");
                state.counters.remote = Some(source);
                state.counters.latch_changes += 1;
            }
            state
                .receive
                .record_at(packet.sequence(), packet.timestamp(), arrival, RTP_CLOCK);
            if state.dtmf_payload_type == Some(packet.payload_type()) {
                match state
                    .dtmf
                    .push(packet.payload(), packet.timestamp(), packet.marker())
                {
                    Ok(done) => presses = done,
                    Err(e) => tracing::debug!(?leg, error = %e, "bad telephone-event payload"),
                }
            }
            if !state.taps.is_empty() {
                tap_frame(&mut state, leg, &packet, &datagram);
            }
        }
    }
    for press in presses {
        deliver_dtmf(shared, leg, press);
    }

    let other = leg.other();
    let mut forward_to = None;
    if shared.prompts_playing[other.index()].load(Ordering::Acquire) == 0 {
        forward_to = shared.leg(other).counters.remote;
    }
    if forward_to.is_none() {
        shared.leg(leg).counters.packets_not_forwarded += 1;
    }
    forward_to
}

fn tap_frame(state: &mut LegState, leg: Leg, packet: &RtpPacket<'_>, datagram: &Bytes) {
    let start = packet.header_len();
    let frame = TapFrame {
        leg,
        sequence: packet.sequence(),
        timestamp: packet.timestamp(),
        payload_type: packet.payload_type(),
        marker: packet.marker(),
        payload: datagram.slice(start..start + packet.payload().len()),
    };
    let mut dropped = 0;
    state.taps.retain(|tap| match tap.try_send(frame.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped += 1;
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
    state.counters.tap_dropped += dropped;
}

fn deliver_dtmf(shared: &CallShared, leg: Leg, press: DtmfPress) {
    let duration_ms = press.duration / (RTP_CLOCK.get() / 1000);
    let digit = press.digit.to_char();
    tracing::debug!(?leg, %digit, duration_ms, ended = press.ended, "DTMF");
    let event = MediaEvent::Dtmf {
        leg,
        digit,
        duration_ms,
    };
    let mut state = shared.leg(leg);
    state.counters.dtmf_digits += 1;
    if shared.events.try_send(event).is_err() {
        state.counters.events_dropped += 1;
    }
}

async fn forward(shared: &CallShared, to: Leg, datagram: &[u8], remote: SocketAddr) {
    let sent = shared.sockets[to.index()].send_to(datagram, remote).await;
    let mut state = shared.leg(to);
    match sent {
        Ok(n) => {
            state.counters.packets_out += 1;
            state.counters.bytes_out += n as u64;
        }
        Err(e) => {
            state.counters.send_errors += 1;
            tracing::trace!(leg = ?to, %remote, error = %e, "RTP send failed");
        }
    }
}
