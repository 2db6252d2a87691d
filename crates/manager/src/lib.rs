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

/// A running manager.
pub struct Manager {
    raft: RaftNode,
    identity: Identity,
    dispatcher: dispatcher::Dispatcher,
    stop: watch::Sender<bool>,
}

impl Manager {
    /// Opens the Raft state, bootstraps it if asked, and starts the loops.
    pub async fn start(config: ManagerConfig) -> Result<Self, ManagerError> {
        let raft = RaftNode::start(&config.data_dir.join("raft"), config.identity.raft_id, &config.timings).await?;
        if config.bootstrap {
            raft.initialize(&config.identity.addr).await?;
        }
        raft.wait_for_leader(Duration::from_secs(30)).await?;
        let needs_init = raft.shared().read(|s| s.cluster_id.is_empty());
        if needs_init && raft.status().is_leader {
            raft.propose(Command::InitCluster {
                cluster_id: config.identity.cluster_id.clone(),
                at: now_ms(),
                security: None,
                node: None,
            })
            .await?;
        }
        let (stop, stop_rx) = watch::channel(false);
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
