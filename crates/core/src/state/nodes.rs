//! Applying the node commands: the cluster's first node (`InitCluster`),
//! joins, roles, removal, a node's record and what happens to its tasks
//! when it goes down or comes back; and client tokens.

use super::*;

impl ClusterState {
    /// `InitCluster`: the cluster's id, and optionally its security state
    /// and first node. Nothing changes unless all of them are accepted.
    pub(super) fn init(&mut self, cx: &mut Ctx, cluster_id: &str, security: Option<&Security>, node: Option<&Node>) {
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

    /// `RestoreCluster`: the saved state, its managers replaced by `node`.
    pub(super) fn restore(&mut self, cx: &mut Ctx, saved: &ClusterState, node: &Node) {
        if !self.cluster_id.is_empty() {
            cx.refuse(Refusal::already_exists("the cluster is initialised already: a restore starts a new data dir"));
            return;
        }
        if saved.cluster_id.is_empty() {
            cx.refuse(Refusal::invalid("the saved state has no cluster"));
            return;
        }
        if node.role != NodeRole::Manager {
            cx.refuse(Refusal::invalid(format!("node {} restores the cluster, so it must be a manager", node.id)));
            return;
        }
        let mut s = saved.clone();
        s.restore_generation = saved.restore_generation + 1;
        // The managers of the saved state went with their data dirs: they
        // join afresh. Their tasks end, as on a removal. Events go to a
        // scratch context first: a refusal below leaves none behind.
        let mut scratch = Ctx { index: cx.index, at: cx.at, seq: cx.seq, out: Applied::default() };
        let managers: Vec<NodeId> =
            s.nodes.values().filter(|n| n.role == NodeRole::Manager).map(|n| n.id.clone()).collect();
        for id in &managers {
            s.drop_node(&mut scratch, id);
        }
        if let Err(why) = s.check_new_node(node) {
            cx.refuse(why);
            return;
        }
        s.add_node(&mut scratch, node);
        cx.out.events.append(&mut scratch.out.events);
        cx.seq = scratch.seq;
        let generation = s.restore_generation;
        *self = s;
        cx.event(
            ObjectKind::Node,
            Action::Create,
            &node.id,
            &node.name,
            "",
            format!(
                "restored the cluster from a snapshot (generation {generation}); {} manager(s) to join again",
                managers.len()
            ),
        );
    }

    pub(super) fn create_token(&mut self, token: &ClientToken, cx: &mut Ctx) {
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
    pub(super) fn check_new_node(&self, node: &Node) -> Result<(), Refusal> {
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
    pub(super) fn add_node(&mut self, cx: &mut Ctx, node: &Node) {
        let mut n = node.clone();
        n.state = NodeState::Unknown;
        n.updated_at = cx.at;
        let msg = format!("joined as {}", n.role.as_str());
        cx.event(ObjectKind::Node, Action::Create, &n.id, &n.name, "", msg);
        self.nodes.insert(n.id.clone(), n);
    }

    /// The nodes whose desired role is manager, but `except`.
    pub(super) fn other_managers(&self, except: &str) -> usize {
        self.nodes.values().filter(|n| n.role == NodeRole::Manager && n.id != except).count()
    }

    pub(super) fn set_node_role(&mut self, cx: &mut Ctx, id: &str, role: NodeRole) {
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

    /// `SetNodeAvailability`: an event when it changes; setting the same
    /// availability again changes nothing.
    pub(super) fn set_node_availability(&mut self, cx: &mut Ctx, id: &str, availability: Availability) {
        let Some(n) = self.nodes.get_mut(id) else {
            cx.refuse(Refusal::not_found(format!("no node {id}")));
            return;
        };
        if n.availability == availability {
            return;
        }
        let was_drained = n.availability == Availability::Drain;
        n.availability = availability;
        n.updated_at = cx.at;
        let (id, name) = (n.id.clone(), n.name.clone());
        let msg = format!("availability {}", availability.as_str());
        cx.event(ObjectKind::Node, Action::Update, &id, &name, "", msg);
        if was_drained {
            self.keep_undrained_tasks(cx, &id);
        }
    }

    /// A node leaves `drain` before its tasks were all replaced: each task
    /// it still runs takes its slot back, and a replacement that is not up
    /// yet is dropped (one that is up already wins: the node's task stops).
    /// Up, not just running: a replacement whose health check has not
    /// passed yet would leave the slot serving nothing (found by the drain
    /// properties). No slot ever holds two wanted tasks of one template.
    fn keep_undrained_tasks(&mut self, cx: &mut Ctx, node_id: &str) {
        let kept: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some(node_id) && t.desired_state == DesiredState::Running)
            .map(|t| t.id.clone())
            .collect();
        for id in kept {
            let Some(t) = self.tasks.get(&id) else { continue };
            let same_slot = |o: &Task| {
                o.id != t.id
                    && o.service_id == t.service_id
                    && o.template == t.template
                    && o.desired_state == DesiredState::Running
                    && if t.slot == 0 { o.slot == 0 && o.node_id == t.node_id } else { o.slot == t.slot }
            };
            let others: Vec<(TaskId, bool)> =
                self.tasks_of(&t.service_id).filter(|o| same_slot(o)).map(|o| (o.id.clone(), o.is_up())).collect();
            if others.is_empty() {
                continue;
            }
            if others.iter().any(|(_, up)| *up) {
                self.set_desired_shutdown(cx, &id);
            } else {
                for (other, _) in others {
                    self.set_desired_shutdown(cx, &other);
                }
            }
        }
    }

    /// `UpdateNodeLabels`: the labels of `remove` go, those of `add` are set;
    /// one event that lists what changed (none when nothing did). Refused
    /// whole for an unknown node, an invalid change, or more than
    /// [`MAX_NODE_LABELS`](validate::MAX_NODE_LABELS) labels after it.
    pub(super) fn update_node_labels(
        &mut self,
        cx: &mut Ctx,
        id: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
    ) {
        let Some(n) = self.nodes.get_mut(id) else {
            cx.refuse(Refusal::not_found(format!("no node {id}")));
            return;
        };
        if let Err(why) = validate::node_label_change(add, remove) {
            cx.refuse(Refusal::invalid(why));
            return;
        }
        let mut labels = n.labels.clone();
        let mut changes = Vec::new();
        for k in remove {
            if labels.remove(k).is_some() {
                changes.push(format!("-{k}"));
            }
        }
        for (k, v) in add {
            if labels.get(k) != Some(v) {
                labels.insert(k.clone(), v.clone());
                changes.push(format!("+{k}={v}"));
            }
        }
        if labels.len() > validate::MAX_NODE_LABELS {
            cx.refuse(Refusal::invalid(format!(
                "node {} would have {} labels, {} at most",
                n.name,
                labels.len(),
                validate::MAX_NODE_LABELS
            )));
            return;
        }
        if changes.is_empty() {
            return;
        }
        n.labels = labels;
        n.updated_at = cx.at;
        let (id, name) = (n.id.clone(), n.name.clone());
        cx.event(ObjectKind::Node, Action::Update, &id, &name, "", format!("labels {}", changes.join(" ")));
    }

    /// A node was declared down: its tasks that had not ended become
    /// `orphaned`. An orphan no longer holds its slot, so the orchestrators
    /// start a replacement on the nodes that are up at once (as Swarm does),
    /// but it stays wanted until its replacement runs: if the node comes back
    /// first, it is taken back (`take_back_orphans`). A job's
    /// task is no longer wanted at once (a job's run is counted per task).
    pub(super) fn orphan_tasks_of(&mut self, cx: &mut Ctx, node_id: &str) {
        for id in self.task_ids_on(node_id) {
            let Some(t) = self.tasks.get(&id) else { continue };
            if t.status.state.is_terminal() {
                continue;
            }
            let job = self.services.get(&t.service_id).is_none_or(|s| s.spec.mode.is_job());
            let Some(t) = self.tasks.get_mut(&id) else { continue };
            if job {
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
    pub(super) fn take_back_orphans(&mut self, cx: &mut Ctx, node_id: &str) {
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
            let replaced = self
                .tasks_of(&t.service_id)
                .any(|o| same_slot(o) && o.desired_state == DesiredState::Running && o.is_up());
            if !current || replaced {
                self.set_desired_shutdown(cx, &id);
                continue;
            }
            let dropped: Vec<TaskId> = self
                .tasks_of(&t.service_id)
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

    /// The ids of the tasks on a node, in id order.
    fn task_ids_on(&self, node_id: &str) -> Vec<TaskId> {
        self.tasks.values().filter(|t| t.node_id.as_deref() == Some(node_id)).map(|t| t.id.clone()).collect()
    }

    /// Removes a node. Its tasks are no longer wanted; those that had not
    /// ended are marked failed, so the orchestrators fill their slots elsewhere.
    pub(super) fn remove_node(&mut self, cx: &mut Ctx, id: &str) {
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
        self.drop_node(cx, id);
    }

    /// Removes node `id` (no check): its tasks end, its network slices go back.
    fn drop_node(&mut self, cx: &mut Ctx, id: &str) {
        let Some(n) = self.nodes.remove(id) else { return };
        for tid in self.task_ids_on(id) {
            let Some(t) = self.tasks.get_mut(&tid) else { continue };
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
        // Its tasks' addresses go back once they are marked ended (after this
        // command); its slices of the networks go back now.
        self.net.release_node(id);
        cx.event(ObjectKind::Node, Action::Remove, &n.id, &n.name, "", String::new());
    }

    pub(super) fn upsert_node(&mut self, cx: &mut Ctx, node: &Node) {
        match self.nodes.get_mut(&node.id) {
            Some(n) => {
                let changed = n.name != node.name
                    || n.addr != node.addr
                    || n.resources != node.resources
                    || n.engine_version != node.engine_version
                    || n.engine != node.engine;
                n.name = node.name.clone();
                n.addr = node.addr.clone();
                n.resources = node.resources.clone();
                n.engine_version = node.engine_version.clone();
                n.engine = node.engine.clone();
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
}
