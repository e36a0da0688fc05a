//! Accepting connections on the listeners this store owns (gRPC and HTTP status).
//!
//! Every accepted socket gets `TCP_NODELAY`. Without it Nagle's algorithm holds a small response
//! back until the client's delayed ACK arrives (~40 ms on Linux), which caps a closed-loop
//! client at a few dozen requests per second per connection under mixed loads. tonic's
//! `Server::tcp_nodelay` applies only to listeners tonic binds itself, not to the streams given
//! to `serve_with_incoming*`, and axum sets no socket options: so both go through here.
//!
//! Deliberately absent: TLS (later), connection limits.

use std::io;

use axum::serve::{ListenerExt as _, TapIo};
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::warn;

/// Sets `TCP_NODELAY` on an accepted socket; a failure is logged, the connection kept.
fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!(%e, "cannot set TCP_NODELAY on an accepted connection");
    }
}

/// The accepted connections of `listener`, each with `TCP_NODELAY` set, for tonic's
/// `serve_with_incoming*`.
pub fn nodelay_incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            set_nodelay(stream);
        }
        accepted
    })
}

/// `listener` for `axum::serve`, each accepted connection with `TCP_NODELAY` set.
pub fn nodelay_listener(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    let tap: fn(&mut TcpStream) = |stream| set_nodelay(stream);
    listener.tap_io(tap)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    #[tokio::test]
    async fn grpc_connections_are_accepted_with_nodelay() {
        let (listener, addr) = bound().await;
        let mut incoming = Box::pin(nodelay_incoming(listener));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("getsockopt"));
    }

    #[tokio::test]
    async fn status_connections_are_accepted_with_nodelay() {
        use axum::serve::Listener as _;
        let (listener, addr) = bound().await;
        // The plain listener would accept sockets with Nagle's algorithm on.
        let mut listener = nodelay_listener(listener);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().expect("getsockopt"));
    }
}
