//! `volumes:` and `ports:` of a service, short and long syntaxes.

use std::collections::{BTreeMap, BTreeSet};

use super::ctx::{At, Ctx};
use super::values::{self, parse_port_number};
use super::yaml::Kind;
use crate::model::{Mount, MountKind, PortConfig, Protocol, PublishMode, VolumeSpec};

/// Keys of a long-syntax mount that stackd does not handle yet.
const KNOWN_MOUNT: &[&str] = &["bind", "consistency", "image", "tmpfs", "volume"];
/// Keys of a long-syntax port that stackd does not handle yet.
const KNOWN_PORT: &[&str] = &["app_protocol", "name"];
/// Short-syntax volume options that are accepted and ignored.
const IGNORED_OPTIONS: &[&str] = &["z", "Z", "cached", "delegated", "consistent", "nocopy"];

/// Where named volumes come from, for one service.
struct Volumes<'v> {
    service: &'v str,
    declared: &'v BTreeMap<String, VolumeSpec>,
}

impl Volumes<'_> {
    /// The engine name of the named volume `key`, or an error if it is not declared.
    fn resolve(&self, cx: &mut Ctx, at: &At<'_>, key: &str) -> Option<String> {
        match self.declared.get(key) {
            Some(v) => Some(v.name.clone()),
            None => {
                cx.error(at, format!("service {} refers to undefined volume {key}", self.service));
                None
            }
        }
    }
}

/// A bind source: absolute paths only for now.
fn bind_source(cx: &mut Ctx, at: &At<'_>, source: &str) -> Option<String> {
    if source.starts_with('/') {
        Some(source.to_string())
    } else {
        cx.error(at, format!("relative bind paths are not supported yet ({source:?}); use an absolute path"));
        None
    }
}

/// Whether a short-syntax source is a path rather than a volume name.
fn is_path(source: &str) -> bool {
    source.starts_with(['/', '.', '~'])
}

/// A service's `volumes:` list.
pub(crate) fn mounts(cx: &mut Ctx, service: &str, at: &At<'_>, declared: &BTreeMap<String, VolumeSpec>) -> Vec<Mount> {
    let vols = Volumes { service, declared };
    let mut out = Vec::new();
    let mut targets = BTreeSet::new();
    for item in at.list(cx).unwrap_or_default() {
        let mount = match &item.node.kind {
            Kind::Scalar { text, .. } => short_mount(cx, &item, text, &vols),
            Kind::Map(_) => long_mount(cx, &item, &vols),
            _ => {
                cx.error(&item, format!("must be a string or a mapping, got {}", item.node.describe()));
                None
            }
        };
        let Some(m) = mount else { continue };
        if !m.target.starts_with('/') {
            cx.error(&item, format!("target {:?} must be an absolute path", m.target));
        } else if !targets.insert(m.target.clone()) {
            cx.error(&item, format!("{:?} is mounted twice", m.target));
        }
        out.push(m);
    }
    out
}

/// `SOURCE:TARGET[:MODE]`, `TARGET`.
fn short_mount(cx: &mut Ctx, at: &At<'_>, text: &str, vols: &Volumes<'_>) -> Option<Mount> {
    let v = match values::parse_volume_short(text) {
        Ok(v) => v,
        Err(why) => {
            cx.error(at, why);
            return None;
        }
    };
    let mut read_only = false;
    for o in &v.options {
        match *o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            o if IGNORED_OPTIONS.contains(&o) => cx.warn(at, format!("volume option {o:?} is ignored for now")),
            o => {
                cx.error(at, format!("unknown volume option {o:?} (expected ro or rw)"));
                return None;
            }
        }
    }
    let target = v.target.to_string();
    let (kind, source) = match v.source {
        None => (MountKind::Volume, String::new()),
        Some(s) if is_path(s) => (MountKind::Bind, bind_source(cx, at, s)?),
        Some(name) => (MountKind::Volume, vols.resolve(cx, at, name)?),
    };
    Some(Mount { kind, source, target, read_only })
}

/// `{type, source, target, read_only}`.
fn long_mount(cx: &mut Ctx, at: &At<'_>, vols: &Volumes<'_>) -> Option<Mount> {
    let mut kind = None;
    let mut type_seen = false;
    let mut source_at = None;
    let mut target = None;
    let mut read_only = false;
    for e in at.map(cx)? {
        match e.key {
            "type" => {
                type_seen = true;
                kind = match e.text() {
                    Some("volume") => Some(MountKind::Volume),
                    Some("bind") => Some(MountKind::Bind),
                    Some("tmpfs") => Some(MountKind::Tmpfs),
                    Some(t @ ("npipe" | "cluster" | "image")) => {
                        cx.error(&e, format!("mount type {t:?} is not supported yet"));
                        None
                    }
                    _ => {
                        cx.error(&e, format!("must be volume, bind or tmpfs, got {}", e.node.describe()));
                        None
                    }
                }
            }
            "source" => {
                if !e.is_null() {
                    source_at = Some(e);
                }
            }
            "target" => target = e.string(cx),
            "read_only" => read_only = !e.is_null() && e.boolean(cx).unwrap_or(false),
            key => cx.ignored_key(&e, key, KNOWN_MOUNT),
        }
    }
    if !type_seen {
        cx.error(at, "a long-syntax volume needs `type:` (volume, bind or tmpfs)");
    }
    let Some(target) = target else {
        cx.error(at, "a long-syntax volume needs `target:`");
        return None;
    };
    let source_text = match &source_at {
        Some(s) => Some((s, s.string(cx)?)),
        None => None,
    };
    let source = match (kind?, source_text) {
        (MountKind::Volume, None) => String::new(),
        (MountKind::Volume, Some((s, name))) => vols.resolve(cx, s, &name)?,
        (MountKind::Bind, Some((s, path))) => bind_source(cx, s, &path)?,
        (MountKind::Bind, None) => {
            cx.error(at, "a bind mount needs `source:`");
            return None;
        }
        (MountKind::Tmpfs, None) => String::new(),
        (MountKind::Tmpfs, Some((s, _))) => {
            cx.error(s, "a tmpfs mount takes no source");
            return None;
        }
    };
    Some(Mount { kind: kind?, source, target, read_only })
}

/// A service's `ports:` list.
pub(crate) fn ports(cx: &mut Ctx, at: &At<'_>) -> Vec<PortConfig> {
    let mut out = Vec::new();
    let mut published = BTreeSet::new();
    for item in at.list(cx).unwrap_or_default() {
        let port = match &item.node.kind {
            Kind::Scalar { text, .. } => match values::parse_port_short(text) {
                Ok(p) => Some(p),
                Err(why) => {
                    cx.error(&item, why);
                    None
                }
            },
            Kind::Map(_) => long_port(cx, &item),
            _ => {
                cx.error(&item, format!("must be a string or a mapping, got {}", item.node.describe()));
                None
            }
        };
        let Some(p) = port else { continue };
        if let Some(pp) = p.published
            && !published.insert((pp, p.protocol))
        {
            cx.error(&item, format!("port {pp}/{} is published twice", p.protocol.as_str()));
        }
        if let (Some(pp), PublishMode::Ingress) = (p.published, p.mode) {
            cx.warn(
                &item,
                format!(
                    "port {pp}/{} uses ingress mode, but stackd has no routing mesh yet: it is bound on the node \
                     that runs each task, as with `mode: host` (one task per node can publish it)",
                    p.protocol.as_str()
                ),
            );
        }
        out.push(p);
    }
    out
}

/// `{target, published, protocol, mode, host_ip}`.
fn long_port(cx: &mut Ctx, at: &At<'_>) -> Option<PortConfig> {
    let mut target = None;
    let mut port = PortConfig {
        target: 0,
        published: None,
        protocol: Protocol::Tcp,
        mode: PublishMode::Ingress,
        host_ip: String::new(),
    };
    let mut ok = true;
    for e in at.map(cx)? {
        if e.is_null() {
            continue;
        }
        let result = match e.key {
            "target" => e.string(cx).map(|t| parse_port_number(&t, "target").map(|n| target = Some(n))),
            "published" => e.string(cx).map(|t| parse_port_number(&t, "published").map(|n| port.published = Some(n))),
            "protocol" => e.string(cx).map(|t| values::parse_protocol(&t).map(|p| port.protocol = p)),
            "host_ip" => e.string(cx).map(|t| values::parse_host_ip(&t).map(|ip| port.host_ip = ip)),
            "mode" => e.choice(cx, &["ingress", "host"]).map(|m| {
                port.mode = if m == "host" { PublishMode::Host } else { PublishMode::Ingress };
                Ok(())
            }),
            key => {
                cx.ignored_key(&e, key, KNOWN_PORT);
                Some(Ok(()))
            }
        };
        match result {
            Some(Ok(())) => {}
            Some(Err(why)) => {
                cx.error(&e, why);
                ok = false;
            }
            None => ok = false,
        }
    }
    match target {
        Some(t) => port.target = t,
        None if ok => {
            cx.error(at, "a long-syntax port needs `target:`");
            return None;
        }
        None => return None,
    }
    ok.then_some(port)
}
