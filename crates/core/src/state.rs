//! The replicated state machine: [`ClusterState`] changed only by [`Command`]s.
//!
//! `apply` is deterministic: given the same state, log index and command it
//! makes the same change on every manager. It validates every command against
//! the current state and skips what no longer fits (a plan made for a service
//! that was removed meanwhile, a report from the wrong node), so a stale
//! proposal can never corrupt the state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Command, NewTask, Placement, Plan, TaskStatusUpdate};
use crate::model::{
    Blob, DataKind, DesiredState, FileRef, NetworkSpec, Node, NodeId, NodeRole, NodeState, ObjectSpec, REVISIONS_KEPT,
    Revision, Service, ServiceId, ServiceSpec, Stack, StackNetwork, StackSpec, StoredObject, Task, TaskId, TaskState,
    TaskStatus, TaskTemplate, Timestamp, UpdateState, UpdateStatus, digest,
};
use crate::refusal::{Refusal, RefusalKind};
use crate::security::{ClientToken, Security};
use crate::validate;

/// Kinds of objects an [`Event`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A stack.
    Stack,
    /// A service.
    Service,
    /// A task.
    Task,
    /// A node.
    Node,
    /// A config.
    Config,
    /// A secret.
    Secret,
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It was created.
    Create,
    /// It changed.
    Update,
    /// It was removed.
    Remove,
}

/// A change made by applying a command, for watchers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Log index of the command.
    pub index: u64,
    /// Object kind.
    pub kind: ObjectKind,
    /// What happened.
    pub action: Action,
    /// Object id.
    pub id: String,
    /// Object name (service name for tasks).
    pub name: String,
    /// Stack, when the object belongs to one.
    pub stack: String,
    /// Human summary ("running", "revision 3", …).
    pub message: String,
    /// Time of the command.
    pub at: Timestamp,
}

/// The result of applying a command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// What changed, for watchers.
    pub events: Vec<Event>,
    /// Set when the command was refused as a whole (nothing changed): why,
    /// in words. [`refusal`](Self::refusal) gives it with its kind.
    pub rejected: Option<String>,
    /// The kind of the refusal in `rejected`. Kept beside the message, not
    /// in it, so that the encoding stays readable both ways between
    /// managers of different versions (results are forwarded as JSON): a
    /// result without it reads as [`RefusalKind::FailedPrecondition`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_kind: Option<RefusalKind>,
    /// For `PutStack`: services created, updated, unchanged and removed (full names).
    pub deploy: Option<DeployResult>,
    /// For `Batch`: the result of each of its commands, in order (the
    /// batch's own `events` stay empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Applied>,
}

impl Applied {
    /// A result that refuses the command whole.
    pub fn refused(refusal: Refusal) -> Self {
        let mut applied = Applied::default();
        applied.refuse(refusal);
        applied
    }

    /// Why the command was refused, with its kind; `None` when it was applied.
    pub fn refusal(&self) -> Option<Refusal> {
        let message = self.rejected.clone()?;
        Some(Refusal::new(self.rejected_kind.unwrap_or(RefusalKind::FailedPrecondition), message))
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.rejected_kind = Some(refusal.kind);
        self.rejected = Some(refusal.message);
    }

    /// Every event of this result, those of a batch's commands included.
    pub fn all_events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().chain(self.batch.iter().flat_map(|a| a.events.iter()))
    }
}

/// What a `PutStack` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployResult {
    /// Services created.
    pub created: Vec<String>,
    /// Services whose spec changed.
    pub updated: Vec<String>,
    /// Services left as they were.
    pub unchanged: Vec<String>,
    /// Services removed (prune).
    pub removed: Vec<String>,
}

/// The whole desired and observed state of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster id, set by the first command.
    pub cluster_id: String,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Stacks by name.
    pub stacks: BTreeMap<String, Stack>,
    /// Services by id.
    pub services: BTreeMap<ServiceId, Service>,
    /// Tasks by id.
    pub tasks: BTreeMap<TaskId, Task>,
    /// Configs by name.
    #[serde(default)]
    pub configs: BTreeMap<String, StoredObject>,
    /// Secrets by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, StoredObject>,
    /// The CA, join secrets and client tokens (empty in a cluster initialised
    /// before security existed).
    #[serde(default)]
    pub security: Security,
}

/// The error of the tasks that ran on a node when it was removed.
pub const NODE_REMOVED: &str = "node removed";

/// The status message of a task whose node was declared down.
pub const NODE_DOWN: &str = "node down: replaced elsewhere unless the node comes back first";

/// The status message of an orphan taken back when its node returned.
pub const NODE_BACK: &str = "node back: taking the task back";

/// The networks a deploy of `spec` leaves a stack with, given the stack's
/// current networks (`old`) and services: the spec's, and, without `prune`,
/// the earlier ones that services the spec no longer has (and that stay)
/// still attach to. `stackctl deploy --dry-run` shows the same.
pub fn kept_networks<'a>(
    old: Option<&BTreeMap<String, NetworkSpec>>,
    services: impl Iterator<Item = &'a ServiceSpec>,
    spec: &StackSpec,
    prune: bool,
) -> BTreeMap<String, NetworkSpec> {
    let mut networks = spec.networks.clone();
    let Some(old) = old.filter(|_| !prune) else { return networks };
    let kept = services.filter(|s| !spec.services.contains_key(&s.name));
    for a in kept.flat_map(|s| s.task.networks.iter()) {
        if networks.values().any(|n| n.name == a.network) {
            continue;
        }
        if let Some((key, n)) = old.iter().find(|(_, n)| n.name == a.network)
            && !networks.contains_key(key)
        {
            networks.insert(key.clone(), n.clone());
        }
    }
    networks
}

/// The event kind of a config or secret.
fn object_event_kind(kind: DataKind) -> ObjectKind {
    match kind {
        DataKind::Config => ObjectKind::Config,
        DataKind::Secret => ObjectKind::Secret,
    }
}

/// A task template's configs or secrets.
fn refs(task: &TaskTemplate, kind: DataKind) -> &[FileRef] {
    match kind {
        DataKind::Config => &task.configs,
        DataKind::Secret => &task.secrets,
    }
}

/// A stack's declared configs or secrets.
fn spec_objects(spec: &StackSpec, kind: DataKind) -> impl Iterator<Item = (&String, &ObjectSpec)> {
    match kind {
        DataKind::Config => spec.configs.iter(),
        DataKind::Secret => spec.secrets.iter(),
    }
}

/// Makes a 25-character base-36 id from the cluster id, log index and a sequence
/// number: unique in the cluster, the same on every manager.
pub fn make_id(cluster_id: &str, index: u64, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(cluster_id.as_bytes());
    h.update(index.to_be_bytes());
    h.update(seq.to_be_bytes());
    let digest = h.finalize();
    let mut n = u128::from_be_bytes(digest[..16].try_into().unwrap_or([0; 16]));
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(25);
    for _ in 0..25 {
        out.push(ALPHABET[(n % 36) as usize]);
        n /= 36;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Makes `spec` the service's new revision, the old one kept in its history,
/// and starts its rollout.
fn new_revision(cx: &mut Ctx, s: &mut Service, spec: ServiceSpec) {
    let old = std::mem::replace(&mut s.spec, spec);
    s.history.push(Revision { revision: s.revision, spec: old, deployed_at: s.updated_at });
    if s.history.len() > REVISIONS_KEPT {
        let excess = s.history.len() - REVISIONS_KEPT;
        s.history.drain(..excess);
    }
    s.revision += 1;
    s.updated_at = cx.at;
    s.update = UpdateStatus { state: UpdateState::Updating, started_at: cx.at, ..Default::default() };
    let (id, rev) = (s.id.clone(), s.revision);
    cx.event(ObjectKind::Service, Action::Update, &id, &s.name, &s.stack, format!("revision {rev}"));
}

/// Why a batch inside a batch is refused.
const NESTED_BATCH: &str = "a batch cannot hold a batch";

/// Command `k` of a batch numbers its ids from `k << BATCH_SEQ_SHIFT`: one
/// command makes far fewer than 2^32 ids.
const BATCH_SEQ_SHIFT: u32 = 32;

struct Ctx {
    index: u64,
    at: Timestamp,
    seq: u64,
    out: Applied,
}

impl Ctx {
    /// Refuses the command whole (the caller returns without a change).
    fn refuse(&mut self, refusal: Refusal) {
        self.out.refuse(refusal);
    }

    fn event(&mut self, kind: ObjectKind, action: Action, id: &str, name: &str, stack: &str, message: String) {
        self.out.events.push(Event {
            index: self.index,
            kind,
            action,
            id: id.to_string(),
            name: name.to_string(),
            stack: stack.to_string(),
            message,
            at: self.at,
        });
    }
}

impl ClusterState {
    /// Applies a command committed at `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Applied {
        let Command::Batch { commands } = cmd else { return self.apply_one(index, 0, cmd) };
        let batch = commands
            .iter()
            .enumerate()
            .map(|(k, c)| match c {
                Command::Batch { .. } => Applied::refused(Refusal::invalid(NESTED_BATCH)),
                // Each command of the batch makes its ids in its own range of
                // sequence numbers: the first one's are those it would make alone.
                c => self.apply_one(index, (k as u64) << BATCH_SEQ_SHIFT, c),
            })
            .collect();
        Applied { batch, ..Applied::default() }
    }

    /// Applies one command (not a batch) whose generated ids start after `seq`.
    fn apply_one(&mut self, index: u64, seq: u64, cmd: &Command) -> Applied {
        let mut cx = Ctx { index, at: cmd.at(), seq, out: Applied::default() };
        match cmd {
            Command::InitCluster { cluster_id, security, node, .. } => {
                self.init(&mut cx, cluster_id, security.as_ref(), node.as_ref())
            }
            Command::PutStack { spec, prune, .. } => self.put_stack(&mut cx, spec, *prune),
            Command::ForceUpdate { service, .. } => self.force_update(&mut cx, service),
            Command::RemoveStack { name, .. } => self.remove_stack(&mut cx, name),
            Command::UpsertNode { node, .. } => self.upsert_node(&mut cx, node),
            Command::SetNodeState { id, state, .. } => match self.nodes.get_mut(id) {
                Some(n) if n.state != *state => {
                    n.state = *state;
                    n.updated_at = cx.at;
                    let (id, name) = (n.id.clone(), n.name.clone());
                    cx.event(ObjectKind::Node, Action::Update, &id, &name, "", format!("{state:?}").to_lowercase());
                    match state {
                        NodeState::Down => self.orphan_tasks_of(&mut cx, &id),
                        NodeState::Ready => self.take_back_orphans(&mut cx, &id),
                        _ => {}
                    }
                }
                Some(_) => {}
                None => cx.refuse(Refusal::not_found(format!("no node {id}"))),
            },
            Command::SetNodeAvailability { id, availability, .. } => match self.nodes.get_mut(id) {
                Some(n) => {
                    n.availability = *availability;
                    n.updated_at = cx.at;
                    let (id, name) = (n.id.clone(), n.name.clone());
                    let msg = format!("availability {availability:?}").to_lowercase();
                    cx.event(ObjectKind::Node, Action::Update, &id, &name, "", msg);
                }
                None => cx.refuse(Refusal::not_found(format!("no node {id}"))),
            },
            Command::ApplyPlan { plan, .. } => self.apply_plan(&mut cx, plan),
            Command::Schedule { decisions, .. } => self.schedule(&mut cx, decisions),
            Command::UpdateTaskStatus { updates, .. } => self.update_status(&mut cx, updates),
            Command::CreateObject { kind, name, data, labels, .. } => {
                self.create_object(&mut cx, *kind, name, data, labels)
            }
            Command::RemoveObject { kind, name, .. } => self.remove_object(&mut cx, *kind, name),
            Command::RotateJoinSecret { role, secret, .. } => match self.security.check_join_secret(*role, secret) {
                Ok(()) => match role {
                    NodeRole::Manager => self.security.manager_secret = secret.clone(),
                    NodeRole::Worker => self.security.worker_secret = secret.clone(),
                },
                Err(e) => cx.refuse(e.into()),
            },
            Command::CreateToken { token, .. } => self.create_token(token, &mut cx),
            Command::RevokeToken { id, .. } => {
                if self.security.tokens.remove(id).is_none() {
                    cx.refuse(crate::security::SecurityError::UnknownToken(id.clone()).into());
                }
            }
            Command::JoinNode { node, .. } => match self.check_new_node(node) {
                Ok(()) => self.add_node(&mut cx, node),
                Err(why) => cx.refuse(why),
            },
            Command::SetNodeRole { id, role, .. } => self.set_node_role(&mut cx, id, *role),
            Command::RemoveNode { id, .. } => self.remove_node(&mut cx, id),
            Command::Batch { .. } => cx.refuse(Refusal::invalid(NESTED_BATCH)),
        }
        cx.out
    }

    /// `InitCluster`: the cluster's id, and optionally its security state
    /// and first node. Nothing changes unless all of them are accepted.
    fn init(&mut self, cx: &mut Ctx, cluster_id: &str, security: Option<&Security>, node: Option<&Node>) {
        if !self.cluster_id.is_empty() {
            cx.refuse(Refusal::already_exists("the cluster is initialised already"));
            return;
        }
        if let Some(Err(e)) = security.map(Security::validate) {
            cx.refuse(Refusal::invalid(format!("invalid security state: {e}")));
            return;
        }
        if let Some(n) = node {
            if n.role != NodeRole::Manager {
                cx.refuse(Refusal::invalid(format!("node {} initialises the cluster, so it must be a manager", n.id)));
                return;
            }
            if let Err(why) = self.check_new_node(n) {
                cx.refuse(why);
                return;
            }
        }
        self.cluster_id = cluster_id.to_string();
        if let Some(security) = security {
            self.security = security.clone();
        }
        if let Some(n) = node {
            self.add_node(cx, n);
        }
    }

    fn create_token(&mut self, token: &ClientToken, cx: &mut Ctx) {
        match self.security.check_new_token(token) {
            Ok(()) => {
                let mut t = token.clone();
                t.created_at = cx.at;
                self.security.tokens.insert(t.id.clone(), t);
            }
            Err(e) => cx.refuse(e.into()),
        }
    }

    /// Checks a node that joins (or initialises the cluster): a new id, and
    /// an address for a manager.
    fn check_new_node(&self, node: &Node) -> Result<(), Refusal> {
        if node.id.is_empty() {
            return Err(Refusal::invalid("a node needs an id"));
        }
        if self.nodes.contains_key(&node.id) {
            return Err(Refusal::already_exists(format!("a node with id {} exists already", node.id)));
        }
        if let Some(other) = self.nodes.values().find(|n| n.name == node.name) {
            return Err(Refusal::already_exists(format!(
                "a node named {} exists already (id {})",
                node.name, other.id
            )));
        }
        if node.role == NodeRole::Manager && node.addr.is_empty() {
            return Err(Refusal::invalid(format!("manager {} needs an address the other managers can reach", node.id)));
        }
        Ok(())
    }

    /// Adds a checked node; nobody has heard from it yet.
    fn add_node(&mut self, cx: &mut Ctx, node: &Node) {
        let mut n = node.clone();
        n.state = NodeState::Unknown;
        n.updated_at = cx.at;
        let msg = format!("joined as {}", n.role.as_str());
        cx.event(ObjectKind::Node, Action::Create, &n.id, &n.name, "", msg);
        self.nodes.insert(n.id.clone(), n);
    }

    /// The nodes whose desired role is manager, but `except`.
    fn other_managers(&self, except: &str) -> usize {
        self.nodes.values().filter(|n| n.role == NodeRole::Manager && n.id != except).count()
    }

    fn set_node_role(&mut self, cx: &mut Ctx, id: &str, role: NodeRole) {
        let Some(n) = self.nodes.get(id) else {
            cx.refuse(Refusal::not_found(format!("no node {id}")));
            return;
        };
        if n.role == role {
            return;
        }
        if n.role == NodeRole::Manager && self.other_managers(id) == 0 {
            cx.refuse(Refusal::failed_precondition(format!(
                "node {} is the last manager: promote another node before demoting it",
                n.name
            )));
            return;
        }
        if let Some(n) = self.nodes.get_mut(id) {
            n.role = role;
            n.updated_at = cx.at;
            let (id, name) = (n.id.clone(), n.name.clone());
            cx.event(ObjectKind::Node, Action::Update, &id, &name, "", format!("role {}", role.as_str()));
        }
    }

    /// A node was declared down: its tasks that had not ended become
    /// `orphaned`. An orphan no longer holds its slot, so the orchestrators
    /// start a replacement on the nodes that are up at once (as Swarm does),
    /// but it stays wanted until its replacement runs: if the node comes back
    /// first, it is taken back (`take_back_orphans`). A job's
    /// task is no longer wanted at once (a job's run is counted per task).
    fn orphan_tasks_of(&mut self, cx: &mut Ctx, node_id: &str) {
        let services = &self.services;
        for t in self.tasks.values_mut().filter(|t| t.node_id.as_deref() == Some(node_id)) {
            if t.status.state.is_terminal() {
                continue;
            }
            if services.get(&t.service_id).is_none_or(|s| s.spec.mode.is_job()) {
                t.desired_state = DesiredState::Shutdown;
            }
            t.status = TaskStatus {
                state: TaskState::Orphaned,
                timestamp: cx.at,
                message: NODE_DOWN.into(),
                err: NODE_DOWN.into(),
                container_id: std::mem::take(&mut t.status.container_id),
                exit_code: None,
                health: String::new(),
            };
            let (id, service, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
            cx.event(ObjectKind::Task, Action::Update, &id, &service, &stack, NODE_DOWN.to_string());
        }
    }

    /// A node came back: each of its orphans that is still wanted, still of
    /// its service's current spec, and whose slot has no task up elsewhere
    /// is taken back: it becomes `assigned` again (its agent adopts the
    /// container if it still runs, or starts a new one), and the slot's
    /// replacements that have not started yet are dropped. Nothing restarts
    /// that did not need to. The other orphans are no longer wanted: their
    /// agent stops their containers.
    fn take_back_orphans(&mut self, cx: &mut Ctx, node_id: &str) {
        let orphans: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| {
                t.node_id.as_deref() == Some(node_id) && t.is_orphaned() && t.desired_state == DesiredState::Running
            })
            .map(|t| t.id.clone())
            .collect();
        for id in orphans {
            let Some(t) = self.tasks.get(&id) else { continue };
            let same_slot = |o: &Task| {
                o.id != t.id
                    && o.service_id == t.service_id
                    && if t.slot == 0 { o.slot == 0 && o.node_id == t.node_id } else { o.slot == t.slot }
            };
            let current = self.services.get(&t.service_id).is_some_and(|s| s.spec.task == t.template);
            let replaced =
                self.tasks.values().any(|o| same_slot(o) && o.desired_state == DesiredState::Running && o.is_up());
            if !current || replaced {
                self.set_desired_shutdown(cx, &id);
                continue;
            }
            let dropped: Vec<TaskId> = self
                .tasks
                .values()
                .filter(|o| same_slot(o) && o.desired_state == DesiredState::Running && !o.status.state.is_terminal())
                .map(|o| o.id.clone())
                .collect();
            for d in dropped {
                self.set_desired_shutdown(cx, &d);
            }
            if let Some(t) = self.tasks.get_mut(&id) {
                t.status = TaskStatus {
                    state: TaskState::Assigned,
                    timestamp: cx.at,
                    message: NODE_BACK.into(),
                    container_id: std::mem::take(&mut t.status.container_id),
                    ..TaskStatus::default()
                };
                let (id, service, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
                cx.event(ObjectKind::Task, Action::Update, &id, &service, &stack, NODE_BACK.to_string());
            }
        }
    }

    /// Sets a task's desired state to Shutdown. A task that was never
    /// assigned to a node has no agent to stop it: it is shut down at once.
    fn set_desired_shutdown(&mut self, cx: &mut Ctx, id: &str) {
        let Some(t) = self.tasks.get_mut(id) else { return };
        if t.desired_state == DesiredState::Shutdown {
            return;
        }
        t.desired_state = DesiredState::Shutdown;
        let mut msg = "desired shutdown".to_string();
        if t.node_id.is_none() && !t.status.state.is_terminal() {
            t.status = TaskStatus {
                state: TaskState::Shutdown,
                timestamp: cx.at,
                message: "shut down before it was scheduled".into(),
                ..TaskStatus::default()
            };
            msg = "shutdown: never scheduled".into();
        }
        let (id, name, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
        cx.event(ObjectKind::Task, Action::Update, &id, &name, &stack, msg);
    }

    /// Removes a node. Its tasks are no longer wanted; those that had not
    /// ended are marked failed, so the orchestrators fill their slots elsewhere.
    fn remove_node(&mut self, cx: &mut Ctx, id: &str) {
        let Some(n) = self.nodes.get(id) else {
            cx.refuse(Refusal::not_found(format!("no node {id}")));
            return;
        };
        if n.role == NodeRole::Manager && self.other_managers(id) == 0 {
            cx.refuse(Refusal::failed_precondition(format!(
                "node {} is the last manager: it cannot be removed",
                n.name
            )));
            return;
        }
        let Some(n) = self.nodes.remove(id) else { return };
        for t in self.tasks.values_mut().filter(|t| t.node_id.as_deref() == Some(id)) {
            let was_wanted = t.desired_state != DesiredState::Shutdown;
            let was_live = !t.status.state.is_terminal();
            t.desired_state = DesiredState::Shutdown;
            if was_live {
                t.status = TaskStatus {
                    state: TaskState::Failed,
                    timestamp: cx.at,
                    message: NODE_REMOVED.into(),
                    err: NODE_REMOVED.into(),
                    container_id: std::mem::take(&mut t.status.container_id),
                    exit_code: None,
                    health: String::new(),
                };
            }
            if was_wanted || was_live {
                let (tid, name, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
                let msg = if was_live { format!("failed: {NODE_REMOVED}") } else { "desired shutdown".into() };
                cx.event(ObjectKind::Task, Action::Update, &tid, &name, &stack, msg);
            }
        }
        cx.event(ObjectKind::Node, Action::Remove, &n.id, &n.name, "", String::new());
    }

    /// The configs or the secrets.
    pub fn objects(&self, kind: DataKind) -> &BTreeMap<String, StoredObject> {
        match kind {
            DataKind::Config => &self.configs,
            DataKind::Secret => &self.secrets,
        }
    }

    fn objects_mut(&mut self, kind: DataKind) -> &mut BTreeMap<String, StoredObject> {
        match kind {
            DataKind::Config => &mut self.configs,
            DataKind::Secret => &mut self.secrets,
        }
    }

    /// Full names of the services whose current spec, or a revision kept for
    /// rollback, uses the object `name`: while there is one, the object stays.
    pub fn users_of(&self, kind: DataKind, name: &str) -> Vec<String> {
        self.services
            .values()
            .filter(|s| {
                std::iter::once(&s.spec)
                    .chain(s.history.iter().map(|r| &r.spec))
                    .any(|spec| refs(&spec.task, kind).iter().any(|r| r.name == name))
            })
            .map(|s| s.name.clone())
            .collect()
    }

    fn create_object(
        &mut self,
        cx: &mut Ctx,
        kind: DataKind,
        name: &str,
        data: &Blob,
        labels: &BTreeMap<String, String>,
    ) {
        if let Err(why) = validate::object(kind, name, data.0.len()) {
            cx.refuse(Refusal::invalid(why));
            return;
        }
        let what = kind.as_str();
        if self.objects(kind).contains_key(name) {
            cx.refuse(Refusal::already_exists(format!(
                "{what} {name} exists already; {what}s cannot change: create one with a new name and use it in the stack"
            )));
            return;
        }
        let digest = digest(&data.0);
        let object = StoredObject {
            name: name.to_string(),
            stack: String::new(),
            labels: labels.clone(),
            current: digest.clone(),
            versions: BTreeMap::from([(digest, data.clone())]),
            created_at: cx.at,
            updated_at: cx.at,
        };
        self.objects_mut(kind).insert(name.to_string(), object);
        cx.event(object_event_kind(kind), Action::Create, name, name, "", String::new());
    }

    fn remove_object(&mut self, cx: &mut Ctx, kind: DataKind, name: &str) {
        let what = kind.as_str();
        let Some(object) = self.objects(kind).get(name) else {
            cx.refuse(Refusal::not_found(format!("no {what} named {name:?}")));
            return;
        };
        if !object.stack.is_empty() {
            cx.refuse(Refusal::failed_precondition(format!(
                "{what} {name} belongs to stack {}: remove it from the stack file and deploy with --prune, or remove the stack",
                object.stack
            )));
            return;
        }
        let users = self.users_of(kind, name);
        if !users.is_empty() {
            cx.refuse(Refusal::failed_precondition(format!(
                "{what} {name} is in use by {} (the current spec or a revision kept for rollback): remove it from \
                 their stack files and deploy, or remove the stacks",
                users.join(", ")
            )));
            return;
        }
        self.objects_mut(kind).remove(name);
        cx.event(object_event_kind(kind), Action::Remove, name, name, "", String::new());
    }

    /// Checks a stack's configs and secrets against the cluster's: external
    /// ones must exist, the stack's own must not collide with another's.
    fn check_objects(&self, spec: &StackSpec) -> Result<(), Refusal> {
        for kind in [DataKind::Config, DataKind::Secret] {
            let what = kind.as_str();
            for (key, o) in spec_objects(spec, kind) {
                match (self.objects(kind).get(&o.name), o.external) {
                    (None, true) => {
                        let command = if kind == DataKind::Config { "configs" } else { "secret" };
                        return Err(Refusal::failed_precondition(format!(
                            "{what} {key} is external, but the cluster has no {what} named {}: create it first with \
                             `stackctl {command} create {} FILE`",
                            o.name, o.name
                        )));
                    }
                    (Some(stored), false) if stored.stack != spec.name => {
                        let owner = if stored.stack.is_empty() {
                            "was created with stackctl".to_string()
                        } else {
                            format!("belongs to stack {}", stored.stack)
                        };
                        return Err(Refusal::already_exists(format!(
                            "{what} {key}: the cluster's {what} {} {owner}; use `external: true` to use it, or another name",
                            o.name
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Stores the stack's own configs and secrets (a new content is a new
    /// version), removes those it no longer declares and no service uses,
    /// and drops versions that no kept revision refers to.
    fn put_objects(&mut self, cx: &mut Ctx, spec: &StackSpec) {
        for kind in [DataKind::Config, DataKind::Secret] {
            let declared: Vec<(String, ObjectSpec)> =
                spec_objects(spec, kind).filter(|(_, o)| !o.external).map(|(k, o)| (k.clone(), o.clone())).collect();
            for (_, o) in &declared {
                let store = self.objects_mut(kind);
                match store.get_mut(&o.name) {
                    Some(stored) if stored.current == o.digest && stored.labels == o.labels => {}
                    Some(stored) => {
                        stored.versions.insert(o.digest.clone(), o.data.clone());
                        stored.current = o.digest.clone();
                        stored.labels = o.labels.clone();
                        stored.updated_at = cx.at;
                        cx.event(object_event_kind(kind), Action::Update, &o.name, &o.name, &spec.name, String::new());
                    }
                    None => {
                        store.insert(
                            o.name.clone(),
                            StoredObject {
                                name: o.name.clone(),
                                stack: spec.name.clone(),
                                labels: o.labels.clone(),
                                current: o.digest.clone(),
                                versions: BTreeMap::from([(o.digest.clone(), o.data.clone())]),
                                created_at: cx.at,
                                updated_at: cx.at,
                            },
                        );
                        cx.event(object_event_kind(kind), Action::Create, &o.name, &o.name, &spec.name, String::new());
                    }
                }
            }
        }
    }

    /// Removes the stack's objects that `keep` does not name and no service
    /// uses, then drops every version no service revision refers to.
    fn collect_objects(&mut self, cx: &mut Ctx, stack: &str, keep: Option<&StackSpec>) {
        for kind in [DataKind::Config, DataKind::Secret] {
            let names: Vec<String> = self
                .objects(kind)
                .values()
                .filter(|o| o.stack == stack)
                .filter(|o| {
                    keep.is_none_or(|spec| !spec_objects(spec, kind).any(|(_, d)| d.name == o.name && !d.external))
                })
                .map(|o| o.name.clone())
                .collect();
            for name in names {
                if self.users_of(kind, &name).is_empty() {
                    self.objects_mut(kind).remove(&name);
                    cx.event(object_event_kind(kind), Action::Remove, &name, &name, stack, String::new());
                }
            }
            // Versions still referred to by a current or kept revision.
            let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for svc in self.services.values() {
                let specs = std::iter::once(&svc.spec).chain(svc.history.iter().map(|r| &r.spec));
                for r in specs.flat_map(|s| refs(&s.task, kind)) {
                    wanted.entry(r.name.clone()).or_default().push(r.digest.clone());
                }
            }
            for o in self.objects_mut(kind).values_mut() {
                let keep = wanted.get(&o.name);
                let current = o.current.clone();
                o.versions.retain(|d, _| *d == current || keep.is_some_and(|k| k.contains(d)));
            }
        }
    }

    /// The service with this full name.
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.services.values().find(|s| s.name == name)
    }

    /// Tasks of one service.
    pub fn tasks_of<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.values().filter(move |t| t.service_id == service_id)
    }

    /// The network of the stack `stack` whose engine name is `name`, with
    /// its key: what an agent needs to create it for a task.
    pub fn stack_network(&self, stack: &str, name: &str) -> Option<StackNetwork> {
        let (key, spec) = self.stacks.get(stack)?.networks.iter().find(|(_, n)| n.name == name)?;
        Some(StackNetwork { stack: stack.to_string(), key: key.clone(), spec: spec.clone() })
    }

    /// The volume of the stack `stack` whose engine name is `name`, with its
    /// key: what an agent needs to create it for a task that mounts it.
    pub fn stack_volume(&self, stack: &str, name: &str) -> Option<crate::model::StackVolume> {
        let (key, spec) = self.stacks.get(stack)?.volumes.iter().find(|(_, v)| v.name == name)?;
        Some(crate::model::StackVolume { stack: stack.to_string(), key: key.clone(), spec: spec.clone() })
    }

    /// A SHA-256 over the whole state, to compare managers.
    pub fn state_hash(&self) -> String {
        digest(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// The networks a deploy of `spec` leaves the stack with; see [`kept_networks`].
    fn kept_networks(&self, spec: &StackSpec, prune: bool) -> BTreeMap<String, NetworkSpec> {
        let old = self.stacks.get(&spec.name).map(|s| &s.networks);
        let services = self.services.values().filter(|s| s.stack == spec.name).map(|s| &s.spec);
        kept_networks(old, services, spec, prune)
    }

    fn put_stack(&mut self, cx: &mut Ctx, spec: &StackSpec, prune: bool) {
        if let Err(errors) = validate::stack_spec(spec) {
            cx.refuse(Refusal::invalid(errors.join("; ")));
            return;
        }
        if let Err(why) = self.check_objects(spec) {
            cx.refuse(why);
            return;
        }
        self.put_objects(cx, spec);
        let mut result = DeployResult::default();
        let networks = self.kept_networks(spec, prune);
        match self.stacks.get_mut(&spec.name) {
            Some(stack) => {
                stack.volumes = spec.volumes.clone();
                stack.networks = networks;
                stack.updated_at = cx.at;
            }
            None => {
                self.stacks.insert(
                    spec.name.clone(),
                    Stack {
                        name: spec.name.clone(),
                        volumes: spec.volumes.clone(),
                        networks,
                        created_at: cx.at,
                        updated_at: cx.at,
                    },
                );
                cx.event(ObjectKind::Stack, Action::Create, &spec.name, &spec.name, &spec.name, String::new());
            }
        }
        for svc in spec.services.values() {
            let full = format!("{}_{}", spec.name, svc.name);
            let existing = self.services.values_mut().find(|s| s.name == full);
            match existing {
                Some(s) => {
                    // A deploy keeps the service's force counter (as `docker stack deploy` does).
                    let mut svc = svc.clone();
                    svc.task.force_update = s.spec.task.force_update;
                    if s.spec == svc {
                        result.unchanged.push(full);
                    } else {
                        new_revision(cx, s, svc);
                        result.updated.push(full);
                    }
                }
                None => {
                    cx.seq += 1;
                    let id = make_id(&self.cluster_id, cx.index, cx.seq);
                    self.services.insert(
                        id.clone(),
                        Service {
                            id: id.clone(),
                            stack: spec.name.clone(),
                            name: full.clone(),
                            spec: svc.clone(),
                            revision: 1,
                            history: Vec::new(),
                            update: UpdateStatus {
                                state: UpdateState::Updating,
                                started_at: cx.at,
                                ..Default::default()
                            },
                            created_at: cx.at,
                            updated_at: cx.at,
                        },
                    );
                    cx.event(ObjectKind::Service, Action::Create, &id, &full, &spec.name, "revision 1".into());
                    result.created.push(full);
                }
            }
        }
        if prune {
            let gone: Vec<ServiceId> = self
                .services
                .values()
                .filter(|s| s.stack == spec.name && !spec.services.contains_key(&s.spec.name))
                .map(|s| s.id.clone())
                .collect();
            for id in gone {
                if let Some(name) = self.remove_service(cx, &id) {
                    result.removed.push(name);
                }
            }
        }
        self.collect_objects(cx, &spec.name, Some(spec));
        cx.out.deploy = Some(result);
    }

    /// `ForceUpdate`: a new revision that differs only in the force counter.
    fn force_update(&mut self, cx: &mut Ctx, name: &str) {
        let Some(s) = self.services.values_mut().find(|s| s.name == name) else {
            cx.refuse(Refusal::not_found(format!("no service named {name:?}")));
            return;
        };
        if s.spec.mode.is_job() {
            cx.refuse(Refusal::failed_precondition(format!("{name} is a job: deploy it again to run it again")));
            return;
        }
        let mut spec = s.spec.clone();
        spec.task.force_update = spec.task.force_update.wrapping_add(1);
        new_revision(cx, s, spec);
    }

    fn remove_service(&mut self, cx: &mut Ctx, id: &str) -> Option<String> {
        let svc = self.services.remove(id)?;
        self.tasks.retain(|_, t| t.service_id != id);
        cx.event(ObjectKind::Service, Action::Remove, id, &svc.name, &svc.stack, String::new());
        Some(svc.name)
    }

    fn remove_stack(&mut self, cx: &mut Ctx, name: &str) {
        if self.stacks.remove(name).is_none() {
            cx.refuse(Refusal::not_found(format!("no stack named {name:?}")));
            return;
        }
        let ids: Vec<ServiceId> = self.services.values().filter(|s| s.stack == name).map(|s| s.id.clone()).collect();
        for id in ids {
            self.remove_service(cx, &id);
        }
        self.collect_objects(cx, name, None);
        cx.event(ObjectKind::Stack, Action::Remove, name, name, name, String::new());
    }

    fn upsert_node(&mut self, cx: &mut Ctx, node: &Node) {
        match self.nodes.get_mut(&node.id) {
            Some(n) => {
                let changed = n.name != node.name
                    || n.addr != node.addr
                    || n.resources != node.resources
                    || n.engine_version != node.engine_version;
                n.name = node.name.clone();
                n.addr = node.addr.clone();
                n.resources = node.resources.clone();
                n.engine_version = node.engine_version.clone();
                if changed {
                    n.updated_at = cx.at;
                    cx.event(ObjectKind::Node, Action::Update, &node.id, &node.name, "", String::new());
                }
            }
            None => {
                let mut n = node.clone();
                n.updated_at = cx.at;
                self.nodes.insert(n.id.clone(), n);
                cx.event(ObjectKind::Node, Action::Create, &node.id, &node.name, "", String::new());
            }
        }
    }

    /// Whether the slot of `nt` already holds a live task of `template`. (A task of
    /// an older template may still occupy it: start-first updates overlap them.)
    fn slot_taken(&self, nt: &NewTask, template: &crate::model::TaskTemplate) -> bool {
        self.tasks_of(&nt.service_id).any(|t| {
            let same_slot = if nt.slot == 0 { t.slot == 0 && t.node_id == nt.node_id } else { t.slot == nt.slot };
            same_slot && t.occupies_slot() && t.template == *template
        })
    }

    fn apply_plan(&mut self, cx: &mut Ctx, plan: &Plan) {
        // Rollbacks first: tasks created by this plan belong to the new revision.
        for sid in &plan.rollback {
            let Some(s) = self.services.get_mut(sid) else { continue };
            let Some(prev) = s.history.pop() else { continue };
            let current = std::mem::replace(&mut s.spec, prev.spec);
            s.history.push(Revision { revision: s.revision, spec: current, deployed_at: s.updated_at });
            s.revision += 1;
            s.updated_at = cx.at;
            let msg = format!("rolling back to the spec of revision {} as revision {}", prev.revision, s.revision);
            s.update = UpdateStatus {
                state: UpdateState::RollingBack,
                started_at: cx.at,
                completed_at: 0,
                message: s.update.message.clone(),
            };
            let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
            cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, msg);
        }
        for (sid, status) in &plan.update_status {
            if let Some(s) = self.services.get_mut(sid)
                && s.update != *status
            {
                s.update = status.clone();
                let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
                let mut msg = format!("update {:?}", status.state).to_lowercase();
                if !status.message.is_empty() {
                    msg = format!("{msg}: {}", status.message);
                }
                cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, msg);
            }
        }
        // Desired state only moves forward: a stopped task is never revived.
        for (tid, desired) in &plan.set_desired {
            if *desired == DesiredState::Shutdown {
                self.set_desired_shutdown(cx, tid);
            }
        }
        for tid in &plan.delete {
            if let Some(t) = self.tasks.remove(tid) {
                cx.event(ObjectKind::Task, Action::Remove, &t.id, &t.service_name, &t.stack, String::new());
            }
        }
        for nt in &plan.create {
            let Some(s) = self.services.get(&nt.service_id) else { continue };
            if s.revision != nt.revision || self.slot_taken(nt, &s.spec.task) {
                continue;
            }
            if let Some(node) = &nt.node_id
                && !self.nodes.contains_key(node)
            {
                continue;
            }
            cx.seq += 1;
            let id = make_id(&self.cluster_id, cx.index, cx.seq);
            let state = if nt.node_id.is_some() { TaskState::Assigned } else { TaskState::New };
            let task = Task {
                id: id.clone(),
                service_id: s.id.clone(),
                service_name: s.name.clone(),
                stack: s.stack.clone(),
                slot: nt.slot,
                node_id: nt.node_id.clone(),
                revision: s.revision,
                template: s.spec.task.clone(),
                desired_state: DesiredState::Running,
                status: TaskStatus { state, timestamp: cx.at, message: "created".into(), ..Default::default() },
                unplaceable: String::new(),
                created_at: cx.at,
            };
            cx.event(ObjectKind::Task, Action::Create, &id, &task.service_name, &task.stack, state.as_str().into());
            self.tasks.insert(id, task);
        }
    }

    fn schedule(&mut self, cx: &mut Ctx, decisions: &[Placement]) {
        for d in decisions {
            match d {
                Placement::Assign { task_id, node_id } => {
                    if !self.nodes.contains_key(node_id) {
                        continue;
                    }
                    let Some(t) = self.tasks.get_mut(task_id) else { continue };
                    if t.node_id.is_some()
                        || t.status.state >= TaskState::Assigned
                        || t.desired_state != DesiredState::Running
                    {
                        continue;
                    }
                    t.node_id = Some(node_id.clone());
                    t.unplaceable.clear();
                    t.status = TaskStatus {
                        state: TaskState::Assigned,
                        timestamp: cx.at,
                        message: "assigned".into(),
                        ..Default::default()
                    };
                    let (id, name, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
                    cx.event(ObjectKind::Task, Action::Update, &id, &name, &stack, "assigned".into());
                }
                Placement::Unplaceable { task_id, reason } => {
                    let Some(t) = self.tasks.get_mut(task_id) else { continue };
                    if t.node_id.is_some() || t.status.state > TaskState::Pending {
                        continue;
                    }
                    if t.status.state != TaskState::Pending || t.unplaceable != *reason {
                        t.status.state = TaskState::Pending;
                        t.status.timestamp = cx.at;
                        t.status.message = "pending".into();
                        t.unplaceable = reason.clone();
                        let (id, name, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
                        cx.event(
                            ObjectKind::Task,
                            Action::Update,
                            &id,
                            &name,
                            &stack,
                            format!("no suitable node: {reason}"),
                        );
                    }
                }
            }
        }
    }

    fn update_status(&mut self, cx: &mut Ctx, updates: &[TaskStatusUpdate]) {
        for u in updates {
            // A removed node's reports change nothing: its tasks ended with it.
            if !self.nodes.contains_key(&u.node_id) {
                continue;
            }
            let Some(t) = self.tasks.get_mut(&u.task_id) else { continue };
            if t.node_id.as_deref() != Some(u.node_id.as_str()) {
                continue;
            }
            // Observed states only move forward; the same state may refresh details.
            if u.status.state < t.status.state {
                continue;
            }
            if u.status == t.status {
                continue;
            }
            let state_changed = u.status.state != t.status.state;
            let health_changed = u.status.health != t.status.health;
            t.status = u.status.clone();
            if state_changed || health_changed {
                let mut msg = t.status.state.as_str().to_string();
                if !t.status.health.is_empty() {
                    msg = format!("{msg} ({})", t.status.health);
                }
                if let Some(code) = t.status.exit_code {
                    msg = format!("{msg}, exit code {code}");
                }
                if !t.status.err.is_empty() {
                    msg = format!("{msg}: {}", t.status.err);
                }
                let (id, name, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
                cx.event(ObjectKind::Task, Action::Update, &id, &name, &stack, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots and Raft logs written before security existed still decode:
    /// an empty security state, and an `InitCluster` without CA or node.
    #[test]
    fn states_and_commands_written_before_security_still_decode() {
        let old = r#"{"cluster_id":"c","nodes":{},"stacks":{},"services":{},"tasks":{},"configs":{},"secrets":{}}"#;
        let s: ClusterState = serde_json::from_str(old).expect("an old state decodes");
        assert_eq!(s.security, Security::default());
        assert!(!s.security.has_ca());
        assert_eq!(s.cluster_id, "c");
        // Older still: before configs and secrets.
        let older = r#"{"cluster_id":"c","nodes":{},"stacks":{},"services":{},"tasks":{}}"#;
        let s: ClusterState = serde_json::from_str(older).expect("an older state decodes");
        assert_eq!(s, ClusterState { cluster_id: "c".into(), ..ClusterState::default() });

        let cmd: Command =
            serde_json::from_str(r#"{"type":"init_cluster","cluster_id":"c","at":7}"#).expect("an old init decodes");
        assert_eq!(cmd, Command::InitCluster { cluster_id: "c".into(), at: 7, security: None, node: None });
        let mut s = ClusterState::default();
        assert_eq!(s.apply(1, &cmd).rejected, None);
        assert_eq!((s.cluster_id.as_str(), s.nodes.len()), ("c", 0));
        assert_eq!(s.security, Security::default());
    }
}
