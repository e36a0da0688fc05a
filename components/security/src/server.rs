//! Accepting connections: one loop per listener, shared by tonic (`serve_with_incoming*`) and
//! axum (`axum::serve`).
//!
//! Every accepted socket gets `TCP_NODELAY`: without it Nagle's algorithm holds a small
//! response back until the client's delayed ACK (~40 ms on Linux). tonic's
//! `Server::tcp_nodelay` applies only to listeners tonic binds itself and axum sets no socket
//! options, so both take their connections from here. With TLS on, each handshake runs in its
//! own task with a deadline, so a slow or hostile peer never stalls the accept loop; a refused
//! handshake is logged, never handed to the server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tracing::{debug, warn};

use crate::{Alpn, SecurityManager};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection, plaintext or TLS.
pub enum ServerConn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ServerConn {
    /// The TCP socket under the connection.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerConn::Plain(s) => s,
            ServerConn::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for ServerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerConn::Plain(s) => s.is_write_vectored(),
            ServerConn::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// The connections accepted on one listener, ready to serve (handshake done).
pub struct Accepted {
    rx: mpsc::Receiver<(ServerConn, SocketAddr)>,
    local: SocketAddr,
}

impl Accepted {
    /// For tonic's `serve_with_incoming*`.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<ServerConn>> {
        ReceiverStream::new(self.rx).map(|(conn, _)| Ok(conn))
    }
}

impl axum::serve::Listener for Accepted {
    type Io = ServerConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ServerConn, SocketAddr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Starts accepting on `listener` (on the current tokio runtime) with `security`'s TLS, if any,
/// offering `alpn`. The loop stops when the returned [`Accepted`] is dropped.
pub fn accept(listener: TcpListener, security: &SecurityManager, alpn: Alpn) -> Accepted {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tx, rx) = mpsc::channel(64);
    let security = security.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                warn!(%e, "cannot set TCP_NODELAY on an accepted connection");
            }
            match security.server_config(alpn) {
                None => {
                    if tx.send((ServerConn::Plain(stream), peer)).await.is_err() {
                        return;
                    }
                }
                Some(config) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => {
                                let _ = tx.send((ServerConn::Tls(Box::new(tls)), peer)).await;
                            }
                            Ok(Err(e)) => {
                                warn!(%peer, %e, "TLS handshake refused");
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    Accepted { rx, local }
}

/// The common names in a DER certificate's subject.
pub fn common_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    cert.subject()
        .iter_common_name()
        .map(|cn| cn.as_str().map(str::to_owned).map_err(|e| e.to_string()))
        .collect()
}

/// A client-certificate verifier that, after the CA check, requires the certificate's common
/// name to be in an allow list (TiKV's `cert-allowed-cn`); an empty list allows any.
#[derive(Debug)]
pub(crate) struct CommonNameVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl CommonNameVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> Self {
        CommonNameVerifier { inner, allowed }
    }
}

impl ClientCertVerifier for CommonNameVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.is_empty() {
            return Ok(verified);
        }
        let names = common_names(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(io::Error::other(e)),
            )))
        })?;
        if names.iter().any(|n| self.allowed.contains(n)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener as _;

    use super::*;

    async fn accepted_with(security: &SecurityManager, alpn: Alpn) -> (Accepted, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (accept(listener, security, alpn), addr)
    }

    #[tokio::test]
    async fn plaintext_connections_are_accepted_with_nodelay() {
        for alpn in [Alpn::Grpc, Alpn::Http1] {
            let (mut accepted, addr) = accepted_with(&SecurityManager::plaintext(), alpn).await;
            let _client = TcpStream::connect(addr).await.expect("connect");
            let (conn, _) = accepted.accept().await;
            assert!(conn.tcp().nodelay().expect("getsockopt"));
        }
    }

    #[tokio::test]
    async fn tls_connections_are_accepted_with_nodelay() {
        let dir = tempfile::tempdir().unwrap();
        let issued =
            crate::certs::issue(dir.path(), "node", "node", &crate::certs::default_hosts())
                .unwrap();
        let security = SecurityManager::new(issued.security_config(&[])).unwrap();
        let (accepted, addr) = accepted_with(&security, Alpn::Grpc).await;
        let client = tokio::spawn({
            let security = security.clone();
            async move {
                let tls =
                    crate::client::connect_tls(&security, "127.0.0.1", addr.port(), Alpn::Grpc)
                        .await
                        .expect("handshake");
                assert!(tls.get_ref().0.nodelay().unwrap(), "the client side too");
                tls
            }
        });
        let mut stream = Box::pin(accepted.into_stream());
        let conn = futures::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(conn, ServerConn::Tls(_)));
        assert!(conn.tcp().nodelay().expect("getsockopt"));
        drop(client.await.unwrap());
    }
}
