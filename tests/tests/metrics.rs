//! `/healthz`, `/readyz` and `/metrics` of a running node on the real
//! engine: the families are there and move (a deploy and a scale change the
//! tasks by state; a node's session shows in the dispatcher's), and readiness
//! says each role's state.

use std::collections::BTreeMap;
use std::time::Duration;

use stackd_tests::cluster::Opts;
use stackd_tests::{Node, build_images, free_port, http_get, require_docker, wait_until};

/// The samples of a scrape: `name{labels}` → value (`# ` lines left out).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (code, body) = http_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    samples(&body)
}

/// The value of the sample `key` once it is `want`.
fn wait_sample(addr: &str, key: &str, want: f64) {
    wait_until(Duration::from_secs(60), &format!("{key} = {want}"), || {
        (scrape(addr).get(key).copied() == Some(want)).then_some(())
    });
}

/// `docs/grafana/…`.
fn doc(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana").join(name)
}

fn promtool() -> bool {
    let found = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "promtool is missing (scripts/test.sh installs Debian's prometheus package)"
    );
    found
}

/// `promtool check metrics` passes on a scrape, `promtool check rules` on
/// the alert rules, and every metric the rules and the dashboard name is
/// one the node exports.
fn check_with_promtool(addr: &str) {
    let (_, text) = http_get(addr, "/metrics").expect("/metrics");
    // What the node exports: families (`# TYPE`) and samples, with a histogram's series.
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            exported.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            exported.insert(name.to_string());
        }
    }
    let rules = std::fs::read_to_string(doc("stackd-alerts.yml")).expect("the alert rules");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(doc("stackd-dashboard.json")).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let mut queries: Vec<String> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).map(String::from).collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("an expr").to_string());
        }
    }
    assert!(queries.len() > 10, "{queries:?}");
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(at) = rest.find("stackd_") {
            let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(exported.contains(&name), "{name} (in `{q}`) is not exported; exported: {exported:?}");
            rest = &rest[at + name.len()..];
        }
    }
    if !promtool() {
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(doc("stackd-alerts.yml"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn metrics_and_health_of_a_running_node_move_with_the_cluster() {
    if !require_docker() {
        return;
    }
    build_images();
    let addr = format!("127.0.0.1:{}", free_port());
    let opts = Opts::default().flag("--metrics-addr", &addr);
    let node = Node::init_opts("metrics1", &opts).expect("node");

    let (code, body) = http_get(&addr, "/healthz").expect("/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    wait_until(Duration::from_secs(30), "/readyz to say ready", || {
        let (code, body) = http_get(&addr, "/readyz")?;
        (code == 200 && body.contains("manager: ready") && body.contains("agent: ready")).then_some(())
    });

    let m = scrape(&addr);
    for family in [
        "stackd_raft_term",
        "stackd_raft_is_leader",
        "stackd_raft_last_log_index",
        "stackd_raft_applied_index",
        "stackd_raft_log_write_seconds_count",
        "stackd_dispatcher_sessions",
        "stackd_dispatcher_nodes_declared_down_total",
        "stackd_node_ready",
        "stackd_manager_locked",
        "stackd_restore_generation",
    ] {
        assert!(m.contains_key(family), "{family} is missing from:\n{m:#?}");
    }
    assert_eq!(m["stackd_raft_is_leader"], 1.0);
    assert_eq!(m["stackd_dispatcher_sessions"], 1.0);
    assert_eq!(m["stackd_node_ready"], 1.0);
    assert_eq!(m["stackd_manager_locked"], 0.0);
    assert!(m["stackd_raft_log_write_seconds_count"] > 0.0);
    let node_key = "stackd_nodes{role=\"manager\",state=\"ready\",availability=\"active\"}";
    assert_eq!(m.get(node_key), Some(&1.0), "{m:#?}");
    let applied = m["stackd_raft_applied_index"];

    let file = node.write_stack(
        "m.yml",
        "services:\n  web:\n    image: stackd-test/busybox:1\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n",
    );
    node.stackctl(&["deploy", "-c", &file, "m", "--wait", "--timeout", "60s"]);
    let running = "stackd_service_tasks{stack=\"m\",service=\"web\",state=\"running\"}";
    wait_sample(&addr, running, 2.0);
    let m = scrape(&addr);
    assert_eq!(m.get("stackd_service_desired_tasks{stack=\"m\",service=\"web\"}"), Some(&2.0));
    assert_eq!(m.get("stackd_service_tasks{stack=\"m\",service=\"web\",state=\"failed\"}"), Some(&0.0));
    assert_eq!(m.get("stackd_service_rollout{stack=\"m\",service=\"web\",state=\"completed\"}"), Some(&1.0));
    assert_eq!(m.get("stackd_service_rollout{stack=\"m\",service=\"web\",state=\"paused\"}"), Some(&0.0));
    assert!(m["stackd_raft_applied_index"] > applied, "the applied index moved");

    // A scale moves the figures.
    node.stackctl(&["service", "scale", "m_web=3"]);
    wait_sample(&addr, running, 3.0);
    assert_eq!(scrape(&addr).get("stackd_service_desired_tasks{stack=\"m\",service=\"web\"}"), Some(&3.0));

    // A killed container is a failed task: the service's failures count it.
    let failures = "stackd_service_task_failures_total{stack=\"m\",service=\"web\"}";
    assert_eq!(scrape(&addr).get(failures), Some(&0.0));
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    let victim = stackd_tests::docker::running(&label).into_iter().next().expect("a running container");
    let killed = std::process::Command::new("docker").args(["kill", &victim.id]).output().expect("docker kill");
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    wait_sample(&addr, failures, 1.0);
    wait_sample(&addr, running, 3.0);

    // The agent's figures: its Docker calls, and what the tasks use (read every 10 s).
    let m = scrape(&addr);
    for op in ["create_container", "start_container", "list_containers"] {
        let key = format!("stackd_docker_call_seconds_count{{op=\"{op}\"}}");
        assert!(m.get(&key).is_some_and(|n| *n > 0.0), "{key} in {m:#?}");
    }
    let tasks_key = "stackd_task_running{stack=\"m\",service=\"web\",node=\"metrics1\"}";
    wait_sample(&addr, tasks_key, 3.0);
    let m = scrape(&addr);
    let memory = "stackd_task_memory_bytes{stack=\"m\",service=\"web\",node=\"metrics1\"}";
    assert!(m.get(memory).is_some_and(|b| *b > 0.0), "{memory} in {m:#?}");
    assert!(m.contains_key("stackd_task_cpu_cores{stack=\"m\",service=\"web\",node=\"metrics1\"}"));

    check_with_promtool(&addr);

    // A task that cannot be placed says why.
    let big = node.write_stack(
        "big.yml",
        "services:\n  huge:\n    image: stackd-test/busybox:1\n    command: [\"sleep\", \"3600\"]\n    deploy:\n      resources:\n        reservations:\n          memory: 100000G\n",
    );
    node.stackctl(&["deploy", "-c", &big, "big"]);
    wait_sample(&addr, "stackd_service_pending_tasks{stack=\"big\",service=\"huge\",reason=\"memory\"}", 1.0);
    node.stackctl(&["stack", "rm", "big"]);
    node.stackctl(&["stack", "rm", "m"]);
}
