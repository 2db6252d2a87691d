//! The node monitor: declares nodes down when they stop heartbeating.
//!
//! ```text
//!  dispatcher sessions ─► last heartbeat per node ─┐
//!  snapshot, when this manager took the lead, now ─┴► liveness::down_nodes ─► propose SetNodeState Down
//!                                                      next wake-up: the first node to become late
//! ```
//!
//! A [`Reconciler`] run by [`crate::reconcile::run`] on every manager; it
//! acts only on the leader, and only [`LEADER_GRACE`] after it took the lead
//! (or regained its majority). Heartbeats are the leader's memory, in its
//! monotonic clock ([`mono_ms`]): the decision, in core, takes them as input.
//!
//! [`LEADER_GRACE`]: stackd_core::liveness::LEADER_GRACE
//! [`mono_ms`]: crate::reconcile::mono_ms

use std::time::Duration;

use stackd_core::liveness::down_nodes;
use stackd_core::model::{NodeId, NodeState};
use stackd_core::{ClusterState, Command};

use crate::dispatcher::Dispatcher;
use crate::raft::RaftNode;
use crate::reconcile::{Next, Pass, Reconciler, Tick};

/// How soon the monitor looks again after a node became ready (an applied
/// entry), or after a proposal failed.
const SETTLE: Duration = Duration::from_millis(500);

/// The node monitor, reading the heartbeats the dispatcher records.
pub(crate) struct NodeMonitor {
    dispatcher: Dispatcher,
}

impl NodeMonitor {
    /// A monitor of the sessions of `dispatcher`.
    pub(crate) fn new(dispatcher: Dispatcher) -> Self {
        Self { dispatcher }
    }
}

impl Reconciler for NodeMonitor {
    type Action = NodeId;
    const DEBOUNCE: Duration = SETTLE;

    fn decide(&mut self, _raft: &RaftNode, state: &ClusterState, tick: &Tick) -> Pass<NodeId> {
        let liveness = down_nodes(state, &self.dispatcher.last_seen(), tick.leading_since, tick.mono);
        let wake_in = liveness.wake_at.map(|w| Duration::from_millis(w.saturating_sub(tick.mono)));
        Pass { actions: liveness.down, wake_in }
    }

    async fn act(&mut self, raft: &RaftNode, down: Vec<NodeId>, tick: &Tick) -> Next {
        let mut next = Next::Again;
        for id in down {
            tracing::warn!(node = %id, "node missed its heartbeats: declaring it down");
            match raft.propose(Command::SetNodeState { id, state: NodeState::Down, at: tick.now }).await {
                Ok(_) => self.dispatcher.count_declared_down(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not mark node down");
                    next = Next::Retry(SETTLE);
                }
            }
        }
        next
    }
}
