//! The manager's metrics, read on each scrape ([`ManagerCollector`]): its
//! Raft node (term, leader, indexes, the log's write latency), its
//! dispatcher (sessions, nodes declared down), and — from the leader only,
//! so that a sum over every manager's scrape counts each once — the
//! cluster's figures (core's [`stackd_core::metrics::state_metrics`]: tasks
//! by state, why tasks wait, rollouts, nodes, the last scheduled snapshot).
//!
//! Labels: stack, service, node role and a closed set of states; never a
//! task id.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use stackd_core::metrics::{rollout_state, state_metrics};

use crate::dispatcher::Dispatcher;
use crate::raft::RaftNode;

/// Every metric of a manager, encoded when scraped.
#[derive(Clone)]
pub struct ManagerCollector {
    raft: RaftNode,
    dispatcher: Dispatcher,
}

impl fmt::Debug for ManagerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerCollector").field("raft", &self.raft.id()).finish_non_exhaustive()
    }
}

impl ManagerCollector {
    pub(crate) fn new(raft: RaftNode, dispatcher: Dispatcher) -> Self {
        Self { raft, dispatcher }
    }

    /// The leader this manager knows (its Raft id), for `/readyz`.
    pub fn leader(&self) -> Option<u64> {
        self.raft.status().leader
    }
}

/// A service's labels, and one more.
fn labels<'x>(
    stack: &'x str,
    service: &'x str,
    extra: Option<(&'static str, &'x str)>,
) -> Vec<(&'static str, &'x str)> {
    let mut l = vec![("stack", stack), ("service", service)];
    l.extend(extra);
    l
}

/// One gauge without labels.
fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

/// One counter without labels (the encoder adds `_total`).
fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
}

/// A gauge family: one sample per label set.
fn gauges<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'static str, &'a str)>, f64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        family.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

impl Collector for ManagerCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let st = self.raft.status();
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        gauge(&mut e, "stackd_raft_term", "The Raft term this manager is in.", st.term as f64)?;
        gauge(&mut e, "stackd_raft_is_leader", "1 if this manager leads with a reachable majority.", b(st.has_quorum))?;
        gauge(&mut e, "stackd_raft_has_leader", "1 if this manager knows a leader.", b(st.leader.is_some()))?;
        gauge(
            &mut e,
            "stackd_raft_last_log_index",
            "The last index of this manager's Raft log.",
            st.last_log_index as f64,
        )?;
        gauge(
            &mut e,
            "stackd_raft_applied_index",
            "The last Raft index this manager applied.",
            st.last_applied as f64,
        )?;
        gauge(
            &mut e,
            "stackd_raft_snapshot_index",
            "The last Raft index in this manager's Raft snapshot.",
            st.snapshot_index as f64,
        )?;
        let latency = self.raft.append_latency();
        let family = e.encode_descriptor(
            "stackd_raft_log_write_seconds",
            "How long each write of the Raft log took, its fdatasync included.",
            None,
            latency.metric_type(),
        )?;
        latency.encode(family)?;
        gauge(
            &mut e,
            "stackd_dispatcher_sessions",
            "Agent sessions open on this manager (the leader holds them all).",
            self.dispatcher.session_count() as f64,
        )?;
        counter(
            &mut e,
            "stackd_dispatcher_nodes_declared_down",
            "Nodes this manager declared down for missed heartbeats since it started.",
            self.dispatcher.declared_down(),
        )?;
        if !st.has_quorum {
            return Ok(());
        }
        // The cluster's figures: the leader's alone.
        let state = self.raft.shared().snapshot();
        let m = state_metrics(&state);
        let mut tasks = Vec::new();
        let mut pending = Vec::new();
        let mut desired = Vec::new();
        let mut rollouts = Vec::new();
        let mut failures = Vec::new();
        let (mut bounds, mut targets, mut measured) = (Vec::new(), Vec::new(), Vec::new());
        for (k, f) in &m.services {
            let svc = |extra| labels(&k.stack, &k.service, extra);
            desired.push((svc(None), f.desired as f64));
            // Every state, zeros included: a series that appears and vanishes cannot be alerted on.
            for state in stackd_core::model::TaskState::ALL {
                let n = f.tasks.get(&state).copied().unwrap_or(0);
                tasks.push((svc(Some(("state", state.as_str()))), n as f64));
            }
            for (reason, n) in &f.pending {
                pending.push((svc(Some(("reason", reason.as_str()))), *n as f64));
            }
            // Every state, 0 or 1: a series that appears and vanishes cannot be alerted on.
            for state in stackd_core::metrics::ROLLOUT_STATES {
                let v = if state == f.rollout { 1.0 } else { 0.0 };
                rollouts.push((svc(Some(("state", rollout_state(state)))), v));
            }
            failures.push((svc(None), f.failures));
            if let Some(a) = &f.autoscale {
                bounds.push((svc(Some(("bound", "min"))), a.min as f64));
                bounds.push((svc(Some(("bound", "max"))), a.max as f64));
                targets.push((svc(Some(("metric", a.metric))), f64::from(a.target)));
                if let Some(v) = a.measured_milli {
                    measured.push((svc(Some(("metric", a.metric))), v as f64 / 1000.0));
                }
            }
        }
        gauges(
            &mut e,
            "stackd_service_tasks",
            "A service's current tasks (those that hold a slot) by observed state.",
            tasks,
        )?;
        gauges(
            &mut e,
            "stackd_service_desired_tasks",
            "The tasks a service wants (replicas; for a global service, its nodes).",
            desired,
        )?;
        gauges(
            &mut e,
            "stackd_service_pending_tasks",
            "A service's tasks that wait for a node, by why (the reason most nodes give).",
            pending,
        )?;
        gauges(&mut e, "stackd_service_rollout", "1 for the state a service's rollout is in.", rollouts)?;
        gauges(&mut e, "stackd_service_autoscale_bounds", "An autoscaled service's fewest and most replicas.", bounds)?;
        gauges(
            &mut e,
            "stackd_service_autoscale_target",
            "An autoscaled service's target per replica (CPU in percent of its limit, or open connections).",
            targets,
        )?;
        gauges(
            &mut e,
            "stackd_service_autoscale_measured",
            "The autoscaler's last recorded measurement of a service, per replica, in the target's unit (absent: no metrics).",
            measured,
        )?;
        let mut family = e.encode_descriptor(
            "stackd_service_task_failures",
            "A service's tasks that failed or were rejected since it was created: each one a restart of its slot.",
            None,
            MetricType::Counter,
        )?;
        for (labels, n) in failures {
            family
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&n, None)?;
        }
        let nodes = m.nodes.iter().map(|((role, state, availability), n)| {
            (vec![("role", *role), ("state", *state), ("availability", *availability)], *n as f64)
        });
        gauges(&mut e, "stackd_nodes", "Nodes by role, state and availability.", nodes)?;
        gauge(
            &mut e,
            "stackd_snapshot_last_success_timestamp_seconds",
            "When the last scheduled cluster snapshot that succeeded (upload included) was due (0: none yet).",
            m.last_snapshot_ok as f64 / 1000.0,
        )?;
        gauge(
            &mut e,
            "stackd_snapshot_last_failure_timestamp_seconds",
            "When the last scheduled cluster snapshot that failed (or whose upload failed) was due (0: none).",
            m.last_snapshot_failed as f64 / 1000.0,
        )?;
        gauge(
            &mut e,
            "stackd_restore_generation",
            "How many times the cluster was restored from a snapshot file.",
            m.restore_generation as f64,
        )?;
        Ok(())
    }
}
