//! Rollouts asked for from the command line: a forced update, a resumed
//! rollout, a rollback to an earlier revision. Each but the resume is a new
//! revision of the service.

use super::*;

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
        new_revision(cx, s, spec);
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
        let mut spec = target.spec;
        // The force counter stays: a rollback is not a forced update.
        spec.task.force_update = s.spec.task.force_update;
        if spec == s.spec {
            cx.refuse(Refusal::failed_precondition(format!(
                "{name} already runs the spec of revision {}",
                target.revision
            )));
            return;
        }
        new_revision(cx, s, spec);
        s.update.state = UpdateState::RollingBack;
        s.update.message = format!("rollback to the spec of revision {} asked for", target.revision);
        // Its virtual addresses follow the networks of the spec it goes back to.
        let stack = s.stack.clone();
        let _ = self.allocate_stack_networks(&stack);
    }
}
