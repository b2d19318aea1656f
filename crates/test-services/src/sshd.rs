//! A private OpenSSH server for SFTP targets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use tempfile::TempDir;

use crate::{
    free_port, io_error, loopback, run_logged, spawn_logged, stop, tail, wait_for_child, with_hint,
    Error, Startup, START_TIMEOUT,
};

const SERVER: &str = "sshd";

/// A private `sshd` on `127.0.0.1:<port>` with its own ed25519 host key,
/// accepting only one ed25519 client key (no passwords), for the user
/// running the tests, with `internal-sftp`. Prepared first (keys, port),
/// started and stopped at will (a target that is down, then back), killed
/// when dropped.
pub struct Sshd {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    /// Keys and configuration in a temporary directory, on a port that is
    /// free now; not started.
    pub fn prepare() -> Result<Sshd, Error> {
        let dir = tempfile::Builder::new()
            .prefix("callhost-sshd-")
            .tempdir()
            .map_err(io_error(SERVER, "create a temporary directory"))?;
        let path = dir.path();
        for (key, comment) in [("host_ed25519", "host"), ("client_ed25519", "client")] {
            let status = run_logged(
                SERVER,
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(path.join(key)),
                &path.join("keygen.log"),
            )
            .map_err(|e| with_hint(e, "install openssh-client"))?;
            if !status.success() {
                return Err(Error::Command {
                    server: SERVER,
                    command: "ssh-keygen".into(),
                    status: status.to_string(),
                    output: tail(&path.join("keygen.log")),
                });
            }
        }
        std::fs::copy(
            path.join("client_ed25519.pub"),
            path.join("authorized_keys"),
        )
        .map_err(io_error(SERVER, "write authorized_keys"))?;
        std::fs::create_dir_all(path.join("remote"))
            .map_err(io_error(SERVER, "create the remote root"))?;
        let port = free_port(SERVER)?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_ed25519\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\n",
            dir = path.display()
        );
        std::fs::write(path.join("sshd_config"), config)
            .map_err(io_error(SERVER, "write sshd_config"))?;
        Ok(Sshd {
            dir,
            port,
            child: None,
        })
    }

    /// Starts it (again) and waits until it accepts connections.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Ok(());
        }
        // Privilege separation needs this directory (root only).
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = self.dir.path().join("sshd.log");
        let mut child = spawn_logged(
            SERVER,
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(self.dir.path().join("sshd_config")),
            &log,
        )
        .map_err(|e| with_hint(e, "install openssh-server"))?;
        match wait_for_child(&mut child, loopback(self.port), START_TIMEOUT) {
            Startup::Ready => {
                self.child = Some(child);
                Ok(())
            }
            Startup::Exited(status) => Err(Error::Exited {
                server: SERVER,
                status,
                stderr: tail(&log),
            }),
            Startup::TimedOut => {
                stop(&mut child);
                Err(Error::NotReady {
                    server: SERVER,
                    addr: loopback(self.port),
                    waited: START_TIMEOUT,
                    stderr: tail(&log),
                })
            }
        }
    }

    /// Stops it (a target that went down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user that may log in: the one running the tests.
    pub fn user(&self) -> String {
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                Command::new("id")
                    .arg("-un")
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            })
            .unwrap_or_else(|| "root".into())
    }

    /// The client's private key file (OpenSSH format, no passphrase).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The server's public key line (`ssh-ed25519 AAAA… host`), to pin.
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// An absolute directory uploads may go to.
    pub fn remote_root(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
