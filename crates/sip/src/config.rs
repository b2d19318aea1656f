//! The `[sip]` and `[media]` tables of the host configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Where and how the SIP front end listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address and port for SIP over UDP and TCP.
    pub listen: SocketAddr,
    /// Also accept SIP over TCP on the same port.
    pub tcp: bool,
    /// Registrations are kept at most this long (seconds); phones asking
    /// for more get this.
    pub max_expires: u32,
    /// Shorter registrations are refused with 423 (RFC 3261 §10.3).
    pub min_expires: u32,
    /// Failed authentications from one source before it is blocked.
    pub auth_failures: u32,
    /// How long a blocked source gets only 403 (seconds).
    pub auth_block_seconds: u64,
    /// The carrier: where external numbers are dialled, and whose calls
    /// come in unchallenged.
    pub trunk: Option<TrunkConfig>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            tcp: true,
            max_expires: 3600,
            min_expires: 30,
            auth_failures: 5,
            auth_block_seconds: 60,
            trunk: None,
        }
    }
}

/// A SIP trunk that is a fixed peer (a carrier's SBC, another PBX, SIPp).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// The peer's address and port: requests from it are carrier calls,
    /// calls to external numbers go to it.
    pub peer: SocketAddr,
}

/// The anchored media relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The address phones send RTP to (the host's address on their network).
    pub address: IpAddr,
    /// UDP ports for RTP, `FIRST-LAST`; two per call.
    pub rtp_ports: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtp_ports: "30000-39999".into(),
        }
    }
}

impl MediaConfig {
    pub fn port_range(&self) -> Result<RangeInclusive<u16>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: "media.rtp_ports",
            message,
        };
        let (first, last) = self
            .rtp_ports
            .split_once('-')
            .ok_or_else(|| invalid(format!("{:?} is not FIRST-LAST", self.rtp_ports)))?;
        let port = |text: &str| {
            text.trim()
                .parse::<u16>()
                .map_err(|_| invalid(format!("{text:?} is not a port number")))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first < 1024 || last < first.saturating_add(3) {
            return Err(invalid(format!(
                "{first}-{last}: need at least 4 ports above 1023"
            )));
        }
        Ok(first..=last)
    }
}

impl SipConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            return Err(ConfigError::Invalid {
                field: "sip.min_expires",
                message: format!(
                    "{} must be between 1 and max_expires ({})",
                    self.min_expires, self.max_expires
                ),
            });
        }
        if self.auth_failures == 0 {
            return Err(ConfigError::Invalid {
                field: "sip.auth_failures",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_are_checked_and_named() {
        let mut media = MediaConfig::default();
        assert_eq!(media.port_range().unwrap(), 30000..=39999);
        for bad in ["30000", "x-40000", "40000-30000", "80-90"] {
            media.rtp_ports = bad.into();
            let error = media.port_range().unwrap_err().to_string();
            assert!(error.contains("media.rtp_ports"), "{error}");
        }
    }
}
