//! What the cluster state says, as numbers for `/metrics`: a pure function
//! of a snapshot of the state ([`state_metrics`]); the manager encodes them
//! on each scrape.
//!
//! Labels are kept to stack, service, node and a small closed set of
//! states and reasons: never a task id, never free text (a pending task's
//! reason is reduced to its [`PendingReason`]).

use std::collections::BTreeMap;

use crate::model::{DesiredState, NodeRole, NodeState, ServiceMode, TaskState, Timestamp, UpdateState};
use crate::state::ClusterState;

/// Why a pending task waits, reduced to a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PendingReason {
    /// Not looked at by the scheduler yet (or the reason is unknown).
    Unscheduled,
    /// The cluster has no nodes.
    NoNodes,
    /// No node is ready.
    NodeNotReady,
    /// Nodes are paused or drained.
    NodeAvailability,
    /// A placement constraint holds nowhere.
    Constraint,
    /// `max_replicas_per_node` reached everywhere.
    MaxReplicas,
    /// Not enough CPU.
    Cpu,
    /// Not enough memory.
    Memory,
    /// Not enough of a generic resource.
    GenericResource,
    /// A published port is taken.
    Port,
}

impl PendingReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unscheduled => "unscheduled",
            Self::NoNodes => "no_nodes",
            Self::NodeNotReady => "node_not_ready",
            Self::NodeAvailability => "node_availability",
            Self::Constraint => "constraint",
            Self::MaxReplicas => "max_replicas",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::GenericResource => "generic_resource",
            Self::Port => "port",
        }
    }

    /// The reason of the scheduler's text (`3 nodes: insufficient memory: …;
    /// 1 node: constraint … not met`) that the most nodes give.
    pub fn of(unplaceable: &str) -> Self {
        if unplaceable.trim().is_empty() {
            return Self::Unscheduled;
        }
        if unplaceable.starts_with("no nodes") {
            return Self::NoNodes;
        }
        let mut best: Option<(u64, Self)> = None;
        for part in unplaceable.split("; ") {
            let (count, why) = match part.split_once(": ") {
                Some((head, why)) => {
                    let n = head.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(1);
                    (n, why)
                }
                None => (1, part),
            };
            let reason = if why.starts_with("node not ready") {
                Self::NodeNotReady
            } else if why.starts_with("node availability") {
                Self::NodeAvailability
            } else if why.starts_with("constraint") {
                Self::Constraint
            } else if why.starts_with("max_replicas_per_node") {
                Self::MaxReplicas
            } else if why.starts_with("insufficient CPU") {
                Self::Cpu
            } else if why.starts_with("insufficient memory") {
                Self::Memory
            } else if why.starts_with("insufficient ") {
                Self::GenericResource
            } else if why.starts_with("port ") {
                Self::Port
            } else {
                Self::Unscheduled
            };
            if best.is_none_or(|(n, _)| count > n) {
                best = Some((count, reason));
            }
        }
        best.map(|(_, r)| r).unwrap_or(Self::Unscheduled)
    }
}

/// Every rollout state, in the order `/metrics` lists them.
pub const ROLLOUT_STATES: [UpdateState; 6] = [
    UpdateState::Completed,
    UpdateState::Updating,
    UpdateState::Paused,
    UpdateState::RollingBack,
    UpdateState::RolledBack,
    UpdateState::Failed,
];

/// A service's rollout state as a label value.
pub fn rollout_state(s: UpdateState) -> &'static str {
    match s {
        UpdateState::Completed => "completed",
        UpdateState::Updating => "updating",
        UpdateState::Paused => "paused",
        UpdateState::RollingBack => "rolling_back",
        UpdateState::RolledBack => "rolled_back",
        UpdateState::Failed => "failed",
    }
}

/// A node's state as a label value.
pub fn node_state(s: NodeState) -> &'static str {
    match s {
        NodeState::Unknown => "unknown",
        NodeState::Ready => "ready",
        NodeState::Down => "down",
    }
}

/// A service, as its metrics name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The stack.
    pub stack: String,
    /// The service's name in its stack (`web`, not `shop_web`).
    pub service: String,
}

impl ServiceKey {
    /// The key of `svc`: its stack, and its name in that stack.
    fn of(svc: &crate::model::Service) -> Self {
        let service = svc.name.strip_prefix(&format!("{}_", svc.stack)).unwrap_or(&svc.name).to_string();
        ServiceKey { stack: svc.stack.clone(), service }
    }
}

/// One service's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFigures {
    /// Tasks wanted: the replicas (or completions) of a replicated service
    /// or job; for a global service, its tasks that are wanted.
    pub desired: u64,
    /// Its current tasks (those that hold a slot: wanted, or stopping) by
    /// observed state.
    pub tasks: BTreeMap<TaskState, u64>,
    /// Its pending tasks by why they wait.
    pub pending: BTreeMap<PendingReason, u64>,
    /// Where its rollout is.
    pub rollout: UpdateState,
    /// Its tasks that failed since it was created (each a restart of its slot).
    pub failures: u64,
    /// Its autoscaling, if it has a policy.
    pub autoscale: Option<AutoscaleFigures>,
}

/// An autoscaled service's policy and last measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoscaleFigures {
    /// The policy's bounds.
    pub min: u64,
    /// The policy's bounds.
    pub max: u64,
    /// What is measured: `cpu_percent` or `connections`.
    pub metric: &'static str,
    /// The target per replica, in the metric's unit.
    pub target: u32,
    /// The last measurement recorded, in thousandths of the unit.
    pub measured_milli: Option<u64>,
}

/// Everything [`state_metrics`] reads off the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMetrics {
    /// By service.
    pub services: BTreeMap<ServiceKey, ServiceFigures>,
    /// Nodes by (role, state, availability).
    pub nodes: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// The end of the last scheduled snapshot taken whole (Unix ms), 0: none.
    pub last_snapshot_ok: Timestamp,
    /// The tick of the last scheduled snapshot that failed (or whose upload
    /// failed), 0: none.
    pub last_snapshot_failed: Timestamp,
    /// The applied state's restore generation.
    pub restore_generation: u64,
}

/// The figures of `state`.
pub fn state_metrics(state: &ClusterState) -> StateMetrics {
    let mut out = StateMetrics { restore_generation: state.restore_generation, ..StateMetrics::default() };
    for svc in state.services.values() {
        let figures = out.services.entry(ServiceKey::of(svc)).or_default();
        figures.rollout = svc.update.state;
        figures.failures = svc.task_failures;
        figures.autoscale = svc.spec.autoscale.map(|p| {
            let (metric, target) = match p.target {
                crate::autoscale::Target::Cpu { percent } => ("cpu_percent", percent),
                crate::autoscale::Target::Connections { per_replica } => ("connections", per_replica),
            };
            AutoscaleFigures {
                min: p.min,
                max: p.max,
                metric,
                target,
                measured_milli: svc.autoscale.as_ref().and_then(|a| a.measured_milli),
            }
        });
        figures.desired = match svc.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::ReplicatedJob { replicas, .. } => replicas,
            // Counted from its wanted tasks below.
            _ => 0,
        };
    }
    let global: std::collections::BTreeSet<_> = state
        .services
        .values()
        .filter(|s| !matches!(s.spec.mode, ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. }))
        .map(|s| s.id.clone())
        .collect();
    for task in state.tasks.values() {
        if !task.occupies_slot() {
            continue;
        }
        let Some(svc) = state.services.get(&task.service_id) else { continue };
        let figures = out.services.entry(ServiceKey::of(svc)).or_default();
        *figures.tasks.entry(task.status.state).or_default() += 1;
        if task.status.state == TaskState::Pending || (task.status.state == TaskState::New && task.node_id.is_none()) {
            *figures.pending.entry(PendingReason::of(&task.unplaceable)).or_default() += 1;
        }
        if global.contains(&task.service_id) && task.desired_state == DesiredState::Running {
            figures.desired += 1;
        }
    }
    for node in state.nodes.values() {
        let role = match node.role {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        };
        *out.nodes.entry((role, node_state(node.state), node.availability.as_str())).or_default() += 1;
    }
    for record in &state.snapshots.taken {
        if record.error.is_empty() && record.remote_error.is_empty() {
            out.last_snapshot_ok = out.last_snapshot_ok.max(record.tick);
        } else {
            out.last_snapshot_failed = out.last_snapshot_failed.max(record.tick);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_reason_is_the_one_most_nodes_give() {
        assert_eq!(PendingReason::of(""), PendingReason::Unscheduled);
        assert_eq!(PendingReason::of("no nodes in the cluster"), PendingReason::NoNodes);
        assert_eq!(
            PendingReason::of("1 node: node not ready; 3 nodes: insufficient memory: needs 512 MiB, 100 MiB free"),
            PendingReason::Memory
        );
        assert_eq!(
            PendingReason::of(
                "2 nodes: constraint node.role==manager not met; 1 node: insufficient CPU: needs 2.00, 1.00 free"
            ),
            PendingReason::Constraint
        );
        assert_eq!(PendingReason::of("1 node: insufficient gpu: needs 2, 0 free"), PendingReason::GenericResource);
        assert_eq!(PendingReason::of("4 nodes: port 80/tcp already published on the node"), PendingReason::Port);
        assert_eq!(PendingReason::of("1 node: node availability is drain"), PendingReason::NodeAvailability);
        assert_eq!(PendingReason::of("5 nodes: max_replicas_per_node 1 reached"), PendingReason::MaxReplicas);
        assert_eq!(PendingReason::of("something new"), PendingReason::Unscheduled);
    }

    /// Every refusal of the scheduler, as it words it, has its own reason:
    /// a change of wording there fails here.
    #[test]
    fn every_scheduler_refusal_maps_to_its_reason() {
        use crate::model::{Availability, Protocol};
        use crate::scheduler::Refusal;
        let cases = [
            (Refusal::NotReady, PendingReason::NodeNotReady),
            (Refusal::NotActive(Availability::Drain), PendingReason::NodeAvailability),
            (Refusal::Constraint("node.labels.zone==a".into()), PendingReason::Constraint),
            (Refusal::MaxReplicas(1), PendingReason::MaxReplicas),
            (Refusal::Cpu(2_000_000_000, 0), PendingReason::Cpu),
            (Refusal::Memory(1 << 30, 0), PendingReason::Memory),
            (Refusal::Generic("gpu".into(), 2, 0), PendingReason::GenericResource),
            (Refusal::PortInUse(80, Protocol::Tcp), PendingReason::Port),
        ];
        for (refusal, reason) in cases {
            assert_eq!(PendingReason::of(&format!("2 nodes: {refusal}")), reason, "{refusal}");
        }
    }
}
