//! `cargo xtask bench connector [--clients N] [--rate R] [--seconds S]`:
//! signed-in api-connector clients held at once and the events delivered
//! to them while SIPp places calls, on `callhost serve` (release build).
//!
//! - N clients (default 1,000) sign in with their own directory user and
//!   password and subscribe to the same 20 "hot" colleagues.
//! - The 20 hot users' phones are one SIPp UAS (registered 20 times); a
//!   SIPp UAC on the trunk calls them round robin at R calls/s (default
//!   20, each held 500 ms) for S seconds (default 30). Every call starts
//!   and ends its callee's "in a call": two presence changes, each
//!   delivered to every client (N × 40 events/s at the defaults), plus
//!   the call events of nobody signed in (the hot users' own clients are
//!   not among the N).
//! - Measured: sign-in time for all clients, callhost's resident memory
//!   per client (before and after sign-in), events delivered per second
//!   and their share of the expected count (every change to every
//!   subscriber; a client dropped as "too slow" shows here), clients lost,
//!   and callhost's CPU per 1,000 delivered events.
//! - Reference, side by side: the same clients against a bare
//!   tokio-tungstenite fan-out in a process of its own (this binary,
//!   `bench connector-reference`) that sends the same number of presence
//!   messages at the same rate; its CPU per 1,000 events against
//!   callhost's is the ratio. callhost's CPU includes the SIP calls that
//!   cause the events, so the ratio is an upper bound of the connector's
//!   own cost.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::bench_sip::{
    build_callhost, callhost_quietly, clock_ticks_per_second, fresh_dir, process_tree_ticks,
    read_stats, start_serve, terminate, LOOPBACK,
};
use crate::{package, target_dir, PackageOptions};

const SIP_PORT: u16 = 5180;
const TRUNK_PORT: u16 = 5181;
const UAS_PORT: u16 = 5182;
const CONNECTOR_PORT: u16 = 5183;
const REFERENCE_PORT: u16 = 5184;
const HOT_USERS: usize = 20;
const HOLD_MS: u32 = 500;
const PASSWORD: &str = "bench-secret";

struct Options {
    clients: usize,
    rate: u32,
    seconds: u32,
}

fn options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        clients: 1000,
        rate: 20,
        seconds: 30,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> Result<u64> {
            args.next()
                .with_context(|| format!("{what} needs a number"))?
                .parse()
                .with_context(|| format!("{what} needs a number"))
        };
        match arg.as_str() {
            "--clients" => options.clients = number("--clients")? as usize,
            "--rate" => options.rate = number("--rate")? as u32,
            "--seconds" => options.seconds = number("--seconds")? as u32,
            other => bail!("unknown option `{other}` (known: --clients N, --rate R, --seconds S)"),
        }
    }
    Ok(options)
}

fn user(index: usize) -> String {
    format!("u{index:04}")
}

fn number(index: usize) -> String {
    format!("{}", 3000 + index)
}

pub fn bench_connector(root: &Path, args: &[String]) -> Result<()> {
    let options = options(args)?;
    let work = target_dir(root).join("bench-connector");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let binary = build_callhost(root)?;
    let data = work.join("data");
    prepare(root, &work, &binary, &data, &options)?;
    let dir = fresh_dir(&work, "run")?;
    let log = dir.join("callhost.log");
    let mut serve = start_serve(&binary, &data, &log, "warn")?;
    let result = measure(&binary, &work, &dir, serve.id(), &options);
    terminate(&mut serve);
    let callhost = result?;
    let reference = reference_run(&work, &options, &callhost)?;
    print(&options, &callhost, &reference);
    Ok(())
}

/// The data directory: N + 20 users with passwords, the connector.
fn prepare(root: &Path, work: &Path, binary: &Path, data: &Path, options: &Options) -> Result<()> {
    fs::create_dir_all(data)?;
    let callhost = |args: &[&str]| callhost_quietly(binary, data, args);
    let mut directory = String::from("home_country = \"DE\"\n");
    for index in 0..options.clients + HOT_USERS {
        directory.push_str(&format!(
            "[[users]]\nid = \"{}\"\nname = \"Bench User {index}\"\nnumbers = [\"{}\"]\npassword = \"{PASSWORD}\"\n",
            user(index),
            number(index)
        ));
    }
    let file = work.join("directory.toml");
    fs::write(&file, directory)?;
    callhost(&["directory", "load", file.to_str().context("UTF-8 path")?])?;
    let packages = package(root, &PackageOptions::default())?;
    let key = target_dir(root).join("modules/signing-key.pub");
    callhost(&["trust", "add", key.to_str().context("UTF-8 path")?])?;
    let connector = packages
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("api-connector-"))
        })
        .context("no api-connector package")?;
    callhost(&[
        "module",
        "install",
        connector.to_str().context("UTF-8 path")?,
    ])?;
    let config = work.join("connector.toml");
    let clients = options.clients + 100;
    fs::write(
        &config,
        format!(
            "listen = \"{LOOPBACK}:{CONNECTOR_PORT}\"\nseats = {clients}\nmax_clients = {clients}\n\
             max_clients_per_address = {clients}\n"
        ),
    )?;
    callhost(&[
        "instance",
        "create",
        "api-connector",
        "api",
        "--config",
        config.to_str().context("UTF-8 path")?,
    ])?;
    fs::write(
        data.join("callhost.toml"),
        format!(
            "[sip]\nlisten = \"{LOOPBACK}:{SIP_PORT}\"\n\
             [sip.limits]\nmax_calls = 20000\nmax_setups = 2000\n\
             [sip.trunk]\npeer = \"{LOOPBACK}:{TRUNK_PORT}\"\n\
             [http]\nlisten = \"{LOOPBACK}:0\"\n\
             [media]\naddress = \"{LOOPBACK}\"\nrtp_ports = \"30000-39999\"\n"
        ),
    )?;
    Ok(())
}

/// What one run delivered.
#[derive(Debug, Default)]
struct Figures {
    clients_lost: u64,
    sign_in: Duration,
    memory_per_client_kib: f64,
    /// Events delivered while the calls ran.
    delivered: u64,
    expected: u64,
    seconds: f64,
    cpu_seconds: f64,
    calls_ok: u64,
    calls_failed: u64,
}

impl Figures {
    fn events_per_second(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    fn cpu_ms_per_thousand(&self) -> f64 {
        1_000_000.0 * self.cpu_seconds / self.delivered.max(1) as f64
    }
}

fn measure(binary: &Path, work: &Path, dir: &Path, pid: u32, options: &Options) -> Result<Figures> {
    let key = connector_key(binary, &work.join("data"))?;
    let sipp = SippSide::prepare(work)?;
    sipp.register_hot_users()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rss_before = rss_kib(pid)?;
    let url = format!("ws://{LOOPBACK}:{CONNECTOR_PORT}/");
    let clients = Clients::new();
    let started = Instant::now();
    runtime.block_on(clients.sign_in_all(&url, &key, options.clients))?;
    let sign_in = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid)?;
    let before = clients.presence_events();
    let ticks = process_tree_ticks(pid);
    let started = Instant::now();
    let (ok, failed) = sipp.calls(dir, options.rate, options.seconds)?;
    // The last hangups' presence changes.
    std::thread::sleep(Duration::from_secs(2));
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds =
        process_tree_ticks(pid).saturating_sub(ticks) as f64 / clock_ticks_per_second();
    let delivered = clients.presence_events() - before;
    let lost = clients.lost.load(Ordering::Relaxed);
    drop(runtime);
    Ok(Figures {
        clients_lost: lost,
        sign_in,
        memory_per_client_kib: rss_after.saturating_sub(rss_before) as f64 / options.clients as f64,
        delivered,
        // Two changes per answered call (in a call, free again), to every
        // client; presence coalesces nothing, so this is exact.
        expected: 2 * ok * options.clients as u64,
        seconds,
        cpu_seconds,
        calls_ok: ok,
        calls_failed: failed,
    })
}

/// The installation key, from the `key` action.
fn connector_key(binary: &Path, data: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--data")
        .arg(data)
        .args(["instance", "action", "api", "key"])
        .output()?;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    Ok(shown["key"].as_str().context("no key")?.to_string())
}

/// The clients and their counters.
#[derive(Clone)]
struct Clients {
    presence: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
}

impl Clients {
    fn new() -> Clients {
        Clients {
            presence: Arc::default(),
            lost: Arc::default(),
        }
    }

    fn presence_events(&self) -> u64 {
        self.presence.load(Ordering::Relaxed)
    }

    /// Signs in `count` clients (users u0020…), each subscribed to the 20
    /// hot users; back when all are subscribed. They then read on.
    async fn sign_in_all(&self, url: &str, key: &str, count: usize) -> Result<()> {
        let hot: Vec<String> = (0..HOT_USERS).map(user).collect();
        let (ready, mut readies) = tokio::sync::mpsc::channel::<Result<()>>(count);
        // 50 at a time: a burst of handshakes is not what is measured.
        let gate = Arc::new(tokio::sync::Semaphore::new(50));
        for index in 0..count {
            let url = url.to_string();
            let hello = serde_json::json!({
                "type": "hello", "version": 1, "key": key, "user": user(HOT_USERS + index),
                "password": PASSWORD, "client": {"name": "bench", "version": "1"}
            })
            .to_string();
            let subscribe =
                serde_json::json!({"type": "subscribe", "id": 1, "users": hot}).to_string();
            let counters = self.clone();
            let ready = ready.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let connected = client(&url, &hello, &subscribe).await;
                drop(permit);
                match connected {
                    Ok(socket) => {
                        let _ = ready.send(Ok(())).await;
                        counters.read(socket).await;
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error)).await;
                    }
                }
            });
        }
        drop(ready);
        for _ in 0..count {
            match readies.recv().await {
                Some(Ok(())) => {}
                Some(Err(error)) => return Err(error),
                None => bail!("a client task ended early"),
            }
        }
        Ok(())
    }

    async fn read(&self, mut socket: Socket) {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    if text.contains("\"type\":\"presence\"") {
                        self.presence.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.lost.fetch_add(1, Ordering::Relaxed);
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects, says hello, subscribes; the socket once both were answered.
async fn client(url: &str, hello: &str, subscribe: &str) -> Result<Socket> {
    let address = url.trim_start_matches("ws://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    socket.send(Message::text(hello.to_string())).await?;
    expect(&mut socket, "welcome").await?;
    socket.send(Message::text(subscribe.to_string())).await?;
    expect(&mut socket, "result").await?;
    Ok(socket)
}

/// Reads until a message of `kind` (skipping presence and the like).
async fn expect(socket: &mut Socket, kind: &str) -> Result<()> {
    let wanted = format!("\"type\":\"{kind}\"");
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.contains(&wanted) {
                    return Ok(());
                }
                if text.contains("\"type\":\"error\"") {
                    bail!("the connector refused: {text}");
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(None) => bail!("closed before {kind}"),
            Err(_) => bail!("no {kind} within 30 s"),
        }
    }
}

/// SIPp: the hot users' phone and the trunk's calls to them.
struct SippSide {
    work: std::path::PathBuf,
    uas: std::path::PathBuf,
    uac: std::path::PathBuf,
    register: std::path::PathBuf,
    users: std::path::PathBuf,
    numbers: std::path::PathBuf,
}

impl SippSide {
    fn prepare(work: &Path) -> Result<SippSide> {
        let root = work
            .ancestors()
            .find(|dir| dir.join("tests/sipp/uas.xml").exists())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        let sipp = root.join("tests/sipp");
        let play = "<exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/>";
        let derive = |name: &str, edits: &[(&str, &str)]| -> Result<std::path::PathBuf> {
            let mut text = fs::read_to_string(sipp.join(name))?;
            for (from, to) in edits {
                if !text.contains(from) {
                    bail!("tests/sipp/{name} no longer contains {from:?}");
                }
                text = text.replace(from, to);
            }
            let out = work.join(name.replace(".xml", "_connector.xml"));
            fs::write(&out, text)?;
            Ok(out)
        };
        let users = work.join("hot-users.csv");
        let mut rows = String::from("SEQUENTIAL\n");
        for index in 0..HOT_USERS {
            rows.push_str(&format!(
                "{};[authentication username={} password={PASSWORD}]\n",
                user(index),
                user(index)
            ));
        }
        fs::write(&users, rows)?;
        let numbers = work.join("hot-numbers.csv");
        let mut rows = String::from("SEQUENTIAL\n");
        for index in 0..HOT_USERS {
            rows.push_str(&format!("{};\n", number(index)));
        }
        fs::write(&numbers, rows)?;
        Ok(SippSide {
            work: work.to_path_buf(),
            uas: derive("uas.xml", &[(play, "<log message=\"no media\"/>")])?,
            uac: derive(
                "uac.xml",
                &[
                    (play, "<log message=\"no media\"/>"),
                    ("INVITE sip:[service]@", "INVITE sip:[field0]@"),
                    ("To: <sip:[service]@", "To: <sip:[field0]@"),
                ],
            )?,
            register: sipp.join("register.xml"),
            users,
            numbers,
        })
    }

    fn register_hot_users(&self) -> Result<()> {
        let dir = fresh_dir(&self.work, "register")?;
        let status = Command::new("sipp")
            .current_dir(&dir)
            .args(["-sf", path(&self.register)?])
            .arg(format!("{LOOPBACK}:{SIP_PORT}"))
            .args(["-i", LOOPBACK, "-p", &UAS_PORT.to_string()])
            .args(["-inf", path(&self.users)?, "-m", &HOT_USERS.to_string()])
            .args(["-nostdin", "-timeout", "20s", "-timeout_error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("registering the hot users failed; see {}", dir.display());
        }
        Ok(())
    }

    /// Calls at `rate` for `seconds`; (successful, failed) calls.
    fn calls(&self, dir: &Path, rate: u32, seconds: u32) -> Result<(u64, u64)> {
        let uas_dir = fresh_dir(dir, "uas")?;
        let mut uas = Command::new("sipp")
            .current_dir(&uas_dir)
            .args(["-sf", path(&self.uas)?])
            .args(["-i", LOOPBACK, "-p", &UAS_PORT.to_string(), "-mi", LOOPBACK])
            .args(["-nostdin", "-trace_stat", "-stf", "stat.csv"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        let uac_dir = fresh_dir(dir, "uac")?;
        let calls = u64::from(rate * seconds);
        let status = Command::new("sipp")
            .current_dir(&uac_dir)
            .args(["-sf", path(&self.uac)?])
            .arg(format!("{LOOPBACK}:{SIP_PORT}"))
            .args([
                "-i",
                LOOPBACK,
                "-p",
                &TRUNK_PORT.to_string(),
                "-mi",
                LOOPBACK,
            ])
            .args(["-inf", path(&self.numbers)?])
            .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
            .args(["-d", &HOLD_MS.to_string()])
            .args(["-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "1"])
            .args(["-timeout", &format!("{}s", seconds + 60), "-timeout_error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let _ = uas.kill();
        let _ = uas.wait();
        let outcome = read_stats(&uac_dir)?;
        let (ok, failed) = (outcome.successful, outcome.failed);
        if !status.success() && failed == 0 {
            bail!("the SIPp UAC failed; see {}", uac_dir.display());
        }
        Ok((ok, failed))
    }
}

fn path(path: &Path) -> Result<&str> {
    path.to_str().context("UTF-8 path")
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS")
}

/// The same clients against the bare fan-out, sending what callhost
/// delivered at the same rate.
fn reference_run(work: &Path, options: &Options, callhost: &Figures) -> Result<Figures> {
    let per_client = callhost.delivered / options.clients as u64;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["bench", "connector-reference"])
        .args([
            REFERENCE_PORT.to_string(),
            options.clients.to_string(),
            per_client.to_string(),
            format!("{:.3}", callhost.seconds),
        ])
        .stdout(fs::File::create(work.join("reference.log"))?)
        .stderr(Stdio::inherit())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let clients = Clients::new();
    let url = format!("ws://{LOOPBACK}:{REFERENCE_PORT}/");
    let started = Instant::now();
    runtime.block_on(clients.sign_in_all(&url, "reference", options.clients))?;
    let sign_in = started.elapsed();
    let started = Instant::now();
    // The fan-out starts once every client subscribed, and ends by itself.
    let status = child.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the reference fan-out failed: {status}");
    }
    let cpu_seconds = reported_cpu_seconds(work)?;
    std::thread::sleep(Duration::from_millis(500));
    let delivered = clients.presence_events();
    drop(runtime);
    Ok(Figures {
        clients_lost: 0,
        sign_in,
        memory_per_client_kib: 0.0,
        delivered,
        expected: per_client * options.clients as u64,
        seconds,
        cpu_seconds,
        calls_ok: 0,
        calls_failed: 0,
    })
}

/// The CPU time the reference reports for its fan-out (a finished process
/// has no /proc entry): the last line of its log.
fn reported_cpu_seconds(work: &Path) -> Result<f64> {
    let log = fs::read_to_string(work.join("reference.log"))?;
    log.lines()
        .rev()
        .find_map(|line| line.strip_prefix("cpu_seconds="))
        .and_then(|value| value.trim().parse().ok())
        .context("the reference printed no cpu_seconds")
}

/// `bench connector-reference PORT CLIENTS EVENTS SECONDS`: accepts
/// CLIENTS WebSocket clients, answers hello and subscribe, then sends each
/// EVENTS presence messages spread over SECONDS, closes, and prints its
/// CPU time. Two worker threads, as callhost's.
pub fn reference(args: &[String]) -> Result<()> {
    let [port, clients, events, seconds] = args else {
        bail!("usage: bench connector-reference PORT CLIENTS EVENTS SECONDS");
    };
    let port: u16 = port.parse()?;
    let clients: usize = clients.parse()?;
    let events: u64 = events.parse()?;
    let seconds: f64 = seconds.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ticks = runtime.block_on(fan_out(port, clients, events, seconds))?;
    drop(runtime);
    println!("cpu_seconds={:.3}", ticks as f64 / clock_ticks_per_second());
    Ok(())
}

/// Serves the clients; the CPU ticks the fan-out itself took (from the
/// last subscription to the last send).
async fn fan_out(port: u16, clients: usize, events: u64, seconds: f64) -> Result<u64> {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, port)).await?;
    let (events_tx, _) = tokio::sync::broadcast::channel::<Arc<str>>(4096);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (stream, _) = listener.accept().await?;
        let mut events = events_tx.subscribe();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            // hello → welcome, subscribe → result.
            for answer in [
                r#"{"type":"welcome","version":1}"#,
                r#"{"type":"result","id":1,"ok":true}"#,
            ] {
                if socket.next().await.is_none() {
                    return;
                }
                if socket.send(Message::text(answer)).await.is_err() {
                    return;
                }
            }
            let _ = ready.send(()).await;
            while let Ok(event) = events.recv().await {
                if socket.send(Message::text(event.to_string())).await.is_err() {
                    return;
                }
            }
            let _ = socket.close(None).await;
        }));
    }
    drop(ready_tx);
    for _ in 0..clients {
        ready_rx.recv().await;
    }
    let ticks = process_tree_ticks(std::process::id());
    let presence: Arc<str> = Arc::from(
        r#"{"type":"presence","user":{"user":"u0001","number":"3001","name":"Bench User 1","registered":true,"in_call":true,"dnd":false,"forward_always":null,"forward_busy":null,"forward_no_answer":null,"groups":[],"active_groups":[]}}"#,
    );
    let gap = Duration::from_secs_f64(seconds / events.max(1) as f64);
    let mut tick = tokio::time::interval(gap);
    for _ in 0..events {
        tick.tick().await;
        let _ = events_tx.send(presence.clone());
    }
    drop(events_tx);
    for task in tasks {
        let _ = task.await;
    }
    Ok(process_tree_ticks(std::process::id()).saturating_sub(ticks))
}

fn print(options: &Options, callhost: &Figures, reference: &Figures) {
    println!(
        "== connector: {} clients, each subscribed to {HOT_USERS} colleagues; {} calls/s for {} s",
        options.clients, options.rate, options.seconds
    );
    println!(
        "calls: {} completed, {} failed; clients lost: {}",
        callhost.calls_ok, callhost.calls_failed, callhost.clients_lost
    );
    println!(
        "sign-in of all clients: callhost {:.1} s, reference {:.1} s",
        callhost.sign_in.as_secs_f64(),
        reference.sign_in.as_secs_f64()
    );
    println!(
        "memory per signed-in client (callhost RSS): {:.1} KiB",
        callhost.memory_per_client_kib
    );
    println!("| | events delivered | expected | share | events/s | CPU ms per 1,000 events |");
    println!("|---|---|---|---|---|---|");
    for (name, figures) in [("callhost", callhost), ("reference fan-out", reference)] {
        println!(
            "| {name} | {} | {} | {:.4} | {:.0} | {:.2} |",
            figures.delivered,
            figures.expected,
            figures.delivered as f64 / figures.expected.max(1) as f64,
            figures.events_per_second(),
            figures.cpu_ms_per_thousand()
        );
    }
    println!(
        "CPU per event, callhost / reference: {:.2} (callhost's includes the SIP calls)",
        callhost.cpu_ms_per_thousand() / reference.cpu_ms_per_thousand().max(f64::EPSILON)
    );
}
