//! `deploy.placement` and `deploy.resources` of a service.

use std::collections::BTreeMap;

use super::ctx::{At, Ctx};
use super::keys;
use super::values;
use crate::model::{Constraint, Placement, ResourceLimits, ResourceSpec, Resources, engine_label, node_label};
use crate::validate::is_valid_name;

/// `placement: {constraints, preferences, max_replicas_per_node}`.
pub(super) fn placement(cx: &mut Ctx, at: &At<'_>) -> Placement {
    let mut p = Placement::default();
    for e in at.map(cx).unwrap_or_default() {
        match e.key {
            "constraints" => {
                for item in e.list(cx).unwrap_or_default() {
                    let Some(text) = item.string(cx) else { continue };
                    match Constraint::parse(&text) {
                        Ok(c) => p.constraints.push(c),
                        Err(why) => cx.error(&item, why),
                    }
                }
            }
            "preferences" => {
                for item in e.list(cx).unwrap_or_default() {
                    for pref in item.map(cx).unwrap_or_default() {
                        match pref.key {
                            "spread" => {
                                if let Some(key) = pref.string(cx) {
                                    spread(cx, &pref, &key);
                                    p.preferences.push(key);
                                }
                            }
                            _ => cx.unknown_key(&pref, &keys::PREFERENCE),
                        }
                    }
                }
            }
            "max_replicas_per_node" => p.max_replicas_per_node = e.uint(cx).unwrap_or(0),
            _ => cx.unknown_key(&e, &keys::PLACEMENT),
        }
    }
    p
}

/// A spread descriptor. swarmkit takes any and spreads over node labels
/// and engine labels only; stackd says which spread nothing.
fn spread(cx: &mut Ctx, at: &At<'_>, key: &str) {
    if node_label(key).is_some() || engine_label(key).is_some() {
        return;
    }
    cx.warn(
        at,
        format!(
            "spreading over {key} spreads nothing, as in Swarm (only node and engine labels are spread over); tasks \
             are spread over nodes anyway"
        ),
    );
}

/// CPUs as a decimal (`0.5`, `"2"`) in billionths of a core.
pub(super) fn cpus(cx: &mut Ctx, at: &At<'_>) -> u64 {
    match at.float(cx) {
        Some(f) if (0.0..=1e6).contains(&f) => (f * 1e9).round() as u64,
        Some(f) => {
            cx.error(at, format!("cpus must be a non-negative number, got {f}"));
            0
        }
        None => 0,
    }
}

/// A byte size (`512M`, `1g`, `1024k`, `100`).
pub(super) fn bytes(cx: &mut Ctx, at: &At<'_>) -> u64 {
    let Some(text) = at.string(cx) else { return 0 };
    match values::parse_bytes(&text) {
        Ok(n) => n,
        Err(why) => {
            cx.error(at, why);
            0
        }
    }
}

/// `resources: {limits: {cpus, memory, pids}, reservations: {cpus, memory}}`.
pub(super) fn resources(cx: &mut Ctx, at: &At<'_>) -> ResourceSpec {
    let mut r = ResourceSpec::default();
    for e in at.map(cx).unwrap_or_default() {
        match e.key {
            "limits" => {
                let mut l = ResourceLimits::default();
                for f in e.map(cx).unwrap_or_default() {
                    match f.key {
                        "cpus" => l.nano_cpus = cpus(cx, &f),
                        "memory" => l.memory_bytes = bytes(cx, &f),
                        "pids" => l.pids = f.uint(cx).unwrap_or(0),
                        _ => cx.unknown_key(&f, &keys::LIMITS),
                    }
                }
                r.limits = l;
            }
            "reservations" => {
                let mut res = Resources::default();
                for f in e.map(cx).unwrap_or_default() {
                    match f.key {
                        "cpus" => res.nano_cpus = cpus(cx, &f),
                        "memory" => res.memory_bytes = bytes(cx, &f),
                        "generic_resources" => res.generic = generic_resources(cx, &f),
                        "devices" => cx.error(
                            &f,
                            "device reservations are not supported yet: the task would start without the devices; \
                             reserve a count with generic_resources",
                        ),
                        _ => cx.unknown_key(&f, &keys::RESERVATIONS),
                    }
                }
                r.reservations = res;
            }
            _ => cx.unknown_key(&e, &keys::RESOURCES),
        }
    }
    let (l, res) = (&r.limits, &r.reservations);
    if l.memory_bytes > 0 && res.memory_bytes > l.memory_bytes {
        cx.error(at, "the memory reservation is above the memory limit");
    }
    if l.nano_cpus > 0 && res.nano_cpus > l.nano_cpus {
        cx.error(at, "the CPU reservation is above the CPU limit");
    }
    r
}

/// `generic_resources:` of a reservation: a list of
/// `{discrete_resource_spec: {kind, value}}`. Named resources
/// (`named_resource_spec`) are refused, as Swarm refuses them for services.
fn generic_resources(cx: &mut Ctx, at: &At<'_>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for item in at.list(cx).unwrap_or_default() {
        for e in item.map(cx).unwrap_or_default() {
            match e.key {
                "discrete_resource_spec" => {
                    let (mut kind, mut value) = (None, None);
                    for f in e.map(cx).unwrap_or_default() {
                        match f.key {
                            "kind" => kind = f.string(cx),
                            "value" => value = f.uint(cx),
                            _ => cx.unknown_key(&f, &keys::DISCRETE_RESOURCE),
                        }
                    }
                    match (kind, value) {
                        (Some(k), _) if !is_valid_name(&k) => {
                            cx.error(&e, format!("{k:?} is not a resource kind: use letters, digits, '-', '_' and '.'"))
                        }
                        (Some(k), Some(v)) if v > 0 => {
                            if out.insert(k.clone(), v).is_some() {
                                cx.error(&e, format!("the kind {k} is reserved twice"));
                            }
                        }
                        (Some(_), Some(_)) => cx.error(&e, "value must be at least 1"),
                        _ => cx.error(&e, "needs `kind` and `value`"),
                    }
                }
                "named_resource_spec" => cx.error(
                    &e,
                    "named generic resources are not supported for services (as in Swarm): reserve a count with \
                     discrete_resource_spec",
                ),
                _ => cx.unknown_key(&e, &keys::GENERIC_RESOURCE),
            }
        }
    }
    out
}
