//! Raft: the replicated log and state machine, on openraft 0.9.
//!
//! openraft types do not leave this module: the rest of the manager talks to
//! [`RaftNode`] in terms of core [`Command`]s, [`Applied`] results and
//! [`RaftError`]s.
//!
//! ```text
//!  propose(cmd) ──► openraft ──► LogStore (redb, fsync) ──► commit
//!                                                        │
//!          Applied + events ◄── StateMachine::apply ◄────┘
//!                                   │
//!                      snapshot.current (checksummed file)
//! ```

// openraft's StorageError (224 bytes) is the storage traits' error type: it cannot be boxed.
#[allow(clippy::result_large_err)]
mod log_store;
mod network;
pub mod snapshot;
#[allow(clippy::result_large_err)]
mod state_machine;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use stackd_core::Command;
use stackd_core::state::Applied;

pub use log_store::LogStore;
pub use state_machine::{Shared, StateMachine, write_atomic};

openraft::declare_raft_types!(
    /// The openraft type configuration of stackd.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

type NodeIdOf = u64;
type LogId = openraft::LogId<u64>;
type Vote = openraft::Vote<u64>;
type Entry = openraft::Entry<TypeConfig>;
type StoredMembershipOf = openraft::StoredMembership<u64, BasicNode>;
type SnapshotMetaOf = openraft::SnapshotMeta<u64, BasicNode>;

/// Why a Raft operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// This manager is not the leader; retry on the leader (forwarding does that).
    #[error("not the leader{}", leader.map(|l| format!(" (the leader is node {l:016x})")).unwrap_or_default())]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// No quorum answered: the cluster cannot accept writes now; retry later.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The Raft node stopped (storage failure or shutdown); give up.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// Opening the stores failed.
    #[error("cannot open raft storage in {path}: {message}")]
    Storage {
        /// The data dir.
        path: String,
        /// What failed.
        message: String,
    },
    /// The configuration is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(String),
}

/// Timing of the Raft protocol.
#[derive(Clone, Debug)]
pub struct Timings {
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Election timeout range.
    pub election_min: Duration,
    /// Upper end of the election timeout range.
    pub election_max: Duration,
    /// Take a snapshot after this many entries.
    pub snapshot_every: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            snapshot_every: 5000,
        }
    }
}

/// What a manager knows of Raft right now (not linearizable).
#[derive(Clone, Debug, Default)]
pub struct RaftStatus {
    /// This node's Raft id.
    pub id: u64,
    /// The leader's Raft id, if known.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub last_applied: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
}

/// A running Raft node with its stores.
#[derive(Clone)]
pub struct RaftNode {
    raft: openraft::Raft<TypeConfig>,
    shared: Arc<Shared>,
    id: u64,
}

impl RaftNode {
    /// Opens the stores in `dir` and starts Raft as node `id`.
    pub async fn start(dir: &Path, id: u64, timings: &Timings) -> Result<Self, RaftError> {
        let storage =
            |e: &dyn std::fmt::Display| RaftError::Storage { path: dir.display().to_string(), message: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        let log = LogStore::open(&dir.join("raft.redb")).map_err(|e| storage(&e))?;
        let sm = StateMachine::open(&dir.join("snapshots")).map_err(|e| storage(&e))?;
        let shared = sm.shared();
        let config = Config {
            cluster_name: "stackd".into(),
            heartbeat_interval: timings.heartbeat.as_millis() as u64,
            election_timeout_min: timings.election_min.as_millis() as u64,
            election_timeout_max: timings.election_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timings.snapshot_every),
            max_in_snapshot_log_to_keep: 500,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Config(e.to_string()))?;
        let raft = openraft::Raft::new(id, Arc::new(config), network::Network, log, sm)
            .await
            .map_err(|e| RaftError::Fatal(e.to_string()))?;
        Ok(Self { raft, shared, id })
    }

    /// Makes this node the single voter of a new cluster. Does nothing if the
    /// node is initialised already.
    pub async fn initialize(&self, addr: &str) -> Result<(), RaftError> {
        let members = BTreeMap::from([(self.id, BasicNode::new(addr))]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(OpenRaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(RaftError::Fatal(e.to_string())),
        }
    }

    /// Waits until some node is leader (at most `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, RaftError> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| RaftError::NoQuorum(format!("no leader elected within {timeout:?}: {e}")))?;
        m.current_leader.ok_or_else(|| RaftError::NoQuorum("no leader".into()))
    }

    /// Proposes a command; returns its log index and what applying it did.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Applied), RaftError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok((resp.log_id.index, resp.data)),
            Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(RaftError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) })
            }
            Err(OpenRaftError::APIError(e)) => Err(RaftError::NoQuorum(e.to_string())),
            Err(OpenRaftError::Fatal(e)) => Err(RaftError::Fatal(e.to_string())),
        }
    }

    /// Waits until this node's state machine reflects every write committed
    /// before the call (the leader's read index), for linearizable reads.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        let read_log_id = match self.raft.ensure_linearizable().await {
            Ok(id) => id,
            Err(OpenRaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                return Err(RaftError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) });
            }
            Err(OpenRaftError::APIError(e)) => return Err(RaftError::NoQuorum(e.to_string())),
            Err(OpenRaftError::Fatal(e)) => return Err(RaftError::Fatal(e.to_string())),
        };
        if let Some(id) = read_log_id {
            let mut applied = self.shared.applied();
            applied.wait_for(|i| *i >= id.index).await.map_err(|e| RaftError::Fatal(e.to_string()))?;
        }
        Ok(())
    }

    /// The state machine handle.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This node's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A look at Raft's metrics.
    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        RaftStatus {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_leader: m.state == ServerState::Leader,
        }
    }

    /// A receiver that changes whenever leadership may have changed.
    pub fn leader_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(self.status().is_leader);
        let mut metrics = self.raft.metrics();
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let leader = metrics.borrow().state == ServerState::Leader;
                tx.send_if_modified(|v| {
                    let changed = *v != leader;
                    *v = leader;
                    changed
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        rx
    }

    /// Asks for a snapshot now (returns once queued).
    pub async fn trigger_snapshot(&self) -> Result<(), RaftError> {
        self.raft.trigger().snapshot().await.map_err(|e| RaftError::Fatal(e.to_string()))
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
