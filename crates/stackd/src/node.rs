//! Running a node: its roles (the manager and the agent) until a signal,
//! a failure or a role change, and again after each role change. The
//! library entry point of the `stackd` binary ([`run_roles`]), as
//! mini-redis has `server::run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stackd_manager::{Identity, IdentityError, Manager, ManagerConfig, ManagerError, Timings};
use stackd_tls::{ConfigError, PeerError};
use tokio_util::sync::CancellationToken;

use crate::files::{self, FilesError};
use crate::http;
use crate::role::{self, RoleError};

/// How a node runs, on every start.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Generic resources the node offers to tasks (`gpu=2`).
    pub resources: Vec<(String, u64)>,
    /// The manager role only, without the agent.
    pub no_agent: bool,
    /// Raft's timings and log compaction (managers).
    pub timings: Timings,
    /// Several nodes share this Docker engine: networks stay local.
    pub shared_engine: bool,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
    /// Autolock: the cluster's unlock key, given when the node starts.
    pub unlock_key: Option<stackd_tls::seal::UnlockKey>,
    /// `stackd init --autolock`: the new cluster starts with autolock on.
    pub autolock: bool,
    /// The plain HTTP address of `/healthz`, `/readyz` and `/metrics`
    /// (`--metrics-addr`); `None`: not served.
    pub metrics_addr: Option<String>,
    /// The HTTPS address of the status page (`--status-addr`), served while
    /// the node runs the manager role; `None`: not served.
    pub status_addr: Option<String>,
}

/// Why a node stopped other than on a signal.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node's files could not be read or written.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The node's identity file could not be written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The node's certificate names no node.
    #[error("the node's certificate (tls/node.crt): {0}")]
    Certificate(#[from] PeerError),
    /// A worker started with `--no-agent`.
    #[error("--no-agent leaves a worker nothing to do: a worker runs only the agent")]
    NoAgentWorker,
    /// The manager's address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manager role failed to start or to serve.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The agent's TLS configuration cannot be built.
    #[error("the agent's TLS configuration: {0}")]
    AgentTls(#[source] ConfigError),
    /// The gRPC server stopped by itself.
    #[error("the gRPC server stopped")]
    ServerStopped,
    /// The agent stopped by itself.
    #[error("the agent stopped")]
    AgentStopped,
    /// The agent failed.
    #[error("the agent failed: {0}")]
    Agent(#[from] stackd_agent::AgentError),
    /// The agent's task panicked or was cancelled.
    #[error("the agent task failed: {0}")]
    AgentTask(#[from] tokio::task::JoinError),
    /// Following a role change failed.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The raft data's key could not be opened.
    #[error(transparent)]
    Keys(#[from] stackd_manager::KeysError),
    /// A locked manager could not wait for its key.
    #[error(transparent)]
    Lock(#[from] stackd_manager::LockError),
}

type Result<T, E = NodeError> = std::result::Result<T, E>;

/// The address a client on this host dials to reach `listen`.
pub fn dial_addr(listen: &str) -> String {
    match listen.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => listen.to_string(),
    }
}

/// Listens on `addr`. A locked manager's server held the address a moment
/// ago (its accept task may still be closing it): `EADDRINUSE` is retried
/// for a few seconds.
async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => return Err(NodeError::Listen { addr: addr.to_string(), source }),
        }
    }
}

/// Why [`run_node`] returned.
enum Exit {
    /// A signal asked the node to stop.
    Stopped,
    /// The cluster changed the node's role; its new certificate is written.
    RoleChanged(stackd_tls::Role),
}

/// Runs the node of `data_dir` until `stop` is cancelled (SIGTERM, Ctrl-C)
/// or a failure, its roles again after each role change. `bootstrap`: the
/// first start of `stackd init`, which writes the cluster's PKI first.
pub async fn run_roles(
    data_dir: PathBuf,
    identity: Identity,
    bootstrap: bool,
    node: NodeOptions,
    stop: CancellationToken,
) -> Result<()> {
    let status = Arc::new(http::NodeStatus::default());
    // One HTTP server for the whole process: it answers across role changes.
    let http = match &node.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Listen { addr: addr.clone(), source })?;
            let (status, stop) = (status.clone(), stop.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = http::serve(listener, status, stop).await {
                    tracing::error!(error = %e, "the HTTP server of /metrics stopped");
                }
            }))
        }
        None => None,
    };
    let outcome = run_all_roles(&data_dir, &identity, bootstrap, &node, &stop, &status).await;
    if let Some(h) = http {
        h.abort();
    }
    outcome
}

/// [`run_roles`] once the HTTP server runs.
async fn run_all_roles(
    data_dir: &Path,
    identity: &Identity,
    mut bootstrap: bool,
    node: &NodeOptions,
    stop: &CancellationToken,
    status: &Arc<http::NodeStatus>,
) -> Result<()> {
    loop {
        let exit = run_node(data_dir, identity, bootstrap, node, stop, status).await;
        status.set_manager(http::ManagerPhase::None);
        status.set_agent(None);
        match exit? {
            Exit::Stopped => return Ok(()),
            Exit::RoleChanged(role) => {
                bootstrap = false;
                if role == stackd_tls::Role::Worker && node.no_agent {
                    tracing::info!("this node is a worker now; it ran with --no-agent, so it stops");
                    return Ok(());
                }
                if stop.is_cancelled() {
                    return Ok(());
                }
                tracing::info!(role = role.as_str(), "restarting the node's roles");
            }
        }
    }
}

/// Runs the node of `data_dir` until a signal, a failure or a role change:
/// the manager role if its certificate is a manager's, and the agent unless
/// `--no-agent`.
async fn run_node(
    data_dir: &Path,
    identity: &Identity,
    bootstrap: bool,
    node: &NodeOptions,
    signal: &CancellationToken,
    status: &Arc<http::NodeStatus>,
) -> Result<Exit> {
    let data_dir = data_dir.to_path_buf();
    let identity = identity.clone();
    let timings = node.timings;
    if bootstrap {
        files::init_pki(&data_dir, &identity, stackd_manager::now_ms(), node.autolock)?;
        identity.save_new(&data_dir)?;
    }
    let credentials = files::load_credentials(&data_dir)?;
    let role = credentials.identity()?.role;
    let is_manager = role == stackd_tls::Role::Manager;
    if !is_manager && node.no_agent {
        return Err(NodeError::NoAgentWorker);
    }
    if !is_manager {
        // A demoted manager's Raft state goes aside (also after a crash right
        // after its demotion): a later promotion starts from an empty log.
        files::retire_raft(&data_dir, stackd_manager::now_ms())?;
    }
    let manager = if is_manager {
        status.set_manager(http::ManagerPhase::Starting);
        let at_rest = match stackd_manager::keys::open(&data_dir, node.unlock_key.as_ref()) {
            Ok(a) => a,
            Err(e) if e.is_locked() => {
                status
                    .set_manager(http::ManagerPhase::Locked { key_id: e.locked_by().unwrap_or_default().to_string() });
                let opened = stackd_manager::serve_until_unlocked(
                    &data_dir,
                    identity.bind_addr(),
                    &credentials,
                    &e,
                    signal.clone(),
                )
                .await?;
                status.set_manager(http::ManagerPhase::Starting);
                match opened {
                    Some(a) => a,
                    None => return Ok(Exit::Stopped),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let listener = bind(identity.bind_addr()).await?;
        let status_listener = match &node.status_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let pending = files::load_bootstrap(&data_dir)?;
        let restoring = files::load_restore(&data_dir)?;
        let first = match (&pending, restoring) {
            (Some(b), _) => Some(stackd_manager::Bootstrap::New(b.security.clone())),
            (None, Some(state)) => Some(stackd_manager::Bootstrap::Restore(Box::new(state))),
            (None, None) => None,
        };
        let restore = matches!(first, Some(stackd_manager::Bootstrap::Restore(_)));
        let manager = Manager::start(ManagerConfig {
            data_dir: data_dir.clone(),
            identity: identity.clone(),
            bootstrap: first,
            credentials: credentials.clone(),
            timings,
            at_rest,
        })
        .await?;
        if restore {
            if let Err(e) = manager.initialised(Duration::from_secs(120)).await {
                manager.shutdown().await;
                return Err(e.into());
            }
            let env = files::finish_restore(&data_dir, &identity, &dial_addr(&identity.addr))?;
            tracing::info!(path = %env.display(), "cluster restored; stackctl settings written (use a token of the snapshot's cluster): `set -a; . {}; set +a`", env.display());
        }
        // Once InitCluster has committed, the admin token is valid: hand it to stackctl.
        if let Some(b) = pending {
            if !b.security.unlock_key.0.is_empty() {
                // Before the cluster exists (it is printed again on every start until then): once
                // its first command commits, the manager cannot start without it. On standard
                // output only, never in the log: it opens every manager's raft data.
                println!(
                    "autolock is on: every manager of this cluster needs this unlock key to start (`stackd unlock`, \
                     `stackctl cluster unlock`); keep it off the cluster, e.g. in a password manager:\n\n    {}\n",
                    String::from_utf8_lossy(&b.security.unlock_key.0)
                );
            }
            if let Err(e) = manager.initialised(Duration::from_secs(60)).await {
                manager.shutdown().await;
                return Err(e.into());
            }
            // A crash right here is repaired by the next start.
            let env = files::finish_bootstrap(&data_dir, &identity, &dial_addr(&identity.addr), &b.admin_token)?;
            tracing::info!(path = %env.display(), "stackctl settings written (admin token included): `set -a; . {}; set +a`", env.display());
            let key = data_dir.join(files::RECOVERY_KEY);
            tracing::warn!(path = %key.display(), "the recovery key (it opens every snapshot of this cluster) is in {}: move it off the cluster and delete this copy; `stackctl cluster recovery-key --rotate` makes a new one", key.display());
        }
        status.set_manager(http::ManagerPhase::Running(Box::new(manager.collector())));
        Some((manager, listener, status_listener))
    } else {
        if let Some(addr) = &node.status_addr {
            tracing::warn!(addr = %addr, "--status-addr is ignored: only managers serve the status page");
        }
        None
    };
    tracing::info!(node = %identity.node_id, name = %identity.name, addr = %identity.addr, role = role.as_str(), cluster = %identity.cluster_id, "stackd node running");

    // Stops the roles: on a signal, and whenever the node returns.
    let roles = signal.child_token();
    let agent = if node.no_agent {
        None
    } else {
        let agent_tls: Arc<rustls::ClientConfig> =
            stackd_tls::client_config(credentials.ca(), Some(&credentials)).map_err(NodeError::AgentTls)?;
        // This node when it is a manager; the agent adds the managers it
        // keeps in DATA_DIR/managers.json (those given by `stackd join`, then
        // those it learns), and drops the ones the cluster no longer names.
        let managers: Vec<String> = manager.as_ref().map(|_| dial_addr(&identity.addr)).into_iter().collect();
        let agent_status = Arc::new(stackd_agent::AgentStatus::default());
        status.set_agent(Some(agent_status.clone()));
        Some(tokio::spawn(stackd_agent::run_with(
            stackd_agent::AgentConfig {
                node_id: identity.node_id.clone(),
                name: identity.name.clone(),
                addr: identity.addr.clone(),
                cluster_id: identity.cluster_id.clone(),
                managers,
                tls: agent_tls,
                // The agent speaks to the engine over its Unix socket; tcp:// engines are not supported.
                docker_socket: std::env::var("DOCKER_HOST").ok().filter(|h| h.starts_with("unix://")),
                files_dir: data_dir.join("task-files"),
                generic_resources: node.resources.iter().cloned().collect(),
            },
            // The managers it learns are kept in DATA_DIR/managers.json.
            stackd_agent::AgentOptions {
                state_dir: Some(data_dir.clone()),
                shared_engine: node.shared_engine,
                vxlan_port: Some(node.vxlan_port),
                status: Some(agent_status),
            },
            roles.clone().cancelled_owned(),
        )))
    };
    let (manager, listener) = match manager {
        Some((m, l, status_listener)) => {
            if let Some(sl) = status_listener {
                let served = m.serve_status(sl, roles.clone().cancelled_owned());
                // Ends with the roles: open connections get a moment to close, not more.
                let stop = roles.clone();
                tokio::spawn(async move {
                    tokio::pin!(served);
                    let outcome = tokio::select! {
                        r = &mut served => Some(r),
                        () = stop.cancelled() => tokio::time::timeout(Duration::from_secs(2), &mut served).await.ok(),
                    };
                    if let Some(Err(e)) = outcome {
                        tracing::error!(error = %e, "the status page stopped");
                    }
                });
            }
            (Some(m), Some(l))
        }
        None => (None, None),
    };
    let role_change = role::watch(
        &data_dir,
        &identity,
        &credentials,
        role,
        manager.as_ref().map(|m| m.raft().clone()),
        manager.as_ref().map(|_| dial_addr(&identity.addr)),
    );
    let serve = async {
        match (&manager, listener) {
            (Some(m), Some(l)) => m.serve(l, roles.clone().cancelled_owned()).await,
            _ => std::future::pending().await,
        }
    };
    // Kept to stop an agent that does not stop in time: a new agent for the
    // same node must never run beside it.
    let agent_abort = agent.as_ref().map(|h| h.abort_handle());
    let agent_done = async {
        match agent {
            Some(handle) => Some(handle.await),
            None => std::future::pending().await,
        }
    };
    tokio::pin!(serve);
    tokio::pin!(agent_done);
    tokio::pin!(role_change);
    // The node runs while its roles run: an agent that cannot work (no Docker
    // engine) stops the whole process with its error, rather than leaving a
    // manager whose tasks can never start.
    let mut agent_finished = false;
    let outcome: Result<Exit> = tokio::select! {
        r = &mut serve => match r {
            Ok(()) => Err(NodeError::ServerStopped),
            Err(e) => Err(e.into()),
        },
        r = &mut agent_done => {
            agent_finished = true;
            match r {
                Some(Ok(Ok(()))) => Err(NodeError::AgentStopped),
                Some(Ok(Err(e))) => Err(e.into()),
                Some(Err(e)) => Err(e.into()),
                None => Ok(Exit::Stopped),
            }
        },
        r = &mut role_change => r.map(Exit::RoleChanged).map_err(NodeError::from),
        () = signal.cancelled() => {
            tracing::info!("shutting down");
            Ok(Exit::Stopped)
        }
    };
    roles.cancel();
    if manager.is_some() {
        // Peers keep their connections open: a graceful stop never finishes
        // by itself, so in-flight calls get a moment, not more.
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut serve).await;
    }
    if !agent_finished {
        match tokio::time::timeout(Duration::from_secs(10), &mut agent_done).await {
            Ok(Some(Ok(Err(e)))) => tracing::warn!(error = %e, "agent stopped with an error"),
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "agent task failed"),
            Err(_) => {
                tracing::warn!("the agent did not stop within 10 s: stopping it");
                if let Some(abort) = &agent_abort {
                    abort.abort();
                }
            }
            _ => {}
        }
    }
    if let Some(m) = &manager {
        m.shutdown().await;
    }
    outcome
}
