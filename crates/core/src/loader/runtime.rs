//! Container runtime options of a service: capabilities, sysctls, extra
//! hosts, DNS, ulimits and logging.

use std::collections::BTreeMap;

use super::ctx::{At, Ctx};
use super::keys;
use super::yaml::Kind;
use crate::model::{Logging, Ulimit};

/// `cap_add` / `cap_drop`: capability names such as `NET_ADMIN` (or `ALL`).
pub(super) fn capabilities(cx: &mut Ctx, at: &At<'_>) -> Vec<String> {
    if at.is_null() {
        return Vec::new();
    }
    let items = at.list(cx).unwrap_or_default();
    let mut out = Vec::new();
    for item in items {
        let Some(name) = item.string(cx) else { continue };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            cx.error(&item, format!("{name:?} is not a capability name (like NET_ADMIN or ALL)"));
            continue;
        }
        out.push(name);
    }
    out
}

/// `sysctls`: `KEY=VALUE` list or mapping.
pub(super) fn sysctls(cx: &mut Ctx, at: &At<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (item, key, value) in at.pairs(cx) {
        match value {
            Some(v) => {
                out.insert(key, v);
            }
            None => cx.error(&item, format!("sysctl {key} needs a value")),
        }
    }
    out
}

/// `extra_hosts`: `host:ip` or `host=ip` items, or a `host: ip` mapping;
/// normalised to `host:ip`.
pub(super) fn extra_hosts(cx: &mut Ctx, at: &At<'_>) -> Vec<String> {
    if at.is_null() {
        return Vec::new();
    }
    let pairs: Vec<(At<'_>, String, Option<String>)> = if matches!(at.node.kind, Kind::Seq(_)) {
        let mut out = Vec::new();
        for item in at.list(cx).unwrap_or_default() {
            let Some(text) = item.string(cx) else { continue };
            let split = text.split_once('=').or_else(|| text.split_once(':'));
            match split {
                Some((h, ip)) => out.push((item, h.to_string(), Some(ip.to_string()))),
                None => cx.error(&item, format!("{text:?} must be host:ip")),
            }
        }
        out
    } else {
        at.pairs(cx)
    };
    let mut out = Vec::new();
    for (item, host, ip) in pairs {
        match ip {
            Some(ip) if !host.is_empty() && ip.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() => {
                out.push(format!("{host}:{}", ip.trim_matches(['[', ']'])));
            }
            Some(ip) => cx.error(&item, format!("{host}:{ip} must be a host name and an IP address")),
            None => cx.error(&item, format!("{host} needs an IP address")),
        }
    }
    out
}

/// `dns`: one IP address or a list of them.
pub(super) fn dns(cx: &mut Ctx, at: &At<'_>) -> Vec<String> {
    let values = string_or_list(cx, at);
    let mut out = Vec::new();
    for (item, v) in values {
        if v.parse::<std::net::IpAddr>().is_ok() {
            out.push(v);
        } else {
            cx.error(&item, format!("{v:?} is not an IP address"));
        }
    }
    out
}

/// `dns_search`: one domain or a list of them.
pub(super) fn dns_search(cx: &mut Ctx, at: &At<'_>) -> Vec<String> {
    string_or_list(cx, at).into_iter().map(|(_, v)| v).collect()
}

fn string_or_list<'a>(cx: &mut Ctx, at: &At<'a>) -> Vec<(At<'a>, String)> {
    if at.is_null() {
        return Vec::new();
    }
    if let Some(text) = at.text() {
        return vec![(at.clone(), text.to_string())];
    }
    at.list(cx).unwrap_or_default().into_iter().filter_map(|item| item.string(cx).map(|s| (item, s))).collect()
}

/// `ulimits`: `name: N` (soft = hard) or `name: {soft: N, hard: M}`.
pub(super) fn ulimits(cx: &mut Ctx, at: &At<'_>) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    if at.is_null() {
        return out;
    }
    for e in at.map(cx).unwrap_or_default() {
        let limit = if e.text().is_some() {
            e.uint(cx).and_then(|n| i64::try_from(n).ok()).map(|n| Ulimit { soft: n, hard: n })
        } else {
            let (mut soft, mut hard) = (None, None);
            for f in e.map(cx).unwrap_or_default() {
                match f.key {
                    "soft" => soft = f.uint(cx).and_then(|n| i64::try_from(n).ok()),
                    "hard" => hard = f.uint(cx).and_then(|n| i64::try_from(n).ok()),
                    _ => cx.unknown_key(&f, &keys::ULIMIT),
                }
            }
            match (soft, hard) {
                (Some(s), Some(h)) if s <= h => Some(Ulimit { soft: s, hard: h }),
                (Some(s), Some(h)) => {
                    cx.error(&e, format!("soft limit {s} is above the hard limit {h}"));
                    None
                }
                _ => {
                    cx.error(&e, "needs both `soft:` and `hard:` (or one number for both)");
                    None
                }
            }
        };
        if let Some(l) = limit {
            out.insert(e.key.to_string(), l);
        }
    }
    out
}

/// `logging: {driver, options}`; `options` alone configure the engine's
/// default driver, as with `docker stack deploy`.
pub(super) fn logging(cx: &mut Ctx, at: &At<'_>) -> Option<Logging> {
    if at.is_null() {
        return None;
    }
    let mut log = Logging::default();
    for e in at.map(cx)? {
        match e.key {
            "driver" => log.driver = e.string(cx).unwrap_or_default(),
            "options" => {
                for (item, key, value) in e.pairs(cx) {
                    match value {
                        Some(v) => {
                            log.options.insert(key, v);
                        }
                        None => cx.error(&item, format!("log option {key} needs a value")),
                    }
                }
            }
            _ => cx.unknown_key(&e, &keys::LOGGING),
        }
    }
    // Options without a driver are for the engine's default driver: docker/cli
    // passes them so, and the engine fills the driver in and checks them.
    if log.driver.is_empty() && log.options.is_empty() {
        return None;
    }
    Some(log)
}
