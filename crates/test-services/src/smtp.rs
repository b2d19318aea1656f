//! A private SMTP sink (aiosmtpd) keeping every message in a maildir.

use std::process::{Child, Command};

use tempfile::TempDir;

use crate::{io_error, start_child, stop, with_hint, Error};

const SERVER: &str = "aiosmtpd";

/// `python3 -m aiosmtpd` on `127.0.0.1:<free port>`, no TLS, no auth,
/// every message stored in a maildir; killed when dropped.
pub struct Smtp {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Smtp {
    pub fn start() -> Result<Smtp, Error> {
        let dir = tempfile::Builder::new()
            .prefix("callhost-smtp-")
            .tempdir()
            .map_err(io_error(SERVER, "create a temporary directory"))?;
        let maildir = dir.path().join("maildir");
        let (child, port) = start_child(SERVER, &dir.path().join("smtp.log"), |port| {
            let mut c = Command::new("python3");
            c.args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .env("PYTHONDONTWRITEBYTECODE", "1");
            c
        })
        .map_err(|e| with_hint(e, "install python3, then `pip install aiosmtpd`"))?;
        Ok(Smtp { child, port, dir })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far (raw RFC 5322 text), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("maildir/new");
        let mut files: Vec<_> = std::fs::read_dir(&new)
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
