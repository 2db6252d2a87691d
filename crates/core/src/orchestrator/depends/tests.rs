//! Start order: the first start of a service waits for its dependencies;
//! later restarts and updates do not.

use crate::command::{Command, TaskStatusUpdate};
use crate::model::*;
use crate::orchestrator::orchestrate;
use crate::orchestrator::tests::{Sim, spec};

fn depends(mut s: ServiceSpec, deps: &[(&str, DependencyCondition, bool)]) -> ServiceSpec {
    s.depends_on = deps
        .iter()
        .map(|(service, condition, required)| Dependency {
            service: service.to_string(),
            condition: *condition,
            required: *required,
        })
        .collect();
    s
}

fn job(name: &str) -> ServiceSpec {
    let mut s = spec(name, 0, &format!("{name}:1"));
    s.mode = ServiceMode::ReplicatedJob { replicas: 1, max_concurrent: 0 };
    s.restart.condition = RestartCondition::None;
    s
}

use DependencyCondition::{
    ServiceCompletedSuccessfully as Completed, ServiceHealthy as Healthy, ServiceStarted as Started,
};

/// The ids of every task of `service`.
fn tasks(sim: &Sim, service: &str) -> Vec<String> {
    let svc = sim.service(service);
    sim.state.tasks_of(&svc.id).map(|t| t.id.clone()).collect()
}

/// The task of `service` in slot `slot` that is wanted.
fn task(sim: &Sim, service: &str, slot: u64) -> String {
    let svc = sim.service(service);
    sim.state
        .tasks_of(&svc.id)
        .find(|t| t.slot == slot && t.desired_state == DesiredState::Running)
        .map(|t| t.id.clone())
        .expect("a wanted task in the slot")
}

/// The agent reports `task` running with the health `health`.
fn health(sim: &mut Sim, task: &str, health: &str) {
    let node_id = sim.state.tasks[task].node_id.clone().expect("assigned");
    let status = TaskStatus {
        state: TaskState::Running,
        timestamp: sim.now,
        container_id: format!("ctr-{task}"),
        health: health.into(),
        ..Default::default()
    };
    sim.apply(Command::UpdateTaskStatus {
        updates: vec![TaskStatusUpdate { task_id: task.into(), node_id, status }],
        at: sim.now,
    });
}

fn message(sim: &Sim, service: &str) -> String {
    sim.service(service).update.message.clone()
}

#[test]
fn the_first_start_waits_until_the_dependency_is_healthy() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("db", 1, "db:1"), depends(spec("web", 2, "web:1"), &[("db", Healthy, true)])]);
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    assert_eq!(message(&sim, "app_web"), "waiting for app_db to be healthy (0/1 healthy)");
    assert_eq!(sim.service("app_web").update.state, UpdateState::Updating);
    // Running, its health check not passed yet: still waiting, and nothing more to do.
    let db = task(&sim, "app_db", 1);
    health(&mut sim, &db, "starting");
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    assert!(orchestrate(&sim.state, sim.now).plan.is_empty(), "a waiting service makes no plan");
    // Healthy: web starts, every slot at once, and the reason goes.
    sim.now += 4_000;
    health(&mut sim, &db, "healthy");
    let o = sim.round();
    assert_eq!(o.plan.create.len(), 2);
    assert_eq!(message(&sim, "app_web"), "");
    sim.settle();
    sim.agent();
    assert_eq!(sim.running("app_web").len(), 2);
    assert!(sim.running("app_web").iter().all(|t| t.created_at >= sim.state.tasks[&db].status.timestamp));
}

#[test]
fn a_dependency_without_a_health_check_is_healthy_once_it_runs() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("db", 1, "db:1"), depends(spec("web", 1, "web:1"), &[("db", Healthy, true)])]);
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    // The agent reports no health: no health check.
    sim.agent();
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn service_started_waits_for_every_slot_of_the_dependency() {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.deploy(vec![spec("db", 2, "db:1"), depends(spec("web", 1, "web:1"), &[("db", Started, true)])]);
    sim.settle();
    let first = task(&sim, "app_db", 1);
    sim.report(&first, TaskState::Starting, None);
    sim.settle();
    assert_eq!(message(&sim, "app_web"), "waiting for app_db to start (0/2 running)");
    sim.report(&first, TaskState::Running, None);
    sim.settle();
    assert_eq!(message(&sim, "app_web"), "waiting for app_db to start (1/2 running)");
    // An unhealthy-but-running task counts as started.
    let second = task(&sim, "app_db", 2);
    health(&mut sim, &second, "starting");
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
    assert_eq!(message(&sim, "app_web"), "");
}

#[test]
fn completed_successfully_waits_for_the_job_to_complete() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![job("migrate"), depends(spec("web", 1, "web:1"), &[("migrate", Completed, true)])]);
    sim.settle();
    sim.agent();
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    assert_eq!(message(&sim, "app_web"), "waiting for app_migrate to complete successfully (0/1 completed)");
    let m = task(&sim, "app_migrate", 1);
    sim.report(&m, TaskState::Complete, Some(0));
    sim.settle();
    assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn completed_successfully_of_a_service_is_each_slot_exiting_zero() {
    let mut sim = Sim::new(&["n1"]);
    let mut once = spec("seed", 1, "seed:1");
    once.restart.condition = RestartCondition::OnFailure;
    sim.deploy(vec![once, depends(spec("web", 1, "web:1"), &[("seed", Completed, true)])]);
    sim.settle();
    sim.agent();
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    let s = task(&sim, "app_seed", 1);
    sim.report(&s, TaskState::Complete, Some(0));
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn a_required_dependency_that_failed_keeps_the_service_waiting_with_the_reason() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![job("migrate"), depends(spec("web", 1, "web:1"), &[("migrate", Completed, true)])]);
    sim.settle();
    sim.agent();
    let m = task(&sim, "app_migrate", 1);
    sim.report(&m, TaskState::Failed, Some(3));
    sim.settle();
    assert_eq!(sim.service("app_migrate").update.state, UpdateState::Failed);
    assert!(tasks(&sim, "app_web").is_empty());
    let why = message(&sim, "app_web");
    assert!(
        why.starts_with("waiting for app_migrate to complete successfully: it cannot complete: task ")
            && why.contains("failed with exit code 3"),
        "{why}"
    );
    sim.now += 60_000;
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
}

#[test]
fn a_crashing_dependency_is_named_while_it_restarts() {
    let mut sim = Sim::new(&["n1"]);
    // Its rollout goes on after a failure (the default, pause, is the next test).
    let mut db = spec("db", 1, "db:1");
    db.update.failure_action = FailureAction::Continue;
    sim.deploy(vec![db, depends(spec("web", 1, "web:1"), &[("db", Healthy, true)])]);
    sim.settle();
    sim.agent();
    let db = task(&sim, "app_db", 1);
    // Running, then it fails: "failed" while its restart delay runs...
    health(&mut sim, &db, "starting");
    sim.report(&db, TaskState::Failed, Some(1));
    sim.settle();
    let why = message(&sim, "app_web");
    assert!(why.starts_with("waiting for app_db to be healthy: task ") && why.ends_with("failed with exit code 1"));
    // ... and while its replacement is on its way.
    sim.now += 5_000;
    sim.settle();
    assert_ne!(task(&sim, "app_db", 1), db);
    assert_eq!(message(&sim, "app_web"), why);
    // The replacement is healthy: web starts.
    let again = task(&sim, "app_db", 1);
    health(&mut sim, &again, "healthy");
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn an_optional_dependency_that_failed_does_not_hold_the_service_back() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![
        job("migrate"),
        spec("cache", 1, "cache:1"),
        depends(spec("web", 1, "web:1"), &[("cache", Started, false), ("migrate", Completed, false)]),
    ]);
    sim.settle();
    // On their way, optional dependencies are waited for.
    assert_eq!(
        message(&sim, "app_web"),
        "waiting for app_cache to start (0/1 running); app_migrate to complete successfully (0/1 completed)"
    );
    sim.agent();
    let m = task(&sim, "app_migrate", 1);
    sim.report(&m, TaskState::Failed, Some(1));
    sim.settle();
    // The job failed (not required): web goes on.
    assert_eq!(sim.service("app_migrate").update.state, UpdateState::Failed);
    assert_eq!(tasks(&sim, "app_web").len(), 1);
    assert_eq!(message(&sim, "app_web"), "");
}

#[test]
fn an_optional_dependency_that_is_unhealthy_does_not_hold_the_service_back() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("db", 1, "db:1"), depends(spec("web", 1, "web:1"), &[("db", Healthy, false)])]);
    sim.settle();
    let db = task(&sim, "app_db", 1);
    health(&mut sim, &db, "starting");
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    health(&mut sim, &db, "unhealthy");
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn a_paused_dependency_keeps_a_required_dependent_waiting() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("db", 1, "db:1"), depends(spec("web", 1, "web:1"), &[("db", Healthy, true)])]);
    sim.settle();
    let db = task(&sim, "app_db", 1);
    health(&mut sim, &db, "unhealthy");
    sim.report(&db, TaskState::Failed, Some(1));
    sim.settle();
    // The first rollout of db failed: paused (failure_action pause).
    assert_eq!(sim.service("app_db").update.state, UpdateState::Paused);
    let why = message(&sim, "app_web");
    assert!(why.starts_with("waiting for app_db to be healthy: its rollout paused: task "), "{why}");
    assert!(tasks(&sim, "app_web").is_empty());
}

#[test]
fn dependencies_are_waited_for_along_a_chain() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![
        spec("db", 1, "db:1"),
        depends(spec("api", 1, "api:1"), &[("db", Started, true)]),
        depends(spec("web", 1, "web:1"), &[("api", Started, true)]),
    ]);
    sim.settle();
    assert_eq!(tasks(&sim, "app_api").len(), 0);
    assert_eq!(tasks(&sim, "app_web").len(), 0);
    sim.agent();
    sim.settle();
    assert_eq!(tasks(&sim, "app_api").len(), 1);
    assert_eq!(tasks(&sim, "app_web").len(), 0);
    sim.agent();
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn once_started_a_service_restarts_and_updates_on_its_own() {
    let mut sim = Sim::new(&["n1"]);
    let web = depends(spec("web", 1, "web:1"), &[("db", Healthy, true)]);
    sim.deploy(vec![spec("db", 1, "db:1"), web.clone()]);
    sim.play(3);
    assert_eq!(sim.running("app_web").len(), 1);
    // db goes down for good.
    let db = task(&sim, "app_db", 1);
    sim.report(&db, TaskState::Failed, Some(1));
    let w = task(&sim, "app_web", 1);
    sim.report(&w, TaskState::Failed, Some(1));
    sim.now += 5_000;
    sim.settle();
    // web's restart does not wait for db.
    assert_ne!(task(&sim, "app_web", 1), w);
    // Nor does its update.
    let mut web2 = web.clone();
    web2.task.image = "web:2".into();
    sim.deploy(vec![spec("db", 1, "db:1"), web2]);
    sim.play(3);
    let running: Vec<&str> = sim.running("app_web").iter().map(|t| t.template.image.as_str()).collect();
    assert_eq!(running, ["web:2"]);
    assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
    assert_eq!(message(&sim, "app_web"), "");
}

#[test]
fn a_service_scaled_to_zero_and_up_again_starts_anew() {
    let mut sim = Sim::new(&["n1"]);
    let web = depends(spec("web", 1, "web:1"), &[("db", Started, true)]);
    sim.deploy(vec![spec("db", 1, "db:1"), web.clone()]);
    sim.play(3);
    sim.deploy(vec![spec("db", 0, "db:1"), depends(spec("web", 0, "web:1"), &[("db", Started, true)])]);
    sim.play(3);
    assert!(tasks(&sim, "app_web").is_empty() && tasks(&sim, "app_db").is_empty());
    // A service that wants no task waits for nothing.
    assert_eq!(message(&sim, "app_web"), "");
    sim.deploy(vec![spec("db", 1, "db:1"), web]);
    sim.settle();
    assert!(tasks(&sim, "app_web").is_empty());
    assert_eq!(message(&sim, "app_web"), "waiting for app_db to start (0/1 running)");
    sim.agent();
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn a_dependency_that_wants_no_task_is_met() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("db", 0, "db:1"), depends(spec("web", 1, "web:1"), &[("db", Healthy, true)])]);
    sim.settle();
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn changing_depends_on_alone_makes_a_revision_and_keeps_the_tasks() {
    let mut sim = Sim::new(&["n1"]);
    sim.converge(vec![spec("db", 1, "db:1"), spec("web", 2, "web:1")]);
    let before = tasks(&sim, "app_web");
    let web = depends(spec("web", 2, "web:1"), &[("db", Healthy, true)]);
    let d = crate::diff::service(&sim.service("app_web").spec, &web).expect("a change");
    assert!(!d.replaces_tasks);
    assert_eq!(d.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["depends_on"]);
    sim.deploy(vec![spec("db", 1, "db:1"), web]);
    assert_eq!(sim.service("app_web").revision, 2);
    sim.play(1);
    assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
    assert_eq!(tasks(&sim, "app_web"), before);
}

#[test]
fn a_redeploy_while_waiting_keeps_waiting() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("db", 1, "db:1"), depends(spec("web", 1, "web:1"), &[("db", Healthy, true)])]);
    sim.settle();
    let db = task(&sim, "app_db", 1);
    health(&mut sim, &db, "starting");
    sim.deploy(vec![spec("db", 1, "db:1"), depends(spec("web", 1, "web:2"), &[("db", Healthy, true)])]);
    sim.settle();
    assert_eq!(sim.service("app_web").revision, 2);
    assert!(tasks(&sim, "app_web").is_empty());
    assert_eq!(message(&sim, "app_web"), "waiting for app_db to be healthy (0/1 healthy)");
    health(&mut sim, &db, "healthy");
    sim.settle();
    let svc = sim.service("app_web");
    assert!(sim.state.tasks_of(&svc.id).all(|t| t.template.image == "web:2"));
    assert_eq!(tasks(&sim, "app_web").len(), 1);
}

#[test]
fn a_global_dependent_waits_too() {
    let mut sim = Sim::new(&["n1", "n2"]);
    let mut agent = spec("agent", 0, "agent:1");
    agent.mode = ServiceMode::Global;
    sim.deploy(vec![spec("db", 1, "db:1"), depends(agent, &[("db", Started, true)])]);
    sim.settle();
    assert!(tasks(&sim, "app_agent").is_empty());
    sim.agent();
    sim.settle();
    assert_eq!(tasks(&sim, "app_agent").len(), 2);
}
