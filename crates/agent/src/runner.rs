//! One task's runner: drives the decision core of [`machine`] against Docker.
//!
//! A runner is a tokio task fed through a `watch` of its [`Task`]: the worker
//! sends every new version the manager assigns, and drops the sender when the
//! task leaves the node. The runner then stops and removes the task's
//! container and ends. When the agent itself shuts down, the worker aborts the
//! runners instead: containers keep running and the next agent adopts them.
//!
//! The loop: perform the operation the machine asked for, turn the result
//! into an [`Event`], let [`machine::next`] decide, send the reports it
//! produced (stamped with the wall clock), repeat. Operations on the engine
//! that fail for reasons unrelated to the task (the engine is unreachable)
//! are retried after a pause rather than failing the task.

mod machine;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stackd_core::model::{DesiredState, MountKind, Protocol, Task, TaskState, TaskStatus};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::docker::{ContainerContext, ContainerInfo, Created, Executor, WaitOutcome};
use crate::files::TaskFiles;
use crate::shared::{Logins, Networks, StatusReport};
use machine::{Event, Found, FoundState, Op, Report, View};

/// Pause before an operation is retried after an engine error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often a task that waits for a host port looks again.
const PORT_POLL: Duration = Duration::from_millis(500);
/// How often the health of a container with a health check is read.
const HEALTH_POLL: Duration = Duration::from_secs(1);
/// How long after a health check's deadline a container still `starting`
/// is failed: Docker's own verdict on a probe that failed in time comes
/// first, with the probe's output.
const HEALTH_GRACE: Duration = Duration::from_secs(1);
/// How long a task on the cluster's networks stays up after it left the
/// answers and endpoints, before its container gets its stop signal: the
/// view that drops it reaches every node and is applied within a few
/// hundred milliseconds.
const DRAIN: Duration = Duration::from_secs(1);
/// How many times a create is retried when a network it names vanished
/// meanwhile (removed by another node's agent on the same engine, or
/// briefly doubled by a concurrent create).
const NETWORK_RETRIES: u32 = 3;

/// The current time in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// A task's stop grace period (the loader sets its default; 0 kills at once).
pub(crate) fn grace(task: &Task) -> Duration {
    Duration::from_millis(task.template.stop_grace_period_ms)
}

/// The task left the node while an operation was in progress.
struct Removed;

/// One task's runner.
pub(crate) struct Runner {
    exec: Executor,
    ctx: Arc<ContainerContext>,
    files: Arc<TaskFiles>,
    rx: watch::Receiver<Task>,
    reports: mpsc::UnboundedSender<StatusReport>,
    networks: Arc<Networks>,
    /// The registry credentials of the node's tasks' stacks.
    logins: Arc<Logins>,
    task_id: String,
    /// Since when the last port checks found a host port held.
    ports_held_since: Option<Instant>,
    /// Since when the container (by id) has been seen `starting`: it fails
    /// when its health check's deadline passes first.
    starting_since: Option<(String, Instant)>,
}

impl Runner {
    /// A runner for the task in `rx`.
    pub(crate) fn new(
        exec: Executor,
        ctx: Arc<ContainerContext>,
        files: Arc<TaskFiles>,
        rx: watch::Receiver<Task>,
        reports: mpsc::UnboundedSender<StatusReport>,
        networks: Arc<Networks>,
        logins: Arc<Logins>,
    ) -> Runner {
        let task_id = rx.borrow().id.clone();
        Runner {
            exec,
            ctx,
            files,
            rx,
            reports,
            networks,
            logins,
            task_id,
            ports_held_since: None,
            starting_since: None,
        }
    }

    /// Runs the task until it leaves the node (then removes its container).
    pub(crate) async fn run(mut self) {
        let (mut phase, mut step) = machine::start();
        loop {
            for report in step.reports.drain(..) {
                self.report(report);
            }
            let event = match step.op.take() {
                Some(op) => self.perform(op).await,
                // Terminal: wait until the task leaves the node.
                None => self.idle().await,
            };
            let Ok(event) = event else { break };
            debug!(task = %self.task_id, ?phase, ?event, "runner event");
            (phase, step) = machine::next(phase, event, &self.view());
        }
        self.remove_container().await;
    }

    /// The task as the manager last described it; marks it seen.
    fn view(&mut self) -> View {
        let task = self.rx.borrow_and_update();
        View {
            desired: task.desired_state,
            known_state: task.status.state,
            known_container: task.status.container_id.clone(),
            known_health: task.status.health.clone(),
        }
    }

    fn task(&self) -> Task {
        self.rx.borrow().clone()
    }

    /// Whether the worker dropped the task.
    fn removed(&self) -> bool {
        self.rx.has_changed().is_err()
    }

    fn report(&self, r: Report) {
        info!(task = %self.task_id, state = %r.state, message = %r.message, err = %r.err, "task status");
        let status = TaskStatus {
            state: r.state,
            timestamp: now_ms(),
            message: r.message,
            err: r.err,
            container_id: r.container_id,
            exit_code: r.exit_code,
            health: r.health,
        };
        // The receiver only goes away when the agent stops.
        let _ = self.reports.send(StatusReport { task_id: self.task_id.clone(), status });
    }

    /// Waits for changes until the task leaves the node.
    async fn idle(&mut self) -> Result<Event, Removed> {
        while self.rx.changed().await.is_ok() {}
        Err(Removed)
    }

    /// Sleeps for the retry pause, or returns early when the task leaves.
    async fn pause(&mut self) -> Result<(), Removed> {
        self.pause_for(RETRY_PAUSE).await
    }

    /// Sleeps for `pause`, returns early when the task leaves or is to shut down.
    async fn pause_for(&mut self, pause: Duration) -> Result<(), Removed> {
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                changed = self.rx.changed() => {
                    if changed.is_err() { return Err(Removed) }
                    if self.rx.borrow().desired_state == DesiredState::Shutdown { return Ok(()) }
                }
            }
        }
    }

    /// Performs one operation and returns what happened.
    async fn perform(&mut self, op: Op) -> Result<Event, Removed> {
        let event = match op {
            Op::Locate => self.locate().await?,
            Op::EnsureImage => {
                let (image, policy, stack) = {
                    let task = self.rx.borrow();
                    (task.run_image().to_string(), task.template.pull_policy, task.stack.clone())
                };
                let registry = stackd_core::registry::registry_of(&image);
                let login = self.logins.get(&stack, &registry);
                match self.exec.ensure_image(&image, policy, &registry, login.as_ref()).await {
                    Ok(()) => Event::ImageReady,
                    Err(e) => Event::ImageFailed(e.to_string()),
                }
            }
            Op::EnsureVolumes => {
                let task = self.task();
                match self.ensure_volumes(&task).await {
                    Ok(()) => Event::VolumesReady,
                    Err(e) => Event::VolumesFailed(e),
                }
            }
            Op::EnsureNetworks => {
                let task = self.task();
                match self.ensure_networks(&task).await {
                    Ok(()) => Event::NetworksReady,
                    Err(e) => Event::NetworksFailed(e),
                }
            }
            Op::Create => {
                let mut task = self.task();
                match self.files.prepare_blocking(task.clone()).await {
                    Ok(mounts) => task.template.mounts.extend(mounts),
                    Err(e) => return Ok(Event::CreateFailed(e.to_string())),
                }
                let mut retries = 0;
                loop {
                    match self.exec.create(&task, &self.ctx, self.dns_server(&task)).await {
                        Ok(Created::New(id)) => break Event::Created(id),
                        Ok(Created::Existing(id)) => {
                            info!(task = %self.task_id, container = %id, "container name taken by the same task: adopting it");
                            break Event::Located(self.inspect_found(&id).await?);
                        }
                        Err(e) if e.is_network_gone() && retries < NETWORK_RETRIES => {
                            retries += 1;
                            warn!(task = %self.task_id, error = %e, "a network went away: making sure of the networks again");
                            if let Err(e) = self.ensure_networks(&task).await {
                                break Event::CreateFailed(e);
                            }
                        }
                        Err(e) => break Event::CreateFailed(e.to_string()),
                    }
                }
            }
            Op::Start(id) => {
                let task = self.task();
                match self.exec.connect_networks(&self.ctx, &id, &task).await {
                    Err(e) => Event::StartFailed(e.to_string()),
                    Ok(()) => match self.exec.start(&id).await {
                        // Docker sets the health to `starting` as it starts a container with a check.
                        Ok(()) => {
                            let health = self.inspect(&id).await?.and_then(|c| c.health).map(|h| h.status);
                            Event::Started { health: health.unwrap_or_default() }
                        }
                        Err(e) => Event::StartFailed(e.to_string()),
                    },
                }
            }
            Op::CheckPorts(id) => self.check_ports(&id).await?,
            Op::Watch { container_id, health } => self.watch(&container_id, health).await?,
            Op::Stop(id) => self.stop(&id).await?,
        };
        if self.removed() { Err(Removed) } else { Ok(event) }
    }

    /// Makes sure every named volume `task` mounts exists, with the specs
    /// the manager sent (driver, options, labels); the first problem, in
    /// words. Anonymous volumes, binds and tmpfs need nothing.
    async fn ensure_volumes(&self, task: &Task) -> Result<(), String> {
        let named = task.template.mounts.iter().filter(|m| m.kind == MountKind::Volume && !m.source.is_empty());
        for m in named {
            let Some(vol) = self.networks.volume(&task.stack, &m.source) else {
                return Err(format!("volume {}: the manager sent no definition of it", m.source));
            };
            self.exec.ensure_volume(&self.ctx, &vol).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The node's DNS server for the task's container: its gateway on the
    /// task's first network, when that network spans nodes.
    fn dns_server(&self, task: &Task) -> Option<std::net::Ipv4Addr> {
        self.ctx.overlay_mtu?;
        let first = task.template.networks.first()?;
        task.addresses.get(&first.network)?;
        self.networks.view_of(&first.network).map(|v| v.gateway)
    }

    /// Makes sure every network of `task` exists, with the specs the manager
    /// sent; the first problem, in words.
    async fn ensure_networks(&self, task: &Task) -> Result<(), String> {
        let mut created = false;
        for a in &task.template.networks {
            let Some(net) = self.networks.get(&task.stack, &a.network) else {
                return Err(format!("network {}: the manager sent no definition of it", a.network));
            };
            created |= self
                .exec
                .ensure_network(&self.ctx, &net, self.networks.view_of(&a.network).as_ref())
                .await
                .map_err(|e| e.to_string())?;
        }
        // A new bridge: its VXLAN device and DNS listener now, not at the next period.
        if created {
            self.networks.kick();
        }
        Ok(())
    }

    /// Whether another running container holds a host port the task
    /// publishes. After a check that found one, waits [`PORT_POLL`] first.
    async fn check_ports(&mut self, id: &str) -> Result<Event, Removed> {
        let ports: Vec<(u16, Protocol)> = self.rx.borrow().template.node_ports().collect();
        if ports.is_empty() {
            return Ok(Event::PortsFree);
        }
        if self.ports_held_since.is_some() {
            self.pause_for(PORT_POLL).await?;
        }
        let holders = loop {
            match self.exec.port_holders(&ports, id).await {
                Ok(holders) => break holders,
                Err(e) => warn!(task = %self.task_id, error = %e, "cannot list containers for their ports; retrying"),
            }
            self.pause().await?;
        };
        // An unmanaged holder first: it fails the task at once.
        let Some(holder) = holders.iter().find(|h| !h.managed()).or(holders.first()) else {
            self.ports_held_since = None;
            return Ok(Event::PortsFree);
        };
        let since = *self.ports_held_since.get_or_insert_with(Instant::now);
        let waited_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(task = %self.task_id, %holder, waited_ms, "waiting for a host port");
        Ok(Event::PortsHeld { holder: holder.to_string(), managed: holder.managed(), waited_ms })
    }

    /// Finds the task's container, retrying while the engine errs.
    async fn locate(&mut self) -> Result<Event, Removed> {
        loop {
            match self.exec.find_task(&self.ctx, &self.task_id).await {
                Ok(None) => return Ok(Event::Located(None)),
                Ok(Some(c)) => return Ok(Event::Located(self.inspect_found(&c.id).await?)),
                Err(e) => warn!(task = %self.task_id, error = %e, "cannot list containers; retrying"),
            }
            self.pause().await?;
        }
    }

    /// Inspects a container, retrying while the engine errs; `None` if it is gone.
    async fn inspect(&mut self, id: &str) -> Result<Option<ContainerInfo>, Removed> {
        loop {
            match self.exec.inspect(id).await {
                Ok(info) => return Ok(info),
                Err(e) => {
                    warn!(task = %self.task_id, container = %id, error = %e, "cannot inspect container; retrying")
                }
            }
            self.pause().await?;
        }
    }

    async fn inspect_found(&mut self, id: &str) -> Result<Option<Found>, Removed> {
        Ok(self.inspect(id).await?.map(|c| {
            let state = if c.running {
                FoundState::Running
            } else if let Some(code) = c.exit_code {
                FoundState::Exited(code)
            } else {
                FoundState::Created
            };
            Found { id: c.id, state, health: c.health.map(|h| h.status).unwrap_or_default() }
        }))
    }

    /// Waits for the container to exit, its health to change, or the task to
    /// be shut down.
    async fn watch(&mut self, id: &str, last_health: String) -> Result<Event, Removed> {
        if self.rx.borrow().desired_state == DesiredState::Shutdown {
            return Ok(Event::ShutdownRequested);
        }
        // Poll health when the container has a health check (the task's or the image's).
        let found = self.inspect(id).await?;
        // A container still `starting` when start_period + retries × interval
        // has passed (counted from when this agent first saw it so) fails.
        let deadline = match (&found, last_health.as_str()) {
            (Some(c), "starting") if c.running => c.health_deadline.map(|d| {
                let since = match &self.starting_since {
                    Some((cid, at)) if cid == id => *at,
                    _ => {
                        let now = Instant::now();
                        self.starting_since = Some((id.to_string(), now));
                        now
                    }
                };
                // A second more: Docker's own verdict on a probe that failed
                // in time comes first, with the probe's output.
                (since + d.total() + HEALTH_GRACE, d.why())
            }),
            _ => None,
        };
        let poll = match found {
            None => return Ok(Event::Vanished),
            Some(c) if !c.running => return Ok(Event::Exited(c.exit_code.unwrap_or(0))),
            Some(c) => match c.health {
                Some(h) if h.status != last_health => {
                    return Ok(Event::Health { status: h.status, output: h.last_output });
                }
                Some(_) => true,
                None => self
                    .rx
                    .borrow()
                    .template
                    .healthcheck
                    .as_ref()
                    .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE")),
            },
        };
        let exec = self.exec.clone();
        let wait_id = id.to_string();
        let wait = async move { exec.wait(&wait_id).await };
        tokio::pin!(wait);
        let mut ticker = tokio::time::interval(HEALTH_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The engine's health events make a change seen at once (DNS answers
        // and VIPs follow health within a second); the poll stays as a fallback.
        let events = self.exec.health_events(id);
        tokio::pin!(events);
        let mut listening = poll;
        let (until, why) = match deadline {
            Some((at, why)) => (Some(at), why),
            None => (None, String::new()),
        };
        let expired = tokio::time::sleep_until(until.unwrap_or_else(Instant::now).into());
        tokio::pin!(expired);
        loop {
            tokio::select! {
                () = &mut expired, if until.is_some() => {
                    warn!(task = %self.task_id, container = %id, "{why}");
                    return Ok(Event::Health { status: "unhealthy".into(), output: why });
                }
                outcome = &mut wait => {
                    return match outcome {
                        Ok(WaitOutcome::Gone) => Ok(Event::Vanished),
                        Ok(WaitOutcome::Exited(code)) => self.after_exit(id, Some(code)).await,
                        Err(e) => {
                            warn!(task = %self.task_id, container = %id, error = %e, "waiting for the container failed");
                            self.pause().await?;
                            self.after_exit(id, None).await
                        }
                    };
                }
                changed = self.rx.changed() => {
                    if changed.is_err() { return Err(Removed) }
                    let task = self.rx.borrow();
                    if task.desired_state == DesiredState::Shutdown {
                        return Ok(Event::ShutdownRequested);
                    }
                    // Taken back after its node was declared down: say it runs.
                    if task.status.state <= TaskState::Assigned {
                        return Ok(Event::Reassigned);
                    }
                }
                event = futures_util::StreamExt::next(&mut events), if listening => {
                    if event.is_none() {
                        listening = false;
                        continue;
                    }
                    match self.exec.inspect(id).await {
                        Ok(None) => return Ok(Event::Vanished),
                        Ok(Some(c)) if !c.running => return Ok(Event::Exited(c.exit_code.unwrap_or(0))),
                        Ok(Some(c)) => if let Some(h) = c.health && h.status != last_health {
                            return Ok(Event::Health { status: h.status, output: h.last_output });
                        },
                        Err(e) => debug!(task = %self.task_id, error = %e, "health inspect failed"),
                    }
                }
                _ = ticker.tick(), if poll => {
                    match self.exec.inspect(id).await {
                        Ok(None) => return Ok(Event::Vanished),
                        Ok(Some(c)) if !c.running => return Ok(Event::Exited(c.exit_code.unwrap_or(0))),
                        Ok(Some(c)) => if let Some(h) = c.health && h.status != last_health {
                            return Ok(Event::Health { status: h.status, output: h.last_output });
                        },
                        Err(e) => debug!(task = %self.task_id, error = %e, "health poll failed"),
                    }
                }
            }
        }
    }

    /// After `wait` returned (or failed): the container's end, or, if it still
    /// runs (the wait broke off), an event that makes the machine watch again.
    async fn after_exit(&mut self, id: &str, code: Option<i64>) -> Result<Event, Removed> {
        Ok(match self.inspect(id).await? {
            None => Event::Vanished,
            Some(c) if c.running => Event::StillRunning,
            Some(c) => Event::Exited(c.exit_code.or(code).unwrap_or(0)),
        })
    }

    /// Stops the container with the task's grace period and stop signal,
    /// retrying while the engine errs, and reads its exit code.
    async fn stop(&mut self, id: &str) -> Result<Event, Removed> {
        let task = self.task();
        self.drain(&task).await?;
        loop {
            match self.exec.stop(id, Some(grace(&task)), task.template.stop_signal.as_deref()).await {
                Ok(()) => break,
                Err(e) => warn!(task = %self.task_id, container = %id, error = %e, "cannot stop container; retrying"),
            }
            self.pause().await?;
        }
        let exit_code = self.inspect(id).await?.and_then(|c| c.exit_code);
        Ok(Event::Stopped { exit_code })
    }

    /// Before a task reachable through the cluster's networks is stopped:
    /// the time every node takes to drop it from its DNS answers, VIPs and
    /// mesh (the view that leaves it out was sent with the stop), so that no
    /// new connection reaches a container that is going away. Established
    /// connections then get the stop grace period.
    async fn drain(&mut self, task: &Task) -> Result<(), Removed> {
        if self.ctx.overlay_mtu.is_none() || task.addresses.is_empty() {
            return Ok(());
        }
        let sleep = tokio::time::sleep(DRAIN);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                changed = self.rx.changed() => if changed.is_err() { return Err(Removed) },
            }
        }
    }

    /// The task left the node: stop and remove its container(s), if any.
    async fn remove_container(&self) {
        let task = self.task();
        // A container that could not be removed keeps its files; garbage collection retries both.
        if self.remove_container_only(&task).await {
            self.files.remove_blocking(self.task_id.clone()).await;
        } else {
            self.files.release(&self.task_id);
        }
    }

    /// Stops and removes the task's container, if there is one; whether none is left.
    async fn remove_container_only(&self, task: &Task) -> bool {
        let found = match self.exec.find_task(&self.ctx, &self.task_id).await {
            Ok(found) => found,
            Err(e) => {
                warn!(task = %self.task_id, error = %e, "cannot look for the container of a removed task");
                return false;
            }
        };
        let Some(c) = found else { return true };
        if let Err(e) = self.exec.stop_and_remove(&c.id, Some(grace(task)), task.template.stop_signal.as_deref()).await
        {
            warn!(task = %self.task_id, container = %c.id, error = %e, "cannot remove the container of a removed task");
            false
        } else {
            info!(task = %self.task_id, container = %c.id, "removed the container of a task that left the node");
            // Its networks may be unused now.
            self.networks.collect_soon();
            true
        }
    }
}
