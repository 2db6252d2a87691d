//! Draining a node of three real hosts, each with its own Docker engine
//! ([`stackd_tests::engines`]), while a client uses the service.
//!
//! A web service of 6 health-checked replicas (start-first) published on
//! 18095 through the routing mesh runs 2 per node. A client polls the
//! published port through n1's and n3's addresses every 50 ms, and another
//! through n2's (the mesh of a drained node still serves); then `stackctl
//! node update n2 --availability drain`:
//!
//! - n2's tasks move to n1 and n3, replacement first: each stops only once
//!   a task of its slot runs and is healthy elsewhere, so the service never
//!   has fewer than 6 tasks up (sampled every 200 ms), and each old
//!   container ends after its replacement started;
//! - not one request through n1 or n3 fails;
//! - `node ps n2` lists nothing that should run; back `active`, nothing
//!   moves by itself (3/0/3) until `service rebalance --wait` restores
//!   2/2/2, again with not one failed request (through every node); a scale
//!   to 9 puts new tasks on n2 too.
//!
//! A request that takes more than 500 ms makes the client look at the
//! nodes' kernels while it hangs (its conntrack entries, the mesh's routes
//! and rules); a failure prints them, with the nodes' logs around it.
//!
//! Needs root and Docker; skipped otherwise (fails with `CI=true`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::engines::Engines;
use stackd_tests::{Node, Opts, netns, require_docker, wait_until};

/// The published port.
const PORT: u16 = 18095;

const STACK: &str = "\
services:
  web:
    image: stackd-test/web:1
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"18095:8080\"]
    healthcheck:
      test: [\"CMD\", \"true\"]
      interval: 500ms
      retries: 3
      start_period: 5s
    deploy:
      replicas: 6
      update_config:
        order: start-first
";

/// Exit code and output (stdout and stderr) of a `stackctl` command.
fn run(node: &Node, args: &[&str]) -> (Option<i32>, String) {
    let o = node.stackctl_output(args).expect("stackctl runs");
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The rows of `stackctl ARGS -o json --no-trunc` (`ps app_web`, `node ps
/// n2`); the output if it is not JSON.
fn rows(node: &Node, args: &[&str]) -> Result<Vec<Value>, String> {
    let mut a = args.to_vec();
    a.extend(["-o", "json", "--no-trunc"]);
    let (code, text) = run(node, &a);
    if code != Some(0) {
        return Err(text);
    }
    serde_json::from_str::<Value>(&text).ok().and_then(|v| v.as_array().cloned()).ok_or(text)
}

fn ps(node: &Node) -> Result<Vec<Value>, String> {
    rows(node, &["ps", "app_web"])
}

fn s<'a>(t: &'a Value, key: &str) -> &'a str {
    t[key].as_str().unwrap_or_default()
}

/// Whether a task is up: running, and past its health check's start.
fn up(t: &Value) -> bool {
    s(t, "current_state") == "running" && !matches!(s(t, "health"), "starting" | "unhealthy")
}

fn wanted(t: &Value) -> bool {
    s(t, "desired_state") == "running"
}

/// How many of `tasks` should run and are up on each node.
fn up_per_node(tasks: &[Value]) -> BTreeMap<String, usize> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks.iter().filter(|t| wanted(t) && up(t)) {
        *per.entry(s(t, "node").to_string()).or_default() += 1;
    }
    per
}

/// One line per task, for messages.
fn table(tasks: &[Value]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "  {} {} on {}: desired {}, {} {} {} {} (updated {})",
                &s(t, "id")[..s(t, "id").len().min(12)],
                s(t, "name"),
                s(t, "node"),
                s(t, "desired_state"),
                s(t, "current_state"),
                s(t, "health"),
                s(t, "message"),
                s(t, "error"),
                t["updated_at"],
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Samples of the service's tasks: when (since the drain), and the tasks.
type Samples = Vec<(Duration, Vec<Value>)>;

fn timeline(samples: &Samples) -> String {
    samples.iter().map(|(at, tasks)| format!("at {at:?}:\n{}\n", table(tasks))).collect()
}

/// `GET /` over TCP: the body's first line, or what went wrong.
fn http_get(addr: SocketAddr) -> Result<String, String> {
    http_get_from(addr, &AtomicU16::new(0))
}

/// [`http_get`], telling `local_port` the connection's local port once
/// connected. Waits 2 s for the connection (a lost SYN is sent again after
/// 1 s) and 3 s for the answer.
fn http_get_from(addr: SocketAddr, local_port: &AtomicU16) -> Result<String, String> {
    let mut c =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    let port = c.local_addr().map(|a| a.port()).unwrap_or_default();
    local_port.store(port, Ordering::Relaxed);
    c.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut text = Vec::new();
    if let Err(e) = c.read_to_end(&mut text) {
        return Err(format!("read from local port {port}: {e} (after {:?})", String::from_utf8_lossy(&text)));
    }
    let text = String::from_utf8_lossy(&text);
    if !text.starts_with("HTTP/1.") || text.get(8..13) != Some(" 200 ") {
        return Err(format!("answer: {text:?}"));
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.lines().next().unwrap_or_default().to_string())
}

/// [`http_get`] with a watchdog: when the answer takes more than 500 ms, a
/// look at the nodes' kernels while it hangs ([`kernel_state`]).
fn http_get_watched(addr: SocketAddr, namespaces: &[String]) -> (Result<String, String>, Option<String>) {
    let port = AtomicU16::new(0);
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let local_port = &port;
    std::thread::scope(|sc| {
        let watchdog = sc.spawn(move || {
            let slow = wait.recv_timeout(Duration::from_millis(500)).is_err();
            slow.then(|| kernel_state(namespaces, local_port.load(Ordering::Relaxed), addr.port()))
        });
        let result = http_get_from(addr, &port);
        let _ = done.send(());
        (result, watchdog.join().ok().flatten())
    })
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

/// What the nodes' kernels say of a connection from local port `port` (0,
/// not connected yet: of every connection to `target` or to a task's port
/// 8080 not in TIME_WAIT): its conntrack entries, the mesh's routes, and
/// the mesh's rules.
fn kernel_state(namespaces: &[String], port: u16, target: u16) -> String {
    let mut text = String::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let sh = |script: &str| {
            let o = std::process::Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).output();
            o.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
                .unwrap_or_else(|e| e.to_string())
        };
        let conntrack = if port == 0 {
            format!("grep -E 'dport=({target}|8080) ' /proc/net/nf_conntrack | grep -v TIME_WAIT")
        } else {
            format!("grep -F 'port={port} ' /proc/net/nf_conntrack")
        };
        text.push_str(&format!(
            "--- node {i} at {} ms: conntrack\n{}--- routes (table 5354)\n{}--- rules\n{}",
            unix_ms(),
            sh(&conntrack),
            sh("ip route show table 5354"),
            sh(&format!("iptables-save | grep -E 'STACKD-(PRE|FWD).*(--dport {target}|--dport 8080 )'")),
        ));
    }
    text
}

/// One request of a [`Poller`]: when (since the poller started), to which
/// node, how long it took, and the body or the error.
#[derive(Clone, Debug)]
struct Request {
    at: Duration,
    /// Unix milliseconds at its start.
    wall: u128,
    /// The node's index (n1 is 0).
    node: usize,
    took: Duration,
    result: Result<String, String>,
    /// The nodes' kernels while it hung, if it took more than 500 ms.
    kernel: Option<String>,
}

/// A client thread that sends `GET /` to the given nodes' addresses in
/// turn, one request every 50 ms, until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    /// Polls `PORT` on the addresses of nodes `nodes` (indices).
    fn start(c: &Engines, nodes: &[usize], started: Instant) -> Poller {
        let addrs: Vec<(usize, SocketAddr)> =
            nodes.iter().map(|&i| (i, SocketAddr::from((c.net.addr(i), PORT)))).collect();
        let namespaces: Vec<String> = (0..3).map(|i| c.engine(i).ns.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (node, addr) = addrs[k % addrs.len()];
                    k += 1;
                    let t0 = Instant::now();
                    let wall = unix_ms();
                    let (result, kernel) = http_get_watched(addr, &namespaces);
                    let r = Request { at: t0 - started, wall, node, took: t0.elapsed(), result, kernel };
                    log.lock().expect("poller log").push(r);
                    std::thread::sleep(Duration::from_millis(50).saturating_sub(t0.elapsed()));
                }
            })
        };
        Poller { stop, log, thread: Some(thread) }
    }

    /// Stops the client; every request it made.
    fn finish(mut self) -> Vec<Request> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.log.lock().expect("poller log").clone()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the requests went, in a few lines: counts per node and answer, the
/// slowest, and every failure or slow request.
fn summary(log: &[Request]) -> String {
    let mut answers: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in log {
        let key = match &r.result {
            Ok(body) => body.clone(),
            Err(_) => "FAILED".to_string(),
        };
        *answers.entry((format!("n{}", r.node + 1), key)).or_default() += 1;
    }
    let slowest = log.iter().max_by_key(|r| r.took).map(|r| format!("{:?} at {:?}", r.took, r.at)).unwrap_or_default();
    let mut text = format!("{} requests: {answers:?}; slowest {slowest}\n", log.len());
    for r in log.iter().filter(|r| r.result.is_err() || r.took > Duration::from_millis(500)) {
        text.push_str(&format!(
            "  at {:?} ({} ms) to n{} (took {:?}): {:?}\n",
            r.at,
            r.wall,
            r.node + 1,
            r.took,
            r.result
        ));
        if let Some(k) = &r.kernel {
            text.push_str(&format!("    the nodes while it hung:\n{k}\n"));
        }
    }
    text
}

/// The lines of the nodes' logs (stackd's and dockerd's) within 1.5 s of
/// the failed requests of `log`.
fn logs_near_failures(c: &Engines, log: &[Request]) -> String {
    let times: Vec<i64> = log.iter().filter(|r| r.result.is_err()).map(|r| r.wall as i64).collect();
    if times.is_empty() {
        return String::new();
    }
    let near = |line: &str| {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        let stamp = stamp.trim_start_matches("time=\"").trim_end_matches('"');
        rfc3339_ms(stamp).is_ok_and(|t| times.iter().any(|f| (t - f).abs() <= 1500))
    };
    let mut text = String::new();
    for i in 0..3 {
        let stackd = c.node(i).log();
        let dockerd = std::fs::read_to_string(c.engine(i).dir.join("dockerd.log")).unwrap_or_default();
        text.push_str(&format!("--- n{} near the failures:\n", i + 1));
        for l in stackd.lines().chain(dockerd.lines()).filter(|l| near(l)) {
            text.push_str(l);
            text.push('\n');
        }
    }
    text
}

/// `2024-05-01T12:34:56.789012345Z` as Unix milliseconds.
fn rfc3339_ms(t: &str) -> Result<i64, String> {
    let bad = || format!("not a UTC time: {t:?}");
    let (date, time) = t.trim_end_matches('Z').split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    if d.len() != 3 || h.len() != 3 {
        return Err(bad());
    }
    // Days since the epoch (Howard Hinnant's days_from_civil).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().map_err(|_| bad())?;
    Ok(((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms)
}

/// A container's start and end (Unix milliseconds) on node `node`'s
/// engine (`n1` is index 0); the end is `None` while it runs.
fn container_times(c: &Engines, node: &str, id: &str) -> Result<(i64, Option<i64>), String> {
    let i: usize = node.trim_start_matches('n').parse::<usize>().map_err(|e| format!("node {node}: {e}"))? - 1;
    let o = c
        .docker(i)
        .args(["inspect", "-f", "{{.State.StartedAt}}|{{.State.FinishedAt}}|{{.State.Running}}", id])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let mut parts = text.split('|');
    let (Some(a), Some(b), Some(running)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("inspect {id} on {node}: {text} {}", String::from_utf8_lossy(&o.stderr)));
    };
    Ok((rfc3339_ms(a)?, if running == "true" { None } else { Some(rfc3339_ms(b)?) }))
}

/// Waits until every node's mesh port answers `web 1` 10 times in a row.
fn mesh_serves(c: &Engines) {
    for i in 0..3 {
        let addr = SocketAddr::from((c.net.addr(i), PORT));
        let start = Instant::now();
        let mut streak = 0;
        while streak < 10 {
            let last = http_get(addr);
            streak = if last.as_deref() == Ok("web 1") { streak + 1 } else { 0 };
            assert!(start.elapsed() < Duration::from_secs(30), "n{} ({addr}) does not serve: {last:?}", i + 1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether no container of the stack is left on any node's engine.
fn engines_empty(c: &Engines) -> bool {
    (0..3).all(|i| c.running(i, "io.stackd.stack=app").is_ok_and(|ids| ids.is_empty()))
}

#[test]
fn drain_moves_tasks_replacement_first_without_a_failed_request() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    eprintln!("cluster up in {:?}", t0.elapsed());
    let m = c.node(0);
    let file = m.write_stack("app.yml", STACK);
    m.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "90s"]);
    let spread = |tasks: &[Value]| {
        let per = up_per_node(tasks);
        ["n1", "n2", "n3"].iter().all(|n| per.get(*n) == Some(&2))
    };
    let before = wait_until(Duration::from_secs(30), "app_web's 6 tasks up, 2 per node", || {
        ps(m).ok().filter(|tasks| spread(tasks))
    });
    mesh_serves(&c);
    eprintln!("service up, 2/2/2, after {:?}", t0.elapsed());
    // n2's tasks: id → (slot, container).
    let on_n2: BTreeMap<String, (u64, String)> = before
        .iter()
        .filter(|t| wanted(t) && s(t, "node") == "n2")
        .map(|t| (s(t, "id").to_string(), (t["slot"].as_u64().unwrap_or_default(), s(t, "container_id").to_string())))
        .collect();
    assert_eq!(on_n2.len(), 2, "\n{}", table(&before));

    // Clients through n1 and n3, and through n2; then the drain.
    let since = Instant::now();
    let through = Poller::start(&c, &[0, 2], since);
    let via_n2 = Poller::start(&c, &[1], since);
    std::thread::sleep(Duration::from_millis(500));
    let said = m.stackctl(&["node", "update", "--availability", "drain", "n2"]);
    assert!(said.contains("availability drain"), "{said}");
    let drain_at = since.elapsed();
    // Sampled every 200 ms until n2 runs no task of the service and 6 are
    // up on n1 and n3.
    let mut samples: Samples = Vec::new();
    let drained = loop {
        if let Ok(tasks) = ps(m) {
            let n2_runs = tasks.iter().any(|t| s(t, "node") == "n2" && s(t, "current_state") == "running");
            let per = up_per_node(&tasks);
            let done = !n2_runs && per.get("n1").unwrap_or(&0) + per.get("n3").unwrap_or(&0) == 6 && per.len() == 2;
            samples.push((since.elapsed(), tasks));
            if done {
                break Some(since.elapsed());
            }
        }
        if since.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The old containers are gone from n2's engine; a second more of requests.
    let gone = (0..150).any(|_| {
        let empty = c.running(1, "io.stackd.service=app_web").is_ok_and(|ids| ids.is_empty());
        if !empty {
            std::thread::sleep(Duration::from_millis(200));
        }
        empty
    });
    std::thread::sleep(Duration::from_secs(1));
    let log = through.finish();
    let log_n2 = via_n2.finish();
    let context = || {
        format!(
            "drain at {drain_at:?}, done at {drained:?}\nthrough n1 and n3: {}\nthrough n2: {}\ntasks during the drain:\n{}",
            summary(&log),
            summary(&log_n2),
            timeline(&samples)
        )
    };
    let drained = drained.unwrap_or_else(|| panic!("n2 not drained after 60 s:\n{}\n{}", context(), c.cluster.logs()));
    assert!(gone, "app_web's containers still run on n2's engine:\n{}", context());
    eprintln!("n2 drained in {:?}", drained - drain_at);

    // Not one request through n1 or n3 failed.
    assert!(
        !log.is_empty() && log.iter().all(|r| r.result.as_deref() == Ok("web 1")),
        "requests through n1/n3 failed during the drain:\n{}\n{}",
        context(),
        logs_near_failures(&c, &log)
    );
    // Replacement first: never fewer than 6 tasks up, of those that should run.
    for (at, tasks) in &samples {
        let serving = tasks.iter().filter(|t| wanted(t) && up(t)).count();
        assert!(serving >= 6, "only {serving} tasks up at {at:?}:\n{}", context());
    }
    // Some sample caught n2's tasks still serving while their replacements started.
    assert!(
        samples.iter().any(|(_, tasks)| {
            let old = tasks.iter().any(|t| s(t, "node") == "n2" && wanted(t) && up(t));
            old && tasks.iter().any(|t| s(t, "node") != "n2" && wanted(t) && !up(t))
        }),
        "no sample caught the drain under way:\n{}",
        context()
    );
    // Each of n2's tasks was told to stop, and stopped, only when a task of
    // its slot was up on another node; and its container ended after the
    // replacement's started.
    let last = &samples.last().expect("samples").1;
    let mut margins = Vec::new();
    for (id, (slot, container)) in &on_n2 {
        let replacement = |tasks: &[Value]| {
            tasks.iter().find(|t| t["slot"] == *slot && s(t, "node") != "n2" && wanted(t) && up(t)).cloned()
        };
        let first_change = samples.iter().find(|(_, tasks)| {
            tasks.iter().find(|t| s(t, "id") == id).is_none_or(|t| !wanted(t) || s(t, "current_state") != "running")
        });
        let (at, tasks) = first_change.unwrap_or_else(|| panic!("task {id} never stopped:\n{}", context()));
        assert!(
            replacement(tasks).is_some(),
            "task {id} (slot {slot}) on n2 stopping at {at:?} with no replacement up:\n{}",
            context()
        );
        let new = replacement(last).unwrap_or_else(|| panic!("slot {slot} has no task up at the end:\n{}", context()));
        let (_, old_end) = container_times(&c, "n2", container).unwrap_or_else(|e| panic!("{e}\n{}", context()));
        let (new_start, _) = container_times(&c, s(&new, "node"), s(&new, "container_id"))
            .unwrap_or_else(|e| panic!("{e}\n{}", context()));
        let old_end = old_end.unwrap_or_else(|| panic!("container {container} still runs on n2\n{}", context()));
        assert!(
            old_end > new_start,
            "slot {slot}: n2's container ended at {old_end}, before its replacement on {} started at {new_start}\n{}",
            s(&new, "node"),
            context()
        );
        margins.push((*slot, s(&new, "node").to_string(), old_end - new_start));
    }
    let n2_failed = log_n2.iter().filter(|r| r.result.is_err()).count();
    eprintln!(
        "through n1 and n3: {}through n2 (drained, reported only): {n2_failed} failed of {}; {}\
         slot, new node, and how long (ms) n2's task ran after its replacement started: {margins:?}",
        summary(&log),
        log_n2.len(),
        summary(&log_n2)
    );
    let listed = rows(m, &["node", "ps", "n2"]).expect("node ps n2");
    assert!(listed.iter().all(|t| !wanted(t)), "node ps n2 lists tasks to run:\n{}", table(&listed));

    // Active again: nothing moves by itself (3/0/3), until a rebalance,
    // which restores 2/2/2 replacement first, with not one failed request.
    m.stackctl(&["node", "update", "--availability", "active", "n2"]);
    let per = up_per_node(&ps(m).unwrap_or_default());
    assert_eq!(per.get("n2"), None, "tasks moved back to n2 by themselves: {per:?}");
    let since = Instant::now();
    let through = Poller::start(&c, &[0, 1, 2], since);
    let (code, out) = run(m, &["service", "rebalance", "app_web", "--wait", "--timeout", "90s"]);
    let log = through.finish();
    let tasks = ps(m).unwrap_or_default();
    assert_eq!(code, Some(0), "{out}\n{}", table(&tasks));
    let per = up_per_node(&tasks);
    assert_eq!(per.values().copied().collect::<Vec<_>>(), [2, 2, 2], "not 2/2/2 after the rebalance: {per:?}\n{out}");
    let failed: Vec<&Request> = log.iter().filter(|r| r.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rebalance: {}\n{}",
        failed.len(),
        log.len(),
        summary(&log),
        logs_near_failures(&c, &log)
    );
    eprintln!("rebalanced to {per:?}: {}", summary(&log));

    // And new tasks land on n2.
    let (code, out) = run(m, &["service", "scale", "app_web=9", "--wait"]);
    let tasks = ps(m).unwrap_or_default();
    assert_eq!(code, Some(0), "{out}\n{}", table(&tasks));
    let per = wait_until(Duration::from_secs(30), "9 tasks up", || {
        let tasks = ps(m).ok()?;
        let per = up_per_node(&tasks);
        (per.values().sum::<usize>() == 9).then_some(per)
    });
    assert!(per.get("n2").is_some_and(|n| *n >= 1), "no task on n2 back active: {per:?}\n{}", table(&tasks));
    eprintln!("scaled to 9 with n2 active: {per:?}");

    m.stackctl(&["stack", "rm", "app"]);
    wait_until(Duration::from_secs(30), "no container left on any engine", || engines_empty(&c).then_some(()));
    eprintln!("test took {:?}", t0.elapsed());
}
