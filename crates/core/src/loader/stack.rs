//! The top level of a compose file: `services`, `volumes`, `networks`,
//! `configs`, `secrets`; other sections are warned about and ignored.

use std::collections::BTreeMap;

use super::ctx::{At, Ctx};
use super::keys;
use super::networks::{self, DEFAULT_NETWORK, Networks};
use super::yaml::{self, Kind, Node};
use super::{depends, interpolate, objects, service};
use crate::model::{DataKind, StackSpec, VolumeSpec};
use crate::validate::{self, RESERVED_NETWORKS, is_valid_name};

/// Parses and interpolates the text of the current file of `cx` (`first`:
/// the first of the files). Returns `None` when the file is unusable (then
/// at least one error was recorded): broken YAML, empty, or not a mapping.
pub(crate) fn parse_file(cx: &mut Ctx, text: &str, first: bool) -> Option<Node> {
    let parsed = yaml::parse_in(cx.file, text);
    for e in &parsed.errors {
        cx.error_at(e.line, e.col, &e.path, e.message.clone());
    }
    let Some(mut root) = parsed.root else {
        if parsed.errors.is_empty() {
            let message = if first { "the file is empty: it needs a `services:` section" } else { "the file is empty" };
            cx.error_at(1, 1, "", message);
        }
        return None;
    };
    interpolate::apply(cx, &mut root);
    let Kind::Map(_) = &root.kind else {
        let root_at = At::root(&root);
        cx.error(&root_at, format!("a stack file must be a mapping (services:, volumes:, …), got {}", root.describe()));
        return None;
    };
    Some(root)
}

/// Types the (merged) tree `root` into the stack `stack`. Every problem is
/// recorded in `cx`, in the file each value came from.
pub(crate) fn convert(cx: &mut Ctx, stack: &str, root: &Node, profiles: &[String]) -> StackSpec {
    let root_at = At::root(root);
    let mut services_at = None;
    let mut volumes = BTreeMap::new();
    let mut configs = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut declared_networks = BTreeMap::new();
    for e in root_at.map(cx).unwrap_or_default() {
        match e.key {
            // The stack name comes from the command line; `version` is obsolete.
            "version" | "name" => {}
            "services" => services_at = Some(e),
            "volumes" => volumes = top_volumes(cx, stack, &e),
            "configs" => configs = objects::top_objects(cx, stack, DataKind::Config, &e),
            "secrets" => secrets = objects::top_objects(cx, stack, DataKind::Secret, &e),
            "networks" => declared_networks = networks::top(cx, stack, &e),
            "include" if !e.is_null() => cx.error(
                &e,
                "include is not supported yet: the services of the included files would be missing; \
                 pass each file with -c (later files are merged over earlier ones)",
            ),
            _ => cx.unknown_key(&e, &keys::TOP),
        }
    }
    let mut spec = StackSpec {
        name: stack.to_string(),
        services: BTreeMap::new(),
        volumes,
        configs,
        secrets,
        networks: BTreeMap::new(),
    };
    let nets = Networks { stack, declared: &declared_networks };
    let implicit_default = (!declared_networks.contains_key(DEFAULT_NETWORK)).then(|| nets.implicit_default());
    match &services_at {
        None => cx.error_in(0, 1, 1, "services", "the stack has no services: add a `services:` section"),
        Some(at) => {
            let entries = at.map(cx).unwrap_or_default();
            if entries.is_empty() && !matches!(at.node.kind, Kind::Scalar { .. } | Kind::Seq(_)) {
                cx.error(at, "the stack has no services");
            }
            let enabled = depends::enabled_services(cx, &entries, profiles);
            for e in &entries {
                if let Some(svc) = service::service(cx, e, &spec, &nets)
                    && enabled.contains(&svc.name)
                {
                    spec.services.insert(svc.name.clone(), svc);
                }
            }
            if enabled.is_empty() && !entries.is_empty() {
                cx.error(at, "no service is deployed: each has `profiles:`; enable one with --profile");
            }
            for (name, deps) in depends::check(cx, &entries, &enabled, &spec.services) {
                if let Some(svc) = spec.services.get_mut(&name) {
                    svc.depends_on = deps;
                }
            }
        }
    }
    spec.networks = declared_networks.clone();
    // `network_mode: host|none` joins Docker's network of that name.
    for name in RESERVED_NETWORKS {
        if spec.services.values().any(|s| s.task.networks.iter().any(|a| a.network == *name)) {
            let (key, net) = networks::engine_network(&declared_networks, name);
            match spec.networks.get(&key) {
                Some(n) if n.name != *name => {
                    let path = format!("networks.{key}");
                    let (file, line, col) = locate(root, &path);
                    cx.error_in(
                        file,
                        line,
                        col,
                        &path,
                        format!(
                            "network_mode: {name} joins Docker's {name} network under this key: rename this \
                             network, or declare `{key}: {{external: true, name: {name}}}`"
                        ),
                    );
                }
                _ => {
                    spec.networks.insert(key, net);
                }
            }
        }
    }
    // The implicit `default` network exists when a service joins it.
    if let Some(default) = implicit_default
        && spec.services.values().any(|s| s.task.networks.iter().any(|a| a.network == default.name))
    {
        spec.networks.insert(DEFAULT_NETWORK.to_string(), default);
    }
    if cx.errors.is_empty() {
        // The last line of defence: what `apply` checks must never fail here.
        if let Err(problems) = validate::stack_spec(&spec) {
            // The stack name is checked by `load`, with a file-less diagnostic;
            // network names derived from an invalid one are its consequences.
            let stack_ok = is_valid_name(stack);
            let consequence = |p: &str| {
                p.starts_with("stack name") || (!stack_ok && p.starts_with("networks.") && p.contains(".name: "))
            };
            for p in problems.into_iter().filter(|p| !consequence(p)) {
                let (path, message) = match p.split_once(": ") {
                    Some((path, msg)) if path.starts_with("services.") || path.starts_with("networks.") => {
                        (path.to_string(), msg.to_string())
                    }
                    _ => (String::new(), p.clone()),
                };
                let (file, line, col) = locate(root, &path);
                cx.error_in(file, line, col, &path, message);
            }
        }
    }
    spec
}

/// The top-level `volumes:` section.
fn top_volumes(cx: &mut Ctx, stack: &str, at: &At<'_>) -> BTreeMap<String, VolumeSpec> {
    let mut out = BTreeMap::new();
    for e in at.map(cx).unwrap_or_default() {
        if !is_valid_name(e.key) {
            cx.error(
                &e,
                "volume name is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            );
            continue;
        }
        if let Some(v) = volume(cx, stack, &e) {
            out.insert(e.key.to_string(), v);
        }
    }
    out
}

/// One top-level volume: `data:`, `data: {external: true}`,
/// `data: {name: x, driver: y, driver_opts: …, labels: …}`.
fn volume(cx: &mut Ctx, stack: &str, at: &At<'_>) -> Option<VolumeSpec> {
    let mut external = false;
    let mut name = None;
    let mut driver = None;
    let mut labels = BTreeMap::new();
    let mut driver_opts = BTreeMap::new();
    let mut managed_key = None;
    for e in at.map(cx)? {
        match e.key {
            "external" => match &e.node.kind {
                // Legacy form: `external: {name: x}`.
                Kind::Map(_) => {
                    external = true;
                    for inner in e.map(cx).unwrap_or_default() {
                        match inner.key {
                            "name" => name = inner.string(cx),
                            _ => cx.unknown_key(&inner, &keys::EXTERNAL),
                        }
                    }
                }
                _ => external = e.boolean(cx).unwrap_or(false),
            },
            "name" => name = e.string(cx),
            "driver" => {
                driver = e.opt_string(cx);
                managed_key = Some(e);
            }
            "labels" => {
                for (_, k, v) in e.pairs(cx) {
                    labels.insert(k, v.unwrap_or_default());
                }
                managed_key = Some(e);
            }
            "driver_opts" => {
                for (item, key, value) in e.pairs(cx) {
                    match value {
                        Some(v) => {
                            driver_opts.insert(key, v);
                        }
                        None => cx.error(&item, format!("driver option {key} needs a value")),
                    }
                }
                managed_key = Some(e);
            }
            _ => cx.unknown_key(&e, &keys::VOLUME),
        }
    }
    if let (true, Some(k)) = (external, &managed_key) {
        cx.error(k, format!("cannot be set on an external volume (volume {} is not managed by stackd)", at.key));
    }
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        cx.error(at, "the volume's name must not be empty");
    }
    let name = name.unwrap_or_else(|| if external { at.key.to_string() } else { format!("{stack}_{}", at.key) });
    Some(VolumeSpec { name, external, driver, labels, driver_opts })
}

/// The position (file, line, column) of the deepest node the dotted `path`
/// reaches (keys may themselves hold dots); line and column 0 when not even
/// the first key is found.
fn locate(root: &Node, path: &str) -> (usize, usize, usize) {
    let mut node = root;
    let mut rest = path;
    let mut found = (root.file, 0, 0);
    while !rest.is_empty() {
        let Kind::Map(entries) = &node.kind else { break };
        let next = entries.iter().filter(|e| {
            rest.strip_prefix(e.key.as_str()).is_some_and(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['))
        });
        let Some(e) = next.max_by_key(|e| e.key.len()) else { break };
        found = (e.file, e.line, e.col);
        node = &e.value;
        rest = rest[e.key.len()..].trim_start_matches('.');
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_follows_dotted_keys() {
        let root = yaml::parse("services:\n  a.b:\n    image: x\n").root.expect("root");
        assert_eq!(locate(&root, "services.a.b.image"), (0, 3, 5));
        assert_eq!(locate(&root, "services.a.b.nothing"), (0, 2, 3));
        assert_eq!(locate(&root, "nothing"), (0, 0, 0));
    }
}
