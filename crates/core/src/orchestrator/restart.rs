//! The restart supervisor: when a task that should run has stopped, decide
//! whether, and when, a new task takes its slot.

use super::Orchestration;
use crate::model::{RestartCondition, Service, Task, TaskState, Timestamp};

/// Whether the end of `t` calls for a restart under `condition`.
fn wants_restart(condition: RestartCondition, t: &Task) -> bool {
    match condition {
        RestartCondition::None => false,
        RestartCondition::Any => true,
        RestartCondition::OnFailure => t.status.state != TaskState::Complete,
    }
}

/// Restarts already made in this slot within the policy's window.
fn restarts_in_window(svc: &Service, tasks: &[&Task], now: Timestamp) -> u64 {
    let window = svc.spec.restart.window_ms;
    // Every task after the first of the current revision is a restart.
    let of_revision: Vec<&&Task> = tasks.iter().filter(|t| t.template == svc.spec.task).collect();
    of_revision.iter().skip(1).filter(|t| window == 0 || now.saturating_sub(t.created_at) <= window).count() as u64
}

/// Whether the dead task `current` (desired running, observed terminal) is
/// replaced now. Asks to be woken when the restart delay ends.
pub(super) fn should_replace(
    svc: &Service,
    tasks: &[&Task],
    current: &Task,
    now: Timestamp,
    out: &mut Orchestration,
) -> bool {
    let policy = &svc.spec.restart;
    if !wants_restart(policy.condition, current) {
        return false;
    }
    if policy.max_attempts > 0 && restarts_in_window(svc, tasks, now) >= policy.max_attempts {
        return false;
    }
    let due = current.status.timestamp.saturating_add(policy.delay_ms);
    if now >= due {
        true
    } else {
        out.wake(due);
        false
    }
}
