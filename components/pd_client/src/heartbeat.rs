//! The region heartbeat stream.
//!
//! Region heartbeats go through one long-lived `RegionHeartbeat` stream fed from a bounded queue
//! ([`crate::PdClient::region_heartbeat`]). A background task (the sender) moves heartbeats from
//! the queue into the stream, opening it on first use and re-opening it (after a leader
//! rediscovery) when it breaks. A reader task per stream passes every response PD sends back (a
//! scheduling command, or an error) to the handler installed with
//! [`crate::PdClient::on_region_heartbeat_response`]; without a handler they are logged and
//! dropped.
//!
//! Heartbeats are best-effort: they are periodic and each one carries the full region state, so
//! one lost while the stream is broken is replaced by the next. A heartbeat is retried at most
//! once, on a fresh stream; the queue applies backpressure to callers when PD is unreachable.
//!
//! The sender ends when every `PdClient` clone is dropped (the queue closes); its stream and
//! reader end with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use proto::pdpb::{RegionHeartbeatRequest, RegionHeartbeatResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Connector;
use crate::error::{Error, Result};

/// Receives what PD sends back on the region heartbeat stream.
pub type RegionHeartbeatHandler = Arc<dyn Fn(RegionHeartbeatResponse) + Send + Sync>;

/// The slot holding the installed handler.
pub(crate) type HandlerSlot = Arc<Mutex<Option<RegionHeartbeatHandler>>>;

const RPC: &str = "region_heartbeat";

struct HeartbeatStream {
    requests: mpsc::Sender<RegionHeartbeatRequest>,
    /// Set by the reader when the response side ended.
    broken: Arc<AtomicBool>,
    generation: u64,
}

/// Runs the sender until the queue closes. See the module docs.
pub(crate) async fn run_sender(
    mut queue: mpsc::Receiver<RegionHeartbeatRequest>,
    connector: Arc<Connector>,
    handler: HandlerSlot,
) {
    let mut stream: Option<HeartbeatStream> = None;
    while let Some(mut req) = queue.recv().await {
        req.header = connector.header();
        for attempt in 0..2 {
            if stream
                .as_ref()
                .is_some_and(|s| s.broken.load(Ordering::Acquire))
            {
                stream = None;
            }
            let s = match &mut stream {
                Some(s) => s,
                None => match open_stream(&connector, &handler).await {
                    Ok(s) => stream.insert(s),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot open the region heartbeat stream");
                        let failed = connector.leader().generation;
                        if let Err(e) = connector.reconnect(failed).await {
                            tracing::debug!(error = %e, "PD rediscovery failed");
                        }
                        continue;
                    }
                },
            };
            match s.requests.send(req.clone()).await {
                Ok(()) => break,
                Err(_) => {
                    let failed = s.generation;
                    stream = None;
                    if attempt == 0 {
                        if let Err(e) = connector.reconnect(failed).await {
                            tracing::debug!(error = %e, "PD rediscovery failed");
                        }
                    }
                }
            }
        }
    }
    tracing::debug!("region heartbeat sender stopped");
}

async fn open_stream(connector: &Connector, handler: &HandlerSlot) -> Result<HeartbeatStream> {
    let leader = connector.leader();
    let timeout = connector.config().rpc_timeout;
    let (requests, rx) = mpsc::channel(connector.config().heartbeat_queue.max(1));
    let mut client = leader.client.clone();
    let mut responses =
        tokio::time::timeout(timeout, client.region_heartbeat(ReceiverStream::new(rx)))
            .await
            .map_err(|_| Error::Timeout { rpc: RPC, timeout })?
            .map_err(|status| Error::from_status(RPC, &status))?
            .into_inner();
    let broken = Arc::new(AtomicBool::new(false));
    let reader_broken = Arc::clone(&broken);
    let handler = Arc::clone(handler);
    tokio::spawn(async move {
        loop {
            match responses.message().await {
                Ok(Some(resp)) => {
                    let installed = handler.lock().clone();
                    match installed {
                        Some(handle) => handle(resp),
                        None => tracing::debug!(?resp, "unhandled region heartbeat response"),
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "region heartbeat stream failed");
                    break;
                }
            }
        }
        reader_broken.store(true, Ordering::Release);
    });
    Ok(HeartbeatStream {
        requests,
        broken,
        generation: leader.generation,
    })
}
