//! The receiving side of the Raft network: the `stackd.v1.Raft` gRPC
//! service, plus the follower → leader calls `ForwardStream` and `ReadIndex`.
//!
//! This is a plain tonic service; the manager adds it to the router it
//! serves on its one address (`Manager::routes`), so whatever transport
//! that router runs on (TLS later) carries Raft too.

use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream::FuturesUnordered;

use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse};
use openraft::storage::Snapshot;
use serde::Serialize;
use stackd_core::Command;
use stackd_core::state::Applied;
use stackd_proto::metadata::{LEADER as LEADER_HEADER, REFUSED as REFUSED_HEADER};
use stackd_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use super::peers::MAX_MESSAGE;
use super::{RaftNode, SnapshotMetaOf, Vote, snapshot};

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

/// Appends what the leader sent and answers, once the entries the answer
/// acknowledges are durable here. (The log store syncs a follower's append
/// before openraft hears of it; this keeps "acknowledged means durable"
/// true whatever the log store decided.)
async fn acknowledge(node: &RaftNode, rpc: AppendEntriesRequest<super::TypeConfig>) -> Result<v1::RaftReply, Status> {
    let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
    let response = node
        .raft
        .append_entries(rpc)
        .await
        // openraft's only error here: this manager's Raft stopped.
        .map_err(|fatal| Status::unavailable(format!("this manager's Raft stopped: {fatal}")))?;
    let acknowledged = match &response {
        AppendEntriesResponse::Success => last,
        AppendEntriesResponse::PartialSuccess(matching) => *matching,
        AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => None,
    };
    if let Some(log_id) = acknowledged {
        node.durable
            .wait(log_id.index)
            .await
            .map_err(|e| Status::unavailable(format!("this manager's raft log failed: {e}")))?;
    }
    json(&Ok::<_, ()>(response)).map(|json| v1::RaftReply { json })
}

impl RaftService {
    /// Refuses `req` unless its certificate is of a manager the cluster
    /// state has. The service's interceptor admits any manager certificate
    /// of the cluster (a learner replicates before it is in the state); the
    /// calls that act for a client — forwarded writes, read indexes,
    /// membership — need a manager that is still a member: a removed one's
    /// certificate stays valid.
    fn check_member<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.member_of(req).map(|_| ())
    }

    /// The node id of `req`'s certificate, if it is of a member manager.
    fn member_of<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let cluster_id = self.node.shared().read(|s| s.cluster_id.clone());
        let peer = crate::peer::peer_node(req, &cluster_id)?
            .ok_or_else(|| Status::unauthenticated("this call needs the manager certificate of a member"))?;
        self.check_manager(&peer.node_id)?;
        Ok(peer.node_id)
    }

    /// Refuses unless `node_id` is a manager in the cluster state.
    fn check_manager(&self, node_id: &str) -> Result<(), Status> {
        let manager = self
            .node
            .shared()
            .read(|s| s.nodes.get(node_id).is_some_and(|n| n.role == stackd_core::model::NodeRole::Manager));
        if manager {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("node {node_id} is not a manager of the cluster")))
        }
    }

    /// Proposes one forwarded command (or batch) on this leader.
    async fn forward_one(&self, command_json: &[u8]) -> Result<(u64, Vec<u8>), Status> {
        let cmd: Command = serde_json::from_slice(command_json).map_err(|e| bad("command", e))?;
        // The leader proposes locally only: a forwarded write never takes a second hop.
        let timeout = self.node.write_timeout();
        let (index, applied) = match cmd {
            // Commands queued together on a follower: each applied on its own.
            Command::Batch { commands } => {
                if commands.iter().any(|c| matches!(c, Command::Batch { .. })) {
                    return Err(Status::invalid_argument("a forwarded batch cannot hold a batch"));
                }
                let (index, batch) = self.node.propose_local_many(commands, timeout).await.map_err(Status::from)?;
                (index, Applied { batch, ..Applied::default() })
            }
            cmd => self.node.propose_local(cmd, timeout).await.map_err(Status::from)?,
        };
        Ok((index, json(&applied)?))
    }

    /// Answers one call of a forward stream from manager `peer`, which must
    /// still be a member: a stream outlives a `node rm`.
    async fn forward_call(self, peer: String, call: v1::ForwardCall) -> v1::ForwardResult {
        let outcome = match self.check_manager(&peer) {
            Ok(()) => self.forward_one(&call.command_json).await,
            Err(status) => Err(status),
        };
        match outcome {
            Ok((index, applied_json)) => v1::ForwardResult { id: call.id, index, applied_json, error: None },
            Err(status) => v1::ForwardResult { id: call.id, error: Some(forward_error(&status)), ..Default::default() },
        }
    }
}

/// A refusal or failure as a forward stream carries it.
fn forward_error(status: &Status) -> v1::ForwardError {
    let header = |key| status.metadata().get(key).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    v1::ForwardError {
        code: status.code() as i32,
        message: status.message().to_string(),
        refused: header(REFUSED_HEADER),
        leader: header(LEADER_HEADER),
    }
}

/// The status a unary call would have returned for `error`: the metadata
/// [`RaftNode`]'s retry logic reads is set again.
pub(super) fn forward_status(error: v1::ForwardError) -> Status {
    use tonic::metadata::MetadataValue;
    let mut status = Status::new(tonic::Code::from_i32(error.code), error.message);
    if let Ok(value) = MetadataValue::try_from(error.refused.as_str())
        && !error.refused.is_empty()
    {
        status.metadata_mut().insert(REFUSED_HEADER, value);
    }
    if let Ok(value) = MetadataValue::try_from(error.leader.as_str())
        && !error.leader.is_empty()
    {
        status.metadata_mut().insert(LEADER_HEADER, value);
    }
    status
}

/// The answers of one forward stream. Calls are taken in as they arrive and
/// run at once, side by side (the leader batches them); each answer goes out
/// when its write is done. All of it runs as hyper polls the answers, on
/// that stream's task. Once the follower closes its side, the calls still
/// running are answered, then the stream ends. When this manager's Raft
/// stops, the stream ends at once with an error: the follower treats the
/// calls still running as possibly committed.
struct ForwardReplies {
    calls: Option<Streaming<v1::ForwardCall>>,
    running: FuturesUnordered<Pin<Box<dyn Future<Output = v1::ForwardResult> + Send>>>,
    /// `None` once it fired and the stream ended.
    stopped: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    service: RaftService,
    peer: String,
}

/// Refuses a Raft message from a manager of an earlier restore generation
/// of the cluster: one that ran before a `stackd restore` and came back.
fn check_generation<T>(node: &RaftNode, req: &Request<T>) -> Result<(), Status> {
    let theirs = req.metadata().get(stackd_proto::metadata::GENERATION).and_then(|v| v.to_str().ok());
    match generation_refusal(theirs, node.shared().generation()) {
        Some(why) => {
            tracing::warn!("{why}");
            Err(Status::failed_precondition(why))
        }
        None => Ok(()),
    }
}

/// Why a message whose header says generation `theirs` (absent: 0) is
/// refused by a manager of generation `ours`, if it is.
fn generation_refusal(theirs: Option<&str>, ours: u64) -> Option<String> {
    let theirs = theirs.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (theirs < ours).then(|| {
        format!(
            "this cluster was restored from a snapshot (restore generation {ours}); the sending manager belongs to \
             the cluster before that restore (generation {theirs}) and is refused: stop it, wipe its data dir and \
             join it afresh (docs/operations.md, Restore)"
        )
    })
}

/// How a stream served by a stopping manager ends.
fn stopping() -> Status {
    Status::unavailable("this manager is stopping")
}

impl Stream for ForwardReplies {
    type Item = Result<v1::ForwardResult, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(stopped) = this.stopped.as_mut() else { return Poll::Ready(None) };
        if stopped.as_mut().poll(cx).is_ready() {
            this.stopped = None;
            this.calls = None;
            this.running.clear();
            return Poll::Ready(Some(Err(stopping())));
        }
        while let Some(calls) = this.calls.as_mut() {
            match Pin::new(calls).poll_next(cx) {
                Poll::Ready(Some(Ok(call))) => {
                    let service = this.service.clone();
                    this.running.push(Box::pin(service.forward_call(this.peer.clone(), call)));
                }
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(peer = %this.peer, %status, "a forward stream broke");
                    this.calls = None;
                }
                Poll::Ready(None) => this.calls = None,
                Poll::Pending => break,
            }
        }
        match Pin::new(&mut this.running).poll_next(cx) {
            Poll::Ready(Some(result)) => Poll::Ready(Some(Ok(result))),
            Poll::Ready(None) if this.calls.is_none() => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl v1::raft_server::Raft for RaftService {
    type ReplicateStream = Pin<Box<dyn Stream<Item = Result<v1::RaftReply, Status>> + Send + 'static>>;

    /// Answers each request of the stream in turn. The answers are made as
    /// hyper polls the reply stream, on that stream's task: no task or
    /// channel of its own. An undecodable request ends the stream with an
    /// error, so the leader opens a new one; so does this manager's Raft
    /// stopping, so that a stopped manager is unreachable, not a peer that
    /// answers (and the server's graceful stop does not wait for the leader).
    async fn replicate(
        &self,
        req: Request<Streaming<v1::RaftRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        check_generation(&self.node, &req)?;
        let stopped: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(self.node.stopped());
        let state = Some((req.into_inner(), self.node.clone(), stopped));
        let replies = futures_util::stream::unfold(state, |state| async move {
            let (mut requests, node, mut stopped) = state?;
            let request = tokio::select! {
                () = &mut stopped => return Some((Err(stopping()), None)),
                request = requests.message() => match request {
                    Ok(Some(request)) => request,
                    // The leader closed the stream.
                    Ok(None) => return None,
                    Err(status) => return Some((Err(status), None)),
                },
            };
            let reply = match serde_json::from_slice(&request.json) {
                Ok(rpc) => acknowledge(&node, rpc).await,
                Err(e) => Err(bad("append_entries", e)),
            };
            let next = reply.is_ok().then_some((requests, node, stopped));
            Some((reply, next))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, req: Request<v1::RaftRequest>) -> Result<Response<v1::RaftReply>, Status> {
        check_generation(&self.node, &req)?;
        let rpc = serde_json::from_slice(&req.into_inner().json).map_err(|e| bad("vote", e))?;
        let result = self.node.raft.vote(rpc).await;
        Ok(Response::new(v1::RaftReply { json: json(&result)? }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<v1::SnapshotChunk>>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        use v1::snapshot_chunk::Part;
        check_generation(&self.node, &req)?;
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

    type ForwardStreamStream = Pin<Box<dyn Stream<Item = Result<v1::ForwardResult, Status>> + Send + 'static>>;

    async fn forward_stream(
        &self,
        req: Request<Streaming<v1::ForwardCall>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let peer = self.member_of(&req)?;
        Ok(Response::new(Box::pin(ForwardReplies {
            calls: Some(req.into_inner()),
            running: FuturesUnordered::new(),
            stopped: Some(Box::pin(self.node.stopped())),
            service: self.clone(),
            peer,
        })))
    }

    async fn read_index(&self, req: Request<v1::ReadIndexRequest>) -> Result<Response<v1::ReadIndexReply>, Status> {
        self.check_member(&req)?;
        let index = self.node.read_index_local().await.map_err(Status::from)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_of_an_earlier_restore_generation_is_refused() {
        assert_eq!(generation_refusal(None, 0), None, "clusters never restored");
        assert_eq!(generation_refusal(Some("1"), 1), None);
        assert_eq!(generation_refusal(Some("2"), 1), None, "a newer sender: this manager catches up");
        let why = generation_refusal(None, 1).expect("refused");
        assert!(why.contains("generation 0") && why.contains("wipe its data dir"), "{why}");
        assert!(generation_refusal(Some("garbage"), 1).is_some(), "an unreadable header reads as 0");
    }

    /// A refusal crosses a forward stream with what the follower's retry
    /// logic reads: code, message, `x-stackd-refused` and `x-stackd-leader`.
    #[test]
    fn a_refusal_crosses_the_forward_stream_intact() {
        let refused = Status::from(crate::raft::RaftError::NotLeader {
            leader: Some(7),
            leader_addr: Some("10.0.0.7:7443".into()),
        });
        let back = forward_status(forward_error(&refused));
        assert_eq!(back.code(), tonic::Code::Unavailable);
        assert_eq!(back.message(), refused.message());
        assert_eq!(back.metadata().get(REFUSED_HEADER).and_then(|v| v.to_str().ok()), Some("not-leader"));
        assert_eq!(back.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()), Some("10.0.0.7:7443"));

        // A failure after proposing carries no refusal: the follower must not retry it.
        let failed = forward_status(forward_error(&Status::deadline_exceeded("no commit in time")));
        assert_eq!(failed.code(), tonic::Code::DeadlineExceeded);
        assert!(failed.metadata().get(REFUSED_HEADER).is_none());
        assert!(failed.metadata().get(LEADER_HEADER).is_none());
    }
}
