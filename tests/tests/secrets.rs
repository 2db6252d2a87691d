//! Configs and secrets on the real engine: a deployed task reads them as
//! files with their owner and mode; a secret is never printed; a new
//! content replaces the tasks; an external secret must exist first.

use sha2::{Digest, Sha256};
use stackd_tests::{Node, build_images, docker, require_docker, wait_until};

const STACK: &str = "services:
  app:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    stop_grace_period: 1s
    configs:
      - source: site
        target: /etc/site.conf
    secrets:
      - db_password
      - source: token
        target: api.token
        uid: \"1000\"
        mode: 0400
    deploy:
      update_config:
        monitor: 1s
configs:
  site:
    content: listen 8080
secrets:
  db_password:
    file: ./db.txt
  token:
    environment: API_TOKEN
";

/// `sh -c script` in `container`; stdout (the test fails if it fails).
fn exec(container: &str, script: &str) -> String {
    docker::exec(container, script).unwrap_or_else(|e| panic!("docker exec {script:?}: {e}"))
}

fn stackctl_env(node: &Node, args: &[&str], token: &str) -> std::process::Output {
    node.stackctl_output_env(args, &[("API_TOKEN", token)]).expect("run stackctl")
}

#[test]
fn t20_configs_and_secrets_reach_the_task_and_are_never_printed() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("t20").expect("init");
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    let file = node.write_stack("app.yml", STACK);
    node.write_stack("db.txt", "pa55-first\n");

    let out = stackctl_env(&node, &["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"], "tok-1");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let running = docker::running(&label);
    assert_eq!(running.len(), 1, "{running:?}");
    let c = &running[0].id;
    assert_eq!(exec(c, "cat /run/secrets/db_password"), "pa55-first\n");
    assert_eq!(exec(c, "cat /run/secrets/api.token"), "tok-1");
    assert_eq!(exec(c, "cat /etc/site.conf"), "listen 8080");
    // Owner and mode as asked; Swarm's default mode 0444 otherwise.
    assert_eq!(exec(c, "stat -c '%u %a' /run/secrets/api.token").trim(), "1000 400");
    assert_eq!(exec(c, "stat -c '%u %a' /run/secrets/db_password").trim(), "0 444");
    // The files are read-only in the container.
    assert!(docker::exec(c, "echo x > /run/secrets/db_password").is_err(), "a secret must not be writable");

    // Never printed: not by config, inspect, ps, secret ls, nor in the node's log.
    let config = stackctl_env(&node, &["config", "-c", &file, "--stack", "app"], "tok-1");
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    let mut printed = String::from_utf8_lossy(&config.stdout).into_owned();
    printed += &node.stackctl(&["service", "inspect", "app_app", "-o", "json"]);
    printed += &node.stackctl(&["ps", "app", "-o", "json"]);
    printed += &node.stackctl(&["secret", "ls", "-o", "json"]);
    printed += &node.log();
    assert!(printed.contains("db.txt"), "config names the file");
    for secret in ["pa55-first\n", "tok-1"] {
        assert!(!printed.contains(secret.trim()), "the secret {secret:?} was printed");
        // Nor its SHA-256, which would let a reader test guesses offline (not even a prefix).
        let digest: String = Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert!(!printed.contains(&digest[..12]), "the digest of {secret:?} was printed");
    }
    let ls = node.stackctl_json(&["secret", "ls"]);
    let names: Vec<&str> = ls.as_array().expect("list").iter().filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(names, ["app_db_password", "app_token"]);

    // A new content: the task is replaced and the new one reads the new content.
    node.write_stack("db.txt", "pa55-second\n");
    let out = stackctl_env(&node, &["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"], "tok-1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replaced = wait_until(std::time::Duration::from_secs(30), "the task replaced", || {
        let r = docker::running(&label);
        (r.len() == 1 && r[0].id != *c).then(|| r[0].id.clone())
    });
    assert_eq!(exec(&replaced, "cat /run/secrets/db_password"), "pa55-second\n");

    // Removing the stack removes its secrets and the files on the node.
    node.stackctl(&["stack", "rm", "app"]);
    assert_eq!(node.stackctl_json(&["secret", "ls"]), serde_json::json!([]));
    let secrets_dir = node.dir.path().join("task-files/secrets");
    wait_until(std::time::Duration::from_secs(30), "task files removed", || {
        let left = std::fs::read_dir(&secrets_dir).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    });
}

#[test]
fn t21_an_external_secret_must_exist() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("t21").expect("init");
    let file = node.write_stack(
        "app.yml",
        "services:\n  app:\n    image: stackd-test/busybox:1\n    command: [sleep, \"3600\"]\n    secrets: [shared]\nsecrets:\n  shared:\n    external: true\n",
    );
    let out = node.stackctl_output(&["deploy", "-c", &file, "app"]).expect("stackctl");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("create it first with `stackctl secret create shared FILE`"), "{err}");
    assert_eq!(node.stackctl_json(&["service", "ls"]), serde_json::json!([]), "a refused deploy changes nothing");

    let secret = node.write_stack("shared.txt", "org-wide");
    node.stackctl(&["secret", "create", "shared", &secret]);
    node.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "60s"]);
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    let running = docker::running(&label);
    assert_eq!(running.len(), 1);
    assert_eq!(exec(&running[0].id, "cat /run/secrets/shared"), "org-wide");
    let out = node.stackctl_output(&["secret", "rm", "shared"]).expect("stackctl");
    assert_eq!(out.status.code(), Some(1), "in use");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by app_app"));
}
