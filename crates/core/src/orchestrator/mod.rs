//! The orchestrators: compare desired services with existing tasks and
//! return a [`Plan`]. Pure functions of the state and `now`.
//!
//! ```text
//!            ClusterState + now
//!                   │
//!     ┌─────────────┼───────────────┐
//!     ▼             ▼               ▼
//!  slots()      restart::         update::
//!  (replicated: decide()          step()
//!   1..replicas, (dead task →     (dirty slots → stop/create,
//!   global: one  replace after    monitor, pause / rollback)
//!   per node)    delay)
//!     └─────────────┼───────────────┘
//!                   ▼
//!             Plan + wake_at      → proposed through Raft as one command
//! ```
//!
//! Each slot of a service (a replica number, or a node for global services)
//! holds its tasks, newest last. The orchestrators look at one slot at a time:
//! fill it when empty, replace its task when it died, roll it when its
//! template is outdated, trim its history.
//!
//! Jobs (`replicated-job`, `global-job`) have their own orchestrator
//! (`job`): each slot runs until one task of the current revision completed.
//!
//! Before any of them, the start order (`depends`): a service that holds no
//! task yet waits until the services it depends on meet their condition.

mod depends;
mod job;
mod rebalance;
mod restart;
mod update;

use std::collections::BTreeMap;

use crate::command::{NewTask, Plan};
use crate::model::{
    Availability, DesiredState, NodeState, Service, ServiceMode, TASK_HISTORY_PER_SLOT, Task, Timestamp,
};
use crate::state::ClusterState;

/// What the orchestrators decided, and when they want to look again even if
/// nothing changes (a restart delay or a monitor period ends).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Orchestration {
    /// The changes to propose.
    pub plan: Plan,
    /// The earliest time a decision depends on.
    pub wake_at: Option<Timestamp>,
}

impl Orchestration {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The key of a slot: a replica number, or a node id for global services.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SlotKey {
    Replica(u64),
    Node(String),
}

/// Computes the plan that brings every service's tasks towards its spec.
pub fn orchestrate(state: &ClusterState, now: Timestamp) -> Orchestration {
    let mut out = Orchestration::default();
    // One pass over the tasks, not one per service: at 100,000 tasks and 100
    // services this is the difference between 10 ms and a second.
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    for svc in state.services.values() {
        // A revision whose image tag is being resolved creates no task yet:
        // each of its tasks runs the image the tag meant at the deploy.
        if svc.image.is_pending() {
            continue;
        }
        let slots = slots_of(by_service.get(svc.id.as_str()).into_iter().flatten().copied());
        let wanted = wanted_slots(state, svc);
        debug_assert!(wanted.is_sorted(), "the orchestrators binary-search the wanted slots");
        if depends::hold(state, svc, &slots, &wanted, &by_service, &mut out) {
            continue;
        }
        if svc.spec.mode.is_job() {
            job::service(state, svc, &slots, &wanted, now, &mut out);
        } else {
            service(state, svc, &slots, &wanted, now, &mut out);
        }
    }
    keep_within_resources(state, &mut out.plan);
    out
}

/// Drops the tasks the plan creates on their node (global ones, which never
/// pass the scheduler) that the node has not the CPU or memory left to
/// reserve, by the scheduler's rule (a node that reports 0 is not checked).
/// Tasks that hold their slot count, those the same plan stops included
/// until they have stopped; the next pass tries again. Found by the
/// scheduler's properties (issue 16): a global service reserved 1.5 CPUs on
/// a node of 1.
fn keep_within_resources(state: &ClusterState, plan: &mut Plan) {
    let wants = |nt: &NewTask| {
        let r = &state.services.get(&nt.service_id)?.spec.task.resources.reservations;
        (nt.node_id.is_some() && (r.nano_cpus > 0 || r.memory_bytes > 0)).then_some((r.nano_cpus, r.memory_bytes))
    };
    if !plan.create.iter().any(|nt| wants(nt).is_some()) {
        return;
    }
    let mut reserved: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in state.tasks.values().filter(|t| t.occupies_slot()) {
        if let Some(node) = &t.node_id {
            let r = &t.template.resources.reservations;
            let e = reserved.entry(node.as_str()).or_default();
            *e = (e.0 + r.nano_cpus, e.1 + r.memory_bytes);
        }
    }
    plan.create.retain(|nt| {
        let (Some(node), Some((cpu, mem))) = (nt.node_id.as_ref().and_then(|n| state.nodes.get(n)), wants(nt)) else {
            return true;
        };
        let e = reserved.entry(node.id.as_str()).or_default();
        let have = &node.resources;
        let fits = (have.nano_cpus == 0 || e.0 + cpu <= have.nano_cpus)
            && (have.memory_bytes == 0 || e.1 + mem <= have.memory_bytes);
        if fits {
            *e = (e.0 + cpu, e.1 + mem);
        }
        fits
    });
}

/// How many tasks of a service run, are wanted and (for jobs) completed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    /// Tasks of the current spec that run (for a job: of the current revision).
    pub running: u64,
    /// Tasks wanted: replicas, eligible nodes, or a job's completions.
    pub desired: u64,
    /// A job's slots completed at the current revision (0 for services).
    pub completed: u64,
}

/// The task counts `stackctl service ls` shows for `svc`.
pub fn service_counts(state: &ClusterState, svc: &Service) -> ServiceCounts {
    if svc.spec.mode.is_job() {
        return job::counts(state, svc);
    }
    let running = state
        .tasks_of(&svc.id)
        .filter(|t| t.desired_state == DesiredState::Running && t.is_up() && t.template == svc.spec.task)
        .count() as u64;
    ServiceCounts { running, desired: wanted_slots(state, svc).len() as u64, completed: 0 }
}

/// Says why a task failed: `task 0k3x9q2m7v1a (slot 1) failed with exit code 1`,
/// followed by the agent's error when it says more than the exit code.
pub fn describe_failure(t: &Task) -> String {
    let place = match (&t.node_id, t.slot) {
        (Some(node), 0) => format!("node {}", crate::model::prefix(node, 12)),
        (_, slot) => format!("slot {slot}"),
    };
    let mut why = format!("task {} ({place}) {}", crate::model::prefix(&t.id, 12), t.status.state);
    let mut err = t.status.err.as_str();
    if let Some(code) = t.status.exit_code {
        why.push_str(&format!(" with exit code {code}"));
        if err == format!("exit code {code}") {
            err = "";
        }
    }
    if !err.is_empty() {
        why.push_str(&format!(": {err}"));
    }
    why
}

/// The tasks of a service by slot, each slot's tasks oldest first.
pub(crate) fn group_slots<'a>(state: &'a ClusterState, svc: &'a Service) -> BTreeMap<SlotKey, Vec<&'a Task>> {
    slots_of(state.tasks_of(&svc.id))
}

/// `tasks` (of one service) by slot, each slot's tasks oldest first.
fn slots_of<'a>(tasks: impl Iterator<Item = &'a Task>) -> BTreeMap<SlotKey, Vec<&'a Task>> {
    let mut slots: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let key =
            if t.slot == 0 { SlotKey::Node(t.node_id.clone().unwrap_or_default()) } else { SlotKey::Replica(t.slot) };
        slots.entry(key).or_default().push(t);
    }
    for tasks in slots.values_mut() {
        tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    }
    slots
}

/// The slots a service should have filled, in key order.
fn wanted_slots(state: &ClusterState, svc: &Service) -> Vec<SlotKey> {
    match svc.spec.mode {
        ServiceMode::Replicated { replicas } | ServiceMode::ReplicatedJob { replicas, .. } => {
            (1..=replicas).map(SlotKey::Replica).collect()
        }
        // A node whose labels no longer meet the constraints loses its task, as in
        // swarmkit's global orchestrator (these tasks never pass the scheduler).
        ServiceMode::Global | ServiceMode::GlobalJob => state
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready && n.availability == Availability::Active)
            .filter(|n| svc.spec.task.placement.constraints.iter().all(|c| c.matches(n)))
            .map(|n| SlotKey::Node(n.id.clone()))
            .collect(),
    }
}

fn new_task(svc: &Service, key: &SlotKey) -> NewTask {
    let (slot, node_id) = match key {
        SlotKey::Replica(n) => (*n, None),
        SlotKey::Node(id) => (0, Some(id.clone())),
    };
    NewTask { service_id: svc.id.clone(), slot, node_id, revision: svc.revision }
}

fn service(
    state: &ClusterState,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    wanted: &[SlotKey],
    now: Timestamp,
    out: &mut Orchestration,
) {
    let empty = Vec::new();
    // Slots no longer wanted: stop their tasks, delete them once stopped.
    for (key, tasks) in slots {
        // `wanted` is in key order: a binary search, not a scan per slot
        // (at 1,000 slots × 100 services the scans took 300 ms a tick).
        if wanted.binary_search(key).is_ok() {
            continue;
        }
        // A global task on a paused node stays; on a drained, down or removed node it goes.
        if kept_on_paused_node(state, key) {
            continue;
        }
        for t in tasks {
            // A global task lost with its node waits for the node to come back.
            if t.is_orphaned() && matches!(key, SlotKey::Node(n) if state.nodes.contains_key(n)) {
                continue;
            }
            if t.desired_state == DesiredState::Running {
                out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
            } else if t.status.state.is_terminal() {
                out.plan.delete.push(t.id.clone());
            }
        }
    }
    let replicated = matches!(svc.spec.mode, ServiceMode::Replicated { .. });
    let mut dirty = Vec::new();
    for key in wanted {
        let all = slots.get(key).unwrap_or(&empty);
        // A replicated task on a drained node moves elsewhere, replacement
        // first: it keeps serving, outside the slot's count, until a task of
        // the slot runs on another node (healthy, for start-first), then
        // stops (see `drained_slot`).
        let moving = |t: &Task| svc.rebalance.as_ref().is_some_and(|r| r.moving.contains(&t.id));
        let (drained, here): (Vec<&Task>, Vec<&Task>) = all.iter().partition(|t| {
            replicated && t.desired_state == DesiredState::Running && (on_drained_node(state, t) || moving(t))
        });
        if !drained.is_empty() {
            let (moved, drained): (Vec<&Task>, Vec<&Task>) = drained.into_iter().partition(|t| moving(t));
            if !drained.is_empty() {
                drained_slot(svc, &drained, &here, out);
            }
            if !moved.is_empty() {
                moved_slot(svc, &moved, &here, out);
            }
        }
        let tasks = &here;
        let wanted_here: Vec<&Task> =
            tasks.iter().copied().filter(|t| t.desired_state == DesiredState::Running && !t.is_orphaned()).collect();
        // Tasks lost with their node stay wanted until a replacement is up:
        // the node may come back first with them (see `ClusterState::apply`, SetNodeState).
        if wanted_here.iter().any(|t| t.is_up()) {
            for t in tasks.iter().filter(|t| t.is_orphaned() && t.desired_state == DesiredState::Running) {
                out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
            }
        }
        // The slot's task of the current template (at most one: apply refuses a second).
        let current = wanted_here.iter().copied().find(|t| t.template == svc.spec.task);
        let outdated: Vec<&Task> = wanted_here.iter().copied().filter(|t| t.template != svc.spec.task).collect();
        // A slot emptied by a stop the orchestrators asked for (scale, update,
        // drain) fills at once; the restart delay applies to tasks that died on
        // their own, which restart::should_replace handles before the slot empties.
        if !tasks.iter().any(|t| t.occupies_slot()) {
            out.plan.create.push(new_task(svc, key));
            trim_history(svc, all, out);
            continue;
        }
        match current {
            Some(t) if t.status.state.is_terminal() => {
                if restart::should_replace(svc, all, t, now, out) {
                    out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
                    out.plan.create.push(new_task(svc, key));
                }
            }
            // The new task runs: outdated ones left by a start-first update stop.
            Some(t) if t.is_up() => {
                for old in &outdated {
                    out.plan.set_desired.push((old.id.clone(), DesiredState::Shutdown));
                }
            }
            Some(_) => {}
            None => {
                if let Some(old) = outdated
                    .iter()
                    .copied()
                    .max_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)))
                {
                    if old.status.state.is_terminal() {
                        // A dead task of an outdated template is replaced by the update at once.
                        out.plan.set_desired.push((old.id.clone(), DesiredState::Shutdown));
                        out.plan.create.push(new_task(svc, key));
                    } else {
                        dirty.push((key.clone(), old));
                    }
                }
            }
        }
        trim_history(svc, all, out);
    }
    update::step(state, svc, slots, wanted, &dirty, now, out);
    if replicated {
        rebalance::step(state, svc, slots, now, out);
    }
}

/// The tasks of a slot on a drained node (`drained`) stop once the slot's
/// other tasks (`here`) have a replacement of the current template that runs
/// on another node — healthy too when the update order is start-first. When
/// the replacement cannot be placed (`max_replicas_per_node`, full nodes),
/// they stop at once instead, so that the drain cannot deadlock, and a note
/// says so.
fn drained_slot(svc: &Service, drained: &[&Task], here: &[&Task], out: &mut Orchestration) {
    let wanted = |t: &&&Task| t.desired_state == DesiredState::Running && t.template == svc.spec.task;
    let replaced = replacement_ready(svc, here);
    let unplaceable = here.iter().filter(wanted).any(|t| t.node_id.is_none() && !t.unplaceable.is_empty());
    if !replaced && !unplaceable {
        return;
    }
    for t in drained {
        out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
        if !replaced {
            let node = t.node_id.as_deref().map_or("?", |n| crate::model::prefix(n, 12));
            out.plan.notes.push((
                svc.id.clone(),
                format!(
                    "drain of node {node}: no node can take a replacement for task {} before it stops; stopped first",
                    crate::model::prefix(&t.id, 12)
                ),
            ));
        }
    }
}

/// Whether the replacement among `here` (a slot's other tasks) of a task
/// leaving it runs: healthy too when the update order is start-first.
fn replacement_ready(svc: &Service, here: &[&Task]) -> bool {
    here.iter().filter(|t| t.desired_state == DesiredState::Running && t.template == svc.spec.task).any(|t| {
        match svc.spec.update.order {
            crate::model::UpdateOrder::StartFirst => t.is_up(),
            crate::model::UpdateOrder::StopFirst => t.status.state == crate::model::TaskState::Running,
        }
    })
}

/// The tasks of a slot a rebalance moves (`moved`) stop once their
/// replacement runs; a replacement that no node can take ends the
/// rebalance instead (it goes, the task stays): a rebalance never goes
/// below the replica count.
fn moved_slot(svc: &Service, moved: &[&Task], here: &[&Task], out: &mut Orchestration) {
    if replacement_ready(svc, here) {
        for t in moved {
            out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
        }
        return;
    }
    let stuck: Vec<&&Task> = here
        .iter()
        .filter(|t| t.desired_state == DesiredState::Running && t.node_id.is_none() && !t.unplaceable.is_empty())
        .collect();
    if let Some(r) = stuck.first() {
        for t in &stuck {
            out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
        }
        let why = format!("task {} cannot move: {}", crate::model::prefix(&moved[0].id, 12), r.unplaceable);
        out.plan.rebalanced.push((svc.id.clone(), why));
    }
}

/// Whether a global task on this node stays although its slot is no longer
/// wanted: the node is paused (no new tasks), not drained, down or removed.
fn kept_on_paused_node(state: &ClusterState, key: &SlotKey) -> bool {
    match key {
        SlotKey::Node(node) => {
            state.nodes.get(node).is_some_and(|n| n.availability == Availability::Pause && n.state == NodeState::Ready)
        }
        SlotKey::Replica(_) => false,
    }
}

/// Whether the task runs (or is to run) on a drained node.
fn on_drained_node(state: &ClusterState, t: &Task) -> bool {
    t.node_id.as_ref().and_then(|n| state.nodes.get(n)).is_some_and(|n| n.availability == Availability::Drain)
}

/// Deletes the oldest stopped tasks of a slot beyond the history limit. A
/// restart policy with `max_attempts` keeps enough history to count them.
fn trim_history(svc: &Service, tasks: &[&Task], out: &mut Orchestration) {
    let keep = TASK_HISTORY_PER_SLOT
        .max(usize::try_from(svc.spec.restart.max_attempts).unwrap_or(usize::MAX).saturating_add(1));
    let stopped: Vec<&&Task> =
        tasks.iter().filter(|t| t.desired_state == DesiredState::Shutdown && t.status.state.is_terminal()).collect();
    if stopped.len() > keep {
        for t in &stopped[..stopped.len() - keep] {
            out.plan.delete.push(t.id.clone());
        }
    }
}

#[cfg(test)]
mod drain_properties;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod rebalance_tests;
#[cfg(test)]
pub(crate) mod tests;
