//! Harness for the SIP tests (host/tests/sip.rs): `callhost serve` as a
//! child process on free ports, SIPp runs with their message traces, and a
//! silent "phone" that only records what reaches it.

#![allow(dead_code)]

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

/// A port that is free for UDP and TCP on 127.0.0.1. Ports come from a
/// window below the kernel's ephemeral range, chosen by the process id, so
/// the tests of this binary (threads) never hand out the same one.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive free ports.
pub fn free_ports(count: u32) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 12) * 1_000;
    loop {
        let offset = NEXT.fetch_add(count, Ordering::SeqCst);
        assert!(offset + count < 1_000, "out of test ports");
        let first = (base + offset) as u16;
        let free = (first..first + count as u16).all(|port| {
            UdpSocket::bind((LOCALHOST, port)).is_ok()
                && TcpListener::bind((LOCALHOST, port)).is_ok()
        });
        if free {
            return first;
        }
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

/// The text of `callhost.toml`'s `[sip]` and `[media]` tables.
fn host_config(port: u16, trunk_port: u16, rtp: (u16, u16), sip_extra: &str) -> String {
    format!(
        "[sip]\nlisten = \"{LOCALHOST}:{port}\"\n{sip_extra}\n\
         [sip.trunk]\npeer = \"{LOCALHOST}:{trunk_port}\"\n\n\
         [media]\naddress = \"{LOCALHOST}\"\nrtp_ports = \"{}-{}\"\n",
        rtp.0, rtp.1
    )
}

impl Serve {
    /// A fresh data directory with `directory` loaded; `sip_extra` goes
    /// into the `[sip]` table (e.g. `auth_failures = 3`).
    pub fn start(directory: &str, sip_extra: &str) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut serve = Serve::start_in(dir.path(), directory, sip_extra);
        serve._dir = Some(dir);
        serve
    }

    /// As [`Serve::start`], in an existing data directory (one with modules
    /// installed, say).
    pub fn start_in(data: &Path, directory: &str, sip_extra: &str) -> Serve {
        let port = free_port();
        let trunk_port = free_port();
        let first = free_ports(12);
        let rtp = (first, first + 11);
        std::fs::write(
            data.join("callhost.toml"),
            host_config(port, trunk_port, rtp, sip_extra),
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
            .env_remove("CALLHOST_DATA")
            .env_remove("CALLHOST_LOG")
            .env("NO_COLOR", "1")
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

    pub fn sent(&self) -> Vec<Message> {
        self.messages().into_iter().filter(|m| m.sent).collect()
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
