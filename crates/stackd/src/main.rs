//! `stackd`: the daemon. One process runs the manager role and the agent role
//! of a node, serving every gRPC service on one TCP address.
//!
//! # Layout
//!
//! - `main.rs`: argument parsing, tracing, signals, and running the node's
//!   roles; the work is in `stackd-manager` and `stackd-agent`. A manager
//!   node runs both roles (the agent unless `--no-agent`), a worker only the
//!   agent; the role is the one in the node's certificate.
//! - `join.rs`: `stackd join`, entering a cluster with a join token.
//! - `role.rs`: the node follows the role the cluster gives it (promote,
//!   demote): a new certificate, then its roles restart.
//! - `files.rs`: the node's security files (`tls/`, `stackctl.env`) and the
//!   managers' addresses.

mod files;
mod join;
mod role;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use stackd_manager::{Identity, Manager, ManagerConfig, Timings};

/// stackd: a lightweight container orchestrator for stacks of compose files.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new cluster with this node as its first manager, and run it.
    Init {
        /// Where the node keeps its state.
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        /// The address all of the node's gRPC services listen on.
        #[arg(long, default_value = "127.0.0.1:4280")]
        listen: String,
        #[command(flatten)]
        naming: Naming,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Join an existing cluster with a join token, and run. The token
    /// (`stackctl cluster join-token manager|worker`) decides the role.
    Join {
        /// The address of a manager of the cluster (IP:PORT).
        manager: String,
        /// The join token, STK-1-<CA digest>-<secret>.
        #[arg(long, env = "STACKD_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the node keeps its state (must not hold a node yet).
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        /// The address the node's gRPC services listen on; required to join
        /// as a manager.
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        naming: Naming,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run an existing node from its data dir.
    Run {
        /// Where the node keeps its state.
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// How a new node is known to the others (`init`, `join`).
#[derive(clap::Args)]
struct Naming {
    /// The address other nodes reach this one at, when it is not `--listen`
    /// (which may be 0.0.0.0:PORT): managers and agents dial it.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The node's name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
}

/// What the node offers, given each time it starts.
#[derive(clap::Args)]
struct NodeArgs {
    /// A generic resource this node offers to tasks, as KIND=COUNT (`gpu=2`);
    /// repeatable. Services reserve them with `deploy.resources.reservations.generic_resources`.
    #[arg(long = "resource", value_name = "KIND=COUNT", value_parser = parse_resource, env = "STACKD_RESOURCES", value_delimiter = ',')]
    resources: Vec<(String, u64)>,
    /// Run the manager role only, without the agent: the node runs no tasks
    /// and needs no Docker engine (managers only).
    #[arg(long, env = "STACKD_NO_AGENT")]
    no_agent: bool,
    #[command(flatten)]
    raft: RaftArgs,
}

/// Raft's timing and log compaction (managers). All managers of a cluster
/// should use the same values.
#[derive(clap::Args)]
struct RaftArgs {
    /// The leader's heartbeat period, in milliseconds.
    #[arg(long, env = "STACKD_RAFT_HEARTBEAT_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..))]
    raft_heartbeat_ms: u64,
    /// The lower end of the election timeout, in milliseconds. A follower
    /// campaigns after `--raft-election-max-ms` (the leader's lease) plus a
    /// timeout between the two without hearing from a leader.
    #[arg(long, env = "STACKD_RAFT_ELECTION_MIN_MS", default_value_t = 500)]
    raft_election_min_ms: u64,
    /// The upper end of the election timeout, in milliseconds.
    #[arg(long, env = "STACKD_RAFT_ELECTION_MAX_MS", default_value_t = 1000)]
    raft_election_max_ms: u64,
    /// Take a snapshot of the state after this many log entries (0: never).
    #[arg(long, env = "STACKD_RAFT_SNAPSHOT_EVERY", default_value_t = 5000)]
    raft_snapshot_every: u64,
    /// Log entries kept behind a snapshot; a manager further behind catches
    /// up by receiving the snapshot.
    #[arg(long, env = "STACKD_RAFT_KEEP_LOGS", default_value_t = 500)]
    raft_keep_logs: u64,
}

impl RaftArgs {
    fn timings(&self) -> Result<Timings> {
        let (hb, min, max) = (self.raft_heartbeat_ms, self.raft_election_min_ms, self.raft_election_max_ms);
        if !(hb < min && min < max) {
            bail!(
                "Raft timings need --raft-heartbeat-ms < --raft-election-min-ms < --raft-election-max-ms, \
                 got {hb} < {min} < {max}"
            );
        }
        Ok(Timings {
            heartbeat: Duration::from_millis(hb),
            election_min: Duration::from_millis(min),
            election_max: Duration::from_millis(max),
            snapshot_every: self.raft_snapshot_every,
            keep_logs: self.raft_keep_logs,
            ..Timings::default()
        })
    }
}

/// `KIND=COUNT`, as `--resource` takes it.
fn parse_resource(text: &str) -> Result<(String, u64), String> {
    let (kind, count) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected KIND=COUNT, like gpu=2"))?;
    if !stackd_core::validate::is_valid_name(kind) {
        return Err(format!("{kind:?} is not a resource kind: use letters, digits, '-', '_' and '.'"));
    }
    let count = count.parse().map_err(|_| format!("{count:?} is not a count in {text:?}"))?;
    Ok((kind.to_string(), count))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stackd".to_string())
}

/// The address a client on this host dials to reach `listen`.
fn dial_addr(listen: &str) -> String {
    match listen.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => listen.to_string(),
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Why [`run_node`] returned.
enum Exit {
    /// A signal asked the node to stop.
    Stopped,
    /// The cluster changed the node's role; its new certificate is written.
    RoleChanged(stackd_tls::Role),
}

/// Runs the node until a signal or a failure: [`run_node`] again after each
/// role change. `stop` turns true on SIGTERM or Ctrl-C, whenever it comes.
async fn run_roles(
    data_dir: PathBuf,
    identity: Identity,
    mut bootstrap: bool,
    node: NodeArgs,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    loop {
        match run_node(&data_dir, &identity, bootstrap, &node, stop.clone()).await? {
            Exit::Stopped => return Ok(()),
            Exit::RoleChanged(role) => {
                bootstrap = false;
                if role == stackd_tls::Role::Worker && node.no_agent {
                    tracing::info!("this node is a worker now; it ran with --no-agent, so it stops");
                    return Ok(());
                }
                if *stop.borrow() {
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
    data_dir: &std::path::Path,
    identity: &Identity,
    bootstrap: bool,
    node: &NodeArgs,
    mut signal: tokio::sync::watch::Receiver<bool>,
) -> Result<Exit> {
    let data_dir = data_dir.to_path_buf();
    let identity = identity.clone();
    let timings = node.raft.timings()?;
    if bootstrap {
        files::init_pki(&data_dir, &identity, stackd_manager::now_ms())?;
        identity.save_new(&data_dir)?;
    }
    let credentials = files::load_credentials(&data_dir)?;
    let role = credentials.identity().context("the node's certificate (tls/node.crt)")?.role;
    let is_manager = role == stackd_tls::Role::Manager;
    if !is_manager && node.no_agent {
        bail!("--no-agent leaves a worker nothing to do: a worker runs only the agent");
    }
    if !is_manager {
        // A demoted manager's Raft state goes aside (also after a crash right
        // after its demotion): a later promotion starts from an empty log.
        files::retire_raft(&data_dir, stackd_manager::now_ms())?;
    }
    let manager = if is_manager {
        let listener = tokio::net::TcpListener::bind(identity.bind_addr())
            .await
            .with_context(|| format!("cannot listen on {}", identity.bind_addr()))?;
        let pending = files::load_bootstrap(&data_dir)?;
        let manager = Manager::start(ManagerConfig {
            data_dir: data_dir.clone(),
            identity: identity.clone(),
            bootstrap: pending.as_ref().map(|b| b.security.clone()),
            credentials: credentials.clone(),
            timings,
        })
        .await?;
        // Once InitCluster has committed, the admin token is valid: hand it to stackctl.
        if let Some(b) = pending {
            if let Err(e) = manager.initialised(Duration::from_secs(60)).await {
                manager.shutdown().await;
                return Err(e.into());
            }
            // A crash right here is repaired by the next start.
            let env = files::finish_bootstrap(&data_dir, &identity, &dial_addr(&identity.addr), &b.admin_token)?;
            tracing::info!(path = %env.display(), "stackctl settings written (admin token included): `set -a; . {}; set +a`", env.display());
        }
        Some((manager, listener))
    } else {
        None
    };
    tracing::info!(node = %identity.node_id, name = %identity.name, addr = %identity.addr, role = role.as_str(), cluster = %identity.cluster_id, "stackd node running");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let agent = if node.no_agent {
        None
    } else {
        let agent_tls: Arc<rustls::ClientConfig> =
            stackd_tls::client_config(credentials.ca(), Some(&credentials)).context("the agent's TLS configuration")?;
        // This node when it is a manager; the agent adds the managers it
        // keeps in DATA_DIR/managers.json (those given by `stackd join`, then
        // those it learns), and drops the ones the cluster no longer names.
        let managers: Vec<String> = manager.as_ref().map(|_| dial_addr(&identity.addr)).into_iter().collect();
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
            stackd_agent::AgentOptions { state_dir: Some(data_dir.clone()) },
            wait_stop(stop_rx.clone()),
        )))
    };
    let (manager, listener) = match manager {
        Some((m, l)) => (Some(m), Some(l)),
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
            (Some(m), Some(l)) => m.serve(l, wait_stop(stop_rx.clone())).await,
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
            Ok(()) => Err(anyhow::anyhow!("the gRPC server stopped")),
            Err(e) => Err(e.into()),
        },
        r = &mut agent_done => {
            agent_finished = true;
            match r {
                Some(Ok(Ok(()))) => Err(anyhow::anyhow!("the agent stopped")),
                Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the agent failed")),
                Some(Err(e)) => Err(anyhow::anyhow!("the agent task failed: {e}")),
                None => Ok(Exit::Stopped),
            }
        },
        r = &mut role_change => r.map(Exit::RoleChanged),
        _ = signal.wait_for(|s| *s) => {
            tracing::info!("shutting down");
            Ok(Exit::Stopped)
        }
    };
    let _ = stop_tx.send(true);
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

#[tokio::main]
async fn main() -> Result<()> {
    stackd_tls::install_default_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn")
            }),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: journald or a file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One watcher for the whole process: a signal during a role change is not lost.
    let (signal_tx, signal) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    match Cli::parse().command {
        Cmd::Init { data_dir, listen, naming: Naming { advertise_addr, name }, node } => {
            if Identity::exists(&data_dir) {
                bail!(stackd_manager::IdentityError::Exists(
                    data_dir.display().to_string(),
                    data_dir.display().to_string()
                ));
            }
            node.raft.timings()?;
            let advertised = advertise_addr.unwrap_or_else(|| listen.clone());
            match advertised.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_unspecified() => tracing::warn!(
                    addr = %advertised,
                    "other nodes cannot reach {advertised}: give --advertise-addr IP:PORT before adding managers or workers"
                ),
                Ok(a) if a.ip().is_loopback() => tracing::info!(
                    addr = %advertised,
                    "the cluster's address is a loopback address: only nodes on this host can join"
                ),
                Ok(_) => {}
                Err(_) => bail!("--advertise-addr {advertised:?} is not IP:PORT (like 10.0.0.5:4280)"),
            }
            let mut identity = Identity::generate(&name.unwrap_or_else(hostname), &advertised);
            if listen != advertised {
                identity.listen = listen;
            }
            run_roles(data_dir, identity, true, node, signal).await
        }
        Cmd::Join { manager, token, data_dir, listen, naming: Naming { advertise_addr, name }, node } => {
            node.raft.timings()?;
            let name = name.unwrap_or_else(hostname);
            let request = join::JoinRequest {
                manager: &manager,
                token: &token,
                name: &name,
                listen: listen.as_deref(),
                advertise: advertise_addr.as_deref(),
                resources: &node.resources,
                no_agent: node.no_agent,
            };
            let identity = join::join(&data_dir, &request).await?;
            run_roles(data_dir, identity, false, node, signal).await
        }
        Cmd::Run { data_dir, node } => {
            let identity = Identity::load(&data_dir)?;
            run_roles(data_dir, identity, false, node, signal).await
        }
    }
}
