//! Three nodes, each with a Docker engine of its own in its own network
//! namespace ([`stackd_tests::engines`]): a stack spread one replica per
//! node lands on the nodes' own engines (none on the main engine); when a
//! node is lost (engine and stackd SIGKILLed) it is marked down and its task
//! is replaced by one that stays pending (`max_replicas_per_node: 1`, two
//! nodes left); the lost engine starts again empty; after the drop no
//! engine of the harness is left. Needs root
//! and Docker; skipped otherwise (fails with `CI=true`).

use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::engines::{self, Engines};
use stackd_tests::{Opts, netns, require_docker, wait_until};

const STACK: &str = "\
services:
  web:
    image: stackd-test/web:1
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
";

#[test]
fn one_engine_per_node_and_a_node_loss() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let mut c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    eprintln!("engines and nodes up in {:?}", t0.elapsed());
    let m = c.node(0);
    let cluster = m.cluster_id();
    let label = format!("io.stackd.cluster={cluster}");
    let nodes = m.stackctl_json(&["node", "ls"]);
    assert_eq!(nodes.as_array().map(Vec::len), Some(3), "{nodes}");

    let file = m.write_stack("stack.yml", STACK);
    m.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"]);

    for i in 0..3 {
        let running = c.running(i, &label).expect("docker ps on a node's engine");
        assert_eq!(running.len(), 1, "node {i}'s engine runs {running:?}\n{}", c.cluster.logs());
        assert!(running[0].starts_with("app_web."), "{running:?}");
    }
    let main = stackd_tests::docker::containers(&label);
    assert!(main.is_empty(), "the main engine runs containers of the cluster: {main:?}");

    // Node 3 is lost: its engine and its stackd die at once.
    let lost_name = c.node(2).name.clone();
    let lost_id = c.node(2).node_id();
    c.kill_engine(2);
    c.kill_stackd(2);
    let m = c.node(0);
    wait_until(Duration::from_secs(30), "the lost node marked down", || {
        let v = m.stackctl_json(&["node", "ls"]);
        v.as_array()?.iter().any(|n| n["name"] == lost_name.as_str() && n["state"] == "down").then_some(())
    });
    // Its task is replaced; the replacement finds no node (one per node, two nodes left).
    let pending = wait_until(Duration::from_secs(30), "the lost task's replacement, pending", || {
        let v = m.stackctl_json(&["ps", "app"]);
        v.as_array()?.iter().find(|t| t["desired_state"] == "running" && t["node"] == "" && t["error"] != "").cloned()
    });
    let error = pending["error"].as_str().unwrap_or_default();
    assert!(error.contains("2 nodes: max_replicas_per_node 1 reached"), "pending for another reason: {pending}");
    // The lost task is orphaned (taken back only if its node returns first).
    let tasks: Value = m.stackctl_json(&["ps", "app"]);
    let on_lost: Vec<&Value> =
        tasks.as_array().map(|a| a.iter().filter(|t| t["node"] == lost_name.as_str()).collect()).unwrap_or_default();
    assert!(
        on_lost.len() == 1 && on_lost[0]["current_state"] == "orphaned",
        "the lost node {lost_id}'s task is not orphaned: {tasks}"
    );
    for i in 0..2 {
        let running = c.running(i, &label).expect("docker ps on a node's engine");
        assert_eq!(running.len(), 1, "node {i}'s engine runs {running:?}");
    }

    // The lost node's engine starts again on its dir; what the killed engine
    // left running (its container) was killed first.
    c.start_engine(2).expect("restart the lost node's engine");
    let running = c.running(2, &label).expect("docker ps on the restarted engine");
    assert!(running.is_empty(), "the restarted engine still runs {running:?}");

    let dirs = c.dirs();
    let t1 = Instant::now();
    drop(c);
    eprintln!("torn down in {:?}; test took {:?}", t1.elapsed(), t0.elapsed());
    let left = engines::harness_dockerds();
    assert!(left.is_empty(), "engines of the harness left running: {left:?}");
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
