//! The controller: on the leader, turn the state into plans.
//!
//! ```text
//!  snapshot ─► orchestrate(state, now)           ─► propose ApplyPlan (≤ 5,000 new tasks)
//!          └─► effective(state, schedule(state)) ─► propose Schedule  (≤ 5,000 placements)
//!              next wake-up: the orchestrators' wake_at
//! ```
//!
//! A [`Reconciler`] run by [`crate::reconcile::run`]. Decisions are made in
//! core; this only proposes them. Nothing is proposed that would change
//! nothing ([`stackd_core::scheduler::effective`], an empty plan), so an idle
//! cluster writes no log entries.

use std::time::Duration;

use stackd_core::command::Plan;
use stackd_core::orchestrator::orchestrate;
use stackd_core::scheduler::{SpreadScheduler, effective};
use stackd_core::{ClusterState, Command};

use crate::raft::RaftNode;
use crate::reconcile::{Next, Pass, Reconciler, Tick};

/// How long the loop waits for more changes before it acts.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// The longest the loop sleeps without a reason to wake.
const IDLE: Duration = Duration::from_secs(5);
/// The most tasks one pass creates, and the most it places: a deploy of
/// 100,000 replicas goes in bounded log entries (each applied in a few
/// milliseconds, sent to followers well within a heartbeat), and the first
/// tasks start while the rest are created and placed. The pass after
/// continues at once (our own proposal changed the state).
const MAX_PER_PASS: usize = 5_000;
/// A pass slower than this is logged (with the state's size).
const SLOW_PASS: Duration = Duration::from_millis(500);

/// The orchestrators and the scheduler, on the leader.
#[derive(Debug, Default)]
pub(crate) struct Controller {
    /// The plan proposed last, while the orchestrators keep making plans.
    last_plan: Option<Plan>,
}

impl Reconciler for Controller {
    type Action = Command;
    const DEBOUNCE: Duration = DEBOUNCE;
    const IDLE: Duration = IDLE;

    fn decide(&mut self, _raft: &RaftNode, state: &ClusterState, tick: &Tick) -> Pass<Command> {
        let started = std::time::Instant::now();
        let mut orchestration = orchestrate(state, tick.now);
        // The rest of the slots are filled by the next passes: the plans that
        // follow see these tasks and create the others.
        orchestration.plan.create.truncate(MAX_PER_PASS);
        let orchestrated = started.elapsed();
        let decisions = effective(state, SpreadScheduler.schedule_at_most(state, MAX_PER_PASS));
        let took = started.elapsed();
        if took > SLOW_PASS {
            tracing::warn!(tasks = state.tasks.len(), ?orchestrated, ?took, "slow controller pass");
        }
        let mut actions = Vec::new();
        if orchestration.plan.is_empty() {
            self.last_plan = None;
        } else {
            actions.push(Command::ApplyPlan { plan: orchestration.plan, at: tick.now });
        }
        if !decisions.is_empty() {
            actions.push(Command::Schedule { decisions, at: tick.now });
        }
        let wake_in = orchestration.wake_at.map(|w| Duration::from_millis(w.saturating_sub(tick.now)));
        Pass { actions, wake_in }
    }

    async fn act(&mut self, raft: &RaftNode, actions: Vec<Command>, _tick: &Tick) -> Next {
        let mut wrote = false;
        for cmd in actions {
            let what = match &cmd {
                Command::ApplyPlan { plan, .. } => {
                    if self.last_plan.as_ref() == Some(plan) {
                        // The same plan again right after it was applied: apply refused part
                        // of it. Back off instead of spinning; this is a bug worth a log line.
                        tracing::warn!(?plan, "orchestrator made no progress; backing off");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    self.last_plan = Some(plan.clone());
                    "a plan"
                }
                _ => "placements",
            };
            match raft.propose(cmd).await {
                Ok(_) => wrote = true,
                Err(e) => tracing::warn!(error = %e, "proposing {what} failed"),
            }
        }
        // Our own proposals changed the state: look again at once.
        if wrote { Next::Again } else { Next::Wait }
    }
}
