//! Node liveness: which silent nodes are down.
//!
//! ```text
//!  last heartbeat per node (leader memory) ─┐
//!  when this manager took the lead ─────────┼─► down_nodes ─► nodes to declare down
//!  nodes in the state, now ─────────────────┘                 + when to look again
//! ```
//!
//! Heartbeats are not replicated: a manager knows only those it received
//! itself, since it took the lead. So a new leader first waits
//! [`LEADER_GRACE`], time for every agent to reconnect to it, and only then
//! declares a node down — one that it has not heard from for
//! [`NODE_DOWN_AFTER`], or never.
//!
//! Times are milliseconds of one monotonic clock the caller chooses (a
//! leader's own, as heartbeats are its memory); nothing here reads a clock.

use std::collections::BTreeMap;

use crate::model::{NodeId, NodeState, Timestamp};
use crate::state::ClusterState;

/// A node that has not heartbeat for this long is declared down (ms).
pub const NODE_DOWN_AFTER: u64 = 5_000;

/// How long a manager that just took the lead waits before it declares
/// silent nodes down (ms). The agents of the old leader first notice the
/// loss (a reset, or the h2 keep-alive: up to 3 s), then try managers in
/// turn (backoff up to 2 s, a connect timeout of 5 s for a manager that is
/// gone): twice [`NODE_DOWN_AFTER`] lets them all reconnect, where a false
/// "down" would reschedule their tasks.
pub const LEADER_GRACE: u64 = 10_000;

/// What [`down_nodes`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Ready nodes to declare down, by id.
    pub down: Vec<NodeId>,
    /// When a node that is fine now becomes late, or the grace ends, unless
    /// a heartbeat comes first: the time to look again.
    pub wake_at: Option<Timestamp>,
}

/// The ready nodes of `state` that are down at `now`: silent for longer than
/// [`NODE_DOWN_AFTER`] (`last_seen` holds the last heartbeat of each node
/// heard from), or never heard from, once [`LEADER_GRACE`] has passed since
/// `leader_since`. Nodes that are not ready are left alone: their agent's
/// next session makes them ready again.
pub fn down_nodes(
    state: &ClusterState,
    last_seen: &BTreeMap<NodeId, Timestamp>,
    leader_since: Timestamp,
    now: Timestamp,
) -> Liveness {
    let grace_ends = leader_since.saturating_add(LEADER_GRACE);
    if now < grace_ends {
        return Liveness { down: Vec::new(), wake_at: Some(grace_ends) };
    }
    let mut out = Liveness::default();
    for node in state.nodes.values().filter(|n| n.state == NodeState::Ready) {
        match last_seen.get(&node.id) {
            Some(seen) if now.saturating_sub(*seen) <= NODE_DOWN_AFTER => {
                let late = seen.saturating_add(NODE_DOWN_AFTER + 1);
                out.wake_at = Some(out.wake_at.map_or(late, |w| w.min(late)));
            }
            _ => out.down.push(node.id.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Availability, Node, NodeRole, Resources};

    fn node(id: &str, state: NodeState) -> Node {
        Node {
            id: id.into(),
            name: id.into(),
            addr: format!("{id}:4280"),
            role: NodeRole::Worker,
            availability: Availability::Active,
            state,
            labels: BTreeMap::new(),
            resources: Resources::default(),
            engine_version: String::new(),
            engine: Default::default(),
            updated_at: 0,
        }
    }

    fn cluster(nodes: &[(&str, NodeState)]) -> ClusterState {
        let mut s = ClusterState::default();
        for (id, state) in nodes {
            s.nodes.insert(id.to_string(), node(id, *state));
        }
        s
    }

    fn seen(entries: &[(&str, Timestamp)]) -> BTreeMap<NodeId, Timestamp> {
        entries.iter().map(|(id, t)| (id.to_string(), *t)).collect()
    }

    /// A fake clock: the leader took the lead at 1 000 000 ms.
    const LEAD: Timestamp = 1_000_000;

    #[test]
    fn nobody_is_down_during_the_grace_after_a_leader_change() {
        let s = cluster(&[("a", NodeState::Ready), ("b", NodeState::Ready)]);
        // Never heard from anybody, and the grace has not ended: wait until it does.
        for now in [LEAD, LEAD + 1, LEAD + LEADER_GRACE - 1] {
            let l = down_nodes(&s, &seen(&[]), LEAD, now);
            assert_eq!(l, Liveness { down: vec![], wake_at: Some(LEAD + LEADER_GRACE) }, "at {now}");
        }
        // The grace ended: those never heard from are down.
        let l = down_nodes(&s, &seen(&[("a", LEAD + 9_000)]), LEAD, LEAD + LEADER_GRACE);
        assert_eq!(l.down, ["b"]);
        assert_eq!(l.wake_at, Some(LEAD + 9_000 + NODE_DOWN_AFTER + 1));
    }

    #[test]
    fn a_node_is_down_once_silent_for_longer_than_node_down_after() {
        let s = cluster(&[("a", NodeState::Ready)]);
        let after_grace = LEAD + LEADER_GRACE;
        let last = after_grace + 1_000;
        let at = |now| down_nodes(&s, &seen(&[("a", last)]), LEAD, now);
        assert_eq!(at(last), Liveness { down: vec![], wake_at: Some(last + NODE_DOWN_AFTER + 1) });
        assert!(at(last + NODE_DOWN_AFTER).down.is_empty(), "exactly NODE_DOWN_AFTER is not late yet");
        assert_eq!(at(last + NODE_DOWN_AFTER + 1), Liveness { down: vec!["a".into()], wake_at: None });
        // A heartbeat moves the wake-up on.
        let l = down_nodes(&s, &seen(&[("a", last + 4_000)]), LEAD, last + NODE_DOWN_AFTER + 1);
        assert_eq!(l, Liveness { down: vec![], wake_at: Some(last + 4_000 + NODE_DOWN_AFTER + 1) });
    }

    #[test]
    fn only_ready_nodes_are_declared_down() {
        let s = cluster(&[("down", NodeState::Down), ("new", NodeState::Unknown), ("ready", NodeState::Ready)]);
        let l = down_nodes(&s, &seen(&[]), LEAD, LEAD + LEADER_GRACE + 60_000);
        assert_eq!(l, Liveness { down: vec!["ready".into()], wake_at: None });
        // Heard from, but not in the state (removed meanwhile): nothing to do.
        let l = down_nodes(&cluster(&[]), &seen(&[("gone", LEAD)]), LEAD, LEAD + LEADER_GRACE + 60_000);
        assert_eq!(l, Liveness::default());
    }

    #[test]
    fn the_earliest_late_node_sets_the_wake_up() {
        let s = cluster(&[("a", NodeState::Ready), ("b", NodeState::Ready), ("c", NodeState::Ready)]);
        let now = LEAD + LEADER_GRACE + 10_000;
        let l = down_nodes(&s, &seen(&[("a", now - 1_000), ("b", now - 3_000), ("c", now)]), LEAD, now);
        assert_eq!(l, Liveness { down: vec![], wake_at: Some(now - 3_000 + NODE_DOWN_AFTER + 1) });
    }

    #[test]
    fn a_clock_that_goes_back_declares_nobody_down() {
        // A heartbeat stamped after `now` (clocks of two threads): not silent.
        let s = cluster(&[("a", NodeState::Ready)]);
        let now = LEAD + LEADER_GRACE;
        assert!(down_nodes(&s, &seen(&[("a", now + 50)]), LEAD, now).down.is_empty());
    }
}
