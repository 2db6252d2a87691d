//! Autoscaling (`x-stackd-autoscale`, issue 19) on three real hosts, each
//! with its own Docker engine ([`stackd_tests::engines`]): a service whose
//! requests burn CPU (`stackd-test/burn:1`, limit `cpus: 0.2`, target 50 %
//! of it, between 1 and 4 replicas, a decision every 5 s, a 30 s scale-down
//! window), published through the routing mesh, under a load of about 2.6
//! replicas' worth from tokio tasks in the test:
//!
//! - within 30 s of the load's start the service has more replicas, desired
//!   and running, on more than one node;
//! - `stackctl service scale` is refused for it (without
//!   `--disable-autoscale`) and changes nothing;
//! - a start-first rollout (an environment variable changed), started while
//!   the load still asks for more replicas, completes, and the replica count
//!   stays put while it runs (the autoscaler says it holds);
//! - a redeploy of the same file changes nothing: no service updated, the
//!   same revision, the autoscaled count kept (not the file's `replicas: 1`);
//! - no request fails from the load's start to its end;
//! - once the load stops, the count goes down no earlier than the
//!   scale-down window allows, and is back at 1 within the window, three
//!   periods and some slack;
//! - every change of the count is an event (`autoscale: …`) and a decision
//!   in `service inspect`.
//!
//! It prints the timings (`--nocapture`): load start → first scale-up
//! decision → extra replicas running; load stop → back at 1.
//!
//! Needs root and Docker; skipped otherwise (fails with `CI=true`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::engines::Engines;
use stackd_tests::mesh_client::{mesh_serves, unix_ms};
use stackd_tests::task_rows::{s, wanted};
use stackd_tests::{Node, Opts, netns, require_docker, wait_until};

/// The published port.
const PORT: u16 = 18095;
/// Iterations of the CGI's shell loop per request: about 16 ms of CPU.
const BURN: u32 = 10_000;
/// Load tasks, and the time each waits between the starts of its requests:
/// 16 requests/s, about 0.26 cores, 2.6 replicas at their target (0.1
/// core each) — while one replica serves at most about 12/s.
const WORKERS: usize = 8;
const EVERY: Duration = Duration::from_millis(500);
/// How long a request may take before it counts as failed (one replica
/// saturated queues them for about half a second).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A request slower than this is listed (not a failure).
const SLOW: Duration = Duration::from_secs(2);
/// The policy's period and scale-down window.
const PERIOD: Duration = Duration::from_secs(5);
const DOWN_WINDOW: Duration = Duration::from_secs(30);

/// The stack: `rev` goes into the environment (a change of it is a new
/// revision, rolled out start-first).
fn stack(rev: &str) -> String {
    format!(
        "services:
  web:
    image: stackd-test/burn:1
    environment:
      REV: \"{rev}\"
    ports: [\"{PORT}:8080\"]
    stop_grace_period: 3s
    healthcheck:
      test: [\"CMD-SHELL\", \"echo | nc -w 1 127.0.0.1 8080\"]
      interval: 1s
      retries: 3
      start_period: 5s
    deploy:
      replicas: 1
      resources: {{limits: {{cpus: \"0.2\"}}}}
      update_config:
        order: start-first
        parallelism: 1
        monitor: 3s
    x-stackd-autoscale:
      min: 1
      max: 4
      target: {{cpu: 50%}}
      period: {period}s
      scale_down_window: {window}s
      scale_up_window: 0s
",
        period = PERIOD.as_secs(),
        window = DOWN_WINDOW.as_secs(),
    )
}

/// One request of the load: when it started (since the load's start), to
/// which node, how long it took, and the answer's body or what went wrong.
#[derive(Clone, Debug)]
struct Request {
    at: Duration,
    node: usize,
    took: Duration,
    result: Result<String, String>,
}

/// `GET /cgi-bin/burn?n=BURN` on a new connection; the body's first line
/// (`burn <n> <hostname>`) or what went wrong.
async fn burn(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut c = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET /cgi-bin/burn?n={BURN} HTTP/1.0\r\nHost: test\r\n\r\n");
        c.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with("HTTP/1.") || text.get(8..13) != Some(" 200 ") {
            return Err(format!("answer: {text:?}"));
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let line = body.lines().next().unwrap_or_default();
        if !line.starts_with("burn ") {
            return Err(format!("body: {body:?}"));
        }
        Ok(line.to_string())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, io).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// The load: [`WORKERS`] tokio tasks (on a runtime of their own thread),
/// each sending a request to the nodes' mesh port in turn every [`EVERY`]
/// (right after the last answer when that took longer), until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    started_ms: u128,
}

impl Load {
    fn start(c: &Engines) -> Load {
        let addrs: Vec<SocketAddr> =
            (0..c.cluster.nodes.len()).map(|i| SocketAddr::from((c.net.addr(i), PORT))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let started_ms = unix_ms();
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for w in 0..WORKERS {
                        let (stop, log, addrs) = (stop.clone(), log.clone(), addrs.clone());
                        tasks.push(tokio::spawn(async move {
                            // Spread the workers' starts over one period.
                            tokio::time::sleep(EVERY * w as u32 / WORKERS as u32).await;
                            let mut k = w;
                            while !stop.load(Ordering::Relaxed) {
                                let node = k % addrs.len();
                                k += 1;
                                let t0 = Instant::now();
                                let result = burn(addrs[node]).await;
                                let r = Request { at: t0 - started, node, took: t0.elapsed(), result };
                                log.lock().expect("load log").push(r);
                                tokio::time::sleep(EVERY.saturating_sub(t0.elapsed())).await;
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            })
        };
        Load { stop, log, thread: Some(thread), started, started_ms }
    }

    /// The requests so far.
    fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("load log").clone()
    }

    /// Stops the load (the requests under way finish); every request.
    fn finish(mut self) -> Vec<Request> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.requests()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the requests went: counts, the replicas that answered, latencies
/// per 10 s, and each failed or slow request.
fn summary(log: &[Request]) -> String {
    let failed = log.iter().filter(|r| r.result.is_err()).count();
    let slow = log.iter().filter(|r| r.took > SLOW).count();
    let replicas: BTreeSet<&str> =
        log.iter().filter_map(|r| r.result.as_deref().ok()?.split_whitespace().nth(2)).collect();
    let mut text = format!(
        "{} requests, {failed} failed, {slow} slower than {SLOW:?}, answered by {} replicas\n",
        log.len(),
        replicas.len()
    );
    let end = log.iter().map(|r| r.at.as_secs()).max().unwrap_or(0);
    for from in (0..=end).step_by(10) {
        let mut took: Vec<Duration> =
            log.iter().filter(|r| (from..from + 10).contains(&r.at.as_secs())).map(|r| r.took).collect();
        took.sort();
        if took.is_empty() {
            continue;
        }
        let hosts: BTreeSet<&str> = log
            .iter()
            .filter(|r| (from..from + 10).contains(&r.at.as_secs()))
            .filter_map(|r| r.result.as_deref().ok()?.split_whitespace().nth(2))
            .collect();
        text.push_str(&format!(
            "  {from:>3}–{:>3} s: {:>4} requests, p50 {:?}, max {:?}, {} replicas answered\n",
            from + 10,
            took.len(),
            took[took.len() / 2],
            took[took.len() - 1],
            hosts.len()
        ));
    }
    for r in log.iter().filter(|r| r.result.is_err() || r.took > SLOW) {
        text.push_str(&format!("  at {:?} to n{} (took {:?}): {:?}\n", r.at, r.node + 1, r.took, r.result));
    }
    text
}

/// The service's row in `stackctl service ls -o json`, as the test reads it.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    desired: u64,
    running: u64,
    revision: u64,
    update_state: String,
}

/// `app_web`'s row in the output of `stackctl service ls -o json`.
fn parse_row(stdout: &[u8]) -> Option<Row> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let r = v.as_array()?.iter().find(|r| r["name"] == "app_web")?;
    Some(Row {
        desired: r["desired"].as_u64()?,
        running: r["running"].as_u64()?,
        revision: r["revision"].as_u64()?,
        update_state: r["update_state"].as_str()?.to_string(),
    })
}

/// `app_web`'s row of `stackctl service ls -o json`; `None` if the call
/// failed or has no such row.
fn row(m: &Node) -> Option<Row> {
    parse_row(&m.stackctl_output(&["service", "ls", "-o", "json"]).ok()?.stdout)
}

/// A thread that reads [`row`] every 250 ms: (when since `since`, the row).
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Duration, Row)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(c: &Engines, since: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        // stackctl against node 0, from the host (which reaches the nodes' addresses).
        let env = c.node(0).stackctl_env().expect("node 0's stackctl.env");
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let o = std::process::Command::new(stackd_tests::bin("stackctl"))
                        .args(["service", "ls", "-o", "json"])
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .stdin(std::process::Stdio::null())
                        .output();
                    let r = o.ok().and_then(|o| parse_row(&o.stdout));
                    if let Some(r) = r {
                        samples.lock().expect("samples").push((t0 - since, r));
                    }
                    std::thread::sleep(Duration::from_millis(250).saturating_sub(t0.elapsed()));
                }
            })
        };
        Sampler { stop, samples, thread: Some(thread) }
    }

    fn samples(&self) -> Vec<(Duration, Row)> {
        self.samples.lock().expect("samples").clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The samples as lines where the row changed, for messages.
fn timeline(samples: &[(Duration, Row)]) -> String {
    let mut text = String::new();
    let mut last: Option<&Row> = None;
    for (at, r) in samples {
        if last != Some(r) {
            text.push_str(&format!(
                "  {:>6.1} s: {}/{} running, revision {}, {}\n",
                at.as_secs_f64(),
                r.running,
                r.desired,
                r.revision,
                r.update_state
            ));
        }
        last = Some(r);
    }
    text
}

/// Exit code and output (stdout, stderr) of a `stackctl` command on node 0.
fn run(m: &Node, args: &[&str]) -> (Option<i32>, String, String) {
    let o = m.stackctl_output(args).expect("stackctl runs");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The nodes that run a task of `app_web` that should run.
fn nodes_running(m: &Node) -> BTreeSet<String> {
    let (_, out, _) = run(m, &["ps", "app_web", "-o", "json", "--no-trunc"]);
    let tasks: Vec<Value> =
        serde_json::from_str::<Value>(&out).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default();
    tasks.iter().filter(|t| wanted(t) && s(t, "current_state") == "running").map(|t| s(t, "node").to_string()).collect()
}

/// The autoscaler's record in `service inspect app_web -o json`: the
/// object that holds its `decisions`, wherever the output nests it; `None`
/// if there is none (and the whole output).
fn try_autoscale_status(m: &Node) -> Result<Value, Value> {
    fn find(v: &Value) -> Option<&Value> {
        match v {
            Value::Object(o) => {
                let status =
                    o.get("autoscale").filter(|a| a.get("decisions").is_some() || a.get("measured_at").is_some());
                status.or_else(|| o.values().find_map(find))
            }
            Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    let v = m.stackctl_json(&["service", "inspect", "app_web"]);
    find(&v).cloned().ok_or(v)
}

/// [`try_autoscale_status`]; panics if there is none.
fn autoscale_status(m: &Node) -> Value {
    try_autoscale_status(m).unwrap_or_else(|v| panic!("no autoscale status in `service inspect app_web`:\n{v:#}"))
}

/// (at, from, to) of the decisions that changed the count.
fn changes(status: &Value) -> Vec<(u64, u64, u64)> {
    status["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["at"].as_u64()?, d["from"].as_u64()?, d["to"].as_u64()?)))
        .filter(|(_, from, to)| from != to)
        .collect()
}

/// An event's message.
fn message(e: &Value) -> &str {
    e["message"].as_str().unwrap_or_default()
}

/// `A → B` in an event's message, as numbers.
fn arrow(message: &str) -> Option<(u64, u64)> {
    let (a, b) = message.split_once('→')?;
    let a = a.split(|c: char| !c.is_ascii_digit()).rfind(|w| !w.is_empty())?.parse().ok()?;
    let b = b.split(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty())?.parse().ok()?;
    Some((a, b))
}

#[test]
fn a_service_scales_with_its_load() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t_test = Instant::now();
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    let m = c.node(0);
    let v1 = m.write_stack("v1.yml", &stack("1"));
    m.stackctl(&["deploy", "-c", &v1, "app", "--wait", "--timeout", "90s"]);
    mesh_serves(&c, PORT, "burn 1");
    let idle = row(m).expect("app_web in service ls");
    assert_eq!((idle.desired, idle.running), (1, 1), "{idle:?}");
    // Idle, it stays at its minimum: the autoscaler measures it (its
    // first readings) and changes nothing.
    std::thread::sleep(PERIOD * 2);
    assert_eq!(row(m).map(|r| r.desired), Some(1), "scaled while idle:\n{:#}", autoscale_status(m));
    eprintln!("cluster up and idle after {:?}", t_test.elapsed());

    // The load.
    let load = Load::start(&c);
    let sampler = Sampler::start(&c, load.started);
    let context = |load: &Load, sampler: &Sampler| {
        format!(
            "service ls over time:\n{}requests:\n{}\nautoscale: {:#}",
            timeline(&sampler.samples()),
            summary(&load.requests()),
            try_autoscale_status(m).unwrap_or(Value::Null)
        )
    };

    // More replicas, desired and running, on more than one node, within 30 s.
    let deadline = Duration::from_secs(30);
    let scaled = loop {
        if let Some(r) = row(m)
            && r.desired >= 2
            && r.running >= 2
        {
            let nodes = nodes_running(m);
            if nodes.len() >= 2 {
                break (load.started.elapsed(), r, nodes);
            }
        }
        assert!(load.started.elapsed() < deadline, "not scaled out within {deadline:?}:\n{}", context(&load, &sampler));
        std::thread::sleep(Duration::from_millis(250));
    };
    let first_up = changes(&autoscale_status(m))
        .into_iter()
        .find(|(at, from, to)| to > from && *at as u128 >= load.started_ms)
        .map(|(at, _, _)| Duration::from_millis((at as u128 - load.started_ms) as u64));
    let running_at = sampler
        .samples()
        .iter()
        .find(|(_, r)| r.desired >= 2 && r.running >= 2)
        .map_or(scaled.0, |(at, _)| *at.min(&scaled.0));
    eprintln!(
        "scaled out: {}/{} running on {:?} after {:?}; first scale-up decision {first_up:?}, \
         extra replicas running {running_at:?} after the load's start",
        scaled.1.running, scaled.1.desired, scaled.2, scaled.0
    );
    assert!(first_up.is_some(), "no scale-up decision recorded:\n{}", context(&load, &sampler));

    // `service scale` is refused without --disable-autoscale, and changes nothing.
    let before = row(m).expect("row");
    let (code, out, err) = run(m, &["service", "scale", "app_web=1"]);
    assert_eq!(code, Some(1), "service scale of an autoscaled service: {out}{err}");
    assert!(
        format!("{out}{err}").contains("--disable-autoscale"),
        "the refusal does not say how to take over: {out}{err}"
    );
    let after = row(m).expect("row");
    assert!(after.desired >= 2 && after.revision == before.revision, "{before:?} → {after:?}");

    // A rollout under the load, right away: the load still asks for more
    // replicas while it runs. It completes (start-first), and the count
    // stays put until it is over.
    let v2 = m.write_stack("v2.yml", &stack("2"));
    let rollout_from = load.started.elapsed();
    let rollout_from_ms = unix_ms();
    let (code, out, err) = run(m, &["deploy", "-c", &v2, "app", "--wait", "--timeout", "90s", "-o", "json"]);
    let rollout_to = load.started.elapsed();
    let rollout_to_ms = unix_ms();
    std::thread::sleep(Duration::from_millis(500));
    let last = out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).next_back().unwrap_or_default();
    assert!(
        code == Some(0) && last["outcome"] == "converged",
        "the rollout under load: exit {code:?}\n{out}{err}\n{}",
        context(&load, &sampler)
    );
    let done = row(m).expect("row");
    assert_eq!(done.update_state, "completed", "{done:?}");
    assert_eq!(done.revision, before.revision + 1, "{done:?}");
    let samples = sampler.samples();
    let during: Vec<&(Duration, Row)> = samples
        .iter()
        .filter(|(at, r)| *at >= rollout_from && *at <= rollout_to && r.update_state == "updating")
        .collect();
    assert!(!during.is_empty(), "no sample caught the rollout under way:\n{}", timeline(&samples));
    let counts: BTreeSet<u64> = during.iter().map(|(_, r)| r.desired).collect();
    assert_eq!(counts.len(), 1, "the count changed during the rollout:\n{}", timeline(&samples));
    let rolled = *counts.first().expect("a count");
    assert!(rolled >= 2, "the rollout ran at {rolled} replicas:\n{}", timeline(&samples));
    assert!(done.desired >= 2, "the deploy reset the autoscaled count: {done:?}\n{}", timeline(&samples));
    eprintln!(
        "rollout under load at {rolled} replicas: {:.1} s (from {:.1} s after the load's start)",
        (rollout_to - rollout_from).as_secs_f64(),
        rollout_from.as_secs_f64()
    );

    // The same file again: nothing to update, the autoscaled count kept.
    let (code, out, err) = run(m, &["deploy", "-c", &v2, "app", "-o", "json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let first: Value = out.lines().next().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    assert_eq!(first["type"], "deploy", "{out}");
    assert_eq!(first["updated"], serde_json::json!([]), "a redeploy of the same file updated a service: {out}");
    assert_eq!(first["created"], serde_json::json!([]), "{out}");
    let again = row(m).expect("row");
    assert_eq!(again.revision, done.revision, "{again:?}");
    assert!(again.desired >= 2, "the redeploy reset the autoscaled count: {again:?}\n{}", timeline(&samples));
    std::thread::sleep(PERIOD);
    let kept = row(m).expect("row");
    assert!(kept.desired >= 2, "back to {} after the redeploy:\n{}", kept.desired, timeline(&sampler.samples()));

    // The load stops: no request failed.
    let load_stop = load.started.elapsed();
    let stopped_ms = unix_ms();
    let (started, started_ms) = (load.started, load.started_ms);
    let log = load.finish();
    eprintln!("the load ({:.1} s):\n{}", load_stop.as_secs_f64(), summary(&log));
    assert!(log.len() > 100, "too few requests: {}", summary(&log));
    assert!(
        log.iter().all(|r| r.result.is_ok()),
        "requests failed:\n{}\n{}",
        summary(&log),
        timeline(&sampler.samples())
    );
    let answered: BTreeSet<&str> =
        log.iter().filter_map(|r| r.result.as_deref().ok()?.split_whitespace().nth(2)).collect();
    assert!(answered.len() >= 3, "only {answered:?} answered (1 replica, then at least 2 of each revision)");

    // Back at 1 after the scale-down window, not before it.
    let peak = sampler.samples().iter().map(|(_, r)| r.desired).max().unwrap_or(0);
    let allowed = DOWN_WINDOW + PERIOD * 3 + Duration::from_secs(20);
    let back = wait_until(allowed, "app_web back at 1 replica", || {
        row(m).filter(|r| r.desired == 1 && r.running == 1).map(|_| started.elapsed() - load_stop)
    });
    let samples = sampler.samples();
    drop(sampler);
    // The count when the load stopped: it may have grown after the redeploy.
    let at_stop = samples.iter().filter(|(at, _)| *at <= load_stop).map(|(_, r)| r.desired).next_back();
    let at_stop = at_stop.unwrap_or(kept.desired).max(kept.desired);
    let first_down = samples
        .iter()
        .filter(|(at, _)| *at > load_stop)
        .find(|(_, r)| r.desired < at_stop)
        .map(|(at, _)| *at - load_stop)
        // The sampler may have stopped before it saw a step the wait saw.
        .or(Some(back));
    eprintln!(
        "after the load: first step down {first_down:?}, back at 1 after {back:?} (peak {peak} replicas)\n{}",
        timeline(&samples)
    );
    // The window holds the highest recommendation of its last 30 s; the
    // last one under load may be a period before the stop.
    let earliest = DOWN_WINDOW - PERIOD - Duration::from_secs(1);
    assert!(
        first_down.is_some_and(|d| d >= earliest),
        "scaled down {first_down:?} after the load stopped, before the {DOWN_WINDOW:?} window:\n{}",
        timeline(&samples)
    );

    // The decisions: in `service inspect` (the last ones it keeps) and as events.
    let status = autoscale_status(m);
    let decided = changes(&status);
    assert!(
        decided.iter().any(|(at, from, to)| to < from && *at as u128 >= stopped_ms),
        "no scale-down after the load in the decisions:\n{status:#}"
    );
    let (code, out, err) = run(m, &["events", "-o", "json", "--since", "10m"]);
    assert_eq!(code, Some(0), "{err}");
    let events: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let autoscaled: Vec<(u64, u64, u64)> = events
        .iter()
        .filter(|e| e["kind"] == "service" && e["name"] == "app_web")
        .filter(|e| e["message"].as_str().is_some_and(|t| t.starts_with("autoscale")))
        .filter_map(|e| {
            let (from, to) = arrow(e["message"].as_str()?)?;
            Some((e["at"].as_u64()?, from, to))
        })
        .filter(|(_, from, to)| from != to)
        .collect();
    assert!(
        autoscaled.iter().any(|(at, from, to)| to > from && (started_ms..stopped_ms).contains(&(*at as u128)))
            && autoscaled.iter().any(|(at, from, to)| to < from && *at as u128 >= stopped_ms),
        "no autoscale events up under the load and down after it:\n{out}"
    );
    // The autoscaler looked during the rollout (it lasted more than a
    // period) and held: a decision that says so.
    let held: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "app_web" && e["message"].as_str().is_some_and(|t| t.starts_with("autoscale")))
        .filter(|e| e["at"].as_u64().is_some_and(|at| (rollout_from_ms..=rollout_to_ms).contains(&(at as u128))))
        .collect();
    if rollout_to - rollout_from > PERIOD + Duration::from_secs(1) {
        assert!(
            held.iter().map(|e| message(e)).any(|t| t.contains("rollout") && arrow(t).is_none()),
            "no autoscale decision held by the rollout ({:.1} s):\n{out}",
            (rollout_to - rollout_from).as_secs_f64()
        );
    }
    // Every change of the count the decisions keep is an event too.
    let seen: BTreeSet<(u64, u64, u64)> = autoscaled.iter().copied().collect();
    for (at, from, to) in &decided {
        assert!(seen.contains(&(*at, *from, *to)), "decision {from} → {to} has no event:\n{out}\n{status:#}");
    }
    eprintln!(
        "autoscale events: {:?}\nthe test took {:?}",
        autoscaled
            .iter()
            .map(|(at, from, to)| format!("{from}→{to} at +{:.1} s", (*at as f64 - started_ms as f64) / 1000.0))
            .collect::<Vec<_>>(),
        t_test.elapsed()
    );
}
