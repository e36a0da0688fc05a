//! Batched timestamp requests over one long-lived Tso stream.
//!
//! Callers of [`crate::PdClient::get_ts`] put a reply channel into an unbounded queue. One
//! background task (the dispatcher) takes everything queued, up to `max_tso_batch`, sends a single
//! `TsoRequest { count: n }`, and splits the answer: PD returns the *last* timestamp `L` of a
//! range of `n` consecutive ones, so the callers receive `L - n + 1 ..= L`, in queue order.
//! While a round trip is in flight, new callers queue up and form the next batch, so the number
//! of round trips adapts to load: one per PD round-trip time at most.
//!
//! Failures: a failed round trip (stream error, timeout, header error) drops the stream; it is
//! re-opened on the next attempt, after a backoff, and after a leader rediscovery when the error
//! calls for one. After `max_retries` failed attempts the whole batch fails with the last error.
//!
//! Leader failover: a "not leader" answer or a broken stream leads to a rediscovery and a new
//! stream on the new leader, within the same retry loop, so callers only see added latency.
//!
//! Invariants:
//! - Timestamps handed to callers are unique and strictly increasing in the order they are
//!   handed out by this client. PD guarantees it across leaders; the dispatcher checks it as
//!   well: a range not above the last timestamp handed out is discarded and asked for again
//!   (and logged as a PD bug).
//! - At most one TsoRequest is in flight, so responses match requests without ids.
//!
//! The dispatcher ends when every `PdClient` clone is dropped (the queue closes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto::pdpb::{TsoRequest, TsoResponse};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Connector;
use crate::error::{Error, Result};

/// Bits of the logical part of a timestamp.
pub const LOGICAL_BITS: u32 = 18;

/// Composes a timestamp from its physical (ms) and logical parts.
pub fn compose_ts(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | logical
}

/// The physical part (Unix ms) of a composed timestamp.
pub fn physical_of(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// One caller waiting for a timestamp.
pub(crate) type TsoWaiter = oneshot::Sender<Result<u64>>;

/// Counters of the TSO path, for tests and metrics.
#[derive(Debug, Default)]
pub(crate) struct TsoCounters {
    pub round_trips: AtomicU64,
    pub timestamps: AtomicU64,
    pub stream_opens: AtomicU64,
}

/// An open Tso stream.
struct TsoStream {
    requests: mpsc::Sender<TsoRequest>,
    responses: tonic::Streaming<TsoResponse>,
    generation: u64,
}

const RPC: &str = "tso";

/// Runs the dispatcher until the queue closes. See the module docs.
pub(crate) async fn run_dispatcher(
    mut queue: mpsc::UnboundedReceiver<TsoWaiter>,
    connector: Arc<Connector>,
    counters: Arc<TsoCounters>,
) {
    let max_batch = connector.config().max_tso_batch.max(1) as usize;
    let mut stream: Option<TsoStream> = None;
    let mut batch = Vec::with_capacity(64);
    // The last timestamp handed out; every new range must start above it.
    let mut floor = 0u64;
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        // Callers that gave up need no timestamp.
        batch.retain(|w| !w.is_closed());
        if batch.is_empty() {
            continue;
        }
        let count = batch.len() as u32;
        match fetch(&connector, &mut stream, count, floor, &counters).await {
            Ok(last) => {
                floor = last;
                counters
                    .timestamps
                    .fetch_add(u64::from(count), Ordering::Relaxed);
                let first_ts = last + 1 - u64::from(count);
                for (i, waiter) in batch.drain(..).enumerate() {
                    let _ = waiter.send(Ok(first_ts + i as u64));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count, "TSO batch failed");
                for waiter in batch.drain(..) {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
    tracing::debug!("TSO dispatcher stopped");
}

/// Gets `count` timestamps, retrying per the module docs; returns the last.
async fn fetch(
    connector: &Connector,
    stream: &mut Option<TsoStream>,
    count: u32,
    floor: u64,
    counters: &TsoCounters,
) -> Result<u64> {
    let config = connector.config();
    let mut attempt = 0;
    loop {
        let generation = match stream {
            Some(s) => s.generation,
            None => connector.leader().generation,
        };
        let err = match round_trip(connector, stream, count, counters).await {
            Ok(last) if last + 1 - u64::from(count) > floor => {
                counters.round_trips.fetch_add(1, Ordering::Relaxed);
                return Ok(last);
            }
            Ok(last) => {
                tracing::error!(
                    last,
                    count,
                    floor,
                    "PD answered timestamps not above ones already handed out; discarded"
                );
                Error::Grpc {
                    rpc: RPC,
                    code: tonic::Code::Unavailable,
                    message: format!("timestamp range ending {last} not above {floor}"),
                }
            }
            Err(e) => e,
        };
        *stream = None;
        if !err.is_retryable() || attempt >= config.max_retries {
            return Err(err);
        }
        attempt += 1;
        tracing::debug!(error = %err, attempt, "TSO round trip failed, retrying");
        tokio::time::sleep(config.backoff(attempt)).await;
        if let Err(e) = connector.reconnect(generation).await {
            tracing::debug!(error = %e, "PD rediscovery failed");
        }
    }
}

async fn round_trip(
    connector: &Connector,
    stream: &mut Option<TsoStream>,
    count: u32,
    counters: &TsoCounters,
) -> Result<u64> {
    let timeout = connector.config().rpc_timeout;
    let s = match stream {
        Some(s) => s,
        None => stream.insert(open_stream(connector, counters).await?),
    };
    let request = TsoRequest {
        header: connector.header(),
        count,
        dc_location: String::new(),
    };
    s.requests.send(request).await.map_err(|_| Error::Grpc {
        rpc: RPC,
        code: tonic::Code::Unavailable,
        message: "Tso stream closed".to_owned(),
    })?;
    let resp = tokio::time::timeout(timeout, s.responses.message())
        .await
        .map_err(|_| Error::Timeout { rpc: RPC, timeout })?
        .map_err(|status| Error::from_status(RPC, &status))?
        .ok_or_else(|| Error::Grpc {
            rpc: RPC,
            code: tonic::Code::Unavailable,
            message: "Tso stream ended".to_owned(),
        })?;
    last_ts_of(connector.cluster_id(), &resp, count)
}

async fn open_stream(connector: &Connector, counters: &TsoCounters) -> Result<TsoStream> {
    let leader = connector.leader();
    let timeout = connector.config().rpc_timeout;
    let (requests, rx) = mpsc::channel(4);
    let mut client = leader.client.clone();
    let responses = tokio::time::timeout(timeout, client.tso(ReceiverStream::new(rx)))
        .await
        .map_err(|_| Error::Timeout { rpc: RPC, timeout })?
        .map_err(|status| Error::from_status(RPC, &status))?
        .into_inner();
    counters.stream_opens.fetch_add(1, Ordering::Relaxed);
    Ok(TsoStream {
        requests,
        responses,
        generation: leader.generation,
    })
}

/// Validates a Tso response to a request for `count` and returns the composed last timestamp.
fn last_ts_of(cluster_id: u64, resp: &TsoResponse, count: u32) -> Result<u64> {
    let invalid = |reason: String| Error::InvalidResponse { rpc: RPC, reason };
    let header = resp
        .header
        .as_ref()
        .ok_or_else(|| invalid("no header".to_owned()))?;
    if let Some(err) = &header.error {
        return Err(Error::from_pb(RPC, err));
    }
    if header.cluster_id != 0 && header.cluster_id != cluster_id {
        return Err(invalid(format!(
            "answer from cluster {}, expected {cluster_id}",
            header.cluster_id
        )));
    }
    if resp.count != count {
        return Err(invalid(format!(
            "asked {count} timestamps, got {}",
            resp.count
        )));
    }
    let ts = resp
        .timestamp
        .as_ref()
        .ok_or_else(|| invalid("no timestamp".to_owned()))?;
    let physical =
        u64::try_from(ts.physical).map_err(|_| invalid(format!("physical {}", ts.physical)))?;
    let logical =
        u64::try_from(ts.logical).map_err(|_| invalid(format!("logical {}", ts.logical)))?;
    if logical >= 1 << LOGICAL_BITS || logical + 1 < u64::from(count) {
        return Err(invalid(format!(
            "logical {logical} cannot end a range of {count}"
        )));
    }
    Ok(compose_ts(physical, logical))
}

#[cfg(test)]
mod tests {
    use proto::pdpb::{ResponseHeader, Timestamp};

    use super::*;

    fn resp(cluster_id: u64, count: u32, physical: i64, logical: i64) -> TsoResponse {
        TsoResponse {
            header: Some(ResponseHeader {
                cluster_id,
                error: None,
            }),
            count,
            timestamp: Some(Timestamp {
                physical,
                logical,
                suffix_bits: 0,
            }),
        }
    }

    #[test]
    fn responses_are_validated() {
        assert_eq!(
            last_ts_of(1, &resp(1, 3, 5, 10), 3).unwrap(),
            (5 << 18) | 10
        );
        assert_eq!(physical_of(compose_ts(5, 10)), 5);
        assert!(last_ts_of(1, &resp(2, 3, 5, 10), 3).is_err());
        assert!(last_ts_of(1, &resp(1, 2, 5, 10), 3).is_err());
        assert!(last_ts_of(1, &resp(1, 3, 5, 1), 3).is_err());
        assert!(last_ts_of(1, &resp(1, 3, -5, 10), 3).is_err());
        assert!(last_ts_of(1, &resp(1, 1, 5, 1 << 18), 1).is_err());
    }
}
