//! Logs: what `stackctl logs` prints, relayed by the leader from the agents.
//!
//! ```text
//!  stackctl ──Logs──► a follower ──(proxied on a connection of its own)──┐
//!  stackctl ──Logs──► the leader ◄───────────────────────────────────────┘
//!                       plan(): the target → a subscription, the nodes to ask,
//!                       what to tell of nodes that cannot be asked
//!                       │ LogSubscription on each asked node's session stream
//!                       ▼
//!  agent ──PublishLogs (client stream, a connection of its own)──► leader
//!                       names each line's task (web.2@node3) ──► LogsMessage ──► stackctl
//! ```
//!
//! Nothing is kept, in Raft or elsewhere: the engines keep the logs, the
//! leader only relays. Every buffer is bounded ([`BUFFER`] messages): a
//! slow client slows the agent's reading of the engine (which keeps the log
//! on disk), never a heartbeat — the session and its heartbeats travel on
//! another connection, and the leader serves each stream on a task of its
//! own.
//!
//! A subscription that does not follow ends when every asked node said it
//! sent all it had (or did not answer within [`ANSWER_WITHIN`], which the
//! client is told). A followed service's subscription goes to every node
//! with a session, and to each node that opens one later, since its tasks
//! may be replaced anywhere; it ends when the client goes away or this
//! manager stops leading. A followed task ends when its container stops.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackd_core::model::{NodeId, Task, TaskId};
use stackd_core::{ClusterState, Refusal};
use stackd_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::raft::RaftNode;
use crate::refusal::refused;
use crate::util::lock;

/// The stream `Logs` answers with.
pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogsMessage, Status>> + Send>>;

/// Messages waiting for a slow reader, each way.
pub(crate) const BUFFER: usize = 64;
/// How long a node asked for logs has to start answering.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// Subscription changes waiting for a node's session stream.
const SESSION_BUFFER: usize = 64;

/// What a `Logs` request asks, as the state answers it ([`plan`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// What the agents are sent (its id is set by [`LogBroker::subscribe`]).
    pub wire: v1::LogSubscription,
    /// The nodes to ask; `None`: every node with a session, now and later.
    pub nodes: Option<BTreeSet<NodeId>>,
    /// The tasks of the target, by the node they ran on (to tell the client
    /// which cannot be read when a node has no session).
    pub holders: BTreeMap<NodeId, Vec<String>>,
    /// The one task asked for, whose end is told.
    pub task: Option<TaskId>,
    /// Whether the stream ends once every asked node sent all it had.
    pub ends: bool,
}

/// `<service>.<slot>` (the service without its stack's prefix; a global
/// task's node follows after `@` anyway, so it is the service alone).
pub(crate) fn task_name(t: &Task) -> String {
    let service = t.service_name.strip_prefix(&format!("{}_", t.stack)).unwrap_or(&t.service_name);
    if t.slot == 0 { service.to_string() } else { format!("{service}.{}", t.slot) }
}

fn node_name(s: &ClusterState, id: &str) -> String {
    s.nodes.get(id).map(|n| n.name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| id.to_string())
}

/// The task `target` names: its id, or a prefix of one that no other task
/// shares (at least 4 characters).
fn find_task<'a>(s: &'a ClusterState, target: &str) -> Result<Option<&'a Task>, Refusal> {
    if let Some(t) = s.tasks.get(target) {
        return Ok(Some(t));
    }
    if target.len() < 4 {
        return Ok(None);
    }
    let mut found = s.tasks.values().filter(|t| t.id.starts_with(target));
    match (found.next(), found.next()) {
        (Some(t), None) => Ok(Some(t)),
        (Some(_), Some(_)) => {
            Err(Refusal::invalid(format!("{target:?} is the start of several task ids: give more of it")))
        }
        _ => Ok(None),
    }
}

/// What `Logs` of `target` (a service's name or id, or a task id) needs:
/// the subscription, the nodes to ask, the tasks each node holds.
pub(crate) fn plan(s: &ClusterState, target: &str, options: v1::LogOptions) -> Result<Plan, Refusal> {
    let follow = options.follow;
    if let Some(service) = s.services.get(target).or_else(|| s.service_by_name(target)) {
        let mut holders: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        for t in s.tasks.of_service(&service.id) {
            if let Some(node) = &t.node_id {
                holders.entry(node.clone()).or_default().push(task_name(t));
            }
        }
        for names in holders.values_mut() {
            names.sort();
            names.dedup();
        }
        return Ok(Plan {
            wire: v1::LogSubscription {
                id: String::new(),
                service: service.name.clone(),
                task_ids: Vec::new(),
                options: Some(options),
                close: false,
            },
            nodes: (!follow).then(|| holders.keys().cloned().collect()),
            holders,
            task: None,
            ends: !follow,
        });
    }
    let Some(task) = find_task(s, target)? else {
        return Err(Refusal::not_found(format!(
            "no service or task {target:?}: name a service as `stack_service` (see `stackctl service ls`) or a task by its id (`stackctl service ps`)"
        )));
    };
    let Some(node) = &task.node_id else {
        return Err(Refusal::not_found(format!(
            "task {} ({}) was never assigned to a node: it never ran, and has no logs{}",
            task.id,
            task_name(task),
            if task.unplaceable.is_empty() { String::new() } else { format!(" ({})", task.unplaceable) }
        )));
    };
    Ok(Plan {
        wire: v1::LogSubscription {
            id: String::new(),
            service: String::new(),
            task_ids: vec![task.id.clone()],
            options: Some(options),
            close: false,
        },
        nodes: Some(BTreeSet::from([node.clone()])),
        holders: BTreeMap::from([(node.clone(), vec![task_name(task)])]),
        task: Some(task.id.clone()),
        ends: true,
    })
}

/// What the client is told when a task's logs end: how the task finished,
/// or that its container stopped while the task is not over yet.
pub(crate) fn ending(s: &ClusterState, task_id: &str, followed: bool) -> Option<v1::LogsNotice> {
    let t = s.tasks.get(task_id)?;
    let st = &t.status;
    let text = if st.state.is_terminal() {
        let mut text = format!("the task is {}", st.state);
        if let Some(code) = st.exit_code {
            text.push_str(&format!(" (exit code {code})"));
        }
        if !st.err.is_empty() {
            text.push_str(&format!(": {}", st.err));
        }
        text
    } else if followed {
        format!("its container stopped (the task is {})", st.state)
    } else {
        return None;
    };
    Some(v1::LogsNotice {
        task_id: t.id.clone(),
        task: task_name(t),
        node: t.node_id.as_deref().map(|n| node_name(s, n)).unwrap_or_default(),
        text,
    })
}

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
    /// Asked nodes that did not say they sent all they had.
    waiting: BTreeSet<NodeId>,
    /// Nodes that started answering.
    heard: BTreeSet<NodeId>,
    ends: bool,
    task: Option<TaskId>,
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

impl LogBroker {
    pub(crate) fn new(raft: RaftNode) -> Self {
        Self { raft, inner: Arc::default() }
    }

    /// Registers the session of `node`: the subscriptions it is to serve
    /// come on the receiver (first those of every node in progress). The
    /// epoch tells this session from a later one of the same node.
    pub(crate) fn attach(&self, node: &str) -> (u64, mpsc::Receiver<v1::LogSubscription>) {
        let (tx, rx) = mpsc::channel(SESSION_BUFFER);
        let mut inner = lock(&self.inner);
        inner.epoch += 1;
        let epoch = inner.epoch;
        for sub in inner.subs.values().filter(|s| s.all_nodes) {
            let _ = tx.try_send(sub.wire.clone());
        }
        inner.nodes.insert(node.to_string(), NodeLink { epoch, tx });
        (epoch, rx)
    }

    /// The session `epoch` of `node` ended: a subscription that waits for
    /// the node is told, and waits no more.
    pub(crate) fn detach(&self, node: &str, epoch: u64) {
        let waited: Vec<String> = {
            let mut inner = lock(&self.inner);
            if inner.nodes.get(node).is_none_or(|l| l.epoch != epoch) {
                return;
            }
            inner.nodes.remove(node);
            inner.subs.iter().filter(|(_, s)| s.waiting.contains(node)).map(|(id, _)| id.clone()).collect()
        };
        for id in waited {
            let n = self
                .raft
                .shared()
                .read(|s| notice(s, node, "", "the node's session closed before it sent all its logs".to_string()));
            self.tell(&id, n);
            self.node_done(&id, node);
        }
    }

    /// Sends `n` to the client of subscription `id`, if there is room (a
    /// notice is never worth blocking for).
    fn tell(&self, id: &str, n: v1::LogsNotice) {
        if let Some(out) = lock(&self.inner).subs.get(id).map(|s| s.out.clone()) {
            let _ = out.try_send(Ok(notices(vec![n])));
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
            let mut waiting = BTreeSet::new();
            // A node asked but unreachable is told below, with its tasks.
            for node in &asked {
                if let Some(link) = inner.nodes.get(node)
                    && link.tx.try_send(plan.wire.clone()).is_ok()
                {
                    waiting.insert(node.clone());
                }
            }
            self.raft.shared().read(|s| {
                for (node, tasks) in &plan.holders {
                    if inner.nodes.contains_key(node) && (plan.nodes.is_none() || waiting.contains(node)) {
                        continue;
                    }
                    let state = s
                        .nodes
                        .get(node)
                        .map(|n| format!("{:?}", n.state).to_lowercase())
                        .unwrap_or_else(|| "removed".into());
                    first.push(notice(
                        s,
                        node,
                        &tasks.join(", "),
                        format!("cannot be read: the node is {state} and has no session with the leader"),
                    ));
                }
            });
            inner.subs.insert(
                id.clone(),
                Sub {
                    wire: plan.wire.clone(),
                    out: out.clone(),
                    all_nodes: plan.nodes.is_none(),
                    waiting,
                    heard: BTreeSet::new(),
                    ends: plan.ends,
                    task: plan.task.clone(),
                    stop: stop.clone(),
                },
            );
        }
        if !first.is_empty() {
            let _ = out.try_send(Ok(notices(first)));
        }
        self.maybe_finish(&id);
        tokio::spawn(self.clone().watch(id, out, stop));
        Box::pin(ReceiverStream::new(rx))
    }

    /// Ends subscription `id` when the client goes away, this manager stops
    /// leading, or asked nodes do not answer in time.
    async fn watch(self, id: String, out: mpsc::Sender<Result<v1::LogsMessage, Status>>, stop: CancellationToken) {
        let mut leading = self.raft.leader_watch();
        let answer = tokio::time::sleep(ANSWER_WITHIN);
        tokio::pin!(answer);
        let mut answered = false;
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
            let n = self.raft.shared().read(|s| {
                notice(
                    s,
                    &node,
                    "",
                    format!("the node did not answer within {} s: its logs are missing", ANSWER_WITHIN.as_secs()),
                )
            });
            self.tell(id, n);
            self.node_done(id, &node);
        }
    }

    /// Ends subscription `id` for good: the nodes are told to stop.
    fn close(&self, id: &str) {
        let mut inner = lock(&self.inner);
        let Some(sub) = inner.subs.remove(id) else { return };
        sub.stop.cancel();
        let close = v1::LogSubscription { id: id.to_string(), close: true, ..Default::default() };
        for link in inner.nodes.values() {
            let _ = link.tx.try_send(close.clone());
        }
    }

    /// `node` sent all it had for subscription `id`.
    fn node_done(&self, id: &str, node: &str) {
        if let Some(sub) = lock(&self.inner).subs.get_mut(id) {
            sub.waiting.remove(node);
        }
        self.maybe_finish(id);
    }

    /// Ends a subscription that ends once its nodes are done, if they are:
    /// with how the task asked for ended, then the end of the stream.
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
        if let Some(task) = &sub.task {
            let followed = sub.wire.options.as_ref().is_some_and(|o| o.follow);
            if let Some(n) = self.raft.shared().read(|s| ending(s, task, followed)) {
                let _ = sub.out.try_send(Ok(notices(vec![n])));
            }
        }
    }

    /// `PublishLogs` of `node` (whose certificate was checked), `first`
    /// being its first message: relays every line to the subscription's
    /// client, named by its task, until the node is done or the client
    /// gone.
    pub(crate) async fn publish(
        &self,
        node: &str,
        first: v1::PublishLogsRequest,
        mut rest: Streaming<v1::PublishLogsRequest>,
    ) -> Result<(), Status> {
        let id = first.subscription_id.clone();
        match lock(&self.inner).subs.get_mut(&id) {
            Some(sub) => {
                sub.heard.insert(node.to_string());
            }
            None => return Err(refused(Refusal::not_found(format!("no log subscription {id}: it ended")))),
        }
        let mut names: HashMap<TaskId, (String, String)> = HashMap::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            let done = msg.done;
            if !msg.lines.is_empty() || !msg.notices.is_empty() {
                let batch = self.named(node, msg, &mut names);
                let Some(out) = lock(&self.inner).subs.get(&id).map(|s| s.out.clone()) else {
                    // Ended (the client went away): the node stops when its stream does.
                    return Ok(());
                };
                if out.send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
            }
            if done {
                self.node_done(&id, node);
                return Ok(());
            }
            next = rest.message().await?;
        }
        // The node's stream ended without `done`: it stopped (or was cut).
        let ended = lock(&self.inner).subs.get(&id).is_some_and(|s| s.waiting.contains(node));
        if ended {
            let n = self
                .raft
                .shared()
                .read(|s| notice(s, node, "", "the node's log stream ended before it sent all its logs".to_string()));
            self.tell(&id, n);
            self.node_done(&id, node);
        }
        Ok(())
    }

    /// A node's batch, each line and notice named by its task and node.
    fn named(
        &self,
        node: &str,
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
                    let task = s.tasks.get(id).map(task_name).unwrap_or_else(|| short(id).to_string());
                    names.insert(id.to_string(), (task, here.clone()));
                }
            });
        }
        let name = |id: &str| names.get(id).cloned().unwrap_or_default();
        v1::LogsMessage {
            lines: msg
                .lines
                .into_iter()
                .map(|l| {
                    let (task, node) = name(&l.task_id);
                    v1::LogEntry {
                        task_id: l.task_id,
                        task,
                        node,
                        stream: l.stream,
                        timestamp: l.timestamp,
                        data: l.data,
                    }
                })
                .collect(),
            notices: msg
                .notices
                .into_iter()
                .map(|n| {
                    let (task, node) = name(&n.task_id);
                    v1::LogsNotice { task_id: n.task_id, task, node, text: n.text }
                })
                .collect(),
        }
    }
}

/// The first 12 characters of an id.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stackd_core::model::{
        DesiredState, Node, NodeRole, NodeState, Service, ServiceMode, ServiceSpec, TaskState, TaskStatus, UpdateStatus,
    };

    use super::*;

    fn node(id: &str, state: NodeState) -> Node {
        Node {
            id: id.into(),
            name: format!("node-{id}"),
            addr: String::new(),
            role: NodeRole::Worker,
            availability: Default::default(),
            state,
            labels: BTreeMap::new(),
            resources: Default::default(),
            engine_version: String::new(),
            engine: Default::default(),
            updated_at: 0,
        }
    }

    fn task(id: &str, slot: u64, node: Option<&str>, state: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: "svc1".into(),
            service_name: "shop_web".into(),
            stack: "shop".into(),
            slot,
            node_id: node.map(String::from),
            revision: 1,
            template: Default::default(),
            desired_state: DesiredState::Running,
            status: TaskStatus { state, exit_code: Some(3), err: "boom".into(), ..Default::default() },
            unplaceable: "no node has 64 GB free".into(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    /// shop_web: tasks on n1 (running, twice: slots 1 and 3), n2 (failed),
    /// and one never placed; n2 is down.
    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.nodes.insert("n1".into(), node("n1", NodeState::Ready));
        s.nodes.insert("n2".into(), node("n2", NodeState::Down));
        let spec = ServiceSpec {
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: 3 },
            task: Default::default(),
            restart: Default::default(),
            update: Default::default(),
            rollback: Default::default(),
            labels: BTreeMap::new(),
            endpoint_mode: Default::default(),
            depends_on: Vec::new(),
        };
        let mut svc = Service::new("svc1".into(), "shop", spec, 0);
        svc.update = UpdateStatus::default();
        s.services.insert(svc.id.clone(), svc);
        for t in [
            task("aaaa1111", 1, Some("n1"), TaskState::Running),
            task("aaaa2222", 2, Some("n2"), TaskState::Failed),
            task("bbbb3333", 3, Some("n1"), TaskState::Running),
            task("cccc4444", 4, None, TaskState::Pending),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        s
    }

    fn options(follow: bool) -> v1::LogOptions {
        v1::LogOptions { follow, since: 0, tail: Some(5) }
    }

    #[test]
    fn a_service_asks_the_nodes_of_its_tasks_or_every_node_when_followed() {
        let s = state();
        for target in ["shop_web", "svc1"] {
            let p = plan(&s, target, options(false)).expect("a plan");
            assert_eq!(p.wire.service, "shop_web");
            assert!(p.wire.task_ids.is_empty());
            assert_eq!(p.wire.options, Some(options(false)));
            assert_eq!(p.nodes, Some(BTreeSet::from(["n1".to_string(), "n2".to_string()])));
            assert_eq!(p.holders["n1"], vec!["web.1".to_string(), "web.3".to_string()]);
            assert_eq!(p.holders["n2"], vec!["web.2".to_string()]);
            assert!(p.ends && p.task.is_none());
        }
        let p = plan(&s, "shop_web", options(true)).expect("a plan");
        assert_eq!(p.nodes, None, "a followed service goes to every node, now and later");
        assert!(!p.ends);
    }

    #[test]
    fn a_task_is_found_by_its_id_or_an_unambiguous_start_of_it() {
        let s = state();
        for target in ["aaaa2222", "aaaa2"] {
            let p = plan(&s, target, options(true)).expect("a plan");
            assert_eq!(p.wire.task_ids, vec!["aaaa2222".to_string()]);
            assert!(p.wire.service.is_empty());
            assert_eq!(p.nodes, Some(BTreeSet::from(["n2".to_string()])));
            assert_eq!(p.task.as_deref(), Some("aaaa2222"));
            assert!(p.ends, "a followed task ends when its container stops");
        }
        let e = plan(&s, "aaaa", options(false)).expect_err("ambiguous");
        assert!(e.to_string().contains("several task ids"), "{e}");
        let e = plan(&s, "aaa", options(false)).expect_err("too short to be a task");
        assert!(e.to_string().contains("no service or task"), "{e}");
        let e = plan(&s, "shop_nothing", options(false)).expect_err("unknown");
        assert!(e.to_string().contains("no service or task \"shop_nothing\""), "{e}");
        let e = plan(&s, "cccc4444", options(false)).expect_err("never placed");
        assert!(e.to_string().contains("never assigned to a node") && e.to_string().contains("64 GB"), "{e}");
    }

    #[test]
    fn the_end_of_a_task_is_told_with_its_exit_code_and_error() {
        let s = state();
        let n = ending(&s, "aaaa2222", false).expect("a finished task is told");
        assert_eq!((n.task.as_str(), n.node.as_str()), ("web.2", "node-n2"));
        assert_eq!(n.text, "the task is failed (exit code 3): boom");
        assert_eq!(ending(&s, "aaaa1111", false), None, "a running task read to now: nothing to tell");
        let n = ending(&s, "aaaa1111", true).expect("a followed container that stopped");
        assert!(n.text.starts_with("its container stopped"), "{}", n.text);
        assert_eq!(ending(&s, "zzzz", true), None);
    }
}
