//! The leader's autoscaler loop (`x-stackd-autoscale`), in the one shape
//! of `reconcile::run`: leader gate → the applied state and each service's
//! wake-up → core's pure `autoscale::measure` and `autoscale::decide` on a
//! snapshot → propose `Command::Autoscale`.
//!
//! ```text
//!  agents ──ReportUsage──► UsageBook (leader memory, usage.rs)
//!                              │ snapshot
//!  state snapshot ──► measure(policy, tasks, samples) ──► decide(policy,
//!                      current, measurement, recommendations, rollout, now)
//!                              │ a change of count, of why it holds, or a
//!                              ▼ measurement to record (≥ 1/min)
//!                       propose Command::Autoscale
//! ```
//!
//! The loop's own memory is each service's recent recommendations (for the
//! scale-down window) and its next decision time. A manager that takes the
//! lead starts each service's memory with one recommendation of its current
//! count: after a failover nothing scales down before a whole window has
//! passed, as if the load had been high until then.

pub(crate) mod usage;

use std::collections::BTreeMap;
use std::time::Duration;

use stackd_core::autoscale::{self, Reason, Recommendation};
use stackd_core::model::{Service, ServiceMode, Task, Timestamp, UpdateState};
use stackd_core::{ClusterState, Command};

use crate::raft::RaftNode;
use crate::reconcile::{Next, Pass, Reconciler, Tick};
pub(crate) use usage::UsageBook;

/// A measurement is recorded in the state at least this often (ms), for
/// `service inspect`, while nothing else changes.
const RECORD_EVERY: Timestamp = 60_000;

/// How a decision holds or moves, to record only the changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Bounds,
    Rollout,
    NoMetrics,
    Tolerance,
    Up,
    Down,
    Stabilised,
    Limited,
}

fn kind(reason: &Reason) -> Kind {
    match reason {
        Reason::Bounds => Kind::Bounds,
        Reason::Rollout => Kind::Rollout,
        Reason::NoMetrics(_) => Kind::NoMetrics,
        Reason::Tolerance { .. } => Kind::Tolerance,
        Reason::Up { .. } => Kind::Up,
        Reason::Down { .. } => Kind::Down,
        Reason::Stabilised { .. } => Kind::Stabilised,
        Reason::Limited { .. } => Kind::Limited,
    }
}

/// The loop's memory of one service.
#[derive(Debug, Default)]
struct Memo {
    history: Vec<Recommendation>,
    next_at: Timestamp,
    last: Option<Kind>,
}

/// The leader's autoscaler.
pub(crate) struct Autoscaler {
    usage: UsageBook,
    memo: BTreeMap<String, Memo>,
    /// The lead the memory belongs to ([`Tick::leading_since`]).
    leading_since: Option<u64>,
}

impl Autoscaler {
    pub(crate) fn new(usage: UsageBook) -> Autoscaler {
        Autoscaler { usage, memo: BTreeMap::new(), leading_since: None }
    }
}

/// What one service's look gives: a command to propose, if any, and when
/// to look again.
pub(crate) fn look(
    service: &Service,
    tasks: &[&Task],
    samples: &autoscale::Samples,
    history: &[Recommendation],
    last: Option<Kind>,
    now: Timestamp,
) -> Option<(Option<Command>, autoscale::Decision)> {
    let policy = service.spec.autoscale.as_ref()?;
    let ServiceMode::Replicated { replicas: current } = service.spec.mode else { return None };
    let rollout = matches!(service.update.state, UpdateState::Updating | UpdateState::RollingBack);
    let measured = autoscale::measure(policy, tasks, samples, &service.name, now);
    let decision = match &measured {
        Ok(m) => autoscale::decide(policy, current, Some(m), history, rollout, now),
        Err(why) => {
            let d = autoscale::decide(policy, current, None, history, rollout, now);
            match d.reason {
                Reason::NoMetrics(_) => autoscale::Decision { reason: Reason::NoMetrics(why.clone()), ..d },
                _ => d,
            }
        }
    };
    let milli = measured.as_ref().ok().map(|m| (m.value * 1000.0).round().max(0.0) as u64);
    let status = service.autoscale.as_ref();
    let recorded = status.and_then(|s| s.measured_milli);
    let moved = match (milli, recorded) {
        (Some(a), Some(b)) => a.abs_diff(b) as f64 >= policy.target.value() * 100.0, // 10 % of the target
        (a, b) => a.is_some() != b.is_some(),
    };
    let due = status.is_none_or(|s| s.measured_at.saturating_add(RECORD_EVERY) <= now);
    let k = kind(&decision.reason);
    let record_decision = decision.replicas != current || last != Some(k) && last.is_some() || status.is_none();
    let cmd = (record_decision || moved || due).then(|| Command::Autoscale {
        service_id: service.id.clone(),
        replicas: decision.replicas,
        measured_milli: milli,
        decision: record_decision.then(|| decision.describe(policy, current)),
        at: now,
    });
    Some((cmd, decision))
}

impl Reconciler for Autoscaler {
    type Action = Command;
    const DEBOUNCE: Duration = Duration::from_millis(200);

    fn decide(&mut self, _raft: &RaftNode, state: &ClusterState, tick: &Tick) -> Pass<Command> {
        if self.leading_since != Some(tick.leading_since) {
            // A new lead: the memory of an earlier one is of no use.
            self.memo.clear();
            self.leading_since = Some(tick.leading_since);
        }
        let now = tick.now;
        let autoscaled: Vec<&Service> = state.services.values().filter(|s| s.spec.autoscale.is_some()).collect();
        self.memo.retain(|id, _| autoscaled.iter().any(|s| &s.id == id));
        // Most looks come from applied entries between two decisions: they
        // need neither the tasks nor the samples.
        let due = autoscaled.iter().any(|s| self.memo.get(&s.id).is_none_or(|m| m.next_at <= now));
        if !due {
            let wake = self.memo.values().map(|m| m.next_at).min();
            return Pass {
                actions: Vec::new(),
                wake_in: wake.map(|w| Duration::from_millis(w.saturating_sub(now).max(50))),
            };
        }
        let samples = self.usage.snapshot();
        let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        for t in state.tasks.values() {
            by_service.entry(t.service_id.as_str()).or_default().push(t);
        }
        let mut actions = Vec::new();
        let mut wake: Option<Timestamp> = None;
        for s in autoscaled {
            let ServiceMode::Replicated { replicas: current } = s.spec.mode else { continue };
            let memo = self.memo.entry(s.id.clone()).or_insert_with(|| Memo {
                // As if the load had asked for the current count until now.
                history: vec![Recommendation { at: now, replicas: current }],
                next_at: now,
                last: None,
            });
            if memo.next_at > now {
                wake = Some(wake.map_or(memo.next_at, |w| w.min(memo.next_at)));
                continue;
            }
            let tasks = by_service.get(s.id.as_str()).map(Vec::as_slice).unwrap_or_default();
            let Some((cmd, decision)) = look(s, tasks, &samples, &memo.history, memo.last, now) else { continue };
            let Some(policy) = s.spec.autoscale else { continue };
            memo.history.extend(decision.recommendation);
            memo.history = autoscale::keep(&memo.history, &policy, now);
            memo.last = Some(kind(&decision.reason));
            memo.next_at = decision.wake_at;
            wake = Some(wake.map_or(decision.wake_at, |w| w.min(decision.wake_at)));
            if decision.replicas != current {
                tracing::info!(service = %s.name, "autoscale: {}", decision.describe(&policy, current));
            }
            actions.extend(cmd);
        }
        Pass { actions, wake_in: wake.map(|w| Duration::from_millis(w.saturating_sub(now).max(50))) }
    }

    async fn act(&mut self, raft: &RaftNode, actions: Vec<Command>, _tick: &Tick) -> Next {
        for cmd in actions {
            if let Err(e) = raft.propose(cmd).await {
                tracing::warn!(error = %e, "proposing an autoscale decision failed");
                return Next::Retry(Duration::from_secs(1));
            }
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests;
