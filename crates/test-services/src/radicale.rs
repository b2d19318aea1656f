//! A private Radicale CardDAV server.

use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine as _;
use tempfile::TempDir;
use ureq::http::{Method, Request};
use ureq::Agent;

use crate::{io_error, start_child, stop, with_hint, Error};

const SERVER: &str = "radicale";
const USER: &str = "callhost";
const PASSWORD: &str = "callhost-test-secret";

/// The extended MKCOL (RFC 5689) body that makes a CardDAV address book.
const MKCOL_ADDRESSBOOK: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
  <D:set>
    <D:prop>
      <D:resourcetype><D:collection/><C:addressbook/></D:resourcetype>
      <D:displayname>NAME</D:displayname>
    </D:prop>
  </D:set>
</D:mkcol>
"#;

/// A private Radicale (`python3 -m radicale`) on `http://127.0.0.1:<free
/// port>`, storing into a temporary directory, with HTTP Basic auth for
/// one user (htpasswd, plain). Radicale's default rights let that user
/// use only collections below `/<user>/`. Killed when dropped.
pub struct Radicale {
    child: Child,
    port: u16,
    agent: Agent,
    _dir: TempDir,
}

impl Radicale {
    /// Starts Radicale and waits until it accepts connections.
    pub fn start() -> Result<Radicale, Error> {
        let dir = tempfile::Builder::new()
            .prefix("callhost-radicale-")
            .tempdir()
            .map_err(io_error(SERVER, "create a temporary directory"))?;
        let users = dir.path().join("users");
        std::fs::write(&users, format!("{USER}:{PASSWORD}\n"))
            .map_err(io_error(SERVER, format!("write {}", users.display())))?;
        let storage = dir.path().join("collections");

        let (child, port) = start_child(SERVER, &dir.path().join("radicale.log"), |port| {
            let mut c = Command::new("python3");
            c.args(["-m", "radicale"])
                // No configuration file: only what is given here.
                .args(["--config", ""])
                .arg("--server-hosts")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--storage-filesystem-folder")
                .arg(&storage)
                .args(["--auth-type", "htpasswd"])
                .arg("--auth-htpasswd-filename")
                .arg(&users)
                .args(["--auth-htpasswd-encryption", "plain"])
                .args(["--logging-level", "warning"])
                .env("PYTHONDONTWRITEBYTECODE", "1");
            c
        })
        .map_err(|e| with_hint(e, "install python3, then `pip install radicale`"))?;

        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Ok(Radicale {
            child,
            port,
            agent,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port Radicale listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Basic-auth user name.
    pub fn user(&self) -> &str {
        USER
    }

    /// The Basic-auth password.
    pub fn password(&self) -> &str {
        PASSWORD
    }

    /// The `Authorization` header value for [`Radicale::user`].
    pub fn basic_auth(&self) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        format!("Basic {token}")
    }

    /// Creates the address book `/<user>/<name>/` with an extended MKCOL
    /// and returns its URL (ending with `/`).
    pub fn create_addressbook(&self, name: &str) -> Result<String, Error> {
        check_segment("address book name", name)?;
        let url = format!("{}/{USER}/{name}/", self.url());
        let body = MKCOL_ADDRESSBOOK.replace("NAME", name);
        self.send(
            "MKCOL",
            &url,
            "application/xml; charset=utf-8",
            body,
            &[201],
        )?;
        Ok(url)
    }

    /// PUTs `vcard` as `<collection_url><uid>.vcf` and returns that URL.
    pub fn put_vcard(&self, collection_url: &str, uid: &str, vcard: &str) -> Result<String, Error> {
        check_segment("vCard UID", uid)?;
        let url = format!("{}/{uid}.vcf", collection_url.trim_end_matches('/'));
        self.send(
            "PUT",
            &url,
            "text/vcard; charset=utf-8",
            vcard.to_owned(),
            &[201, 204],
        )?;
        Ok(url)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        content_type: &str,
        body: String,
        expect: &[u16],
    ) -> Result<(), Error> {
        let http = |reason: String| Error::Http {
            server: SERVER,
            method: method.to_owned(),
            url: url.to_owned(),
            reason,
        };
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).map_err(|e| http(e.to_string()))?)
            .uri(url)
            .header("Authorization", self.basic_auth())
            .header("Content-Type", content_type)
            .body(body)
            .map_err(|e| http(e.to_string()))?;
        let mut response = self.agent.run(request).map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        if expect.contains(&status) {
            return Ok(());
        }
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| format!("(unreadable body: {e})"));
        Err(Error::HttpStatus {
            server: SERVER,
            method: method.to_owned(),
            url: url.to_owned(),
            status,
            body,
        })
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl std::fmt::Debug for Radicale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Radicale")
            .field("url", &self.url())
            .field("user", &USER)
            .finish()
    }
}

/// One URL path segment the helper puts in a URL verbatim.
fn check_segment(what: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            server: SERVER,
            reason: format!("{what} {value:?}: use only ASCII letters, digits and -_.@+"),
        })
    }
}
