//! Orchestrator tests: each drives a small cluster through `apply`, playing
//! the agent's part by hand, and checks the plans.

use super::*;
use crate::command::{Command, Placement, TaskStatusUpdate};
use crate::model::*;
use crate::scheduler::{Scheduler, SpreadScheduler};
use crate::state::ClusterState;

pub(crate) struct Sim {
    pub state: ClusterState,
    pub index: u64,
    pub now: Timestamp,
}

pub(crate) fn spec(name: &str, replicas: u64, image: &str) -> ServiceSpec {
    ServiceSpec {
        autoscale: None,
        name: name.into(),
        mode: ServiceMode::Replicated { replicas },
        task: TaskTemplate { image: image.into(), stop_grace_period_ms: 10_000, ..Default::default() },
        restart: RestartPolicy::default(),
        update: UpdateConfig::default(),
        rollback: UpdateConfig::rollback_default(),
        labels: Default::default(),
        endpoint_mode: EndpointMode::Vip,
        depends_on: Vec::new(),
    }
}

pub(crate) fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        name: id.into(),
        addr: format!("{id}:4280"),
        role: NodeRole::Manager,
        availability: Availability::Active,
        state: NodeState::Ready,
        labels: Default::default(),
        resources: Resources::default(),
        engine_version: "20.10".into(),
        engine: Default::default(),
        updated_at: 0,
    }
}

impl Sim {
    pub fn new(nodes: &[&str]) -> Self {
        let mut s = Sim { state: ClusterState::default(), index: 0, now: 1_000_000 };
        s.apply(Command::InitCluster { cluster_id: "c".into(), at: 0, security: None, node: None });
        for n in nodes {
            s.apply(Command::UpsertNode { node: node(n), at: 0 });
        }
        s
    }

    /// Applies `cmd`; then, as a node's agent would, keeps the tag of each
    /// image waiting to be resolved (the test images have no registry).
    pub fn apply(&mut self, cmd: Command) -> crate::state::Applied {
        self.index += 1;
        let out = self.state.apply(self.index, &cmd);
        for pin in self.state.keep_tags("built on the node", cmd.at()) {
            self.index += 1;
            self.state.apply(self.index, &pin);
        }
        out
    }

    pub fn deploy(&mut self, services: Vec<ServiceSpec>) {
        let spec = StackSpec {
            name: "app".into(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            volumes: Default::default(),
            ..Default::default()
        };
        let r = self.apply(Command::PutStack { spec, prune: false, registry_auth: None, at: self.now });
        assert_eq!(r.rejected, None);
    }

    /// Deploys `services` and lets them run past their monitor period: every
    /// rollout completed.
    pub fn converge(&mut self, services: Vec<ServiceSpec>) {
        self.deploy(services);
        self.settle();
        self.agent();
        self.now += 10_000;
        self.settle();
    }

    /// One controller round: orchestrate, then schedule.
    pub fn round(&mut self) -> Orchestration {
        let o = orchestrate(&self.state, self.now);
        if !o.plan.is_empty() {
            self.apply(Command::ApplyPlan { plan: o.plan.clone(), at: self.now });
        }
        let d = SpreadScheduler.schedule(&self.state);
        if !d.is_empty() {
            self.apply(Command::Schedule { decisions: d, at: self.now });
        }
        o
    }

    /// Rounds until the orchestrator has nothing more to do.
    pub fn settle(&mut self) {
        for _ in 0..50 {
            let o = orchestrate(&self.state, self.now);
            let d = SpreadScheduler.schedule(&self.state);
            let pending_assign = d.iter().any(|p| matches!(p, Placement::Assign { .. }));
            if o.plan.is_empty() && !pending_assign {
                return;
            }
            self.round();
        }
        panic!("the orchestrator did not settle: {:?}", orchestrate(&self.state, self.now).plan);
    }

    pub fn report(&mut self, task: &str, state: TaskState, exit_code: Option<i64>) {
        let t = &self.state.tasks[task];
        let node_id = t.node_id.clone().expect("task is assigned");
        let status = TaskStatus {
            state,
            timestamp: self.now,
            exit_code,
            container_id: format!("ctr-{task}"),
            ..Default::default()
        };
        self.apply(Command::UpdateTaskStatus {
            updates: vec![TaskStatusUpdate { task_id: task.into(), node_id, status }],
            at: self.now,
        });
    }

    /// Reports `task` in `state` with `health` (`starting`, `healthy`, …).
    pub fn report_health(&mut self, task: &str, state: TaskState, health: &str) {
        let t = &self.state.tasks[task];
        let node_id = t.node_id.clone().expect("task is assigned");
        let status = TaskStatus {
            state,
            timestamp: self.now,
            health: health.into(),
            container_id: format!("ctr-{task}"),
            ..Default::default()
        };
        self.apply(Command::UpdateTaskStatus {
            updates: vec![TaskStatusUpdate { task_id: task.into(), node_id, status }],
            at: self.now,
        });
    }

    /// The agent: every assigned task that should run runs; every task that should stop stops.
    pub fn agent(&mut self) {
        let ids: Vec<(String, DesiredState, TaskState)> = self
            .state
            .tasks
            .values()
            .filter(|t| t.node_id.is_some())
            .map(|t| (t.id.clone(), t.desired_state, t.status.state))
            .collect();
        for (id, desired, state) in ids {
            match desired {
                DesiredState::Running if state < TaskState::Running => self.report(&id, TaskState::Running, None),
                DesiredState::Shutdown if !state.is_terminal() => self.report(&id, TaskState::Shutdown, Some(0)),
                _ => {}
            }
        }
    }

    /// Lets the agent and the controller run for `seconds`, one second a
    /// round, then past every monitor period.
    pub fn play(&mut self, seconds: usize) {
        for _ in 0..seconds {
            self.agent();
            self.now += 1_000;
            self.settle();
        }
        self.now += 10_000;
        self.settle();
    }

    pub fn running(&self, service: &str) -> Vec<&Task> {
        let svc = self.state.service_by_name(service).expect("service");
        self.state
            .tasks_of(&svc.id)
            .filter(|t| t.desired_state == DesiredState::Running && t.status.state == TaskState::Running)
            .collect()
    }

    pub fn service(&self, name: &str) -> &Service {
        self.state.service_by_name(name).expect("service")
    }
}

#[test]
fn replicated_service_gets_one_task_per_slot() {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.deploy(vec![spec("web", 3, "web:1")]);
    sim.settle();
    sim.agent();
    let mut slots: Vec<u64> = sim.running("app_web").iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3]);
    // Spread: 2 on one node, 1 on the other.
    let on_n1 = sim.running("app_web").iter().filter(|t| t.node_id.as_deref() == Some("n1")).count();
    assert!(on_n1 == 1 || on_n1 == 2);
}

#[test]
fn scale_up_and_down() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("web", 3, "web:1")]);
    sim.settle();
    sim.agent();
    sim.deploy(vec![spec("web", 5, "web:1")]);
    sim.settle();
    sim.agent();
    assert_eq!(sim.running("app_web").len(), 5);
    // A replicas-only change keeps the running tasks.
    sim.deploy(vec![spec("web", 2, "web:1")]);
    sim.settle();
    sim.agent();
    sim.settle();
    let mut slots: Vec<u64> = sim.running("app_web").iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2]);
    // Tasks of slots scaled away are deleted once stopped.
    let svc = sim.service("app_web").id.clone();
    assert!(sim.state.tasks_of(&svc).all(|t| t.slot <= 2));
}

#[test]
fn scaling_does_not_restart_tasks() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("web", 2, "web:1")]);
    sim.settle();
    sim.agent();
    let before: Vec<String> = sim.running("app_web").iter().map(|t| t.id.clone()).collect();
    sim.deploy(vec![spec("web", 3, "web:1")]);
    sim.settle();
    sim.agent();
    let after: Vec<String> = sim.running("app_web").iter().map(|t| t.id.clone()).collect();
    for id in before {
        assert!(after.contains(&id), "task {id} was replaced by a scale-up");
    }
}

#[test]
fn failed_task_is_replaced_after_the_restart_delay() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("web", 1, "web:1")]);
    sim.settle();
    sim.agent();
    let first = sim.running("app_web")[0].id.clone();
    sim.report(&first, TaskState::Failed, Some(3));
    // Before the delay: nothing, but a wake-up at the end of the delay.
    let o = sim.round();
    assert!(o.plan.create.is_empty());
    assert_eq!(o.wake_at, Some(sim.now + 5_000));
    sim.now += 5_000;
    sim.settle();
    sim.agent();
    let running = sim.running("app_web");
    assert_eq!(running.len(), 1);
    assert_ne!(running[0].id, first);
    assert_eq!(running[0].slot, 1);
    // The failed task stays as history with its exit code.
    let old = &sim.state.tasks[&first];
    assert_eq!(old.status.state, TaskState::Failed);
    assert_eq!(old.status.exit_code, Some(3));
    assert_eq!(old.desired_state, DesiredState::Shutdown);
}

#[test]
fn restart_condition_none_leaves_the_slot_empty() {
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("job", 1, "job:1");
    s.restart.condition = RestartCondition::None;
    sim.deploy(vec![s]);
    sim.settle();
    sim.agent();
    let id = sim.running("app_job")[0].id.clone();
    sim.report(&id, TaskState::Complete, Some(0));
    sim.now += 60_000;
    sim.settle();
    assert_eq!(sim.state.tasks.len(), 1);
}

#[test]
fn on_failure_does_not_restart_a_clean_exit() {
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("job", 1, "job:1");
    s.restart.condition = RestartCondition::OnFailure;
    sim.deploy(vec![s]);
    sim.settle();
    sim.agent();
    let id = sim.running("app_job")[0].id.clone();
    sim.report(&id, TaskState::Complete, Some(0));
    sim.now += 60_000;
    sim.settle();
    assert_eq!(sim.state.tasks.len(), 1);
}

/// A one-replica `app_web` whose task fails as soon as it runs, `rounds`
/// times (restart delay 0), with `max_attempts` restarts allowed.
fn crash_loop(max_attempts: u64, rounds: usize) -> Sim {
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("web", 1, "web:1");
    s.restart.max_attempts = max_attempts;
    s.restart.delay_ms = 0;
    sim.deploy(vec![s]);
    sim.settle();
    for _ in 0..rounds {
        sim.agent();
        if let Some(t) = sim.running("app_web").first().map(|t| t.id.clone()) {
            sim.report(&t, TaskState::Failed, Some(1));
        }
        sim.now += 1;
        sim.settle();
    }
    sim
}

#[test]
fn max_attempts_stops_restarting() {
    let sim = crash_loop(2, 5);
    // The first task and two restarts.
    assert_eq!(sim.state.tasks.len(), 3);
}

#[test]
fn max_attempts_above_the_history_limit_still_stops_restarting() {
    let sim = crash_loop(8, 20);
    // The first task and eight restarts, then no more.
    assert_eq!(sim.state.tasks.len(), 9);
    assert!(sim.running("app_web").is_empty());
}

#[test]
fn task_history_is_trimmed_to_five_per_slot() {
    // Unlimited restarts (max_attempts 0): ten failures.
    let mut sim = crash_loop(0, 10);
    sim.settle();
    let svc = sim.service("app_web").id.clone();
    let stopped = sim.state.tasks_of(&svc).filter(|t| t.desired_state == DesiredState::Shutdown).count();
    assert_eq!(stopped, TASK_HISTORY_PER_SLOT);
}

#[test]
fn rolling_update_replaces_one_slot_at_a_time() {
    let mut sim = Sim::new(&["n1"]);
    sim.converge(vec![spec("web", 3, "web:1")]);
    assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
    sim.deploy(vec![spec("web", 3, "web:2")]);
    assert_eq!(sim.service("app_web").revision, 2);
    let o = sim.round();
    // Stop-first, parallelism 1: exactly one old task stops.
    assert_eq!(o.plan.set_desired.len(), 1);
    assert!(o.plan.create.is_empty());
    for _ in 0..10 {
        sim.agent();
        sim.settle();
        let svc = sim.service("app_web").id.clone();
        let in_flight = sim
            .state
            .tasks_of(&svc)
            .filter(|t| {
                t.template.image == "web:2"
                    && t.desired_state == DesiredState::Running
                    && t.status.state < TaskState::Running
            })
            .count();
        assert!(in_flight <= 1, "more than `parallelism` slots updating at once");
    }
    sim.now += 10_000;
    sim.settle();
    let running = sim.running("app_web");
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|t| t.template.image == "web:2"));
    assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
}

/// Lets an update to `web:bad` start its first new task (stop-first: the
/// old task stops, then the new one starts), which then fails.
fn fail_the_first_updated_task(sim: &mut Sim) {
    sim.settle();
    sim.agent();
    sim.settle();
    sim.agent();
    let new = sim
        .running("app_web")
        .into_iter()
        .find(|t| t.template.image == "web:bad")
        .map(|t| t.id.clone())
        .expect("new task");
    sim.report(&new, TaskState::Failed, Some(1));
    sim.settle();
}

#[test]
fn failed_update_pauses() {
    let mut sim = Sim::new(&["n1"]);
    sim.converge(vec![spec("web", 2, "web:1")]);
    sim.deploy(vec![spec("web", 2, "web:bad")]);
    fail_the_first_updated_task(&mut sim);
    let svc = sim.service("app_web");
    assert_eq!(svc.update.state, UpdateState::Paused);
    assert!(svc.update.message.contains("exit code 1"), "{}", svc.update.message);
    // Paused: the other slot keeps the old image.
    sim.agent();
    sim.now += 60_000;
    sim.settle();
    sim.agent();
    assert!(sim.running("app_web").iter().any(|t| t.template.image == "web:1"));
}

#[test]
fn failed_update_rolls_back_when_asked() {
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("web", 2, "web:1");
    s.update.failure_action = FailureAction::Rollback;
    sim.converge(vec![s.clone()]);
    s.task.image = "web:bad".into();
    sim.deploy(vec![s]);
    fail_the_first_updated_task(&mut sim);
    assert_eq!(sim.service("app_web").update.state, UpdateState::RollingBack);
    assert_eq!(sim.service("app_web").spec.task.image, "web:1");
    sim.play(6);
    let svc = sim.service("app_web");
    assert_eq!(svc.update.state, UpdateState::RolledBack);
    assert_eq!(svc.revision, 3);
    assert!(sim.running("app_web").iter().all(|t| t.template.image == "web:1"));
}

#[test]
fn an_automatic_rollback_goes_back_to_the_last_healthy_revision() {
    // v1 converges; v2 fails and pauses; v3 fails and rolls back: to v1's
    // spec, the last one that ran healthy, not to v2's, which never did.
    let mut sim = Sim::new(&["n1"]);
    sim.converge(vec![spec("web", 2, "web:1")]);
    assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
    sim.deploy(vec![spec("web", 2, "web:bad")]);
    fail_the_first_updated_task(&mut sim);
    assert_eq!(sim.service("app_web").update.state, UpdateState::Paused);
    let mut s = spec("web", 2, "web:bad");
    s.task.env = vec!["TRY=2".into()];
    s.update.failure_action = FailureAction::Rollback;
    sim.deploy(vec![s]);
    fail_the_first_updated_task(&mut sim);
    let svc = sim.service("app_web");
    assert_eq!(svc.update.state, UpdateState::RollingBack);
    assert_eq!(svc.spec.task.image, "web:1");
    // The history says how each rollout ended.
    let ended: Vec<(u64, Option<UpdateState>)> =
        svc.history.iter().map(|r| (r.revision, r.rollout.as_ref().map(|u| u.state))).collect();
    assert_eq!(ended, [(2, Some(UpdateState::Paused)), (3, Some(UpdateState::RollingBack))]);
    sim.play(6);
    let svc = sim.service("app_web");
    assert_eq!(svc.update.state, UpdateState::RolledBack);
    assert!(sim.running("app_web").iter().all(|t| t.template.image == "web:1"));
    assert_eq!(sim.running("app_web").len(), 2);
}

#[test]
fn continue_moves_past_a_failed_slot_and_completes() {
    // failure_action continue, parallelism 1: a slot whose new task fails
    // does not hold the rollout; every slot is tried, and the rollout ends.
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("web", 3, "web:1");
    s.update.failure_action = FailureAction::Continue;
    s.update.monitor_ms = 0;
    sim.converge(vec![s.clone()]);
    s.task.image = "web:bad".into();
    sim.deploy(vec![s]);
    let svc = sim.service("app_web").id.clone();
    let mut tried = std::collections::BTreeSet::new();
    for _ in 0..12 {
        sim.settle();
        sim.agent();
        let starting: Vec<(String, u64)> = sim
            .state
            .tasks_of(&svc)
            .filter(|t| t.template.image == "web:bad" && t.status.state == TaskState::Running)
            .map(|t| (t.id.clone(), t.slot))
            .collect();
        for (id, slot) in starting {
            tried.insert(slot);
            sim.report(&id, TaskState::Failed, Some(1));
        }
        sim.now += 1_000;
    }
    sim.settle();
    assert_eq!(tried, std::collections::BTreeSet::from([1, 2, 3]), "every slot was tried");
    let svc = sim.service("app_web");
    assert_eq!(svc.update.state, UpdateState::Completed, "{:?}", svc.update);
    assert!(svc.update.message.starts_with("3 of 3 slots failed within the failure budget"), "{}", svc.update.message);
}

#[test]
fn start_first_overlaps_old_and_new() {
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("web", 1, "web:1");
    s.update.order = UpdateOrder::StartFirst;
    sim.converge(vec![s.clone()]);
    s.task.image = "web:2".into();
    sim.deploy(vec![s]);
    sim.settle();
    let svc = sim.service("app_web").id.clone();
    // The new task exists while the old one still runs.
    let wanted: Vec<&Task> = sim.state.tasks_of(&svc).filter(|t| t.desired_state == DesiredState::Running).collect();
    assert_eq!(wanted.len(), 2);
    sim.agent();
    sim.settle();
    sim.agent();
    let running = sim.running("app_web");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].template.image, "web:2");
}

#[test]
fn global_service_runs_one_task_per_ready_node() {
    let mut sim = Sim::new(&["n1", "n2", "n3"]);
    let mut s = spec("agent", 0, "agent:1");
    s.mode = ServiceMode::Global;
    sim.deploy(vec![s]);
    sim.settle();
    sim.agent();
    let mut nodes: Vec<String> = sim.running("app_agent").iter().filter_map(|t| t.node_id.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["n1", "n2", "n3"]);
    // Draining a node stops its global task.
    sim.apply(Command::SetNodeAvailability { id: "n2".into(), availability: Availability::Drain, at: sim.now });
    sim.settle();
    sim.agent();
    sim.settle();
    let nodes: Vec<String> = sim.running("app_agent").iter().filter_map(|t| t.node_id.clone()).collect();
    assert!(!nodes.contains(&"n2".to_string()));
    assert_eq!(nodes.len(), 2);
}

#[test]
fn a_paused_node_keeps_its_global_task_and_gets_no_new_one() {
    let mut sim = Sim::new(&["n1", "n2"]);
    let mut s = spec("agent", 0, "agent:1");
    s.mode = ServiceMode::Global;
    sim.deploy(vec![s.clone()]);
    sim.settle();
    sim.agent();
    sim.apply(Command::SetNodeAvailability { id: "n2".into(), availability: Availability::Pause, at: sim.now });
    for _ in 0..3 {
        sim.settle();
        sim.agent();
    }
    let mut nodes: Vec<String> = sim.running("app_agent").iter().filter_map(|t| t.node_id.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"], "a paused node keeps its global task, as in Swarm");
    // A new global service places nothing on it.
    let mut other = spec("probe", 0, "probe:1");
    other.mode = ServiceMode::Global;
    sim.deploy(vec![s, other]);
    sim.settle();
    sim.agent();
    let probes: Vec<String> = sim.running("app_probe").iter().filter_map(|t| t.node_id.clone()).collect();
    assert_eq!(probes, ["n1"]);
}

#[test]
fn drained_node_tasks_move_elsewhere() {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.deploy(vec![spec("web", 4, "web:1")]);
    sim.settle();
    sim.agent();
    sim.apply(Command::SetNodeAvailability { id: "n1".into(), availability: Availability::Drain, at: sim.now });
    for _ in 0..4 {
        sim.settle();
        sim.agent();
    }
    let running = sim.running("app_web");
    assert_eq!(running.len(), 4);
    assert!(running.iter().all(|t| t.node_id.as_deref() == Some("n2")));
}

/// The tasks of `service` whose desired state is running, as (node, state).
fn wanted_on(sim: &Sim, service: &str) -> Vec<(String, TaskState)> {
    let svc = sim.service(service).id.clone();
    let mut v: Vec<(String, TaskState)> = sim
        .state
        .tasks_of(&svc)
        .filter(|t| t.desired_state == DesiredState::Running)
        .map(|t| (t.node_id.clone().unwrap_or_default(), t.status.state))
        .collect();
    v.sort();
    v
}

#[test]
fn a_drained_task_stops_only_once_its_replacement_runs() {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.converge(vec![spec("web", 2, "web:1")]);
    assert_eq!(wanted_on(&sim, "app_web"), [("n1".into(), TaskState::Running), ("n2".into(), TaskState::Running)]);
    sim.apply(Command::SetNodeAvailability { id: "n1".into(), availability: Availability::Drain, at: sim.now });
    sim.settle();
    // The replacement is placed on n2; the task on n1 still runs.
    assert_eq!(
        wanted_on(&sim, "app_web"),
        [("n1".into(), TaskState::Running), ("n2".into(), TaskState::Assigned), ("n2".into(), TaskState::Running)]
    );
    sim.agent();
    sim.settle();
    // It runs: the drained task stops.
    assert_eq!(wanted_on(&sim, "app_web"), [("n2".into(), TaskState::Running), ("n2".into(), TaskState::Running)]);
}

#[test]
fn with_start_first_a_drained_task_waits_for_a_healthy_replacement() {
    let mut sim = Sim::new(&["n1", "n2"]);
    let mut s = spec("web", 1, "web:1");
    s.update.order = UpdateOrder::StartFirst;
    sim.converge(vec![s]);
    let on_n1 = sim.running("app_web")[0].node_id.clone().expect("placed");
    let other = if on_n1 == "n1" { "n2" } else { "n1" };
    sim.apply(Command::SetNodeAvailability { id: on_n1.clone(), availability: Availability::Drain, at: sim.now });
    sim.settle();
    let svc = sim.service("app_web").id.clone();
    let new = sim.state.tasks_of(&svc).find(|t| t.node_id.as_deref() == Some(other)).map(|t| t.id.clone());
    let new = new.expect("a replacement on the other node");
    sim.report_health(&new, TaskState::Running, "starting");
    sim.settle();
    assert_eq!(wanted_on(&sim, "app_web").len(), 2, "the drained task waits for a healthy replacement");
    sim.report_health(&new, TaskState::Running, "healthy");
    sim.settle();
    assert_eq!(wanted_on(&sim, "app_web"), [(other.to_string(), TaskState::Running)]);
}

#[test]
fn a_drain_that_cannot_place_a_replacement_first_stops_the_task_first_and_says_so() {
    let mut sim = Sim::new(&["n1", "n2"]);
    let mut s = spec("web", 2, "web:1");
    s.task.placement.max_replicas_per_node = 1;
    sim.converge(vec![s]);
    sim.apply(Command::SetNodeAvailability { id: "n1".into(), availability: Availability::Drain, at: sim.now });
    // A replacement is created, and no node takes it (n2 has its one replica)…
    sim.round();
    let svc = sim.service("app_web").id.clone();
    let pending: Vec<String> =
        sim.state.tasks_of(&svc).filter(|t| t.node_id.is_none()).map(|t| t.unplaceable.clone()).collect();
    assert!(pending.iter().any(|r| !r.is_empty()), "{pending:?}");
    // …so the drained task stops at once, and an event says why.
    let o = sim.round();
    let notes: Vec<&String> = o.plan.notes.iter().map(|(_, n)| n).collect();
    assert!(notes.iter().any(|n| n.contains("drain of node n1") && n.contains("stopped first")), "{notes:?}");
    for _ in 0..3 {
        sim.settle();
        sim.agent();
    }
    assert!(
        sim.state
            .tasks
            .values()
            .all(|t| t.node_id.as_deref() != Some("n1") || t.desired_state == DesiredState::Shutdown),
        "the drain went through"
    );
}

#[test]
fn a_node_back_from_drain_keeps_its_task_and_drops_a_replacement_not_yet_running() {
    let mut sim = Sim::new(&["n1", "n2"]);
    sim.converge(vec![spec("web", 2, "web:1")]);
    sim.apply(Command::SetNodeAvailability { id: "n1".into(), availability: Availability::Drain, at: sim.now });
    sim.settle();
    assert_eq!(wanted_on(&sim, "app_web").len(), 3);
    sim.apply(Command::SetNodeAvailability { id: "n1".into(), availability: Availability::Active, at: sim.now });
    assert_eq!(wanted_on(&sim, "app_web"), [("n1".into(), TaskState::Running), ("n2".into(), TaskState::Running)]);
}

#[test]
fn host_port_conflict_makes_a_task_unplaceable_with_a_reason() {
    let mut sim = Sim::new(&["n1"]);
    let mut s = spec("web", 2, "web:1");
    s.task.ports.push(PortConfig {
        target: 80,
        published: Some(8080),
        protocol: Protocol::Tcp,
        mode: PublishMode::Host,
        host_ip: String::new(),
        proxy_protocol: false,
    });
    sim.deploy(vec![s]);
    sim.settle();
    sim.agent();
    assert_eq!(sim.running("app_web").len(), 1);
    let svc = sim.service("app_web").id.clone();
    let pending: Vec<&Task> = sim.state.tasks_of(&svc).filter(|t| t.node_id.is_none()).collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status.state, TaskState::Pending);
    assert!(pending[0].unplaceable.contains("port 8080/tcp"), "{}", pending[0].unplaceable);
}

#[test]
fn an_idle_cluster_makes_no_plans() {
    let mut sim = Sim::new(&["n1"]);
    sim.converge(vec![spec("web", 2, "web:1")]);
    let o = orchestrate(&sim.state, sim.now);
    assert!(o.plan.is_empty(), "{:?}", o.plan);
    assert!(SpreadScheduler.schedule(&sim.state).is_empty());
}

#[test]
fn removing_a_stack_removes_its_tasks() {
    let mut sim = Sim::new(&["n1"]);
    sim.deploy(vec![spec("web", 2, "web:1")]);
    sim.settle();
    let r = sim.apply(Command::RemoveStack { name: "app".into(), at: sim.now });
    assert_eq!(r.rejected, None);
    assert!(sim.state.tasks.is_empty());
    assert!(sim.state.services.is_empty());
    let r = sim.apply(Command::RemoveStack { name: "app".into(), at: sim.now });
    assert!(r.rejected.is_some());
}

#[test]
fn a_stack_keeps_its_networks_and_refuses_unknown_ones() {
    let mut sim = Sim::new(&["n1"]);
    let back = NetworkSpec { name: "app_back".into(), internal: true, ..Default::default() };
    let mut web = spec("web", 1, "web:1");
    web.task.networks = vec![NetworkAttachment { network: "app_back".into(), aliases: vec!["api".into()] }];
    let mut stack = StackSpec {
        name: "app".into(),
        services: [("web".to_string(), web.clone())].into(),
        volumes: Default::default(),
        networks: [("back".to_string(), back.clone())].into(),
        ..Default::default()
    };
    let r = sim.apply(Command::PutStack { spec: stack.clone(), prune: false, registry_auth: None, at: sim.now });
    assert_eq!(r.rejected, None);
    assert_eq!(sim.state.stacks["app"].networks["back"], back);
    let found = sim.state.stack_network("app", "app_back").expect("the network");
    assert_eq!((found.stack.as_str(), found.key.as_str(), &found.spec), ("app", "back", &back));
    assert_eq!(sim.state.stack_network("app", "app_front"), None);
    assert_eq!(sim.state.stack_network("other", "app_back"), None);

    // A service on a network the stack does not declare is refused whole.
    let before = sim.state.clone();
    stack.networks.clear();
    let r = sim.apply(Command::PutStack { spec: stack, prune: false, registry_auth: None, at: sim.now });
    let why = r.rejected.expect("refused");
    assert!(why.contains("services.web.networks: network \"app_back\" is not one of the stack's networks"), "{why}");
    assert_eq!(sim.state, before);
}

#[test]
fn services_kept_without_prune_keep_their_networks() {
    let mut sim = Sim::new(&["n1"]);
    let net = |name: &str| NetworkSpec { name: name.into(), ..Default::default() };
    let on = |mut s: ServiceSpec, network: &str| {
        s.task.networks = vec![NetworkAttachment { network: network.into(), aliases: vec![] }];
        s
    };
    let first = StackSpec {
        name: "app".into(),
        services: [
            ("web".to_string(), on(spec("web", 1, "web:1"), "app_front")),
            ("db".to_string(), on(spec("db", 1, "db:1"), "app_back")),
        ]
        .into(),
        volumes: Default::default(),
        networks: [("front".to_string(), net("app_front")), ("back".to_string(), net("app_back"))].into(),
        ..Default::default()
    };
    assert_eq!(
        sim.apply(Command::PutStack { spec: first, prune: false, registry_auth: None, at: sim.now }).rejected,
        None
    );
    // The next deploy has only web: db stays (no prune), and so does its network.
    let second = StackSpec {
        name: "app".into(),
        services: [("web".to_string(), on(spec("web", 1, "web:1"), "app_front"))].into(),
        volumes: Default::default(),
        networks: [("front".to_string(), net("app_front"))].into(),
        ..Default::default()
    };
    assert_eq!(
        sim.apply(Command::PutStack { spec: second.clone(), prune: false, registry_auth: None, at: sim.now }).rejected,
        None
    );
    let keys: Vec<&str> = sim.state.stacks["app"].networks.keys().map(String::as_str).collect();
    assert_eq!(keys, ["back", "front"]);
    assert!(sim.state.stack_network("app", "app_back").is_some());
    // With prune, db goes, and its network with it.
    assert_eq!(
        sim.apply(Command::PutStack { spec: second, prune: true, registry_auth: None, at: sim.now }).rejected,
        None
    );
    let keys: Vec<&str> = sim.state.stacks["app"].networks.keys().map(String::as_str).collect();
    assert_eq!(keys, ["front"]);
}

mod placement {
    use super::*;

    fn labelled(sim: &mut Sim, id: &str, key: &str, value: &str) {
        let mut n = node(id);
        n.labels.insert(key.into(), value.into());
        // UpsertNode keeps the labels of a known node: replace the record.
        sim.state.nodes.insert(id.into(), n);
    }

    fn nodes_of(sim: &Sim, service: &str) -> Vec<String> {
        let mut v: Vec<String> = sim.running(service).iter().filter_map(|t| t.node_id.clone()).collect();
        v.sort();
        v
    }

    fn pending_reason(sim: &Sim, service: &str) -> String {
        let svc = sim.service(service).id.clone();
        sim.state.tasks_of(&svc).find(|t| t.node_id.is_none()).map(|t| t.unplaceable.clone()).unwrap_or_default()
    }

    #[test]
    fn constraints_choose_the_nodes() {
        let mut sim = Sim::new(&["n1", "n2", "n3"]);
        labelled(&mut sim, "n1", "zone", "eu");
        labelled(&mut sim, "n2", "zone", "us");
        labelled(&mut sim, "n3", "zone", "eu");
        let mut s = spec("web", 4, "web:1");
        s.task.placement.constraints = vec![Constraint::parse("node.labels.zone == eu").expect("valid")];
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        assert_eq!(nodes_of(&sim, "app_web"), vec!["n1", "n1", "n3", "n3"]);
    }

    /// Found by the scheduler's properties (issue 16): a global service ran
    /// on every node, its constraints ignored. Its tasks are created on
    /// their node and never pass the scheduler's filters.
    #[test]
    fn a_global_service_runs_only_where_its_constraints_hold() {
        let mut sim = Sim::new(&["n1", "n2"]);
        labelled(&mut sim, "n1", "disk", "ssd");
        let mut s = spec("agent", 0, "agent:1");
        s.mode = ServiceMode::Global;
        s.task.placement.constraints = vec![Constraint::parse("node.labels.disk == ssd").expect("valid")];
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        assert_eq!(nodes_of(&sim, "app_agent"), vec!["n1"]);
        assert_eq!(service_counts(&sim.state, sim.service("app_agent")).desired, 1);
        // A node whose labels stop meeting them loses its task.
        labelled(&mut sim, "n1", "disk", "hdd");
        sim.settle();
        sim.agent();
        assert!(nodes_of(&sim, "app_agent").is_empty());
    }

    /// Found by the scheduler's properties (issue 16): a global task
    /// reserved 1.5 CPUs on a node of 1. Its tasks never pass the
    /// scheduler's filters: the orchestrator creates one only where it fits.
    #[test]
    fn a_global_service_reserves_only_what_its_nodes_have() {
        let mut sim = Sim::new(&["n1", "n2"]);
        for (id, cpus) in [("n1", 1), ("n2", 2)] {
            if let Some(n) = sim.state.nodes.get_mut(id) {
                n.resources.nano_cpus = cpus * 1_000_000_000;
            }
        }
        let mut s = spec("agent", 0, "agent:1");
        s.mode = ServiceMode::Global;
        s.task.resources.reservations.nano_cpus = 1_500_000_000;
        sim.deploy(vec![s.clone()]);
        sim.settle();
        sim.agent();
        assert_eq!(nodes_of(&sim, "app_agent"), vec!["n2"]);
        // Two global services that each fit n1 alone: one plan creates only one there.
        let mut sim = Sim::new(&["n1"]);
        if let Some(n) = sim.state.nodes.get_mut("n1") {
            n.resources.nano_cpus = 1_000_000_000;
        }
        s.task.resources.reservations.nano_cpus = 600_000_000;
        let mut other = s.clone();
        other.name = "other".into();
        sim.deploy(vec![s, other]);
        sim.settle();
        sim.agent();
        assert_eq!(nodes_of(&sim, "app_agent").len() + nodes_of(&sim, "app_other").len(), 1);
    }

    #[test]
    fn an_unmet_constraint_is_the_reason_shown() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("web", 1, "web:1");
        s.task.placement.constraints = vec![Constraint::parse("node.labels.disk == ssd").expect("valid")];
        sim.deploy(vec![s]);
        sim.settle();
        assert_eq!(pending_reason(&sim, "app_web"), "2 nodes: constraint node.labels.disk == ssd not met");
    }

    #[test]
    fn not_equal_and_role_constraints() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("web", 2, "web:1");
        s.task.placement.constraints = vec![
            Constraint::parse("node.hostname != n1").expect("valid"),
            Constraint::parse("node.role == manager").expect("valid"),
        ];
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        assert_eq!(nodes_of(&sim, "app_web"), vec!["n2", "n2"]);
    }

    #[test]
    fn max_replicas_per_node_caps_each_node() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("web", 5, "web:1");
        s.task.placement.max_replicas_per_node = 2;
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        assert_eq!(sim.running("app_web").len(), 4);
        assert_eq!(pending_reason(&sim, "app_web"), "2 nodes: max_replicas_per_node 2 reached");
    }

    #[test]
    fn reservations_are_counted_against_node_resources() {
        let mut sim = Sim::new(&["n1"]);
        if let Some(n) = sim.state.nodes.get_mut("n1") {
            n.resources = Resources { nano_cpus: 2_000_000_000, memory_bytes: 1 << 30, ..Resources::default() };
        }
        let mut s = spec("web", 3, "web:1");
        s.task.resources.reservations =
            Resources { nano_cpus: 500_000_000, memory_bytes: 400 << 20, ..Resources::default() };
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        assert_eq!(sim.running("app_web").len(), 2);
        assert_eq!(pending_reason(&sim, "app_web"), "1 node: insufficient memory: needs 400 MiB, 224 MiB free");
        // What `node inspect` shows as reserved: the two placed, not the pending one.
        assert_eq!(
            crate::scheduler::reserved_on(&sim.state, "n1"),
            Resources { nano_cpus: 1_000_000_000, memory_bytes: 800 << 20, ..Resources::default() }
        );
        assert_eq!(crate::scheduler::reserved_on(&sim.state, "n2"), Resources::default());
    }

    #[test]
    fn generic_resources_go_only_where_nodes_offer_them() {
        let mut sim = Sim::new(&["cpu1", "gpu1", "gpu2"]);
        for (n, gpus) in [("gpu1", 2), ("gpu2", 1)] {
            if let Some(node) = sim.state.nodes.get_mut(n) {
                node.resources.generic.insert("gpu".into(), gpus);
            }
        }
        let mut s = spec("train", 3, "train:1");
        s.task.resources.reservations.generic.insert("gpu".into(), 1);
        let plain = spec("web", 3, "web:1");
        sim.deploy(vec![s, plain]);
        sim.settle();
        sim.agent();
        let running = sim.running("app_train");
        assert_eq!(running.len(), 3, "two GPUs on gpu1, one on gpu2");
        assert!(running.iter().all(|t| t.node_id.as_deref() != Some("cpu1")), "never on a node without GPUs");
        // A fourth replica finds no free GPU, and says why.
        let mut more = spec("train", 4, "train:1");
        more.task.resources.reservations.generic.insert("gpu".into(), 1);
        sim.deploy(vec![more, spec("web", 3, "web:1")]);
        sim.settle();
        sim.agent();
        assert_eq!(sim.running("app_train").len(), 3);
        assert_eq!(pending_reason(&sim, "app_train"), "3 nodes: insufficient gpu: needs 1, 0 free");
    }

    #[test]
    fn spread_preference_balances_label_values() {
        let mut sim = Sim::new(&["a1", "a2", "a3", "b1"]);
        for n in ["a1", "a2", "a3"] {
            labelled(&mut sim, n, "zone", "a");
        }
        labelled(&mut sim, "b1", "zone", "b");
        let mut s = spec("web", 4, "web:1");
        s.task.placement.preferences = vec!["node.labels.zone".into()];
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        let on_b = sim.running("app_web").iter().filter(|t| t.node_id.as_deref() == Some("b1")).count();
        assert_eq!(on_b, 2, "half the tasks go to zone b, which has one node");
    }

    #[test]
    fn constraint_parsing() {
        let c = Constraint::parse(" node.labels.zone==eu ").expect("valid");
        assert_eq!(c.to_string(), "node.labels.zone == eu");
        assert_eq!(Constraint::parse("node.platform.os != windows").expect("valid").op, ConstraintOp::Ne);
        for bad in ["zone == eu", "node.labels. == x", "node.role == boss", "node.id =", "node.id ~ x"] {
            assert!(Constraint::parse(bad).is_err(), "{bad} parsed");
        }
    }
}

mod rollback_config {
    //! A rollback follows `rollback_config`, not `update_config`. As in
    //! Swarm, the policy is the one of the spec being restored.

    use super::*;

    /// `app_web` at `web:1` with `replicas`, the given policies, and failure
    /// action rollback; converged.
    fn deployed(replicas: u64, update: UpdateConfig, rollback: UpdateConfig) -> (Sim, ServiceSpec) {
        let mut sim = Sim::new(&["n1"]);
        let mut s = spec("web", replicas, "web:1");
        s.update = UpdateConfig { failure_action: FailureAction::Rollback, ..update };
        s.rollback = rollback;
        sim.converge(vec![s.clone()]);
        (sim, s)
    }

    /// Tasks of `app_web` running `image` that are wanted and run.
    fn running_image(sim: &Sim, image: &str) -> Vec<String> {
        sim.running("app_web").iter().filter(|t| t.template.image == image).map(|t| t.id.clone()).collect()
    }

    /// Lets the agent run everything until every slot runs `web:2` (within
    /// the monitor period), then fails one of them: the next round decides
    /// to roll back, and the one after it is the rollback's first step.
    fn fail_after_full_rollout(sim: &mut Sim, replicas: usize) -> Orchestration {
        for _ in 0..20 {
            sim.agent();
            sim.settle();
            if running_image(sim, "web:2").len() == replicas {
                break;
            }
        }
        let new = running_image(sim, "web:2");
        assert_eq!(new.len(), replicas, "the update did not reach every slot");
        assert_eq!(sim.service("app_web").update.state, UpdateState::Updating);
        sim.report(&new[0], TaskState::Failed, Some(1));
        sim.round();
        assert_eq!(sim.service("app_web").update.state, UpdateState::RollingBack);
        assert_eq!(sim.service("app_web").spec.task.image, "web:1");
        sim.round()
    }

    fn roll_back_to_the_end(sim: &mut Sim) {
        sim.play(20);
        assert_eq!(sim.service("app_web").update.state, UpdateState::RolledBack);
        let running = sim.running("app_web");
        assert_eq!(running.len(), 3);
        assert!(running.iter().all(|t| t.template.image == "web:1"));
    }

    #[test]
    fn rollback_parallelism_differs_from_the_update_parallelism() {
        // Update one slot at a time; roll back all at once.
        let update = UpdateConfig { parallelism: 1, ..UpdateConfig::default() };
        let rollback = UpdateConfig { parallelism: 0, ..UpdateConfig::rollback_default() };
        let (mut sim, mut s) = deployed(3, update, rollback);
        // The failing revision asks for a one-at-a-time rollback: it is the
        // restored spec's rollback_config that counts (Swarm's rule).
        s.task.image = "web:2".into();
        s.rollback.parallelism = 1;
        sim.deploy(vec![s]);
        let first = sim.round();
        assert_eq!(first.plan.set_desired.len(), 1, "the update stops one slot at a time");
        let step = fail_after_full_rollout(&mut sim, 3);
        // The failed slot is replaced at once; the two slots still running
        // web:2 are both stopped in the same step (parallelism 0).
        let stopped: Vec<&String> = step.plan.set_desired.iter().map(|(id, _)| id).collect();
        let v2: Vec<String> = sim
            .state
            .tasks
            .values()
            .filter(|t| t.template.image == "web:2" && t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(v2.len(), 2);
        for id in &v2 {
            assert!(stopped.contains(&id), "rollback did not stop {id} in its first step: {:?}", step.plan);
        }
        roll_back_to_the_end(&mut sim);
    }

    #[test]
    fn rollback_order_differs_from_the_update_order() {
        // Update stop-first, all slots at once; roll back start-first.
        let update = UpdateConfig { parallelism: 0, order: UpdateOrder::StopFirst, ..UpdateConfig::default() };
        let rollback =
            UpdateConfig { parallelism: 0, order: UpdateOrder::StartFirst, ..UpdateConfig::rollback_default() };
        let (mut sim, mut s) = deployed(3, update, rollback);
        s.task.image = "web:2".into();
        sim.deploy(vec![s]);
        let first = sim.round();
        assert_eq!(first.plan.set_desired.len(), 3, "stop-first: the update stops the old tasks first");
        assert!(first.plan.create.is_empty(), "stop-first: nothing starts before the old tasks stopped");
        let failed = {
            let step = fail_after_full_rollout(&mut sim, 3);
            // Start-first: a new task for each slot, while the two healthy
            // web:2 tasks keep running; only the failed task is stopped.
            assert_eq!(step.plan.create.len(), 3, "{:?}", step.plan);
            assert_eq!(step.plan.set_desired.len(), 1, "{:?}", step.plan);
            step.plan.set_desired[0].0.clone()
        };
        assert_eq!(sim.state.tasks[&failed].status.state, TaskState::Failed);
        assert_eq!(running_image(&sim, "web:2").len(), 2, "start-first stopped the old tasks too early");
        roll_back_to_the_end(&mut sim);
    }

    #[test]
    fn a_rollback_that_fails_follows_the_rollback_failure_action() {
        // update: pause on failure would apply if the rollback used update_config.
        let update = UpdateConfig { parallelism: 0, ..UpdateConfig::default() };
        let rollback = UpdateConfig {
            parallelism: 0,
            failure_action: FailureAction::Continue,
            ..UpdateConfig::rollback_default()
        };
        let (mut sim, mut s) = deployed(3, update, rollback);
        s.task.image = "web:2".into();
        sim.deploy(vec![s]);
        fail_after_full_rollout(&mut sim, 3);
        // A restored web:1 task fails: continue, not pause.
        sim.agent();
        sim.settle();
        let back = sim.running("app_web").into_iter().find(|t| t.template.image == "web:1").map(|t| t.id.clone());
        sim.report(&back.expect("a web:1 task runs again"), TaskState::Failed, Some(2));
        sim.settle();
        assert_eq!(sim.service("app_web").update.state, UpdateState::RollingBack);
    }
}

mod jobs {
    use super::*;

    fn job(name: &str, replicas: u64, image: &str) -> ServiceSpec {
        let mut s = spec(name, 0, image);
        s.mode = ServiceMode::ReplicatedJob { replicas, max_concurrent: 0 };
        s.restart.condition = RestartCondition::OnFailure;
        s.restart.delay_ms = 0;
        s
    }

    /// Every running task of `service` exits 0.
    fn complete_all(sim: &mut Sim, service: &str) {
        let ids: Vec<String> = sim.running(service).iter().map(|t| t.id.clone()).collect();
        for id in ids {
            sim.report(&id, TaskState::Complete, Some(0));
        }
    }

    fn tasks<'a>(sim: &'a Sim, service: &str) -> Vec<&'a Task> {
        let id = sim.service(service).id.clone();
        sim.state.tasks.values().filter(|t| t.service_id == id).collect()
    }

    fn counts(sim: &Sim, service: &str) -> ServiceCounts {
        service_counts(&sim.state, sim.service(service))
    }

    #[test]
    fn a_replicated_job_runs_each_slot_to_one_completion() {
        let mut sim = Sim::new(&["n1", "n2"]);
        sim.deploy(vec![job("migrate", 3, "migrate:1")]);
        sim.settle();
        sim.agent();
        assert_eq!(sim.running("app_migrate").len(), 3);
        assert_eq!(counts(&sim, "app_migrate"), ServiceCounts { running: 3, desired: 3, completed: 0 });
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Updating);
        complete_all(&mut sim, "app_migrate");
        sim.settle();
        let svc = sim.service("app_migrate");
        assert_eq!(svc.update.state, UpdateState::Completed);
        assert!(svc.update.completed_at > 0);
        // Completed tasks are kept, not replaced; nothing more is wanted of them.
        let all = tasks(&sim, "app_migrate");
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|t| t.status.state == TaskState::Complete && t.desired_state == DesiredState::Shutdown));
        assert_eq!(counts(&sim, "app_migrate"), ServiceCounts { running: 0, desired: 3, completed: 3 });
        // Much later: still nothing to do.
        sim.now += 3_600_000;
        let o = orchestrate(&sim.state, sim.now);
        assert!(o.plan.is_empty(), "{:?}", o.plan);
    }

    #[test]
    fn a_job_task_that_fails_is_replaced_and_the_job_completes() {
        let mut sim = Sim::new(&["n1"]);
        sim.deploy(vec![job("migrate", 2, "migrate:1")]);
        sim.settle();
        sim.agent();
        let mut running: Vec<(u64, String)> =
            sim.running("app_migrate").iter().map(|t| (t.slot, t.id.clone())).collect();
        running.sort();
        sim.report(&running[0].1, TaskState::Failed, Some(3));
        sim.report(&running[1].1, TaskState::Complete, Some(0));
        sim.settle();
        sim.agent();
        // Slot 1 runs again; slot 2 is done.
        let again = sim.running("app_migrate");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].slot, 1);
        assert_ne!(again[0].id, running[0].1);
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Updating);
        complete_all(&mut sim, "app_migrate");
        sim.settle();
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
        assert_eq!(tasks(&sim, "app_migrate").len(), 3);
    }

    #[test]
    fn a_job_whose_restarts_run_out_fails_naming_the_task() {
        let mut sim = Sim::new(&["n1"]);
        let mut s = job("migrate", 1, "migrate:1");
        s.restart.max_attempts = 1;
        sim.deploy(vec![s]);
        for _ in 0..5 {
            sim.settle();
            sim.agent();
            if let Some(id) = sim.running("app_migrate").first().map(|t| t.id.clone()) {
                sim.report(&id, TaskState::Failed, Some(3));
            }
            sim.now += 1;
        }
        sim.settle();
        // The first task and one restart, then no more.
        assert_eq!(tasks(&sim, "app_migrate").len(), 2);
        let status = &sim.service("app_migrate").update;
        assert_eq!(status.state, UpdateState::Failed);
        assert!(status.message.contains("failed with exit code 3"), "{}", status.message);
        assert!(status.message.contains("restart_policy.max_attempts (1) reached"), "{}", status.message);
        // Failed stays failed: no plan, no flapping.
        let o = orchestrate(&sim.state, sim.now + 60_000);
        assert!(o.plan.is_empty(), "{:?}", o.plan);
    }

    #[test]
    fn condition_none_fails_the_job_at_the_first_failure() {
        let mut sim = Sim::new(&["n1"]);
        let mut s = job("migrate", 2, "migrate:1");
        s.restart.condition = RestartCondition::None;
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        let id = sim.running("app_migrate")[0].id.clone();
        sim.report(&id, TaskState::Failed, Some(1));
        sim.settle();
        let status = &sim.service("app_migrate").update;
        assert_eq!(status.state, UpdateState::Failed);
        assert!(status.message.contains("condition is none"), "{}", status.message);
        // The other slot still runs to its end.
        assert_eq!(sim.running("app_migrate").len(), 1);
    }

    #[test]
    fn a_job_with_condition_any_does_not_run_a_completed_task_again() {
        // The loader turns `any` into on-failure; a spec from elsewhere is safe too.
        let mut sim = Sim::new(&["n1"]);
        let mut s = job("migrate", 1, "migrate:1");
        s.restart.condition = RestartCondition::Any;
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        complete_all(&mut sim, "app_migrate");
        sim.now += 60_000;
        sim.settle();
        assert_eq!(tasks(&sim, "app_migrate").len(), 1);
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
    }

    #[test]
    fn max_concurrent_limits_the_tasks_in_flight() {
        let mut sim = Sim::new(&["n1"]);
        let mut s = job("batch", 5, "batch:1");
        s.mode = ServiceMode::ReplicatedJob { replicas: 5, max_concurrent: 2 };
        sim.deploy(vec![s]);
        let mut rounds = 0;
        while sim.service("app_batch").update.state != UpdateState::Completed {
            sim.settle();
            sim.agent();
            let live = tasks(&sim, "app_batch").iter().filter(|t| !t.status.state.is_terminal()).count();
            assert!(live <= 2, "{live} tasks in flight with max_concurrent 2");
            complete_all(&mut sim, "app_batch");
            sim.settle();
            rounds += 1;
            assert!(rounds < 10, "the job did not complete");
        }
        assert_eq!(rounds, 3, "5 completions two at a time take three rounds");
        assert_eq!(tasks(&sim, "app_batch").len(), 5);
    }

    #[test]
    fn a_changed_job_runs_again_and_an_unchanged_one_does_not() {
        let mut sim = Sim::new(&["n1"]);
        let s = job("migrate", 2, "migrate:1");
        sim.deploy(vec![s.clone()]);
        sim.settle();
        sim.agent();
        complete_all(&mut sim, "app_migrate");
        sim.settle();
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
        // The same spec again: nothing happens.
        sim.deploy(vec![s.clone()]);
        assert_eq!(sim.service("app_migrate").revision, 1);
        assert!(orchestrate(&sim.state, sim.now).plan.is_empty());
        // A changed spec (a label only: the task template is the same) runs it again.
        let mut changed = s;
        changed.labels.insert("run".into(), "2".into());
        sim.deploy(vec![changed]);
        assert_eq!(sim.service("app_migrate").revision, 2);
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Updating);
        sim.settle();
        sim.agent();
        assert!(sim.running("app_migrate").iter().all(|t| t.revision == 2));
        assert_eq!(sim.running("app_migrate").len(), 2);
        assert_eq!(counts(&sim, "app_migrate").completed, 0);
        complete_all(&mut sim, "app_migrate");
        sim.settle();
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
        assert_eq!(tasks(&sim, "app_migrate").len(), 4);
    }

    #[test]
    fn redeploying_a_running_job_stops_the_earlier_run() {
        let mut sim = Sim::new(&["n1"]);
        let s = job("migrate", 1, "migrate:1");
        sim.deploy(vec![s.clone()]);
        sim.settle();
        sim.agent();
        let first = sim.running("app_migrate")[0].id.clone();
        let mut changed = s;
        changed.task.image = "migrate:2".into();
        sim.deploy(vec![changed]);
        sim.settle();
        assert_eq!(sim.state.tasks[&first].desired_state, DesiredState::Shutdown);
        sim.agent();
        sim.settle();
        sim.agent();
        let running = sim.running("app_migrate");
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].template.image, "migrate:2");
    }

    #[test]
    fn completed_job_tasks_free_their_host_ports() {
        // Two completions, one at a time, on one node, with a host port:
        // the second task can only be placed once the first completed.
        let mut sim = Sim::new(&["n1"]);
        let mut s = job("batch", 2, "batch:1");
        s.mode = ServiceMode::ReplicatedJob { replicas: 2, max_concurrent: 1 };
        s.task.ports.push(PortConfig {
            target: 80,
            published: Some(8080),
            protocol: Protocol::Tcp,
            mode: PublishMode::Host,
            host_ip: String::new(),
            proxy_protocol: false,
        });
        sim.deploy(vec![s]);
        for _ in 0..2 {
            sim.settle();
            sim.agent();
            assert_eq!(sim.running("app_batch").len(), 1);
            complete_all(&mut sim, "app_batch");
        }
        sim.settle();
        assert_eq!(sim.service("app_batch").update.state, UpdateState::Completed);
    }

    #[test]
    fn a_global_job_runs_once_on_every_node() {
        let mut sim = Sim::new(&["n1", "n2", "n3"]);
        let mut s = job("prune", 0, "prune:1");
        s.mode = ServiceMode::GlobalJob;
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        let mut nodes: Vec<String> = sim.running("app_prune").iter().filter_map(|t| t.node_id.clone()).collect();
        nodes.sort();
        assert_eq!(nodes, vec!["n1", "n2", "n3"]);
        complete_all(&mut sim, "app_prune");
        sim.settle();
        assert_eq!(sim.service("app_prune").update.state, UpdateState::Completed);
        assert_eq!(counts(&sim, "app_prune"), ServiceCounts { running: 0, desired: 3, completed: 3 });
        // A drained node that comes back does not run it again.
        sim.apply(Command::SetNodeAvailability { id: "n2".into(), availability: Availability::Drain, at: sim.now });
        sim.settle();
        assert_eq!(counts(&sim, "app_prune"), ServiceCounts { running: 0, desired: 3, completed: 3 });
        sim.apply(Command::SetNodeAvailability { id: "n2".into(), availability: Availability::Active, at: sim.now });
        sim.settle();
        assert_eq!(tasks(&sim, "app_prune").len(), 3);
        // A new node runs it once.
        sim.apply(Command::UpsertNode { node: node("n4"), at: sim.now });
        sim.settle();
        sim.agent();
        let on_n4: Vec<&Task> =
            sim.running("app_prune").into_iter().filter(|t| t.node_id.as_deref() == Some("n4")).collect();
        assert_eq!(on_n4.len(), 1);
        complete_all(&mut sim, "app_prune");
        sim.settle();
        assert_eq!(tasks(&sim, "app_prune").len(), 4);
        assert_eq!(counts(&sim, "app_prune"), ServiceCounts { running: 0, desired: 4, completed: 4 });
        assert_eq!(sim.service("app_prune").update.state, UpdateState::Completed);
    }

    #[test]
    fn a_replicated_job_task_on_a_drained_node_runs_elsewhere() {
        let mut sim = Sim::new(&["n1", "n2"]);
        sim.deploy(vec![job("migrate", 2, "migrate:1")]);
        sim.settle();
        sim.agent();
        sim.apply(Command::SetNodeAvailability { id: "n1".into(), availability: Availability::Drain, at: sim.now });
        for _ in 0..3 {
            sim.settle();
            sim.agent();
        }
        let running = sim.running("app_migrate");
        assert_eq!(running.len(), 2);
        assert!(running.iter().all(|t| t.node_id.as_deref() == Some("n2")));
        complete_all(&mut sim, "app_migrate");
        sim.settle();
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
    }
}

/// `SetNodeState down`: the node's tasks become orphaned and are replaced on
/// the nodes that are up at once; when the node comes back, its reports of
/// them change nothing.
mod node_down {
    use super::*;
    use crate::state::NODE_DOWN;

    #[test]
    fn a_down_nodes_replicas_are_replaced_at_once_and_its_late_reports_ignored() {
        let mut sim = Sim::new(&["n1", "n2", "n3"]);
        let mut s = spec("web", 3, "web:1");
        s.update.failure_action = FailureAction::Rollback;
        sim.converge(vec![s]);
        let id = sim.service("app_web").id.clone();
        let lost: Task =
            sim.state.tasks_of(&id).find(|t| t.node_id.as_deref() == Some("n2")).cloned().expect("a task on n2");
        let r = sim.apply(Command::SetNodeState { id: "n2".into(), state: NodeState::Down, at: sim.now });
        assert_eq!(r.rejected, None);
        let t = &sim.state.tasks[&lost.id];
        // Orphaned, but wanted until its replacement is up: the node may come back first.
        assert_eq!((t.status.state, t.desired_state), (TaskState::Orphaned, DesiredState::Running));
        assert_eq!(t.status.err, NODE_DOWN);
        let o = sim.round();
        assert_eq!(o.plan.create.len(), 1, "the slot fills at once: {:?}", o.plan);
        assert_eq!(o.plan.create[0].slot, lost.slot);
        sim.agent();
        sim.settle();
        assert_eq!(
            sim.state.tasks[&lost.id].desired_state,
            DesiredState::Shutdown,
            "replaced once its replacement ran"
        );
        let running = sim.running("app_web");
        assert_eq!(running.len(), 3);
        assert!(running.iter().all(|t| t.node_id.as_deref() != Some("n2")), "nothing placed on the down node");
        // The node comes back and still reports its old task running: ignored.
        let mut late = lost.status.clone();
        late.state = TaskState::Running;
        let update = TaskStatusUpdate { task_id: lost.id.clone(), node_id: "n2".into(), status: late };
        sim.apply(Command::UpdateTaskStatus { updates: vec![update], at: sim.now });
        assert_eq!(sim.state.tasks[&lost.id].status.state, TaskState::Orphaned);
        // A lost node is no failure of the spec: nothing rolls back.
        assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
        assert_eq!(sim.service("app_web").revision, 1);
    }

    fn down(sim: &mut Sim, node: &str) {
        let r = sim.apply(Command::SetNodeState { id: node.into(), state: NodeState::Down, at: sim.now });
        assert_eq!(r.rejected, None);
    }

    fn back(sim: &mut Sim, node: &str) {
        let r = sim.apply(Command::SetNodeState { id: node.into(), state: NodeState::Ready, at: sim.now });
        assert_eq!(r.rejected, None);
    }

    /// The agent of a node that came back adopts the containers it still runs.
    fn adopt(sim: &mut Sim, node: &str) {
        let assigned: Vec<String> = sim
            .state
            .tasks
            .values()
            .filter(|t| {
                t.node_id.as_deref() == Some(node)
                    && t.desired_state == DesiredState::Running
                    && t.status.state == TaskState::Assigned
            })
            .map(|t| t.id.clone())
            .collect();
        for id in assigned {
            sim.report(&id, TaskState::Running, None);
        }
    }

    /// Issue 12, defect 6: the only node is down for a while (its
    /// replacements have nowhere to run); when it comes back with its
    /// containers running, they are kept and the pending replacements dropped.
    #[test]
    fn a_node_that_returns_before_its_tasks_were_replaced_keeps_them() {
        let mut sim = Sim::new(&["n1"]);
        sim.converge(vec![spec("web", 2, "web:1")]);
        let before: Vec<String> = sim.running("app_web").iter().map(|t| t.id.clone()).collect();
        down(&mut sim, "n1");
        sim.settle();
        let svc = sim.service("app_web").id.clone();
        let pending: Vec<String> =
            sim.state.tasks_of(&svc).filter(|t| t.status.state == TaskState::Pending).map(|t| t.id.clone()).collect();
        assert_eq!(pending.len(), 2, "replacements wait for a node");
        sim.now += 25_000;
        back(&mut sim, "n1");
        for id in &before {
            let t = &sim.state.tasks[id];
            assert_eq!((t.status.state, t.desired_state), (TaskState::Assigned, DesiredState::Running));
            assert_eq!(t.status.container_id, format!("ctr-{id}"), "the agent finds its container by it");
        }
        for id in &pending {
            let t = &sim.state.tasks[id];
            assert_eq!((t.status.state, t.desired_state), (TaskState::Shutdown, DesiredState::Shutdown));
        }
        adopt(&mut sim, "n1");
        sim.settle();
        sim.agent();
        sim.settle();
        let mut after: Vec<String> = sim.running("app_web").iter().map(|t| t.id.clone()).collect();
        after.sort();
        let mut before = before;
        before.sort();
        assert_eq!(after, before, "the same tasks run: nothing restarted");
        let wanted = sim.state.tasks_of(&svc).filter(|t| t.desired_state == DesiredState::Running).count();
        assert_eq!(wanted, 2);
    }

    /// A replacement assigned elsewhere but not yet running is dropped too;
    /// one that is up wins, and the returning node's task stops.
    #[test]
    fn a_replacement_that_is_up_wins_one_that_is_not_is_dropped() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("web", 1, "web:1");
        s.task.placement.max_replicas_per_node = 1;
        sim.converge(vec![s]);
        let lost = sim.running("app_web")[0].clone();
        let (home, other) = if lost.node_id.as_deref() == Some("n1") { ("n1", "n2") } else { ("n2", "n1") };
        down(&mut sim, home);
        sim.settle();
        let svc = sim.service("app_web").id.clone();
        let replacement = sim
            .state
            .tasks_of(&svc)
            .find(|t| t.id != lost.id && t.desired_state == DesiredState::Running)
            .cloned()
            .expect("a replacement");
        assert_eq!(replacement.node_id.as_deref(), Some(other));
        assert_eq!(replacement.status.state, TaskState::Assigned);
        back(&mut sim, home);
        assert_eq!(sim.state.tasks[&replacement.id].desired_state, DesiredState::Shutdown);
        assert_eq!(sim.state.tasks[&lost.id].status.state, TaskState::Assigned);

        // Again, but this time the replacement is up before the node returns.
        adopt(&mut sim, home);
        sim.agent();
        sim.settle();
        assert_eq!(sim.running("app_web").iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![lost.id.clone()]);
        down(&mut sim, home);
        sim.settle();
        sim.agent();
        sim.settle();
        let up = sim.running("app_web")[0].id.clone();
        assert_ne!(up, lost.id);
        assert_eq!(sim.state.tasks[&lost.id].desired_state, DesiredState::Shutdown, "replaced for good");
        back(&mut sim, home);
        sim.settle();
        sim.agent();
        assert_eq!(sim.running("app_web").iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![up]);
        assert_eq!(sim.state.tasks[&lost.id].status.state, TaskState::Orphaned, "not taken back");
    }

    /// A global task waits for its node: it is taken back when the node returns.
    #[test]
    fn a_global_task_is_taken_back_when_its_node_returns() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("agent", 0, "agent:1");
        s.mode = ServiceMode::Global;
        sim.converge(vec![s]);
        let svc = sim.service("app_agent").id.clone();
        let on_n2 = sim.state.tasks_of(&svc).find(|t| t.node_id.as_deref() == Some("n2")).expect("task").id.clone();
        down(&mut sim, "n2");
        sim.settle();
        assert_eq!(sim.state.tasks[&on_n2].desired_state, DesiredState::Running, "kept for its node");
        back(&mut sim, "n2");
        adopt(&mut sim, "n2");
        sim.settle();
        sim.agent();
        let ids: Vec<String> = sim.state.tasks_of(&svc).map(|t| t.id.clone()).collect();
        assert_eq!(ids.len(), 2, "no second task for n2: {ids:?}");
        assert!(sim.running("app_agent").iter().any(|t| t.id == on_n2));
    }

    /// A task whose service changed while its node was down is not taken back.
    #[test]
    fn an_outdated_orphan_is_not_taken_back() {
        let mut sim = Sim::new(&["n1"]);
        sim.converge(vec![spec("web", 1, "web:1")]);
        let lost = sim.running("app_web")[0].id.clone();
        down(&mut sim, "n1");
        sim.settle();
        sim.deploy(vec![spec("web", 1, "web:2")]);
        sim.settle();
        back(&mut sim, "n1");
        assert_eq!(sim.state.tasks[&lost].desired_state, DesiredState::Shutdown);
        sim.settle();
        sim.agent();
        sim.settle();
        sim.agent();
        let running = sim.running("app_web");
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].template.image, "web:2");
    }

    #[test]
    fn a_replacement_for_a_lost_node_is_no_restart() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("web", 1, "web:1");
        s.restart.max_attempts = 1;
        s.restart.delay_ms = 0;
        sim.converge(vec![s]);
        let node = sim.running("app_web")[0].node_id.clone().expect("placed");
        sim.apply(Command::SetNodeState { id: node, state: NodeState::Down, at: sim.now });
        sim.settle();
        sim.agent();
        // The replacement crashes once: max_attempts 1 still allows its restart.
        let t = sim.running("app_web")[0].id.clone();
        sim.report(&t, TaskState::Failed, Some(1));
        sim.now += 1;
        sim.settle();
        sim.agent();
        assert_eq!(sim.running("app_web").len(), 1, "the crash after a node loss is the first restart");
    }
}

/// `RemoveNode`: the removed node's tasks are marked failed and no longer
/// wanted, and the orchestrators fill their slots on the other nodes.
mod node_removal {
    use super::*;
    use crate::state::NODE_REMOVED;

    fn remove(sim: &mut Sim, id: &str) {
        let r = sim.apply(Command::RemoveNode { id: id.into(), at: sim.now });
        assert_eq!(r.rejected, None);
    }

    fn on_node<'a>(sim: &'a Sim, service: &str, node: &str) -> Vec<&'a Task> {
        let id = sim.service(service).id.as_str();
        sim.state.tasks_of(id).filter(|t| t.node_id.as_deref() == Some(node)).collect()
    }

    #[test]
    fn a_removed_nodes_replicas_are_replaced_on_the_other_nodes_at_once() {
        let mut sim = Sim::new(&["n1", "n2", "n3"]);
        sim.converge(vec![spec("web", 3, "web:1")]);
        let lost: Vec<(String, u64)> = on_node(&sim, "app_web", "n2").iter().map(|t| (t.id.clone(), t.slot)).collect();
        assert_eq!(lost.len(), 1, "spread puts one replica on each node");
        remove(&mut sim, "n2");
        assert!(!sim.state.nodes.contains_key("n2"));
        let (id, slot) = &lost[0];
        let t = &sim.state.tasks[id];
        assert_eq!(t.status.state, TaskState::Failed);
        assert_eq!(t.status.err, NODE_REMOVED);
        assert_eq!(t.desired_state, DesiredState::Shutdown);
        // The slot fills at once: the restart delay is for tasks that died on their own.
        let o = sim.round();
        assert_eq!(o.plan.create.len(), 1, "{:?}", o.plan);
        assert_eq!(o.plan.create[0].slot, *slot);
        sim.agent();
        sim.settle();
        let running = sim.running("app_web");
        assert_eq!(running.len(), 3);
        assert!(running.iter().all(|t| matches!(t.node_id.as_deref(), Some("n1" | "n3"))));
        let mut slots: Vec<u64> = running.iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2, 3]);
        // The lost task stays as history; nothing is wanted on the removed node.
        assert!(on_node(&sim, "app_web", "n2").iter().all(|t| t.desired_state == DesiredState::Shutdown));
        assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
    }

    #[test]
    fn a_node_removed_during_a_rollout_is_no_failure_of_the_new_spec() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("web", 2, "web:1");
        s.update.failure_action = FailureAction::Rollback;
        sim.converge(vec![s.clone()]);
        s.task.image = "web:2".into();
        sim.deploy(vec![s]);
        // Stop-first, parallelism 1: the first slot gets its web:2 task.
        sim.settle();
        sim.agent();
        sim.settle();
        sim.agent();
        let new = sim.running("app_web").into_iter().find(|t| t.template.image == "web:2").expect("a web:2 task");
        let node = new.node_id.clone().expect("placed");
        remove(&mut sim, &node);
        for _ in 0..6 {
            sim.settle();
            sim.agent();
            sim.now += 1_000;
            let state = sim.service("app_web").update.state;
            assert!(matches!(state, UpdateState::Updating | UpdateState::Completed), "{state:?}");
        }
        sim.now += 10_000;
        sim.settle();
        let svc = sim.service("app_web");
        assert_eq!(svc.update.state, UpdateState::Completed);
        assert_eq!(svc.revision, 2);
        let running = sim.running("app_web");
        assert_eq!(running.len(), 2);
        assert!(running.iter().all(|t| t.template.image == "web:2" && t.node_id.as_deref() != Some(&node)));
    }

    #[test]
    fn a_global_task_on_a_removed_node_goes_away() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("agent", 0, "agent:1");
        s.mode = ServiceMode::Global;
        sim.converge(vec![s]);
        remove(&mut sim, "n2");
        sim.settle();
        sim.agent();
        sim.settle();
        let svc = sim.service("app_agent").id.clone();
        let nodes: Vec<Option<String>> = sim.state.tasks_of(&svc).map(|t| t.node_id.clone()).collect();
        assert_eq!(nodes, vec![Some("n1".to_string())], "the removed node's task is deleted");
    }

    #[test]
    fn an_unfinished_job_task_on_a_removed_node_runs_again_elsewhere() {
        let mut sim = Sim::new(&["n1", "n2"]);
        let mut s = spec("migrate", 0, "migrate:1");
        s.mode = ServiceMode::ReplicatedJob { replicas: 2, max_concurrent: 0 };
        s.restart.condition = RestartCondition::OnFailure;
        sim.deploy(vec![s]);
        sim.settle();
        sim.agent();
        remove(&mut sim, "n1");
        sim.settle();
        sim.agent();
        let running = sim.running("app_migrate");
        assert_eq!(running.len(), 2);
        assert!(running.iter().all(|t| t.node_id.as_deref() == Some("n2")));
        for id in running.iter().map(|t| t.id.clone()).collect::<Vec<_>>() {
            sim.report(&id, TaskState::Complete, Some(0));
        }
        sim.settle();
        assert_eq!(sim.service("app_migrate").update.state, UpdateState::Completed);
    }
}

/// Issue 12, defect 2: a task with a health check counts only once healthy.
mod health {
    use super::*;

    fn report_health(sim: &mut Sim, id: &str, state: TaskState, health: &str) {
        let node_id = sim.state.tasks[id].node_id.clone().expect("assigned");
        let status = TaskStatus {
            state,
            timestamp: sim.now,
            container_id: format!("ctr-{id}"),
            health: health.into(),
            ..Default::default()
        };
        sim.apply(Command::UpdateTaskStatus {
            updates: vec![TaskStatusUpdate { task_id: id.into(), node_id, status }],
            at: sim.now,
        });
    }

    #[test]
    fn a_rollout_waits_for_health_and_monitors_from_it() {
        let mut sim = Sim::new(&["n1"]);
        sim.deploy(vec![spec("web", 1, "web:1")]);
        sim.settle();
        let id = sim.state.tasks.keys().next().expect("a task").clone();
        // Running, health check not passed yet: not up.
        report_health(&mut sim, &id, TaskState::Running, "starting");
        sim.settle();
        assert_eq!(service_counts(&sim.state, sim.service("app_web")).running, 0);
        sim.now += 60_000;
        sim.settle();
        assert_eq!(sim.service("app_web").update.state, UpdateState::Updating, "not converged while starting");
        // Healthy: up, and the monitor period counts from now.
        report_health(&mut sim, &id, TaskState::Running, "healthy");
        assert_eq!(service_counts(&sim.state, sim.service("app_web")).running, 1);
        let o = sim.round();
        assert_eq!(o.wake_at, Some(sim.now + UpdateConfig::default().monitor_ms));
        assert_eq!(sim.service("app_web").update.state, UpdateState::Updating);
        sim.now += UpdateConfig::default().monitor_ms;
        sim.settle();
        assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
    }

    #[test]
    fn a_start_first_update_keeps_the_old_task_until_the_new_one_is_healthy() {
        let mut sim = Sim::new(&["n1"]);
        let mut s = spec("web", 1, "web:1");
        s.update.order = UpdateOrder::StartFirst;
        sim.converge(vec![s.clone()]);
        let old = sim.running("app_web")[0].id.clone();
        s.task.image = "web:2".into();
        sim.deploy(vec![s]);
        sim.settle();
        let new =
            sim.state.tasks.values().find(|t| t.template.image == "web:2").map(|t| t.id.clone()).expect("new task");
        report_health(&mut sim, &new, TaskState::Running, "starting");
        sim.settle();
        assert_eq!(sim.state.tasks[&old].desired_state, DesiredState::Running, "the old one serves meanwhile");
        report_health(&mut sim, &new, TaskState::Running, "healthy");
        sim.settle();
        assert_eq!(sim.state.tasks[&old].desired_state, DesiredState::Shutdown);
    }
}

/// Issue 12, defect 1: a paused service has a way out that needs no spec
/// change (Swarm's `service update --force`).
mod force_update {
    use super::*;

    #[test]
    fn a_force_update_resumes_a_paused_service_and_replaces_its_tasks() {
        let mut sim = Sim::new(&["n1"]);
        sim.converge(vec![spec("web", 2, "web:1")]);
        sim.deploy(vec![spec("web", 2, "web:bad")]);
        fail_the_first_updated_task(&mut sim);
        assert_eq!(sim.service("app_web").update.state, UpdateState::Paused);
        let before: Vec<String> = sim.state.tasks.keys().cloned().collect();
        // Redeploying the same file changes nothing.
        sim.deploy(vec![spec("web", 2, "web:bad")]);
        assert_eq!(sim.service("app_web").update.state, UpdateState::Paused);
        let r = sim.apply(Command::ForceUpdate { service: "app_web".into(), at: sim.now });
        assert_eq!(r.rejected, None);
        let svc = sim.service("app_web");
        assert_eq!((svc.update.state, svc.revision, svc.spec.task.force_update), (UpdateState::Updating, 3, 1));
        sim.play(8);
        assert_eq!(sim.service("app_web").update.state, UpdateState::Completed);
        let running = sim.running("app_web");
        assert_eq!(running.len(), 2);
        assert!(running.iter().all(|t| !before.contains(&t.id)), "every task replaced");
        // A deploy keeps the counter: the same file is still up to date.
        let r = sim.apply(Command::PutStack {
            spec: StackSpec {
                name: "app".into(),
                services: [("web".to_string(), spec("web", 2, "web:bad"))].into(),
                ..Default::default()
            },
            prune: false,
            registry_auth: None,
            at: sim.now,
        });
        assert_eq!(r.deploy.expect("a deploy result").unchanged, vec!["app_web".to_string()]);
        assert_eq!(
            sim.apply(Command::ForceUpdate { service: "app_nope".into(), at: sim.now }).rejected.as_deref(),
            Some("no service named \"app_nope\"")
        );
    }

    #[test]
    fn a_task_that_was_never_scheduled_shuts_down_at_once() {
        let mut sim = Sim::new(&[]);
        sim.deploy(vec![spec("web", 2, "web:1")]);
        sim.settle();
        let svc = sim.service("app_web").id.clone();
        assert!(sim.state.tasks_of(&svc).all(|t| t.status.state == TaskState::Pending));
        sim.deploy(vec![spec("web", 1, "web:1")]);
        sim.settle();
        // Slot 2's task was shut down at once (no agent would ever report it
        // stopped), then deleted with its unwanted slot.
        let states: Vec<(u64, DesiredState, TaskState)> =
            sim.state.tasks_of(&svc).map(|t| (t.slot, t.desired_state, t.status.state)).collect();
        assert_eq!(states, vec![(1, DesiredState::Running, TaskState::Pending)]);
    }
}
