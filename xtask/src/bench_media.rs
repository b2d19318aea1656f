//! The media step of `cargo xtask bench sip`: [`MEDIA_CALLS`] concurrent
//! G.711 calls through `callhost serve`, RTP both ways, from a generator of
//! our own (SIPp's `-rtp_echo` saturates long before the relay does, and
//! SIPp cannot tell a generator the relay's port of each call).
//!
//! A small SIP user agent plays both ends: the carrier (calls come from the
//! trunk port, not challenged) and the called user `bench` (registered with
//! digest). Every call's two streams are paced at 20 ms from one sender
//! task; each packet carries its stream's id as SSRC. The receivers count
//! what arrives and the gaps between arrivals. The figures:
//! - loss: packets sent minus packets received, over all streams;
//! - gaps over 60 ms leaving the relay (between packets a stream received)
//!   against the same gaps at the sender (what arrived at the relay):
//!   their difference is what the relay added.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use md5::{Digest, Md5};
use tokio::net::UdpSocket;

use callhost_media::sdes::{CryptoAttribute, CryptoSuite, KeyMaterial};
use callhost_media::srtp::{LegSrtp, SrtpKeys};

use crate::bench_sip::{
    clock_ticks_per_second, fresh_dir, prepare_callhost_data, process_tree_ticks, start_serve,
    terminate, Flavour, LOOPBACK, SERVICE,
};

/// Calls at once (the target: at least 1 000).
pub(crate) const MEDIA_CALLS: u32 = 1000;
/// Calls at once in the SRTP comparison: well inside what the relay
/// carries without gaps, so that CPU is compared, not overload.
pub(crate) const SRTP_CALLS: u32 = 200;

/// What the calls' RTP is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    Rtp,
    /// SRTP (AES_CM_128_HMAC_SHA1_80) on both legs, terminated in the
    /// relay: keys in the SDP (over UDP here, `keys_over_plain`: a CPU
    /// bench on loopback).
    Srtp,
}

/// The generator's keys: the carrier's and the phone's (the host's own
/// keys for each leg are in its SDP; the generator does not decrypt, it
/// counts packets by their SSRC, which SRTP leaves in clear).
struct GeneratorKeys {
    carrier: CryptoAttribute,
    phone: CryptoAttribute,
}

impl GeneratorKeys {
    fn new() -> GeneratorKeys {
        let key = || CryptoAttribute {
            tag: 1,
            key: KeyMaterial::generate(CryptoSuite::AesCm128HmacSha1_80),
        };
        GeneratorKeys {
            carrier: key(),
            phone: key(),
        }
    }
}
/// New calls per second while ramping up.
const RAMP_RATE: u32 = 100;
/// How long every call streams once all of them are up.
const STEADY: Duration = Duration::from_secs(20);
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// A gap longer than this between two packets of a stream is audible.
const GAP: Duration = Duration::from_millis(60);
/// Media sockets per side: streams are spread over them by call (few, so
/// that a receiver wakes for many packets at once).
const SOCKETS: usize = 16;

const SIP_PORT: u16 = 5084;
/// The carrier's side (the callhost trunk peer).
const CARRIER_PORT: u16 = 5063;
/// The called user's phone.
const PHONE_PORT: u16 = 5072;
const CARRIER_MEDIA: u16 = 52000;
const PHONE_MEDIA: u16 = 53000;

/// What the media step measured.
#[derive(Debug, Default)]
pub(crate) struct MediaFigures {
    calls: u32,
    answered: u32,
    concurrent: u32,
    sent: u64,
    received: u64,
    gaps_leaving: u64,
    gaps_arriving: u64,
    max_gap_ms: f64,
    server_cpu_percent: f64,
    generator_cpu_percent: f64,
    relay_lost: i64,
    protection: Option<Protection>,
}

impl MediaFigures {
    /// Calls placed.
    pub(crate) fn calls(&self) -> u32 {
        self.calls
    }
}

/// Prints one table row per size measured.
pub(crate) fn print(figures: &[MediaFigures]) {
    println!(
        "\n| media: G.711 calls, RTP both ways, {} s with all up | answered / up | packets sent / lost | relay's own loss count | gaps > 60 ms leaving / arriving (added) | longest gap | CPU callhost / generator |",
        STEADY.as_secs()
    );
    println!("|---|---|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} calls | {} / {} | {} / {} | {} | {} / {} ({}) | {:.1} ms | {:.0} % / {:.0} % |",
            f.calls,
            f.answered,
            f.concurrent,
            f.sent,
            f.sent.saturating_sub(f.received),
            f.relay_lost,
            f.gaps_leaving,
            f.gaps_arriving,
            f.gaps_leaving as i64 - f.gaps_arriving as i64,
            f.max_gap_ms,
            f.server_cpu_percent,
            f.generator_cpu_percent
        );
    }
    println!(
        "(CPU in % of one core; 2 cores in all. On loopback the sender's kernel also delivers each packet, so the generator's CPU includes delivering to the relay.)"
    );
}

/// One RTP stream the sender paces: from `socket` to `to`.
struct Outgoing {
    socket: usize,
    to: SocketAddr,
    srtp: Option<LegSrtp>,
    sequence: u16,
    timestamp: u32,
    sent: u64,
    last_sent: Option<Instant>,
}

/// What one media socket received, by sending stream (SSRC).
#[derive(Default)]
struct Incoming {
    received: HashMap<u32, (u64, Option<Instant>)>,
    gaps: u64,
    max_gap: Duration,
}

/// What the sender reports at the end.
#[derive(Default)]
struct SendTotals {
    sent: u64,
    gaps: u64,
}

/// A stream to start sending: from `socket` to `to`, encrypted with
/// `key` for SRTP.
struct NewStream {
    socket: usize,
    to: SocketAddr,
    key: Option<KeyMaterial>,
}

/// Phases the tasks read without a lock.
struct Phase {
    /// Streams are sent (the steady phase).
    sending: std::sync::atomic::AtomicBool,
    /// Everything is over: tasks report and end.
    done: std::sync::atomic::AtomicBool,
}

/// The media step at a quarter, half and all of `calls`, each on a fresh
/// server: where gaps start is where the machine runs out.
pub(crate) fn run_sizes(
    root: &Path,
    work: &Path,
    binary: &Path,
    calls: u32,
) -> Result<Vec<MediaFigures>> {
    let mut sizes = vec![calls / 4, calls / 2, calls];
    sizes.retain(|&n| n > 0);
    sizes.dedup();
    sizes
        .into_iter()
        .map(|n| {
            run(
                root,
                work,
                binary,
                n,
                Flavour::Plain,
                Protection::Rtp,
                &work.join("callhost-media-data"),
            )
        })
        .collect()
}

/// The same `calls` concurrent calls over plain RTP and over SRTP on both
/// legs, each on a fresh server: the relay's CPU for SRTP against RTP.
pub(crate) fn run_srtp_comparison(
    root: &Path,
    work: &Path,
    binary: &Path,
    calls: u32,
) -> Result<Vec<MediaFigures>> {
    [Protection::Rtp, Protection::Srtp]
        .into_iter()
        .map(|protection| {
            run(
                root,
                work,
                binary,
                calls,
                Flavour::Plain,
                protection,
                &work.join("callhost-srtp-data"),
            )
        })
        .collect()
}

/// The SRTP comparison's table: CPU of callhost for SRTP against RTP.
pub(crate) fn print_srtp(figures: &[MediaFigures]) {
    println!(
        "\n| SRTP vs RTP: G.711 calls, 50 packets/s each way on both legs, {} s | answered / up | packets sent / lost | gaps > 60 ms leaving / arriving | CPU callhost |",
        STEADY.as_secs()
    );
    println!("|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} calls, {:?} | {} / {} | {} / {} | {} / {} | {:.0} % |",
            f.calls,
            f.protection.unwrap_or(Protection::Rtp),
            f.answered,
            f.concurrent,
            f.sent,
            f.sent.saturating_sub(f.received),
            f.gaps_leaving,
            f.gaps_arriving,
            f.server_cpu_percent
        );
    }
    if let [rtp, srtp] = figures {
        if rtp.server_cpu_percent > 0.0 {
            println!(
                "SRTP/RTP CPU of callhost: {:.2} (same calls, same run, each on a fresh server)",
                srtp.server_cpu_percent / rtp.server_cpu_percent
            );
        }
    }
}

/// One media run of `calls` concurrent calls against a server on `data`
/// (made afresh for `flavour`); the server is stopped at the end.
pub(crate) fn run(
    root: &Path,
    work: &Path,
    binary: &Path,
    calls: u32,
    flavour: Flavour,
    protection: Protection,
    data: &Path,
) -> Result<MediaFigures> {
    println!(
        "== media: {calls} concurrent calls with {protection:?} both ways through callhost's relay"
    );
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    prepare_callhost_data(root, work, binary, data, flavour)?;
    std::fs::write(
        data.join("callhost.toml"),
        format!(
            "[sip]\nlisten = \"{LOOPBACK}:{SIP_PORT}\"\n\
             [sip.limits]\nmax_calls = 20000\nmax_setups = 2000\n\
             [sip.trunk]\npeer = \"{LOOPBACK}:{CARRIER_PORT}\"\n\
             [http]\nlisten = \"{LOOPBACK}:0\"\n\
             [media]\naddress = \"{LOOPBACK}\"\nrtp_ports = \"20000-29999\"\n{}",
            match protection {
                Protection::Rtp => "",
                Protection::Srtp =>
                    "[sip.srtp]\ndefault = \"required\"\ntrunk = \"required\"\nkeys_over_plain = true\n",
            }
        ),
    )?;
    let dir = fresh_dir(work, &format!("media-{calls}-{protection:?}"))?;
    let log_path = dir.join("callhost.log");
    let mut child = start_serve(binary, data, &log_path, "warn,callhost_sip=info")?;
    // Two threads: receiving never waits long behind a send round.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server_pid = child.id();
    let keys = (protection == Protection::Srtp).then(GeneratorKeys::new);
    let result = runtime.block_on(generate(calls, server_pid, keys));
    terminate(&mut child);
    let mut figures = result?;
    figures.protection = Some(protection);
    // The relay's own loss counters, from each call's "call ended" line.
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    figures.relay_lost = text
        .lines()
        .filter(|line| line.contains("call ended"))
        .flat_map(|line| {
            // `rtp_caller=in:N,out:N,lost:N,...` and the same for the callee.
            ["rtp_caller=", "rtp_callee="]
                .into_iter()
                .filter_map(move |key| line.split(key).nth(1)?.split_whitespace().next())
        })
        .filter_map(|counters| {
            counters
                .split(',')
                .find_map(|pair| pair.strip_prefix("lost:"))?
                .parse::<i64>()
                .ok()
        })
        .sum();
    Ok(figures)
}

async fn generate(
    calls: u32,
    server_pid: u32,
    keys: Option<GeneratorKeys>,
) -> Result<MediaFigures> {
    let keys = keys.map(Arc::new);
    let server = SocketAddr::from(([127, 0, 0, 1], SIP_PORT));
    let carrier = Arc::new(UdpSocket::bind((LOOPBACK, CARRIER_PORT)).await?);
    let phone = Arc::new(UdpSocket::bind((LOOPBACK, PHONE_PORT)).await?);
    register(&phone, server, PHONE_PORT, SIP_PORT).await?;
    let mut media = Vec::new();
    for base in [CARRIER_MEDIA, PHONE_MEDIA] {
        for i in 0..SOCKETS {
            let socket = std::net::UdpSocket::bind((LOOPBACK, base + i as u16))
                .with_context(|| format!("binding media port {}", base + i as u16))?;
            socket.set_nonblocking(true)?;
            media.push(Arc::new(UdpSocket::from_std(socket)?));
        }
    }
    let phase = Arc::new(Phase {
        sending: std::sync::atomic::AtomicBool::new(false),
        done: std::sync::atomic::AtomicBool::new(false),
    });
    let (new_streams, streams_to_send) = tokio::sync::mpsc::unbounded_channel::<NewStream>();
    let mut receivers = Vec::new();
    for (index, socket) in media.iter().enumerate() {
        receivers.push(tokio::spawn(receive_media(
            socket.clone(),
            index,
            index >= SOCKETS,
            phase.clone(),
            new_streams.clone(),
            keys.as_ref().map(|keys| keys.phone.key.clone()),
        )));
    }
    tokio::spawn(answer_calls(
        phone.clone(),
        keys.as_ref().map(|keys| keys.phone.value()),
        PHONE_PORT,
    ));
    let answers: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>> = Arc::default();
    tokio::spawn(carrier_responses(carrier.clone(), answers.clone()));
    let sender = tokio::spawn(send_media(media.clone(), phase.clone(), streams_to_send));

    let ticks = clock_ticks_per_second();
    let own_ticks = || process_tree_ticks(std::process::id());
    // Ramp up: one call every 1/RAMP_RATE s; each is ACKed and becomes a
    // stream from the carrier's side as soon as it is answered.
    let dialogs: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..calls {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call_id = format!("bench-media-{n}@{LOOPBACK}");
        answers.lock().unwrap().insert(call_id.clone(), reply);
        let socket_index = n as usize % SOCKETS;
        let port = CARRIER_MEDIA + socket_index as u16;
        let offer_key = keys.as_ref().map(|keys| keys.carrier.value());
        carrier
            .send_to(
                invite(&call_id, port, offer_key.as_deref()).as_bytes(),
                server,
            )
            .await?;
        let carrier_key = keys.as_ref().map(|keys| keys.carrier.key.clone());
        let (carrier, new_streams, dialogs) =
            (carrier.clone(), new_streams.clone(), dialogs.clone());
        waiting.spawn(async move {
            let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(10), answer).await
            else {
                return;
            };
            let Some((relay_port, to)) = answered_call(&response) else {
                return;
            };
            let _ = carrier
                .send_to(
                    ack(&call_id, &to, &carrier_via(), SIP_PORT).as_bytes(),
                    server,
                )
                .await;
            let relay = SocketAddr::from(([127, 0, 0, 1], relay_port));
            let _ = new_streams.send(NewStream {
                socket: socket_index,
                to: relay,
                key: carrier_key,
            });
            dialogs.lock().unwrap().push((call_id, to));
        });
        tokio::time::sleep(Duration::from_secs(1) / RAMP_RATE).await;
    }
    while waiting.join_next().await.is_some() {}
    let dialogs = std::mem::take(&mut *dialogs.lock().unwrap());
    let answered = dialogs.len() as u32;
    // All calls are up: the steady phase is measured.
    use std::sync::atomic::Ordering;
    phase.sending.store(true, Ordering::Release);
    let server_start = process_tree_ticks(server_pid);
    let own_start = own_ticks();
    let started = Instant::now();
    tokio::time::sleep(STEADY).await;
    phase.sending.store(false, Ordering::Release);
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = process_tree_ticks(server_pid).saturating_sub(server_start) as f64 / ticks;
    let own_cpu = own_ticks().saturating_sub(own_start) as f64 / ticks;
    // Packets in flight arrive, then the calls end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase.done.store(true, Ordering::Release);
    let stopper = std::net::UdpSocket::bind((LOOPBACK, 0))?;
    for socket in &media {
        stopper.send_to(&[0], socket.local_addr()?)?;
    }
    let sent = sender.await?;
    let mut received = 0;
    let mut gaps_leaving = 0;
    let mut max_gap = Duration::ZERO;
    let mut streams_seen = 0;
    for receiver in receivers {
        let incoming = receiver.await?;
        received += incoming.received.values().map(|(n, _)| n).sum::<u64>();
        streams_seen += incoming.received.len();
        gaps_leaving += incoming.gaps;
        max_gap = max_gap.max(incoming.max_gap);
    }
    for (call_id, to) in &dialogs {
        carrier
            .send_to(
                bye(call_id, to, &carrier_via(), SIP_PORT).as_bytes(),
                server,
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(MediaFigures {
        calls,
        answered,
        concurrent: (streams_seen / 2) as u32,
        sent: sent.sent,
        received,
        gaps_leaving,
        gaps_arriving: sent.gaps,
        max_gap_ms: max_gap.as_secs_f64() * 1000.0,
        server_cpu_percent: 100.0 * server_cpu / elapsed,
        generator_cpu_percent: 100.0 * own_cpu / elapsed,
        relay_lost: 0,
        protection: None,
    })
}

/// Every 20 ms, one packet for every stream while the steady phase runs.
/// Owns the streams: new ones arrive on `new_streams`. A send more than
/// 60 ms after the stream's previous one is a gap arriving at the relay.
async fn send_media(
    sockets: Vec<Arc<UdpSocket>>,
    phase: Arc<Phase>,
    mut new_streams: tokio::sync::mpsc::UnboundedReceiver<NewStream>,
) -> SendTotals {
    use std::sync::atomic::Ordering;
    let mut streams: Vec<Outgoing> = Vec::new();
    let mut totals = SendTotals::default();
    let mut interval = tokio::time::interval(PACKET_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut packet = [0xD5u8; 172];
    packet[0] = 0x80;
    packet[1] = 8; // PCMA
    while !phase.done.load(Ordering::Acquire) {
        interval.tick().await;
        while let Ok(stream) = new_streams.try_recv() {
            streams.push(Outgoing {
                socket: stream.socket,
                to: stream.to,
                srtp: stream.key.map(|send| {
                    LegSrtp::new(SrtpKeys {
                        receive: KeyMaterial::generate(send.suite),
                        send,
                    })
                }),
                sequence: 0,
                timestamp: 0,
                sent: 0,
                last_sent: None,
            });
        }
        if !phase.sending.load(Ordering::Acquire) {
            for stream in streams.iter_mut() {
                stream.last_sent = None;
            }
            continue;
        }
        let now = Instant::now();
        for (id, stream) in streams.iter_mut().enumerate() {
            if stream
                .last_sent
                .is_some_and(|last| now.duration_since(last) > GAP)
            {
                totals.gaps += 1;
            }
            stream.sequence = stream.sequence.wrapping_add(1);
            stream.timestamp = stream.timestamp.wrapping_add(160);
            packet[2..4].copy_from_slice(&stream.sequence.to_be_bytes());
            packet[4..8].copy_from_slice(&stream.timestamp.to_be_bytes());
            packet[8..12].copy_from_slice(&(id as u32).to_be_bytes());
            let protected;
            let wire: &[u8] = match &mut stream.srtp {
                Some(srtp) => {
                    protected = srtp.protect(&packet).expect("a whole RTP packet");
                    &protected
                }
                None => &packet,
            };
            if sockets[stream.socket].try_send_to(wire, stream.to).is_ok() {
                stream.sent += 1;
                stream.last_sent = Some(now);
            }
        }
    }
    totals.sent = streams.iter().map(|s| s.sent).sum();
    totals
}

/// Counts what arrives on one media socket, by stream; a callee-side
/// socket answers a new relay address with a stream of its own.
async fn receive_media(
    socket: Arc<UdpSocket>,
    index: usize,
    callee_side: bool,
    phase: Arc<Phase>,
    new_streams: tokio::sync::mpsc::UnboundedSender<NewStream>,
    key: Option<KeyMaterial>,
) -> Incoming {
    use std::sync::atomic::Ordering;
    let mut incoming = Incoming::default();
    let mut answered: std::collections::HashSet<SocketAddr> = Default::default();
    let mut buffer = [0u8; 2048];
    let mut was_sending = false;
    loop {
        // Drain what is there, then wait: one wake-up for many packets.
        let (len, source) = match socket.try_recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = socket.readable().await;
                continue;
            }
            Err(_) => continue,
        };
        if len < 12 {
            // The one-byte "stop" after `done`, or junk.
            if phase.done.load(Ordering::Acquire) {
                return incoming;
            }
            continue;
        }
        let now = Instant::now();
        let sending = phase.sending.load(Ordering::Acquire);
        if sending && !was_sending {
            // Gaps of the ramp-up do not count.
            for (_, last) in incoming.received.values_mut() {
                *last = None;
            }
        }
        was_sending = sending;
        let ssrc = u32::from_be_bytes(buffer[8..12].try_into().expect("4 bytes"));
        let (count, last) = incoming.received.entry(ssrc).or_default();
        *count += 1;
        if let Some(previous) = last.replace(now) {
            let gap = now.duration_since(previous);
            if sending {
                if gap > GAP {
                    incoming.gaps += 1;
                }
                incoming.max_gap = incoming.max_gap.max(gap);
            }
        }
        if callee_side && answered.insert(source) {
            let _ = new_streams.send(NewStream {
                socket: index,
                to: source,
                key: key.clone(),
            });
        }
    }
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// REGISTER as `bench` (digest, qop=auth) from the phone's socket (on
/// `phone_port`) with the server on `sip_port`.
pub(crate) async fn register(
    phone: &UdpSocket,
    server: SocketAddr,
    phone_port: u16,
    sip_port: u16,
) -> Result<()> {
    let uri = format!("sip:{LOOPBACK}:{sip_port}");
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{phone_port};branch=z9hG4bKreg{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bench@{LOOPBACK}>;tag=benchreg\r\nTo: <sip:bench@{LOOPBACK}>\r\nCall-ID: bench-register@{LOOPBACK}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:bench@{LOOPBACK}:{phone_port}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let mut buffer = [0u8; 8192];
    phone.send_to(request(1, "").as_bytes(), server).await?;
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buffer))
        .await
        .context("no answer to REGISTER")??;
    let challenge = String::from_utf8_lossy(&buffer[..len]).into_owned();
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("no challenge: {challenge}"))?;
    let ha1 = md5_hex("bench:callhost:bench-secret");
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:00000001:bench:auth:{ha2}"));
    let auth = format!(
        "Authorization: Digest username=\"bench\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"bench\"\r\n"
    );
    phone.send_to(request(2, &auth).as_bytes(), server).await?;
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buffer))
        .await
        .context("no answer to the authenticated REGISTER")??;
    let answer = String::from_utf8_lossy(&buffer[..len]);
    if !answer.starts_with("SIP/2.0 200") {
        bail!("REGISTER refused: {answer}");
    }
    Ok(())
}

/// The called phone: every INVITE is answered 200 at once (media on one of
/// the phone-side sockets; with `crypto`, SRTP with that key, tag 1 of the
/// host's offer), BYE 200, ACK nothing.
pub(crate) async fn answer_calls(phone: Arc<UdpSocket>, crypto: Option<String>, phone_port: u16) {
    let mut buffer = [0u8; 8192];
    let mut next_socket = 0usize;
    loop {
        let Ok((len, from)) = phone.recv_from(&mut buffer).await else {
            continue;
        };
        let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
        let answer = if message.starts_with("INVITE ") {
            let port = PHONE_MEDIA + (next_socket % SOCKETS) as u16;
            next_socket += 1;
            let sdp = sdp(port, crypto.as_deref());
            response(
                &message,
                "200 OK",
                &format!(
                    "Contact: <sip:bench@{LOOPBACK}:{phone_port}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                ),
            )
        } else if message.starts_with("BYE ") || message.starts_with("OPTIONS ") {
            response(&message, "200 OK", "Content-Length: 0\r\n\r\n")
        } else {
            continue;
        };
        let _ = phone.send_to(answer.as_bytes(), from).await;
    }
}

/// Hands each final answer to the call waiting for it.
async fn carrier_responses(
    carrier: Arc<UdpSocket>,
    answers: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>>,
) {
    let mut buffer = [0u8; 8192];
    loop {
        let Ok((len, from)) = carrier.recv_from(&mut buffer).await else {
            continue;
        };
        let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if !message.starts_with("SIP/2.0 ") {
            // A request from the host (a BYE): agree.
            let answer = response(&message, "200 OK", "Content-Length: 0\r\n\r\n");
            let _ = carrier.send_to(answer.as_bytes(), from).await;
            continue;
        }
        let status: u16 = message[8..11].parse().unwrap_or(0);
        if status < 200 || !header(&message, "CSeq").contains("INVITE") {
            continue;
        }
        let call_id = header(&message, "Call-ID").to_string();
        if let Some(reply) = answers.lock().unwrap().remove(&call_id) {
            let _ = reply.send(message);
        }
    }
}

/// The relay's port and the To header (with the callee's tag) of a 200.
fn answered_call(response: &str) -> Option<(u16, String)> {
    if !response.starts_with("SIP/2.0 200") {
        return None;
    }
    let port = response
        .split("m=audio ")
        .nth(1)?
        .split(' ')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((port, header(response, "To").to_string()))
}

pub(crate) fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .skip(1)
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .unwrap_or_default()
}

pub(crate) fn response(request: &str, status: &str, rest: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let value = header(request, name);
        if name == "To" && !value.contains("tag=") {
            out.push_str(&format!("To: {value};tag=benchphone\r\n"));
        } else {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str(rest);
    out
}

fn sdp(port: u16, crypto: Option<&str>) -> String {
    let (profile, key) = match crypto {
        Some(value) => ("RTP/SAVP", format!("a=crypto:{value}\r\n")),
        None => ("RTP/AVP", String::new()),
    };
    format!(
        "v=0\r\no=bench 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\nm=audio {port} {profile} 8\r\na=rtpmap:8 PCMA/8000\r\n{key}a=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The media step's carrier, over UDP.
fn carrier_via() -> String {
    format!("SIP/2.0/UDP {LOOPBACK}:{CARRIER_PORT}")
}

fn invite(call_id: &str, media_port: u16, crypto: Option<&str>) -> String {
    invite_via(
        call_id,
        media_port,
        crypto,
        &carrier_via(),
        CARRIER_PORT,
        SIP_PORT,
    )
}

/// The carrier's INVITE to the benchmark's number, its `Via` being `via`
/// (`SIP/2.0/UDP host:port`, `SIP/2.0/TLS …`).
pub(crate) fn invite_via(
    call_id: &str,
    media_port: u16,
    crypto: Option<&str>,
    via: &str,
    carrier_port: u16,
    sip_port: u16,
) -> String {
    let sdp = sdp(media_port, crypto);
    format!(
        "INVITE sip:{SERVICE}@{LOOPBACK}:{sip_port} SIP/2.0\r\nVia: {via};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+49891234567@{LOOPBACK}>;tag=carrier\r\nTo: <sip:{SERVICE}@{LOOPBACK}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{LOOPBACK}:{carrier_port}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        branch(call_id, "inv"),
        sdp.len()
    )
}

pub(crate) fn ack(call_id: &str, to: &str, via: &str, sip_port: u16) -> String {
    in_dialog("ACK", 1, call_id, to, via, sip_port)
}

pub(crate) fn bye(call_id: &str, to: &str, via: &str, sip_port: u16) -> String {
    in_dialog("BYE", 2, call_id, to, via, sip_port)
}

fn in_dialog(method: &str, cseq: u32, call_id: &str, to: &str, via: &str, sip_port: u16) -> String {
    format!(
        "{method} sip:{SERVICE}@{LOOPBACK}:{sip_port} SIP/2.0\r\nVia: {via};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+49891234567@{LOOPBACK}>;tag=carrier\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        branch(call_id, &method.to_lowercase())
    )
}

fn branch(call_id: &str, what: &str) -> String {
    md5_hex(&format!("{call_id}{what}"))[..16].to_string()
}
