//! The leader's relay: subscriptions in progress, the nodes' sessions they
//! go out on, and the `PublishLogs` streams that feed them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackd_core::model::{NodeId, TaskId};
use stackd_core::{ClusterState, Refusal};
use stackd_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::plan::{Plan, ending, may_publish, node_name, short, target_exists, task_name, task_over};
use super::{ANSWER_WITHIN, BUFFER, LogStream, SESSION_BUFFER};
use crate::raft::RaftNode;
use crate::refusal::refused;
use crate::util::lock;

/// How often a subscription looks at the state (its target removed, a
/// followed task over).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a followed task may be over with its node silent before its
/// logs end anyway (a container gone without a trace).
const OVER_FOR: u32 = 5;
/// How long the end of a followed task waits for its status report.
const END_WAIT: Duration = Duration::from_secs(5);
/// How many times a node whose stream broke is asked again.
const RESENDS: u32 = 3;

/// A node's session, as the broker reaches it.
struct NodeLink {
    epoch: u64,
    tx: mpsc::Sender<v1::LogSubscription>,
}

/// A subscription in progress.
struct Sub {
    wire: v1::LogSubscription,
    out: mpsc::Sender<Result<v1::LogsMessage, Status>>,
    /// Sent to every node with a session, now and later.
    all_nodes: bool,
    /// Nodes it was sent to: only they may publish into it.
    asked: BTreeSet<NodeId>,
    /// Asked nodes that did not say they sent all they had.
    waiting: BTreeSet<NodeId>,
    /// Nodes that started answering.
    heard: BTreeSet<NodeId>,
    /// Times each node was asked again after its stream broke.
    resent: HashMap<NodeId, u32>,
    ends: bool,
    task: Option<TaskId>,
    /// The node of the followed task said its container stopped.
    stopped: bool,
    stop: CancellationToken,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<NodeId, NodeLink>,
    subs: HashMap<String, Sub>,
    epoch: u64,
}

/// The leader's log relay (see the module's doc).
#[derive(Clone)]
pub(crate) struct LogBroker {
    raft: RaftNode,
    inner: Arc<Mutex<Inner>>,
}

fn sub_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("{n:016x}")
}

fn notice(s: &ClusterState, node: &str, task: &str, text: String) -> v1::LogsNotice {
    v1::LogsNotice { task_id: String::new(), task: task.to_string(), node: node_name(s, node), text }
}

fn notices(n: Vec<v1::LogsNotice>) -> v1::LogsMessage {
    v1::LogsMessage { lines: Vec::new(), notices: n }
}

/// `wire` for the lines from now on: for a node asked again.
fn from_now(wire: &v1::LogSubscription) -> v1::LogSubscription {
    let mut wire = wire.clone();
    if let Some(o) = wire.options.as_mut() {
        o.since = i64::try_from(crate::now_ms() / 1000).unwrap_or(i64::MAX);
        o.tail = None;
    }
    wire
}

impl LogBroker {
    pub(crate) fn new(raft: RaftNode) -> Self {
        Self { raft, inner: Arc::default() }
    }

    /// Registers the session of `node`: the subscriptions it is to serve
    /// come on the receiver (first those of every node in progress). The
    /// epoch tells this session from a later one of the same node.
    ///
    /// The agent drops its log jobs when it opens a session: what the node
    /// had not finished sending for a subscription of its own is told to be
    /// incomplete (a subscription of every node is simply sent again).
    pub(crate) fn attach(&self, node: &str) -> (u64, mpsc::Receiver<v1::LogSubscription>) {
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let mut cut_short = Vec::new();
        let epoch = {
            let mut inner = lock(&self.inner);
            inner.epoch += 1;
            let epoch = inner.epoch;
            for (id, sub) in inner.subs.iter_mut() {
                if sub.all_nodes {
                    // A node that served it before: from now on, not again.
                    let wire = if sub.heard.contains(node) { from_now(&sub.wire) } else { sub.wire.clone() };
                    if tx.try_send(wire).is_ok() {
                        sub.asked.insert(node.to_string());
                    }
                } else if sub.waiting.contains(node) {
                    cut_short.push(id.clone());
                }
            }
            inner.nodes.insert(node.to_string(), NodeLink { epoch, tx });
            epoch
        };
        for id in cut_short {
            self.tell_node(&id, node, "the node's session was renewed while it sent its logs: they may be incomplete");
            self.node_done(&id, node, false);
        }
        (epoch, rx)
    }

    /// The session `epoch` of `node` ended: a subscription that waits for
    /// the node, which did not start sending, is told and waits no more (a
    /// node that started sends on a connection of its own, which may go on).
    pub(crate) fn detach(&self, node: &str, epoch: u64) {
        let waited: Vec<String> = {
            let mut inner = lock(&self.inner);
            if inner.nodes.get(node).is_none_or(|l| l.epoch != epoch) {
                return;
            }
            inner.nodes.remove(node);
            inner
                .subs
                .iter()
                .filter(|(_, s)| s.waiting.contains(node) && !s.heard.contains(node))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in waited {
            self.tell_node(&id, node, "the node's session closed before it sent its logs");
            self.node_done(&id, node, false);
        }
    }

    /// Tells the client of subscription `id` something of `node`.
    fn tell_node(&self, id: &str, node: &str, text: &str) {
        let n = self.raft.shared().read(|s| notice(s, node, "", text.to_string()));
        self.tell(id, n);
    }

    /// Sends `n` to the client of subscription `id`, after what it was sent
    /// so far (on a task of its own: the caller never waits for the client).
    fn tell(&self, id: &str, n: v1::LogsNotice) {
        if let Some(out) = lock(&self.inner).subs.get(id).map(|s| s.out.clone()) {
            tokio::spawn(async move {
                let _ = out.send(Ok(notices(vec![n]))).await;
            });
        }
    }

    /// Starts the subscription `plan` describes: asks its nodes, and
    /// returns the stream of what they send.
    pub(crate) fn subscribe(&self, mut plan: Plan) -> LogStream {
        let id = sub_id();
        plan.wire.id = id.clone();
        let (out, rx) = mpsc::channel(BUFFER);
        let stop = CancellationToken::new();
        let mut first = Vec::new();
        {
            let mut inner = lock(&self.inner);
            let asked: Vec<NodeId> = match &plan.nodes {
                Some(nodes) => nodes.iter().cloned().collect(),
                None => inner.nodes.keys().cloned().collect(),
            };
            // A node asked but unreachable is told below, with its tasks.
            let mut reached = BTreeSet::new();
            for node in &asked {
                if let Some(link) = inner.nodes.get(node)
                    && link.tx.try_send(plan.wire.clone()).is_ok()
                {
                    reached.insert(node.clone());
                }
            }
            self.raft.shared().read(|s| {
                for (node, tasks) in &plan.holders {
                    if reached.contains(node) {
                        continue;
                    }
                    let state = s.nodes.get(node).map(|n| format!("{:?}", n.state).to_lowercase());
                    let why = match state {
                        Some(state) => {
                            format!("cannot be read: the node is {state} and has no session with the leader")
                        }
                        None => "cannot be read: the node was removed from the cluster".to_string(),
                    };
                    first.push(notice(s, node, &tasks.join(", "), why));
                }
            });
            inner.subs.insert(
                id.clone(),
                Sub {
                    wire: plan.wire.clone(),
                    out: out.clone(),
                    all_nodes: plan.nodes.is_none(),
                    asked: reached.clone(),
                    waiting: reached,
                    heard: BTreeSet::new(),
                    resent: HashMap::new(),
                    ends: plan.ends,
                    task: plan.task.clone(),
                    stopped: false,
                    stop: stop.clone(),
                },
            );
        }
        if !first.is_empty() {
            // The buffer is empty: this fits.
            let _ = out.try_send(Ok(notices(first)));
        }
        self.maybe_finish(&id);
        tokio::spawn(self.clone().watch(id, out, stop));
        Box::pin(ReceiverStream::new(rx))
    }

    /// Ends subscription `id` when the client goes away, this manager stops
    /// leading, its target goes from the state, asked nodes do not answer
    /// in time, or its followed task is over with its node silent.
    async fn watch(self, id: String, out: mpsc::Sender<Result<v1::LogsMessage, Status>>, stop: CancellationToken) {
        let mut leading = self.raft.leader_watch();
        let answer = tokio::time::sleep(ANSWER_WITHIN);
        tokio::pin!(answer);
        let mut answered = false;
        let mut check = tokio::time::interval(CHECK_EVERY);
        let mut over_for = 0;
        loop {
            tokio::select! {
                () = out.closed() => { self.close(&id); return; }
                () = stop.cancelled() => return,
                r = leading.changed() => {
                    if r.is_err() || !*leading.borrow_and_update() {
                        let _ = out.try_send(Err(Status::unavailable(
                            "this manager stopped leading while relaying logs: run the command again",
                        )));
                        self.close(&id);
                        return;
                    }
                }
                () = &mut answer, if !answered => {
                    answered = true;
                    self.unanswered(&id);
                }
                _ = check.tick() => {
                    let Some((wire, task)) = lock(&self.inner).subs.get(&id).map(|s| (s.wire.clone(), s.task.clone())) else {
                        return;
                    };
                    let (exists, over) = self.raft.shared().read(|s| {
                        (target_exists(s, &wire), task.as_deref().is_some_and(|t| task_over(s, t)))
                    });
                    if !exists {
                        let what = if wire.service.is_empty() { "the task was removed" } else { "the service was removed" };
                        let _ = out.send(Ok(notices(vec![v1::LogsNotice { text: what.to_string(), ..Default::default() }]))).await;
                        self.close(&id);
                        return;
                    }
                    over_for = if over { over_for + 1 } else { 0 };
                    if over_for >= OVER_FOR {
                        self.finish_now(&id);
                    }
                }
            }
        }
    }

    /// Asked nodes that did not start answering in time: the client is
    /// told, and the subscription waits for them no more.
    fn unanswered(&self, id: &str) {
        let silent: Vec<NodeId> = match lock(&self.inner).subs.get(id) {
            Some(s) => s.waiting.difference(&s.heard).cloned().collect(),
            None => return,
        };
        for node in silent {
            let text = format!("the node did not answer within {} s: its logs are missing", ANSWER_WITHIN.as_secs());
            self.tell_node(id, &node, &text);
            self.node_done(id, &node, false);
        }
    }

    /// Ends subscription `id` for good: the nodes are told to stop (best
    /// effort: a node that misses it stops when its next send fails).
    fn close(&self, id: &str) {
        let mut inner = lock(&self.inner);
        let Some(sub) = inner.subs.remove(id) else { return };
        sub.stop.cancel();
        let close = v1::LogSubscription { id: id.to_string(), close: true, ..Default::default() };
        for node in &sub.asked {
            if let Some(link) = inner.nodes.get(node) {
                let _ = link.tx.try_send(close.clone());
            }
        }
    }

    /// `node` is done with subscription `id`: it sent all it had (`sent`),
    /// or it will not.
    fn node_done(&self, id: &str, node: &str, sent: bool) {
        if let Some(sub) = lock(&self.inner).subs.get_mut(id) {
            sub.waiting.remove(node);
            if sent && sub.task.is_some() {
                sub.stopped = true;
            }
        }
        self.maybe_finish(id);
    }

    /// A followed task over for a while, its node silent: ends it now.
    fn finish_now(&self, id: &str) {
        if let Some(sub) = lock(&self.inner).subs.get_mut(id) {
            sub.waiting.clear();
        }
        self.maybe_finish(id);
    }

    /// Ends a subscription that ends once its nodes are done, if they are:
    /// with how the task asked for ended (waiting a moment for its status
    /// report when its container just stopped), then the end of the stream.
    fn maybe_finish(&self, id: &str) {
        let sub = {
            let mut inner = lock(&self.inner);
            match inner.subs.get(id) {
                Some(s) if s.ends && s.waiting.is_empty() => inner.subs.remove(id),
                _ => None,
            }
        };
        let Some(sub) = sub else { return };
        sub.stop.cancel();
        let close = v1::LogSubscription { id: id.to_string(), close: true, ..Default::default() };
        for node in &sub.asked {
            if let Some(link) = lock(&self.inner).nodes.get(node) {
                let _ = link.tx.try_send(close.clone());
            }
        }
        let Some(task) = sub.task else { return };
        let (raft, out, stopped) = (self.raft.clone(), sub.out, sub.stopped);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + END_WAIT;
            while stopped && !raft.shared().read(|s| task_over(s, &task)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Some(n) = raft.shared().read(|s| ending(s, &task, stopped)) {
                let _ = out.send(Ok(notices(vec![n]))).await;
            }
        });
    }

    /// `PublishLogs` of `node` (whose certificate was checked), `first`
    /// being its first message: relays every line to the subscription's
    /// client, named by its task, until the node is done, the client gone or
    /// the subscription ended.
    pub(crate) async fn publish(
        &self,
        node: &str,
        first: v1::PublishLogsRequest,
        mut rest: Streaming<v1::PublishLogsRequest>,
    ) -> Result<(), Status> {
        let id = first.subscription_id.clone();
        let (stop, wire) = match lock(&self.inner).subs.get_mut(&id) {
            Some(sub) if sub.asked.contains(node) => {
                sub.heard.insert(node.to_string());
                (sub.stop.clone(), sub.wire.clone())
            }
            Some(_) => {
                return Err(Status::permission_denied(format!("log subscription {id} was not sent to node {node}")));
            }
            None => return Err(refused(Refusal::not_found(format!("no log subscription {id}: it ended")))),
        };
        let mut names: HashMap<TaskId, (String, String)> = HashMap::new();
        let mut next: Result<Option<v1::PublishLogsRequest>, Status> = Ok(Some(first));
        let broke = loop {
            let msg = match next {
                Ok(Some(msg)) => msg,
                Ok(None) => break "it ended".to_string(),
                Err(status) => break status.message().to_string(),
            };
            let done = msg.done;
            if !msg.lines.is_empty() || !msg.notices.is_empty() {
                let batch = self.named(node, &wire, msg, &mut names);
                let Some(out) = lock(&self.inner).subs.get(&id).map(|s| s.out.clone()) else {
                    return Ok(());
                };
                tokio::select! {
                    r = out.send(Ok(batch)) => if r.is_err() { return Ok(()) },
                    () = stop.cancelled() => return Ok(()),
                }
            }
            if done {
                self.node_done(&id, node, true);
                return Ok(());
            }
            next = tokio::select! {
                m = rest.message() => m,
                () = stop.cancelled() => return Ok(()),
            };
        };
        self.broken(&id, node, &broke);
        Ok(())
    }

    /// The stream of `node` for subscription `id` broke before it was
    /// done: the client is told; a subscription of every node asks the node
    /// again (for the lines from now on), a few times at most.
    fn broken(&self, id: &str, node: &str, why: &str) {
        let resend = {
            let mut inner = lock(&self.inner);
            let Some(sub) = inner.subs.get_mut(id) else { return };
            let count = sub.resent.entry(node.to_string()).or_default();
            *count += 1;
            let again = sub.all_nodes && *count <= RESENDS;
            let wire = from_now(&sub.wire);
            again && inner.nodes.get(node).is_some_and(|l| l.tx.try_send(wire).is_ok())
        };
        let text = if resend {
            format!("the node's log stream broke ({why}); asked again, from now on")
        } else {
            format!("the node's log stream broke ({why}): its logs are incomplete")
        };
        self.tell_node(id, node, &text);
        if !resend {
            self.node_done(id, node, false);
        }
    }

    /// A node's batch, each line and notice named by its task and node;
    /// lines the node may not publish into `wire` are dropped.
    fn named(
        &self,
        node: &str,
        wire: &v1::LogSubscription,
        msg: v1::PublishLogsRequest,
        names: &mut HashMap<TaskId, (String, String)>,
    ) -> v1::LogsMessage {
        let unknown: BTreeSet<&str> = msg
            .lines
            .iter()
            .map(|l| l.task_id.as_str())
            .chain(msg.notices.iter().map(|n| n.task_id.as_str()))
            .filter(|id| !names.contains_key(*id))
            .collect();
        if !unknown.is_empty() {
            self.raft.shared().read(|s| {
                let here = node_name(s, node);
                for id in unknown {
                    // Refused tasks get no name: their lines are dropped below.
                    if id.is_empty() || may_publish(s, wire, node, id) {
                        let task = s.tasks.get(id).map(task_name).unwrap_or_else(|| short(id).to_string());
                        names.insert(id.to_string(), (task, here.clone()));
                    }
                }
            });
        }
        let here = |id: &str| names.get(id).cloned();
        v1::LogsMessage {
            lines: msg
                .lines
                .into_iter()
                .filter_map(|l| {
                    let (task, node) = here(&l.task_id)?;
                    Some(v1::LogEntry {
                        task_id: l.task_id,
                        task,
                        node,
                        stream: l.stream,
                        timestamp: l.timestamp,
                        data: l.data,
                    })
                })
                .collect(),
            notices: msg
                .notices
                .into_iter()
                .filter_map(|n| {
                    let (task, node) = here(&n.task_id)?;
                    Some(v1::LogsNotice { task_id: n.task_id, task, node, text: n.text })
                })
                .collect(),
        }
    }
}
