//! The decision core of a task runner: [`Phase`]s, the [`Event`]s that the
//! Docker side feeds back, and [`next`], which decides the next phase, the
//! status reports to send and the one operation to perform. Pure: no I/O, no
//! clock (the driver stamps reports with the time).

use stackd_core::model::{DesiredState, TaskState};

/// What the runner knows of its task when it decides: the latest version the
/// manager sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct View {
    /// What the cluster wants.
    pub desired: DesiredState,
    /// The last state the manager recorded.
    pub known_state: TaskState,
    /// The container id the manager recorded.
    pub known_container: String,
    /// The health the manager recorded.
    pub known_health: String,
}

/// How long a task waits for a host port that another container of the
/// cluster holds (one in its stop grace period) before it fails.
pub(crate) const PORT_WAIT_MS: u64 = 60_000;

/// Why a container is being stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// The task's desired state became Shutdown: report Shutdown once stopped.
    Shutdown,
    /// The container became unhealthy (the last probe's output): report
    /// Failed once stopped, so that its replacement never finds the
    /// container still holding its ports, as in Swarm.
    Unhealthy(String),
    /// The task is already terminal (reported, or known to the manager) but
    /// its container runs: stop it, report nothing, end in this state.
    Silent(TaskState),
}

/// Where a runner is in the life of its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Looking for an existing container of the task.
    Locating,
    /// Making sure the image is present.
    Preparing,
    /// Making sure the task's named volumes exist, as the stack declares them.
    Mounting,
    /// Making sure the task's networks exist.
    Networking,
    /// Creating the container.
    Creating,
    /// The container exists; waiting for the host ports it publishes to be
    /// free (another container of the cluster may still hold them).
    AwaitingPorts {
        /// Container id.
        container_id: String,
        /// The holder last reported (empty: none yet).
        held: String,
    },
    /// Starting the container.
    Starting {
        /// Container id.
        container_id: String,
    },
    /// The container runs: waiting for its exit, a health change or a shutdown.
    Running {
        /// Container id.
        container_id: String,
        /// Last health seen (empty: no health check).
        health: String,
    },
    /// Stopping the container.
    Stopping {
        /// Container id.
        container_id: String,
        /// Last health seen.
        health: String,
        /// Why.
        cause: StopCause,
    },
    /// Terminal: nothing more happens until the task leaves the node's set.
    Done {
        /// The task's final state.
        state: TaskState,
    },
}

/// What a container found by its task label looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FoundState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Exited with this code.
    Exited(i64),
}

/// An existing container of the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Container id.
    pub id: String,
    /// Its state.
    pub state: FoundState,
    /// Its health (empty: no health check).
    pub health: String,
}

/// The outcome of an operation, fed back into [`next`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The lookup by task label found this container, or none.
    Located(Option<Found>),
    /// The image is present.
    ImageReady,
    /// The image is missing and could not be pulled.
    ImageFailed(String),
    /// Every named volume of the task exists as its stack declares it.
    VolumesReady,
    /// A named volume of the task is missing and cannot be created, or
    /// exists with another driver or other options.
    VolumesFailed(String),
    /// Every network of the task exists.
    NetworksReady,
    /// A network of the task is missing and cannot be created (an external
    /// network that does not exist, a name taken by another network).
    NetworksFailed(String),
    /// The container was created.
    Created(String),
    /// Docker refused to create the container.
    CreateFailed(String),
    /// The host ports the task publishes are free.
    PortsFree,
    /// A host port the task publishes is held by another running container.
    PortsHeld {
        /// Who holds which port, in words.
        holder: String,
        /// Whether stackd manages the holder (it frees the port when its
        /// task stops); a port held by anything else never frees.
        managed: bool,
        /// How long the task has waited for it so far.
        waited_ms: u64,
    },
    /// The container started.
    Started {
        /// Its health right after the start: `starting` when it has a health
        /// check (its own or the image's), empty when it has none.
        health: String,
    },
    /// Docker could not start the container.
    StartFailed(String),
    /// The container exited with this code.
    Exited(i64),
    /// The container no longer exists.
    Vanished,
    /// Waiting for the container broke off, but it still runs.
    StillRunning,
    /// The container's health changed.
    Health {
        /// `starting`, `healthy` or `unhealthy`.
        status: String,
        /// Output of the last probe.
        output: String,
    },
    /// The task's desired state became Shutdown.
    ShutdownRequested,
    /// The manager's record of the running task went back to `assigned`: it
    /// had been lost with this node, which came back and took it back.
    Reassigned,
    /// The container was stopped.
    Stopped {
        /// Its exit code, if known.
        exit_code: Option<i64>,
    },
}

/// One operation for the Docker side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Find the task's container by label → [`Event::Located`].
    Locate,
    /// Ensure the image → [`Event::ImageReady`] / [`Event::ImageFailed`].
    EnsureImage,
    /// Ensure the task's named volumes → [`Event::VolumesReady`] / [`Event::VolumesFailed`].
    EnsureVolumes,
    /// Ensure the task's networks → [`Event::NetworksReady`] / [`Event::NetworksFailed`].
    EnsureNetworks,
    /// Create the container → [`Event::Created`] / [`Event::CreateFailed`] /
    /// [`Event::Located`] when a container of the task already has the name.
    Create,
    /// Check that no other container holds the host ports the task publishes
    /// → [`Event::PortsFree`] / [`Event::PortsHeld`] (after a pause when the
    /// last check found them held).
    CheckPorts(String),
    /// Connect it to the task's other networks and start it →
    /// [`Event::Started`] / [`Event::StartFailed`].
    Start(String),
    /// Wait for exit, health change or shutdown → [`Event::Exited`],
    /// [`Event::Vanished`], [`Event::Health`], [`Event::ShutdownRequested`],
    /// [`Event::Reassigned`], [`Event::StillRunning`].
    Watch {
        /// Container id.
        container_id: String,
        /// The health already reported (a different one is news).
        health: String,
    },
    /// Stop it with the task's grace period and signal → [`Event::Stopped`].
    Stop(String),
}

/// A status report to send, without its timestamp.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// State.
    pub state: TaskState,
    /// Human message.
    pub message: String,
    /// Error, for failed and rejected tasks.
    pub err: String,
    /// Container id, once created.
    pub container_id: String,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Health.
    pub health: String,
}

impl Report {
    fn new(state: TaskState, message: &str) -> Report {
        Report { state, message: message.to_string(), ..Report::default() }
    }
    fn container(mut self, id: &str) -> Report {
        self.container_id = id.to_string();
        self
    }
    fn err(mut self, err: impl Into<String>) -> Report {
        self.err = err.into();
        self
    }
    fn exit(mut self, code: Option<i64>) -> Report {
        self.exit_code = code;
        self
    }
    fn health(mut self, health: &str) -> Report {
        self.health = health.to_string();
        self
    }
}

/// What to do after a transition: reports first, then at most one operation
/// (none: wait until the task changes or leaves the node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    /// Reports to send, in order.
    pub reports: Vec<Report>,
    /// The operation to perform next.
    pub op: Option<Op>,
}

impl Step {
    fn op(op: Op) -> Step {
        Step { reports: Vec::new(), op: Some(op) }
    }
    fn report(report: Report) -> Step {
        Step { reports: vec![report], op: None }
    }
    fn then(mut self, op: Op) -> Step {
        self.op = Some(op);
        self
    }
}

fn watch(container_id: &str, health: &str) -> Op {
    Op::Watch { container_id: container_id.to_string(), health: health.to_string() }
}

/// The first phase of every runner: look for an existing container.
pub(crate) fn start() -> (Phase, Step) {
    (Phase::Locating, Step::op(Op::Locate))
}

/// The operation that a phase performs; used to retry after an unexpected event.
fn resume(phase: &Phase) -> Option<Op> {
    match phase {
        Phase::Locating => Some(Op::Locate),
        Phase::Preparing => Some(Op::EnsureImage),
        Phase::Mounting => Some(Op::EnsureVolumes),
        Phase::Networking => Some(Op::EnsureNetworks),
        Phase::Creating => Some(Op::Create),
        Phase::AwaitingPorts { container_id, .. } => Some(Op::CheckPorts(container_id.clone())),
        Phase::Starting { container_id } => Some(Op::Start(container_id.clone())),
        Phase::Running { container_id, health } => Some(watch(container_id, health)),
        Phase::Stopping { container_id, .. } => Some(Op::Stop(container_id.clone())),
        Phase::Done { .. } => None,
    }
}

/// How an exit reads: Shutdown if it was asked for, else Complete or Failed.
fn exited(id: &str, code: i64, health: &str, view: &View) -> (Phase, Step) {
    let report = if view.desired == DesiredState::Shutdown {
        Report::new(TaskState::Shutdown, "stopped")
    } else if code == 0 {
        Report::new(TaskState::Complete, "container exited")
    } else {
        Report::new(TaskState::Failed, "container exited").err(format!("exit code {code}"))
    };
    let state = report.state;
    (Phase::Done { state }, Step::report(report.container(id).exit(Some(code)).health(health)))
}

/// The message of a running task whose container turned unhealthy, while it stops.
const UNHEALTHY_STOPPING: &str = "container unhealthy: stopping it";

/// A container was created (or found created): report Starting, then make
/// sure its host ports are free before starting it.
fn created(id: &str) -> (Phase, Step) {
    let report = Report::new(TaskState::Starting, "starting").container(id);
    let phase = Phase::AwaitingPorts { container_id: id.to_string(), held: String::new() };
    (phase, Step::report(report).then(Op::CheckPorts(id.to_string())))
}

/// Stop the container and report Shutdown.
fn stop(id: &str, health: &str) -> (Phase, Step) {
    let phase =
        Phase::Stopping { container_id: id.to_string(), health: health.to_string(), cause: StopCause::Shutdown };
    (phase, Step::op(Op::Stop(id.to_string())))
}

/// A task that ends before its container ran.
fn shut_down_before_start(container_id: &str) -> (Phase, Step) {
    let report = Report::new(TaskState::Shutdown, "shut down before start").container(container_id);
    (Phase::Done { state: TaskState::Shutdown }, Step::report(report))
}

/// The lookup of the task's container, at start or after a name conflict.
fn located(found: Option<Found>, view: &View) -> (Phase, Step) {
    let terminal = view.known_state.is_terminal();
    let Some(found) = found else {
        return if terminal {
            (Phase::Done { state: view.known_state }, Step::default())
        } else if view.desired == DesiredState::Shutdown {
            shut_down_before_start("")
        } else if view.known_state >= TaskState::Running {
            let what = if view.known_container.is_empty() {
                "container disappeared".to_string()
            } else {
                format!("container {} disappeared", view.known_container)
            };
            let report =
                Report::new(TaskState::Failed, "container not found").err(what).container(&view.known_container);
            (Phase::Done { state: TaskState::Failed }, Step::report(report))
        } else {
            (Phase::Preparing, Step::report(Report::new(TaskState::Preparing, "preparing")).then(Op::EnsureImage))
        };
    };
    let id = found.id.as_str();
    match found.state {
        FoundState::Running if terminal => {
            let cause = StopCause::Silent(view.known_state);
            let phase = Phase::Stopping { container_id: id.to_string(), health: found.health, cause };
            (phase, Step::op(Op::Stop(id.to_string())))
        }
        FoundState::Running if view.desired == DesiredState::Shutdown => stop(id, &found.health),
        FoundState::Running => {
            let known = view.known_state == TaskState::Running
                && view.known_container == found.id
                && view.known_health == found.health;
            let mut step = Step::op(watch(id, &found.health));
            if !known {
                let report = match found.health.as_str() {
                    "unhealthy" => Report::new(TaskState::Running, UNHEALTHY_STOPPING),
                    _ => Report::new(TaskState::Running, "adopted running container"),
                };
                step.reports.push(report.container(id).health(&found.health));
            }
            if found.health == "unhealthy" {
                // Found unhealthy (the agent was away when it turned): stop it, then fail it.
                let cause = StopCause::Unhealthy("found unhealthy when adopted".into());
                let phase = Phase::Stopping { container_id: found.id.clone(), health: found.health, cause };
                step.op = Some(Op::Stop(found.id));
                return (phase, step);
            }
            (Phase::Running { container_id: found.id, health: found.health }, step)
        }
        FoundState::Exited(_) | FoundState::Created if terminal => {
            (Phase::Done { state: view.known_state }, Step::default())
        }
        FoundState::Exited(code) => exited(id, code, &found.health, view),
        FoundState::Created if view.desired == DesiredState::Shutdown => shut_down_before_start(id),
        FoundState::Created => created(&found.id),
    }
}

/// The transition function: given the current phase, what happened and the
/// task as the manager last described it, the next phase and what to do.
pub(crate) fn next(phase: Phase, event: Event, view: &View) -> (Phase, Step) {
    let shutdown = view.desired == DesiredState::Shutdown;
    match (phase, event) {
        (Phase::Locating | Phase::Creating, Event::Located(found)) => located(found, view),

        (Phase::Preparing, Event::ImageReady) if shutdown => shut_down_before_start(""),
        (Phase::Preparing, Event::ImageReady) => (Phase::Mounting, Step::op(Op::EnsureVolumes)),
        (Phase::Preparing, Event::ImageFailed(err)) => {
            let report = Report::new(TaskState::Rejected, "image unavailable").err(err);
            (Phase::Done { state: TaskState::Rejected }, Step::report(report))
        }

        (Phase::Mounting, Event::VolumesReady) if shutdown => shut_down_before_start(""),
        (Phase::Mounting, Event::VolumesReady) => (Phase::Networking, Step::op(Op::EnsureNetworks)),
        (Phase::Mounting, Event::VolumesFailed(err)) => {
            let report = Report::new(TaskState::Rejected, "volume unavailable").err(err);
            (Phase::Done { state: TaskState::Rejected }, Step::report(report))
        }

        (Phase::Networking, Event::NetworksReady) if shutdown => shut_down_before_start(""),
        (Phase::Networking, Event::NetworksReady) => (Phase::Creating, Step::op(Op::Create)),
        (Phase::Networking, Event::NetworksFailed(err)) => {
            let report = Report::new(TaskState::Rejected, "network unavailable").err(err);
            (Phase::Done { state: TaskState::Rejected }, Step::report(report))
        }

        (Phase::Creating, Event::Created(id)) if shutdown => shut_down_before_start(&id),
        (Phase::Creating, Event::Created(id)) => created(&id),
        (Phase::Creating, Event::CreateFailed(err)) => {
            let report = Report::new(TaskState::Rejected, "cannot create container").err(err);
            (Phase::Done { state: TaskState::Rejected }, Step::report(report))
        }

        (Phase::AwaitingPorts { container_id, .. }, Event::PortsFree | Event::PortsHeld { .. }) if shutdown => {
            shut_down_before_start(&container_id)
        }
        (Phase::AwaitingPorts { container_id, .. }, Event::PortsFree) => {
            let op = Op::Start(container_id.clone());
            (Phase::Starting { container_id }, Step::op(op))
        }
        (Phase::AwaitingPorts { container_id, held }, Event::PortsHeld { holder, managed, waited_ms }) => {
            if !managed || waited_ms >= PORT_WAIT_MS {
                let err = if managed { format!("{holder} after {} s", waited_ms / 1000) } else { holder };
                let report = Report::new(TaskState::Failed, "cannot start container").err(err).container(&container_id);
                return (Phase::Done { state: TaskState::Failed }, Step::report(report));
            }
            let op = Op::CheckPorts(container_id.clone());
            let step = if held == holder {
                Step::op(op)
            } else {
                let message = format!("waiting: {holder}");
                Step::report(Report::new(TaskState::Starting, &message).container(&container_id)).then(op)
            };
            (Phase::AwaitingPorts { container_id, held: holder }, step)
        }

        (Phase::Starting { container_id }, Event::Started { health }) if shutdown => stop(&container_id, &health),
        (Phase::Starting { container_id }, Event::Started { health }) => {
            let report = Report::new(TaskState::Running, "started").container(&container_id).health(&health);
            let step = Step::report(report).then(watch(&container_id, &health));
            (Phase::Running { container_id, health }, step)
        }
        (Phase::Starting { container_id }, Event::StartFailed(err)) => {
            let report = Report::new(TaskState::Failed, "cannot start container").err(err).container(&container_id);
            (Phase::Done { state: TaskState::Failed }, Step::report(report))
        }

        (Phase::Running { container_id, health }, Event::Exited(code)) => exited(&container_id, code, &health, view),
        (Phase::Running { container_id, health }, Event::Vanished) => {
            let report = Report::new(TaskState::Failed, "container not found")
                .err(format!("container {container_id} disappeared"))
                .container(&container_id)
                .health(&health);
            (Phase::Done { state: TaskState::Failed }, Step::report(report))
        }
        (Phase::Running { container_id, health }, Event::StillRunning) => {
            let op = watch(&container_id, &health);
            (Phase::Running { container_id, health }, Step::op(op))
        }
        (Phase::Running { container_id, health }, Event::ShutdownRequested) => stop(&container_id, &health),
        (Phase::Running { container_id, health }, Event::Reassigned) => {
            let report = Report::new(TaskState::Running, "adopted running container").container(&container_id);
            let step = Step::report(report.health(&health)).then(watch(&container_id, &health));
            (Phase::Running { container_id, health }, step)
        }
        (Phase::Running { container_id, health }, Event::Health { status, .. }) if status == health => {
            let op = watch(&container_id, &health);
            (Phase::Running { container_id, health }, Step::op(op))
        }
        (Phase::Running { container_id, .. }, Event::Health { status, output }) if status == "unhealthy" => {
            // Failed only once stopped: until then the container holds its ports.
            let report = Report::new(TaskState::Running, UNHEALTHY_STOPPING).container(&container_id).health(&status);
            let op = Op::Stop(container_id.clone());
            let cause = StopCause::Unhealthy(output);
            (Phase::Stopping { container_id, health: status, cause }, Step::report(report).then(op))
        }
        (Phase::Running { container_id, .. }, Event::Health { status, .. }) => {
            let report =
                Report::new(TaskState::Running, &format!("health: {status}")).container(&container_id).health(&status);
            let op = watch(&container_id, &status);
            (Phase::Running { container_id, health: status }, Step::report(report).then(op))
        }

        (Phase::Stopping { container_id, health, cause }, Event::Stopped { exit_code }) => match cause {
            StopCause::Shutdown => {
                let report = Report::new(TaskState::Shutdown, "stopped")
                    .container(&container_id)
                    .exit(exit_code)
                    .health(&health);
                (Phase::Done { state: TaskState::Shutdown }, Step::report(report))
            }
            StopCause::Unhealthy(output) => {
                let report = Report::new(TaskState::Failed, "container unhealthy")
                    .err(format!("unhealthy: {}", output.trim()))
                    .container(&container_id)
                    .exit(exit_code)
                    .health(&health);
                (Phase::Done { state: TaskState::Failed }, Step::report(report))
            }
            StopCause::Silent(state) => (Phase::Done { state }, Step::default()),
        },

        // Anything else does not fit the phase: perform the phase's operation again.
        (phase, _) => {
            let op = resume(&phase);
            (phase, Step { reports: Vec::new(), op })
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
