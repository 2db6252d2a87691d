//! The agent's metrics: how long its calls to the Docker engine take, by
//! operation, what its tasks use (CPU and memory from the engine's stats,
//! summed per service on this node, every [`USAGE_EVERY`]), and the routing
//! mesh's open connections per service on this node (same period).
//!
//! Labels: the operation (a closed set), stack, service and node; never a
//! task or container id.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// How often the tasks' usage is read from the engine (and reported to the
/// leader's autoscaler, whose scale-up speed depends on it): one one-shot
/// stats call per running task per period.
pub const USAGE_EVERY: Duration = Duration::from_secs(5);

/// The Docker calls' latency, by operation.
pub type DockerCalls = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

fn call_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// A new, empty family of call latencies.
pub fn docker_calls() -> DockerCalls {
    Family::new_with_constructor(call_buckets as fn() -> Histogram)
}

/// Records a call of `op` that started at `started`.
pub(crate) fn observe(calls: &DockerCalls, op: &'static str, started: Instant) {
    calls.get_or_create(&[("op", op)]).observe(started.elapsed().as_secs_f64());
}

/// A usage family: its name, its help, and the figure it reads.
type UsageFamily = (&'static str, &'static str, fn(&Usage) -> f64);

/// What one service's tasks on this node use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU, in cores (1.0: one core busy), over the last interval.
    pub cpu_cores: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Running tasks counted.
    pub tasks: u64,
}

/// One container's CPU counter at a time, to turn two reads into a rate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuSample {
    pub total_ns: u64,
    pub at: Instant,
}

/// The cores used between two samples of one container.
pub(crate) fn cores(before: CpuSample, now: CpuSample) -> f64 {
    let secs = now.at.saturating_duration_since(before.at).as_secs_f64();
    if secs <= 0.0 || now.total_ns < before.total_ns {
        return 0.0;
    }
    (now.total_ns - before.total_ns) as f64 / 1e9 / secs
}

/// The agent's figures, shared with the node's `/metrics`.
pub struct AgentMetrics {
    pub(crate) calls: DockerCalls,
    /// By (stack, service).
    pub(crate) usage: Mutex<BTreeMap<(String, String), Usage>>,
    /// The routing mesh's open connections on this node, by (stack, service).
    pub(crate) connections: Mutex<BTreeMap<(String, String), u64>>,
    /// The node's name, a label of every usage figure.
    pub(crate) node: Mutex<String>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self { calls: docker_calls(), usage: Mutex::default(), connections: Mutex::default(), node: Mutex::default() }
    }
}

impl fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Encodes the agent's families.
    pub fn encode(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let family = e.encode_descriptor(
            "stackd_docker_call_seconds",
            "How long the agent's calls to the Docker engine took, by operation.",
            None,
            self.calls.metric_type(),
        )?;
        self.calls.encode(family)?;
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rows = |f: fn(&Usage) -> f64| {
            usage
                .iter()
                .map(|((stack, service), u)| {
                    ([("stack", stack.as_str()), ("service", service.as_str()), ("node", node.as_str())], f(u))
                })
                .collect::<Vec<_>>()
        };
        let families: [UsageFamily; 3] = [
            ("stackd_task_cpu_cores", "CPU a service's running tasks on this node use, in cores.", |u| u.cpu_cores),
            ("stackd_task_memory_bytes", "Memory a service's running tasks on this node use.", |u| {
                u.memory_bytes as f64
            }),
            ("stackd_task_running", "A service's running tasks on this node, as the engine sees them.", |u| {
                u.tasks as f64
            }),
        ];
        for (name, help, f) in families {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, v) in rows(f) {
                family.encode_family(&labels)?.encode_gauge(&v)?;
            }
        }
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut family = e.encode_descriptor(
            "stackd_agent_service_connections",
            "Connections the routing mesh holds open on this node to a service's tasks.",
            None,
            MetricType::Gauge,
        )?;
        for ((stack, service), open) in &connections {
            let labels = [("stack", stack.as_str()), ("service", service.as_str()), ("node", node.as_str())];
            family.encode_family(&labels)?.encode_gauge(&i64::try_from(*open).unwrap_or(i64::MAX))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_the_counter_over_the_interval() {
        let t = Instant::now();
        let a = CpuSample { total_ns: 1_000_000_000, at: t };
        let b = CpuSample { total_ns: 3_000_000_000, at: t + Duration::from_secs(4) };
        assert!((cores(a, b) - 0.5).abs() < 1e-9);
        // A restarted counter or no time: nothing, never a negative rate.
        assert_eq!(cores(b, CpuSample { total_ns: 0, at: t + Duration::from_secs(8) }), 0.0);
        assert_eq!(cores(a, a), 0.0);
    }
}
