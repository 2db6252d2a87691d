//! `x-stackd-autoscale` of a service → its autoscaling [`Policy`].
//!
//! ```yaml
//! x-stackd-autoscale:
//!   min: 2                 # optional, 1 by default
//!   max: 12
//!   target: {cpu: 70%}     # or {connections: 50}
//!   period: 15s            # optional
//!   scale_down_window: 5m  # optional
//!   scale_up_window: 0s    # optional
//! ```
//!
//! The key is stackd's, so unlike other `x-` keys it is interpolated and
//! every key inside it is checked: a typo is an error, not a setting
//! silently lost. The rules on values ([`Policy::problems`]) are core's,
//! shared with the API's validation; this module reports each where it was
//! written.

use std::collections::BTreeMap;

use super::ctx::{At, Ctx};
use super::keys;
use super::values;
use crate::autoscale::{Policy, PolicyError, Target};
use crate::model::{PortConfig, ServiceMode, ServiceSpec};

/// The service key.
pub(crate) const KEY: &str = "x-stackd-autoscale";
/// The keys of `x-stackd-autoscale`.
const KEYS: &[&str] = &["min", "max", "target", "period", "scale_down_window", "scale_up_window"];
/// The keys of `target:`.
const TARGETS: &[&str] = &["cpu", "connections"];

/// A policy as written, with where its keys are.
pub(crate) struct Written<'a> {
    policy: Policy,
    /// The `x-stackd-autoscale` entry.
    at: At<'a>,
    /// The keys written, by their path inside the policy (`min`, `target.cpu`).
    keys: BTreeMap<&'static str, At<'a>>,
}

/// Reads the policy at `at`. `None` when it is null (no policy) or
/// unusable; every problem has been recorded in `cx`.
pub(crate) fn read<'a>(cx: &mut Ctx, at: &At<'a>) -> Option<Written<'a>> {
    if at.is_null() {
        return None;
    }
    let entries = at.map(cx)?;
    let mut policy = Policy::new(1, 0, Target::Cpu { percent: 0 });
    let mut keys = BTreeMap::new();
    let (mut max, mut target, mut ok) = (None, None, true);
    for e in entries {
        let Some(key) = KEYS.iter().copied().find(|k| *k == e.key) else {
            let message = match keys::suggest(e.key, KEYS) {
                Some(k) => format!("unknown key `{}`: did you mean `{k}`?", e.key),
                None => format!(
                    "unknown key `{}`: {KEY} takes min, max, target, period, scale_down_window and scale_up_window",
                    e.key
                ),
            };
            // Reported; the policy is still checked.
            cx.error(&e, message);
            continue;
        };
        if e.is_null() && key != "max" && key != "target" {
            continue; // the default
        }
        let read = match key {
            "min" => e.uint(cx).map(|n| policy.min = n),
            "max" => e.uint(cx).map(|n| max = Some(n)),
            "target" => read_target(cx, &e, &mut keys).map(|t| target = Some(t)),
            "period" => e.duration(cx).map(|ms| policy.period = ms),
            "scale_down_window" => e.duration(cx).map(|ms| policy.down_window = ms),
            _ => e.duration(cx).map(|ms| policy.up_window = ms),
        };
        ok &= read.is_some();
        keys.insert(key, e);
    }
    match (max, keys.contains_key("max")) {
        (Some(m), _) => policy.max = m,
        (None, false) => {
            cx.error(at, format!("{KEY} needs `max:`, the most replicas the autoscaler may run"));
            ok = false;
        }
        (None, true) => ok = false,
    }
    match (target, keys.contains_key("target")) {
        (Some(t), _) => policy.target = t,
        (None, false) => {
            cx.error(at, format!("{KEY} needs a `target:`: `{{cpu: 70%}}` or `{{connections: 50}}`"));
            ok = false;
        }
        (None, true) => ok = false,
    }
    ok.then(|| Written { policy, at: at.clone(), keys })
}

/// `target:`: one of `cpu: N%` and `connections: N`.
fn read_target<'a>(cx: &mut Ctx, at: &At<'a>, keys: &mut BTreeMap<&'static str, At<'a>>) -> Option<Target> {
    let mut found: Option<Target> = None;
    let mut ok = true;
    for e in at.map(cx)? {
        let target = match e.key {
            "cpu" => percent(cx, &e).map(|percent| Target::Cpu { percent }),
            "connections" => connections(cx, &e).map(|per_replica| Target::Connections { per_replica }),
            other => {
                let hint = keys::suggest(other, TARGETS).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
                cx.error(&e, format!("unknown target `{other}`{hint}: the supported ones are cpu and connections"));
                ok = false;
                continue;
            }
        };
        if found.is_some() || keys.contains_key("target.cpu") || keys.contains_key("target.connections") {
            cx.error(&e, "one target only: cpu or connections, not both");
            ok = false;
        }
        keys.insert(if e.key == "cpu" { "target.cpu" } else { "target.connections" }, e.clone());
        match target {
            Some(t) if found.is_none() => found = Some(t),
            Some(_) => {}
            None => ok = false,
        }
    }
    if found.is_none() && ok {
        cx.error(at, "needs one target: `cpu: 70%` (of the CPU limit) or `connections: 50` (per replica)");
    }
    found.filter(|_| ok)
}

/// `70%`: a whole percentage (its range is [`Policy::problems`]'s).
fn percent(cx: &mut Ctx, at: &At<'_>) -> Option<u32> {
    let text = at.text().map(str::trim);
    let parsed = text.and_then(|t| t.strip_suffix('%')).and_then(|n| values::parse_uint(n.trim()));
    match (parsed, text) {
        (Some(n), _) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                cx.error(at, PolicyError::CpuPercent(n).to_string());
                None
            }
        },
        (None, Some(t)) if t.parse::<f64>().is_ok() => {
            cx.error(at, format!("must be a percentage like 70%, got {t}: write the `%`"));
            None
        }
        (None, _) => {
            cx.error(at, format!("must be a whole percentage like 70%, got {}", at.node.describe()));
            None
        }
    }
}

/// `50`: connections per replica (its range is [`Policy::problems`]'s).
fn connections(cx: &mut Ctx, at: &At<'_>) -> Option<u32> {
    let n = at.uint(cx)?;
    match u32::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            cx.error(at, PolicyError::Connections(n).to_string());
            None
        }
    }
}

/// Sets the policy `written` on `spec`, once `deploy:` and the service's
/// `ports` have been read: without written replicas (`replicas_at`, which
/// is `deploy.replicas` or `scale`) the service starts at `min`; every
/// problem of the policy is reported at the key it is about.
pub(crate) fn apply(
    cx: &mut Ctx,
    written: Written<'_>,
    replicas_at: Option<&At<'_>>,
    spec: &mut ServiceSpec,
    ports: &[PortConfig],
) {
    let policy = written.policy;
    if let (ServiceMode::Replicated { replicas }, None) = (&mut spec.mode, replicas_at) {
        *replicas = policy.min;
    }
    for problem in policy.problems(&spec.mode, ports) {
        let at = match problem.key() {
            "deploy.replicas" => replicas_at.unwrap_or(&written.at),
            key => written.keys.get(key).unwrap_or(&written.at),
        };
        cx.error(at, problem.to_string());
    }
    spec.autoscale = Some(policy);
}
