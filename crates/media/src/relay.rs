//! The anchored media relay: two UDP sockets per call, one facing each party,
//! and one task that forwards RTP between them unchanged.
//!
//! The relay never transcodes: G.711, G.722 and telephone events pass through
//! byte for byte. While forwarding, it watches each leg: RFC 3550 receive
//! statistics ([`crate::stats`]), RFC 4733 key presses ([`crate::dtmf`]) and
//! taps that hand out received packets without copying them.
//!
//! Everything arriving on a relay port is written by whoever can reach it, so
//! each leg latches to its party ([`crate::latch`], [`Latching::Strict`] by
//! default): to the address its SDP signalled ([`CallMedia::set_remote`]), or
//! within the first seconds after that to the first source of RTP (parties
//! behind NAT), and afterwards follows a move of the source only for the same
//! SSRC. Datagrams from anyone else are dropped before anything looks at
//! them: not forwarded, not tapped, not fed to DTMF detection or statistics,
//! only counted ([`LegStats::foreign_packets`]). Until a leg has latched, the
//! relay sends to it at the signalled address.
//!
//! A party often starts sending before its address reaches the relay (a
//! phone sends RTP as soon as it has the ACK, which the SIP stack sends
//! before the call's task reads the answer's SDP; a transfer target
//! likewise). The last few foreign datagrams of a leg (at most
//! [`HOLD_LIMIT`], none older than [`HOLD_AGE`]) are therefore held, and
//! when a new address is signalled the ones that came from exactly that
//! address are handled as if they arrived then, before the next datagram
//! of the leg. Nothing from any other source is ever taken from the hold.
//!
//! Ports are picked at random from the range, so the port of a call cannot be
//! guessed from another's, and a port freed by a call is not handed out again
//! for a few seconds ([`RelayConfig::port_quarantine`]) unless nothing else
//! is free: late packets of the old call must not reach, or latch, a new one.
//!
//! The per-call task awaits only its two sockets (and its cancellation); the
//! locks it takes are never held across an await. Everything it hands out
//! goes through `try_send`, so a slow consumer of events or taps loses
//! frames, never delays audio.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dtmf::{DtmfDetector, DtmfPress};
use crate::error::MediaError;
pub use crate::latch::Latching;
use crate::latch::{Foreign, LegLatch, PacketKind, RemoteChange, Verdict};
use crate::rtp::RtpPacket;
use crate::srtp::{LegSrtp, SrtpKeys, SrtpReject};
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
/// Foreign datagrams a leg holds for a signalled address still to come.
pub const HOLD_LIMIT: usize = 8;
/// A held datagram older than this is not forwarded any more.
pub const HOLD_AGE: Duration = Duration::from_millis(300);
/// DTMF and other events waiting for the B2BUA; more are dropped and counted.
const EVENT_QUEUE: usize = 64;
/// How long after the first signalled address any source may latch a leg.
pub const DEFAULT_LATCH_WINDOW: Duration = Duration::from_secs(3);
/// How long a freed port stays out of use.
pub const DEFAULT_PORT_QUARANTINE: Duration = Duration::from_secs(5);
/// Random picks tried before scanning the range for a free port.
const RANDOM_PROBES: usize = 8;

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

    /// Its place in [`Leg::BOTH`] (and in per-leg arrays).
    pub fn index(self) -> usize {
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
    /// Where the relay sends this leg's audio: the latched address, else
    /// the one from SDP.
    pub remote: Option<SocketAddr>,
    /// Datagrams received (RTP and multiplexed RTCP), including invalid and
    /// foreign ones.
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
    /// How often the remote address changed because RTP came from elsewhere
    /// (latching to a NAT address, a stream that moved).
    pub latch_changes: u64,
    /// Well-formed datagrams dropped because they did not come from this
    /// leg's party (see [`crate::latch`]): never forwarded, tapped or
    /// otherwise looked at.
    pub foreign_packets: u64,
    /// The leg carries SRTP, terminated in the relay (at the call's end:
    /// whether it did last).
    pub srtp: bool,
    /// SRTP datagrams dropped because they did not authenticate (wrong
    /// key, forged, plain RTP on an SRTP leg, too short).
    pub srtp_rejected: u64,
    /// SRTP datagrams dropped as replays.
    pub srtp_replayed: u64,
    /// RTCP datagrams received on the RTCP port (RTP port + 1) from the
    /// party and relayed on; RTCP multiplexed on the RTP port is counted
    /// with the RTP.
    pub rtcp_in: u64,
    /// RTCP datagrams sent to the party's RTCP port.
    pub rtcp_out: u64,
    /// Datagrams on the RTCP port dropped: not the party's, not RTCP, or
    /// (SRTCP) not authenticated.
    pub rtcp_dropped: u64,
}

/// Where and on which ports the relay binds, and how its legs latch.
///
/// Build it with [`RelayConfig::new`] and override fields as needed:
/// `RelayConfig { latching: Latching::Follow, ..RelayConfig::new(address, ports) }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Address to bind and to write into SDP (must be this machine's).
    pub address: IpAddr,
    /// RTP ports to use: even ones for RTP, the odd one above each (when in
    /// the range) for its RTCP (RFC 3550 §11).
    pub ports: RangeInclusive<u16>,
    /// How legs latch to their party; [`Latching::Strict`] unless set.
    pub latching: Latching,
    /// How long after the first [`CallMedia::set_remote`] of a leg the first
    /// RTP from any source latches it (parties behind NAT).
    pub latch_window: Duration,
    /// How long a port freed by a call is not handed out again.
    pub port_quarantine: Duration,
}

impl RelayConfig {
    /// Binding `address` on even ports of `ports`, strict latching with a
    /// [`DEFAULT_LATCH_WINDOW`], ports quarantined for
    /// [`DEFAULT_PORT_QUARANTINE`].
    pub fn new(address: IpAddr, ports: RangeInclusive<u16>) -> Self {
        RelayConfig {
            address,
            ports,
            latching: Latching::Strict,
            latch_window: DEFAULT_LATCH_WINDOW,
            port_quarantine: DEFAULT_PORT_QUARANTINE,
        }
    }
}

/// Hands out [`CallMedia`]: a socket pair per call from a port range.
#[derive(Debug, Clone)]
pub struct MediaRelay {
    config: Arc<RelayConfig>,
    pool: Arc<PortPool>,
    /// Where relay tasks run: a runtime of their own (`on_runtime`), so
    /// nothing that can stall shares their scheduler; else the caller's.
    runtime: Option<tokio::runtime::Handle>,
}

/// The even ports of the range and what each is doing.
#[derive(Debug)]
struct PortPool {
    first_even: u16,
    quarantine: Duration,
    slots: Mutex<PortSlots>,
}

#[derive(Debug)]
struct PortSlots {
    /// One per even port of the range, in port order.
    state: Vec<SlotState>,
    /// Quarantined slots, oldest first. Each slot is in here at most once
    /// (only a slot in use can be freed), so it never outgrows the range.
    quarantined: VecDeque<(usize, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    InUse,
    /// Freed recently; late packets of its last call may still arrive.
    Quarantined,
}

impl PortPool {
    fn new(ports: &RangeInclusive<u16>, quarantine: Duration) -> Self {
        let first = u32::from(*ports.start());
        let last = u32::from(*ports.end());
        let first_even = first + first % 2;
        let count = if last >= first_even {
            (last - first_even) / 2 + 1
        } else {
            0
        };
        PortPool {
            // Only read when count > 0, where first_even <= last fits a u16.
            first_even: u16::try_from(first_even).unwrap_or(u16::MAX),
            quarantine,
            slots: Mutex::new(PortSlots {
                state: vec![SlotState::Free; count as usize],
                quarantined: VecDeque::new(),
            }),
        }
    }

    fn port(&self, slot: usize) -> u16 {
        // slot < count <= 32768, and first_even + 2 * (count - 1) <= 65535.
        self.first_even + 2 * slot as u16
    }

    /// Reserves a free slot: one of a few random picks, else the first free
    /// one from `scan_from` on (wrapping), skipping the `skip` slots already
    /// scanned, else (the range is all in use or quarantined) the slot
    /// quarantined longest. Returns the slot and how far the scan got.
    fn reserve(&self, probe: bool, scan_from: usize, skip: usize) -> Option<(usize, usize)> {
        let mut slots = lock(&self.slots);
        let now = Instant::now();
        slots.expire(now, self.quarantine);
        let count = slots.state.len();
        if count == 0 {
            return None;
        }
        if probe {
            let mut rng = rand::thread_rng();
            for _ in 0..RANDOM_PROBES {
                let slot = rng.gen_range(0..count);
                if slots.state[slot] == SlotState::Free {
                    slots.state[slot] = SlotState::InUse;
                    return Some((slot, skip));
                }
            }
        }
        for scanned in skip..count {
            let slot = (scan_from + scanned) % count;
            if slots.state[slot] == SlotState::Free {
                slots.state[slot] = SlotState::InUse;
                return Some((slot, scanned + 1));
            }
        }
        // Nothing free: rather the slot quarantined longest than no call.
        let (slot, _) = slots.quarantined.pop_front()?;
        slots.state[slot] = SlotState::InUse;
        Some((slot, count))
    }

    /// Gives back a reserved slot that could not be bound.
    fn unreserve(&self, slot: usize) {
        lock(&self.slots).state[slot] = SlotState::Free;
    }

    /// Frees the slots of an ended call, into quarantine.
    fn release(&self, slots_of_call: &[usize]) {
        let mut slots = lock(&self.slots);
        // Read under the lock, so the queue stays in time order.
        let now = Instant::now();
        for &slot in slots_of_call {
            if self.quarantine.is_zero() {
                slots.state[slot] = SlotState::Free;
            } else {
                slots.state[slot] = SlotState::Quarantined;
                slots.quarantined.push_back((slot, now));
            }
        }
        slots.expire(now, self.quarantine);
    }
}

impl PortSlots {
    /// Frees the slots whose quarantine is over.
    fn expire(&mut self, now: Instant, quarantine: Duration) {
        while let Some(&(slot, freed)) = self.quarantined.front() {
            if now.saturating_duration_since(freed) < quarantine {
                break;
            }
            self.quarantined.pop_front();
            self.state[slot] = SlotState::Free;
        }
    }
}

/// Ports of one call; returned to the pool when the call's last owner drops.
#[derive(Debug)]
struct PortLease {
    pool: Arc<PortPool>,
    slots: [usize; 2],
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.release(&self.slots);
    }
}

impl MediaRelay {
    /// A relay binding `config.address` on even ports of `config.ports`.
    pub fn new(config: RelayConfig) -> Self {
        let pool = Arc::new(PortPool::new(&config.ports, config.port_quarantine));
        MediaRelay {
            config: Arc::new(config),
            pool,
            runtime: None,
        }
    }

    /// Runs every call's relay task (and registers its sockets) on
    /// `runtime` instead of the allocating task's.
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The relay's address, to write into SDP.
    pub fn address(&self) -> IpAddr {
        self.config.address
    }

    /// The relay's configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Binds a socket pair for one call and starts its relay task.
    ///
    /// Must be called within a tokio runtime unless the relay has one of its
    /// own ([`MediaRelay::on_runtime`]). Ports are picked at random;
    /// ports that this relay uses or freed only recently, and ports another
    /// process has bound, are skipped.
    pub fn allocate(&self) -> Result<CallMedia, MediaError> {
        let runtime = match &self.runtime {
            Some(runtime) => runtime.clone(),
            None => tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?,
        };
        let (caller, caller_slot) = self.bind_next()?;
        let (callee, callee_slot) = match self.bind_next() {
            Ok(bound) => bound,
            Err(e) => {
                self.pool.unreserve(caller_slot);
                return Err(e);
            }
        };
        let (caller_port, callee_port) = (self.pool.port(caller_slot), self.pool.port(callee_slot));
        // From here on the lease frees both slots, whatever happens.
        let lease = PortLease {
            pool: self.pool.clone(),
            slots: [caller_slot, callee_slot],
        };
        let _guard = runtime.enter();
        let sockets = [UdpSocket::from_std(caller), UdpSocket::from_std(callee)];
        let [Ok(caller), Ok(callee)] = sockets else {
            let [a, b] = sockets;
            let source = a.err().or(b.err()).expect("one registration failed");
            return Err(MediaError::Bind {
                address: SocketAddr::new(self.config.address, caller_port),
                error: source,
            });
        };
        let local = [
            SocketAddr::new(self.config.address, caller_port),
            SocketAddr::new(self.config.address, callee_port),
        ];
        // RTCP on the port above each RTP port (RFC 3550 §11), when it is
        // in the range and free: the pool hands out even ports only, so
        // only another program can hold it; then that leg's RTCP (not
        // multiplexed) is not relayed. Never outside the range: those
        // ports are not the relay's to take.
        let rtcp = local.map(|rtp| {
            let port = rtp.port().checked_add(1)?;
            if !self.config.ports.contains(&port) {
                return None;
            }
            let address = SocketAddr::new(rtp.ip(), port);
            let bound = std::net::UdpSocket::bind(address)
                .and_then(|socket| {
                    socket.set_nonblocking(true)?;
                    Ok(socket)
                })
                .and_then(UdpSocket::from_std);
            match bound {
                Ok(socket) => Some(socket),
                Err(error) => {
                    tracing::debug!(%address, %error, "RTCP port not bound: RTCP of this leg is not relayed");
                    None
                }
            }
        });
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let new_leg = |leg| {
            Mutex::new(LegState {
                rx: LegReceiver::new(leg, self.config.latching, self.config.latch_window),
                taps: Vec::new(),
                held: VecDeque::new(),
                crypto: LegCrypto::Plain,
            })
        };
        let shared = Arc::new(CallShared {
            sockets: [caller, callee],
            rtcp,
            local,
            legs: [new_leg(Leg::Caller), new_leg(Leg::Callee)],
            prompts_playing: [AtomicUsize::new(0), AtomicUsize::new(0)],
            new_address: [AtomicBool::new(false), AtomicBool::new(false)],
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

    /// Reserves and binds a free even port, picked at random. Returns the
    /// socket and its slot in the pool.
    ///
    /// Bounded work: a few random picks, then one pass over the range from
    /// a random offset (the range may be nearly full).
    fn bind_next(&self) -> Result<(std::net::UdpSocket, usize), MediaError> {
        let exhausted = || MediaError::PortsExhausted {
            address: self.config.address,
            first: *self.config.ports.start(),
            last: *self.config.ports.end(),
        };
        let count = lock(&self.pool.slots).state.len();
        if count == 0 {
            return Err(exhausted());
        }
        let scan_from = rand::thread_rng().gen_range(0..count);
        let mut scanned = 0;
        let mut probe = true;
        while let Some((slot, scan_reached)) = self.pool.reserve(probe, scan_from, scanned) {
            // Once random picks hit a port taken by another process, walk
            // the range instead of picking again.
            probe = false;
            scanned = scan_reached;
            let address = SocketAddr::new(self.config.address, self.pool.port(slot));
            match std::net::UdpSocket::bind(address).and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            }) {
                Ok(socket) => return Ok((socket, slot)),
                Err(e) => {
                    self.pool.unreserve(slot);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        return Err(MediaError::Bind { address, error: e });
                    }
                    tracing::trace!(%address, "RTP port in use elsewhere, skipped");
                }
            }
        }
        Err(exhausted())
    }
}

/// State shared by the call's handle, its relay task and prompt players.
#[derive(Debug)]
struct CallShared {
    sockets: [UdpSocket; 2],
    /// The RTCP socket of each leg (RTP port + 1), if it could be bound.
    rtcp: [Option<UdpSocket>; 2],
    local: [SocketAddr; 2],
    legs: [Mutex<LegState>; 2],
    /// Prompts playing to each leg; while non-zero, the other leg's packets
    /// are not forwarded to it.
    prompts_playing: [AtomicUsize; 2],
    /// An address was signalled for the leg since its hold was last
    /// looked at.
    new_address: [AtomicBool; 2],
    events: mpsc::Sender<MediaEvent>,
    _lease: PortLease,
}

impl CallShared {
    fn leg(&self, leg: Leg) -> MutexGuard<'_, LegState> {
        lock(&self.legs[leg.index()])
    }
}

#[derive(Debug)]
struct LegState {
    rx: LegReceiver,
    taps: Vec<TapSender>,
    /// The last foreign datagrams, oldest first (see the module docs).
    held: VecDeque<Held>,
    crypto: LegCrypto,
}

/// Whether a leg's packets are encrypted, as a state of its own.
#[derive(Debug, Default)]
enum LegCrypto {
    /// Plain RTP both ways.
    #[default]
    Plain,
    /// SRTP was offered to the party, its key is not known yet (it comes
    /// with the answer): its packets are held, nothing is sent to it (never
    /// plain audio to a leg that expects SRTP).
    AwaitingKeys,
    /// SRTP terminated here.
    Srtp(Box<LegSrtp>),
}

/// A foreign datagram kept for an address that may still be signalled.
#[derive(Debug)]
struct Held {
    source: SocketAddr,
    datagram: Bytes,
    /// Already decrypted (an SRTP packet is decrypted only once: a second
    /// time it would be a replay).
    decrypted: bool,
    at: Instant,
    arrival: Duration,
}

/// The relay's end of one tap.
#[derive(Debug)]
struct TapSender {
    frames: mpsc::Sender<TapFrame>,
    dropped: Arc<TapDrops>,
}

/// Frames a tap dropped, per leg (indexed like [`Leg::BOTH`]).
#[derive(Debug, Default)]
struct TapDrops([AtomicU64; 2]);

/// The receiving end of a tap: the frames, and how many of each leg's did
/// not fit (so a consumer can account for every frame the relay saw).
#[derive(Debug)]
pub struct TapReceiver {
    frames: mpsc::Receiver<TapFrame>,
    dropped: Arc<TapDrops>,
}

impl TapReceiver {
    /// The next frame; `None` once the call's media is closed.
    pub async fn recv(&mut self) -> Option<TapFrame> {
        self.frames.recv().await
    }

    /// Frames of `leg` this tap dropped so far because it was full.
    pub fn dropped(&self, leg: Leg) -> u64 {
        self.dropped.0[leg.index()].load(Ordering::Acquire)
    }
}

/// The socket-free part of one leg: what the relay does with a datagram
/// received on it (parse, latch, statistics, DTMF detection) and its
/// counters. The relay task feeds it; tests and fuzzing drive it directly.
#[derive(Debug, Clone)]
pub struct LegReceiver {
    leg: Leg,
    /// Counters; `remote`, `packets_lost` and `jitter*` are filled in by
    /// [`LegReceiver::stats`].
    counters: LegStats,
    latch: LegLatch,
    receive: ReceiveStats,
    dtmf_payload_type: Option<u8>,
    dtmf: DtmfDetector,
}

/// What [`LegReceiver::receive`] made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reception<'a> {
    /// Not RTP or RTCP: dropped, counted in [`LegStats::invalid_packets`].
    Invalid,
    /// Not from this leg's party: dropped, counted in
    /// [`LegStats::foreign_packets`].
    Foreign(Foreign),
    /// The party's multiplexed RTCP: to forward, nothing else.
    Rtcp,
    /// The party's RTP: to forward and tap; accounted in the statistics.
    Rtp {
        /// The packet, borrowing the datagram.
        packet: RtpPacket<'a>,
        /// Key presses it completed.
        presses: Vec<DtmfPress>,
    },
}

impl Reception<'_> {
    /// Whether the datagram is the party's, to go on to the other leg
    /// (unless a prompt plays there or it has no address yet).
    pub fn is_forwarded(&self) -> bool {
        matches!(self, Reception::Rtcp | Reception::Rtp { .. })
    }
}

impl LegReceiver {
    /// A leg that has seen nothing, latching as `latching` says with a
    /// latch window of `window`.
    pub fn new(leg: Leg, latching: Latching, window: Duration) -> Self {
        LegReceiver {
            leg,
            counters: LegStats::default(),
            latch: LegLatch::new(latching, window),
            receive: ReceiveStats::default(),
            dtmf_payload_type: None,
            dtmf: DtmfDetector::default(),
        }
    }

    /// The latch state.
    pub fn latch(&self) -> &LegLatch {
        &self.latch
    }

    /// Where the leg's packets go (see [`LegLatch::send_address`]).
    pub fn send_address(&self) -> Option<SocketAddr> {
        self.latch.send_address()
    }

    /// The address the party signalled, at `now` (see [`LegLatch::set_remote`]).
    pub fn set_remote(&mut self, remote: SocketAddr, now: Instant) -> RemoteChange {
        self.latch.set_remote(remote, now)
    }

    /// The telephone-event payload type to detect key presses in.
    pub fn set_dtmf_payload_type(&mut self, payload_type: Option<u8>) {
        self.dtmf_payload_type = payload_type;
    }

    /// Handles a datagram from `source`, received at `now`, `arrival` after
    /// the call's start (for jitter).
    pub fn receive<'a>(
        &mut self,
        source: SocketAddr,
        datagram: &'a [u8],
        now: Instant,
        arrival: Duration,
    ) -> Reception<'a> {
        let leg = self.leg;
        let counters = &mut self.counters;
        counters.packets_in += 1;
        counters.bytes_in += datagram.len() as u64;
        let Ok(packet) = RtpPacket::parse(datagram) else {
            counters.invalid_packets += 1;
            return Reception::Invalid;
        };
        let kind = PacketKind::of(&packet);
        match self.latch.receive(source, kind, now) {
            Verdict::Foreign(why) => {
                counters.foreign_packets += 1;
                // The first one is worth a line; a flood is not.
                if counters.foreign_packets == 1 {
                    tracing::debug!(?leg, from = %source, ?why, "foreign RTP dropped");
                } else {
                    tracing::trace!(?leg, from = %source, ?why, "foreign RTP dropped");
                }
                return Reception::Foreign(why);
            }
            Verdict::Accept { moved } => {
                if moved {
                    tracing::debug!(?leg, to = %source, "RTP source latched");
                    counters.latch_changes += 1;
                }
            }
        }
        if kind == PacketKind::Rtcp {
            // Forwarded, but not RTP to account.
            return Reception::Rtcp;
        }
        self.receive
            .record_at(packet.sequence(), packet.timestamp(), arrival, RTP_CLOCK);
        let mut presses = Vec::new();
        if self.dtmf_payload_type == Some(packet.payload_type()) {
            match self
                .dtmf
                .push(packet.payload(), packet.timestamp(), packet.marker())
            {
                Ok(done) => presses = done,
                Err(e) => tracing::debug!(?leg, error = %e, "bad telephone-event payload"),
            }
        }
        Reception::Rtp { packet, presses }
    }

    /// Handles a datagram again that [`LegReceiver::receive`] found
    /// foreign and the relay held: it is not counted as received twice, and
    /// no longer as foreign if it is the party's now.
    pub fn receive_held<'a>(
        &mut self,
        source: SocketAddr,
        datagram: &'a [u8],
        now: Instant,
        arrival: Duration,
    ) -> Reception<'a> {
        let (packets_in, bytes_in, foreign) = (
            self.counters.packets_in,
            self.counters.bytes_in,
            self.counters.foreign_packets,
        );
        let reception = self.receive(source, datagram, now, arrival);
        self.counters.packets_in = packets_in;
        self.counters.bytes_in = bytes_in;
        self.counters.foreign_packets = if reception.is_forwarded() {
            foreign.saturating_sub(1)
        } else {
            foreign
        };
        reception
    }

    /// Reports a key press whose end reports were all lost (see
    /// [`DtmfDetector::flush`]).
    pub fn flush_dtmf(&mut self) -> Option<DtmfPress> {
        self.dtmf.flush()
    }

    /// The leg's counters now.
    pub fn stats(&self) -> LegStats {
        let mut stats = self.counters.clone();
        stats.remote = self.latch.send_address();
        stats.packets_lost = self.receive.cumulative_lost();
        stats.jitter = self.receive.jitter();
        stats.jitter_ms = f64::from(stats.jitter) * 1000.0 / f64::from(RTP_CLOCK.get());
        stats
    }
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

    /// The address `leg`'s party signalled in its SDP: where the relay sends
    /// until the leg latches, and the address it latches to at once.
    ///
    /// The first call for a leg opens its latch window. Calling again with
    /// the same address (a re-INVITE repeating it) changes nothing; a new
    /// address (the party moved) is sent to at once and the leg latches
    /// again, to it or to the stream it had latched before (same SSRC). See
    /// [`crate::latch`].
    pub fn set_remote(&self, leg: Leg, remote: SocketAddr) {
        let change = self.shared.leg(leg).rx.set_remote(remote, Instant::now());
        if change != RemoteChange::Unchanged {
            tracing::debug!(?leg, %remote, ?change, "remote signalled");
            self.shared.new_address[leg.index()].store(true, Ordering::Release);
        }
    }

    /// SRTP was offered to `leg`'s party and its key comes with the answer:
    /// until [`CallMedia::set_srtp`], its packets are held and nothing is
    /// sent to it.
    pub fn await_srtp(&self, leg: Leg) {
        let mut state = self.shared.leg(leg);
        if matches!(state.crypto, LegCrypto::Plain) {
            state.crypto = LegCrypto::AwaitingKeys;
            state.rx.counters.srtp = true;
        }
    }

    /// Keys `leg` with SRTP (`None`: plain RTP). On a leg that has SRTP
    /// already, a key that did not change keeps its streams' state. Held
    /// packets of the leg are handled again (they may be decryptable now).
    pub fn set_srtp(&self, leg: Leg, keys: Option<SrtpKeys>) {
        {
            let mut state = self.shared.leg(leg);
            state.crypto = match (std::mem::take(&mut state.crypto), keys) {
                (_, None) => LegCrypto::Plain,
                (LegCrypto::Srtp(mut srtp), Some(keys)) => {
                    srtp.rekey(keys);
                    LegCrypto::Srtp(srtp)
                }
                (_, Some(keys)) => LegCrypto::Srtp(Box::new(LegSrtp::new(keys))),
            };
            state.rx.counters.srtp = matches!(state.crypto, LegCrypto::Srtp(_));
        }
        self.shared.new_address[leg.index()].store(true, Ordering::Release);
    }

    /// The telephone-event payload type negotiated for `leg` (`None`: no
    /// DTMF detection on it).
    pub fn set_dtmf_payload_type(&self, leg: Leg, payload_type: Option<u8>) {
        self.shared.leg(leg).rx.set_dtmf_payload_type(payload_type);
    }

    /// The event channel. Returns it the first time only.
    pub fn events(&self) -> Option<mpsc::Receiver<MediaEvent>> {
        lock(&self.events).take()
    }

    /// A tap on received packets of `which` legs, holding up to `capacity`
    /// frames (at least 1). Frames that do not fit are dropped and counted in
    /// [`LegStats::tap_dropped`] and by the tap ([`TapReceiver::dropped`]). The tap ends when the receiver is dropped
    /// or the call closes.
    pub fn tap(&self, which: TapLegs, capacity: usize) -> TapReceiver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(TapDrops::default());
        for leg in Leg::BOTH {
            if which.includes(leg) {
                self.shared.leg(leg).taps.push(TapSender {
                    frames: tx.clone(),
                    dropped: dropped.clone(),
                });
            }
        }
        TapReceiver {
            frames: rx,
            dropped,
        }
    }

    /// Counters of both legs, indexed like [`Leg::BOTH`].
    pub fn stats(&self) -> [LegStats; 2] {
        Leg::BOTH.map(|leg| self.shared.leg(leg).rx.stats())
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

    /// Sends one prompt packet to `leg`'s current remote (encrypted on an
    /// SRTP leg; not at all while the leg awaits its keys).
    pub(crate) async fn send(&self, leg: Leg, packet: &[u8]) -> Result<(), MediaError> {
        let remote = self
            .shared
            .leg(leg)
            .rx
            .send_address()
            .ok_or(MediaError::NoRemote { leg })?;
        let Some(wire) = wire_for(&self.shared, leg, packet) else {
            return Ok(());
        };
        let sent = self.shared.sockets[leg.index()]
            .send_to(wire.as_ref(), remote)
            .await;
        let mut state = self.shared.leg(leg);
        match sent {
            Ok(n) => {
                state.rx.counters.packets_out += 1;
                state.rx.counters.prompt_packets_out += 1;
                state.rx.counters.bytes_out += n as u64;
                Ok(())
            }
            Err(source) => {
                state.rx.counters.send_errors += 1;
                Err(MediaError::Send { leg, error: source })
            }
        }
    }
}

/// Poisoning only means another thread panicked mid-update of counters;
/// they are still usable, and the relay must keep running.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A random u32 for SSRCs and initial sequence numbers (RFC 3550 wants
/// them unpredictable).
pub(crate) fn random_u32() -> u32 {
    rand::random()
}

/// The per-call loop: receive on either socket, account, forward.
async fn relay_task(shared: Arc<CallShared>, cancel: CancellationToken) {
    let start = Instant::now();
    let mut buffers = [
        BytesMut::with_capacity(RECV_BUFFER),
        BytesMut::with_capacity(RECV_BUFFER),
    ];
    let mut rtcp_bufs = [vec![0u8; RECV_BUFFER], vec![0u8; RECV_BUFFER]];
    loop {
        for buf in &mut buffers {
            // Reclaims the allocation once every frame handed out is gone.
            buf.reserve(RECV_BUFFER);
        }
        let [caller_buf, callee_buf] = &mut buffers;
        let [caller_rtcp, callee_rtcp] = &mut rtcp_bufs;
        let woke = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = shared.sockets[0].recv_buf_from(caller_buf) => Woke::Rtp(Leg::Caller, r),
            r = shared.sockets[1].recv_buf_from(callee_buf) => Woke::Rtp(Leg::Callee, r),
            r = recv_rtcp(&shared.rtcp[0], caller_rtcp) => Woke::Rtcp(Leg::Caller, r),
            r = recv_rtcp(&shared.rtcp[1], callee_rtcp) => Woke::Rtcp(Leg::Callee, r),
        };
        let (leg, received) = match woke {
            Woke::Rtp(leg, received) => (leg, received),
            Woke::Rtcp(leg, received) => {
                relay_rtcp(&shared, leg, received, &rtcp_bufs[leg.index()]).await;
                continue;
            }
        };
        let datagram = buffers[leg.index()].split().freeze();
        match received {
            Ok((_, source)) => {
                let now = Instant::now();
                let arrival = now.saturating_duration_since(start);
                if shared.new_address[leg.index()].swap(false, Ordering::AcqRel) {
                    release_held(&shared, leg, now).await;
                }
                let received = Arrival {
                    source,
                    at: now,
                    arrival,
                    held: false,
                    decrypted: false,
                };
                if let Some((remote, plain)) = on_receive(&shared, leg, &received, &datagram) {
                    forward(&shared, leg.other(), &plain, remote).await;
                }
            }
            // ICMP port unreachable from an earlier send shows up here on
            // Linux; it concerns the peer, not this socket.
            Err(e) => tracing::trace!(?leg, error = %e, "RTP receive error"),
        }
    }
    // Key presses whose end reports were all lost.
    for leg in Leg::BOTH {
        let press = shared.leg(leg).rx.flush_dtmf();
        if let Some(press) = press {
            deliver_dtmf(&shared, leg, press);
        }
    }
    tracing::debug!(caller = %shared.local[0], callee = %shared.local[1], "call media closed");
}

/// Which socket of the call had a datagram.
enum Woke {
    Rtp(Leg, io::Result<(usize, SocketAddr)>),
    Rtcp(Leg, io::Result<(usize, SocketAddr)>),
}

/// A datagram on an RTCP socket; never ready for a leg without one.
async fn recv_rtcp(
    socket: &Option<UdpSocket>,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

/// RTCP that arrived on `leg`'s RTCP port: taken only from the party's IP
/// (the address its RTP goes to or latched to), decrypted on an SRTP leg,
/// then sent to the other party's RTCP port (its RTP address, port + 1),
/// encrypted if that leg is SRTP. Nothing in it is looked at beyond that
/// it is RTCP: the relay's own receive statistics stay per leg.
async fn relay_rtcp(
    shared: &CallShared,
    leg: Leg,
    received: io::Result<(usize, SocketAddr)>,
    buffer: &[u8],
) {
    let Ok((len, source)) = received else { return };
    let datagram = &buffer[..len];
    let plain = {
        let mut state = shared.leg(leg);
        let party = state.rx.send_address().map(|address| address.ip());
        let is_rtcp = len >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1]);
        let plain = match (&mut state.crypto, party) {
            (_, None) => Err("the party's address is not known yet"),
            (_, Some(ip)) if ip != source.ip() => Err("not from the party's address"),
            _ if !is_rtcp => Err("not RTCP"),
            (LegCrypto::AwaitingKeys, _) => Err("the leg's keys are not known yet"),
            (LegCrypto::Plain, _) => Ok(Bytes::copy_from_slice(datagram)),
            (LegCrypto::Srtp(srtp), _) => srtp
                .unprotect(datagram)
                .map_err(|_| "SRTCP did not authenticate"),
        };
        match plain {
            Ok(plain) => {
                state.rx.counters.rtcp_in += 1;
                plain
            }
            Err(why) => {
                state.rx.counters.rtcp_dropped += 1;
                if state.rx.counters.rtcp_dropped == 1 {
                    tracing::debug!(?leg, from = %source, why, "RTCP dropped");
                }
                return;
            }
        }
    };
    let other = leg.other();
    let Some(socket) = &shared.rtcp[other.index()] else {
        return;
    };
    let wire = {
        let mut state = shared.leg(other);
        let Some(rtp) = state.rx.send_address() else {
            return;
        };
        let to = SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1));
        let wire = match &mut state.crypto {
            LegCrypto::Plain => Some(plain),
            LegCrypto::Srtp(srtp) => srtp.protect(&plain),
            LegCrypto::AwaitingKeys => None,
        };
        match wire {
            Some(wire) => (wire, to),
            None => return,
        }
    };
    if socket.send_to(&wire.0, wire.1).await.is_ok() {
        shared.leg(other).rx.counters.rtcp_out += 1;
    }
}

/// Where and when a datagram arrived, and whether it comes from the hold.
struct Arrival {
    source: SocketAddr,
    at: Instant,
    /// Since the call's start (for jitter).
    arrival: Duration,
    held: bool,
    /// An SRTP packet decrypted before it was held.
    decrypted: bool,
}

/// Handles, in order, the held datagrams that came from the address just
/// signalled for `leg`; the others are dropped with the hold.
async fn release_held(shared: &CallShared, leg: Leg, now: Instant) {
    let held: Vec<Held> = {
        let mut state = shared.leg(leg);
        let signalled = state.rx.latch().signalled();
        std::mem::take(&mut state.held)
            .into_iter()
            .filter(|h| Some(h.source) == signalled && now.duration_since(h.at) <= HOLD_AGE)
            .collect()
    };
    for datagram in held {
        let from_hold = Arrival {
            source: datagram.source,
            at: now,
            arrival: datagram.arrival,
            held: true,
            decrypted: datagram.decrypted,
        };
        if let Some((remote, plain)) = on_receive(shared, leg, &from_hold, &datagram.datagram) {
            forward(shared, leg.other(), &plain, remote).await;
        }
    }
}

/// Accounts a received datagram on `leg`. Returns where to forward it, if
/// anywhere.
fn on_receive(
    shared: &CallShared,
    leg: Leg,
    received: &Arrival,
    datagram: &Bytes,
) -> Option<(SocketAddr, Bytes)> {
    let (presses, plain) = {
        let mut state = shared.leg(leg);
        // SRTP first: everything after it (latching, statistics, DTMF,
        // taps) sees the plain packet, and a packet that does not
        // authenticate is the party's no more than a foreign one.
        let plain = match &mut state.crypto {
            _ if received.decrypted => datagram.clone(),
            LegCrypto::Plain => datagram.clone(),
            LegCrypto::AwaitingKeys => {
                if !received.held {
                    hold(&mut state, received, datagram, false);
                }
                return None;
            }
            LegCrypto::Srtp(srtp) => match srtp.unprotect(datagram) {
                Ok(plain) => plain,
                Err(reject) => {
                    let counters = &mut state.rx.counters;
                    if !received.held {
                        counters.packets_in += 1;
                        counters.bytes_in += datagram.len() as u64;
                    }
                    match reject {
                        SrtpReject::Replay => counters.srtp_replayed += 1,
                        SrtpReject::Authentication | SrtpReject::TooShort => {
                            counters.srtp_rejected += 1
                        }
                    }
                    if counters.srtp_rejected + counters.srtp_replayed == 1 {
                        tracing::debug!(?leg, from = %received.source, ?reject, "SRTP dropped");
                    }
                    return None;
                }
            },
        };
        let decrypted = !matches!(state.crypto, LegCrypto::Plain);
        let datagram = &plain;
        let reception = if received.held {
            state
                .rx
                .receive_held(received.source, datagram, received.at, received.arrival)
        } else {
            state
                .rx
                .receive(received.source, datagram, received.at, received.arrival)
        };
        let presses = match reception {
            Reception::Invalid => return None,
            Reception::Foreign(why) => {
                // RTCP from elsewhere names no stream: never worth holding.
                if !received.held && why != Foreign::RtcpElsewhere {
                    hold(&mut state, received, datagram, decrypted);
                }
                return None;
            }
            Reception::Rtcp => Vec::new(),
            Reception::Rtp { packet, presses } => {
                if !state.taps.is_empty() {
                    tap_frame(&mut state, leg, &packet, datagram);
                }
                presses
            }
        };
        (presses, plain)
    };
    for press in presses {
        deliver_dtmf(shared, leg, press);
    }

    let other = leg.other();
    let mut forward_to = None;
    if shared.prompts_playing[other.index()].load(Ordering::Acquire) == 0 {
        forward_to = shared.leg(other).rx.send_address();
    }
    if forward_to.is_none() {
        shared.leg(leg).rx.counters.packets_not_forwarded += 1;
    }
    forward_to.map(|remote| (remote, plain))
}

/// Keeps a datagram the leg cannot take yet (foreign, or awaiting keys),
/// dropping the oldest beyond [`HOLD_LIMIT`].
fn hold(state: &mut LegState, received: &Arrival, datagram: &Bytes, decrypted: bool) {
    if state.held.len() == HOLD_LIMIT {
        state.held.pop_front();
    }
    // A copy: a slice would keep the receive buffer's whole allocation
    // alive, and every later receive would allocate a new one.
    state.held.push_back(Held {
        source: received.source,
        datagram: Bytes::copy_from_slice(datagram),
        decrypted,
        at: received.at,
        arrival: received.arrival,
    });
}

/// What goes on the wire to `to` for a plain packet: the packet itself on
/// a plain leg, encrypted on an SRTP leg, nothing while the leg awaits its
/// keys (counted as not forwarded).
fn wire_for<'a>(shared: &CallShared, to: Leg, plain: &'a [u8]) -> Option<Wire<'a>> {
    let mut state = shared.leg(to);
    match &mut state.crypto {
        LegCrypto::Plain => Some(Wire::Plain(plain)),
        LegCrypto::Srtp(srtp) => srtp.protect(plain).map(Wire::Protected),
        LegCrypto::AwaitingKeys => {
            state.rx.counters.packets_not_forwarded += 1;
            None
        }
    }
}

/// A datagram as it is sent.
enum Wire<'a> {
    Plain(&'a [u8]),
    Protected(Bytes),
}

impl AsRef<[u8]> for Wire<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Wire::Plain(plain) => plain,
            Wire::Protected(protected) => protected,
        }
    }
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
    state
        .taps
        .retain(|tap| match tap.frames.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                tap.dropped.0[leg.index()].fetch_add(1, Ordering::Release);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    state.rx.counters.tap_dropped += dropped;
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
    state.rx.counters.dtmf_digits += 1;
    if shared.events.try_send(event).is_err() {
        state.rx.counters.events_dropped += 1;
    }
}

async fn forward(shared: &CallShared, to: Leg, datagram: &[u8], remote: SocketAddr) {
    let Some(wire) = wire_for(shared, to, datagram) else {
        return;
    };
    let sent = shared.sockets[to.index()]
        .send_to(wire.as_ref(), remote)
        .await;
    let mut state = shared.leg(to);
    match sent {
        Ok(n) => {
            state.rx.counters.packets_out += 1;
            state.rx.counters.bytes_out += n as u64;
        }
        Err(e) => {
            state.rx.counters.send_errors += 1;
            tracing::trace!(leg = ?to, %remote, error = %e, "RTP send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::TelephoneEvent;
    use crate::rtp::RtpHeader;

    fn packet(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; 64];
        let len = RtpHeader::new(pt, seq, 0, ssrc)
            .write_packet(payload, 0, &mut buf)
            .unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn foreign_packets_reach_neither_statistics_nor_dtmf() {
        let mut rx = LegReceiver::new(Leg::Caller, Latching::Strict, Duration::ZERO);
        rx.set_dtmf_payload_type(Some(101));
        let t0 = Instant::now();
        let phone: SocketAddr = ([192, 0, 2, 1], 4000).into();
        let spoofer: SocketAddr = ([192, 0, 2, 66], 4000).into();
        let end = TelephoneEvent {
            event: 1,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes();

        // Before any SDP, even the phone is foreign.
        let early = packet(101, 1, 7, &end);
        assert_eq!(
            rx.receive(phone, &early, t0, Duration::ZERO),
            Reception::Foreign(Foreign::NotSignalled)
        );
        rx.set_remote(phone, t0);
        for seq in 0..5 {
            let from_spoofer = packet(101, seq, 9, &end);
            assert_eq!(
                rx.receive(spoofer, &from_spoofer, t0, Duration::ZERO),
                Reception::Foreign(Foreign::WindowClosed)
            );
        }
        assert_eq!(
            rx.receive(phone, b"junk", t0, Duration::ZERO),
            Reception::Invalid
        );
        let stats = rx.stats();
        assert_eq!((stats.packets_in, stats.foreign_packets), (7, 6));
        assert_eq!((stats.invalid_packets, stats.latch_changes), (1, 0));
        assert_eq!(rx.receive.received(), 0);
        assert_eq!(rx.flush_dtmf(), None);

        let from_phone = packet(101, 10, 7, &end);
        let Reception::Rtp { presses, packet: p } =
            rx.receive(phone, &from_phone, t0, Duration::ZERO)
        else {
            panic!("the phone's packet is RTP");
        };
        assert_eq!((presses.len(), p.ssrc()), (1, 7));
        assert_eq!(rx.stats().remote, Some(phone));
    }
}
