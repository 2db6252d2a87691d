//! Linearizable reads: the leader's read index, asked of the leader by a
//! follower, and the wait until this node applied that far.

use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::error::{CheckIsLeaderError, RaftError as OpenRaftError};
use stackd_proto::v1;

use super::{Attempt, RETRY_PAUSE, RaftError, RaftNode};

impl RaftNode {
    /// Waits until this node's state machine reflects every write committed
    /// before the call (the leader's read index), for linearizable reads.
    ///
    /// The leader confirms its leadership with a quorum
    /// (`ensure_linearizable`); a follower or learner asks the leader for its
    /// read index (`Raft.ReadIndex`) and waits until it applied that far.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        let deadline = Instant::now() + self.timings.leader_deadline;
        loop {
            let m = self.metrics();
            let last = if m.state == ServerState::Leader {
                // ensure_linearizable also waits for the local apply.
                match self.read_index_local().await {
                    Ok(_) => return Ok(()),
                    // Lost the leadership meanwhile: ask the new leader.
                    Err(e @ RaftError::NotLeader { .. }) => e,
                    Err(e) => return Err(e),
                }
            } else {
                match Self::leader_of(&m) {
                    (Some(leader), Some(addr)) if leader != self.id => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        match self.remote_read_index(leader, &addr, remaining).await {
                            Attempt::Done(Ok(index)) => return self.wait_applied(index, deadline).await,
                            Attempt::Done(Err(e)) | Attempt::Retry(e) => {
                                if matches!(e, RaftError::Timeout(_) | RaftError::Remote(_)) {
                                    return Err(e);
                                }
                                e
                            }
                        }
                    }
                    (leader, leader_addr) => RaftError::NotLeader { leader, leader_addr },
                }
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(last);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// On the leader: confirms leadership with a quorum, waits for the local
    /// apply, and returns the read index.
    pub(crate) async fn read_index_local(&self) -> Result<u64, RaftError> {
        self.check_quorum()?;
        // Every write acknowledged before this read is in the leader's log.
        // openraft's own read index is not enough on a leader that restarted
        // and took up its leadership again (same term, no new blank entry):
        // it is the commit index saved before the restart, which may be
        // behind entries acknowledged then (the commit index is saved with
        // the next record, not on its own). So the read waits for the
        // leader's last entry too: one commit round at most.
        let last = self.metrics().last_log_index.unwrap_or(0);
        let timeout = self.timings.write_timeout;
        // ensure_linearizable sends a heartbeat round and waits for a quorum:
        // it never returns on a leader cut off from the others. Bound it.
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Err(_) => Err(RaftError::NoQuorum(format!("a majority of the managers did not answer within {timeout:?}"))),
            Ok(Ok(read_log_id)) => {
                let index = read_log_id.map(|l| l.index).unwrap_or(0).max(last);
                self.wait_applied(index, Instant::now() + timeout).await?;
                Ok(index)
            }
            Ok(Err(OpenRaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(RaftError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(OpenRaftError::APIError(e))) => Err(RaftError::NoQuorum(e.to_string())),
            Ok(Err(OpenRaftError::Fatal(e))) => Err(RaftError::Fatal(e.to_string())),
        }
    }

    async fn remote_read_index(&self, leader: u64, addr: &str, remaining: Duration) -> Attempt<Result<u64, RaftError>> {
        let mut client = match self.peers.client(leader, addr) {
            Ok(c) => c,
            Err(e) => return Attempt::Retry(RaftError::NoQuorum(e.to_string())),
        };
        let limit = remaining.min(self.timings.write_timeout + Duration::from_secs(1));
        let mut req = tonic::Request::new(v1::ReadIndexRequest {});
        req.set_timeout(limit);
        match tokio::time::timeout(limit, client.read_index(req)).await {
            // A read changes nothing: a timeout can simply be retried.
            Err(_) => Attempt::Retry(RaftError::NoQuorum(format!(
                "the leader (node {leader:016x}) gave no read index within {limit:?}"
            ))),
            Ok(Err(status)) => match Self::leader_failure(leader, status) {
                Attempt::Retry(e) | Attempt::Done(e @ RaftError::Timeout(_)) => Attempt::Retry(e),
                Attempt::Done(e) => Attempt::Done(Err(e)),
            },
            Ok(Ok(reply)) => {
                self.peers.record_ok(leader);
                Attempt::Done(Ok(reply.into_inner().index))
            }
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), RaftError> {
        let mut applied = self.shared.applied();
        let remaining = deadline.saturating_duration_since(Instant::now()).max(self.timings.write_timeout);
        match tokio::time::timeout(remaining, applied.wait_for(|i| *i >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RaftError::Fatal(e.to_string())),
            Err(_) => Err(RaftError::NoQuorum(format!(
                "this manager did not apply the leader's read index {index} within {remaining:?}"
            ))),
        }
    }
}
