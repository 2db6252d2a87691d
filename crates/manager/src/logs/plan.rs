//! The pure part of `Logs`: what a target asks of which nodes, how its
//! tasks are named, what may be published into it, and what is told when a
//! task's logs end.

use std::collections::{BTreeMap, BTreeSet};

use stackd_core::model::{NodeId, Task, TaskId};
use stackd_core::{ClusterState, Refusal};
use stackd_proto::v1;

/// What a `Logs` request asks, as the state answers it ([`plan`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// What the agents are sent (its id is set by [`LogBroker::subscribe`]).
    pub wire: v1::LogSubscription,
    /// The nodes to ask; `None`: every node with a session, now and later.
    pub nodes: Option<BTreeSet<NodeId>>,
    /// The tasks of the target, by the node they ran on (to tell the client
    /// which cannot be read when a node has no session).
    pub holders: BTreeMap<NodeId, Vec<String>>,
    /// The one task asked for, whose end is told.
    pub task: Option<TaskId>,
    /// Whether the stream ends once every asked node sent all it had.
    pub ends: bool,
}

/// `<service>.<slot>` (the service without its stack's prefix; a global
/// task's node follows after `@` anyway, so it is the service alone).
pub(crate) fn task_name(t: &Task) -> String {
    let service = t.service_name.strip_prefix(&format!("{}_", t.stack)).unwrap_or(&t.service_name);
    if t.slot == 0 { service.to_string() } else { format!("{service}.{}", t.slot) }
}

pub(crate) fn node_name(s: &ClusterState, id: &str) -> String {
    s.nodes.get(id).map(|n| n.name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| id.to_string())
}

/// The task `target` names: its id, or a prefix of one that no other task
/// shares (at least 4 characters).
fn find_task<'a>(s: &'a ClusterState, target: &str) -> Result<Option<&'a Task>, Refusal> {
    if let Some(t) = s.tasks.get(target) {
        return Ok(Some(t));
    }
    if target.len() < 4 {
        return Ok(None);
    }
    let mut found = s.tasks.values().filter(|t| t.id.starts_with(target));
    match (found.next(), found.next()) {
        (Some(t), None) => Ok(Some(t)),
        (Some(_), Some(_)) => {
            Err(Refusal::invalid(format!("{target:?} is the start of several task ids: give more of it")))
        }
        _ => Ok(None),
    }
}

/// What `Logs` of `target` (a service's name or id, or a task id) needs:
/// the subscription, the nodes to ask, the tasks each node holds.
pub(crate) fn plan(s: &ClusterState, target: &str, options: v1::LogOptions) -> Result<Plan, Refusal> {
    let follow = options.follow;
    if let Some(service) = s.services.get(target).or_else(|| s.service_by_name(target)) {
        let mut holders: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        for t in s.tasks.of_service(&service.id) {
            if let Some(node) = &t.node_id {
                holders.entry(node.clone()).or_default().push(task_name(t));
            }
        }
        for names in holders.values_mut() {
            names.sort();
            names.dedup();
        }
        return Ok(Plan {
            wire: v1::LogSubscription {
                id: String::new(),
                service: service.name.clone(),
                task_ids: Vec::new(),
                options: Some(options),
                close: false,
            },
            nodes: (!follow).then(|| holders.keys().cloned().collect()),
            holders,
            task: None,
            ends: !follow,
        });
    }
    let Some(task) = find_task(s, target)? else {
        return Err(Refusal::not_found(format!(
            "no service or task {target:?}: name a service as `stack_service` (see `stackctl service ls`) or a task by its id (`stackctl service ps`)"
        )));
    };
    // A task that is over has nothing more to follow: its lines, then its end.
    let mut options = options;
    options.follow &= !task.status.state.is_terminal();
    let Some(node) = &task.node_id else {
        return Err(Refusal::not_found(format!(
            "task {} ({}) was never assigned to a node: it never ran, and has no logs{}",
            task.id,
            task_name(task),
            if task.unplaceable.is_empty() { String::new() } else { format!(" ({})", task.unplaceable) }
        )));
    };
    Ok(Plan {
        wire: v1::LogSubscription {
            id: String::new(),
            service: String::new(),
            task_ids: vec![task.id.clone()],
            options: Some(options),
            close: false,
        },
        nodes: Some(BTreeSet::from([node.clone()])),
        holders: BTreeMap::from([(node.clone(), vec![task_name(task)])]),
        task: Some(task.id.clone()),
        ends: true,
    })
}

/// What the client is told when a task's logs end: how the task finished,
/// or, when its node said the container stopped, that it did while the
/// task is not over yet (its status report is on the way).
pub(crate) fn ending(s: &ClusterState, task_id: &str, stopped: bool) -> Option<v1::LogsNotice> {
    let t = s.tasks.get(task_id)?;
    let st = &t.status;
    let text = if st.state.is_terminal() {
        let mut text = format!("the task is {}", st.state);
        if let Some(code) = st.exit_code {
            text.push_str(&format!(" (exit code {code})"));
        }
        if !st.err.is_empty() {
            text.push_str(&format!(": {}", st.err));
        }
        text
    } else if stopped {
        format!("its container stopped (the task is {})", st.state)
    } else {
        return None;
    };
    Some(v1::LogsNotice {
        task_id: t.id.clone(),
        task: task_name(t),
        node: t.node_id.as_deref().map(|n| node_name(s, n)).unwrap_or_default(),
        text,
    })
}

/// Whether `node` may publish lines of task `task_id` into `wire`: a task
/// the state still knows must run on that node and belong to the target;
/// one it no longer knows (an old container of the service) is let through,
/// named by its id, under the sending node's name.
pub(crate) fn may_publish(s: &ClusterState, wire: &v1::LogSubscription, node: &str, task_id: &str) -> bool {
    match s.tasks.get(task_id) {
        None => true,
        Some(t) => {
            t.node_id.as_deref() == Some(node)
                && (if wire.service.is_empty() {
                    wire.task_ids.contains(&t.id)
                } else {
                    t.service_name == wire.service
                })
        }
    }
}

/// Whether the target of `wire` still exists: its service, or its task.
pub(crate) fn target_exists(s: &ClusterState, wire: &v1::LogSubscription) -> bool {
    if wire.service.is_empty() {
        wire.task_ids.iter().all(|id| s.tasks.get(id).is_some())
    } else {
        s.service_by_name(&wire.service).is_some()
    }
}

/// Whether the task `task_id` is over (or gone from the state).
pub(crate) fn task_over(s: &ClusterState, task_id: &str) -> bool {
    s.tasks.get(task_id).is_none_or(|t| t.status.state.is_terminal())
}

/// The first 12 characters of an id.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stackd_core::model::{
        DesiredState, Node, NodeRole, NodeState, Service, ServiceSpec, TaskState, TaskStatus, UpdateStatus,
    };

    use super::*;

    fn node(id: &str, state: NodeState) -> Node {
        Node {
            id: id.into(),
            name: format!("node-{id}"),
            addr: String::new(),
            role: NodeRole::Worker,
            availability: Default::default(),
            state,
            labels: BTreeMap::new(),
            resources: Default::default(),
            engine_version: String::new(),
            engine: Default::default(),
            updated_at: 0,
        }
    }

    fn task(id: &str, slot: u64, node: Option<&str>, state: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: "svc1".into(),
            service_name: "shop_web".into(),
            stack: "shop".into(),
            slot,
            node_id: node.map(String::from),
            revision: 1,
            template: Default::default(),
            desired_state: DesiredState::Running,
            status: TaskStatus { state, exit_code: Some(3), err: "boom".into(), ..Default::default() },
            unplaceable: "no node has 64 GB free".into(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    /// shop_web: tasks on n1 (running, twice: slots 1 and 3), n2 (failed),
    /// and one never placed; n2 is down.
    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.nodes.insert("n1".into(), node("n1", NodeState::Ready));
        s.nodes.insert("n2".into(), node("n2", NodeState::Down));
        let spec = ServiceSpec::replicated("web", 3, Default::default());
        let mut svc = Service::new("svc1".into(), "shop", spec, 0);
        svc.update = UpdateStatus::default();
        s.services.insert(svc.id.clone(), svc);
        for t in [
            task("aaaa1111", 1, Some("n1"), TaskState::Running),
            task("aaaa2222", 2, Some("n2"), TaskState::Failed),
            task("bbbb3333", 3, Some("n1"), TaskState::Running),
            task("cccc4444", 4, None, TaskState::Pending),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        s
    }

    fn options(follow: bool) -> v1::LogOptions {
        v1::LogOptions { follow, since: 0, tail: Some(5) }
    }

    #[test]
    fn a_service_asks_the_nodes_of_its_tasks_or_every_node_when_followed() {
        let s = state();
        for target in ["shop_web", "svc1"] {
            let p = plan(&s, target, options(false)).expect("a plan");
            assert_eq!(p.wire.service, "shop_web");
            assert!(p.wire.task_ids.is_empty());
            assert_eq!(p.wire.options, Some(options(false)));
            assert_eq!(p.nodes, Some(BTreeSet::from(["n1".to_string(), "n2".to_string()])));
            assert_eq!(p.holders["n1"], vec!["web.1".to_string(), "web.3".to_string()]);
            assert_eq!(p.holders["n2"], vec!["web.2".to_string()]);
            assert!(p.ends && p.task.is_none());
        }
        let p = plan(&s, "shop_web", options(true)).expect("a plan");
        assert_eq!(p.nodes, None, "a followed service goes to every node, now and later");
        assert!(!p.ends);
    }

    #[test]
    fn a_task_is_found_by_its_id_or_an_unambiguous_start_of_it() {
        let s = state();
        for target in ["aaaa1111", "aaaa1"] {
            let p = plan(&s, target, options(true)).expect("a plan");
            assert_eq!(p.wire.options.as_ref().map(|o| o.follow), Some(true));
            assert_eq!(p.nodes, Some(BTreeSet::from(["n1".to_string()])));
        }
        for target in ["aaaa2222", "aaaa2"] {
            let p = plan(&s, target, options(true)).expect("a plan");
            assert_eq!(p.wire.options.as_ref().map(|o| o.follow), Some(false), "a failed task: nothing to follow");
            assert_eq!(p.wire.task_ids, vec!["aaaa2222".to_string()]);
            assert!(p.wire.service.is_empty());
            assert_eq!(p.nodes, Some(BTreeSet::from(["n2".to_string()])));
            assert_eq!(p.task.as_deref(), Some("aaaa2222"));
            assert!(p.ends, "a followed task ends when its container stops");
        }
        let e = plan(&s, "aaaa", options(false)).expect_err("ambiguous");
        assert!(e.to_string().contains("several task ids"), "{e}");
        let e = plan(&s, "aaa", options(false)).expect_err("too short to be a task");
        assert!(e.to_string().contains("no service or task"), "{e}");
        let e = plan(&s, "shop_nothing", options(false)).expect_err("unknown");
        assert!(e.to_string().contains("no service or task \"shop_nothing\""), "{e}");
        let e = plan(&s, "cccc4444", options(false)).expect_err("never placed");
        assert!(e.to_string().contains("never assigned to a node") && e.to_string().contains("64 GB"), "{e}");
    }

    #[test]
    fn a_node_publishes_only_its_own_tasks_of_the_target() {
        let s = state();
        let by_service = v1::LogSubscription { service: "shop_web".into(), ..Default::default() };
        assert!(may_publish(&s, &by_service, "n1", "aaaa1111"));
        assert!(!may_publish(&s, &by_service, "n2", "aaaa1111"), "another node's task");
        assert!(may_publish(&s, &by_service, "n2", "pruned-long-ago"), "an old container, named by its id");
        let other = v1::LogSubscription { service: "shop_db".into(), ..Default::default() };
        assert!(!may_publish(&s, &other, "n1", "aaaa1111"), "a task of another service");
        let by_task = v1::LogSubscription { task_ids: vec!["aaaa2222".into()], ..Default::default() };
        assert!(may_publish(&s, &by_task, "n2", "aaaa2222"));
        assert!(!may_publish(&s, &by_task, "n1", "aaaa1111"));
        assert!(target_exists(&s, &by_service) && target_exists(&s, &by_task) && !target_exists(&s, &other));
        assert!(task_over(&s, "aaaa2222") && task_over(&s, "zzzz") && !task_over(&s, "aaaa1111"));
    }

    #[test]
    fn the_end_of_a_task_is_told_with_its_exit_code_and_error() {
        let s = state();
        let n = ending(&s, "aaaa2222", false).expect("a finished task is told");
        assert_eq!((n.task.as_str(), n.node.as_str()), ("web.2", "node-n2"));
        assert_eq!(n.text, "the task is failed (exit code 3): boom");
        assert_eq!(ending(&s, "aaaa1111", false), None, "a running task read to now: nothing to tell");
        let n = ending(&s, "aaaa1111", true).expect("a container its node said stopped");
        assert!(n.text.starts_with("its container stopped"), "{}", n.text);
        assert_eq!(ending(&s, "zzzz", true), None);
    }
}
