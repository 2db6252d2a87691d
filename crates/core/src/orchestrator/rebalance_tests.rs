//! The rebalance orchestrator on the simulated cluster: a spread made uneven
//! by a node that came back is evened out, by the update policy's
//! parallelism, without ever fewer running tasks than replicas; what cannot
//! rebalance is refused, or ends with why.

use super::tests::{Sim, spec};
use crate::command::Command;
use crate::model::*;

/// Running tasks of `app_web` per node, sorted by node.
fn spread(sim: &Sim) -> Vec<(String, usize)> {
    let mut m = std::collections::BTreeMap::new();
    for t in sim.running("app_web") {
        *m.entry(t.node_id.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

fn rebalance(sim: &mut Sim) -> Option<String> {
    let at = sim.now;
    sim.apply(Command::RebalanceService { service: "app_web".into(), at }).rejected
}

/// 6 replicas on n1 and n2 (n3 drained meanwhile), then n3 active again.
fn uneven(order: UpdateOrder, parallelism: u64) -> Sim {
    uneven_with(order, parallelism, 0)
}

fn uneven_with(order: UpdateOrder, parallelism: u64, delay_ms: u64) -> Sim {
    let mut sim = Sim::new(&["n1", "n2", "n3"]);
    sim.apply(Command::SetNodeAvailability { id: "n3".into(), availability: Availability::Drain, at: sim.now });
    let mut s = spec("web", 6, "web:1");
    s.update.order = order;
    s.update.parallelism = parallelism;
    s.update.delay_ms = delay_ms;
    sim.converge(vec![s]);
    sim.apply(Command::SetNodeAvailability { id: "n3".into(), availability: Availability::Active, at: sim.now });
    sim.settle();
    assert_eq!(spread(&sim), [("n1".to_string(), 3), ("n2".to_string(), 3)]);
    sim
}

#[test]
fn a_rebalance_evens_the_spread_without_going_below_the_replicas() {
    for (order, parallelism) in [(UpdateOrder::StopFirst, 1), (UpdateOrder::StartFirst, 2), (UpdateOrder::StopFirst, 0)]
    {
        let mut sim = uneven(order, parallelism);
        assert_eq!(rebalance(&mut sim), None);
        for _ in 0..20 {
            sim.settle();
            let moving = sim.service("app_web").rebalance.as_ref().map_or(0, |r| r.moving.len() as u64);
            if parallelism > 0 {
                assert!(moving <= parallelism, "{moving} moving, parallelism {parallelism}");
            }
            assert!(sim.running("app_web").len() >= 6, "fewer running than replicas: {:?}", spread(&sim));
            sim.agent();
            assert!(sim.running("app_web").len() >= 6, "fewer running than replicas: {:?}", spread(&sim));
            sim.now += 1_000;
        }
        sim.settle();
        assert_eq!(
            spread(&sim),
            [("n1".to_string(), 2), ("n2".to_string(), 2), ("n3".to_string(), 2)],
            "{order:?} {parallelism}"
        );
        let svc = sim.service("app_web");
        assert_eq!(svc.rebalance, None, "the rebalance is over");
        assert_eq!(svc.revision, 1, "a rebalance is no new revision");
    }
}

#[test]
fn an_even_spread_ends_the_rebalance_at_once_and_what_cannot_rebalance_is_refused() {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.converge(vec![spec("web", 2, "web:1")]);
    assert_eq!(rebalance(&mut sim), None);
    // Refused while one runs.
    assert!(rebalance(&mut sim).unwrap_or_default().contains("already"));
    sim.settle();
    assert_eq!(sim.service("app_web").rebalance, None);
    // A global service does not rebalance; nor does one that rolls out.
    let mut g = spec("agent", 0, "agent:1");
    g.mode = ServiceMode::Global;
    sim.deploy(vec![spec("web", 2, "web:2"), g]);
    let before = sim.state.clone();
    assert!(rebalance(&mut sim).unwrap_or_default().contains("rolling out revision 2"));
    let at = sim.now;
    let r = sim.apply(Command::RebalanceService { service: "app_agent".into(), at }).rejected;
    assert!(r.unwrap_or_default().contains("not a replicated service"));
    assert_eq!(sim.state.services, before.services);
}

#[test]
fn a_task_that_cannot_move_ends_the_rebalance_and_stays() {
    // n3 has too little memory for a task: the spread looks uneven (3, 3, 0)
    // but no replacement can be placed there.
    let mut sim = Sim::new(&["n1", "n2", "n3"]);
    for (id, mem) in [("n1", 4u64 << 30), ("n2", 4 << 30), ("n3", 512 << 20)] {
        let mut n = sim.state.nodes[id].clone();
        n.resources.memory_bytes = mem;
        sim.state.nodes.insert(id.into(), n);
    }
    let mut s = spec("web", 6, "web:1");
    s.task.resources.reservations.memory_bytes = 1 << 30;
    sim.converge(vec![s]);
    assert_eq!(spread(&sim), [("n1".to_string(), 3), ("n2".to_string(), 3)]);
    assert_eq!(rebalance(&mut sim), None);
    for _ in 0..6 {
        sim.settle();
        sim.agent();
        assert!(sim.running("app_web").len() >= 6);
    }
    assert_eq!(sim.service("app_web").rebalance, None, "the rebalance ended");
    assert_eq!(spread(&sim), [("n1".to_string(), 3), ("n2".to_string(), 3)], "nothing was lost");
    let svc = sim.service("app_web").id.clone();
    assert!(
        sim.state.tasks_of(&svc).all(|t| t.node_id.is_some() || t.desired_state == DesiredState::Shutdown),
        "the replacement that could not be placed is gone"
    );
}

#[test]
fn the_delay_spaces_the_moves() {
    let mut sim = uneven_with(UpdateOrder::StopFirst, 1, 5_000);
    assert_eq!(rebalance(&mut sim), None);
    // The first move: its replacement runs, the task stops.
    for _ in 0..3 {
        sim.settle();
        sim.agent();
    }
    let r = sim.service("app_web").rebalance.clone().expect("still rebalancing");
    assert_eq!((r.moved, r.moving.len()), (1, 0));
    // Not the next one before 5 s have passed…
    sim.now += 4_000;
    sim.settle();
    assert!(sim.service("app_web").rebalance.as_ref().is_some_and(|r| r.moving.is_empty()));
    // …then it goes.
    sim.now += 1_000;
    sim.settle();
    assert!(sim.service("app_web").rebalance.as_ref().is_some_and(|r| r.moving.len() == 1));
}
