//! The Docker executor: the only module of the agent that speaks bollard.
//!
//! [`Executor`] wraps one connection to the engine and offers what the task
//! runners and the worker need — list the node's containers, make sure an
//! image is present, make sure a network or a volume exists, create / connect / start /
//! inspect / wait for / stop / remove a container, remove networks nothing
//! wants — in the agent's own types. No bollard type appears in its
//! public signatures; Docker's answers become [`DockerError`]s carrying the
//! daemon's message.
//!
//! The create requests are built by the pure functions of [`spec`] (labels,
//! name, mounts, ports, health check, networks and aliases).
//!
//! Networks: the engine (before API 1.44) does not refuse a second network
//! of the same name unless asked, which bollard cannot ask. The executor
//! therefore looks a network up and creates it under a lock: an async mutex
//! for the runners of one agent, and a file lock
//! (`$TMPDIR/stackd-networks.lock`) for the agents of one host, which share
//! its engine in test clusters. Should the file lock be unavailable, a
//! create is followed by a check for a twin made at the same moment: the
//! oldest is kept and the newer one removed by its creator.

mod error;
mod images;
mod networks;
pub mod ports;
pub mod spec;

pub use error::DockerError;
pub(crate) use error::auth_refusal;
use error::{already_exists, describe, engine, plugin_missing};
pub use images::RESOLVE_TIMEOUT;
#[cfg(test)]
use images::{credentials, same_repo};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::Volume;
use bollard::models::{
    ContainerStateStatusEnum, ContainerSummaryStateEnum, HealthStatusEnum, Network, NetworkConnectRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};
use stackd_core::model::{EngineDescription, ImagePin, PullPolicy, StackNetwork, StackVolume, Task};
use stackd_core::registry::RegistryCredential;

pub use spec::{
    LABEL_CLUSTER, LABEL_NETWORK, LABEL_NODE, LABEL_REVISION, LABEL_SERVICE, LABEL_SLOT, LABEL_STACK, LABEL_TASK,
    LABEL_VOLUME, NetworkInfo, VolumeInfo,
};

/// The socket used when none is configured and `DOCKER_HOST` names none.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Request timeout of the connection (time until response headers).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// What a stop may take when the container's own stop timeout applies.
const UNKNOWN_GRACE_SECS: u64 = 600;

/// Who the containers belong to: the labels an agent stamps and filters on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerContext {
    /// The cluster id (`io.stackd.cluster`).
    pub cluster_id: String,
    /// This node's id (`io.stackd.node`).
    pub node_id: String,
    /// The containers' MTU on the cluster's networks when they span nodes
    /// (VXLAN); `None` when several nodes share this engine and networks
    /// stay local (test setups): containers then get addresses from Docker.
    pub overlay_mtu: Option<u32>,
}

impl ContainerContext {
    /// The label filters that select this node's containers.
    fn filters(&self) -> Vec<String> {
        vec![format!("{LABEL_NODE}={}", self.node_id), format!("{LABEL_CLUSTER}={}", self.cluster_id)]
    }
}

/// What the engine says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version (`20.10.24+dfsg1`).
    pub version: String,
    /// CPUs, in billionths of a core.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// The host: OS, architecture, kernel, the engine's labels.
    pub description: EngineDescription,
}

/// A container bearing this node's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedContainer {
    /// Container id.
    pub id: String,
    /// The task it belongs to (`io.stackd.task`; empty if the label is missing).
    pub task_id: String,
    /// Whether it runs.
    pub running: bool,
    /// Its stack and service (`io.stackd.stack`, `io.stackd.service`; empty if missing).
    pub stack: String,
    /// The service's full name.
    pub service: String,
}

/// One line of a container's output, as [`Executor::logs`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// 1 stdout, 2 stderr.
    pub stream: u32,
    /// When the engine received it (RFC 3339 with nanoseconds), or empty.
    pub timestamp: String,
    /// The line, without its newline.
    pub data: Vec<u8>,
}

/// The lines of one frame of the engine's log stream (one line for a
/// container without a terminal, several for one with): each without its
/// newline, and the timestamp the engine put before it taken apart.
pub fn split_frame(stream: u32, frame: &[u8]) -> Vec<LogChunk> {
    let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
    frame
        .split(|b| *b == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // `2026-12-07T20:00:00.123456789Z text`: a digit first, a `T`
            // at 10, a space before 40 characters.
            let stamped = line.first().is_some_and(u8::is_ascii_digit) && line.get(10) == Some(&b'T');
            match line.iter().take(40).position(|b| *b == b' ').filter(|_| stamped) {
                Some(at) => LogChunk {
                    stream,
                    timestamp: String::from_utf8_lossy(&line[..at]).into_owned(),
                    data: line[at + 1..].to_vec(),
                },
                None if stamped && line.len() < 40 => {
                    LogChunk { stream, timestamp: String::from_utf8_lossy(line).into_owned(), data: Vec::new() }
                }
                None => LogChunk { stream, timestamp: String::new(), data: line.to_vec() },
            }
        })
        .collect()
}

/// The health of a container whose health check runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthInfo {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Output of the last probe, trimmed.
    pub last_output: String,
}

/// What [`Executor::inspect`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// Whether it runs (paused and restarting count as running).
    pub running: bool,
    /// Docker's status: `created`, `running`, `exited`, …
    pub status: String,
    /// Exit code, once it has exited.
    pub exit_code: Option<i64>,
    /// Health, when a health check is configured.
    pub health: Option<HealthInfo>,
    /// Docker's error, if it failed to run.
    pub error: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// How long after its start it may stay `starting` before it counts as
    /// failed: its health check's (the task's or the image's) start period
    /// plus retries × interval; `None` without a health check.
    pub health_deadline: Option<HealthDeadline>,
}

/// The time a container has to become healthy, from its health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthDeadline {
    /// `start_period` (Docker's default when unset: 0).
    pub start_period: Duration,
    /// `retries` (default 3).
    pub retries: u64,
    /// `interval` (default 30 s).
    pub interval: Duration,
}

impl HealthDeadline {
    /// From Docker's health config (nanoseconds; 0 for Docker's defaults);
    /// `None` when there is no check (`NONE`, or no test).
    pub fn of(test: &[String], interval_ns: i64, retries: i64, start_period_ns: i64) -> Option<HealthDeadline> {
        if test.first().is_none_or(|t| t == "NONE") {
            return None;
        }
        let ns = |v: i64, default: Duration| if v > 0 { Duration::from_nanos(v as u64) } else { default };
        Some(HealthDeadline {
            start_period: ns(start_period_ns, Duration::ZERO),
            retries: if retries > 0 { retries as u64 } else { 3 },
            interval: ns(interval_ns, Duration::from_secs(30)),
        })
    }

    /// `start_period + retries × interval`.
    pub fn total(&self) -> Duration {
        self.start_period + self.interval.saturating_mul(u32::try_from(self.retries).unwrap_or(u32::MAX))
    }

    /// Why a task failed that stayed `starting` that long.
    pub fn why(&self) -> String {
        format!(
            "not healthy within {} (start_period {} + retries {} × interval {})",
            secs(self.total()),
            secs(self.start_period),
            self.retries,
            secs(self.interval)
        )
    }
}

/// `0s`, `1.5s`, `90s`.
fn secs(d: Duration) -> String {
    format!("{}s", (d.as_millis() as f64) / 1000.0)
}

/// The result of [`Executor::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new container.
    New(String),
    /// The name was taken by a container of the same task: that one.
    Existing(String),
}

/// The result of [`Executor::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The container is not running (any more), with this exit code.
    Exited(i64),
    /// The container does not exist.
    Gone,
}

/// A connection to the Docker engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    docker: Docker,
    endpoint: String,
    /// Held while a network is looked up and created: the runners of one
    /// agent never create the same network twice.
    network_lock: Arc<tokio::sync::Mutex<()>>,
    /// How long its calls take (`/metrics`); `None`: not recorded.
    calls: Option<crate::metrics::DockerCalls>,
}

impl Executor {
    /// Connects to the engine at `socket` (a Unix socket path, with or without
    /// `unix://`), or by default to `$DOCKER_HOST` / `/var/run/docker.sock`,
    /// and negotiates the API version (which proves the engine answers).
    pub async fn connect(socket: Option<&str>) -> Result<Executor, DockerError> {
        let (endpoint, docker) = match socket {
            Some(path) => {
                (path.to_string(), Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION))
            }
            None => {
                let endpoint = std::env::var("DOCKER_HOST")
                    .ok()
                    .filter(|h| h.starts_with("unix://"))
                    .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
                (endpoint, Docker::connect_with_local_defaults())
            }
        };
        let unreachable =
            |e: BollardError| DockerError::Unreachable { endpoint: endpoint.clone(), message: e.to_string() };
        let docker = docker.map_err(unreachable)?.negotiate_version().await.map_err(unreachable)?;
        Ok(Executor { docker, endpoint, network_lock: Arc::new(tokio::sync::Mutex::new(())), calls: None })
    }

    /// Whether the engine answers (`GET /_ping`).
    pub async fn ping(&self) -> Result<(), DockerError> {
        let started = std::time::Instant::now();
        let r = self.docker.ping().await;
        self.observe("ping", started);
        r.map(|_| ()).map_err(|e| engine("ping", e))
    }

    /// This executor, recording how long its calls take into `calls`.
    pub fn with_calls(mut self, calls: crate::metrics::DockerCalls) -> Self {
        self.calls = Some(calls);
        self
    }

    fn observe(&self, op: &'static str, started: std::time::Instant) {
        if let Some(calls) = &self.calls {
            crate::metrics::observe(calls, op, started);
        }
    }

    /// A running container's CPU counter (nanoseconds of CPU since it
    /// started) and memory in use (bytes, less the page cache the kernel
    /// can drop), from one read of its stats.
    pub async fn usage(&self, id: &str) -> Result<(u64, u64), DockerError> {
        let opts = bollard::query_parameters::StatsOptions { stream: false, one_shot: true };
        let started = std::time::Instant::now();
        let stats = self.docker.stats(id, Some(opts)).next().await;
        self.observe("stats", started);
        let stats = match stats {
            Some(s) => s.map_err(|e| engine("container stats", e))?,
            None => return Ok((0, 0)),
        };
        let cpu = stats.cpu_stats.and_then(|c| c.cpu_usage).and_then(|u| u.total_usage).unwrap_or(0);
        let memory = stats.memory_stats.map_or(0, |m| {
            let cache = m.stats.as_ref().and_then(|s| s.get("inactive_file").or_else(|| s.get("cache"))).copied();
            m.usage.unwrap_or(0).saturating_sub(cache.unwrap_or(0))
        });
        Ok((cpu, memory))
    }

    /// The socket or host this executor talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Engine version, CPUs and memory (`GET /info`).
    pub async fn engine_info(&self) -> Result<EngineInfo, DockerError> {
        let info = self.docker.info().await.map_err(|e| engine("engine info", e))?;
        let cpus = u64::try_from(info.ncpu.unwrap_or(0)).unwrap_or(0);
        Ok(EngineInfo {
            version: info.server_version.unwrap_or_default(),
            nano_cpus: cpus.saturating_mul(1_000_000_000),
            memory_bytes: u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0),
            description: EngineDescription {
                os: info.os_type.unwrap_or_default(),
                os_name: info.operating_system.unwrap_or_default(),
                arch: info.architecture.unwrap_or_default(),
                kernel_version: info.kernel_version.unwrap_or_default(),
                labels: EngineDescription::labels_from_engine(info.labels.unwrap_or_default()),
            },
        })
    }

    async fn list(&self, label_filters: Vec<String>) -> Result<Vec<ManagedContainer>, DockerError> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), label_filters)])),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let list = self.docker.list_containers(Some(opts)).await;
        self.observe("list_containers", started);
        let list = list.map_err(|e| engine("list containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let label = |k: &str| c.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default();
                let (task_id, stack, service) = (label(LABEL_TASK), label(LABEL_STACK), label(LABEL_SERVICE));
                let running = matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING
                            | ContainerSummaryStateEnum::PAUSED
                            | ContainerSummaryStateEnum::RESTARTING
                    )
                );
                Some(ManagedContainer { id, task_id, running, stack, service })
            })
            .collect())
    }

    /// Every container (running or not) labelled with this node and cluster.
    pub async fn list_managed(&self, ctx: &ContainerContext) -> Result<Vec<ManagedContainer>, DockerError> {
        self.list(ctx.filters()).await
    }

    /// This node's containers (running or not) that also bear the label
    /// `key=value`.
    pub async fn list_labelled(
        &self,
        ctx: &ContainerContext,
        key: &str,
        value: &str,
    ) -> Result<Vec<ManagedContainer>, DockerError> {
        let mut filters = ctx.filters();
        filters.push(format!("{key}={value}"));
        self.list(filters).await
    }

    /// This node's container of `task_id`, if any (a running one first).
    pub async fn find_task(
        &self,
        ctx: &ContainerContext,
        task_id: &str,
    ) -> Result<Option<ManagedContainer>, DockerError> {
        let mut filters = ctx.filters();
        filters.push(format!("{LABEL_TASK}={task_id}"));
        let mut found = self.list(filters).await?;
        found.sort_by_key(|c| !c.running);
        Ok(found.into_iter().next())
    }

    /// Creates the container of `task`, named [`Task::container_name`]. When
    /// that name is taken by a container of the same task, returns it instead.
    /// `dns`: the node's DNS server for the container (its gateway on its
    /// first network, when networks span nodes).
    pub async fn create(
        &self,
        task: &Task,
        ctx: &ContainerContext,
        dns: Option<std::net::Ipv4Addr>,
    ) -> Result<Created, DockerError> {
        let name = task.container_name();
        let opts = CreateContainerOptions { name: Some(name.clone()), platform: String::new() };
        let started = std::time::Instant::now();
        let created = self.docker.create_container(Some(opts), spec::container_body(task, ctx, dns)).await;
        self.observe("create_container", started);
        match created {
            Ok(resp) => Ok(Created::New(resp.id)),
            Err(BollardError::DockerResponseServerError { status_code: 409, message }) => {
                match self.inspect(&name).await? {
                    Some(c) if c.labels.get(LABEL_TASK) == Some(&task.id) => Ok(Created::Existing(c.id)),
                    _ => Err(DockerError::Conflict { name, message: message.trim().to_string() }),
                }
            }
            Err(e) => Err(engine("create container", e)),
        }
    }

    /// Stops a container gracefully, then removes it.
    pub async fn stop_and_remove(
        &self,
        id: &str,
        grace: Option<Duration>,
        signal: Option<&str>,
    ) -> Result<(), DockerError> {
        self.stop(id, grace, signal).await?;
        self.remove(id).await
    }

    /// Starts a container (a running one is left alone).
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        let started = std::time::Instant::now();
        let r = self.docker.start_container(id, None).await;
        self.observe("start_container", started);
        r.map_err(|e| engine("start container", e))
    }

    /// Inspects a container by id or name; `None` when it does not exist.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let started = std::time::Instant::now();
        let inspected = self.docker.inspect_container(id, None).await;
        self.observe("inspect_container", started);
        let resp = match inspected {
            Ok(r) => r,
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(e) => return Err(engine("inspect container", e)),
        };
        let state = resp.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let exited = matches!(status, ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD);
        let health = state.health.and_then(|h| {
            let status = match h.status? {
                HealthStatusEnum::STARTING => "starting",
                HealthStatusEnum::HEALTHY => "healthy",
                HealthStatusEnum::UNHEALTHY => "unhealthy",
                HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => return None,
            };
            let last_output = h
                .log
                .and_then(|log| log.into_iter().last())
                .and_then(|r| r.output)
                .map(|o| o.trim().to_string())
                .unwrap_or_default();
            Some(HealthInfo { status: status.to_string(), last_output })
        });
        let config = resp.config.unwrap_or_default();
        // The container's config holds the image's health check when the task sets none.
        let health_deadline = config.healthcheck.as_ref().and_then(|h| {
            HealthDeadline::of(
                h.test.as_deref().unwrap_or_default(),
                h.interval.unwrap_or(0),
                h.retries.unwrap_or(0),
                h.start_period.unwrap_or(0),
            )
        });
        Ok(Some(ContainerInfo {
            id: resp.id.unwrap_or_default(),
            name: resp.name.map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            status: status.to_string(),
            exit_code: if exited { state.exit_code } else { None },
            health,
            error: state.error.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            health_deadline,
        }))
    }

    /// Yields each time the engine reports a health change of container
    /// `id` (its `health_status` events): a change is seen at once rather
    /// than at the next poll. Ends when the engine's stream does.
    pub fn health_events(&self, id: &str) -> impl futures_util::Stream<Item = ()> + Send + 'static {
        let opts = bollard::query_parameters::EventsOptions {
            filters: Some(HashMap::from([
                ("container".to_string(), vec![id.to_string()]),
                ("type".to_string(), vec!["container".to_string()]),
            ])),
            ..Default::default()
        };
        self.docker.events(Some(opts)).take_while(|r| std::future::ready(r.is_ok())).filter_map(|r| {
            std::future::ready(match r {
                Ok(e) if e.action.as_deref().is_some_and(|a| a.starts_with("health_status")) => Some(()),
                _ => None,
            })
        })
    }

    /// The log of container `id` as its engine keeps it (`docker logs`,
    /// with timestamps): only from Unix second `since` on (0: from the
    /// start), only the last `tail` lines when given, and, with `follow`,
    /// the new lines as they come until the container stops. Each item is
    /// one frame of the engine's, split into lines ([`split_frame`]).
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        since: i64,
        tail: Option<u64>,
    ) -> impl futures_util::Stream<Item = Result<Vec<LogChunk>, DockerError>> + Send + 'static {
        let opts = bollard::query_parameters::LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            since: i32::try_from(since.max(0)).unwrap_or(i32::MAX),
            until: 0,
            timestamps: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        self.docker.logs(id, Some(opts)).map(|frame| match frame {
            Ok(bollard::container::LogOutput::StdErr { message }) => Ok(split_frame(2, &message)),
            Ok(
                bollard::container::LogOutput::StdOut { message } | bollard::container::LogOutput::Console { message },
            ) => Ok(split_frame(1, &message)),
            Ok(bollard::container::LogOutput::StdIn { .. }) => Ok(Vec::new()),
            Err(e) => Err(engine("read the logs of a container", e)),
        })
    }

    /// Waits until the container is not running and returns its exit code.
    pub async fn wait(&self, id: &str) -> Result<WaitOutcome, DockerError> {
        let stream = self.docker.wait_container(id, None);
        let mut stream = std::pin::pin!(stream);
        match stream.next().await {
            Some(Ok(resp)) => Ok(WaitOutcome::Exited(resp.status_code)),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(WaitOutcome::Exited(code)),
            Some(Err(BollardError::DockerResponseServerError { status_code: 404, .. })) => Ok(WaitOutcome::Gone),
            Some(Err(e)) => Err(engine("wait for container", e)),
            None => Err(DockerError::Engine { op: "wait for container", message: "no answer".to_string() }),
        }
    }

    /// Stops a container: `signal` (or its stop signal), then a kill after
    /// `grace` rounded up to whole seconds (`None`: the container's own stop
    /// timeout, which [`create`](Self::create) sets from the task's grace
    /// period). A stopped or missing container is fine.
    pub async fn stop(&self, id: &str, grace: Option<Duration>, signal: Option<&str>) -> Result<(), DockerError> {
        let secs = grace.map(|g| spec::grace_seconds(u64::try_from(g.as_millis()).unwrap_or(u64::MAX)));
        let opts = StopContainerOptions {
            signal: signal.filter(|s| !s.is_empty()).map(str::to_string),
            t: secs.map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
        };
        // The engine answers once the container stopped: wait longer than the grace.
        let wait = secs.map_or(UNKNOWN_GRACE_SECS, |s| u64::try_from(s).unwrap_or(u64::MAX));
        let docker = self.docker.clone().with_timeout(Duration::from_secs(wait.saturating_add(REQUEST_TIMEOUT_SECS)));
        let started = std::time::Instant::now();
        let stopped = docker.stop_container(id, Some(opts)).await;
        self.observe("stop_container", started);
        match stopped {
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(engine("stop container", e)),
        }
    }

    /// Removes a container (forcibly, with its anonymous volumes). A missing
    /// container, or one already being removed, is fine.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions { force: true, v: true, link: false };
        let started = std::time::Instant::now();
        let removed = self.docker.remove_container(id, Some(opts)).await;
        self.observe("remove_container", started);
        match removed {
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 409, message })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(engine("remove container", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_refusals_are_told_from_other_pull_failures() {
        for refused in [
            "Head \"https://10.77.0.1:5443/v2/private/web/manifests/1\": no basic auth credentials",
            "Head \"https://reg:5000/v2/a/manifests/1\": unauthorized: authentication required",
            "pull access denied for acme/private, repository does not exist or may require 'docker login': denied: \
             requested access to the resource is denied",
        ] {
            assert!(auth_refusal(refused), "{refused}");
        }
        for other in [
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
            "manifest for reg:5000/a:9 not found: manifest unknown",
        ] {
            assert!(!auth_refusal(other), "{other}");
        }
        let login = RegistryCredential { username: "u".into(), password: "p".into(), ..Default::default() };
        let hub = credentials("docker.io", Some(&login)).expect("credentials");
        assert_eq!(hub.serveraddress.as_deref(), Some("https://index.docker.io/v1/"));
        assert_eq!(hub.identitytoken, None);
        assert!(credentials("docker.io", None).is_none());
    }

    #[test]
    fn repositories_compare_in_full() {
        assert!(same_repo("nginx", "docker.io/library/nginx"));
        assert!(same_repo("acme/web", "docker.io/acme/web"));
        assert!(same_repo("registry.local:5000/web", "registry.local:5000/web"));
        assert!(!same_repo("registry.local:5000/web", "web"));
        assert!(!same_repo("acme/web", "acme/api"));
    }

    #[test]
    fn a_health_deadline_is_start_period_plus_retries_times_interval() {
        let test = vec!["CMD".to_string(), "true".to_string()];
        let d = HealthDeadline::of(&test, 2_000_000_000, 2, 10_000_000_000).expect("a check");
        assert_eq!(d.total(), Duration::from_secs(14));
        assert_eq!(d.why(), "not healthy within 14s (start_period 10s + retries 2 × interval 2s)");
        // Docker's defaults where unset: interval 30 s, retries 3, no start period.
        let d = HealthDeadline::of(&test, 0, 0, 0).expect("a check");
        assert_eq!(d.total(), Duration::from_secs(90));
        assert_eq!(d.why(), "not healthy within 90s (start_period 0s + retries 3 × interval 30s)");
        let d = HealthDeadline::of(&test, 500_000_000, 1, 0).expect("a check");
        assert_eq!(d.why(), "not healthy within 0.5s (start_period 0s + retries 1 × interval 0.5s)");
        assert_eq!(HealthDeadline::of(&["NONE".to_string()], 1, 1, 1), None);
        assert_eq!(HealthDeadline::of(&[], 1, 1, 1), None);
    }
}
