//! A private OpenLDAP server.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command};

use tempfile::TempDir;

use crate::{io_error, run_logged, start_child, stop, with_hint, Error};

const SERVER: &str = "slapd";
const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const SCHEMA_DIR: &str = "/etc/ldap/schema";
const MODULE_DIR: &str = "/usr/lib/ldap";
const PASSWORD: &str = "callhost-test-secret";

/// A private `slapd` (mdb backend, core/cosine/inetorgperson schemas) on
/// `ldap://127.0.0.1:<free port>`, with its database in a temporary
/// directory. Anonymous binds may read; `cn=admin,<base_dn>` with
/// [`Slapd::password`] may write. Killed when dropped.
pub struct Slapd {
    child: Child,
    port: u16,
    base_dn: String,
    bind_dn: String,
    _dir: TempDir,
}

impl Slapd {
    /// Writes a config, loads the base entry (made from `base_dn`'s first
    /// RDN: `dc=` gives a dcObject/organization, `o=` an organization,
    /// `ou=` an organizationalUnit) plus `ldif` (entries below `base_dn`)
    /// with `slapadd`, starts `slapd` and waits until it accepts
    /// connections.
    pub fn start(base_dn: &str, ldif: &str) -> Result<Slapd, Error> {
        let base_dn = base_dn.trim();
        let base_entry = base_entry(base_dn)?;
        let bind_dn = format!("cn=admin,{base_dn}");
        let dir = tempfile::Builder::new()
            .prefix("callhost-slapd-")
            .tempdir()
            .map_err(io_error(SERVER, "create a temporary directory"))?;
        let db = dir.path().join("db");
        std::fs::create_dir(&db).map_err(io_error(SERVER, format!("create {}", db.display())))?;

        let config = dir.path().join("slapd.conf");
        write(&config, &slapd_conf(dir.path(), base_dn, &bind_dn))?;

        let data = dir.path().join("data.ldif");
        write(&data, &format!("{base_entry}\n{}\n", strip_version(ldif)))?;
        slapadd(&config, &data, &dir.path().join("slapadd.log"))?;

        // `-d` keeps slapd in the foreground; level "none" still prints
        // errors (such as a port in use) to stderr. No `-u`/`-g`: slapd runs
        // as whoever runs the tests, root included, and owns its files.
        let (child, port) = start_child(SERVER, &dir.path().join("slapd.log"), |port| {
            let mut c = Command::new(SLAPD);
            c.arg("-f")
                .arg(&config)
                .arg("-h")
                .arg(format!("ldap://127.0.0.1:{port}/"))
                .args(["-d", "none"]);
            c
        })
        .map_err(|e| with_hint(e, "install Debian's slapd package"))?;
        Ok(Slapd {
            child,
            port,
            base_dn: base_dn.to_owned(),
            bind_dn,
            _dir: dir,
        })
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The TCP port slapd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory's suffix, as given to [`Slapd::start`].
    pub fn base_dn(&self) -> &str {
        &self.base_dn
    }

    /// `cn=admin,<base_dn>`: the root DN, allowed everything.
    pub fn bind_dn(&self) -> &str {
        &self.bind_dn
    }

    /// The root DN's password.
    pub fn password(&self) -> &str {
        PASSWORD
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl std::fmt::Debug for Slapd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slapd")
            .field("url", &self.url())
            .field("base_dn", &self.base_dn)
            .field("bind_dn", &self.bind_dn)
            .finish()
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(io_error(SERVER, format!("write {}", path.display())))
}

fn slapd_conf(dir: &Path, base_dn: &str, bind_dn: &str) -> String {
    let mut conf = String::new();
    for schema in ["core", "cosine", "inetorgperson"] {
        let _ = writeln!(conf, "include {SCHEMA_DIR}/{schema}.schema");
    }
    let _ = write!(
        conf,
        "pidfile {dir}/slapd.pid\n\
         argsfile {dir}/slapd.args\n\
         modulepath {MODULE_DIR}\n\
         moduleload back_mdb\n\
         database mdb\n\
         maxsize 67108864\n\
         suffix \"{base_dn}\"\n\
         rootdn \"{bind_dn}\"\n\
         rootpw {PASSWORD}\n\
         directory {dir}/db\n\
         index objectClass eq\n",
        dir = dir.display(),
    );
    conf
}

/// The LDIF of the suffix entry itself.
fn base_entry(base_dn: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::Invalid {
        server: SERVER,
        reason,
    };
    let rdn = base_dn.split(',').next().unwrap_or_default();
    let (attr, value) = rdn
        .split_once('=')
        .map(|(a, v)| (a.trim().to_ascii_lowercase(), v.trim()))
        .filter(|(a, v)| !a.is_empty() && !v.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "base DN {base_dn:?} does not start with attr=value"
            ))
        })?;
    let entry = match attr.as_str() {
        "dc" => format!(
            "objectClass: top\nobjectClass: dcObject\nobjectClass: organization\ndc: {value}\no: {value}\n"
        ),
        "o" => format!("objectClass: top\nobjectClass: organization\no: {value}\n"),
        "ou" => format!("objectClass: top\nobjectClass: organizationalUnit\nou: {value}\n"),
        _ => {
            return Err(invalid(format!(
                "base DN {base_dn:?} must start with dc=, o= or ou="
            )))
        }
    };
    Ok(format!("dn: {base_dn}\n{entry}"))
}

/// Drops a leading `version: 1` line, which may only open a whole file.
fn strip_version(ldif: &str) -> &str {
    let trimmed = ldif.trim_start();
    match trimmed.split_once('\n') {
        Some((first, rest)) if first.trim_start().starts_with("version:") => rest,
        _ => trimmed,
    }
}

fn slapadd(config: &Path, data: &Path, log: &Path) -> Result<(), Error> {
    let mut command = Command::new(SLAPADD);
    command.arg("-f").arg(config).arg("-l").arg(data);
    let status = run_logged(SERVER, &mut command, log)
        .map_err(|e| with_hint(e, "install Debian's slapd package"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            server: SERVER,
            command: format!("{SLAPADD} -f {} -l {}", config.display(), data.display()),
            status: status.to_string(),
            output: crate::tail(log),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_entries() {
        let e = base_entry("dc=example,dc=org").unwrap();
        assert!(e.starts_with("dn: dc=example,dc=org\n"), "{e}");
        assert!(
            e.contains("objectClass: dcObject\n") && e.contains("o: example\n"),
            "{e}"
        );
        let e = base_entry("o=Acme").unwrap();
        assert!(e.contains("objectClass: organization\no: Acme\n"), "{e}");
        let e = base_entry("ou=people,dc=x").unwrap();
        assert!(e.contains("ou: people\n"), "{e}");
        for bad in ["cn=x,dc=y", "", "dc=", "example"] {
            let err = base_entry(bad).unwrap_err().to_string();
            assert!(err.starts_with("slapd: invalid argument"), "{err}");
        }
    }

    #[test]
    fn version_line_is_dropped() {
        assert_eq!(strip_version("version: 1\ndn: x\n"), "dn: x\n");
        assert_eq!(strip_version("\ndn: x\n"), "dn: x\n");
    }
}
