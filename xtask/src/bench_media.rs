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
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use md5::{Digest, Md5};
use tokio::net::UdpSocket;

use crate::bench_sip::{
    clock_ticks_per_second, fresh_dir, prepare_callhost_data, process_tree_ticks, terminate,
    Flavour, LOOPBACK, SERVICE,
};

/// Calls at once (the target: at least 1 000).
pub(crate) const MEDIA_CALLS: u32 = 1000;
/// New calls per second while ramping up.
const RAMP_RATE: u32 = 100;
/// How long every call streams once all of them are up.
const STEADY: Duration = Duration::from_secs(20);
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// A gap longer than this between two packets of a stream is audible.
const GAP: Duration = Duration::from_millis(60);
/// Media sockets per side: streams are spread over them by call.
const SOCKETS: usize = 64;

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
}

impl MediaFigures {
    pub(crate) fn print(&self) {
        println!(
            "\n| media: {} G.711 calls, RTP both ways, {} s with all up | value |",
            self.calls,
            STEADY.as_secs()
        );
        println!("|---|---|");
        println!(
            "| calls answered / up at once | {} / {} |",
            self.answered, self.concurrent
        );
        println!(
            "| packets sent / received / lost | {} / {} / {} ({:.4} %) |",
            self.sent,
            self.received,
            self.sent.saturating_sub(self.received),
            100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent.max(1) as f64
        );
        println!(
            "| relay's own count of lost packets (RFC 3550) | {} |",
            self.relay_lost
        );
        println!(
            "| gaps over 60 ms: leaving the relay / arriving at it (added) | {} / {} ({}) |",
            self.gaps_leaving,
            self.gaps_arriving,
            self.gaps_leaving as i64 - self.gaps_arriving as i64
        );
        println!(
            "| longest gap leaving the relay | {:.1} ms |",
            self.max_gap_ms
        );
        println!(
            "| CPU: callhost / generator (% of one core) | {:.0} % / {:.0} % |",
            self.server_cpu_percent, self.generator_cpu_percent
        );
    }
}

/// One RTP stream: sent from `socket` to `to`.
struct Stream {
    socket: usize,
    callee_side: bool,
    to: SocketAddr,
    sequence: u16,
    timestamp: u32,
    sent: u64,
    last_sent: Option<Instant>,
    received: u64,
    last_received: Option<Instant>,
}

#[derive(Default)]
struct Streams {
    all: Vec<Stream>,
    /// Callee-side streams by the relay address they answer.
    by_source: HashMap<(usize, SocketAddr), usize>,
    sending: bool,
    gaps_leaving: u64,
    gaps_arriving: u64,
    max_gap: Duration,
}

impl Streams {
    fn add(&mut self, socket: usize, callee_side: bool, to: SocketAddr) -> usize {
        self.all.push(Stream {
            socket,
            callee_side,
            to,
            sequence: 0,
            timestamp: 0,
            sent: 0,
            last_sent: None,
            received: 0,
            last_received: None,
        });
        self.all.len() - 1
    }

    fn received(&mut self, id: usize, now: Instant) {
        let Some(stream) = self.all.get_mut(id) else {
            return;
        };
        stream.received += 1;
        if let Some(last) = stream.last_received.replace(now) {
            let gap = now.duration_since(last);
            if gap > GAP && self.sending {
                self.gaps_leaving += 1;
            }
            if self.sending {
                self.max_gap = self.max_gap.max(gap);
            }
        }
    }
}

pub(crate) fn run(root: &Path, work: &Path, binary: &Path, calls: u32) -> Result<MediaFigures> {
    println!("== media: {calls} concurrent calls with RTP both ways through callhost's relay");
    let data = work.join("callhost-media-data");
    prepare_callhost_data(root, work, binary, &data, Flavour::Plain)?;
    std::fs::write(
        data.join("callhost.toml"),
        format!(
            "[sip]\nlisten = \"{LOOPBACK}:{SIP_PORT}\"\n\
             [sip.limits]\nmax_calls = 20000\nmax_setups = 2000\n\
             [sip.trunk]\npeer = \"{LOOPBACK}:{CARRIER_PORT}\"\n\
             [media]\naddress = \"{LOOPBACK}\"\nrtp_ports = \"20000-29999\"\n"
        ),
    )?;
    let dir = fresh_dir(work, "media")?;
    let log_path = dir.join("callhost.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(binary)
        .arg("--data")
        .arg(&data)
        .arg("serve")
        .env("CALLHOST_LOG", "warn,callhost_sip=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting callhost serve")?;
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = child.try_wait()? {
        bail!(
            "callhost serve exited at start ({status}); see {}",
            log_path.display()
        );
    }
    // Two threads: receiving never waits long behind a send round.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server_pid = child.id();
    let result = runtime.block_on(generate(calls, server_pid));
    terminate(&mut child);
    let mut figures = result?;
    // The relay's own loss counters, from each call's "call ended" line.
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    figures.relay_lost = text
        .lines()
        .filter(|line| line.contains("call ended"))
        .flat_map(|line| line.split("packets_lost: ").skip(1))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit() && c != '-')
                .next()?
                .parse::<i64>()
                .ok()
        })
        .sum();
    Ok(figures)
}

async fn generate(calls: u32, server_pid: u32) -> Result<MediaFigures> {
    let server = SocketAddr::from(([127, 0, 0, 1], SIP_PORT));
    let carrier = Arc::new(UdpSocket::bind((LOOPBACK, CARRIER_PORT)).await?);
    let phone = Arc::new(UdpSocket::bind((LOOPBACK, PHONE_PORT)).await?);
    register(&phone, server).await?;
    let mut media = Vec::new();
    for base in [CARRIER_MEDIA, PHONE_MEDIA] {
        for i in 0..SOCKETS {
            let socket = std::net::UdpSocket::bind((LOOPBACK, base + i as u16))
                .with_context(|| format!("binding media port {}", base + i as u16))?;
            socket.set_nonblocking(true)?;
            media.push(Arc::new(UdpSocket::from_std(socket)?));
        }
    }
    let streams = Arc::new(Mutex::new(Streams::default()));
    for (index, socket) in media.iter().enumerate() {
        tokio::spawn(receive_media(
            socket.clone(),
            index,
            index >= SOCKETS,
            streams.clone(),
        ));
    }
    tokio::spawn(answer_calls(phone.clone()));
    let answers: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>> = Arc::default();
    tokio::spawn(carrier_responses(carrier.clone(), answers.clone()));
    tokio::spawn(send_media(media.clone(), streams.clone()));

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
        carrier
            .send_to(invite(&call_id, port).as_bytes(), server)
            .await?;
        let (carrier, streams, dialogs) = (carrier.clone(), streams.clone(), dialogs.clone());
        waiting.spawn(async move {
            let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(10), answer).await
            else {
                return;
            };
            let Some((relay_port, to)) = answered_call(&response) else {
                return;
            };
            let _ = carrier.send_to(ack(&call_id, &to).as_bytes(), server).await;
            let relay = SocketAddr::from(([127, 0, 0, 1], relay_port));
            streams.lock().unwrap().add(socket_index, false, relay);
            dialogs.lock().unwrap().push((call_id, to));
        });
        tokio::time::sleep(Duration::from_secs(1) / RAMP_RATE).await;
    }
    while waiting.join_next().await.is_some() {}
    let dialogs = std::mem::take(&mut *dialogs.lock().unwrap());
    let answered = dialogs.len() as u32;
    {
        let mut streams = streams.lock().unwrap();
        streams.sending = true;
        // The gaps of the ramp-up do not count: every stream starts now.
        for stream in streams.all.iter_mut() {
            stream.last_received = None;
        }
    }
    // All calls are up: measure the steady phase.
    let server_start = process_tree_ticks(server_pid);
    let own_start = own_ticks();
    let started = Instant::now();
    tokio::time::sleep(STEADY).await;
    let concurrent = {
        let mut streams = streams.lock().unwrap();
        streams.sending = false;
        streams.all.iter().filter(|s| !s.callee_side).count() as u32
    };
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = process_tree_ticks(server_pid).saturating_sub(server_start) as f64 / ticks;
    let own_cpu = own_ticks().saturating_sub(own_start) as f64 / ticks;
    // In flight packets arrive, then the calls end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (call_id, to) in &dialogs {
        carrier.send_to(bye(call_id, to).as_bytes(), server).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let streams = streams.lock().unwrap();
    let sent: u64 = streams.all.iter().map(|s| s.sent).sum();
    let received: u64 = streams.all.iter().map(|s| s.received).sum();
    Ok(MediaFigures {
        calls,
        answered,
        concurrent,
        sent,
        received,
        gaps_leaving: streams.gaps_leaving,
        gaps_arriving: streams.gaps_arriving,
        max_gap_ms: streams.max_gap.as_secs_f64() * 1000.0,
        server_cpu_percent: 100.0 * server_cpu / elapsed,
        generator_cpu_percent: 100.0 * own_cpu / elapsed,
        relay_lost: 0,
    })
}

/// Every 20 ms, one packet for every stream while the steady phase runs.
async fn send_media(sockets: Vec<Arc<UdpSocket>>, streams: Arc<Mutex<Streams>>) {
    let mut interval = tokio::time::interval(PACKET_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut packet = [0xD5u8; 172];
    packet[0] = 0x80;
    packet[1] = 8; // PCMA
    loop {
        interval.tick().await;
        let now = Instant::now();
        let mut streams = streams.lock().unwrap();
        if !streams.sending {
            for stream in streams.all.iter_mut() {
                stream.last_sent = None;
            }
            continue;
        }
        let mut late = 0;
        for (id, stream) in streams.all.iter_mut().enumerate() {
            if let Some(last) = stream.last_sent {
                if now.duration_since(last) > GAP {
                    late += 1;
                }
            }
            stream.sequence = stream.sequence.wrapping_add(1);
            stream.timestamp = stream.timestamp.wrapping_add(160);
            packet[2..4].copy_from_slice(&stream.sequence.to_be_bytes());
            packet[4..8].copy_from_slice(&stream.timestamp.to_be_bytes());
            packet[8..12].copy_from_slice(&(id as u32).to_be_bytes());
            if sockets[stream.socket]
                .try_send_to(&packet, stream.to)
                .is_ok()
            {
                stream.sent += 1;
                stream.last_sent = Some(now);
            }
        }
        streams.gaps_arriving += late;
    }
}

/// Counts what arrives on one media socket; a callee-side socket answers a
/// new relay address with a stream of its own.
async fn receive_media(
    socket: Arc<UdpSocket>,
    index: usize,
    callee_side: bool,
    streams: Arc<Mutex<Streams>>,
) {
    let mut buffer = [0u8; 2048];
    loop {
        let Ok((len, source)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if len < 12 {
            continue;
        }
        let now = Instant::now();
        let ssrc = u32::from_be_bytes(buffer[8..12].try_into().expect("4 bytes")) as usize;
        let mut streams = streams.lock().unwrap();
        streams.received(ssrc, now);
        if callee_side && !streams.by_source.contains_key(&(index, source)) {
            let id = streams.add(index, true, source);
            streams.by_source.insert((index, source), id);
        }
    }
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// REGISTER as `bench` (digest, qop=auth) from the phone's socket.
async fn register(phone: &UdpSocket, server: SocketAddr) -> Result<()> {
    let uri = format!("sip:{LOOPBACK}:{SIP_PORT}");
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{PHONE_PORT};branch=z9hG4bKreg{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bench@{LOOPBACK}>;tag=benchreg\r\nTo: <sip:bench@{LOOPBACK}>\r\nCall-ID: bench-register@{LOOPBACK}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:bench@{LOOPBACK}:{PHONE_PORT}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
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
/// the phone-side sockets), BYE 200, ACK nothing.
async fn answer_calls(phone: Arc<UdpSocket>) {
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
            let sdp = sdp(port);
            response(
                &message,
                "200 OK",
                &format!(
                    "Contact: <sip:bench@{LOOPBACK}:{PHONE_PORT}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
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

fn header<'a>(message: &'a str, name: &str) -> &'a str {
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

fn response(request: &str, status: &str, rest: &str) -> String {
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

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=bench 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn invite(call_id: &str, media_port: u16) -> String {
    let sdp = sdp(media_port);
    format!(
        "INVITE sip:{SERVICE}@{LOOPBACK}:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{CARRIER_PORT};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+49891234567@{LOOPBACK}>;tag=carrier\r\nTo: <sip:{SERVICE}@{LOOPBACK}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{LOOPBACK}:{CARRIER_PORT}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        branch(call_id, "inv"),
        sdp.len()
    )
}

fn ack(call_id: &str, to: &str) -> String {
    format!(
        "ACK sip:{SERVICE}@{LOOPBACK}:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{CARRIER_PORT};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+49891234567@{LOOPBACK}>;tag=carrier\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        branch(call_id, "ack")
    )
}

fn bye(call_id: &str, to: &str) -> String {
    format!(
        "BYE sip:{SERVICE}@{LOOPBACK}:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{CARRIER_PORT};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+49891234567@{LOOPBACK}>;tag=carrier\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        branch(call_id, "bye")
    )
}

fn branch(call_id: &str, what: &str) -> String {
    md5_hex(&format!("{call_id}{what}"))[..16].to_string()
}
