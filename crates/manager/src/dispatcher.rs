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
use stackd_core::model::{Availability, Node, NodeId, NodeRole, NodeState, Resources, Timestamp};
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

mod assignments;
mod usage;

use assignments::{Common, Sent, fan_out, next_message};

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
