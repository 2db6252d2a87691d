//! `deploy:` (mode, replicas, endpoint mode, labels, restart, update and
//! rollback policies) and `healthcheck:` of a service.

use super::ctx::{At, Ctx};
use super::keys;
use super::placement;
use super::service::labels;
use super::yaml::Kind;
use crate::model::{
    EndpointMode, FailureAction, HealthCheck, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskTemplate,
    UpdateConfig, UpdateOrder,
};
use crate::validate::{MAX_REPLICAS, MAX_RESTART_ATTEMPTS};

/// The `deploy.mode` values.
const MODES: &[&str] = &["replicated", "global", "replicated-job", "global-job"];

/// Reads `deploy:` into `spec` (mode, endpoint mode, restart, update,
/// rollback, labels) and `task` (placement, resources). Returns the
/// `endpoint_mode` entry, if written, for checks that need the ports too.
pub(crate) fn deploy<'a>(cx: &mut Ctx, at: &At<'a>, spec: &mut ServiceSpec, task: &mut TaskTemplate) -> Option<At<'a>> {
    let entries = at.map(cx)?;
    let mut mode: &str = "replicated";
    let mut replicas_at = None;
    let mut replicas = 1;
    let mut endpoint_at = None;
    let mut condition_at = None;
    let mut policies_at = Vec::new();
    for e in entries {
        match e.key {
            "mode" => {
                if e.is_null() {
                    continue;
                }
                match e.text() {
                    Some(m) if MODES.contains(&m) => mode = m,
                    Some(other) => cx.error(
                        &e,
                        format!(
                            "mode {other:?} is not a deploy mode; use replicated, global, replicated-job or global-job"
                        ),
                    ),
                    None => cx.error(
                        &e,
                        format!("must be replicated, global, replicated-job or global-job, got {}", e.node.describe()),
                    ),
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
            "endpoint_mode" => {
                if e.is_null() {
                    continue;
                }
                spec.endpoint_mode = match e.choice(cx, &["vip", "dnsrr"]) {
                    Some("dnsrr") => EndpointMode::Dnsrr,
                    _ => EndpointMode::Vip,
                };
                endpoint_at = Some(e);
            }
            "labels" => spec.labels = labels(cx, &e),
            "restart_policy" => {
                let (policy, condition) = restart_policy(cx, &e);
                spec.restart = policy;
                condition_at = condition;
            }
            "update_config" => {
                spec.update = update_config(cx, &e, false);
                policies_at.push(e);
            }
            "rollback_config" => {
                spec.rollback = update_config(cx, &e, true);
                policies_at.push(e);
            }
            "placement" => task.placement = placement::placement(cx, &e),
            "resources" => task.resources = placement::resources(cx, &e),
            super::autoscale::KEY => {
                cx.error(&e, "x-stackd-autoscale is a key of the service, not of deploy: write it beside `deploy:`")
            }
            _ => cx.unknown_key(&e, &keys::DEPLOY),
        }
    }
    if matches!(mode, "global" | "global-job")
        && let Some(r) = &replicas_at
    {
        cx.error(r, format!("replicas cannot be used with mode: {mode}"));
    }
    spec.mode = match mode {
        "global" => ServiceMode::Global,
        "replicated-job" => ServiceMode::ReplicatedJob { replicas, max_concurrent: 0 },
        "global-job" => ServiceMode::GlobalJob,
        _ => ServiceMode::Replicated { replicas },
    };
    if spec.mode.is_job() {
        job_policies(cx, spec, condition_at.as_ref(), &policies_at, mode);
    }
    endpoint_at
}

/// The policies of a job: a job task that completed is never run again, so
/// the restart condition is on-failure (the default, and what `any` means for
/// a job), and there is no rolling update to configure.
fn job_policies(
    cx: &mut Ctx,
    spec: &mut ServiceSpec,
    condition_at: Option<&At<'_>>,
    policies_at: &[At<'_>],
    mode: &str,
) {
    match condition_at {
        Some(c) if spec.restart.condition == RestartCondition::Any => {
            cx.warn(
                c,
                format!(
                    "condition any is treated as on-failure with mode: {mode}: a job task that completed is not run again"
                ),
            );
            spec.restart.condition = RestartCondition::OnFailure;
        }
        Some(_) => {}
        // Not written: a job's default condition is on-failure (Swarm's).
        None => spec.restart.condition = RestartCondition::OnFailure,
    }
    for p in policies_at {
        cx.warn(
            p,
            format!("ignored with mode: {mode}: a job has no rolling update; deploying a changed job runs it again"),
        );
    }
    spec.update = UpdateConfig::default();
    spec.rollback = UpdateConfig::rollback_default();
}

/// `deploy.restart_policy`, and the `condition` entry if written.
fn restart_policy<'a>(cx: &mut Ctx, at: &At<'a>) -> (RestartPolicy, Option<At<'a>>) {
    let mut p = RestartPolicy::default();
    let mut condition_at = None;
    for e in at.map(cx).unwrap_or_default() {
        if e.is_null() {
            continue;
        }
        match e.key {
            "condition" => {
                if let Some(c) = e.choice(cx, &["none", "on-failure", "any"]) {
                    p.condition = match c {
                        "none" => RestartCondition::None,
                        "on-failure" => RestartCondition::OnFailure,
                        _ => RestartCondition::Any,
                    };
                    condition_at = Some(e);
                }
            }
            "delay" => p.delay_ms = e.duration(cx).unwrap_or(p.delay_ms),
            "max_attempts" => match e.uint(cx) {
                Some(n) if n > MAX_RESTART_ATTEMPTS => {
                    cx.error(&e, format!("at most {MAX_RESTART_ATTEMPTS}, got {n} (0 means no limit)"))
                }
                Some(n) => p.max_attempts = n,
                None => {}
            },
            "window" => p.window_ms = e.duration(cx).unwrap_or(p.window_ms),
            _ => cx.unknown_key(&e, &keys::RESTART_POLICY),
        }
    }
    (p, condition_at)
}

/// `deploy.update_config`, or `deploy.rollback_config` (`rollback`: a
/// rollback cannot itself roll back on failure).
fn update_config(cx: &mut Ctx, at: &At<'_>, rollback: bool) -> UpdateConfig {
    let mut u = if rollback { UpdateConfig::rollback_default() } else { UpdateConfig::default() };
    let actions: &[&str] = if rollback { &["pause", "continue"] } else { &["pause", "continue", "rollback"] };
    for e in at.map(cx).unwrap_or_default() {
        if e.is_null() {
            continue;
        }
        match e.key {
            "parallelism" => u.parallelism = e.uint(cx).unwrap_or(u.parallelism),
            "delay" => u.delay_ms = e.duration(cx).unwrap_or(u.delay_ms),
            "monitor" => u.monitor_ms = e.duration(cx).unwrap_or(u.monitor_ms),
            "failure_action" => {
                if rollback && e.text() == Some("rollback") {
                    cx.error(
                        &e,
                        "rollback is not a failure action of a rollback: a failed rollback can pause or continue",
                    );
                    continue;
                }
                u.failure_action = match e.choice(cx, actions) {
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
            _ => cx.unknown_key(&e, if rollback { &keys::ROLLBACK_CONFIG } else { &keys::UPDATE_CONFIG }),
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
            _ => cx.unknown_key(&e, &keys::HEALTHCHECK),
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
