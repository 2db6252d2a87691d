//! Checks on a normalised [`StackSpec`] that hold whatever file it came from.
//!
//! The loader reports errors with file positions; these checks are the last
//! line of defence inside `apply`, so that no invalid spec is ever stored.

use std::collections::BTreeSet;

use crate::model::{MountKind, ServiceMode, StackSpec};

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
        if let ServiceMode::Replicated { replicas } = svc.mode
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
        if svc.update.max_failure_ratio.is_nan() || !(0.0..=1.0).contains(&svc.update.max_failure_ratio) {
            errors.push(format!("{at}.deploy.update_config.max_failure_ratio: must be between 0 and 1"));
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
