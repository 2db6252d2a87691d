//! Start order (`depends_on`) on a two-node cluster, each node with a Docker
//! engine of its own ([`stackd_tests::engines`]): `web` depends on `db` with
//! `condition: service_healthy`, and `db`'s health check passes only once it
//! has been up for 4 s. Swarm starts both at once; stackd creates web's
//! tasks only once db's task is healthy, and `deploy --wait` converges. A
//! dependency that never gets healthy keeps its dependent waiting: the
//! deploy times out (exit code 4) naming what web waits for. Needs root and
//! Docker; skipped otherwise (fails with `CI=true`).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::engines::Engines;
use stackd_tests::{Node, Opts, netns, require_docker, wait_until};

/// db is healthy once it has run 4 s; web waits for that.
const ORDER: &str = "\
services:
  db:
    image: stackd-test/busybox:1
    command: [\"sh\", \"-c\", \"sleep 4; touch /tmp/ready; exec sleep 3600\"]
    healthcheck:
      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]
      interval: 1s
      timeout: 1s
      retries: 30
  web:
    image: stackd-test/web:1
    depends_on:
      db: {condition: service_healthy}
    deploy:
      replicas: 2
";

/// db never gets healthy, and its start period keeps it `starting` (not
/// failed) for longer than the deploy waits.
const STUCK: &str = "\
services:
  db:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    healthcheck:
      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]
      interval: 1s
      timeout: 1s
      retries: 3
      start_period: 5m
  web:
    image: stackd-test/web:1
    depends_on:
      db: {condition: service_healthy}
";

/// Output of a command, with its status.
fn out(mut c: Command) -> (bool, String) {
    match c.output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// The rows of `stackctl ps STACK -o json`.
fn tasks(node: &Node, stack: &str) -> Vec<Value> {
    node.stackctl_json(&["ps", stack]).as_array().cloned().unwrap_or_default()
}

/// `stackctl -o json ARGS…`, or `None` while it fails (the stack is not
/// deployed yet).
fn json(node: &Node, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let o = node.stackctl_output(&a).ok().filter(|o| o.status.success())?;
    serde_json::from_slice(&o.stdout).ok()
}

/// The rows of `tasks` whose name starts with `service.`.
fn of<'a>(rows: &'a [Value], service: &str) -> Vec<&'a Value> {
    rows.iter().filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with(&format!("{service}.")))).collect()
}

/// `State.StartedAt` of every container of `service` (full name) on any
/// node, in seconds since the epoch (GNU date parses Docker's RFC 3339).
fn started_at(c: &Engines, nodes: usize, service: &str) -> Vec<f64> {
    let mut times = Vec::new();
    for i in 0..nodes {
        let mut d = c.docker(i);
        d.args(["ps", "-aq", "--filter", &format!("label=io.stackd.service={service}")]);
        let (ok, ids) = out(d);
        assert!(ok, "docker ps on node {i}: {ids}");
        for id in ids.split_whitespace() {
            let mut d = c.docker(i);
            d.args(["inspect", "-f", "{{.State.StartedAt}}", id]);
            let (ok, at) = out(d);
            assert!(ok, "inspect {id}: {at}");
            let mut date = Command::new("date");
            date.args(["-u", "-d", at.trim(), "+%s.%N"]);
            let (ok, secs) = out(date);
            assert!(ok, "date -d {at}: {secs}");
            times.push(secs.trim().parse::<f64>().unwrap_or_else(|e| panic!("{secs}: {e}")));
        }
    }
    times
}

#[test]
fn a_service_starts_after_its_dependency_is_healthy() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let c = Engines::start(2, 1, &Opts::default()).expect("two nodes with an engine each");
    let m = c.node(0);
    let order = m.write_stack("order.yml", ORDER);
    let stuck = m.write_stack("stuck.yml", STUCK);
    eprintln!("cluster up after {:?}", t0.elapsed());

    std::thread::scope(|s| {
        // The stack whose dependency never gets healthy, meanwhile: its deploy times out.
        let timeout = s.spawn(|| {
            let t = Instant::now();
            let o = m.stackctl_output(&["deploy", "-c", &stuck, "stuck", "--wait", "--timeout", "15s"]).expect("run");
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            (o.status.code(), text, t.elapsed())
        });

        let deploy = s.spawn(|| {
            m.stackctl_output(&["deploy", "-c", &order, "order", "--wait", "--timeout", "45s"]).expect("run")
        });
        // Every look at the stack: web has a task only once db is healthy;
        // and it was seen waiting, saying why.
        let mut seen_waiting = false;
        let mut seen_reason = String::new();
        while !deploy.is_finished() {
            let rows = json(m, &["ps", "order"]).and_then(|v| v.as_array().cloned()).unwrap_or_default();
            let db_healthy = of(&rows, "order_db").iter().any(|t| t["health"] == "healthy");
            let db_running = of(&rows, "order_db").iter().any(|t| t["current_state"] == "running");
            let web = of(&rows, "order_web");
            assert!(web.is_empty() || db_healthy, "web has tasks before db is healthy: {rows:#?}");
            if db_running && !db_healthy && web.is_empty() {
                seen_waiting = true;
                // Its rollout says why it waits, and its spec what it depends on.
                if let Some(svc) = json(m, &["service", "inspect", "order_web"])
                    && let Some(message) = svc["update"]["message"].as_str()
                    && !message.is_empty()
                {
                    assert_eq!(
                        svc["spec"]["depends_on"],
                        serde_json::json!([{ "service": "db", "condition": "service_healthy", "required": true }])
                    );
                    seen_reason = message.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let o = deploy.join().expect("deploy thread");
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "deploy --wait of order:\n{text}\n{}", m.log());
        assert!(text.contains("waiting for order_db to be healthy"), "the deploy did not say why web waits:\n{text}");
        eprintln!("deploy --wait of order:\n{text}");
        assert!(seen_waiting, "web was never seen waiting for a running, not yet healthy db");
        assert_eq!(seen_reason, "waiting for order_db to be healthy (0/1 healthy)");

        // Docker's own clocks: each web container started at least 4 s after db's
        // (db's check cannot pass before it touched /tmp/ready).
        let db = started_at(&c, 2, "order_db");
        let web = started_at(&c, 2, "order_web");
        assert_eq!((db.len(), web.len()), (1, 2), "containers: db {db:?}, web {web:?}");
        for w in &web {
            assert!(*w >= db[0] + 4.0, "web started {:.2} s after db, before db could be healthy", w - db[0]);
        }
        eprintln!("web started {:.2} s after db", web.iter().copied().fold(f64::MAX, f64::min) - db[0]);
        let rows = tasks(m, "order");
        assert_eq!(of(&rows, "order_web").iter().filter(|t| t["current_state"] == "running").count(), 2, "{rows:#?}");

        // The dependency that never gets healthy: a timeout (4) that names what web waits for.
        let (code, text, took) = timeout.join().expect("timeout thread");
        eprintln!("deploy --wait of stuck ({took:?}):\n{text}");
        assert_eq!(code, Some(4), "deploy --wait of stuck:\n{text}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert!(text.contains("stuck_web") && text.contains("waiting for stuck_db to be healthy"), "{text}");
    });
    // stuck's web never got a task, and still has none.
    let rows = tasks(m, "stuck");
    assert!(of(&rows, "stuck_web").is_empty(), "{rows:#?}");
    assert_eq!(of(&rows, "stuck_db").len(), 1, "{rows:#?}");
    assert_eq!(of(&rows, "stuck_db")[0]["health"], "starting", "{rows:#?}");

    for stack in ["order", "stuck"] {
        m.stackctl(&["stack", "rm", stack]);
    }
    for i in 0..2 {
        wait_until(Duration::from_secs(30), &format!("no container left on node {i}"), || {
            let mut d = c.docker(i);
            d.args(["ps", "-aq", "--filter", "label=io.stackd.stack"]);
            let (ok, ids) = out(d);
            (ok && ids.trim().is_empty()).then_some(())
        });
    }
    eprintln!("done in {:?}", t0.elapsed());
}
