//! `deploy:` (mode, replicas, labels, restart and update policies) and
//! `healthcheck:` of a service.

use super::ctx::{At, Ctx};
use super::placement;
use super::service::labels;
use super::yaml::Kind;
use crate::model::{
    FailureAction, HealthCheck, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskTemplate, UpdateConfig,
    UpdateOrder,
};
use crate::validate::MAX_REPLICAS;

/// `deploy:` keys of the compose spec that stackd does not handle yet.
const KNOWN_DEPLOY: &[&str] = &["endpoint_mode", "rollback_config"];

/// Reads `deploy:` into `spec` (mode, restart, update, labels) and `task`
/// (placement, resources).
pub(crate) fn deploy(cx: &mut Ctx, at: &At<'_>, spec: &mut ServiceSpec, task: &mut TaskTemplate) {
    let Some(entries) = at.map(cx) else { return };
    let mut global = false;
    let mut replicas_at = None;
    let mut replicas = 1;
    for e in entries {
        match e.key {
            "mode" => {
                if e.is_null() {
                    continue;
                }
                match e.text() {
                    Some("replicated") => global = false,
                    Some("global") => global = true,
                    Some(other) => {
                        cx.error(&e, format!("mode {other:?} is not supported yet; use replicated or global"))
                    }
                    None => cx.error(&e, format!("must be replicated or global, got {}", e.node.describe())),
                }
            }
            "replicas" => {
                if e.is_null() {
                    continue;
                }
                if let Some(n) = e.uint(cx) {
                    if n > MAX_REPLICAS {
                        cx.error(&e, format!("at most {MAX_REPLICAS}, got {n}"));
                    }
                    replicas = n;
                }
                replicas_at = Some(e);
            }
            "labels" => spec.labels = labels(cx, &e),
            "restart_policy" => spec.restart = restart_policy(cx, &e),
            "update_config" => spec.update = update_config(cx, &e),
            "placement" => task.placement = placement::placement(cx, &e),
            "resources" => task.resources = placement::resources(cx, &e),
            key => cx.ignored_key(&e, key, KNOWN_DEPLOY),
        }
    }
    spec.mode = if global {
        if let Some(r) = &replicas_at {
            cx.error(r, "replicas cannot be used with mode: global");
        }
        ServiceMode::Global
    } else {
        ServiceMode::Replicated { replicas }
    };
}

/// `deploy.restart_policy`.
fn restart_policy(cx: &mut Ctx, at: &At<'_>) -> RestartPolicy {
    let mut p = RestartPolicy::default();
    for e in at.map(cx).unwrap_or_default() {
        if e.is_null() {
            continue;
        }
        match e.key {
            "condition" => {
                p.condition = match e.choice(cx, &["none", "on-failure", "any"]) {
                    Some("none") => RestartCondition::None,
                    Some("on-failure") => RestartCondition::OnFailure,
                    _ => RestartCondition::Any,
                }
            }
            "delay" => p.delay_ms = e.duration(cx).unwrap_or(p.delay_ms),
            "max_attempts" => p.max_attempts = e.uint(cx).unwrap_or(p.max_attempts),
            "window" => p.window_ms = e.duration(cx).unwrap_or(p.window_ms),
            key => cx.ignored_key(&e, key, &[]),
        }
    }
    p
}

/// `deploy.update_config`.
fn update_config(cx: &mut Ctx, at: &At<'_>) -> UpdateConfig {
    let mut u = UpdateConfig::default();
    for e in at.map(cx).unwrap_or_default() {
        if e.is_null() {
            continue;
        }
        match e.key {
            "parallelism" => u.parallelism = e.uint(cx).unwrap_or(u.parallelism),
            "delay" => u.delay_ms = e.duration(cx).unwrap_or(u.delay_ms),
            "monitor" => u.monitor_ms = e.duration(cx).unwrap_or(u.monitor_ms),
            "failure_action" => {
                u.failure_action = match e.choice(cx, &["pause", "continue", "rollback"]) {
                    Some("continue") => FailureAction::Continue,
                    Some("rollback") => FailureAction::Rollback,
                    _ => FailureAction::Pause,
                }
            }
            "max_failure_ratio" => {
                if let Some(r) = e.float(cx) {
                    if (0.0..=1.0).contains(&r) {
                        u.max_failure_ratio = r;
                    } else {
                        cx.error(&e, format!("must be between 0 and 1, got {}", e.node.describe()));
                    }
                }
            }
            "order" => {
                u.order = match e.choice(cx, &["stop-first", "start-first"]) {
                    Some("start-first") => UpdateOrder::StartFirst,
                    _ => UpdateOrder::StopFirst,
                }
            }
            key => cx.ignored_key(&e, key, &[]),
        }
    }
    u
}

/// `healthcheck:`. Durations not given are 0, which Docker reads as "the
/// image's value or Docker's default"; an absent `test` keeps the image's.
pub(crate) fn healthcheck(cx: &mut Ctx, at: &At<'_>) -> Option<HealthCheck> {
    if at.is_null() {
        return None;
    }
    let mut h = HealthCheck {
        test: Vec::new(),
        interval_ms: 0,
        timeout_ms: 0,
        retries: 0,
        start_period_ms: 0,
        start_interval_ms: 0,
    };
    let mut disable = false;
    let mut test_at = None;
    for e in at.map(cx)? {
        if e.is_null() {
            continue;
        }
        match e.key {
            "test" => {
                h.test = test(cx, &e);
                test_at = Some(e);
            }
            "interval" => h.interval_ms = e.duration(cx).unwrap_or(0),
            "timeout" => h.timeout_ms = e.duration(cx).unwrap_or(0),
            "start_period" => h.start_period_ms = e.duration(cx).unwrap_or(0),
            "start_interval" => h.start_interval_ms = e.duration(cx).unwrap_or(0),
            "retries" => h.retries = e.uint(cx).unwrap_or(0),
            "disable" => disable = e.boolean(cx).unwrap_or(false),
            key => cx.ignored_key(&e, key, &[]),
        }
    }
    if disable {
        if let Some(t) = test_at.filter(|_| h.test != ["NONE"]) {
            cx.error(&t, "cannot be set together with disable: true");
        }
        h = HealthCheck { test: vec!["NONE".to_string()], ..h };
    }
    Some(h)
}

/// `healthcheck.test`: a string runs in a shell (`CMD-SHELL`); a list must
/// start with `CMD`, `CMD-SHELL` or `NONE`.
fn test(cx: &mut Ctx, at: &At<'_>) -> Vec<String> {
    match &at.node.kind {
        Kind::Scalar { text, .. } => vec!["CMD-SHELL".to_string(), text.clone()],
        Kind::Seq(_) => {
            let words = at.string_list(cx).unwrap_or_default();
            match words.first().map(String::as_str) {
                Some("CMD" | "CMD-SHELL" | "NONE") => {}
                Some(other) => {
                    cx.error(at, format!("a test list must start with CMD, CMD-SHELL or NONE, got {other:?}"));
                }
                None => cx.error(at, "must not be empty"),
            }
            words
        }
        _ => {
            cx.error(at, format!("must be a string or a list, got {}", at.node.describe()));
            Vec::new()
        }
    }
}
