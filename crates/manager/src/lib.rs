//! stackd's manager role: Raft, the control API, the dispatcher and the
//! controller loops.
//!
//! ```text
//!  stackctl ──Control──►┐                        ┌──► controller: orchestrate + schedule
//!                       ├──► RaftNode (propose) ─┤        (leader only, proposes plans)
//!  agents ──Dispatcher─►┘          │             └──► dispatcher streams: task sets to agents
//!                                  ▼
//!                     WAL + snapshot files (DATA_DIR/raft)
//! ```
//!
//! # Layout
//!
//! - `raft/`: openraft 0.9 with a write-ahead log store, group commit and a
//!   snapshotting state machine, Raft between managers over gRPC (the `Raft` service, write
//!   forwarding, read index); openraft types stay inside it. `raft/error.rs`:
//!   `RaftError` and its one mapping to a gRPC status.
//! - `control/`: the control gRPC service (stackctl's API): `mod.rs` the
//!   one checked path (authenticate → authorize → handler → propose) and the
//!   thin tonic impl, `access.rs` the action each request asks for, then one
//!   file per concern: `stacks.rs`, `objects.rs` (configs and secrets),
//!   `nodes.rs` (roles, removal, membership checks), `join.rs` (join and
//!   certificate renewal), `tokens.rs`, `cluster.rs` (status, join tokens, events).
//! - `refusal.rs`: a core `Refusal` as the gRPC status a client sees: the
//!   one mapping of refusal kinds to codes.
//! - `dispatcher.rs`: agent sessions, heartbeats, status reports, node liveness.
//! - `controller.rs`: the loop that turns state into plans through core.
//! - `identity.rs`: the node's identity file.
//! - `membership.rs`: the leader's loop that makes Raft's membership follow
//!   the nodes' roles (learner, then voter; removal), and the quorum check
//!   of demotions and removals.
//! - `auth.rs`: who is calling (a node certificate of this cluster or a
//!   client token) and what it may do.
//! - `peer.rs`: the node certificate a request came with (used by `raft/`
//!   and `auth.rs`; depends on no module of the crate).
//! - `util.rs`: general helpers of no layer: atomic file writes, locks.
//!
//! Every service is served over TLS only ([`stackd_tls::tls_incoming`]);
//! client certificates are optional at the TLS layer and required by the
//! dispatcher, and the control API takes a certificate or a bearer token.

mod auth;
mod control;
mod controller;
mod dispatcher;
mod identity;
mod membership;
mod peer;
pub mod raft;
mod refusal;
pub mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stackd_core::Command;
use stackd_core::model::{Availability, Node, NodeRole, NodeState};
use stackd_core::security::Security;
use stackd_proto::v1;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;

pub use identity::{Identity, IdentityError};
pub use raft::{
    MemberInfo, Members, MembersView, PeerConnector, PlainConnector, RaftError, RaftNode, RaftStatus, Timings,
};

/// Why the manager could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Raft failed.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// The identity file.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The node's TLS credentials are unusable.
    #[error("the node's TLS credentials: {0}")]
    Tls(#[from] stackd_tls::ConfigError),
    /// The bootstrap did not commit the cluster's `InitCluster` in time.
    #[error(
        "the cluster was not initialised within {0:?} (no leader, or a slow disk); the bootstrap state is kept in \
         DATA_DIR/tls/bootstrap.json: start the node again with `stackd run --data-dir DIR`"
    )]
    BootstrapTimeout(Duration),
    /// The `InitCluster` command was refused.
    #[error("initialising the cluster was refused: {0}")]
    InitRefused(String),
    /// The listener failed.
    #[error("serving on {addr}: {message}")]
    Serve {
        /// The address.
        addr: String,
        /// What failed.
        message: String,
    },
}

/// Milliseconds since the Unix epoch: the manager's clock for commands.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What a manager needs to start.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The data dir (Raft state lives in `DATA_DIR/raft`).
    pub data_dir: PathBuf,
    /// Who this node is.
    pub identity: Identity,
    /// Bootstrap a new single-voter cluster with this security state (the
    /// CA with its key, the join secrets, the admin token's digest): the
    /// first start after `stackd init`, and any start until the
    /// `InitCluster` command that carries it has committed.
    pub bootstrap: Option<Security>,
    /// The node's certificate (a manager certificate, CN = node id), key
    /// and CA: served to every client, and the CA client certificates are
    /// checked against.
    pub credentials: stackd_tls::Credentials,
    /// Raft timing.
    pub timings: Timings,
}

/// Makes the cluster usable: initialises Raft when asked (a new cluster),
/// then, once this manager leads, proposes `InitCluster` if the state has
/// none yet (also after a crash between the two). Runs until done or stopped.
async fn bootstrap(
    raft: RaftNode,
    identity: Identity,
    security: Option<Security>,
    mut stop: watch::Receiver<bool>,
    done: watch::Sender<Option<Result<(), String>>>,
) {
    // Only `stackd init` (until its InitCluster commits) brings a bootstrap;
    // any other manager gets the state by replication.
    let Some(security) = security else { return };
    if let Err(e) = raft.initialize(&identity.addr).await {
        tracing::error!(error = %e, "cannot initialise the cluster");
        let _ = done.send(Some(Err(e.to_string())));
        return;
    }
    let mut leading = raft.leader_watch();
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        // Apply everything committed before looking at the state.
        if let Err(e) = raft.read_barrier().await {
            tracing::debug!(error = %e, "bootstrap: read barrier failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if !raft.shared().read(|s| s.cluster_id.is_empty()) {
            let _ = done.send(Some(Ok(())));
            return;
        }
        // The first manager is a node from the start, so that its own
        // certificate is recognised before its agent registers.
        let node = Node {
            id: identity.node_id.clone(),
            name: identity.name.clone(),
            addr: identity.addr.clone(),
            role: NodeRole::Manager,
            availability: Availability::Active,
            state: NodeState::Unknown,
            labels: Default::default(),
            resources: Default::default(),
            engine_version: String::new(),
            updated_at: 0,
        };
        let cmd = Command::InitCluster {
            cluster_id: identity.cluster_id.clone(),
            at: now_ms(),
            security: Some(security.clone()),
            node: Some(node),
        };
        match raft.propose(cmd).await {
            Ok((_, applied)) => {
                let _ = done.send(Some(applied.rejected.map_or(Ok(()), Err)));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "proposing InitCluster failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A running manager.
pub struct Manager {
    raft: RaftNode,
    identity: Identity,
    tls: Arc<rustls::ServerConfig>,
    dispatcher: dispatcher::Dispatcher,
    stop: watch::Sender<bool>,
    /// The bootstrap's outcome, once known.
    initialised: watch::Receiver<Option<Result<(), String>>>,
}

/// Channels to the other managers over TLS, with this node's certificate.
struct TlsPeers(Arc<rustls::ClientConfig>);

impl raft::PeerConnector for TlsPeers {
    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, raft::PeerError> {
        stackd_tls::lazy_channel(addr, self.0.clone())
            .map_err(|e| raft::PeerError::Connector { addr: addr.to_string(), message: e.to_string() })
    }
}

impl Manager {
    /// Opens the Raft state and starts the loops; other managers are reached
    /// over TLS, with this node's certificate. Returns at once:
    /// bootstrapping (initialising a new cluster, proposing its
    /// `InitCluster`) runs in the background, so the caller can serve Raft
    /// RPCs before any leader exists — with several managers restarting
    /// together, nobody could elect a leader otherwise. [`initialised`](Self::initialised)
    /// waits for the bootstrap.
    pub async fn start(config: ManagerConfig) -> Result<Self, ManagerError> {
        let client = stackd_tls::client_config(config.credentials.ca(), Some(&config.credentials))?;
        Self::start_with_connector(config, Box::new(TlsPeers(client))).await
    }

    /// [`start`](Self::start), reaching other managers through `connector`.
    pub async fn start_with_connector(
        config: ManagerConfig,
        connector: Box<dyn raft::PeerConnector>,
    ) -> Result<Self, ManagerError> {
        let store = stackd_tls::CertStore::new(&config.credentials)?;
        let tls = stackd_tls::server_config(config.credentials.ca(), Arc::new(store))?;
        let raft =
            RaftNode::start_with(&config.data_dir.join("raft"), config.identity.raft_id, &config.timings, connector)
                .await?;
        let (initialised_tx, initialised) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(bootstrap(
            raft.clone(),
            config.identity.clone(),
            config.bootstrap,
            stop_rx.clone(),
            initialised_tx,
        ));
        tokio::spawn(controller::run(raft.clone(), stop_rx.clone()));
        tokio::spawn(membership::run(raft.clone(), stop_rx.clone()));
        // One dispatcher: the liveness monitor reads the sessions the service records.
        let dispatcher = dispatcher::Dispatcher::new(raft.clone(), &config.identity.cluster_id);
        tokio::spawn(dispatcher.clone().monitor(stop_rx));
        Ok(Self { raft, identity: config.identity, tls, dispatcher, stop, initialised })
    }

    /// Waits until this node's bootstrap has committed the cluster's
    /// `InitCluster` (only a start with [`ManagerConfig::bootstrap`] does).
    ///
    /// # Errors
    ///
    /// [`ManagerError::InitRefused`] when the command was refused,
    /// [`ManagerError::BootstrapTimeout`] when `timeout` passed first.
    pub async fn initialised(&self, timeout: Duration) -> Result<(), ManagerError> {
        let mut rx = self.initialised.clone();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(done)) => match done.clone() {
                Some(Err(why)) => Err(ManagerError::InitRefused(why)),
                _ => Ok(()),
            },
            _ => Err(ManagerError::BootstrapTimeout(timeout)),
        }
    }

    /// The Raft node.
    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    /// The gRPC services of the manager, to serve on the node's address.
    pub fn routes(&self) -> tonic::service::Routes {
        let control = control::Control::new(self.raft.clone(), self.identity.node_id.clone());
        tonic::service::Routes::new(v1::control_server::ControlServer::new(control))
            .add_service(v1::dispatcher_server::DispatcherServer::new(self.dispatcher.clone()))
            .add_service(InterceptedService::new(
                raft::RaftService::new(self.raft.clone()).server(),
                auth::manager_peer(self.identity.cluster_id.clone(), self.raft.shared().clone()),
            ))
    }

    /// The TLS configuration the manager serves with.
    pub fn tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// Serves the manager's services over TLS on `listener` until `shutdown`
    /// resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ManagerError> {
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        let incoming = stackd_tls::tls_incoming(listener, self.tls.clone());
        tonic::transport::Server::builder()
            .add_routes(self.routes())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| ManagerError::Serve {
                addr: addr.map(|a| a.to_string()).unwrap_or_default(),
                message: e.to_string(),
            })
    }

    /// Stops the loops and Raft.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.raft.shutdown().await;
    }
}
