//! What a failed attempt tells about whether its request reached the store.
//!
//! A write may be sent again only if the earlier attempt certainly did not take effect;
//! otherwise a resent put could apply after another client's later write (A's put(k, 1)
//! applies, B's put(k, 2) applies, A's resend applies again: readers see 1, 2, 1). A request
//! certainly did not reach the store when:
//! - the store answered a region error (it promises the request was not proposed, or that its
//!   entry was replaced) — decided by the caller from the response, not here;
//! - the connection it was to travel on was never established: the TCP connect was refused,
//!   the address unreachable, or the connect timed out.
//!
//! tonic 0.14 wraps every failure to establish a connection in [`tonic::ConnectError`] and
//! keeps the original error as the status's `source()`, so the classification walks that
//! chain; an `io::Error` of kind `ConnectionRefused` anywhere in it also counts (only a
//! connect can be refused). Everything else may come after the request was written to an
//! established connection: a reset or closed connection, an HTTP/2 error, no answer in time
//! (the client's own timeout carries no source), a status sent by something on the way.
//!
//! Caveat: the classification is conservative. A connection that was established and then
//! broke before the request was written looks like one that broke after; such a write is
//! reported undetermined although it never left the client.

use std::error::Error as StdError;
use std::io;

/// Whether the call that failed with `status` certainly never reached the store.
pub(crate) fn certainly_not_delivered(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = StdError::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    //! The classification against what tonic really returns, with real sockets.

    use std::time::Duration;

    use bytes::Bytes;
    use proto::kvrpcpb::RawPutRequest;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tonic::transport::Endpoint;

    use super::*;
    use crate::rpc::StoreClient;

    /// A marker in the request's value: once the server has read it, the request was delivered.
    const MARKER: &[u8] = b"delivered-marker-5f3a";

    fn client(addr: std::net::SocketAddr) -> StoreClient {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2));
        StoreClient::new(endpoint.connect_lazy())
    }

    async fn put(client: &mut StoreClient) -> tonic::Status {
        let req = RawPutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(MARKER),
            ..Default::default()
        };
        let call = tokio::time::timeout(Duration::from_secs(10), client.raw_put(req));
        match call.await.expect("the call ends") {
            Ok(_) => panic!("the call cannot succeed"),
            Err(status) => status,
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let status = put(&mut client(addr)).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(certainly_not_delivered(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_connection_dropped_after_the_request_may_have_delivered_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A "server" that reads until the request's value arrived, then hangs up.
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(MARKER.len()).any(|w| w == MARKER) {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "the client closed before sending the request");
                seen.extend_from_slice(&buf[..n]);
            }
            drop(socket);
        });
        let status = put(&mut client(addr)).await;
        server.await.expect("the server saw the request");
        assert!(!certainly_not_delivered(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_connection_that_breaks_before_answering_on_a_reused_channel() {
        // The first call connects and is answered (with a broken HTTP/2 stream); the store then
        // goes away with the connection established: a later call may have been written to the
        // dead connection, and is not classified as undelivered unless it had to reconnect.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            drop(listener);
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(socket);
        });
        let mut c = client(addr);
        let first = put(&mut c).await;
        server.await.expect("server");
        assert!(!certainly_not_delivered(&first), "{first:?}");
        // The listener is gone now: the channel reconnects and is refused.
        let second = put(&mut c).await;
        assert!(certainly_not_delivered(&second), "{second:?}");
    }

    #[test]
    fn the_clients_own_timeout_may_have_delivered_it() {
        let status = tonic::Status::deadline_exceeded("no answer within 5s");
        assert!(!certainly_not_delivered(&status));
        let status = tonic::Status::unavailable("connect refused, says a proxy");
        assert!(
            !certainly_not_delivered(&status),
            "the message text is not trusted"
        );
    }
}
