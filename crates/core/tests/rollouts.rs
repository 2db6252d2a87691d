//! Rollouts driven from the command line: `RollbackService` (to the
//! previous revision or a given one) and `ResumeUpdate` of a paused rollout.

mod common;

use stackd_core::command::{Command, Plan};
use stackd_core::model::*;
use stackd_core::{ClusterState, RefusalKind};

fn stack(image: &str) -> StackSpec {
    common::shop_web(image)
}

fn cluster() -> (ClusterState, u64) {
    let mut s = ClusterState::default();
    s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
    for (i, image) in ["web:1", "web:2", "web:3"].iter().enumerate() {
        let i = i as u64 + 2;
        let r = s.apply(i, &Command::PutStack { spec: stack(image), prune: false, registry_auth: None, at: i });
        assert_eq!(r.rejected, None);
    }
    (s, 10)
}

fn web(s: &ClusterState) -> &Service {
    s.service_by_name("shop_web").expect("the service")
}

#[test]
fn a_rollback_is_a_new_revision_with_an_older_spec() {
    let (mut s, i) = cluster();
    assert_eq!((web(&s).revision, web(&s).spec.task.image.as_str()), (3, "web:3"));
    let r = s.apply(i, &Command::RollbackService { service: "shop_web".into(), to: None, at: i });
    assert_eq!(r.rejected, None);
    let w = web(&s);
    assert_eq!((w.revision, w.spec.task.image.as_str(), w.update.state), (4, "web:2", UpdateState::RollingBack));
    assert!(w.update.message.contains("revision 2"), "{}", w.update.message);
    let r = s.apply(i + 1, &Command::RollbackService { service: "shop_web".into(), to: Some(1), at: i + 1 });
    assert_eq!(r.rejected, None);
    assert_eq!((web(&s).revision, web(&s).spec.task.image.as_str()), (5, "web:1"));
}

#[test]
fn a_rollback_that_cannot_be_is_refused_and_changes_nothing() {
    let (mut s, i) = cluster();
    let before = s.clone();
    for (service, to, kind, why) in [
        ("shop_nope", None, RefusalKind::NotFound, "no service named"),
        ("shop_web", Some(9), RefusalKind::NotFound, "has no revision 9: the kept ones are 1, 2"),
        ("shop_web", Some(3), RefusalKind::NotFound, "revision 3 is the current revision"),
    ] {
        let r = s.apply(i, &Command::RollbackService { service: service.into(), to, at: i });
        let refusal = r.refusal().expect("refused");
        assert_eq!(refusal.kind, kind, "{refusal:?}");
        assert!(refusal.message.contains(why), "{}", refusal.message);
        assert_eq!(s, before);
    }
    // Back to revision 2 (web:2) twice: the second time there is nothing to do.
    assert_eq!(s.apply(i, &Command::RollbackService { service: "shop_web".into(), to: Some(2), at: i }).rejected, None);
    let r = s.apply(i + 1, &Command::RollbackService { service: "shop_web".into(), to: Some(2), at: i + 1 });
    assert!(r.rejected.unwrap_or_default().contains("already runs the spec of revision 2"));
}

#[test]
fn only_a_paused_rollout_resumes() {
    let (mut s, i) = cluster();
    let r = s.apply(i, &Command::ResumeUpdate { service: "shop_web".into(), at: i });
    assert!(r.rejected.unwrap_or_default().contains("not paused"));
    let id = web(&s).id.clone();
    let paused = UpdateStatus { state: UpdateState::Paused, started_at: 3, completed_at: 0, message: "boom".into() };
    let plan = Plan { update_status: vec![(id, paused)], ..Plan::default() };
    assert_eq!(s.apply(i + 1, &Command::ApplyPlan { plan, at: i + 1 }).rejected, None);
    assert_eq!(web(&s).update.state, UpdateState::Paused);
    assert_eq!(s.apply(i + 2, &Command::ResumeUpdate { service: "shop_web".into(), at: i + 2 }).rejected, None);
    let w = web(&s);
    // The same revision goes on, its failure budget counted from now.
    assert_eq!((w.revision, w.update.state, w.update.started_at), (3, UpdateState::Updating, i + 2));
}

#[test]
fn scale_makes_a_revision_with_the_count_and_keeps_the_image() {
    let (mut s, i) = cluster();
    let id = web(&s).id.clone();
    let pin = ImagePin::Digest { reference: "web@sha256:ccc".into() };
    s.apply(i, &Command::PinImage { service_id: id, revision: 3, pin: pin.clone(), at: i });
    let r = s.apply(
        i + 1,
        &Command::ScaleService { disable_autoscale: false, service: "shop_web".into(), replicas: 5, at: i + 1 },
    );
    assert_eq!(r.rejected, None);
    let w = web(&s);
    assert_eq!((w.revision, &w.spec.mode, &w.image), (4, &ServiceMode::Replicated { replicas: 5 }, &pin));
    assert_eq!(w.update.state, UpdateState::Updating);
    assert!(w.update.message.contains("scaled from 2 to 5"), "{}", w.update.message);
    // The same count again: nothing changes.
    let before = s.clone();
    assert_eq!(
        s.apply(
            i + 2,
            &Command::ScaleService { disable_autoscale: false, service: "shop_web".into(), replicas: 5, at: i + 2 }
        )
        .rejected,
        None
    );
    assert_eq!(s, before);
    // Too many, or an unknown service: refused, nothing changes.
    for (service, replicas, why) in [("shop_web", 10_001, "at most 10000"), ("shop_nope", 1, "no service named")] {
        let r = s.apply(
            i + 3,
            &Command::ScaleService { disable_autoscale: false, service: service.into(), replicas, at: i + 3 },
        );
        assert!(r.rejected.unwrap_or_default().contains(why));
        assert_eq!(s, before);
    }
}

#[test]
fn a_global_service_or_a_job_does_not_scale() {
    let mut s = ClusterState::default();
    s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
    let mut spec = stack("web:1");
    let svc = spec.services.get_mut("web").expect("web");
    svc.mode = ServiceMode::Global;
    s.apply(2, &Command::PutStack { spec, prune: false, registry_auth: None, at: 2 });
    let before = s.clone();
    let r =
        s.apply(3, &Command::ScaleService { disable_autoscale: false, service: "shop_web".into(), replicas: 3, at: 3 });
    assert!(r.rejected.unwrap_or_default().contains("is global"));
    assert_eq!(s, before);
}

#[test]
fn a_deploy_that_keeps_the_template_keeps_the_image_a_new_one_resolves_again() {
    let (mut s, i) = cluster();
    let id = web(&s).id.clone();
    let pin = ImagePin::Digest { reference: "web@sha256:ccc".into() };
    s.apply(i, &Command::PinImage { service_id: id, revision: 3, pin: pin.clone(), at: i });
    // Only the replicas change: the running tasks stay, and what they run.
    let mut spec = stack("web:3");
    spec.services.get_mut("web").expect("web").mode = ServiceMode::Replicated { replicas: 4 };
    s.apply(i + 1, &Command::PutStack { spec: spec.clone(), prune: false, registry_auth: None, at: i + 1 });
    assert_eq!((web(&s).revision, &web(&s).image), (4, &pin));
    // The environment changes: new tasks, the tag resolved anew.
    spec.services.get_mut("web").expect("web").task.env = vec!["A=1".into()];
    s.apply(i + 2, &Command::PutStack { spec, prune: false, registry_auth: None, at: i + 2 });
    assert_eq!((web(&s).revision, &web(&s).image), (5, &ImagePin::Pending));
}
