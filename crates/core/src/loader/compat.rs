//! Service keys of docker compose that `docker stack deploy` ignores, read
//! for what they mean in a cluster:
//!
//! - **Taken over** into the service, unless `deploy:` says otherwise:
//!   `restart` (→ `deploy.restart_policy`), `scale` (→ `deploy.replicas`),
//!   `cpus`, `mem_limit`, `mem_reservation`, `pids_limit` (→
//!   `deploy.resources`). Written in both places with different values, they
//!   are an error, as in compose.
//! - **Supported**: `network_mode: host` and `none` join Docker's network of
//!   that name, as an external network (Swarm's `networks: [host]`).
//! - **Refused**, because the service would run without what the key gives
//!   it: `network_mode: service:…|container:…` or another network's name, `pid`, `ipc`, `uts` and
//!   `cgroup` sharing the host's or another container's namespace, `volumes_from`, `devices`,
//!   `device_cgroup_rules`, `gpus`, `group_add`, `use_api_socket`, `provider`, and `links` with an alias.
//! - **Warned about and ignored**: `privileged: true`, `external_links`,
//!   `links` without an alias (services reach each other by name anyway).

use super::ctx::{At, Ctx};
use super::placement;
use super::yaml::{Kind, Node};
use crate::model::{NetworkAttachment, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskTemplate};
use crate::validate::{MAX_REPLICAS, MAX_RESTART_ATTEMPTS};

/// The compose-only keys of one service, read after `deploy:`.
#[derive(Default)]
pub(crate) struct Legacy<'a> {
    restart: Option<At<'a>>,
    scale: Option<At<'a>>,
    resources: Vec<At<'a>>,
}

impl<'a> Legacy<'a> {
    /// Takes the entry `e` if it is one of the keys read after `deploy:`.
    pub(crate) fn take(&mut self, e: &At<'a>) -> bool {
        match e.key {
            "restart" => self.restart = Some(e.clone()),
            "scale" => self.scale = Some(e.clone()),
            "cpus" | "mem_limit" | "mem_reservation" | "pids_limit" => self.resources.push(e.clone()),
            _ => return false,
        }
        true
    }

    /// Applies the keys to `spec` and `task`, once `deploy:` (the service's
    /// mapping `service`) has been read into them.
    pub(crate) fn apply(self, cx: &mut Ctx, service: &Node, spec: &mut ServiceSpec, task: &mut TaskTemplate) {
        let deploy = child(service, "deploy");
        if let Some(r) = self.restart.filter(|r| !r.is_null()) {
            let policy = restart(cx, &r);
            match deploy.and_then(|d| child(d, "restart_policy")) {
                Some(_) => cx.warn(&r, "ignored: deploy.restart_policy is set and is used"),
                None => {
                    if let Some(p) = policy {
                        spec.restart = p;
                    }
                }
            }
        }
        if let Some(s) = self.scale.filter(|s| !s.is_null()) {
            scale(cx, &s, deploy.and_then(|d| child(d, "replicas")), spec);
        }
        for e in self.resources.iter().filter(|e| !e.is_null()) {
            let (slot, what) = match e.key {
                "cpus" => (&mut task.resources.limits.nano_cpus, "deploy.resources.limits.cpus"),
                "mem_limit" => (&mut task.resources.limits.memory_bytes, "deploy.resources.limits.memory"),
                "mem_reservation" => {
                    (&mut task.resources.reservations.memory_bytes, "deploy.resources.reservations.memory")
                }
                _ => (&mut task.resources.limits.pids, "deploy.resources.limits.pids"),
            };
            let value = match e.key {
                "cpus" => placement::cpus(cx, e),
                "mem_limit" | "mem_reservation" => placement::bytes(cx, e),
                // compose: -1 (or 0) means no limit.
                _ if e.text() == Some("-1") => 0,
                _ => e.uint(cx).unwrap_or(0),
            };
            if *slot != 0 && value != 0 && *slot != value {
                cx.error(e, format!("differs from {what}; set one of them"));
            } else if value != 0 {
                *slot = value;
            }
        }
        let r = &task.resources;
        if r.limits.memory_bytes > 0
            && r.reservations.memory_bytes > r.limits.memory_bytes
            && let Some(e) = self.resources.iter().find(|e| matches!(e.key, "mem_limit" | "mem_reservation"))
        {
            cx.error(e, "the memory reservation is above the memory limit");
        }
    }
}

/// The value of `key` in the mapping `node`, if written.
pub(crate) fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.kind {
        Kind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
        _ => None,
    }
}

/// compose's `restart:` (`no`, `always`, `on-failure[:N]`, `unless-stopped`)
/// as a restart policy.
fn restart(cx: &mut Ctx, at: &At<'_>) -> Option<RestartPolicy> {
    let text = at.string(cx)?;
    let base = RestartPolicy::default();
    let policy = match text.as_str() {
        "no" | "false" => RestartPolicy { condition: RestartCondition::None, ..base },
        "always" | "unless-stopped" => RestartPolicy { condition: RestartCondition::Any, ..base },
        "on-failure" => RestartPolicy { condition: RestartCondition::OnFailure, ..base },
        other => match other.strip_prefix("on-failure:").map(str::parse::<u64>) {
            Some(Ok(n)) if n <= MAX_RESTART_ATTEMPTS => {
                RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: n, ..base }
            }
            Some(Ok(n)) => {
                cx.error(at, format!("at most {MAX_RESTART_ATTEMPTS} attempts, got {n}"));
                return None;
            }
            _ => {
                cx.error(at, format!("must be no, always, on-failure, on-failure:N or unless-stopped, got {text:?}"));
                return None;
            }
        },
    };
    Some(policy)
}

/// compose's `scale:`: the number of replicas, unless `deploy.replicas` says
/// another.
fn scale(cx: &mut Ctx, at: &At<'_>, replicas: Option<&Node>, spec: &mut ServiceSpec) {
    let Some(n) = at.uint(cx) else { return };
    if n > MAX_REPLICAS {
        cx.error(at, format!("at most {MAX_REPLICAS}, got {n}"));
        return;
    }
    match &mut spec.mode {
        ServiceMode::Replicated { replicas: r } | ServiceMode::ReplicatedJob { replicas: r, .. } => {
            if replicas.is_some() && *r != n {
                cx.error(at, format!("differs from deploy.replicas ({r}); set one of them"));
            } else {
                *r = n;
            }
        }
        ServiceMode::Global | ServiceMode::GlobalJob => {
            cx.error(at, "cannot be used with a global deploy mode: a global service runs one task per node");
        }
    }
}

/// `network_mode:`. `host` and `none` join Docker's network of that name
/// (returned); `bridge` is what a stack network gives anyway; the others
/// would be silently lost, so they are refused.
pub(crate) fn network_mode(cx: &mut Ctx, at: &At<'_>) -> Option<&'static str> {
    let mode = at.opt_string(cx)?;
    let why = match mode.as_str() {
        "host" => return Some("host"),
        "none" => return Some("none"),
        "bridge" | "default" => {
            cx.warn(at, "ignored: the service joins the stack's networks, as in Swarm");
            return None;
        }
        m if m.starts_with("service:") || m.starts_with("container:") => format!(
            "network_mode: {m} is not supported: sharing another container's network is not possible across nodes; \
             run both processes in one service, or let them talk over the stack network"
        ),
        m => format!(
            "network_mode: {m} is not supported: to join the network {m}, declare it as an external network and \
             list it under the service's `networks:`"
        ),
    };
    cx.error(at, why);
    None
}

/// What `network_mode: host|none` (`mode`, written at `at`) means for the
/// rest of the service: no other network, no published ports (the task
/// uses the host's ports, or none), no hostname of its own with `host`.
pub(crate) fn engine_network_mode(
    cx: &mut Ctx,
    at: &At<'_>,
    mode: &str,
    networks: Option<&At<'_>>,
    task: &mut TaskTemplate,
) {
    if let Some(n) = networks {
        cx.error(n, format!("cannot be used with network_mode: {mode}"));
    }
    if !task.ports.is_empty() {
        cx.warn(
            at,
            if mode == "host" {
                "the service's ports are not published: with network_mode: host its tasks listen on the host's ports"
            } else {
                "the service's ports are not published: with network_mode: none its tasks have no network"
            },
        );
        task.ports.clear();
        // What was said about the ports does not apply any more.
        let ports = format!("{}.ports", at.path.strip_suffix(".network_mode").unwrap_or(&at.path));
        cx.warnings.retain(|w| !w.path.starts_with(&ports));
    }
    if mode == "host" && task.hostname.is_some() {
        cx.error(at, "cannot be used with hostname: a task on the host's network has the host's name");
    }
    task.networks = vec![NetworkAttachment { network: mode.to_string(), aliases: Vec::new() }];
}

/// `pid:`, `ipc:`, `uts:`, `cgroup:` (and docker/cli's `cgroupns_mode:`):
/// sharing the host's or another container's namespace is refused;
/// `ipc: private|shareable` and `cgroup: private` are what a task gets anyway.
pub(crate) fn namespace(cx: &mut Ctx, at: &At<'_>) {
    let Some(mode) = at.opt_string(cx) else { return };
    let own = match at.key {
        "ipc" => matches!(mode.as_str(), "private" | "shareable" | ""),
        "cgroup" | "cgroupns_mode" => matches!(mode.as_str(), "private" | ""),
        _ => false,
    };
    if own {
        return;
    }
    cx.error(
        at,
        format!(
            "{}: {mode} is not supported: the task would run in a {} namespace of its own",
            at.key,
            match at.key {
                "pid" => "process",
                "ipc" => "IPC",
                "cgroup" | "cgroupns_mode" => "cgroup",
                _ => "hostname (UTS)",
            }
        ),
    );
}

/// Keys whose loss would change what the service does or can reach;
/// refused (`docker stack deploy` refuses all but `devices` too: they are
/// not in its schema). An empty list or `false` asks for nothing.
pub(crate) fn refused(cx: &mut Ctx, at: &At<'_>) {
    let nothing = match &at.node.kind {
        Kind::Null => true,
        Kind::Seq(items) => items.is_empty(),
        Kind::Scalar { text, .. } => {
            at.key == "use_api_socket" && matches!(text.to_ascii_lowercase().as_str(), "false" | "no" | "off" | "n")
        }
        Kind::Map(_) => false,
    };
    if nothing {
        return;
    }
    let why = match at.key {
        "volumes_from" => {
            "volumes_from is not supported: tasks of different services can run on different nodes; \
             declare a named volume and mount it in each service"
        }
        "devices" => "devices are not supported yet: the task would start without access to them",
        "gpus" => "gpus is not supported yet: the task would start without GPUs",
        "group_add" => "group_add is not supported yet: the task's user would lack these groups' access",
        "device_cgroup_rules" => {
            "device_cgroup_rules is not supported yet: the task would start without access to these devices"
        }
        "use_api_socket" => {
            "use_api_socket is not supported: bind-mount /var/run/docker.sock if the service needs the Docker API"
        }
        _ => "provider services are not supported: stackd runs containers from an image",
    };
    cx.error(at, why);
}

/// `links:`. Services on a stack network reach each other by name, so a
/// plain link is redundant; a link alias would not resolve, so it is refused.
pub(crate) fn links(cx: &mut Ctx, at: &At<'_>) {
    let mut plain = false;
    for item in at.list(cx).unwrap_or_default() {
        let Some(text) = item.string(cx) else { continue };
        match text.split_once(':') {
            Some((service, alias)) if alias != service => cx.error(
                &item,
                format!(
                    "the link alias {alias:?} would not resolve: add it to the aliases of {service} under \
                     `networks:`, and drop the link"
                ),
            ),
            _ => plain = true,
        }
    }
    if plain {
        cx.warn(at, "ignored: services on a stack network reach each other by service name");
    }
}

/// `privileged:`. Swarm ignores it; so does stackd, but says what it means.
pub(crate) fn privileged(cx: &mut Ctx, at: &At<'_>) {
    if at.is_null() {
        return;
    }
    if at.boolean(cx) == Some(true) {
        cx.warn(
            at,
            "ignored: the task runs unprivileged, as in Swarm; grant what it needs with cap_add, sysctls or ulimits",
        );
    }
}
