//! Configs and secrets: the top-level `configs:` and `secrets:` sections
//! and a service's `configs:` and `secrets:` lists.
//!
//! A top-level entry takes its content from exactly one of `file:` (read
//! through the caller's reader, relative to the first stack file),
//! `environment:` (a variable of the load), `content:` (configs only), or
//! is `external: true` (created in the cluster beforehand). A service
//! refers to entries by key, in the short form (`- db_password`) or the
//! long one (`{source, target, uid, gid, mode}`).

use std::collections::BTreeMap;

use super::ctx::{At, Ctx};
use super::keys;
use super::mounts::parse_mode;
use super::service::labels;
use super::yaml::Kind;
use crate::model::{Blob, DataKind, FileRef, MAX_OBJECT_BYTES, ObjectOrigin, ObjectSpec, digest};
use crate::validate::is_valid_name;

/// The top-level `configs:` or `secrets:` section.
pub(crate) fn top_objects(cx: &mut Ctx, stack: &str, kind: DataKind, at: &At<'_>) -> BTreeMap<String, ObjectSpec> {
    let mut out = BTreeMap::new();
    for e in at.map(cx).unwrap_or_default() {
        if !is_valid_name(e.key) {
            cx.error(
                &e,
                format!(
                    "{} name is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
                    kind.as_str()
                ),
            );
            continue;
        }
        if let Some(o) = object(cx, stack, kind, &e) {
            out.insert(e.key.to_string(), o);
        }
    }
    out
}

/// One top-level entry.
fn object(cx: &mut Ctx, stack: &str, kind: DataKind, at: &At<'_>) -> Option<ObjectSpec> {
    let what = kind.as_str();
    let mut spec = ObjectSpec::default();
    let mut name = None;
    let mut sources = Vec::new();
    let mut data = None;
    let mut template_at = None;
    for e in at.map(cx)? {
        match e.key {
            "file" => {
                if let Some(path) = e.string(cx) {
                    data = cx.read_file(&e, &path).map(|(_, bytes)| bytes);
                    spec.origin = ObjectOrigin::File(path);
                }
                sources.push(e);
            }
            "environment" => {
                if let Some(var) = e.string(cx) {
                    match cx.vars.get(&var) {
                        Some(v) => data = Some(v.clone().into_bytes()),
                        None => cx.error(&e, format!("variable {var} is not set in the environment or .env")),
                    }
                    spec.origin = ObjectOrigin::Environment(var);
                }
                sources.push(e);
            }
            "content" if kind == DataKind::Config => {
                data = e.string(cx).map(String::into_bytes);
                spec.origin = ObjectOrigin::Content;
                sources.push(e);
            }
            "content" => {
                cx.error(&e, "a secret cannot be written in the stack file: use file: or environment:");
                sources.push(e);
            }
            "external" => {
                let external = match &e.node.kind {
                    // Legacy form: `external: {name: x}`.
                    Kind::Map(_) => {
                        for inner in e.map(cx).unwrap_or_default() {
                            match inner.key {
                                "name" => name = inner.string(cx),
                                _ => cx.unknown_key(&inner, &keys::EXTERNAL),
                            }
                        }
                        true
                    }
                    _ => e.boolean(cx).unwrap_or(false),
                };
                if external {
                    spec.external = true;
                    spec.origin = ObjectOrigin::External;
                    sources.push(e);
                }
            }
            "name" => name = e.string(cx),
            "labels" => spec.labels = labels(cx, &e),
            "driver" | "driver_opts" => {
                cx.error(
                    &e,
                    format!(
                        "{what} drivers are not supported: the content must come from file:, environment: or external"
                    ),
                );
                return None;
            }
            "template_driver" => template_at = (!e.is_null()).then_some(e),
            _ => cx.unknown_key(&e, if kind == DataKind::Config { &keys::CONFIG } else { &keys::SECRET }),
        }
    }
    // Swarm renders a template driver's content for each task; stackd would
    // hand the template over unrendered. An external object is as it was made.
    match &template_at {
        Some(t) if spec.external => cx.warn(t, "ignored: the content is used as it is"),
        Some(t) => {
            cx.error(t, "template drivers are not supported yet: the task would get the template unrendered");
            return None;
        }
        None => {}
    }
    if sources.len() > 1 {
        let keys: Vec<&str> = sources.iter().map(|s| s.key).collect();
        cx.error(&sources[1], format!("{what} {} sets {}: use exactly one", at.key, keys.join(" and ")));
        return None;
    }
    if sources.is_empty() {
        let choices = if kind == DataKind::Config {
            "file:, environment:, content: or external: true"
        } else {
            "file:, environment: or external: true"
        };
        cx.error(at, format!("{what} {} needs one of {choices}", at.key));
        return None;
    }
    if name.as_deref().is_some_and(|n| !is_valid_name(n)) {
        cx.error(at, format!("the {what}'s name {:?} is invalid", name.unwrap_or_default()));
        return None;
    }
    spec.name = name.unwrap_or_else(|| if spec.external { at.key.to_string() } else { format!("{stack}_{}", at.key) });
    if !spec.external {
        let data = data?;
        if data.len() > MAX_OBJECT_BYTES {
            cx.error(
                &sources[0],
                format!("a {what} holds at most {MAX_OBJECT_BYTES} bytes, this one has {}", data.len()),
            );
            return None;
        }
        spec.digest = digest(&data);
        spec.data = Blob(data);
    }
    Some(spec)
}

/// A service's `configs:` or `secrets:` list, against the stack's `declared` entries.
pub(crate) fn refs(
    cx: &mut Ctx,
    service: &str,
    kind: DataKind,
    at: &At<'_>,
    declared: &BTreeMap<String, ObjectSpec>,
) -> Vec<FileRef> {
    let what = kind.as_str();
    let mut out: Vec<FileRef> = Vec::new();
    for item in at.list(cx).unwrap_or_default() {
        let mut r = FileRef { uid: "0".into(), gid: "0".into(), mode: 0o444, ..FileRef::default() };
        let mut target = None;
        match &item.node.kind {
            Kind::Scalar { .. } => r.source = item.string(cx).unwrap_or_default(),
            Kind::Map(_) => {
                for e in item.map(cx).unwrap_or_default() {
                    if e.is_null() {
                        continue;
                    }
                    match e.key {
                        "source" => r.source = e.string(cx).unwrap_or_default(),
                        "target" => target = e.string(cx),
                        "uid" => r.uid = numeric_id(cx, &e).unwrap_or(r.uid),
                        "gid" => r.gid = numeric_id(cx, &e).unwrap_or(r.gid),
                        "mode" => {
                            if let Some(m) = e.string(cx) {
                                match parse_mode(&m) {
                                    Ok(m) => r.mode = m,
                                    Err(why) => cx.error(&e, why),
                                }
                            }
                        }
                        _ => cx.unknown_key(&e, &keys::FILE_REF),
                    }
                }
            }
            _ => {
                cx.error(&item, format!("must be a name or a mapping, got {}", item.node.describe()));
                continue;
            }
        }
        if r.source.is_empty() {
            cx.error(&item, format!("a {what} needs `source:`"));
            continue;
        }
        let Some(decl) = declared.get(&r.source) else {
            cx.error(&item, format!("service {service} refers to undefined {what} {}", r.source));
            continue;
        };
        r.name = decl.name.clone();
        r.digest = decl.digest.clone();
        let target = target.unwrap_or_else(|| r.source.clone());
        r.target = match (kind, target.starts_with('/')) {
            (_, true) => target,
            (DataKind::Secret, false) => format!("/run/secrets/{target}"),
            (DataKind::Config, false) => format!("/{target}"),
        };
        if out.iter().any(|o| o.target == r.target) {
            cx.error(&item, format!("{:?} is the target of two {what}s", r.target));
            continue;
        }
        out.push(r);
    }
    out
}

/// A uid or gid: a number, as Docker needs for files it does not create.
fn numeric_id(cx: &mut Ctx, at: &At<'_>) -> Option<String> {
    let text = at.string(cx)?;
    if text.parse::<u32>().is_ok() {
        Some(text)
    } else {
        cx.error(at, format!("must be a numeric id, got {text:?}"));
        None
    }
}
