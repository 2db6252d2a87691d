//! The follower's end of `Raft.ForwardStream`: one long-lived stream to the
//! leader carries every forwarded write.
//!
//! ```text
//!  call ─► register id ─► calls channel ─► stream ─► leader
//!  call ◄─ oneshot ◄─ reader task ◄───── answers ◄──┘  (by id, any order)
//! ```
//!
//! A unary call per write cost its own HTTP/2 headers, trailers and server
//! task, and the server read the whole request (up to its end-of-stream
//! frame) before it began. A stream pays that once.
//!
//! The stream is opened lazily by the first call to a leader and replaced
//! when the leader changes or the stream ends. Its reader task opens it and
//! hands each answer to the call waiting for that id. When the stream ends
//! or breaks, every call still waiting gets the stream's status; a call
//! that gives up waiting (its time limit) only forgets its id. What a
//! status means for a retry is decided by the caller, as for a unary call:
//! a stream that never connected sent nothing, one lost afterwards may have
//! committed its writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackd_proto::v1;
use stackd_proto::v1::raft_client::RaftClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use super::peers::{PeerError, Peers};
use crate::util::lock;

/// What a forwarded call ended with.
#[derive(Debug)]
pub(super) enum CallError {
    /// No stream could be made to the leader: nothing was sent.
    Channel(PeerError),
    /// The stream ended or broke, or the leader answered with an error.
    Status(Status),
    /// No answer within the limit; the write may still be committed.
    Timeout(Duration),
}

/// The forward stream to the current leader, if any.
pub(super) struct ForwardStreams {
    peers: Arc<Peers>,
    current: Mutex<Option<LeaderStream>>,
}

/// An open (or opening) stream to one leader.
struct LeaderStream {
    leader: u64,
    addr: String,
    calls: mpsc::UnboundedSender<v1::ForwardCall>,
    waiting: Arc<Mutex<Waiting>>,
}

/// The calls of one stream that wait for their answer.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// Set by the reader task when the stream is over; no call may wait then.
    ended: bool,
    calls: HashMap<u64, oneshot::Sender<Result<v1::ForwardResult, Status>>>,
}

/// A call registered on a stream, not yet sent.
struct Registered {
    id: u64,
    answer: oneshot::Receiver<Result<v1::ForwardResult, Status>>,
    calls: mpsc::UnboundedSender<v1::ForwardCall>,
    waiting: Arc<Mutex<Waiting>>,
}

impl ForwardStreams {
    /// No stream yet; the first call opens one through `peers`.
    pub(super) fn new(peers: Arc<Peers>) -> Self {
        Self { peers, current: Mutex::new(None) }
    }

    /// Sends `command_json` to `leader` at `addr` and waits at most `limit`
    /// for its answer.
    pub(super) async fn call(
        &self,
        leader: u64,
        addr: &str,
        command_json: Vec<u8>,
        limit: Duration,
    ) -> Result<v1::ForwardResult, CallError> {
        let Registered { id, answer, calls, waiting } = self.register(leader, addr)?;
        if calls.send(v1::ForwardCall { id, command_json }).is_err() {
            // The reader task is gone; its stream failed every waiting call.
            lock(&waiting).calls.remove(&id);
            return Err(CallError::Status(Status::unavailable("the forward stream closed before the write was sent")));
        }
        drop(calls);
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(status))) => Err(CallError::Status(status)),
            Ok(Err(_)) => Err(CallError::Status(Status::unavailable("the forward stream was dropped"))),
            Err(_) => {
                lock(&waiting).calls.remove(&id);
                Err(CallError::Timeout(limit))
            }
        }
    }

    /// Registers a call on the stream to `leader`, opening one if needed.
    fn register(&self, leader: u64, addr: &str) -> Result<Registered, CallError> {
        let mut current = lock(&self.current);
        if let Some(s) = current.as_ref().filter(|s| s.leader == leader && s.addr == addr)
            && let Some(registered) = s.register()
        {
            return Ok(registered);
        }
        // A new stream: the calls queue in its channel while the reader opens it.
        let client = self.peers.client(leader, addr).map_err(CallError::Channel)?;
        let (calls, rx) = mpsc::unbounded_channel();
        let stream = LeaderStream { leader, addr: addr.to_string(), calls, waiting: Arc::default() };
        // Registered before the reader starts: it cannot have ended yet.
        let registered = stream.register();
        tokio::spawn(read_answers(client, rx, stream.waiting.clone(), self.peers.clone(), leader));
        // The stream it replaces (if any) closes once its sender is dropped.
        *current = Some(stream);
        registered.ok_or_else(|| CallError::Status(Status::unavailable("the new forward stream ended at once")))
    }
}

impl LeaderStream {
    /// Registers a call on this stream; `None` once the stream is over.
    fn register(&self) -> Option<Registered> {
        let mut waiting = lock(&self.waiting);
        if waiting.ended {
            return None;
        }
        let (tx, answer) = oneshot::channel();
        waiting.next_id += 1;
        let id = waiting.next_id;
        waiting.calls.insert(id, tx);
        Some(Registered { id, answer, calls: self.calls.clone(), waiting: self.waiting.clone() })
    }
}

/// Opens the stream and hands each answer to the call waiting for it; when
/// the stream is over, fails the calls still waiting with its status.
async fn read_answers(
    mut client: RaftClient<Channel>,
    calls: mpsc::UnboundedReceiver<v1::ForwardCall>,
    waiting: Arc<Mutex<Waiting>>,
    peers: Arc<Peers>,
    leader: u64,
) {
    let end = match client.forward_stream(UnboundedReceiverStream::new(calls)).await {
        Err(status) => status,
        Ok(response) => {
            let mut answers = response.into_inner();
            loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        peers.record_ok(leader);
                        if let Some(tx) = lock(&waiting).calls.remove(&answer.id) {
                            let _ = tx.send(Ok(answer));
                        }
                    }
                    Ok(None) => break Status::unavailable("the leader ended the forward stream"),
                    Err(status) => break status,
                }
            }
        }
    };
    let mut waiting = lock(&waiting);
    waiting.ended = true;
    for (_, tx) in waiting.calls.drain() {
        let _ = tx.send(Err(end.clone()));
    }
}
