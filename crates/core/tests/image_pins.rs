//! Image tags resolved once per revision (`ImagePin`): a revision's tasks
//! wait for its pin, then all run the same reference; a rollback runs the
//! image its revision ran; a late, second or stale answer changes nothing.

mod common;

use stackd_core::ClusterState;
use stackd_core::command::Command;
use stackd_core::model::*;
use stackd_core::orchestrator::orchestrate;

fn stack(image: &str) -> StackSpec {
    common::shop_web(image)
}

fn web(s: &ClusterState) -> &Service {
    s.service_by_name("shop_web").expect("the service")
}

fn pin(s: &ClusterState, revision: u64, reference: &str) -> Command {
    Command::PinImage {
        service_id: web(s).id.clone(),
        revision,
        pin: ImagePin::Digest { reference: reference.into() },
        at: 5,
    }
}

fn cluster(image: &str) -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
    assert_eq!(
        s.apply(2, &Command::PutStack { spec: stack(image), prune: false, registry_auth: None, at: 2 }).rejected,
        None
    );
    s
}

#[test]
fn a_revision_creates_its_tasks_once_its_image_is_pinned_and_each_runs_the_digest() {
    let mut s = cluster("web:1");
    assert_eq!(web(&s).image, ImagePin::Pending);
    assert_eq!(s.images_to_resolve().count(), 1);
    // Nothing to create while the tag is being resolved.
    assert!(orchestrate(&s, 3).plan.create.is_empty());
    assert_eq!(s.apply(3, &pin(&s, 1, "web@sha256:aaa")).rejected, None);
    assert_eq!(web(&s).image, ImagePin::Digest { reference: "web@sha256:aaa".into() });
    let plan = orchestrate(&s, 4).plan;
    assert_eq!(plan.create.len(), 2);
    s.apply(4, &Command::ApplyPlan { plan, at: 4 });
    let images: Vec<&str> = s.tasks.values().map(Task::run_image).collect();
    assert_eq!(images, ["web@sha256:aaa", "web@sha256:aaa"]);
    // Each template keeps the tag the stack names.
    assert!(s.tasks.values().all(|t| t.template.image == "web:1"));
}

#[test]
fn late_second_and_stale_answers_change_nothing() {
    let mut s = cluster("web:1");
    assert_eq!(s.apply(3, &pin(&s, 1, "web@sha256:aaa")).rejected, None);
    let before = s.clone();
    // A second answer, and one for another revision.
    s.apply(4, &pin(&s, 1, "web@sha256:bbb"));
    s.apply(5, &pin(&s, 7, "web@sha256:ccc"));
    assert_eq!(web(&s).image, before.services[&web(&before).id].image);
    // A "pending" answer is refused.
    let id = web(&s).id.clone();
    let r = s.apply(6, &Command::PinImage { service_id: id, revision: 1, pin: ImagePin::Pending, at: 6 });
    assert!(r.rejected.is_some());
}

#[test]
fn a_rollback_runs_the_image_its_revision_ran_and_a_forced_update_asks_again() {
    let mut s = cluster("web:1");
    s.apply(3, &pin(&s, 1, "web@sha256:aaa"));
    s.apply(4, &Command::PutStack { spec: stack("web:2"), prune: false, registry_auth: None, at: 4 });
    assert_eq!((web(&s).revision, &web(&s).image), (2, &ImagePin::Pending));
    s.apply(5, &pin(&s, 2, "web@sha256:bbb"));
    // Back to revision 1: its digest, not what web:1 means now.
    let r = s.apply(6, &Command::RollbackService { service: "shop_web".into(), to: None, at: 6 });
    assert_eq!(r.rejected, None);
    assert_eq!(web(&s).image, ImagePin::Digest { reference: "web@sha256:aaa".into() });
    assert_eq!(s.images_to_resolve().count(), 0);
    // The history keeps each revision's pin.
    let pins: Vec<(u64, &ImagePin)> = web(&s).history.iter().map(|r| (r.revision, &r.image)).collect();
    assert_eq!(pins[1], (2, &ImagePin::Digest { reference: "web@sha256:bbb".into() }));
    // A forced update resolves the tag again (it may have moved).
    s.apply(7, &Command::ForceUpdate { service: "shop_web".into(), at: 7 });
    assert_eq!(web(&s).image, ImagePin::Pending);
}

#[test]
fn an_image_named_by_digest_needs_no_answer() {
    let s = cluster("web@sha256:abc");
    assert_eq!(web(&s).image, ImagePin::Digest { reference: "web@sha256:abc".into() });
    assert_eq!(orchestrate(&s, 3).plan.create.len(), 2);
}

#[test]
fn a_state_written_before_pins_reads_as_unrecorded_and_writes_back_the_same() {
    let mut s = cluster("web:1");
    s.apply(3, &Command::PinImage { service_id: web(&s).id.clone(), revision: 1, pin: ImagePin::unrecorded(), at: 3 });
    let text = serde_json::to_string(web(&s)).expect("encodes");
    assert!(!text.contains("\"image\":{"), "an unrecorded pin is left out: {text}");
    let back: Service = serde_json::from_str(&text).expect("decodes");
    assert!(back.image.is_unrecorded());
}
