//! Start order (`depends_on`): a service's first start waits until the
//! services it depends on meet their condition. Swarm ignores `depends_on`;
//! compose orders `docker compose up` with it; stackd orders the first start.
//!
//! A service is in its **first start** while it holds no task at all: it was
//! just deployed, or every task of it was removed (scaled to zero, then up
//! again — as `docker compose up` starts a service anew). In its first start,
//! a service that wants tasks creates none until each dependency meets its
//! condition; its rollout status says why it waits (`waiting for shop_db to
//! be healthy (0/1 healthy)`), which `stackctl deploy --wait` prints. Once it
//! has a task, `depends_on` no longer holds it back: restarts, scaling and
//! rolling updates go on whatever its dependencies do.
//!
//! The conditions, over the dependency's wanted slots (its replicas, or its
//! eligible nodes):
//!
//! - `service_started`: every slot has a running task (desired running,
//!   observed running);
//! - `service_healthy`: every slot has an up task ([`Task::is_up`]: running
//!   and healthy, or running without a health check — compose refuses such
//!   a dependency, stackd counts it healthy once it runs, as everywhere else);
//! - `service_completed_successfully`: a job whose run of its current
//!   revision completed; a service every slot of which has a task of its
//!   current template that exited 0.
//!
//! A dependency that wants no task (`replicas: 0`) meets every condition.
//!
//! A dependency has **failed** when its rollout paused or was rolled back, a
//! job cannot complete, or the newest task of one of its slots (or the one
//! before, while its replacement is on its way) failed, was rejected or is
//! unhealthy. A required dependency that failed keeps the service waiting,
//! with the failure as the reason; one with `required: false` that failed, or
//! is not in the stack, does not hold it back (one on its way still does).

use std::collections::BTreeMap;

use super::{Orchestration, SlotKey, describe_failure, slots_of, wanted_slots};
use crate::model::{DependencyCondition, DesiredState, Service, Task, TaskState, UpdateState, UpdateStatus, prefix};
use crate::state::ClusterState;

/// How the rollout message of a service held back by its dependencies starts.
pub(crate) const WAITING: &str = "waiting for ";

/// Where a dependency stands against its condition.
enum Progress {
    /// The condition holds.
    Met,
    /// On its way: the count of slots that meet it, as `1/3 healthy`.
    Pending(String),
    /// It failed: why.
    Failed(String),
}

/// Holds `svc` back while it is in its first start and a dependency does not
/// meet its condition: records why in its rollout message (cleared when it
/// may start) and says whether it waits.
pub(super) fn hold(
    state: &ClusterState,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    wanted: &[SlotKey],
    by_service: &BTreeMap<&str, Vec<&Task>>,
    out: &mut Orchestration,
) -> bool {
    if svc.spec.depends_on.is_empty() || !slots.is_empty() || wanted.is_empty() {
        return false;
    }
    let why = waiting(state, svc, by_service);
    let message = why.clone().unwrap_or_default();
    // A message of another kind (a rollback's reason) stays when nothing waits.
    if svc.update.message != message && (why.is_some() || svc.update.message.starts_with(WAITING)) {
        out.plan.update_status.push((svc.id.clone(), UpdateStatus { message, ..svc.update.clone() }));
    }
    why.is_some()
}

/// Why `svc` may not start yet, as its rollout message; `None` when every
/// dependency meets its condition (or, not required, failed or is absent).
pub(super) fn waiting(state: &ClusterState, svc: &Service, by_service: &BTreeMap<&str, Vec<&Task>>) -> Option<String> {
    let mut parts = Vec::new();
    for d in &svc.spec.depends_on {
        let dep = state.services.values().find(|s| s.stack == svc.stack && s.spec.name == d.service);
        let Some(dep) = dep else {
            if d.required {
                parts.push(format!("{}_{}, which is not deployed", svc.stack, d.service));
            }
            continue;
        };
        let goal = match d.condition {
            DependencyCondition::ServiceStarted => "to start",
            DependencyCondition::ServiceHealthy => "to be healthy",
            DependencyCondition::ServiceCompletedSuccessfully => "to complete successfully",
        };
        let tasks = by_service.get(dep.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        match progress(state, dep, d.condition, tasks) {
            Progress::Met => {}
            Progress::Pending(count) => parts.push(format!("{} {goal} ({count})", dep.name)),
            Progress::Failed(why) if d.required => parts.push(format!("{} {goal}: {why}", dep.name)),
            Progress::Failed(_) => {}
        }
    }
    (!parts.is_empty()).then(|| format!("{WAITING}{}", parts.join("; ")))
}

/// Where `dep` (with its `tasks`) stands against `condition`.
fn progress(state: &ClusterState, dep: &Service, condition: DependencyCondition, tasks: &[&Task]) -> Progress {
    let job = dep.spec.mode.is_job();
    let current = |t: &Task| if job { t.revision == dep.revision } else { t.template == dep.spec.task };
    let meets = |t: &Task| match condition {
        DependencyCondition::ServiceStarted => {
            t.desired_state == DesiredState::Running && t.status.state == TaskState::Running
        }
        DependencyCondition::ServiceHealthy => t.desired_state == DesiredState::Running && t.is_up(),
        DependencyCondition::ServiceCompletedSuccessfully => t.status.state == TaskState::Complete && current(t),
    };
    if condition == DependencyCondition::ServiceCompletedSuccessfully
        && job
        && dep.update.state == UpdateState::Completed
    {
        return Progress::Met;
    }
    let slots = slots_of(tasks.iter().copied());
    let wanted = wanted_slots(state, dep);
    let empty = Vec::new();
    let mut met = 0usize;
    let mut failure: Option<&Task> = None;
    for key in &wanted {
        let ts = slots.get(key).unwrap_or(&empty);
        if ts.iter().any(|t| meets(t)) {
            met += 1;
            continue;
        }
        // The slot's newest task of the current spec, or the one before it
        // while that one's replacement is on its way (a restart).
        let mut newest = ts.iter().rev().copied().filter(|t| current(t));
        let failed = |t: &Task| {
            matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
                || (t.status.state == TaskState::Running && t.status.health == "unhealthy")
        };
        let failed_here = match newest.next() {
            Some(t) if failed(t) => Some(t),
            Some(t) if t.status.state < TaskState::Running => newest.next().filter(|t| failed(t)),
            _ => None,
        };
        if let Some(t) = failed_here
            && failure.is_none_or(|f| t.status.timestamp > f.status.timestamp)
        {
            failure = Some(t);
        }
    }
    if met == wanted.len() {
        return Progress::Met;
    }
    let rollout = |what: &str| {
        let m = &dep.update.message;
        if m.is_empty() { what.to_string() } else { format!("{what}: {m}") }
    };
    match dep.update.state {
        UpdateState::Paused => return Progress::Failed(rollout("its rollout paused")),
        UpdateState::RolledBack => return Progress::Failed(rollout("it was rolled back")),
        UpdateState::Failed => return Progress::Failed(rollout("it cannot complete")),
        UpdateState::Completed | UpdateState::Updating | UpdateState::RollingBack => {}
    }
    if let Some(t) = failure {
        return Progress::Failed(if t.status.state == TaskState::Running {
            format!("task {} is unhealthy", prefix(&t.id, 12))
        } else {
            describe_failure(t)
        });
    }
    let word = match condition {
        DependencyCondition::ServiceStarted => "running",
        DependencyCondition::ServiceHealthy => "healthy",
        DependencyCondition::ServiceCompletedSuccessfully => "completed",
    };
    Progress::Pending(format!("{met}/{} {word}", wanted.len()))
}

#[cfg(test)]
mod tests;
