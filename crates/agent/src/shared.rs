//! What the worker shares with its runners: the specs of the networks and
//! named volumes the dispatcher sent, the registry credentials of the
//! node's tasks' stacks, and the status reports runners send back. Below both `worker` and `runner`, so that neither imports the other
//! for them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use stackd_core::model::{StackNetwork, StackVolume, TaskId, TaskStatus};
use stackd_core::registry::RegistryCredential;
use tokio::sync::Notify;

/// A status change of a task, as a runner reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The task.
    pub task_id: TaskId,
    /// Its new status.
    pub status: TaskStatus,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stack's credentials for one registry, as the dispatcher sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The stack whose deploy sent them.
    pub stack: String,
    /// The registry (`docker.io`, or the host[:port] of image references).
    pub registry: String,
    /// The credentials (`Debug` hides them).
    pub credential: RegistryCredential,
}

/// The registry credentials the dispatcher sent, by stack and registry:
/// kept in memory only, never written or logged.
#[derive(Debug, Default)]
pub(crate) struct Logins {
    by_stack: Mutex<BTreeMap<(String, String), RegistryCredential>>,
}

impl Logins {
    /// Records what an assignment brought (`full`: the node's whole set:
    /// what it lacks goes) and forgets what it says no task needs.
    pub(crate) fn record(&self, full: bool, logins: Vec<RegistryLogin>, removed: &[(String, String)]) {
        let mut m = lock(&self.by_stack);
        if full {
            m.clear();
        }
        for key in removed {
            m.remove(key);
        }
        for l in logins {
            m.insert((l.stack, l.registry), l.credential);
        }
    }

    /// The credentials of `stack` for `registry`, if its deploy sent some.
    pub(crate) fn get(&self, stack: &str, registry: &str) -> Option<RegistryCredential> {
        lock(&self.by_stack).get(&(stack.to_string(), registry.to_string())).cloned()
    }
}

/// What the worker shares with its runners about networks (and the specs
/// of named volumes, which are never collected).
#[derive(Debug, Default)]
pub(crate) struct Networks {
    /// The specs the dispatcher sent, by stack and engine name.
    specs: Mutex<BTreeMap<(String, String), StackNetwork>>,
    /// The volume specs the dispatcher sent, by stack and engine name.
    volumes: Mutex<BTreeMap<(String, String), StackVolume>>,
    /// Engine names of the networks the node's live tasks attach to.
    wanted: Mutex<BTreeSet<String>>,
    /// Wakes the collector.
    gc: Notify,
    /// The node's share of the cluster's networks, as last sent.
    view: Mutex<stackd_core::net::NodeView>,
    /// Bumped with each new view: wakes the data plane.
    view_changed: Notify,
    /// The routing mesh's PROXY protocol hops' open connections, by port
    /// (set by the data plane after each pass; read by the usage reports).
    proxied: Mutex<BTreeMap<u16, crate::proxy::OpenConnections>>,
    /// The node's tasks' addresses and `dns:` servers.
    own: Mutex<Own>,
}

/// What the DNS server needs of the node's own tasks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Own {
    /// Each container address of the node's tasks, with its networks.
    pub(crate) addresses: crate::dns::OwnAddresses,
    /// The `dns:` servers of the node's tasks, by stack: the upstreams for
    /// the names that are not the stack's.
    pub(crate) upstreams: BTreeMap<String, Vec<std::net::SocketAddr>>,
}

impl Networks {
    /// The spec of the network `name` of the stack `stack`, as last sent.
    pub(crate) fn get(&self, stack: &str, name: &str) -> Option<StackNetwork> {
        lock(&self.specs).get(&(stack.to_string(), name.to_string())).cloned()
    }

    /// The spec of the named volume `name` of the stack `stack`, as last sent.
    pub(crate) fn volume(&self, stack: &str, name: &str) -> Option<StackVolume> {
        lock(&self.volumes).get(&(stack.to_string(), name.to_string())).cloned()
    }

    /// Records the volume specs of an assignment (a full one replaces them all).
    pub(crate) fn record_volumes(&self, full: bool, volumes: Vec<StackVolume>) {
        let mut specs = lock(&self.volumes);
        if full {
            specs.clear();
        }
        for v in volumes {
            specs.insert((v.stack.clone(), v.spec.name.clone()), v);
        }
    }

    /// Asks the collector for a pass soon.
    pub(crate) fn collect_soon(&self) {
        self.gc.notify_one();
    }

    /// Resolves when a collection was asked for.
    pub(crate) async fn collection_asked(&self) {
        self.gc.notified().await;
    }

    /// Engine names of the networks the node's live tasks attach to.
    pub(crate) fn wanted(&self) -> BTreeSet<String> {
        lock(&self.wanted).clone()
    }

    /// Records the specs of an assignment (a full one replaces them all).
    pub(crate) fn record(&self, full: bool, networks: Vec<StackNetwork>) {
        let mut specs = lock(&self.specs);
        if full {
            specs.clear();
        }
        for n in networks {
            specs.insert((n.stack.clone(), n.spec.name.clone()), n);
        }
    }

    /// The view of the network `name` (its subnet and this node's gateway), if sent.
    pub(crate) fn view_of(&self, name: &str) -> Option<stackd_core::net::NetView> {
        lock(&self.view).networks.iter().find(|n| n.name == name).cloned()
    }

    /// The node's whole network view, as last sent.
    pub(crate) fn view(&self) -> stackd_core::net::NodeView {
        lock(&self.view).clone()
    }

    /// Records a new view and wakes the data plane.
    pub(crate) fn set_view(&self, view: stackd_core::net::NodeView) {
        *lock(&self.view) = view;
        self.view_changed.notify_one();
    }

    /// Records the PROXY protocol hops the data plane runs.
    pub(crate) fn set_proxied(&self, hops: BTreeMap<u16, crate::proxy::OpenConnections>) {
        *lock(&self.proxied) = hops;
    }

    /// The connections each PROXY protocol hop holds open now, by port.
    pub(crate) fn proxied_open(&self) -> BTreeMap<u16, u64> {
        lock(&self.proxied).iter().map(|(port, c)| (*port, c.get())).collect()
    }

    /// Wakes the data plane (a network was created).
    pub(crate) fn kick(&self) {
        self.view_changed.notify_one();
    }

    /// Records the node's tasks' addresses and `dns:` servers, for the DNS server.
    pub(crate) fn set_own(&self, own: Own) {
        *lock(&self.own) = own;
    }

    /// The node's tasks' addresses and `dns:` servers.
    pub(crate) fn own(&self) -> Own {
        lock(&self.own).clone()
    }

    /// Resolves when a new view arrived (since the last call).
    pub(crate) async fn view_changed(&self) {
        self.view_changed.notified().await;
    }

    /// Sets the wanted networks; true if one is no longer wanted.
    pub(crate) fn want(&self, now: BTreeSet<String>) -> bool {
        let mut wanted = lock(&self.wanted);
        let dropped = !wanted.is_subset(&now);
        *wanted = now;
        dropped
    }
}
