//! `stackctl node update` and `node ps` on three nodes, each with a Docker
//! engine of its own ([`stackd_tests::engines`]): a task constrained to
//! `node.labels.disk == ssd` stays pending until n2 gets the label, then
//! runs there; a global service constrained to `node.labels.role == edge`
//! follows the label as it is added and removed; draining n2 moves its
//! replicated task elsewhere and its global task leaves, and `active`
//! takes tasks again; `node ps` lists a node's tasks; a refused update
//! changes nothing. Needs root and Docker; skipped otherwise (fails with
//! `CI=true`).

use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::engines::Engines;
use stackd_tests::{Node, Opts, netns, require_docker, wait_until};

const STACK: &str = "\
services:
  ssd:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      placement:
        constraints: [node.labels.disk == ssd]
      resources:
        reservations: {cpus: \"0.5\", memory: 16M}
  edge:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      mode: global
      placement:
        constraints: [node.labels.role == edge]
  web:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 2
";

/// `stackctl -o json ARGS…`, or `None` while it fails.
fn json(node: &Node, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let o = node.stackctl_output(&a).ok().filter(|o| o.status.success())?;
    serde_json::from_slice(&o.stdout).ok()
}

/// The rows of `ARGS -o json` (`ps STACK`, `node ps NODE`).
fn rows(node: &Node, args: &[&str]) -> Vec<Value> {
    json(node, args).and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// The nodes on which `service`'s wanted tasks run, sorted.
fn running_on(rows: &[Value], service: &str) -> Vec<String> {
    let mut nodes: Vec<String> = rows
        .iter()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(&format!("{service}."))))
        .filter(|t| t["desired_state"] == "running" && t["current_state"] == "running")
        .filter_map(|t| t["node"].as_str().map(String::from))
        .collect();
    nodes.sort();
    nodes
}

/// Waits until `service`'s tasks run on exactly `want` (sorted node names).
fn wait_running(m: &Node, service: &str, want: &[&str], what: &str) -> Duration {
    let t = Instant::now();
    wait_until(Duration::from_secs(30), what, || {
        let rows = rows(m, &["ps", "lab"]);
        (running_on(&rows, service) == want).then_some(())
    });
    t.elapsed()
}

/// `stackctl node update ARGS…`, which must succeed.
fn update(m: &Node, args: &[&str]) -> String {
    let mut a = vec!["node", "update"];
    a.extend(args);
    m.stackctl(&a)
}

#[test]
fn node_update_drives_placement_and_node_ps_lists_a_nodes_tasks() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    let m = c.node(0);
    let file = m.write_stack("lab.yml", STACK);
    eprintln!("cluster up after {:?}", t0.elapsed());
    m.stackctl(&["deploy", "-c", &file, "lab"]);

    // web runs; ssd waits for a node with the label, and says so; edge has no task.
    wait_until(Duration::from_secs(45), "web's 3 tasks running", || {
        (running_on(&rows(m, &["ps", "lab"]), "lab_web").len() == 3).then_some(())
    });
    let pending = wait_until(Duration::from_secs(10), "ssd said to be unplaceable", || {
        let rows = rows(m, &["ps", "lab"]);
        rows.iter().find(|t| t["name"] == "lab_ssd.1" && t["error"].as_str().is_some_and(|e| !e.is_empty())).cloned()
    });
    assert!(pending["error"].as_str().is_some_and(|e| e.contains("no suitable node")), "{pending:#}");
    assert!(running_on(&rows(m, &["ps", "lab"]), "lab_edge").is_empty());

    // A label makes the pending task run on n2.
    let said = update(m, &["--label-add", "disk=ssd", "n2"]);
    assert!(said.contains("Node n2 updated: labels +disk=ssd"), "{said}");
    let took = wait_running(m, "lab_ssd", &["n2"], "ssd running on n2");
    eprintln!("ssd running on n2 {took:?} after the label");
    let n2 = json(m, &["node", "inspect", "n2"]).expect("node inspect n2");
    assert_eq!(n2["labels"]["disk"], "ssd", "{n2:#}");
    assert_eq!(n2["availability"], "active", "{n2:#}");
    assert!(n2["tasks"]["running"].as_u64().unwrap_or(0) >= 1, "{n2:#}");
    // The engine's facts, what ssd reserves, and a heartbeat the leader (n1) heard lately.
    let engine = &n2["engine"];
    assert_eq!(engine["os"], "linux", "{n2:#}");
    assert!(engine["arch"].as_str().is_some_and(|a| !a.is_empty()), "{n2:#}");
    assert!(engine["kernel_version"].as_str().is_some_and(|k| !k.is_empty()), "{n2:#}");
    assert_eq!(n2["reserved"]["nano_cpus"], 500_000_000u64, "{n2:#}");
    assert_eq!(n2["reserved"]["memory_bytes"], 16u64 << 20, "{n2:#}");
    assert!(n2["heartbeat_age_ms"].as_u64().is_some_and(|ms| ms < 15_000), "{n2:#}");
    let text = m.stackctl(&["node", "inspect", "n2"]);
    eprintln!("{text}");
    for line in ["Platform:      linux ", "Engine labels:", "Reserved:      0.5 CPUs, 16 MiB memory", "Heartbeat:     "]
    {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("Heartbeat:") && l.ends_with("s ago")), "{text}");
    let on_n2 = rows(m, &["node", "ps", "n2"]);
    assert_eq!(running_on(&on_n2, "lab_ssd"), ["n2"], "{on_n2:#?}");
    assert!(on_n2.iter().all(|t| t["node"] == "n2"), "node ps n2 lists other nodes' tasks: {on_n2:#?}");
    let text = m.stackctl(&["node", "ps", "n2"]);
    assert!(text.contains("lab_ssd.1") && text.contains("NODE"), "{text}");

    // The global service follows the label: added on n3 and n2, removed from n3.
    update(m, &["--label-add", "role=edge", "n3"]);
    wait_running(m, "lab_edge", &["n3"], "edge on n3");
    update(m, &["--label-add", "role=edge", "--label-add", "zone=a", "n2"]);
    wait_running(m, "lab_edge", &["n2", "n3"], "edge on n2 and n3");
    let said = update(m, &["--label-rm", "role", "n3"]);
    assert!(said.contains("labels -role"), "{said}");
    wait_running(m, "lab_edge", &["n2"], "edge on n2 only");
    wait_until(Duration::from_secs(30), "edge's container gone from n3", || {
        c.running(2, "io.stackd.service=lab_edge").ok().filter(|ids| ids.is_empty())
    });

    // A refused update changes nothing: a bad label beside a good one, an unknown node.
    let before = json(m, &["node", "inspect", "n2"]).expect("inspect");
    for (args, says) in [
        (vec!["node", "update", "--label-add", "ok=1", "--label-add", "bad key=x", "n2"], "is invalid"),
        (vec!["node", "update", "--availability", "pause", "nope"], "no node"),
    ] {
        let o = m.stackctl_output(&args).expect("run stackctl");
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
    let after = json(m, &["node", "inspect", "n2"]).expect("inspect");
    assert_eq!((&before["labels"], &before["availability"]), (&after["labels"], &after["availability"]));

    // Drain n2: web's task and ssd's leave it (ssd fits nowhere else), edge leaves it.
    let web_on_n2 = running_on(&rows(m, &["ps", "lab"]), "lab_web").iter().filter(|n| *n == "n2").count();
    let said = update(m, &["--availability", "drain", "n2"]);
    assert!(said.contains("availability drain"), "{said}");
    let t = Instant::now();
    wait_until(Duration::from_secs(30), "n2 drained", || {
        let rows = rows(m, &["ps", "lab"]);
        let web = running_on(&rows, "lab_web");
        let drained = web.len() == 3
            && !web.iter().any(|n| n == "n2")
            && running_on(&rows, "lab_edge").is_empty()
            && running_on(&rows, "lab_ssd").is_empty();
        drained.then_some(())
    });
    eprintln!("n2 ({web_on_n2} web task(s)) drained in {:?}", t.elapsed());
    wait_until(Duration::from_secs(30), "no container left running on n2", || {
        c.running(1, "io.stackd.stack=lab").ok().filter(|ids| ids.is_empty())
    });
    let nodes = rows(m, &["node", "ls"]);
    let n2 = nodes.iter().find(|n| n["name"] == "n2").expect("n2 in node ls");
    assert_eq!(n2["availability"], "drain", "{nodes:#?}");
    let on_n2 = rows(m, &["node", "ps", "n2"]);
    assert!(on_n2.iter().all(|t| t["desired_state"] != "running"), "{on_n2:#?}");

    // Active again: n2 takes the tasks that can only run there.
    update(m, &["--availability", "active", "n2"]);
    wait_running(m, "lab_ssd", &["n2"], "ssd back on n2");
    wait_running(m, "lab_edge", &["n2"], "edge back on n2");
    assert_eq!(running_on(&rows(m, &["ps", "lab"]), "lab_web").len(), 3);

    m.stackctl(&["stack", "rm", "lab"]);
    for i in 0..3 {
        wait_until(Duration::from_secs(30), &format!("no container left on node {i}"), || {
            c.running(i, "io.stackd.stack").ok().filter(|ids| ids.is_empty())
        });
    }
    eprintln!("done after {:?}", t0.elapsed());
}

/// A global service, and one pinned by an engine label (`{NS}`: the
/// namespace of the engine that joins last; every harness engine has the
/// label `stackd-test.ns=<its namespace>`).
const GLOBAL: &str = "\
services:
  agent:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      mode: global
  pinned:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      placement:
        constraints: [engine.labels.stackd-test.ns == {NS}]
";

/// A global service follows the cluster's membership: a worker that joins
/// a running cluster gets its task without a new deploy, and once the
/// worker is stopped and removed the task is gone from the listing (the
/// other nodes' tasks untouched). A task constrained to the new node's
/// engine label waits for it, then runs there.
#[test]
fn a_global_service_follows_a_join_and_a_removal() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let mut c = Engines::start_joined(3, 1, 2, &Opts::default()).expect("two nodes joined, a third engine ready");
    let ns = c.engine(2).ns.clone();
    let file = c.node(0).write_stack("glob.yml", &GLOBAL.replace("{NS}", &ns));
    eprintln!("cluster up after {:?}", t0.elapsed());
    c.node(0).stackctl(&["deploy", "-c", &file, "lab"]);
    wait_running(c.node(0), "lab_agent", &["n1", "n2"], "agent on n1 and n2");
    wait_until(Duration::from_secs(10), "pinned said to be unplaceable", || {
        let rows = rows(c.node(0), &["ps", "lab"]);
        rows.iter().find(|t| t["name"] == "lab_pinned.1" && t["error"].as_str().is_some_and(|e| !e.is_empty())).cloned()
    });
    let before = rows(c.node(0), &["ps", "lab"]);
    let ids = |rows: &[Value]| -> Vec<String> {
        let mut ids: Vec<String> = rows
            .iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("lab_agent.")))
            .filter(|t| t["desired_state"] == "running" && t["node"] != "n3")
            .filter_map(|t| t["id"].as_str().map(String::from))
            .collect();
        ids.sort();
        ids
    };

    let joined = Instant::now();
    let n3 = c.join_worker().expect("n3 joins");
    let took = wait_running(c.node(0), "lab_agent", &["n1", "n2", "n3"], "agent on n3 too");
    eprintln!("agent running on n3 {:?} after the join began ({took:?} after it was ready)", joined.elapsed());
    wait_until(Duration::from_secs(10), "agent's container on n3's engine", || {
        c.running(n3, "io.stackd.service=lab_agent").ok().filter(|ids| ids.len() == 1)
    });
    wait_running(c.node(0), "lab_pinned", &["n3"], "pinned on n3, by its engine label");
    let n3_inspect = json(c.node(0), &["node", "inspect", "n3"]).expect("node inspect n3");
    assert_eq!(n3_inspect["role"], "worker", "{n3_inspect:#}");
    assert_eq!(n3_inspect["engine"]["labels"]["stackd-test.ns"], ns.as_str(), "{n3_inspect:#}");
    assert_eq!(n3_inspect["tasks"]["running"], 2, "{n3_inspect:#}");
    assert_eq!(ids(&rows(c.node(0), &["ps", "lab"])), ids(&before), "n1's and n2's tasks untouched");

    // Stopped, then removed (--force: no need to wait until it is declared down).
    c.stop_stackd(n3);
    let said = c.node(0).stackctl(&["node", "rm", "--force", "n3"]);
    eprintln!("{}", said.trim());
    let t = Instant::now();
    wait_until(Duration::from_secs(20), "agent's task for n3 gone from ps", || {
        let rows = rows(c.node(0), &["ps", "lab"]);
        let agents = rows
            .iter()
            .filter(|t| {
                t["desired_state"] == "running" && t["name"].as_str().is_some_and(|n| n.starts_with("lab_agent."))
            })
            .count();
        (running_on(&rows, "lab_agent") == ["n1", "n2"] && agents == 2).then_some(())
    });
    eprintln!("n3's task gone {:?} after the removal", t.elapsed());
    let nodes = rows(c.node(0), &["node", "ls"]);
    assert!(nodes.iter().all(|n| n["name"] != "n3"), "{nodes:#?}");
    assert_eq!(ids(&rows(c.node(0), &["ps", "lab"])), ids(&before), "n1's and n2's tasks untouched");

    c.node(0).stackctl(&["stack", "rm", "lab"]);
    for i in 0..2 {
        wait_until(Duration::from_secs(30), &format!("no container left on node {i}"), || {
            c.running(i, "io.stackd.stack").ok().filter(|ids| ids.is_empty())
        });
    }
    eprintln!("done after {:?}", t0.elapsed());
}
