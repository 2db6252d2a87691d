//! Raft: the replicated log and state machine, on openraft 0.9, between
//! managers over gRPC.
//!
//! openraft types do not leave this module: the rest of the manager talks to
//! [`RaftNode`] in terms of core [`Command`]s, [`Applied`] results, raft ids,
//! addresses and [`RaftError`]s.
//!
//! ```text
//!  propose(cmd) ─┬─ leader ──► openraft ──► LogStore (WAL, fsync) ───► commit
//!                │                                                   │
//!                └─ follower ──ForwardStream──► the leader's propose │
//!                                                                     ▼
//!          Applied + events ◄── StateMachine::apply ◄──── committed entries
//!                                   │
//!                      snapshot.current (checksummed file)
//! ```
//!
//! # Layout
//!
//! - `wal.rs`: the write-ahead log's segments and records, replay, writer.
//! - `log_store.rs`: openraft's log storage over it (cache, writer thread,
//!   the leader's `raft-sync` thread and the [`log_store::Durable`] gates
//!   that keep a commit hidden until the leader's copy is synced, migration
//!   from the redb log of earlier versions).
//! - `state_machine.rs`, `snapshot.rs`: the state machine and its snapshots.
//! - `batcher.rs`: group commit (the leader's batches, followers' batched
//!   forwarding).
//! - `forwarding.rs`: a follower's stream of forwarded writes to the leader.
//! - `network.rs`: openraft's RPCs to other managers (gRPC client side; one
//!   replication stream per follower).
//! - `service.rs`: the `stackd.v1.Raft` gRPC service (server side), also
//!   serving `ForwardStream` (writes from followers) and `ReadIndex`.
//! - `peers.rs`: channel cache, pluggable [`PeerConnector`], contact tracker.
//! - `members.rs`: the membership as a node sees it, and its changes on the
//!   leader; `reads.rs`: linearizable reads (the read index).
//! - `error.rs`: [`RaftError`] and its one mapping to a gRPC status.
//!
//! # Leadership as the rest of the manager sees it
//!
//! openraft 0.9 has neither check-quorum nor pre-vote: a leader cut off from
//! the other managers stays leader, and `client_write` never returns there.
//! [`RaftNode`] adds a soft step-down: a leader that heard from no majority
//! of voters within `election_max` refuses writes and reads with
//! [`RaftError::NoQuorum`] and [`RaftNode::leader_watch`] reports `false`, so
//! the controller loop and the dispatcher stop acting. The term is not bumped:
//! when the partition heals nothing is disrupted.

mod batcher;
mod error;
mod forwarding;
// openraft's StorageError (224 bytes) is the storage traits' error type: it cannot be boxed.
#[allow(clippy::result_large_err)]
mod log_store;
mod members;
mod network;
mod peers;
mod reads;
mod service;
pub mod snapshot;
#[allow(clippy::result_large_err)]
mod state_machine;
mod wal;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::RaftError as OpenRaftError;
use openraft::{BasicNode, Config, RaftMetrics, ServerState, SnapshotPolicy};
use stackd_core::Command;
use stackd_core::state::Applied;
use stackd_proto::metadata;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::RaftError;
pub use log_store::LogStore;
pub use members::{MemberInfo, Members, MembersView};
pub use network::NetworkFailure;
pub use peers::{MAX_MESSAGE, PeerConnector, PeerError, Peers, PlainConnector, peer_endpoint};
pub use service::RaftService;
pub use state_machine::{Shared, StateMachine};
pub use wal::WalError;

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
type Metrics = RaftMetrics<u64, BasicNode>;

/// What a leader without a reachable majority answers.
const LOST_MAJORITY: &str = "this manager lost contact with a majority of the managers and cannot confirm it still leads; retry on another manager";

/// Pause between two attempts to reach the leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Timing and log-retention settings of the Raft protocol.
///
/// Failover time: a follower of openraft 0.9 starts an election only after
/// `leader_lease + election timeout` without a heartbeat, where the lease is
/// `election_max` and the timeout is drawn once per start from
/// `election_min..election_max` (and it refuses to vote while its own lease
/// runs). With the defaults (500–1000 ms) a follower campaigns 1.5–2 s after the
/// last heartbeat; `docs/benchmarks.md` has the measured failover.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Leader heartbeat period; also the timeout of one append-entries RPC.
    pub heartbeat: Duration,
    /// Election timeout range, lower end.
    pub election_min: Duration,
    /// Election timeout range, upper end; also how long a leader keeps
    /// leading without hearing from a majority (soft step-down).
    pub election_max: Duration,
    /// Take a snapshot after this many entries since the last one (0: only on demand).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (a follower that lags
    /// further gets the snapshot instead).
    pub keep_logs: u64,
    /// How long a local write may wait for its commit.
    pub write_timeout: Duration,
    /// How long [`RaftNode::propose`] and [`RaftNode::read_barrier`] keep
    /// trying to reach a leader (elections included).
    pub leader_deadline: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            // A follower campaigns after `election_max` (the leader lease) plus
            // its timeout from this range: 1.5–2 s without a heartbeat.
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
            snapshot_every: 5000,
            keep_logs: 500,
            write_timeout: Duration::from_secs(5),
            leader_deadline: Duration::from_secs(10),
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
    /// The leader's address, if known.
    pub leader_addr: Option<String>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub last_applied: u64,
    /// Whether this node is the leader (in openraft's eyes; see `has_quorum`).
    pub is_leader: bool,
    /// Whether this node leads with a reachable majority (false on followers).
    pub has_quorum: bool,
    /// Members that answered this node within `election_max` (itself
    /// included). Meaningful on the leader, which talks to everyone.
    pub reachable: BTreeSet<u64>,
    /// Index of the last entry in the latest snapshot (0: none).
    pub snapshot_index: u64,
    /// Index of the last entry removed from the log by compaction (0: none).
    pub purged_index: u64,
    /// Snapshots received from a leader and installed since start.
    pub snapshots_installed: u64,
}

/// How an attempt to reach the leader ended.
enum Attempt<T> {
    Done(T),
    /// Refused before anything was proposed, or not sent: try again.
    Retry(RaftError),
}

/// A running Raft node with its stores.
#[derive(Clone)]
pub struct RaftNode {
    raft: openraft::Raft<TypeConfig>,
    shared: Arc<Shared>,
    id: u64,
    peers: Arc<Peers>,
    timings: Timings,
    leading: Arc<watch::Sender<bool>>,
    /// Cancelled by [`RaftNode::shutdown`]: the long-lived streams served end.
    stopped: CancellationToken,
    batcher: batcher::Batcher,
    forwarder: batcher::Forwarder,
    /// What of this node's log is durable: a follower acknowledges entries
    /// only once they are.
    durable: log_store::Durable,
    /// How long the log's writes take.
    append_latency: prometheus_client::metrics::histogram::Histogram,
}

impl RaftNode {
    /// Opens the stores in `dir` and starts Raft as node `id`, reaching other
    /// managers over plaintext gRPC (tests and benchmarks), the data on disk
    /// sealed with a key of its own.
    pub async fn start(dir: &Path, id: u64, timings: &Timings) -> Result<Self, RaftError> {
        let key = stackd_tls::seal::DataKey::generate()
            .map_err(|e| RaftError::Storage { path: dir.display().to_string(), message: e.to_string() })?;
        Self::start_with(dir, id, timings, Box::new(PlainConnector::default()), Arc::new(key), false).await
    }

    /// Opens the stores in `dir` and starts Raft as node `id`, reaching other
    /// managers through `connector`; the log and the snapshot on disk are
    /// sealed with `key` (see `keys.rs`). Plain records and snapshots (an
    /// earlier stackd's) are read, and sealed, only with `upgrading`.
    pub async fn start_with(
        dir: &Path,
        id: u64,
        timings: &Timings,
        connector: Box<dyn PeerConnector>,
        key: Arc<stackd_tls::seal::DataKey>,
        upgrading: bool,
    ) -> Result<Self, RaftError> {
        let storage =
            |e: &dyn std::fmt::Display| RaftError::Storage { path: dir.display().to_string(), message: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        // Reads the whole log, and may wait for the lock of a log store of
        // this process that is still shutting down: off the runtime's workers.
        let (log_dir, log_key) = (dir.to_path_buf(), key.clone());
        let log = tokio::task::spawn_blocking(move || LogStore::open(&log_dir, log_key, upgrading))
            .await
            .map_err(|e| storage(&e))?
            .map_err(|e| storage(&e))?
            .for_node(id);
        let durable = log.durable();
        let append_latency = log.append_latency();
        let sm =
            StateMachine::open(&dir.join("snapshots"), key, upgrading).map_err(|e| storage(&e))?.gated(durable.clone());
        let shared = sm.shared();
        let config = Config {
            cluster_name: "stackd".into(),
            heartbeat_interval: timings.heartbeat.as_millis() as u64,
            election_timeout_min: timings.election_min.as_millis() as u64,
            election_timeout_max: timings.election_max.as_millis() as u64,
            snapshot_policy: match timings.snapshot_every {
                0 => SnapshotPolicy::Never,
                n => SnapshotPolicy::LogsSinceLast(n),
            },
            max_in_snapshot_log_to_keep: timings.keep_logs,
            // openraft purges only once a whole batch can go: a batch larger
            // than the entries kept would delay compaction far behind the snapshot.
            purge_batch_size: timings.keep_logs.clamp(1, 256),
            // An append must fit in one heartbeat (its RPC timeout), fsync included.
            max_payload_entries: 64,
            // With our `full_snapshot` this bounds each 1 MiB chunk of a transfer.
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Config(e.to_string()))?;
        let peers = Arc::new(Peers::new(connector, timings.election_max));
        let raft = openraft::Raft::new(
            id,
            Arc::new(config),
            network::Network::new(peers.clone(), durable.clone(), shared.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| RaftError::Fatal(e.to_string()))?;
        let (leading, _) = watch::channel(false);
        let leading = Arc::new(leading);
        tokio::spawn(watch_leadership(raft.metrics(), peers.clone(), id, leading.clone(), timings.heartbeat));
        let batcher = batcher::Batcher::start(raft.clone(), timings.write_timeout);
        let forwarder = batcher::Forwarder::start(peers.clone(), timings.write_timeout);
        let stopped = CancellationToken::new();
        Ok(Self {
            raft,
            shared,
            id,
            peers,
            timings: *timings,
            leading,
            stopped,
            batcher,
            forwarder,
            durable,
            append_latency,
        })
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

    fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader and its address, as this node knows them.
    fn leader_of(m: &Metrics) -> (Option<u64>, Option<String>) {
        let addr = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
        (m.current_leader, addr)
    }

    /// Refuses when this node is the leader in openraft's eyes but has not
    /// heard from a majority lately (soft step-down).
    fn check_quorum(&self) -> Result<(), RaftError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader && !self.peers.leader_has_quorum(self.id, &m) {
            return Err(RaftError::NoQuorum(LOST_MAJORITY.into()));
        }
        Ok(())
    }

    /// Whether this node leads with a reachable majority of the voters.
    /// Always true for the leader of a single-voter cluster; false on
    /// followers and learners.
    pub fn has_quorum(&self) -> bool {
        self.peers.leader_has_quorum(self.id, &self.raft.metrics().borrow())
    }

    /// How long a local write may wait for its commit.
    pub(crate) fn write_timeout(&self) -> Duration {
        self.timings.write_timeout
    }

    /// Proposes a command; returns its log index and what applying it did.
    ///
    /// On a follower the command is forwarded to the leader (`Raft.ForwardStream`);
    /// while there is no leader (an election) it keeps trying until
    /// `Timings::leader_deadline`. A leader without a reachable majority
    /// refuses at once with [`RaftError::NoQuorum`]. A forwarded write whose
    /// answer is lost may still be committed: callers that retry must be
    /// idempotent.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Applied), RaftError> {
        let deadline = Instant::now() + self.timings.leader_deadline;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let last = match self.propose_local(cmd.clone(), remaining.min(self.timings.write_timeout)).await {
                Err(RaftError::NotLeader { leader: Some(leader), leader_addr: Some(addr) }) if leader != self.id => {
                    match self.forwarder.forward(leader, &addr, cmd.clone(), deadline).await {
                        Attempt::Done(result) => return result,
                        Attempt::Retry(e) => e,
                    }
                }
                Err(e @ RaftError::NotLeader { .. }) => e,
                other => return other,
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(last);
            }
            tracing::debug!(error = %last, "retrying a write through the leader");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Proposes on this node only (no forwarding), waiting at most `timeout`
    /// for the commit. On the leader, commands proposed at the same time are
    /// committed together as one entry (see `batcher.rs`).
    pub(crate) async fn propose_local(&self, cmd: Command, timeout: Duration) -> Result<(u64, Applied), RaftError> {
        let (index, mut results) = self.propose_local_many(vec![cmd], timeout).await?;
        let applied = results.pop().ok_or_else(|| RaftError::Fatal(format!("no result for the entry at {index}")))?;
        Ok((index, applied))
    }

    /// [`propose_local`](Self::propose_local) of several commands, committed
    /// in the same entry and each applied on its own; their results in order.
    pub(crate) async fn propose_local_many(
        &self,
        cmds: Vec<Command>,
        timeout: Duration,
    ) -> Result<(u64, Vec<Applied>), RaftError> {
        self.check_quorum()?;
        {
            // A follower that knows the leader says so at once (as
            // `client_write` would), without a trip through the batcher.
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader && m.current_leader.is_some_and(|l| l != self.id) {
                let (leader, leader_addr) = Self::leader_of(&m);
                return Err(RaftError::NotLeader { leader, leader_addr });
            }
        }
        match tokio::time::timeout(timeout, self.batcher.propose(cmds)).await {
            Err(_) => Err(RaftError::Timeout(format!(
                "the write was not committed within {timeout:?} (a majority of the managers may be unreachable); \
                 it may still be committed"
            ))),
            Ok(outcome) => outcome,
        }
    }

    /// Maps a failed call to the leader. `unavailable` is retried only when
    /// nothing can have been proposed: the leader refused before proposing
    /// (`x-stackd-refused`), or the connection was never made (refused,
    /// unreachable). A connection lost after the request went out may have
    /// committed it: that is a [`RaftError::Timeout`], never retried, so a
    /// write is not applied twice.
    fn leader_failure(leader: u64, status: tonic::Status) -> Attempt<RaftError> {
        use tonic::Code;
        let refused = status.metadata().get(metadata::REFUSED).and_then(|v| v.to_str().ok()).map(str::to_string);
        match status.code() {
            Code::Unavailable if refused.as_deref() == Some("not-leader") => {
                let leader_addr =
                    status.metadata().get(metadata::LEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
                Attempt::Retry(RaftError::NotLeader { leader: None, leader_addr })
            }
            Code::Unavailable if refused.is_some() => {
                Attempt::Retry(RaftError::NoQuorum(error::no_quorum_reason(&status)))
            }
            Code::Unavailable if stackd_tls::never_connected(&status) => Attempt::Retry(RaftError::NoQuorum(format!(
                "the leader (node {leader:016x}) is unavailable: {}",
                status.message()
            ))),
            Code::Unavailable => Attempt::Done(RaftError::Timeout(format!(
                "the connection to the leader (node {leader:016x}) was lost; the write may have been applied: {}",
                status.message()
            ))),
            Code::DeadlineExceeded | Code::Cancelled => Attempt::Done(RaftError::Timeout(format!(
                "the leader (node {leader:016x}) did not answer in time: {}",
                status.message()
            ))),
            _ => Attempt::Done(RaftError::Remote(status.message().to_string())),
        }
    }

    /// The state machine handle.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This node's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The timings this node runs with.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// A look at Raft's metrics.
    pub fn status(&self) -> RaftStatus {
        let m = self.metrics();
        let (leader, leader_addr) = Self::leader_of(&m);
        let is_leader = m.state == ServerState::Leader;
        let members: Vec<u64> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
        RaftStatus {
            id: self.id,
            leader,
            leader_addr,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_leader,
            has_quorum: is_leader && self.peers.leader_has_quorum(self.id, &m),
            reachable: self.peers.reachable(self.id, members),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            snapshots_installed: self.shared.snapshots_installed(),
        }
    }

    /// How long the writes of this node's log take (`/metrics`).
    pub fn append_latency(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.append_latency.clone()
    }

    /// A receiver of "this node leads with a reachable majority", updated on
    /// every metrics change and every heartbeat period (losing contact with
    /// the others changes no metric).
    pub fn leader_watch(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Whether this node leads with a reachable majority right now (what
    /// [`leader_watch`](Self::leader_watch) last reported).
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// The address of the leader when another node leads, as the membership
    /// names it: where a client this node refuses should go. `None` when no
    /// leader is known, or when this node is the leader in openraft's eyes
    /// (without a majority it has no better address to give).
    pub fn leader_addr(&self) -> Option<String> {
        match Self::leader_of(&self.metrics()) {
            (Some(leader), addr) if leader != self.id => addr,
            _ => None,
        }
    }

    /// A connection of its own to the leader, when another node leads (see
    /// [`Peers::own_channel`]); `None` when no other leader is known.
    pub(crate) fn leader_channel(&self) -> Option<Result<tonic::transport::Channel, PeerError>> {
        self.leader_addr().map(|addr| self.peers.own_channel(&addr))
    }

    /// Asks for a snapshot now (returns once queued).
    pub async fn trigger_snapshot(&self) -> Result<(), RaftError> {
        self.raft.trigger().snapshot().await.map_err(|e| RaftError::Fatal(e.to_string()))
    }

    /// Takes a snapshot that includes entry `upto`, then drops the log up to
    /// it: after a restore, whose one entry holds the whole state, a manager
    /// that joins gets the state as a chunked snapshot, not as one message
    /// larger than any message limit.
    pub(crate) async fn snapshot_and_purge(&self, upto: u64, timeout: Duration) -> Result<(), RaftError> {
        self.trigger_snapshot().await?;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= upto), "a snapshot after the restore")
            .await
            .map_err(|e| RaftError::Fatal(e.to_string()))?;
        self.raft.trigger().purge_log(upto).await.map_err(|e| RaftError::Fatal(e.to_string()))
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        self.stopped.cancel();
        let _ = self.raft.shutdown().await;
        self.leading.send_replace(false);
    }

    /// Resolves once [`RaftNode::shutdown`] was called.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.stopped.clone().cancelled_owned()
    }
}

/// Publishes "leads with a reachable majority" into `leading` until Raft stops.
async fn watch_leadership(
    mut metrics: watch::Receiver<Metrics>,
    peers: Arc<Peers>,
    id: u64,
    leading: Arc<watch::Sender<bool>>,
    period: Duration,
) {
    loop {
        let (is_leader, now) = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader, peers.leader_has_quorum(id, &m))
        };
        leading.send_if_modified(|v| {
            if *v == now {
                return false;
            }
            if is_leader && !now {
                tracing::warn!("this manager leads but lost contact with a majority: refusing writes and reads");
            } else if is_leader && now {
                tracing::info!("this manager leads with a majority");
            }
            *v = now;
            true
        });
        tokio::select! {
            r = metrics.changed() => if r.is_err() {
                leading.send_replace(false);
                return;
            },
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests;
