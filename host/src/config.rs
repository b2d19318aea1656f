//! The host configuration file `<data>/callhost.toml` (optional).

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    pub calls: CallsConfig,
    /// `callhost serve`: SIP listener, registrar and trunk.
    pub sip: callhost_sip::SipConfig,
    /// `callhost serve`: the anchored RTP relay.
    pub media: callhost_sip::MediaConfig,
    /// `callhost serve`: the web UI and the HTTP API.
    pub http: HttpConfig,
}

/// `[http]`: where `callhost serve` answers the browser and scripts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Off: `callhost serve` answers no HTTP (`callhost api serve` still can).
    pub enabled: bool,
    /// Address and port (default 127.0.0.1:8080: this machine only).
    pub listen: std::net::SocketAddr,
    /// HTTPS with this certificate chain (PEM); `key` is its private key.
    /// Relative to callhost.toml; reloaded when the files change.
    pub certificate: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// HTTPS with the certificate of `[sip.tls]` (instead of `certificate`).
    pub sip_certificate: bool,
    /// A browser session ends after this long without a request (minutes).
    pub session_idle_minutes: u64,
    /// And in any case this long after the login (hours).
    pub session_hours: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            certificate: None,
            key: None,
            sip_certificate: false,
            session_idle_minutes: 30,
            session_hours: 12,
        }
    }
}

impl HttpConfig {
    /// The certificate and key HTTPS uses, if any (checked by `load`).
    pub fn tls_files(
        &self,
        sip: &callhost_sip::SipConfig,
    ) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        match (&self.certificate, &self.key) {
            (Some(certificate), Some(key)) => Some((certificate.clone(), key.clone())),
            _ if self.sip_certificate => sip
                .tls
                .as_ref()
                .map(|tls| (tls.certificate.clone(), tls.key.clone())),
            _ => None,
        }
    }

    fn check(&self, sip: &callhost_sip::SipConfig) -> Result<(), String> {
        match (&self.certificate, &self.key) {
            (Some(_), None) => {
                return Err("field `http.key`: needed with `http.certificate`".into())
            }
            (None, Some(_)) => {
                return Err("field `http.certificate`: needed with `http.key`".into())
            }
            _ => {}
        }
        if self.sip_certificate && sip.tls.is_none() {
            return Err("field `http.sip_certificate`: there is no `[sip.tls]` certificate".into());
        }
        if self.session_idle_minutes == 0 || self.session_hours == 0 {
            return Err(
                "fields `http.session_idle_minutes`, `http.session_hours`: must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// Total time all module hooks of one call may take.
    pub setup_budget_ms: u64,
    /// Forwards followed at most per call.
    pub max_forwards: usize,
    /// Part of the budget kept for each instance still to run after the
    /// current one.
    pub hook_reserve_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            setup_budget_ms: 700,
            max_forwards: 5,
            hook_reserve_ms: 20,
        }
    }
}

/// Parses TOML into `T`, naming the offending field on error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().message().trim().to_string();
        let text = if path == "." {
            format!("{what}: {message}")
        } else {
            format!("{what}: field `{path}`: {message}")
        };
        anyhow::Error::new(crate::db::Invalid(text))
    })
}

impl HostConfig {
    pub fn load(path: &Path) -> Result<HostConfig> {
        if !path.exists() {
            return Ok(HostConfig::default());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: HostConfig = parse_toml(&text, &path.display().to_string())?;
        // Relative file names in the configuration are relative to it.
        if let Some(base) = path.parent() {
            if let Some(tls) = config.sip.tls.as_mut() {
                tls.resolve_relative_to(base);
            }
            for file in [&mut config.http.certificate, &mut config.http.key]
                .into_iter()
                .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        if config.calls.setup_budget_ms == 0 || config.calls.setup_budget_ms > 10_000 {
            anyhow::bail!(
                "{}: field `calls.setup_budget_ms`: {} is outside 1..=10000",
                path.display(),
                config.calls.setup_budget_ms
            );
        }
        let at = |error: callhost_sip::ConfigError| anyhow::anyhow!("{}: {error}", path.display());
        config.sip.validate().map_err(at)?;
        config.media.port_range().map_err(at)?;
        config
            .http
            .check(&config.sip)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        Ok(config)
    }

    pub fn hook_reserve(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.calls.hook_reserve_ms)
    }

    pub fn engine(&self) -> callhost_pbx::engine::EngineConfig {
        callhost_pbx::engine::EngineConfig {
            setup_budget: std::time::Duration::from_millis(self.calls.setup_budget_ms),
            max_forwards: self.calls.max_forwards,
        }
    }
}
