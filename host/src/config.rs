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
        if path == "." {
            anyhow::anyhow!("{what}: {message}")
        } else {
            anyhow::anyhow!("{what}: field `{path}`: {message}")
        }
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
        if let (Some(tls), Some(base)) = (config.sip.tls.as_mut(), path.parent()) {
            tls.resolve_relative_to(base);
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
