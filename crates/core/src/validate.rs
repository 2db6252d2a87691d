//! Checks on a normalised [`StackSpec`] that hold whatever file it came from.
//!
//! The loader reports errors with file positions; these checks are the last
//! line of defence inside `apply`, so that no invalid spec is ever stored.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    DataKind, EndpointMode, FailureAction, MAX_OBJECT_BYTES, MountKind, NetworkSpec, PublishMode, ServiceMode,
    StackSpec,
};

/// The most restarts `restart_policy.max_attempts` may allow: the stopped
/// tasks that count them are kept in the replicated state, per slot.
pub const MAX_RESTART_ATTEMPTS: u64 = 100;

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

/// Checks a config or secret created on its own (`stackctl config|secret
/// create`): its name, and its size in bytes. The control API checks it
/// before proposing, `apply` again; both say the same.
pub fn object(kind: DataKind, name: &str, size: usize) -> Result<(), String> {
    let what = kind.as_str();
    if !is_valid_name(name) {
        return Err(format!(
            "{what} name {name:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit (63 at most)"
        ));
    }
    if size > MAX_OBJECT_BYTES {
        return Err(format!("a {what} holds at most {MAX_OBJECT_BYTES} bytes, this one has {size}"));
    }
    Ok(())
}

/// The most labels a node may have.
pub const MAX_NODE_LABELS: usize = 64;

/// Checks a node label (`stackctl node update --label-add KEY=VALUE`): a key
/// of letters, digits, `-`, `_`, `.` and `/`, starting with a letter or
/// digit, 128 at most (so that `node.labels.KEY == VALUE` constraints can
/// name it); a value of printable characters without surrounding spaces,
/// 256 at most (it may be empty). The control API checks it before
/// proposing, `apply` again; both say the same.
pub fn node_label(key: &str, value: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let key_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && key.len() <= 128;
    if !key_ok {
        return Err(format!(
            "node label key {key:?} is invalid: use letters, digits, '-', '_', '.' and '/', starting with a \
             letter or digit (128 at most)"
        ));
    }
    if value.len() > 256 || value.chars().any(char::is_control) || value.trim() != value {
        return Err(format!(
            "the value of node label {key} is invalid: printable characters without surrounding spaces, 256 bytes \
             at most"
        ));
    }
    Ok(())
}

/// Checks a change of a node's labels: every key and value to add
/// ([`node_label`]), every key to remove, and no key in both.
pub fn node_label_change(add: &BTreeMap<String, String>, remove: &[String]) -> Result<(), String> {
    for (k, v) in add {
        node_label(k, v)?;
    }
    for k in remove {
        node_label(k, "")?;
        if add.contains_key(k) {
            return Err(format!("node label {k} is both added and removed"));
        }
    }
    Ok(())
}

/// Whether `name` can name a network on the engine (Docker's rule: a
/// letter or digit, then letters, digits, `_`, `.` and `-`; 255 at most).
pub fn is_valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 255
}

/// Whether `alias` is a usable DNS name for a container on a network:
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit, 253 at most.
pub fn is_valid_alias(alias: &str) -> bool {
    let mut chars = alias.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alias.len() <= 253
}

/// Docker's own networks that a stack can only use as external networks,
/// joined alone and without aliases (`network_mode: host|none`), and
/// drivers a stack network cannot have.
pub const RESERVED_NETWORKS: &[&str] = &["host", "none"];

/// Checks the stack's networks; returns the engine names they declare.
fn networks(networks: &BTreeMap<String, NetworkSpec>, errors: &mut Vec<String>) -> BTreeSet<String> {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, n) in networks {
        let at = format!("networks.{key}");
        if !is_valid_name(key) {
            errors.push(format!("{at}: network name is invalid: use letters, digits, '-', '_' and '.'"));
        }
        if !is_valid_network_name(&n.name) {
            errors.push(format!(
                "{at}.name: {:?} is not a valid network name: use letters, digits, '-', '_' and '.', starting with a letter or digit",
                n.name
            ));
        }
        if RESERVED_NETWORKS.contains(&n.name.as_str()) && !n.external {
            errors.push(format!(
                "{at}.name: Docker's `{}` network can only be used as an external network (network_mode: {})",
                n.name, n.name
            ));
        }
        if let Some(d) = &n.driver {
            if d.trim().is_empty() || d.contains(char::is_whitespace) {
                errors.push(format!("{at}.driver: {d:?} is not a driver name"));
            } else if RESERVED_NETWORKS.contains(&d.as_str()) {
                errors.push(format!("{at}.driver: driver `{d}` cannot be used for a stack network"));
            }
        }
        if n.external && (n.driver.is_some() || n.internal || !n.labels.is_empty() || !n.driver_opts.is_empty()) {
            errors.push(format!("{at}: driver, driver_opts, internal and labels cannot be set on an external network"));
        }
        if let Some(other) = names.insert(&n.name, key) {
            errors.push(format!("{at}.name: networks {other} and {key} are both named {}", n.name));
        }
    }
    names.into_keys().map(str::to_string).collect()
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
    let network_names = networks(&spec.networks, &mut errors);
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
        let mut attached = BTreeSet::new();
        if let Some(a) = svc.task.networks.iter().find(|a| RESERVED_NETWORKS.contains(&a.network.as_str()))
            && (svc.task.networks.len() > 1 || !a.aliases.is_empty())
        {
            errors.push(format!(
                "{at}.networks: the `{}` network (network_mode: {}) is joined alone and without aliases",
                a.network, a.network
            ));
        }
        for a in &svc.task.networks {
            if !network_names.contains(&a.network) {
                errors.push(format!("{at}.networks: network {:?} is not one of the stack's networks", a.network));
            }
            if !attached.insert(&a.network) {
                errors.push(format!("{at}.networks: network {:?} is attached twice", a.network));
            }
            for alias in &a.aliases {
                if !is_valid_alias(alias) {
                    errors.push(format!(
                        "{at}.networks: alias {alias:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit"
                    ));
                }
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
        if svc.restart.max_attempts > MAX_RESTART_ATTEMPTS {
            errors.push(format!(
                "{at}.deploy.restart_policy.max_attempts: at most {MAX_RESTART_ATTEMPTS}, got {}",
                svc.restart.max_attempts
            ));
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
        if let Some(policy) = &svc.autoscale {
            for problem in policy.problems(&svc.mode, &svc.task.ports) {
                let key = match problem.key() {
                    "" => "x-stackd-autoscale".to_string(),
                    "deploy.replicas" => "deploy.replicas".to_string(),
                    key => format!("x-stackd-autoscale.{key}"),
                };
                errors.push(format!("{at}.{key}: {problem}"));
            }
        }
        let mut named = BTreeSet::new();
        for d in &svc.depends_on {
            if d.service == *key {
                errors.push(format!("{at}.depends_on: a service cannot depend on itself"));
            } else if !spec.services.contains_key(&d.service) {
                errors.push(format!("{at}.depends_on: there is no service {} in the stack", d.service));
            }
            if !named.insert(&d.service) {
                errors.push(format!("{at}.depends_on: {} is named twice", d.service));
            }
        }
    }
    if let Some(circle) = depends_on_circle(spec) {
        errors.push(format!(
            "services.{}.depends_on: depends_on goes round in a circle through {}",
            circle[0],
            circle.join(", ")
        ));
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

/// The services that wait for each other in a circle through `depends_on`
/// (and those that wait for them), by name; `None` when there is no circle.
/// Services that would never start: each waits for another that waits too.
fn depends_on_circle(spec: &StackSpec) -> Option<Vec<String>> {
    // Start the services whose dependencies have all started (Kahn's
    // order); those never started wait in a circle, or for one that does.
    let mut waits_for: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, s) in &spec.services {
        let deps: BTreeSet<&str> = s
            .depends_on
            .iter()
            .map(|d| d.service.as_str())
            .filter(|d| spec.services.contains_key(*d) && *d != k.as_str())
            .collect();
        waits_for.insert(k, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(k);
        }
    }
    let mut ready: Vec<&str> = waits_for.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
    while let Some(k) = ready.pop() {
        for d in dependents.get(k).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = waits_for.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.push(d);
                }
            }
        }
    }
    let left: Vec<String> = waits_for.into_iter().filter(|(_, n)| *n > 0).map(|(k, _)| k.to_string()).collect();
    (!left.is_empty()).then_some(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NetworkAttachment, PortConfig, Protocol, ServiceSpec, TaskTemplate, UpdateConfig};

    fn stack(svc: ServiceSpec) -> StackSpec {
        StackSpec { name: "app".into(), services: [(svc.name.clone(), svc)].into(), ..Default::default() }
    }

    fn web() -> ServiceSpec {
        ServiceSpec {
            autoscale: None,
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskTemplate { image: "web:1".into(), ..Default::default() },
            restart: Default::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::rollback_default(),
            labels: Default::default(),
            endpoint_mode: EndpointMode::Vip,
            depends_on: Vec::new(),
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
                proxy_protocol: false,
            },
            PortConfig {
                target: 81,
                published: Some(8081),
                protocol: Protocol::Tcp,
                mode: PublishMode::Host,
                host_ip: String::new(),
                proxy_protocol: false,
            },
            PortConfig {
                target: 82,
                published: None,
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
                host_ip: String::new(),
                proxy_protocol: false,
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

    /// An autoscaling policy from the API is held to the loader's rules.
    #[test]
    fn autoscale_policies_are_checked_without_the_loader() {
        use crate::autoscale::{Policy, Target};
        let check = |mode: ServiceMode, policy: Policy, ports: Vec<PortConfig>| {
            let mut s = web();
            s.mode = mode;
            s.autoscale = Some(policy);
            s.task.ports = ports;
            stack_spec(&stack(s)).err().unwrap_or_default()
        };
        let cpu = Target::Cpu { percent: 70 };
        let replicated = |replicas| ServiceMode::Replicated { replicas };
        assert_eq!(check(replicated(2), Policy::new(2, 12, cpu), vec![]), Vec::<String>::new());
        assert_eq!(check(replicated(1), Policy::new(1, 1, cpu), vec![]), Vec::<String>::new());
        assert_eq!(
            check(replicated(1), Policy::new(0, 3, cpu), vec![]),
            [
                "services.web.x-stackd-autoscale.min: must be at least 1, got 0: an autoscaled service keeps a replica to measure"
            ]
        );
        assert_eq!(
            check(replicated(4), Policy::new(5, 3, cpu), vec![]),
            ["services.web.x-stackd-autoscale.min: min 5 is above max 3"]
        );
        assert_eq!(
            check(replicated(2), Policy::new(1, MAX_REPLICAS + 1, cpu), vec![]),
            ["services.web.x-stackd-autoscale.max: at most 10000, got 10001"]
        );
        assert_eq!(
            check(replicated(1), Policy::new(2, 3, cpu), vec![]),
            [
                "services.web.deploy.replicas: replicas 1 is below x-stackd-autoscale.min 2: replicas is where the autoscaler starts"
            ]
        );
        assert_eq!(
            check(replicated(4), Policy::new(2, 3, cpu), vec![]),
            [
                "services.web.deploy.replicas: replicas 4 is above x-stackd-autoscale.max 3: replicas is where the autoscaler starts"
            ]
        );
        for mode in
            [ServiceMode::Global, ServiceMode::GlobalJob, ServiceMode::ReplicatedJob { replicas: 2, max_concurrent: 0 }]
        {
            let errors = check(mode.clone(), Policy::new(2, 3, cpu), vec![]);
            assert_eq!(errors.len(), 1, "{mode:?}: {errors:?}");
            assert!(
                errors[0].starts_with("services.web.x-stackd-autoscale: autoscaling needs a replicated service"),
                "{errors:?}"
            );
        }
        assert_eq!(
            check(replicated(2), Policy::new(2, 3, Target::Cpu { percent: 0 }), vec![]),
            ["services.web.x-stackd-autoscale.target.cpu: must be a percentage from 1% to 1000%, got 0%"]
        );
        assert_eq!(check(replicated(2), Policy::new(2, 3, Target::Cpu { percent: 1001 }), vec![]).len(), 1);
        let mesh = |mode, protocol| PortConfig {
            target: 80,
            published: Some(8080),
            protocol,
            mode,
            host_ip: String::new(),
            proxy_protocol: false,
        };
        let connections = |n| Policy::new(2, 3, Target::Connections { per_replica: n });
        assert_eq!(
            check(replicated(2), connections(50), vec![mesh(PublishMode::Ingress, Protocol::Tcp)]),
            Vec::<String>::new()
        );
        assert_eq!(
            check(replicated(2), connections(0), vec![mesh(PublishMode::Ingress, Protocol::Tcp)]),
            [
                "services.web.x-stackd-autoscale.target.connections: must be a whole number of connections per replica from 1 to 4294967295, got 0"
            ]
        );
        for ports in
            [vec![], vec![mesh(PublishMode::Host, Protocol::Tcp)], vec![mesh(PublishMode::Ingress, Protocol::Udp)]]
        {
            let errors = check(replicated(2), connections(50), ports);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with(
                    "services.web.x-stackd-autoscale.target.connections: a connections target needs a TCP port published through the routing mesh"
                ),
                "{errors:?}"
            );
        }
        let mut p = Policy::new(2, 3, cpu);
        p.period = 999;
        p.down_window = 3_600_001;
        p.up_window = 3_600_000;
        assert_eq!(
            check(replicated(2), p, vec![]),
            [
                "services.web.x-stackd-autoscale.period: at least 1s, got 999ms",
                "services.web.x-stackd-autoscale.scale_down_window: at most 1h, got 1h1ms",
            ]
        );
    }

    fn net_stack(networks: &[(&str, NetworkSpec)], attached: &[(&str, &[&str])]) -> StackSpec {
        let mut web = web();
        web.task.networks = attached
            .iter()
            .map(|(n, aliases)| NetworkAttachment {
                network: n.to_string(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
            })
            .collect();
        StackSpec {
            name: "shop".into(),
            networks: networks.iter().map(|(k, n)| (k.to_string(), n.clone())).collect(),
            ..stack(web)
        }
    }

    fn net(name: &str) -> NetworkSpec {
        NetworkSpec { name: name.into(), ..Default::default() }
    }

    #[test]
    fn networks_and_attachments() {
        assert_eq!(stack_spec(&net_stack(&[("back", net("shop_back"))], &[("shop_back", &["api"])])), Ok(()));
        assert_eq!(stack_spec(&net_stack(&[], &[])), Ok(()), "no networks: Docker's default bridge");
        let problems = |s: StackSpec| stack_spec(&s).expect_err("invalid");
        assert_eq!(
            problems(net_stack(&[("back", net("shop_back"))], &[("shop_front", &[]), ("shop_back", &["bad alias"])])),
            [
                "services.web.networks: network \"shop_front\" is not one of the stack's networks",
                "services.web.networks: alias \"bad alias\" is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            ]
        );
        assert_eq!(
            problems(net_stack(&[("back", net("shop_back"))], &[("shop_back", &[]), ("shop_back", &[])])),
            ["services.web.networks: network \"shop_back\" is attached twice"]
        );
        let external = NetworkSpec { external: true, internal: true, ..net("infra") };
        let host = NetworkSpec { driver: Some("host".into()), ..net("shop_h") };
        assert_eq!(
            problems(net_stack(
                &[("a", net("x")), ("b", net("x")), ("c", external), ("d", net("none")), ("h", host)],
                &[]
            )),
            [
                "networks.b.name: networks a and b are both named x",
                "networks.c: driver, driver_opts, internal and labels cannot be set on an external network",
                "networks.d.name: Docker's `none` network can only be used as an external network (network_mode: none)",
                "networks.h.driver: driver `host` cannot be used for a stack network",
            ]
        );
        assert_eq!(
            problems(net_stack(&[("-k", net("bad name"))], &[])),
            [
                "networks.-k: network name is invalid: use letters, digits, '-', '_' and '.'",
                "networks.-k.name: \"bad name\" is not a valid network name: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            ]
        );
    }

    #[test]
    fn names() {
        assert!(is_valid_network_name("shop_back-1.x"));
        assert!(!is_valid_network_name(""));
        assert!(!is_valid_network_name("_x"));
        assert!(!is_valid_network_name("a/b"));
        assert!(!is_valid_network_name(&"a".repeat(256)));
        assert!(is_valid_alias("api-v1"));
        assert!(!is_valid_alias("api v1"));
        assert!(!is_valid_alias(""));
    }

    #[test]
    fn an_object_needs_a_valid_name_and_at_most_the_size_limit() {
        use crate::model::{DataKind, MAX_OBJECT_BYTES};
        assert_eq!(object(DataKind::Config, "app.conf", MAX_OBJECT_BYTES), Ok(()));
        let why = object(DataKind::Secret, "-key", 1).expect_err("bad name");
        assert!(why.starts_with("secret name \"-key\" is invalid"), "{why}");
        let why = object(DataKind::Config, "big", MAX_OBJECT_BYTES + 1).expect_err("too big");
        assert_eq!(
            why,
            format!("a config holds at most {MAX_OBJECT_BYTES} bytes, this one has {}", MAX_OBJECT_BYTES + 1)
        );
    }

    #[test]
    fn dependencies_name_services_of_the_stack_without_circles() {
        use crate::model::{Dependency, DependencyCondition};
        let dep = |service: &str| Dependency {
            service: service.into(),
            condition: DependencyCondition::ServiceHealthy,
            required: true,
        };
        let named = |name: &str, deps: &[&str]| ServiceSpec {
            name: name.into(),
            depends_on: deps.iter().map(|d| dep(d)).collect(),
            ..web()
        };
        let stack_of = |services: Vec<ServiceSpec>| StackSpec {
            name: "app".into(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            ..Default::default()
        };
        assert_eq!(stack_spec(&stack_of(vec![named("web", &["db"]), named("db", &[])])), Ok(()));
        assert_eq!(
            stack_spec(&stack_of(vec![named("web", &["web", "ghost", "db", "db"]), named("db", &[])])),
            Err(vec![
                "services.web.depends_on: a service cannot depend on itself".to_string(),
                "services.web.depends_on: there is no service ghost in the stack".to_string(),
                "services.web.depends_on: db is named twice".to_string(),
            ])
        );
        // a → b → c → a, and d waits for a: none of them would ever start.
        let circle = stack_of(vec![
            named("a", &["b"]),
            named("b", &["c"]),
            named("c", &["a"]),
            named("d", &["a"]),
            named("e", &[]),
        ]);
        assert_eq!(
            stack_spec(&circle),
            Err(vec!["services.a.depends_on: depends_on goes round in a circle through a, b, c, d".to_string()])
        );
    }
}
