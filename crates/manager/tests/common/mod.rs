//! What the manager's in-process cluster tests share: the test CA, the
//! security state a first manager bootstraps with, and a manager served over
//! TLS on a 127.0.0.1 port that can be killed and started again.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackd_core::model::Blob;
use stackd_core::security::Security;
use stackd_manager::{Identity, Manager, ManagerConfig, RaftNode, Timings};
use stackd_tls::Role;
use stackd_tls::testing::TestPki;
use tokio::sync::oneshot;

pub const CLUSTER: &str = "0123456789abcdef0123456789abcdef";

/// The cluster's CA: every manager's certificate is signed by it.
pub fn pki() -> &'static TestPki {
    static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        stackd_tls::install_default_provider();
        TestPki::for_cluster(CLUSTER)
    })
}

/// The security state the first manager bootstraps with.
pub fn security() -> Security {
    let secret = |b: u8| Blob(vec![b; stackd_tls::SECRET_LEN]);
    Security {
        ca_cert_pem: pki().ca.cert_pem().to_string(),
        ca_key_pem: Blob(pki().ca.key_pem().into_bytes()),
        manager_secret: secret(1),
        worker_secret: secret(2),
        tokens: BTreeMap::new(),
        recovery_recipient: String::new(),
        unlock_key: Blob::default(),
    }
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    manager: Arc<Manager>,
    stop_serving: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(id: u64, bootstrap: bool, timings: Timings) -> Node {
        Node::start_in(id, bootstrap, timings, tempfile::tempdir().expect("tempdir"), "127.0.0.1:0").await
    }

    /// Starts manager `id` with its data in `dir`, listening on `addr`.
    pub async fn start_in(id: u64, bootstrap: bool, timings: Timings, dir: tempfile::TempDir, addr: &str) -> Node {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let identity = Identity {
            cluster_id: CLUSTER.into(),
            node_id: format!("{id:016x}"),
            raft_id: id,
            name: format!("m{id}"),
            addr: addr.clone(),
            listen: String::new(),
        };
        let credentials = pki().credentials(&identity.node_id, Role::Manager);
        let bootstrap = bootstrap.then(|| stackd_manager::Bootstrap::New(security()));
        let at_rest = stackd_manager::keys::open(dir.path(), None).expect("the raft data key");
        let config =
            ManagerConfig { data_dir: dir.path().to_path_buf(), identity, bootstrap, credentials, timings, at_rest };
        let started = Instant::now();
        let manager = loop {
            // Must return without a leader: the others are not even started yet.
            let r = tokio::time::timeout(Duration::from_secs(5), Manager::start(config.clone()))
                .await
                .expect("Manager::start returns without waiting for a leader");
            match r {
                Ok(m) => break m,
                // In-process restart: the tasks of the stopped openraft node
                // (replication streams) may still hold the log store for a moment.
                Err(e) if e.to_string().contains("already open") && started.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("start manager m{id}: {e}"),
            }
        };
        if started.elapsed() > Duration::from_millis(100) {
            eprintln!("m{id}: the log store was released {:?} after the stop", started.elapsed());
        }
        let manager = Arc::new(manager);
        let (stop_serving, stopped) = oneshot::channel::<()>();
        let m = manager.clone();
        let server = tokio::spawn(async move {
            let _ = m
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Node { id, addr, manager, stop_serving: Some(stop_serving), server, _dir: dir }
    }

    pub fn raft(&self) -> &RaftNode {
        self.manager.raft()
    }

    /// This manager's node record, as a join proposes it (`JoinNode`).
    pub fn record(&self) -> stackd_core::model::Node {
        stackd_core::model::Node {
            id: node_id(self.id),
            name: format!("m{}", self.id),
            addr: self.addr.clone(),
            role: stackd_core::model::NodeRole::Manager,
            availability: stackd_core::model::Availability::Active,
            state: stackd_core::model::NodeState::Unknown,
            labels: BTreeMap::new(),
            resources: Default::default(),
            engine_version: String::new(),
            engine: Default::default(),
            updated_at: 0,
        }
    }

    /// Starts the (killed) manager again on the same data dir and address.
    pub async fn start_again(self, timings: Timings) -> Node {
        let Node { id, addr, manager, _dir: dir, .. } = self;
        drop(manager);
        Node::start_in(id, false, timings, dir, &addr).await
    }

    /// Stops serving and stops Raft, as a crash would (the data dir stays until drop).
    pub async fn kill(&mut self) {
        if let Some(tx) = self.stop_serving.take() {
            let _ = tx.send(());
        }
        self.manager.shutdown().await;
        // Graceful shutdown waits for the peers' connections to close: do not wait long.
        if tokio::time::timeout(Duration::from_millis(300), &mut self.server).await.is_err() {
            self.server.abort();
        }
    }
}

pub async fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node id of Raft id `id`.
pub fn node_id(id: u64) -> String {
    format!("{id:016x}")
}
