//! The node's plain HTTP address (`--metrics-addr`, off by default): what
//! systemd, a load balancer and Prometheus ask, and nothing secret.
//!
//! ```text
//!  GET /healthz  200 "ok": the process runs
//!  GET /readyz   200 when every role of the node is ready, 503 otherwise;
//!                the body says each role's state, one line each:
//!                  manager: ready (leader 0123…) | locked (autolock) … | starting | no leader known
//!                  agent: ready | no session with a manager | the Docker engine does not answer
//!  GET /metrics  Prometheus' text format (prometheus-client): the manager's
//!                collector (`stackd_manager::metrics`) and the node's own
//! ```
//!
//! The roles change while the process runs (a locked manager, a role
//! change): [`NodeStatus`] is what the node says now, set by `node.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use stackd_manager::metrics::ManagerCollector;

/// Where the manager role of the node is.
#[derive(Clone, Debug, Default)]
pub enum ManagerPhase {
    /// The node is not a manager.
    #[default]
    None,
    /// Waiting for the unlock key (autolock).
    Locked {
        /// The id of the key it waits for.
        key_id: String,
    },
    /// Opening its Raft data, joining the others.
    Starting,
    /// Running.
    Running(Box<ManagerCollector>),
}

/// What the node says about itself now.
#[derive(Debug, Default)]
pub struct NodeStatus {
    manager: RwLock<ManagerPhase>,
    agent: RwLock<Option<Arc<stackd_agent::AgentStatus>>>,
}

impl NodeStatus {
    /// Sets where the manager role is.
    pub fn set_manager(&self, phase: ManagerPhase) {
        *self.manager.write().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// Sets the agent's status (`None`: the node runs no agent).
    pub fn set_agent(&self, agent: Option<Arc<stackd_agent::AgentStatus>>) {
        *self.agent.write().unwrap_or_else(|p| p.into_inner()) = agent;
    }

    fn manager(&self) -> ManagerPhase {
        self.manager.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn agent(&self) -> Option<Arc<stackd_agent::AgentStatus>> {
        self.agent.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether every role is ready, and a line per role saying how it is.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        let mut ready = true;
        let mut lines = Vec::new();
        match self.manager() {
            ManagerPhase::None => {}
            ManagerPhase::Locked { key_id } => {
                ready = false;
                lines.push(format!(
                    "manager: locked (autolock): waiting for the cluster's unlock key (key id {key_id}): \
                     `stackctl cluster unlock` or `stackd unlock`"
                ));
            }
            ManagerPhase::Starting => {
                ready = false;
                lines.push("manager: starting".into());
            }
            ManagerPhase::Running(m) => match m.leader() {
                Some(leader) => lines.push(format!("manager: ready (leader {leader:016x})")),
                None => {
                    ready = false;
                    lines.push("manager: no leader known (no quorum?)".into());
                }
            },
        }
        if let Some(agent) = self.agent() {
            if !agent.engine_reachable() {
                ready = false;
                lines.push("agent: the Docker engine does not answer".into());
            } else if !agent.session_open() {
                ready = false;
                lines.push("agent: no session with a manager".into());
            } else {
                lines.push("agent: ready".into());
            }
        }
        (ready, lines)
    }
}

/// Every metric of the node, on each scrape.
#[derive(Debug)]
struct NodeCollector(Arc<NodeStatus>);

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let (ready, _) = self.0.readiness();
        let v = if ready { 1.0 } else { 0.0 };
        e.encode_descriptor(
            "stackd_node_ready",
            "1 when every role of the node is ready (what /readyz says).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?
        .encode_gauge(&v)?;
        let locked = if matches!(self.0.manager(), ManagerPhase::Locked { .. }) { 1.0 } else { 0.0 };
        e.encode_descriptor(
            "stackd_manager_locked",
            "1 while the manager waits for the cluster's unlock key (autolock).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?
        .encode_gauge(&locked)?;
        if let Some(agent) = self.0.agent() {
            agent.metrics().encode(&mut e)?;
        }
        if let ManagerPhase::Running(m) = self.0.manager() {
            m.encode(e)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Served {
    status: Arc<NodeStatus>,
    registry: Arc<Registry>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Served>) -> impl IntoResponse {
    let (ready, lines) = s.status.readiness();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, format!("{}\n", lines.join("\n")))
}

/// OpenMetrics text as Prometheus' classic text format (0.0.4), for the
/// clients that do not ask for OpenMetrics (`promtool`, `curl`): a counter's
/// family is named as its samples are, `…_total`; `# EOF` goes.
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            continue;
        }
        // `# HELP x …` then `# TYPE x counter`: both name `x_total`.
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some(next) = lines.peek()
            && let Some(name) = next.strip_prefix("# TYPE ").and_then(|t| t.strip_suffix(" counter"))
            && rest.starts_with(&format!("{name} "))
        {
            out.push_str(&format!("# HELP {name}_total {}\n", &rest[name.len() + 1..]));
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            lines.next();
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

async fn metrics(State(s): State<Served>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let mut body = String::new();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) if openmetrics => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        Ok(()) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], classic_text(&body))
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the metrics failed: {e}\n"),
        ),
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<NodeStatus>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector(status.clone())));
    let served = Served { status, registry: Arc::new(registry) };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(served);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_in_the_classic_format() {
        let om = "# HELP up Up.\n# TYPE up gauge\nup 1.0\n# HELP x_downs Downs.\n# TYPE x_downs counter\nx_downs_total 3\n# EOF\n";
        let classic = classic_text(om);
        assert_eq!(
            classic,
            "# HELP up Up.\n# TYPE up gauge\nup 1.0\n# HELP x_downs_total Downs.\n# TYPE x_downs_total counter\nx_downs_total 3\n"
        );
    }
}
