//! Finding and keeping a connection to the PD leader.
//!
//! Discovery: try the known endpoints in order (the configured ones, then the member URLs learned
//! from PD: at each discovery and, every `member_refresh_interval`, from the leader, so that the
//! client follows PD's membership changes — a member removed since is dropped, unless
//! configured); ask each for `GetMembers`; connect to the leader's first client URL (reusing the
//! channel when the leader is the endpoint itself). The cluster id learned by the first discovery
//! is fixed for the client's life: a PD answering with another cluster id is refused.
//!
//! A member that does not name a leader, or does not know the cluster id yet (a PD group still
//! electing its first leader), is skipped like an unreachable one. [`Connector::connect`] retries
//! the whole discovery with backoff (`max_retries` times), so a client started together with a
//! PD group waits for its first election.
//!
//! Reconnection is keyed by generation: a caller that saw generation `g` fail calls
//! `Connector::reconnect(g)`; if another caller already replaced `g`, the newer connection is
//! returned without a new discovery, so a burst of failures triggers one rediscovery.
//!
//! Invariants:
//! - `Connector::leader` always returns a connection (possibly broken): callers never wait for
//!   one to exist, they fail, back off and reconnect.
//! - Generations only grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use proto::pdpb::pd_client::PdClient as PdGrpc;
use proto::pdpb::{GetMembersRequest, Member, RequestHeader};
use tonic::transport::{Channel, Endpoint};

use crate::config::PdClientConfig;
use crate::error::{Error, Result};

/// The generated gRPC client over a channel to one PD node.
pub(crate) type Grpc = PdGrpc<Channel>;

/// A connection to the node believed to be the leader.
#[derive(Clone, Debug)]
pub(crate) struct Leader {
    pub client: Grpc,
    pub url: String,
    pub generation: u64,
}

/// The leader connection, its discovery and its replacement; see the module docs.
#[derive(Debug)]
pub(crate) struct Connector {
    cluster_id: u64,
    config: PdClientConfig,
    /// The endpoints the client was given (normalized).
    configured: Vec<String>,
    endpoints: Mutex<Vec<String>>,
    current: RwLock<Arc<Leader>>,
    reconnect_lock: tokio::sync::Mutex<()>,
    reconnects: AtomicU64,
}

/// Adds `http://` to a bare `host:port`.
pub(crate) fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

impl Connector {
    /// The TLS settings connections are made with.
    pub(crate) fn security(&self) -> &security::SecurityManager {
        &self.config.security
    }

    /// Discovers the leader through `endpoints`.
    pub async fn connect(endpoints: Vec<String>, config: PdClientConfig) -> Result<Connector> {
        let mut endpoints: Vec<String> = endpoints.iter().map(|u| normalize_url(u)).collect();
        endpoints.dedup();
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let mut attempt = 0;
        let found = loop {
            match discover(&endpoints, None, &config).await {
                Ok(found) => break found,
                Err(e) if e.is_retryable() && attempt < config.max_retries => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "PD discovery failed, retrying");
                    tokio::time::sleep(config.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let configured = endpoints.clone();
        merge_urls(&mut endpoints, &found.members);
        tracing::info!(
            cluster_id = found.cluster_id,
            leader = %found.url,
            "connected to PD"
        );
        Ok(Connector {
            cluster_id: found.cluster_id,
            config,
            configured,
            endpoints: Mutex::new(endpoints),
            current: RwLock::new(Arc::new(Leader {
                client: found.client,
                url: found.url,
                generation: 0,
            })),
            reconnect_lock: tokio::sync::Mutex::new(()),
            reconnects: AtomicU64::new(0),
        })
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn config(&self) -> &PdClientConfig {
        &self.config
    }

    pub fn header(&self) -> Option<RequestHeader> {
        Some(RequestHeader {
            cluster_id: self.cluster_id,
            sender_id: 0,
        })
    }

    /// The current leader connection.
    pub fn leader(&self) -> Arc<Leader> {
        Arc::clone(&self.current.read())
    }

    /// PD's members are now `members`: discovery tries the configured endpoints, then theirs.
    pub fn update_members(&self, members: &[Member]) {
        let mut endpoints = self.configured.clone();
        merge_urls(&mut endpoints, members);
        *self.endpoints.lock() = endpoints;
    }

    /// Learns PD's current members: from the connected leader if it still leads (it answers
    /// `GetMembers` naming itself), else by a discovery over the known endpoints (which skips
    /// members that name no leader, such as a removed one). Failures are left to the next
    /// refresh.
    pub async fn refresh_members(&self) {
        let leader = self.leader();
        let request = GetMembersRequest {
            header: self.header(),
        };
        let asked = tokio::time::timeout(
            self.config.rpc_timeout,
            leader.client.clone().get_members(request),
        )
        .await;
        if let Ok(Ok(resp)) = asked {
            let resp = resp.into_inner();
            let leads = resp
                .leader
                .as_ref()
                .is_some_and(|l| l.client_urls.iter().any(|u| normalize_url(u) == leader.url));
            if leads && !resp.members.is_empty() {
                self.update_members(&resp.members);
                return;
            }
        }
        let endpoints = self.endpoints();
        if let Ok(found) = discover(&endpoints, Some(self.cluster_id), &self.config).await {
            self.update_members(&found.members);
        }
    }

    /// The endpoints discovery tries, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.lock().clone()
    }

    /// How many times the leader connection was replaced.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Replaces the connection of generation `failed` by a freshly discovered one (unless that
    /// already happened). See the module docs.
    pub async fn reconnect(&self, failed: u64) -> Result<Arc<Leader>> {
        let _serial = self.reconnect_lock.lock().await;
        let current = self.leader();
        if current.generation != failed {
            return Ok(current);
        }
        let endpoints = self.endpoints.lock().clone();
        let found = discover(&endpoints, Some(self.cluster_id), &self.config).await?;
        self.update_members(&found.members);
        let leader = Arc::new(Leader {
            client: found.client,
            url: found.url,
            generation: failed + 1,
        });
        *self.current.write() = Arc::clone(&leader);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(leader = %leader.url, generation = leader.generation, "reconnected to PD");
        Ok(leader)
    }
}

fn merge_urls(endpoints: &mut Vec<String>, members: &[Member]) {
    for url in members.iter().flat_map(|m| &m.client_urls) {
        let url = normalize_url(url);
        if !endpoints.contains(&url) {
            endpoints.push(url);
        }
    }
}

struct Discovered {
    cluster_id: u64,
    client: Grpc,
    url: String,
    members: Vec<Member>,
}

async fn discover(
    endpoints: &[String],
    expected_cluster_id: Option<u64>,
    config: &PdClientConfig,
) -> Result<Discovered> {
    let mut last_error = None;
    for url in endpoints {
        match discover_via(url, expected_cluster_id, config).await {
            Ok(found) => return Ok(found),
            Err(e @ Error::ClusterIdMismatch { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(%url, error = %e, "PD endpoint unusable");
                last_error = Some(e);
            }
        }
    }
    Err(Error::NoLeader {
        endpoints: endpoints.to_vec(),
        last_error: last_error.map_or_else(|| "none".to_owned(), |e| e.to_string()),
    })
}

async fn discover_via(
    url: &str,
    expected_cluster_id: Option<u64>,
    config: &PdClientConfig,
) -> Result<Discovered> {
    const RPC: &str = "get_members";
    let channel = open_channel(url, config).await?;
    let mut client = PdGrpc::new(channel);
    let request = GetMembersRequest {
        header: Some(RequestHeader {
            cluster_id: expected_cluster_id.unwrap_or(0),
            sender_id: 0,
        }),
    };
    let resp = tokio::time::timeout(config.rpc_timeout, client.get_members(request))
        .await
        .map_err(|_| Error::Timeout {
            rpc: RPC,
            timeout: config.rpc_timeout,
        })?
        .map_err(|status| Error::from_status(RPC, &status))?
        .into_inner();
    let header = resp.header.as_ref().ok_or_else(|| Error::InvalidResponse {
        rpc: RPC,
        reason: "no header".to_owned(),
    })?;
    if let Some(err) = &header.error {
        return Err(Error::from_pb(RPC, err));
    }
    let cluster_id = header.cluster_id;
    if cluster_id == 0 {
        return Err(Error::NoLeader {
            endpoints: vec![url.to_owned()],
            last_error: "PD does not know the cluster id yet (no leader elected)".to_owned(),
        });
    }
    if let Some(expected) = expected_cluster_id {
        if expected != cluster_id {
            return Err(Error::ClusterIdMismatch {
                url: url.to_owned(),
                expected,
                got: cluster_id,
            });
        }
    }
    let leader = resp.leader.as_ref().ok_or_else(|| Error::NoLeader {
        endpoints: vec![url.to_owned()],
        last_error: "GetMembers names no leader".to_owned(),
    })?;
    let leader_urls: Vec<String> = leader
        .client_urls
        .iter()
        .map(|u| normalize_url(u))
        .collect();
    if leader_urls.is_empty() || leader_urls.iter().any(|u| u == url) {
        return Ok(Discovered {
            cluster_id,
            client,
            url: url.to_owned(),
            members: resp.members,
        });
    }
    let mut last_error = None;
    for leader_url in &leader_urls {
        match open_channel(leader_url, config).await {
            Ok(channel) => {
                return Ok(Discovered {
                    cluster_id,
                    client: PdGrpc::new(channel),
                    url: leader_url.clone(),
                    members: resp.members,
                })
            }
            Err(e) => last_error = Some(e),
        }
    }
    // A single-member PD may advertise an address we cannot reach (e.g. behind NAT) while the
    // endpoint we used works: it is the leader either way.
    if resp.members.len() == 1 {
        return Ok(Discovered {
            cluster_id,
            client,
            url: url.to_owned(),
            members: resp.members,
        });
    }
    Err(last_error.unwrap_or_else(|| Error::NoLeader {
        endpoints: leader_urls,
        last_error: "unreachable leader".to_owned(),
    }))
}

async fn open_channel(url: &str, config: &PdClientConfig) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::InvalidEndpoint {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true);
    tokio::time::timeout(config.connect_timeout, config.security.connect(endpoint))
        .await
        .map_err(|_| Error::Connect {
            url: url.to_owned(),
            reason: format!("timed out after {:?}", config.connect_timeout),
        })?
        .map_err(|e| Error::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(
            normalize_url("http://127.0.0.1:2379/"),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_url("https://pd:2379"), "https://pd:2379");
    }
}
