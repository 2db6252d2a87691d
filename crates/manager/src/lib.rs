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
//!   machine, Raft between managers over gRPC (the `Raft` service, write
//!   forwarding, read index); openraft types stay inside it.
//! - `control.rs`: the control gRPC service (stackctl's API).
//! - `dispatcher.rs`: agent sessions, heartbeats, status reports, node liveness.
//! - `controller.rs`: the loop that turns state into plans through core.
//! - `identity.rs`: the node's identity file.

mod control;
mod controller;
mod dispatcher;
mod identity;
pub mod raft;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use stackd_core::Command;
use stackd_proto::v1;
use tokio::sync::watch;

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
    /// Bootstrap a new single-voter cluster (first start after `stackd init`).
    pub bootstrap: bool,
    /// Raft timing.
    pub timings: Timings,
}

/// Makes the cluster usable: initialises Raft when asked (a new cluster),
/// then, once this manager leads, proposes `InitCluster` if the state has
/// none yet (also after a crash between the two). Runs until done or stopped.
async fn bootstrap(raft: RaftNode, identity: Identity, initialize: bool, mut stop: watch::Receiver<bool>) {
    if initialize && let Err(e) = raft.initialize(&identity.addr).await {
        tracing::error!(error = %e, "cannot initialise the cluster");
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
            return;
        }
        match raft.propose(Command::InitCluster { cluster_id: identity.cluster_id.clone(), at: now_ms() }).await {
            Ok(_) => return,
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
    dispatcher: dispatcher::Dispatcher,
    stop: watch::Sender<bool>,
}

impl Manager {
    /// Opens the Raft state and starts the loops, reaching other managers
    /// over plaintext gRPC. Returns at once: bootstrapping (initialising a
    /// new cluster, proposing its `InitCluster`) runs in the background, so
    /// the caller can serve Raft RPCs before any leader exists — with several
    /// managers restarting together, nobody could elect a leader otherwise.
    pub async fn start(config: ManagerConfig) -> Result<Self, ManagerError> {
        Self::start_with_connector(config, Box::new(raft::PlainConnector::default())).await
    }

    /// [`start`](Self::start), reaching other managers through `connector`
    /// (e.g. over TLS).
    pub async fn start_with_connector(
        config: ManagerConfig,
        connector: Box<dyn raft::PeerConnector>,
    ) -> Result<Self, ManagerError> {
        let raft =
            RaftNode::start_with(&config.data_dir.join("raft"), config.identity.raft_id, &config.timings, connector)
                .await?;
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(bootstrap(raft.clone(), config.identity.clone(), config.bootstrap, stop_rx.clone()));
        tokio::spawn(controller::run(raft.clone(), stop_rx.clone()));
        // One dispatcher: the liveness monitor reads the sessions the service records.
        let dispatcher = dispatcher::Dispatcher::new(raft.clone());
        tokio::spawn(dispatcher.clone().monitor(stop_rx));
        Ok(Self { raft, identity: config.identity, dispatcher, stop })
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
            .add_service(raft::RaftService::new(self.raft.clone()).server())
    }

    /// Serves the manager's services on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ManagerError> {
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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
