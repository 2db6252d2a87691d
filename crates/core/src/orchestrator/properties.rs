//! Property tests of the update planner (issue 15).
//!
//! Each case deploys `web:1` (with a health check) on two nodes and lets it
//! converge, deploys `web:2`, then plays the agent one report at a time in a
//! random order, letting time pass now and then; the invariants are checked
//! after every step. Then the agent sends everything it has left, time
//! passes, and the end of the rollout is checked.
//!
//! The agent follows the real one (`agent/src/runner/machine.rs`): a task
//! starts with health `starting`, then turns `healthy`, or `unhealthy` and is
//! stopped and failed; it may also crash. Tasks of `web:1`, and of `web:2`
//! when the case says so, only ever turn healthy.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use super::service_counts;
use super::tests::{Sim, spec};
use crate::command::{Command, TaskStatusUpdate};
use crate::model::*;

const SERVICE: &str = "app_web";
const V1: &str = "web:1";
const V2: &str = "web:2";
const V3: &str = "web:3";

/// The service of one case, and how its second revision behaves.
#[derive(Clone, Debug)]
struct Case {
    replicas: u64,
    update: UpdateConfig,
    rollback: UpdateConfig,
    /// Whether tasks of `web:2` become healthy; if not, they turn unhealthy or crash.
    v2_healthy: bool,
}

/// The health check of the simulated services (the agent reports its
/// results: `starting`, then `healthy` or `unhealthy`).
pub(super) fn probe() -> HealthCheck {
    HealthCheck {
        test: vec!["CMD".into(), "probe".into()],
        interval_ms: 1_000,
        timeout_ms: 1_000,
        retries: 3,
        start_period_ms: 0,
        start_interval_ms: 0,
    }
}

impl Case {
    fn spec(&self, image: &str) -> ServiceSpec {
        let mut s = spec("web", self.replicas, image);
        s.task.healthcheck = Some(probe());
        s.update = self.update.clone();
        s.rollback = self.rollback.clone();
        s
    }

    fn healthy(&self, image: &str) -> bool {
        image != V2 || self.v2_healthy
    }

    /// The most wanted slots without a healthy task the update may cause:
    /// none start-first (an old task stops once its replacement is up; a
    /// replacement that never is leaves it running); stop-first,
    /// `parallelism` in flight plus the failures `max_failure_ratio`
    /// tolerates (a slot that failed within the budget no longer counts as
    /// in flight: the rollout moves on, as Swarm's does).
    fn max_lost(&self) -> u64 {
        let tolerated = (self.update.max_failure_ratio * self.replicas as f64).floor() as u64;
        match (self.update.order, self.update.parallelism) {
            (UpdateOrder::StartFirst, _) => 0,
            (UpdateOrder::StopFirst, 0) => self.replicas,
            (UpdateOrder::StopFirst, p) => p.saturating_add(tolerated).min(self.replicas),
        }
    }

    /// Whether neither the update nor the rollback overlaps tasks in a slot.
    fn stop_first_only(&self) -> bool {
        self.update.order == UpdateOrder::StopFirst && self.rollback.order == UpdateOrder::StopFirst
    }
}

fn order(start_first: bool) -> UpdateOrder {
    if start_first { UpdateOrder::StartFirst } else { UpdateOrder::StopFirst }
}

/// What the agent reports next about a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Report {
    /// The container started; its health check has not passed yet.
    Started,
    /// The health check passed.
    Healthy,
    /// The health check failed: the agent stops the container…
    Unhealthy,
    /// …then reports the task failed.
    FailedUnhealthy,
    /// The container exited with code 1 (or could not start).
    Crashed,
    /// The container was stopped on request.
    Stopped,
}

/// Every report the agent could send next, task by task (in id order).
fn reports(sim: &Sim, case: &Case) -> Vec<(String, Report)> {
    let mut out = Vec::new();
    for t in sim.state.tasks.values() {
        if t.node_id.is_none() || t.status.state.is_terminal() {
            continue;
        }
        let healthy = case.healthy(&t.template.image);
        let mut add = |r: Report| out.push((t.id.clone(), r));
        if t.desired_state == DesiredState::Shutdown {
            add(Report::Stopped);
        }
        match (t.status.state, t.status.health.as_str()) {
            (state, _) if state < TaskState::Running => {
                if t.desired_state == DesiredState::Running {
                    add(Report::Started);
                }
                if !healthy {
                    add(Report::Crashed);
                }
            }
            (TaskState::Running, "starting") if healthy => add(Report::Healthy),
            (TaskState::Running, "starting") => {
                add(Report::Unhealthy);
                add(Report::Crashed);
            }
            (TaskState::Running, "unhealthy") => add(Report::FailedUnhealthy),
            _ => {}
        }
    }
    out
}

fn send(sim: &mut Sim, id: &str, report: Report) {
    let t = &sim.state.tasks[id];
    let node_id = t.node_id.clone().expect("only assigned tasks report");
    let health = t.status.health.clone();
    let (state, health, exit_code, err) = match report {
        Report::Started => (TaskState::Running, "starting".to_string(), None, ""),
        Report::Healthy => (TaskState::Running, "healthy".into(), None, ""),
        Report::Unhealthy => (TaskState::Running, "unhealthy".into(), None, ""),
        Report::FailedUnhealthy => (TaskState::Failed, health, Some(137), "unhealthy: probe failed"),
        Report::Crashed => (TaskState::Failed, health, Some(1), "exit code 1"),
        Report::Stopped => (TaskState::Shutdown, health, Some(0), ""),
    };
    let status = TaskStatus {
        state,
        timestamp: sim.now,
        exit_code,
        err: err.into(),
        container_id: format!("ctr-{id}"),
        health,
        ..Default::default()
    };
    sim.apply(Command::UpdateTaskStatus {
        updates: vec![TaskStatusUpdate { task_id: id.into(), node_id, status }],
        at: sim.now,
    });
}

/// One step: a report (the one `pick` points at) or, for the last pick, a second passing.
fn step(sim: &mut Sim, case: &Case, pick: Index) -> Result<(), TestCaseError> {
    let todo = reports(sim, case);
    match todo.get(pick.index(todo.len() + 1)) {
        Some((id, report)) => send(sim, id, *report),
        None => sim.now += 1_000,
    }
    sim.now += 1;
    sim.settle();
    check(sim, case)
}

/// The tasks of the service (`app_web`) by slot; shared with
/// `drain_properties`.
pub(super) fn slots(sim: &Sim) -> BTreeMap<u64, Vec<&Task>> {
    let svc = sim.service(SERVICE);
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for t in sim.state.tasks_of(&svc.id) {
        slots.entry(t.slot).or_default().push(t);
    }
    slots
}

/// Whether a task should run.
pub(super) fn wanted(t: &Task) -> bool {
    t.desired_state == DesiredState::Running
}

/// Wanted, running and healthy: serving.
pub(super) fn serving(t: &Task) -> bool {
    wanted(t) && t.status.state == TaskState::Running && t.status.health == "healthy"
}

/// The invariants, after any step once the first revision converged.
fn check(sim: &Sim, case: &Case) -> Result<(), TestCaseError> {
    let svc = sim.service(SERVICE);
    let slots = slots(sim);
    let none = Vec::new();
    let mut lost = 0;
    let mut in_flight = 0;
    for slot in 1..=case.replicas {
        let tasks = slots.get(&slot).unwrap_or(&none);
        let wanted: Vec<&Task> = tasks.iter().copied().filter(|t| wanted(t)).collect();
        // At most one wanted task of each template in a slot: an old one
        // and its replacement, never two of the same.
        for (i, a) in wanted.iter().enumerate() {
            for b in &wanted[i + 1..] {
                prop_assert!(a.template != b.template, "slot {} has two wanted tasks of {}", slot, a.template.image);
            }
        }
        if case.stop_first_only() {
            let occupants = tasks.iter().filter(|t| t.occupies_slot()).count();
            prop_assert!(occupants <= 1, "stop-first, yet slot {} holds {} tasks", slot, occupants);
        }
        if !tasks.iter().any(|t| serving(t)) {
            lost += 1;
        }
        // In flight: neither done (a task of the current template up) nor
        // waiting its turn (an outdated task wanted, none of the current one).
        let done = wanted.iter().any(|t| t.template == svc.spec.task && t.is_up());
        let waiting = !wanted.iter().any(|t| t.template == svc.spec.task) && !wanted.is_empty();
        // A slot whose new task failed (within the failure budget, or the
        // rollout would have paused or rolled back): settled, not in flight.
        let failed = tasks
            .iter()
            .any(|t| t.template == svc.spec.task && matches!(t.status.state, TaskState::Failed | TaskState::Rejected));
        if !done && !waiting && !failed {
            in_flight += 1;
        }
    }
    prop_assert!(
        !slots.keys().any(|s| *s > case.replicas),
        "a task outside the slots 1..={}: {:?}",
        case.replicas,
        slots.keys().collect::<Vec<_>>()
    );
    prop_assert!(
        lost <= case.max_lost(),
        "{} of {} slots without a healthy task (at most {} allowed, {:?}, {:?})",
        lost,
        case.replicas,
        case.max_lost(),
        case.update.order,
        svc.update.state
    );
    let parallelism = case.update.parallelism;
    if svc.update.state == UpdateState::Updating && parallelism > 0 {
        prop_assert!(in_flight <= parallelism, "{} slots in flight, parallelism {}", in_flight, parallelism);
    }
    Ok(())
}

/// Lets the agent send everything (first task first) and time pass, a step
/// at a time with the invariants checked, until the rollout ended: completed
/// or rolled back with nothing left to report, or paused (played on a while
/// to see that it stays so).
fn run_out(sim: &mut Sim, case: &Case, check_each: bool) -> Result<(), TestCaseError> {
    let mut paused_for = 0;
    for _ in 0..1_000 {
        let todo = reports(sim, case);
        match sim.service(SERVICE).update.state {
            UpdateState::Completed | UpdateState::RolledBack if todo.is_empty() => return Ok(()),
            UpdateState::Paused if paused_for == 30 => return Ok(()),
            UpdateState::Paused => paused_for += 1,
            _ => {}
        }
        match todo.first() {
            Some((id, report)) => send(sim, id, *report),
            None => sim.now += 1_000,
        }
        sim.now += 1;
        sim.settle();
        if check_each {
            check(sim, case)?;
        }
    }
    Err(TestCaseError::fail(format!("the rollout did not end: {:?}", sim.service(SERVICE).update)))
}

/// Every slot serves exactly one task, of `image`, and nothing else is wanted.
fn serves_only(sim: &Sim, case: &Case, image: &str) -> Result<(), TestCaseError> {
    for (slot, tasks) in slots(sim) {
        let wanted: Vec<&&Task> = tasks.iter().filter(|t| wanted(t)).collect();
        prop_assert_eq!(wanted.len(), 1, "slot {} wants {} tasks", slot, wanted.len());
        prop_assert!(serving(wanted[0]), "slot {}'s task does not serve: {:?}", slot, wanted[0].status);
        prop_assert_eq!(&wanted[0].template.image, image, "slot {}", slot);
    }
    prop_assert_eq!(slots(sim).len() as u64, case.replicas);
    prop_assert_eq!(service_counts(&sim.state, sim.service(SERVICE)).running, case.replicas);
    Ok(())
}

/// The rollout ended no sooner than `monitor` after the last of its tasks turned healthy.
fn monitored(sim: &Sim, monitor: u64) -> Result<(), TestCaseError> {
    let end = sim.service(SERVICE).update.completed_at;
    for t in slots(sim).values().flatten().filter(|t| serving(t)) {
        prop_assert!(
            t.status.timestamp.saturating_add(monitor) <= end,
            "ended at {} but task {} was healthy only from {} (monitor {})",
            end,
            t.id,
            t.status.timestamp,
            monitor
        );
    }
    Ok(())
}

/// `web:1` deployed and converged, then `web:2` deployed.
fn updating(case: &Case) -> Result<Sim, TestCaseError> {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.deploy(vec![case.spec(V1)]);
    sim.settle();
    run_out(&mut sim, case, false)?;
    prop_assert_eq!(sim.service(SERVICE).update.state, UpdateState::Completed);
    serves_only(&sim, case, V1)?;
    sim.deploy(vec![case.spec(V2)]);
    sim.settle();
    prop_assert_eq!(sim.service(SERVICE).update.state, UpdateState::Updating);
    check(&sim, case)?;
    Ok(sim)
}

/// Plays `picks` at random, then to the end.
fn play(sim: &mut Sim, case: &Case, picks: &[Index]) -> Result<(), TestCaseError> {
    for pick in picks {
        step(sim, case, *pick)?;
    }
    run_out(sim, case, true)
}

fn picks() -> impl Strategy<Value = Vec<Index>> {
    proptest::collection::vec(any::<Index>(), 1..120)
}

proptest! {
    // About 5 ms a case in a debug build.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (a) Never more than `parallelism` slots in flight — a slot whose new
    /// task runs but is still `starting` is in flight — nor, stop-first, more
    /// than `parallelism` slots without a healthy task; the update completes
    /// once every new task was healthy for `monitor`.
    #[test]
    fn rolling_update_respects_parallelism(
        replicas in 1u64..7,
        parallelism in 0u64..4,
        start_first in any::<bool>(),
        monitor in 0u64..3,
        picks in picks(),
    ) {
        let update = UpdateConfig {
            parallelism,
            monitor_ms: monitor * 3_000,
            order: order(start_first),
            ..UpdateConfig::default()
        };
        let case = Case { replicas, update, rollback: UpdateConfig::rollback_default(), v2_healthy: true };
        let mut sim = updating(&case)?;
        play(&mut sim, &case, &picks)?;
        prop_assert_eq!(sim.service(SERVICE).update.state, UpdateState::Completed);
        serves_only(&sim, &case, V2)?;
        monitored(&sim, case.update.monitor_ms)?;
    }

    /// (b) Start-first between healthy revisions: at every step, at least
    /// `replicas` tasks are wanted, running and healthy (`check`: no slot
    /// without one).
    #[test]
    fn start_first_keeps_replicas_healthy(
        replicas in 1u64..7,
        parallelism in 0u64..4,
        monitor in 0u64..3,
        picks in picks(),
    ) {
        let update = UpdateConfig {
            parallelism,
            monitor_ms: monitor * 3_000,
            order: UpdateOrder::StartFirst,
            ..UpdateConfig::default()
        };
        let case = Case { replicas, update, rollback: UpdateConfig::rollback_default(), v2_healthy: true };
        prop_assert_eq!(case.max_lost(), 0);
        let mut sim = updating(&case)?;
        play(&mut sim, &case, &picks)?;
        prop_assert_eq!(sim.service(SERVICE).update.state, UpdateState::Completed);
        serves_only(&sim, &case, V2)?;
    }

    /// (c) An update to a revision that never becomes healthy, with failure
    /// action rollback, always ends rolled back to the healthy revision:
    /// its spec again, every wanted slot serving a healthy `web:1` task.
    #[test]
    fn a_failing_update_rolls_back_to_the_healthy_revision(
        replicas in 1u64..7,
        parallelism in 0u64..4,
        start_first in any::<bool>(),
        monitor in 0u64..3,
        ratio in prop_oneof![Just(0.0), Just(0.3), Just(0.6)],
        rollback_parallelism in 0u64..4,
        rollback_start_first in any::<bool>(),
        picks in picks(),
    ) {
        let update = UpdateConfig {
            parallelism,
            monitor_ms: monitor * 3_000,
            failure_action: FailureAction::Rollback,
            max_failure_ratio: ratio,
            order: order(start_first),
            ..UpdateConfig::default()
        };
        let rollback = UpdateConfig {
            parallelism: rollback_parallelism,
            order: order(rollback_start_first),
            ..UpdateConfig::rollback_default()
        };
        let case = Case { replicas, update, rollback, v2_healthy: false };
        let mut sim = updating(&case)?;
        play(&mut sim, &case, &picks)?;
        let svc = sim.service(SERVICE);
        prop_assert_eq!(svc.update.state, UpdateState::RolledBack, "{}", svc.update.message);
        prop_assert_eq!(&svc.spec, &case.spec(V1));
        prop_assert_eq!(svc.revision, 3);
        serves_only(&sim, &case, V1)?;
        monitored(&sim, case.rollback.monitor_ms)?;
    }

    /// (c) The same with failure action pause: the update ends paused, never
    /// having left more than `parallelism` slots without a healthy task
    /// (none start-first).
    #[test]
    fn a_failing_update_pauses_having_lost_at_most_parallelism_slots(
        replicas in 1u64..7,
        parallelism in 0u64..4,
        start_first in any::<bool>(),
        monitor in 0u64..3,
        ratio in prop_oneof![Just(0.0), Just(0.3), Just(0.6)],
        picks in picks(),
    ) {
        let update = UpdateConfig {
            parallelism,
            monitor_ms: monitor * 3_000,
            failure_action: FailureAction::Pause,
            max_failure_ratio: ratio,
            order: order(start_first),
            ..UpdateConfig::default()
        };
        let case = Case { replicas, update, rollback: UpdateConfig::rollback_default(), v2_healthy: false };
        let mut sim = updating(&case)?;
        play(&mut sim, &case, &picks)?;
        let svc = sim.service(SERVICE);
        prop_assert_eq!(svc.update.state, UpdateState::Paused);
        prop_assert_eq!(&svc.spec.task.image, V2, "a pause keeps the new spec");
        prop_assert!(svc.update.message.contains("failed"), "{}", svc.update.message);
    }
}

proptest! {
    // The defect kept below took a few dozen cases to find: more of them.
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// (d) A redeploy in the middle of a rollout (a fix pushed while the
    /// rollout runs, is paused or rolls back) keeps the same bounds, and
    /// the third revision reaches every slot.
    #[test]
    fn a_redeploy_mid_rollout_keeps_the_bounds(
        replicas in 1u64..7,
        parallelism in 0u64..4,
        start_first in any::<bool>(),
        monitor in 0u64..3,
        v2_healthy in any::<bool>(),
        rollback in any::<bool>(),
        before in picks(),
        after in picks(),
    ) {
        let update = UpdateConfig {
            parallelism,
            monitor_ms: monitor * 3_000,
            failure_action: if rollback { FailureAction::Rollback } else { FailureAction::Pause },
            order: order(start_first),
            ..UpdateConfig::default()
        };
        let case = Case { replicas, update, rollback: UpdateConfig::rollback_default(), v2_healthy };
        let mut sim = updating(&case)?;
        for pick in &before {
            step(&mut sim, &case, *pick)?;
        }
        sim.deploy(vec![case.spec(V3)]);
        sim.settle();
        check(&sim, &case)?;
        play(&mut sim, &case, &after)?;
        prop_assert_eq!(sim.service(SERVICE).update.state, UpdateState::Completed);
        serves_only(&sim, &case, V3)?;
        monitored(&sim, case.update.monitor_ms)?;
    }
}

/// The newest task of `image` in `slot`.
fn task_in(sim: &Sim, slot: u64, image: &str) -> String {
    let tasks = slots(sim);
    let found = tasks
        .get(&slot)
        .and_then(|ts| ts.iter().filter(|t| t.template.image == image).max_by_key(|t| (t.created_at, t.id.clone())));
    found.map(|t| t.id.clone()).unwrap_or_else(|| panic!("no {image} task in slot {slot}"))
}

/// Found by `a_redeploy_mid_rollout_keeps_the_bounds`: two replicas,
/// parallelism 1, stop-first; slot 1 runs `web:2` healthy, slot 2's `web:2`
/// task has started but is not healthy yet when `web:3` is deployed. The
/// planner took the dirty slots in key order and stopped slot 1's healthy
/// task, leaving both slots without a healthy task. Slot 2, which serves
/// nothing, goes first.
#[test]
fn a_redeploy_mid_rollout_replaces_the_slot_that_serves_nothing_first() {
    let update = UpdateConfig { parallelism: 1, monitor_ms: 0, ..UpdateConfig::default() };
    let case = Case { replicas: 2, update, rollback: UpdateConfig::rollback_default(), v2_healthy: true };
    let mut sim = updating(&case).expect("web:2 deployed over a converged web:1");
    let report = |sim: &mut Sim, slot: u64, image: &str, what: Report| {
        send(sim, &task_in(sim, slot, image), what);
        sim.settle();
    };
    report(&mut sim, 1, V1, Report::Stopped);
    report(&mut sim, 1, V2, Report::Started);
    report(&mut sim, 1, V2, Report::Healthy);
    // Slot 1 done: slot 2's turn.
    report(&mut sim, 2, V1, Report::Stopped);
    report(&mut sim, 2, V2, Report::Started);
    let (healthy, starting) = (task_in(&sim, 1, V2), task_in(&sim, 2, V2));
    assert_eq!(sim.state.tasks[&healthy].status.health, "healthy");
    assert_eq!(sim.state.tasks[&starting].status.health, "starting");

    sim.deploy(vec![case.spec(V3)]);
    sim.settle();
    assert_eq!(sim.state.tasks[&healthy].desired_state, DesiredState::Running, "the serving slot waits its turn");
    assert_eq!(sim.state.tasks[&starting].desired_state, DesiredState::Shutdown, "the slot serving nothing goes first");
    if let Err(e) = check(&sim, &case) {
        panic!("{e}");
    }
}
