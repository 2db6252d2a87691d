//! `ReportUsage`: what an agent reports of its tasks' use and of its
//! routing mesh's connections, kept for the autoscaler
//! ([`crate::autoscale::UsageBook`]).
//!
//! A node speaks for itself only: of its report, the leader keeps the tasks
//! the state places on that node and the services that exist, and records
//! them at its own clock. A report larger than [`MAX_ENTRIES`] tasks or
//! services is refused whole (`invalid_argument`).

use std::collections::BTreeSet;

use stackd_core::{ClusterState, Refusal};
use stackd_proto::v1;
use tonic::Status;

use crate::autoscale::usage::TaskUse;
use crate::refusal::refused;

/// The most tasks, and the most services, one report may carry.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// What is kept of a node's report.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Kept {
    /// The node's own tasks.
    pub tasks: Vec<TaskUse>,
    /// Open connections by service full name, of the services that exist.
    pub connections: Vec<(String, u64)>,
}

/// Refuses a report that carries more than [`MAX_ENTRIES`] tasks or services.
pub(crate) fn check_size(r: &v1::ReportUsageRequest) -> Result<(), Status> {
    if r.tasks.len() > MAX_ENTRIES || r.connections.len() > MAX_ENTRIES {
        return Err(refused(Refusal::invalid(format!(
            "a usage report carries at most {MAX_ENTRIES} tasks and {MAX_ENTRIES} services ({} and {} sent)",
            r.tasks.len(),
            r.connections.len()
        ))));
    }
    Ok(())
}

/// Of `node`'s report, the tasks the state places on the node and the
/// services that exist (each once: the first entry of a repeated one).
pub(crate) fn keep(state: &ClusterState, node: &str, r: v1::ReportUsageRequest) -> Kept {
    let mut seen = BTreeSet::new();
    let tasks = r
        .tasks
        .into_iter()
        .filter(|t| state.tasks.get(&t.task_id).is_some_and(|task| task.node_id.as_deref() == Some(node)))
        .filter(|t| seen.insert(t.task_id.clone()))
        .map(|t| TaskUse { task_id: t.task_id, cpu_cores: t.cpu_cores, memory_bytes: t.memory_bytes })
        .collect();
    let services: BTreeSet<&str> = if r.connections.is_empty() {
        BTreeSet::new()
    } else {
        state.services.values().map(|s| s.name.as_str()).collect()
    };
    let mut seen = BTreeSet::new();
    let connections = r
        .connections
        .into_iter()
        .filter(|c| services.contains(c.service.as_str()) && seen.insert(c.service.clone()))
        .map(|c| (c.service, c.open))
        .collect();
    Kept { tasks, connections }
}

#[cfg(test)]
mod tests {
    use stackd_core::model::{DesiredState, Service, ServiceSpec, Task, TaskStatus, TaskTemplate};

    use super::*;

    fn task(id: &str, node: Option<&str>) -> Task {
        Task {
            id: id.into(),
            service_id: "s1".into(),
            service_name: "shop_web".into(),
            stack: "shop".into(),
            slot: 1,
            node_id: node.map(Into::into),
            revision: 1,
            template: TaskTemplate::default(),
            desired_state: DesiredState::Running,
            status: TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for (id, node) in [("t1", Some("n1")), ("t2", Some("n2")), ("t3", None)] {
            s.tasks.insert(id.into(), task(id, node));
        }
        let spec = ServiceSpec::replicated("web", 1, TaskTemplate { image: "nginx".into(), ..Default::default() });
        s.services.insert("s1".into(), Service::new("s1".into(), "shop", spec, 0));
        s
    }

    fn report(tasks: &[&str], services: &[&str]) -> v1::ReportUsageRequest {
        v1::ReportUsageRequest {
            node_id: "n1".into(),
            session_id: "s".into(),
            tasks: tasks
                .iter()
                .map(|t| v1::TaskUsage { task_id: t.to_string(), cpu_cores: 0.5, memory_bytes: 7 })
                .collect(),
            connections: services.iter().map(|s| v1::ServiceConnections { service: s.to_string(), open: 3 }).collect(),
        }
    }

    #[test]
    fn a_node_reports_its_own_tasks_and_existing_services_only() {
        let kept =
            keep(&state(), "n1", report(&["t1", "t2", "t3", "gone", "t1"], &["shop_web", "shop_gone", "shop_web"]));
        assert_eq!(kept.tasks, [TaskUse { task_id: "t1".into(), cpu_cores: 0.5, memory_bytes: 7 }]);
        assert_eq!(kept.connections, [("shop_web".to_string(), 3)]);
        let other = keep(&state(), "n2", report(&["t1", "t2"], &[]));
        assert_eq!(other.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), ["t2"]);
        assert!(other.connections.is_empty());
    }

    #[test]
    fn an_oversized_report_is_refused() {
        assert!(check_size(&report(&["t1"], &["shop_web"])).is_ok());
        let ids: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("t{i}")).collect();
        let big = report(&ids.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        let err = check_size(&big).err().map(|s| s.code());
        assert_eq!(err, Some(tonic::Code::InvalidArgument));
    }
}
