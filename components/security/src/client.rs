//! Opening connections: tonic channels and HTTP clients, in plaintext or mutual TLS.
//!
//! With TLS on, a channel connects through [`TlsConnector`]: TCP (with `TCP_NODELAY`), then a
//! TLS handshake that presents this process's certificate and checks that the server's names
//! the host of the URL dialled. URLs keep the `http://` scheme for gRPC (TLS happens below
//! tonic, which then only frames HTTP/2); HTTP URLs take [`SecurityManager::http_scheme`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{Alpn, SecurityManager};

/// A tonic connector that speaks TLS with the current certificates of a [`SecurityManager`].
#[derive(Clone, Debug)]
pub struct TlsConnector {
    security: SecurityManager,
}

impl TlsConnector {
    pub fn new(security: SecurityManager) -> TlsConnector {
        TlsConnector { security }
    }
}

/// Connects to `host:port` over TCP and completes a TLS handshake as `security`'s client.
pub async fn connect_tls(
    security: &SecurityManager,
    host: &str,
    port: u16,
    alpn: Alpn,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = security
        .client_config(alpn)
        .ok_or_else(|| io::Error::other("TLS is not configured"))?;
    // An IPv6 literal comes bracketed from a URI.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let tcp = match security.local_address() {
        None => TcpStream::connect((name, port)).await?,
        Some(local) => {
            let remote = tokio::net::lookup_host((name, port))
                .await?
                .find(|a| a.is_ipv4() == local.is_ipv4())
                .ok_or_else(|| {
                    io::Error::other(format!("{host}: no address of {local}'s family"))
                })?;
            let socket = if local.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(local, 0))?;
            socket.connect(remote).await?
        }
    };
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let security = self.security.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without host"))?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let tls = connect_tls(&security, host, port, Alpn::Grpc).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

impl SecurityManager {
    /// Connects `endpoint` now, through TLS when configured.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        let endpoint = endpoint.local_address(self.local_address());
        if self.is_tls() {
            endpoint
                .connect_with_connector(TlsConnector::new(self.clone()))
                .await
        } else {
            endpoint.connect().await
        }
    }

    /// A channel to `endpoint` that connects on first use, through TLS when configured.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        let endpoint = endpoint.local_address(self.local_address());
        if self.is_tls() {
            endpoint.connect_with_connector_lazy(TlsConnector::new(self.clone()))
        } else {
            endpoint.connect_lazy()
        }
    }

    /// An HTTP client builder for this cluster's HTTP endpoints (PD's API, status servers),
    /// presenting this process's certificate when TLS is on. URLs take
    /// [`SecurityManager::http_scheme`].
    pub fn http_client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder();
        match self.client_config(Alpn::Http1) {
            Some(config) => builder.use_preconfigured_tls((*config).clone()),
            None => builder,
        }
    }

    /// `addr` (host:port) as a URL of this cluster's HTTP endpoints.
    pub fn http_url(&self, addr: &str, path: &str) -> String {
        let addr = addr
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        format!("{}://{addr}{path}", self.http_scheme())
    }
}
