//! The `[sip]` and `[media]` tables of the host configuration.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use callhost_numbers::Pattern;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// Where and how the SIP front end listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address and port for SIP over UDP and TCP.
    pub listen: SocketAddr,
    /// Also accept SIP over TCP on the same port.
    pub tcp: bool,
    /// SIP over TLS (`[sip.tls]`): off unless the table is present.
    pub tls: Option<TlsConfig>,
    /// Which legs carry SRTP (`[sip.srtp]`, see `srtp.rs`).
    pub srtp: crate::srtp::SrtpConfig,
    /// Registrations are kept at most this long (seconds); phones asking
    /// for more get this.
    pub max_expires: u32,
    /// Shorter registrations are refused with 423 (RFC 3261 §10.3).
    pub min_expires: u32,
    /// Failed authentications from one source address before it is blocked.
    pub auth_failures: u32,
    /// Failed authentications for one user name, from any source, before
    /// new attempts for that user are refused.
    pub auth_failures_per_user: u32,
    /// How long a blocked source or user gets only 403 (seconds).
    pub auth_block_seconds: u64,
    /// The carrier: where external numbers are dialled, and whose calls
    /// come in unchallenged.
    pub trunk: Option<TrunkConfig>,
    /// What internal users may dial outside.
    pub outbound: OutboundConfig,
    /// Bounds on what one user or one source may hold.
    pub limits: LimitsConfig,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            tcp: true,
            tls: None,
            srtp: crate::srtp::SrtpConfig::default(),
            max_expires: 3600,
            min_expires: 30,
            auth_failures: 5,
            auth_failures_per_user: 10,
            auth_block_seconds: 60,
            trunk: None,
            outbound: OutboundConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// The transports a trunk's requests may arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Any,
    Udp,
    Tcp,
    Tls,
}

impl TrunkTransport {
    /// What calls to the trunk go out on (UDP unless TCP or TLS is
    /// configured).
    pub(crate) fn outgoing(self) -> rsipstack::sip::Transport {
        match self {
            TrunkTransport::Tcp => rsipstack::sip::Transport::Tcp,
            TrunkTransport::Tls => rsipstack::sip::Transport::Tls,
            TrunkTransport::Any | TrunkTransport::Udp => rsipstack::sip::Transport::Udp,
        }
    }
}

/// SIP over TLS (`[sip.tls]`). The certificate and key are read again
/// whenever either file changes; connections made before keep theirs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address and port for SIP over TLS (default: the IP of
    /// `sip.listen`, port 5061).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The host's certificate chain (PEM, the host's own certificate
    /// first).
    pub certificate: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign the trunk's client certificate.
    /// Set: a request counts as the carrier's only when it comes over a
    /// TLS connection whose client presented a certificate of this CA (and
    /// from the trunk's addresses); phones still connect without one.
    #[serde(default)]
    pub trunk_client_ca: Option<PathBuf>,
    /// CA certificates (PEM) the trunk's server certificate is checked
    /// against when calls go out to it over TLS. Without it, calls to a
    /// TLS trunk fail: no certificate is trusted implicitly.
    #[serde(default)]
    pub trunk_ca: Option<PathBuf>,
    /// The name the trunk's server certificate must carry (default: the
    /// trunk's IP address).
    #[serde(default)]
    pub trunk_name: Option<String>,
    /// A client has this long to finish its TLS handshake (seconds).
    #[serde(default = "TlsConfig::default_handshake_seconds")]
    pub handshake_seconds: u64,
    /// TLS handshakes in progress at once; more connections are closed at
    /// once (a flood of half-open handshakes costs no more than this).
    #[serde(default = "TlsConfig::default_max_handshakes")]
    pub max_handshakes: usize,
    /// TLS connections one IP address may hold open; more are closed at
    /// once (an idle one closes after 5 minutes).
    #[serde(default = "TlsConfig::default_connections_per_source")]
    pub connections_per_source: usize,
}

impl TlsConfig {
    fn default_handshake_seconds() -> u64 {
        5
    }

    fn default_max_handshakes() -> usize {
        64
    }

    fn default_connections_per_source() -> usize {
        32
    }

    /// Where TLS is answered: `listen`, or port 5061 on `sip`'s IP.
    pub fn address(&self, sip: SocketAddr) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::new(sip.ip(), DEFAULT_TLS_PORT))
    }

    /// Makes the file names absolute, relative ones taken from `base` (the
    /// configuration file's directory).
    pub fn resolve_relative_to(&mut self, base: &std::path::Path) {
        for path in [
            Some(&mut self.certificate),
            Some(&mut self.key),
            self.trunk_client_ca.as_mut(),
            self.trunk_ca.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.handshake_seconds == 0 {
            return Err(invalid("sip.tls.handshake_seconds", "must be at least 1"));
        }
        if self.max_handshakes == 0 {
            return Err(invalid("sip.tls.max_handshakes", "must be at least 1"));
        }
        if self.connections_per_source == 0 {
            return Err(invalid(
                "sip.tls.connections_per_source",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The registered port of SIP over TLS (RFC 3261 §19.1.2).
pub const DEFAULT_TLS_PORT: u16 = 5061;

/// A SIP trunk that is a fixed peer (a carrier's SBC, another PBX, SIPp).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// The peer's address and port: calls to external numbers go to it,
    /// and requests from exactly this address are the carrier's.
    pub peer: SocketAddr,
    /// More addresses whose requests are the carrier's (`IP` for any port,
    /// `IP:PORT` for one): carriers often send from several SBCs.
    #[serde(default)]
    pub accept_from: Vec<String>,
    /// Only requests on this transport count as the carrier's.
    #[serde(default)]
    pub transport: TrunkTransport,
    /// Calls from the trunk may go back out through it (transit). Off: the
    /// trunk reaches internal users, groups and DIDs only.
    #[serde(default)]
    pub allow_transit: bool,
    /// A party on the trunk side may transfer (REFER) an internal party to
    /// an outside number. Off: such REFERs are refused with 403.
    #[serde(default)]
    pub allow_refer_out: bool,
}

/// One address a trunk's requests may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrunkSource {
    Host(IpAddr),
    Exact(SocketAddr),
}

impl TrunkSource {
    fn parse(text: &str) -> Result<TrunkSource, ConfigError> {
        let text = text.trim();
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(TrunkSource::Exact(address));
        }
        text.parse::<IpAddr>().map(TrunkSource::Host).map_err(|_| {
            invalid(
                "sip.trunk.accept_from",
                format!("{text:?} is neither IP nor IP:PORT"),
            )
        })
    }

    pub(crate) fn matches(self, address: SocketAddr) -> bool {
        match self {
            TrunkSource::Host(ip) => ip == address.ip(),
            TrunkSource::Exact(exact) => exact == address,
        }
    }
}

impl TrunkConfig {
    /// Every address the trunk's requests may come from (`peer` first; over
    /// TLS its IP, since a TLS client connects from a port of its own).
    pub(crate) fn sources(&self) -> Result<Vec<TrunkSource>, ConfigError> {
        let mut sources = vec![match self.transport {
            TrunkTransport::Tls => TrunkSource::Host(self.peer.ip()),
            _ => TrunkSource::Exact(self.peer),
        }];
        for text in &self.accept_from {
            sources.push(TrunkSource::parse(text)?);
        }
        Ok(sources)
    }
}

/// Outbound permissions: which outside numbers internal users may dial
/// (and transfer calls to). Patterns use `?` (one digit) and `*` (any
/// digits) and are matched against the number as dialled, its national
/// dialling form (`030…`, `00…` abroad) and its E.164 form (`+49…`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Refused for every user unless the user's own `allow` matches.
    pub deny: Vec<Pattern>,
    /// Always allowed, whatever `deny` says (the home country's emergency
    /// numbers are, without being listed).
    pub always_allow: Vec<Pattern>,
    /// Per user id: extra `deny` patterns and `allow` exceptions.
    pub users: BTreeMap<String, UserOutbound>,
}

/// One user's outbound exceptions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserOutbound {
    pub allow: Vec<Pattern>,
    pub deny: Vec<Pattern>,
}

/// Resource limits (`[sip.limits]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls in progress on the whole host; more get 503.
    pub max_calls: usize,
    /// Calls being set up at once (engine and modules deciding, before
    /// anything rings); more get 503: past this the host is behind.
    pub max_setups: usize,
    /// The host's scheduler running this late (ms) means it cannot keep
    /// up: new calls get 503 for a second (0: never). 500 ms is when
    /// peers start to retransmit (RFC 3261 T1).
    pub max_lag_ms: u64,
    /// Calls one user may have in progress as the caller; more get 403.
    pub calls_per_user: usize,
    /// Calls in progress from one source address (IP); more get 503.
    /// The trunk is bounded by `max_calls` only.
    pub calls_per_source: usize,
    /// New INVITEs per second one source address may send (sustained);
    /// more get 503 with Retry-After.
    pub invites_per_second: u32,
    /// Burst of INVITEs above the sustained rate.
    pub invite_burst: u32,
    /// Devices one user may have registered at once.
    pub registrations_per_user: usize,
    /// Contacts one REGISTER may carry.
    pub contacts_per_register: usize,
    /// A call nobody answers is given up after this long (seconds): the
    /// phones get CANCEL, the caller 480.
    pub ring_timeout_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 1000,
            max_setups: 200,
            max_lag_ms: 500,
            calls_per_user: 8,
            calls_per_source: 60,
            invites_per_second: 20,
            invite_burst: 40,
            registrations_per_user: 10,
            contacts_per_register: 4,
            ring_timeout_seconds: 180,
        }
    }
}

/// How the relay latches onto a party's RTP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatchingMode {
    /// Latch once (the signalled address, or the first source in the first
    /// seconds); a later move only with the same SSRC.
    #[default]
    Strict,
    /// Follow every new source (for labs; anyone reaching the port can
    /// redirect the leg).
    Follow,
}

/// The anchored media relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The address phones send RTP to (the host's address on their network).
    pub address: IpAddr,
    /// UDP ports for RTP and RTCP, `FIRST-LAST`: two even ones per call
    /// for RTP, the odd one above each for its RTCP.
    pub rtp_ports: String,
    /// How a leg latches onto where its RTP comes from.
    pub latching: LatchingMode,
    /// Accept SDP connection addresses on loopback from peers that are not
    /// on loopback themselves (tests only: otherwise a caller could point
    /// the relay at the host's own services).
    pub allow_local_addresses: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtp_ports: "30000-39999".into(),
            latching: LatchingMode::Strict,
            allow_local_addresses: false,
        }
    }
}

impl MediaConfig {
    pub fn port_range(&self) -> Result<RangeInclusive<u16>, ConfigError> {
        let bad = |message: String| invalid("media.rtp_ports", message);
        let (first, last) = self
            .rtp_ports
            .split_once('-')
            .ok_or_else(|| bad(format!("{:?} is not FIRST-LAST", self.rtp_ports)))?;
        let port = |text: &str| {
            text.trim()
                .parse::<u16>()
                .map_err(|_| bad(format!("{text:?} is not a port number")))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first < 1024 || last < first.saturating_add(3) {
            return Err(bad(format!(
                "{first}-{last}: need at least 4 ports above 1023"
            )));
        }
        Ok(first..=last)
    }
}

impl SipConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            return Err(invalid(
                "sip.min_expires",
                format!(
                    "{} must be between 1 and max_expires ({})",
                    self.min_expires, self.max_expires
                ),
            ));
        }
        if self.auth_failures == 0 {
            return Err(invalid("sip.auth_failures", "must be at least 1"));
        }
        if self.auth_failures_per_user == 0 {
            return Err(invalid("sip.auth_failures_per_user", "must be at least 1"));
        }
        if let Some(trunk) = &self.trunk {
            trunk.sources()?;
            if trunk.transport == TrunkTransport::Tls && self.tls.is_none() {
                return Err(invalid(
                    "sip.trunk.transport",
                    "\"tls\" needs a [sip.tls] table",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
            if tls.trunk_client_ca.is_some()
                && self
                    .trunk
                    .as_ref()
                    .is_none_or(|trunk| trunk.transport != TrunkTransport::Tls)
            {
                return Err(invalid(
                    "sip.tls.trunk_client_ca",
                    "checks the trunk's client certificate: needs sip.trunk.transport = \"tls\"",
                ));
            }
        }
        let limits = &self.limits;
        let at_least_one = [
            ("sip.limits.max_calls", limits.max_calls as u64),
            ("sip.limits.max_setups", limits.max_setups as u64),
            ("sip.limits.calls_per_user", limits.calls_per_user as u64),
            (
                "sip.limits.calls_per_source",
                limits.calls_per_source as u64,
            ),
            (
                "sip.limits.invites_per_second",
                u64::from(limits.invites_per_second),
            ),
            (
                "sip.limits.registrations_per_user",
                limits.registrations_per_user as u64,
            ),
            (
                "sip.limits.contacts_per_register",
                limits.contacts_per_register as u64,
            ),
            (
                "sip.limits.ring_timeout_seconds",
                limits.ring_timeout_seconds,
            ),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
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

    #[test]
    fn bad_limits_and_trunk_sources_name_the_field() {
        let mut config = SipConfig::default();
        config.validate().unwrap();
        config.limits.calls_per_user = 0;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("sip.limits.calls_per_user"), "{error}");
        config.limits = LimitsConfig::default();
        config.trunk = Some(TrunkConfig {
            peer: "192.0.2.1:5060".parse().unwrap(),
            accept_from: vec!["192.0.2.2".into(), "carrier.example".into()],
            transport: TrunkTransport::Any,
            allow_transit: false,
            allow_refer_out: false,
        });
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("sip.trunk.accept_from") && error.contains("carrier.example"),
            "{error}"
        );
    }

    #[test]
    fn tls_and_srtp_settings_are_checked_and_named() {
        let config: SipConfig = toml::from_str(
            "[tls]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n\
             [srtp]\ndefault = \"required\"\n[srtp.users]\nanna = \"off\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        let tls = config.tls.clone().unwrap();
        assert_eq!(
            tls.address("192.0.2.5:5060".parse().unwrap()),
            "192.0.2.5:5061".parse().unwrap()
        );
        assert_eq!(
            config.srtp.policy(Some("anna")),
            crate::srtp::SrtpPolicy::Off
        );
        assert_eq!(
            config.srtp.policy(Some("bert")),
            crate::srtp::SrtpPolicy::Required
        );
        assert!(toml::from_str::<SipConfig>("[srtp]\ndefault = \"maybe\"\n").is_err());

        let mut bad = config.clone();
        bad.tls.as_mut().unwrap().trunk_client_ca = Some("ca.pem".into());
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("sip.tls.trunk_client_ca"), "{error}");
        let mut bad = config.clone();
        bad.tls = None;
        bad.trunk = Some(TrunkConfig {
            peer: "192.0.2.1:5061".parse().unwrap(),
            accept_from: Vec::new(),
            transport: TrunkTransport::Tls,
            allow_transit: false,
            allow_refer_out: false,
        });
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("sip.trunk.transport"), "{error}");
        let mut bad = config;
        bad.tls.as_mut().unwrap().max_handshakes = 0;
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("sip.tls.max_handshakes"), "{error}");
    }

    #[test]
    fn outbound_patterns_are_parsed_with_the_numbers_crate() {
        let config: SipConfig = toml::from_str(
            "[outbound]\ndeny = [\"0900*\", \"00*\"]\n[outbound.users.anna]\nallow = [\"0043*\"]\n",
        )
        .unwrap();
        assert_eq!(config.outbound.deny.len(), 2);
        assert_eq!(config.outbound.users["anna"].allow[0].as_str(), "0043*");
        assert!(toml::from_str::<SipConfig>("[outbound]\ndeny = [\"09x\"]\n").is_err());
    }
}
