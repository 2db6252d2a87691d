//! Applying the commands of the loops: the orchestrators' plans
//! (`ApplyPlan`), the scheduler's placements (`Schedule`) and the agents'
//! status reports (`UpdateTaskStatus`).

use std::collections::BTreeSet;

use super::*;

/// A slot of a service: a replica number, or 0 and the node of a global task.
type SlotOf = (u64, Option<NodeId>);

fn slot_of(slot: u64, node: &Option<NodeId>) -> SlotOf {
    (slot, if slot == 0 { node.clone() } else { None })
}

impl ClusterState {
    /// The slots of `service` that hold a live task of its current
    /// template. (A task of an older template may still occupy one:
    /// start-first updates overlap them; so may one on a drained node.)
    fn taken_slots(&self, service: &Service) -> BTreeSet<SlotOf> {
        // A task on a drained node keeps serving until its replacement runs:
        // it leaves its slot to it.
        let moving = service.rebalance.as_ref().map(|r| &r.moving);
        let drained = |t: &Task| {
            t.node_id.as_ref().and_then(|n| self.nodes.get(n)).is_some_and(|n| n.availability == Availability::Drain)
                || moving.is_some_and(|m| m.contains(&t.id))
        };
        self.tasks_of(&service.id)
            .filter(|t| t.occupies_slot() && t.template == service.spec.task && !drained(t))
            .map(|t| slot_of(t.slot, &t.node_id))
            .collect()
    }

    pub(super) fn apply_plan(&mut self, cx: &mut Ctx, plan: &Plan) {
        // Rollbacks first: tasks created by this plan belong to the new revision.
        for sid in &plan.rollback {
            let Some(s) = self.services.get_mut(sid) else { continue };
            // Back to the newest revision that was healthy; to the one before
            // when none is known to have been (revisions kept before their
            // rollouts were recorded).
            let target = s.history.iter().rposition(Revision::was_healthy).or(s.history.len().checked_sub(1));
            let Some(prev) = target.map(|k| s.history.remove(k)) else { continue };
            // An autoscaled count stays what the autoscaler set.
            let spec = prev.spec.as_deployed_over(&s.spec);
            let current = std::mem::replace(&mut s.spec, spec);
            // The image the previous revision ran, not what its tag means now.
            let image = if prev.image.is_pending() { ImagePin::for_image(&s.spec.task.image) } else { prev.image };
            let current_image = std::mem::replace(&mut s.image, image);
            s.history.push(Revision {
                revision: s.revision,
                spec: current,
                deployed_at: s.updated_at,
                image: current_image,
                // Its rollout ended rolled back, for the reason the plan gives.
                rollout: Some(UpdateStatus {
                    state: UpdateState::RollingBack,
                    completed_at: cx.at,
                    message: plan
                        .update_status
                        .iter()
                        .find(|(id, _)| id == sid)
                        .map_or_else(|| s.update.message.clone(), |(_, u)| u.message.clone()),
                    ..s.update.clone()
                }),
            });
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
        for (sid, tid) in &plan.moves {
            let running = self.tasks.get(tid).is_some_and(|t| t.desired_state == DesiredState::Running);
            if let Some(s) = self.services.get_mut(sid)
                && let Some(r) = s.rebalance.as_mut()
                && running
                && r.moving.insert(tid.clone())
            {
                let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
                let msg = format!("rebalance: moving task {}", crate::model::prefix(tid, 12));
                cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, msg);
            }
        }
        for (sid, why) in &plan.rebalanced {
            if let Some(s) = self.services.get_mut(sid)
                && let Some(r) = s.rebalance.take()
            {
                let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
                let msg = format!("rebalance over: {why} ({} moved)", r.moved);
                cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, msg);
            }
        }
        for (sid, note) in &plan.notes {
            if let Some(s) = self.services.get(sid) {
                let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
                cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, note.clone());
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
                self.forget_task(&t);
                cx.event(ObjectKind::Task, Action::Remove, &t.id, &t.service_name, &t.stack, String::new());
            }
        }
        // The taken slots of each service the plan fills, looked up once:
        // a look at the service's tasks per created task made a plan that
        // fills N slots cost N² (minutes at 100,000 tasks).
        let mut taken: BTreeMap<ServiceId, BTreeSet<SlotOf>> = BTreeMap::new();
        for nt in &plan.create {
            let Some(s) = self.services.get(&nt.service_id) else { continue };
            if s.revision != nt.revision {
                continue;
            }
            let slots = taken.entry(s.id.clone()).or_insert_with(|| self.taken_slots(s));
            let slot = slot_of(nt.slot, &nt.node_id);
            if slots.contains(&slot) {
                continue;
            }
            if let Some(node) = &nt.node_id
                && !self.nodes.contains_key(node)
            {
                continue;
            }
            slots.insert(slot);
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
                addresses: BTreeMap::new(),
                image: match &s.image {
                    ImagePin::Digest { reference } => reference.clone(),
                    ImagePin::Pending | ImagePin::Tag { .. } => String::new(),
                },
            };
            cx.event(ObjectKind::Task, Action::Create, &id, &task.service_name, &task.stack, state.as_str().into());
            self.tasks.insert(id.clone(), task);
            // A task created on its node (global) takes its addresses now; with
            // no room left it is dropped again, and the next pass tries anew.
            if let Some(node) = &nt.node_id
                && self.assign_addresses(&id, node).is_err()
            {
                self.tasks.remove(&id);
                cx.out.events.pop();
            }
        }
    }

    pub(super) fn schedule(&mut self, cx: &mut Ctx, decisions: &[Placement]) {
        for d in decisions {
            match d {
                Placement::Assign { task_id, node_id } => {
                    if !self.nodes.contains_key(node_id) {
                        continue;
                    }
                    let Some(t) = self.tasks.get(task_id) else { continue };
                    if t.node_id.is_some()
                        || t.status.state >= TaskState::Assigned
                        || t.desired_state != DesiredState::Running
                    {
                        continue;
                    }
                    if let Err(e) = self.assign_addresses(task_id, node_id) {
                        self.mark_unplaceable(cx, task_id, &e.to_string());
                        continue;
                    }
                    if !self.tasks.assign(task_id, node_id) {
                        continue;
                    }
                    let Some(t) = self.tasks.get_mut(task_id) else { continue };
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
                Placement::Unplaceable { task_id, reason } => self.mark_unplaceable(cx, task_id, reason),
            }
        }
    }

    /// A task no node can take now: pending, with the reason.
    fn mark_unplaceable(&mut self, cx: &mut Ctx, task_id: &str, reason: &str) {
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        if t.node_id.is_some() || t.status.state > TaskState::Pending {
            return;
        }
        if t.status.state != TaskState::Pending || t.unplaceable != reason {
            t.status.state = TaskState::Pending;
            t.status.timestamp = cx.at;
            t.status.message = "pending".into();
            t.unplaceable = reason.to_string();
            let (id, name, stack) = (t.id.clone(), t.service_name.clone(), t.stack.clone());
            cx.event(ObjectKind::Task, Action::Update, &id, &name, &stack, format!("no suitable node: {reason}"));
        }
    }

    pub(super) fn update_status(&mut self, cx: &mut Ctx, updates: &[TaskStatusUpdate]) {
        for u in updates {
            // A removed node's reports change nothing: its tasks ended with it.
            if !self.nodes.contains_key(&u.node_id) {
                continue;
            }
            let Some(t) = self.tasks.get(&u.task_id) else { continue };
            if t.node_id.as_deref() != Some(u.node_id.as_str()) {
                continue;
            }
            // Observed states only move forward; the same state may refresh details.
            if u.status.state < t.status.state {
                continue;
            }
            // `orphaned` is the managers' word for a task of a lost node, never
            // an agent's report (a task that had ended would seem to live again).
            if u.status.state == TaskState::Orphaned {
                continue;
            }
            if u.status == t.status {
                continue;
            }
            // Changed only now: a report that changes nothing copies nothing.
            let Some(t) = self.tasks.get_mut(&u.task_id) else { continue };
            let state_changed = u.status.state != t.status.state;
            let health_changed = u.status.health != t.status.health;
            let failed = state_changed
                && !t.status.state.is_terminal()
                && matches!(u.status.state, TaskState::Failed | TaskState::Rejected);
            t.status = u.status.clone();
            let service_id = t.service_id.clone();
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
            if failed && let Some(svc) = self.services.get_mut(&service_id) {
                svc.task_failures += 1;
            }
        }
    }
}
