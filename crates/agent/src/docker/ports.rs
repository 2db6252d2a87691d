//! Who holds a host port on this engine: a task that publishes a port on its
//! node waits for a container of the cluster that still holds it (one in its
//! stop grace period), and fails at once for one that stackd does not manage.

use bollard::models::PortSummaryTypeEnum;
use bollard::query_parameters::ListContainersOptions;
use stackd_core::model::Protocol;

use super::{DockerError, Executor, LABEL_CLUSTER, LABEL_TASK, engine};

/// A running container that publishes a port a task wants on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortHolder {
    /// The port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The container's name.
    pub container: String,
    /// The task it runs, for a container of a stackd cluster.
    pub task: Option<String>,
}

impl PortHolder {
    /// Whether stackd manages the holder (it runs a task of a cluster): it
    /// frees the port when its task stops.
    pub fn managed(&self) -> bool {
        self.task.is_some()
    }
}

impl std::fmt::Display for PortHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host port {}/{} is held by container {}", self.port, self.protocol.as_str(), self.container)?;
        match &self.task {
            Some(task) => write!(f, " (task {})", stackd_core::model::prefix(task, 12)),
            None => f.write_str(", which stackd does not manage"),
        }
    }
}

fn same_protocol(typ: Option<PortSummaryTypeEnum>, protocol: Protocol) -> bool {
    matches!(
        (typ, protocol),
        (Some(PortSummaryTypeEnum::TCP) | None, Protocol::Tcp)
            | (Some(PortSummaryTypeEnum::UDP), Protocol::Udp)
            | (Some(PortSummaryTypeEnum::SCTP), Protocol::Sctp)
    )
}

impl Executor {
    /// The running containers, other than `except` (a container id), that
    /// publish one of `ports` on the host.
    pub async fn port_holders(&self, ports: &[(u16, Protocol)], except: &str) -> Result<Vec<PortHolder>, DockerError> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let opts = ListContainersOptions { all: false, ..Default::default() };
        let list = self.docker.list_containers(Some(opts)).await.map_err(|e| engine("list containers", e))?;
        let mut out = Vec::new();
        for c in list {
            if c.id.as_deref() == Some(except) {
                continue;
            }
            let labels = c.labels.unwrap_or_default();
            let task = labels.contains_key(LABEL_CLUSTER).then(|| labels.get(LABEL_TASK).cloned().unwrap_or_default());
            let container = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .or(c.id)
                .unwrap_or_default();
            for p in c.ports.unwrap_or_default() {
                let Some(&(port, protocol)) = ports
                    .iter()
                    .find(|(port, protocol)| p.public_port == Some(*port) && same_protocol(p.typ, *protocol))
                else {
                    continue;
                };
                if !out.iter().any(|h: &PortHolder| h.port == port && h.protocol == protocol) {
                    out.push(PortHolder { port, protocol, container: container.clone(), task: task.clone() });
                }
            }
        }
        Ok(out)
    }
}
