//! stackd's manager role: Raft, the control API, the dispatcher and the
//! controller loops.
//!
//! ```text
//!  stackctl ──Control──►┐                        ┌──► loops (leader only, propose): controller,
//!                       ├──► RaftNode (propose) ─┤      node monitor, membership, bootstrap
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
//!   certificate renewal), `tokens.rs`, `cluster.rs` (status, join tokens, events),
//!   `snapshots.rs` (cluster snapshot files, the recovery key).
//! - `backup.rs`: a cluster snapshot file of the applied state, encrypted
//!   to the recovery key (core's `backup` layout, tls' `age`).
//! - `refusal.rs`: a core `Refusal` as the gRPC status a client sees: the
//!   one mapping of refusal kinds to codes.
//! - `reconcile.rs`: the one shape of every loop (leader gate → watch the
//!   applied index and a wake-up time → debounce → a pure core decision on
//!   a snapshot of the state → propose), and the `Reconciler` trait each
//!   loop implements.
//! - `controller.rs`: the loop that turns state into plans through core
//!   (orchestrate, schedule).
//! - `dispatcher.rs`: agent sessions, heartbeats, status reports; the
//!   `PublishLogs` streams of `stackctl logs`; `dispatcher/assignments.rs`
//!   what a session sends its node (pure `next_message`: tasks, network and
//!   volume specs, contents, credentials, images to resolve) and `fan_out`;
//!   `dispatcher/usage.rs` what is kept of an agent's `ReportUsage` (its own
//!   tasks, existing services, bounded) for the autoscaler.
//! - `logs/`: the relay of `stackctl logs` on the leader (`plan.rs` pure:
//!   a target → the nodes to ask; `broker.rs`: subscriptions, the sessions
//!   they go out on, the streams that feed them).
//! - `monitor.rs`: the loop that declares silent nodes down (core's `liveness`).
//! - `autoscale/`: the leader's autoscaler loop (core's `autoscale`),
//!   and `usage.rs` the agents' usage reports it reads (leader memory,
//!   filled by the dispatcher's `ReportUsage`, emptied when the lead is lost).
//! - [`metrics`]: the manager's metrics, read on each scrape (Raft, the
//!   dispatcher, and on the leader the cluster's figures from core).
//! - `membership.rs`: the leader's loop that makes Raft's membership follow
//!   the nodes' roles (learner, then voter; removal), and the quorum check
//!   of demotions and removals.
//! - `scheduled.rs`: the leader's loop of scheduled snapshots (claim the
//!   tick through Raft, take, write, prune, record).
//! - [`s3`]: a small S3 client (put, get, list, delete) for snapshot files.
//! - `bootstrap.rs`: the loop that proposes a new cluster's `InitCluster`.
//! - `identity.rs`: the node's identity file.
//! - [`keys`]: the data key the Raft data is sealed with on disk, wrapped
//!   by a local key file or by the cluster's unlock key (autolock), and the
//!   task that follows the cluster's setting on every manager.
//! - `lock.rs`: the `Lock` service (`Unlock`), and what a locked manager
//!   serves while it waits for its key.
//! - `status/`: the status page (`--status-addr`), HTTPS with the node's
//!   certificate: `render.rs` the pure HTML of a state (escaped), `session.rs`
//!   the sign-in sessions and their limits, `mod.rs` the thin axum shell
//!   (token sign-in checked as a control call, session cookie, reads through
//!   the leader's read index).
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
mod autoscale;
mod backup;
mod bootstrap;
mod control;
mod controller;
mod dispatcher;
mod identity;
pub mod keys;
mod lock;
mod logs;
mod membership;
pub mod metrics;
mod monitor;
mod peer;
pub mod raft;
mod reconcile;
mod refusal;
pub mod s3;
mod scheduled;
mod status;
pub mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stackd_proto::v1;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

pub use bootstrap::Bootstrap;
pub use identity::{Identity, IdentityError};
pub use keys::{AtRest, KeysError};
pub use lock::{LockError, serve_until_unlocked};
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
    /// Bootstrap a new single-voter cluster: with a security state (the CA
    /// with its key, the join secrets, the admin token's digest) on the
    /// first start after `stackd init`, or with a saved state after
    /// `stackd restore`; on any start until the command that carries it
    /// has committed.
    pub bootstrap: Option<Bootstrap>,
    /// The node's certificate (a manager certificate, CN = node id), key
    /// and CA: served to every client, and the CA client certificates are
    /// checked against.
    pub credentials: stackd_tls::Credentials,
    /// Raft timing.
    pub timings: Timings,
    /// The key the Raft data is sealed with on disk ([`keys::open`], or
    /// [`serve_until_unlocked`] for a locked manager).
    pub at_rest: AtRest,
}

/// A running manager.
pub struct Manager {
    raft: RaftNode,
    identity: Identity,
    tls: Arc<rustls::ServerConfig>,
    /// The node's certificate, served by `tls` and by the status page.
    certs: Arc<stackd_tls::CertStore>,
    dispatcher: dispatcher::Dispatcher,
    /// Cancels the loops.
    stop: CancellationToken,
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
        let certs = Arc::new(stackd_tls::CertStore::new(&config.credentials)?);
        let tls = stackd_tls::server_config(config.credentials.ca(), certs.clone())?;
        let raft = RaftNode::start_with(
            &config.data_dir.join("raft"),
            config.identity.raft_id,
            &config.timings,
            connector,
            config.at_rest.key(),
            config.at_rest.upgrading(),
        )
        .await?;
        // The log and the snapshot are sealed whole now: plain data is refused from here on.
        if let Err(e) = config.at_rest.upgraded() {
            tracing::warn!(error = %e, "cannot record that the raft data is sealed; retried at the next start");
        }
        let (initialised_tx, initialised) = watch::channel(None);
        let stop = CancellationToken::new();
        // Every manager (not only the leader) wraps its data key as the cluster says.
        tokio::spawn(keys::follow(config.at_rest.clone(), raft.shared().clone(), stop.clone()));
        tokio::spawn(bootstrap::run(
            raft.clone(),
            config.identity.clone(),
            config.bootstrap,
            stop.clone(),
            initialised_tx,
        ));
        // Every loop has the one shape of `reconcile::run`.
        tokio::spawn(reconcile::run(raft.clone(), controller::Controller::default(), stop.clone()));
        tokio::spawn(reconcile::run(raft.clone(), membership::Membership, stop.clone()));
        let scheduled = scheduled::Scheduled::new(
            config.data_dir.clone(),
            config.identity.node_id.clone(),
            config.identity.name.clone(),
        );
        tokio::spawn(reconcile::run(raft.clone(), scheduled, stop.clone()));
        // One dispatcher: the node monitor reads the heartbeats the service records.
        let dispatcher = dispatcher::Dispatcher::new(raft.clone(), &config.identity.cluster_id);
        tokio::spawn(reconcile::run(raft.clone(), monitor::NodeMonitor::new(dispatcher.clone()), stop.clone()));
        let autoscaler = autoscale::Autoscaler::new(dispatcher.usage().clone());
        tokio::spawn(reconcile::run(raft.clone(), autoscaler, stop.clone()));
        Ok(Self { raft, identity: config.identity, tls, certs, dispatcher, stop, initialised })
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
        let control = control::Control::new(self.raft.clone(), self.identity.node_id.clone(), self.dispatcher.clone());
        tonic::service::Routes::new(v1::control_server::ControlServer::new(control))
            .add_service(v1::dispatcher_server::DispatcherServer::new(self.dispatcher.clone()))
            .add_service(v1::lock_server::LockServer::new(lock::Unlocked))
            .add_service(InterceptedService::new(
                raft::RaftService::new(self.raft.clone()).server(),
                auth::manager_peer(self.identity.cluster_id.clone(), self.raft.shared().clone()),
            ))
    }

    /// The manager's metrics, for the node's `/metrics`.
    pub fn collector(&self) -> metrics::ManagerCollector {
        metrics::ManagerCollector::new(self.raft.clone(), self.dispatcher.clone())
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

    /// Serves the read-only status page over HTTPS on `listener` (with the
    /// node's certificate, HTTP/1.1, no client certificate asked for)
    /// until `shutdown` resolves. See docs/operations.md, Status page.
    /// The future owns what it needs: spawn it beside [`serve`](Self::serve).
    pub fn serve_status(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), ManagerError>> + Send + 'static {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let tls = stackd_tls::https_server_config(self.certs.clone());
        let (raft, name) = (self.raft.clone(), self.identity.name.clone());
        async move {
            status::serve(raft, name, tls?, listener, shutdown)
                .await
                .map_err(|e| ManagerError::Serve { addr, message: e.to_string() })
        }
    }

    /// Stops the loops and Raft.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.raft.shutdown().await;
    }
}
