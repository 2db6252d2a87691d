//! Where a rollout stands, service by service: a pure function of what the
//! managers list ([`of_service`]), shown three ways by `deploy`'s wait loop
//! (a live bar per service on a terminal, one line per change otherwise,
//! one JSON object per event with `--output json`).

use serde::Serialize;
use stackd_core::model::{DesiredState, Service, Task, TaskState, UpdateState};

use crate::inspect::Counts;
use crate::output::name;

/// One service's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Full service name.
    pub service: String,
    /// Its current revision.
    pub revision: u64,
    /// Tasks of the current revision that run (and are healthy when the
    /// service has a health check); for a job, runs completed.
    pub running: u64,
    /// Tasks of the current revision that run but are not healthy yet.
    pub starting: u64,
    /// Tasks wanted (a job: completions wanted).
    pub desired: u64,
    /// Whether the service is a job.
    pub job: bool,
    /// The rollout's state: `updating`, `completed`, `paused`,
    /// `rolling_back`, `rolled_back`, `failed`.
    pub state: String,
    /// The rollout's message (why it paused or rolled back, what it waits for).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Why a task of the service cannot start yet: the scheduler's reason
    /// for a pending task (`no suitable node: …`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub waiting: String,
    /// The last failure of a task of the current revision.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_failure: String,
    /// Whether the service has converged (a job: completed).
    pub converged: bool,
}

impl Progress {
    /// The progress line without the service's name: `2/4 running (1
    /// starting), updating: …; waiting: …; last failure: …`.
    pub fn line(&self) -> String {
        let mut out = if self.job {
            format!("{}/{} completed", self.running, self.desired)
        } else {
            format!("{}/{} running", self.running, self.desired)
        };
        if self.starting > 0 {
            out.push_str(&format!(" ({} starting)", self.starting));
        }
        out.push_str(&format!(", {}", self.state));
        if !self.message.is_empty() {
            out.push_str(&format!(": {}", self.message));
        }
        if !self.waiting.is_empty() {
            out.push_str(&format!("; waiting: {}", self.waiting));
        }
        if !self.last_failure.is_empty() && self.last_failure != self.message {
            out.push_str(&format!("; last failure: {}", self.last_failure));
        }
        out
    }

    /// Why it has not converged, in a few words (for a timeout).
    pub fn why_not(&self) -> String {
        if !self.waiting.is_empty() {
            return self.waiting.clone();
        }
        if !self.last_failure.is_empty() {
            return format!("{}/{} running; last failure: {}", self.running, self.desired, self.last_failure);
        }
        if self.starting > 0 {
            return format!("{}/{} running, {} not healthy yet", self.running, self.desired, self.starting);
        }
        if !self.message.is_empty() {
            return format!("{}/{} running, {}: {}", self.running, self.desired, self.state, self.message);
        }
        format!("{}/{} running, {}", self.running, self.desired, self.state)
    }
}

/// The progress of `svc` (with the counts the managers computed) from its
/// tasks (any order; tasks of other services are ignored).
pub fn of_service(svc: &Service, counts: Counts, tasks: &[Task]) -> Progress {
    let job = svc.spec.mode.is_job();
    let mine = || tasks.iter().filter(|t| t.service_id == svc.id);
    let current = |t: &&Task| t.template == svc.spec.task;
    let starting = if job {
        0
    } else {
        mine()
            .filter(current)
            .filter(|t| t.desired_state == DesiredState::Running && t.status.state == TaskState::Running && !t.is_up())
            .count() as u64
    };
    // Why it waits, first found: a pending task the scheduler cannot place,
    // its image tag being resolved, a rebalance under way. (A dependency of
    // `depends_on` not ready is in the rollout's message.)
    let waiting = mine()
        .find(|t| {
            t.desired_state == DesiredState::Running
                && t.status.state <= TaskState::Pending
                && !t.unplaceable.is_empty()
        })
        .map(|t| format!("no suitable node: {}", t.unplaceable))
        .or_else(|| svc.image.is_pending().then(|| "resolving the image tag to a digest".to_string()))
        .or_else(|| {
            svc.rebalance.as_ref().map(|r| format!("rebalancing: {} moving, {} moved", r.moving.len(), r.moved))
        })
        .unwrap_or_default();
    let last_failure = mine()
        .filter(current)
        .filter(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
        .max_by_key(|t| (t.status.timestamp, t.id.clone()))
        .map(stackd_core::orchestrator::describe_failure)
        .unwrap_or_default();
    let running = if job { counts.completed } else { counts.running };
    let state = svc.update.state;
    // A rebalance under way is not over, whatever the rollout says.
    let converged = svc.rebalance.is_none()
        && match state {
            UpdateState::Completed | UpdateState::RolledBack => job || counts.running == counts.desired,
            _ => false,
        };
    Progress {
        service: svc.name.clone(),
        revision: svc.revision,
        running,
        starting,
        desired: counts.desired,
        job,
        state: name(&state),
        message: svc.update.message.clone(),
        waiting,
        last_failure,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stackd_core::model::{TaskStatus, UpdateStatus};

    use super::*;

    fn service() -> Service {
        let file = stackd_core::loader::SourceFile {
            name: "stack.yml".into(),
            text: "services:\n  web:\n    image: web:2\n    deploy:\n      replicas: 3\n".into(),
        };
        let loaded = stackd_core::loader::load("app", &[file], &Default::default()).expect("stack loads");
        let spec = loaded.spec.services["web"].clone();
        Service {
            autoscale: None,
            id: "s1".into(),
            name: "app_web".into(),
            stack: "app".into(),
            spec,
            revision: 2,
            history: Vec::new(),
            update: UpdateStatus { state: UpdateState::Updating, ..Default::default() },
            created_at: 0,
            updated_at: 0,
            image: stackd_core::model::ImagePin::unrecorded(),
            rebalance: None,
            task_failures: 0,
        }
    }

    fn task(id: &str, svc: &Service, state: TaskState, health: &str) -> Task {
        Task {
            id: id.into(),
            service_id: svc.id.clone(),
            service_name: svc.name.clone(),
            stack: svc.stack.clone(),
            slot: 1,
            node_id: Some("n1".into()),
            revision: svc.revision,
            template: svc.spec.task.clone(),
            desired_state: DesiredState::Running,
            status: TaskStatus { state, health: health.into(), timestamp: 5, ..Default::default() },
            unplaceable: String::new(),
            created_at: 1,
            addresses: BTreeMap::new(),
            image: String::new(),
        }
    }

    #[test]
    fn says_why_a_service_waits() {
        let svc = service();
        let mut pending = task("t1", &svc, TaskState::Pending, "");
        pending.node_id = None;
        pending.unplaceable = "port 80/tcp is taken on every node".into();
        let starting = task("t2", &svc, TaskState::Running, "starting");
        let mut failed = task("t3", &svc, TaskState::Failed, "");
        failed.status.exit_code = Some(1);
        let p = of_service(&svc, Counts { running: 1, desired: 3, completed: 0 }, &[pending, starting, failed]);
        assert_eq!(p.starting, 1);
        assert!(!p.converged);
        assert_eq!(
            p.line(),
            "1/3 running (1 starting), updating; waiting: no suitable node: port 80/tcp is taken on every node; \
             last failure: task t3 (slot 1) failed with exit code 1"
        );
        assert_eq!(p.why_not(), "no suitable node: port 80/tcp is taken on every node");
    }

    #[test]
    fn converged_when_every_replica_runs_and_the_rollout_completed() {
        let mut svc = service();
        svc.update.state = UpdateState::Completed;
        let tasks = [task("t1", &svc, TaskState::Running, "healthy")];
        let p = of_service(&svc, Counts { running: 3, desired: 3, completed: 0 }, &tasks);
        assert!(p.converged);
        assert_eq!(p.line(), "3/3 running, completed");
        let p = of_service(&svc, Counts { running: 2, desired: 3, completed: 0 }, &tasks);
        assert!(!p.converged);
        assert_eq!(p.why_not(), "2/3 running, completed");
        // Another service's tasks are not counted.
        let mut other = task("t9", &svc, TaskState::Running, "starting");
        other.service_id = "s2".into();
        assert_eq!(of_service(&svc, Counts { running: 3, desired: 3, completed: 0 }, &[other]).starting, 0);
    }
}
