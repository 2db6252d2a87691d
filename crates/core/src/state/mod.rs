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

use crate::command::{Command, Placement, Plan, TaskStatusUpdate};
use crate::model::{
    Availability, Blob, DataKind, DesiredState, FileRef, ImagePin, NetworkSpec, Node, NodeId, NodeRole, NodeState,
    ObjectSpec, REVISIONS_KEPT, Revision, Service, ServiceId, ServiceSpec, Stack, StackNetwork, StackSpec,
    StoredObject, Task, TaskId, TaskState, TaskStatus, TaskTemplate, Timestamp, UpdateState, UpdateStatus, digest,
};
use crate::refusal::{Refusal, RefusalKind};
use crate::registry::RegistryAuth;
use crate::security::{ClientToken, Security};
use crate::validate;

mod network;
mod nodes;
mod objects;
mod rollouts;
mod table;
mod tasks;

pub use network::{holds_addresses, is_managed};
pub use table::{Tasks, templates_shared, with_shared_templates};

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
    /// A scheduled cluster snapshot.
    Snapshot,
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
    /// Position among the events of that log entry (0, 1, …): with
    /// `index`, the event's place in the cluster's history
    /// ([`Event::cursor`]), the same on every manager.
    #[serde(default)]
    pub seq: u32,
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

impl Event {
    /// The event's place in the cluster's history: ordered, unique, and the
    /// same on every manager.
    pub fn cursor(&self) -> (u64, u32) {
        (self.index, self.seq)
    }
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
    /// Tasks by id (a persistent map: see [`Tasks`]).
    pub tasks: Tasks,
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
    /// The container networks' addresses (empty in a cluster initialised
    /// before networks spanned nodes: allocated on the next deploy). Left
    /// out of the encoding while empty, so a state without networks encodes
    /// (and hashes) as before.
    #[serde(default, skip_serializing_if = "crate::net::Networks::is_empty")]
    pub net: crate::net::Networks,
    /// Scheduled snapshots: the policy, the last tick claimed, what was
    /// taken (left out of the encoding while empty, as `net`).
    #[serde(default, skip_serializing_if = "crate::schedule::Snapshots::is_empty")]
    pub snapshots: crate::schedule::Snapshots,
    /// How many times this cluster was restored from a snapshot file
    /// (`stackd restore`): managers refuse Raft messages of a lower
    /// generation, so a manager of the cluster before the restore that comes
    /// back is refused, not merged. 0 (left out of the encoding) until the
    /// first restore.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restore_generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// Makes `spec` the service's new revision (its image pinned by `image`:
/// [`ImagePin::Pending`] until an agent says), the old one kept in its
/// history, and starts its rollout.
fn new_revision(cx: &mut Ctx, s: &mut Service, spec: ServiceSpec, image: ImagePin) {
    let old = std::mem::replace(&mut s.spec, spec);
    let old_image = std::mem::replace(&mut s.image, image);
    s.history.push(Revision {
        revision: s.revision,
        spec: old,
        deployed_at: s.updated_at,
        image: old_image,
        rollout: Some(s.update.clone()),
    });
    if s.history.len() > REVISIONS_KEPT {
        let excess = s.history.len() - REVISIONS_KEPT;
        s.history.drain(..excess);
    }
    s.revision += 1;
    s.updated_at = cx.at;
    s.update = UpdateStatus { state: UpdateState::Updating, started_at: cx.at, ..Default::default() };
    // A new revision replaces what a rebalance would move: it ends.
    s.rebalance = None;
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
            seq: 0,
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
        let mut applied = self.apply_entry(index, cmd);
        // Number the entry's events in order, a batch's across its commands.
        let events = applied.events.iter_mut().chain(applied.batch.iter_mut().flat_map(|a| a.events.iter_mut()));
        for (seq, e) in events.enumerate() {
            e.seq = u32::try_from(seq).unwrap_or(u32::MAX);
        }
        applied
    }

    fn apply_entry(&mut self, index: u64, cmd: &Command) -> Applied {
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
            Command::RestoreCluster { state, node, .. } => self.restore(&mut cx, state, node),
            Command::PutStack { spec, prune, registry_auth, .. } => {
                self.put_stack(&mut cx, spec, *prune, registry_auth.as_ref())
            }
            Command::ForceUpdate { service, .. } => self.force_update(&mut cx, service),
            Command::ResumeUpdate { service, .. } => self.resume_update(&mut cx, service),
            Command::RollbackService { service, to, .. } => self.rollback_service(&mut cx, service, *to),
            Command::PinImage { service_id, revision, pin, .. } => self.pin_image(&mut cx, service_id, *revision, pin),
            Command::ScaleService { service, replicas, disable_autoscale, .. } => {
                self.scale_service(&mut cx, service, *replicas, *disable_autoscale)
            }
            Command::Autoscale { service_id, replicas, measured_milli, decision, .. } => {
                self.autoscale(&mut cx, service_id, *replicas, *measured_milli, decision.as_deref())
            }
            Command::RebalanceService { service, .. } => self.rebalance_service(&mut cx, service),
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
            Command::SetNodeAvailability { id, availability, .. } => {
                self.set_node_availability(&mut cx, id, *availability)
            }
            Command::UpdateNodeLabels { id, add, remove, .. } => self.update_node_labels(&mut cx, id, add, remove),
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
            Command::SetSnapshotPolicy { policy, .. } => match policy.as_ref().map(|p| p.check()) {
                Some(Err(why)) => cx.refuse(Refusal::invalid(why)),
                _ => self.snapshots.policy = policy.clone(),
            },
            Command::ClaimSnapshot { tick, node, .. } => {
                if let Err(why) = self.snapshots.claim(*tick, node) {
                    cx.refuse(Refusal::failed_precondition(why));
                }
            }
            Command::RecordSnapshot { record, .. } => {
                let taken = format!("taken at index {}: {} ({} bytes)", record.index, record.file, record.bytes);
                let (action, message) = if !record.error.is_empty() {
                    (Action::Update, format!("FAILED: {}", record.error))
                } else if !record.remote_error.is_empty() {
                    (Action::Update, format!("{taken}; upload FAILED: {}", record.remote_error))
                } else if record.remote.is_empty() {
                    (Action::Create, taken)
                } else {
                    (Action::Create, format!("{taken}, uploaded to {}", record.remote))
                };
                let name = format!("scheduled {}", crate::model::rfc3339(record.tick));
                cx.event(ObjectKind::Snapshot, action, &record.node, &name, "", message);
                self.snapshots.record(record.clone());
            }
            Command::SetRecoveryRecipient { recipient, .. } => {
                if recipient.starts_with("age1") && recipient.len() > 10 {
                    self.security.recovery_recipient = recipient.clone();
                } else {
                    cx.refuse(Refusal::invalid(format!("{recipient:?} is not an age recipient (age1…)")));
                }
            }
            Command::SetUnlockKey { previous, .. } if *previous != self.security.unlock_key => {
                cx.refuse(Refusal::failed_precondition(
                    "the unlock key changed meanwhile (another `stackctl cluster autolock` or `unlock-key --rotate`): \
                     nothing was changed; `stackctl cluster unlock-key` prints the key in force",
                ));
            }
            Command::SetUnlockKey { key, .. } => {
                let text = std::str::from_utf8(&key.0).unwrap_or_default();
                // 32 bytes in unpadded base64 after the prefix.
                let valid = key.0.is_empty()
                    || (text.len() == crate::security::UNLOCK_KEY_PREFIX.len() + 43
                        && text.starts_with(crate::security::UNLOCK_KEY_PREFIX));
                if valid {
                    self.security.unlock_key = key.clone();
                } else {
                    cx.refuse(Refusal::invalid(format!(
                        "not an unlock key ({}…, {} bytes)",
                        crate::security::UNLOCK_KEY_PREFIX,
                        key.0.len()
                    )));
                }
            }
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
        self.release_addresses(&cx);
        cx.out
    }

    /// Sets a task's desired state to Shutdown. A task that was never
    /// assigned to a node has no agent to stop it: it is shut down at once.
    fn set_desired_shutdown(&mut self, cx: &mut Ctx, id: &str) {
        let Some(t) = self.tasks.get_mut(id) else { return };
        if t.desired_state == DesiredState::Shutdown {
            return;
        }
        t.desired_state = DesiredState::Shutdown;
        if let Some(r) = self.services.get_mut(&t.service_id).and_then(|s| s.rebalance.as_mut())
            && r.moving.remove(&t.id)
        {
            r.moved += 1;
            r.last_moved_at = cx.at;
        }
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

    /// The service with this full name.
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.services.values().find(|s| s.name == name)
    }

    /// Tasks of one service, in id order (through the map's index: no look
    /// at the other services' tasks).
    pub fn tasks_of<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.of_service(service_id)
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

    fn put_stack(&mut self, cx: &mut Ctx, spec: &StackSpec, prune: bool, registry_auth: Option<&RegistryAuth>) {
        if let Err(errors) = validate::stack_spec(spec) {
            cx.refuse(Refusal::invalid(errors.join("; ")));
            return;
        }
        if let Err(why) = self.check_objects(spec) {
            cx.refuse(why);
            return;
        }
        if let Err(why) = self.check_published(spec, prune) {
            cx.refuse(why);
            return;
        }
        if let Err(why) = self.check_network_room(spec, prune) {
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
                // A deploy without --with-registry-auth keeps the stack's credentials.
                if let Some(auth) = registry_auth {
                    stack.registry_auth = auth.clone();
                }
            }
            None => {
                self.stacks.insert(
                    spec.name.clone(),
                    Stack {
                        name: spec.name.clone(),
                        volumes: spec.volumes.clone(),
                        networks,
                        registry_auth: registry_auth.cloned().unwrap_or_default(),
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
                    // A deploy keeps the service's force counter (as `docker
                    // stack deploy` does) and an autoscaled count.
                    let svc = svc.as_deployed_over(&s.spec);
                    if s.spec == svc {
                        result.unchanged.push(full);
                    } else {
                        // Its tasks stay (the template is the same): so does
                        // what they run; a new template resolves its tag anew.
                        let image = if svc.task == s.spec.task && !s.image.is_pending() {
                            s.image.clone()
                        } else {
                            ImagePin::for_image(&svc.task.image)
                        };
                        new_revision(cx, s, svc, image);
                        result.updated.push(full);
                    }
                }
                None => {
                    cx.seq += 1;
                    let id = make_id(&self.cluster_id, cx.index, cx.seq);
                    self.services.insert(id.clone(), Service::new(id.clone(), &spec.name, svc.clone(), cx.at));
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
        // Room was checked above: this cannot fail.
        let allocated = self.allocate_stack_networks(&spec.name);
        debug_assert!(allocated.is_ok(), "{allocated:?}");
        self.collect_objects(cx, &spec.name, Some(spec));
        cx.out.deploy = Some(result);
    }

    fn remove_service(&mut self, cx: &mut Ctx, id: &str) -> Option<String> {
        let svc = self.services.remove(id)?;
        let tasks: Vec<TaskId> = self.tasks.of_service(id).map(|t| t.id.clone()).collect();
        for t in tasks {
            if let Some(t) = self.tasks.remove(&t) {
                self.forget_task(&t);
            }
        }
        let _ = self.net.set_vips(id, &[]);
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
