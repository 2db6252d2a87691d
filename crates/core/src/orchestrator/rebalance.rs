//! The rebalance orchestrator (`stackctl service rebalance`): moves a
//! replicated service's tasks from the eligible nodes that run the most of
//! them to those that run the fewest, `parallelism` at a time (the update
//! policy's), until the counts differ by at most one. Swarm never spreads
//! tasks again after a node returns; this does, when asked.
//!
//! A moving task keeps serving: it leaves its slot to a replacement, which
//! the scheduler places on a least-loaded node, and stops once that runs
//! (healthy, for start-first) — see `moved_slot` in the parent module. A
//! replacement no node can take ends the rebalance (the task stays, the
//! replacement goes): a rebalance never goes below the replica count.
//!
//! The update policy's `delay` spaces the batches: with one, a batch
//! starts `delay` after the last move of the one before ended.
//!
//! Eligible nodes are ready, active and meet the service's constraints;
//! tasks on other nodes (paused ones) neither count nor move.

use std::collections::BTreeMap;

use super::{Orchestration, SlotKey};
use crate::model::{Availability, DesiredState, NodeId, NodeState, Service, Task, Timestamp};
use crate::state::ClusterState;

/// One step of `svc`'s rebalance, if one runs.
pub(super) fn step(
    state: &ClusterState,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    now: Timestamp,
    out: &mut Orchestration,
) {
    let Some(r) = svc.rebalance.as_ref() else { return };
    let eligible: Vec<&NodeId> = state
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Ready && n.availability == Availability::Active)
        .filter(|n| svc.spec.task.placement.constraints.iter().all(|c| c.matches(n)))
        .map(|n| &n.id)
        .collect();
    if eligible.len() < 2 {
        if r.moving.is_empty() {
            out.plan.rebalanced.push((svc.id.clone(), "fewer than 2 eligible nodes: nothing to even out".into()));
        }
        return;
    }
    let mut counts: BTreeMap<&NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    // Tasks that may move: up, of the current template, on an eligible node.
    let mut movable: BTreeMap<&NodeId, Vec<&Task>> = BTreeMap::new();
    let mut unplaced = 0;
    for t in slots.values().flatten() {
        if t.desired_state != DesiredState::Running || t.template != svc.spec.task || r.moving.contains(&t.id) {
            continue;
        }
        match t.node_id.as_ref().and_then(|n| counts.get_mut(n).map(|c| (n, c))) {
            Some((n, c)) => {
                *c += 1;
                if t.is_up() {
                    movable.entry(n).or_default().push(t);
                }
            }
            None if t.node_id.is_none() => unplaced += 1,
            None => {}
        }
    }
    // Replacements not placed yet land on the least-loaded nodes.
    for _ in 0..unplaced {
        if let Some(min) = least(&counts) {
            *counts.entry(min).or_default() += 1;
        }
    }
    // Moves go only towards nodes the scheduler would place a task on now.
    let room: Vec<&NodeId> = match movable.values().flatten().next() {
        Some(t) => {
            let with_room = crate::scheduler::nodes_with_room(state, t);
            eligible.iter().copied().filter(|n| with_room.contains(*n)).collect()
        }
        None => Vec::new(),
    };
    let parallelism = svc.spec.update.parallelism;
    let mut budget = if parallelism == 0 { usize::MAX } else { (parallelism as usize).saturating_sub(r.moving.len()) };
    // With a `delay`, one batch at a time, the next `delay` after the last
    // move ended (as the update policy spaces its batches).
    let delay = svc.spec.update.delay_ms;
    let waiting = delay > 0 && r.moved > 0 && now < r.last_moved_at.saturating_add(delay);
    if delay > 0 && r.moved > 0 && (!r.moving.is_empty() || waiting) {
        budget = 0;
        if waiting {
            out.wake(r.last_moved_at.saturating_add(delay));
        }
    }
    let mut moved_now = 0;
    while budget > 0 {
        let Some((max, min)) = uneven(&counts, &room) else { break };
        // The newest task that runs there moves.
        let Some(t) = movable.get_mut(max).and_then(|ts| {
            ts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            ts.pop()
        }) else {
            break;
        };
        out.plan.moves.push((svc.id.clone(), t.id.clone()));
        *counts.entry(max).or_default() -= 1;
        *counts.entry(min).or_default() += 1;
        budget -= 1;
        moved_now += 1;
    }
    if r.moving.is_empty() && moved_now == 0 && unplaced == 0 && !waiting {
        let why = if uneven(&counts, &room).is_none()
            && most(&counts).zip(least(&counts)).is_none_or(|(a, b)| counts[a] <= counts[b] + 1)
        {
            "the spread is even".to_string()
        } else {
            "as even as the nodes with room allow".to_string()
        };
        out.plan.rebalanced.push((svc.id.clone(), why));
    }
}

/// The most-loaded node and the least-loaded node with room, when the
/// first runs more than one task more than the second.
fn uneven<'a>(counts: &BTreeMap<&'a NodeId, usize>, room: &[&'a NodeId]) -> Option<(&'a NodeId, &'a NodeId)> {
    let max = most(counts)?;
    let min = room.iter().copied().min_by(|a, b| counts.get(a).cmp(&counts.get(b)).then_with(|| a.cmp(b)))?;
    (counts.get(max)? > &(counts.get(min)? + 1)).then_some((max, min))
}

/// The node with the most tasks (the first by id among equals).
fn most<'a>(counts: &BTreeMap<&'a NodeId, usize>) -> Option<&'a NodeId> {
    counts.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))).map(|(n, _)| *n)
}

/// The node with the fewest tasks (the first by id among equals).
fn least<'a>(counts: &BTreeMap<&'a NodeId, usize>) -> Option<&'a NodeId> {
    counts.iter().min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0))).map(|(n, _)| *n)
}
