//! Harness for the SIP tests (host/tests/sip.rs): `callhost serve` as a
//! child process on free ports, SIPp runs with their message traces, and a
//! silent "phone" that only records what reaches it.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const LOCALHOST: &str = "127.0.0.1";

/// The servers' log filter in the tests: the default, and the call's
/// DEBUG lines. `("CALLHOST_LOG", "")` in [`Setup::env`] gives the default.
pub const TEST_LOG: &str = "warn,callhost=info,callhost_sip=info,callhost_sip::call=debug";

/// A port that is free for UDP and TCP on 127.0.0.1. Ports come from the
/// window below the kernel's ephemeral range (32768 up), handed out in turn
/// to the tests of this binary (threads), so no two get the same one; after
/// the window's end it starts again at its beginning, where the ports of
/// tests that ended are free again (each is tried before it is handed out).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive free ports.
pub fn free_ports(count: u32) -> u16 {
    const FIRST: u32 = 20_000;
    const WINDOW: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert!(count < WINDOW / 4, "{count} ports at once");
    let mut tried = 0;
    loop {
        let offset = NEXT.fetch_add(count, Ordering::SeqCst) % (WINDOW - count);
        let first = (FIRST + offset) as u16;
        let free = (first..first + count as u16).all(|port| {
            UdpSocket::bind((LOCALHOST, port)).is_ok()
                && TcpListener::bind((LOCALHOST, port)).is_ok()
        });
        if free {
            return first;
        }
        tried += count;
        assert!(
            tried < 4 * WINDOW,
            "no {count} free ports in {FIRST}..{}",
            FIRST + WINDOW
        );
    }
}

/// The repository's SIPp scenarios.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sipp")
        .join(name)
}

/// One `callhost serve` on its own data directory and ports; stopped with
/// SIGTERM when dropped.
pub struct Serve {
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    /// SIP (UDP and TCP) on 127.0.0.1.
    pub port: u16,
    /// The trunk peer: SIPp runs from this port to call in as the carrier.
    pub trunk_port: u16,
    /// The media relay's ports.
    pub rtp: (u16, u16),
    log: Arc<Mutex<String>>,
    pub banner: String,
}

impl Serve {
    /// Where the web UI and the HTTP API answer (`http://IP:PORT`), as the
    /// banner says.
    pub fn http_url(&self) -> String {
        self.banner
            .lines()
            .find_map(|line| line.trim().strip_prefix("web UI and HTTP API on "))
            .unwrap_or_else(|| panic!("no HTTP in the banner:\n{}", self.banner))
            .to_string()
    }
}

/// What a test adds to the server's configuration and environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup<'a> {
    /// Lines for the `[sip]` table (e.g. `auth_failures = 3`); further
    /// `[sip.*]` tables such as `[sip.limits]` may follow them.
    pub sip: &'a str,
    /// Lines for the `[sip.trunk]` table after its `peer`.
    pub trunk: &'a str,
    /// Lines for the `[media]` table.
    pub media: &'a str,
    /// Lines for the `[http]` table after its `listen` (a free port).
    pub http: &'a str,
    /// Environment variables of the `callhost serve` process.
    pub env: &'a [(&'a str, &'a str)],
    /// Arguments after `serve` (e.g. `--log-format json`).
    pub args: &'a [&'a str],
    /// Ports of the relay's range (two per call); 0 means 12.
    pub rtp_ports: u32,
}

/// The text of `callhost.toml`'s `[sip]` and `[media]` tables.
fn host_config(port: u16, trunk_port: u16, rtp: (u16, u16), setup: &Setup) -> String {
    let Setup {
        sip,
        trunk,
        media,
        http,
        ..
    } = setup;
    format!(
        "[sip]\nlisten = \"{LOCALHOST}:{port}\"\n{sip}\n\
         [sip.trunk]\npeer = \"{LOCALHOST}:{trunk_port}\"\n{trunk}\n\n\
         [media]\naddress = \"{LOCALHOST}\"\nrtp_ports = \"{}-{}\"\n{media}\n\
         [http]\nlisten = \"{LOCALHOST}:0\"\n{http}\n",
        rtp.0, rtp.1
    )
}

impl Serve {
    /// A fresh data directory with `directory` loaded; `sip_extra` goes
    /// into the `[sip]` table (e.g. `auth_failures = 3`).
    pub fn start(directory: &str, sip_extra: &str) -> Serve {
        Serve::start_with(
            directory,
            Setup {
                sip: sip_extra,
                ..Setup::default()
            },
        )
    }

    /// A fresh data directory with `directory` loaded and `setup` in the
    /// configuration and environment.
    pub fn start_with(directory: &str, setup: Setup) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut serve = Serve::start_in_with(dir.path(), directory, setup);
        serve._dir = Some(dir);
        serve
    }

    /// As [`Serve::start`], in an existing data directory (one with modules
    /// installed, say).
    pub fn start_in(data: &Path, directory: &str, sip_extra: &str) -> Serve {
        Serve::start_in_with(
            data,
            directory,
            Setup {
                sip: sip_extra,
                ..Setup::default()
            },
        )
    }

    /// As [`Serve::start_with`], in an existing data directory.
    pub fn start_in_with(data: &Path, directory: &str, setup: Setup) -> Serve {
        let port = free_port();
        let trunk_port = free_port();
        let count = if setup.rtp_ports == 0 {
            12
        } else {
            setup.rtp_ports
        };
        let first = free_ports(count);
        let rtp = (first, first + count as u16 - 1);
        std::fs::write(
            data.join("callhost.toml"),
            host_config(port, trunk_port, rtp, &setup),
        )
        .expect("write callhost.toml");
        let directory_file = data.join("sip-directory.toml");
        std::fs::write(&directory_file, directory).expect("write directory");
        callhost(
            data,
            &["directory", "load", directory_file.to_str().unwrap()],
        );

        let mut child = Command::new(env!("CARGO_BIN_EXE_callhost"))
            .arg("--data")
            .arg(data)
            .arg("serve")
            .args(setup.args)
            .env_remove("CALLHOST_DATA")
            // What happens during a call (answered, forwarding, transfers)
            // is DEBUG; the tests wait for it.
            .env("CALLHOST_LOG", TEST_LOG)
            .env("NO_COLOR", "1")
            .envs(setup.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start callhost serve");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        // The banner's first line says it is listening; the rest follows.
        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            data: data.to_path_buf(),
            _dir: None,
            child: Some(child),
            port,
            trunk_port,
            rtp,
            log,
            banner: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    serve.banner.push_str(&line);
                    serve.banner.push('\n');
                    if line.contains("active module instance") {
                        break;
                    }
                }
                Err(_) => panic!(
                    "callhost serve did not come up; banner so far:\n{}\nlog:\n{}",
                    serve.banner,
                    serve.log()
                ),
            }
        }
        assert!(
            serve.banner.starts_with("callhost serve: SIP on"),
            "{}",
            serve.banner
        );
        serve
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `IP:PORT` of the SIP listener, as SIPp wants the remote.
    pub fn addr(&self) -> String {
        format!("{LOCALHOST}:{}", self.port)
    }

    /// Everything the server logged so far (stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing every one of `parts`, past the first
    /// `skip` such lines; returns it.
    pub fn wait_log_nth(&self, parts: &[&str], skip: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let found = log
                .lines()
                .filter(|line| parts.iter().all(|part| line.contains(part)))
                .nth(skip)
                .map(str::to_string);
            if let Some(line) = found {
                return line;
            }
            if Instant::now() >= deadline {
                panic!("no log line with {parts:?} within {timeout:?}; log:\n{log}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_log(&self, parts: &[&str]) -> String {
        self.wait_log_nth(parts, 0, Duration::from_secs(15))
    }

    /// SIGTERM, then waits (at most 15 s) for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("serve already stopped");
        terminate(&mut child, Duration::from_secs(15))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!("--- callhost serve log ---\n{}", self.log());
        }
    }
}

/// SIGTERM to a child of ours (by its pid), SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            return child.wait().expect("wait for child");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `callhost --data DATA ARGS`, expecting success; returns stdout.
pub fn callhost(data: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_callhost"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CALLHOST_DATA")
        .output()
        .expect("run callhost");
    assert!(
        output.status.success(),
        "callhost {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// A SIPp run in progress.
pub struct Sipp {
    pub name: String,
    child: Option<Child>,
    trace: PathBuf,
    errors: PathBuf,
    _dir: tempfile::TempDir,
}

/// A finished SIPp run.
pub struct SippRun {
    pub name: String,
    /// The exit code (0: every call passed; None: killed).
    pub code: Option<i32>,
    /// The message trace (`-trace_msg`).
    pub trace: String,
    /// Unexpected messages and the like (`-trace_err`).
    pub errors: String,
}

/// One SIP message from a trace.
#[derive(Debug, Clone)]
pub struct Message {
    pub sent: bool,
    pub text: String,
}

impl Message {
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The value of the first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
            })
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let line = self.start_line();
        line.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// The port of the SDP's audio stream.
    pub fn sdp_audio_port(&self) -> Option<u16> {
        self.text
            .lines()
            .find_map(|line| line.trim().strip_prefix("m=audio "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
    }

    pub fn sdp_connection(&self) -> Option<&str> {
        self.text
            .lines()
            .find_map(|line| line.trim().strip_prefix("c=IN IP4 "))
            .map(str::trim)
    }
}

impl Sipp {
    /// Starts SIPp with `scenario` (a file in tests/sipp) from local port
    /// `port` towards `remote` (None for a UAS). `extra` are further SIPp
    /// arguments (-s, -inf, -mp, -d, ...).
    pub fn start(
        name: &str,
        scenario_file: &str,
        remote: Option<&str>,
        port: u16,
        extra: &[&str],
    ) -> Sipp {
        let dir = tempfile::tempdir().expect("tempdir");
        let trace = dir.path().join("messages.log");
        let errors = dir.path().join("errors.log");
        // Scenarios name their own captures as `pcap/…`, relative to where
        // SIPp runs.
        let pcaps = scenario("pcap");
        std::os::unix::fs::symlink(&pcaps, dir.path().join("pcap")).expect("link pcap/");
        let mut command = Command::new("sipp");
        command
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args(remote)
            .args(["-i", LOCALHOST, "-p", &port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&trace)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors)
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("start sipp (is it installed?)");
        Sipp {
            name: name.to_string(),
            child: Some(child),
            trace,
            errors,
            _dir: dir,
        }
    }

    /// Waits (at most `timeout`) until the trace so far contains `text`.
    pub fn wait_trace(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let trace = std::fs::read_to_string(&self.trace).unwrap_or_default();
            if trace.contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 40 s) for SIPp to finish.
    pub fn wait(mut self) -> SippRun {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait for sipp") {
                break status.code();
            }
            if Instant::now() >= deadline {
                child.kill().ok();
                child.wait().ok();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        SippRun {
            name: self.name.clone(),
            code,
            trace: std::fs::read_to_string(&self.trace).unwrap_or_default(),
            errors: std::fs::read_to_string(&self.errors).unwrap_or_default(),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// Runs SIPp to the end.
pub fn sipp(
    name: &str,
    scenario_file: &str,
    remote: Option<&str>,
    port: u16,
    extra: &[&str],
) -> SippRun {
    Sipp::start(name, scenario_file, remote, port, extra).wait()
}

impl SippRun {
    /// Panics with the trace unless SIPp exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "SIPp {} failed (exit {:?})\n--- errors ---\n{}\n--- trace ---\n{}",
            self.name,
            self.code,
            self.errors,
            self.trace
        );
        self
    }

    /// The trace as messages, in order.
    pub fn messages(&self) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut current: Option<Message> = None;
        let mut lines = self.trace.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("----------------------------------------------- ") {
                messages.extend(current.take());
                // "UDP message sent (N bytes):" / "TCP message received [N] bytes :"
                let kind = lines.next().unwrap_or("");
                let sent = kind.contains("message sent");
                current = Some(Message {
                    sent,
                    text: String::new(),
                });
                continue;
            }
            if let Some(message) = current.as_mut() {
                if message.text.is_empty() && line.trim().is_empty() {
                    continue;
                }
                message.text.push_str(line);
                message.text.push('\n');
            }
        }
        messages.extend(current);
        messages
    }

    pub fn received(&self) -> Vec<Message> {
        self.messages().into_iter().filter(|m| !m.sent).collect()
    }

    /// The first received request with this method.
    pub fn received_request(&self, method: &str) -> Option<Message> {
        self.received()
            .into_iter()
            .find(|m| m.start_line().starts_with(&format!("{method} ")))
    }

    /// Status codes of every received response, in order.
    pub fn received_statuses(&self) -> Vec<u16> {
        self.received().iter().filter_map(Message::status).collect()
    }

    /// The last final (>= 200) status received for an INVITE.
    pub fn final_invite_status(&self) -> Option<u16> {
        self.received()
            .iter()
            .filter(|m| m.header("CSeq").is_some_and(|c| c.ends_with("INVITE")))
            .filter_map(Message::status)
            .rfind(|s| *s >= 200 && *s != 407 && *s != 401)
    }

    pub fn context(&self) -> String {
        format!("SIPp {} (exit {:?}):\n{}", self.name, self.code, self.trace)
    }
}

/// A phone that never answers: binds the port a registration left behind
/// and records every datagram until dropped.
pub struct SilentPhone {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SilentPhone {
    pub fn listen(port: u16) -> SilentPhone {
        let socket = UdpSocket::bind((LOCALHOST, port)).expect("bind the phone's port");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), received.clone());
        let thread = thread::spawn(move || {
            let mut buffer = [0u8; 65536];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                }
            }
        });
        SilentPhone {
            stop,
            received,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// The INVITEs that reached this phone.
    pub fn invites(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|m| m.starts_with("INVITE "))
            .collect()
    }
}

impl Drop for SilentPhone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

// ---------------------------------------------------------------------------
// A phone written by hand

/// How long a hand phone waits for what it expects.
pub const WAIT: Duration = Duration::from_secs(15);

/// A SIP phone on one UDP socket that sends exactly what a test writes,
/// from any loopback address (127.0.0.2 is another host to the server),
/// and keeps every message it got. Requests it did not ask for are
/// answered 200 (NOTIFY, BYE, OPTIONS), except INVITEs, which wait in
/// its inbox until the test takes them with [`HandPhone::expect`].
pub struct HandPhone {
    pub socket: UdpSocket,
    /// Where RTP to this phone goes (nothing reads it unless a test does).
    pub media: UdpSocket,
    pub ip: String,
    pub port: u16,
    pub server: String,
    /// The user part of our Contact.
    pub user: String,
    /// Every message received, in order.
    pub seen: std::cell::RefCell<Vec<String>>,
    inbox: std::cell::RefCell<std::collections::VecDeque<String>>,
    /// INVITEs already taken (Call-ID and CSeq), so retransmissions are
    /// not taken twice.
    taken: std::cell::RefCell<std::collections::HashSet<String>>,
    sequence: std::cell::Cell<u32>,
}

/// One of our dialogs, as its requests need it.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our side (name-addr with our tag): From in our requests.
    pub local: String,
    /// Their side with their tag: To in our requests.
    pub remote: String,
    /// Their Contact: the Request-URI of our requests.
    pub target: String,
    cseq: std::cell::Cell<u32>,
}

impl Dialog {
    pub fn local_tag(&self) -> &str {
        tag_of(&self.local)
    }

    pub fn remote_tag(&self) -> &str {
        tag_of(&self.remote)
    }
}

/// An INVITE we sent that waits for its final answer.
#[derive(Debug, Clone)]
pub struct Invite {
    pub uri: String,
    pub call_id: String,
    /// Our From, with tag.
    pub from: String,
    /// The To we wrote (no tag).
    pub to: String,
    pub branch: String,
    pub cseq: u32,
}

/// A REGISTER that went through, with what an eavesdropper would see.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The final response to the authenticated REGISTER.
    pub response: String,
    /// The authenticated request as it was sent.
    pub request: String,
    /// Its Authorization value.
    pub authorization: String,
}

impl HandPhone {
    /// A phone on 127.0.0.1:`port` (0: any free port).
    pub fn bind(port: u16, server: &str) -> HandPhone {
        HandPhone::bind_at(LOCALHOST, port, server)
    }

    /// A phone on `ip`:`port` (0: any free port).
    pub fn bind_at(ip: &str, port: u16, server: &str) -> HandPhone {
        let socket = UdpSocket::bind((ip, port))
            .unwrap_or_else(|e| panic!("bind the hand phone on {ip}:{port}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let media = UdpSocket::bind((ip, 0)).expect("bind the hand phone's media port");
        media
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        HandPhone {
            socket,
            media,
            ip: ip.to_string(),
            port,
            server: server.to_string(),
            user: "hand".to_string(),
            seen: Default::default(),
            inbox: Default::default(),
            taken: Default::default(),
            sequence: Default::default(),
        }
    }

    /// The same phone, writing `user` into its Contact.
    pub fn named(mut self, user: &str) -> HandPhone {
        self.user = user.to_string();
        self
    }

    /// `ip:port` of the phone.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn media_port(&self) -> u16 {
        self.media.local_addr().unwrap().port()
    }

    /// A token unique to this phone (branches, tags, Call-IDs).
    pub fn unique(&self, what: &str) -> String {
        let n = self.sequence.get() + 1;
        self.sequence.set(n);
        format!("{what}{n}x{}x{}", self.port, self.ip.replace('.', ""))
    }

    pub fn send(&self, message: &str) {
        self.socket
            .send_to(message.as_bytes(), &self.server)
            .unwrap();
    }

    /// The next datagram before `until`, recorded in `seen`.
    fn receive(&self, until: Instant) -> Option<String> {
        let mut buffer = [0u8; 65536];
        while Instant::now() < until {
            let Ok((n, _)) = self.socket.recv_from(&mut buffer) else {
                continue;
            };
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            self.seen.borrow_mut().push(message.clone());
            return Some(message);
        }
        None
    }

    /// A message the test did not ask for: INVITEs wait in the inbox (once
    /// each), other requests get 200, responses and ACKs are dropped.
    fn set_aside(&self, message: String) {
        let first = message.lines().next().unwrap_or_default();
        if first.starts_with("INVITE ") {
            let key = invite_key(&message);
            let queued = self.inbox.borrow().iter().any(|m| invite_key(m) == key);
            if !queued && !self.taken.borrow().contains(&key) {
                self.inbox.borrow_mut().push_back(message);
            }
        } else if !first.starts_with("SIP/2.0") && !first.starts_with("ACK") {
            self.send(&self.response(&message, "200 OK", "", ""));
        }
    }

    /// The next message whose first line contains `first_line`, within
    /// `timeout`; what else arrives is set aside.
    pub fn expect_within(&self, first_line: &str, timeout: Duration) -> Option<String> {
        self.expect_where(|first| first.contains(first_line), timeout)
    }

    /// The next message whose first line passes `wanted`, within `timeout`;
    /// what else arrives is set aside.
    pub fn expect_where(&self, wanted: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let waiting = self
            .inbox
            .borrow()
            .iter()
            .position(|m| wanted(m.lines().next().unwrap_or_default()));
        if let Some(index) = waiting {
            let message = self.inbox.borrow_mut().remove(index).unwrap();
            self.taken.borrow_mut().insert(invite_key(&message));
            return Some(message);
        }
        let until = Instant::now() + timeout;
        while let Some(message) = self.receive(until) {
            let first = message.lines().next().unwrap_or_default();
            if wanted(first) {
                if first.starts_with("INVITE ") {
                    let key = invite_key(&message);
                    if !self.taken.borrow_mut().insert(key) {
                        continue; // a retransmission of one we took
                    }
                }
                return Some(message);
            }
            self.set_aside(message);
        }
        None
    }

    /// The next message whose first line contains `first_line`.
    pub fn expect(&self, first_line: &str) -> String {
        self.expect_within(first_line, WAIT).unwrap_or_else(|| {
            panic!(
                "no `{first_line}` within {WAIT:?} at the hand phone {}; it got:\n{}",
                self.addr(),
                self.seen.borrow().join("\n----\n")
            )
        })
    }

    /// Answers whatever arrives for `time` (requests get 200, INVITEs wait).
    pub fn drain(&self, time: Duration) {
        let until = Instant::now() + time;
        while let Some(message) = self.receive(until) {
            self.set_aside(message);
        }
    }

    /// Every INVITE that reached this phone (retransmissions once).
    pub fn invites_seen(&self) -> Vec<String> {
        let mut keys = std::collections::HashSet::new();
        self.seen
            .borrow()
            .iter()
            .filter(|m| m.starts_with("INVITE ") && keys.insert(invite_key(m)))
            .cloned()
            .collect()
    }

    /// A response to `request` with our tag added to To when `tag` is set.
    pub fn response(&self, request: &str, status: &str, tag: &str, sdp: &str) -> String {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for value in headers(request, name) {
                let value = if name == "To" && !tag.is_empty() && !value.contains("tag=") {
                    format!("{value};tag={tag}")
                } else {
                    value.to_string()
                };
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str(&format!("Contact: {}\r\n", self.contact()));
        if sdp.is_empty() {
            out.push_str("Content-Length: 0\r\n\r\n");
        } else {
            out.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ));
        }
        out
    }

    pub fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.user, self.addr())
    }

    /// An SDP offer or answer with audio at `media_port` on our address.
    pub fn sdp(&self, media_port: u16) -> String {
        sdp_at(&self.ip, media_port)
    }

    /// A request from us: `lines` are its headers after Via and
    /// Max-Forwards (From, To, Call-ID, CSeq, ...); Contact and
    /// Content-Length are added.
    pub fn request(
        &self,
        method: &str,
        uri: &str,
        branch: &str,
        lines: &[String],
        body: Option<(&str, &str)>,
    ) -> String {
        let mut out = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            self.addr()
        );
        for line in lines {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if !lines.iter().any(|l| l.starts_with("Contact:")) {
            out.push_str(&format!("Contact: {}\r\n", self.contact()));
        }
        match body {
            Some((content_type, body)) => out.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        out
    }

    /// Sends `request` and waits (at most `timeout`) for the final
    /// response of its transaction (`branch`); resent every 500 ms until
    /// something answers.
    pub fn try_transact(&self, request: &str, branch: &str, timeout: Duration) -> Option<String> {
        self.exchange(request, branch, timeout, true)
    }

    /// As [`HandPhone::try_transact`], sent once: never retransmitted.
    pub fn try_once(&self, request: &str, branch: &str, timeout: Duration) -> Option<String> {
        self.exchange(request, branch, timeout, false)
    }

    fn exchange(
        &self,
        request: &str,
        branch: &str,
        timeout: Duration,
        retransmit: bool,
    ) -> Option<String> {
        self.send(request);
        let until = Instant::now() + timeout;
        let mut resend = Instant::now() + Duration::from_millis(500);
        let mut answered = false;
        loop {
            let slice = (Instant::now() + Duration::from_millis(100)).min(until);
            match self.receive(slice) {
                Some(message) if is_response_to(&message, branch) => {
                    answered = true;
                    if status_of(&message) >= 200 {
                        return Some(message);
                    }
                }
                Some(message) => self.set_aside(message),
                None => {}
            }
            if Instant::now() >= until {
                return None;
            }
            if retransmit && !answered && Instant::now() >= resend {
                self.send(request);
                resend = Instant::now() + Duration::from_millis(500);
            }
        }
    }

    /// As [`HandPhone::try_transact`]; panics without a final response.
    pub fn transact(&self, request: &str, branch: &str) -> String {
        self.try_transact(request, branch, WAIT).unwrap_or_else(|| {
            panic!(
                "no final response within {WAIT:?} to:\n{request}\nthe phone got:\n{}",
                self.seen.borrow().join("\n----\n")
            )
        })
    }

    /// The REGISTER's Request-URI: the server.
    pub fn registrar_uri(&self) -> String {
        format!("sip:{}", self.server)
    }

    /// A REGISTER for `user` with these Contacts; `authorization` is the
    /// whole header line, if any.
    pub fn register_request(
        &self,
        user: &str,
        contacts: &[String],
        expires: u32,
        authorization: Option<&str>,
    ) -> (String, String) {
        let branch = self.unique("z9hG4bKreg");
        let aor = format!("<sip:{user}@{}>", self.server);
        let mut lines = vec![
            format!("From: {aor};tag={}", self.unique("rt")),
            format!("To: {aor}"),
            format!("Call-ID: reg-{user}-{}", self.addr()),
            format!("CSeq: {} REGISTER", self.sequence.get() + 1),
            format!("Expires: {expires}"),
        ];
        for contact in contacts {
            lines.push(format!("Contact: {contact}"));
        }
        if let Some(authorization) = authorization {
            lines.push(format!("Authorization: {authorization}"));
        }
        (
            self.request("REGISTER", &self.registrar_uri(), &branch, &lines, None),
            branch,
        )
    }

    /// Registers `user` with this phone's Contact; the final response.
    pub fn register(&self, user: &str, password: &str) -> String {
        self.register_with(user, password, &[self.contact()], 3600)
            .response
    }

    /// REGISTER, 401, REGISTER with the digest: what went through.
    pub fn register_with(
        &self,
        user: &str,
        password: &str,
        contacts: &[String],
        expires: u32,
    ) -> Registration {
        let (request, branch) = self.register_request(user, contacts, expires, None);
        let challenge = self.transact(&request, &branch);
        if status_of(&challenge) != 401 {
            return Registration {
                response: challenge,
                request,
                authorization: String::new(),
            };
        }
        let nonce = nonce_of(&challenge);
        let cnonce = self.unique("cn");
        let authorization = digest(
            user,
            password,
            "REGISTER",
            &self.registrar_uri(),
            &nonce,
            1,
            &cnonce,
        );
        let (request, branch) =
            self.register_request(user, contacts, expires, Some(&authorization));
        Registration {
            response: self.transact(&request, &branch),
            request,
            authorization,
        }
    }

    /// A new INVITE (not sent) from `from_user` to `number` at the server.
    pub fn new_invite(&self, number: &str, from_user: &str) -> Invite {
        let uri = format!("sip:{number}@{}", self.server);
        Invite {
            to: format!("<{uri}>"),
            from: format!(
                "<sip:{from_user}@{}>;tag={}",
                self.server,
                self.unique("ft")
            ),
            call_id: format!("{}@hand", self.unique("call")),
            branch: self.unique("z9hG4bKinv"),
            cseq: 1,
            uri,
        }
    }

    /// The text of `invite` with `extra` headers and `sdp` as the offer.
    pub fn invite_request(&self, invite: &Invite, extra: &[String], sdp: &str) -> String {
        let mut lines = vec![
            format!("From: {}", invite.from),
            format!("To: {}", invite.to),
            format!("Call-ID: {}", invite.call_id),
            format!("CSeq: {} INVITE", invite.cseq),
        ];
        lines.extend_from_slice(extra);
        self.request(
            "INVITE",
            &invite.uri,
            &invite.branch,
            &lines,
            Some(("application/sdp", sdp)),
        )
    }

    /// Sends `invite` and waits for its challenge (or whatever final
    /// answer comes instead), which it ACKs.
    pub fn challenge(&self, invite: &Invite, sdp: &str) -> String {
        let request = self.invite_request(invite, &[], sdp);
        let challenge = self.transact(&request, &invite.branch);
        self.ack_failure(invite, &challenge);
        challenge
    }

    /// The next INVITE of the same call (CSeq + 1, new branch) carrying
    /// `authorization` as its Proxy-Authorization; sent, not waited for.
    pub fn send_authorized(&self, invite: &mut Invite, authorization: &str, sdp: &str) {
        invite.cseq += 1;
        invite.branch = self.unique("z9hG4bKinv");
        let extra = [format!("Proxy-Authorization: {authorization}")];
        self.send(&self.invite_request(invite, &extra, sdp));
    }

    /// Sends an INVITE to `number` as `from_user` with `sdp`. With
    /// `credentials` it expects the 407 first, ACKs it and sends the INVITE
    /// again with a digest for the Request-URI. `Err` holds a final answer
    /// that came instead of the challenge. Does not wait for the answer.
    pub fn invite_with_sdp(
        &self,
        number: &str,
        from_user: &str,
        credentials: Option<(&str, &str)>,
        sdp: &str,
    ) -> Result<Invite, String> {
        let mut invite = self.new_invite(number, from_user);
        let Some((user, password)) = credentials else {
            self.send(&self.invite_request(&invite, &[], sdp));
            return Ok(invite);
        };
        let challenge = self.challenge(&invite, sdp);
        if status_of(&challenge) != 407 {
            return Err(challenge);
        }
        let authorization = digest(
            user,
            password,
            "INVITE",
            &invite.uri,
            &nonce_of(&challenge),
            1,
            &self.unique("cn"),
        );
        self.send_authorized(&mut invite, &authorization, sdp);
        Ok(invite)
    }

    /// [`HandPhone::invite_with_sdp`] with an offer at our media port.
    pub fn invite(
        &self,
        number: &str,
        from_user: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Invite, String> {
        self.invite_with_sdp(number, from_user, credentials, &self.sdp(self.media_port()))
    }

    /// ACK for a non-2xx final response (same transaction).
    pub fn ack_failure(&self, invite: &Invite, response: &str) {
        let lines = [
            format!("From: {}", invite.from),
            format!("To: {}", header(response, "To")),
            format!("Call-ID: {}", invite.call_id),
            format!("CSeq: {} ACK", invite.cseq),
        ];
        self.send(&self.request("ACK", &invite.uri, &invite.branch, &lines, None));
    }

    /// Waits for the INVITE's final answer and ACKs it; a 2xx gives the
    /// dialog.
    pub fn answer_of(&self, invite: &Invite, timeout: Duration) -> (String, Option<Dialog>) {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let message = self.receive(Instant::now() + left).unwrap_or_else(|| {
                panic!(
                    "no final answer to INVITE {} within {timeout:?}; the phone got:\n{}",
                    invite.uri,
                    self.seen.borrow().join("\n----\n")
                )
            });
            if !is_response_to(&message, &invite.branch) {
                self.set_aside(message);
                continue;
            }
            let status = status_of(&message);
            if status < 200 {
                continue;
            }
            if status >= 300 {
                self.ack_failure(invite, &message);
                return (message, None);
            }
            let dialog = Dialog {
                call_id: invite.call_id.clone(),
                local: invite.from.clone(),
                remote: header(&message, "To").to_string(),
                target: uri_of(header(&message, "Contact")),
                cseq: std::cell::Cell::new(invite.cseq),
            };
            let lines = [
                format!("From: {}", dialog.local),
                format!("To: {}", dialog.remote),
                format!("Call-ID: {}", dialog.call_id),
                format!("CSeq: {} ACK", invite.cseq),
            ];
            let branch = self.unique("z9hG4bKack");
            self.send(&self.request("ACK", &dialog.target, &branch, &lines, None));
            return (message, Some(dialog));
        }
    }

    /// A call to `number`: the final answer, and the dialog on 2xx.
    pub fn call(
        &self,
        number: &str,
        from_user: &str,
        credentials: Option<(&str, &str)>,
    ) -> (String, Option<Dialog>) {
        match self.invite(number, from_user, credentials) {
            Ok(invite) => self.answer_of(&invite, Duration::from_secs(30)),
            Err(refusal) => (refusal, None),
        }
    }

    /// 180 Ringing for an INVITE we received.
    pub fn ring(&self, invite: &str, tag: &str) {
        self.send(&self.response(invite, "180 Ringing", tag, ""));
    }

    /// Answers an INVITE we received with 200 and our SDP, waits for the
    /// ACK; the dialog from our side.
    pub fn answer(&self, invite: &str, tag: &str) -> Dialog {
        self.send(&self.response(invite, "200 OK", tag, &self.sdp(self.media_port())));
        self.expect("ACK ");
        Dialog {
            call_id: header(invite, "Call-ID").to_string(),
            local: format!("{};tag={tag}", header(invite, "To")),
            remote: header(invite, "From").to_string(),
            target: uri_of(header(invite, "Contact")),
            cseq: std::cell::Cell::new(0),
        }
    }

    /// Takes the next INVITE, rings and answers it.
    pub fn pick_up(&self) -> (String, Dialog) {
        let invite = self.expect("INVITE ");
        let tag = self.unique("pt");
        self.ring(&invite, &tag);
        let dialog = self.answer(&invite, &tag);
        (invite, dialog)
    }

    /// Refuses an INVITE we received with a final `status` and takes the ACK.
    pub fn refuse(&self, invite: &str, status: &str) {
        let tag = self.unique("rj");
        self.send(&self.response(invite, status, &tag, ""));
        self.expect("ACK ");
    }

    /// A request in `dialog` with `extra` headers; its final response.
    pub fn in_dialog(&self, dialog: &Dialog, method: &str, extra: &[String]) -> String {
        let cseq = dialog.cseq.get() + 1;
        dialog.cseq.set(cseq);
        let mut lines = vec![
            format!("From: {}", dialog.local),
            format!("To: {}", dialog.remote),
            format!("Call-ID: {}", dialog.call_id),
            format!("CSeq: {cseq} {method}"),
        ];
        lines.extend_from_slice(extra);
        let branch = self.unique("z9hG4bKdlg");
        let request = self.request(method, &dialog.target, &branch, &lines, None);
        self.transact(&request, &branch)
    }

    /// Takes the next request whose first line contains `first_line` and
    /// answers it 200.
    pub fn expect_and_ok(&self, first_line: &str) -> String {
        let request = self.expect(first_line);
        self.send(&self.response(&request, "200 OK", "", ""));
        request
    }

    pub fn bye(&self, dialog: &Dialog) -> String {
        self.in_dialog(dialog, "BYE", &[])
    }

    pub fn refer(&self, dialog: &Dialog, refer_to: &str) -> String {
        self.in_dialog(dialog, "REFER", &[format!("Refer-To: {refer_to}")])
    }
}

/// An SDP body with audio at `ip`:`port`.
pub fn sdp_at(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=hand 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}

/// Call-ID and CSeq: the same INVITE, however often it is sent.
fn invite_key(message: &str) -> String {
    let one = |name| headers(message, name).first().copied().unwrap_or_default();
    format!("{} {}", one("Call-ID"), one("CSeq"))
}

/// The message is a response in transaction `branch`.
fn is_response_to(message: &str, branch: &str) -> bool {
    message.starts_with("SIP/2.0 ")
        && headers(message, "Via")
            .first()
            .is_some_and(|via| via.contains(&format!("branch={branch}")))
}

/// The status code of a response (0 for a request).
pub fn status_of(message: &str) -> u16 {
    message
        .strip_prefix("SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The URI in a name-addr (`"x" <sip:a@b>;tag=1` gives `sip:a@b`).
pub fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => value[start + 1..end].to_string(),
        _ => value.split(';').next().unwrap_or(value).trim().to_string(),
    }
}

/// Every value of header `name` (case-insensitive) in a message's head.
pub fn headers<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .collect()
}

pub fn header<'a>(message: &'a str, name: &str) -> &'a str {
    headers(message, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {name} in:\n{message}"))
}

pub fn tag_of(value: &str) -> &str {
    value
        .split(";tag=")
        .nth(1)
        .map(|rest| rest.split(';').next().unwrap_or(rest).trim())
        .unwrap_or_else(|| panic!("no tag in {value}"))
}

pub fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(text.as_bytes()))
}

/// The nonce of a 401's or 407's challenge.
pub fn nonce_of(challenge: &str) -> String {
    let value = headers(challenge, "WWW-Authenticate")
        .into_iter()
        .chain(headers(challenge, "Proxy-Authenticate"))
        .next()
        .unwrap_or_else(|| panic!("no challenge in:\n{challenge}"));
    value
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no nonce in {value}"))
        .to_string()
}

/// A Digest (MD5, qop=auth) credentials value, computed by hand.
pub fn digest(
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:callhost:{password}"));
    let nc = format!("{nc:08x}");
    let response = md5_hex(&format!(
        "{ha1}:{nonce}:{nc}:{cnonce}:auth:{}",
        md5_hex(&format!("{method}:{uri}"))
    ));
    format!(
        "Digest username=\"{user}\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

/// Per-leg RTP counters from a "call ended" log line: `[caller, callee]`,
/// each `(packets in, packets out)` (`rtp_caller=in:N,out:N,...`).
pub fn leg_packets(line: &str) -> Vec<(u64, u64)> {
    let counter = |leg: &str, name: &str| -> u64 {
        leg.split(',')
            .find_map(|pair| pair.strip_prefix(&format!("{name}:")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    ["rtp_caller=", "rtp_callee="]
        .iter()
        .filter_map(|key| line.split(key).nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .map(|leg| (counter(leg, "in"), counter(leg, "out")))
        .collect()
}

/// A 16-bit mono 8 kHz WAV with a 440 Hz tone.
pub fn tone_wav(path: &Path, seconds: u32) {
    let samples = 8000 * seconds;
    let mut bytes = Vec::with_capacity(44 + 2 * samples as usize);
    let data_len = 2 * samples;
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&8000u32.to_le_bytes());
    bytes.extend_from_slice(&16000u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f64 / 8000.0;
        let sample = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write WAV");
}

/// A running baresip (a real phone: SIP, RTP, TLS); killed when dropped,
/// its output printed if the test failed.
pub struct Baresip {
    child: Child,
    output: PathBuf,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        if thread::panicking() {
            eprintln!(
                "--- baresip output ({}) ---\n{}",
                self.output.display(),
                std::fs::read_to_string(&self.output).unwrap_or_default()
            );
        }
    }
}

impl Baresip {
    /// baresip in `dir` (its config directory) with one account line,
    /// playing a tone file as its microphone; no audio devices (the player
    /// is a dead-end `aubridge` device). `config` adds lines to its
    /// configuration (`sip_cafile …`), `args` to its command line
    /// (`-e "/dial 202"`).
    pub fn start(dir: &Path, account: &str, config: &str, args: &[&str]) -> Baresip {
        assert!(
            Command::new("baresip").arg("-h").output().is_ok(),
            "baresip is not installed: `cargo xtask test` installs it (as root), or apt-get install baresip"
        );
        std::fs::create_dir_all(dir).unwrap();
        let wav = dir.join("tone.wav");
        tone_wav(&wav, 10);
        // baresip listens for TLS one port above its SIP port.
        let sip_port = free_ports(2);
        let rtp = free_ports(10);
        let text = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t{LOCALHOST}:{sip_port}\n\
             audio_player\t\taubridge,nil\n\
             audio_alert\t\taubridge,nil\n\
             audio_source\t\taufile,{}\n\
             audio_srate\t\t8000\n\
             audio_channels\t\t1\n\
             rtp_ports\t\t{}-{}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             {config}\n",
            wav.display(),
            rtp,
            rtp + 9
        );
        std::fs::write(dir.join("config"), text).unwrap();
        std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
        let output = dir.join("baresip.out");
        let log = std::fs::File::create(&output).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .args(["-t", "60"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start baresip (is it installed?)");
        Baresip { child, output }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.output).unwrap_or_default()).into_owned()
    }
}
