//! The TLS step of `cargo xtask bench sip`: the same calls set up from the
//! carrier over SIP over TLS (one connection, as a trunk holds it) and over
//! UDP, each step on a fresh `callhost serve`, [`SECONDS`] s at a fixed
//! rate, the two taking turns at each of [`RATES`] until each fails one (a
//! step passes when every call is answered 200 within 5 s). SIPp here is
//! built without TLS, so the carrier is the media step's small user agent
//! (`bench_media.rs`) speaking over a tokio-rustls connection; the called
//! phone is the same UDP phone in both runs. Figures per step: calls
//! answered, INVITE→200 at the carrier (p50, p99), callhost's CPU; then the
//! highest passing rate of each and their ratio, and the CPU ratio at the
//! first rate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::bench_media::{ack, answer_calls, bye, header, invite_via, register};
use crate::bench_sip::{
    clock_ticks_per_second, fresh_dir, percentile, prepare_callhost_data, process_tree_ticks,
    start_serve, terminate, Flavour, LOOPBACK,
};

/// New calls per second, step by step.
const RATES: [u32; 4] = [200, 400, 800, 1600];
const SECONDS: u32 = 10;
const SIP_PORT: u16 = 5088;
const TLS_PORT: u16 = 5089;
const CARRIER_PORT: u16 = 5066;
const PHONE_PORT: u16 = 5076;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signalling {
    Udp,
    Tls,
}

#[derive(Debug)]
pub(crate) struct SetupFigures {
    signalling: Signalling,
    rate: u32,
    placed: u32,
    answered: u32,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu_percent: f64,
}

impl SetupFigures {
    fn passed(&self) -> bool {
        self.answered == self.placed
    }
}

/// Every step: at each rate UDP then TLS, each until its first failure.
pub(crate) fn run_comparison(root: &Path, work: &Path, binary: &Path) -> Result<Vec<SetupFigures>> {
    let mut figures: Vec<SetupFigures> = Vec::new();
    for rate in RATES {
        for signalling in [Signalling::Udp, Signalling::Tls] {
            let failed = figures
                .iter()
                .any(|f| f.signalling == signalling && !f.passed());
            if !failed {
                figures.push(run(root, work, binary, signalling, rate)?);
            }
        }
    }
    Ok(figures)
}

pub(crate) fn print(figures: &[SetupFigures]) {
    println!(
        "\n| call setup from the trunk, {SECONDS} s per step | rate | answered / placed | INVITE→200 p50 / p99 | CPU callhost |"
    );
    println!("|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {:?} | {}/s | {} / {} | {:.2} / {:.2} ms | {:.0} % |",
            f.signalling, f.rate, f.answered, f.placed, f.p50_ms, f.p99_ms, f.server_cpu_percent
        );
    }
    let highest = |signalling| {
        figures
            .iter()
            .filter(|f| f.signalling == signalling && f.passed())
            .map(|f| f.rate)
            .max()
    };
    let shown =
        |rate: Option<u32>| rate.map_or("below the first step".to_string(), |r| format!("{r}/s"));
    let (udp, tls) = (highest(Signalling::Udp), highest(Signalling::Tls));
    println!(
        "highest rate with every call answered: UDP {}, TLS {}{}",
        shown(udp),
        shown(tls),
        match (udp, tls) {
            (Some(u), Some(t)) => format!(" (TLS/UDP {:.2})", f64::from(t) / f64::from(u)),
            _ => String::new(),
        }
    );
    if let (Some(udp), Some(tls)) = (
        figures
            .iter()
            .find(|f| f.signalling == Signalling::Udp && f.rate == RATES[0]),
        figures
            .iter()
            .find(|f| f.signalling == Signalling::Tls && f.rate == RATES[0]),
    ) {
        if udp.server_cpu_percent > 0.0 && udp.p99_ms > 0.0 {
            println!(
                "at {}/s TLS/UDP: CPU {:.2}, p99 {:.2} (one TLS connection for all calls, as a trunk holds it)",
                RATES[0],
                tls.server_cpu_percent / udp.server_cpu_percent,
                tls.p99_ms / udp.p99_ms
            );
        }
    }
}

fn run(
    root: &Path,
    work: &Path,
    binary: &Path,
    signalling: Signalling,
    rate: u32,
) -> Result<SetupFigures> {
    println!("== call setup over {signalling:?}: {rate} calls/s for {SECONDS} s");
    let data = work.join("callhost-tls-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    prepare_callhost_data(root, work, binary, &data, Flavour::Plain)?;
    let status = Command::new(binary)
        .arg("--data")
        .arg(&data)
        .args(["tls", "self-signed", "--name", LOOPBACK])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("`callhost tls self-signed` failed");
    }
    let trunk = match signalling {
        Signalling::Udp => format!("peer = \"{LOOPBACK}:{CARRIER_PORT}\"\n"),
        Signalling::Tls => format!("peer = \"{LOOPBACK}:{CARRIER_PORT}\"\ntransport = \"tls\"\n"),
    };
    std::fs::write(
        data.join("callhost.toml"),
        format!(
            "[sip]\nlisten = \"{LOOPBACK}:{SIP_PORT}\"\n\
             [sip.tls]\nlisten = \"{LOOPBACK}:{TLS_PORT}\"\ncertificate = \"tls/sip-cert.pem\"\nkey = \"tls/sip-key.pem\"\n\
             [sip.limits]\nmax_calls = 20000\nmax_setups = 2000\n\
             [sip.trunk]\n{trunk}\
             [media]\naddress = \"{LOOPBACK}\"\nrtp_ports = \"20000-29999\"\n\
             [http]\nlisten = \"{LOOPBACK}:0\"\n"
        ),
    )?;
    let dir = fresh_dir(work, &format!("setup-{signalling:?}-{rate}"))?;
    let mut child = start_serve(binary, &data, &dir.join("callhost.log"), "warn")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(generate(signalling, rate, child.id()));
    terminate(&mut child);
    result
}

/// The carrier's side: datagrams or one TLS connection.
enum Carrier {
    Udp(Arc<UdpSocket>),
    Tls(tokio::sync::Mutex<tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Carrier {
    async fn send(&self, message: &str) -> Result<()> {
        let server = SocketAddr::from(([127, 0, 0, 1], SIP_PORT));
        match self {
            Carrier::Udp(socket) => {
                socket.send_to(message.as_bytes(), server).await?;
            }
            Carrier::Tls(stream) => stream.lock().await.write_all(message.as_bytes()).await?,
        }
        Ok(())
    }
}

async fn generate(signalling: Signalling, rate: u32, server_pid: u32) -> Result<SetupFigures> {
    let server = SocketAddr::from(([127, 0, 0, 1], SIP_PORT));
    let phone = Arc::new(UdpSocket::bind((LOOPBACK, PHONE_PORT)).await?);
    register(&phone, server, PHONE_PORT, SIP_PORT).await?;
    tokio::spawn(answer_calls(phone.clone(), None, PHONE_PORT));
    type Waiting = Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>>;
    let waiting: Waiting = Arc::default();
    let (carrier, via) = match signalling {
        Signalling::Udp => {
            let socket = Arc::new(UdpSocket::bind((LOOPBACK, CARRIER_PORT)).await?);
            let reader = socket.clone();
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                while let Ok((len, from)) = reader.recv_from(&mut buffer).await {
                    let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
                    answer_or_deliver(&text, &waiting, |reply| {
                        let reader = reader.clone();
                        tokio::spawn(async move { reader.send_to(reply.as_bytes(), from).await });
                    });
                }
            });
            (
                Carrier::Udp(socket),
                format!("SIP/2.0/UDP {LOOPBACK}:{CARRIER_PORT}"),
            )
        }
        Signalling::Tls => {
            let stream = tls_connect().await?;
            let local = stream.get_ref().0.local_addr()?;
            let (mut reader, writer) = tokio::io::split(stream);
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = vec![0u8; 16384];
                while let Ok(n) = reader.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some((message, rest)) = split_message(&buffer) {
                        let text = String::from_utf8_lossy(&message).into_owned();
                        buffer = rest;
                        // The host's BYEs are not answered here: calls are
                        // ended by the carrier.
                        answer_or_deliver(&text, &waiting, |_| {});
                    }
                }
            });
            (
                Carrier::Tls(tokio::sync::Mutex::new(writer)),
                format!("SIP/2.0/TLS {local}"),
            )
        }
    };
    let carrier = Arc::new(carrier);
    let ticks = clock_ticks_per_second();
    let cpu_start = process_tree_ticks(server_pid);
    let started = Instant::now();
    let total = rate * SECONDS;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..total {
        let call_id = format!("bench-setup-{n}@{LOOPBACK}");
        let (reply, answer) = tokio::sync::oneshot::channel();
        waiting.lock().unwrap().insert(call_id.clone(), reply);
        let (carrier, via) = (carrier.clone(), via.clone());
        calls.spawn(async move {
            let sent = Instant::now();
            carrier
                .send(&invite_via(
                    &call_id,
                    40_000,
                    None,
                    &via,
                    CARRIER_PORT,
                    SIP_PORT,
                ))
                .await
                .ok()?;
            let response = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .ok()?
                .ok()?;
            let setup = sent.elapsed();
            if !response.starts_with("SIP/2.0 200") {
                return None;
            }
            let to = header(&response, "To").to_string();
            carrier
                .send(&ack(&call_id, &to, &via, SIP_PORT))
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            carrier
                .send(&bye(&call_id, &to, &via, SIP_PORT))
                .await
                .ok()?;
            Some(setup)
        });
        let due = started + Duration::from_secs(1) * (n + 1) / rate;
        tokio::time::sleep_until(due.into()).await;
    }
    let mut setups = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Ok(Some(setup)) = done {
            setups.push(setup);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = process_tree_ticks(server_pid).saturating_sub(cpu_start) as f64 / ticks;
    setups.sort();
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    Ok(SetupFigures {
        signalling,
        rate,
        placed: total,
        answered: setups.len() as u32,
        p50_ms: ms(percentile(&setups, 0.50)),
        p99_ms: ms(percentile(&setups, 0.99)),
        server_cpu_percent: 100.0 * server_cpu / elapsed,
    })
}

/// A final answer to an INVITE goes to its call; a request from the host
/// (a BYE) is agreed to with `reply`.
fn answer_or_deliver(
    text: &str,
    waiting: &Mutex<HashMap<String, tokio::sync::oneshot::Sender<String>>>,
    reply: impl FnOnce(String),
) {
    if !text.starts_with("SIP/2.0 ") {
        reply(crate::bench_media::response(
            text,
            "200 OK",
            "Content-Length: 0\r\n\r\n",
        ));
        return;
    }
    let status: u16 = text.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status < 200 || !header(text, "CSeq").contains("INVITE") {
        return;
    }
    let call_id = header(text, "Call-ID").to_string();
    if let Some(sender) = waiting.lock().unwrap().remove(&call_id) {
        let _ = sender.send(text.to_string());
    }
}

/// One SIP message off the front of a stream's bytes (head and
/// Content-Length body), and what follows it.
fn split_message(buffer: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffer[..end]);
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim().eq_ignore_ascii_case("content-length") || name.trim() == "l")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if buffer.len() < end + length {
        return None;
    }
    Some((
        buffer[..end + length].to_vec(),
        buffer[end + length..].to_vec(),
    ))
}

/// A TLS connection to the host that accepts its self-signed certificate
/// (this is a load generator, not a phone: what is measured is the host).
async fn tls_connect() -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // The trunk's address is the carrier's port: connect from it.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], CARRIER_PORT)))?;
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], TLS_PORT)))
        .await
        .context("connecting to callhost's TLS port")?;
    let name = ServerName::try_from(LOOPBACK.to_string())?;
    Ok(connector.connect(name, stream).await?)
}
