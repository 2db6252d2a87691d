//! Networks: the top-level `networks:` section and a service's `networks:`
//! (list or mapping), with the implicit `default` network.
//!
//! Every network is a local bridge network on each node that needs it (see
//! [`NetworkSpec`]); names are namespaced `<stack>_<key>` unless `name:` is
//! given or the network is `external`. A service without `networks:` joins
//! `default` (`<stack>_default`), which a top-level `default:` entry may
//! customise, as in compose and Swarm.

use std::collections::{BTreeMap, BTreeSet};

use super::ctx::{At, Ctx};
use super::keys;
use super::yaml::Kind;
use crate::model::{NetworkAttachment, NetworkSpec};
use crate::validate::{RESERVED_NETWORKS, is_valid_alias, is_valid_name, is_valid_network_name};

/// The key of the network services join when they name none.
pub(crate) const DEFAULT_NETWORK: &str = "default";

/// The stack's networks, for the services that refer to them.
pub(crate) struct Networks<'n> {
    /// The stack's name.
    pub stack: &'n str,
    /// The declared networks, by key.
    pub declared: &'n BTreeMap<String, NetworkSpec>,
}

impl Networks<'_> {
    /// The engine name of the network `key`: a declared one, or the
    /// implicit `default`; `None` when it is not declared.
    fn resolve(&self, key: &str) -> Option<String> {
        match self.declared.get(key) {
            Some(n) => Some(n.name.clone()),
            None if key == DEFAULT_NETWORK => Some(self.implicit_default().name),
            None => None,
        }
    }

    /// The `default` network when the stack does not declare it.
    pub fn implicit_default(&self) -> NetworkSpec {
        NetworkSpec { name: format!("{}_{DEFAULT_NETWORK}", self.stack), ..NetworkSpec::default() }
    }
}

/// The top-level `networks:` section.
pub(crate) fn top(cx: &mut Ctx, stack: &str, at: &At<'_>) -> BTreeMap<String, NetworkSpec> {
    let mut out = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for e in at.map(cx).unwrap_or_default() {
        if !is_valid_name(e.key) {
            cx.error(
                &e,
                "network name is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            );
            continue;
        }
        let Some(n) = network(cx, stack, &e) else { continue };
        if let Some(other) = names.insert(n.name.clone(), e.key.to_string()) {
            cx.error(&e, format!("networks {other} and {} are both named {}", e.key, n.name));
            continue;
        }
        out.insert(e.key.to_string(), n);
    }
    out
}

/// One top-level network: `back:`, `back: {external: true}`,
/// `back: {name: x, driver: bridge, internal: true, labels: …, driver_opts: …}`.
fn network(cx: &mut Ctx, stack: &str, at: &At<'_>) -> Option<NetworkSpec> {
    let mut spec = NetworkSpec::default();
    let mut name: Option<(At<'_>, String)> = None;
    // Keys that only make sense for a network stackd creates.
    let mut managed_keys = Vec::new();
    let entries = at.map(cx)?;
    for e in entries {
        match e.key {
            "external" => match &e.node.kind {
                // Legacy form: `external: {name: x}`.
                Kind::Map(_) => {
                    spec.external = true;
                    for inner in e.map(cx).unwrap_or_default() {
                        match inner.key {
                            "name" => name = inner.string(cx).map(|n| (inner.clone(), n)),
                            _ => cx.unknown_key(&inner, &keys::EXTERNAL),
                        }
                    }
                }
                _ => spec.external = !e.is_null() && e.boolean(cx).unwrap_or(false),
            },
            "name" => {
                if !e.is_null() {
                    name = e.string(cx).map(|n| (e.clone(), n));
                }
            }
            "driver" => {
                spec.driver = e.opt_string(cx);
                match spec.driver.as_deref() {
                    Some(d) if d.trim().is_empty() || d.contains(char::is_whitespace) => {
                        cx.error(&e, format!("{d:?} is not a driver name"));
                    }
                    Some(d) if RESERVED_NETWORKS.contains(&d) => cx.error(
                        &e,
                        format!(
                            "driver `{d}` cannot be used for a stack network: use `network_mode: {d}` in the service"
                        ),
                    ),
                    _ => {}
                }
                managed_keys.push(e);
            }
            "driver_opts" => {
                for (item, key, value) in e.pairs(cx) {
                    match value {
                        Some(v) => {
                            spec.driver_opts.insert(key, v);
                        }
                        None => cx.error(&item, format!("driver option {key} needs a value")),
                    }
                }
                managed_keys.push(e);
            }
            "internal" => {
                spec.internal = !e.is_null() && e.boolean(cx).unwrap_or(false);
                if spec.internal {
                    managed_keys.push(e);
                }
            }
            "labels" => {
                for (_, k, v) in e.pairs(cx) {
                    spec.labels.insert(k, v.unwrap_or_default());
                }
                managed_keys.push(e);
            }
            // Networks stackd creates are always attachable.
            "attachable" => {
                if !e.is_null() {
                    e.boolean(cx);
                }
            }
            // The cluster gives a network its addresses (a subnet of its pool,
            // a slice per node): a subnet or an IPAM driver of the stack's
            // own would put the containers elsewhere than the file says.
            "ipam" => {
                let refused = e.map(cx).unwrap_or_default().iter().any(|item| match item.key {
                    "driver" => item.text().is_some_and(|d| d != "default"),
                    "config" | "options" => match &item.node.kind {
                        Kind::Null => false,
                        Kind::Seq(items) => !items.is_empty(),
                        Kind::Map(entries) => !entries.is_empty(),
                        Kind::Scalar { .. } => true,
                    },
                    _ => false,
                });
                if refused {
                    cx.error(
                        &e,
                        "stackd gives each stack network its addresses from the cluster's pool 10.192.0.0/12 (a subnet per network, a slice per node): remove `ipam`",
                    );
                }
            }
            "enable_ipv6" => {
                if !e.is_null() && e.boolean(cx).unwrap_or(false) {
                    cx.error(&e, "stack networks are IPv4 only: IPv6 is not supported yet");
                }
            }
            _ => cx.unknown_key(&e, &keys::NETWORK),
        }
    }
    if spec.external {
        for k in &managed_keys {
            cx.error(k, format!("cannot be set on an external network (network {} is not managed by stackd)", at.key));
        }
        spec.driver = None;
        spec.internal = false;
        spec.labels.clear();
        spec.driver_opts.clear();
    }
    let (name, name_at) = match name {
        Some((name_at, n)) => (n, Some(name_at)),
        None if spec.external => (at.key.to_string(), None),
        None => (format!("{stack}_{}", at.key), None),
    };
    // A derived name is valid when the stack's name and the key are.
    if name_at.is_some() || spec.external {
        let report = name_at.as_ref().unwrap_or(at);
        if !is_valid_network_name(&name) {
            cx.error(
                report,
                format!(
                    "{name:?} is not a valid network name: use letters, digits, '-', '_' and '.', starting with a letter or digit"
                ),
            );
        } else if RESERVED_NETWORKS.contains(&name.as_str()) && !spec.external {
            cx.error(
                report,
                format!(
                    "Docker's `{name}` network can only be joined as an external network, or with network_mode: {name}"
                ),
            );
        }
    }
    spec.name = name;
    Some(spec)
}

/// A service's `networks:`: a list of keys, or a mapping of keys to
/// `{aliases: […]}` (or null). Sorted by key, as compose connects networks
/// of the same priority; an empty section joins `default`.
pub(crate) fn attachments(cx: &mut Ctx, service: &str, at: &At<'_>, nets: &Networks<'_>) -> Vec<NetworkAttachment> {
    let mut by_key: BTreeMap<String, NetworkAttachment> = BTreeMap::new();
    let mut empty = true;
    let mut add = |cx: &mut Ctx, at: &At<'_>, key: &str, aliases: Vec<String>| match nets.resolve(key) {
        Some(network) => {
            if by_key.insert(key.to_string(), NetworkAttachment { network, aliases }).is_some() {
                cx.error(at, format!("network {key} is listed twice"));
            }
        }
        None => cx.error(at, format!("service {service} refers to undefined network {key}")),
    };
    match &at.node.kind {
        Kind::Null => {}
        Kind::Seq(_) => {
            for item in at.list(cx).unwrap_or_default() {
                empty = false;
                let Some(key) = item.string(cx) else { continue };
                add(cx, &item, &key, Vec::new());
            }
        }
        Kind::Map(_) => {
            for e in at.map(cx).unwrap_or_default() {
                empty = false;
                let aliases = aliases(cx, &e);
                add(cx, &e, e.key, aliases);
            }
        }
        Kind::Scalar { .. } => {
            cx.error(at, format!("must be a list of networks or a mapping, got {}", at.node.describe()));
            empty = false;
        }
    }
    if empty {
        return default_attachment(nets);
    }
    let attached: Vec<NetworkAttachment> = by_key.into_values().collect();
    if let Some(a) = attached.iter().find(|a| RESERVED_NETWORKS.contains(&a.network.as_str()))
        && (attached.len() > 1 || !a.aliases.is_empty())
    {
        cx.error(at, format!("Docker's `{}` network is joined alone and without aliases", a.network));
    }
    attached
}

/// The key and spec of Docker's own network `name` (`host` or `none`) that
/// `network_mode: NAME` joins: the stack's network of that name if it
/// declares one, else an external network under the key `name`.
pub(crate) fn engine_network(declared: &BTreeMap<String, NetworkSpec>, name: &str) -> (String, NetworkSpec) {
    match declared.iter().find(|(_, n)| n.name == name) {
        Some((key, n)) => (key.clone(), n.clone()),
        None => (name.to_string(), NetworkSpec { name: name.to_string(), external: true, ..NetworkSpec::default() }),
    }
}

/// What a service without `networks:` joins: the `default` network.
pub(crate) fn default_attachment(nets: &Networks<'_>) -> Vec<NetworkAttachment> {
    let network = nets.resolve(DEFAULT_NETWORK).unwrap_or_else(|| nets.implicit_default().name);
    vec![NetworkAttachment { network, aliases: Vec::new() }]
}

/// The settings of one network of a service: `aliases`, and keys that are
/// warned about and ignored.
fn aliases(cx: &mut Ctx, at: &At<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for e in at.map(cx).unwrap_or_default() {
        match e.key {
            "aliases" => {
                for item in e.list(cx).unwrap_or_default() {
                    let Some(alias) = item.string(cx) else { continue };
                    if !is_valid_alias(&alias) {
                        cx.error(
                            &item,
                            format!(
                                "alias {alias:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit"
                            ),
                        );
                    } else if seen.insert(alias.clone()) {
                        out.push(alias);
                    }
                }
            }
            // Other services would reach it at that address, which it would not have.
            "ipv4_address" | "ipv6_address" if !e.is_null() => cx.error(
                &e,
                "stackd gives each task its address (tasks come and go, on any node): reach the service by its name, a virtual address that stays",
            ),
            _ => cx.unknown_key(&e, &keys::SERVICE_NETWORK),
        }
    }
    out
}
