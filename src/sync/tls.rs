//! TLS for relays and their clients: rustls with the `ring` provider
//! (feature `tls`).
//!
//! A relay serves a certificate chain and key read from PEM files
//! ([`ServerTls`]); a client trusts the system's roots or the CA in a PEM
//! file ([`ClientTls`]) and checks that the relay's certificate is valid
//! for the host name it dialled. Every config is built with the `ring`
//! provider explicitly, so nothing depends on a process-wide default
//! provider. Handshake failures are put in words a user can act on (not
//! signed by a trusted CA, wrong name, not TLS at all).

use super::net::TransportError;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use tokio::net::TcpStream;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn setup(e: rustls::Error) -> TransportError {
    TransportError::TlsSetup {
        problem: e.to_string(),
    }
}

/// A relay's TLS identity: its certificate chain and private key.
///
/// Clones share one identity, which [`ServerTls::replace`] swaps (a
/// renewed certificate, on SIGHUP): every listener bound with a clone
/// serves the new one from its next handshake on, and connections already
/// made keep the one they were made with.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain (leaf first) and the private key
    /// (PKCS#8, PKCS#1 or SEC1) from PEM files.
    ///
    /// # Errors
    ///
    /// [`TransportError::Pem`] naming the file that cannot be read or holds
    /// no certificate or key; [`TransportError::TlsSetup`] when the key is
    /// not the certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TransportError> {
        let chain = read_certs(cert, "TLS certificate")?;
        let key_pem = read_file(key, "TLS private key")?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_problem(key, "TLS private key", &e, "PRIVATE KEY"))?;
        Self::from_parts(chain, key_der).map_err(|e| match e {
            TransportError::TlsSetup { problem } => TransportError::TlsSetup {
                problem: format!("{} with {}: {problem}", cert.display(), key.display()),
            },
            other => other,
        })
    }

    /// A certificate chain and key in PEM, from memory.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, TransportError> {
        let here = Path::new("(in memory)");
        let chain = parse_certs(cert_pem, here, "TLS certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| pem_problem(here, "TLS private key", &e, "PRIVATE KEY"))?;
        Self::from_parts(chain, key)
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerTls, TransportError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(setup)?;
        Ok(ServerTls::from_config(Arc::new(config)))
    }

    /// A rustls config of the app's own (client certificates, other
    /// providers).
    pub fn from_config(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls {
            config: Arc::new(RwLock::new(config)),
        }
    }

    /// Serves `with`'s certificate and key from now on, here and in every
    /// clone (the listeners bound with them): handshakes that start after
    /// this call use it. Build `with` first (e.g. [`ServerTls::from_pem_files`]):
    /// a certificate that does not load never replaces a working one.
    pub fn replace(&self, with: &ServerTls) {
        let config = Arc::clone(&with.config.read().unwrap_or_else(PoisonError::into_inner));
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// An acceptor for one handshake, with the identity served now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.config.read().unwrap_or_else(PoisonError::into_inner);
        tokio_rustls::TlsAcceptor::from(Arc::clone(&config))
    }
}

/// What a client trusts: the system's roots or a CA's certificate.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// For errors: "the system's trusted roots", "the CA in ca.pem".
    trusts: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("trusts", &self.trusts)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the operating system's root certificates (loaded once per
    /// process).
    ///
    /// # Errors
    ///
    /// [`TransportError::TlsSetup`] when the system has none that parse.
    pub fn system_roots() -> Result<ClientTls, TransportError> {
        static SYSTEM: OnceLock<Result<ClientTls, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none installed".to_string(), ToString::to_string);
                    return Err(format!(
                        "no trusted root certificates found on this system ({why}); give the relay's CA with --ca FILE"
                    ));
                }
                Self::with_roots(roots, "the system's trusted roots".into())
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|problem| TransportError::TlsSetup { problem })
    }

    /// Trusts the CA certificates in a PEM file (and only those).
    pub fn with_ca_file(path: &Path) -> Result<ClientTls, TransportError> {
        let certs = read_certs(path, "CA certificate")?;
        Self::with_ca_certs(certs, path, format!("the CA in {}", path.display()))
    }

    /// Trusts the CA certificates in PEM text.
    pub fn with_ca_pem(pem: &[u8]) -> Result<ClientTls, TransportError> {
        let here = Path::new("(in memory)");
        let certs = parse_certs(pem, here, "CA certificate")?;
        Self::with_ca_certs(certs, here, "the CA given".into())
    }

    fn with_ca_certs(
        certs: Vec<CertificateDer<'static>>,
        path: &Path,
        trusts: String,
    ) -> Result<ClientTls, TransportError> {
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TransportError::Pem {
                what: "CA certificate",
                path: path.to_owned(),
                problem: format!("certificate {} is not a usable CA: {e}", i + 1),
            })?;
        }
        Self::with_roots(roots, trusts)
    }

    fn with_roots(roots: RootCertStore, trusts: String) -> Result<ClientTls, TransportError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            trusts,
        })
    }

    /// A rustls config of the app's own.
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            trusts: "the app's TLS config".into(),
        }
    }

    /// Runs the client handshake over `tcp`, checking the certificate
    /// against `host`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        url: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| TransportError::Tls {
            url: url.to_string(),
            problem: format!("{host:?} is not a name a certificate can be checked against"),
        })?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| TransportError::Tls {
                url: url.to_string(),
                problem: self.explain(&e, host),
            })
    }

    /// A client-side handshake failure, in words a user can act on.
    fn explain(&self, e: &io::Error, host: &str) -> String {
        let trusts = &self.trusts;
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "the relay's certificate is not signed by a CA this client trusts ({trusts}); \
                     give the CA that signed it with --ca FILE"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the relay's certificate is not valid for the name {host:?}: connect with a name it lists ({cert})"
                ),
                other => format!("the relay's certificate was refused: {other}"),
            },
            Some(
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. },
            ) => "the peer does not answer in TLS (a plain tcp:// or ws:// listener? use that URL)"
                .to_string(),
            Some(other) => other.to_string(),
            None if e.kind() == io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection during the handshake (a plain tcp:// listener does, \
                 on a TLS greeting)"
                    .to_string()
            }
            None => e.to_string(),
        }
    }
}

/// A server-side handshake failure, for the relay's log.
pub(crate) fn explain_accept(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("the client does not speak TLS ({e})")
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the client refused the handshake ({alert:?}: does it trust this relay's CA and name?)")
        }
        _ => e.to_string(),
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| TransportError::Pem {
        what,
        path: path.to_owned(),
        problem: format!("cannot read it: {e}"),
    })
}

fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    parse_certs(&read_file(path, what)?, path, what)
}

fn parse_certs(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(path, what, &e, "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(pem_problem(
            path,
            what,
            &pem::Error::NoItemsFound,
            "CERTIFICATE",
        ));
    }
    Ok(certs)
}

fn pem_problem(path: &Path, what: &'static str, e: &pem::Error, label: &str) -> TransportError {
    let problem = match e {
        pem::Error::NoItemsFound => {
            format!("no {label} in it (expected a PEM block -----BEGIN {label}-----)")
        }
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        other => format!("not valid PEM: {other}"),
    };
    TransportError::Pem {
        what,
        path: path.to_owned(),
        problem,
    }
}
