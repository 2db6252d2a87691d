//! Real Swarm stacks: what `docker stack deploy` (docker/cli's compose
//! loader and converter) and swarmkit take is taken; what they refuse, or
//! what stackd cannot apply without silently changing what the service
//! does, is refused with a reason. Each test names the behaviour it follows.

use super::{errors, warnings, web};
use crate::model::{ConstraintOp, Logging};

/// docker/cli `convert.Service` passes `logging` as `LogDriver{Name:
/// driver, Options: options}` even when `driver` is empty, and the engine
/// (`mergeAndVerifyLogConfig`) fills in its default driver and checks the
/// options against it: `options` without `driver` configure the engine's
/// default driver (json-file's `max-size`, `max-file`).
#[test]
fn logging_options_without_a_driver_go_to_the_engines_default_driver() {
    let s = web(
        "services:\n  web:\n    image: x\n    logging:\n      options:\n        max-size: 10m\n        max-file: '3'\n",
    );
    assert_eq!(
        s.task.logging,
        Some(Logging {
            driver: String::new(),
            options: [("max-file", "3"), ("max-size", "10m")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    );
    assert_eq!(
        warnings("services:\n  web:\n    image: x\n    logging:\n      options: {max-size: 10m}\n"),
        Vec::<String>::new()
    );
}

/// swarmkit `constraint.NodeMatches` compares the key with
/// `strings.EqualFold`, the `node.labels.` prefix too; the label name after
/// it is kept as written (case-sensitive).
#[test]
fn constraint_keys_in_any_case_are_taken() {
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints:\n          - node.Labels.Zone == eu\n          - Node.Role == Manager\n          - NODE.HOSTNAME != n1\n",
    );
    let c = &s.task.placement.constraints;
    assert_eq!(c.len(), 3);
    assert_eq!((c[0].key.as_str(), c[0].op, c[0].value.as_str()), ("node.Labels.Zone", ConstraintOp::Eq, "eu"));
}

/// swarmkit knows `node.ip` (an address or a CIDR subnet),
/// `node.platform.arch` and the engine's labels (`engine.labels.*`):
/// stackd too, from what the agents report of their engine; a `node.ip`
/// that is no address is refused, saying so.
#[test]
fn node_ip_arch_and_engine_labels_are_taken() {
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: [node.ip == 10.0.0.5, node.ip != 10.1.0.0/16, 'node.ip==2001:db8::2']\n",
    );
    assert_eq!(s.task.placement.constraints.len(), 3);
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: [node.platform.arch == x86_64, Engine.Labels.disk != hdd]\n",
    );
    let c = &s.task.placement.constraints;
    assert_eq!((c[0].key.as_str(), c[0].op, c[0].value.as_str()), ("node.platform.arch", ConstraintOp::Eq, "x86_64"));
    assert_eq!((c[1].key.as_str(), c[1].op, c[1].value.as_str()), ("Engine.Labels.disk", ConstraintOp::Ne, "hdd"));
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints:\n          - engine.labels. == ssd\n          - node.ip == db1\n"
        ),
        [
            "stack.yml:7:13: services.web.deploy.placement.constraints[0]: unknown constraint key \"engine.labels.\": use \
             node.id, node.hostname, node.role, node.ip, node.platform.os, node.platform.arch, node.labels.<label> or \
             engine.labels.<label>",
            "stack.yml:8:13: services.web.deploy.placement.constraints[1]: node.ip takes an IP address or a CIDR subnet, got \"db1\"",
        ]
    );
}

/// swarmkit `constraint.Parse` refuses a key or a value outside its
/// patterns (`^[a-z_][a-z0-9\-_.]+$`, and no `,`, `'`, `"`, `=`, … in a
/// value), and an expression without `==` or `!=`.
#[test]
fn constraints_swarmkit_cannot_parse_are_refused() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints:\n          - node.labels.a == b,c\n          - node.labels.a/b == c\n          - node.labels.zone\n"
        ),
        [
            "stack.yml:7:13: services.web.deploy.placement.constraints[0]: value \"b,c\" is invalid: use letters, digits, spaces and - _ . : / * ( ) ? + [ ] \\ ^ $ |",
            "stack.yml:8:13: services.web.deploy.placement.constraints[1]: key \"node.labels.a/b\" is invalid: use letters, digits, - _ and .",
            "stack.yml:9:13: services.web.deploy.placement.constraints[2]: \"node.labels.zone\" must be `key == value` or `key != value`",
        ]
    );
}

/// swarmkit's scheduler (`nodeSet.tree`) accepts any spread descriptor and
/// spreads over `node.labels.*` (prefix in any case) and `engine.labels.*`
/// only: any other descriptor, such as `node.id`, spreads nothing. stackd
/// takes them all, and says which spread nothing.
#[test]
fn any_spread_descriptor_is_taken() {
    let text = "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        preferences:\n          - spread: node.id\n          - spread: node.Labels.rack\n          - spread: engine.labels.zone\n";
    assert_eq!(web(text).task.placement.preferences, ["node.id", "node.Labels.rack", "engine.labels.zone"]);
    assert_eq!(
        warnings(text),
        [
            "stack.yml:7:13: services.web.deploy.placement.preferences[0].spread: spreading over node.id spreads nothing, \
             as in Swarm (only node and engine labels are spread over); tasks are spread over nodes anyway",
        ]
    );
}

/// swarmkit compares `node.role` case-insensitively; a role no node can
/// have is refused: swarmkit would never place the task (`==`) or ignore
/// the constraint (`!=`), which is a typo's doing.
#[test]
fn node_role_is_compared_in_any_case() {
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: [node.role == Manager]\n",
    );
    assert_eq!(s.task.placement.constraints[0].value, "Manager");
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: [node.role != boss]\n"
        ),
        ["stack.yml:6:23: services.web.deploy.placement.constraints[0]: node.role is manager or worker, not \"boss\""]
    );
}

/// docker/cli keeps `subpath` of a volume mount (`VolumeOptions.Subpath`):
/// ignoring it would write the data at the volume's root, so it is refused.
#[test]
fn a_volume_subpath_is_refused() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    volumes:\n      - type: volume\n        source: data\n        target: /d\n        volume: {subpath: app}\n\nvolumes:\n  data:\n"
        ),
        [
            "stack.yml:8:18: services.web.volumes[0].volume.subpath: not supported yet: the data would be written at the volume's root; declare a volume per directory"
        ]
    );
    assert_eq!(
        warnings(
            "services:\n  web:\n    image: x\n    volumes:\n      - type: volume\n        source: data\n        target: /d\n        volume: {nocopy: true}\n\nvolumes:\n  data:\n"
        ),
        ["stack.yml:8:18: services.web.volumes[0].volume.nocopy: not supported yet; ignored"]
    );
}

/// Keys `docker stack deploy` refuses (not in docker/cli's schema) and that
/// would change what the service can reach are refused: supplementary
/// groups, device cgroup rules, the Docker API socket, the host's cgroup
/// namespace. `cgroupns_mode` (docker/cli's schema) is read as `cgroup`.
#[test]
fn keys_that_change_what_a_service_can_reach_are_refused() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    group_add: [docker]\n    device_cgroup_rules: ['c 1:3 mr']\n    use_api_socket: true\n    cgroup: host\n    cgroupns_mode: host\n"
        ),
        [
            "stack.yml:4:5: services.web.group_add: group_add is not supported yet: the task's user would lack these groups' access",
            "stack.yml:5:5: services.web.device_cgroup_rules: device_cgroup_rules is not supported yet: the task would start without access to these devices",
            "stack.yml:6:5: services.web.use_api_socket: use_api_socket is not supported: bind-mount /var/run/docker.sock if the service needs the Docker API",
            "stack.yml:7:5: services.web.cgroup: cgroup: host is not supported: the task would run in a cgroup namespace of its own",
            "stack.yml:8:5: services.web.cgroupns_mode: cgroupns_mode: host is not supported: the task would run in a cgroup namespace of its own",
        ]
    );
    assert_eq!(
        warnings("services:\n  web:\n    image: x\n    cgroup: private\n    cgroupns_mode: private\n"),
        Vec::<String>::new()
    );
}

/// Swarm's template drivers render a config's content: a stack config with
/// `template_driver` would reach the task unrendered, so it is refused; on an
/// external one it changes nothing (the object exists already).
#[test]
fn a_template_driver_is_refused_unless_external() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\nconfigs:\n  c:\n    content: 'a {{.Service.Name}}'\n    template_driver: golang\n"
        ),
        [
            "stack.yml:7:5: configs.c.template_driver: template drivers are not supported yet: the task would get the template unrendered"
        ]
    );
}
