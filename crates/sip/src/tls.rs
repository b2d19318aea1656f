//! SIP over TLS: our own listener in front of rsipstack's TLS connections.
//!
//! rsipstack has a TLS listener, but it waits for a handshake without a
//! time limit, accepts any number of them at once, cannot check a client
//! certificate and reloads its certificate only when told. So the host
//! accepts TLS itself (rustls through tokio-rustls, TLS 1.2 and 1.3 only),
//! and hands each finished connection to the stack, which then reads and
//! writes SIP on it like on any other connection.
//!
//! - A handshake has `handshake_seconds`; at most `max_handshakes` run at
//!   once, and one IP address holds at most `connections_per_source`
//!   connections; further connections are closed unanswered.
//! - The certificate and key are read again when either file changes
//!   (checked every [`RELOAD_CHECK`]); a file that does not load is logged
//!   and the certificate before stays in use. Open connections keep theirs.
//! - With `trunk_client_ca`, clients may present a certificate; one that
//!   does not verify ends the handshake, one that does puts the
//!   connection's address into [`VerifiedClients`], which the trunk
//!   matcher asks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::connection::SipConnection;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::SipAddr;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

/// How often the certificate and key files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Why TLS could not be set up from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: no certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{key} does not fit {certificate}: {message}")]
    Key {
        certificate: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("{path}: not usable as client CA: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("cannot listen for SIP over TLS on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The crypto provider of every TLS configuration the host builds: AWS-LC,
/// the backend the rest of the project (recording evidence, SFTP, S3)
/// already uses. Installed as the process default as well, because
/// rsipstack's client side (calls out to a TLS trunk) takes the default.
pub fn provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Fails only if a default is installed already (a second server in
    // one process, the tests): that one stays.
    let _ = CryptoProvider::install_default((*provider).clone());
    provider
}

/// The server certificate, swapped when its files change.
#[derive(Debug)]
struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// Reads a certificate chain and its key and checks that they belong
/// together.
pub fn load_certified_key(
    certificate: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(certificate)?;
    let key_pem = read(key)?;
    let key_error = |message: String| TlsError::Key {
        certificate: certificate.to_owned(),
        key: key.to_owned(),
        message,
    };
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| key_error(format!("no private key: {error}")))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|error| key_error(error.to_string()))
}

/// What rsipstack's client side uses for connections the host opens (to
/// a TLS trunk): `trunk_ca` as the only trust anchors, `trunk_name` as the
/// name to check, and the host's own certificate as the client
/// certificate (carriers that ask for one get it).
pub(crate) fn trunk_client_config(
    config: &TlsConfig,
) -> Result<rsipstack::transport::tls::TlsConfig, TlsError> {
    let ca_certs = match &config.trunk_ca {
        Some(path) => {
            certificates(path)?;
            Some(read(path)?)
        }
        None => None,
    };
    Ok(rsipstack::transport::tls::TlsConfig {
        client_cert: Some(read(&config.certificate)?),
        client_key: Some(read(&config.key)?),
        ca_certs,
        sni_hostname: config.trunk_name.clone(),
        ..Default::default()
    })
}

/// Addresses of open TLS connections whose client presented a certificate
/// of `trunk_client_ca`. Only such connections are entered (an attacker
/// without a certificate cannot grow it); a connection's entry goes when
/// it closes.
#[derive(Debug, Default)]
pub(crate) struct VerifiedClients(Mutex<HashSet<SocketAddr>>);

impl VerifiedClients {
    pub fn contains(&self, address: SocketAddr) -> bool {
        self.lock().contains(&address)
    }

    pub(crate) fn insert(&self, address: SocketAddr) {
        self.lock().insert(address);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bound TLS listener, not yet accepting.
pub(crate) struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    local: SocketAddr,
    verified: Arc<VerifiedClients>,
}

impl TlsListener {
    pub async fn bind(config: &TlsConfig, sip: SocketAddr) -> Result<TlsListener, TlsError> {
        let provider = provider();
        let certificate = Arc::new(ReloadingCertificate {
            current: RwLock::new(Arc::new(load_certified_key(
                &config.certificate,
                &config.key,
                &provider,
            )?)),
        });
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .expect("the provider supports TLS 1.2 and 1.3");
        let server = match &config.trunk_client_ca {
            None => builder
                .with_no_client_auth()
                .with_cert_resolver(certificate.clone()),
            Some(path) => {
                let ca_error = |message: String| TlsError::ClientCa {
                    path: path.clone(),
                    message,
                };
                let mut roots = RootCertStore::empty();
                for ca in certificates(path)? {
                    roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
                }
                // Phones connect without a certificate; one that is
                // presented must verify.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| ca_error(e.to_string()))?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_cert_resolver(certificate.clone())
            }
        };
        let address = config.address(sip);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| TlsError::Listen { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| TlsError::Listen { address, source })?;
        Ok(TlsListener {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certificate,
            config: config.clone(),
            provider,
            local,
            verified: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn verified(&self) -> Arc<VerifiedClients> {
        self.verified.clone()
    }

    /// Accepts until `cancel`, handing each connection to the endpoint's
    /// transport layer; watches the certificate files meanwhile. (The
    /// endpoint's own layer: a `TransportLayer` value cancels the whole
    /// layer when it is dropped.)
    pub fn spawn(self, endpoint: EndpointInnerRef, cancel: CancellationToken) {
        tokio::spawn(watch_certificate(
            self.certificate.clone(),
            (self.config.certificate.clone(), self.config.key.clone()),
            self.provider.clone(),
            cancel.clone(),
        ));
        tokio::spawn(accept(self, endpoint, cancel));
    }
}

async fn accept(listener: TlsListener, endpoint: EndpointInnerRef, cancel: CancellationToken) {
    let handshakes = Arc::new(Semaphore::new(listener.config.max_handshakes));
    let limit = Duration::from_secs(listener.config.handshake_seconds);
    let local = SipAddr::new(rsipstack::sip::Transport::Tls, listener.local.into());
    let check_clients = listener.config.trunk_client_ca.is_some();
    let per_source = listener.config.connections_per_source;
    let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(%error, "TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(counted) = OpenConnection::count(&open, remote.ip(), per_source) else {
            tracing::debug!(source = %remote, "TLS connection closed: too many from this address");
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(source = %remote, "TLS connection closed: too many handshakes at once");
            continue;
        };
        let acceptor = listener.acceptor.clone();
        let verified = listener.verified.clone();
        let endpoint = endpoint.clone();
        let local = local.clone();
        let token = cancel.child_token();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(limit, acceptor.accept(stream)).await;
            drop(permit);
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::info!(source = %remote, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(source = %remote, seconds = limit.as_secs(), "TLS handshake not finished in time");
                    return;
                }
            };
            let client_certified =
                check_clients && stream.get_ref().1.peer_certificates().is_some();
            let remote_sip = SipAddr::new(rsipstack::sip::Transport::Tls, remote.into());
            let connection =
                match TlsConnection::from_server_stream(stream, local, remote_sip, Some(token))
                    .await
                {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(source = %remote, %error, "TLS connection not usable");
                        return;
                    }
                };
            let closed = connection.cancel_token();
            if client_certified {
                verified.insert(remote);
                tracing::info!(source = %remote, "TLS client certificate verified");
            }
            endpoint
                .transport_layer
                .add_connection(SipConnection::Tls(connection));
            // Counted (and, if so, verified) until the stack closes it.
            if let Some(closed) = closed {
                closed.cancelled().await;
            }
            if client_certified {
                verified.lock().remove(&remote);
            }
            drop(counted);
        });
    }
}

/// One open connection of an address, counted until dropped (the host's
/// HTTP server counts its connections with it too).
pub struct OpenConnection {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl OpenConnection {
    /// Counts a new connection of `ip`, unless it has `limit` already.
    pub fn count(
        open: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<OpenConnection> {
        let mut counts = open.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(OpenConnection {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What identifies a version of a file: its modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

async fn watch_certificate(
    certificate: Arc<ReloadingCertificate>,
    files: (PathBuf, PathBuf),
    provider: Arc<CryptoProvider>,
    cancel: CancellationToken,
) {
    let files = Arc::new(files);
    let stamps = |(certificate, key): &(PathBuf, PathBuf)| (stamp(certificate), stamp(key));
    let mut seen = stamps(&files);
    let mut tick = tokio::time::interval(RELOAD_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Two stats and, after a change, two small reads: off the
        // runtime's workers, which carry SIP.
        let (files_now, provider_now) = (files.clone(), provider.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let now = stamps(&files_now);
            let loaded = (now != seen)
                .then(|| load_certified_key(&files_now.0, &files_now.1, &provider_now));
            (now, loaded)
        })
        .await;
        let Ok((now, loaded)) = checked else { continue };
        seen = now;
        match loaded {
            None => {}
            Some(Ok(key)) => {
                *certificate
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(certificate = %files.0.display(), "TLS certificate reloaded");
            }
            // Half-written files (a renewal in progress) land here too: the
            // next change is tried again.
            Some(Err(error)) => {
                tracing::error!(%error, "TLS certificate not reloaded: the one before stays in use")
            }
        }
    }
}

/// A TLS server configuration for another protocol of the host (HTTPS):
/// TLS 1.2 and 1.3, no client certificates, `alpn` offered, the
/// certificate reloaded when its files change (watched until `cancel`, on
/// the current runtime).
pub fn reloading_server_config(
    certificate: &Path,
    key: &Path,
    alpn: &[&[u8]],
    cancel: CancellationToken,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let resolver = Arc::new(ReloadingCertificate {
        current: RwLock::new(Arc::new(load_certified_key(certificate, key, &provider)?)),
    });
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    tokio::spawn(watch_certificate(
        resolver,
        (certificate.to_owned(), key.to_owned()),
        provider,
        cancel,
    ));
    Ok(Arc::new(server))
}

/// A self-signed certificate and its key (PEM), for a test setup: the
/// names are DNS names or IP addresses the certificate is valid for.
/// Phones must be told to accept it (or to trust it as their CA).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("callhost", |n| n.as_str()),
    );
    let key = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(SelfSigned {
        certificate: certificate.pem(),
        key: key.serialize_pem(),
    })
}

/// What [`self_signed`] makes.
pub struct SelfSigned {
    pub certificate: String,
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_of_connections_until_they_close() {
        let open = Arc::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| OpenConnection::count(&open, ip, 3).expect("within the limit"))
            .collect();
        assert!(OpenConnection::count(&open, ip, 3).is_none());
        let other = OpenConnection::count(&open, "192.0.2.8".parse().unwrap(), 3);
        assert!(other.is_some(), "another address has its own share");
        drop(held);
        drop(other);
        assert!(
            open.lock().unwrap().is_empty(),
            "closed connections leave nothing"
        );
        assert!(OpenConnection::count(&open, ip, 3).is_some());
    }

    #[test]
    fn a_self_signed_certificate_loads_with_its_key_and_not_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (
            self_signed(&["localhost".into()]).unwrap(),
            self_signed(&["localhost".into()]).unwrap(),
        );
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let cert = write("cert.pem", &first.certificate);
        let key = write("key.pem", &first.key);
        let other_key = write("other.pem", &second.key);
        let provider = provider();
        load_certified_key(&cert, &key, &provider).unwrap();
        let error = load_certified_key(&cert, &other_key, &provider).unwrap_err();
        assert!(matches!(error, TlsError::Key { .. }), "{error}");
        let error = load_certified_key(&dir.path().join("missing.pem"), &key, &provider)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }
}
