//! The Docker executor: the only module of the agent that speaks bollard.
//!
//! [`Executor`] wraps one connection to the engine and offers what the task
//! runners and the worker need — list the node's containers, make sure an
//! image is present, create / start / inspect / wait for / stop / remove a
//! container — in the agent's own types. No bollard type appears in its
//! public signatures; Docker's answers become [`DockerError`]s carrying the
//! daemon's message.
//!
//! The create request is built from a [`Task`] by the pure functions of
//! [`spec`] (labels, name, mounts, ports, health check).

pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};
use stackd_core::model::Task;

pub use spec::{LABEL_CLUSTER, LABEL_NODE, LABEL_REVISION, LABEL_SERVICE, LABEL_SLOT, LABEL_STACK, LABEL_TASK};

/// The socket used when none is configured and `DOCKER_HOST` names none.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Request timeout of the connection (time until response headers).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// What a stop may take when the container's own stop timeout applies.
const UNKNOWN_GRACE_SECS: u64 = 600;

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
}

/// The daemon's own message for an error response, else the error's text.
fn describe(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
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
        Ok(Executor { docker, endpoint })
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
        })
    }

    async fn list(&self, label_filters: Vec<String>) -> Result<Vec<ManagedContainer>, DockerError> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), label_filters)])),
            ..Default::default()
        };
        let list = self.docker.list_containers(Some(opts)).await.map_err(|e| engine("list containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let task_id = c.labels.as_ref().and_then(|l| l.get(LABEL_TASK)).cloned().unwrap_or_default();
                let running = matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING
                            | ContainerSummaryStateEnum::PAUSED
                            | ContainerSummaryStateEnum::RESTARTING
                    )
                );
                Some(ManagedContainer { id, task_id, running })
            })
            .collect())
    }

    /// Every container (running or not) labelled with this node and cluster.
    pub async fn list_managed(&self, ctx: &ContainerContext) -> Result<Vec<ManagedContainer>, DockerError> {
        self.list(ctx.filters()).await
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

    /// Makes sure `image` is present: inspects it, else tries to pull it.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(engine("inspect image", e)),
        }
        let (from_image, tag) = spec::pull_reference(image);
        let opts = CreateImageOptions { from_image: Some(from_image), tag: Some(tag), ..Default::default() };
        self.docker
            .create_image(Some(opts), None, None)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| DockerError::ImageUnavailable { image: image.to_string(), message: describe(&e) })
    }

    /// Creates the container of `task`, named [`Task::container_name`]. When
    /// that name is taken by a container of the same task, returns it instead.
    pub async fn create(&self, task: &Task, ctx: &ContainerContext) -> Result<Created, DockerError> {
        let name = task.container_name();
        let opts = CreateContainerOptions { name: Some(name.clone()), platform: String::new() };
        match self.docker.create_container(Some(opts), spec::container_body(task, ctx)).await {
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

    /// Starts a container (a running one is left alone).
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.docker.start_container(id, None).await.map_err(|e| engine("start container", e))
    }

    /// Inspects a container by id or name; `None` when it does not exist.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let resp = match self.docker.inspect_container(id, None).await {
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
        Ok(Some(ContainerInfo {
            id: resp.id.unwrap_or_default(),
            name: resp.name.map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            status: status.to_string(),
            exit_code: if exited { state.exit_code } else { None },
            health,
            error: state.error.unwrap_or_default(),
            labels: resp.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
        }))
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
        match docker.stop_container(id, Some(opts)).await {
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(engine("stop container", e)),
        }
    }

    /// Removes a container (forcibly, with its anonymous volumes). A missing
    /// container, or one already being removed, is fine.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions { force: true, v: true, link: false };
        match self.docker.remove_container(id, Some(opts)).await {
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
