//! The autoscaler's commands as the state applies them: the count set in
//! place (no revision), held during a rollout and within the bounds, kept
//! by a deploy of the same policy and by a rollback, `ScaleService`
//! refused without `disable_autoscale`.

mod common;

use stackd_core::autoscale::{Policy, Target};
use stackd_core::command::{Command, Plan};
use stackd_core::model::*;
use stackd_core::{ClusterState, RefusalKind};

fn stack(image: &str, policy: Option<Policy>, replicas: u64) -> StackSpec {
    let mut spec = common::shop_web(image);
    let web = spec.services.get_mut("web").expect("web");
    web.autoscale = policy;
    web.mode = ServiceMode::Replicated { replicas };
    spec
}

fn policy(min: u64, max: u64) -> Policy {
    Policy::new(min, max, Target::Cpu { percent: 70 })
}

fn web(s: &ClusterState) -> &Service {
    s.service_by_name("shop_web").expect("the service")
}

fn replicas(s: &ClusterState) -> u64 {
    match web(s).spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ref other => panic!("{other:?}"),
    }
}

/// A cluster with shop_web autoscaled in [1, 8] from 2, its first rollout done.
fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
    let put =
        Command::PutStack { spec: stack("web:1", Some(policy(1, 8)), 2), prune: false, registry_auth: None, at: 2 };
    assert_eq!(s.apply(2, &put).rejected, None);
    complete(&mut s, 3);
    s
}

fn complete(s: &mut ClusterState, i: u64) {
    let id = web(s).id.clone();
    let done = UpdateStatus { state: UpdateState::Completed, started_at: 2, completed_at: i, message: String::new() };
    let plan = Plan { update_status: vec![(id, done)], ..Plan::default() };
    assert_eq!(s.apply(i, &Command::ApplyPlan { plan, at: i }).rejected, None);
}

fn autoscale(s: &mut ClusterState, i: u64, replicas: u64, why: Option<&str>) {
    let id = web(s).id.clone();
    let cmd = Command::Autoscale {
        service_id: id,
        replicas,
        measured_milli: Some(140_000),
        decision: why.map(str::to_string),
        at: i,
    };
    assert_eq!(s.apply(i, &cmd).rejected, None);
}

#[test]
fn the_autoscaler_sets_the_count_in_place_and_records_its_decision() {
    let mut s = cluster();
    let revision = web(&s).revision;
    autoscale(&mut s, 10, 4, Some("2 → 4: 140% CPU against a target of 70% CPU asks for 4"));
    let w = web(&s);
    assert_eq!((replicas(&s), w.revision, w.update.state), (4, revision, UpdateState::Completed));
    let status = w.autoscale.as_ref().expect("a status");
    assert_eq!((status.measured_at, status.measured_milli), (10, Some(140_000)));
    assert_eq!(status.decisions.len(), 1);
    assert_eq!((status.decisions[0].from, status.decisions[0].to), (2, 4));
    // Its event says why.
    let applied = s.apply(
        11,
        &Command::Autoscale {
            service_id: w.id.clone(),
            replicas: 5,
            measured_milli: None,
            decision: Some("4 → 5: why".into()),
            at: 11,
        },
    );
    assert!(applied.events.iter().any(|e| e.message.contains("autoscale: 4 → 5")), "{:?}", applied.events);
    // Beyond the bounds: the bounds.
    autoscale(&mut s, 12, 50, Some("more"));
    assert_eq!(replicas(&s), 8);
    // At most AUTOSCALE_DECISIONS_KEPT decisions.
    for i in 0..20 {
        autoscale(&mut s, 20 + i, 3, Some("again"));
    }
    assert_eq!(web(&s).autoscale.as_ref().map(|a| a.decisions.len()), Some(AUTOSCALE_DECISIONS_KEPT));
    // A measurement alone records no decision.
    autoscale(&mut s, 50, 3, None);
    assert_eq!(web(&s).autoscale.as_ref().map(|a| (a.measured_at, a.decisions.len())), Some((50, 10)));
}

#[test]
fn the_count_holds_during_a_rollout_and_for_a_service_no_longer_autoscaled() {
    let mut s = cluster();
    let put =
        Command::PutStack { spec: stack("web:2", Some(policy(1, 8)), 2), prune: false, registry_auth: None, at: 5 };
    assert_eq!(s.apply(5, &put).rejected, None);
    assert_eq!(web(&s).update.state, UpdateState::Updating);
    autoscale(&mut s, 6, 6, Some("up"));
    assert_eq!(replicas(&s), 2);
    complete(&mut s, 7);
    // The policy removed by a deploy: the autoscaler's late command does nothing.
    let put = Command::PutStack { spec: stack("web:2", None, 2), prune: false, registry_auth: None, at: 8 };
    assert_eq!(s.apply(8, &put).rejected, None);
    complete(&mut s, 9);
    let before = s.clone();
    autoscale(&mut s, 10, 6, Some("up"));
    assert_eq!(s, before);
}

#[test]
fn a_deploy_of_the_same_policy_keeps_the_count_and_is_no_change() {
    let mut s = cluster();
    autoscale(&mut s, 10, 6, Some("up"));
    let revision = web(&s).revision;
    // The same file (replicas: 2) during the storm: unchanged, 6 stay.
    let put =
        Command::PutStack { spec: stack("web:1", Some(policy(1, 8)), 2), prune: false, registry_auth: None, at: 11 };
    let r = s.apply(11, &put);
    assert_eq!(r.rejected, None);
    assert_eq!((replicas(&s), web(&s).revision), (6, revision));
    // A new image: a new revision, still 6.
    let put =
        Command::PutStack { spec: stack("web:2", Some(policy(1, 8)), 2), prune: false, registry_auth: None, at: 12 };
    assert_eq!(s.apply(12, &put).rejected, None);
    assert_eq!((replicas(&s), web(&s).revision), (6, revision + 1));
    complete(&mut s, 13);
    // A changed policy whose bounds exclude the count: clamped to them.
    let put =
        Command::PutStack { spec: stack("web:2", Some(policy(1, 4)), 2), prune: false, registry_auth: None, at: 14 };
    assert_eq!(s.apply(14, &put).rejected, None);
    assert_eq!(replicas(&s), 4);
    complete(&mut s, 15);
    // A rollback keeps the autoscaled count too.
    autoscale(&mut s, 16, 3, Some("down"));
    let r = s.apply(17, &Command::RollbackService { service: "shop_web".into(), to: None, at: 17 });
    assert_eq!(r.rejected, None);
    assert_eq!((replicas(&s), web(&s).spec.autoscale), (3, Some(policy(1, 8))));
    // The policy removed: the file's count again.
    let put = Command::PutStack { spec: stack("web:2", None, 2), prune: false, registry_auth: None, at: 18 };
    assert_eq!(s.apply(18, &put).rejected, None);
    assert_eq!(replicas(&s), 2);
}

#[test]
fn scale_by_hand_is_refused_unless_it_turns_the_autoscaler_off() {
    let mut s = cluster();
    let before = s.clone();
    let r = s.apply(
        10,
        &Command::ScaleService { service: "shop_web".into(), replicas: 5, disable_autoscale: false, at: 10 },
    );
    let refusal = r.refusal().expect("refused");
    assert_eq!(refusal.kind, RefusalKind::FailedPrecondition);
    assert!(refusal.message.contains("--disable-autoscale"), "{}", refusal.message);
    assert_eq!(s, before);
    let r = s
        .apply(11, &Command::ScaleService { service: "shop_web".into(), replicas: 5, disable_autoscale: true, at: 11 });
    assert_eq!(r.rejected, None);
    assert_eq!((replicas(&s), web(&s).spec.autoscale), (5, None));
    assert!(web(&s).update.message.contains("autoscaler turned off"), "{}", web(&s).update.message);
    // The same count with the autoscaler already off: nothing.
    let before = s.clone();
    let r = s
        .apply(12, &Command::ScaleService { service: "shop_web".into(), replicas: 5, disable_autoscale: true, at: 12 });
    assert_eq!((r.rejected, &s), (None, &before));
}
