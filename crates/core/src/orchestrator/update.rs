//! The update orchestrator: rolls dirty slots (whose task runs an outdated
//! template) to the current one, `parallelism` at a time, watches the new
//! tasks for `monitor`, and pauses or rolls back on failure.
//!
//! A rollout follows the service's `update_config`; a rollback (state
//! `rolling_back`) follows its `rollback_config`. As in Swarm, that is the
//! rollback policy of the spec being restored: a rollback re-deploys the
//! previous revision's spec, policies included.

use std::collections::BTreeMap;

use super::{Orchestration, SlotKey, describe_failure, new_task};
use crate::model::{
    DesiredState, FailureAction, Service, Task, TaskState, Timestamp, UpdateOrder, UpdateState, UpdateStatus,
};
use crate::state::ClusterState;

/// Whether a task ended in a way that counts as an update failure. A task
/// lost with its node (removed from the cluster, or orphaned when it went
/// down) says nothing of the spec.
fn failed(state: &ClusterState, t: &Task) -> bool {
    let lost_with_node = t.node_id.as_ref().is_some_and(|n| !state.nodes.contains_key(n));
    matches!(t.status.state, TaskState::Failed | TaskState::Rejected | TaskState::Complete) && !lost_with_node
}

/// One step of the rollout of `svc`'s current revision.
pub(super) fn step(
    state: &ClusterState,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    wanted: &[SlotKey],
    dirty: &[(SlotKey, &Task)],
    now: Timestamp,
    out: &mut Orchestration,
) {
    let status = &svc.update;
    let policy = match status.state {
        UpdateState::Updating => &svc.spec.update,
        UpdateState::RollingBack => &svc.spec.rollback,
        // Completed, paused, rolled back (or a job's failed): nothing rolls until the next deploy.
        UpdateState::Completed | UpdateState::Paused | UpdateState::RolledBack | UpdateState::Failed => return,
    };
    let current = |t: &Task| t.template == svc.spec.task;
    let wanted_tasks = || wanted.iter().filter_map(|k| slots.get(k)).flatten().copied();

    // Failures of the new template since the rollout started.
    let failures: Vec<&Task> =
        wanted_tasks().filter(|t| current(t) && failed(state, t) && t.status.timestamp >= status.started_at).collect();
    let total = wanted.len().max(1) as f64;
    if !failures.is_empty() && failures.len() as f64 > policy.max_failure_ratio * total {
        let why = describe_failure(failures[0]);
        match (policy.failure_action, status.state) {
            (FailureAction::Continue, _) => {}
            (FailureAction::Rollback, UpdateState::Updating) if !svc.history.is_empty() => {
                out.plan.rollback.push(svc.id.clone());
                out.plan.update_status.push((
                    svc.id.clone(),
                    UpdateStatus { state: UpdateState::RollingBack, started_at: now, completed_at: 0, message: why },
                ));
                return;
            }
            (_, state) => {
                let message = if state == UpdateState::RollingBack { format!("rollback failed: {why}") } else { why };
                out.plan.update_status.push((
                    svc.id.clone(),
                    UpdateStatus {
                        state: UpdateState::Paused,
                        started_at: status.started_at,
                        completed_at: 0,
                        message,
                    },
                ));
                return;
            }
        }
    }

    // A slot whose new task failed during this rollout, within the failure
    // budget (`max_failure_ratio`, or `continue`): the rollout moves on, as
    // Swarm's does; the restart policy goes on replacing its task.
    let failed_here = |k: &SlotKey| {
        slots.get(k).is_some_and(|ts| {
            !ts.iter().any(|t| current(t) && t.desired_state == DesiredState::Running && t.is_up())
                && ts.iter().any(|t| current(t) && failed(state, t) && t.status.timestamp >= status.started_at)
        })
    };

    // Converged: every wanted slot runs the current template, each for
    // `monitor`, or failed within the budget.
    let monitor = policy.monitor_ms;
    let mut converged = dirty.is_empty();
    let mut stable_at: Timestamp = 0;
    for key in wanted {
        let running_current = slots
            .get(key)
            .and_then(|ts| ts.iter().find(|t| current(t) && t.desired_state == DesiredState::Running && t.is_up()));
        match running_current {
            Some(t) => stable_at = stable_at.max(t.status.timestamp.saturating_add(monitor)),
            None if failed_here(key) => {}
            None => converged = false,
        }
    }
    if converged {
        if now >= stable_at {
            let state =
                if status.state == UpdateState::RollingBack { UpdateState::RolledBack } else { UpdateState::Completed };
            let failing = wanted.iter().filter(|k| failed_here(k)).count();
            let message = match (failing, failures.first()) {
                (0, _) | (_, None) => status.message.clone(),
                (n, Some(t)) => {
                    format!("{n} of {} slots failed within the failure budget: {}", wanted.len(), describe_failure(t))
                }
            };
            out.plan.update_status.push((
                svc.id.clone(),
                UpdateStatus { state, started_at: status.started_at, completed_at: now, message },
            ));
        } else {
            out.wake(stable_at);
        }
        return;
    }
    if dirty.is_empty() {
        return;
    }

    // Every wanted slot is done (runs the current template), dirty (runs an
    // outdated one, waiting its turn) or in flight (being stopped, filled or
    // started): what counts against `parallelism`.
    let done = |k: &SlotKey| {
        slots
            .get(k)
            .is_some_and(|ts| ts.iter().any(|t| current(t) && t.desired_state == DesiredState::Running && t.is_up()))
    };
    // `dirty` is in key order (it follows `wanted`).
    let is_dirty = |k: &SlotKey| dirty.binary_search_by(|(d, _)| d.cmp(k)).is_ok();
    let in_flight = wanted.iter().filter(|k| !done(k) && !is_dirty(k) && !failed_here(k)).count() as u64;
    let parallelism = policy.parallelism;
    let room = if parallelism == 0 { u64::MAX } else { parallelism.saturating_sub(in_flight) };
    if room == 0 {
        return;
    }
    // The delay counts from the start of the last updated task.
    let delay = policy.delay_ms;
    if delay > 0 {
        let last_start = wanted_tasks()
            .filter(|t| current(t) && t.status.timestamp >= status.started_at)
            .map(|t| t.status.timestamp)
            .max();
        if let Some(last) = last_start {
            if in_flight > 0 {
                return;
            }
            if now < last.saturating_add(delay) {
                out.wake(last.saturating_add(delay));
                return;
            }
        }
    }
    // Dirty slots that serve nothing first (their outdated task is still
    // starting, or never became healthy: a redeploy in the middle of a
    // rollout): replacing them takes no capacity away, while taking a slot
    // that serves would leave them down and one more slot with them.
    let serving = |k: &SlotKey| {
        slots.get(k).is_some_and(|ts| ts.iter().any(|t| t.desired_state == DesiredState::Running && t.is_up()))
    };
    let (down, up): (Vec<&(SlotKey, &Task)>, Vec<_>) = dirty.iter().partition(|(k, _)| !serving(k));
    for (key, old) in down.into_iter().chain(up).take(usize::try_from(room).unwrap_or(usize::MAX)) {
        match policy.order {
            UpdateOrder::StopFirst => out.plan.set_desired.push((old.id.clone(), DesiredState::Shutdown)),
            UpdateOrder::StartFirst => out.plan.create.push(new_task(svc, key)),
        }
    }
}
