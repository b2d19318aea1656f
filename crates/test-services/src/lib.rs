//! Dev-only: real servers for integration tests (no mocks).
//!
//! - [`Slapd`]: a private OpenLDAP `slapd` on a free 127.0.0.1 port, loaded
//!   with an LDIF, killed on drop.
//! - [`Radicale`]: a private CardDAV server (`python3 -m radicale`) with
//!   Basic auth, killed on drop.
//! - [`Sshd`]: a private OpenSSH server (SFTP, one client key), started
//!   and stopped at will.
//! - [`Moto`]: a private S3 server (moto), with boto3 to inspect it.
//! - [`Smtp`]: a private SMTP sink (aiosmtpd) with a maildir.
//! - [`Tsa`]: a private RFC 3161 time-stamping authority (`openssl ts`).
//! - [`ensure_postgres`] / [`ensure_mariadb`]: the machine's local SQL
//!   servers, started if they are down, as connection URLs.
//!
//! Everything is blocking and std-only apart from a small HTTP client.
//! What must be installed, and how, is in this crate's README.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod databases;
mod moto;
mod radicale;
mod slapd;
mod smtp;
mod sshd;
mod tsa;

pub use databases::{ensure_mariadb, ensure_postgres};
pub use moto::{
    Moto, ObjectInfo, ACCESS_KEY_ID as MOTO_ACCESS_KEY_ID, REGION as MOTO_REGION,
    SECRET_ACCESS_KEY as MOTO_SECRET_ACCESS_KEY,
};
pub use radicale::Radicale;
pub use slapd::Slapd;
pub use smtp::Smtp;
pub use sshd::Sshd;
pub use tsa::Tsa;

/// How long a private server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a test server could not be started or used. Every message names the
/// server (`slapd`, `radicale`, `postgres`, `mariadb`) and, where a process
/// failed, ends with the tail of what it wrote to stderr.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed (e.g. the binary is not installed).
    #[error("{server}: could not {action}")]
    Io {
        server: &'static str,
        action: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// A helper command (e.g. `slapadd`) exited unsuccessfully.
    #[error("{server}: `{command}` failed ({status}); output tail:\n{output}")]
    Command {
        server: &'static str,
        command: String,
        status: String,
        output: String,
    },
    /// The server process exited before it accepted connections.
    #[error("{server} exited during start-up ({status}); stderr tail:\n{stderr}")]
    Exited {
        server: &'static str,
        status: String,
        stderr: String,
    },
    /// The server did not accept TCP connections in time.
    #[error(
        "{server} did not accept connections on {addr} within {waited:?}; output tail:\n{stderr}"
    )]
    NotReady {
        server: &'static str,
        addr: SocketAddr,
        waited: Duration,
        stderr: String,
    },
    /// An HTTP request could not be sent or its response not read.
    #[error("{server}: {method} {url} failed: {reason}")]
    Http {
        server: &'static str,
        method: String,
        url: String,
        reason: String,
    },
    /// An HTTP request was answered with an unexpected status.
    #[error("{server}: {method} {url} answered HTTP {status}: {body}")]
    HttpStatus {
        server: &'static str,
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    /// An argument the helper cannot use.
    #[error("{server}: invalid argument: {reason}")]
    Invalid {
        server: &'static str,
        reason: String,
    },
}

fn io_error(server: &'static str, action: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        server,
        action: action.into(),
        source: Arc::new(source),
    }
}

/// A port that was free a moment ago. The caller binds it in a child
/// process, so another process may take it first: callers retry on
/// "address in use".
fn free_port(server: &'static str) -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_error(server, "find a free port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_error(server, "find a free port on 127.0.0.1"))?
        .port();
    Ok(port)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    const MAX_LINES: usize = 30;
    const MAX_CHARS: usize = 4000;
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("(could not read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(MAX_LINES)..].join("\n");
    if out.len() > MAX_CHARS {
        let mut cut = out.len() - MAX_CHARS;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("…{}", &out[cut..]);
    }
    if out.trim().is_empty() {
        "(empty)".to_owned()
    } else {
        out
    }
}

/// Spawns `command` with stdout and stderr appended to `log`.
fn spawn_logged(server: &'static str, command: &mut Command, log: &Path) -> Result<Child, Error> {
    let out = File::create(log).map_err(io_error(server, format!("create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_error(server, format!("open {}", log.display())))?;
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(io_error(server, format!("run {program}")))
}

/// Runs `command` to completion with stdout and stderr in `log`. A file, not
/// a pipe: a daemon the command leaves behind may inherit it and must not
/// keep us waiting.
fn run_logged(
    server: &'static str,
    command: &mut Command,
    log: &Path,
) -> Result<std::process::ExitStatus, Error> {
    let mut child = spawn_logged(server, command, log)?;
    let program = command.get_program().to_string_lossy().into_owned();
    child
        .wait()
        .map_err(io_error(server, format!("wait for {program}")))
}

/// Adds an install hint to a "not found" error from spawning a program.
fn with_hint(err: Error, hint: &str) -> Error {
    match err {
        Error::Io {
            server,
            action,
            source,
        } if source.kind() == io::ErrorKind::NotFound => Error::Io {
            server,
            action: format!("{action} ({hint})"),
            source,
        },
        other => other,
    }
}

/// How a child's start-up ended.
enum Startup {
    Ready,
    Exited(String),
    TimedOut,
}

/// Polls until `child` accepts TCP on `addr`, exits, or `timeout` passes.
fn wait_for_child(child: &mut Child, addr: SocketAddr, timeout: Duration) -> Startup {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Startup::Exited(status.to_string());
        }
        if accepts(addr) {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            return Startup::TimedOut;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts a server child on a free port and waits until it accepts
/// connections; retries with another port when the chosen one was taken
/// in between. `make` builds the command for a port; `log` receives its
/// output.
fn start_child(
    server: &'static str,
    log: &Path,
    mut make: impl FnMut(u16) -> Command,
) -> Result<(Child, u16), Error> {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let port = free_port(server)?;
        let addr = loopback(port);
        let mut child = spawn_logged(server, &mut make(port), log)?;
        match wait_for_child(&mut child, addr, START_TIMEOUT) {
            Startup::Ready => return Ok((child, port)),
            Startup::Exited(status) => {
                let stderr = tail(log);
                let port_taken = stderr.contains("Address already in use")
                    || stderr.contains("address already in use");
                if port_taken && attempt < ATTEMPTS {
                    continue;
                }
                return Err(Error::Exited {
                    server,
                    status,
                    stderr,
                });
            }
            Startup::TimedOut => {
                stop(&mut child);
                return Err(Error::NotReady {
                    server,
                    addr,
                    waited: START_TIMEOUT,
                    stderr: tail(log),
                });
            }
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let t = tail(&path);
        assert!(t.starts_with("line 70\n"), "{t}");
        assert!(t.ends_with("line 99"), "{t}");
        std::fs::write(&path, "").unwrap();
        assert_eq!(tail(&path), "(empty)");
    }

    #[test]
    fn start_child_reports_an_early_exit_with_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let err = start_child("fake", &dir.path().join("log"), |_| {
            let mut c = Command::new("sh");
            c.args(["-c", "echo 'fatal: no config' >&2; exit 3"]);
            c
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("fake exited during start-up"), "{msg}");
        assert!(msg.contains("fatal: no config"), "{msg}");
    }
}
