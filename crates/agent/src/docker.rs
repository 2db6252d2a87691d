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

pub mod ports;
pub mod spec;

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

/// How long an agent waits for another process's network lock before it
/// goes on without it.
const HOST_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the host-wide network lock: held while the returned file is open.
/// `None` (after a warning) when it cannot be had; creating goes on.
async fn host_network_lock() -> Option<std::fs::File> {
    let path = std::env::temp_dir().join("stackd-networks.lock");
    let opened = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path);
    let file = match opened.or_else(|_| std::fs::File::open(&path)) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the network lock file");
            return None;
        }
    };
    let deadline = tokio::time::Instant::now() + HOST_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot take the network lock; going on without it");
                return None;
            }
        }
    }
}

/// What the executor could not do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached (no socket, refused, or no usable version).
    #[error("cannot reach the Docker engine at {endpoint}: {message}")]
    Unreachable {
        /// The socket or host tried.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// No such container or image.
    #[error("{message}")]
    NotFound {
        /// The daemon's message.
        message: String,
    },
    /// The container name is taken by a container that is not this task's.
    #[error("container name {name} is already in use by another container: {message}")]
    Conflict {
        /// The contested name.
        name: String,
        /// The daemon's message.
        message: String,
    },
    /// The image is not present locally and could not be pulled.
    #[error("image {image} not found locally and pull failed: {message}")]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        message: String,
    },
    /// `pull_policy: always`, and the pull failed (the node's copy is not used).
    #[error("image {image}: pull_policy always, and the pull failed: {message}")]
    PullFailed {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        message: String,
    },
    /// The registry refused the pull for want of credentials, and the
    /// deploy sent none for it.
    #[error(
        "pull access denied for registry {registry}: no credentials were sent with the deploy \
         (stackctl deploy --with-registry-auth): image {image}: {message}"
    )]
    PullNoCredentials {
        /// The registry.
        registry: String,
        /// The image reference.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// The registry refused the credentials the deploy sent for it.
    #[error(
        "pull access denied for registry {registry}: the registry refused the credentials sent with the deploy \
         (stackctl deploy --with-registry-auth again with valid ones): image {image}: {message}"
    )]
    PullCredentialsRefused {
        /// The registry.
        registry: String,
        /// The image reference.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// `pull_policy: never`, and the image is not on the node.
    #[error(
        "image {image} is not on this node, and pull_policy is never: load it on the node (docker load, docker pull) \
         or use pull_policy missing"
    )]
    NotPresent {
        /// The image reference.
        image: String,
    },
    /// An external network the task joins does not exist.
    #[error(
        "external network {name} does not exist on this node: create it (docker network create {name}) or drop `external` from the stack file"
    )]
    NetworkMissing {
        /// The network's name.
        name: String,
    },
    /// A network of the stack's name exists, but stackd did not create it.
    #[error(
        "network {name} exists but was not created by stackd: remove it, or declare the network `external` in the stack file"
    )]
    NetworkTaken {
        /// The network's name.
        name: String,
    },
    /// An external volume a task mounts does not exist.
    #[error(
        "external volume {name} does not exist on this node: create it (docker volume create {name}, with the driver and options it needs) or drop `external` from the stack file"
    )]
    VolumeMissing {
        /// The volume's name.
        name: String,
    },
    /// A volume of the stack's name exists with another driver or other
    /// options (the engine would silently keep them).
    #[error("{0}")]
    VolumeMismatch(String),
    /// The volume driver (a plugin) is not installed on this node.
    #[error(
        "volume {name}: the volume driver {driver} is not installed on this node (docker plugin install {driver}; docker plugin ls lists them): {message}"
    )]
    VolumePlugin {
        /// The volume's name.
        name: String,
        /// The driver the stack names.
        driver: String,
        /// The daemon's message.
        message: String,
    },
    /// Any other failure of a request to the engine.
    #[error("{op}: {message}")]
    Engine {
        /// What was attempted (`"create container"`).
        op: &'static str,
        /// The daemon's message, or the transport error.
        message: String,
    },
}

impl DockerError {
    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }

    /// Whether the engine could not find (or tell apart) a network the
    /// request named: it was removed meanwhile, or a twin exists for a moment.
    /// Making sure of the networks again and retrying is the remedy.
    pub fn is_network_gone(&self) -> bool {
        let message = match self {
            DockerError::NotFound { message } | DockerError::Engine { message, .. } => message,
            _ => return false,
        };
        message.contains("network") && (message.contains("not found") || message.contains("ambiguous"))
    }
}

/// Whether the engine says the object exists already.
fn already_exists(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, message }
        if *status_code == 409 || message.contains("already exists"))
}

/// A listed network in the agent's terms.
fn network_info(n: Network) -> Option<NetworkInfo> {
    Some(NetworkInfo {
        id: n.id?,
        name: n.name.unwrap_or_default(),
        created: n.created.unwrap_or_default(),
        labels: n.labels.unwrap_or_default(),
    })
}

/// A volume in the agent's terms.
fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        driver: v.driver,
        options: v.options.into_iter().collect(),
        labels: v.labels.into_iter().collect(),
    }
}

/// Whether the engine says a volume driver (plugin) is missing.
fn plugin_missing(e: &BollardError) -> bool {
    let message = describe(e);
    message.contains("plugin") && message.contains("not found")
}

/// The daemon's own message for an error response, else the error's text.
fn describe(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// The engine's pull credentials for `registry` (bollard's type stays in
/// this module; its `Debug` would show them: never log it).
fn credentials(registry: &str, login: Option<&RegistryCredential>) -> Option<DockerCredentials> {
    let c = login?;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(DockerCredentials {
        username: some(&c.username),
        password: some(&c.password),
        identitytoken: some(&c.identity_token),
        serveraddress: Some(stackd_core::registry::server_address(registry)),
        ..Default::default()
    })
}

/// Whether an engine's pull error is the registry refusing access: no or
/// bad credentials (a registry's 401, Docker Hub's "pull access denied").
pub(crate) fn auth_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "pull access denied",
        "access to the resource is denied",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Classifies a bollard error: 404 becomes [`DockerError::NotFound`].
fn engine(op: &'static str, e: BollardError) -> DockerError {
    match e {
        BollardError::DockerResponseServerError { status_code: 404, message } => {
            DockerError::NotFound { message: message.trim().to_string() }
        }
        other => DockerError::Engine { op, message: describe(&other) },
    }
}

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

/// How long [`Executor::resolve_image`] waits for the registry.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `a` and `b` name the same repository, Docker Hub's short forms
/// included (`web` = `docker.io/library/web`).
fn same_repo(a: &str, b: &str) -> bool {
    fn full(name: &str) -> String {
        let first = name.split('/').next().unwrap_or_default();
        let has_registry = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
        match (has_registry, name.contains('/')) {
            (true, _) => name.to_string(),
            (false, true) => format!("docker.io/{name}"),
            (false, false) => format!("docker.io/library/{name}"),
        }
    }
    full(a) == full(b)
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

    /// What the tag `image` means, for a service revision's tasks to run
    /// exactly that image (see [`ImagePin`]):
    ///
    /// - an image present here that was never pulled from a registry (no
    ///   repo digest: built or loaded locally) keeps its tag;
    /// - otherwise the engine asks the registry (`/distribution/…/json`,
    ///   with the engine's own registry settings and `login`, the stack's
    ///   credentials for it when the deploy sent some), within [`RESOLVE_TIMEOUT`];
    /// - a registry that does not answer: the digest the engine pulled the
    ///   tag from, if the image is here; else the tag is kept, with why.
    pub async fn resolve_image(&self, image: &str, login: Option<&RegistryCredential>) -> ImagePin {
        if image.contains("@sha256:") {
            return ImagePin::Digest { reference: image.to_string() };
        }
        let (repo, _) = spec::pull_reference(image);
        let local = match self.docker.inspect_image(image).await {
            Ok(i) => Some(i.repo_digests.unwrap_or_default()),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => None,
            Err(e) => return ImagePin::Tag { reason: format!("the engine could not inspect it: {e}") },
        };
        // The digest of this repository among those the local image came from.
        let local_digest = local.as_ref().and_then(|digests| {
            digests.iter().find_map(|d| {
                let (name, digest) = d.split_once('@')?;
                (same_repo(name, &repo)).then(|| format!("{repo}@{digest}"))
            })
        });
        if local.is_some() && local_digest.is_none() {
            return ImagePin::Tag { reason: "no registry digest: the image was built or loaded on the node".into() };
        }
        let registry = stackd_core::registry::registry_of(image);
        let asked = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            self.docker.inspect_registry_image(image, credentials(&registry, login)),
        )
        .await;
        let why = match asked {
            Ok(Ok(d)) => match d.descriptor.digest {
                Some(digest) if !digest.is_empty() => {
                    return ImagePin::Digest { reference: format!("{repo}@{digest}") };
                }
                _ => "the registry answered without a digest".to_string(),
            },
            Ok(Err(e)) => format!("the registry could not be asked: {e}"),
            Err(_) => format!("the registry did not answer within {RESOLVE_TIMEOUT:?}"),
        };
        match local_digest {
            Some(reference) => ImagePin::Digest { reference },
            None => ImagePin::Tag { reason: why },
        }
    }

    /// Makes sure `image` is present as `policy` says: `missing` inspects
    /// it, and pulls it when it is not there; `always` pulls it (a failed
    /// pull fails, whatever the node holds); `never` only inspects it.
    /// A pull sends `login` (the stack's credentials for `registry`, the
    /// registry `image` comes from) when there is one; a pull the registry
    /// refuses for want of credentials says whether any were sent.
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        registry: &str,
        login: Option<&RegistryCredential>,
    ) -> Result<(), DockerError> {
        if policy != PullPolicy::Always {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => return Err(engine("inspect image", e)),
            }
            if policy == PullPolicy::Never {
                return Err(DockerError::NotPresent { image: image.to_string() });
            }
        }
        let (from_image, tag) = spec::pull_reference(image);
        let opts = CreateImageOptions { from_image: Some(from_image), tag: Some(tag), ..Default::default() };
        let started = std::time::Instant::now();
        let pulled =
            self.docker.create_image(Some(opts), None, credentials(registry, login)).try_collect::<Vec<_>>().await;
        self.observe("pull_image", started);
        pulled.map(|_| ()).map_err(|e| {
            let message = describe(&e);
            let (registry, image) = (registry.to_string(), image.to_string());
            match policy {
                _ if auth_refusal(&message) && login.is_none() => {
                    DockerError::PullNoCredentials { registry, image, message }
                }
                _ if auth_refusal(&message) => DockerError::PullCredentialsRefused { registry, image, message },
                PullPolicy::Always => DockerError::PullFailed { image, message },
                _ => DockerError::ImageUnavailable { image, message },
            }
        })
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

    async fn list_networks(&self, filter: (&str, String)) -> Result<Vec<NetworkInfo>, DockerError> {
        let opts =
            ListNetworksOptions { filters: Some(HashMap::from([(filter.0.to_string(), vec![filter.1.clone()])])) };
        let list = self.docker.list_networks(Some(opts)).await.map_err(|e| engine("list networks", e))?;
        // The engine's `name` filter matches parts of names.
        let exact = filter.0 != "name";
        Ok(list.into_iter().filter_map(network_info).filter(|n| exact || n.name == filter.1).collect())
    }

    /// Every network called exactly `name`.
    pub async fn networks_named(&self, name: &str) -> Result<Vec<NetworkInfo>, DockerError> {
        self.list_networks(("name", name.to_string())).await
    }

    /// The networks stackd created for this cluster (any node's, on this engine).
    pub async fn cluster_networks(&self, ctx: &ContainerContext) -> Result<Vec<NetworkInfo>, DockerError> {
        self.list_networks(("label", format!("{LABEL_CLUSTER}={}", ctx.cluster_id))).await
    }

    /// Makes sure the network `net` exists. An external network must exist
    /// already ([`DockerError::NetworkMissing`]); a stack network is created
    /// as a local network with stackd's labels unless a network stackd
    /// created has the name already (one that stackd did not create is
    /// [`DockerError::NetworkTaken`]). A create that races with another
    /// agent's is not an error. True when this call created it.
    ///
    /// A network that exists is found without the locks: only a create
    /// holds them. (Every task of a deploy took both locks in turn for a
    /// look at the engine's networks: 30 replicas queued for about half a
    /// second before their containers were created.)
    pub async fn ensure_network(
        &self,
        ctx: &ContainerContext,
        net: &StackNetwork,
        view: Option<&stackd_core::net::NetView>,
    ) -> Result<bool, DockerError> {
        let name = &net.spec.name;
        if net.spec.external {
            return match self.docker.inspect_network(name, None).await {
                Ok(_) => Ok(false),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                    Err(DockerError::NetworkMissing { name: name.clone() })
                }
                Err(e) => Err(engine("inspect network", e)),
            };
        }
        let found = |existing: &[NetworkInfo]| {
            spec::keeper(existing).map(|n| {
                if spec::is_stackd_network(&n.labels) {
                    Ok(false)
                } else {
                    Err(DockerError::NetworkTaken { name: name.clone() })
                }
            })
        };
        if let Some(r) = found(&self.networks_named(name).await?) {
            return r;
        }
        let _one_at_a_time = self.network_lock.lock().await;
        let _one_per_host = host_network_lock().await;
        if let Some(r) = found(&self.networks_named(name).await?) {
            return r;
        }
        let created = match self.docker.create_network(spec::network_body(net, ctx, view)).await {
            Ok(resp) => resp.id,
            Err(e) if already_exists(&e) => return Ok(false),
            Err(e) => return Err(engine("create network", e)),
        };
        // Another agent on this engine may have created a twin at the same moment.
        let same = self.networks_named(name).await?;
        if let Some(k) = spec::keeper(&same)
            && k.id != created
        {
            tracing::info!(network = %name, "another agent created the network at the same time: keeping its one");
            if let Err(e) = self.docker.remove_network(&created).await {
                tracing::warn!(network = %name, error = %describe(&e), "cannot remove a duplicate network");
            }
        }
        Ok(true)
    }

    /// The volume called `name`, if it exists.
    pub async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>, DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(volume_info(v))),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(engine("inspect volume", e)),
        }
    }

    /// Makes sure the named volume `vol` exists as the stack declares it. An
    /// external volume must exist already ([`DockerError::VolumeMissing`]);
    /// a stack volume is created with its driver, driver options and labels
    /// (plus stackd's) unless it exists. One that exists — or that another
    /// runner created at the same moment, which the engine answers with the
    /// existing volume — must have the same driver and options
    /// ([`DockerError::VolumeMismatch`]): the engine itself would silently
    /// keep the old ones, and the data would land elsewhere than the stack
    /// says. A missing volume plugin is [`DockerError::VolumePlugin`].
    pub async fn ensure_volume(&self, ctx: &ContainerContext, vol: &StackVolume) -> Result<(), DockerError> {
        let name = &vol.spec.name;
        let existing = self.inspect_volume(name).await?;
        if vol.spec.external {
            return match existing {
                Some(_) => Ok(()),
                None => Err(DockerError::VolumeMissing { name: name.clone() }),
            };
        }
        let volume = match existing {
            Some(v) => v,
            None => match self.docker.create_volume(spec::volume_body(vol, ctx)).await {
                Ok(v) => {
                    tracing::info!(volume = %name, driver = %v.driver, "created volume");
                    volume_info(v)
                }
                Err(e) if plugin_missing(&e) => {
                    return Err(DockerError::VolumePlugin {
                        name: name.clone(),
                        driver: spec::volume_driver(vol.spec.driver.as_deref()).to_string(),
                        message: describe(&e),
                    });
                }
                Err(e) => return Err(engine("create volume", e)),
            },
        };
        match spec::volume_mismatch(&volume, &vol.spec) {
            None => Ok(()),
            Some(why) => Err(DockerError::VolumeMismatch(why)),
        }
    }

    /// Connects a container to the networks of its task it is not on yet
    /// (with the task's aliases). The first one is joined at creation; the
    /// others here, before the container starts.
    pub async fn connect_networks(
        &self,
        ctx: &ContainerContext,
        container_id: &str,
        task: &Task,
    ) -> Result<(), DockerError> {
        if task.template.networks.len() < 2 {
            return Ok(());
        }
        let resp =
            self.docker.inspect_container(container_id, None).await.map_err(|e| engine("inspect container", e))?;
        let joined: BTreeSet<String> =
            resp.network_settings.and_then(|n| n.networks).unwrap_or_default().into_keys().collect();
        for a in task.template.networks.iter().filter(|a| !joined.contains(&a.network)) {
            let req = NetworkConnectRequest {
                container: container_id.to_string(),
                endpoint_config: Some(spec::endpoint(task, a, ctx)),
            };
            match self.docker.connect_network(&a.network, req).await {
                Ok(()) => {}
                Err(e) if already_exists(&e) => {}
                Err(e) => return Err(engine("connect network", e)),
            }
        }
        Ok(())
    }

    /// Removes this cluster's networks that no task of the node wants
    /// (`wanted`: engine names). A network that a running container still
    /// uses (another node's on the same engine, say) is left: the engine
    /// refuses. External networks and networks stackd did not create are
    /// never touched. Returns the names removed.
    pub async fn remove_unused_networks(
        &self,
        ctx: &ContainerContext,
        wanted: &BTreeSet<String>,
    ) -> Result<Vec<String>, DockerError> {
        let _one_at_a_time = self.network_lock.lock().await;
        let networks = self.cluster_networks(ctx).await?;
        let mut removed = Vec::new();
        for n in spec::unused_networks(&networks, ctx, wanted) {
            // A container created but not started yet (another agent's on this
            // engine, between create and start) is no active endpoint: keep its network.
            let about_to_start = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([
                    ("network".to_string(), vec![n.id.clone()]),
                    ("status".to_string(), vec!["created".to_string()]),
                ])),
                ..Default::default()
            };
            match self.docker.list_containers(Some(about_to_start)).await {
                Ok(found) if found.is_empty() => {}
                Ok(_) => continue,
                Err(e) => return Err(engine("list containers", e)),
            }
            match self.docker.remove_network(&n.id).await {
                Ok(()) => removed.push(n.name.clone()),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => tracing::debug!(network = %n.name, error = %describe(&e), "network still in use; kept"),
            }
        }
        Ok(removed)
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
