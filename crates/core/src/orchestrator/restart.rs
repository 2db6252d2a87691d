//! The restart supervisor: when a task that should run has stopped, decide
//! whether, and when, a new task takes its slot.

use super::Orchestration;
use crate::model::{RestartCondition, Service, Task, TaskState, Timestamp};

/// What the restart policy says about a dead task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Replace it now.
    Now,
    /// Replace it at this time (the restart delay ends).
    At(Timestamp),
    /// Do not replace it: the condition does not ask for it.
    NotWanted,
    /// Do not replace it: `max_attempts` restarts were made within the window.
    Exhausted,
}

/// Whether the end of `t` calls for a restart under `condition`.
fn wants_restart(condition: RestartCondition, t: &Task) -> bool {
    match condition {
        RestartCondition::None => false,
        RestartCondition::Any => true,
        RestartCondition::OnFailure => t.status.state != TaskState::Complete,
    }
}

/// Whether `t` ended with its node (declared down, or removed) rather than
/// on its own: its replacement is no restart.
fn lost_with_node(t: &Task) -> bool {
    t.status.state == TaskState::Orphaned || t.status.err == crate::state::NODE_REMOVED
}

/// Restarts already made within the policy's window, given the slot's tasks
/// of the same run (the same template for a service, the same revision for a
/// job), oldest first: every task after the first is a restart, unless the
/// task before it was lost with its node.
fn restarts_in_window(svc: &Service, same_run: &[&Task], now: Timestamp) -> u64 {
    let window = svc.spec.restart.window_ms;
    same_run
        .windows(2)
        .filter(|w| !lost_with_node(w[0]))
        .filter(|w| window == 0 || now.saturating_sub(w[1].created_at) <= window)
        .count() as u64
}

/// The verdict on the dead task `current` (desired running, observed
/// terminal), the newest of `same_run`.
pub(super) fn verdict(svc: &Service, same_run: &[&Task], current: &Task, now: Timestamp) -> Verdict {
    let policy = &svc.spec.restart;
    if !wants_restart(policy.condition, current) {
        return Verdict::NotWanted;
    }
    if policy.max_attempts > 0 && restarts_in_window(svc, same_run, now) >= policy.max_attempts {
        return Verdict::Exhausted;
    }
    let due = current.status.timestamp.saturating_add(policy.delay_ms);
    if now >= due { Verdict::Now } else { Verdict::At(due) }
}

/// Whether the dead task `current` of a service (desired running, observed
/// terminal) is replaced now. Asks to be woken when the restart delay ends.
pub(super) fn should_replace(
    svc: &Service,
    tasks: &[&Task],
    current: &Task,
    now: Timestamp,
    out: &mut Orchestration,
) -> bool {
    let same_template: Vec<&Task> = tasks.iter().copied().filter(|t| t.template == svc.spec.task).collect();
    match verdict(svc, &same_template, current, now) {
        Verdict::Now => true,
        Verdict::At(due) => {
            out.wake(due);
            false
        }
        Verdict::NotWanted | Verdict::Exhausted => false,
    }
}
