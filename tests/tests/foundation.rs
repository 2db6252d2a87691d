//! The foundation: a single-node cluster from a stack file to running
//! containers, through Raft, on the real Docker engine.

use std::collections::BTreeSet;
use std::time::Duration;

use stackd_tests::{Node, build_images, docker, require_docker, wait_until};

fn web(replicas: u64) -> String {
    format!(
        "services:\n  web:\n    image: stackd-test/web:1\n    deploy:\n      replicas: {replicas}\n      update_config:\n        monitor: 1s\n"
    )
}

/// Task ids and container ids of the running tasks, from `stackctl ps -o json`.
fn running_tasks(node: &Node, target: &str) -> BTreeSet<(String, String)> {
    let v = node.stackctl_json(&["ps", target]);
    v.as_array()
        .expect("array")
        .iter()
        .filter(|t| t["current_state"] == "running" && t["desired_state"] == "running")
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["container_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn t01_deploy_scale_kill9_restart_and_remove() {
    if !require_docker() {
        return;
    }
    build_images();
    let mut node = Node::init("t01").expect("init");
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    let file = node.write_stack("app.yml", &web(3));

    // Deploy 3 replicas and wait for them.
    let out = node.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"]);
    assert!(out.contains("Creating service app_web"), "{out}");
    let running = docker::running(&label);
    assert_eq!(running.len(), 3, "{running:?}");
    let node_id = node.stackctl_json(&["node", "ls"])[0]["id"].as_str().expect("node id").to_string();
    let mut slots = BTreeSet::new();
    for c in &running {
        for key in [
            "io.stackd.cluster",
            "io.stackd.node",
            "io.stackd.stack",
            "io.stackd.service",
            "io.stackd.task",
            "io.stackd.slot",
            "io.stackd.revision",
        ] {
            assert!(c.labels.contains_key(key), "container {} lacks label {key}: {:?}", c.name, c.labels);
        }
        assert_eq!(c.labels["io.stackd.node"], node_id);
        assert_eq!(c.labels["io.stackd.stack"], "app");
        assert_eq!(c.labels["io.stackd.service"], "app_web");
        let slot = &c.labels["io.stackd.slot"];
        let task = &c.labels["io.stackd.task"];
        assert_eq!(c.name, format!("app_web.{slot}.{}", &task[..12]));
        slots.insert(slot.clone());
    }
    assert_eq!(slots, BTreeSet::from(["1".to_string(), "2".into(), "3".into()]));

    // Scale to 5: the 3 running containers stay.
    let before: BTreeSet<String> = running.iter().map(|c| c.id.clone()).collect();
    node.write_stack("app.yml", &web(5));
    node.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"]);
    let running = docker::running(&label);
    assert_eq!(running.len(), 5);
    let after: BTreeSet<String> = running.iter().map(|c| c.id.clone()).collect();
    assert!(before.is_subset(&after), "a scale-up replaced running containers");

    // kill -9 the node; its containers keep running; `stackd run` adopts them.
    let tasks_before = running_tasks(&node, "app");
    let services_before = node.stackctl_json(&["service", "ls"]);
    assert_eq!(tasks_before.len(), 5);
    node.kill9();
    assert_eq!(docker::running(&label).len(), 5, "containers died with stackd");
    node.restart().expect("restart");
    // Give the agent time to adopt, and the orchestrator a chance to (wrongly) act.
    std::thread::sleep(Duration::from_secs(3));
    let ids_after: BTreeSet<String> = docker::running(&label).iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids_after, after, "containers were recreated after a restart");
    assert_eq!(docker::containers(&label).len(), 5, "extra containers appeared after a restart");
    assert_eq!(running_tasks(&node, "app"), tasks_before, "tasks changed across a restart");
    let services_after = node.stackctl_json(&["service", "ls"]);
    assert_eq!(services_before, services_after);

    // stack rm: every container goes.
    node.stackctl(&["stack", "rm", "app"]);
    wait_until(Duration::from_secs(60), "containers removed", || docker::containers(&label).is_empty().then_some(()));
    assert!(node.stackctl_json(&["stack", "ls"]).as_array().expect("array").is_empty());
}

#[test]
fn t02_exited_container_is_replaced_and_history_shows_exit_code() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("t02").expect("init");
    let file = node.write_stack(
        "crash.yml",
        "services:\n  crash:\n    image: stackd-test/busybox:1\n    command: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n    deploy:\n      restart_policy:\n        delay: 1s\n",
    );
    node.stackctl(&["deploy", "-c", &file, "crash"]);
    // A failed task with exit code 3, and a newer task in the same slot.
    let tasks = wait_until(Duration::from_secs(60), "a replacement task after exit code 3", || {
        let v = node.stackctl_json(&["ps", "crash"]);
        let tasks = v.as_array().cloned().unwrap_or_default();
        let failed = tasks
            .iter()
            .any(|t| t["current_state"] == "failed" && t["exit_code"] == 3 && t["desired_state"] == "shutdown");
        (failed && tasks.len() >= 2).then_some(tasks)
    });
    assert!(tasks.iter().all(|t| t["slot"] == 1), "replacements keep the slot");
    // The table shows the history with the exit code in the error column.
    let table = node.stackctl(&["ps", "crash"]);
    assert!(table.contains("\\_ crash_crash.1"), "{table}");
    assert!(table.contains("exit code 3"), "{table}");
}

#[test]
fn t03_bad_stack_files_change_nothing() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("t03").expect("init");
    let good = node.write_stack("good.yml", &web(1));
    node.stackctl(&["deploy", "-c", &good, "app", "--wait", "--timeout", "60s"]);
    let services = node.stackctl_json(&["service", "ls"]);
    let tasks = node.stackctl_json(&["ps", "app"]);

    // Not YAML: file and line named, exit 1.
    let bad_yaml = node.write_stack("bad.yml", "services:\n  web:\n    image: [unclosed\n");
    let o = node.stackctl_output(&["deploy", "-c", &bad_yaml, "app"]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{bad_yaml}:")), "no file in: {err}");
    assert!(err.contains(":3:") || err.contains(":4:"), "no line in: {err}");

    // A service without an image: file, line and the service named.
    let no_image = node.write_stack(
        "noimage.yml",
        "services:\n  web:\n    image: stackd-test/web:2\n  worker:\n    command: [\"true\"]\n",
    );
    let o = node.stackctl_output(&["deploy", "-c", &no_image, "app"]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{no_image}:4:")), "no file:line in: {err}");
    assert!(err.contains("worker"), "service not named in: {err}");

    // Nothing changed: same services (same revision), same tasks.
    assert_eq!(node.stackctl_json(&["service", "ls"]), services);
    assert_eq!(node.stackctl_json(&["ps", "app"]), tasks);
}

#[test]
fn t04_dry_run_shows_the_changes_and_sends_nothing() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("t04").expect("init");
    let two = "services:\n  web:\n    image: stackd-test/web:1\n    deploy:\n      replicas: 2\n  api:\n    image: stackd-test/web:1\n";
    let file = node.write_stack("app.yml", two);
    node.stackctl(&["deploy", "-c", &file, "app"]);
    let services = node.stackctl_json(&["service", "ls"]);

    // web: new image and replicas; api: gone; cache: new.
    let next = "services:\n  web:\n    image: stackd-test/web:2\n    deploy:\n      replicas: 3\n  cache:\n    image: stackd-test/busybox:1\n";
    let next_file = node.write_stack("next.yml", next);
    let out = node.stackctl(&["deploy", "-c", &next_file, "app", "--dry-run", "--prune"]);
    assert!(out.contains("+ create app_cache"), "{out}");
    assert!(out.contains("~ update app_web (rolling update: tasks are replaced)"), "{out}");
    assert!(out.contains("task.image: \"stackd-test/web:1\" → \"stackd-test/web:2\""), "{out}");
    assert!(out.contains("mode.replicas: 2 → 3"), "{out}");
    assert!(out.contains("- remove app_api"), "{out}");
    assert!(out.contains("nothing was sent"), "{out}");

    // JSON says the same, with stable field names.
    let plan = node.stackctl_json(&["deploy", "-c", &next_file, "app", "--dry-run"]);
    assert_eq!(plan["create"], serde_json::json!(["app_cache"]));
    assert_eq!(plan["update"][0]["service"], "app_web");
    assert_eq!(plan["update"][0]["replaces_tasks"], true);
    assert_eq!(plan["kept"], serde_json::json!(["app_api"]));

    // Nothing changed.
    assert_eq!(node.stackctl_json(&["service", "ls"]), services);
}

#[test]
fn t05_runtime_options_reach_the_container() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("t05").expect("init");
    let file = node.write_stack(
        "rt.yml",
        "services:\n  web:\n    image: stackd-test/web:1\n    cap_add: [NET_ADMIN]\n    cap_drop: [MKNOD]\n    sysctls:\n      net.core.somaxconn: 1024\n    extra_hosts: [\"db:10.0.0.5\"]\n    dns: [10.0.0.2]\n    dns_search: [example.internal]\n    ulimits:\n      nofile: {soft: 1024, hard: 4096}\n    logging:\n      driver: json-file\n      options: {max-size: 10m}\n    deploy:\n      update_config: {monitor: 0s}\n      placement:\n        constraints: [node.role == manager, node.platform.os == linux]\n      resources:\n        limits: {cpus: '0.5', memory: 64M, pids: 50}\n        reservations: {memory: 32M}\n",
    );
    node.stackctl(&["deploy", "-c", &file, "rt", "--wait", "--timeout", "60s"]);
    let c = docker::running(&format!("io.stackd.cluster={}", node.cluster_id()));
    assert_eq!(c.len(), 1);
    let out = std::process::Command::new("docker").args(["inspect", &c[0].id]).output().expect("docker inspect");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hc = &v[0]["HostConfig"];
    assert_eq!(hc["CapAdd"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(hc["CapDrop"], serde_json::json!(["MKNOD"]));
    assert_eq!(hc["Sysctls"]["net.core.somaxconn"], "1024");
    assert_eq!(hc["ExtraHosts"], serde_json::json!(["db:10.0.0.5"]));
    assert_eq!(hc["Dns"], serde_json::json!(["10.0.0.2"]));
    assert_eq!(hc["DnsSearch"], serde_json::json!(["example.internal"]));
    assert_eq!(hc["Ulimits"], serde_json::json!([{ "Name": "nofile", "Soft": 1024, "Hard": 4096 }]));
    assert_eq!(hc["LogConfig"]["Type"], "json-file");
    assert_eq!(hc["LogConfig"]["Config"]["max-size"], "10m");
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["PidsLimit"], 50);
    assert_eq!(hc["MemoryReservation"], 32 << 20);
}
