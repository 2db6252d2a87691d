use stackd_core::autoscale::{Policy, Samples, Target, TaskSample};
use stackd_core::model::{
    AutoscaleStatus, DesiredState, Service, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus, TaskTemplate,
    UpdateState,
};

use super::*;

fn service(replicas: u64) -> Service {
    let mut spec = ServiceSpec::replicated("web", replicas, TaskTemplate { image: "img".into(), ..Default::default() });
    spec.autoscale = Some(Policy::new(1, 6, Target::Cpu { percent: 50 }));
    let mut s = Service::new("svc1".into(), "s", spec, 0);
    s.update.state = UpdateState::Completed;
    s
}

fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        service_id: "svc1".into(),
        service_name: "s_web".into(),
        stack: "s".into(),
        slot: 1,
        node_id: Some("n1".into()),
        revision: 1,
        template: TaskTemplate::default(),
        desired_state: DesiredState::Running,
        status: TaskStatus { state: TaskState::Running, ..Default::default() },
        unplaceable: String::new(),
        created_at: 0,
        addresses: Default::default(),
        image: String::new(),
    }
}

fn samples(now: Timestamp, cpu: &[(&str, f64)]) -> Samples {
    let mut s = Samples::default();
    for (id, c) in cpu {
        s.tasks.insert(id.to_string(), TaskSample { node: "n1".into(), at: now, cpu_cores: *c, memory_bytes: 0 });
    }
    s
}

#[test]
fn a_load_above_the_target_scales_up_and_is_recorded() {
    let s = service(2);
    let (a, b) = (task("a"), task("b"));
    let now = 100_000;
    // 100 % and 100 % of one core against 50 %: four replicas.
    let (cmd, d) = look(&s, &[&a, &b], &samples(now, &[("a", 1.0), ("b", 1.0)]), &[], None, now).expect("autoscaled");
    assert_eq!(d.replicas, 4);
    match cmd {
        Some(Command::Autoscale { replicas, measured_milli, decision: Some(why), .. }) => {
            assert_eq!(replicas, 4);
            assert_eq!(measured_milli, Some(100_000));
            assert!(why.contains("2 → 4"), "{why}");
        }
        other => panic!("expected a recorded decision, got {other:?}"),
    }
}

#[test]
fn a_steady_load_records_nothing_until_a_minute_has_passed() {
    let mut s = service(2);
    let (a, b) = (task("a"), task("b"));
    let now = 100_000;
    s.autoscale = Some(AutoscaleStatus { measured_at: now - 10_000, measured_milli: Some(50_000), decisions: vec![] });
    let in_band = samples(now, &[("a", 0.5), ("b", 0.52)]);
    let (cmd, d) = look(&s, &[&a, &b], &in_band, &[], Some(Kind::Tolerance), now).expect("autoscaled");
    assert_eq!((d.replicas, cmd), (2, None));
    // A minute after the last record: the measurement is written, no decision.
    let later = now - 10_000 + RECORD_EVERY;
    let (cmd, _) =
        look(&s, &[&a, &b], &samples(later, &[("a", 0.5)]), &[], Some(Kind::Tolerance), later).expect("autoscaled");
    assert!(matches!(cmd, Some(Command::Autoscale { decision: None, replicas: 2, .. })), "{cmd:?}");
}

#[test]
fn missing_metrics_are_said_once_and_change_nothing() {
    let mut s = service(3);
    s.autoscale = Some(AutoscaleStatus { measured_at: 1, measured_milli: Some(40_000), decisions: vec![] });
    let a = task("a");
    let now = 50_000;
    let (cmd, d) = look(&s, &[&a], &Samples::default(), &[], Some(Kind::Tolerance), now).expect("autoscaled");
    assert_eq!(d.replicas, 3);
    match cmd {
        Some(Command::Autoscale { decision: Some(why), measured_milli: None, .. }) => {
            assert!(why.contains("no fresh CPU reading"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    s.autoscale = Some(AutoscaleStatus { measured_at: now, measured_milli: None, decisions: vec![] });
    let (cmd, _) = look(&s, &[&a], &Samples::default(), &[], Some(Kind::NoMetrics), now + 15_000).expect("autoscaled");
    assert_eq!(cmd, None);
}

#[test]
fn a_service_not_autoscaled_is_left_alone() {
    let mut s = service(2);
    s.spec.autoscale = None;
    assert!(look(&s, &[], &Samples::default(), &[], None, 0).is_none());
    s.spec.autoscale = Some(Policy::new(1, 2, Target::Cpu { percent: 50 }));
    s.spec.mode = ServiceMode::Global;
    assert!(look(&s, &[], &Samples::default(), &[], None, 0).is_none());
}
