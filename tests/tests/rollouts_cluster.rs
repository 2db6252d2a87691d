//! Rollouts on a cluster of three real hosts, each with its own Docker
//! engine ([`stackd_tests::engines`]), one cluster shared by the cases:
//!
//! - (a) a start-first rollout of a 4-replica service published through the
//!   routing mesh, 2 at a time: a client polling every node's address every
//!   50 ms sees no failed request from before the deploy to after it, sees
//!   the new version at the end, and never more than 2 new tasks are on
//!   their way up while the old ones keep serving;
//! - (d) `service rollback --to 1` from revision 3: back to the first spec,
//!   through the mesh again without a failed request;
//! - (b) a revision whose health check never passes, with `failure_action:
//!   rollback`: `deploy --wait` exits 2, the service ends on the previous
//!   spec with every replica healthy, and `service history` shows both
//!   revisions and why the second was rolled back;
//! - (c) the same with `failure_action: pause`: `deploy --wait` exits 3;
//!   `service update --resume` with nothing fixed goes on where the rollout
//!   stopped: the failed slot is tried again, fails again, and the rollout
//!   pauses again (exit 3) without taking down another slot; (b) and (c)
//!   poll every node's mesh all along: every request is answered, by the
//!   old revision only;
//! - (e) a crash-looping container with `restart_policy: {condition:
//!   on-failure, delay: 2s, max_attempts: 3}`: its tasks start at least 2 s
//!   apart, 1 + 3 of them, then it stays down;
//! - (f) redeploying a stack with one service changed leaves the others'
//!   tasks and containers alone.
//!
//! A request that takes more than 500 ms makes the client look at the
//! nodes' kernels while it hangs (its conntrack entries, the mesh's routes
//! and rules); a failure prints them, with the nodes' logs around it.
//!
//! Needs root and Docker; skipped otherwise (fails with `CI=true`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::engines::Engines;
use stackd_tests::mesh_client::{Poller, Request, container_times, logs_near_failures, mesh_serves, summary, unix_ms};
use stackd_tests::task_rows::{s, up, wanted};
use stackd_tests::{Node, Opts, netns, require_docker, wait_until};

/// The web service of (a) and (d): `image`, `env` as its environment (a
/// change of it is a new spec), published on 18090 through the mesh, healthy
/// once httpd accepts connections; rollouts and rollbacks start-first, 2 at
/// a time.
fn app(image: &str, env: &str) -> String {
    format!(
        "services:
  web:
    image: {image}
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    environment:
      REV: \"{env}\"
    ports: [\"18090:8080\"]
    healthcheck:
      test: [\"CMD-SHELL\", \"echo | nc -w 1 127.0.0.1 8080\"]
      interval: 500ms
      retries: 3
      start_period: 5s
    deploy:
      replicas: 4
      update_config:
        order: start-first
        parallelism: 2
        monitor: 1s
      rollback_config:
        order: start-first
        parallelism: 2
        monitor: 1s
"
    )
}

/// A web service for (b) and (c): 3 replicas published on `port`, whose
/// health check is `check` (a shell line), failing its rollouts with
/// `action`.
fn checked(image: &str, check: &str, port: u16, action: &str) -> String {
    let retries = if check == NEVER { 1 } else { 3 };
    format!(
        "services:
  web:
    image: {image}
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"{port}:8080\"]
    healthcheck:
      test: [\"CMD-SHELL\", \"{check}\"]
      interval: 500ms
      retries: {retries}
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
      update_config:
        parallelism: 1
        monitor: 1s
        failure_action: {action}
      rollback_config:
        parallelism: 1
        monitor: 1s
"
    )
}

const HEALTHY: &str = "echo | nc -w 1 127.0.0.1 8080";
const NEVER: &str = "exit 1";

const CRASH: &str = "\
services:
  crash:
    image: stackd-test/busybox:1
    command: [\"sh\", \"-c\", \"exit 1\"]
    deploy:
      restart_policy:
        condition: on-failure
        delay: 2s
        max_attempts: 3
";

/// (f): `web` stays as it is, `side` runs `sleep <n>`.
fn pair(side_sleep: u32) -> String {
    format!(
        "services:
  web:
    image: stackd-test/web:1
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"18093:8080\"]
    healthcheck:
      test: [\"CMD-SHELL\", \"{HEALTHY}\"]
      interval: 500ms
      retries: 3
    deploy:
      replicas: 3
  side:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"{side_sleep}\"]
"
    )
}

/// Exit code and output (stdout and stderr) of a `stackctl` command.
fn run(node: &Node, args: &[&str]) -> (Option<i32>, String) {
    let o = node.stackctl_output(args).expect("stackctl runs");
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The tasks of a service or stack (`stackctl ps -o json`); the output if
/// it is not JSON.
fn ps(node: &Node, target: &str) -> Result<Vec<Value>, String> {
    let (code, text) = run(node, &["ps", target, "-o", "json", "--no-trunc"]);
    if code != Some(0) {
        return Err(text);
    }
    serde_json::from_str::<Value>(&text).ok().and_then(|v| v.as_array().cloned()).ok_or(text)
}

/// One line per task, for messages.
fn table(tasks: &[Value]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "  {} {} rev {} {} on {}: desired {}, {} {} {} {}",
                &s(t, "id")[..s(t, "id").len().min(12)],
                s(t, "name"),
                t["revision"],
                s(t, "image"),
                s(t, "node"),
                s(t, "desired_state"),
                s(t, "current_state"),
                s(t, "health"),
                s(t, "message"),
                s(t, "error"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Samples of a service's tasks taken during a rollout: when, and the tasks.
type Samples = Vec<(Duration, Vec<Value>)>;

/// Runs `stackctl args` (a `--wait` command) while sampling `service`'s
/// tasks every 200 ms; its exit code and output, and the samples.
fn during(node: &Node, args: &[&str], service: &str, since: Instant) -> ((Option<i32>, String), Samples) {
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let cmd = sc.spawn(|| {
            let r = run(node, args);
            done.store(true, Ordering::Relaxed);
            r
        });
        let mut samples = Vec::new();
        while !done.load(Ordering::Relaxed) {
            if let Ok(tasks) = ps(node, service) {
                samples.push((since.elapsed(), tasks));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (cmd.join().expect("stackctl thread"), samples)
    })
}

/// The samples as a timeline, for messages.
fn timeline(samples: &Samples) -> String {
    samples.iter().map(|(at, tasks)| format!("at {at:?}:\n{}\n", table(tasks))).collect()
}

/// A client of every node's mesh port `port`.
fn poll_mesh(c: &Engines, port: u16) -> Poller {
    Poller::start(c, &[0, 1, 2], port, Instant::now())
}

/// The tasks of `service` that should run and are up, with their images.
fn up_images(tasks: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = tasks.iter().filter(|t| wanted(t) && up(t)).map(|t| s(t, "image").to_string()).collect();
    v.sort();
    v
}

/// (a) and (d): v1 → v2 with no failed request, then v3 and a rollback to revision 1.
fn zero_downtime(c: &Engines) {
    let m = c.node(0);
    let v1 = m.write_stack("app1.yml", &app("stackd-test/web:1", "1"));
    m.stackctl(&["deploy", "-c", &v1, "app", "--wait", "--timeout", "90s"]);
    mesh_serves(c, 18090, "web 1");

    // (a) v1 → v2, polled through every node's mesh from before to after.
    let v2 = m.write_stack("app2.yml", &app("stackd-test/web:2", "2"));
    let poller = poll_mesh(c, 18090);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = poller.started;
    let (deployed, samples) = during(m, &["deploy", "-c", &v2, "app", "--wait", "--timeout", "90s"], "app_web", t0);
    let rollout_done = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let log = poller.finish();
    let context =
        || format!("deploy: {deployed:?}\n{}\ntasks during the rollout:\n{}", summary(&log), timeline(&samples));
    assert_eq!(deployed.0, Some(0), "{}", context());
    assert!(
        log.iter().all(|r| r.result.is_ok()),
        "requests failed during the rollout:\n{}\n{}",
        context(),
        logs_near_failures(c, &log)
    );
    assert!(log.first().is_some_and(|r| r.result.as_deref() == Ok("web 1")), "{}", context());
    // Once it converged, only the new version answers.
    let after: Vec<&Request> = log.iter().filter(|r| r.at > rollout_done).collect();
    assert!(
        !after.is_empty() && after.iter().all(|r| r.result.as_deref() == Ok("web 2")),
        "after the rollout: {}",
        context()
    );
    // Never more than 2 new tasks on their way up, and the 4 old ones
    // serve until new ones are up (start-first).
    for (at, tasks) in &samples {
        let starting = tasks.iter().filter(|t| s(t, "image") == "stackd-test/web:2" && wanted(t) && !up(t)).count();
        assert!(starting <= 2, "{starting} new tasks in flight at {at:?}:\n{}", context());
        let serving = tasks.iter().filter(|t| wanted(t) && up(t)).count();
        assert!(serving >= 4, "only {serving} tasks up at {at:?}:\n{}", context());
    }
    assert!(
        samples.iter().any(|(_, ts)| ts.iter().any(|t| s(t, "image") == "stackd-test/web:2" && !up(t))),
        "no sample caught the rollout under way:\n{}",
        context()
    );
    let tasks = ps(m, "app_web").expect("ps");
    assert_eq!(up_images(&tasks), ["stackd-test/web:2"; 4], "\n{}", table(&tasks));
    let nodes: BTreeSet<&str> = tasks.iter().filter(|t| wanted(t)).map(|t| s(t, "node")).collect();
    assert!(nodes.len() >= 2, "the replicas run on {nodes:?} only");
    eprintln!("(a) rollout took {:?}; {}", rollout_done, summary(&log));

    // (d) A third revision, then back to the first one by number.
    let v3 = m.write_stack("app3.yml", &app("stackd-test/web:2", "3"));
    m.stackctl(&["deploy", "-c", &v3, "app", "--wait", "--timeout", "90s"]);
    let poller = poll_mesh(c, 18090);
    std::thread::sleep(Duration::from_millis(300));
    let back = run(m, &["service", "rollback", "app_web", "--to", "1", "--wait", "--timeout", "90s"]);
    let done = poller.started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let log = poller.finish();
    assert_eq!(back.0, Some(0), "{back:?}");
    assert!(back.1.contains("Rolling back service app_web (revision 4)"), "{back:?}");
    assert!(
        log.iter().all(|r| r.result.is_ok()),
        "requests failed during the rollback:\n{}\n{}",
        summary(&log),
        logs_near_failures(c, &log)
    );
    let after: Vec<&Request> = log.iter().filter(|r| r.at > done).collect();
    assert!(!after.is_empty() && after.iter().all(|r| r.result.as_deref() == Ok("web 1")), "{}", summary(&log));
    let tasks = ps(m, "app_web").expect("ps");
    assert_eq!(up_images(&tasks), ["stackd-test/web:1"; 4], "\n{}", table(&tasks));
    let h = m.stackctl_json(&["service", "history", "app_web"]);
    let revs: Vec<u64> = h.as_array().into_iter().flatten().filter_map(|r| r["revision"].as_u64()).collect();
    assert_eq!(revs, [1, 2, 3, 4], "{h:#}");
    let last = &h[3];
    assert_eq!((last["image"].as_str(), last["current"].as_bool()), (Some("stackd-test/web:1"), Some(true)), "{h:#}");
    assert!(last["rollout"].as_str().unwrap_or_default().starts_with("rolled_back"), "{h:#}");
    eprintln!("(d) rollback to revision 1: {}", summary(&log));
    m.stackctl(&["stack", "rm", "app"]);
}

/// Fails unless every request of `log` was answered `want`.
fn all_answered(c: &Engines, log: &[Request], want: &str, what: &str) {
    assert!(
        !log.is_empty() && log.iter().all(|r| r.result.as_deref() == Ok(want)),
        "{what}: not every request answered {want:?}:\n{}\n{}",
        summary(log),
        logs_near_failures(c, log)
    );
}

/// (b) A revision that never gets healthy is rolled back by itself.
fn automatic_rollback(c: &Engines) {
    let m = c.node(0);
    let v1 = m.write_stack("rb1.yml", &checked("stackd-test/web:1", HEALTHY, 18091, "rollback"));
    m.stackctl(&["deploy", "-c", &v1, "rb", "--wait", "--timeout", "90s"]);
    mesh_serves(c, 18091, "web 1");
    let v2 = m.write_stack("rb2.yml", &checked("stackd-test/web:2", NEVER, 18091, "rollback"));
    let poller = poll_mesh(c, 18091);
    let (code, out) = run(m, &["deploy", "-c", &v2, "rb", "--wait", "--timeout", "90s"]);
    let log = poller.finish();
    let tasks = ps(m, "rb_web").unwrap_or_default();
    assert_eq!(code, Some(2), "deploy of a revision that is never healthy: {out}\n{}", table(&tasks));
    assert!(out.contains("rolled back: rb_web"), "{out}");
    assert_eq!(up_images(&tasks), ["stackd-test/web:1"; 3], "\n{}", table(&tasks));
    assert!(tasks.iter().filter(|t| wanted(t)).all(|t| s(t, "health") == "healthy"), "\n{}", table(&tasks));
    // The failed task of revision 2 says why.
    assert!(
        tasks.iter().any(|t| s(t, "image") == "stackd-test/web:2" && s(t, "error").contains("unhealthy")),
        "\n{}",
        table(&tasks)
    );
    // Throughout, every node's mesh answered, and only from revision 1:
    // a task that never got healthy never got a connection.
    all_answered(c, &log, "web 1", "the mesh during the failed rollout and its rollback");
    // The history: revision 2 (web:2), rolled back and why; revision 3,
    // revision 1's spec again, what it changed back, rolled back with the
    // reason.
    let h = m.stackctl_json(&["service", "history", "rb_web"]);
    let rows = h.as_array().cloned().unwrap_or_default();
    let rev = |n: u64| rows.iter().find(|r| r["revision"] == n).cloned().unwrap_or_default();
    assert_eq!((rev(2)["image"].as_str(), rev(2)["current"].as_bool()), (Some("stackd-test/web:2"), Some(false)));
    let second = rev(2);
    let why = second["rollout"].as_str().unwrap_or_default();
    assert!(why.starts_with("rolled back") && why.contains("unhealthy"), "why revision 2 was rolled back: {h:#}");
    let current = rev(3);
    assert_eq!((current["image"].as_str(), current["current"].as_bool()), (Some("stackd-test/web:1"), Some(true)));
    let changes = current["changes"].as_str().unwrap_or_default();
    assert!(changes.contains("\"stackd-test/web:2\" -> \"stackd-test/web:1\""), "{h:#}");
    let how = current["rollout"].as_str().unwrap_or_default();
    assert!(how.starts_with("rolled_back") && how.contains("unhealthy"), "{h:#}");
    eprintln!("(b) history: {h}\n(b) mesh: {}", summary(&log));
    m.stackctl(&["stack", "rm", "rb"]);
}

/// The slots of `tasks` that have a task of `image`.
fn slots_with(tasks: &[Value], image: &str) -> BTreeSet<u64> {
    tasks.iter().filter(|t| s(t, "image") == image).filter_map(|t| t["slot"].as_u64()).collect()
}

/// (c) A revision that never gets healthy pauses; resumed with nothing
/// fixed, the rollout goes on where it stopped: the failed slot is tried
/// again, fails again, and the rollout pauses again without taking down
/// another slot. The other replicas serve through every node's mesh all
/// along.
fn pause_and_resume(c: &Engines) {
    let m = c.node(0);
    let v1 = m.write_stack("pz1.yml", &checked("stackd-test/web:1", HEALTHY, 18092, "pause"));
    m.stackctl(&["deploy", "-c", &v1, "pz", "--wait", "--timeout", "90s"]);
    mesh_serves(c, 18092, "web 1");
    let v2 = m.write_stack("pz2.yml", &checked("stackd-test/web:2", NEVER, 18092, "pause"));
    let poller = poll_mesh(c, 18092);
    let (code, out) = run(m, &["deploy", "-c", &v2, "pz", "--wait", "--timeout", "90s"]);
    let tasks = ps(m, "pz_web").unwrap_or_default();
    assert_eq!(code, Some(3), "deploy of a revision that is never healthy: {out}\n{}", table(&tasks));
    assert!(out.contains("deploy failed and paused: pz_web"), "{out}");
    let tried = slots_with(&tasks, "stackd-test/web:2");
    assert_eq!(tried.len(), 1, "parallelism 1: one slot tried before the pause\n{}", table(&tasks));
    assert_eq!(up_images(&tasks), ["stackd-test/web:1"; 2], "\n{}", table(&tasks));

    // Resumed with nothing fixed.
    let resumed_at = unix_ms() as u64;
    let (code, out) = run(m, &["service", "update", "--resume", "pz_web", "--wait", "--timeout", "90s"]);
    let log = poller.finish();
    let tasks = ps(m, "pz_web").unwrap_or_default();
    assert_eq!(code, Some(3), "{out}\n{}", table(&tasks));
    assert!(out.contains("Resuming the rollout of pz_web") && out.contains("rollout failed and paused"), "{out}");
    // It failed again after the resume, in the same slot; no other slot was taken down.
    let again = tasks.iter().any(|t| {
        s(t, "image") == "stackd-test/web:2"
            && s(t, "current_state") == "failed"
            && t["updated_at"].as_u64().is_some_and(|at| at >= resumed_at)
    });
    assert!(again, "no failure of revision 2 after the resume ({resumed_at}):\n{out}\n{}", table(&tasks));
    assert_eq!(slots_with(&tasks, "stackd-test/web:2"), tried, "\n{}", table(&tasks));
    assert_eq!(up_images(&tasks), ["stackd-test/web:1"; 2], "\n{}", table(&tasks));
    all_answered(c, &log, "web 1", "the mesh while the rollout failed, paused, resumed and paused again");
    let h = m.stackctl_json(&["service", "history", "pz_web"]);
    let current = h.as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    let why = current["rollout"].as_str().unwrap_or_default();
    assert!(why.starts_with("paused") && why.contains("unhealthy"), "{h:#}");
    eprintln!("(c) mesh: {}", summary(&log));

    // The way out: back to revision 1, every replica healthy again.
    let (code, out) = run(m, &["service", "rollback", "pz_web", "--wait", "--timeout", "90s"]);
    let tasks = ps(m, "pz_web").unwrap_or_default();
    assert_eq!(code, Some(0), "{out}\n{}", table(&tasks));
    assert_eq!(up_images(&tasks), ["stackd-test/web:1"; 3], "\n{}", table(&tasks));
    m.stackctl(&["stack", "rm", "pz"]);
}

/// (e) A crash loop respects the restart delay and `max_attempts`.
fn crash_loop(c: &Engines) {
    let m = c.node(0);
    let file = m.write_stack("crash.yml", CRASH);
    m.stackctl(&["deploy", "-c", &file, "crash"]);
    // 1 + 3 tasks, each failed.
    let tasks = wait_until(Duration::from_secs(60), "four failed tasks of crash_crash", || {
        let tasks = ps(m, "crash_crash").ok()?;
        (tasks.len() >= 4 && tasks.iter().all(|t| s(t, "current_state") == "failed")).then_some(tasks)
    });
    // It stays down: no fifth task, nothing runs.
    std::thread::sleep(Duration::from_secs(5));
    let later = ps(m, "crash_crash").expect("ps");
    assert_eq!(later.len(), 4, "more than 1 + max_attempts tasks:\n{}", table(&later));
    assert!(later.iter().all(|t| s(t, "current_state") == "failed" && t["exit_code"] == 1), "\n{}", table(&later));
    let counts = m.stackctl_json(&["service", "ls", "crash"]);
    assert!(counts.to_string().contains("0/1"), "the service is not down: {counts:#}");
    // Successive tasks start at least the delay after the one before ended.
    let mut times: Vec<(i64, i64, String)> = tasks
        .iter()
        .map(|t| {
            let (start, end) = container_times(c, s(t, "node"), s(t, "container_id"))
                .unwrap_or_else(|e| panic!("times of {}: {e}\n{}", s(t, "id"), table(&tasks)));
            let end = end.unwrap_or_else(|| panic!("the container of {} still runs\n{}", s(t, "id"), table(&tasks)));
            (start, end, format!("{} on {}", s(t, "id"), s(t, "node")))
        })
        .collect();
    times.sort();
    for w in times.windows(2) {
        let gap = w[1].0 - w[0].1;
        let starts = w[1].0 - w[0].0;
        assert!(gap >= 1900 && starts >= 2000, "{} started {gap} ms after {} ended: {times:?}", w[1].2, w[0].2);
    }
    eprintln!("(e) starts and ends (ms): {times:?}");
    m.stackctl(&["stack", "rm", "crash"]);
}

/// The tasks that should run of `service`: task id → (container id, node).
fn running_tasks(tasks: &[Value], service: &str) -> BTreeMap<String, (String, String)> {
    tasks
        .iter()
        .filter(|t| wanted(t) && s(t, "name").starts_with(&format!("{service}.")))
        .map(|t| (s(t, "id").to_string(), (s(t, "container_id").to_string(), s(t, "node").to_string())))
        .collect()
}

/// (f) A redeploy that changes one service leaves the other alone.
fn unchanged_service(c: &Engines) {
    let m = c.node(0);
    let first = m.write_stack("pair1.yml", &pair(3600));
    m.stackctl(&["deploy", "-c", &first, "pair", "--wait", "--timeout", "90s"]);
    let before = ps(m, "pair").expect("ps");
    let web = running_tasks(&before, "pair_web");
    let side = running_tasks(&before, "pair_side");
    assert_eq!((web.len(), side.len()), (3, 1), "\n{}", table(&before));
    let started: BTreeMap<String, (i64, Option<i64>)> = web
        .values()
        .map(|(id, node)| (id.clone(), container_times(c, node, id).unwrap_or_else(|e| panic!("{e}"))))
        .collect();
    let second = m.write_stack("pair2.yml", &pair(3601));
    let out = m.stackctl(&["deploy", "-c", &second, "pair", "--wait", "--timeout", "90s"]);
    let after = ps(m, "pair").expect("ps");
    let context = || format!("{out}\nbefore:\n{}\nafter:\n{}", table(&before), table(&after));
    assert_eq!(running_tasks(&after, "pair_web"), web, "web was touched:\n{}", context());
    let new_side = running_tasks(&after, "pair_side");
    assert!(new_side.len() == 1 && new_side.keys().all(|k| !side.contains_key(k)), "side not replaced:\n{}", context());
    // The same containers, not restarted.
    for (id, node) in web.values() {
        let now = container_times(c, node, id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Some(&now), started.get(id), "container {id} on {node} was restarted:\n{}", context());
    }
    let h = m.stackctl_json(&["service", "history", "pair_web"]);
    assert_eq!(h.as_array().map(Vec::len), Some(1), "web got a new revision: {h:#}");
    m.stackctl(&["stack", "rm", "pair"]);
}

/// Whether no container is left on any node's engine.
fn engines_empty(c: &Engines) -> bool {
    (0..3).all(|i| {
        let o = c.docker(i).args(["ps", "-aq"]).output();
        o.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim().is_empty())
    })
}

/// A case of the test: its name, and what it does on the shared cluster.
type Case = (&'static str, fn(&Engines));

#[test]
fn rollouts_across_engines() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    eprintln!("cluster up in {:?}", t0.elapsed());
    let cases: [Case; 5] = [
        ("(a)+(d) zero-downtime rollout and rollback --to", zero_downtime),
        ("(b) automatic rollback", automatic_rollback),
        ("(c) pause and resume", pause_and_resume),
        ("(e) crash loop", crash_loop),
        ("(f) unchanged service", unchanged_service),
    ];
    let mut failed = Vec::new();
    for (name, case) in cases {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| case(&c))) {
            Ok(()) => eprintln!("{name}: ok in {:?}", t.elapsed()),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("{name}: FAILED after {:?}", t.elapsed());
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    if !failed.is_empty() {
        panic!("{} case(s) failed:\n\n{}\n\n{}", failed.len(), failed.join("\n\n"), c.cluster.logs());
    }
    // Every stack removed: nothing left on any engine.
    wait_until(Duration::from_secs(30), "no container left on any engine", || engines_empty(&c).then_some(()));
    eprintln!("test took {:?}", t0.elapsed());
}
