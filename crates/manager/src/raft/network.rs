//! The Raft network between managers: openraft's RPCs over gRPC.
//!
//! Each openraft message is serialised to JSON and carried in `bytes` by the
//! `stackd.v1.Raft` service (see `proto/stackd/v1/raft.proto`); the receiving
//! side is `service.rs`. Log replication and heartbeats to a follower share
//! one long-lived `Replicate` stream per [`Connection`], one request answered
//! before the next is sent; a unary call would cost its own HTTP/2 headers,
//! trailers and server task on every write. Votes are unary. A whole
//! snapshot travels in one client-streaming RPC: a header (vote, meta, size)
//! then 1 MiB chunks.
//!
//! A replication stream is taken out of its connection for each exchange and
//! put back only after a whole answer arrived: an exchange that fails, times
//! out or is cancelled by openraft drops its stream, so a late answer can
//! never be read as the answer to a later request.
//!
//! Error mapping (what openraft does next):
//!
//! | what happened | openraft error | openraft then |
//! | --- | --- | --- |
//! | no channel, connect failure, `unavailable`, deadline, cancelled, no answer in time, replication stream ended (the peer's Raft stopped) | `Unreachable` | backs off ([`Connection::backoff`]) |
//! | any other gRPC status, undecodable reply | `Network` | retries at once |
//! | the peer's Raft refused (`Err` in the reply) | `RemoteError` | handles the error |

use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stackd_proto::v1;
use stackd_proto::v1::raft_client::RaftClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::log_store::Durable;
use super::peers::Peers;
use super::state_machine::Shared;
use super::{TypeConfig, Vote};

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Why a Raft RPC could not be sent or its reply not read (the source of
/// openraft's `Unreachable`/`NetworkError`).
#[derive(Debug, thiserror::Error)]
pub enum NetworkFailure {
    /// No channel could be made to the peer.
    #[error("manager {target:016x}: {source}")]
    Channel {
        /// The peer.
        target: u64,
        /// Why.
        source: super::peers::PeerError,
    },
    /// The gRPC call failed.
    #[error("manager {target:016x}: {status}")]
    Status {
        /// The peer.
        target: u64,
        /// The status.
        status: tonic::Status,
    },
    /// This manager's own log failed while a message waited for it.
    #[error("to manager {target:016x}: this manager's raft log failed: {message}")]
    Log {
        /// The peer.
        target: u64,
        /// What failed.
        message: String,
    },
    /// A message could not be encoded or the reply decoded.
    #[error("manager {target:016x}: bad raft message: {message}")]
    Codec {
        /// The peer.
        target: u64,
        /// What failed.
        message: String,
    },
    /// A call or snapshot transfer took longer than allowed.
    #[error("manager {target:016x}: no answer within {after:?}")]
    Timeout {
        /// The peer.
        target: u64,
        /// The limit.
        after: Duration,
    },
    /// The peer ended the replication stream.
    #[error("manager {0:016x}: the replication stream ended")]
    StreamEnded(u64),
    /// Chunked snapshot transfer is not used (see `full_snapshot`).
    #[error("manager {0:016x}: chunked snapshot transfer is not used")]
    Chunked(u64),
}

/// How long a message to a follower waits for the leader's own copy of
/// the commit index to be synced before it goes with an earlier one.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Creates connections to other managers.
pub struct Network {
    peers: Arc<Peers>,
    durable: Durable,
    shared: Arc<Shared>,
}

impl Network {
    /// A network over the cached channels of `peers`, telling followers a
    /// commit index only once `durable` says this node holds it durably.
    /// Every message carries the restore generation of `shared`'s state.
    pub fn new(peers: Arc<Peers>, durable: Durable, shared: Arc<Shared>) -> Self {
        Self { peers, durable, shared }
    }
}

/// A connection to one other manager. Cheap: the channel is cached in
/// [`Peers`]; the replication stream is opened by the first `append_entries`.
pub struct Connection {
    target: u64,
    addr: String,
    peers: Arc<Peers>,
    replication: Option<ReplicationStream>,
    durable: Durable,
    shared: Arc<Shared>,
}

/// An open `Replicate` stream: requests go in, answers come back in order.
struct ReplicationStream {
    requests: mpsc::Sender<v1::RaftRequest>,
    replies: Streaming<v1::RaftReply>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    // Called for every replication stream, snapshot stream and election:
    // only look the channel up later, when an RPC is sent.
    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Connection {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            replication: None,
            durable: self.durable.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// What a failed call becomes for openraft.
enum Failure {
    Unreachable(NetworkFailure),
    Network(NetworkFailure),
}

impl Failure {
    fn status(target: u64, status: tonic::Status) -> Self {
        use tonic::Code;
        let retry_later = matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled);
        let f = NetworkFailure::Status { target, status };
        if retry_later { Failure::Unreachable(f) } else { Failure::Network(f) }
    }

    fn rpc<E: std::error::Error>(self) -> RPCError<u64, BasicNode, E> {
        match self {
            Failure::Unreachable(f) => RPCError::Unreachable(Unreachable::new(&f)),
            Failure::Network(f) => RPCError::Network(NetworkError::new(&f)),
        }
    }

    fn streaming(self) -> StreamingError<TypeConfig, Fatal<u64>> {
        match self {
            Failure::Unreachable(f) => StreamingError::Unreachable(Unreachable::new(&f)),
            Failure::Network(f) => StreamingError::Network(NetworkError::new(&f)),
        }
    }
}

impl Connection {
    /// Marks `req` with this manager's restore generation.
    fn stamp<T>(&self, req: &mut tonic::Request<T>) {
        req.metadata_mut().insert(stackd_proto::metadata::GENERATION, self.shared.generation().into());
    }

    fn client(&self) -> Result<RaftClient<Channel>, Failure> {
        self.peers
            .client(self.target, &self.addr)
            .map_err(|source| Failure::Unreachable(NetworkFailure::Channel { target: self.target, source }))
    }

    fn codec(&self, e: impl std::fmt::Display) -> Failure {
        Failure::Network(NetworkFailure::Codec { target: self.target, message: e.to_string() })
    }

    fn encode(&self, value: &impl Serialize) -> Result<Vec<u8>, Failure> {
        serde_json::to_vec(value).map_err(|e| self.codec(e))
    }

    /// Decodes a reply; any decoded reply counts as contact with the peer.
    fn decode<T: DeserializeOwned>(&self, json: &[u8]) -> Result<T, Failure> {
        let value = serde_json::from_slice(json).map_err(|e| self.codec(e))?;
        self.peers.record_ok(self.target);
        Ok(value)
    }

    /// The peer's answer: JSON `Result<Resp, RaftError>`, its `Err` a remote error.
    // The error type is what openraft's `RaftNetwork` methods return.
    #[allow(clippy::result_large_err)]
    fn answer<Resp: DeserializeOwned>(&self, json: &[u8]) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64>>> {
        let result: Result<Resp, RaftError<u64>> = self.decode(json).map_err(Failure::rpc)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends `request` on `stream` (or on a new stream when there is none)
    /// and reads its answer; returns the stream for the next exchange.
    async fn exchange(
        &self,
        stream: Option<ReplicationStream>,
        request: v1::RaftRequest,
    ) -> Result<(ReplicationStream, v1::RaftReply), Failure> {
        let ended = || Failure::Unreachable(NetworkFailure::StreamEnded(self.target));
        let mut stream = match stream {
            Some(stream) => {
                stream.requests.send(request).await.map_err(|_| ended())?;
                stream
            }
            None => {
                // The first request is queued before the call, so it leaves
                // with the stream's headers instead of a round trip later.
                let (requests, rx) = mpsc::channel(1);
                requests.try_send(request).map_err(|_| ended())?;
                let mut client = self.client()?;
                let mut req = tonic::Request::new(ReceiverStream::new(rx));
                self.stamp(&mut req);
                let replies = client.replicate(req).await.map_err(|s| Failure::status(self.target, s))?.into_inner();
                ReplicationStream { requests, replies }
            }
        };
        match stream.replies.message().await {
            Ok(Some(reply)) => Ok((stream, reply)),
            Ok(None) => Err(ended()),
            Err(status) => Err(Failure::status(self.target, status)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        // A leader counts its own copy toward a commit while it still syncs
        // it (see `log_store`): the commit shows to followers once it is
        // durable. Its sync takes a fraction of a millisecond: wait for it,
        // but on a slow disk send what is durable rather than hold back
        // entries and heartbeats (a follower ignores a commit index lower
        // than the one it has).
        if let Some(committed) = rpc.leader_commit {
            let log_failed =
                |message: String| Failure::Network(NetworkFailure::Log { target: self.target, message }).rpc();
            match tokio::time::timeout(COMMIT_WAIT, self.durable.wait(committed.index)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(log_failed(e)),
                Err(_) => rpc.leader_commit = self.durable.durable_upto(committed).map_err(log_failed)?,
            }
        }
        // openraft calls this with a timeout of `heartbeat_interval` (RPCOption::hard_ttl),
        // for heartbeats and log replication alike; the same bound applies here.
        let request = v1::RaftRequest { json: self.encode(&rpc).map_err(Failure::rpc)? };
        let ttl = option.hard_ttl();
        let stream = self.replication.take();
        let reply = match tokio::time::timeout(ttl, self.exchange(stream, request)).await {
            Ok(Ok((stream, reply))) => {
                self.replication = Some(stream);
                reply
            }
            Ok(Err(failure)) => return Err(failure.rpc()),
            Err(_) => {
                let f = NetworkFailure::Timeout { target: self.target, after: ttl };
                return Err(RPCError::Unreachable(Unreachable::new(&f)));
            }
        };
        self.answer(&reply.json)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let json = self.encode(&rpc).map_err(Failure::rpc)?;
        let mut client = self.client().map_err(Failure::rpc)?;
        let mut req = tonic::Request::new(v1::RaftRequest { json });
        req.set_timeout(option.hard_ttl());
        self.stamp(&mut req);
        let reply = client.vote(req).await.map_err(|s| {
            if s.code() == tonic::Code::FailedPrecondition {
                // Refused for good (a restore generation): say why, not only "unreachable".
                tracing::warn!(peer = %self.addr, "{}", s.message());
            }
            Failure::status(self.target, s).rpc()
        })?;
        self.answer(&reply.into_inner().json)
    }

    /// Not used: without the `generic-snapshot-data` feature openraft 0.9
    /// still requires this method, but it only calls it from the default
    /// `full_snapshot`, which we override.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(RPCError::Unreachable(Unreachable::new(&NetworkFailure::Chunked(self.target))))
    }

    /// Sends the whole snapshot in one client-streaming call.
    ///
    /// The default implementation (openraft's `Chunked`) calls
    /// `install_snapshot` per chunk with a 10 ms pause between chunks; one
    /// streamed call is faster and lets the receiver check the whole file
    /// before installing it. The request stream is built from owned chunks
    /// up front, so the call drives it (feeding a channel after awaiting the
    /// call would deadlock). openraft does not bound this call: `option`'s
    /// hard TTL is `install_snapshot_timeout`, which we apply per chunk.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let vote_json = self.encode(&vote).map_err(Failure::streaming)?;
        let meta_json = self.encode(&snapshot.meta).map_err(Failure::streaming)?;
        let data: Cursor<Vec<u8>> = *snapshot.snapshot;
        let data = data.into_inner();
        let header = v1::SnapshotHeader { vote_json, meta_json, size: data.len() as u64 };
        let mut chunks = Vec::with_capacity(1 + data.len().div_ceil(SNAPSHOT_CHUNK));
        chunks.push(v1::SnapshotChunk { part: Some(v1::snapshot_chunk::Part::Header(header)) });
        chunks.extend(
            data.chunks(SNAPSHOT_CHUNK)
                .map(|c| v1::SnapshotChunk { part: Some(v1::snapshot_chunk::Part::Data(c.to_vec())) }),
        );
        drop(data);
        let limit = option.hard_ttl() * (chunks.len() as u32).max(1);
        let mut client = self.client().map_err(Failure::streaming)?;
        let mut req = tonic::Request::new(tokio_stream::iter(chunks));
        req.set_timeout(limit);
        self.stamp(&mut req);
        let target = self.target;
        let call = async move { tokio::time::timeout(limit, client.install_snapshot(req)).await };
        let reply = tokio::select! {
            r = call => match r {
                Ok(Ok(reply)) => reply.into_inner(),
                Ok(Err(status)) => return Err(Failure::status(target, status).streaming()),
                Err(_) => {
                    let f = NetworkFailure::Timeout { target, after: limit };
                    return Err(StreamingError::Unreachable(Unreachable::new(&f)));
                }
            },
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let result: Result<SnapshotResponse<u64>, Fatal<u64>> = self.decode(&reply.json).map_err(Failure::streaming)?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(target, e)))
    }

    /// A peer that is down is retried every 200 ms (openraft's default: 500 ms).
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
