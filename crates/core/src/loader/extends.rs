//! `extends:`: a service written as another one plus changes.
//!
//! `extends: base` (or `{service: base}`) takes the service `base` of the
//! stack; `{service: base, file: common.yml}` takes it from another file,
//! read through the caller's reader and interpolated like a stack file. The
//! service's own keys are merged over the base's by the rules that merge
//! stack files ([`super::merge`]), so a value keeps the file and line it was
//! written at. A base may extend another; cycles are errors.
//!
//! Resolved on the merged tree, before typing. `file:` must be in the first
//! stack file's directory: relative paths in it (bind mounts, `env_file`)
//! are resolved against that directory, which would be wrong for a file
//! elsewhere.

use std::collections::BTreeMap;

use super::compat::child;
use super::ctx::{At, Ctx};
use super::keys;
use super::yaml::{Entry, Kind, Node};
use super::{merge, stack};

/// How many services one `extends` chain may go through.
const MAX_CHAIN: usize = 32;

/// Replaces every service of `root` that has `extends:` by the merge of its
/// base and itself. Problems are recorded in `cx`; a service whose base
/// cannot be resolved keeps its own keys only.
pub(crate) fn resolve(cx: &mut Ctx, root: &mut Node) {
    let Some(services) = child(root, "services") else { return };
    let Kind::Map(entries) = &services.kind else { return };
    if !entries.iter().any(|e| child(&e.value, "extends").is_some()) {
        return;
    }
    let mut r = Resolver { sources: vec![Source { path: None, services: entries.clone() }], ..Resolver::default() };
    let names: Vec<String> =
        entries.iter().filter(|e| child(&e.value, "extends").is_some()).map(|e| e.key.clone()).collect();
    let mut resolved = BTreeMap::new();
    for name in names {
        let resolved_node = r.service(cx, 0, &name);
        let Some(own) = r.sources[0].services.iter().find(|e| e.key == name) else { continue };
        if resolved_node.is_none() {
            // Unresolvable: its own keys are still checked, but a missing
            // image (its base's, maybe) is not news.
            cx.unresolved_bases.insert(name.clone());
        }
        let own = without_extends(&own.value);
        resolved.insert(name, resolved_node.unwrap_or(own));
    }
    if let Some(Entry { value: Node { kind: Kind::Map(entries), .. }, .. }) =
        root_entries(root).and_then(|es| es.iter_mut().find(|e| e.key == "services"))
    {
        for e in entries.iter_mut() {
            if let Some(node) = resolved.remove(&e.key) {
                e.value = node;
            }
        }
    }
}

fn root_entries(root: &mut Node) -> Option<&mut Vec<Entry>> {
    match &mut root.kind {
        Kind::Map(entries) => Some(entries),
        _ => None,
    }
}

/// The services of one file: the stack's own (index 0), or a file that
/// `extends.file` named.
#[derive(Default)]
struct Source {
    /// The path as read (`None` for the stack itself).
    path: Option<String>,
    services: Vec<Entry>,
}

#[derive(Default)]
struct Resolver {
    sources: Vec<Source>,
    /// Resolved services by source and name (`None`: failed).
    done: BTreeMap<(usize, String), Option<Node>>,
    /// The services being resolved, outermost first (for cycles).
    chain: Vec<(usize, String)>,
    /// Files named by `extends.file`, by name as written (without `./`):
    /// the source read from it, or `None` when it could not be used (said once).
    loaded: BTreeMap<String, Option<usize>>,
}

impl Resolver {
    /// The service `name` of the source `src`, its `extends` resolved.
    /// `None` when it failed (recorded in `cx`) or does not exist.
    fn service(&mut self, cx: &mut Ctx, src: usize, name: &str) -> Option<Node> {
        let key = (src, name.to_string());
        if let Some(done) = self.done.get(&key) {
            return done.clone();
        }
        let entry = self.sources.get(src)?.services.iter().find(|e| e.key == name)?.clone();
        let Some(ext) = child(&entry.value, "extends") else { return Some(entry.value) };
        let ext_entry = match &entry.value.kind {
            Kind::Map(es) => es.iter().find(|e| e.key == "extends"),
            _ => None,
        }?;
        let at = At {
            node: ext,
            key: "extends",
            path: format!("services.{name}.extends"),
            file: ext_entry.file,
            line: ext_entry.line,
            col: ext_entry.col,
        };
        if let Some(start) = self.chain.iter().position(|c| *c == key) {
            let cycle: Vec<&str> = self.chain[start..].iter().map(|(_, n)| n.as_str()).chain([name]).collect();
            cx.error(&at, format!("extends goes round in a circle: {}", cycle.join(" → ")));
            return None;
        }
        if self.chain.len() >= MAX_CHAIN {
            cx.error(&at, format!("extends goes through more than {MAX_CHAIN} services"));
            return None;
        }
        let result = self.extend(cx, &at, src, name, &entry.value);
        self.done.insert(key, result.clone());
        result
    }

    fn extend(&mut self, cx: &mut Ctx, at: &At<'_>, src: usize, name: &str, own: &Node) -> Option<Node> {
        let (base_name, file) = target(cx, at)?;
        let base_src = match &file {
            Some((path, file_at)) => self.load(cx, file_at, path)?,
            None => src,
        };
        if !self.sources[base_src].services.iter().any(|e| e.key == base_name) {
            let place = match &self.sources[base_src].path {
                Some(p) => format!(" in {p}"),
                None => String::new(),
            };
            cx.error(at, format!("there is no service {base_name}{place} to extend"));
            return None;
        }
        self.chain.push((src, name.to_string()));
        let base = self.service(cx, base_src, &base_name);
        self.chain.pop();
        Some(merge::merge_service(cx, name, base?, without_extends(own)))
    }

    /// The index of the source read from `path` (relative to the first stack
    /// file's directory, and in it), reading it the first time.
    fn load(&mut self, cx: &mut Ctx, at: &At<'_>, path: &str) -> Option<usize> {
        let mut plain = path;
        while let Some(rest) = plain.strip_prefix("./") {
            plain = rest;
        }
        if plain.is_empty() || plain.contains('/') || plain == ".." {
            cx.error(
                at,
                format!(
                    "{path:?}: extends.file must be in the stack file's directory (relative paths in it would be \
                     resolved from the wrong place)"
                ),
            );
            return None;
        }
        if let Some(done) = self.loaded.get(plain) {
            return *done;
        }
        let source = self.read(cx, at, plain);
        self.loaded.insert(plain.to_string(), source);
        source
    }

    /// Reads, parses and interpolates the file `plain`; its services become a source.
    fn read(&mut self, cx: &mut Ctx, at: &At<'_>, plain: &str) -> Option<usize> {
        let (resolved, bytes) = cx.read_file(at, plain)?;
        let Ok(text) = String::from_utf8(bytes) else {
            cx.error(at, format!("{resolved} is not UTF-8 text"));
            return None;
        };
        let index = cx.add_file(resolved.clone());
        let outer = cx.file;
        cx.file = index;
        let root = stack::parse_file(cx, &text, false).map(|root| merge::first(cx, root));
        cx.file = outer;
        let services = match root.as_ref().and_then(|r| child(r, "services")).map(|s| &s.kind) {
            Some(Kind::Map(entries)) => entries.clone(),
            _ => {
                if root.is_some() {
                    cx.error(at, format!("{resolved} has no `services:` mapping to extend"));
                }
                return None;
            }
        };
        self.sources.push(Source { path: Some(resolved), services });
        Some(self.sources.len() - 1)
    }
}

/// `extends: NAME` or `extends: {service: NAME, file: PATH}`: the base's
/// name, and the file with its entry.
fn target<'a>(cx: &mut Ctx, at: &At<'a>) -> Option<(String, Option<(String, At<'a>)>)> {
    match &at.node.kind {
        Kind::Scalar { text, .. } if !text.trim().is_empty() => Some((text.clone(), None)),
        Kind::Map(_) => {
            let mut service = None;
            let mut file = None;
            for e in at.map(cx).unwrap_or_default() {
                match e.key {
                    "service" => service = e.string(cx),
                    "file" => {
                        if let Some(path) = e.opt_string(cx) {
                            file = Some((path, e));
                        }
                    }
                    key => cx.error(&e, keys::unknown(key, &keys::EXTENDS)),
                }
            }
            if service.is_none() {
                cx.error(at, "needs `service:`, the name of the service to extend");
            }
            Some((service?, file))
        }
        _ => {
            cx.error(at, format!("must be a service name or {{service, file}}, got {}", at.node.describe()));
            None
        }
    }
}

/// The service mapping `node` without its `extends` key.
fn without_extends(node: &Node) -> Node {
    let mut node = node.clone();
    if let Kind::Map(entries) = &mut node.kind {
        entries.retain(|e| e.key != "extends");
    }
    node
}
