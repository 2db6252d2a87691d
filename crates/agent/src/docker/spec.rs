//! Building a container's create request from a task: labels, name, mounts,
//! ports, health check, networks and aliases; a network's create request,
//! which networks stackd may remove, and which of two networks of the same
//! name is kept; a volume's create request, and whether a volume that exists
//! is the one the stack declares. Pure: no I/O, unit-tested without Docker.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Ipam,
    IpamConfig, Mount as DockerMount, MountTmpfsOptions, MountType, NetworkCreateRequest, NetworkingConfig,
    PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use stackd_core::model::{
    HealthCheck, Mount, MountKind, NetworkAttachment, PortConfig, PublishMode, StackNetwork, StackVolume, Task,
    VolumeSpec,
};
use stackd_core::validate::RESERVED_NETWORKS;

use super::ContainerContext;

/// Label: the cluster id.
pub const LABEL_CLUSTER: &str = "io.stackd.cluster";
/// Label: the id of the node whose agent manages the container.
pub const LABEL_NODE: &str = "io.stackd.node";
/// Label: the stack name.
pub const LABEL_STACK: &str = "io.stackd.stack";
/// Label: the full service name (`<stack>_<service>`).
pub const LABEL_SERVICE: &str = "io.stackd.service";
/// Label: the task id.
pub const LABEL_TASK: &str = "io.stackd.task";
/// Label: the task's slot.
pub const LABEL_SLOT: &str = "io.stackd.slot";
/// Label: the service revision the task was created from.
pub const LABEL_REVISION: &str = "io.stackd.revision";

/// Label of a network stackd created: its key in the stack.
pub const LABEL_NETWORK: &str = "io.stackd.network";

/// Label of a volume stackd created: its key in the stack.
pub const LABEL_VOLUME: &str = "io.stackd.volume";

/// Docker's own volume driver, used when the stack names none.
pub const LOCAL_VOLUME_DRIVER: &str = "local";

/// The driver of the networks stackd creates when the stack says `bridge`,
/// `overlay` or nothing: a local bridge network on each node.
pub const LOCAL_DRIVER: &str = "bridge";

/// Docker's default bridge network, which has no DNS and takes no aliases.
const DEFAULT_BRIDGE: &str = "bridge";

/// The labels stackd puts on a task's container: the template's labels,
/// then the `io.stackd.*` labels (which win over template labels of the same name).
pub fn labels(task: &Task, ctx: &ContainerContext) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        task.template.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let ours = [
        (LABEL_CLUSTER, ctx.cluster_id.clone()),
        (LABEL_NODE, ctx.node_id.clone()),
        (LABEL_STACK, task.stack.clone()),
        (LABEL_SERVICE, task.service_name.clone()),
        (LABEL_TASK, task.id.clone()),
        (LABEL_SLOT, task.slot.to_string()),
        (LABEL_REVISION, task.revision.to_string()),
    ];
    for (k, v) in ours {
        labels.insert(k.to_string(), v);
    }
    labels
}

/// Milliseconds as Docker nanoseconds, saturating.
pub(crate) fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// A grace period in milliseconds as the whole seconds Docker wants, rounded up.
pub(crate) fn grace_seconds(ms: u64) -> i64 {
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Docker's health config for a task's health check; `["NONE"]` disables the
/// image's check and carries no timings.
pub(crate) fn health_config(hc: &HealthCheck) -> HealthConfig {
    if hc.test.first().map(String::as_str) == Some("NONE") {
        return HealthConfig { test: Some(vec!["NONE".to_string()]), ..Default::default() };
    }
    HealthConfig {
        test: Some(hc.test.clone()),
        interval: Some(ms_to_ns(hc.interval_ms)),
        timeout: Some(ms_to_ns(hc.timeout_ms)),
        retries: Some(i64::try_from(hc.retries).unwrap_or(i64::MAX)),
        start_period: Some(ms_to_ns(hc.start_period_ms)),
        start_interval: Some(ms_to_ns(hc.start_interval_ms)),
    }
}

/// One mount in Docker's form.
pub(crate) fn mount(m: &Mount) -> DockerMount {
    let (typ, source) = match m.kind {
        MountKind::Volume => (MountType::VOLUME, (!m.source.is_empty()).then(|| m.source.clone())),
        MountKind::Bind => (MountType::BIND, Some(m.source.clone())),
        MountKind::Tmpfs => (MountType::TMPFS, None),
    };
    let tmpfs_options =
        (m.kind == MountKind::Tmpfs && (m.tmpfs_size_bytes > 0 || m.tmpfs_mode > 0)).then(|| MountTmpfsOptions {
            size_bytes: (m.tmpfs_size_bytes > 0).then(|| i64::try_from(m.tmpfs_size_bytes).unwrap_or(i64::MAX)),
            mode: (m.tmpfs_mode > 0).then_some(i64::from(m.tmpfs_mode)),
            ..Default::default()
        });
    DockerMount {
        target: Some(m.target.clone()),
        source,
        typ: Some(typ),
        read_only: Some(m.read_only),
        tmpfs_options,
        ..Default::default()
    }
}

/// Exposed ports (`"8080/tcp"`) and the bindings of the published ones.
/// With `mesh`, ports published through the routing mesh are not bound on
/// the node (the mesh's rules serve them on every node); without it (nodes
/// sharing one engine) every published port is bound.
pub(crate) fn ports(ports: &[PortConfig], mesh: bool) -> (Vec<String>, HashMap<String, Option<Vec<PortBinding>>>) {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in ports {
        let key = format!("{}/{}", p.target, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        if let Some(published) = p.published.filter(|_| !(mesh && p.mode == PublishMode::Ingress)) {
            let binding = PortBinding {
                host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
                host_port: Some(published.to_string()),
            };
            bindings.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(binding);
        }
    }
    (exposed, bindings)
}

/// A limit for the engine: 0 (none) is left unset.
fn positive(v: u64) -> Option<i64> {
    (v > 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// The service's short name (`web` of `shop_web`), by which the other
/// containers of its networks find it.
pub fn service_short_name(task: &Task) -> &str {
    task.service_name.strip_prefix(task.stack.as_str()).and_then(|s| s.strip_prefix('_')).unwrap_or(&task.service_name)
}

/// A container's DNS names on one network: the service's short name, then
/// the attachment's aliases, once each. Docker's own networks (the default
/// bridge, `host`, `none`) take none.
pub fn aliases(task: &Task, attachment: &NetworkAttachment) -> Vec<String> {
    if attachment.network == DEFAULT_BRIDGE || RESERVED_NETWORKS.contains(&attachment.network.as_str()) {
        return Vec::new();
    }
    let mut out = vec![service_short_name(task).to_string()];
    for a in &attachment.aliases {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// The endpoint settings of a task's container on one network: its
/// aliases, and on a network that spans nodes the address the state chose
/// and the MAC derived from it (which every node knows without asking).
pub(crate) fn endpoint(task: &Task, attachment: &NetworkAttachment, ctx: &ContainerContext) -> EndpointSettings {
    let address = task.addresses.get(&attachment.network).filter(|_| ctx.overlay_mtu.is_some());
    // On a network that spans nodes the node's DNS server answers the
    // service's names and aliases for every node: an alias would make
    // Docker's resolver answer them with the local containers only.
    let aliases = if address.is_some() { Vec::new() } else { aliases(task, attachment) };
    EndpointSettings {
        aliases: (!aliases.is_empty()).then_some(aliases),
        ipam_config: address.map(|ip| EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
        mac_address: address.map(|ip| crate::dataplane::mac_for(*ip)),
        ..Default::default()
    }
}

/// The Docker driver of a stack network: `bridge` for `bridge`, `overlay`
/// or none; any other driver as written.
pub fn network_driver(driver: Option<&str>) -> &str {
    match driver {
        None | Some("bridge" | "overlay") => LOCAL_DRIVER,
        Some(other) => other,
    }
}

/// The labels of a network stackd creates: the stack's labels for it, then
/// `io.stackd.cluster`, `io.stackd.stack` and `io.stackd.network`, which win.
pub fn network_labels(net: &StackNetwork, ctx: &ContainerContext) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = net.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(LABEL_CLUSTER.to_string(), ctx.cluster_id.clone());
    labels.insert(LABEL_STACK.to_string(), net.stack.clone());
    labels.insert(LABEL_NETWORK.to_string(), net.key.clone());
    labels
}

/// The create request of a stack network. On a network that spans nodes
/// (`view`, with the overlay on): the network's subnet, the node's gateway,
/// a bridge name stackd's VXLAN device can find, and the overlay's MTU.
pub(crate) fn network_body(
    net: &StackNetwork,
    ctx: &ContainerContext,
    view: Option<&stackd_core::net::NetView>,
) -> NetworkCreateRequest {
    let mut opts: HashMap<String, String> = net.spec.driver_opts.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut ipam = None;
    if let (Some(mtu), Some(v)) = (ctx.overlay_mtu, view) {
        opts.insert("com.docker.network.bridge.name".into(), crate::dataplane::bridge_name(v.vni));
        // A smaller MTU of the stack's own is kept.
        let own = opts.get("com.docker.network.driver.mtu").and_then(|m| m.parse::<u32>().ok());
        opts.insert("com.docker.network.driver.mtu".into(), own.map_or(mtu, |o| o.min(mtu)).to_string());
        ipam = Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(v.subnet.to_string()),
                gateway: Some(v.gateway.to_string()),
                // A container attached by hand (`docker run --network …`) gets
                // an address of the node's own slice, never another node's.
                ip_range: stackd_core::net::Subnet::new(v.gateway, stackd_core::net::SLICE_PREFIX)
                    .map(|s| s.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    NetworkCreateRequest {
        name: net.spec.name.clone(),
        driver: Some(network_driver(net.spec.driver.as_deref()).to_string()),
        internal: net.spec.internal.then_some(true),
        options: (!opts.is_empty()).then_some(opts),
        labels: Some(network_labels(net, ctx)),
        ipam,
        ..Default::default()
    }
}

/// Whether a network with these labels was created by stackd for this
/// cluster (only those are ever removed).
pub fn is_ours(labels: &HashMap<String, String>, ctx: &ContainerContext) -> bool {
    labels.get(LABEL_CLUSTER) == Some(&ctx.cluster_id) && labels.contains_key(LABEL_NETWORK)
}

/// Whether a network with these labels was created by stackd (for any
/// cluster): such a network may be shared; any other one in the way of a
/// stack network is an error.
pub fn is_stackd_network(labels: &HashMap<String, String>) -> bool {
    labels.contains_key(LABEL_NETWORK)
}

/// A network as the engine lists it: what garbage collection and the
/// duplicate check look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time, RFC 3339 as Docker writes it.
    pub created: String,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Its subnets, as its IPAM configuration gives them.
    pub subnets: Vec<String>,
}

/// Whether `n`, a stackd network of the name wanted, is left over from a
/// stack removed a moment ago: its subnet is not the one the cluster gives
/// the network now (`wanted`; `None` on an engine shared by several
/// nodes, where the engine picks). A network without a subnet in its IPAM
/// configuration is taken as it is.
pub fn left_over(n: &NetworkInfo, wanted: Option<&str>) -> bool {
    wanted.is_some_and(|w| !n.subnets.is_empty() && !n.subnets.iter().any(|s| s == w))
}

/// The networks garbage collection may remove: this cluster's, not wanted
/// by any task of the node (their containers are gone or stopped; Docker
/// itself refuses to remove a network a running container uses).
pub fn unused_networks<'a>(
    networks: &'a [NetworkInfo],
    ctx: &ContainerContext,
    wanted: &BTreeSet<String>,
) -> Vec<&'a NetworkInfo> {
    networks.iter().filter(|n| is_ours(&n.labels, ctx) && !wanted.contains(&n.name)).collect()
}

/// A creation time as a sortable key: the text up to the seconds, then the
/// nanoseconds (Docker drops trailing zeros of the fraction, so the text
/// alone does not sort).
fn created_key(created: &str) -> (String, u32) {
    // `YYYY-MM-DDTHH:MM:SS`, then `.fraction` if any, then the zone.
    let (head, rest) = match (created.get(..19), created.get(19..)) {
        (Some(head), Some(rest)) => (head, rest),
        _ => (created, ""),
    };
    let digits: String = rest.strip_prefix('.').unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
    let nanos = format!("{digits:0<9}").get(..9).and_then(|d| d.parse().ok()).unwrap_or(0);
    (head.to_string(), nanos)
}

/// Among networks of the same name (two agents created one each at the
/// same moment), the one everybody keeps: the oldest, then the lowest id.
pub fn keeper(same_name: &[NetworkInfo]) -> Option<&NetworkInfo> {
    same_name.iter().min_by(|a, b| (created_key(&a.created), &a.id).cmp(&(created_key(&b.created), &b.id)))
}

/// The Docker driver of a stack volume: `local` unless the stack names one.
pub fn volume_driver(driver: Option<&str>) -> &str {
    match driver {
        None | Some("") => LOCAL_VOLUME_DRIVER,
        Some(d) => d,
    }
}

/// A driver name as the engine reports it: a plugin installed as
/// `vieux/sshfs` is listed as `vieux/sshfs:latest`.
fn same_driver(a: &str, b: &str) -> bool {
    let plain = |d: &str| d.strip_suffix(":latest").unwrap_or(d).to_string();
    plain(a) == plain(b)
}

/// The labels of a volume stackd creates: the stack's labels for it, then
/// `io.stackd.cluster`, `io.stackd.stack` and `io.stackd.volume`, which win.
pub fn volume_labels(vol: &StackVolume, ctx: &ContainerContext) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = vol.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(LABEL_CLUSTER.to_string(), ctx.cluster_id.clone());
    labels.insert(LABEL_STACK.to_string(), vol.stack.clone());
    labels.insert(LABEL_VOLUME.to_string(), vol.key.clone());
    labels
}

/// The create request of a stack volume: its name, driver, options and labels.
pub(crate) fn volume_body(vol: &StackVolume, ctx: &ContainerContext) -> VolumeCreateRequest {
    let opts = &vol.spec.driver_opts;
    VolumeCreateRequest {
        name: Some(vol.spec.name.clone()),
        driver: Some(volume_driver(vol.spec.driver.as_deref()).to_string()),
        driver_opts: (!opts.is_empty()).then(|| opts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        labels: Some(volume_labels(vol, ctx)),
        ..Default::default()
    }
}

/// A volume as the engine describes it (`docker volume inspect`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Driver (`local`, or a plugin).
    pub driver: String,
    /// The driver options it was created with.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// `driver local, options {device=/srv, o=bind, type=none}`.
fn describe_volume(driver: &str, options: &BTreeMap<String, String>) -> String {
    let opts = if options.is_empty() {
        "no options".to_string()
    } else {
        let pairs: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("options {{{}}}", pairs.join(", "))
    };
    format!("driver {driver}, {opts}")
}

/// How a volume that exists differs from the one the stack declares, in
/// words, or `None` when it is the same: the same driver and exactly the
/// same driver options (what decides where its data lives). Labels do not
/// count: they change nothing about the data, and the engine keeps a
/// volume's first ones.
pub fn volume_mismatch(existing: &VolumeInfo, wanted: &VolumeSpec) -> Option<String> {
    let driver = volume_driver(wanted.driver.as_deref());
    if same_driver(&existing.driver, driver) && existing.options == wanted.driver_opts {
        return None;
    }
    Some(format!(
        "volume {} exists on this node with {}, but the stack wants {}: Docker would silently keep the old \
         settings. Move its data away and remove it (docker volume rm {}), or give the stack's volume another name",
        existing.name,
        describe_volume(&existing.driver, &existing.options),
        describe_volume(driver, &wanted.driver_opts),
        existing.name,
    ))
}

/// The create request of a task's container (its name is [`Task::container_name`]).
/// `dns`, when set, replaces the task's `dns:` servers: the node's DNS
/// server answers the stack's names and forwards the rest to them.
pub(crate) fn container_body(
    task: &Task,
    ctx: &ContainerContext,
    dns: Option<std::net::Ipv4Addr>,
) -> ContainerCreateBody {
    let t = &task.template;
    let (exposed, bindings) = ports(&t.ports, ctx.overlay_mtu.is_some());
    let mounts: Vec<DockerMount> = t.mounts.iter().map(mount).collect();
    // The first network at creation (Docker before API 1.44 takes only one);
    // the others are connected before the container starts.
    let first = t.networks.first();
    let host_config = HostConfig {
        network_mode: first.map(|a| a.network.clone()),
        mounts: (!mounts.is_empty()).then_some(mounts),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        init: t.init,
        readonly_rootfs: t.read_only.then_some(true),
        cap_add: non_empty(&t.cap_add),
        cap_drop: non_empty(&t.cap_drop),
        sysctls: (!t.sysctls.is_empty()).then(|| t.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        extra_hosts: non_empty(&t.extra_hosts),
        dns: match dns {
            Some(server) => Some(vec![server.to_string()]),
            None => non_empty(&t.dns),
        },
        dns_search: non_empty(&t.dns_search),
        ulimits: (!t.ulimits.is_empty()).then(|| {
            t.ulimits
                .iter()
                .map(|(name, u)| ResourcesUlimits { name: Some(name.clone()), soft: Some(u.soft), hard: Some(u.hard) })
                .collect()
        }),
        nano_cpus: positive(t.resources.limits.nano_cpus),
        memory: positive(t.resources.limits.memory_bytes),
        pids_limit: positive(t.resources.limits.pids),
        memory_reservation: positive(t.resources.reservations.memory_bytes),
        log_config: t.logging.as_ref().map(|l| HostConfigLogConfig {
            typ: Some(l.driver.clone()),
            config: (!l.options.is_empty()).then(|| l.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        // Its revision's pinned digest, else the tag.
        image: Some(task.run_image().to_string()),
        cmd: t.command.clone(),
        entrypoint: t.entrypoint.clone(),
        env: (!t.env.is_empty()).then(|| t.env.clone()),
        labels: Some(labels(task, ctx)),
        working_dir: t.working_dir.clone().filter(|s| !s.is_empty()),
        user: t.user.clone().filter(|s| !s.is_empty()),
        hostname: t.hostname.clone().filter(|s| !s.is_empty()),
        stop_signal: t.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_timeout: Some(grace_seconds(t.stop_grace_period_ms)),
        healthcheck: t.healthcheck.as_ref().map(health_config),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        networking_config: first.map(|a| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(a.network.clone(), endpoint(task, a, ctx))])),
        }),
        ..Default::default()
    }
}

/// Splits an image reference into the `fromImage` and `tag` of a pull; a
/// reference without tag or digest pulls `latest` (never every tag).
pub(crate) fn pull_reference(image: &str) -> (String, String) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (image[..last_slash + i].to_string(), image[last_slash + i + 1..].to_string()),
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stackd_core::model::{DesiredState, Protocol, PublishMode, TaskStatus, TaskTemplate};

    use super::*;

    fn ctx() -> ContainerContext {
        ContainerContext { cluster_id: "c1".into(), node_id: "node-1".into(), overlay_mtu: None }
    }

    fn task(template: TaskTemplate) -> Task {
        Task {
            id: "abcdefghijklmnopqrstuvwxyz".into(),
            service_id: "svc1".into(),
            service_name: "shop_web".into(),
            stack: "shop".into(),
            slot: 2,
            node_id: Some("node-1".into()),
            revision: 7,
            template,
            desired_state: DesiredState::Running,
            status: TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    #[test]
    fn labels_carry_the_stackd_labels_and_override_template_ones() {
        let template = TaskTemplate {
            labels: BTreeMap::from([
                ("team".to_string(), "a".to_string()),
                (LABEL_TASK.to_string(), "forged".to_string()),
            ]),
            ..Default::default()
        };
        let l = labels(&task(template), &ctx());
        let get = |k: &str| l.get(k).map(String::as_str);
        assert_eq!(get("team"), Some("a"));
        assert_eq!(get(LABEL_CLUSTER), Some("c1"));
        assert_eq!(get(LABEL_NODE), Some("node-1"));
        assert_eq!(get(LABEL_STACK), Some("shop"));
        assert_eq!(get(LABEL_SERVICE), Some("shop_web"));
        assert_eq!(get(LABEL_TASK), Some("abcdefghijklmnopqrstuvwxyz"));
        assert_eq!(get(LABEL_SLOT), Some("2"));
        assert_eq!(get(LABEL_REVISION), Some("7"));
        assert_eq!(l.len(), 8);
    }

    #[test]
    fn body_maps_the_template() {
        let template = TaskTemplate {
            image: "stackd-test/web:1".into(),
            command: Some(vec!["sh".into(), "-c".into(), "exit 3".into()]),
            entrypoint: Some(vec!["/bin/env".into()]),
            env: vec!["A=1".into(), "B=2".into()],
            working_dir: Some("/www".into()),
            user: Some("1000:1000".into()),
            hostname: Some(String::new()),
            stop_grace_period_ms: 1_500,
            stop_signal: Some("SIGINT".into()),
            init: Some(true),
            read_only: true,
            ..Default::default()
        };
        let b = container_body(&task(template), &ctx(), None);
        assert_eq!(b.image.as_deref(), Some("stackd-test/web:1"));
        assert_eq!(b.cmd, Some(vec!["sh".to_string(), "-c".into(), "exit 3".into()]));
        assert_eq!(b.entrypoint, Some(vec!["/bin/env".to_string()]));
        assert_eq!(b.env, Some(vec!["A=1".to_string(), "B=2".into()]));
        assert_eq!(b.working_dir.as_deref(), Some("/www"));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.hostname, None, "an empty hostname keeps Docker's default");
        assert_eq!(b.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(b.stop_timeout, Some(2), "grace is rounded up to whole seconds");
        let hc = b.host_config.unwrap_or_default();
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO),
            "the agent never lets Docker restart a container"
        );
        assert_eq!(b.healthcheck, None);
        assert_eq!(b.exposed_ports, None);
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.mounts, None);
    }

    #[test]
    fn runtime_options_reach_the_host_config() {
        use stackd_core::model::{Logging, Ulimit};
        let template = TaskTemplate {
            image: "x".into(),
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["MKNOD".into()],
            sysctls: BTreeMap::from([("net.core.somaxconn".to_string(), "1024".to_string())]),
            extra_hosts: vec!["db:10.0.0.5".into()],
            dns: vec!["10.0.0.2".into()],
            dns_search: vec!["example.internal".into()],
            ulimits: BTreeMap::from([("nofile".to_string(), Ulimit { soft: 1024, hard: 4096 })]),
            logging: Some(Logging {
                driver: "json-file".into(),
                options: BTreeMap::from([("max-size".to_string(), "10m".to_string())]),
            }),
            ..Default::default()
        };
        let hc = container_body(&task(template), &ctx(), None).host_config.unwrap_or_default();
        assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(hc.cap_drop, Some(vec!["MKNOD".to_string()]));
        assert_eq!(hc.sysctls.and_then(|m| m.get("net.core.somaxconn").cloned()), Some("1024".to_string()));
        assert_eq!(hc.extra_hosts, Some(vec!["db:10.0.0.5".to_string()]));
        assert_eq!(hc.dns, Some(vec!["10.0.0.2".to_string()]));
        assert_eq!(hc.dns_search, Some(vec!["example.internal".to_string()]));
        let u = hc.ulimits.unwrap_or_default();
        assert_eq!((u[0].name.as_deref(), u[0].soft, u[0].hard), (Some("nofile"), Some(1024), Some(4096)));
        let log = hc.log_config.unwrap_or_default();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.and_then(|m| m.get("max-size").cloned()), Some("10m".to_string()));
        // Unset options stay unset: the engine's defaults apply.
        let plain = container_body(&task(TaskTemplate { image: "x".into(), ..Default::default() }), &ctx(), None);
        let hc = plain.host_config.unwrap_or_default();
        assert!(hc.cap_add.is_none() && hc.sysctls.is_none() && hc.ulimits.is_none() && hc.log_config.is_none());
        assert!(hc.nano_cpus.is_none() && hc.memory.is_none() && hc.pids_limit.is_none());
    }

    #[test]
    fn resource_limits_reach_the_host_config() {
        use stackd_core::model::{ResourceLimits, ResourceSpec, Resources};
        let template = TaskTemplate {
            image: "x".into(),
            resources: ResourceSpec {
                limits: ResourceLimits { nano_cpus: 500_000_000, memory_bytes: 256 << 20, pids: 100 },
                reservations: Resources { nano_cpus: 0, memory_bytes: 128 << 20, ..Resources::default() },
            },
            ..Default::default()
        };
        let hc = container_body(&task(template), &ctx(), None).host_config.unwrap_or_default();
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.pids_limit, Some(100));
        assert_eq!(hc.memory_reservation, Some(128 << 20));
    }

    #[test]
    fn unset_command_keeps_the_image_defaults() {
        let b = container_body(&task(TaskTemplate { image: "x".into(), ..Default::default() }), &ctx(), None);
        assert_eq!(b.cmd, None);
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.env, None);
        assert_eq!(b.stop_signal, None);
    }

    #[test]
    fn ports_are_exposed_and_published() {
        let p = |target, published, protocol, host_ip: &str| PortConfig {
            target,
            published,
            protocol,
            mode: PublishMode::Host,
            host_ip: host_ip.into(),
            proxy_protocol: false,
        };
        let (exposed, bindings) = ports(
            &[
                p(8080, Some(18080), Protocol::Tcp, ""),
                p(8080, Some(18081), Protocol::Tcp, "127.0.0.1"),
                p(53, Some(5353), Protocol::Udp, ""),
                p(9000, None, Protocol::Tcp, ""),
            ],
            false,
        );
        assert_eq!(exposed, vec!["8080/tcp", "53/udp", "9000/tcp"]);
        assert_eq!(bindings.len(), 2);
        assert_eq!(
            bindings.get("8080/tcp"),
            Some(&Some(vec![
                PortBinding { host_ip: None, host_port: Some("18080".into()) },
                PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some("18081".into()) },
            ]))
        );
        assert_eq!(
            bindings.get("53/udp"),
            Some(&Some(vec![PortBinding { host_ip: None, host_port: Some("5353".into()) }]))
        );
        // With the routing mesh, an ingress port is exposed but not bound on the node.
        let ingress = PortConfig { mode: PublishMode::Ingress, ..p(80, Some(18080), Protocol::Tcp, "") };
        let (exposed, bindings) = ports(&[ingress.clone(), p(53, Some(5353), Protocol::Udp, "")], true);
        assert_eq!(exposed, vec!["80/tcp", "53/udp"]);
        assert_eq!(bindings.keys().collect::<Vec<_>>(), vec!["53/udp"]);
        // Without it (nodes sharing an engine), it is bound as before.
        assert_eq!(ports(&[ingress], false).1.len(), 1);
    }

    #[test]
    fn mounts_map_each_kind() {
        let m = |kind, source: &str, target: &str, read_only| Mount::new(kind, source, target, read_only);
        let v = mount(&m(MountKind::Volume, "shop_data", "/data", false));
        assert_eq!(v.typ, Some(MountType::VOLUME));
        assert_eq!(v.source.as_deref(), Some("shop_data"));
        assert_eq!(v.target.as_deref(), Some("/data"));
        assert_eq!(v.read_only, Some(false));
        let anon = mount(&m(MountKind::Volume, "", "/cache", false));
        assert_eq!(anon.source, None);
        let b = mount(&m(MountKind::Bind, "/etc/app", "/conf", true));
        assert_eq!(b.typ, Some(MountType::BIND));
        assert_eq!(b.source.as_deref(), Some("/etc/app"));
        assert_eq!(b.read_only, Some(true));
        let t = mount(&m(MountKind::Tmpfs, "", "/run", false));
        assert_eq!(t.typ, Some(MountType::TMPFS));
        assert_eq!(t.source, None);
        assert_eq!(t.tmpfs_options, None);
        let sized =
            mount(&Mount { tmpfs_size_bytes: 64 << 20, tmpfs_mode: 0o1777, ..m(MountKind::Tmpfs, "", "/t", false) });
        let options = sized.tmpfs_options.expect("tmpfs options");
        assert_eq!(options.size_bytes, Some(64 << 20));
        assert_eq!(options.mode, Some(0o1777));
    }

    #[test]
    fn healthcheck_durations_are_nanoseconds() {
        let hc = HealthCheck {
            test: vec!["CMD-SHELL".into(), "wget -q -O- localhost:8080".into()],
            interval_ms: 1_000,
            timeout_ms: 500,
            retries: 3,
            start_period_ms: 2_500,
            start_interval_ms: 0,
        };
        let c = health_config(&hc);
        assert_eq!(c.test, Some(hc.test.clone()));
        assert_eq!(c.interval, Some(1_000_000_000));
        assert_eq!(c.timeout, Some(500_000_000));
        assert_eq!(c.retries, Some(3));
        assert_eq!(c.start_period, Some(2_500_000_000));
        assert_eq!(c.start_interval, Some(0));
        assert_eq!(ms_to_ns(u64::MAX), i64::MAX);
    }

    #[test]
    fn healthcheck_none_disables() {
        let hc = HealthCheck {
            test: vec!["NONE".into()],
            interval_ms: 1_000,
            timeout_ms: 1,
            retries: 1,
            start_period_ms: 1,
            start_interval_ms: 1,
        };
        let c = health_config(&hc);
        assert_eq!(c.test, Some(vec!["NONE".to_string()]));
        assert_eq!(c.interval, None);
    }

    #[test]
    fn pull_references() {
        assert_eq!(pull_reference("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(pull_reference("stackd-test/web:1"), ("stackd-test/web".into(), "1".into()));
        assert_eq!(pull_reference("reg:5000/a/b"), ("reg:5000/a/b".into(), "latest".into()));
        assert_eq!(pull_reference("reg:5000/a/b:2"), ("reg:5000/a/b".into(), "2".into()));
        assert_eq!(pull_reference("a@sha256:00"), ("a".into(), "sha256:00".into()));
    }

    fn attach(network: &str, aliases: &[&str]) -> NetworkAttachment {
        NetworkAttachment { network: network.into(), aliases: aliases.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn the_container_joins_its_first_network_with_the_service_name_as_alias() {
        let template = TaskTemplate {
            image: "x".into(),
            networks: vec![attach("shop_back", &["api", "web", "api-v1"]), attach("shop_front", &[])],
            ..Default::default()
        };
        let b = container_body(&task(template), &ctx(), None);
        let hc = b.host_config.clone().unwrap_or_default();
        assert_eq!(hc.network_mode.as_deref(), Some("shop_back"));
        let endpoints = b.networking_config.and_then(|n| n.endpoints_config).unwrap_or_default();
        assert_eq!(endpoints.len(), 1, "the other networks are connected before start");
        assert_eq!(
            endpoints.get("shop_back").and_then(|e| e.aliases.clone()),
            Some(vec!["web".to_string(), "api".into(), "api-v1".into()])
        );
        // Without networks: Docker's default bridge, as before.
        let plain = container_body(&task(TaskTemplate { image: "x".into(), ..Default::default() }), &ctx(), None);
        assert_eq!(plain.host_config.unwrap_or_default().network_mode, None);
        assert_eq!(plain.networking_config, None);
    }

    #[test]
    fn aliases_and_short_names() {
        let t = task(TaskTemplate::default());
        assert_eq!(service_short_name(&t), "web");
        assert_eq!(aliases(&t, &attach("shop_front", &[])), vec!["web"]);
        assert_eq!(aliases(&t, &attach("bridge", &["x"])), Vec::<String>::new(), "the default bridge has no DNS");
        assert_eq!(endpoint(&t, &attach("bridge", &[]), &ctx()).aliases, None);
        assert_eq!(endpoint(&t, &attach("host", &[]), &ctx()).aliases, None, "network_mode: host takes no aliases");
        assert_eq!(endpoint(&t, &attach("none", &[]), &ctx()).aliases, None);
        let host = container_body(
            &task(TaskTemplate { image: "x".into(), networks: vec![attach("host", &[])], ..Default::default() }),
            &ctx(),
            None,
        );
        assert_eq!(host.host_config.unwrap_or_default().network_mode.as_deref(), Some("host"));
        let odd = Task { service_name: "other".into(), ..task(TaskTemplate::default()) };
        assert_eq!(service_short_name(&odd), "other");
    }

    #[test]
    fn networks_are_created_as_local_bridges_with_our_labels() {
        use stackd_core::model::NetworkSpec;
        assert_eq!(network_driver(None), "bridge");
        assert_eq!(network_driver(Some("overlay")), "bridge");
        assert_eq!(network_driver(Some("bridge")), "bridge");
        assert_eq!(network_driver(Some("macvlan")), "macvlan");
        let net = StackNetwork {
            stack: "shop".into(),
            key: "back".into(),
            spec: NetworkSpec {
                name: "shop_back".into(),
                driver: Some("overlay".into()),
                internal: true,
                labels: BTreeMap::from([("team".to_string(), "a".to_string()), (LABEL_STACK.to_string(), "x".into())]),
                driver_opts: BTreeMap::from([("com.docker.network.driver.mtu".to_string(), "1400".to_string())]),
                ..Default::default()
            },
        };
        let b = network_body(&net, &ctx(), None);
        assert_eq!(b.name, "shop_back");
        assert_eq!(b.driver.as_deref(), Some("bridge"));
        assert_eq!(b.internal, Some(true));
        assert_eq!(b.options.and_then(|o| o.get("com.docker.network.driver.mtu").cloned()).as_deref(), Some("1400"));
        let labels = b.labels.unwrap_or_default();
        let get = |k: &str| labels.get(k).map(String::as_str);
        assert_eq!(get("team"), Some("a"));
        assert_eq!(get(LABEL_CLUSTER), Some("c1"));
        assert_eq!(get(LABEL_STACK), Some("shop"), "ours win over the stack's");
        assert_eq!(get(LABEL_NETWORK), Some("back"));
        assert!(is_ours(&labels, &ctx()));
        assert!(is_stackd_network(&labels));
        // Across nodes: the cluster's subnet, the node's gateway and slice, a
        // bridge name the VXLAN device finds, the smaller of the two MTUs.
        let view = stackd_core::net::NetView {
            name: "shop_back".into(),
            stack: "shop".into(),
            key: "back".into(),
            subnet: "10.192.16.0/20".parse().expect("subnet"),
            vni: 0x10_0001,
            gateway: "10.192.16.65".parse().expect("ip"),
            internal: true,
            peers: Vec::new(),
        };
        let overlay = ContainerContext { overlay_mtu: Some(1350), ..ctx() };
        let b = network_body(&net, &overlay, Some(&view));
        let opts = b.options.unwrap_or_default();
        assert_eq!(opts.get("com.docker.network.bridge.name").map(String::as_str), Some("stk-100001"));
        assert_eq!(opts.get("com.docker.network.driver.mtu").map(String::as_str), Some("1350"));
        let ipam = b.ipam.and_then(|i| i.config).unwrap_or_default();
        assert_eq!(ipam.len(), 1);
        assert_eq!(ipam[0].subnet.as_deref(), Some("10.192.16.0/20"));
        assert_eq!(ipam[0].gateway.as_deref(), Some("10.192.16.65"));
        assert_eq!(ipam[0].ip_range.as_deref(), Some("10.192.16.64/26"));
        let plain = network_body(&StackNetwork { spec: NetworkSpec::default(), ..net }, &ctx(), None);
        assert_eq!((plain.internal, plain.options), (None, None));
    }

    #[test]
    fn a_network_with_another_subnet_than_the_clusters_is_left_over() {
        let n = NetworkInfo { subnets: vec!["10.192.0.0/20".into()], ..Default::default() };
        assert!(left_over(&n, Some("10.192.16.0/20")));
        assert!(!left_over(&n, Some("10.192.0.0/20")));
        assert!(!left_over(&n, None));
        assert!(!left_over(&NetworkInfo::default(), Some("10.192.16.0/20")));
    }

    #[test]
    fn only_this_clusters_unwanted_networks_are_collected() {
        let info = |name: &str, labels: &[(&str, &str)]| NetworkInfo {
            id: format!("id-{name}"),
            name: name.into(),
            created: String::new(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            subnets: vec![],
        };
        let networks = vec![
            info("shop_old", &[(LABEL_CLUSTER, "c1"), (LABEL_NETWORK, "old")]),
            info("shop_back", &[(LABEL_CLUSTER, "c1"), (LABEL_NETWORK, "back")]),
            info("other_old", &[(LABEL_CLUSTER, "c2"), (LABEL_NETWORK, "old")]),
            info("by_hand", &[(LABEL_CLUSTER, "c1")]),
            info("infra", &[]),
        ];
        let wanted = BTreeSet::from(["shop_back".to_string(), "infra".to_string()]);
        let names: Vec<&str> = unused_networks(&networks, &ctx(), &wanted).iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["shop_old"]);
    }

    #[test]
    fn the_oldest_of_two_networks_of_one_name_is_kept() {
        let n = |id: &str, created: &str| NetworkInfo { id: id.into(), created: created.into(), ..Default::default() };
        // Docker drops trailing zeros of the fraction: .5 is later than .4999.
        let a = n("b", "2025-01-01T10:00:00.5Z");
        let b = n("a", "2025-01-01T10:00:00.4999Z");
        assert_eq!(keeper(&[a.clone(), b.clone()]).map(|k| k.id.as_str()), Some("a"));
        let c = n("c", "2025-01-01T10:00:00.4999Z");
        assert_eq!(keeper(&[c, b.clone()]).map(|k| k.id.as_str()), Some("a"), "same time: the lowest id");
        let d = n("d", "2025-01-01T10:00:00Z");
        assert_eq!(keeper(&[a, b, d]).map(|k| k.id.as_str()), Some("d"));
        assert_eq!(keeper(&[]), None);
    }

    fn nfs_volume() -> StackVolume {
        StackVolume {
            stack: "shop".into(),
            key: "data".into(),
            spec: VolumeSpec {
                name: "shop_data".into(),
                labels: BTreeMap::from([("team".into(), "a".into()), (LABEL_VOLUME.into(), "forged".into())]),
                driver_opts: BTreeMap::from([
                    ("type".into(), "nfs".into()),
                    ("o".into(), "addr=10.0.0.5,rw".into()),
                    ("device".into(), ":/export".into()),
                ]),
                ..VolumeSpec::default()
            },
        }
    }

    #[test]
    fn a_volume_is_created_with_its_driver_options_and_labels() {
        let body = volume_body(&nfs_volume(), &ctx());
        assert_eq!(body.name.as_deref(), Some("shop_data"));
        assert_eq!(body.driver.as_deref(), Some("local"));
        let opts = body.driver_opts.expect("options");
        assert_eq!(opts.get("type").map(String::as_str), Some("nfs"));
        assert_eq!(opts.get("device").map(String::as_str), Some(":/export"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(labels.get(LABEL_VOLUME).map(String::as_str), Some("data"));
        assert_eq!(labels.get(LABEL_STACK).map(String::as_str), Some("shop"));
        assert_eq!(labels.get(LABEL_CLUSTER).map(String::as_str), Some("c1"));
        let plain =
            StackVolume { spec: VolumeSpec { name: "shop_logs".into(), ..VolumeSpec::default() }, ..nfs_volume() };
        let body = volume_body(&plain, &ctx());
        assert_eq!((body.driver.as_deref(), body.driver_opts), (Some("local"), None));
        assert_eq!(volume_driver(Some("rexray/ebs")), "rexray/ebs");
    }

    #[test]
    fn an_existing_volume_must_have_the_stacks_driver_and_options() {
        let wanted = nfs_volume().spec;
        let same = VolumeInfo {
            name: "shop_data".into(),
            driver: "local".into(),
            options: wanted.driver_opts.clone(),
            labels: BTreeMap::new(),
        };
        assert_eq!(volume_mismatch(&same, &wanted), None, "labels do not count");
        // An empty local volume where the stack wants NFS: the data would land on this disk.
        let local = VolumeInfo { options: BTreeMap::new(), ..same.clone() };
        let why = volume_mismatch(&local, &wanted).expect("a mismatch");
        assert_eq!(
            why,
            "volume shop_data exists on this node with driver local, no options, but the stack wants driver local, \
             options {device=:/export, o=addr=10.0.0.5,rw, type=nfs}: Docker would silently keep the old settings. \
             Move its data away and remove it (docker volume rm shop_data), or give the stack's volume another name"
        );
        let other_server = VolumeInfo {
            options: BTreeMap::from([
                ("type".into(), "nfs".into()),
                ("o".into(), "addr=10.0.0.6,rw".into()),
                ("device".into(), ":/export".into()),
            ]),
            ..same.clone()
        };
        assert!(volume_mismatch(&other_server, &wanted).is_some());
        let plugin = VolumeInfo { driver: "vieux/sshfs:latest".into(), ..same.clone() };
        assert!(volume_mismatch(&plugin, &wanted).is_some());
        let wanted_plugin = VolumeSpec { driver: Some("vieux/sshfs".into()), ..wanted };
        assert_eq!(volume_mismatch(&plugin, &wanted_plugin), None, "`:latest` is implied");
    }
}
