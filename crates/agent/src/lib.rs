//! stackd's agent role: it keeps a dispatcher session with the managers, and
//! runs the tasks assigned to its node as Docker containers.
//!
//! [`run`] connects to the Docker engine once, then holds a session with one
//! of the managers (reconnecting with backoff, trying the next manager each
//! time), receives the node's task set, runs one state machine per task
//! against Docker, and reports every state change back. When its shutdown
//! future resolves it stops talking to the manager and returns, leaving the
//! containers running: a restarted agent finds them by their labels and
//! adopts them.
//!
//! The agent never restarts a container itself (Docker restart policy `no`):
//! the manager's orchestrators replace failed tasks with new ones.
//!
//! # Layout
//!
//! - `lib.rs`: [`AgentConfig`], [`run`], [`AgentError`].
//! - `session.rs`: the dispatcher session — connect, receive assignments,
//!   heartbeat, batch and resend status reports, back off and rotate managers,
//!   follow the leader a refusing manager names; send each usage report to
//!   the leader on the session's connection (`ReportUsage`, never resent).
//! - `usage.rs`: every 5 s, what the running tasks use (one one-shot stats
//!   call each: CPU cores over the period, memory) and the routing mesh's
//!   open connections per service, into the agent's metrics and the report
//!   the session sends to the leader for its autoscaler.
//! - `conntrack.rs`: the mesh's connections per service from the kernel's
//!   connection tracking table (a pure line parser and counter) and the
//!   PROXY protocol hops' counts.
//! - `logs.rs`: log subscriptions (`stackctl logs`): one job per
//!   subscription reads the selected containers' logs and publishes them to
//!   the leader on a connection of its own, in bounded batches.
//! - `managers.rs`: the list of managers to try, merged from session
//!   messages and kept in `STATE_DIR/managers.json`.
//! - [`worker`]: the node's task set; assignments in, one runner per task,
//!   removal of the containers of tasks that leave, garbage collection.
//! - `runner.rs`: one task's runner, driving the pure decision core of
//!   `runner/machine.rs` (phases, events, transitions) against Docker.
//! - `shared.rs`: what the worker shares with its runners (network and
//!   volume specs) and the status reports runners send; below both.
//! - [`docker`]: the executor, the only module that speaks bollard;
//!   `docker/spec.rs` builds a container's create request from a task,
//!   `docker/ports.rs` finds the containers that hold a host port,
//!   `docker/images.rs` resolves tags and pulls, `docker/networks.rs`
//!   networks and volumes, `docker/error.rs` the executor's errors.
//! - [`dataplane`]: the node's side of the cluster's networks: VXLAN
//!   devices and static forwarding entries from the network view the
//!   managers send (pure `plan`), VIPs, rules, mesh routes and PROXY hops
//!   applied each pass; `dataplane/kernel.rs` reads and changes the kernel
//!   (`ip`, `bridge`, `iptables-restore`, `conntrack` commands).
//! - [`rules`]: virtual addresses and the routing mesh as iptables rules,
//!   mesh routes and VIPs on the bridges (pure `plan`; applied by `dataplane`).
//! - [`files`]: the files of tasks' configs and secrets (secrets on a tmpfs),
//!   given to containers as read-only bind mounts.
//! - [`dns`]: the node's DNS server (service names on each network's
//!   gateway, answered by the asker's source address; the rest forwarded).
//! - [`proxy`]: the routing mesh's opt-in PROXY protocol v2 hop, a
//!   userspace TCP proxy for one published port that tells the backend the
//!   client's address.

mod conntrack;
pub mod dataplane;
pub mod dns;
pub mod docker;
pub mod files;
mod logs;
mod managers;
pub mod metrics;
pub mod proxy;
pub mod rules;
mod runner;
mod session;
mod shared;
mod usage;
pub mod worker;

use std::future::Future;

use stackd_proto::v1;
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use docker::DockerError;
pub use session::SessionError;

pub use managers::{MANAGERS_FILE, save_managers, saved_managers};

use docker::{ContainerContext, EngineInfo, Executor};
use managers::Managers;
use session::Session;
use worker::Worker;

/// How the agent role is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node's id (the `io.stackd.node` label of its containers).
    pub node_id: String,
    /// This node's name.
    pub name: String,
    /// This node's advertised address.
    pub addr: String,
    /// The cluster's id (the `io.stackd.cluster` label of its containers).
    pub cluster_id: String,
    /// Addresses of the managers' dispatchers, `host:port` (or
    /// `https://host:port`): TLS only.
    pub managers: Vec<String>,
    /// The TLS client configuration: the cluster's CA, and the node's
    /// certificate as client certificate (the dispatcher requires it).
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    /// The Docker socket; `None`: `$DOCKER_HOST` (unix://) or `/var/run/docker.sock`.
    pub docker_socket: Option<String>,
    /// Where the files of tasks' configs and secrets are written (a tmpfs is
    /// mounted there); normally `DATA_DIR/task-files`.
    pub files_dir: std::path::PathBuf,
    /// Generic resources the node offers (`gpu` → 2), from `stackd --resource`.
    pub generic_resources: std::collections::BTreeMap<String, u64>,
}

/// Settings of the agent beyond [`AgentConfig`].
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// Where the agent keeps its state across restarts (normally the data
    /// dir): the managers it learned, in [`MANAGERS_FILE`], read at start
    /// (with [`AgentConfig::managers`]) and rewritten when the list changes.
    /// `None`: nothing is kept.
    pub state_dir: Option<std::path::PathBuf>,
    /// Several nodes share this node's Docker engine (test setups): the
    /// cluster's networks stay local bridges, as Docker makes them, and do
    /// not span nodes. Otherwise each network spans the nodes that run its
    /// tasks, over VXLAN.
    pub shared_engine: bool,
    /// The VXLAN UDP port ([`dataplane::DEFAULT_VXLAN_PORT`] when `None`).
    pub vxlan_port: Option<u16>,
    /// Where the agent says how it is (the node's `/readyz`).
    pub status: Option<std::sync::Arc<AgentStatus>>,
}

/// How the agent is, for the node's `/readyz`: a session with a manager
/// open, and the Docker engine answering.
#[derive(Debug, Default)]
pub struct AgentStatus {
    session: std::sync::atomic::AtomicBool,
    engine: std::sync::atomic::AtomicBool,
    metrics: metrics::AgentMetrics,
}

impl AgentStatus {
    /// Whether a dispatcher session is open.
    pub fn session_open(&self) -> bool {
        self.session.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the engine answered its last ping (every [`PING_EVERY`]).
    pub fn engine_reachable(&self) -> bool {
        self.engine.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The agent's metrics (Docker calls, the tasks' usage).
    pub fn metrics(&self) -> &metrics::AgentMetrics {
        &self.metrics
    }

    pub(crate) fn set_session(&self, open: bool) {
        self.session.store(open, std::sync::atomic::Ordering::Relaxed);
    }

    fn set_engine(&self, ok: bool) {
        self.engine.store(ok, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How often the agent pings its engine for [`AgentStatus`].
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// A manager endpoint is not a valid URI.
    #[error(transparent)]
    Manager(#[from] SessionError),
    /// The Docker engine cannot be reached.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// Runs the agent role until `shutdown` resolves, keeping no state
/// ([`run_with`] with the default options).
///
/// Fails only at start: on an unusable configuration, or when the Docker
/// engine cannot be reached. Managers that cannot be reached are retried for
/// as long as the agent runs.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
    run_with(config, AgentOptions::default(), shutdown).await
}

/// Runs the agent role until `shutdown` resolves, with `options`.
///
/// Fails only at start, as [`run`] does.
pub async fn run_with(
    config: AgentConfig,
    options: AgentOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    if config.node_id.is_empty() {
        return Err(AgentError::Config("the node id is empty".into()));
    }
    if config.cluster_id.is_empty() {
        return Err(AgentError::Config("the cluster id is empty".into()));
    }
    for m in &config.managers {
        session::check_endpoint(m, &config.tls)?;
    }
    // The configured managers, then those the state dir keeps.
    let managers = Managers::new(config.managers.clone(), options.state_dir.as_deref(), config.tls.clone());
    if managers.list().is_empty() {
        return Err(AgentError::Config(
            "no manager endpoint: none configured, and none kept in STATE_DIR/managers.json".into(),
        ));
    }

    let exec = Executor::connect(config.docker_socket.as_deref()).await?;
    let engine = exec.engine_info().await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the engine's info; reporting no resources");
        EngineInfo::default()
    });
    info!(
        node = %config.node_id,
        docker = %exec.endpoint(),
        engine = %engine.version,
        managers = ?config.managers,
        "agent starting"
    );

    let description = v1::NodeDescription {
        node_id: config.node_id.clone(),
        name: config.name.clone(),
        addr: config.addr.clone(),
        resources: Some(v1::Resources {
            nano_cpus: engine.nano_cpus,
            memory_bytes: engine.memory_bytes,
            generic: config.generic_resources.clone().into_iter().collect(),
        }),
        engine_version: engine.version,
        role: v1::NodeRole::Manager.into(),
        engine: Some((&engine.description).into()),
    };
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let dataplane = if options.shared_engine {
        info!("this engine is shared with other nodes: the cluster's networks stay local to it");
        None
    } else {
        Some(dataplane_settings(&config.addr, options.vxlan_port).await?)
    };
    let ctx = ContainerContext {
        cluster_id: config.cluster_id,
        node_id: config.node_id,
        overlay_mtu: dataplane.as_ref().map(|s| s.mtu),
    };
    let files = files::TaskFiles::open(config.files_dir.clone());
    let status = options.status.unwrap_or_default();
    status.set_engine(true);
    *status.metrics.node.lock().unwrap_or_else(|p| p.into_inner()) = config.name.clone();
    let exec = exec.with_calls(status.metrics.calls.clone());
    // Stopped with the agent, however it stops (an abort included).
    let _pinger = AbortOnDrop(tokio::spawn(ping_engine(exec.clone(), status.clone())));
    let worker = Worker::new(exec.clone(), ctx.clone(), files, reports_tx, dataplane.map(dataplane::DataPlane::new));
    let (usage_tx, usage_rx) = tokio::sync::watch::channel(None);
    let _usage = AbortOnDrop(tokio::spawn(usage::run(exec, ctx, worker.networks(), status.clone(), usage_tx)));
    Session::new(description, managers, config.tls, worker, reports_rx, status.clone(), usage_rx).run(shutdown).await;
    status.set_session(false);
    Ok(())
}

/// A task aborted when this is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pings the engine every [`PING_EVERY`] and records whether it answered.
async fn ping_engine(exec: Executor, status: std::sync::Arc<AgentStatus>) {
    let mut was = true;
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let ok = tokio::time::timeout(PING_EVERY, exec.ping()).await.is_ok_and(|r| r.is_ok());
        if ok != was {
            if ok {
                info!("the Docker engine answers again");
            } else {
                warn!(docker = %exec.endpoint(), "the Docker engine does not answer its ping");
            }
            was = ok;
        }
        status.set_engine(ok);
    }
}

/// The data plane's settings: this node's address (its advertised one),
/// the VXLAN port, and the containers' MTU from the MTU of the interface
/// that holds the address (1500 for loopback: a single node).
async fn dataplane_settings(addr: &str, port: Option<u16>) -> Result<dataplane::Settings, AgentError> {
    let node_ip = stackd_core::net::view::node_ip(addr).ok_or_else(|| {
        AgentError::Config(format!(
            "the node's address {addr} is not an IPv4 address: the cluster's networks need one to reach the other nodes (give --advertise-addr IP:PORT)"
        ))
    })?;
    let underlay = match dataplane::mtu_of(node_ip).await {
        Ok(Some(mtu)) if !node_ip.is_loopback() => mtu.min(1500),
        Ok(_) => 1500,
        Err(e) => {
            warn!(error = %e, "cannot read the interfaces' MTU: assuming 1500");
            1500
        }
    };
    if stackd_core::net::DEFAULT_POOL.contains(node_ip) {
        return Err(AgentError::Config(format!(
            "the node's address {node_ip} is inside the cluster's address pool {}: the stack networks would hide the LAN; this node cannot run tasks on them",
            stackd_core::net::DEFAULT_POOL
        )));
    }
    let mtu = underlay - dataplane::VXLAN_OVERHEAD;
    let port = port.unwrap_or(dataplane::DEFAULT_VXLAN_PORT);
    info!(%node_ip, port, mtu, "the cluster's networks span nodes over VXLAN");
    Ok(dataplane::Settings { node_ip, port, mtu })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig {
            node_id: "n1".into(),
            name: "n1".into(),
            addr: "127.0.0.1:7946".into(),
            cluster_id: "c1".into(),
            managers: vec!["127.0.0.1:7946".into()],
            tls: stackd_tls::testing::TestPki::new().client_config(Some(("n1", stackd_tls::Role::Manager))),
            docker_socket: Some("/nonexistent/docker.sock".into()),
            files_dir: std::env::temp_dir().join("stackd-agent-files-n1"),
            generic_resources: Default::default(),
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_is_send() {
        let fut = run(config(), std::future::pending());
        assert_send(&fut);
    }

    #[tokio::test]
    async fn bad_configuration_is_refused() {
        let err = run(AgentConfig { managers: vec![], ..config() }, async {}).await;
        assert!(matches!(err, Err(AgentError::Config(_))));
        let err = run(AgentConfig { node_id: String::new(), ..config() }, async {}).await;
        assert!(matches!(err, Err(AgentError::Config(_))));
        let err = run(AgentConfig { managers: vec!["::bad".into()], ..config() }, async {}).await;
        assert!(matches!(err, Err(AgentError::Manager(SessionError::InvalidEndpoint { .. }))));
        let err = run(AgentConfig { managers: vec!["http://127.0.0.1:7946".into()], ..config() }, async {}).await;
        assert!(matches!(err, Err(AgentError::Manager(SessionError::InvalidEndpoint { .. }))));
    }

    #[tokio::test]
    async fn unreachable_docker_is_a_clear_error() {
        let err = run(config(), async {}).await;
        let Err(e @ AgentError::Docker(_)) = err else { panic!("expected a Docker error, got {err:?}") };
        let msg = e.to_string();
        assert!(msg.starts_with("cannot reach the Docker engine at /nonexistent/docker.sock: "), "{msg}");
    }
}
