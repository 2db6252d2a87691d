//! What an operator and a CI job see of a rollout, on three managers each
//! with its own engine ([`stackd_tests::engines`]):
//!
//! - `deploy --output json --wait` prints one valid JSON object per line:
//!   the deploy, progress per service, cluster events, and the result with
//!   the exit code;
//! - a terminal run (under `script`, a pty) draws the live progress bars;
//! - `stackctl events -f` keeps printing across the loss of the manager it
//!   watches (the leader): afterwards its events are exactly the kept ones
//!   of that period, none lost, none twice;
//! - a deploy that cannot converge names, on the timeout, the service and
//!   the scheduler's reason.
//!
//! Needs root and Docker; skipped otherwise (fails with `CI=true`).

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use stackd_tests::engines::Engines;
use stackd_tests::{Opts, require_docker, wait_until};

fn stack(image: &str) -> String {
    format!(
        "services:
  web:
    image: {image}
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    stop_signal: SIGKILL
    healthcheck:
      test: [\"CMD\", \"true\"]
      interval: 500ms
      retries: 1
    deploy:
      replicas: 2
      update_config:
        monitor: 1s
  worker:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    stop_signal: SIGKILL
"
    )
}

const STUCK: &str = "\
services:
  stuck:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      placement:
        constraints: [node.labels.disk == ssd]
";

/// Exit code and stdout, stderr of a stackctl run with every manager's address.
fn run(c: &Engines, args: &[&str]) -> (Option<i32>, String, String) {
    let o = c.cluster.stackctl_output(args, None).expect("stackctl runs");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The JSON objects of `text`, one per line; panics on a line that is not one.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}\nall:\n{text}")))
        .collect()
}

/// (index, seq) of an event line.
fn cursor(e: &Value) -> (u64, u64) {
    (e["index"].as_u64().unwrap_or(0), e["seq"].as_u64().unwrap_or(0))
}

/// `stackctl events -f -o json` running in the background.
struct Follower {
    child: Child,
}

impl Follower {
    fn start(c: &Engines) -> Follower {
        let mut cmd: Command = c.cluster.stackctl_command().expect("stackctl");
        cmd.args(["events", "-f", "-o", "json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        Follower { child: cmd.spawn().expect("spawn stackctl events -f") }
    }

    /// Stops it; its stdout and stderr.
    fn stop(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (out, err)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn progress_json_lines_and_events_across_a_failover() {
    if !require_docker() {
        return;
    }
    let mut c = Engines::start(3, 3, &Opts::default()).expect("three managers, three engines");
    let follower = Follower::start(&c);
    // Let the follower open its watch before anything happens.
    std::thread::sleep(Duration::from_secs(1));

    // (h) JSON lines: the deploy, progress, events, and the result.
    let v1 = c.node(0).write_stack("v1.yml", &stack("stackd-test/web:1"));
    let (code, out, err) = run(&c, &["deploy", "-c", &v1, "app", "--wait", "--timeout", "90s", "-o", "json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let lines = json_lines(&out);
    assert_eq!(lines[0]["type"], "deploy", "{out}");
    assert_eq!(lines[0]["created"], serde_json::json!(["app_web", "app_worker"]), "{out}");
    let last = lines.last().expect("lines");
    assert_eq!(last["type"], "result", "{out}");
    assert_eq!(last["outcome"], "converged", "{out}");
    assert_eq!(last["exit_code"], 0, "{out}");
    let progress: Vec<&Value> = lines.iter().filter(|l| l["type"] == "progress").collect();
    assert!(progress.iter().any(|p| p["service"] == "app_web" && p["converged"] == true), "{out}");
    assert!(progress.iter().all(|p| p["desired"].is_u64() && p["running"].is_u64() && p["state"].is_string()), "{out}");
    assert!(lines.iter().any(|l| l["type"] == "event" && l["kind"] == "task"), "{out}");

    // A terminal run draws bars (indicatif) with each service's line.
    let v2 = c.node(0).write_stack("v2.yml", &stack("stackd-test/web:2"));
    let line = format!("{} deploy -c {v2} app --wait --timeout 90s", stackd_tests::bin("stackctl").display());
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in c.cluster.client_env().expect("env") {
        script.env(k, v);
    }
    script.env("TERM", "xterm");
    let o = script.output().expect("script runs");
    let tty = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{tty}");
    assert!(tty.contains("app_web") && tty.contains("running") && tty.contains('\r'), "{tty}");
    assert!(tty.contains("] 2/2 running") || tty.contains("2/2 running"), "{tty}");
    assert!(tty.contains("\u{1b}["), "no terminal drawing in:\n{tty}");

    // The leader goes away (the follower's manager: node 0 inited the cluster).
    let leader = c.cluster.wait_leader(None, Duration::from_secs(20)).expect("a leader");
    c.kill_stackd(leader);
    c.cluster.wait_leader(Some(leader), Duration::from_secs(30)).expect("a new leader");
    let (code, out, err) = run(&c, &["deploy", "-c", &v1, "app", "--wait", "--timeout", "90s"]);
    assert_eq!(code, Some(0), "{out}\n{err}");

    // A deploy that cannot converge: the timeout names the service and why.
    let stuck = c.node(1).write_stack("stuck.yml", STUCK);
    let (code, out, err) = run(&c, &["deploy", "-c", &stuck, "stuck", "--wait", "--timeout", "5s"]);
    assert_eq!(code, Some(4), "{out}\n{err}");
    assert!(err.contains("stuck_stuck: no suitable node:") && err.contains("node.labels.disk == ssd"), "{err}");

    // Everything the follower printed, in order, once; and nothing the
    // managers kept of that period is missing from it.
    let seen_last = wait_until(Duration::from_secs(10), "the follower has the last event", || {
        let (_, kept, _) = run(&c, &["events", "-o", "json"]);
        let kept = json_lines(&kept);
        kept.last().map(cursor)
    });
    std::thread::sleep(Duration::from_secs(1));
    let (out, err) = follower.stop();
    let followed = json_lines(&out);
    let cursors: Vec<(u64, u64)> = followed.iter().map(cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "events out of order or twice: {cursors:?}");
    assert!(err.contains("following the events through another manager"), "the follower did not move: {err}");
    let (_, kept, _) = run(&c, &["events", "-o", "json"]);
    let first = *cursors.first().expect("events followed");
    let kept: BTreeSet<(u64, u64)> =
        json_lines(&kept).iter().map(cursor).filter(|k| *k >= first && *k <= seen_last).collect();
    let followed: BTreeSet<(u64, u64)> = cursors.iter().copied().filter(|k| *k <= seen_last).collect();
    let missing: Vec<_> = kept.difference(&followed).collect();
    assert!(missing.is_empty(), "events lost across the failover: {missing:?}\nfollower stderr: {err}");
    assert!(cursors.contains(&seen_last), "the follower stopped before the last event");
}
