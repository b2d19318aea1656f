//! What the tests and benches need besides Rust: real servers and peers
//! from Debian and PyPI. Missing ones are installed when xtask runs as root
//! (CI, a fresh container); otherwise the run stops at once with one line
//! naming them and the command that installs them.

use std::process::{Command, Stdio};

use anyhow::{bail, Result};

/// The test suite: OpenLDAP's slapd and its tools (test-services starts a
/// private slapd), OpenSSL headers and pkg-config (reverse-lookup's TLS
/// providers link the system's OpenSSL), SIPp and baresip (the phones
/// against `callhost serve`), OpenSSH's server and ssh-keygen (the SFTP
/// target of call recording), the OpenSSL command line (certificates and
/// handshakes for the SIP-over-TLS tests), tshark (the capture that
/// shows SRTP legs carry no plain audio), and linphone's console client
/// with PulseAudio (its sound device: a null sink the test starts);
/// Chromium, driven by Playwright, for the web UI tests, and curl for
/// HTTPS requests.
pub const TEST_DEBIAN: &[&str] = &[
    "slapd",
    "ldap-utils",
    "libssl-dev",
    "pkg-config",
    "sip-tester",
    "baresip",
    "openssh-server",
    "openssh-client",
    "openssl",
    "tshark",
    "linphone-cli",
    "pulseaudio",
    "chromium",
    "curl",
];
/// The CardDAV server the reverse-lookup tests run, the S3 server (with
/// boto3) the recording targets are tested against and the SMTP sink for
/// its mail, pinned: their answers are what the tests check. `name[extra]` installs the extra; the version
/// is checked on `name`.
pub const TEST_PYPI: &[(&str, &str)] = &[
    ("radicale", "3.9.0"),
    ("moto[server]", "5.2.1"),
    ("aiosmtpd", "1.4.6"),
    // The scripted SRTP peer of the SRTP tests (libsrtp 2 inside).
    ("pylibsrtp", "1.0.0"),
    // Fuzzes the HTTP API from its OpenAPI document.
    ("schemathesis", "4.32.5"),
];

/// The browser tests' npm packages (Playwright's driver, no browsers of
/// its own: it drives Debian's Chromium), from the committed lock file.
pub const TEST_NPM_DIR: &str = "host/tests/browser";

/// Installs the npm packages of `dir` (relative to `root`) exactly as its
/// lock file says, unless they are there already.
pub fn ensure_npm(root: &std::path::Path, dir: &str) -> Result<()> {
    let dir = root.join(dir);
    let lock = std::fs::read(dir.join("package-lock.json"))?;
    let stamp = dir.join("node_modules/.package-lock.json");
    // npm writes its own copy of the lock into node_modules after `ci`.
    let installed = std::fs::read(&stamp).is_ok_and(|copy| same_packages(&copy, &lock));
    if installed {
        return Ok(());
    }
    eprintln!("== npm ci in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()?;
    if !status.success() {
        bail!("npm ci in {} failed", dir.display());
    }
    Ok(())
}

/// Whether npm's installed copy lists the same packages as the lock file.
fn same_packages(installed: &[u8], lock: &[u8]) -> bool {
    let packages = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .map(|value| value["packages"].clone())
    };
    let (Some(mut installed), Some(mut locked)) = (packages(installed), packages(lock)) else {
        return false;
    };
    // The lock lists the project itself under ""; npm's copy does not.
    if let Some(map) = locked.as_object_mut() {
        map.remove("");
    }
    if let Some(map) = installed.as_object_mut() {
        map.remove("");
    }
    installed == locked
}
/// `cargo xtask bench sip`: SIPp, Kamailio as the reference, tcpdump for the
/// latency capture.
pub const BENCH_SIP_DEBIAN: &[&str] = &["sip-tester", "kamailio", "tcpdump"];

/// Installs what is missing (as root) or fails naming it.
pub fn ensure(debian: &[&str], pypi: &[(&str, &str)]) -> Result<()> {
    let missing_debian: Vec<&str> = debian
        .iter()
        .copied()
        .filter(|package| !debian_installed(package))
        .collect();
    let missing_pypi: Vec<String> = pypi
        .iter()
        .filter(|(module, version)| !pypi_installed(module, version))
        .map(|(module, version)| format!("{module}=={version}"))
        .collect();
    if missing_debian.is_empty() && missing_pypi.is_empty() {
        return Ok(());
    }
    let apt = apt_command(&missing_debian);
    let pip = pip_command(&missing_pypi);
    if !is_root() {
        bail!("{}", refusal(&missing_debian, &missing_pypi));
    }
    if !missing_debian.is_empty() {
        eprintln!("== {apt}");
        shell("apt-get update -qq")?;
        shell(&format!("DEBIAN_FRONTEND=noninteractive {apt} -qq"))?;
    }
    if !missing_pypi.is_empty() {
        eprintln!("== {pip}");
        shell(&format!(
            "{pip} -q --disable-pip-version-check --root-user-action=ignore"
        ))?;
    }
    Ok(())
}

fn apt_command(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

fn pip_command(packages: &[String]) -> String {
    // `name[extra]` is quoted: the shell would take the brackets as a glob.
    let quoted: Vec<String> = packages
        .iter()
        .map(|p| {
            if p.contains('[') {
                format!("'{p}'")
            } else {
                p.clone()
            }
        })
        .collect();
    format!("python3 -m pip install {}", quoted.join(" "))
}

/// The one line a user who is not root gets: what is missing, and the
/// command that installs it.
fn refusal(debian: &[&str], pypi: &[String]) -> String {
    let mut commands = Vec::new();
    if !debian.is_empty() {
        commands.push(format!("sudo {}", apt_command(debian)));
    }
    if !pypi.is_empty() {
        commands.push(pip_command(pypi));
    }
    let mut names = debian.to_vec();
    names.extend(pypi.iter().map(String::as_str));
    format!(
        "missing {}; install with: {} (or run as root, which installs them)",
        names.join(", "),
        commands.join(" && ")
    )
}

fn debian_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b" installed"))
}

fn pypi_installed(module: &str, version: &str) -> bool {
    let module = module.split('[').next().unwrap_or(module);
    Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m, sys; sys.exit(m.version(sys.argv[1]) != sys.argv[2])",
            module,
            version,
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn shell(command: &str) -> Result<()> {
    let status = Command::new("sh").args(["-c", command]).status()?;
    if !status.success() {
        bail!("`{command}` failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_every_missing_package_and_the_commands_in_one_line() {
        let line = refusal(&["slapd", "baresip"], &["radicale==3.9.0".to_string()]);
        assert_eq!(
            line,
            "missing slapd, baresip, radicale==3.9.0; install with: \
             sudo apt-get install -y --no-install-recommends slapd baresip \
             && python3 -m pip install radicale==3.9.0 (or run as root, which installs them)"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn only_the_needed_installers_are_named() {
        let line = refusal(&["kamailio"], &[]);
        assert!(line.contains("sudo apt-get install"), "{line}");
        assert!(!line.contains("pip"), "{line}");
        let line = refusal(&[], &["radicale==3.9.0".to_string()]);
        assert!(!line.contains("apt-get"), "{line}");
    }

    #[test]
    fn installed_packages_are_told_from_absent_ones() {
        // dpkg itself is installed wherever dpkg-query runs.
        assert!(debian_installed("dpkg"));
        assert!(!debian_installed("callhost-no-such-package"));
        assert!(pypi_installed("radicale", "3.9.0"), "the tests' Radicale");
        assert!(!pypi_installed("callhost_no_such_module", "1.0"));
    }
}
