//! The scheduler: assigns unassigned tasks to nodes, or says why each fits nowhere.
//!
//! ```text
//!  pending tasks ──► for each node: filters (ready? active? ports free?) ──► ranked nodes
//!                                       │ refusals counted by reason          │
//!                                       ▼                                     ▼
//!                          Placement::Unplaceable{reason}          Placement::Assign
//! ```
//!
//! The scheduler works on an immutable view of the state and returns
//! decisions as data; the manager proposes them through Raft. Tasks placed
//! in one round count for the next task of the same round.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::Placement;
use crate::model::{Availability, DesiredState, Node, NodeId, NodeState, Protocol, PublishMode, Task, TaskState};
use crate::state::ClusterState;

/// Places tasks on nodes. The multi-node scheduler implements the same trait.
pub trait Scheduler {
    /// Decisions for every task that waits for a node.
    fn schedule(&self, state: &ClusterState) -> Vec<Placement>;
}

/// Spreads tasks: a node with fewer tasks of the same service wins, then a
/// node with fewer tasks in all, then the lower node id (for determinism).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpreadScheduler;

/// Why a node was refused for a task.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The node's agent is not connected.
    NotReady,
    /// The operator paused or drained the node.
    NotActive(Availability),
    /// A port the task publishes on its node is taken there.
    PortInUse(u16, Protocol),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotReady => f.write_str("node not ready"),
            Refusal::NotActive(a) => write!(f, "node availability is {}", format!("{a:?}").to_lowercase()),
            Refusal::PortInUse(p, proto) => write!(f, "port {p}/{} already published on the node", proto.as_str()),
        }
    }
}

/// Ports a task binds on its node: host-mode ports, and (until the routing
/// mesh exists) ingress-mode ones too.
fn host_ports(t: &Task) -> impl Iterator<Item = (u16, Protocol)> + '_ {
    t.template
        .ports
        .iter()
        .filter(|p| matches!(p.mode, PublishMode::Host | PublishMode::Ingress))
        .filter_map(|p| p.published.map(|pp| (pp, p.protocol)))
}

struct NodeLoad {
    ports: BTreeSet<(u16, Protocol)>,
    total: usize,
    per_service: BTreeMap<String, usize>,
}

/// Runs the filters; the first refusal, if any.
fn check(node: &Node, load: &NodeLoad, task: &Task) -> Option<Refusal> {
    if node.state != NodeState::Ready {
        return Some(Refusal::NotReady);
    }
    if node.availability != Availability::Active {
        return Some(Refusal::NotActive(node.availability));
    }
    host_ports(task).find(|p| load.ports.contains(p)).map(|(p, proto)| Refusal::PortInUse(p, proto))
}

impl Scheduler for SpreadScheduler {
    fn schedule(&self, state: &ClusterState) -> Vec<Placement> {
        let mut loads: BTreeMap<&NodeId, NodeLoad> = state
            .nodes
            .keys()
            .map(|id| (id, NodeLoad { ports: BTreeSet::new(), total: 0, per_service: BTreeMap::new() }))
            .collect();
        for t in state.tasks.values().filter(|t| t.occupies_slot()) {
            if let Some(load) = t.node_id.as_ref().and_then(|n| loads.get_mut(n)) {
                load.ports.extend(host_ports(t));
                load.total += 1;
                *load.per_service.entry(t.service_id.clone()).or_default() += 1;
            }
        }
        let mut pending: Vec<&Task> = state
            .tasks
            .values()
            .filter(|t| {
                t.node_id.is_none() && t.desired_state == DesiredState::Running && t.status.state <= TaskState::Pending
            })
            .collect();
        pending.sort_by(|a, b| (a.created_at, &a.service_name, a.slot).cmp(&(b.created_at, &b.service_name, b.slot)));

        let mut out = Vec::new();
        for task in pending {
            let mut refusals: BTreeMap<Refusal, usize> = BTreeMap::new();
            let mut best: Option<(&NodeId, (usize, usize))> = None;
            for (id, node) in &state.nodes {
                let Some(load) = loads.get(id) else { continue };
                match check(node, load, task) {
                    Some(r) => *refusals.entry(r).or_default() += 1,
                    None => {
                        let rank = (load.per_service.get(&task.service_id).copied().unwrap_or(0), load.total);
                        if best.is_none_or(|(_, b)| rank < b) {
                            best = Some((id, rank));
                        }
                    }
                }
            }
            match best {
                Some((id, _)) => {
                    if let Some(load) = loads.get_mut(id) {
                        load.ports.extend(host_ports(task));
                        load.total += 1;
                        *load.per_service.entry(task.service_id.clone()).or_default() += 1;
                    }
                    out.push(Placement::Assign { task_id: task.id.clone(), node_id: id.clone() });
                }
                None => {
                    let reason = if state.nodes.is_empty() {
                        "no nodes in the cluster".to_string()
                    } else {
                        refusals
                            .iter()
                            .map(|(r, n)| format!("{n} node{}: {r}", if *n == 1 { "" } else { "s" }))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    out.push(Placement::Unplaceable { task_id: task.id.clone(), reason });
                }
            }
        }
        out
    }
}
