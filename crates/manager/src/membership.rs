//! The Raft membership follows the nodes' roles in the cluster state.
//!
//! ```text
//!  state.nodes (role = manager) ─► desired voters ─┐
//!  raft.members() (voters, learners) ─────────────┴► next_step ─► add learner │ promote │ remove
//! ```
//!
//! `stackd join` with a manager token and `stackctl node promote|demote|rm`
//! only change the state; the leader's reconciler then changes Raft's
//! membership one step at a time (openraft runs one change at a time): a new
//! manager is added as a learner, promoted to voter once it has caught up,
//! and a demoted or removed one leaves the membership.
//!
//! [`check_quorum`] is the check `node demote` and `node rm` make before
//! they propose anything: a change that would leave fewer reachable voters
//! than a majority is refused, with an explanation, unless forced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use stackd_core::ClusterState;
use stackd_core::model::NodeRole;

use crate::raft::{Members, RaftNode};
use crate::reconcile::{Next, Pass, Reconciler, Tick};

/// How often the reconciler looks (and when this node becomes leader).
const TICK: Duration = Duration::from_millis(500);

/// How far behind the leader's log a learner may be and still be promoted.
pub(crate) const CATCH_UP_SLACK: u64 = 64;

/// The Raft id of a node id (16 hex digits, see [`crate::Identity`]).
pub(crate) fn raft_id(node_id: &str) -> Option<u64> {
    u64::from_str_radix(node_id, 16).ok().filter(|id| *id != 0)
}

/// The managers the state wants: Raft id → address.
pub(crate) fn desired_voters(state: &ClusterState) -> BTreeMap<u64, String> {
    state
        .nodes
        .values()
        .filter(|n| n.role == NodeRole::Manager)
        .filter_map(|n| Some((raft_id(&n.id)?, n.addr.clone())))
        .collect()
}

/// One change of the Raft membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Start replicating to a new manager.
    AddLearner(u64, String),
    /// A learner that has caught up becomes a voter.
    Promote(u64),
    /// A member the state no longer wants as a manager leaves.
    Remove(u64),
}

/// The next membership change that brings `members` towards `desired`, or
/// `None` when they agree. `matched` is how far the leader knows each member
/// holds the log; `last_index` the leader's last log index.
///
/// Learners are promoted only once within [`CATCH_UP_SLACK`] entries of the
/// leader, so that a new voter does not stall commits while it catches up.
/// The last voter is never removed.
pub(crate) fn next_step(
    desired: &BTreeMap<u64, String>,
    members: &Members,
    matched: impl Fn(u64) -> Option<u64>,
    last_index: u64,
) -> Option<Step> {
    if desired.is_empty() {
        // A state without managers (not initialised yet): nothing to follow.
        return None;
    }
    if let Some((id, addr)) =
        desired.iter().find(|(id, _)| !members.voters.contains_key(id) && !members.learners.contains_key(id))
    {
        return Some(Step::AddLearner(*id, addr.clone()));
    }
    if let Some(id) = members
        .learners
        .keys()
        .find(|id| desired.contains_key(id) && matched(**id).is_some_and(|m| m + CATCH_UP_SLACK >= last_index && m > 0))
    {
        return Some(Step::Promote(*id));
    }
    if let Some(id) = members.learners.keys().find(|id| !desired.contains_key(id)) {
        return Some(Step::Remove(*id));
    }
    let leaving = members.voters.keys().find(|id| !desired.contains_key(id));
    match leaving {
        Some(id) if members.voters.len() > 1 => Some(Step::Remove(*id)),
        _ => None,
    }
}

/// What a membership change does to the voters, for [`check_quorum`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The voter leaves (demote, remove).
    Remove(u64),
}

/// Whether the voters still have a reachable majority after `change`.
/// `voters` are the current voters, `reachable` those the leader hears from;
/// `name` names the node in the message.
pub(crate) fn check_quorum(
    voters: &BTreeSet<u64>,
    reachable: &BTreeSet<u64>,
    change: Change,
    name: &str,
) -> Result<(), String> {
    let Change::Remove(id) = change;
    if !voters.contains(&id) {
        return Ok(());
    }
    let after: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
    if after.is_empty() {
        return Err(format!("{name} is the only manager: a cluster needs at least one; promote another node first"));
    }
    let up = after.intersection(reachable).count();
    let need = after.len() / 2 + 1;
    if up >= need {
        return Ok(());
    }
    let managers = |n: usize| if n == 1 { "1 manager".to_string() } else { format!("{n} managers") };
    Err(format!(
        "this would leave {} of which {up} {} reachable; {} need {need} reachable to keep a quorum (a majority of \
         the managers must agree on every change, or the cluster cannot change anything at all). Bring the \
         unreachable managers back, or remove dead ones with `stackctl node rm`, or pass --force to do it anyway",
        managers(after.len()),
        if up == 1 { "is" } else { "are" },
        managers(after.len()),
    ))
}

/// The leader's membership reconciler, run by [`crate::reconcile::run`]:
/// one step at a time, looking every [`TICK`] (a learner catches up without
/// any entry being applied) — not on every applied entry: membership changes
/// are rare, and a busy cluster applies thousands of entries a second.
#[derive(Debug, Default)]
pub(crate) struct Membership;

impl Reconciler for Membership {
    type Action = Step;
    const DEBOUNCE: Duration = TICK;
    const IDLE: Duration = TICK;

    fn decide(&mut self, raft: &RaftNode, state: &ClusterState, _tick: &Tick) -> Pass<Step> {
        let desired = desired_voters(state);
        let members = raft.members();
        let last = raft.status().last_log_index;
        let self_id = raft.id();
        let matched = |id: u64| if id == self_id { Some(last) } else { raft.matched(id) };
        Pass { actions: next_step(&desired, &members, matched, last).into_iter().collect(), wake_in: Some(TICK) }
    }

    async fn act(&mut self, raft: &RaftNode, steps: Vec<Step>, _tick: &Tick) -> Next {
        for step in steps {
            let result = match &step {
                Step::AddLearner(id, addr) => {
                    tracing::info!(node = %format!("{id:016x}"), %addr, "adding a manager as a Raft learner");
                    raft.add_learner(*id, addr).await
                }
                Step::Promote(id) => {
                    tracing::info!(node = %format!("{id:016x}"), "a learner caught up: making it a voter");
                    raft.promote(*id).await
                }
                Step::Remove(id) => {
                    tracing::info!(node = %format!("{id:016x}"), "removing a node that is no longer a manager from Raft");
                    raft.remove(*id).await
                }
            };
            if let Err(e) = result {
                // Retried: another change in progress, a lost leadership, …
                tracing::debug!(?step, error = %e, "membership change failed; retrying");
                return Next::Retry(TICK);
            }
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(voters: &[u64], learners: &[u64]) -> Members {
        Members {
            voters: voters.iter().map(|id| (*id, format!("10.0.0.{id}:4280"))).collect(),
            learners: learners.iter().map(|id| (*id, format!("10.0.0.{id}:4280"))).collect(),
        }
    }

    fn desired(ids: &[u64]) -> BTreeMap<u64, String> {
        ids.iter().map(|id| (*id, format!("10.0.0.{id}:4280"))).collect()
    }

    #[test]
    fn raft_ids_come_from_node_ids() {
        assert_eq!(raft_id("00000000000000ff"), Some(255));
        assert_eq!(raft_id("0000000000000000"), None);
        assert_eq!(raft_id("zz"), None);
    }

    #[test]
    fn a_new_manager_is_added_as_learner_then_promoted_when_caught_up() {
        let want = desired(&[1, 2]);
        let step = next_step(&want, &members(&[1], &[]), |_| None, 100);
        assert_eq!(step, Some(Step::AddLearner(2, "10.0.0.2:4280".into())));
        // Far behind: wait.
        assert_eq!(next_step(&want, &members(&[1], &[2]), |id| Some(if id == 2 { 10 } else { 100 }), 100), None);
        // Never answered: wait.
        assert_eq!(next_step(&want, &members(&[1], &[2]), |id| (id == 1).then_some(100), 100), None);
        // Within the slack: promote.
        let near = 100 - CATCH_UP_SLACK;
        assert_eq!(
            next_step(&want, &members(&[1], &[2]), |id| Some(if id == 2 { near } else { 100 }), 100),
            Some(Step::Promote(2))
        );
        assert_eq!(next_step(&want, &members(&[1, 2], &[]), |_| Some(100), 100), None);
    }

    #[test]
    fn demoted_managers_leave_but_never_the_last_voter() {
        assert_eq!(next_step(&desired(&[1, 2]), &members(&[1, 2, 3], &[]), |_| Some(9), 9), Some(Step::Remove(3)));
        assert_eq!(next_step(&desired(&[1]), &members(&[1], &[4]), |_| Some(9), 9), Some(Step::Remove(4)));
        assert_eq!(
            next_step(&desired(&[2]), &members(&[1], &[]), |_| Some(9), 9),
            Some(Step::AddLearner(2, "10.0.0.2:4280".into()))
        );
        // Nobody desired (not initialised): nothing.
        assert_eq!(next_step(&desired(&[]), &members(&[1], &[]), |_| Some(9), 9), None);
        // The only voter is not removed even when not desired, until another is a voter.
        assert_eq!(next_step(&desired(&[2]), &members(&[1], &[2]), |_| Some(1), 100), None);
        assert_eq!(next_step(&desired(&[2]), &members(&[1], &[2]), |_| Some(9), 9), Some(Step::Promote(2)));
        assert_eq!(next_step(&desired(&[2]), &members(&[1, 2], &[]), |_| Some(9), 9), Some(Step::Remove(1)));
    }

    #[test]
    fn quorum_checks_for_every_size_up_to_five() {
        for n in 1..=5u64 {
            let voters: BTreeSet<u64> = (1..=n).collect();
            for down in 0..=n {
                // The `down` highest ids are unreachable; remove voter 1 (reachable) or n (maybe not).
                let reachable: BTreeSet<u64> = (1..=n - down).collect();
                for victim in [1, n] {
                    let after = n - 1;
                    let up_after = reachable.iter().filter(|v| **v != victim).count() as u64;
                    let ok = after > 0 && up_after > after / 2;
                    let got = check_quorum(&voters, &reachable, Change::Remove(victim), "n");
                    assert_eq!(got.is_ok(), ok, "n={n} down={down} victim={victim}: {got:?}");
                }
            }
        }
        // Not a voter: nothing to check.
        assert!(check_quorum(&BTreeSet::from([1]), &BTreeSet::new(), Change::Remove(7), "w").is_ok());
    }

    #[test]
    fn the_refusal_explains_quorum() {
        let e = check_quorum(&BTreeSet::from([1, 2, 3]), &BTreeSet::from([1, 2]), Change::Remove(2), "n2")
            .expect_err("1 of 2 reachable");
        assert!(e.contains("leave 2 managers of which 1 is reachable"), "{e}");
        assert!(e.contains("need 2 reachable") && e.contains("majority") && e.contains("--force"), "{e}");
        let e = check_quorum(&BTreeSet::from([1]), &BTreeSet::from([1]), Change::Remove(1), "n1").expect_err("last");
        assert!(e.contains("only manager"), "{e}");
    }
}
