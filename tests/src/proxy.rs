//! A fault-injecting TCP proxy: what a client's connection to one store goes through.
//!
//! The proxy listens on a fixed loopback port (the store's address as PD knows it) and pipes
//! each accepted connection to the store's current gRPC address. Faults, set with
//! [`Proxy::set_fault`] and applied to every connection, old and new:
//! - [`ProxyFault::Delay`]: every chunk waits this long, in both directions;
//! - [`ProxyFault::HoldAnswers`]: nothing flows back to the client until the fault is lifted,
//!   so calls time out on the client although the store may have executed them;
//! - [`ProxyFault::LoseAnswers`]: the first bytes the store sends back on a connection close
//!   it instead: the request was delivered (and usually executed), its answer is lost;
//! - [`Proxy::set_fault_on_some`]: the same, but only on about half of the connections
//!   (chosen by a salt), so that some clients of the store are hit while others observe;
//! - [`Proxy::cut`]: closes every open connection once (requests in flight lose their answer);
//! - [`Proxy::set_down`]: the listening port is closed (connections are refused, as for a
//!   crashed store) and open connections are cut; [`Proxy::set_up`] opens it again, on the same
//!   port, towards a possibly new store address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A fault of the client↔store path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFault {
    None,
    Delay(Duration),
    HoldAnswers,
    LoseAnswers,
}

/// What every connection task watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Control {
    fault: ProxyFault,
    /// `None`: the fault hits every connection; `Some(salt)`: about half of them.
    selector: Option<u64>,
    /// Bumped to cut every open connection.
    generation: u64,
    /// Where connections go; `None`: the proxy is down (its port closed).
    upstream: Option<SocketAddr>,
}

impl Control {
    /// The fault on connection number `conn`.
    fn fault_on(&self, conn: u64) -> ProxyFault {
        match self.selector {
            Some(salt) if (conn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt) >> 63 == 1 => {
                ProxyFault::None
            }
            _ => self.fault,
        }
    }
}

/// A proxy in front of one store, running on a tokio runtime.
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<watch::Sender<Control>>,
}

impl Proxy {
    /// A proxy on a fresh loopback port towards `upstream`, spawned on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle, upstream: SocketAddr) -> Proxy {
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (control, _) = watch::channel(Control {
            fault: ProxyFault::None,
            selector: None,
            generation: 0,
            upstream: Some(upstream),
        });
        let control = Arc::new(control);
        runtime.spawn(accept_loop(listener, addr, Arc::clone(&control)));
        Proxy { addr, control }
    }

    /// The address clients use (registered in PD as the store's address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_fault(&self, fault: ProxyFault) {
        self.control.send_modify(|c| {
            c.fault = fault;
            c.selector = None;
        });
    }

    /// Sets `fault` on about half of the connections, old and new, chosen by `salt`.
    pub fn set_fault_on_some(&self, fault: ProxyFault, salt: u64) {
        self.control.send_modify(|c| {
            c.fault = fault;
            c.selector = Some(salt);
        });
    }

    /// Closes every open connection.
    pub fn cut(&self) {
        self.control.send_modify(|c| c.generation += 1);
    }

    /// Closes the port and every open connection.
    pub fn set_down(&self) {
        self.control.send_modify(|c| {
            c.upstream = None;
            c.generation += 1;
        });
    }

    /// Opens the port again towards `upstream`.
    pub fn set_up(&self, upstream: SocketAddr) {
        self.control.send_modify(|c| c.upstream = Some(upstream));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set_down();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    control: Arc<watch::Sender<Control>>,
) {
    let mut rx = control.subscribe();
    let mut conns = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let c = *rx.borrow();
                if let Some(upstream) = c.upstream {
                    conns += 1;
                    let rx = control.subscribe();
                    tokio::spawn(pipe(client, upstream, conns, c.generation, rx));
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if rx.borrow_and_update().upstream.is_some() {
                    continue;
                }
                // Down: close the port until the proxy is up again.
                drop(listener);
                loop {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    if rx.borrow_and_update().upstream.is_some() {
                        break;
                    }
                }
                listener = match bind_again(addr).await {
                    Some(l) => l,
                    None => return,
                };
            }
        }
    }
}

/// Binds `addr` again (the port may linger for a moment after it was closed).
async fn bind_again(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..200 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::error!(%addr, "proxy cannot bind its port again");
    None
}

/// Pipes one connection until either side closes or the connection is cut.
async fn pipe(
    client: TcpStream,
    upstream: SocketAddr,
    conn: u64,
    generation: u64,
    control: watch::Receiver<Control>,
) {
    let Ok(store) = TcpStream::connect(upstream).await else {
        return; // The store is gone: the client sees its connection closed.
    };
    let _ = client.set_nodelay(true);
    let _ = store.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (store_read, store_write) = store.into_split();
    let cut = {
        let mut control = control.clone();
        async move {
            let _ = control
                .wait_for(|c| c.generation != generation || c.upstream.is_none())
                .await;
        }
    };
    tokio::select! {
        _ = pump(client_read, store_write, control.clone(), conn, false) => {}
        _ = pump(store_read, client_write, control, conn, true) => {}
        _ = cut => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
    conn: u64,
    answers: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if answers {
            // Hold answers back while told to (the bytes wait in the socket buffers).
            if control
                .wait_for(|c| c.fault_on(conn) != ProxyFault::HoldAnswers)
                .await
                .is_err()
            {
                return;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let fault = control.borrow().fault_on(conn);
        match fault {
            ProxyFault::LoseAnswers if answers => return,
            ProxyFault::Delay(d) => tokio::time::sleep(d).await,
            ProxyFault::HoldAnswers if answers => {
                let _ = control
                    .wait_for(|c| c.fault_on(conn) != ProxyFault::HoldAnswers)
                    .await;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
