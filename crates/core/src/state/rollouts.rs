//! Rollouts asked for from the command line: a forced update, a resumed
//! rollout, a rollback to an earlier revision. Each but the resume is a new
//! revision of the service.

use super::*;
use crate::model::{AUTOSCALE_DECISIONS_KEPT, AutoscaleDecision, ServiceMode};

impl ClusterState {
    /// `ForceUpdate`: a new revision that differs only in the force counter.
    pub(super) fn force_update(&mut self, cx: &mut Ctx, name: &str) {
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
        // The tag is resolved again: a forced update picks up a tag that moved.
        let image = ImagePin::for_image(&spec.task.image);
        new_revision(cx, s, spec, image);
    }

    /// `ResumeUpdate`: a paused rollout goes on.
    pub(super) fn resume_update(&mut self, cx: &mut Ctx, name: &str) {
        let Some(s) = self.services.values_mut().find(|s| s.name == name) else {
            cx.refuse(Refusal::not_found(format!("no service named {name:?}")));
            return;
        };
        if s.update.state != UpdateState::Paused {
            let state = format!("{:?}", s.update.state).to_lowercase();
            cx.refuse(Refusal::failed_precondition(format!(
                "the rollout of {name} is {state}, not paused: nothing to resume"
            )));
            return;
        }
        s.update = UpdateStatus { state: UpdateState::Updating, started_at: cx.at, ..Default::default() };
        let (id, name, stack, rev) = (s.id.clone(), s.name.clone(), s.stack.clone(), s.revision);
        cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, format!("revision {rev}: rollout resumed"));
    }

    /// `RollbackService`: a new revision with the spec of revision `to`
    /// (default: the one before), rolled out under its rollback policy.
    pub(super) fn rollback_service(&mut self, cx: &mut Ctx, name: &str, to: Option<u64>) {
        let Some(s) = self.services.values_mut().find(|s| s.name == name) else {
            cx.refuse(Refusal::not_found(format!("no service named {name:?}")));
            return;
        };
        if s.spec.mode.is_job() {
            cx.refuse(Refusal::failed_precondition(format!("{name} is a job: deploy it again to run it again")));
            return;
        }
        let target = match to {
            Some(n) => s.history.iter().find(|r| r.revision == n),
            None => s.history.last(),
        };
        let Some(target) = target.cloned() else {
            let kept: Vec<String> = s.history.iter().map(|r| r.revision.to_string()).collect();
            let msg = match (to, kept.is_empty()) {
                (_, true) => format!("{name} has no earlier revision to roll back to"),
                (Some(n), false) if n == s.revision => format!("revision {n} is the current revision of {name}"),
                (Some(n), false) => format!("{name} has no revision {n}: the kept ones are {}", kept.join(", ")),
                (None, false) => format!("{name} has no earlier revision to roll back to"),
            };
            cx.refuse(Refusal::not_found(msg));
            return;
        };
        // The force counter stays: a rollback is not a forced update; nor
        // does an autoscaled count go back.
        let spec = target.spec.as_deployed_over(&s.spec);
        if spec == s.spec {
            cx.refuse(Refusal::failed_precondition(format!(
                "{name} already runs the spec of revision {}",
                target.revision
            )));
            return;
        }
        // The image it ran then, not what its tag means now.
        let image = if target.image.is_pending() { ImagePin::for_image(&spec.task.image) } else { target.image };
        new_revision(cx, s, spec, image);
        s.update.state = UpdateState::RollingBack;
        s.update.message = format!("rollback to the spec of revision {} asked for", target.revision);
        // Its virtual addresses follow the networks of the spec it goes back to.
        let stack = s.stack.clone();
        let _ = self.allocate_stack_networks(&stack);
    }

    /// `ScaleService`: a new revision with another replica count.
    pub(super) fn scale_service(&mut self, cx: &mut Ctx, name: &str, replicas: u64, disable_autoscale: bool) {
        let Some(s) = self.services.values_mut().find(|s| s.name == name) else {
            cx.refuse(Refusal::not_found(format!("no service named {name:?}")));
            return;
        };
        if let Some(p) = &s.spec.autoscale
            && !disable_autoscale
        {
            cx.refuse(Refusal::failed_precondition(format!(
                "{name} is autoscaled between {} and {} replicas (x-stackd-autoscale): scale it with --disable-autoscale to set the count by hand and turn the autoscaler off until the stack is deployed again, or change the policy in the stack file",
                p.min, p.max
            )));
            return;
        }
        let current = match s.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::Global => {
                cx.refuse(Refusal::failed_precondition(format!(
                    "{name} is global: it runs one task on each eligible node; only replicated services scale"
                )));
                return;
            }
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {
                cx.refuse(Refusal::failed_precondition(format!(
                    "{name} is a job: change its replicas in the stack file and deploy it again"
                )));
                return;
            }
        };
        if replicas > crate::validate::MAX_REPLICAS {
            cx.refuse(Refusal::invalid(format!(
                "{name}: at most {} replicas, got {replicas}",
                crate::validate::MAX_REPLICAS
            )));
            return;
        }
        if replicas == current && s.spec.autoscale.is_none() {
            return;
        }
        let mut spec = s.spec.clone();
        spec.mode = ServiceMode::Replicated { replicas };
        let turned_off = spec.autoscale.take().is_some();
        // The same template: its tasks keep running what they run.
        let image = s.image.clone();
        new_revision(cx, s, spec, image);
        s.update.message = format!("scaled from {current} to {replicas} replicas");
        if turned_off {
            s.update.message.push_str(", the autoscaler turned off");
        }
    }

    /// `Autoscale`: the autoscaler's count, set in place (see the command).
    pub(super) fn autoscale(
        &mut self,
        cx: &mut Ctx,
        service_id: &str,
        replicas: u64,
        measured_milli: Option<u64>,
        decision: Option<&str>,
    ) {
        let Some(s) = self.services.get_mut(service_id) else { return };
        let (Some(policy), ServiceMode::Replicated { replicas: current }) = (s.spec.autoscale, s.spec.mode.clone())
        else {
            return;
        };
        let rollout = matches!(s.update.state, UpdateState::Updating | UpdateState::RollingBack);
        let to = if rollout { current } else { policy.clamp(replicas) };
        let status = s.autoscale.get_or_insert_with(Default::default);
        status.measured_at = cx.at;
        status.measured_milli = measured_milli;
        if let Some(why) = decision {
            status.decisions.push(AutoscaleDecision { at: cx.at, from: current, to, reason: why.to_string() });
            let excess = status.decisions.len().saturating_sub(AUTOSCALE_DECISIONS_KEPT);
            status.decisions.drain(..excess);
        }
        if to != current {
            s.spec.mode = ServiceMode::Replicated { replicas: to };
        }
        if let Some(why) = decision {
            let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
            cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, format!("autoscale: {why}"));
        }
    }

    /// `RebalanceService`: a rebalance starts (the orchestrator moves the
    /// tasks; see `orchestrator::rebalance`).
    pub(super) fn rebalance_service(&mut self, cx: &mut Ctx, name: &str) {
        let Some(s) = self.services.values_mut().find(|s| s.name == name) else {
            cx.refuse(Refusal::not_found(format!("no service named {name:?}")));
            return;
        };
        if !matches!(s.spec.mode, ServiceMode::Replicated { .. }) {
            cx.refuse(Refusal::failed_precondition(format!(
                "{name} is not a replicated service: only their tasks move between nodes"
            )));
            return;
        }
        if !matches!(s.update.state, UpdateState::Completed | UpdateState::RolledBack) {
            let state = format!("{:?}", s.update.state).to_lowercase();
            cx.refuse(Refusal::failed_precondition(format!(
                "{name} is rolling out revision {} ({state}): rebalance it once the rollout is over",
                s.revision
            )));
            return;
        }
        if s.rebalance.is_some() {
            cx.refuse(Refusal::failed_precondition(format!("{name} is being rebalanced already")));
            return;
        }
        s.rebalance = Some(crate::model::Rebalance { started_at: cx.at, ..Default::default() });
        let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
        cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, "rebalance started".into());
    }

    /// The services whose current revision waits for its image tag to be
    /// resolved (agents answer with `PinImage`).
    pub fn images_to_resolve(&self) -> impl Iterator<Item = &Service> {
        self.services.values().filter(|s| s.image.is_pending())
    }

    /// `PinImage` commands that keep the tag of every service waiting for
    /// one, with `reason`: what a node's agent answers for an image built on
    /// it (tests and simulations stand in for the agents with it).
    pub fn keep_tags(&self, reason: &str, at: Timestamp) -> Vec<Command> {
        self.images_to_resolve()
            .map(|s| Command::PinImage {
                service_id: s.id.clone(),
                revision: s.revision,
                pin: ImagePin::Tag { reason: reason.to_string() },
                at,
            })
            .collect()
    }

    /// `PinImage`: the current revision's image, as an agent resolved it.
    pub(super) fn pin_image(&mut self, cx: &mut Ctx, service_id: &str, revision: u64, pin: &ImagePin) {
        if pin.is_pending() {
            cx.refuse(Refusal::invalid("an image pin must be a digest or a tag with its reason"));
            return;
        }
        // A late or second answer changes nothing.
        let Some(s) = self.services.get_mut(service_id) else { return };
        if s.revision != revision || !s.image.is_pending() {
            return;
        }
        s.image = pin.clone();
        let msg = match pin {
            ImagePin::Digest { reference } => format!("revision {revision}: image {reference}"),
            ImagePin::Tag { reason } => format!("revision {revision}: image tag {} kept: {reason}", s.spec.task.image),
            ImagePin::Pending => String::new(),
        };
        let (id, name, stack) = (s.id.clone(), s.name.clone(), s.stack.clone());
        cx.event(ObjectKind::Service, Action::Update, &id, &name, &stack, msg);
    }
}
