//! The system under load: rangekv through its client library, or an etcd cluster through
//! etcd's v3 KV API (gRPC), so that one command measures both side by side with the same
//! workload, the same key choices and the same runtime.
//!
//! Both sides get what their clients give by default: rangekv's reads are linearizable
//! (lease or ReadIndex at the region's leader), and so are etcd's (`serializable` unset);
//! writes return once committed by a majority that has synced them. The etcd side spreads
//! requests round-robin over its endpoints, as etcd's own client does; followers forward
//! writes to the leader.

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

use super::workload::KEYS_END;

/// A cluster to benchmark.
#[derive(Clone)]
pub enum Target {
    Rangekv(client::RawClient),
    Etcd(KvClient<Channel>),
}

impl Target {
    /// A client of an etcd cluster at `endpoints` (`host:port`, plaintext).
    pub fn etcd(endpoints: &[String]) -> Result<Target> {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let url = if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                };
                Ok(Endpoint::from_shared(url)
                    .with_context(|| format!("etcd endpoint {e:?}"))?
                    .tcp_nodelay(true))
            })
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(anyhow!("no etcd endpoints"));
        }
        Ok(Target::Etcd(KvClient::new(Channel::balance_list(
            endpoints.into_iter(),
        ))))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Rangekv(_) => "rangekv",
            Target::Etcd(_) => "etcd",
        }
    }

    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Bytes>> {
        match self {
            Target::Rangekv(c) => Ok(c.get(key).await?),
            Target::Etcd(c) => {
                let resp = c
                    .clone()
                    .range(RangeRequest {
                        key: key.into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
            }
        }
    }

    pub async fn put(&self, key: Vec<u8>, value: Bytes) -> Result<()> {
        match self {
            Target::Rangekv(c) => Ok(c.put(key, value).await?),
            Target::Etcd(c) => {
                c.clone()
                    .put(PutRequest {
                        key: key.into(),
                        value,
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        }
    }

    /// Up to `limit` records from `start` on; the number read.
    pub async fn scan(&self, start: Vec<u8>, limit: u32) -> Result<usize> {
        match self {
            Target::Rangekv(c) => Ok(c.scan(start, KEYS_END.to_vec(), limit).await?.len()),
            Target::Etcd(c) => {
                let resp = c
                    .clone()
                    .range(RangeRequest {
                        key: start.into(),
                        range_end: Bytes::from_static(KEYS_END),
                        limit: limit as i64,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(resp.kvs.len())
            }
        }
    }

    /// Writes a batch of records for the load phase: one batched request on rangekv (split
    /// by region by the client), concurrent puts on etcd.
    pub async fn load(&self, pairs: Vec<(Vec<u8>, Bytes)>) -> Result<()> {
        match self {
            Target::Rangekv(c) => Ok(c.batch_put(pairs).await?),
            Target::Etcd(_) => {
                let puts = pairs.into_iter().map(|(k, v)| self.put(k, v));
                futures::future::try_join_all(puts).await?;
                Ok(())
            }
        }
    }
}
