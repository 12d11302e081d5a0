//! TLS for the gateway: its own API served over TLS from a certificate and key it is
//! given, and a certificate authority made for each cluster, whose certificate the
//! cluster's scheduler and workers serve and trust, and which only the cluster's owner
//! is handed (with the cluster token).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// A cluster's certificate files: its authority, and the certificate (with its key)
/// that its scheduler and workers serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    /// The authority's certificate (PEM).
    pub ca: PathBuf,
    /// The cluster's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl ClusterTls {
    /// The files under a cluster's directory `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        let tls = dir.join("tls");
        Self {
            ca: tls.join("ca.pem"),
            cert: tls.join("cert.pem"),
            key: tls.join("key.pem"),
        }
    }

    /// Whether the files were made.
    pub fn exists(&self) -> bool {
        self.ca.exists() && self.cert.exists() && self.key.exists()
    }

    /// Makes a new authority for cluster `name` and a certificate it signs for `hosts`
    /// (names, `*.` wildcards or IP addresses), written under `dir`.
    pub fn generate(dir: &Path, name: &str, hosts: &[String]) -> Result<Self, String> {
        let made = Certificates::new(name, hosts)?;
        let files = Self::in_dir(dir);
        let parent = files.ca.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        write_private(&files.key, &made.key)?;
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        write(&files.cert, &made.cert)?;
        write(&files.ca, &made.ca)?;
        Ok(files)
    }

    /// The authority's certificate, as the owner is handed it.
    pub fn ca_pem(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.ca)
            .map_err(|e| format!("cannot read {}: {e}", self.ca.display()))
    }
}

/// A cluster's authority and the certificate it signed, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificates {
    /// The authority's certificate.
    pub ca: String,
    /// The cluster's certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl Certificates {
    /// A new authority for cluster `name`, and a certificate it signs for `hosts` and
    /// the loopback names (the scheduler's own dashboard connects to it there). The
    /// certificate file holds the chain: the certificate, then the authority's.
    pub fn new(name: &str, hosts: &[String]) -> Result<Self, String> {
        let mut hosts = hosts.to_vec();
        for own in ["localhost", "127.0.0.1"] {
            if !hosts.iter().any(|h| h == own) {
                hosts.push(own.to_string());
            }
        }
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let fail = |e: rcgen::Error| format!("cannot make cluster {name}'s certificates: {e}");
        let ca_key = KeyPair::generate().map_err(fail)?;
        let mut ca = CertificateParams::new(Vec::new()).map_err(fail)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("shoal cluster {name} authority"),
        );
        let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(fail)?;
        let mut leaf = CertificateParams::new(hosts).map_err(fail)?;
        leaf.distinguished_name
            .push(DnType::CommonName, format!("shoal cluster {name}"));
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = leaf.signed_by(&key, &issuer).map_err(fail)?;
        Ok(Self {
            ca: ca_cert.pem(),
            cert: format!("{}{}", cert.pem(), ca_cert.pem()),
            key: key.serialize_pem(),
        })
    }
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The TLS server configuration of certificate chain `cert` and key `key` (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    for path in [cert, key] {
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not a PEM certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Arc::new(config))
}

/// A TCP listener whose connections are accepted over TLS. Handshakes run side by side
/// (a client that connects and sends nothing holds up no one); one not finished within
/// ten seconds, or failed, is dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves `config` on `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, address)) => {
                        let handshake = self.acceptor.accept(tcp);
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                                Ok(Ok(tls)) => Some((tls, address)),
                                Ok(Err(e)) => {
                                    tracing::debug!("TLS handshake with {address}: {e}");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake with {address} timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
