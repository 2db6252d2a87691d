//! Health end to end, on a single-node cluster with the real engine:
//!
//! - an image's own `HEALTHCHECK` counts: a task of `stackd-test/web-health`
//!   is `starting` until its check passes, then `healthy`, and the deploy
//!   waits for it; a stack that disables the check (`healthcheck: {disable:
//!   true}`) runs the same image without one;
//! - a task not healthy within `start_period + retries × interval` counts
//!   as failed, even when Docker still says `starting` (a probe that hangs),
//!   with that reason, and is replaced;
//! - a revision records what its tasks run: for an image built on the node
//!   (no registry digest), its tag, and why.
//!
//! Needs root and Docker; skipped otherwise (fails with `CI=true`).

use std::time::Duration;

use serde_json::Value;
use stackd_tests::{Node, build_images, require_docker, wait_until};

const IMAGE_CHECK: &str = "\
services:
  web:
    image: stackd-test/web-health:1
    command: [\"sh\", \"-c\", \"sleep 1; touch /tmp/ready; exec httpd -f -p 8080 -h /www\"]
    stop_signal: SIGKILL
    deploy:
      update_config:
        monitor: 1s
  plain:
    image: stackd-test/web-health:1
    stop_signal: SIGKILL
    healthcheck:
      disable: true
";

const HANGING_CHECK: &str = "\
services:
  slow:
    image: stackd-test/web:1
    stop_signal: SIGKILL
    healthcheck:
      test: [\"CMD\", \"sleep\", \"60\"]
      interval: 1s
      timeout: 90s
      retries: 2
      start_period: 1s
    deploy:
      restart_policy:
        condition: on-failure
        delay: 1s
";

fn tasks(node: &Node, stack: &str) -> Vec<Value> {
    node.stackctl_json(&["ps", stack]).as_array().cloned().unwrap_or_default()
}

#[test]
fn image_health_checks_count_and_a_task_never_healthy_fails() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("health").expect("init");

    // The image's check (interval 1 s, retries 2): the deploy waits until it
    // passes, about 1 s after the start.
    let file = node.write_stack("image.yml", IMAGE_CHECK);
    let started = std::time::Instant::now();
    let out = node.stackctl(&["deploy", "-c", &file, "img", "--wait", "--timeout", "60s"]);
    assert!(out.contains("Stack img deployed"), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the deploy did not wait for the image's check: {out}");
    let ts = tasks(&node, "img");
    let health = |svc: &str| -> Vec<String> {
        ts.iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(svc)) && t["current_state"] == "running")
            .map(|t| t["health"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(health("img_web"), ["healthy"], "{ts:?}");
    // Disabled by the stack: no check at all, though the image has one.
    assert_eq!(health("img_plain"), [""], "{ts:?}");
    // The revision says what its tasks run: an image built on the node has
    // no registry digest, so its tag.
    let inspect = node.stackctl(&["service", "inspect", "img_web"]);
    assert!(
        inspect.contains("Runs:      the tag (no registry digest: the image was built or loaded on the node)"),
        "{inspect}"
    );
    let history = node.stackctl_json(&["service", "history", "img_web"]);
    assert!(history[0]["runs"].as_str().is_some_and(|r| r.starts_with("the tag (no registry digest")), "{history}");

    // A probe that hangs: Docker says `starting` for a minute; the task
    // fails after start_period 1 s + 2 × interval 1 s.
    let file = node.write_stack("hang.yml", HANGING_CHECK);
    node.stackctl(&["deploy", "-c", &file, "hang"]);
    let failed = wait_until(Duration::from_secs(30), "the never-healthy task failed", || {
        tasks(&node, "hang").into_iter().find(|t| t["current_state"] == "failed")
    });
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("not healthy within 3s (start_period 1s + retries 2 × interval 1s)"), "{failed}");
    // And replaced by its restart policy.
    wait_until(Duration::from_secs(30), "a replacement task", || (tasks(&node, "hang").len() >= 2).then_some(()));
}
