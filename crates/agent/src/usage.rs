//! What the node's tasks use and what its routing mesh holds, every
//! [`USAGE_EVERY`]: for the agent's `/metrics` and for the leader's
//! autoscaler (`ReportUsage`, sent by the session).
//!
//! ```text
//!  every USAGE_EVERY ──► list the node's containers ──► one one-shot stats
//!                         call per running task (USAGE_READS at a time)
//!                    ──► per task: CPU cores since its last reading, memory
//!                    ──► per mesh service: conntrack (conntrack.rs) + PROXY hops
//!                    ──► metrics (per service) and the latest Report (watch)
//!                                                    │
//!  session (on its open connection to the leader) ◄──┘ ReportUsage
//! ```
//!
//! The cost: one one-shot stats call per running task per period (the
//! engine answers from the cgroup at once: a few ms each), and one read of
//! the node's connection tracking table while the mesh publishes a TCP port
//! (it grows with the connections the node tracks). A task's first reading
//! gives no rate: it is not reported until its second, so that a new task
//! never pulls a service's average down with a made-up 0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use stackd_proto::v1;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::AgentStatus;
use crate::conntrack::{self, Mesh};
use crate::docker::{ContainerContext, Executor, ManagedContainer};
use crate::metrics::{self, CpuSample, USAGE_EVERY};
use crate::shared::Networks;

/// Stats read from the engine at once.
const USAGE_READS: usize = 8;

/// One period's figures, as the session sends them to the leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Report {
    /// The running tasks read twice, with their CPU over the period.
    pub tasks: Vec<v1::TaskUsage>,
    /// Every service the node publishes through the mesh over TCP (0 when
    /// idle); none when the node cannot count.
    pub connections: Vec<v1::ServiceConnections>,
}

/// The latest report, for the session.
pub(crate) type Reports = watch::Receiver<Option<Arc<Report>>>;

/// One container's reading.
struct Reading {
    container: ManagedContainer,
    cpu: CpuSample,
    memory: u64,
}

/// The per-task part of a period: each task with a rate (read in the last
/// period too), and the per-service sums for the metrics (a task read once
/// counts with 0 CPU there, as it always did).
fn tally(
    readings: &[Reading],
    last: &BTreeMap<String, CpuSample>,
) -> (Vec<v1::TaskUsage>, BTreeMap<(String, String), metrics::Usage>) {
    let mut tasks = Vec::new();
    let mut per_service: BTreeMap<(String, String), metrics::Usage> = BTreeMap::new();
    for r in readings {
        let c = &r.container;
        let rate = last.get(&c.id).map(|before| metrics::cores(*before, r.cpu));
        let short = c.service.strip_prefix(&format!("{}_", c.stack)).unwrap_or(&c.service).to_string();
        let u = per_service.entry((c.stack.clone(), short)).or_default();
        u.cpu_cores += rate.unwrap_or(0.0);
        u.memory_bytes += r.memory;
        u.tasks += 1;
        if let Some(cpu_cores) = rate
            && !c.task_id.is_empty()
        {
            tasks.push(v1::TaskUsage { task_id: c.task_id.clone(), cpu_cores, memory_bytes: r.memory });
        }
    }
    (tasks, per_service)
}

/// (stack, short name) of a service's full name: as the view's services
/// name it, else split at the first `_`.
fn labels(view: &stackd_core::net::NodeView, full: &str) -> (String, String) {
    for s in &view.services {
        if full.strip_prefix(s.stack.as_str()).and_then(|r| r.strip_prefix('_')) == Some(s.name.as_str()) {
            return (s.stack.clone(), s.name.clone());
        }
    }
    match full.split_once('_') {
        Some((stack, name)) => (stack.to_string(), name.to_string()),
        None => (String::new(), full.to_string()),
    }
}

/// The mesh's connections per service now; `None` when they cannot be
/// counted (said once at warn, through `warned`).
async fn connections(
    networks: &Networks,
    view: &stackd_core::net::NodeView,
    warned: &mut bool,
) -> Option<BTreeMap<String, u64>> {
    let mesh = Arc::new(Mesh::new(view));
    if mesh.is_empty() {
        return Some(BTreeMap::new());
    }
    let mut counts = if mesh.needs_table() {
        let m = mesh.clone();
        let read = tokio::task::spawn_blocking(move || {
            std::fs::File::open(conntrack::TABLE).and_then(|f| m.count(std::io::BufReader::new(f)))
        })
        .await;
        match read {
            Ok(Ok(counts)) => counts,
            Ok(Err(e)) => {
                if !std::mem::replace(warned, true) {
                    warn!(
                        table = conntrack::TABLE,
                        error = %e,
                        "cannot read the kernel's connection tracking table: the routing mesh's connections are not \
                         reported (an autoscaler on connections will say it has no metrics)"
                    );
                }
                return None;
            }
            Err(e) => {
                debug!(error = %e, "counting the mesh's connections was interrupted");
                return None;
            }
        }
    } else {
        mesh.zero()
    };
    mesh.add_proxied(&mut counts, &networks.proxied_open());
    Some(counts)
}

/// Reads what the running tasks use and what the mesh holds every
/// [`USAGE_EVERY`], into the agent's metrics and `reports`.
pub(crate) async fn run(
    exec: Executor,
    ctx: ContainerContext,
    networks: Arc<Networks>,
    status: Arc<AgentStatus>,
    reports: watch::Sender<Option<Arc<Report>>>,
) {
    let mut last: BTreeMap<String, CpuSample> = BTreeMap::new();
    let mut warned = false;
    loop {
        tokio::time::sleep(USAGE_EVERY).await;
        let Ok(containers) = exec.list_managed(&ctx).await else { continue };
        // A read takes the engine a few ms: several at once all the same.
        let running: Vec<_> = containers.into_iter().filter(|c| c.running && !c.service.is_empty()).collect();
        let readings: Vec<Reading> = futures_util::stream::iter(running)
            .map(|container| {
                let exec = exec.clone();
                async move {
                    let read = exec.usage(&container.id).await;
                    (container, read, Instant::now())
                }
            })
            .buffer_unordered(USAGE_READS)
            .filter_map(|(container, read, at)| async move {
                let (total_ns, memory) = read.ok()?;
                Some(Reading { container, cpu: CpuSample { total_ns, at }, memory })
            })
            .collect()
            .await;
        let (tasks, per_service) = tally(&readings, &last);
        last = readings.iter().map(|r| (r.container.id.clone(), r.cpu)).collect();
        let view = networks.view();
        let open = connections(&networks, &view, &mut warned).await;
        let by_labels: BTreeMap<(String, String), u64> =
            open.iter().flatten().map(|(service, n)| (labels(&view, service), *n)).collect();
        *status.metrics.usage.lock().unwrap_or_else(|p| p.into_inner()) = per_service;
        *status.metrics.connections.lock().unwrap_or_else(|p| p.into_inner()) = by_labels;
        let connections =
            open.into_iter().flatten().map(|(service, open)| v1::ServiceConnections { service, open }).collect();
        reports.send_replace(Some(Arc::new(Report { tasks, connections })));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reading(id: &str, task: &str, ns: u64, at: Instant) -> Reading {
        Reading {
            container: ManagedContainer {
                id: id.into(),
                task_id: task.into(),
                running: true,
                stack: "shop".into(),
                service: "shop_web".into(),
            },
            cpu: CpuSample { total_ns: ns, at },
            memory: 100,
        }
    }

    #[test]
    fn only_tasks_read_twice_are_reported() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let first = [reading("c1", "t1", 1_000_000_000, t0)];
        let (tasks, _) = tally(&first, &BTreeMap::new());
        assert!(tasks.is_empty(), "a first reading has no rate");
        let last: BTreeMap<String, CpuSample> = first.iter().map(|r| (r.container.id.clone(), r.cpu)).collect();
        let second = [reading("c1", "t1", 3_500_000_000, t1), reading("c2", "t2", 9, t1), reading("c3", "", 9, t1)];
        let (tasks, per_service) = tally(&second, &last);
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[0].task_id, "t1");
        assert!((tasks[0].cpu_cores - 0.5).abs() < 1e-9);
        assert_eq!(tasks[0].memory_bytes, 100);
        let web = per_service.get(&("shop".to_string(), "web".to_string())).copied().unwrap_or_default();
        assert_eq!((web.tasks, web.memory_bytes), (3, 300));
        assert!((web.cpu_cores - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_mesh_service_is_labelled_by_its_stack() {
        let mut view = stackd_core::net::NodeView::default();
        view.services.push(stackd_core::net::ServiceView {
            id: "s1".into(),
            stack: "my_shop".into(),
            name: "web".into(),
            endpoint_mode: stackd_core::model::EndpointMode::Vip,
            networks: vec![],
        });
        assert_eq!(labels(&view, "my_shop_web"), ("my_shop".to_string(), "web".to_string()));
        assert_eq!(labels(&view, "blog_api"), ("blog".to_string(), "api".to_string()));
    }
}
