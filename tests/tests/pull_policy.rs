//! `pull_policy` on the real engine (no registry is reachable here): `never`
//! rejects a task whose image the node lacks, `always` rejects one whose
//! pull fails even though the node holds the image, and `stackctl deploy
//! --pull missing` overrides the files' policy so that the node's copy runs.

use std::time::Duration;

use stackd_tests::{Node, build_images, docker, require_docker, wait_until};

/// The first rejected task of `stack`, once there is one.
fn rejected(node: &Node, stack: &str) -> serde_json::Value {
    wait_until(Duration::from_secs(60), "a rejected task", || {
        let v = node.stackctl_json(&["ps", stack]);
        v.as_array()?.iter().find(|t| t["current_state"] == "rejected").cloned()
    })
}

#[test]
fn pull_policy_never_and_always_reject_with_a_reason_and_the_deploy_flag_overrides() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("pull1").expect("init");
    let label = format!("io.stackd.cluster={}", node.cluster_id());

    let never = node.write_stack(
        "never.yml",
        "services:\n  web:\n    image: stackd-test/not-on-this-node:1\n    pull_policy: never\n",
    );
    node.stackctl(&["deploy", "-c", &never, "never"]);
    let task = rejected(&node, "never");
    let err = task["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("is not on this node, and pull_policy is never") && err.contains("stackd-test/not-on-this-node:1"),
        "{task:#}"
    );
    node.stackctl(&["stack", "rm", "never"]);

    // The node holds stackd-test/busybox:1 (built here), but no registry has it.
    let always = node.write_stack(
        "always.yml",
        "services:\n  app:\n    image: stackd-test/busybox:1\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n    pull_policy: always\n",
    );
    node.stackctl(&["deploy", "-c", &always, "always"]);
    let task = rejected(&node, "always");
    let err = task["error"].as_str().unwrap_or_default();
    assert!(err.contains("pull_policy always, and the pull failed"), "{task:#}");
    assert!(docker::running(&label).is_empty(), "nothing ran");
    let inspect = node.stackctl_json(&["service", "inspect", "always_app"]);
    assert_eq!(inspect["spec"]["task"]["pull_policy"], "always", "the spec says always: {inspect:#}");

    // The deploy flag overrides the file: the node's copy runs.
    node.stackctl(&["deploy", "-c", &always, "always", "--pull", "missing", "--wait", "--timeout", "60s"]);
    assert_eq!(docker::running(&label).len(), 1);
    let inspect = node.stackctl_json(&["service", "inspect", "always_app"]);
    let policy = &inspect["spec"]["task"]["pull_policy"];
    assert!(policy.is_null() || *policy == "missing", "the new revision pulls when missing: {inspect:#}");
    node.stackctl(&["stack", "rm", "always"]);
}
