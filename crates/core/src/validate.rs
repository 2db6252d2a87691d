//! Checks on a normalised [`StackSpec`] that hold whatever file it came from.
//!
//! The loader reports errors with file positions; these checks are the last
//! line of defence inside `apply`, so that no invalid spec is ever stored.

use std::collections::BTreeSet;

use crate::model::{EndpointMode, FailureAction, MountKind, PublishMode, ServiceMode, StackSpec};

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u64 = 10_000;

/// Whether `name` is a valid stack, service, volume or network name: it starts
/// with a letter or digit and holds only letters, digits, `-`, `_` and `.`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 63
}

/// Validates a stack spec; returns every problem found.
pub fn stack_spec(spec: &StackSpec) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if !is_valid_name(&spec.name) {
        errors.push(format!(
            "stack name {:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit (63 at most)",
            spec.name
        ));
    }
    if spec.services.is_empty() {
        errors.push("the stack has no services".to_string());
    }
    for (key, svc) in &spec.services {
        let at = format!("services.{key}");
        if key != &svc.name {
            errors.push(format!("{at}: name {:?} does not match its key", svc.name));
        }
        if !is_valid_name(key) {
            errors.push(format!("{at}: service name is invalid: use letters, digits, '-', '_' and '.'"));
        }
        if svc.task.image.trim().is_empty() {
            errors.push(format!("{at}.image: a service needs an image"));
        }
        if let ServiceMode::Replicated { replicas } | ServiceMode::ReplicatedJob { replicas, .. } = svc.mode
            && replicas > MAX_REPLICAS
        {
            errors.push(format!("{at}.deploy.replicas: at most {MAX_REPLICAS}, got {replicas}"));
        }
        let mut published = BTreeSet::new();
        for p in &svc.task.ports {
            if p.target == 0 {
                errors.push(format!("{at}.ports: target port must be 1-65535"));
            }
            if let Some(pp) = p.published {
                if pp == 0 {
                    errors.push(format!("{at}.ports: published port must be 1-65535"));
                } else if !published.insert((pp, p.protocol)) {
                    errors.push(format!("{at}.ports: port {pp}/{} is published twice", p.protocol.as_str()));
                }
            }
        }
        let mut targets = BTreeSet::new();
        for m in &svc.task.mounts {
            if !m.target.starts_with('/') {
                errors.push(format!("{at}.volumes: target {:?} must be an absolute path", m.target));
            }
            if !targets.insert(m.target.clone()) {
                errors.push(format!("{at}.volumes: {:?} is mounted twice", m.target));
            }
            if m.kind == MountKind::Bind && !m.source.starts_with('/') {
                errors.push(format!("{at}.volumes: bind source {:?} must be an absolute path", m.source));
            }
        }
        for (key, policy) in [("update_config", &svc.update), ("rollback_config", &svc.rollback)] {
            if policy.max_failure_ratio.is_nan() || !(0.0..=1.0).contains(&policy.max_failure_ratio) {
                errors.push(format!("{at}.deploy.{key}.max_failure_ratio: must be between 0 and 1"));
            }
        }
        if svc.rollback.failure_action == FailureAction::Rollback {
            errors.push(format!(
                "{at}.deploy.rollback_config.failure_action: rollback is not a failure action of a rollback: a failed rollback can pause or continue"
            ));
        }
        if svc.endpoint_mode == EndpointMode::Dnsrr {
            for p in svc.task.ports.iter().filter(|p| p.mode == PublishMode::Ingress) {
                if let Some(pp) = p.published {
                    errors.push(format!(
                        "{at}.deploy.endpoint_mode: dnsrr can't be used with port {pp}/{} published in ingress mode: publish it with `mode: host`, or use endpoint_mode: vip",
                        p.protocol.as_str()
                    ));
                }
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
