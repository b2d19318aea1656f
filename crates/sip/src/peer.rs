//! Who sent a request: the transport's real remote address, never a
//! header the sender wrote (`Via`, `received`, `rport`, `Contact`).

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::sip::Transport;
use rsipstack::transaction::transaction::Transaction;

use crate::config::{ConfigError, TrunkConfig, TrunkSource, TrunkTransport};
use crate::tls::VerifiedClients;

/// The sender of a request as the socket saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub address: SocketAddr,
    pub transport: Transport,
}

impl Peer {
    /// The real remote address of the transaction's connection: for UDP the
    /// datagram's source, for TCP the connected socket's peer. `None` for a
    /// request that did not come from the network.
    pub fn of(tx: &Transaction) -> Option<Peer> {
        let connection = tx.connection.as_ref()?;
        let remote = connection.get_remote_addr()?;
        let address = remote.get_socketaddr().ok()?;
        Some(Peer {
            address,
            transport: connection.transport(),
        })
    }
}

/// Recognises the carrier by the real address (and transport) of a request.
#[derive(Debug, Clone)]
pub(crate) struct TrunkMatcher {
    sources: Vec<TrunkSource>,
    transport: TrunkTransport,
    /// With `sip.tls.trunk_client_ca`: the TLS connections whose client
    /// certificate verified; the trunk's requests come over one of them.
    certified: Option<Arc<VerifiedClients>>,
    /// The trunk's own address, where calls to it go.
    dialled: SocketAddr,
}

impl TrunkMatcher {
    pub fn new(
        trunk: Option<&TrunkConfig>,
        certified: Option<Arc<VerifiedClients>>,
    ) -> Result<TrunkMatcher, ConfigError> {
        Ok(match trunk {
            Some(trunk) => TrunkMatcher {
                sources: trunk.sources()?,
                transport: trunk.transport,
                certified,
                dialled: trunk.peer,
            },
            None => TrunkMatcher {
                sources: Vec::new(),
                transport: TrunkTransport::Any,
                certified: None,
                dialled: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
        })
    }

    /// The request came from the trunk.
    pub fn is_trunk(&self, peer: &Peer) -> bool {
        let transport_ok = match self.transport {
            TrunkTransport::Any => true,
            TrunkTransport::Udp => peer.transport == Transport::Udp,
            TrunkTransport::Tcp => peer.transport == Transport::Tcp,
            // Certified: a connection from the trunk with a client
            // certificate, or the one the host opened to the trunk's
            // address (its server certificate checked against trunk_ca).
            TrunkTransport::Tls => {
                peer.transport == Transport::Tls
                    && self.certified.as_ref().is_none_or(|certified| {
                        certified.contains(peer.address) || peer.address == self.dialled
                    })
            }
        };
        transport_ok && self.sources.iter().any(|s| s.matches(peer.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str, transport: Transport) -> Peer {
        Peer {
            address: address.parse().unwrap(),
            transport,
        }
    }

    #[test]
    fn the_trunk_is_its_address_and_transport() {
        let trunk = TrunkConfig {
            peer: "192.0.2.1:5060".parse().unwrap(),
            accept_from: vec!["192.0.2.9".into()],
            transport: TrunkTransport::Udp,
            allow_transit: false,
            allow_refer_out: false,
        };
        let matcher = TrunkMatcher::new(Some(&trunk), None).unwrap();
        assert!(matcher.is_trunk(&peer("192.0.2.1:5060", Transport::Udp)));
        assert!(!matcher.is_trunk(&peer("192.0.2.1:5061", Transport::Udp)));
        assert!(!matcher.is_trunk(&peer("192.0.2.1:5060", Transport::Tcp)));
        assert!(matcher.is_trunk(&peer("192.0.2.9:40000", Transport::Udp)));
        assert!(!matcher.is_trunk(&peer("192.0.2.2:5060", Transport::Udp)));
        let none = TrunkMatcher::new(None, None).unwrap();
        assert!(!none.is_trunk(&peer("192.0.2.1:5060", Transport::Udp)));
    }

    #[test]
    fn a_tls_trunk_is_its_ip_on_tls_and_with_a_client_certificate_when_asked() {
        let trunk = TrunkConfig {
            peer: "192.0.2.1:5061".parse().unwrap(),
            accept_from: Vec::new(),
            transport: TrunkTransport::Tls,
            allow_transit: false,
            allow_refer_out: false,
        };
        // A TLS client connects from a port of its own.
        let plain = TrunkMatcher::new(Some(&trunk), None).unwrap();
        assert!(plain.is_trunk(&peer("192.0.2.1:40000", Transport::Tls)));
        assert!(!plain.is_trunk(&peer("192.0.2.1:5061", Transport::Tcp)));
        assert!(!plain.is_trunk(&peer("192.0.2.2:40000", Transport::Tls)));

        let certified = Arc::new(VerifiedClients::default());
        let strict = TrunkMatcher::new(Some(&trunk), Some(certified.clone())).unwrap();
        assert!(!strict.is_trunk(&peer("192.0.2.1:40000", Transport::Tls)));
        certified.insert("192.0.2.1:40000".parse().unwrap());
        assert!(strict.is_trunk(&peer("192.0.2.1:40000", Transport::Tls)));
        assert!(!strict.is_trunk(&peer("192.0.2.1:40001", Transport::Tls)));
        // The connection the host opened to the trunk.
        assert!(strict.is_trunk(&peer("192.0.2.1:5061", Transport::Tls)));
    }
}
