//! Several stack files → one tree, by compose's merge rules, before typing.
//!
//! Each file is parsed and interpolated on its own; the trees are then
//! merged in order, each over the result of the ones before. Every node
//! keeps the file, line and column it was written at, so the typing layer
//! reports a problem in the file the value came from.
//!
//! The rules (compose-spec `13-merge.md`, as compose-go applies them):
//!
//! - Mappings merge key by key; a key only in the later file is added.
//! - Scalars are replaced. A later `null` (`key:`) changes nothing, except
//!   for `command`, `entrypoint` and `healthcheck.test`, which are always
//!   replaced, whatever their form.
//! - Lists are appended, except:
//!   - `ports`, `volumes`, `secrets`, `configs`, `expose`, `dns`, `dns_opt`,
//!     `dns_search`, `cap_add`, `cap_drop`, `tmpfs`, `env_file`, `devices`,
//!     `profiles`, `links`, `label_file`: an item of a later file replaces an
//!     earlier item with the same identity, in place; others are appended.
//!     (`dns`, `dns_opt`, `dns_search`, `tmpfs`, `env_file` and `label_file`
//!     may be a single string: a list of one.)
//!     Identity: ports (host IP, published, target, protocol), volumes,
//!     devices (target), secrets and configs (target, or the source's
//!     default target), env files (path), the rest (the text before `=`).
//!   - `environment`, `labels`, `deploy.labels`, `annotations`, `sysctls`,
//!     `extra_hosts`, `build.args`, `build.labels`, and the `labels` of
//!     top-level volumes and networks merge by key, written as a list
//!     (`KEY=VALUE`) or a mapping in either file; the result is a mapping.
//!   - `depends_on` and a service's `networks` merge by name (list or
//!     mapping).
//! - `x-stackd-autoscale` merges key by key, but its `target` is replaced
//!   (a later `{connections: 50}` replaces an earlier `{cpu: 70%}`).
//! - `logging` merges only when the drivers are the same (or one is not set);
//!   otherwise the later replaces it. `build: DIR` is `build: {context: DIR}`.
//!   Each `ulimits` entry is replaced.
//! - `!reset` on a value removes its key, from the file and from those
//!   before; `!override` replaces the value of the files before, unmerged.
//!   Both apply to the value of a mapping key; on a list item they are
//!   ignored with a warning, as compose ignores them.
//!
//! Items of one file are never merged with each other: duplicates within a
//! file stay, and are reported by the typing layer as before.

use std::collections::HashMap;

use super::ctx::Ctx;
use super::values;
use super::yaml::{Entry, Kind, MergeTag, Node};
use crate::model::Protocol;

/// The first file's tree: its tags applied (`!reset` keys removed).
pub(crate) fn first(cx: &mut Ctx, root: Node) -> Node {
    resolve(cx, &Path::Root, root)
}

/// `over` (a later file's tree) merged over `base` (the merge of the files
/// before).
pub(crate) fn merge(cx: &mut Ctx, base: Node, over: Node) -> Node {
    merge_node(cx, Rule::Generic, Place::Root, &Path::Root, base, over)
}

/// The service `over` merged over `base`, the service it extends
/// (`extends:`), by the rules that merge files.
pub(crate) fn merge_service(cx: &mut Ctx, name: &str, base: Node, over: Node) -> Node {
    let services = Path::Key(&Path::Root, "services");
    merge_node(cx, Rule::Generic, Place::Service, &Path::Key(&services, name), base, over)
}

/// Where a value is in the compose model, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Root,
    Services,
    Service,
    Build,
    Deploy,
    Healthcheck,
    Ulimits,
    Autoscale,
    TopVolumes,
    TopNetworks,
    TopVolume,
    TopNetwork,
    Other,
}

/// How a value merges with the earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Mappings by key, lists appended, scalars replaced.
    Generic,
    /// Always the later value (`command`, `entrypoint`, `healthcheck.test`).
    Replace,
    /// `KEY=VALUE` pairs (list or mapping) by key; `report`: items that are
    /// not pairs are errors (the key is typed by stackd); `colon`: `host:ip`
    /// items are pairs too (`extra_hosts`).
    Pairs { report: bool, colon: bool },
    /// Lists whose items have an identity; `scalar`: a single string is a
    /// list of one (`dns: 10.0.0.2`).
    Unique { id: Identity, scalar: bool },
    /// Lists of names or mappings by name (`depends_on`, `networks`).
    Names,
    /// `logging`.
    Logging,
    /// `build`.
    Build,
}

/// What identifies an item of a [`Rule::Unique`] list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// Host IP, published port, target port, protocol.
    Port,
    /// The mount target.
    Mount,
    /// The target, or `DIR/SOURCE`.
    Target(&'static str),
    /// An env file's path.
    EnvFile,
    /// A device's target.
    Device,
    /// The text before `=` (the whole text without one).
    Text,
}

/// The rule for the key `key` of a mapping at `place`, and the place of its value.
fn rule(place: Place, key: &str) -> (Rule, Place) {
    let pairs = |report| (Rule::Pairs { report, colon: false }, Place::Other);
    let unique = |id| (Rule::Unique { id, scalar: false }, Place::Other);
    let unique_or_one = |id| (Rule::Unique { id, scalar: true }, Place::Other);
    match (place, key) {
        (Place::Root, "services") => (Rule::Generic, Place::Services),
        (Place::Root, "volumes") => (Rule::Generic, Place::TopVolumes),
        (Place::Root, "networks") => (Rule::Generic, Place::TopNetworks),
        (Place::Services, _) => (Rule::Generic, Place::Service),
        (Place::TopVolumes, _) => (Rule::Generic, Place::TopVolume),
        (Place::TopNetworks, _) => (Rule::Generic, Place::TopNetwork),
        (Place::TopVolume, "labels") => pairs(true),
        (Place::TopNetwork, "labels") => pairs(true),
        (Place::Service, "command" | "entrypoint")
        | (Place::Healthcheck, "test")
        | (Place::Ulimits, _)
        | (Place::Autoscale, "target") => (Rule::Replace, Place::Other),
        (Place::Service, super::autoscale::KEY) => (Rule::Generic, Place::Autoscale),
        (Place::Service, "environment" | "labels") | (Place::Deploy, "labels") => pairs(true),
        (Place::Service, "sysctls") => pairs(true),
        (Place::Service, "annotations") | (Place::Build, "args" | "labels") => pairs(false),
        (Place::Service, "extra_hosts") => (Rule::Pairs { report: true, colon: true }, Place::Other),
        (Place::Build, "extra_hosts") => (Rule::Pairs { report: false, colon: true }, Place::Other),
        (Place::Service, "ports") => unique(Identity::Port),
        (Place::Service, "volumes") => unique(Identity::Mount),
        (Place::Service, "secrets") => unique(Identity::Target("/run/secrets")),
        (Place::Service, "configs") => unique(Identity::Target("")),
        (Place::Service, "env_file") => unique_or_one(Identity::EnvFile),
        (Place::Service, "devices") => unique(Identity::Device),
        (Place::Service, "dns" | "dns_opt" | "dns_search" | "tmpfs" | "label_file") => unique_or_one(Identity::Text),
        (Place::Service, "expose" | "cap_add" | "cap_drop" | "profiles" | "links") => unique(Identity::Text),
        (Place::Service, "depends_on" | "networks") => (Rule::Names, Place::Other),
        (Place::Service, "logging") => (Rule::Logging, Place::Other),
        (Place::Service, "build") => (Rule::Build, Place::Build),
        (Place::Service, "deploy") => (Rule::Generic, Place::Deploy),
        (Place::Service, "healthcheck") => (Rule::Generic, Place::Healthcheck),
        (Place::Service, "ulimits") => (Rule::Generic, Place::Ulimits),
        _ => (Rule::Generic, Place::Other),
    }
}

/// The key path of a value, rendered only for a message: aliases can
/// repeat long keys, so rendering every path of a tree could be costly.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Item(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(Path::Root, key) => (*key).to_string(),
            Path::Key(parent, key) => format!("{}.{key}", parent.render()),
            Path::Item(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

/// A node of kind `kind` at the position of `at`, untagged.
fn node_like(kind: Kind, at: &Node) -> Node {
    let height = 1 + match &kind {
        Kind::Map(entries) => entries.iter().map(|e| e.value.height).max().unwrap_or(0),
        Kind::Seq(items) => items.iter().map(|n| n.height).max().unwrap_or(0),
        Kind::Null | Kind::Scalar { .. } => 0,
    };
    Node { kind, file: at.file, line: at.line, col: at.col, index: at.index, tag: None, height }
}

/// Warns that a tag on a list item does nothing.
fn item_tag(cx: &mut Ctx, path: &Path<'_>, item: &Node) {
    if let Some(tag) = item.tag {
        let message = format!("`{}` only applies to the value of a key, not to a list item; ignored", tag.as_str());
        cx.warn_in(item.file, item.line, item.col, &Path::Item(path, item.index).render(), message);
    }
}

/// A list item with its tags applied (warned about on the item itself).
fn resolve_item(cx: &mut Ctx, path: &Path<'_>, item: Node) -> Node {
    item_tag(cx, path, &item);
    let index = item.index;
    resolve(cx, &Path::Item(path, index), item)
}

/// `node` with its tags applied: keys tagged `!reset` removed, the tags
/// dropped.
fn resolve(cx: &mut Ctx, path: &Path<'_>, mut node: Node) -> Node {
    node.tag = None;
    match node.kind {
        Kind::Map(entries) => {
            let entries = entries
                .into_iter()
                .filter(|e| e.value.tag != Some(MergeTag::Reset))
                .map(|Entry { key, file, line, col, value }| {
                    let value = resolve(cx, &Path::Key(path, &key), value);
                    Entry { key, file, line, col, value }
                })
                .collect();
            node.kind = Kind::Map(entries);
        }
        Kind::Seq(items) => {
            let items = items.into_iter().map(|item| resolve_item(cx, path, item)).collect();
            node.kind = Kind::Seq(items);
        }
        Kind::Null | Kind::Scalar { .. } => {}
    }
    node
}

/// `over` merged over `base` at `path` (both values of the same key).
fn merge_node(cx: &mut Ctx, rule: Rule, place: Place, path: &Path<'_>, base: Node, over: Node) -> Node {
    if rule == Rule::Replace || over.tag == Some(MergeTag::Override) {
        return resolve(cx, path, over);
    }
    if over.kind == Kind::Null {
        return base;
    }
    if base.kind == Kind::Null {
        return resolve(cx, path, over);
    }
    // The kinds are taken out; `base` and `over` keep the positions.
    let (mut base, mut over) = (base, over);
    let base_kind = std::mem::replace(&mut base.kind, Kind::Null);
    let over_kind = std::mem::replace(&mut over.kind, Kind::Null);
    match (rule, base_kind, over_kind) {
        (
            Rule::Pairs { report, colon },
            base_kind @ (Kind::Map(_) | Kind::Seq(_)),
            over_kind @ (Kind::Map(_) | Kind::Seq(_)),
        ) => {
            let base_entries = pairs(cx, path, base_kind, report, colon);
            let over_entries = pairs(cx, path, over_kind, report, colon);
            let entries = merge_keyed(cx, Place::Other, path, base_entries, over_entries, false);
            node_like(Kind::Map(entries), &base)
        }
        (Rule::Unique { id, scalar }, base_kind, over_kind)
            if items_of(&base_kind, scalar) && items_of(&over_kind, scalar) =>
        {
            let base_items = into_items(base_kind, &base);
            let over_items = into_items(over_kind, &over);
            let items = merge_unique(cx, path, id, base_items, over_items);
            node_like(Kind::Seq(items), &base)
        }
        (Rule::Names, base_kind @ (Kind::Map(_) | Kind::Seq(_)), over_kind @ (Kind::Map(_) | Kind::Seq(_))) => {
            let entries = merge_keyed(cx, Place::Other, path, names(base_kind), names(over_kind), true);
            node_like(Kind::Map(entries), &base)
        }
        (Rule::Logging, Kind::Map(base_entries), Kind::Map(over_entries)) => {
            let replace = matches!((driver(&base_entries), driver(&over_entries)), (Some(a), Some(b)) if a != b);
            if replace {
                resolve(cx, path, Node { kind: Kind::Map(over_entries), ..over })
            } else {
                let entries = merge_keyed(cx, Place::Other, path, base_entries, over_entries, true);
                node_like(Kind::Map(entries), &base)
            }
        }
        (
            Rule::Build,
            base_kind @ (Kind::Map(_) | Kind::Scalar { .. }),
            over_kind @ (Kind::Map(_) | Kind::Scalar { .. }),
        ) => {
            let base_entries = build(base_kind, &base);
            let over_entries = build(over_kind, &over);
            let entries = merge_keyed(cx, place, path, base_entries, over_entries, true);
            node_like(Kind::Map(entries), &base)
        }
        (Rule::Generic, Kind::Map(base_entries), Kind::Map(over_entries)) => {
            let entries = merge_keyed(cx, place, path, base_entries, over_entries, true);
            node_like(Kind::Map(entries), &base)
        }
        (Rule::Generic, Kind::Seq(mut items), Kind::Seq(over_items)) => {
            for item in over_items {
                items.push(resolve_item(cx, path, item));
            }
            node_like(Kind::Seq(items), &base)
        }
        // Different shapes, or a scalar where a collection belongs: the later
        // value wins, and is typed (and reported) as written.
        (_, _, over_kind) => resolve(cx, path, Node { kind: over_kind, ..over }),
    }
}

/// Merges the entries `over` into `base` (a mapping at `place`, `path`).
/// `recurse`: values of the same key merge by the rules of their place;
/// otherwise (pairs) the later replaces the earlier.
fn merge_keyed(
    cx: &mut Ctx,
    place: Place,
    path: &Path<'_>,
    base: Vec<Entry>,
    over: Vec<Entry>,
    recurse: bool,
) -> Vec<Entry> {
    let mut out: Vec<Option<Entry>> = Vec::with_capacity(base.len() + over.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(base.len() + over.len());
    for e in base {
        // Keys of a mapping are unique; pairs written as a list may repeat
        // one: the last wins, at its own place.
        if let Some(&i) = index.get(&e.key) {
            out[i] = None;
        }
        index.insert(e.key.clone(), out.len());
        out.push(Some(e));
    }
    for Entry { key, file, line, col, value } in over {
        let earlier = index.get(&key).copied().and_then(|i| out[i].take().map(|b| (i, b)));
        if value.tag == Some(MergeTag::Reset) {
            // Removed: the earlier entry was taken above.
            continue;
        }
        let child = Path::Key(path, &key);
        match earlier {
            Some((i, b)) => {
                let (rule, child_place) = if recurse { rule(place, &key) } else { (Rule::Replace, Place::Other) };
                let replaced = rule == Rule::Replace || value.tag == Some(MergeTag::Override);
                // A mapping merged into a mapping, or a null that changes
                // nothing, stays reported at the earlier key.
                let keep_key = !replaced
                    && (value.kind == Kind::Null
                        || (matches!(b.value.kind, Kind::Map(_)) && matches!(value.kind, Kind::Map(_))));
                let value = merge_node(cx, rule, child_place, &child, b.value, value);
                out[i] = Some(if keep_key { Entry { value, ..b } } else { Entry { key, file, line, col, value } });
            }
            None => {
                let value = resolve(cx, &child, value);
                index.insert(key.clone(), out.len());
                out.push(Some(Entry { key, file, line, col, value }));
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// `KEY=VALUE` pairs (a list or a mapping) as mapping entries, each at the
/// position of its item or key. List items that are not pairs are dropped;
/// with `report`, as errors worded as the typing layer words them (they
/// have no key, so nothing could override them).
fn pairs(cx: &mut Ctx, path: &Path<'_>, kind: Kind, report: bool, colon: bool) -> Vec<Entry> {
    let error = |cx: &mut Ctx, node: &Node, path: &Path<'_>, message: String| {
        if report {
            cx.error_in(node.file, node.line, node.col, &path.render(), message);
        }
    };
    match kind {
        Kind::Map(entries) => entries,
        Kind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let p = Path::Item(path, item.index);
                item_tag(cx, path, &item);
                let Kind::Scalar { text, .. } = &item.kind else {
                    error(cx, &item, &p, format!("must be a string, got {}", item.describe()));
                    continue;
                };
                let split = match text.split_once('=') {
                    None if colon => text.split_once(':'),
                    found => found,
                };
                let (key, value) = match split {
                    Some((k, v)) => (k.to_string(), Kind::Scalar { text: v.to_string(), quoted: true }),
                    None => (text.clone(), Kind::Null),
                };
                if key.is_empty() {
                    error(cx, &item, &p, "must be KEY=VALUE, with a key".to_string());
                    continue;
                }
                let (file, line, col) = (item.file, item.line, item.col);
                let value = Node { kind: value, index: 0, tag: None, height: 1, ..item };
                out.push(Entry { key, file, line, col, value });
            }
            out
        }
        // Not merged (see `merge_node`): the later value replaces a scalar.
        Kind::Null | Kind::Scalar { .. } => Vec::new(),
    }
}

/// Whether a value of kind `kind` is a list (or, with `scalar`, a string
/// standing for a list of one).
fn items_of(kind: &Kind, scalar: bool) -> bool {
    matches!(kind, Kind::Seq(_)) || (scalar && matches!(kind, Kind::Scalar { .. }))
}

/// The items of a list, or a string (at `at`) as a list of one.
fn into_items(kind: Kind, at: &Node) -> Vec<Node> {
    match kind {
        Kind::Seq(items) => items,
        kind => vec![Node { kind, index: 0, tag: None, ..at.clone() }],
    }
}

/// Names (a list) or a mapping by name, as mapping entries; a name without
/// settings has a null value.
fn names(kind: Kind) -> Vec<Entry> {
    match kind {
        Kind::Map(entries) => entries,
        Kind::Seq(items) => items
            .into_iter()
            .filter_map(|item| match &item.kind {
                Kind::Scalar { text, .. } => Some(Entry {
                    key: text.clone(),
                    file: item.file,
                    line: item.line,
                    col: item.col,
                    value: Node { kind: Kind::Null, index: 0, tag: None, height: 1, ..item },
                }),
                _ => None,
            })
            .collect(),
        Kind::Null | Kind::Scalar { .. } => Vec::new(),
    }
}

/// `build:` as mapping entries: a string is the context.
fn build(kind: Kind, at: &Node) -> Vec<Entry> {
    match kind {
        Kind::Map(entries) => entries,
        kind @ Kind::Scalar { .. } => {
            let value = Node { kind, index: 0, tag: None, height: 1, ..at.clone() };
            vec![Entry { key: "context".to_string(), file: at.file, line: at.line, col: at.col, value }]
        }
        Kind::Null | Kind::Seq(_) => Vec::new(),
    }
}

/// Items of `over` replace the items of `base` with the same identity, in
/// place (each at most once, so duplicates within `over` stay); the others
/// are appended.
fn merge_unique(cx: &mut Ctx, path: &Path<'_>, id: Identity, base: Vec<Node>, over: Vec<Node>) -> Vec<Node> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(base.len());
    for (i, item) in base.iter().enumerate() {
        if let Some(k) = identity(id, item) {
            seen.entry(k).or_insert(i);
        }
    }
    let mut out = base;
    for item in over {
        let item = resolve_item(cx, path, item);
        match identity(id, &item).and_then(|k| seen.remove(&k)) {
            Some(i) => out[i] = item,
            None => out.push(item),
        }
    }
    out
}

/// The text of the `driver` key among `entries`.
fn driver(entries: &[Entry]) -> Option<&str> {
    entries.iter().find(|e| e.key == "driver").and_then(|e| text(&e.value))
}

/// The scalar text of `node`, if it is a scalar.
fn text(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

/// The text of the key `key` of the mapping `node`.
fn field<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match &node.kind {
        Kind::Map(entries) => entries.iter().find(|e| e.key == key).and_then(|e| text(&e.value)),
        _ => None,
    }
}

/// The identity of a list item; `None` when it has none that can be read
/// (it is then appended, and the typing layer says what is wrong with it).
fn identity(id: Identity, item: &Node) -> Option<String> {
    match id {
        Identity::Port => {
            let (host_ip, published, target, protocol) = match &item.kind {
                Kind::Scalar { text, .. } => {
                    // A range is identified by its first port.
                    let p = values::parse_port_short(text).ok()?.into_iter().next()?;
                    (p.host_ip, p.published, p.target, p.protocol)
                }
                Kind::Map(_) => {
                    let target = values::parse_port_number(field(item, "target")?, "target").ok()?;
                    let published = match field(item, "published") {
                        Some(p) => Some(values::parse_port_number(p, "published").ok()?),
                        None => None,
                    };
                    let protocol = match field(item, "protocol") {
                        Some(p) => values::parse_protocol(p).ok()?,
                        None => Protocol::Tcp,
                    };
                    let host_ip = match field(item, "host_ip") {
                        Some(ip) => values::parse_host_ip(ip).ok()?,
                        None => String::new(),
                    };
                    (host_ip, published, target, protocol)
                }
                _ => return None,
            };
            let host_ip = if host_ip == "0.0.0.0" { "" } else { host_ip.as_str() };
            let published = published.map(|p| p.to_string()).unwrap_or_default();
            Some(format!("{host_ip}|{published}|{target}|{}", protocol.as_str()))
        }
        Identity::Mount => match &item.kind {
            Kind::Scalar { text, .. } => values::parse_volume_short(text).ok().map(|v| v.target.to_string()),
            _ => field(item, "target").map(str::to_string),
        },
        Identity::Target(dir) => match &item.kind {
            Kind::Scalar { text, .. } => Some(format!("{dir}/{text}")),
            _ => {
                field(item, "target").map(str::to_string).or_else(|| Some(format!("{dir}/{}", field(item, "source")?)))
            }
        },
        Identity::EnvFile => match &item.kind {
            Kind::Scalar { text, .. } => Some(text.clone()),
            _ => field(item, "path").map(str::to_string),
        },
        Identity::Device => match &item.kind {
            Kind::Scalar { text, .. } => {
                let mut parts = text.split(':');
                let first = parts.next()?;
                Some(parts.next().unwrap_or(first).to_string())
            }
            _ => field(item, "target").map(str::to_string),
        },
        Identity::Text => text(item).map(|t| t.split_once('=').map_or(t, |(k, _)| k).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::loader::yaml::parse_in;

    /// A compact flow form of a tree: `{k: v}`, `[a, b]`, `~`.
    fn render(node: &Node) -> String {
        match &node.kind {
            Kind::Null => "~".to_string(),
            Kind::Scalar { text, .. } => text.clone(),
            Kind::Map(entries) => {
                let inner: Vec<String> = entries.iter().map(|e| format!("{}: {}", e.key, render(&e.value))).collect();
                format!("{{{}}}", inner.join(", "))
            }
            Kind::Seq(items) => format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(", ")),
        }
    }

    /// The service `s` of the files (YAML flow mappings, one per file) merged.
    fn merged(texts: &[&str]) -> String {
        let mut cx = Ctx::new(texts.iter().enumerate().map(|(i, _)| format!("f{i}")).collect(), BTreeMap::new());
        let mut out: Option<Node> = None;
        for (i, text) in texts.iter().enumerate() {
            let root = parse_in(i, &format!("services:\n  s: {text}\n")).root.expect("valid YAML");
            out = Some(match out {
                None => first(&mut cx, root),
                Some(base) => merge(&mut cx, base, root),
            });
        }
        assert!(cx.errors.is_empty(), "{:?}", cx.errors);
        let root = out.expect("a file");
        let Kind::Map(top) = &root.kind else { panic!("not a mapping") };
        let Kind::Map(services) = &top[0].value.kind else { panic!("no services") };
        render(&services[0].value)
    }

    #[test]
    fn scalars_maps_and_plain_lists() {
        assert_eq!(merged(&["{a: 1, b: {c: 2, d: 3}}", "{a: 9, b: {d: 4, e: 5}}"]), "{a: 9, b: {c: 2, d: 4, e: 5}}");
        // Lists without an identity are appended.
        assert_eq!(merged(&["{security_opt: [a, b]}", "{security_opt: [b, c]}"]), "{security_opt: [a, b, b, c]}");
        assert_eq!(
            merged(&["{deploy: {placement: {constraints: [x]}}}", "{deploy: {placement: {constraints: [y]}}}"]),
            "{deploy: {placement: {constraints: [x, y]}}}"
        );
        // A later null changes nothing; another shape replaces.
        assert_eq!(merged(&["{a: [1], b: x}", "{a: ~, b: [y]}"]), "{a: [1], b: [y]}");
    }

    #[test]
    fn unique_lists_replace_by_identity() {
        assert_eq!(
            merged(&["{cap_add: [NET_ADMIN, SYS_TIME]}", "{cap_add: [SYS_TIME, MKNOD]}"]),
            "{cap_add: [NET_ADMIN, SYS_TIME, MKNOD]}"
        );
        assert_eq!(merged(&["{dns: 10.0.0.2}", "{dns: [10.0.0.3, 10.0.0.2]}"]), "{dns: [10.0.0.2, 10.0.0.3]}");
        assert_eq!(merged(&["{expose: ['80', '81']}", "{expose: ['81', '82']}"]), "{expose: [80, 81, 82]}");
        assert_eq!(
            merged(&[
                "{secrets: [a, {source: b, target: /etc/b}]}",
                "{secrets: [{source: c, target: /run/secrets/a}, {source: d, target: /etc/b}]}"
            ]),
            "{secrets: [{source: c, target: /run/secrets/a}, {source: d, target: /etc/b}]}"
        );
        assert_eq!(
            merged(&["{configs: [a]}", "{configs: [{source: a, mode: 0440}]}"]),
            "{configs: [{source: a, mode: 0440}]}"
        );
        assert_eq!(
            merged(&["{env_file: a.env}", "{env_file: [{path: a.env, required: false}, b.env]}"]),
            "{env_file: [{path: a.env, required: false}, b.env]}"
        );
        assert_eq!(
            merged(&["{devices: ['/dev/a:/dev/x']}", "{devices: ['/dev/b:/dev/x']}"]),
            "{devices: [/dev/b:/dev/x]}"
        );
        assert_eq!(
            merged(&["{ports: ['0.0.0.0:80:80']}", "{ports: [{target: 80, published: '80', mode: host}]}"]),
            "{ports: [{target: 80, published: 80, mode: host}]}"
        );
    }

    #[test]
    fn pairs_merge_by_key_into_a_mapping() {
        assert_eq!(
            merged(&["{environment: [A=1, B]}", "{environment: {B: 2, C: ~}}"]),
            "{environment: {A: 1, B: 2, C: ~}}"
        );
        assert_eq!(merged(&["{sysctls: {a.b: 1}}", "{sysctls: [a.b=2, c=3]}"]), "{sysctls: {a.b: 2, c: 3}}");
        assert_eq!(
            merged(&["{extra_hosts: ['db:10.0.0.1', 'x=::1']}", "{extra_hosts: {db: 10.0.0.2}}"]),
            "{extra_hosts: {db: 10.0.0.2, x: ::1}}"
        );
        // Within one list the last wins.
        assert_eq!(merged(&["{labels: [a=1, a=2]}", "{labels: [b=3]}"]), "{labels: {a: 2, b: 3}}");
    }

    #[test]
    fn special_keys() {
        assert_eq!(
            merged(&["{command: [a, b], entrypoint: x}", "{command: [c], entrypoint: ~}"]),
            "{command: [c], entrypoint: ~}"
        );
        assert_eq!(
            merged(&["{healthcheck: {test: [CMD, a], retries: 3}}", "{healthcheck: {test: [CMD, b]}}"]),
            "{healthcheck: {test: [CMD, b], retries: 3}}"
        );
        assert_eq!(
            merged(&["{depends_on: [db]}", "{depends_on: {cache: {condition: service_healthy}}}"]),
            "{depends_on: {db: ~, cache: {condition: service_healthy}}}"
        );
        assert_eq!(
            merged(&["{networks: {front: {aliases: [a]}}}", "{networks: [back]}"]),
            "{networks: {front: {aliases: [a]}, back: ~}}"
        );
        assert_eq!(
            merged(&["{logging: {driver: a, options: {x: 1}}}", "{logging: {options: {y: 2}}}"]),
            "{logging: {driver: a, options: {x: 1, y: 2}}}"
        );
        assert_eq!(
            merged(&["{logging: {driver: a, options: {x: 1}}}", "{logging: {driver: b}}"]),
            "{logging: {driver: b}}"
        );
        assert_eq!(
            merged(&["{build: ./app}", "{build: {dockerfile: Dockerfile.prod}}"]),
            "{build: {context: ./app, dockerfile: Dockerfile.prod}}"
        );
        assert_eq!(
            merged(&["{ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}}", "{ulimits: {nofile: 3}}"]),
            "{ulimits: {nofile: 3, nproc: 5}}"
        );
    }

    #[test]
    fn tags() {
        assert_eq!(merged(&["{a: {b: 1, c: 2}, d: [1]}", "{a: !override {b: 3}, d: !reset []}"]), "{a: {b: 3}}");
        assert_eq!(merged(&["{a: 1}", "{b: !reset 2, c: {d: !reset 3, e: !override 4}}"]), "{a: 1, c: {e: 4}}");
        assert_eq!(merged(&["{environment: {A: 1, B: 2}}", "{environment: {A: !reset ~}}"]), "{environment: {B: 2}}");
        assert_eq!(merged(&["{a: !reset 1, b: !override 2}"]), "{b: 2}");
    }

    #[test]
    fn merged_values_keep_their_files_and_positions() {
        let mut cx = Ctx::new(vec!["a".into(), "b".into()], BTreeMap::new());
        let a = parse_in(0, "services:\n  web:\n    image: x\n    ports: ['80:80']\n").root.expect("a");
        let b = parse_in(1, "services:\n  web:\n    image: y\n    ports:\n      - '81:81'\n").root.expect("b");
        let base = first(&mut cx, a);
        let root = merge(&mut cx, base, b);
        let Kind::Map(top) = &root.kind else { panic!() };
        let services = &top[0];
        let Kind::Map(svcs) = &services.value.kind else { panic!() };
        let web = &svcs[0];
        // The service was merged: reported at its first definition.
        assert_eq!((web.file, web.line, web.col), (0, 2, 3));
        let Kind::Map(keys) = &web.value.kind else { panic!() };
        let image = &keys[0];
        assert_eq!((image.file, image.line, image.col, render(&image.value)), (1, 3, 5, "y".to_string()));
        let Kind::Seq(ports) = &keys[1].value.kind else { panic!() };
        let at: Vec<_> = ports.iter().map(|p| (p.file, p.line, p.col, p.index)).collect();
        assert_eq!(at, [(0, 4, 13, 0), (1, 5, 9, 0)]);
    }
}
