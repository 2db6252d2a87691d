//! The membership as a [`RaftNode`] sees it, and its changes on the
//! leader (add a learner, promote it, remove a member).

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use stackd_proto::v1;

use super::{Attempt, RaftError, RaftNode, TypeConfig};

/// The Raft membership: raft id → address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Voters (in a joint configuration: both halves).
    pub voters: BTreeMap<u64, String>,
    /// Learners: receive the log, do not vote.
    pub learners: BTreeMap<u64, String>,
}

/// One member as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Raft id.
    pub id: u64,
    /// Address.
    pub addr: String,
    /// Voter (else learner).
    pub voter: bool,
    /// Answered the leader within `election_max` (the leader itself: always).
    pub reachable: bool,
    /// Last log index known to be replicated to it (0: none yet).
    pub matched: u64,
}

/// The membership as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembersView {
    /// The leader's Raft id.
    pub leader: u64,
    /// Voters first, then learners, each by id.
    pub members: Vec<MemberInfo>,
    /// Whether the leader hears from a majority.
    pub has_quorum: bool,
}

impl RaftNode {
    /// The membership as this node knows it (the last one in its log,
    /// committed or not).
    pub fn members(&self) -> Members {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let addr = |id: u64| membership.get_node(&id).map(|n| (id, n.addr.clone()));
        Members {
            voters: membership.voter_ids().filter_map(addr).collect(),
            learners: membership.learner_ids().filter_map(addr).collect(),
        }
    }

    /// On the leader: the last log index known to be replicated to `id`
    /// (`None` on followers, for unknown nodes, or before the first answer).
    pub fn matched(&self, id: u64) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.replication.as_ref()?.get(&id)?.map(|l| l.index)
    }

    /// The membership with reachability and replication progress, as this
    /// node sees it (meaningful on the leader).
    pub(crate) fn local_members_view(&self) -> MembersView {
        let status = self.status();
        let members = self.members();
        let info = |id: u64, addr: &String, voter: bool| MemberInfo {
            id,
            addr: addr.clone(),
            voter,
            reachable: status.reachable.contains(&id),
            matched: if id == self.id { status.last_log_index } else { self.matched(id).unwrap_or(0) },
        };
        MembersView {
            leader: if status.is_leader { self.id } else { 0 },
            members: members
                .voters
                .iter()
                .map(|(id, a)| info(*id, a, true))
                .chain(members.learners.iter().map(|(id, a)| info(*id, a, false)))
                .collect(),
            has_quorum: status.has_quorum,
        }
    }

    /// The leader's view of the membership (who is reachable, how far each
    /// member is replicated): from this node when it leads, else asked of the
    /// leader (`Raft.Members`). For quorum checks before a membership change.
    pub async fn leader_members(&self) -> Result<MembersView, RaftError> {
        let m = self.metrics();
        if m.state == ServerState::Leader {
            return Ok(self.local_members_view());
        }
        let (Some(leader), Some(addr)) = Self::leader_of(&m) else {
            return Err(RaftError::NotLeader { leader: m.current_leader, leader_addr: None });
        };
        let mut client = self.peers.client(leader, &addr).map_err(|e| RaftError::NoQuorum(e.to_string()))?;
        let limit = self.timings.write_timeout;
        let mut req = tonic::Request::new(v1::MembersRequest {});
        req.set_timeout(limit);
        let reply = match tokio::time::timeout(limit, client.members(req)).await {
            Err(_) => return Err(RaftError::NoQuorum(format!("the leader did not answer within {limit:?}"))),
            Ok(Err(status)) => {
                return Err(match Self::leader_failure(leader, status) {
                    Attempt::Retry(e) | Attempt::Done(e) => e,
                });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        if reply.leader == 0 {
            return Err(RaftError::NotLeader { leader: None, leader_addr: None });
        }
        Ok(MembersView {
            leader: reply.leader,
            members: reply
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.raft_id,
                    addr: m.addr,
                    voter: m.voter,
                    reachable: m.reachable,
                    matched: m.matched,
                })
                .collect(),
            has_quorum: reply.has_quorum,
        })
    }

    /// Runs a membership change on the leader, bounded by the write timeout.
    async fn change<F>(&self, what: &str, change: F) -> Result<(), RaftError>
    where
        F: std::future::Future<
                Output = Result<
                    openraft::raft::ClientWriteResponse<TypeConfig>,
                    OpenRaftError<u64, ClientWriteError<u64, BasicNode>>,
                >,
            >,
    {
        self.check_quorum()?;
        let timeout = self.timings.write_timeout;
        match tokio::time::timeout(timeout, change).await {
            Err(_) => Err(RaftError::Timeout(format!("{what} was not committed within {timeout:?}"))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(RaftError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(OpenRaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(RaftError::Membership(format!("{what}: {e}")))
            }
            Ok(Err(OpenRaftError::Fatal(e))) => Err(RaftError::Fatal(e.to_string())),
        }
    }

    /// On the leader: adds `id` at `addr` as a learner. Returns once the
    /// change is committed, without waiting for the learner to catch up
    /// (watch [`matched`](Self::matched)). Adding a known node does nothing.
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<(), RaftError> {
        // Never `blocking = true`: openraft then waits (with a 100-year timeout)
        // until the learner is within `replication_lag_threshold`, for ever if it is down.
        self.change("adding a learner", self.raft.add_learner(id, BasicNode::new(addr), false)).await
    }

    /// On the leader: makes the learner `id` a voter. Returns once the new
    /// configuration is committed (through a joint configuration).
    pub async fn promote(&self, id: u64) -> Result<(), RaftError> {
        self.change(
            "promoting a learner",
            self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
        )
        .await
    }

    /// On the leader: removes `id` from the membership, voter or learner.
    /// Removing the leader itself is allowed: it steps down once the new
    /// configuration commits (openraft 0.9 has no leadership transfer; expect
    /// one election). Removing the last voter is refused.
    pub async fn remove(&self, id: u64) -> Result<(), RaftError> {
        let members = self.members();
        if members.voters.contains_key(&id) {
            // retain = false: the removed voter leaves the node list too, not
            // only the voters (it would stay a learner otherwise).
            self.change(
                "removing a voter",
                self.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false),
            )
            .await
        } else if members.learners.contains_key(&id) {
            self.change(
                "removing a learner",
                self.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
            )
            .await
        } else {
            Ok(())
        }
    }
}
