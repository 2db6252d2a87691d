//! The domain model: nodes, stacks, services, tasks and their specs.
//!
//! Everything here is plain data (serde-serialisable) so that it can be
//! replicated through Raft, snapshotted and printed as JSON with stable
//! field names. Times are Unix milliseconds ([`Timestamp`]); durations are
//! milliseconds in fields suffixed `_ms`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Core never reads a clock: callers pass it.
pub type Timestamp = u64;
/// A node's identifier, generated once when the node is created.
pub type NodeId = String;
/// A service's identifier (stable across updates, new after a remove + deploy).
pub type ServiceId = String;
/// A task's identifier.
pub type TaskId = String;

/// How many revisions of a service's spec are kept for rollback.
pub const REVISIONS_KEPT: usize = 10;
/// How many terminated tasks are kept per slot as history.
pub const TASK_HISTORY_PER_SLOT: usize = 5;

// ---------------------------------------------------------------- nodes

/// The roles a node can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Holds the Raft state (and usually runs tasks too).
    Manager,
    /// Only runs tasks.
    Worker,
}

impl NodeRole {
    /// `manager` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

/// What the operator allows on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// New tasks may be placed here.
    #[default]
    Active,
    /// No new tasks; running ones stay.
    Pause,
    /// No tasks: running ones are moved elsewhere.
    Drain,
}

impl Availability {
    /// `active`, `pause` or `drain`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

/// A node's liveness as the leader sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Never heard from since the leader took office.
    #[default]
    Unknown,
    /// Its agent holds a session and heartbeats.
    Ready,
    /// Its heartbeats stopped.
    Down,
}

/// What a node can offer to tasks, or what a task reserves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in billionths of a core.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Generic resources by kind (`gpu`, `ssd`, …), as counts: what a node
    /// advertises (`stackd --resource gpu=2`), or what a task reserves
    /// (compose's `discrete_resource_spec`). A task reserving a kind runs
    /// only on nodes with enough of it unreserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generic: BTreeMap<String, u64>,
}

/// A host of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Identifier, generated when the node was created.
    pub id: NodeId,
    /// Name given by the operator (defaults to the hostname).
    pub name: String,
    /// The address its gRPC services listen on.
    pub addr: String,
    /// Manager or worker.
    pub role: NodeRole,
    /// Whether tasks may be placed here.
    pub availability: Availability,
    /// Liveness.
    pub state: NodeState,
    /// Operator labels, used by placement constraints.
    pub labels: BTreeMap<String, String>,
    /// What the node offers.
    pub resources: Resources,
    /// Docker engine version the agent reported.
    pub engine_version: String,
    /// What the node's engine reports about its host (`docker info`), as
    /// its agent sent it when it opened its session: empty until then (and
    /// left out of the encoding, so that states without it encode as before).
    #[serde(default, skip_serializing_if = "EngineDescription::is_empty")]
    pub engine: EngineDescription,
    /// Last change of this record.
    pub updated_at: Timestamp,
}

/// A node's host as its Docker engine describes it (`docker info`): what
/// `stackctl node inspect` shows, and what the constraints
/// `node.platform.arch` and `engine.labels.<label>` match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineDescription {
    /// Operating system type (`linux`): Docker's `OSType`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// The distribution (`Debian GNU/Linux 12 (bookworm)`): Docker's
    /// `OperatingSystem`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_name: String,
    /// Architecture (`x86_64`, `aarch64`): Docker's `Architecture`, what
    /// Swarm's `node.platform.arch` matches.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// Kernel version (`6.1.0-18-amd64`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel_version: String,
    /// The engine's labels (`daemon.json`'s `labels`, Docker's `Labels`):
    /// set on the host by whoever runs the engine, distinct from the node
    /// labels operators set with `stackctl node update --label-add`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl EngineDescription {
    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Docker's `Labels` (`key=value`, or `key` for an empty value) as a
    /// map; of a key given twice, the last value.
    pub fn labels_from_engine<S: AsRef<str>>(labels: impl IntoIterator<Item = S>) -> BTreeMap<String, String> {
        labels
            .into_iter()
            .filter_map(|l| {
                let l = l.as_ref();
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
            })
            .collect()
    }
}

// ---------------------------------------------------------------- specs

/// How many tasks a service runs, and whether they run for ever or to completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ServiceMode {
    /// A fixed number of tasks, one per slot.
    Replicated {
        /// Number of slots.
        replicas: u64,
    },
    /// One task on every eligible node.
    Global,
    /// A job: tasks that run to completion (exit 0) until `replicas` of them
    /// have completed, one per slot. A task that completed is not replaced.
    ReplicatedJob {
        /// Completions wanted (slots 1..=replicas each complete once).
        replicas: u64,
        /// Tasks that run at the same time (0: `replicas`).
        #[serde(default)]
        max_concurrent: u64,
    },
    /// A job that runs to completion once on every eligible node.
    GlobalJob,
}

impl ServiceMode {
    /// Whether the service is a job (its tasks run to completion).
    pub fn is_job(&self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob)
    }

    /// The name used in stack files and listings: `replicated`, `global`,
    /// `replicated-job` or `global-job`.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }
}

/// How a service is reached by the other services of its networks (once
/// service discovery exists): through one virtual IP, or by DNS round robin
/// over its tasks' addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP for the service, balanced over its tasks.
    #[default]
    Vip,
    /// The service name resolves to the addresses of its tasks.
    Dnsrr,
}

impl EndpointMode {
    /// The name used in stack files: `vip` or `dnsrr`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

/// Kind of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named Docker volume (namespaced by the stack).
    Volume,
    /// A host path.
    Bind,
    /// A tmpfs.
    Tmpfs,
}

/// A filesystem mount of a task's container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mount {
    /// Volume, bind or tmpfs.
    pub kind: MountKind,
    /// Volume name (already namespaced) or host path; empty for tmpfs and anonymous volumes.
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Size of a tmpfs in bytes (0: the engine's default, half the memory).
    #[serde(default)]
    pub tmpfs_size_bytes: u64,
    /// Permission bits of a tmpfs's root, like `0o1777` (0: the engine's default).
    #[serde(default)]
    pub tmpfs_mode: u32,
}

impl Mount {
    /// A mount without tmpfs options.
    pub fn new(kind: MountKind, source: impl Into<String>, target: impl Into<String>, read_only: bool) -> Self {
        Mount { kind, source: source.into(), target: target.into(), read_only, tmpfs_size_bytes: 0, tmpfs_mode: 0 }
    }
}

/// Transport protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The name Docker uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// How a port is published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Through the routing mesh: served on every node, balanced over the
    /// service's healthy tasks wherever they run.
    #[default]
    Ingress,
    /// Bound on the node that runs the task.
    Host,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortConfig {
    /// Port inside the container.
    pub target: u16,
    /// Port on the host, if published.
    pub published: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
    /// Publish mode.
    pub mode: PublishMode,
    /// Host IP to bind (empty: all).
    #[serde(default)]
    pub host_ip: String,
    /// The routing mesh tells the task the client's address with a PROXY
    /// protocol v2 header (`x-proxy-protocol: v2`; TCP through the mesh only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

/// A container health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Docker's test form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval_ms: u64,
    /// Time one check may take.
    pub timeout_ms: u64,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u64,
    /// Grace period after start during which failures do not count.
    pub start_period_ms: u64,
    /// Time between checks during the start period.
    pub start_interval_ms: u64,
}

/// What a task runs: the part of a service spec that, when changed,
/// requires new containers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTemplate {
    /// Image reference.
    pub image: String,
    /// Command (replaces the image's CMD) when set.
    pub command: Option<Vec<String>>,
    /// Entrypoint (replaces the image's ENTRYPOINT) when set.
    pub entrypoint: Option<Vec<String>>,
    /// Environment as `KEY=VALUE`, sorted by key.
    pub env: Vec<String>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Ports.
    pub ports: Vec<PortConfig>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Health check; `None` keeps the image's.
    pub healthcheck: Option<HealthCheck>,
    /// Time between the stop signal and a kill.
    pub stop_grace_period_ms: u64,
    /// Stop signal (empty: the image's).
    pub stop_signal: Option<String>,
    /// Run an init process.
    pub init: Option<bool>,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// When the node pulls the image (compose `pull_policy`, or `stackctl
    /// deploy --pull`). Left out of the encoding while the default.
    #[serde(default, skip_serializing_if = "PullPolicy::is_missing")]
    pub pull_policy: PullPolicy,
    /// Linux capabilities to add (`NET_ADMIN`, …).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Linux capabilities to drop.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Kernel parameters (`net.core.somaxconn: "1024"`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Extra `/etc/hosts` entries as `host:ip`.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// Resource limits by name (`nofile`, `nproc`, …).
    #[serde(default)]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Log driver; `None` keeps the engine's default.
    #[serde(default)]
    pub logging: Option<Logging>,
    /// Where tasks may run.
    #[serde(default)]
    pub placement: Placement,
    /// CPU and memory limits and reservations.
    #[serde(default)]
    pub resources: ResourceSpec,
    /// Configs given to the container as files.
    #[serde(default)]
    pub configs: Vec<FileRef>,
    /// Secrets given to the container as files on a tmpfs.
    #[serde(default)]
    pub secrets: Vec<FileRef>,
    /// The networks the container joins, the first one at creation (empty:
    /// Docker's default bridge, as before networks existed).
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// Bumped to replace every task without another change (Swarm's
    /// `ForceUpdate`): the way out of a paused rollout. A deploy keeps the
    /// service's value.
    #[serde(default)]
    pub force_update: u64,
}

impl TaskTemplate {
    /// The ports a task binds on its node: host-mode ports (ingress ones go
    /// through the routing mesh, which every node serves). Two tasks that
    /// share one cannot run on one node at once.
    pub fn node_ports(&self) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        self.ports.iter().filter(|p| p.mode == PublishMode::Host).filter_map(|p| p.published.map(|pp| (pp, p.protocol)))
    }
}

/// A task's container on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's engine name ([`NetworkSpec::name`] of one of the stack's networks).
    pub network: String,
    /// DNS names of the container on this network, besides the service's
    /// short name, which the agent always adds.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl TaskTemplate {
    /// The template as read APIs show it: without the digests of its
    /// secrets, which would let anyone who can read a spec test guesses of a
    /// weak secret offline (the digest is a plain SHA-256 of the content).
    pub fn redacted(&self) -> TaskTemplate {
        let mut t = self.clone();
        for r in &mut t.secrets {
            r.digest.clear();
        }
        t
    }
}

/// A config or secret given to a task's container as a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The key in the stack's `configs:` or `secrets:`.
    pub source: String,
    /// The object's name in the cluster (`<stack>_<key>`, or the external name).
    pub name: String,
    /// Absolute path of the file in the container.
    pub target: String,
    /// Owner (numeric uid).
    pub uid: String,
    /// Group (numeric gid).
    pub gid: String,
    /// Permission bits, like `0o444`.
    pub mode: u32,
    /// SHA-256 (hex) of the content the task gets; empty for an external
    /// object, which cannot change. A new content is a new template, so the
    /// tasks that use it are replaced by a rolling update.
    pub digest: String,
}

/// Bytes that are never printed: `Debug` shows only their length. Serialised
/// as base64.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD.decode(text).map(Blob).map_err(serde::de::Error::custom)
    }
}

/// SHA-256 of `data`, in lower-case hex.
pub fn digest(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in Sha256::digest(data) {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Where a stack's config or secret comes from, as its stack file says
/// (what `stackctl config` writes back; never the content of a secret).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ObjectOrigin {
    /// `external: true`: it exists in the cluster already.
    #[default]
    External,
    /// `file: PATH`, as written.
    File(String),
    /// `environment: VAR`.
    Environment(String),
    /// `content: …` (configs only).
    Content,
}

/// The most bytes a config or secret may hold (Swarm's limit).
pub const MAX_OBJECT_BYTES: usize = 500 * 1024;

/// A config or secret declared by a stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSpec {
    /// Name in the cluster: `<stack>_<key>` unless `name:` is given or it is external.
    pub name: String,
    /// It exists in the cluster already (`stackctl secret create`) and is not managed by the stack.
    pub external: bool,
    /// Where the content came from.
    pub origin: ObjectOrigin,
    /// The content (empty when external).
    pub data: Blob,
    /// SHA-256 (hex) of the content; empty when external.
    pub digest: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// How a constraint compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConstraintOp {
    /// `==`
    #[default]
    Eq,
    /// `!=`
    Ne,
}

/// A placement constraint such as `node.labels.zone == eu`.
///
/// Parsed and matched as swarmkit's `manager/constraint` does: the key in
/// any case (`node.Labels.zone`), the label name after `node.labels.` as
/// written, the value compared in any case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `node.id`, `node.hostname`, `node.role`, `node.ip`,
    /// `node.platform.os`, `node.platform.arch`, `node.labels.<label>` or
    /// `engine.labels.<label>`, as written.
    pub key: String,
    /// `==` or `!=`.
    pub op: ConstraintOp,
    /// The value compared with.
    pub value: String,
}

/// The prefix of a node label's key in a constraint or a spread preference
/// (any case, as in swarmkit).
pub const NODE_LABEL_PREFIX: &str = "node.labels.";

/// The label a constraint or spread `key` names, when it is
/// `node.labels.<label>` (prefix in any case, label as written).
pub fn node_label(key: &str) -> Option<&str> {
    label_after(key, NODE_LABEL_PREFIX)
}

/// The prefix of an engine label's key in a constraint or a spread
/// preference (any case, as in swarmkit).
pub const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// The engine label a constraint or spread `key` names, when it is
/// `engine.labels.<label>` (prefix in any case, label as written).
pub fn engine_label(key: &str) -> Option<&str> {
    label_after(key, ENGINE_LABEL_PREFIX)
}

/// What follows `prefix` (matched in any case) in `key`, when not empty.
fn label_after<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let head = key.get(..prefix.len())?;
    let label = &key[prefix.len()..];
    (head.eq_ignore_ascii_case(prefix) && !label.is_empty()).then_some(label)
}

/// swarmkit's key pattern: `^[a-z_][a-z0-9\-_.]+$`, any case.
fn is_constraint_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// swarmkit's value pattern: letters, digits, whitespace and `:-_.*()?+[]\^$|/`.
fn is_constraint_value(value: &str) -> bool {
    value.chars().all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || ":-_.*()?+[]\\^$|/".contains(c))
}

/// An IP address, or a CIDR subnet as (network, prefix length).
fn ip_or_subnet(text: &str) -> Option<(std::net::IpAddr, Option<u8>)> {
    match text.split_once('/') {
        None => text.parse().ok().map(|ip| (ip, None)),
        Some((ip, bits)) => {
            let ip: std::net::IpAddr = ip.parse().ok()?;
            let bits: u8 = bits.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (bits <= max).then_some((ip, Some(bits)))
        }
    }
}

/// Whether `ip` is in `net`/`bits` (IPv4 in IPv6 compared as IPv4, as Go does).
fn in_subnet(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u8) -> bool {
    use std::net::IpAddr;
    match (ip.to_canonical(), net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Constraint {
    /// Parses `key == value` or `key != value`, as swarmkit's
    /// `constraint.Parse` does (`==` looked for first; key and value
    /// patterns), then refuses what stackd cannot match: an unknown key
    /// (swarmkit would never place the task), a `node.ip` that is not an
    /// address or a subnet, a `node.role` that no node has.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (key, op, value) = if let Some((k, v)) = text.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = text.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(format!("{text:?} must be `key == value` or `key != value`"));
        };
        let (key, value) = (key.trim(), value.trim());
        if !is_constraint_key(key) {
            return Err(format!("key {key:?} is invalid: use letters, digits, - _ and ."));
        }
        if value.is_empty() {
            return Err(format!("constraint {text:?} has no value"));
        }
        if !is_constraint_value(value) {
            return Err(format!(
                "value {value:?} is invalid: use letters, digits, spaces and - _ . : / * ( ) ? + [ ] \\ ^ $ |"
            ));
        }
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "node.id" | "node.hostname" | "node.platform.os" => {}
            "node.role" if value.eq_ignore_ascii_case("manager") || value.eq_ignore_ascii_case("worker") => {}
            "node.role" => return Err(format!("node.role is manager or worker, not {value:?}")),
            "node.ip" if ip_or_subnet(value).is_some() => {}
            "node.ip" => return Err(format!("node.ip takes an IP address or a CIDR subnet, got {value:?}")),
            "node.platform.arch" => {}
            _ if node_label(key).is_some() || engine_label(key).is_some() => {}
            _ => {
                return Err(format!(
                    "unknown constraint key {key:?}: use node.id, node.hostname, node.role, node.ip, node.platform.os, \
                     node.platform.arch, node.labels.<label> or engine.labels.<label>"
                ));
            }
        }
        Ok(Self { key: key.to_string(), op, value: value.to_string() })
    }

    /// Whether `node` satisfies the constraint, as swarmkit's
    /// `constraint.NodeMatches`: values compared in any case, a missing
    /// label is the empty value, `node.ip` against the node's address (a node
    /// without one is equal to no address and in no subnet); a key stackd
    /// does not know holds nowhere.
    pub fn matches(&self, node: &Node) -> bool {
        let eq = self.op == ConstraintOp::Eq;
        let have = match self.key.to_ascii_lowercase().as_str() {
            "node.id" => node.id.as_str(),
            "node.hostname" => node.name.as_str(),
            "node.role" => node.role.as_str(),
            // Agents run on Linux only (and before its agent reports, a node's OS is not known).
            "node.platform.os" => {
                if node.engine.os.is_empty() {
                    "linux"
                } else {
                    node.engine.os.as_str()
                }
            }
            // Empty until the node's agent reported it: equal to no architecture.
            "node.platform.arch" => node.engine.arch.as_str(),
            "node.ip" => {
                let addr =
                    node.addr.parse::<std::net::SocketAddr>().map(|a| a.ip()).ok().or_else(|| node.addr.parse().ok());
                let within = match (addr, ip_or_subnet(&self.value)) {
                    (Some(ip), Some((want, None))) => ip.to_canonical() == want.to_canonical(),
                    (Some(ip), Some((net, Some(bits)))) => in_subnet(ip, net, bits),
                    (None, Some(_)) => false,
                    (_, None) => return false,
                };
                return within == eq;
            }
            _ => match (node_label(&self.key), engine_label(&self.key)) {
                (Some(label), _) => node.labels.get(label).map_or("", String::as_str),
                (None, Some(label)) => node.engine.labels.get(label).map_or("", String::as_str),
                (None, None) => return false,
            },
        };
        have.eq_ignore_ascii_case(&self.value) == eq
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{} {op} {}", self.key, self.value)
    }
}

/// Where a service's tasks may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Every constraint must hold on the node.
    pub constraints: Vec<Constraint>,
    /// Spread tasks evenly over the values of these node keys
    /// (`node.labels.zone`), in order.
    pub preferences: Vec<String>,
    /// At most this many tasks of the service per node (0: no limit).
    pub max_replicas_per_node: u64,
}

/// CPU, memory and process limits of one task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// CPU in billionths of a core (0: no limit).
    pub nano_cpus: u64,
    /// Memory in bytes (0: no limit).
    pub memory_bytes: u64,
    /// Processes (0: no limit).
    pub pids: u64,
}

/// Limits (enforced by the engine) and reservations (counted by the scheduler).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Upper bounds.
    pub limits: ResourceLimits,
    /// What the scheduler sets aside on the node.
    pub reservations: Resources,
}

/// A soft and hard resource limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Where a container's logs go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    /// Docker log driver (`json-file`, `journald`, `local`, …).
    pub driver: String,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// When a failed or exited task is replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never.
    None,
    /// When it failed (non-zero exit, rejected, lost).
    OnFailure,
    /// Whenever it stopped.
    #[default]
    Any,
}

/// The restart policy of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub condition: RestartCondition,
    /// Delay between the end of a task and its replacement.
    pub delay_ms: u64,
    /// Restarts allowed within `window_ms` (0: unlimited).
    pub max_attempts: u64,
    /// Window for `max_attempts` (0: the whole life of the service).
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self { condition: RestartCondition::Any, delay_ms: 5_000, max_attempts: 0, window_ms: 0 }
    }
}

/// What to do when an update fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop the update where it is.
    #[default]
    Pause,
    /// Keep going.
    Continue,
    /// Go back to the previous revision.
    Rollback,
}

/// Order of replacing a task during an update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one.
    #[default]
    StopFirst,
    /// Start the new task, then stop the old one.
    StartFirst,
}

/// How a service rolls from one revision to the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Slots updated at a time (0: all at once).
    pub parallelism: u64,
    /// Delay between two batches.
    pub delay_ms: u64,
    /// How long a new task is watched for failure after it starts.
    pub monitor_ms: u64,
    /// What to do on failure.
    pub failure_action: FailureAction,
    /// Failures tolerated, as a ratio of the slots updated.
    pub max_failure_ratio: f64,
    /// Stop-first or start-first.
    pub order: UpdateOrder,
}

impl Eq for UpdateConfig {}

impl UpdateConfig {
    /// Swarm's defaults for rolling back: parallelism 1, delay 0, monitor 5 s,
    /// failure_action pause, max_failure_ratio 0, stop-first (the same values
    /// as the update defaults).
    pub fn rollback_default() -> Self {
        Self::default()
    }
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay_ms: 0,
            monitor_ms: 5_000,
            failure_action: FailureAction::Pause,
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// A service as the user declares it in a stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Name inside the stack (`web`); the service's full name is `<stack>_<name>`.
    pub name: String,
    /// Replicated, global, or one of the job modes.
    pub mode: ServiceMode,
    /// What each task runs.
    pub task: TaskTemplate,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Update policy.
    pub update: UpdateConfig,
    /// Rollback policy: how a rollback rolls (its `failure_action` is pause
    /// or continue, never rollback).
    #[serde(default = "UpdateConfig::rollback_default")]
    pub rollback: UpdateConfig,
    /// Service labels (`deploy.labels`).
    pub labels: BTreeMap<String, String>,
    /// How other services reach this one (recorded; used once service
    /// discovery exists).
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// The services of the stack this one waits for before its first start
    /// (`depends_on`), sorted by name. Not part of the task template:
    /// changing it alone makes a new revision and replaces no task. Left out
    /// of the encoding while empty, so specs written before it encode as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// The autoscaling policy (`x-stackd-autoscale`): the leader sets the
    /// replicas within its bounds from the measured load; `replicas` is
    /// the starting point. Replicated services only. Left out of the
    /// encoding while absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::autoscale::Policy>,
}

impl ServiceSpec {
    /// What a deploy of `self` makes of a service whose spec is `current`:
    /// it keeps the force counter (as `docker stack deploy` does) and, when
    /// both are autoscaled, the replica count the autoscaler set, within
    /// the new policy's bounds, so that a deploy during a storm does not
    /// reset it (and a deploy of the same file is no change).
    pub fn as_deployed_over(&self, current: &ServiceSpec) -> ServiceSpec {
        let mut spec = self.clone();
        spec.task.force_update = current.task.force_update;
        if let (Some(policy), Some(_), ServiceMode::Replicated { replicas: now }, ServiceMode::Replicated { .. }) =
            (&spec.autoscale, &current.autoscale, &current.mode, &spec.mode)
        {
            spec.mode = ServiceMode::Replicated { replicas: policy.clamp(*now) };
        }
        spec
    }
}

/// What a service waits for of a service it depends on (compose's
/// `depends_on` conditions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// Every wanted slot of the dependency has a running task.
    #[default]
    ServiceStarted,
    /// Every wanted slot of the dependency has a running task that is up
    /// ([`Task::is_up`]: healthy, or running without a health check).
    ServiceHealthy,
    /// The dependency ran to completion: a job whose run of its current
    /// revision completed, or a service each of whose wanted slots' newest
    /// task exited 0.
    ServiceCompletedSuccessfully,
}

impl DependencyCondition {
    /// The name used in stack files: `service_started`, `service_healthy`
    /// or `service_completed_successfully`.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::ServiceStarted => "service_started",
            DependencyCondition::ServiceHealthy => "service_healthy",
            DependencyCondition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// One entry of a service's `depends_on`: it does not start for the first
/// time until `service` meets `condition` (see the orchestrator's start order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The service depended on, by its name in the stack (`db`, not
    /// `shop_db`): a stack's services depend only on services of the same stack.
    pub service: String,
    /// What it must reach.
    pub condition: DependencyCondition,
    /// When false, a dependency that is absent or failed does not hold the
    /// service back (compose's `required: false`); one on its way still does.
    pub required: bool,
}

/// A named volume declared by a stack.
///
/// The agent creates it on a node, with its driver, options and labels,
/// before the first task there that mounts it; one that exists with another
/// driver or other options is an error on the task. An external volume must
/// exist already and is never created. stackd never removes a volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Name on the engine (`<stack>_<key>` unless `external` or named).
    pub name: String,
    /// The volume exists already and is not managed by stackd.
    pub external: bool,
    /// Volume driver (`None`: Docker's `local`).
    pub driver: Option<String>,
    /// Volume labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options (`type: nfs`, `o: addr=…`, `device: :/export`).
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
}

/// A volume that tasks of a node mount, as the dispatcher sends it to the
/// node's agent: the stack that declares it, its key there and its spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackVolume {
    /// The stack that declares the volume.
    pub stack: String,
    /// Its key in the stack's `volumes:` section.
    pub key: String,
    /// Its spec.
    pub spec: VolumeSpec,
}

/// A network declared by a stack (or the implicit `default` one).
///
/// stackd creates it on a node, as a local bridge network, when a task
/// there first needs it, and removes it when no task of the node uses it any
/// more; an external network must exist already and is never created nor
/// removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Name on the engine (`<stack>_<key>` unless `external` or named).
    pub name: String,
    /// The network exists already and is not managed by stackd.
    #[serde(default)]
    pub external: bool,
    /// Driver as written (`None`: bridge). `bridge` and `overlay` both
    /// become a local bridge network; other drivers are passed to Docker.
    #[serde(default)]
    pub driver: Option<String>,
    /// No route out of the network.
    #[serde(default)]
    pub internal: bool,
    /// Network labels (besides the `io.stackd.*` ones the agent adds).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options, passed to Docker.
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
}

/// A network that tasks of a node attach to, as the dispatcher sends it to
/// the node's agent: the stack that declares it, its key there and its spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackNetwork {
    /// The stack that declares the network.
    pub stack: String,
    /// Its key in the stack's `networks:` section (`default` for the implicit one).
    pub key: String,
    /// Its spec.
    pub spec: NetworkSpec,
}

/// A stack as the user declares it: the normalised result of the loader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Stack name.
    pub name: String,
    /// Services by short name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Named volumes by key.
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Configs by key.
    #[serde(default)]
    pub configs: BTreeMap<String, ObjectSpec>,
    /// Secrets by key.
    #[serde(default)]
    pub secrets: BTreeMap<String, ObjectSpec>,
    /// Networks by key: the declared ones, and `default` when a service
    /// joins it (every service without `networks:` does).
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
}

// ---------------------------------------------------------------- runtime objects

/// Configs or secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// A config: a file, printed freely.
    Config,
    /// A secret: a file on a tmpfs, never printed.
    Secret,
}

impl DataKind {
    /// `config` or `secret`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Config => "config",
            DataKind::Secret => "secret",
        }
    }
}

/// A config or secret as stored in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Name in the cluster.
    pub name: String,
    /// The stack that manages it; empty for one created with `stackctl secret|config create`.
    pub stack: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Digest of the current content.
    pub current: String,
    /// Contents by digest: the current one, and older ones that a kept
    /// revision of a service still refers to (for rollback).
    pub versions: BTreeMap<String, Blob>,
    /// When created.
    pub created_at: Timestamp,
    /// When its content last changed.
    pub updated_at: Timestamp,
}

impl StoredObject {
    /// The content a [`FileRef`] with `digest` gets (empty: the current one).
    pub fn content(&self, digest: &str) -> Option<&Blob> {
        self.versions.get(if digest.is_empty() { self.current.as_str() } else { digest })
    }
}

/// A stack as stored in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Stack name.
    pub name: String,
    /// Named volumes.
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Networks by key.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Registry credentials sent with a deploy (`--with-registry-auth`),
    /// for the agents that run the stack's tasks to pull its images; kept
    /// by a deploy without the flag, replaced by one with it. Like a
    /// secret: no read API returns them and `Debug` hides them.
    #[serde(default, skip_serializing_if = "crate::registry::RegistryAuth::is_empty")]
    pub registry_auth: crate::registry::RegistryAuth,
    /// When first deployed.
    pub created_at: Timestamp,
    /// When last deployed.
    pub updated_at: Timestamp,
}

/// Progress of the rollout of a service's latest revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Nothing to roll out.
    #[default]
    Completed,
    /// Rolling out.
    Updating,
    /// Stopped after a failure (failure_action pause).
    Paused,
    /// Going back to the previous revision.
    RollingBack,
    /// Went back to the previous revision after a failure.
    RolledBack,
    /// A job that cannot complete: a task failed and its restart policy
    /// gives up (max_attempts reached, or condition none).
    Failed,
}

/// The rollout status of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Where the rollout is.
    pub state: UpdateState,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended (0 while running).
    pub completed_at: Timestamp,
    /// Why it paused or rolled back.
    pub message: String,
}

/// What a revision's image tag meant when it was deployed: resolved once
/// per revision, before any of its tasks is created, so that every replica,
/// every restart and a rollback run exactly the same image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImagePin {
    /// Not resolved yet: the revision's tasks wait while the nodes' agents
    /// ask their engines (which ask the registry).
    Pending,
    /// The registry's digest: tasks run `reference` (`repo@sha256:…`).
    Digest {
        /// The reference the tasks run.
        reference: String,
    },
    /// No registry digest (an image built or loaded locally, a registry
    /// that did not answer): tasks run the tag.
    Tag {
        /// Why, in words.
        reason: String,
    },
}

impl ImagePin {
    /// The reason of [`ImagePin::unrecorded`].
    pub const UNRECORDED: &'static str = "deployed before stackd recorded image digests";

    /// The pin of a revision stored before images were pinned (left out of
    /// the encoding, so that such a state is written back as it was read).
    pub fn unrecorded() -> ImagePin {
        ImagePin::Tag { reason: Self::UNRECORDED.into() }
    }

    /// Whether it is [`ImagePin::unrecorded`].
    pub fn is_unrecorded(&self) -> bool {
        matches!(self, ImagePin::Tag { reason } if reason == Self::UNRECORDED)
    }

    /// The pin an image reference needs: one that names a digest already
    /// is pinned as written; a tag waits for the agents.
    pub fn for_image(image: &str) -> ImagePin {
        if image.contains("@sha256:") { ImagePin::Digest { reference: image.to_string() } } else { ImagePin::Pending }
    }

    /// The reference tasks run: the digest's, or the tag (`image`).
    pub fn reference<'a>(&'a self, image: &'a str) -> &'a str {
        match self {
            ImagePin::Digest { reference } => reference,
            ImagePin::Pending | ImagePin::Tag { .. } => image,
        }
    }

    /// Whether it waits for the agents.
    pub fn is_pending(&self) -> bool {
        matches!(self, ImagePin::Pending)
    }
}

/// A past revision of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Revision number.
    pub revision: u64,
    /// The spec at that revision.
    pub spec: ServiceSpec,
    /// When it was deployed.
    pub deployed_at: Timestamp,
    /// What its image tag meant.
    #[serde(default = "ImagePin::unrecorded", skip_serializing_if = "ImagePin::is_unrecorded")]
    pub image: ImagePin,
    /// How its rollout stood when the next revision replaced it (`None`:
    /// not recorded, for revisions kept before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<UpdateStatus>,
}

impl Revision {
    /// Whether its rollout ended with every replica running and healthy
    /// (`completed`, or `rolled_back` to it): what an automatic rollback
    /// goes back to.
    pub fn was_healthy(&self) -> bool {
        self.rollout.as_ref().is_some_and(|u| matches!(u.state, UpdateState::Completed | UpdateState::RolledBack))
    }
}

impl ServiceSpec {
    /// A replicated service of `replicas` running `task`, with compose's
    /// defaults for the rest (what the loader starts from).
    pub fn replicated(name: &str, replicas: u64, task: TaskTemplate) -> ServiceSpec {
        ServiceSpec {
            autoscale: None,
            name: name.to_string(),
            mode: ServiceMode::Replicated { replicas },
            task,
            restart: RestartPolicy::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::rollback_default(),
            labels: BTreeMap::new(),
            endpoint_mode: EndpointMode::Vip,
            depends_on: Vec::new(),
        }
    }
}

/// A service as stored in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Identifier.
    pub id: ServiceId,
    /// Stack it belongs to.
    pub stack: String,
    /// Full name: `<stack>_<spec.name>`.
    pub name: String,
    /// Current desired spec.
    pub spec: ServiceSpec,
    /// Current revision (starts at 1).
    pub revision: u64,
    /// Earlier revisions, oldest first, at most [`REVISIONS_KEPT`].
    pub history: Vec<Revision>,
    /// Rollout status of the current revision.
    pub update: UpdateStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last spec change.
    pub updated_at: Timestamp,
    /// What the current revision's image tag means.
    #[serde(default = "ImagePin::unrecorded", skip_serializing_if = "ImagePin::is_unrecorded")]
    pub image: ImagePin,
    /// Its tasks that failed (exited non-zero, or were rejected by their
    /// node) since the service was created: each one a restart of its
    /// slot. Counted as the state applies the reports, the same on every
    /// manager; left out of the encoding while 0.
    #[serde(default, skip_serializing_if = "crate::model::is_zero_u64")]
    pub task_failures: u64,
    /// A rebalance under way (`stackctl service rebalance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<Rebalance>,
    /// What the autoscaler last measured and decided, for an autoscaled
    /// service; left out of the encoding while absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleStatus>,
}

/// The autoscaler's decisions a service keeps (`service inspect`).
pub const AUTOSCALE_DECISIONS_KEPT: usize = 10;

/// What the autoscaler last measured and decided (`service inspect`),
/// written by the leader when the count changes, when why it holds
/// changes, and at least every minute while it measures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscaleStatus {
    /// When the last measurement was recorded.
    pub measured_at: Timestamp,
    /// The measured average per replica in thousandths of the target's
    /// unit (70 000 for 70 % CPU); `None` while nothing is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_milli: Option<u64>,
    /// The last decisions, oldest first, at most [`AUTOSCALE_DECISIONS_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<AutoscaleDecision>,
}

/// One decision of the autoscaler, as replicated: a change of the replica
/// count, or a change of why it holds (metrics missing, back, a rollout).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscaleDecision {
    /// When it was made.
    pub at: Timestamp,
    /// The replicas before.
    pub from: u64,
    /// The replicas after.
    pub to: u64,
    /// Why, as a sentence (`1 → 3: 190% CPU against a target of 70% asks for 3`).
    pub reason: String,
}

impl Service {
    /// A new service of stack `stack` at revision 1, created at `at`: its
    /// first rollout under way, its image tag not resolved yet.
    pub fn new(id: ServiceId, stack: &str, spec: ServiceSpec, at: Timestamp) -> Service {
        Service {
            id,
            stack: stack.to_string(),
            name: format!("{stack}_{}", spec.name),
            image: ImagePin::for_image(&spec.task.image),
            spec,
            revision: 1,
            history: Vec::new(),
            update: UpdateStatus { state: UpdateState::Updating, started_at: at, ..Default::default() },
            created_at: at,
            updated_at: at,
            task_failures: 0,
            rebalance: None,
            autoscale: None,
        }
    }
}

/// A rebalance of a replicated service: tasks move, by the update policy's
/// parallelism and order, from the nodes that run the most of them until
/// the spread over the eligible nodes is even. Each keeps serving until its
/// replacement runs elsewhere (healthy, for start-first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// When it was asked for.
    pub started_at: Timestamp,
    /// The tasks moving now.
    #[serde(default)]
    pub moving: std::collections::BTreeSet<TaskId>,
    /// How many have moved.
    #[serde(default)]
    pub moved: u64,
    /// When the last move ended (its task stopped): the update policy's
    /// `delay` counts from it.
    #[serde(default)]
    pub last_moved_at: Timestamp,
}

/// The lifecycle of a task. Observed states only move forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Created by an orchestrator.
    #[default]
    New,
    /// Waiting for the scheduler to find a node.
    Pending,
    /// Assigned to a node, not yet picked up by its agent.
    Assigned,
    /// The agent is pulling the image / creating the container.
    Preparing,
    /// The container is starting.
    Starting,
    /// The container runs.
    Running,
    /// The container exited with code 0.
    Complete,
    /// The container was stopped on request.
    Shutdown,
    /// The container exited non-zero or could not run.
    Failed,
    /// The agent could not prepare the task (image missing, bad spec).
    Rejected,
    /// The node was lost with the task on it.
    Orphaned,
}

impl TaskState {
    /// Every state, in order.
    pub const ALL: [TaskState; 11] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Orphaned,
    ];

    /// Terminal states: the container is not running and never will again.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the cluster wants of a task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Run it.
    #[default]
    Running,
    /// Stop it (its container is kept as history).
    Shutdown,
}

/// The observed status of a task, as the agent reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// State.
    pub state: TaskState,
    /// When the state was reached.
    pub timestamp: Timestamp,
    /// Short human message ("started", "pulling image", …).
    pub message: String,
    /// Error, if the task failed or was rejected.
    pub err: String,
    /// Docker container id, once created.
    pub container_id: String,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Health as reported by Docker (`healthy`, `unhealthy`, `starting`), if a health check runs.
    pub health: String,
}

/// One scheduled instance of a service: one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Identifier.
    pub id: TaskId,
    /// Service it belongs to.
    pub service_id: ServiceId,
    /// Full service name (`<stack>_<service>`).
    pub service_name: String,
    /// Stack name.
    pub stack: String,
    /// Replica slot (1..replicas); 0 for global tasks, whose slot is their node.
    pub slot: u64,
    /// The node it runs on, once scheduled.
    pub node_id: Option<NodeId>,
    /// The service revision it was created from.
    pub revision: u64,
    /// What it runs. Left out where a snapshot encodes the templates once
    /// for all the tasks that share them ([`crate::state::with_shared_templates`]).
    #[serde(default, skip_serializing_if = "crate::state::templates_shared")]
    pub template: TaskTemplate,
    /// What the cluster wants.
    pub desired_state: DesiredState,
    /// What was observed.
    pub status: TaskStatus,
    /// Why the scheduler could not place it, while pending.
    pub unplaceable: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Its container's address on each network stackd manages (by engine
    /// name), chosen in the state when the task is assigned to its node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, std::net::Ipv4Addr>,
    /// The image reference its container runs: its revision's pinned digest
    /// (`repo@sha256:…`), or empty for the template's tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}

impl Task {
    /// The image reference its container runs: the pinned digest, or the tag.
    pub fn run_image(&self) -> &str {
        if self.image.is_empty() { &self.template.image } else { &self.image }
    }

    /// Whether the task still counts as occupying its slot: it is wanted, or
    /// it is being stopped but has not stopped yet.
    pub fn occupies_slot(&self) -> bool {
        !self.is_orphaned() && (self.desired_state == DesiredState::Running || !self.status.state.is_terminal())
    }

    /// Whether the task was lost with its node (declared down). It keeps its
    /// slot's claim until a replacement runs: if the node comes back first
    /// with the container still running, the task is taken back and the
    /// replacement dropped.
    pub fn is_orphaned(&self) -> bool {
        self.status.state == TaskState::Orphaned
    }

    /// Whether the task is up: running, and healthy if it has a health check
    /// (its own or the image's). A task whose health check has not passed yet
    /// (`starting`) or failed is not up: a rollout does not count it, its
    /// monitor period has not started, and `deploy --wait` waits for it.
    pub fn is_up(&self) -> bool {
        self.status.state == TaskState::Running && !matches!(self.status.health.as_str(), "starting" | "unhealthy")
    }

    /// The Docker container name: `<stack>_<service>.<slot>.<task-id-prefix>`
    /// (`<stack>_<service>.<node-id-prefix>.<task-id-prefix>` for global tasks).
    pub fn container_name(&self) -> String {
        let slot = if self.slot == 0 {
            self.node_id.as_deref().map(|n| prefix(n, 12)).unwrap_or("0").to_string()
        } else {
            self.slot.to_string()
        };
        format!("{}.{}.{}", self.service_name, slot, prefix(&self.id, 12))
    }
}

/// At most `n` leading bytes of an ASCII id.
pub fn prefix(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

/// A time in ms since the Unix epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
}

/// When a node pulls a task's image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// When the image is not on the node (compose's `missing`, `if_not_present`).
    #[default]
    Missing,
    /// Before every task: the registry's current image for the tag (or the
    /// revision's pinned digest); a failed pull fails the task.
    Always,
    /// Never: the image must be on the node, else the task is rejected.
    Never,
}

impl PullPolicy {
    /// The default (left out of encodings).
    pub fn is_missing(&self) -> bool {
        *self == PullPolicy::Missing
    }

    /// Its name in compose files and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }

    /// Reads a compose `pull_policy` value, or says why it is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "missing" | "if_not_present" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            "build" => Err("`build` is not supported: stackd does not build images; build and push the image, \
                            then use `always` or `missing`"
                .into()),
            t if t == "daily" || t == "weekly" || t == "refresh" || t.starts_with("every_") => Err(format!(
                "`{t}` (a refresh period) is not supported: use `always` to pull before every task, or `missing`"
            )),
            t => Err(format!("must be one of `always`, `missing`, `never` (or `if_not_present`), got `{t}`")),
        }
    }
}

/// Whether a counter is 0 (left out of the encoding, so that states from
/// before it hash as they did).
pub(crate) fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_630_530_123), "2026-12-07T08:02:10.123Z");
    }

    #[test]
    fn digest_is_lower_case_hex_sha256() {
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(digest(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    /// Raft logs and snapshots written before networks existed still decode:
    /// no networks, and tasks on Docker's default bridge as before.
    #[test]
    fn records_written_before_networks_still_decode() {
        let template = r#"{"image":"web:1","command":null,"entrypoint":null,"env":[],"labels":{},"mounts":[],
            "ports":[],"working_dir":null,"user":null,"hostname":null,"healthcheck":null,
            "stop_grace_period_ms":10000,"stop_signal":null,"init":null,"read_only":false}"#;
        let t: TaskTemplate = serde_json::from_str(template).expect("an old template decodes");
        assert!(t.networks.is_empty());
        let spec: StackSpec =
            serde_json::from_str(r#"{"name":"shop","services":{},"volumes":{}}"#).expect("an old spec decodes");
        assert!(spec.networks.is_empty());
        let stack: Stack = serde_json::from_str(r#"{"name":"shop","volumes":{},"created_at":1,"updated_at":2}"#)
            .expect("an old stack decodes");
        assert!(stack.networks.is_empty());
        let n: NetworkSpec = serde_json::from_str(r#"{"name":"shop_back"}"#).expect("a minimal network decodes");
        assert_eq!(n, NetworkSpec { name: "shop_back".into(), ..NetworkSpec::default() });
        let a: NetworkAttachment = serde_json::from_str(r#"{"network":"shop_back"}"#).expect("decodes");
        assert!(a.aliases.is_empty());
    }

    /// A service spec as stackd wrote it before jobs, `rollback` and
    /// `endpoint_mode` existed: Raft logs and snapshots hold such JSON.
    const OLD_SPEC: &str = r#"{"name":"web","mode":{"kind":"replicated","replicas":3},
        "task":{"image":"web:1","command":null,"entrypoint":null,"env":[],"labels":{},"mounts":[],"ports":[],
        "working_dir":null,"user":null,"hostname":null,"healthcheck":null,"stop_grace_period_ms":10000,
        "stop_signal":null,"init":null,"read_only":false},
        "restart":{"condition":"any","delay_ms":5000,"max_attempts":0,"window_ms":0},
        "update":{"parallelism":2,"delay_ms":0,"monitor_ms":5000,"failure_action":"rollback","max_failure_ratio":0.0,"order":"start-first"},
        "labels":{}}"#;

    #[test]
    fn specs_written_before_jobs_still_decode_with_the_defaults() {
        let spec: ServiceSpec = serde_json::from_str(OLD_SPEC).expect("an old spec decodes");
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(spec.update.parallelism, 2);
        assert_eq!(spec.rollback, UpdateConfig::rollback_default());
        assert_eq!(spec.endpoint_mode, EndpointMode::Vip);
        let global: ServiceMode = serde_json::from_str(r#"{"kind":"global"}"#).expect("global");
        assert_eq!(global, ServiceMode::Global);
    }

    #[test]
    fn modes_and_new_fields_have_stable_json_names() {
        let job = ServiceMode::ReplicatedJob { replicas: 3, max_concurrent: 0 };
        assert_eq!(
            serde_json::to_value(&job).expect("json"),
            serde_json::json!({ "kind": "replicated-job", "replicas": 3, "max_concurrent": 0 })
        );
        // max_concurrent may be left out.
        let read: ServiceMode = serde_json::from_str(r#"{"kind":"replicated-job","replicas":3}"#).expect("job");
        assert_eq!(read, job);
        assert_eq!(
            serde_json::to_value(ServiceMode::GlobalJob).expect("json"),
            serde_json::json!({ "kind": "global-job" })
        );
        assert_eq!(serde_json::to_value(EndpointMode::Dnsrr).expect("json"), "dnsrr");
        assert_eq!(serde_json::to_value(UpdateState::Failed).expect("json"), "failed");
        for (mode, name) in [
            (ServiceMode::Replicated { replicas: 1 }, "replicated"),
            (ServiceMode::Global, "global"),
            (job, "replicated-job"),
            (ServiceMode::GlobalJob, "global-job"),
        ] {
            assert_eq!(mode.name(), name);
            assert_eq!(serde_json::to_value(&mode).expect("json")["kind"], name);
            assert_eq!(mode.is_job(), name.ends_with("-job"));
        }
    }
}
