//! `stackd`: the daemon. One process runs the manager role and the agent role
//! of a node, serving every gRPC service on one TCP address.
//!
//! # Layout
//!
//! - `main.rs`: argument parsing, tracing, signals; the work is in
//!   `stackd-manager` and `stackd-agent`.
//! - `files.rs`: the node's security files (`tls/`, `stackctl.env`).

mod files;

use std::path::PathBuf;
use std::sync::Arc;

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
        /// The node's name (default: the hostname).
        #[arg(long)]
        name: Option<String>,
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

/// What the node offers, given each time it starts.
#[derive(clap::Args)]
struct NodeArgs {
    /// A generic resource this node offers to tasks, as KIND=COUNT (`gpu=2`);
    /// repeatable. Services reserve them with `deploy.resources.reservations.generic_resources`.
    #[arg(long = "resource", value_name = "KIND=COUNT", value_parser = parse_resource, env = "STACKD_RESOURCES", value_delimiter = ',')]
    resources: Vec<(String, u64)>,
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

async fn run_node(data_dir: PathBuf, identity: Identity, bootstrap: bool, node: NodeArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&identity.addr)
        .await
        .with_context(|| format!("cannot listen on {}", identity.addr))?;
    if bootstrap {
        files::init_pki(&data_dir, &identity, stackd_manager::now_ms())?;
        identity.save_new(&data_dir)?;
    }
    let credentials = files::load_credentials(&data_dir)?;
    let pending = files::load_bootstrap(&data_dir)?;
    let manager = Manager::start(ManagerConfig {
        data_dir: data_dir.clone(),
        identity: identity.clone(),
        bootstrap: pending.as_ref().map(|b| b.security.clone()),
        credentials: credentials.clone(),
        timings: Timings::default(),
    })
    .await?;
    // Once InitCluster has committed, the admin token is valid: hand it to stackctl.
    if let Some(b) = pending {
        if let Err(e) = manager.initialised(std::time::Duration::from_secs(60)).await {
            manager.shutdown().await;
            return Err(e.into());
        }
        let env = files::finish_bootstrap(&data_dir, &identity, &dial_addr(&identity.addr), &b.admin_token)?;
        tracing::info!(path = %env.display(), "stackctl settings written (admin token included): `set -a; . {}; set +a`", env.display());
    }
    let agent_tls: Arc<rustls::ClientConfig> =
        stackd_tls::client_config(credentials.ca(), Some(&credentials)).context("the agent's TLS configuration")?;
    tracing::info!(node = %identity.node_id, name = %identity.name, addr = %identity.addr, cluster = %identity.cluster_id, "stackd node running");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let agent = tokio::spawn(stackd_agent::run(
        stackd_agent::AgentConfig {
            node_id: identity.node_id.clone(),
            name: identity.name.clone(),
            addr: identity.addr.clone(),
            cluster_id: identity.cluster_id.clone(),
            managers: vec![dial_addr(&identity.addr)],
            tls: agent_tls,
            // The agent speaks to the engine over its Unix socket; tcp:// engines are not supported.
            docker_socket: std::env::var("DOCKER_HOST").ok().filter(|h| h.starts_with("unix://")),
            files_dir: data_dir.join("task-files"),
            generic_resources: node.resources.into_iter().collect(),
        },
        wait_stop(stop_rx.clone()),
    ));
    let serve = manager.serve(listener, wait_stop(stop_rx));
    tokio::pin!(serve);
    tokio::pin!(agent);
    // The node runs while both roles run: an agent that cannot work (no Docker
    // engine) stops the whole process with its error, rather than leaving a
    // manager whose tasks can never start.
    let outcome: Result<()> = tokio::select! {
        r = &mut serve => match r {
            Ok(()) => Err(anyhow::anyhow!("the gRPC server stopped")),
            Err(e) => Err(e.into()),
        },
        r = &mut agent => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the agent stopped")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the agent failed")),
            Err(e) => Err(anyhow::anyhow!("the agent task failed: {e}")),
        },
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut serve).await;
    if outcome.is_ok() {
        match tokio::time::timeout(std::time::Duration::from_secs(10), &mut agent).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "agent stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "agent task failed"),
            _ => {}
        }
    }
    manager.shutdown().await;
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
        .init();
    match Cli::parse().command {
        Cmd::Init { data_dir, listen, name, node } => {
            if Identity::exists(&data_dir) {
                bail!(stackd_manager::IdentityError::Exists(
                    data_dir.display().to_string(),
                    data_dir.display().to_string()
                ));
            }
            let identity = Identity::generate(&name.unwrap_or_else(hostname), &listen);
            run_node(data_dir, identity, true, node).await
        }
        Cmd::Run { data_dir, node } => {
            let identity = Identity::load(&data_dir)?;
            run_node(data_dir, identity, false, node).await
        }
    }
}
