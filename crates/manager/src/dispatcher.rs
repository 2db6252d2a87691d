//! The dispatcher: one session per agent, on the leader.
//!
//! ```text
//!  agent ──Session──► register node (UpsertNode + Ready) ──► stream:
//!                       full task set of the node, then changes, each with
//!                       the specs of the networks its tasks attach to and
//!                       of the named volumes they mount, and the
//!                       managers' addresses
//!
//!  fan_out: after each applied entry (10 ms batch) ──► every session wakes
//!           with what all send alike (managers, image tags to resolve);
//!           a session reads its node's tasks only if the node's change
//!           stamp moved (Tasks::node_stamp), and diffs them by Arc identity
//!        ──Heartbeat──► last-seen time (leader memory, not replicated)
//!        ──UpdateTaskStatus──► one UpdateTaskStatus command per call
//!        ──ReportUsage──► the node's own tasks and existing services
//!                         (dispatcher/usage.rs) ──► UsageBook (autoscaler;
//!                         leader memory, cleared when the lead is lost)
//!
//!  monitor (monitor.rs): a Ready node silent for NODE_DOWN_AFTER ──► SetNodeState Down
//! ```
//!
//! Every call must come with the node's own certificate: one of this
//! cluster, whose CN is the node id the request names.
//!
//! # Leader only
//!
//! Liveness (who heartbeat when) is the leader's memory, so agents must talk
//! to the leader. Every call is refused unless this manager leads with a
//! majority ([`RaftNode::leader_watch`]): `unavailable`, with the leader's
//! address in the `x-stackd-leader` metadata when another manager is known
//! to lead. A session stream ends with the same refusal when this manager
//! stops leading, so that its agent moves on. A new leader knows nothing of
//! the last heartbeats: it waits [`LEADER_GRACE`] before it declares anyone
//! down, time for the agents to reconnect to it.
//!
//! [`LEADER_GRACE`]: stackd_core::liveness::LEADER_GRACE

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackd_core::command::TaskStatusUpdate;
use stackd_core::model::{
    Availability, DataKind, DesiredState, MountKind, Node, NodeId, NodeRole, NodeState, Resources, StackNetwork,
    StackVolume, Task, TaskId, Timestamp,
};
use stackd_core::{ClusterState, Command, Refusal};
use stackd_proto::{metadata, v1};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::logs::LogBroker;
use crate::now_ms;
use crate::raft::RaftNode;
use crate::reconcile::mono_ms;
use crate::refusal::refused;
use crate::util::lock;

mod usage;

/// How often agents heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the session waits for more changes before it sends them.
const BATCH: Duration = Duration::from_millis(10);

struct Session {
    id: String,
    /// [`mono_ms`] of the last call.
    last_seen: Timestamp,
}

/// The dispatcher gRPC service.
#[derive(Clone)]
pub struct Dispatcher {
    raft: RaftNode,
    /// The cluster's id, which node certificates must carry.
    cluster_id: Arc<str>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Wakes the sessions after changes: see [`fan_out`].
    rounds: watch::Receiver<Arc<Common>>,
    /// The image pins being proposed (service id, revision): a second
    /// answer meanwhile proposes nothing.
    pinning: Arc<Mutex<BTreeSet<(String, u64)>>>,
    /// Nodes this manager declared down for missed heartbeats, since it started.
    declared_down: Arc<std::sync::atomic::AtomicU64>,
    /// The relay of `stackctl logs` (logs.rs).
    logs: LogBroker,
    /// What the agents report of their tasks' use, for the autoscaler.
    usage: crate::autoscale::UsageBook,
}

/// The refusal of a manager that does not lead with a majority: `unavailable`
/// (agents try another manager), with the leader's address in
/// [`metadata::LEADER`] when another manager is known to lead.
fn not_leader(raft: &RaftNode) -> Status {
    let leader = raft.leader_addr();
    let mut status = Status::unavailable(match &leader {
        Some(addr) => format!("not the leader; the leader is at {addr}"),
        None => "not the leader, and no leader with a majority is known: try another manager".to_string(),
    });
    if let Some(value) = leader.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(metadata::LEADER, value);
    }
    status
}

/// The addresses of the manager nodes, as the state records them: where
/// agents may open a session.
fn manager_addrs(state: &ClusterState) -> Vec<String> {
    state.nodes.values().filter(|n| n.role == NodeRole::Manager && !n.addr.is_empty()).map(|n| n.addr.clone()).collect()
}

fn session_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().r#gen();
    format!("{n:032x}")
}

impl Dispatcher {
    /// A dispatcher over `raft`, for the cluster `cluster_id`.
    /// Must be called within a tokio runtime: it starts the [`fan_out`] task.
    pub fn new(raft: RaftNode, cluster_id: &str) -> Self {
        let (tx, rounds) = watch::channel(Arc::new(Common::default()));
        tokio::spawn(fan_out(raft.clone(), tx));
        let book = crate::autoscale::UsageBook::default();
        tokio::spawn(forget_usage(raft.leader_watch(), book.clone()));
        Self {
            cluster_id: cluster_id.into(),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            rounds,
            pinning: Arc::default(),
            declared_down: Arc::default(),
            logs: LogBroker::new(raft.clone()),
            usage: book,
            raft,
        }
    }

    /// The agents' usage reports, which the autoscaler reads.
    pub(crate) fn usage(&self) -> &crate::autoscale::UsageBook {
        &self.usage
    }

    /// The log relay, which the control API's `Logs` subscribes through.
    pub(crate) fn logs(&self) -> &LogBroker {
        &self.logs
    }

    /// Agent sessions open on this manager.
    pub(crate) fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Nodes this manager declared down for missed heartbeats since it started.
    pub(crate) fn declared_down(&self) -> u64 {
        self.declared_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a node declared down.
    pub(crate) fn count_declared_down(&self) {
        self.declared_down.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuses `req` unless it comes with the certificate of `node_id`.
    fn check_node<T>(&self, req: &Request<T>, node_id: &str) -> Result<(), Status> {
        crate::auth::check_node(req, &self.cluster_id, node_id)
    }

    /// Refuses unless this manager leads with a majority.
    fn check_leader(&self) -> Result<(), Status> {
        if self.raft.is_leading() { Ok(()) } else { Err(not_leader(&self.raft)) }
    }

    fn touch(&self, node_id: &str, session: &str) -> Result<(), Status> {
        let mut sessions = lock(&self.sessions);
        match sessions.get_mut(node_id) {
            Some(s) if s.id == session => {
                s.last_seen = mono_ms();
                Ok(())
            }
            _ => Err(refused(Refusal::not_found("unknown session: open a new one"))),
        }
    }

    /// The last heartbeat (any call) of each node with a session, in
    /// [`mono_ms`]: what the node monitor judges liveness by.
    pub(crate) fn last_seen(&self) -> BTreeMap<NodeId, Timestamp> {
        let sessions = lock(&self.sessions);
        sessions.iter().map(|(node, s)| (node.clone(), s.last_seen)).collect()
    }
}

/// A network by the stack that declares it and its engine name.
type NetworkKey = (String, String);

/// The named volumes a task mounts, by its stack and their engine names.
fn volume_keys(t: &Task) -> impl Iterator<Item = NetworkKey> + '_ {
    t.template
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume && !m.source.is_empty())
        .map(|m| (t.stack.clone(), m.source.clone()))
}

/// The volumes `tasks` mount, among `known`.
fn volumes_of<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    known: &BTreeMap<NetworkKey, StackVolume>,
) -> Vec<v1::StackVolume> {
    let keys: BTreeSet<NetworkKey> = tasks.into_iter().flat_map(volume_keys).collect();
    keys.iter().filter_map(|k| known.get(k)).map(v1::StackVolume::from).collect()
}

/// What a node's tasks need besides themselves: the networks they attach
/// to and the named volumes they mount, as their stacks declare them.
#[derive(Debug, Default)]
struct NodeNeeds {
    networks: BTreeMap<NetworkKey, StackNetwork>,
    volumes: BTreeMap<NetworkKey, StackVolume>,
}

/// The tasks of one node (as the state shares them), and the networks and
/// volumes they need (those their stack declares; a task's stack may have
/// dropped one meanwhile). A look at the node's tasks only.
fn node_tasks(s: &ClusterState, node_id: &str) -> (HashMap<TaskId, Arc<Task>>, NodeNeeds) {
    let tasks: HashMap<TaskId, Arc<Task>> = s.tasks.of_node(node_id).map(|t| (t.id.clone(), t.clone())).collect();
    let mut networks = BTreeMap::new();
    for t in tasks.values() {
        for a in &t.template.networks {
            let key = (t.stack.clone(), a.network.clone());
            if !networks.contains_key(&key)
                && let Some(n) = s.stack_network(&t.stack, &a.network)
            {
                networks.insert(key, n);
            }
        }
    }
    let mut volumes = BTreeMap::new();
    for t in tasks.values() {
        for key in volume_keys(t) {
            if !volumes.contains_key(&key)
                && let Some(v) = s.stack_volume(&key.0, &key.1)
            {
                volumes.insert(key, v);
            }
        }
    }
    (tasks, NodeNeeds { networks, volumes })
}

/// The networks `tasks` attach to, among `known`.
fn networks_of<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    known: &BTreeMap<NetworkKey, StackNetwork>,
) -> Vec<v1::StackNetwork> {
    let mut keys = std::collections::BTreeSet::new();
    for t in tasks {
        for a in &t.template.networks {
            keys.insert((t.stack.clone(), a.network.clone()));
        }
    }
    keys.iter().filter_map(|k| known.get(k)).map(v1::StackNetwork::from).collect()
}

/// The contents of the configs and secrets that `tasks` refer to: a node
/// receives only what its own tasks use.
fn file_objects(
    state: &ClusterState,
    tasks: &[&Task],
    sent: &mut BTreeSet<(DataKind, String, String)>,
) -> Vec<v1::FileObject> {
    let mut out = Vec::new();
    // Only tasks that may still start a container need contents.
    let starting = tasks.iter().filter(|t| t.desired_state == DesiredState::Running && !t.status.state.is_terminal());
    for t in starting {
        let refs = t.template.configs.iter().map(|r| (DataKind::Config, r));
        for (kind, r) in refs.chain(t.template.secrets.iter().map(|r| (DataKind::Secret, r))) {
            let key = (kind, r.name.clone(), r.digest.clone());
            if sent.contains(&key) {
                continue;
            }
            // A missing object (removed meanwhile) is left out: the agent rejects the task, saying so.
            if let Some(data) = state.objects(kind).get(&r.name).and_then(|o| o.content(&r.digest)) {
                out.push(v1::FileObject {
                    kind: v1::DataKind::from(kind).into(),
                    name: r.name.clone(),
                    digest: r.digest.clone(),
                    data: data.0.clone(),
                });
                sent.insert(key);
            }
        }
    }
    out
}

/// The registry credentials that the images of `tasks` (the node's whole
/// task set) need (those of the tasks that may still start a container, from
/// their stack's credentials): a node receives only those of its own tasks'
/// stacks and registries, each once per session, and again when the stack's
/// credentials change; and the keys of those it holds that none needs any
/// more, which it forgets.
fn registry_logins(
    state: &ClusterState,
    tasks: &[&Task],
    sent: &mut BTreeMap<(String, String), String>,
) -> (Vec<v1::RegistryCredential>, Vec<v1::RegistryCredential>) {
    let mut out = Vec::new();
    let mut wanted = BTreeSet::new();
    let starting = tasks.iter().filter(|t| t.desired_state == DesiredState::Running && !t.status.state.is_terminal());
    for t in starting {
        let Some(stack) = state.stacks.get(&t.stack) else { continue };
        let Some((registry, c)) = stack.registry_auth.for_image(t.run_image()) else { continue };
        let key = (t.stack.clone(), registry.to_string());
        if !wanted.insert(key.clone()) {
            continue;
        }
        // The digest tells a changed credential; it is kept in this memory only.
        let digest =
            stackd_core::model::digest(format!("{}\0{}\0{}", c.username, c.password, c.identity_token).as_bytes());
        if sent.get(&key) == Some(&digest) {
            continue;
        }
        let mut wire = stackd_proto::registry_credential(registry, c);
        wire.stack = t.stack.clone();
        out.push(wire);
        sent.insert(key, digest);
    }
    // What the node holds and no task of it needs any more: forgotten.
    let gone: Vec<(String, String)> = sent.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
    let removed = gone
        .into_iter()
        .map(|(stack, registry)| {
            sent.remove(&(stack.clone(), registry.clone()));
            v1::RegistryCredential { stack, registry, ..Default::default() }
        })
        .collect();
    (out, removed)
}

/// How many agents are asked to resolve one image tag (the first answer wins).
const RESOLVERS: usize = 3;

/// The service revisions whose image tag waits to be resolved, each with
/// the [`RESOLVERS`] ready nodes asked to resolve it: those that rank first
/// by a hash of the revision and the node (rendezvous hashing, so the choice
/// stays while the nodes do, and spreads the work over the nodes). Asking
/// every agent made 1,000 nodes send 1,000 answers per deploy.
fn images_to_resolve(state: &ClusterState) -> Vec<(v1::ImageToResolve, Vec<NodeId>)> {
    use std::hash::{Hash, Hasher};
    let ready: Vec<&NodeId> = state.nodes.values().filter(|n| n.state == NodeState::Ready).map(|n| &n.id).collect();
    state
        .images_to_resolve()
        .map(|s| {
            let mut ranked: Vec<(u64, &NodeId)> = ready
                .iter()
                .map(|n| {
                    let mut h = std::hash::DefaultHasher::new();
                    (&s.id, s.revision, n).hash(&mut h);
                    (h.finish(), *n)
                })
                .collect();
            ranked.sort_unstable();
            let asked = ranked.iter().rev().take(RESOLVERS).map(|(_, n)| (*n).clone()).collect();
            // A private tag is resolved with the stack's credentials for its
            // registry: the nodes asked get them with the question only.
            let login = state
                .stacks
                .get(&s.stack)
                .and_then(|st| st.registry_auth.for_image(&s.spec.task.image))
                .map(|(registry, c)| stackd_proto::registry_credential(registry, c));
            let image = v1::ImageToResolve {
                service_id: s.id.clone(),
                revision: s.revision,
                image: s.spec.task.image.clone(),
                login,
            };
            (image, asked)
        })
        .collect()
}

/// What every session sends alike, computed once per change of the state
/// (by [`fan_out`]) rather than once per session.
#[derive(Debug, Default)]
struct Common {
    /// The managers' addresses ([`manager_addrs`]).
    managers: Vec<String>,
    /// The image tags to resolve, each with the nodes asked ([`images_to_resolve`]).
    images: Vec<(v1::ImageToResolve, Vec<NodeId>)>,
}

/// Wakes the sessions after each change of the state (at most every
/// [`BATCH`]), with what they all send alike; ends when the dispatcher is
/// gone or the state machine stops.
async fn fan_out(raft: RaftNode, tx: watch::Sender<Arc<Common>>) {
    let mut applied = raft.shared().applied();
    loop {
        applied.borrow_and_update();
        let common = raft.shared().read(|s| Common { managers: manager_addrs(s), images: images_to_resolve(s) });
        tx.send_replace(Arc::new(common));
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
        tokio::time::sleep(BATCH).await;
    }
}

/// Empties the usage book whenever this manager stops leading: a later
/// lead starts from the agents' next reports, never from old ones. Ends
/// with the Raft node.
async fn forget_usage(mut leading: watch::Receiver<bool>, book: crate::autoscale::UsageBook) {
    loop {
        if !*leading.borrow_and_update() {
            book.clear();
        }
        if leading.changed().await.is_err() {
            return;
        }
    }
}

/// What a session sent last, to send only what changed since.
#[derive(Default)]
struct Sent {
    /// The node's tasks, as the state shared them: an unchanged task is the
    /// same `Arc` (see [`stackd_core::state::Tasks`]).
    tasks: HashMap<TaskId, Arc<Task>>,
    /// The node's change stamp when they were read (`None`: nothing sent yet).
    stamp: Option<u64>,
    /// Contents sent in this session: each once (the agent keeps them).
    objects: BTreeSet<(DataKind, String, String)>,
    /// Registry credentials sent in this session, by (stack, registry): a
    /// digest of what was sent.
    logins: BTreeMap<(String, String), String>,
    managers: Vec<String>,
    view: Option<stackd_core::net::NodeView>,
    images: Vec<v1::ImageToResolve>,
}

/// The next message of a session, if anything changed for its node since
/// `sent` (which it then records). A look at the node's own tasks only, and
/// only when its change stamp moved; the network view is the node's share.
fn next_message(s: &ClusterState, node_id: &str, common: &Common, sent: &mut Sent) -> Option<v1::SessionMessage> {
    let first = sent.stamp.is_none();
    let stamp = s.tasks.node_stamp(node_id);
    let assignments = (sent.stamp != Some(stamp)).then(|| {
        let (now, needs) = node_tasks(s, node_id);
        let changed: Vec<&Task> = now
            .values()
            .filter(|t| !sent.tasks.get(&t.id).is_some_and(|old| Arc::ptr_eq(old, t) || **old == ***t))
            .map(|t| &**t)
            .collect();
        let removed: Vec<String> = sent.tasks.keys().filter(|id| !now.contains_key(*id)).cloned().collect();
        let message = (first || !changed.is_empty() || !removed.is_empty()).then(|| {
            let (networks, volumes) = if first {
                let all = now.values().map(|t| &**t);
                (networks_of(all.clone(), &needs.networks), volumes_of(all, &needs.volumes))
            } else {
                (
                    networks_of(changed.iter().copied(), &needs.networks),
                    volumes_of(changed.iter().copied(), &needs.volumes),
                )
            };
            let objects = file_objects(s, &changed, &mut sent.objects);
            let all: Vec<&Task> = now.values().map(|t| &**t).collect();
            let (registry_auth, registry_auth_removed) = registry_logins(s, &all, &mut sent.logins);
            let tasks: Vec<v1::Task> = changed.iter().copied().map(v1::Task::from).collect();
            v1::Assignments {
                full: first,
                tasks,
                removed,
                objects,
                networks,
                volumes,
                registry_auth,
                registry_auth_removed,
            }
        });
        sent.tasks = now;
        sent.stamp = Some(stamp);
        message
    });
    let assignments = assignments.flatten();
    let view = stackd_core::net::node_view(s, node_id);
    let view_changed = sent.view.as_ref() != Some(&view);
    let images: Vec<v1::ImageToResolve> =
        common.images.iter().filter(|(_, asked)| asked.iter().any(|n| n == node_id)).map(|(i, _)| i.clone()).collect();
    if assignments.is_none() && !view_changed && common.managers == sent.managers && images == sent.images {
        return None;
    }
    // Every message carries the whole list of managers: a few short
    // addresses, in messages that come only on changes, and the agent never
    // depends on having seen an earlier one (it simply merges).
    let msg = v1::SessionMessage {
        session_id: String::new(),
        heartbeat_period_ms: HEARTBEAT.as_millis() as u64,
        assignments,
        managers: common.managers.clone(),
        network_view: view_changed.then(|| v1::NetworkView::from(&view)),
        resolve_images: images.clone(),
        restore_generation: s.restore_generation,
        log_subscriptions: Vec::new(),
    };
    sent.managers = common.managers.clone();
    sent.images = images;
    sent.view = Some(view);
    Some(msg)
}

/// Sends the node's task set, then its changes, until the agent goes away
/// or this manager stops leading (the stream then ends with `unavailable`).
///
/// Log subscriptions for the node (logs.rs) go out as they come, in messages
/// of their own that repeat what the last one said of the rest.
async fn stream_assignments(
    raft: RaftNode,
    mut rounds: watch::Receiver<Arc<Common>>,
    node_id: String,
    session: String,
    tx: mpsc::Sender<Result<v1::SessionMessage, Status>>,
    logs: LogBroker,
) {
    let (epoch, mut subscriptions) = logs.attach(&node_id);
    serve_session(&raft, &mut rounds, &node_id, &session, &tx, &mut subscriptions).await;
    logs.detach(&node_id, epoch);
}

async fn serve_session(
    raft: &RaftNode,
    rounds: &mut watch::Receiver<Arc<Common>>,
    node_id: &str,
    session: &str,
    tx: &mpsc::Sender<Result<v1::SessionMessage, Status>>,
    subscriptions: &mut mpsc::Receiver<v1::LogSubscription>,
) {
    let mut leading = raft.leader_watch();
    let mut sent = Sent::default();
    loop {
        if !*leading.borrow_and_update() {
            tracing::info!(node = %node_id, session = %session, "no longer the leader: ending the agent's session");
            let _ = tx.send(Err(not_leader(raft))).await;
            return;
        }
        let common = rounds.borrow_and_update().clone();
        if let Some(mut msg) = raft.shared().read(|s| next_message(s, node_id, &common, &mut sent)) {
            msg.session_id = session.to_string();
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            Some(first) = subscriptions.recv(), if sent.stamp.is_some() => {
                let mut log_subscriptions = vec![first];
                while let Ok(more) = subscriptions.try_recv() {
                    log_subscriptions.push(more);
                }
                let msg = v1::SessionMessage {
                    session_id: session.to_string(),
                    heartbeat_period_ms: HEARTBEAT.as_millis() as u64,
                    managers: sent.managers.clone(),
                    resolve_images: sent.images.clone(),
                    restore_generation: raft.shared().read(|s| s.restore_generation),
                    log_subscriptions,
                    ..Default::default()
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            r = rounds.changed() => if r.is_err() { return },
            // Checked at the top of the loop.
            r = leading.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::SessionMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::dispatcher_server::Dispatcher for Dispatcher {
    type SessionStream = SessionStream;

    async fn session(&self, req: Request<v1::SessionRequest>) -> Result<Response<Self::SessionStream>, Status> {
        let node_id = req.get_ref().description.as_ref().map(|d| d.node_id.clone()).unwrap_or_default();
        self.check_node(&req, &node_id)?;
        self.check_leader()?;
        let d = req.into_inner().description.ok_or_else(|| refused(Refusal::invalid("missing node description")))?;
        if d.node_id.is_empty() {
            return Err(refused(Refusal::invalid("missing node id")));
        }
        // Only a member speaks here, with the role the cluster gave it: a
        // removed node's certificate stays valid, but brings nothing back.
        let Some(role) = self.raft.shared().read(|s| s.nodes.get(&d.node_id).map(|n| n.role)) else {
            return Err(refused(Refusal::permission_denied(format!(
                "node {} is not a member of the cluster (it was removed, or never joined): join it again",
                d.node_id
            ))));
        };
        let resources = d.resources.and_then(|r| Resources::try_from(r).ok()).unwrap_or_default();
        let node = Node {
            id: d.node_id.clone(),
            name: d.name,
            addr: d.addr,
            role,
            availability: Availability::Active,
            state: NodeState::Ready,
            labels: Default::default(),
            resources,
            engine_version: d.engine_version,
            engine: d.engine.map(stackd_core::model::EngineDescription::from).unwrap_or_default(),
            updated_at: 0,
        };
        let at = now_ms();
        self.raft.propose(Command::UpsertNode { node, at }).await.map_err(Status::from)?;
        self.raft
            .propose(Command::SetNodeState { id: d.node_id.clone(), state: NodeState::Ready, at })
            .await
            .map_err(Status::from)?;
        let id = session_id();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.node_id.clone(), Session { id: id.clone(), last_seen: mono_ms() });
        tracing::info!(node = %d.node_id, session = %id, "agent session opened");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream_assignments(self.raft.clone(), self.rounds.clone(), d.node_id, id, tx, self.logs.clone()));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        self.check_node(&req, &req.get_ref().node_id)?;
        self.check_leader()?;
        let r = req.into_inner();
        self.touch(&r.node_id, &r.session_id)?;
        let down = self.raft.shared().read(|s| s.nodes.get(&r.node_id).is_some_and(|n| n.state != NodeState::Ready));
        if down {
            self.raft
                .propose(Command::SetNodeState { id: r.node_id.clone(), state: NodeState::Ready, at: now_ms() })
                .await
                .map_err(Status::from)?;
        }
        Ok(Response::new(v1::HeartbeatResponse { period_ms: HEARTBEAT.as_millis() as u64 }))
    }

    async fn update_task_status(
        &self,
        req: Request<v1::UpdateTaskStatusRequest>,
    ) -> Result<Response<v1::UpdateTaskStatusResponse>, Status> {
        self.check_node(&req, &req.get_ref().node_id)?;
        self.check_leader()?;
        let r = req.into_inner();
        self.touch(&r.node_id, &r.session_id)?;
        let mut updates = Vec::with_capacity(r.updates.len());
        for u in r.updates {
            let status = u.status.ok_or_else(|| refused(Refusal::invalid("status report without status")))?;
            let status =
                status.try_into().map_err(|e: stackd_proto::ConvertError| refused(Refusal::invalid(e.to_string())))?;
            updates.push(TaskStatusUpdate { task_id: u.task_id, node_id: r.node_id.clone(), status });
        }
        if !updates.is_empty() {
            self.raft.propose(Command::UpdateTaskStatus { updates, at: now_ms() }).await.map_err(Status::from)?;
        }
        Ok(Response::new(v1::UpdateTaskStatusResponse {}))
    }

    async fn report_image(
        &self,
        req: Request<v1::ReportImageRequest>,
    ) -> Result<Response<v1::ReportImageResponse>, Status> {
        self.check_node(&req, &req.get_ref().node_id)?;
        self.check_leader()?;
        Ok(Response::new(self.image_reported(req.into_inner()).await?))
    }

    async fn report_usage(
        &self,
        req: Request<v1::ReportUsageRequest>,
    ) -> Result<Response<v1::ReportUsageResponse>, Status> {
        self.check_node(&req, &req.get_ref().node_id)?;
        self.check_leader()?;
        let r = req.into_inner();
        usage::check_size(&r)?;
        self.touch(&r.node_id, &r.session_id)?;
        let node = r.node_id.clone();
        let kept = self.raft.shared().read(|s| usage::keep(s, &node, r));
        self.usage.record(&node, now_ms(), kept.tasks, kept.connections);
        Ok(Response::new(v1::ReportUsageResponse {}))
    }

    async fn publish_logs(
        &self,
        req: Request<tonic::Streaming<v1::PublishLogsRequest>>,
    ) -> Result<Response<v1::PublishLogsResponse>, Status> {
        self.check_leader()?;
        let peer = crate::peer::peer_node(&req, &self.cluster_id)?
            .ok_or_else(|| Status::unauthenticated("PublishLogs needs the node's certificate"))?;
        let mut stream = req.into_inner();
        let first =
            stream.message().await?.ok_or_else(|| refused(Refusal::invalid("PublishLogs without a message")))?;
        if first.node_id != peer.node_id {
            return Err(Status::permission_denied(format!(
                "the certificate of node {} cannot publish the logs of node {}",
                peer.node_id, first.node_id
            )));
        }
        self.logs.publish(&peer.node_id, first, stream).await?;
        Ok(Response::new(v1::PublishLogsResponse {}))
    }
}

impl Dispatcher {
    /// `ReportImage`: what an image tag means, as the node's engine found it.
    async fn image_reported(&self, r: v1::ReportImageRequest) -> Result<v1::ReportImageResponse, Status> {
        self.touch(&r.node_id, &r.session_id)?;
        let pin = r.pin.ok_or_else(|| refused(Refusal::invalid("image report without a pin")))?;
        let pin = stackd_core::model::ImagePin::try_from(pin)
            .map_err(|e: stackd_proto::ConvertError| refused(Refusal::invalid(e.to_string())))?;
        if pin.is_pending() {
            return Err(refused(Refusal::invalid("an image report must carry a digest or a reason")));
        }
        // Already answered (by this node or another): nothing to propose.
        let waiting = self.raft.shared().read(|s| {
            s.services.get(&r.service_id).is_some_and(|svc| svc.revision == r.revision && svc.image.is_pending())
        });
        let key = (r.service_id.clone(), r.revision);
        if waiting && lock(&self.pinning).insert(key.clone()) {
            let cmd = Command::PinImage { service_id: r.service_id, revision: r.revision, pin, at: now_ms() };
            let proposed = self.raft.propose(cmd).await.map_err(Status::from);
            lock(&self.pinning).remove(&key);
            proposed?;
        }
        Ok(v1::ReportImageResponse {})
    }
}

#[cfg(test)]
mod tests {
    use stackd_core::model::{DesiredState, NetworkAttachment, NetworkSpec, TaskStatus, TaskTemplate};

    use super::*;

    fn task(stack: &str, networks: &[&str]) -> Task {
        Task {
            id: format!("{stack}-{}", networks.join("-")),
            service_id: "s".into(),
            service_name: format!("{stack}_web"),
            stack: stack.into(),
            slot: 1,
            node_id: Some("n1".into()),
            revision: 1,
            template: TaskTemplate {
                networks: networks
                    .iter()
                    .map(|n| NetworkAttachment { network: n.to_string(), aliases: vec![] })
                    .collect(),
                ..Default::default()
            },
            desired_state: DesiredState::Running,
            status: TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    #[test]
    fn contents_go_once_per_session_and_only_to_tasks_that_may_start() {
        use stackd_core::model::{Blob, FileRef, StoredObject, TaskState};
        let mut state = ClusterState::default();
        state.secrets.insert(
            "app_db".into(),
            StoredObject {
                name: "app_db".into(),
                stack: "app".into(),
                labels: BTreeMap::new(),
                current: "d1".into(),
                versions: BTreeMap::from([("d1".to_string(), Blob(b"pw".to_vec()))]),
                created_at: 0,
                updated_at: 0,
            },
        );
        let with_secret = |id: &str| {
            let mut t = task("app", &[]);
            t.id = id.into();
            t.template.secrets = vec![FileRef { name: "app_db".into(), digest: "d1".into(), ..FileRef::default() }];
            t
        };
        let (a, b) = (with_secret("a"), with_secret("b"));
        let mut done = with_secret("c");
        done.status.state = TaskState::Complete;
        let mut sent = BTreeSet::new();
        assert!(file_objects(&state, &[&done], &mut sent).is_empty(), "a finished task needs no content");
        let first = file_objects(&state, &[&a, &b], &mut sent);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].data, b"pw");
        assert!(file_objects(&state, &[&a], &mut sent).is_empty(), "sent once per session");
    }

    #[test]
    fn registry_credentials_go_to_the_tasks_of_their_stack_and_registry_once() {
        use stackd_core::model::{Stack, TaskState};
        use stackd_core::registry::{RegistryAuth, RegistryCredential};
        let login =
            |user: &str| RegistryCredential { username: user.into(), password: "pw".into(), ..Default::default() };
        let mut state = ClusterState::default();
        for (name, registry, user) in [("app", "reg.example.com:5000", "app-user"), ("other", "other.example.com", "o")]
        {
            let auth = RegistryAuth([(registry.to_string(), login(user))].into());
            let stack = Stack {
                name: name.into(),
                volumes: BTreeMap::new(),
                networks: BTreeMap::new(),
                registry_auth: auth,
                created_at: 0,
                updated_at: 0,
            };
            state.stacks.insert(name.into(), stack);
        }
        let with_image = |id: &str, image: &str| {
            let mut t = task("app", &[]);
            t.id = id.into();
            t.template.image = image.into();
            t
        };
        let private = with_image("a", "reg.example.com:5000/app/web:1");
        let twin = with_image("b", "reg.example.com:5000/app/worker:1");
        let public = with_image("c", "redis:7");
        let elsewhere = with_image("d", "other.example.com/x:1");
        let mut done = with_image("e", "reg.example.com:5000/app/web:1");
        done.status.state = TaskState::Failed;
        let mut sent = BTreeMap::new();
        let (none, _) = registry_logins(&state, &[&done, &public, &elsewhere], &mut sent);
        assert!(none.is_empty(), "{sent:?}");
        let (first, removed) = registry_logins(&state, &[&private, &twin], &mut sent);
        assert!(removed.is_empty());
        assert_eq!(first.len(), 1, "once per stack and registry: {first:?}");
        assert_eq!((first[0].stack.as_str(), first[0].registry.as_str()), ("app", "reg.example.com:5000"));
        assert_eq!(first[0].username, "app-user");
        assert!(!format!("{first:?}").contains("app-user"), "Debug hides them: {first:?}");
        assert!(registry_logins(&state, &[&private], &mut sent).0.is_empty(), "sent once per session");
        // New credentials (a deploy --with-registry-auth) go again.
        if let Some(st) = state.stacks.get_mut("app") {
            st.registry_auth.0.insert("reg.example.com:5000".into(), login("new-user"));
        }
        let (again, _) = registry_logins(&state, &[&private], &mut sent);
        assert_eq!(again.iter().map(|c| c.username.as_str()).collect::<Vec<_>>(), ["new-user"]);
        // The stack removed (its tasks go with it): the node forgets them.
        state.stacks.remove("app");
        let (more, removed) = registry_logins(&state, &[&private], &mut sent);
        assert!(more.is_empty());
        assert_eq!(
            removed.iter().map(|c| (c.stack.as_str(), c.registry.as_str(), c.username.as_str())).collect::<Vec<_>>(),
            [("app", "reg.example.com:5000", "")]
        );
        assert!(sent.is_empty(), "{sent:?}");
        assert!(registry_logins(&state, &[&private], &mut sent).1.is_empty(), "told once");
    }

    fn known(entries: &[(&str, &str, &str)]) -> BTreeMap<NetworkKey, StackNetwork> {
        entries
            .iter()
            .map(|(stack, key, name)| {
                let n = StackNetwork {
                    stack: stack.to_string(),
                    key: key.to_string(),
                    spec: NetworkSpec { name: name.to_string(), ..Default::default() },
                };
                ((stack.to_string(), name.to_string()), n)
            })
            .collect()
    }

    #[test]
    fn a_message_carries_the_networks_of_its_tasks_once_each() {
        let known = known(&[
            ("shop", "back", "shop_back"),
            ("shop", "front", "shop_front"),
            ("blog", "shared", "infra"),
            ("shop", "shared", "infra"),
        ]);
        let tasks = [task("shop", &["shop_back", "infra"]), task("shop", &["shop_back"]), task("blog", &["infra"])];
        let sent = networks_of(tasks.iter(), &known);
        let got: Vec<(&str, &str)> = sent.iter().map(|n| (n.stack.as_str(), n.key.as_str())).collect();
        assert_eq!(got, [("blog", "shared"), ("shop", "shared"), ("shop", "back")], "by stack and engine name");
        // A network the stack no longer declares is not sent (its task is rejected for want of it).
        assert!(networks_of([task("shop", &["shop_gone"])].iter(), &known).is_empty());
        assert!(networks_of(std::iter::empty(), &known).is_empty());
    }

    #[test]
    fn a_message_carries_the_named_volumes_of_its_tasks_once_each() {
        use stackd_core::model::{Mount, VolumeSpec};
        let known: BTreeMap<NetworkKey, StackVolume> = [("shop", "data", "shop_data"), ("shop", "nfs", "shared")]
            .iter()
            .map(|(stack, key, name)| {
                let spec = VolumeSpec { name: name.to_string(), ..Default::default() };
                (
                    (stack.to_string(), name.to_string()),
                    StackVolume { stack: stack.to_string(), key: key.to_string(), spec },
                )
            })
            .collect();
        let mounting = |sources: &[(MountKind, &str)]| {
            let mut t = task("shop", &[]);
            t.template.mounts = sources.iter().map(|(kind, s)| Mount::new(*kind, *s, "/m", false)).collect();
            t
        };
        let tasks = [
            mounting(&[(MountKind::Volume, "shop_data"), (MountKind::Volume, "shared")]),
            mounting(&[(MountKind::Volume, "shop_data")]),
            // Binds, tmpfs and anonymous volumes need no definition.
            mounting(&[(MountKind::Bind, "shared"), (MountKind::Tmpfs, ""), (MountKind::Volume, "")]),
        ];
        let sent = volumes_of(tasks.iter(), &known);
        let got: Vec<(&str, &str)> = sent.iter().map(|v| (v.stack.as_str(), v.key.as_str())).collect();
        assert_eq!(got, [("shop", "nfs"), ("shop", "data")], "by stack and engine name");
        assert!(volumes_of([mounting(&[(MountKind::Bind, "shared")])].iter(), &known).is_empty());
        assert!(volumes_of([mounting(&[(MountKind::Volume, "shop_gone")])].iter(), &known).is_empty());
    }
}
