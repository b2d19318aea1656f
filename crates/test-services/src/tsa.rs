//! A private RFC 3161 time-stamping authority: OpenSSL's `openssl ts
//! -reply` behind a minimal HTTP endpoint (POST of an
//! `application/timestamp-query`, answered with the
//! `application/timestamp-reply`), as RFC 3161 section 3.4 describes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tempfile::TempDir;

use crate::{io_error, run_logged, tail, Error};

const SERVER: &str = "tsa";
/// Requests larger than this are refused (a query is about 100 bytes).
const MAX_QUERY: usize = 64 * 1024;

/// The TSA's key and self-signed certificate (extended key usage
/// timeStamping, critical) in a temporary directory; [`Tsa::serve`] puts it
/// on `http://127.0.0.1:<port>/`. Stops when dropped.
pub struct Tsa {
    dir: TempDir,
    port: Option<u16>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

impl Tsa {
    pub fn prepare() -> Result<Tsa, Error> {
        let dir = tempfile::Builder::new()
            .prefix("callhost-tsa-")
            .tempdir()
            .map_err(io_error(SERVER, "create a temporary directory"))?;
        let path = dir.path();
        let status = run_logged(
            SERVER,
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                ])
                .args(["-subj", "/CN=callhost test TSA"])
                .args(["-addext", "extendedKeyUsage=critical,timeStamping"])
                .args(["-addext", "keyUsage=critical,digitalSignature"])
                .arg("-keyout")
                .arg(path.join("tsa.key"))
                .arg("-out")
                .arg(path.join("tsa.crt")),
            &path.join("openssl.log"),
        )?;
        if !status.success() {
            return Err(Error::Command {
                server: SERVER,
                command: "openssl req".into(),
                status: status.to_string(),
                output: tail(&path.join("openssl.log")),
            });
        }
        std::fs::write(path.join("serial"), "01\n").map_err(io_error(SERVER, "write serial"))?;
        let config = format!(
            "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\nserial = {dir}/serial\ncrypto_device = builtin\n\
             signer_cert = {dir}/tsa.crt\nsigner_key = {dir}/tsa.key\nsigner_digest = sha256\n\
             default_policy = 1.2.3.4.1\nother_policies = 1.2.3.4.5\ndigests = sha256, sha384, sha512\n\
             accuracy = secs:1\nordering = yes\ntsa_name = yes\ness_cert_id_chain = no\n\
             ess_cert_id_alg = sha256\n",
            dir = path.display()
        );
        std::fs::write(path.join("tsa.cnf"), config).map_err(io_error(SERVER, "write tsa.cnf"))?;
        Ok(Tsa {
            dir,
            port: None,
            stop: Arc::default(),
            served: Arc::default(),
        })
    }

    /// The certificate `openssl ts -verify -CAfile` takes.
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("tsa.crt")
    }

    /// Answers one query as the TSA (`openssl ts -reply`).
    pub fn reply(&self, query: &[u8]) -> Result<Vec<u8>, Error> {
        reply(self.dir.path(), query)
    }

    /// Serves on a free port; returns its URL.
    pub fn serve(&mut self) -> Result<String, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error(SERVER, "bind"))?;
        let port = listener
            .local_addr()
            .map_err(io_error(SERVER, "bind"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(io_error(SERVER, "set non-blocking"))?;
        let dir = self.dir.path().to_path_buf();
        let stop = self.stop.clone();
        let served = self.served.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if answer(&dir, stream).is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        self.port = Some(port);
        Ok(format!("http://127.0.0.1:{port}/"))
    }

    /// Queries answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn reply(dir: &Path, query: &[u8]) -> Result<Vec<u8>, Error> {
    let unique = format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let query_path = dir.join(format!("q-{unique}.tsq"));
    let reply_path = dir.join(format!("r-{unique}.tsr"));
    std::fs::write(&query_path, query).map_err(io_error(SERVER, "write the query"))?;
    let log = dir.join("reply.log");
    let status = run_logged(
        SERVER,
        Command::new("openssl")
            .args(["ts", "-reply", "-config"])
            .arg(dir.join("tsa.cnf"))
            .arg("-queryfile")
            .arg(&query_path)
            .arg("-out")
            .arg(&reply_path),
        &log,
    )?;
    let bytes = std::fs::read(&reply_path);
    let _ = std::fs::remove_file(&query_path);
    let _ = std::fs::remove_file(&reply_path);
    match bytes {
        Ok(bytes) if status.success() => Ok(bytes),
        _ => Err(Error::Command {
            server: SERVER,
            command: "openssl ts -reply".into(),
            status: status.to_string(),
            output: tail(&log),
        }),
    }
}

/// One HTTP/1.1 exchange: a POST with a Content-Length body.
fn answer(dir: &Path, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut stream = stream;
    if !first.starts_with("POST ") || length == 0 || length > MAX_QUERY {
        stream.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Err(std::io::Error::other("not a time-stamp query"));
    }
    let mut query = vec![0; length];
    reader.read_exact(&mut query)?;
    match reply(dir, &query) {
        Ok(bytes) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            stream.write_all(&bytes)
        }
        Err(error) => {
            let text = error.to_string();
            write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
        }
    }
}
