//! What the agents report of their tasks' use (CPU, memory) and of the
//! routing mesh's connections, as the leader holds it for the autoscaler:
//! memory only, never replicated. A new leader knows nothing until the
//! agents' next reports (one period); the autoscaler says "no metrics"
//! meanwhile and changes nothing.

use std::sync::{Arc, Mutex};

use stackd_core::autoscale::{ConnectionSample, STALE_AFTER, Samples, TaskSample};
use stackd_core::model::Timestamp;

/// One task's use, as an agent reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TaskUse {
    /// The task's id.
    pub task_id: String,
    /// CPU in cores over the agent's last period.
    pub cpu_cores: f64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// The leader's book of the agents' reports (cheap to clone: shared).
#[derive(Clone, Debug, Default)]
pub(crate) struct UsageBook {
    inner: Arc<Mutex<Samples>>,
}

impl UsageBook {
    /// Records a node's report received at `at` (the leader's clock): its
    /// tasks' use, and the open connections its mesh holds per service
    /// (full name). The caller has kept only the tasks the state places on
    /// the node. What the node reported before and no longer does is
    /// forgotten (a task that stopped, a service that went).
    pub(crate) fn record(&self, node: &str, at: Timestamp, tasks: Vec<TaskUse>, connections: Vec<(String, u64)>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.tasks.retain(|_, t| t.node != node);
        for t in tasks {
            if !t.cpu_cores.is_finite() || t.cpu_cores < 0.0 {
                continue;
            }
            s.tasks.insert(
                t.task_id,
                TaskSample { node: node.to_string(), at, cpu_cores: t.cpu_cores, memory_bytes: t.memory_bytes },
            );
        }
        for by_node in s.connections.values_mut() {
            by_node.remove(node);
        }
        for (service, open) in connections {
            s.connections.entry(service).or_default().insert(node.to_string(), ConnectionSample { at, open });
        }
        // Forget what no fresh report holds (a node gone silent).
        let now = at;
        s.tasks.retain(|_, t| t.at.saturating_add(2 * STALE_AFTER) >= now);
        for by_node in s.connections.values_mut() {
            by_node.retain(|_, c| c.at.saturating_add(2 * STALE_AFTER) >= now);
        }
        s.connections.retain(|_, by_node| !by_node.is_empty());
    }

    /// A copy of what is held.
    pub(crate) fn snapshot(&self) -> Samples {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets everything (this manager stopped leading).
    pub(crate) fn clear(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Samples::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(id: &str, cpu: f64) -> TaskUse {
        TaskUse { task_id: id.into(), cpu_cores: cpu, memory_bytes: 10 }
    }

    #[test]
    fn a_report_replaces_the_nodes_last_one() {
        let book = UsageBook::default();
        book.record("n1", 1_000, vec![usage("a", 0.5), usage("b", 0.2)], vec![("s_web".into(), 3)]);
        book.record("n2", 1_000, vec![usage("c", 0.1)], vec![("s_web".into(), 4)]);
        book.record("n1", 2_000, vec![usage("a", 0.7), usage("bad", f64::NAN)], vec![]);
        let s = book.snapshot();
        assert_eq!(s.tasks.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(s.tasks["a"].cpu_cores, 0.7);
        assert_eq!(s.tasks["a"].at, 2_000);
        assert_eq!(s.connections["s_web"].len(), 1);
        assert_eq!(s.connections["s_web"]["n2"].open, 4);
    }

    #[test]
    fn a_silent_nodes_samples_are_forgotten() {
        let book = UsageBook::default();
        book.record("n1", 0, vec![usage("a", 0.5)], vec![("s_web".into(), 1)]);
        book.record("n2", 2 * STALE_AFTER + 1, vec![], vec![]);
        let s = book.snapshot();
        assert!(s.tasks.is_empty() && s.connections.is_empty());
        book.clear();
        assert_eq!(book.snapshot(), Samples::default());
    }
}
