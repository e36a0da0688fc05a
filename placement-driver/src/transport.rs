//! PD-to-PD Raft transport over gRPC (`pdraftpb.PdRaft`).
//!
//! Sending ([`PeerSender`]): the Raft thread hands each outgoing message to the queue of its
//! destination member without blocking. The members and their addresses follow the group's
//! member list: when a membership change (or a snapshot) changes it, the Raft thread hands the
//! new list over ([`RaftSender::set_members`]), a task starts for an added member and the task
//! of a removed one ends. One tokio task per remote member drains that queue into
//! [`RaftBatch`]es (everything queued, up to a limit, per batch) on one long-lived client stream
//! (`PdRaft/Send`). When the connection fails, queued messages are dropped (Raft retransmits)
//! and the task reconnects with backoff.
//!
//! Receiving ([`PdRaftService`]): each incoming batch is checked to be addressed to this member,
//! decoded, and forwarded to the Raft thread's inbox. Streams end when the server shuts down.
//! The same service answers `Members`: the member list as this member knows it, with roles,
//! which a member starting on an empty data directory asks for to join (see
//! [`crate::membership`]).
//!
//! Cluster check: a stream carries the sender's cluster id (as known when the stream opened) in
//! its request metadata ([`CLUSTER_ID_HEADER`]). A receiver that knows another cluster id
//! refuses the stream (`FAILED_PRECONDITION`), so a member started on the data directory of
//! another cluster with the same member names never takes part in this group's elections or
//! log (see [`crate::membership`]). A 0 on either side (not initialized yet) is accepted.
//!
//! Fault injection ([`NetFilter`]): tests can isolate a member; an isolated member drops every
//! message it would send or receive, which partitions it from all others in both directions.
//!
//! The service is served on the same gRPC server (and port) as `pdpb.PD`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use proto::pdraftpb::pd_raft_client::PdRaftClient;
use proto::pdraftpb::pd_raft_server::PdRaft;
use proto::pdraftpb::{Done, MembersRequest, MembersResponse, RaftBatch};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use crate::members::PdMember;
use crate::raft_node::{is_local, NodeStatus, RaftMsg, RaftSender};
use crate::service::Shutdown;

/// Request metadata of a `PdRaft/Send` stream carrying the sender's cluster id (decimal).
pub const CLUSTER_ID_HEADER: &str = "pd-cluster-id";

/// Most messages in one batch.
const MAX_BATCH: usize = 512;

/// Fault injection for tests: see the module docs.
#[derive(Debug, Default)]
pub struct NetFilter {
    isolated: AtomicBool,
}

impl NetFilter {
    /// Cuts (`true`) or restores (`false`) all Raft traffic of this member.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::SeqCst);
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }
}

/// The sending side, owned by the Raft thread.
pub(crate) struct PeerSender {
    /// Queue and URL of each remote member.
    peers: HashMap<u64, (mpsc::UnboundedSender<Message>, String)>,
    filter: Arc<NetFilter>,
    runtime: tokio::runtime::Handle,
    status: Arc<NodeStatus>,
    shutdown: Shutdown,
    security: security::SecurityManager,
}

impl PeerSender {
    /// Starts one sender task per remote member of `members` on `runtime`, sending as the
    /// member of `status`; the tasks end when the returned sender is dropped, their member
    /// leaves the list, or `shutdown` resolves.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        status: Arc<NodeStatus>,
        members: &[PdMember],
        filter: Arc<NetFilter>,
        shutdown: Shutdown,
        security: security::SecurityManager,
    ) -> PeerSender {
        let mut sender = PeerSender {
            peers: HashMap::new(),
            filter,
            runtime: runtime.clone(),
            status,
            shutdown,
            security,
        };
        sender.set_members(members);
        sender
    }
}

impl RaftSender for PeerSender {
    fn set_members(&mut self, members: &[PdMember]) {
        let me = self.status.member_id();
        let wanted: HashMap<u64, &str> = members
            .iter()
            .filter(|m| m.id != me)
            .map(|m| (m.id, m.url.as_str()))
            .collect();
        // Dropping a queue ends its task.
        self.peers
            .retain(|id, (_, url)| wanted.get(id).is_some_and(|u| *u == url.as_str()));
        for (to_id, url) in wanted {
            if self.peers.contains_key(&to_id) {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            self.peers.insert(to_id, (tx, url.to_owned()));
            self.runtime.spawn(run_peer(
                Arc::clone(&self.status),
                to_id,
                url.to_owned(),
                rx,
                self.shutdown.clone(),
                self.security.clone(),
            ));
        }
    }

    fn send(&self, msg: Message) {
        if self.filter.is_isolated() {
            return;
        }
        match self.peers.get(&msg.to) {
            Some((queue, _)) => {
                let _ = queue.send(msg);
            }
            None => tracing::debug!(to = msg.to, "raft message to an unknown member dropped"),
        }
    }
}

async fn run_peer(
    status: Arc<NodeStatus>,
    to_id: u64,
    url: String,
    mut queue: mpsc::UnboundedReceiver<Message>,
    shutdown: Shutdown,
    security: security::SecurityManager,
) {
    let from_id = status.member_id();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::select! {
            _ = &mut stop => return,
            c = connect(&url, &security) => c,
        };
        let mut client = match connected {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(to_id, %url, error = %e, "cannot reach PD member");
                // Whatever queued meanwhile is stale; Raft will resend what matters.
                while queue.try_recv().is_ok() {}
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (batches, rx) = mpsc::channel::<RaftBatch>(64);
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Ok(value) = status.cluster_id().to_string().parse() {
            request.metadata_mut().insert(CLUSTER_ID_HEADER, value);
        }
        let mut call = tokio::spawn(async move { client.send(request).await });
        loop {
            let first = tokio::select! {
                _ = &mut stop => {
                    call.abort();
                    return;
                }
                ended = &mut call => {
                    if let Ok(Err(refused)) = ended {
                        if refused.code() == tonic::Code::FailedPrecondition {
                            tracing::error!(to_id, %url, reason = refused.message(), "PD member refuses our raft messages");
                        }
                    }
                    break;
                }
                m = queue.recv() => match m {
                    Some(m) => m,
                    None => {
                        call.abort();
                        return;
                    }
                },
            };
            let mut batch = RaftBatch {
                from_id,
                to_id,
                messages: Vec::with_capacity(8),
            };
            push(&mut batch, &first);
            while batch.messages.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(m) => push(&mut batch, &m),
                    Err(_) => break,
                }
            }
            if batches.send(batch).await.is_err() {
                break;
            }
        }
        tracing::debug!(to_id, %url, "raft stream to PD member broke; reconnecting");
    }
}

fn push(batch: &mut RaftBatch, msg: &Message) {
    match msg.write_to_bytes() {
        Ok(bytes) => batch.messages.push(bytes.into()),
        Err(e) => tracing::warn!(error = %e, "cannot encode a raft message"),
    }
}

async fn connect(
    url: &str,
    security: &security::SecurityManager,
) -> Result<PdRaftClient<tonic::transport::Channel>, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true);
    let channel = tokio::time::timeout(Duration::from_secs(2), security.connect(endpoint))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(PdRaftClient::new(channel))
}

/// The receiving side: the `pdraftpb.PdRaft` gRPC service.
#[derive(Clone, Debug)]
pub(crate) struct PdRaftService {
    status: Arc<NodeStatus>,
    inbox: std_mpsc::Sender<RaftMsg>,
    filter: Arc<NetFilter>,
    shutdown: Shutdown,
}

impl PdRaftService {
    pub fn new(
        status: Arc<NodeStatus>,
        inbox: std_mpsc::Sender<RaftMsg>,
        filter: Arc<NetFilter>,
        shutdown: Shutdown,
    ) -> PdRaftService {
        PdRaftService {
            status,
            inbox,
            filter,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl PdRaft for PdRaftService {
    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.status.cluster_id(),
            list: Some(self.status.member_list()),
            leader_id: self.status.leadership().leader_id,
        }))
    }

    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<Done>, Status> {
        let member_id = self.status.member_id();
        let theirs = request
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let ours = self.status.cluster_id();
        if theirs != 0 && ours != 0 && theirs != ours {
            tracing::error!(
                ours,
                theirs,
                "refused the raft messages of a PD member of another cluster"
            );
            return Err(Status::failed_precondition(format!(
                "PD member {member_id} belongs to cluster {ours}, not to cluster {theirs}"
            )));
        }
        let mut stream = request.into_inner();
        let stop = self.shutdown.clone().wait();
        tokio::pin!(stop);
        loop {
            let batch = tokio::select! {
                _ = &mut stop => return Err(Status::unavailable("PD is shutting down")),
                b = stream.message() => b?,
            };
            let Some(batch) = batch else {
                return Ok(Response::new(Done {}));
            };
            if batch.to_id != member_id {
                return Err(Status::invalid_argument(format!(
                    "batch for member {} sent to member {member_id}",
                    batch.to_id
                )));
            }
            if self.filter.is_isolated() {
                continue;
            }
            for bytes in &batch.messages {
                let msg = match Message::parse_from_bytes(bytes) {
                    Ok(msg) => msg,
                    Err(e) => {
                        return Err(Status::invalid_argument(format!(
                            "undecodable raft message: {e}"
                        )))
                    }
                };
                if is_local(msg.get_msg_type()) || msg.from != batch.from_id {
                    continue;
                }
                if self.inbox.send(RaftMsg::Step(Box::new(msg))).is_err() {
                    return Err(Status::unavailable("PD raft node stopped"));
                }
            }
        }
    }
}
