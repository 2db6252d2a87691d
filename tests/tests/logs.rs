//! `stackctl logs` on the real engines: the lines of a 3-replica service on
//! 3 nodes (each with an engine of its own), named by task and node;
//! `--tail`, `--since`, `--no-task-ids`; `-f` keeps following when a task
//! is replaced; a task printing about 10,000 lines a second while followed
//! does not make its node miss a heartbeat; a finished job's task and a
//! task whose container is gone say so. Needs root and Docker; skipped
//! otherwise (fails with `CI=true`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stackd_tests::engines::Engines;
use stackd_tests::{Node, Opts, build_images, netns, require_docker, wait_until};

const TALK: &str = "\
services:
  talk:
    image: stackd-test/busybox:1
    command: [\"sh\", \"-c\", \"echo starting >&2; i=0; while true; do echo \\\"line $$i\\\"; i=$$((i+1)); sleep 0.2; done\"]
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
";

/// The talking service and a chatty one, at about 10,000 lines a second.
fn chatty() -> String {
    format!(
        "{TALK}  chatty:\n    image: stackd-test/busybox:1\n    command: [\"sh\", \"-c\", \"while true; do seq 1 1000; sleep 0.1; done\"]\n"
    )
}

/// A line of `stackctl logs`: `[time ]prefix | text`.
#[derive(Debug, Clone)]
struct Line {
    time: Option<String>,
    prefix: String,
    text: String,
}

fn parse(out: &str, timestamps: bool) -> Vec<Line> {
    out.lines()
        .filter_map(|l| {
            let (head, text) = l.split_once(" | ")?;
            let (time, prefix) = if timestamps {
                let (t, p) = head.split_once(' ')?;
                (Some(t.to_string()), p.to_string())
            } else {
                (None, head.to_string())
            };
            Some(Line { time, prefix, text: text.to_string() })
        })
        .collect()
}

fn logs(m: &Node, args: &[&str]) -> (String, String) {
    let o = m.stackctl_output(args).expect("run stackctl logs");
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "stackctl {args:?}: {}\n{out}{err}\n{}", o.status, m.log());
    (out, err)
}

/// `task.slot.id@node` → (`task.slot`, id, node).
fn split_prefix(p: &str) -> (String, String, String) {
    let (task, node) = p.rsplit_once('@').unwrap_or((p, ""));
    let (name, id) = task.rsplit_once('.').unwrap_or((task, ""));
    (name.to_string(), id.to_string(), node.to_string())
}

/// Collects a child's stdout lines in the background.
fn collect(child: &mut std::process::Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("piped stdout");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(l);
        }
    });
    lines
}

/// Now, as `date -u` writes it in RFC 3339.
fn now_rfc3339() -> String {
    let o = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().expect("date");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn snapshot(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[test]
fn logs_of_a_service_on_three_nodes_follow_replacements() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    let m = c.node(0);
    let file = m.write_stack("app.yml", TALK);
    m.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "90s"]);
    // Lines to read.
    std::thread::sleep(Duration::from_secs(3));

    // --tail 2: two lines of each of the three tasks, each named by its
    // task (with its id) and the node it runs on; stderr's first line is
    // older than the last two.
    let (out, _) = logs(m, &["logs", "app_talk", "--tail", "2"]);
    let lines = parse(&out, false);
    let mut by_task: BTreeMap<String, usize> = BTreeMap::new();
    let mut nodes = BTreeSet::new();
    for l in &lines {
        let (name, id, node) = split_prefix(&l.prefix);
        assert!(name.starts_with("talk."), "{l:?}");
        assert_eq!(id.len(), 12, "a task id of 12 characters in {l:?}");
        assert!(l.text.starts_with("line "), "{l:?}");
        *by_task.entry(name).or_default() += 1;
        nodes.insert(node);
    }
    assert_eq!(by_task.len(), 3, "three tasks: {out}");
    assert!(by_task.values().all(|n| *n == 2), "two lines each: {out}");
    assert_eq!(nodes.len(), 3, "three nodes: {out}");

    // Everything, without task ids: stderr's line goes to stderr.
    let o = m.stackctl_output(&["logs", "app_talk", "--no-task-ids"]).expect("logs");
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "{out}{err}");
    let all = parse(&out, false);
    assert!(all.len() > 6, "{out}");
    assert!(all.iter().all(|l| split_prefix(&l.prefix).1.chars().all(|c| c.is_ascii_digit())), "{out}");
    assert_eq!(err.matches("| starting").count(), 3, "each task's stderr line: {err}");

    // --since: only lines from that time on, with -t showing it.
    std::thread::sleep(Duration::from_secs(1));
    let since = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1500));
    let (out, _) = logs(m, &["logs", "app_talk", "-t", "--since", &since]);
    let recent = parse(&out, true);
    assert!(!recent.is_empty() && recent.len() < all.len(), "{out}");
    // Times compare as text at a second's precision (the same format).
    let floor = &since[..19];
    assert!(recent.iter().all(|l| l.time.as_deref().is_some_and(|t| &t[..19] >= floor)), "since {since}: {out}");

    // -f: lines from all three, and from the task that replaces a killed one.
    let mut follow = m.stackctl_spawn(&["logs", "-f", "app_talk"]).expect("logs -f");
    let seen = collect(&mut follow);
    let tasks_seen = |want: usize| {
        wait_until(Duration::from_secs(20), &format!("lines from {want} tasks"), || {
            let ids: BTreeSet<String> =
                parse(&snapshot(&seen).join("\n"), false).iter().map(|l| split_prefix(&l.prefix).1).collect();
            (ids.len() >= want).then_some(ids)
        })
    };
    let before = tasks_seen(3);
    // Kill one task's container: the orchestrator replaces the task.
    let victim =
        c.running(1, "io.stackd.service=app_talk").expect("list").into_iter().next().expect("a container on node 1");
    let mut rm = c.docker(1);
    rm.args(["rm", "-f", &victim]);
    assert!(rm.output().expect("docker rm").status.success());
    let after = wait_until(Duration::from_secs(45), "lines from the replacement task", || {
        let ids: BTreeSet<String> =
            parse(&snapshot(&seen).join("\n"), false).iter().map(|l| split_prefix(&l.prefix).1).collect();
        (ids.difference(&before).count() >= 1).then_some(ids)
    });
    assert!(after.len() >= 4, "{after:?}");

    // Across nodes: two replicas on three nodes; the node of one is
    // drained, and its replacement's lines come from the node that had none.
    m.stackctl(&["service", "scale", "app_talk=2", "--wait", "--timeout", "60s"]);
    let hosts = |m: &Node| -> BTreeMap<String, String> {
        m.stackctl_json(&["ps", "app_talk"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|t| t["desired_state"] == "running" && t["current_state"] == "running")
            .map(|t| {
                (t["node"].as_str().unwrap_or_default().to_string(), t["id"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    };
    let before = wait_until(Duration::from_secs(30), "two running replicas", || {
        let h = hosts(m);
        (h.len() == 2).then_some(h)
    });
    let names: BTreeSet<String> = (0..3).map(|i| c.node(i).name.clone()).collect();
    let free = names.iter().find(|n| !before.contains_key(*n)).cloned().expect("a node without a replica");
    let drained = before
        .keys()
        .find(|n| **n != m.name)
        .cloned()
        .unwrap_or_else(|| before.keys().next().cloned().unwrap_or_default());
    m.stackctl(&["node", "update", "--availability", "drain", &drained]);
    wait_until(Duration::from_secs(60), &format!("lines of a replica on {free}, after {drained} was drained"), || {
        parse(&snapshot(&seen).join("\n"), false).iter().any(|l| split_prefix(&l.prefix).2 == free).then_some(())
    });
    m.stackctl(&["node", "update", "--availability", "active", &drained]);
    let _ = follow.kill();
    let _ = follow.wait();

    // A chatty task (about 10,000 lines a second) followed for 10 s: every
    // node stays ready, none missed its heartbeats.
    let file = m.write_stack("chatty.yml", &chatty());
    m.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "90s"]);
    let mut follow = m.stackctl_spawn(&["logs", "-f", "app_chatty", "--tail", "0"]).expect("logs -f");
    let seen = collect(&mut follow);
    let started = Instant::now();
    let mut states = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(10) {
        for n in m.stackctl_json(&["node", "ls"]).as_array().cloned().unwrap_or_default() {
            states.insert(n["state"].as_str().unwrap_or_default().to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let received = snapshot(&seen).len();
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(states, BTreeSet::from(["ready".to_string()]), "every node stayed ready while logs flowed");
    let events = m.stackctl(&["events", "-o", "json"]);
    assert!(!events.contains("\"down\""), "no node was declared down: {events}");
    // About 100,000 were printed; the relay keeps up with most of them.
    assert!(received > 50_000, "the client received {received} lines in 10 s");
    eprintln!("logs -f of a chatty task: {received} lines in 10 s");
}

const JOB: &str = "\
services:
  once:
    image: stackd-test/busybox:1
    command: [\"sh\", \"-c\", \"echo done-output; echo to-stderr >&2\"]
    deploy:
      mode: replicated-job
      replicas: 1
";

const SLOW: &str = "\
services:
  job:
    image: stackd-test/busybox:1
    command: [\"sh\", \"-c\", \"echo begin; sleep 3; echo end\"]
    deploy:
      mode: replicated-job
      replicas: 1
";

#[test]
fn logs_of_a_finished_job_and_of_a_gone_container_say_so() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("logs-job").expect("init");
    let file = node.write_stack("job.yml", JOB);
    node.stackctl(&["deploy", "-c", &file, "batch", "--wait", "--timeout", "60s"]);
    let rows = node.stackctl_json(&["ps", "batch"]);
    let task = rows.as_array().and_then(|r| r.first()).cloned().expect("a task");
    let id = task["id"].as_str().expect("task id").to_string();
    let container = task["container_id"].as_str().expect("container id").to_string();

    // The finished task: its output, then how it ended.
    let (out, err) = logs(&node, &["logs", &id]);
    assert!(out.contains("once.1.") && out.contains("| done-output"), "{out}");
    assert!(err.contains("| to-stderr"), "{err}");
    assert!(err.contains("the task is complete (exit code 0)"), "{err}");
    // By the start of its id, too; and the service's logs hold it.
    let (out, _) = logs(&node, &["logs", &id[..8]]);
    assert!(out.contains("| done-output"), "{out}");
    let (out, _) = logs(&node, &["logs", "batch_once"]);
    assert!(out.contains("| done-output"), "{out}");

    // Its container removed: the logs went with it, and the command says so.
    let o = std::process::Command::new("docker").args(["rm", "-f", &container]).output().expect("docker rm");
    assert!(o.status.success());
    let (out, err) = logs(&node, &["logs", &id]);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("its container is gone from the node"), "{err}");

    // -f of a task: its lines as they come, then how it ended, and the
    // command ends by itself.
    let file = node.write_stack("slow.yml", SLOW);
    node.stackctl(&["deploy", "-c", &file, "slow"]);
    let task = wait_until(Duration::from_secs(30), "the slow job's task", || {
        let rows = node.stackctl_json(&["ps", "slow"]);
        let t = rows.as_array()?.first()?.clone();
        (!t["node"].as_str().unwrap_or_default().is_empty()).then(|| t["id"].as_str().unwrap_or_default().to_string())
    });
    let started = Instant::now();
    let o = node.stackctl_output(&["logs", "-f", &task]).expect("logs -f TASK");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("| begin") && out.contains("| end"), "{out}");
    assert!(err.contains("the task is complete (exit code 0)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "it ended with its task");

    // -f of a service that is removed meanwhile ends, saying so.
    let mut follow = node.stackctl_spawn(&["logs", "-f", "batch_once"]).expect("logs -f");
    std::thread::sleep(Duration::from_secs(1));
    node.stackctl(&["stack", "rm", "batch"]);
    let ended =
        wait_until(Duration::from_secs(20), "logs -f of a removed service ends", || follow.try_wait().ok().flatten());
    assert!(ended.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(err.contains("the service was removed"), "{err}");

    // An unknown target is refused, clearly.
    let o = node.stackctl_output(&["logs", "batch_nothing"]).expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no service or task \"batch_nothing\""), "{err}");
}

#[test]
fn a_follower_relays_logs_through_the_leader() {
    if !require_docker() {
        return;
    }
    build_images();
    let c = stackd_tests::Cluster::managers(3, &Opts::default()).expect("3 managers");
    let leader = c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    let follower = (leader + 1) % 3;
    let m = &c.nodes[follower];
    let file = m.write_stack("app.yml", TALK);
    m.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "90s"]);
    std::thread::sleep(Duration::from_secs(2));
    let (out, _) = logs(m, &["logs", "app_talk", "--tail", "1", "--no-task-ids"]);
    let names: BTreeSet<String> =
        parse(&out, false).iter().map(|l| l.prefix.split('@').next().unwrap_or_default().to_string()).collect();
    assert_eq!(names.len(), 3, "one line of each task, through follower {follower}: {out}");
}

/// The counter task of the failover test, placed on node `name`.
fn counter(name: &str) -> String {
    format!(
        "services:\n  count:\n    image: stackd-test/busybox:1\n    command: [\"sh\", \"-c\", \"i=0; while true; do echo \\\"n $$i\\\"; i=$$((i+1)); sleep 0.1; done\"]\n    deploy:\n      placement:\n        constraints: [\"node.hostname == {name}\"]\n"
    )
}

#[test]
fn logs_follow_resumes_after_a_failover_without_a_gap_or_a_repeat() {
    if !require_docker() {
        return;
    }
    build_images();
    let mut c = stackd_tests::Cluster::managers(3, &Opts::default()).expect("3 managers");
    let leader = c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let file = c.nodes[follower].write_stack("count.yml", &counter(&c.nodes[other].name));
    c.nodes[follower].stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "90s"]);
    let mut follow = c.nodes[follower].stackctl_spawn(&["logs", "-f", "app_count"]).expect("logs -f");
    let seen = collect(&mut follow);
    let count = |seen: &Arc<Mutex<Vec<String>>>| parse(&snapshot(seen).join("\n"), false).len();
    wait_until(Duration::from_secs(30), "20 lines before the failover", || (count(&seen) >= 20).then_some(()));
    c.nodes[leader].kill9();
    let at_kill = count(&seen);
    c.wait_leader(Some(leader), Duration::from_secs(15)).expect("a new leader");
    wait_until(Duration::from_secs(45), "40 lines after the failover", || (count(&seen) >= at_kill + 40).then_some(()));
    let _ = follow.kill();
    let _ = follow.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(err.contains("following on another manager"), "the stream went through the failover: {err}");
    // One task: its counter goes on by one, from its first line printed to
    // its last, across the failover.
    let numbers: Vec<u64> = parse(&snapshot(&seen).join("\n"), false)
        .iter()
        .filter_map(|l| l.text.strip_prefix("n ").and_then(|n| n.parse().ok()))
        .collect();
    assert!(numbers.len() >= at_kill + 40, "{numbers:?}");
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap or a repeat across the failover: {numbers:?}");
    }
}
