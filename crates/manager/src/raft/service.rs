//! The receiving side of the Raft network: the `stackd.v1.Raft` gRPC
//! service, plus the follower → leader calls `Forward` and `ReadIndex`.
//!
//! This is a plain tonic service; the manager adds it to the router it
//! serves on its one address (`Manager::routes`), so whatever transport
//! that router runs on (TLS later) carries Raft too.

use std::io::Cursor;
use std::time::Duration;

use openraft::error::Fatal;
use openraft::raft::SnapshotResponse;
use openraft::storage::Snapshot;
use serde::Serialize;
use stackd_core::Command;
use stackd_core::state::Applied;
use stackd_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use super::peers::MAX_MESSAGE;
use super::{RaftError, RaftNode, SnapshotMetaOf, Vote, snapshot};

/// The metadata key that names the leader's address on a refusal.
pub const LEADER_HEADER: &str = "x-stackd-leader";

/// The metadata key set on a refusal that proposed nothing: `not-leader` or
/// `no-quorum`. The caller may retry such a refusal without risking a
/// duplicate write; an `unavailable` without it comes from the transport.
pub const REFUSED_HEADER: &str = "x-stackd-refused";

/// How long a snapshot stream may stay silent between two messages.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(10);

/// The largest snapshot a manager accepts (the whole state in memory).
const MAX_SNAPSHOT: u64 = 4 << 30;

/// The Raft gRPC service of one manager.
#[derive(Clone)]
pub struct RaftService {
    node: RaftNode,
}

impl RaftService {
    /// The service of `node`.
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    /// The tonic server, with message limits raised for log batches.
    pub fn server(self) -> v1::raft_server::RaftServer<Self> {
        v1::raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

/// The next message of a snapshot stream, or an error if it stays silent too long.
async fn next(stream: &mut Streaming<v1::SnapshotChunk>) -> Result<Option<v1::SnapshotChunk>, Status> {
    tokio::time::timeout(SNAPSHOT_IDLE, stream.message())
        .await
        .map_err(|_| Status::deadline_exceeded("the snapshot stream stalled"))?
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("encoding a raft reply: {e}")))
}

fn bad(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable {what}: {e}"))
}

/// A refusal the caller may retry (nothing was proposed), naming the leader when known.
pub(super) fn refusal(e: RaftError) -> Status {
    use tonic::metadata::MetadataValue;
    match e {
        RaftError::NotLeader { leader_addr, .. } => {
            let mut status = Status::unavailable("not the leader");
            status.metadata_mut().insert(REFUSED_HEADER, MetadataValue::from_static("not-leader"));
            if let Some(addr) = leader_addr
                && let Ok(value) = addr.parse()
            {
                status.metadata_mut().insert(LEADER_HEADER, value);
            }
            status
        }
        RaftError::NoQuorum(m) => {
            let mut status = Status::unavailable(m);
            status.metadata_mut().insert(REFUSED_HEADER, MetadataValue::from_static("no-quorum"));
            status
        }
        // The rest as every gRPC edge maps them.
        other => crate::dispatcher::raft_status(other),
    }
}

impl RaftService {
    /// Refuses `req` unless its certificate is of a manager the cluster
    /// state has. The service's interceptor admits any manager certificate
    /// of the cluster (a learner replicates before it is in the state); the
    /// calls that act for a client — forwarded writes, read indexes,
    /// membership — need a manager that is still a member: a removed one's
    /// certificate stays valid.
    fn check_member<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let cluster_id = self.node.shared().read(|s| s.cluster_id.clone());
        let peer = crate::auth::peer_node(req, &cluster_id)?
            .ok_or_else(|| Status::unauthenticated("this call needs the manager certificate of a member"))?;
        let manager = self
            .node
            .shared()
            .read(|s| s.nodes.get(&peer.node_id).is_some_and(|n| n.role == stackd_core::model::NodeRole::Manager));
        if manager {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("node {} is not a manager of the cluster", peer.node_id)))
        }
    }
}

#[tonic::async_trait]
impl v1::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<v1::RaftRequest>) -> Result<Response<v1::RaftReply>, Status> {
        let rpc = serde_json::from_slice(&req.into_inner().json).map_err(|e| bad("append_entries", e))?;
        let result = self.node.raft.append_entries(rpc).await;
        Ok(Response::new(v1::RaftReply { json: json(&result)? }))
    }

    async fn vote(&self, req: Request<v1::RaftRequest>) -> Result<Response<v1::RaftReply>, Status> {
        let rpc = serde_json::from_slice(&req.into_inner().json).map_err(|e| bad("vote", e))?;
        let result = self.node.raft.vote(rpc).await;
        Ok(Response::new(v1::RaftReply { json: json(&result)? }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<v1::SnapshotChunk>>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        use v1::snapshot_chunk::Part;
        let mut stream = req.into_inner();
        let header = match next(&mut stream).await? {
            Some(v1::SnapshotChunk { part: Some(Part::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("a snapshot stream starts with its header")),
        };
        let vote: Vote = serde_json::from_slice(&header.vote_json).map_err(|e| bad("snapshot vote", e))?;
        let meta: SnapshotMetaOf = serde_json::from_slice(&header.meta_json).map_err(|e| bad("snapshot meta", e))?;
        if header.size > MAX_SNAPSHOT {
            return Err(Status::invalid_argument(format!(
                "a snapshot of {} bytes is larger than the {MAX_SNAPSHOT} bytes a manager accepts",
                header.size
            )));
        }
        let mut data = Vec::with_capacity(header.size.min(MAX_MESSAGE as u64) as usize);
        while let Some(chunk) = next(&mut stream).await? {
            match chunk.part {
                Some(Part::Data(bytes)) => {
                    if data.len() as u64 + bytes.len() as u64 > header.size {
                        return Err(Status::invalid_argument("the snapshot is larger than its header says"));
                    }
                    data.extend_from_slice(&bytes);
                }
                _ => return Err(Status::invalid_argument("a snapshot has one header, then data")),
            }
        }
        if data.len() as u64 != header.size {
            return Err(Status::invalid_argument(format!(
                "the snapshot stream ended after {} of {} bytes",
                data.len(),
                header.size
            )));
        }
        // Check the file before openraft sees it: a storage error in
        // `install_snapshot` is fatal to the whole Raft node, a refused
        // stream only makes the leader send it again.
        snapshot::decode(&data).map_err(|e| Status::invalid_argument(format!("refused snapshot: {e}")))?;
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            bytes = data.len(),
            "installing a snapshot from the leader"
        );
        let result: Result<SnapshotResponse<u64>, Fatal<u64>> =
            self.node.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }).await;
        Ok(Response::new(v1::RaftReply { json: json(&result)? }))
    }

    async fn forward(&self, req: Request<v1::ForwardRequest>) -> Result<Response<v1::ForwardReply>, Status> {
        self.check_member(&req)?;
        let cmd: Command = serde_json::from_slice(&req.into_inner().command_json).map_err(|e| bad("command", e))?;
        // The leader proposes locally only: a forwarded write never takes a second hop.
        let timeout = self.node.write_timeout();
        let (index, applied) = match cmd {
            // Commands queued together on a follower: each applied on its own.
            Command::Batch { commands } => {
                if commands.iter().any(|c| matches!(c, Command::Batch { .. })) {
                    return Err(Status::invalid_argument("a forwarded batch cannot hold a batch"));
                }
                let (index, batch) = self.node.propose_local_many(commands, timeout).await.map_err(refusal)?;
                (index, Applied { batch, ..Applied::default() })
            }
            cmd => self.node.propose_local(cmd, timeout).await.map_err(refusal)?,
        };
        Ok(Response::new(v1::ForwardReply { index, applied_json: json(&applied)? }))
    }

    async fn read_index(&self, req: Request<v1::ReadIndexRequest>) -> Result<Response<v1::ReadIndexReply>, Status> {
        self.check_member(&req)?;
        let index = self.node.read_index_local().await.map_err(refusal)?;
        Ok(Response::new(v1::ReadIndexReply { index }))
    }

    async fn members(&self, req: Request<v1::MembersRequest>) -> Result<Response<v1::MembersReply>, Status> {
        self.check_member(&req)?;
        let view = self.node.local_members_view();
        Ok(Response::new(v1::MembersReply {
            leader: view.leader,
            members: view
                .members
                .into_iter()
                .map(|m| v1::Member {
                    raft_id: m.id,
                    addr: m.addr,
                    voter: m.voter,
                    reachable: m.reachable,
                    matched: m.matched,
                })
                .collect(),
            has_quorum: view.has_quorum,
        }))
    }
}
