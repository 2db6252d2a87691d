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
        for (kind, refs, declared) in
            [("configs", &svc.task.configs, &spec.configs), ("secrets", &svc.task.secrets, &spec.secrets)]
        {
            for r in refs {
                if !r.target.starts_with('/') {
                    errors.push(format!("{at}.{kind}: target {:?} must be an absolute path", r.target));
                }
                if !targets.insert(r.target.clone()) {
                    errors.push(format!("{at}.{kind}: {:?} is the target of two files or mounts", r.target));
                }
                match declared.get(&r.source) {
                    Some(d) if d.name == r.name && d.digest == r.digest => {}
                    Some(_) => errors.push(format!("{at}.{kind}: {} does not match the stack's {kind}", r.source)),
                    None => errors.push(format!("{at}.{kind}: {} is not declared by the stack", r.source)),
                }
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
    for (kind, declared) in [("configs", &spec.configs), ("secrets", &spec.secrets)] {
        for (key, o) in declared {
            if !is_valid_name(&o.name) {
                errors.push(format!("{kind}.{key}: name {:?} is invalid", o.name));
            }
            if !o.external && o.digest != crate::model::digest(&o.data.0) {
                errors.push(format!("{kind}.{key}: the digest does not match the content"));
            }
            if o.data.0.len() > crate::model::MAX_OBJECT_BYTES {
                errors.push(format!("{kind}.{key}: at most {} bytes", crate::model::MAX_OBJECT_BYTES));
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortConfig, Protocol, ServiceSpec, TaskTemplate, UpdateConfig};

    fn stack(svc: ServiceSpec) -> StackSpec {
        StackSpec { name: "app".into(), services: [(svc.name.clone(), svc)].into(), ..Default::default() }
    }

    fn web() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskTemplate { image: "web:1".into(), ..Default::default() },
            restart: Default::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::rollback_default(),
            labels: Default::default(),
            endpoint_mode: EndpointMode::Vip,
        }
    }

    /// What the loader checks with positions, `apply` checks again: a spec
    /// that did not come from the loader cannot slip through.
    #[test]
    fn job_rollback_and_endpoint_checks_hold_without_the_loader() {
        assert_eq!(stack_spec(&stack(web())), Ok(()));
        let mut s = web();
        s.mode = ServiceMode::ReplicatedJob { replicas: MAX_REPLICAS + 1, max_concurrent: 0 };
        s.rollback.failure_action = FailureAction::Rollback;
        s.rollback.max_failure_ratio = 1.5;
        s.endpoint_mode = EndpointMode::Dnsrr;
        s.task.ports = vec![
            PortConfig {
                target: 80,
                published: Some(8080),
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
                host_ip: String::new(),
            },
            PortConfig {
                target: 81,
                published: Some(8081),
                protocol: Protocol::Tcp,
                mode: PublishMode::Host,
                host_ip: String::new(),
            },
            PortConfig {
                target: 82,
                published: None,
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
                host_ip: String::new(),
            },
        ];
        let errors = stack_spec(&stack(s)).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().filter_map(|e| e.split_once(": ").map(|(p, _)| p)).collect();
        assert_eq!(
            paths,
            [
                "services.web.deploy.replicas",
                "services.web.deploy.rollback_config.max_failure_ratio",
                "services.web.deploy.rollback_config.failure_action",
                "services.web.deploy.endpoint_mode",
            ],
            "{errors:?}"
        );
        assert!(errors[3].contains("port 8080/tcp"), "{}", errors[3]);
    }
}
