//! The machine's local PostgreSQL and MariaDB servers.

use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::{accepts, io_error, loopback, run_logged, tail, Error};

/// How long a local SQL server may take to come up after its start command.
const DB_START_TIMEOUT: Duration = Duration::from_secs(30);

const POSTGRES_START: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
const MARIADB_START: &str =
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd";

/// `postgres://postgres@127.0.0.1:5432/test` (trust auth), once the local
/// PostgreSQL accepts TCP; starts it first when it does not. Checked once
/// per process; safe to call from many tests at once.
pub fn ensure_postgres() -> Result<String, Error> {
    static ONCE: OnceLock<Result<String, Error>> = OnceLock::new();
    ONCE.get_or_init(|| {
        ensure_local(
            "postgres",
            5432,
            POSTGRES_START,
            DB_START_TIMEOUT,
            "postgres://postgres@127.0.0.1:5432/test",
        )
    })
    .clone()
}

/// `mysql://root@127.0.0.1:3306/test` (root, empty password), once the
/// local MariaDB accepts TCP; starts it first when it does not. Checked
/// once per process; safe to call from many tests at once.
pub fn ensure_mariadb() -> Result<String, Error> {
    static ONCE: OnceLock<Result<String, Error>> = OnceLock::new();
    ONCE.get_or_init(|| {
        ensure_local(
            "mariadb",
            3306,
            MARIADB_START,
            DB_START_TIMEOUT,
            "mysql://root@127.0.0.1:3306/test",
        )
    })
    .clone()
}

/// Returns `url` once 127.0.0.1:`port` accepts TCP, running `start` (a
/// shell command) first if it does not. The start command's own status is
/// not decisive (another process may have started the server meanwhile):
/// the port is.
fn ensure_local(
    server: &'static str,
    port: u16,
    start: &str,
    timeout: Duration,
    url: &str,
) -> Result<String, Error> {
    let addr = loopback(port);
    if accepts(addr) {
        return Ok(url.to_owned());
    }
    let dir = tempfile::tempdir().map_err(io_error(server, "create a temporary directory"))?;
    let log = dir.path().join("start.log");
    let status = run_logged(server, Command::new("sh").args(["-c", start]), &log)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if accepts(addr) {
            return Ok(url.to_owned());
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(Error::NotReady {
        server,
        addr,
        waited: timeout,
        stderr: format!("`{start}` exited with {status}:\n{}", tail(&log)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start path with a real (stand-in) server: down, started by the
    /// shell command, then up.
    #[test]
    fn starts_a_server_that_is_down() {
        let port = crate::free_port("fake").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        let start = format!(
            "python3 -m http.server --bind 127.0.0.1 {port} >/dev/null 2>&1 & echo $! > {}",
            pid.display()
        );
        let got = ensure_local("fake", port, &start, Duration::from_secs(15), "fake://x");
        let pid = std::fs::read_to_string(&pid).unwrap();
        let _ = Command::new("kill").arg(pid.trim()).status();
        assert_eq!(got.unwrap(), "fake://x");
    }

    #[test]
    fn reports_a_server_that_stays_down() {
        let port = crate::free_port("fake").unwrap();
        let err = ensure_local(
            "fake",
            port,
            "echo cannot start >&2; exit 1",
            Duration::from_millis(300),
            "fake://x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("fake did not accept connections on 127.0.0.1:"),
            "{err}"
        );
        assert!(err.contains("cannot start"), "{err}");
    }
}
