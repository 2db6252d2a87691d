//! What ties services together: `profiles:` (which services are deployed)
//! and `depends_on:` (the order of the first start).
//!
//! - A service with `profiles:` is deployed only when one of them is
//!   enabled (`stackctl deploy --profile P`, or `COMPOSE_PROFILES`; `*`
//!   enables all), as compose does; a service without is always deployed.
//!   Disabled services are still checked.
//! - `depends_on:` (a list of names, or a mapping of names to `condition`,
//!   `required`, `restart`) must name services of the stack, enabled ones,
//!   without cycles. Each dependency is recorded in the service's spec
//!   ([`Dependency`], sorted by name): the orchestrators start the service
//!   for the first time only once its dependencies meet their condition.
//!   A dependency with `required: false` that is not in the stack (or not
//!   enabled) is warned about and dropped. `restart: true` is warned about:
//!   a service is not restarted when one it depends on is updated.

use std::collections::{BTreeMap, BTreeSet};

use super::ctx::{At, Ctx};
use super::keys;
use crate::model::{Dependency, DependencyCondition, RestartCondition, ServiceSpec};
use crate::validate::is_valid_name;

/// The `depends_on` conditions of compose.
const CONDITIONS: &[&str] = &["service_started", "service_healthy", "service_completed_successfully"];

/// One entry of a `depends_on:` value, as written.
struct Written<'a> {
    /// The entry (a list item, or the mapping entry named after the service).
    at: At<'a>,
    /// The service depended on.
    name: String,
    /// Its `condition:` entry, if written.
    condition_at: Option<At<'a>>,
    condition: DependencyCondition,
    required: bool,
}

/// The names of the services of `services` (the entries of `services:`)
/// that `enabled` (the enabled profiles) deploys; checks the `profiles:` keys.
pub(crate) fn enabled_services(cx: &mut Ctx, services: &[At<'_>], enabled: &[String]) -> BTreeSet<String> {
    let all = enabled.iter().any(|p| p == "*");
    let mut out = BTreeSet::new();
    let mut used = BTreeSet::new();
    for s in services {
        let Some(at) = entry(cx, s, "profiles") else {
            out.insert(s.key.to_string());
            continue;
        };
        let mut profiles = Vec::new();
        for item in at.list(cx).unwrap_or_default() {
            let Some(p) = item.string(cx) else { continue };
            if !is_valid_name(&p) {
                cx.error(&item, format!("profile {p:?} is invalid: use letters, digits, '-', '_' and '.'"));
            }
            profiles.push(p);
        }
        used.extend(profiles.iter().cloned());
        if profiles.is_empty() || all || profiles.iter().any(|p| enabled.contains(p)) {
            out.insert(s.key.to_string());
        }
    }
    for p in enabled.iter().filter(|p| *p != "*" && !used.contains(*p)) {
        cx.warn_global(format!("profile {p:?} is enabled but no service has it"));
    }
    out
}

/// Checks the `depends_on:` of every enabled service: the services named
/// exist and are enabled, and no service depends on itself through others.
/// Returns the dependencies of each enabled service that has some, sorted by
/// name (the first entry of a name kept); `specs` are the converted services,
/// to warn about conditions that the dependency's spec makes meaningless.
pub(crate) fn check(
    cx: &mut Ctx,
    services: &[At<'_>],
    enabled: &BTreeSet<String>,
    specs: &BTreeMap<String, ServiceSpec>,
) -> BTreeMap<String, Vec<Dependency>> {
    let defined: BTreeMap<&str, &At<'_>> = services.iter().map(|s| (s.key, s)).collect();
    // For each enabled service, the services it depends on, with the entry.
    let mut edges: BTreeMap<String, Vec<(String, At<'_>)>> = BTreeMap::new();
    let mut recorded: BTreeMap<String, Vec<Dependency>> = BTreeMap::new();
    for s in services.iter().filter(|s| enabled.contains(s.key)) {
        let Some(at) = entry(cx, s, "depends_on") else { continue };
        let mut deps = Vec::new();
        let mut list: Vec<Dependency> = Vec::new();
        for w in dependencies(cx, &at) {
            let (item, name, required) = (&w.at, &w.name, w.required);
            if name == s.key {
                cx.error(item, "a service cannot depend on itself");
            } else if !defined.contains_key(name.as_str()) {
                if required {
                    cx.error(item, format!("there is no service {name} in the stack"));
                } else {
                    cx.warn(item, format!("there is no service {name} in the stack; skipped (required: false)"));
                }
            } else if !enabled.contains(name) {
                let why = format!("{name} is not deployed: enable one of its profiles (stackctl deploy --profile …)");
                if required {
                    cx.error(item, why);
                } else {
                    cx.warn(item, format!("{why}; skipped (required: false)"));
                }
            } else {
                if let Some(dep) = specs.get(name) {
                    warn_condition(cx, &w, dep);
                }
                if !list.iter().any(|d| d.service == *name) {
                    list.push(Dependency { service: name.clone(), condition: w.condition, required });
                }
                deps.push((name.clone(), w.at));
            }
        }
        edges.insert(s.key.to_string(), deps);
        if !list.is_empty() {
            list.sort_by(|a, b| a.service.cmp(&b.service));
            recorded.insert(s.key.to_string(), list);
        }
    }
    cycles(cx, &edges);
    recorded
}

/// Warns about a condition that the spec of the service depended on, `dep`,
/// makes meaningless or surprising.
fn warn_condition(cx: &mut Ctx, w: &Written<'_>, dep: &ServiceSpec) {
    let at = w.condition_at.as_ref().unwrap_or(&w.at);
    let name = &w.name;
    match w.condition {
        DependencyCondition::ServiceHealthy
            if dep.task.healthcheck.as_ref().is_some_and(|h| h.test.first().is_some_and(|t| t == "NONE")) =>
        {
            cx.warn(
                at,
                format!(
                    "{name} has its healthcheck disabled: service_healthy is met as soon as its tasks run \
                     (compose refuses to start the service)"
                ),
            );
        }
        DependencyCondition::ServiceCompletedSuccessfully
            if !dep.mode.is_job() && dep.restart.condition == RestartCondition::Any =>
        {
            cx.warn(
                at,
                format!(
                    "{name} is not a job and is restarted whenever it exits (restart_policy condition any): \
                     service_completed_successfully is met at its first exit 0; to run it once, make it a job \
                     (deploy.mode: replicated-job)"
                ),
            );
        }
        _ => {}
    }
}

/// The entry `key` of the service mapping `service`, if written and not null.
fn entry<'a>(cx: &mut Ctx, service: &At<'a>, key: &str) -> Option<At<'a>> {
    let entries = match &service.node.kind {
        super::yaml::Kind::Map(_) => service.map(cx)?,
        _ => return None,
    };
    entries.into_iter().find(|e| e.key == key && !e.is_null())
}

/// The dependencies of a `depends_on:` value, as written.
fn dependencies<'a>(cx: &mut Ctx, at: &At<'a>) -> Vec<Written<'a>> {
    use super::yaml::Kind;
    match &at.node.kind {
        Kind::Seq(_) => at
            .list(cx)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                let name = item.string(cx)?;
                Some(Written {
                    at: item,
                    name,
                    condition_at: None,
                    condition: DependencyCondition::ServiceStarted,
                    required: true,
                })
            })
            .collect(),
        Kind::Map(_) => {
            let mut out = Vec::new();
            for dep in at.map(cx).unwrap_or_default() {
                let mut w = Written {
                    at: dep.clone(),
                    name: dep.key.to_string(),
                    condition_at: None,
                    condition: DependencyCondition::ServiceStarted,
                    required: true,
                };
                for e in dep.map(cx).unwrap_or_default() {
                    if e.is_null() {
                        continue;
                    }
                    match e.key {
                        "condition" => {
                            w.condition = match e.choice(cx, CONDITIONS) {
                                Some("service_healthy") => DependencyCondition::ServiceHealthy,
                                Some("service_completed_successfully") => {
                                    DependencyCondition::ServiceCompletedSuccessfully
                                }
                                _ => DependencyCondition::ServiceStarted,
                            };
                            w.condition_at = Some(e);
                        }
                        "required" => w.required = e.boolean(cx).unwrap_or(true),
                        "restart" => {
                            if e.boolean(cx) == Some(true) {
                                let why = format!(
                                    "not honoured: a service is not restarted when {} is updated; updates roll \
                                     each service on its own",
                                    dep.key
                                );
                                cx.warn(&e, why);
                            }
                        }
                        _ => cx.unknown_key(&e, &keys::DEPENDS_ON),
                    }
                }
                out.push(w);
            }
            out
        }
        _ => {
            cx.error(at, format!("must be a list of services or a mapping, got {}", at.node.describe()));
            Vec::new()
        }
    }
}

/// Reports each cycle of `edges` once, at the entry that closes it.
fn cycles(cx: &mut Ctx, edges: &BTreeMap<String, Vec<(String, At<'_>)>>) {
    // 0: not seen, 1: on the current path, 2: done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    for start in edges.keys() {
        if state.get(start.as_str()).copied().unwrap_or(0) != 0 {
            continue;
        }
        // Depth-first, iteratively: (service, index of its next edge).
        let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        state.insert(start, 1);
        while let Some((node, next)) = path.last().copied() {
            let deps = edges.get(node).map(Vec::as_slice).unwrap_or_default();
            let Some((dep, at)) = deps.get(next) else {
                state.insert(node, 2);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match state.get(dep.as_str()).copied().unwrap_or(0) {
                0 => {
                    state.insert(dep, 1);
                    path.push((dep, 0));
                }
                1 => {
                    let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut names: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                    names.push(dep);
                    cx.error(at, format!("depends_on goes round in a circle: {}", names.join(" → ")));
                }
                _ => {}
            }
        }
    }
}
