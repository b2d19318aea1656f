//! The instance configuration and what it becomes once checked.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use callhost_plugin_sdk::{config_error, ConfigError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::seats::SeatRules;

/// The API connector: a WebSocket server for CRM plugins, desktop and
/// chat apps, with floating and fixed seats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port the connector listens on, e.g. `0.0.0.0:8443` for
    /// every interface. Clients connect to `wss://HOST:PORT/` (`ws://`
    /// without a certificate).
    pub listen: String,
    /// The server certificate chain, a PEM file path. With `private_key`
    /// it turns TLS on (wss://); without both, only loopback clients may
    /// connect unless `allow_plain` is set.
    pub certificate: Option<String>,
    /// The certificate's private key, a PEM file path.
    pub private_key: Option<String>,
    /// Allow unencrypted WebSocket (ws://) on an address other than
    /// loopback. Passwords then cross the network readable: only for a
    /// network you trust completely.
    #[schemars(title = "Allow plain ws:// off loopback", extend("x-expert" = true))]
    pub allow_plain: bool,
    /// Floating seats: how many users may be signed in at once, besides
    /// the fixed users. A user who signs in takes one, signing out gives
    /// it back.
    #[schemars(title = "Floating seats")]
    pub seats: u32,
    /// Users (directory ids) with a seat of their own, never taken from
    /// the floating pool.
    pub fixed_users: Vec<String>,
    /// A user's second client (a desktop app next to a CRM plugin, say)
    /// shares the user's seat. Off: every client takes a seat of its own.
    pub one_seat_per_user: bool,
    /// Seconds a dropped connection's seat is kept for its reconnect
    /// (0: freed at once).
    #[schemars(title = "Grace period (s)")]
    pub grace_seconds: u64,
    /// Seconds between pings to each client; one that sends no pong
    /// within twice this is disconnected.
    #[schemars(title = "Ping interval (s)", extend("x-expert" = true))]
    pub ping_seconds: u64,
    /// The largest message a client may send, in bytes; a larger one
    /// closes its connection (1009).
    #[schemars(extend("x-expert" = true))]
    pub max_message_bytes: u64,
    /// Commands a client may send per second (bursts of twice that); more
    /// are answered `rate_limited`.
    #[schemars(extend("x-expert" = true))]
    pub commands_per_second: u32,
    /// Connections open at once, signed in or not.
    #[schemars(title = "Maximum connections", extend("x-expert" = true))]
    pub max_clients: u32,
    /// Connections open at once from one IP address.
    #[schemars(title = "Maximum connections per address", extend("x-expert" = true))]
    pub max_clients_per_address: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8443".into(),
            certificate: None,
            private_key: None,
            allow_plain: false,
            seats: 5,
            fixed_users: Vec::new(),
            one_seat_per_user: true,
            grace_seconds: 30,
            ping_seconds: 15,
            max_message_bytes: 65_536,
            commands_per_second: 10,
            max_clients: 1000,
            max_clients_per_address: 50,
        }
    }
}

/// The configuration checked: what the server runs on.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls: Option<Tls>,
    pub seats: SeatRules,
    pub ping: Duration,
    pub max_message_bytes: usize,
    pub commands_per_second: u32,
    pub max_clients: usize,
    pub max_clients_per_address: usize,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("tls", &self.tls.as_ref().map(|tls| &tls.certificate))
            .field("seats", &self.seats)
            .finish_non_exhaustive()
    }
}

/// TLS, loaded from the configured files.
#[derive(Clone)]
pub struct Tls {
    pub certificate: PathBuf,
    pub config: Arc<rustls::ServerConfig>,
}

impl Settings {
    /// The URL clients connect to: `wss://` with TLS. An address that
    /// listens on every interface is shown with this machine's name.
    pub fn url(&self, listening: Option<SocketAddr>) -> String {
        let address = listening.unwrap_or(self.listen);
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        if address.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{scheme}://{host}:{}/", address.port())
        } else {
            format!("{scheme}://{address}/")
        }
    }
}

impl Config {
    /// Checks every field; the refusal names the field. Looks at the
    /// address (`listen_check`) but binds nothing for long.
    pub fn settings(
        &self,
        listen_check: impl FnOnce(SocketAddr) -> Result<(), String>,
    ) -> Result<Settings, ConfigError> {
        let listen: SocketAddr = self.listen.trim().parse().map_err(|_| {
            config_error(
                "listen",
                format!(
                    "{:?} is not an address and port like 127.0.0.1:8443, 0.0.0.0:8443 or [::]:8443",
                    self.listen
                ),
            )
        })?;
        let tls = match (&self.certificate, &self.private_key) {
            (Some(certificate), Some(key)) => {
                Some(load_tls(Path::new(certificate), Path::new(key))?)
            }
            (Some(_), None) => {
                return Err(config_error(
                    "private_key",
                    "a certificate needs its private key (a PEM file)",
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "certificate",
                    "a private key needs its certificate (a PEM file)",
                ))
            }
            (None, None) => None,
        };
        if tls.is_none() && !listen.ip().is_loopback() && !self.allow_plain {
            return Err(config_error(
                "certificate",
                format!(
                    "{listen} is reachable from the network: set certificate and private_key for wss://, \
                     or allow_plain = true to let passwords cross it unencrypted"
                ),
            ));
        }
        let mut fixed_users = BTreeSet::new();
        for (index, user) in self.fixed_users.iter().enumerate() {
            if user.trim().is_empty() {
                return Err(config_error(
                    format!("fixed_users[{index}]"),
                    "must not be empty",
                ));
            }
            if !fixed_users.insert(user.trim().to_string()) {
                return Err(config_error(
                    format!("fixed_users[{index}]"),
                    format!("{user:?} is listed twice"),
                ));
            }
        }
        let within = |field: &str, value: u64, low: u64, high: u64| {
            if (low..=high).contains(&value) {
                Ok(value)
            } else {
                Err(config_error(
                    field,
                    format!("{value} is outside {low} to {high}"),
                ))
            }
        };
        let seats = within("seats", u64::from(self.seats), 0, 100_000)? as usize;
        let grace = within("grace_seconds", self.grace_seconds, 0, 86_400)?;
        let ping = within("ping_seconds", self.ping_seconds, 1, 3_600)?;
        let max_message_bytes =
            within("max_message_bytes", self.max_message_bytes, 1_024, 16 << 20)?;
        let commands_per_second = within(
            "commands_per_second",
            u64::from(self.commands_per_second),
            1,
            10_000,
        )? as u32;
        let max_clients = within("max_clients", u64::from(self.max_clients), 1, 1_000_000)?;
        let max_clients_per_address = within(
            "max_clients_per_address",
            u64::from(self.max_clients_per_address),
            1,
            1_000_000,
        )?;
        listen_check(listen).map_err(|message| config_error("listen", message))?;
        Ok(Settings {
            listen,
            tls,
            seats: SeatRules {
                pool: seats,
                fixed_users,
                one_seat_per_user: self.one_seat_per_user,
                grace: Duration::from_secs(grace),
            },
            ping: Duration::from_secs(ping),
            max_message_bytes: max_message_bytes as usize,
            commands_per_second,
            max_clients: max_clients as usize,
            max_clients_per_address: max_clients_per_address as usize,
        })
    }
}

/// Reads the certificate chain and key and builds the TLS configuration
/// (TLS 1.2 and 1.3, AWS-LC like every TLS configuration of the project).
fn load_tls(certificate: &Path, key: &Path) -> Result<Tls, ConfigError> {
    let chain_pem = std::fs::read(certificate).map_err(|error| {
        config_error(
            "certificate",
            format!("cannot read {}: {error}", certificate.display()),
        )
    })?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            config_error("certificate", format!("{}: {error}", certificate.display()))
        })?;
    if chain.is_empty() {
        return Err(config_error(
            "certificate",
            format!("{}: no certificate in it", certificate.display()),
        ));
    }
    let key_pem = std::fs::read(key).map_err(|error| {
        config_error(
            "private_key",
            format!("cannot read {}: {error}", key.display()),
        )
    })?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| config_error("private_key", format!("{}: {error}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| config_error("certificate", error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| {
            config_error(
                "private_key",
                format!(
                    "{} does not fit {}: {error}",
                    key.display(),
                    certificate.display()
                ),
            )
        })?;
    Ok(Tls {
        certificate: certificate.to_path_buf(),
        config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: &Config) -> Result<Settings, ConfigError> {
        config.settings(|_| Ok(()))
    }

    #[test]
    fn the_defaults_are_valid_and_as_documented() {
        let settings = settings(&Config::default()).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:8443".parse().unwrap());
        assert!(settings.tls.is_none());
        assert_eq!(settings.seats.pool, 5);
        assert!(settings.seats.one_seat_per_user);
        assert_eq!(settings.seats.grace, Duration::from_secs(30));
        assert_eq!(settings.ping, Duration::from_secs(15));
        assert_eq!(settings.max_message_bytes, 65_536);
        assert_eq!(settings.commands_per_second, 10);
        assert_eq!(settings.max_clients, 1000);
        assert_eq!(settings.max_clients_per_address, 50);
        assert_eq!(settings.url(None), "ws://127.0.0.1:8443/");
    }

    #[test]
    fn plain_off_loopback_needs_a_certificate_or_consent() {
        let open = Config {
            listen: "0.0.0.0:8443".into(),
            ..Config::default()
        };
        let error = settings(&open).err().unwrap();
        assert_eq!(error.field.as_str(), "certificate");
        let consented = Config {
            allow_plain: true,
            ..open
        };
        assert!(settings(&consented).is_ok());
        let loopback6 = Config {
            listen: "[::1]:8443".into(),
            ..Config::default()
        };
        assert!(settings(&loopback6).is_ok());
    }

    #[test]
    fn refusals_name_their_field() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    listen: "localhost".into(),
                    ..Config::default()
                },
                "listen",
            ),
            (
                Config {
                    listen: "127.0.0.1:99999".into(),
                    ..Config::default()
                },
                "listen",
            ),
            (
                Config {
                    certificate: Some("/nonexistent.pem".into()),
                    ..Config::default()
                },
                "private_key",
            ),
            (
                Config {
                    private_key: Some("/nonexistent.pem".into()),
                    ..Config::default()
                },
                "certificate",
            ),
            (
                Config {
                    certificate: Some("/nonexistent.pem".into()),
                    private_key: Some("/nonexistent.key".into()),
                    ..Config::default()
                },
                "certificate",
            ),
            (
                Config {
                    fixed_users: vec!["anna".into(), " ".into()],
                    ..Config::default()
                },
                "fixed_users[1]",
            ),
            (
                Config {
                    fixed_users: vec!["anna".into(), "anna".into()],
                    ..Config::default()
                },
                "fixed_users[1]",
            ),
            (
                Config {
                    ping_seconds: 0,
                    ..Config::default()
                },
                "ping_seconds",
            ),
            (
                Config {
                    max_message_bytes: 10,
                    ..Config::default()
                },
                "max_message_bytes",
            ),
            (
                Config {
                    commands_per_second: 0,
                    ..Config::default()
                },
                "commands_per_second",
            ),
            (
                Config {
                    max_clients: 0,
                    ..Config::default()
                },
                "max_clients",
            ),
            (
                Config {
                    max_clients_per_address: 0,
                    ..Config::default()
                },
                "max_clients_per_address",
            ),
            (
                Config {
                    grace_seconds: 100_000,
                    ..Config::default()
                },
                "grace_seconds",
            ),
        ];
        for (config, field) in cases {
            let error = settings(&config)
                .err()
                .unwrap_or_else(|| panic!("{config:?} accepted"));
            assert_eq!(error.field.as_str(), field, "{config:?}: {}", error.message);
        }
        let in_use = Config::default()
            .settings(|_| Err("in use".into()))
            .err()
            .unwrap();
        assert_eq!(
            (in_use.field.as_str(), in_use.message.as_str()),
            ("listen", "in use")
        );
    }

    #[test]
    fn a_certificate_and_key_turn_tls_on() {
        let dir = tempfile::tempdir().unwrap();
        let (certificate, key) = crate::testing_support::certificate(dir.path());
        let config = Config {
            listen: "0.0.0.0:8443".into(),
            certificate: Some(certificate.display().to_string()),
            private_key: Some(key.display().to_string()),
            ..Config::default()
        };
        let settings = settings(&config).unwrap();
        assert!(settings.tls.is_some());
        assert!(
            settings.url(None).starts_with("wss://"),
            "{}",
            settings.url(None)
        );
        // A key that is not PEM names the key.
        std::fs::write(&key, "not a key").unwrap();
        let error = Config::settings(&config, |_| Ok(())).err().unwrap();
        assert_eq!(error.field.as_str(), "private_key");
    }
}
