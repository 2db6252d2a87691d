//! The job orchestrator: `replicated-job` and `global-job` services, whose
//! tasks run to completion (Swarm's jobs).
//!
//! A job's slots are those of its mode (replicas 1..=N, or one per eligible
//! node). Each slot must complete once per revision: a revision is one run of
//! the job, so deploying a changed spec runs it again, and an unchanged
//! deploy changes nothing.
//!
//! For every wanted slot, in this order:
//!
//! - a task of the current revision completed (exit 0): the slot is done.
//!   The task's desired state becomes shutdown (nothing more is wanted of it:
//!   it stops counting against the node's ports and reservations) and it
//!   stays as history with its container;
//! - the slot's newest task of the current revision is on its way: in flight;
//! - some task of the slot still runs (an earlier revision's being stopped):
//!   wait for it;
//! - the newest task of the current revision failed: the restart policy
//!   decides (for jobs `on-failure` is the default and `any` means the same:
//!   a completed task is never run again). When the policy gives up, the job
//!   cannot complete: its status becomes `failed`, naming the task;
//! - otherwise the slot gets a new task, at most `max_concurrent` slots of a
//!   replicated job in flight at once (0: `replicas`).
//!
//! Tasks of earlier revisions that still run are stopped. The status of the
//! revision's run (`Service::update`) goes from `updating` to `completed`
//! when every wanted slot is done, or to `failed`.

use std::collections::BTreeMap;

use super::restart::{self, Verdict};
use super::{
    Orchestration, ServiceCounts, SlotKey, describe_failure, group_slots, kept_on_paused_node, new_task,
    on_drained_node, trim_history, wanted_slots,
};
use crate::model::{
    DesiredState, RestartCondition, Service, ServiceMode, Task, TaskState, Timestamp, UpdateState, UpdateStatus,
};
use crate::state::ClusterState;

/// A slot that cannot complete: its failed task and why it is not replaced.
struct Stuck<'a> {
    task: &'a Task,
    verdict: Verdict,
}

/// One orchestration step of the job `svc`.
pub(super) fn service(
    state: &ClusterState,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    wanted: &[SlotKey],
    now: Timestamp,
    out: &mut Orchestration,
) {
    let stop = |t: &Task, out: &mut Orchestration| out.plan.set_desired.push((t.id.clone(), DesiredState::Shutdown));
    // Slots no longer wanted: their live tasks stop. Stopped tasks are
    // deleted, except those on nodes that still exist: a global job's
    // completion on a drained or down node is kept, so that the node does
    // not run the job again when it comes back.
    for (key, tasks) in slots {
        if wanted.binary_search(key).is_ok() || kept_on_paused_node(state, key) {
            continue;
        }
        let node_known = matches!(key, SlotKey::Node(n) if state.nodes.contains_key(n));
        for t in tasks {
            if t.desired_state == DesiredState::Running {
                stop(t, out);
            } else if t.status.state.is_terminal() && !node_known {
                out.plan.delete.push(t.id.clone());
            }
        }
    }

    let empty = Vec::new();
    let mut done = 0usize;
    let mut in_flight = 0u64;
    let mut fresh = Vec::new();
    let mut stuck: Vec<Stuck<'_>> = Vec::new();
    for key in wanted {
        let tasks = slots.get(key).unwrap_or(&empty);
        trim_history(svc, tasks, out);
        // An earlier run's tasks stop: this revision runs the job again.
        for t in tasks.iter().filter(|t| t.revision != svc.revision && t.desired_state == DesiredState::Running) {
            stop(t, out);
        }
        // A replicated job's task on a drained node stops and runs again elsewhere.
        if matches!(svc.spec.mode, ServiceMode::ReplicatedJob { .. }) {
            for t in tasks.iter().filter(|t| {
                t.revision == svc.revision
                    && t.desired_state == DesiredState::Running
                    && !t.status.state.is_terminal()
                    && on_drained_node(state, t)
            }) {
                stop(t, out);
            }
        }
        let this_run: Vec<&Task> = tasks.iter().copied().filter(|t| t.revision == svc.revision).collect();
        if this_run.iter().any(|t| t.status.state == TaskState::Complete) {
            for t in this_run.iter().filter(|t| t.desired_state == DesiredState::Running) {
                if t.status.state.is_terminal() {
                    stop(t, out);
                }
            }
            done += 1;
            continue;
        }
        let newest = this_run.last().copied().filter(|t| t.desired_state == DesiredState::Running);
        if newest.is_some_and(|t| !t.status.state.is_terminal()) {
            in_flight += 1;
            continue;
        }
        if tasks.iter().any(|t| !t.status.state.is_terminal()) {
            // Being stopped: the slot is taken until it has.
            in_flight += 1;
            continue;
        }
        match newest {
            // Its newest task failed (it did not complete): the restart policy decides.
            Some(dead) => match restart::verdict(svc, &this_run, dead, now) {
                Verdict::Now => {
                    stop(dead, out);
                    out.plan.create.push(new_task(svc, key));
                    in_flight += 1;
                }
                Verdict::At(due) => {
                    out.wake(due);
                    in_flight += 1;
                }
                verdict @ (Verdict::NotWanted | Verdict::Exhausted) => stuck.push(Stuck { task: dead, verdict }),
            },
            // Not run yet at this revision, or stopped by the orchestrators (a drain).
            None => fresh.push(key),
        }
    }

    // Fresh slots start, at most `max_concurrent` in flight.
    let limit = match svc.spec.mode {
        ServiceMode::ReplicatedJob { replicas, max_concurrent } if max_concurrent > 0 => max_concurrent.min(replicas),
        _ => u64::MAX,
    };
    let room = usize::try_from(limit.saturating_sub(in_flight)).unwrap_or(usize::MAX);
    for key in fresh.into_iter().take(room) {
        out.plan.create.push(new_task(svc, key));
    }

    status(svc, done, wanted.len(), &stuck, now, out);
}

/// Moves the run's status: `completed` when every wanted slot is done,
/// `failed` while a slot cannot complete, `updating` otherwise. A completed
/// run stays completed (a node joining later runs a global job without
/// reopening it) until the next revision.
fn status(svc: &Service, done: usize, total: usize, stuck: &[Stuck<'_>], now: Timestamp, out: &mut Orchestration) {
    let current = &svc.update;
    if !matches!(current.state, UpdateState::Updating | UpdateState::Failed) {
        return;
    }
    let next = if done == total {
        UpdateStatus {
            state: UpdateState::Completed,
            started_at: current.started_at,
            completed_at: now,
            message: String::new(),
        }
    } else if let Some(s) = stuck.first() {
        let policy = &svc.spec.restart;
        let why = match s.verdict {
            Verdict::Exhausted => {
                let n = policy.max_attempts;
                format!("restart_policy.max_attempts ({n}) reached: the job cannot complete")
            }
            _ if policy.condition == RestartCondition::None => {
                "restart_policy.condition is none: the job cannot complete".to_string()
            }
            _ => "not restarted: the job cannot complete".to_string(),
        };
        let message = format!("{}; {why}", describe_failure(s.task));
        UpdateStatus { state: UpdateState::Failed, started_at: current.started_at, completed_at: 0, message }
    } else {
        UpdateStatus {
            state: UpdateState::Updating,
            started_at: current.started_at,
            completed_at: 0,
            message: String::new(),
        }
    };
    // Only a change of state (or of the failure's reason) is news.
    if next.state != current.state || (next.state == UpdateState::Failed && next.message != current.message) {
        out.plan.update_status.push((svc.id.clone(), next));
    }
}

/// The counts of a job: tasks of the current revision that run, completions
/// wanted, and slots completed at the current revision. A global job wants
/// one completion per eligible node, and per node that completed it already.
pub(super) fn counts(state: &ClusterState, svc: &Service) -> ServiceCounts {
    let slots = group_slots(state, svc);
    let wanted = wanted_slots(state, svc);
    let completed_at = |key: &SlotKey| {
        slots
            .get(key)
            .is_some_and(|ts| ts.iter().any(|t| t.revision == svc.revision && t.status.state == TaskState::Complete))
    };
    let running = state
        .tasks_of(&svc.id)
        .filter(|t| {
            t.revision == svc.revision
                && t.desired_state == DesiredState::Running
                && t.status.state == TaskState::Running
        })
        .count() as u64;
    let completed_wanted = wanted.iter().filter(|k| completed_at(k)).count() as u64;
    let (desired, completed) = match svc.spec.mode {
        ServiceMode::GlobalJob => {
            let elsewhere = slots.keys().filter(|k| wanted.binary_search(k).is_err() && completed_at(k)).count() as u64;
            (wanted.len() as u64 + elsewhere, completed_wanted + elsewhere)
        }
        _ => (wanted.len() as u64, completed_wanted),
    };
    ServiceCounts { running, desired, completed }
}
