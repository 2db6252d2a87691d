//! The normalised stack written back as a compose document: what
//! `stackctl config` prints, and what the loader reads back unchanged.
//!
//! Every value is written in its most explicit form (long-syntax ports and
//! volumes, list-form commands, map-form environment, durations with units),
//! so the output validates against the compose JSON schema and loading it
//! again gives the same [`StackSpec`]. One exception: a replicated job's
//! `max_concurrent` has no compose key (the loader always sets 0, "as many
//! as `replicas`"), so it is not written.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::autoscale::{Policy, Target};

use crate::model::{
    FailureAction, FileRef, HealthCheck, Mount, MountKind, NetworkAttachment, NetworkSpec, ObjectOrigin, ObjectSpec,
    PortConfig, PublishMode, RestartCondition, ServiceMode, ServiceSpec, StackSpec, UpdateConfig, UpdateOrder,
    VolumeSpec,
};

/// Writes milliseconds as a compose duration: `1h2m3s`, `1m30s`, `500ms`, `0s`.
pub fn duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, milli) = (rem / 1000, rem % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    if milli > 0 {
        out.push_str(&format!("{milli}ms"));
    }
    out
}

fn strings<'a>(v: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(v.into_iter().map(|s| Value::String(s.clone())).collect())
}

fn map<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Object(m.into_iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// A mount; a named volume is written as its key in the stack's `volumes:`.
fn mount(m: &Mount, volumes: &BTreeMap<String, VolumeSpec>) -> Value {
    let kind = match m.kind {
        MountKind::Volume => "volume",
        MountKind::Bind => "bind",
        MountKind::Tmpfs => "tmpfs",
    };
    let mut o = Map::new();
    o.insert("type".into(), json!(kind));
    if !m.source.is_empty() {
        let key = match m.kind {
            MountKind::Volume => volumes.iter().find(|(_, v)| v.name == m.source).map_or(m.source.as_str(), |(k, _)| k),
            _ => m.source.as_str(),
        };
        o.insert("source".into(), json!(key));
    }
    o.insert("target".into(), json!(m.target));
    if m.read_only {
        o.insert("read_only".into(), json!(true));
    }
    if m.kind == MountKind::Tmpfs && (m.tmpfs_size_bytes > 0 || m.tmpfs_mode > 0) {
        let mut t = Map::new();
        if m.tmpfs_size_bytes > 0 {
            t.insert("size".into(), json!(m.tmpfs_size_bytes));
        }
        if m.tmpfs_mode > 0 {
            t.insert("mode".into(), json!(format!("{:o}", m.tmpfs_mode)));
        }
        o.insert("tmpfs".into(), Value::Object(t));
    }
    Value::Object(o)
}

fn port(p: &PortConfig) -> Value {
    let mut o = Map::new();
    o.insert("target".into(), json!(p.target));
    if let Some(pp) = p.published {
        o.insert("published".into(), json!(pp.to_string()));
    }
    o.insert("protocol".into(), json!(p.protocol.as_str()));
    o.insert("mode".into(), json!(if p.mode == PublishMode::Host { "host" } else { "ingress" }));
    if !p.host_ip.is_empty() {
        o.insert("host_ip".into(), json!(p.host_ip));
    }
    if p.proxy_protocol {
        o.insert("x-proxy-protocol".into(), json!("v2"));
    }
    Value::Object(o)
}

fn healthcheck(h: &HealthCheck) -> Value {
    if h.test.first().is_some_and(|t| t == "NONE") {
        return json!({ "disable": true });
    }
    let mut o = Map::new();
    // An empty test is an absent `test:` (the image's test is kept); `test: []`
    // would not load again (found by fuzzing, fuzz/: see docs/fuzzing.md).
    if !h.test.is_empty() {
        o.insert("test".into(), strings(&h.test));
    }
    for (key, ms) in [
        ("interval", h.interval_ms),
        ("timeout", h.timeout_ms),
        ("start_period", h.start_period_ms),
        ("start_interval", h.start_interval_ms),
    ] {
        if ms > 0 {
            o.insert(key.into(), json!(duration(ms)));
        }
    }
    if h.retries > 0 {
        o.insert("retries".into(), json!(h.retries));
    }
    Value::Object(o)
}

/// A service's networks as a mapping from the stack's keys to their
/// settings (`null` without aliases); a network the stack does not declare
/// is written under its engine name.
fn attachments(list: &[NetworkAttachment], networks: &BTreeMap<String, NetworkSpec>) -> Value {
    let entries = list.iter().map(|a| {
        let key = networks.iter().find(|(_, n)| n.name == a.network).map_or(a.network.as_str(), |(k, _)| k);
        let value = if a.aliases.is_empty() { Value::Null } else { json!({ "aliases": strings(&a.aliases) }) };
        (key.to_string(), value)
    });
    Value::Object(entries.collect())
}

/// The compose form of one service of `stack`.
pub fn service(s: &ServiceSpec, stack: &StackSpec) -> Value {
    let volumes = &stack.volumes;
    let t = &s.task;
    let mut o = Map::new();
    o.insert("image".into(), json!(t.image));
    if let Some(c) = &t.command {
        o.insert("command".into(), strings(c));
    }
    if let Some(e) = &t.entrypoint {
        o.insert("entrypoint".into(), strings(e));
    }
    if !t.env.is_empty() {
        let env: Map<String, Value> = t
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), json!(v)),
                None => (kv.clone(), json!("")),
            })
            .collect();
        o.insert("environment".into(), Value::Object(env));
    }
    if !t.labels.is_empty() {
        o.insert("labels".into(), map(&t.labels));
    }
    if !t.mounts.is_empty() {
        o.insert("volumes".into(), Value::Array(t.mounts.iter().map(|m| mount(m, volumes)).collect()));
    }
    if !t.ports.is_empty() {
        o.insert("ports".into(), Value::Array(t.ports.iter().map(port).collect()));
    }
    if !t.networks.is_empty() {
        o.insert("networks".into(), attachments(&t.networks, &stack.networks));
    }
    for (key, v) in
        [("working_dir", &t.working_dir), ("user", &t.user), ("hostname", &t.hostname), ("stop_signal", &t.stop_signal)]
    {
        if let Some(v) = v {
            o.insert(key.into(), json!(v));
        }
    }
    if let Some(init) = t.init {
        o.insert("init".into(), json!(init));
    }
    if t.read_only {
        o.insert("read_only".into(), json!(true));
    }
    if !t.pull_policy.is_missing() {
        o.insert("pull_policy".into(), json!(t.pull_policy.as_str()));
    }
    for (key, list) in [
        ("cap_add", &t.cap_add),
        ("cap_drop", &t.cap_drop),
        ("extra_hosts", &t.extra_hosts),
        ("dns", &t.dns),
        ("dns_search", &t.dns_search),
    ] {
        if !list.is_empty() {
            o.insert(key.into(), strings(list));
        }
    }
    if !t.sysctls.is_empty() {
        o.insert("sysctls".into(), map(&t.sysctls));
    }
    if !t.ulimits.is_empty() {
        let limits: Map<String, Value> =
            t.ulimits.iter().map(|(k, u)| (k.clone(), json!({ "soft": u.soft, "hard": u.hard }))).collect();
        o.insert("ulimits".into(), Value::Object(limits));
    }
    if let Some(l) = &t.logging {
        let mut log = Map::new();
        // No driver: the options are for the engine's default driver.
        if !l.driver.is_empty() {
            log.insert("driver".into(), json!(l.driver));
        }
        if !l.options.is_empty() {
            log.insert("options".into(), map(&l.options));
        }
        o.insert("logging".into(), Value::Object(log));
    }
    for (key, refs) in [("configs", &t.configs), ("secrets", &t.secrets)] {
        if !refs.is_empty() {
            o.insert(key.into(), Value::Array(refs.iter().map(file_ref).collect()));
        }
    }
    o.insert("stop_grace_period".into(), json!(duration(t.stop_grace_period_ms)));
    if let Some(h) = &t.healthcheck {
        o.insert("healthcheck".into(), healthcheck(h));
    }
    if !s.depends_on.is_empty() {
        let deps = s.depends_on.iter().map(|d| {
            let mut dep = Map::new();
            dep.insert("condition".into(), json!(d.condition.as_str()));
            if !d.required {
                dep.insert("required".into(), json!(false));
            }
            (d.service.clone(), Value::Object(dep))
        });
        o.insert("depends_on".into(), Value::Object(deps.collect()));
    }
    let mut deploy = Map::new();
    deploy.insert("mode".into(), json!(s.mode.name()));
    // `max_concurrent` has no compose key: it is not written (the loader always reads 0).
    if let ServiceMode::Replicated { replicas } | ServiceMode::ReplicatedJob { replicas, .. } = s.mode {
        deploy.insert("replicas".into(), json!(replicas));
    }
    deploy.insert("endpoint_mode".into(), json!(s.endpoint_mode.as_str()));
    if !s.labels.is_empty() {
        deploy.insert("labels".into(), map(&s.labels));
    }
    let p = &t.placement;
    if p != &Default::default() {
        let mut placement = Map::new();
        if !p.constraints.is_empty() {
            placement.insert(
                "constraints".into(),
                Value::Array(p.constraints.iter().map(|c| json!(c.to_string())).collect()),
            );
        }
        if !p.preferences.is_empty() {
            placement.insert(
                "preferences".into(),
                Value::Array(p.preferences.iter().map(|k| json!({ "spread": k })).collect()),
            );
        }
        if p.max_replicas_per_node > 0 {
            placement.insert("max_replicas_per_node".into(), json!(p.max_replicas_per_node));
        }
        deploy.insert("placement".into(), Value::Object(placement));
    }
    let r = &t.resources;
    if r != &Default::default() {
        let cpus = |nano: u64| json!(format!("{}", nano as f64 / 1e9));
        let mut limits = Map::new();
        if r.limits.nano_cpus > 0 {
            limits.insert("cpus".into(), cpus(r.limits.nano_cpus));
        }
        if r.limits.memory_bytes > 0 {
            limits.insert("memory".into(), json!(format!("{}b", r.limits.memory_bytes)));
        }
        if r.limits.pids > 0 {
            limits.insert("pids".into(), json!(r.limits.pids));
        }
        let mut reservations = Map::new();
        if r.reservations.nano_cpus > 0 {
            reservations.insert("cpus".into(), cpus(r.reservations.nano_cpus));
        }
        if r.reservations.memory_bytes > 0 {
            reservations.insert("memory".into(), json!(format!("{}b", r.reservations.memory_bytes)));
        }
        if !r.reservations.generic.is_empty() {
            let generic: Vec<Value> = r
                .reservations
                .generic
                .iter()
                .map(|(kind, value)| json!({ "discrete_resource_spec": { "kind": kind, "value": value } }))
                .collect();
            reservations.insert("generic_resources".into(), Value::Array(generic));
        }
        deploy.insert("resources".into(), json!({ "limits": limits, "reservations": reservations }));
    }
    let r = &s.restart;
    let condition = match r.condition {
        RestartCondition::None => "none",
        RestartCondition::OnFailure => "on-failure",
        RestartCondition::Any => "any",
    };
    deploy.insert(
        "restart_policy".into(),
        json!({
            "condition": condition,
            "delay": duration(r.delay_ms),
            "max_attempts": r.max_attempts,
            "window": duration(r.window_ms),
        }),
    );
    // A job has no rolling update: the loader ignores (and warns about) both policies.
    if !s.mode.is_job() {
        deploy.insert("update_config".into(), update_config(&s.update));
        deploy.insert("rollback_config".into(), update_config(&s.rollback));
    }
    o.insert("deploy".into(), Value::Object(deploy));
    if let Some(p) = &s.autoscale {
        o.insert("x-stackd-autoscale".into(), autoscale(p));
    }
    Value::Object(o)
}

/// `x-stackd-autoscale`, every key written.
fn autoscale(p: &Policy) -> Value {
    let target = match p.target {
        Target::Cpu { percent } => json!({ "cpu": format!("{percent}%") }),
        Target::Connections { per_replica } => json!({ "connections": per_replica }),
    };
    json!({
        "min": p.min,
        "max": p.max,
        "target": target,
        "period": duration(p.period),
        "scale_down_window": duration(p.down_window),
        "scale_up_window": duration(p.up_window),
    })
}

/// `update_config` or `rollback_config`.
fn update_config(u: &UpdateConfig) -> Value {
    let action = match u.failure_action {
        FailureAction::Pause => "pause",
        FailureAction::Continue => "continue",
        FailureAction::Rollback => "rollback",
    };
    let order = match u.order {
        UpdateOrder::StopFirst => "stop-first",
        UpdateOrder::StartFirst => "start-first",
    };
    json!({
        "parallelism": u.parallelism,
        "delay": duration(u.delay_ms),
        "monitor": duration(u.monitor_ms),
        "failure_action": action,
        "max_failure_ratio": u.max_failure_ratio,
        "order": order,
    })
}

fn volume(v: &VolumeSpec) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(v.name));
    if v.external {
        o.insert("external".into(), json!(true));
    }
    if let Some(d) = &v.driver {
        o.insert("driver".into(), json!(d));
    }
    if !v.driver_opts.is_empty() {
        o.insert("driver_opts".into(), map(&v.driver_opts));
    }
    if !v.labels.is_empty() {
        o.insert("labels".into(), map(&v.labels));
    }
    Value::Object(o)
}

fn network(n: &NetworkSpec) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(n.name));
    if n.external {
        o.insert("external".into(), json!(true));
    }
    if let Some(d) = &n.driver {
        o.insert("driver".into(), json!(d));
    }
    if !n.driver_opts.is_empty() {
        o.insert("driver_opts".into(), map(&n.driver_opts));
    }
    if n.internal {
        o.insert("internal".into(), json!(true));
    }
    if !n.labels.is_empty() {
        o.insert("labels".into(), map(&n.labels));
    }
    Value::Object(o)
}

/// Writes every literal `$` of string values as `$$`, so that interpolation
/// on reading gives the value back.
fn escape_dollars(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Value::Array(a) => a.iter_mut().for_each(escape_dollars),
        Value::Object(o) => o.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

/// A service's config or secret, in the long syntax.
fn file_ref(r: &FileRef) -> Value {
    json!({
        "source": r.source,
        "target": r.target,
        "uid": r.uid,
        "gid": r.gid,
        "mode": format!("{:o}", r.mode),
    })
}

/// A top-level config or secret: where its content comes from, never the
/// content of a secret (a config's `content:` is written back as it is).
fn object(o: &ObjectSpec, stack: &str, key: &str) -> Value {
    let mut out = Map::new();
    match &o.origin {
        ObjectOrigin::External => {
            out.insert("external".into(), json!(true));
        }
        ObjectOrigin::File(path) => {
            out.insert("file".into(), json!(path));
        }
        ObjectOrigin::Environment(var) => {
            out.insert("environment".into(), json!(var));
        }
        ObjectOrigin::Content => {
            out.insert("content".into(), json!(String::from_utf8_lossy(&o.data.0)));
        }
    }
    let default_name = if o.external { key.to_string() } else { format!("{stack}_{key}") };
    if o.name != default_name {
        out.insert("name".into(), json!(o.name));
    }
    if !o.labels.is_empty() {
        out.insert("labels".into(), map(&o.labels));
    }
    Value::Object(out)
}

/// The compose document of a normalised stack.
pub fn document(spec: &StackSpec) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(spec.name));
    o.insert(
        "services".into(),
        Value::Object(spec.services.iter().map(|(k, s)| (k.clone(), service(s, spec))).collect()),
    );
    if !spec.volumes.is_empty() {
        o.insert("volumes".into(), Value::Object(spec.volumes.iter().map(|(k, v)| (k.clone(), volume(v))).collect()));
    }
    for (key, objects) in [("configs", &spec.configs), ("secrets", &spec.secrets)] {
        if !objects.is_empty() {
            let section = objects.iter().map(|(k, o)| (k.clone(), object(o, &spec.name, k))).collect();
            o.insert(key.into(), Value::Object(section));
        }
    }
    if !spec.networks.is_empty() {
        o.insert(
            "networks".into(),
            Value::Object(spec.networks.iter().map(|(k, n)| (k.clone(), network(n))).collect()),
        );
    }
    let mut doc = Value::Object(o);
    escape_dollars(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(500), "500ms");
        assert_eq!(duration(1500), "1s500ms");
        assert_eq!(duration(90_000), "1m30s");
        assert_eq!(duration(3_723_000), "1h2m3s");
        assert_eq!(duration(3_600_000), "1h");
    }
}
