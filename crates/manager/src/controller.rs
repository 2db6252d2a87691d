//! The controller loop: on the leader, turn the state into plans.
//!
//! ```text
//!  applied index ─┐
//!  wake-up timer ─┼─► debounce ─► orchestrate(state, now) ─► propose ApplyPlan
//!  leadership   ──┘                schedule(state)        ─► propose Schedule
//! ```
//!
//! Decisions are made in core; this loop only gathers input, calls core and
//! proposes the result. It proposes nothing that would change nothing, so an
//! idle cluster writes no log entries.

use std::time::Duration;

use stackd_core::command::{Placement, Plan};
use stackd_core::orchestrator::orchestrate;
use stackd_core::scheduler::{Scheduler, SpreadScheduler};
use stackd_core::{ClusterState, Command};
use tokio::sync::watch;

use crate::now_ms;
use crate::raft::RaftNode;

/// How long the loop waits for more changes before it acts.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// The longest the loop sleeps without a reason to wake.
const IDLE: Duration = Duration::from_secs(5);

/// Keeps only the decisions that change something.
fn effective(state: &ClusterState, decisions: Vec<Placement>) -> Vec<Placement> {
    decisions
        .into_iter()
        .filter(|d| match d {
            Placement::Assign { .. } => true,
            Placement::Unplaceable { task_id, reason } => state
                .tasks
                .get(task_id)
                .is_some_and(|t| t.unplaceable != *reason || t.status.state != stackd_core::model::TaskState::Pending),
        })
        .collect()
}

/// Runs until `shutdown` changes to true.
pub async fn run(raft: RaftNode, mut shutdown: watch::Receiver<bool>) {
    let mut applied = raft.shared().applied();
    let mut leader = raft.leader_watch();
    let mut last_plan: Option<Plan> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*leader.borrow() {
            tokio::select! {
                _ = leader.changed() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let now = now_ms();
        let (orchestration, decisions) = raft.shared().read(|s| {
            let o = orchestrate(s, now);
            let d = effective(s, SpreadScheduler.schedule(s));
            (o, d)
        });
        let mut wrote = false;
        if !orchestration.plan.is_empty() {
            if last_plan.as_ref() == Some(&orchestration.plan) {
                // The same plan again right after it was applied: apply refused part
                // of it. Back off instead of spinning; this is a bug worth a log line.
                tracing::warn!(plan = ?orchestration.plan, "orchestrator made no progress; backing off");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match raft.propose(Command::ApplyPlan { plan: orchestration.plan.clone(), at: now }).await {
                Ok(_) => wrote = true,
                Err(e) => tracing::warn!(error = %e, "proposing a plan failed"),
            }
            last_plan = Some(orchestration.plan);
        } else {
            last_plan = None;
        }
        if !decisions.is_empty() {
            match raft.propose(Command::Schedule { decisions, at: now }).await {
                Ok(_) => wrote = true,
                Err(e) => tracing::warn!(error = %e, "proposing placements failed"),
            }
        }
        if wrote {
            // Our own proposals changed the state: look again at once.
            applied.borrow_and_update();
            continue;
        }
        let sleep =
            orchestration.wake_at.map(|w| Duration::from_millis(w.saturating_sub(now_ms())).min(IDLE)).unwrap_or(IDLE);
        tokio::select! {
            r = applied.changed() => {
                if r.is_err() { return; }
                tokio::time::sleep(DEBOUNCE).await;
                applied.borrow_and_update();
            }
            _ = tokio::time::sleep(sleep) => {}
            _ = leader.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}
