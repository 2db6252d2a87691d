//! `volumes:` and `ports:` of a service, short and long syntaxes.

use std::collections::{BTreeMap, BTreeSet};

use super::ctx::{At, Ctx};
use super::keys;
use super::values::{self, parse_port_number};
use super::yaml::Kind;
use crate::model::{Mount, MountKind, PortConfig, Protocol, PublishMode, VolumeSpec};

/// Options of a service-level `tmpfs:` entry that are the engine's defaults anyway.
const TMPFS_DEFAULT_FLAGS: &[&str] = &["rw", "noexec", "nosuid", "nodev"];
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

/// A bind source: an absolute path, or one relative to the stack file's
/// directory (`./data`, `../shared`, `.`), or under the home directory
/// (`~/data`), made absolute as compose does.
fn bind_source(cx: &mut Ctx, at: &At<'_>, source: &str) -> Option<String> {
    cx.host_path(at, source)
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
    Some(Mount::new(kind, source, target, read_only))
}

/// `{type, source, target, read_only}`.
fn long_mount(cx: &mut Ctx, at: &At<'_>, vols: &Volumes<'_>) -> Option<Mount> {
    let mut kind = None;
    let mut type_seen = false;
    let mut source_at = None;
    let mut target = None;
    let mut read_only = false;
    let mut tmpfs_at = None;
    let mut tmpfs = (0, 0);
    for e in at.map(cx)? {
        match e.key {
            "tmpfs" => {
                tmpfs = tmpfs_options(cx, &e);
                tmpfs_at = Some(e);
            }
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
            "bind" => mount_options(cx, &e, &keys::MOUNT_BIND),
            "volume" => mount_options(cx, &e, &keys::MOUNT_VOLUME),
            _ => cx.unknown_key(&e, &keys::MOUNT),
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
    if let (Some(t), Some(k)) = (&tmpfs_at, kind)
        && k != MountKind::Tmpfs
    {
        cx.error(t, "only applies to `type: tmpfs`");
    }
    Some(Mount { kind: kind?, source, target, read_only, tmpfs_size_bytes: tmpfs.0, tmpfs_mode: tmpfs.1 })
}

/// A long-syntax mount's `bind:` or `volume:` options (`place`). None is
/// applied yet: each is warned about, except those whose loss would put the
/// data elsewhere, which are refused: `volume.subpath` (the volume's root
/// would be mounted) and a `bind.propagation` other than the default
/// (mounts made under the target would not reach the host, or the other way).
fn mount_options(cx: &mut Ctx, at: &At<'_>, place: &keys::Place) {
    for e in at.map(cx).unwrap_or_default() {
        if e.is_null() {
            continue;
        }
        match (place.what, e.key) {
            ("volume", "subpath") => cx.error(
                &e,
                "not supported yet: the data would be written at the volume's root; declare a volume per directory",
            ),
            ("bind", "propagation") => {
                if let Some(p) = e.string(cx).filter(|p| !matches!(p.as_str(), "rprivate" | "private")) {
                    cx.error(
                        &e,
                        format!(
                            "propagation {p} is not supported yet: mounts would not propagate as asked (rprivate is)"
                        ),
                    );
                }
            }
            _ => cx.unknown_key(&e, place),
        }
    }
}

/// A long-syntax mount's `tmpfs: {size, mode}`: (bytes, permission bits).
fn tmpfs_options(cx: &mut Ctx, at: &At<'_>) -> (u64, u32) {
    let (mut size, mut mode) = (0, 0);
    for e in at.map(cx).unwrap_or_default() {
        if e.is_null() {
            continue;
        }
        match e.key {
            "size" => size = e.string(cx).and_then(|t| checked(cx, &e, values::parse_bytes(&t))).unwrap_or(0),
            "mode" => mode = e.string(cx).and_then(|t| checked(cx, &e, parse_mode(&t))).unwrap_or(0),
            _ => cx.unknown_key(&e, &keys::MOUNT_TMPFS),
        }
    }
    (size, mode)
}

/// A value, or its error recorded at `at`.
fn checked<T>(cx: &mut Ctx, at: &At<'_>, value: Result<T, String>) -> Option<T> {
    value.map_err(|why| cx.error(at, why)).ok()
}

/// Permission bits written in octal, as compose and Docker take them:
/// `1777`, `01777`, `0o1777`.
pub(crate) fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("invalid mode {text:?}: expected octal permission bits like 1777 or 0644")),
    }
}

/// A service's `tmpfs:`: a path or a list of paths, each with optional
/// Docker-style options (`/run:size=64m,mode=1777`).
pub(crate) fn tmpfs<'a>(cx: &mut Ctx, at: &At<'a>) -> Vec<(At<'a>, Mount)> {
    let items = match &at.node.kind {
        Kind::Null => Vec::new(),
        Kind::Scalar { .. } => vec![at.clone()],
        _ => at.list(cx).unwrap_or_default(),
    };
    let mut out = Vec::new();
    for item in items {
        let Some(text) = item.string(cx) else { continue };
        let (target, options) = text.split_once(':').unwrap_or((&text, ""));
        let mut m = Mount::new(MountKind::Tmpfs, "", target.trim(), false);
        let mut ok = true;
        for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let result = match option.split_once('=') {
                Some(("size", v)) => values::parse_bytes(v).map(|b| m.tmpfs_size_bytes = b),
                Some(("mode", v)) => parse_mode(v).map(|b| m.tmpfs_mode = b),
                None if option == "ro" => {
                    m.read_only = true;
                    Ok(())
                }
                None if TMPFS_DEFAULT_FLAGS.contains(&option) => Ok(()),
                _ => {
                    cx.warn(&item, format!("tmpfs option {option:?} is ignored (size=, mode= and ro are applied)"));
                    Ok(())
                }
            };
            if let Err(why) = result {
                cx.error(&item, why);
                ok = false;
            }
        }
        if !m.target.starts_with('/') {
            cx.error(&item, format!("target {:?} must be an absolute path", m.target));
            ok = false;
        }
        if ok {
            out.push((item, m));
        }
    }
    out
}

/// A service's `ports:` list (a short-syntax range gives several ports).
pub(crate) fn ports(cx: &mut Ctx, at: &At<'_>) -> Vec<PortConfig> {
    let mut out = Vec::new();
    let mut published = BTreeSet::new();
    for item in at.list(cx).unwrap_or_default() {
        let ports = match &item.node.kind {
            Kind::Scalar { text, .. } => match values::parse_port_short(text) {
                Ok(p) => p,
                Err(why) => {
                    cx.error(&item, why);
                    Vec::new()
                }
            },
            Kind::Map(_) => long_port(cx, &item).into_iter().collect(),
            _ => {
                cx.error(&item, format!("must be a string or a mapping, got {}", item.node.describe()));
                Vec::new()
            }
        };
        for p in &ports {
            if let Some(pp) = p.published
                && !published.insert((pp, p.protocol))
            {
                cx.error(&item, format!("port {pp}/{} is published twice", p.protocol.as_str()));
            }
        }
        out.extend(ports);
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
        proxy_protocol: false,
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
            "x-proxy-protocol" => e.choice(cx, &["v2"]).map(|_| {
                port.proxy_protocol = true;
                Ok(())
            }),
            _ => {
                cx.unknown_key(&e, &keys::PORT);
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
    let mesh = port.mode == PublishMode::Ingress && port.published.is_some();
    if port.proxy_protocol && !(mesh && port.protocol == Protocol::Tcp) {
        cx.error(
            at,
            "`x-proxy-protocol: v2` needs a TCP port published through the routing mesh (`published:` with `mode: ingress`)",
        );
        ok = false;
    }
    if mesh && !port.host_ip.is_empty() {
        cx.error(
            at,
            format!(
                "`host_ip: {}` applies to `mode: host` only: the routing mesh serves the port on every address of every node",
                port.host_ip
            ),
        );
        ok = false;
    }
    ok.then_some(port)
}
