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
use crate::model::{
    Availability, DesiredState, Node, NodeId, NodeState, Protocol, Resources, Task, TaskState, engine_label, node_label,
};
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
    /// A placement constraint does not hold on the node.
    Constraint(String),
    /// The node runs `max_replicas_per_node` tasks of the service already.
    MaxReplicas(u64),
    /// Not enough unreserved CPU on the node (needed, free; nano CPUs).
    Cpu(u64, u64),
    /// Not enough unreserved memory on the node (needed, free; bytes).
    Memory(u64, u64),
    /// Not enough of a generic resource on the node (kind, needed, free).
    Generic(String, u64, u64),
    /// A port the task publishes on its node is taken there.
    PortInUse(u16, Protocol),
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

fn cpus(nano: u64) -> String {
    format!("{:.2}", nano as f64 / 1e9)
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotReady => f.write_str("node not ready"),
            Refusal::NotActive(a) => write!(f, "node availability is {}", format!("{a:?}").to_lowercase()),
            Refusal::Constraint(c) => write!(f, "constraint {c} not met"),
            Refusal::MaxReplicas(n) => write!(f, "max_replicas_per_node {n} reached"),
            Refusal::Cpu(need, free) => write!(f, "insufficient CPU: needs {}, {} free", cpus(*need), cpus(*free)),
            Refusal::Memory(need, free) => write!(f, "insufficient memory: needs {}, {} free", mib(*need), mib(*free)),
            Refusal::Generic(kind, need, free) => write!(f, "insufficient {kind}: needs {need}, {free} free"),
            Refusal::PortInUse(p, proto) => write!(f, "port {p}/{} already published on the node", proto.as_str()),
        }
    }
}

#[derive(Default)]
struct NodeLoad {
    ports: BTreeSet<(u16, Protocol)>,
    total: usize,
    per_service: BTreeMap<String, usize>,
    reserved: Resources,
}

impl NodeLoad {
    fn add(&mut self, t: &Task) {
        self.ports.extend(t.template.node_ports());
        self.total += 1;
        *self.per_service.entry(t.service_id.clone()).or_default() += 1;
        reserve(&mut self.reserved, &t.template.resources.reservations);
    }
}

/// Adds the reservation `r` to `total`.
fn reserve(total: &mut Resources, r: &Resources) {
    total.nano_cpus += r.nano_cpus;
    total.memory_bytes += r.memory_bytes;
    for (kind, n) in &r.generic {
        *total.generic.entry(kind.clone()).or_default() += n;
    }
}

/// What the tasks on `node` reserve, as the scheduler counts it against the
/// node's resources: the tasks that occupy their slot there (wanted
/// running, or not yet stopped).
pub fn reserved_on(state: &ClusterState, node: &str) -> Resources {
    let mut total = Resources::default();
    for t in state.tasks.values().filter(|t| t.occupies_slot() && t.node_id.as_deref() == Some(node)) {
        reserve(&mut total, &t.template.resources.reservations);
    }
    total
}

/// Runs the filters; the first refusal, if any. A node that reports no CPU or
/// memory (0) is not checked for it.
fn check(node: &Node, load: &NodeLoad, task: &Task) -> Option<Refusal> {
    if node.state != NodeState::Ready {
        return Some(Refusal::NotReady);
    }
    if node.availability != Availability::Active {
        return Some(Refusal::NotActive(node.availability));
    }
    let placement = &task.template.placement;
    if let Some(c) = placement.constraints.iter().find(|c| !c.matches(node)) {
        return Some(Refusal::Constraint(c.to_string()));
    }
    let max = placement.max_replicas_per_node;
    if max > 0 && load.per_service.get(&task.service_id).copied().unwrap_or(0) as u64 >= max {
        return Some(Refusal::MaxReplicas(max));
    }
    let want = &task.template.resources.reservations;
    let have = &node.resources;
    if want.nano_cpus > 0 && have.nano_cpus > 0 {
        let free = have.nano_cpus.saturating_sub(load.reserved.nano_cpus);
        if want.nano_cpus > free {
            return Some(Refusal::Cpu(want.nano_cpus, free));
        }
    }
    if want.memory_bytes > 0 && have.memory_bytes > 0 {
        let free = have.memory_bytes.saturating_sub(load.reserved.memory_bytes);
        if want.memory_bytes > free {
            return Some(Refusal::Memory(want.memory_bytes, free));
        }
    }
    // Unlike CPU and memory, a generic resource the node does not advertise is none.
    for (kind, &need) in want.generic.iter().filter(|(_, n)| **n > 0) {
        let have = have.generic.get(kind).copied().unwrap_or(0);
        let free = have.saturating_sub(load.reserved.generic.get(kind).copied().unwrap_or(0));
        if need > free {
            return Some(Refusal::Generic(kind.clone(), need, free));
        }
    }
    task.template.node_ports().find(|p| load.ports.contains(p)).map(|(p, proto)| Refusal::PortInUse(p, proto))
}

/// The nodes that could take one more task like `task` now: every filter
/// of the scheduler passes, given what the cluster's tasks occupy (the
/// rebalance orchestrator moves tasks only towards them).
pub fn nodes_with_room(state: &ClusterState, task: &Task) -> std::collections::BTreeSet<NodeId> {
    let mut loads: BTreeMap<&NodeId, NodeLoad> = state.nodes.keys().map(|id| (id, NodeLoad::default())).collect();
    for t in state.tasks.values().filter(|t| t.occupies_slot()) {
        if let Some(load) = t.node_id.as_ref().and_then(|n| loads.get_mut(n)) {
            load.add(t);
        }
    }
    state
        .nodes
        .values()
        .filter(|n| loads.get(&n.id).is_some_and(|load| check(n, load, task).is_none()))
        .map(|n| n.id.clone())
        .collect()
}

/// How a node ranks for a task, lowest first: tasks of the service per
/// preference value, tasks of the service on the node, tasks on the node.
type Rank = (Vec<usize>, usize, usize);

/// The value of a preference key on a node. As in swarmkit (`nodeSet.tree`),
/// only `node.labels.<label>` and `engine.labels.<label>` (prefix in any
/// case, label as written) spread: a node without the label has the empty
/// value, and any other key has the same value on every node, so it spreads
/// nothing.
fn preference_value<'a>(node: &'a Node, key: &str) -> &'a str {
    match (node_label(key), engine_label(key)) {
        (Some(l), _) => node.labels.get(l),
        (None, Some(l)) => node.engine.labels.get(l),
        (None, None) => None,
    }
    .map_or("", String::as_str)
}

impl Scheduler for SpreadScheduler {
    fn schedule(&self, state: &ClusterState) -> Vec<Placement> {
        self.schedule_at_most(state, usize::MAX)
    }
}

/// Why no node takes `task`, from the refusal of each node.
fn unplaceable_reason(state: &ClusterState, loads: &BTreeMap<&NodeId, NodeLoad>, task: &Task) -> String {
    if state.nodes.is_empty() {
        return "no nodes in the cluster".to_string();
    }
    let mut refusals: BTreeMap<Refusal, usize> = BTreeMap::new();
    for (id, node) in &state.nodes {
        let Some(load) = loads.get(id) else { continue };
        if let Some(r) = check(node, load, task) {
            *refusals.entry(r).or_default() += 1;
        }
    }
    refusals
        .iter()
        .map(|(r, n)| format!("{n} node{}: {r}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A node's rank for a task of `service` without placement preferences:
/// fewer tasks of the service, then fewer tasks in all (then the lower id).
fn plain_rank(load: &NodeLoad, service: &str) -> (usize, usize) {
    (load.per_service.get(service).copied().unwrap_or(0), load.total)
}

impl SpreadScheduler {
    /// The decisions for the first `limit` tasks that wait for a node (in
    /// the order of their creation), as [`Scheduler::schedule`] makes them:
    /// the controller places a bounded batch per pass, so that one log
    /// entry stays small and tasks start while the rest are placed.
    ///
    /// The pending tasks of one service revision come in runs (a plan
    /// creates them together). For a run without placement preferences the
    /// nodes that can take the run's template are weighed once, in a heap by
    /// rank, and each placement re-weighs only the node it chose (a node's
    /// fitness and rank depend only on its own load): a run of `k` tasks on
    /// `n` nodes costs `(n + k) log n`, not `k × n`, and chooses exactly
    /// what a look at every node per task would. A run with preferences
    /// (whose ranks depend on every node's share of a label value) weighs
    /// every node per task.
    pub fn schedule_at_most(&self, state: &ClusterState, limit: usize) -> Vec<Placement> {
        let Some((mut pending, mut loads)) = pending_and_loads(state) else { return Vec::new() };
        pending.truncate(limit);
        let mut out = Vec::with_capacity(pending.len());
        let mut rest = &pending[..];
        while let Some(first) = rest.first() {
            let len =
                rest.iter().take_while(|t| t.service_id == first.service_id && t.revision == first.revision).count();
            let (run, after) = rest.split_at(len);
            rest = after;
            if first.template.placement.preferences.is_empty() {
                place_run(state, &mut loads, run, &mut out);
            } else {
                for task in run {
                    place_one(state, &mut loads, task, &mut out);
                }
            }
        }
        out
    }
}

/// The tasks that wait for a node, in the order they are placed (of their
/// creation), and what every node holds; `None` when no task waits (the
/// common case of a controller tick: no need to weigh the nodes).
fn pending_and_loads(state: &ClusterState) -> Option<(Vec<&Task>, BTreeMap<&NodeId, NodeLoad>)> {
    let mut pending: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| {
            t.node_id.is_none() && t.desired_state == DesiredState::Running && t.status.state <= TaskState::Pending
        })
        .collect();
    if pending.is_empty() {
        return None;
    }
    let mut loads: BTreeMap<&NodeId, NodeLoad> = state.nodes.keys().map(|id| (id, NodeLoad::default())).collect();
    for t in state.tasks.values().filter(|t| t.occupies_slot()) {
        if let Some(load) = t.node_id.as_ref().and_then(|n| loads.get_mut(n)) {
            load.add(t);
        }
    }
    pending.sort_by(|a, b| (a.created_at, &a.service_name, a.slot).cmp(&(b.created_at, &b.service_name, b.slot)));
    Some((pending, loads))
}

/// Places a run of tasks of one service revision without preferences
/// through a heap of the nodes that can take them; see
/// [`SpreadScheduler::schedule_at_most`].
fn place_run<'a>(
    state: &'a ClusterState,
    loads: &mut BTreeMap<&'a NodeId, NodeLoad>,
    run: &[&Task],
    out: &mut Vec<Placement>,
) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let Some(template) = run.first() else { return };
    let service = template.service_id.as_str();
    let mut heap: BinaryHeap<Reverse<((usize, usize), &NodeId)>> = state
        .nodes
        .iter()
        .filter_map(|(id, node)| {
            let load = loads.get(id)?;
            check(node, load, template).is_none().then(|| Reverse((plain_rank(load, service), id)))
        })
        .collect();
    for (k, task) in run.iter().enumerate() {
        let Some(Reverse((_, id))) = heap.pop() else {
            // No node left for the run: the same reason for all that remain.
            let reason = unplaceable_reason(state, loads, task);
            out.extend(
                run[k..].iter().map(|t| Placement::Unplaceable { task_id: t.id.clone(), reason: reason.clone() }),
            );
            return;
        };
        let (Some(load), Some(node)) = (loads.get_mut(id), state.nodes.get(id)) else { continue };
        load.add(task);
        out.push(Placement::Assign { task_id: task.id.clone(), node_id: id.clone() });
        if check(node, load, task).is_none() {
            heap.push(Reverse((plain_rank(load, service), id)));
        }
    }
}

/// Places one task, weighing every node (the ranks of placement
/// preferences depend on every node's tasks).
fn place_one<'a>(
    state: &'a ClusterState,
    loads: &mut BTreeMap<&'a NodeId, NodeLoad>,
    task: &Task,
    out: &mut Vec<Placement>,
) {
    // Tasks of the service per value of each preference key, for spreading.
    let prefs = &task.template.placement.preferences;
    let spread: Vec<BTreeMap<&str, usize>> = prefs
        .iter()
        .map(|key| {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for (id, node) in &state.nodes {
                let n = loads.get(id).and_then(|l| l.per_service.get(&task.service_id)).copied().unwrap_or(0);
                *counts.entry(preference_value(node, key)).or_default() += n;
            }
            counts
        })
        .collect();
    let mut best: Option<(&NodeId, Rank)> = None;
    for (id, node) in &state.nodes {
        let Some(load) = loads.get(id) else { continue };
        if check(node, load, task).is_none() {
            let by_pref: Vec<usize> = prefs
                .iter()
                .zip(&spread)
                .map(|(key, counts)| counts.get(preference_value(node, key)).copied().unwrap_or(0))
                .collect();
            let rank = (by_pref, load.per_service.get(&task.service_id).copied().unwrap_or(0), load.total);
            if best.as_ref().is_none_or(|(_, b)| rank < *b) {
                best = Some((id, rank));
            }
        }
    }
    match best {
        Some((id, _)) => {
            if let Some(load) = loads.get_mut(id) {
                load.add(task);
            }
            out.push(Placement::Assign { task_id: task.id.clone(), node_id: id.clone() });
        }
        None => out
            .push(Placement::Unplaceable { task_id: task.id.clone(), reason: unplaceable_reason(state, loads, task) }),
    }
}

/// The decisions of [`Scheduler::schedule`] that change something, the
/// ones worth proposing: every assignment, and a refusal only when it is
/// news — the task is not pending any more, or was refused for another
/// reason. Without this an unplaceable task would write a log entry on
/// every controller tick, and an idle cluster would not be idle.
pub fn effective(state: &ClusterState, decisions: Vec<Placement>) -> Vec<Placement> {
    decisions
        .into_iter()
        .filter(|d| match d {
            Placement::Assign { .. } => true,
            Placement::Unplaceable { task_id, reason } => state
                .tasks
                .get(task_id)
                .is_some_and(|t| t.unplaceable != *reason || t.status.state != TaskState::Pending),
        })
        .collect()
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeRole, TaskStatus, TaskTemplate};

    fn task(id: &str, state: TaskState, unplaceable: &str) -> Task {
        Task {
            id: id.into(),
            service_id: "s".into(),
            service_name: "app_web".into(),
            stack: "app".into(),
            slot: 1,
            node_id: None,
            revision: 1,
            template: TaskTemplate::default(),
            desired_state: DesiredState::Running,
            status: TaskStatus { state, ..TaskStatus::default() },
            unplaceable: unplaceable.into(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    fn refused(task_id: &str, reason: &str) -> Placement {
        Placement::Unplaceable { task_id: task_id.into(), reason: reason.into() }
    }

    #[test]
    fn every_assignment_takes_effect() {
        let assign = Placement::Assign { task_id: "gone".into(), node_id: "n1".into() };
        assert_eq!(effective(&ClusterState::default(), vec![assign.clone()]), [assign]);
    }

    #[test]
    fn a_refusal_takes_effect_only_when_it_is_news() {
        let mut state = ClusterState::default();
        for t in [
            task("known", TaskState::Pending, "1 node: node not ready"),
            task("fresh", TaskState::New, ""),
            task("other", TaskState::Pending, "1 node: port 80/tcp already published on the node"),
        ] {
            state.tasks.insert(t.id.clone(), t);
        }
        let why = "1 node: node not ready";
        let got = effective(
            &state,
            vec![refused("known", why), refused("fresh", why), refused("other", why), refused("gone", why)],
        );
        // Same reason, still pending: nothing to write. A task not pending yet,
        // or refused for another reason: written. A task removed meanwhile: dropped.
        assert_eq!(got, [refused("fresh", why), refused("other", why)]);
        assert!(effective(&state, vec![]).is_empty());
    }

    /// swarmkit `nodeSet.tree`: a `node.labels.` descriptor (prefix in any
    /// case) spreads over the label as written; any other descriptor
    /// (`node.id`, `node.hostname`) gives every node the same value.
    #[test]
    fn preference_values_follow_swarmkit() {
        let node = Node {
            id: "n1".into(),
            name: "n1".into(),
            addr: "10.0.0.5:4280".into(),
            role: NodeRole::Worker,
            availability: Availability::Active,
            state: NodeState::Ready,
            labels: [("rack".to_string(), "r1".to_string())].into_iter().collect(),
            resources: Resources::default(),
            engine_version: String::new(),
            engine: Default::default(),
            updated_at: 0,
        };
        assert_eq!(preference_value(&node, "node.labels.rack"), "r1");
        assert_eq!(preference_value(&node, "node.Labels.rack"), "r1");
        assert_eq!(preference_value(&node, "node.labels.Rack"), "");
        assert_eq!(preference_value(&node, "node.id"), "");
        assert_eq!(preference_value(&node, "node.hostname"), "");
    }
}
