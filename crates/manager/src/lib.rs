//! stackd's manager role: Raft, the control API, the dispatcher and the
//! controller loops.
//!
//! ```text
//!  stackctl ──Control──►┐                        ┌──► controller: orchestrate + schedule
//!                       ├──► RaftNode (propose) ─┤        (leader only, proposes plans)
//!  agents ──Dispatcher─►┘          │             └──► dispatcher streams: task sets to agents
//!                                  ▼
//!                     redb log + snapshot files (DATA_DIR/raft)
//! ```
//!
//! # Layout
//!
//! - `raft/`: openraft 0.9 with a redb log store and a snapshotting state
//!   machine; openraft types stay inside it.
//! - `control.rs`: the control gRPC service (stackctl's API).
//! - `dispatcher.rs`: agent sessions, heartbeats, status reports, node liveness.
//! - `controller.rs`: the loop that turns state into plans through core.
//! - `identity.rs`: the node's identity file.
//! - `auth.rs`: who is calling (a node certificate of this cluster or a
//!   client token) and what it may do.
//!
//! Every service is served over TLS only ([`stackd_tls::tls_incoming`]);
//! client certificates are optional at the TLS layer and required by the
//! dispatcher, and the control API takes a certificate or a bearer token.

mod auth;
mod control;
mod controller;
mod dispatcher;
mod identity;
pub mod raft;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stackd_core::Command;
use stackd_core::model::{Availability, Node, NodeRole, NodeState};
use stackd_core::security::Security;
use stackd_proto::v1;
use tokio::sync::watch;

pub use identity::{Identity, IdentityError};
pub use raft::{RaftError, RaftNode, Timings};

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
    /// The cluster was never initialised and this start brings nothing to
    /// initialise it with.
    #[error("the cluster is not initialised and this node holds no bootstrap state: recreate it with `stackd init`")]
    NotInitialised,
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

/// A running manager.
pub struct Manager {
    raft: RaftNode,
    identity: Identity,
    tls: Arc<rustls::ServerConfig>,
    dispatcher: dispatcher::Dispatcher,
    stop: watch::Sender<bool>,
}

impl Manager {
    /// Opens the Raft state, bootstraps it if asked, and starts the loops.
    /// When it returns after a bootstrap, the `InitCluster` command has
    /// committed.
    pub async fn start(config: ManagerConfig) -> Result<Self, ManagerError> {
        let store = stackd_tls::CertStore::new(&config.credentials)?;
        let tls = stackd_tls::server_config(config.credentials.ca(), Arc::new(store))?;
        let raft = RaftNode::start(&config.data_dir.join("raft"), config.identity.raft_id, &config.timings).await?;
        if config.bootstrap.is_some() {
            raft.initialize(&config.identity.addr).await?;
        }
        raft.wait_for_leader(Duration::from_secs(30)).await?;
        let needs_init = raft.shared().read(|s| s.cluster_id.is_empty());
        if needs_init && raft.status().is_leader {
            let security = config.bootstrap.clone().ok_or(ManagerError::NotInitialised)?;
            let id = &config.identity;
            // The first manager is a node from the start, so that its own
            // certificate is recognised before its agent registers.
            let node = Node {
                id: id.node_id.clone(),
                name: id.name.clone(),
                addr: id.addr.clone(),
                role: NodeRole::Manager,
                availability: Availability::Active,
                state: NodeState::Unknown,
                labels: Default::default(),
                resources: Default::default(),
                engine_version: String::new(),
                updated_at: 0,
            };
            let cmd = Command::InitCluster {
                cluster_id: id.cluster_id.clone(),
                at: now_ms(),
                security: Some(security),
                node: Some(node),
            };
            let (_, applied) = raft.propose(cmd).await?;
            if let Some(why) = applied.rejected {
                return Err(ManagerError::InitRefused(why));
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(controller::run(raft.clone(), stop_rx.clone()));
        // One dispatcher: the liveness monitor reads the sessions the service records.
        let dispatcher = dispatcher::Dispatcher::new(raft.clone());
        tokio::spawn(dispatcher.clone().monitor(stop_rx));
        Ok(Self { raft, identity: config.identity, tls, dispatcher, stop })
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
