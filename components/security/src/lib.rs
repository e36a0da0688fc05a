//! Mutual TLS for every connection the project makes or accepts.
//!
//! One [`SecurityConfig`] (the `[security]` section of the store's and PD's configuration, as in
//! TiKV: `ca-path`, `cert-path`, `key-path`, `cert-allowed-cn`) turns TLS on for all of them:
//! client to PD, client to store, store to store, store to PD, PD to PD, and the HTTP status
//! endpoints. With it on, both ends present a certificate signed by the cluster's CA; a server
//! refuses, during the handshake, a peer without one and (when `cert-allowed-cn` is set) a peer
//! whose certificate's common name is not listed. A client checks that the server's
//! certificate names the host it dialled (a DNS name or an IP address in its SANs).
//!
//! A [`SecurityManager`] reads the three files again for every new connection and builds new
//! TLS configurations when their contents changed, so certificates are rotated by replacing the
//! files, without a restart (as TiKV does); connections already open keep the certificate they
//! were made with. A replacement that does not load (half-written, mismatched key) is logged and
//! the previous certificates stay in use.
//!
//! Being the one place every outgoing connection is made, the manager also carries the local
//! address connections are made from ([`SecurityManager::with_local_address`]): a node that
//! listens on a specific address connects from it, so the network tells nodes apart.
//!
//! - [`server`]: the accept loop shared by the gRPC and HTTP listeners (`TCP_NODELAY` on every
//!   accepted socket, handshakes off the accept loop with a deadline).
//! - [`client`]: a connector for tonic channels and a builder for HTTP clients.
//! - [`certs`]: a development CA and certificates (`rangekv cert`).
//!
//! Deliberately absent: certificate revocation lists, encryption at rest, and authorization
//! beyond the common-name allow list.

pub mod certs;
pub mod client;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use client::TlsConnector;
pub use server::{accept, Accepted, ServerConn};

/// The `[security]` section. All three paths empty: plaintext; all three set: mutual TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecurityConfig {
    /// PEM file of the cluster's CA certificate(s): peers must present a certificate it signed.
    #[serde(alias = "ca_path")]
    pub ca_path: PathBuf,
    /// PEM file of this process's certificate chain.
    #[serde(alias = "cert_path")]
    pub cert_path: PathBuf,
    /// PEM file of this process's private key.
    #[serde(alias = "key_path")]
    pub key_path: PathBuf,
    /// Common names a connecting peer's certificate may carry; empty: any the CA signed.
    #[serde(alias = "cert_allowed_cn")]
    pub cert_allowed_cn: Vec<String>,
}

impl SecurityConfig {
    /// Whether TLS is configured (any path set; [`SecurityConfig::validate`] requires all).
    pub fn enabled(&self) -> bool {
        !(self.ca_path.as_os_str().is_empty()
            && self.cert_path.as_os_str().is_empty()
            && self.key_path.as_os_str().is_empty())
    }

    /// Every problem of the section: paths set only in part, files that do not load.
    pub fn problems(&self) -> Vec<String> {
        if !self.enabled() {
            if self.cert_allowed_cn.is_empty() {
                return Vec::new();
            }
            return vec!["security.cert-allowed-cn needs ca-path, cert-path and key-path".into()];
        }
        let mut out = Vec::new();
        for (name, path) in [
            ("ca-path", &self.ca_path),
            ("cert-path", &self.cert_path),
            ("key-path", &self.key_path),
        ] {
            if path.as_os_str().is_empty() {
                out.push(format!("security.{name} must be set when TLS is on"));
            }
        }
        if out.is_empty() {
            if let Err(e) = Loaded::load(self) {
                out.push(e.to_string());
            }
        }
        out
    }

    /// The first problem of the section, if any.
    pub fn validate(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some(p) => Err(p),
            None => Ok(()),
        }
    }
}

/// Why certificates could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("security: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("security: {path}: {what}")]
    Parse { path: PathBuf, what: String },
    #[error("security: {0}")]
    Tls(#[from] rustls::Error),
    #[error("security: client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// ALPN protocols a listener offers: gRPC listeners speak HTTP/2 (PD's also HTTP/1.1 on the
/// same port), status listeners HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 and HTTP/1.1.
    Grpc,
    /// HTTP/1.1 only.
    Http1,
}

/// The TLS configurations made from one version of the three files.
struct Loaded {
    /// The files' contents these were made from (ca, cert, key).
    files: [Vec<u8>; 3],
    server_grpc: Arc<ServerConfig>,
    server_http1: Arc<ServerConfig>,
    client_grpc: Arc<ClientConfig>,
    client_http1: Arc<ClientConfig>,
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        path: path.to_owned(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Loaded {
    fn load(cfg: &SecurityConfig) -> Result<Loaded, SecurityError> {
        let files = [
            read(&cfg.ca_path)?,
            read(&cfg.cert_path)?,
            read(&cfg.key_path)?,
        ];
        Loaded::build(cfg, files)
    }

    fn build(cfg: &SecurityConfig, files: [Vec<u8>; 3]) -> Result<Loaded, SecurityError> {
        let parse_err = |path: &Path, what: String| SecurityError::Parse {
            path: path.to_owned(),
            what,
        };
        let certs_of = |path: &Path, pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, _> {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| parse_err(path, e.to_string()))?;
            if certs.is_empty() {
                return Err(parse_err(path, "no certificate in the file".into()));
            }
            Ok(certs)
        };
        let cas = certs_of(&cfg.ca_path, &files[0])?;
        let chain = certs_of(&cfg.cert_path, &files[1])?;
        let key = PrivateKeyDer::from_pem_slice(&files[2])
            .map_err(|e| parse_err(&cfg.key_path, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| parse_err(&cfg.ca_path, e.to_string()))?;
        }
        let roots = Arc::new(roots);

        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let verifier = Arc::new(server::CommonNameVerifier::new(
            verifier,
            cfg.cert_allowed_cn.clone(),
        ));
        let server = |alpn: Alpn| -> Result<Arc<ServerConfig>, SecurityError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain.clone(), key.clone_key())?;
            c.alpn_protocols = match alpn {
                Alpn::Grpc => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                Alpn::Http1 => vec![b"http/1.1".to_vec()],
            };
            Ok(Arc::new(c))
        };
        let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, SecurityError> {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())?;
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(Loaded {
            server_grpc: server(Alpn::Grpc)?,
            server_http1: server(Alpn::Http1)?,
            client_grpc: client(b"h2")?,
            client_http1: client(b"http/1.1")?,
            files,
        })
    }
}

/// The security settings of one process: plaintext, or mutual TLS with certificates reloaded
/// when their files change. Cheap to clone (shared).
#[derive(Clone)]
pub struct SecurityManager {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SecurityConfig,
    loaded: Mutex<Option<Arc<Loaded>>>,
    /// The address outgoing connections are made from (see
    /// [`SecurityManager::with_local_address`]).
    local: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for SecurityManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityManager")
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl Default for SecurityManager {
    fn default() -> Self {
        SecurityManager::plaintext()
    }
}

impl SecurityManager {
    /// No TLS: every connection in plaintext.
    pub fn plaintext() -> SecurityManager {
        SecurityManager {
            inner: Arc::new(Inner {
                cfg: SecurityConfig::default(),
                loaded: Mutex::new(None),
                local: None,
            }),
        }
    }

    /// TLS as `cfg` says; the files are loaded now, so a bad path or certificate is an error at
    /// start, not at the first connection.
    pub fn new(cfg: SecurityConfig) -> Result<SecurityManager, SecurityError> {
        if !cfg.enabled() {
            return Ok(SecurityManager::plaintext());
        }
        let loaded = Loaded::load(&cfg)?;
        info!(ca = %cfg.ca_path.display(), cert = %cfg.cert_path.display(),
              allowed_cn = ?cfg.cert_allowed_cn, "mutual TLS on");
        Ok(SecurityManager {
            inner: Arc::new(Inner {
                cfg,
                loaded: Mutex::new(Some(Arc::new(loaded))),
                local: None,
            }),
        })
    }

    /// Makes every outgoing connection from `ip` (a node that listens on a specific address
    /// connects from it too, so that the network sees one address per node: firewall rules,
    /// and `rangekv verify`'s partitions, tell nodes apart by it). `None`: the system chooses.
    pub fn with_local_address(self, ip: Option<std::net::IpAddr>) -> SecurityManager {
        let inner = &self.inner;
        SecurityManager {
            inner: Arc::new(Inner {
                cfg: inner.cfg.clone(),
                loaded: Mutex::new(inner.loaded.lock().clone()),
                local: ip,
            }),
        }
    }

    /// The address outgoing connections are made from, if one was set.
    pub fn local_address(&self) -> Option<std::net::IpAddr> {
        self.inner.local
    }

    pub fn is_tls(&self) -> bool {
        self.inner.cfg.enabled()
    }

    pub fn config(&self) -> &SecurityConfig {
        &self.inner.cfg
    }

    /// `http` or `https`, for URLs of this cluster's HTTP endpoints.
    pub fn http_scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The current TLS configurations, rebuilt if the files changed since they were last made;
    /// `None` in plaintext.
    fn current(&self) -> Option<Arc<Loaded>> {
        if !self.is_tls() {
            return None;
        }
        let cfg = &self.inner.cfg;
        let previous = self.inner.loaded.lock().clone();
        let files = (|| -> Result<[Vec<u8>; 3], SecurityError> {
            Ok([
                read(&cfg.ca_path)?,
                read(&cfg.cert_path)?,
                read(&cfg.key_path)?,
            ])
        })();
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                warn!(%e, "cannot read the certificates again; keeping the loaded ones");
                return previous;
            }
        };
        if let Some(p) = &previous {
            if p.files == files {
                return previous;
            }
        }
        match Loaded::build(cfg, files) {
            Ok(loaded) => {
                info!("certificate files changed: loaded them for new connections");
                let loaded = Arc::new(loaded);
                *self.inner.loaded.lock() = Some(loaded.clone());
                Some(loaded)
            }
            Err(e) => {
                warn!(%e, "changed certificate files do not load; keeping the previous ones");
                previous
            }
        }
    }

    fn server_config(&self, alpn: Alpn) -> Option<Arc<ServerConfig>> {
        self.current().map(|l| match alpn {
            Alpn::Grpc => l.server_grpc.clone(),
            Alpn::Http1 => l.server_http1.clone(),
        })
    }

    fn client_config(&self, alpn: Alpn) -> Option<Arc<ClientConfig>> {
        self.current().map(|l| match alpn {
            Alpn::Grpc => l.client_grpc.clone(),
            Alpn::Http1 => l.client_http1.clone(),
        })
    }
}
