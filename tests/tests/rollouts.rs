//! Rollouts from the command line on a single-node cluster: `service
//! history`, `service rollback [--to N] --wait`, `service update --force
//! --wait`, and `service update --resume` of a paused rollout (exit codes
//! as `deploy --wait`'s).

use stackd_tests::{Node, build_images, require_docker};

fn web(image: &str, check: &str) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    healthcheck:\n      test: [\"CMD\", \"{check}\"]\n      interval: 500ms\n      retries: 1\n    deploy:\n      replicas: 2\n      update_config:\n        monitor: 1s\n        failure_action: pause\n      rollback_config:\n        monitor: 1s\n"
    )
}

/// Exit code and output (stdout and stderr) of a `stackctl` command.
fn run(node: &Node, args: &[&str]) -> (Option<i32>, String) {
    let o = node.stackctl_output(args).expect("stackctl runs");
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn images(node: &Node) -> Vec<String> {
    let v = node.stackctl_json(&["ps", "app"]);
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["desired_state"] == "running" && t["current_state"] == "running")
                .filter_map(|t| t["image"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn history_rollback_force_and_resume_from_the_command_line() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("rollouts").expect("init");
    let v1 = node.write_stack("v1.yml", &web("stackd-test/web:1", "true"));
    let v2 = node.write_stack("v2.yml", &web("stackd-test/web:2", "true"));
    node.stackctl(&["deploy", "-c", &v1, "app", "--wait", "--timeout", "60s"]);
    node.stackctl(&["deploy", "-c", &v2, "app", "--wait", "--timeout", "60s"]);

    // Two revisions, the second changing the image.
    let h = node.stackctl_json(&["service", "history", "app_web"]);
    let revs = h.as_array().expect("rows");
    assert_eq!(revs.len(), 2, "{h}");
    assert!(revs[1]["changes"].as_str().unwrap_or_default().contains("stackd-test/web:2"), "{h}");
    assert_eq!(revs[1]["current"], true);

    // Back to revision 1, waiting: exit 0, every replica on web:1.
    let (code, out) = run(&node, &["service", "rollback", "app_web", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Rolling back service app_web (revision 3)"), "{out}");
    assert_eq!(images(&node), ["stackd-test/web:1", "stackd-test/web:1"]);
    // To a given revision.
    let (code, out) = run(&node, &["service", "rollback", "app_web", "--to", "2", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(images(&node), ["stackd-test/web:2", "stackd-test/web:2"]);
    // A revision that is not kept: a clear error, exit 1, nothing changes.
    let (code, out) = run(&node, &["service", "rollback", "app_web", "--to", "99"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("has no revision 99"), "{out}");

    // A forced update replaces every task: new containers, the same spec.
    let before = node.stackctl_json(&["ps", "app"]);
    let (code, out) = run(&node, &["service", "update", "--force", "app_web", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{out}");
    let after = node.stackctl_json(&["ps", "app"]);
    let running_ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["current_state"] == "running")
                    .filter_map(|t| t["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old, new) = (running_ids(&before), running_ids(&after));
    assert!(new.len() == 2 && new.iter().all(|id| !old.contains(id)), "tasks not replaced: {old:?} -> {new:?}");
    let h = node.stackctl_json(&["service", "history", "app_web"]);
    let last = h.as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    assert!(last["changes"].as_str().unwrap_or_default().contains("forced update"), "{h}");

    // Nothing to resume: refused.
    let (code, out) = run(&node, &["service", "update", "--resume", "app_web"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not paused"), "{out}");

    // A revision whose health check fails pauses (exit 3); resumed, it fails again and pauses again.
    let bad = node.write_stack("bad.yml", &web("stackd-test/web:1", "false"));
    let (code, out) = run(&node, &["deploy", "-c", &bad, "app", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(3), "{out}");
    let (code, out) = run(&node, &["service", "update", "--resume", "app_web", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Resuming the rollout of app_web") && out.contains("rollout failed and paused"), "{out}");
    // The way out: back to the last good revision.
    let (code, out) = run(&node, &["service", "rollback", "app_web", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{out}");
    let h = node.stackctl_json(&["service", "history", "app_web"]);
    let last = h.as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    assert!(last["rollout"].as_str().unwrap_or_default().starts_with("rolled_back"), "{h}");
}

#[test]
fn scale_adds_and_removes_replicas_without_replacing_the_others() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("scale").expect("init");
    let file = node.write_stack("v1.yml", &web("stackd-test/web:1", "true"));
    node.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"]);
    let running = |node: &Node| -> Vec<String> {
        let v = node.stackctl_json(&["ps", "app"]);
        let mut ids: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["desired_state"] == "running" && t["current_state"] == "running")
                    .filter_map(|t| t["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let before = running(&node);
    assert_eq!(before.len(), 2);

    // Up to 4: the two tasks stay, two more run; a new revision, same image.
    let (code, out) = run(&node, &["service", "scale", "app_web=4", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Scaling service app_web to 4 (revision 2)"), "{out}");
    let after = running(&node);
    assert_eq!(after.len(), 4, "{out}");
    assert!(before.iter().all(|id| after.contains(id)), "a task was replaced: {before:?} → {after:?}");
    // Down to 1, and the same count again changes nothing.
    let (code, out) = run(&node, &["service", "scale", "app_web=1", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(running(&node).len(), 1);
    let (code, out) = run(&node, &["service", "scale", "app_web=1"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(revision 3)"), "no new revision for the same count: {out}");
    // A bad target: a usage error, exit 1, nothing sent.
    let (code, out) = run(&node, &["service", "scale", "app_web=lots"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("whole number"), "{out}");
}
