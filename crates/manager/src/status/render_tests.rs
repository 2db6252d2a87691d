use std::collections::BTreeMap;

use stackd_core::ClusterState;
use stackd_core::model::{
    Availability, DesiredState, Node, NodeRole, NodeState, Service, ServiceSpec, Stack, Task, TaskState, TaskTemplate,
    UpdateState, UpdateStatus,
};
use stackd_core::state::{Action, Event, ObjectKind};

use super::*;

fn node(id: &str, name: &str, state: NodeState) -> Node {
    Node {
        id: id.into(),
        name: name.into(),
        addr: "10.0.0.1:4280".into(),
        role: NodeRole::Manager,
        availability: Availability::Active,
        state,
        labels: BTreeMap::new(),
        resources: Default::default(),
        engine_version: "27.0".into(),
        engine: Default::default(),
        updated_at: 0,
    }
}

fn service(id: &str, name: &str, image: &str, replicas: u64) -> Service {
    let spec = ServiceSpec::replicated(name, replicas, TaskTemplate { image: image.into(), ..Default::default() });
    let mut svc = Service::new(id.into(), "shop", spec, 0);
    svc.update = UpdateStatus::default();
    svc
}

fn task(svc: &Service, id: &str, slot: u64, state: TaskState, err: &str) -> Task {
    let mut t = Task {
        id: id.into(),
        service_id: svc.id.clone(),
        service_name: svc.name.clone(),
        stack: svc.stack.clone(),
        slot,
        node_id: Some("n1".into()),
        revision: 1,
        template: svc.spec.task.clone(),
        desired_state: DesiredState::Running,
        status: Default::default(),
        unplaceable: String::new(),
        created_at: 0,
        addresses: BTreeMap::new(),
        image: String::new(),
    };
    t.status.state = state;
    t.status.err = err.into();
    t.status.timestamp = 1_700_000_000_000;
    t
}

/// shop_web (2 replicas, running) and shop_bad (1 replica, its task failed
/// with an error that holds markup).
fn state() -> ClusterState {
    let mut s = ClusterState { cluster_id: "c1".into(), ..ClusterState::default() };
    s.nodes.insert("n1".into(), node("n1", "srv1", NodeState::Ready));
    s.nodes.insert("n2".into(), node("n2", "<srv2>", NodeState::Down));
    s.stacks.insert(
        "shop".into(),
        Stack {
            name: "shop".into(),
            volumes: BTreeMap::new(),
            networks: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
            registry_auth: Default::default(),
        },
    );
    let web = service("s1", "web", "web:1", 2);
    let mut bad = service("s2", "bad", "nope:1", 1);
    bad.update = UpdateStatus { state: UpdateState::Paused, message: "task failed".into(), ..Default::default() };
    bad.task_failures = 1;
    for t in [
        task(&web, "t1", 1, TaskState::Running, ""),
        task(&web, "t2", 2, TaskState::Running, ""),
        task(&bad, "t3", 1, TaskState::Failed, "exit status 1: <script>alert(1)</script> & more"),
    ] {
        s.tasks.insert(t.id.clone(), t);
    }
    s.services.insert(web.id.clone(), web);
    s.services.insert(bad.id.clone(), bad);
    s
}

fn view<'a>(state: &'a ClusterState, events: &'a [Event]) -> View<'a> {
    View {
        state,
        leader: Some("n1"),
        served_by: "srv1",
        may_lag: None,
        events,
        viewer: ("ops \"viewer\"", "viewer"),
        now: 1_700_000_000_000,
    }
}

#[test]
fn escape_leaves_no_markup() {
    assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    assert_eq!(escape("plain text é"), "plain text é");
}

#[test]
fn the_page_lists_nodes_services_and_a_failed_tasks_error_escaped() {
    let s = state();
    let events = [Event {
        index: 7,
        seq: 0,
        kind: ObjectKind::Task,
        action: Action::Update,
        id: "t3".into(),
        name: "shop_bad".into(),
        stack: "shop".into(),
        message: "failed <b>".into(),
        at: 1_700_000_000_000,
    }];
    let html = status_page(&view(&s, &events));
    // Nodes: name, state, the leader.
    assert!(html.contains("<td>srv1</td><td>manager</td><td class=\"ok\">ready</td>"), "{html}");
    assert!(html.contains("<td>leader</td>"), "{html}");
    assert!(html.contains("&lt;srv2&gt;") && !html.contains("<srv2>"), "{html}");
    // Services with replicas and rollout.
    assert!(html.contains("<td>shop_web</td><td>replicated</td><td>2/2</td>"), "{html}");
    assert!(html.contains("<td class=\"warn\">0/1</td>"), "{html}");
    assert!(html.contains("<td class=\"bad\">paused: task failed</td>"), "{html}");
    // The failed task's error, escaped.
    let failed = html.split("id=\"failed-tasks\"").nth(1).expect("a failed tasks table");
    assert!(failed.contains("exit status 1: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    // Events, escaped; the viewer's name too.
    assert!(html.contains("failed &lt;b&gt;"), "{html}");
    assert!(html.contains("ops &quot;viewer&quot;"), "{html}");
    assert!(!html.contains("may-lag"));
}

#[test]
fn a_read_that_may_lag_says_so() {
    let s = state();
    let mut v = view(&s, &[]);
    v.may_lag = Some("no leader <now>");
    v.leader = None;
    let html = status_page(&v);
    assert!(html.contains("id=\"may-lag\""), "{html}");
    assert!(html.contains("no leader &lt;now&gt;"), "{html}");
    assert!(html.contains("No leader is known"), "{html}");
}

#[test]
fn the_login_page_has_a_form_and_escapes_its_message() {
    let html = login_page(None);
    assert!(html.contains("<form method=\"post\" action=\"/login\""), "{html}");
    assert!(html.contains("type=\"password\" name=\"token\""), "{html}");
    assert!(!html.contains("login-error"));
    let html = login_page(Some("bad <token>"));
    assert!(html.contains("bad &lt;token&gt;"), "{html}");
}

#[test]
fn only_failed_or_erroneous_tasks_count_as_failed() {
    let svc = service("s", "x", "i", 1);
    assert!(failed(&task(&svc, "a", 1, TaskState::Failed, "")));
    assert!(failed(&task(&svc, "a", 1, TaskState::Rejected, "no image")));
    assert!(failed(&task(&svc, "a", 1, TaskState::Pending, "pull failed")));
    assert!(!failed(&task(&svc, "a", 1, TaskState::Running, "")));
    assert!(!failed(&task(&svc, "a", 1, TaskState::Shutdown, "")));
}
