//! One entry of `services:` → a [`ServiceSpec`].

use std::collections::BTreeMap;

use super::ctx::{At, Ctx};
use super::keys;
use super::networks::{self, Networks};
use super::yaml::Kind;
use super::{autoscale, compat, deploy, envfile, mounts, objects, runtime};
use crate::model::{DataKind, EndpointMode, PublishMode, ServiceSpec, StackSpec, TaskTemplate};
use crate::validate::is_valid_name;

/// Default time between the stop signal and a kill, like Docker's.
pub(crate) const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// Converts the service `at` (its key is the service name). Returns `None`
/// when the service is unusable; every problem has been recorded in `cx`.
pub(crate) fn service(cx: &mut Ctx, at: &At<'_>, stack: &StackSpec, nets: &Networks<'_>) -> Option<ServiceSpec> {
    let volumes = &stack.volumes;
    let name = at.key;
    if !is_valid_name(name) {
        cx.error(at, "service name is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit (63 at most)");
    }
    let entries = at.map(cx)?;
    let mut task = TaskTemplate { stop_grace_period_ms: DEFAULT_STOP_GRACE_MS, ..TaskTemplate::default() };
    let mut spec = ServiceSpec::replicated(name, 1, TaskTemplate::default());
    task.networks = networks::default_attachment(nets);
    let mut environment_vars = BTreeMap::new();
    let mut env_file_vars = BTreeMap::new();
    let mut label_file_vars = BTreeMap::new();
    let mut legacy = compat::Legacy::default();
    let mut network_mode = None;
    let mut networks_at = None;
    let mut tmpfs_at = None;
    let mut image_key = false;
    let mut image = None;
    let mut build = None;
    let mut endpoint_at = None;
    let mut autoscale_at = None;
    for e in entries.iter().cloned() {
        match e.key {
            "image" => {
                image_key = true;
                image = e.string(cx);
                if image.as_deref().is_some_and(|i| i.trim().is_empty()) {
                    cx.error(&e, "must not be empty");
                }
            }
            "command" => task.command = if e.is_null() { None } else { e.command(cx) },
            "entrypoint" => task.entrypoint = if e.is_null() { None } else { e.command(cx) },
            "environment" => environment_vars = environment(cx, &e),
            "env_file" => env_file_vars = envfile::env_files(cx, &e),
            "labels" => task.labels = labels(cx, &e),
            "volumes" => task.mounts = mounts::mounts(cx, name, &e, volumes),
            "ports" => task.ports = mounts::ports(cx, &e),
            "tmpfs" => tmpfs_at = Some(e),
            "configs" => task.configs = objects::refs(cx, name, DataKind::Config, &e, &stack.configs),
            "secrets" => task.secrets = objects::refs(cx, name, DataKind::Secret, &e, &stack.secrets),
            "networks" => {
                task.networks = networks::attachments(cx, name, &e, nets);
                networks_at = (!e.is_null()).then(|| e.clone());
            }
            "deploy" => endpoint_at = deploy::deploy(cx, &e, &mut spec, &mut task),
            "healthcheck" => task.healthcheck = deploy::healthcheck(cx, &e),
            "stop_grace_period" => {
                if !e.is_null()
                    && let Some(ms) = e.duration(cx)
                {
                    task.stop_grace_period_ms = ms;
                }
            }
            "stop_signal" => task.stop_signal = e.opt_string(cx),
            "working_dir" => task.working_dir = e.opt_string(cx),
            "user" => task.user = e.opt_string(cx),
            "hostname" => task.hostname = e.opt_string(cx),
            "init" => task.init = if e.is_null() { None } else { e.boolean(cx) },
            "read_only" => task.read_only = !e.is_null() && e.boolean(cx).unwrap_or(false),
            "pull_policy" => {
                if let Some(text) = e.opt_string(cx) {
                    match crate::model::PullPolicy::parse(&text) {
                        Ok(p) => task.pull_policy = p,
                        Err(why) => cx.error(&e, why),
                    }
                }
            }
            "cap_add" => task.cap_add = runtime::capabilities(cx, &e),
            "cap_drop" => task.cap_drop = runtime::capabilities(cx, &e),
            "sysctls" => task.sysctls = runtime::sysctls(cx, &e),
            "extra_hosts" => task.extra_hosts = runtime::extra_hosts(cx, &e),
            "dns" => task.dns = runtime::dns(cx, &e),
            "dns_search" => task.dns_search = runtime::dns_search(cx, &e),
            "ulimits" => task.ulimits = runtime::ulimits(cx, &e),
            "logging" => task.logging = runtime::logging(cx, &e),
            "build" => build = Some(e),
            autoscale::KEY => autoscale_at = autoscale::read(cx, &e),
            // stackd's own extension keys: a typo must not be ignored as any `x-` key is.
            key if key.starts_with("x-stackd-") => cx.error(
                &e,
                match keys::suggest(key, &[autoscale::KEY]) {
                    Some(k) => format!("unknown key `{key}`: did you mean `{k}`?"),
                    None => format!("unknown key `{key}`: the only x-stackd- key of a service is `{}`", autoscale::KEY),
                },
            ),
            _ if legacy.take(&e) => {}
            "network_mode" => network_mode = compat::network_mode(cx, &e).map(|m| (m, e.clone())),
            "pid" | "ipc" | "uts" | "cgroup" | "cgroupns_mode" => compat::namespace(cx, &e),
            "volumes_from"
            | "devices"
            | "gpus"
            | "provider"
            | "group_add"
            | "device_cgroup_rules"
            | "use_api_socket" => compat::refused(cx, &e),
            "links" => compat::links(cx, &e),
            "privileged" => compat::privileged(cx, &e),
            "external_links" => cx.warn(&e, "ignored: a stack's services reach only the networks they join"),
            "label_file" => label_file_vars = envfile::env_files(cx, &e),
            // Ports are reachable by the services of the same network anyway.
            "expose" => {
                let _ = e.list(cx);
            }
            // Checked with all the services (`depends`); resolved before typing (`extends`, `profiles`).
            "depends_on" | "extends" | "profiles" => {}
            "container_name" => cx.warn(&e, "ignored: container names are chosen by stackd"),
            _ => cx.unknown_key(&e, &keys::SERVICE),
        }
    }
    match (&image, &build) {
        (Some(_), Some(b)) => cx.warn(b, "ignored: stackd does not build images; `image:` is pulled"),
        _ if cx.unresolved_bases.contains(name) => {}
        (None, Some(_)) if !image_key => cx.error(
            at,
            "has `build:` but no `image:`; stackd does not build images — build and push it, then set image",
        ),
        (None, None) if !image_key => cx.error(at, format!("service {name} has no `image:`; every service needs one")),
        _ => {}
    }
    if let Some(t) = &tmpfs_at {
        for (item, m) in mounts::tmpfs(cx, t) {
            if task.mounts.iter().any(|o| o.target == m.target) {
                cx.error(&item, format!("{:?} is mounted twice", m.target));
            } else {
                task.mounts.push(m);
            }
        }
    }
    for (what, r) in task.configs.iter().map(|r| ("config", r)).chain(task.secrets.iter().map(|r| ("secret", r))) {
        if task.mounts.iter().any(|m| m.target == r.target) {
            cx.error(at, format!("the {what} {} and a volume are both mounted at {:?}", r.source, r.target));
        }
    }
    for s in task.secrets.iter().filter(|s| task.configs.iter().any(|c| c.target == s.target)) {
        cx.error(at, format!("the secret {} and a config are both mounted at {:?}", s.source, s.target));
    }
    legacy.apply(cx, at.node, &mut spec, &mut task);
    if let Some((mode, mode_at)) = &network_mode {
        compat::engine_network_mode(cx, mode_at, mode, networks_at.as_ref(), &mut task);
    }
    label_file_vars.append(&mut task.labels);
    task.labels = label_file_vars;
    env_file_vars.extend(environment_vars);
    task.env = env_file_vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(e) = endpoint_at.filter(|_| spec.endpoint_mode == EndpointMode::Dnsrr) {
        // Swarm: "port published with ingress mode can't be used with dnsrr mode".
        for p in task.ports.iter().filter(|p| p.published.is_some() && p.mode == PublishMode::Ingress) {
            cx.error(
                &e,
                format!(
                    "dnsrr can't be used with port {}/{} published in ingress mode: publish it with `mode: host`, \
                     or use endpoint_mode: vip",
                    p.published.unwrap_or_default(),
                    p.protocol.as_str()
                ),
            );
        }
    }
    if let Some(written) = autoscale_at {
        autoscale::apply(cx, written, written_replicas(&entries).as_ref(), &mut spec, &task.ports);
    }
    task.image = image?;
    spec.task = task;
    Some(spec)
}

/// Where the service's replicas are written, if they are: `deploy.replicas`,
/// else compose's `scale` (null counts as not written).
fn written_replicas<'a>(entries: &[At<'a>]) -> Option<At<'a>> {
    let entry = |key: &str| entries.iter().find(|e| e.key == key && !e.is_null());
    let in_deploy = entry("deploy").and_then(|d| match &d.node.kind {
        Kind::Map(inner) => inner.iter().find(|e| e.key == "replicas").map(|e| d.entry(e)).filter(|e| !e.is_null()),
        _ => None,
    });
    in_deploy.or_else(|| entry("scale").cloned())
}

/// `environment:` as a list (`KEY=VALUE`, `KEY`) or a mapping. A variable without a value takes it from the
/// load's variables (environment, `.env`), as compose does; when it has none
/// there either, it is dropped with a warning.
fn environment(cx: &mut Ctx, at: &At<'_>) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (item, key, value) in at.pairs(cx) {
        match value.or_else(|| cx.vars.get(&key).cloned()) {
            Some(v) => {
                vars.insert(key, v);
            }
            None => cx.warn(
                &item,
                format!("variable {key} has no value here and is not set in the environment or .env; dropped"),
            ),
        }
    }
    vars
}

/// `labels:` as a list (`KEY=VALUE`, `KEY`) or a mapping; a missing value is empty.
pub(crate) fn labels(cx: &mut Ctx, at: &At<'_>) -> BTreeMap<String, String> {
    at.pairs(cx).into_iter().map(|(_, k, v)| (k, v.unwrap_or_default())).collect()
}
