//! Jobs (`deploy.mode: replicated-job` / `global-job`) on a single-node
//! cluster and the real Docker engine: tasks run to completion, completed
//! tasks are not run again, and `stackctl deploy --wait` tells a pipeline
//! whether the job completed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use stackd_tests::{Node, build_images, docker, require_docker};

/// A job of the busybox image running `script` in `sh -c`, with extra `deploy:` lines.
fn job(mode: &str, script: &str, deploy: &str) -> String {
    format!(
        "services:\n  job:\n    image: stackd-test/busybox:1\n    command: [\"sh\", \"-c\", \"{script}\"]\n    deploy:\n      mode: {mode}\n{deploy}"
    )
}

/// The rows of `stackctl ps STACK -o json`.
fn tasks(node: &Node, stack: &str) -> Vec<Value> {
    node.stackctl_json(&["ps", stack]).as_array().cloned().unwrap_or_default()
}

/// The row of `stackctl service ls -o json` for `name`.
fn service(node: &Node, name: &str) -> Value {
    let all = node.stackctl_json(&["service", "ls"]);
    all.as_array().and_then(|a| a.iter().find(|s| s["name"] == name).cloned()).unwrap_or(Value::Null)
}

/// Container ids of the cluster's containers.
fn container_ids(label: &str) -> BTreeSet<String> {
    docker::containers(label).into_iter().map(|c| c.id).collect()
}

#[test]
fn j01_a_replicated_job_completes_and_is_not_run_again() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("j01").expect("init");
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    let file = node.write_stack("job.yml", &job("replicated-job", "exit 0", "      replicas: 3\n"));

    let o = node.stackctl_output(&["deploy", "-c", &file, "batch", "--wait", "--timeout", "60s"]).expect("run");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}\n{}", String::from_utf8_lossy(&o.stderr), node.log());
    assert!(out.contains("Creating service batch_job"), "{out}");
    assert!(out.contains("batch_job: 3/3 completed, completed"), "{out}");
    assert!(out.contains("every job completed"), "{out}");

    // Three tasks, each complete with exit code 0, one per slot.
    let rows = tasks(&node, "batch");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(rows.iter().all(|t| t["current_state"] == "complete" && t["exit_code"] == 0), "{rows:#?}");
    let slots: BTreeSet<u64> = rows.iter().filter_map(|t| t["slot"].as_u64()).collect();
    assert_eq!(slots, BTreeSet::from([1, 2, 3]));

    // Their containers exited 0 and stay; none runs, none is started again.
    let containers = docker::containers(&label);
    assert_eq!(containers.len(), 3, "{containers:?}");
    assert!(containers.iter().all(|c| !c.running && c.exit_code == 0), "{containers:?}");
    let ids = container_ids(&label);
    std::thread::sleep(Duration::from_secs(6)); // longer than the default restart delay (5 s)
    assert_eq!(container_ids(&label), ids, "containers of a completed job changed");
    assert!(docker::running(&label).is_empty(), "a completed job's container runs again");
    assert_eq!(tasks(&node, "batch").len(), 3, "a completed job got new tasks");

    // `service ls` shows the mode and the completions.
    let svc = service(&node, "batch_job");
    assert_eq!(svc["mode"], "replicated-job", "{svc:#}");
    assert_eq!(svc["replicas"], "3/3 completed", "{svc:#}");
    assert_eq!(svc["completed"], 3, "{svc:#}");
    assert_eq!(svc["update_state"], "completed", "{svc:#}");
    let table = node.stackctl(&["service", "ls"]);
    assert!(table.contains("replicated-job") && table.contains("3/3 completed"), "{table}");

    // The same file again: nothing runs.
    let out = node.stackctl(&["deploy", "-c", &file, "batch", "--wait", "--timeout", "60s"]);
    assert!(out.contains("Stack batch is up to date"), "{out}");
    assert_eq!(container_ids(&label), ids, "an unchanged deploy ran the job again");

    // A changed spec runs the job again: three more completions.
    let changed = job("replicated-job", "exit 0", "      replicas: 3\n      labels: {run: \"2\"}\n");
    node.write_stack("job.yml", &changed);
    let out = node.stackctl(&["deploy", "-c", &file, "batch", "--wait", "--timeout", "60s"]);
    assert!(out.contains("Updating service batch_job"), "{out}");
    let rows = tasks(&node, "batch");
    assert_eq!(rows.iter().filter(|t| t["revision"] == 2 && t["current_state"] == "complete").count(), 3);
    assert_eq!(docker::containers(&label).len(), 6);
    assert!(ids.is_subset(&container_ids(&label)), "the first run's containers were removed");
}

#[test]
fn j02_a_job_that_cannot_complete_fails_the_deploy() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("j02").expect("init");
    let file = node.write_stack(
        "fail.yml",
        &job("replicated-job", "exit 3", "      restart_policy:\n        max_attempts: 1\n        delay: 1s\n"),
    );
    let o = node.stackctl_output(&["deploy", "-c", &file, "bad", "--wait", "--timeout", "60s"]).expect("run");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}\nlog:\n{}", node.log());
    assert!(err.contains("job bad_job cannot complete"), "{err}");
    assert!(err.contains("failed with exit code 3"), "{err}");
    assert!(err.contains("restart_policy.max_attempts (1) reached"), "{err}");

    // The first task and one restart, both failed with exit code 3.
    let rows = tasks(&node, "bad");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(rows.iter().all(|t| t["current_state"] == "failed" && t["exit_code"] == 3), "{rows:#?}");
    let svc = service(&node, "bad_job");
    assert_eq!(svc["update_state"], "failed", "{svc:#}");
    assert_eq!(svc["replicas"], "0/1 completed", "{svc:#}");
    // `--wait` on an unchanged deploy reports the same failure at once.
    let o = node.stackctl_output(&["deploy", "-c", &file, "bad", "--wait", "--timeout", "60s"]).expect("run");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn j03_a_global_job_runs_once_on_the_node() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("j03").expect("init");
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    let file = node.write_stack("global.yml", &job("global-job", "echo cleaned", ""));
    node.stackctl(&["deploy", "-c", &file, "ops", "--wait", "--timeout", "60s"]);
    let svc = service(&node, "ops_job");
    assert_eq!(svc["mode"], "global-job", "{svc:#}");
    assert_eq!(svc["replicas"], "1/1 completed", "{svc:#}");
    let containers = docker::containers(&label);
    assert_eq!(containers.len(), 1);
    assert!(!containers[0].running && containers[0].exit_code == 0);
}

#[test]
fn j04_rollback_config_and_endpoint_mode_are_read_and_printed_back() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("j04").expect("init");
    let text = "services:\n  web:\n    image: stackd-test/web:1\n    deploy:\n      endpoint_mode: dnsrr\n      rollback_config:\n        parallelism: 2\n        order: start-first\n";
    let file = node.write_stack("web.yml", text);
    let config = node.stackctl_json(&["config", "-c", &file, "--stack", "web"]);
    let deploy = &config["services"]["web"]["deploy"];
    assert_eq!(deploy["endpoint_mode"], "dnsrr", "{config:#}");
    assert_eq!(deploy["rollback_config"]["parallelism"], 2, "{config:#}");
    assert_eq!(deploy["rollback_config"]["order"], "start-first", "{config:#}");
    assert_eq!(deploy["update_config"]["parallelism"], 1, "{config:#}");

    // dnsrr with a port published in ingress mode is refused before anything is sent.
    let bad = node.write_stack("bad.yml", &format!("{text}    ports: [\"8080:8080\"]\n"));
    let o = node.stackctl_output(&["deploy", "-c", &bad, "web"]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{bad}:5:7: services.web.deploy.endpoint_mode: dnsrr can't be used")), "{err}");
    assert!(node.stackctl_json(&["service", "ls"]).as_array().is_some_and(Vec::is_empty));
}
