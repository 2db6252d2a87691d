//! The autoscaling benchmark of issue 19: how fast the extra replicas of a
//! CPU-bound service serve after a step of its load, and what the clients
//! suffer meanwhile.
//!
//! ```text
//!  single node (manager + agent) on the main engine; stackd-test/burn:1,
//!  GET /cgi-bin/burn?n=N burns a shell loop of N iterations; cpus: 0.2
//!
//!  calibration: the same service without a policy, 1 replica, an open
//!    loop of 2.5 requests/s for 10 s (well below its limit); the CPU time
//!    its container used meanwhile (the engine's stats, as the agent reads
//!    them) over the requests answered: c per request. One replica is at
//!    its target (50 % of 0.2 core) at 0.1 core / c requests/s: "1×"
//!  each round: deploy with x-stackd-autoscale {min 1, max 8, cpu 50 %,
//!    period P (15 s by default, as the HPA's sync period)}; open loop at
//!    1× for `warm` s (the agents' readings, a first decision: stays at 1)
//!    t0: the open loop steps to 5× for `step` s; every 250 ms `service ls`
//!    afterwards: the decisions (`service inspect`), which replica answered
//!    each request (the CGI answers its hostname), the requests scheduled
//!    after t0 that failed or took more than 1 s; stack rm
//! ```
//!
//! **What is timed**, from t0: the first scale-up decision (its time in
//! the service's decisions); the first answer from a replica that did not
//! serve before t0 (the first extra replica serving: running, healthy and
//! in the mesh); the first answer from the last of the replicas the service
//! ends with (all of them serving). A request's latency counts from its
//! scheduled time (an open loop: a slow answer does not hold back the next
//! request), and a request fails when it has no answer within 10 s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{AutoscaleArgs, median, mesh, raw, stackd, write_section};

/// The stack's name; its service is `asbench_web`.
const STACK: &str = "asbench";
const SERVICE: &str = "asbench_web";
/// The CPU limit of a replica, and the target in percent of it.
const CPUS: &str = "0.2";
const TARGET: u32 = 50;
/// A request without an answer after this long failed.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A request that took longer than this waited too long.
const SLOW: Duration = Duration::from_secs(1);
/// The calibration's request rate (well below one replica's limit).
const CALIBRATION_RATE: f64 = 2.5;

/// The stack file: `policy` is the `x-stackd-autoscale` block (none for
/// the calibration).
fn stack_yaml(port: u16, policy: Option<&str>) -> String {
    let policy = policy.map(|p| format!("    x-stackd-autoscale:\n{p}")).unwrap_or_default();
    format!(
        "services:
  web:
    image: stackd-test/burn:1
    ports: [\"{port}:8080\"]
    stop_grace_period: 3s
    healthcheck:
      test: [\"CMD-SHELL\", \"echo | nc -w 2 127.0.0.1 8080\"]
      interval: 1s
      retries: 10
    deploy:
      replicas: 1
      resources: {{limits: {{cpus: \"{CPUS}\"}}}}
{policy}"
    )
}

/// One request: when it was due (since the round's start), how long it
/// took from then, and the replica that answered or what went wrong.
#[derive(Clone, Debug)]
struct Req {
    at: Duration,
    took: Duration,
    result: Result<String, String>,
}

/// `GET /cgi-bin/burn?n=N` on a new connection: the hostname of the
/// replica that answered.
async fn burn(addr: SocketAddr, n: u32) -> Result<String, String> {
    let io = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {}", e.kind()))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let req = format!("GET /cgi-bin/burn?n={n} HTTP/1.0\r\nHost: bench\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {}", e.kind()))?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await.map_err(|e| format!("read: {}", e.kind()))?;
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with("HTTP/1.0 200") && !text.starts_with("HTTP/1.1 200") {
            return Err(if text.is_empty() { "empty answer".into() } else { "not 200".into() });
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        body.split_whitespace().nth(2).map(str::to_string).ok_or_else(|| "no hostname in the answer".to_string())
    };
    match tokio::time::timeout(TIMEOUT, io).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

/// An open loop whose rate can change: a task that schedules one request
/// every 1/rate s, each in its own task, until stopped.
struct OpenLoop {
    /// Requests per second × 1000.
    rate_milli: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<Vec<Req>>>,
    in_flight: Arc<AtomicU64>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl OpenLoop {
    fn start(addr: SocketAddr, n: u32, rate: f64, since: Instant) -> OpenLoop {
        let rate_milli = Arc::new(AtomicU64::new((rate * 1000.0) as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicU64::new(0));
        let scheduler = {
            let (rate_milli, stop, log, in_flight) = (rate_milli.clone(), stop.clone(), log.clone(), in_flight.clone());
            tokio::spawn(async move {
                let mut next = tokio::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(next).await;
                    let due = next.into_std();
                    let (log, in_flight) = (log.clone(), in_flight.clone());
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let result = burn(addr, n).await;
                        let r = Req { at: due.saturating_duration_since(since), took: due.elapsed(), result };
                        log.lock().expect("log").push(r);
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                    let rate = rate_milli.load(Ordering::Relaxed).max(1) as f64 / 1000.0;
                    next += Duration::from_secs_f64(1.0 / rate);
                }
            })
        };
        OpenLoop { rate_milli, stop, log, in_flight, scheduler }
    }

    fn set_rate(&self, rate: f64) {
        self.rate_milli.store((rate * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Stops scheduling, waits for the requests under way; every request.
    async fn finish(self) -> Vec<Req> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.scheduler.await;
        let end = Instant::now() + TIMEOUT + Duration::from_secs(1);
        while self.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut v = self.log.lock().expect("log").clone();
        v.sort_by_key(|r| r.at);
        v
    }
}

/// The id of the one container of the service.
fn the_container() -> Result<String> {
    let o = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=io.stackd.service={SERVICE}")])
        .output()?;
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect();
    let [id] = ids.as_slice() else { bail!("{SERVICE} runs {} containers, not one", ids.len()) };
    Ok(id.clone())
}

/// The CPU time (ns) the container `id` has used, from the engine's stats.
async fn cpu_ns(api: &bollard::Docker, id: &str) -> Result<u64> {
    use futures_util::StreamExt;
    let opts = bollard::query_parameters::StatsOptionsBuilder::default().stream(false).one_shot(true).build();
    let stats = api.stats(id, Some(opts)).next().await.context("no stats from the engine")??;
    stats.cpu_stats.and_then(|c| c.cpu_usage?.total_usage).context("no CPU usage in the engine's stats")
}

/// The CPU time one request costs the replica (s), at `rate` requests/s
/// for `secs` against the one replica of the service, and the requests
/// answered.
async fn cost(api: &bollard::Docker, addr: SocketAddr, n: u32, rate: f64, secs: u64) -> Result<(f64, usize)> {
    let id = the_container()?;
    let before = cpu_ns(api, &id).await?;
    let load = OpenLoop::start(addr, n, rate, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let log = load.finish().await;
    let after = cpu_ns(api, &id).await?;
    let ok = log.iter().filter(|r| r.result.is_ok()).count();
    anyhow::ensure!(ok > 0, "no request answered during the calibration");
    Ok((after.saturating_sub(before) as f64 / 1e9 / ok as f64, ok))
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The node's stackctl, in a blocking task.
async fn stackctl(node: &stackd::Node, args: &[&str]) -> Result<std::process::Output> {
    let mut cmd = Command::new(crate::cluster::bin("stackctl"));
    cmd.envs(node.stackctl_env()?).args(args);
    tokio::task::spawn_blocking(move || cmd.output()).await?.context("running stackctl")
}

/// (desired, running) of the service (`service ls -o json`).
async fn counts(node: &stackd::Node) -> Option<(u64, u64)> {
    let o = stackctl(node, &["service", "ls", "-o", "json"]).await.ok()?;
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    let r = v.as_array()?.iter().find(|r| r["name"] == SERVICE)?;
    Some((r["desired"].as_u64()?, r["running"].as_u64()?))
}

/// The autoscaler's status in `service inspect -o json` (its measurement
/// and decisions), wherever the output nests it.
async fn status(node: &stackd::Node) -> Option<Value> {
    fn find(v: &Value) -> Option<&Value> {
        match v {
            Value::Object(o) => o
                .get("autoscale")
                .filter(|a| a.get("decisions").is_some() || a.get("measured_at").is_some())
                .or_else(|| o.values().find_map(find)),
            Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    let o = stackctl(node, &["service", "inspect", SERVICE, "-o", "json"]).await.ok()?;
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    find(&v).cloned()
}

/// Removes the stack, and waits until its containers and its networks are
/// gone: a deploy of the same name while its old network is still there
/// gets that network, whose subnet is not the new one (the agent's
/// `ensure_network` takes any network stackd made under the name), and
/// its tasks fail with "Invalid address … does not belong to any of this
/// network's subnets".
async fn remove(node: &stackd::Node) -> Result<()> {
    node.remove_stack(STACK).await?;
    let start = Instant::now();
    loop {
        let o = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &format!("label=io.stackd.stack={STACK}")])
            .output()?;
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the networks of the {STACK} stack are still there after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deploys `file` and waits until the mesh answers 10 times in a row.
async fn deploy(node: &stackd::Node, file: &str, addr: SocketAddr) -> Result<()> {
    // Another cluster on this engine may hold the subnet this one gives its
    // network next (see the rollout benchmark): remove and deploy again.
    for attempt in 1..=5 {
        let o = stackctl(node, &["deploy", "-c", file, STACK, "--wait", "--timeout", "2m"]).await?;
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if attempt == 5 || !err.contains("Pool overlaps") {
            bail!("deploy failed: {err}");
        }
        remove(node).await?;
    }
    crate::load::wait_serving(addr, 10).await
}

/// What one round measured.
#[derive(Clone, Debug, Default)]
struct Round {
    /// Replicas desired at the step (1 unless the 1× load scaled it).
    before: u64,
    /// The replica's CPU over the last 10 s before the step (% of its limit).
    measured_at_step: Option<f64>,
    /// Replicas desired and running at the end of the step.
    after: (u64, u64),
    /// The decisions after the step: (seconds after it, from, to).
    decisions: Vec<(f64, u64, u64)>,
    /// Seconds from the step to the first scale-up decision.
    decided: Option<f64>,
    /// … to the first answer of an extra replica.
    first_extra: Option<f64>,
    /// … to the first answer of the last of the replicas it ends with.
    all: Option<f64>,
    /// Requests due from the step until all served, and of them failed, slow (> 1 s).
    requests: usize,
    failed: usize,
    slow: usize,
    /// The same over the whole step.
    step_requests: usize,
    step_failed: usize,
    step_slow: usize,
    /// Latency p50 and max (ms) over the step until all served.
    p50_ms: f64,
    max_ms: f64,
    /// Latency p50 at 1× (ms).
    base_p50_ms: f64,
}

fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1].as_secs_f64() * 1000.0
}

/// One round; see the module docs. `warm`: seconds at 1× before the step.
async fn round(
    api: &bollard::Docker,
    node: &stackd::Node,
    file: &str,
    addr: SocketAddr,
    args: &AutoscaleArgs,
    unit: f64,
    warm: Duration,
) -> Result<Round> {
    deploy(node, file, addr).await?;
    let id = the_container()?;
    let start = Instant::now();
    let load = OpenLoop::start(addr, args.burn, unit, start);
    // The replica's own CPU over the last 10 s at 1×, in % of its limit.
    let probe = Duration::from_secs(10).min(warm / 2);
    tokio::time::sleep(warm - probe).await;
    let c1 = cpu_ns(api, &id).await;
    tokio::time::sleep(probe).await;
    let c2 = cpu_ns(api, &id).await;
    let mut r = Round { before: counts(node).await.map_or(0, |c| c.0), ..Round::default() };
    let cores: f64 = CPUS.parse()?;
    r.measured_at_step = match (c1, c2) {
        (Ok(a), Ok(b)) => Some(b.saturating_sub(a) as f64 / 1e9 / probe.as_secs_f64() / cores * 100.0),
        _ => None,
    };
    let t0 = start.elapsed();
    let t0_ms = wall_ms();
    load.set_rate(unit * args.step);
    eprintln!(
        "  step to {:.1} requests/s at 1 replica measured at {}",
        unit * args.step,
        r.measured_at_step.map_or("(nothing)".to_string(), |m| format!("{m:.0}% CPU"))
    );
    let mut last = (0, 0);
    while start.elapsed() < t0 + Duration::from_secs(args.step_secs) {
        if let Some(c) = counts(node).await
            && c != last
        {
            eprintln!("  {:>5.1} s: {}/{} running", (start.elapsed() - t0).as_secs_f64(), c.1, c.0);
            last = c;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    r.after = counts(node).await.unwrap_or_default();
    let st = status(node).await.unwrap_or_default();
    let log = load.finish().await;
    remove(node).await?;

    r.decisions = st["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["at"].as_u64()?, d["from"].as_u64()?, d["to"].as_u64()?)))
        .filter(|(at, from, to)| *at >= t0_ms && from != to)
        .map(|(at, from, to)| ((at - t0_ms) as f64 / 1000.0, from, to))
        .collect();
    r.decided = r.decisions.iter().find(|(_, from, to)| to > from).map(|d| d.0);
    let before: Vec<&Req> = log.iter().filter(|q| q.at < t0).collect();
    let after: Vec<&Req> =
        log.iter().filter(|q| q.at >= t0 && q.at < t0 + Duration::from_secs(args.step_secs)).collect();
    let old: BTreeSet<&str> = before.iter().filter_map(|q| q.result.as_deref().ok()).collect();
    // Each replica's first answer to a request due after the step.
    let mut first: BTreeMap<&str, Duration> = BTreeMap::new();
    for q in &after {
        if let Ok(h) = q.result.as_deref() {
            let done = q.at + q.took - t0;
            first.entry(h).and_modify(|t| *t = (*t).min(done)).or_insert(done);
        }
    }
    r.first_extra = first.iter().filter(|(h, _)| !old.contains(*h)).map(|(_, t)| t.as_secs_f64()).reduce(f64::min);
    // All: the last of the replicas that answered during the last 5 s of the step.
    let tail = t0 + Duration::from_secs(args.step_secs.saturating_sub(5));
    let serving: BTreeSet<&str> =
        after.iter().filter(|q| q.at >= tail).filter_map(|q| q.result.as_deref().ok()).collect();
    if serving.len() as u64 >= r.after.0 && r.after.0 > r.before {
        r.all = serving.iter().filter_map(|h| first.get(h)).map(Duration::as_secs_f64).reduce(f64::max);
    }
    let until = r.all.map_or(Duration::from_secs(args.step_secs), Duration::from_secs_f64) + t0;
    let window: Vec<&&Req> = after.iter().filter(|q| q.at < until).collect();
    r.requests = window.len();
    r.failed = window.iter().filter(|q| q.result.is_err()).count();
    r.slow = window.iter().filter(|q| q.result.is_ok() && q.took > SLOW).count();
    let took: Vec<Duration> = window.iter().filter(|q| q.result.is_ok()).map(|q| q.took).collect();
    r.p50_ms = quantile_ms(&took, 0.5);
    r.max_ms = took.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    r.step_requests = after.len();
    r.step_failed = after.iter().filter(|q| q.result.is_err()).count();
    r.step_slow = after.iter().filter(|q| q.result.is_ok() && q.took > SLOW).count();
    let base: Vec<Duration> = before.iter().filter(|q| q.at >= warm / 2 && q.result.is_ok()).map(|q| q.took).collect();
    r.base_p50_ms = quantile_ms(&base, 0.5);
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for q in &after {
        if let Err(e) = &q.result {
            *errors.entry(e.as_str()).or_default() += 1;
        }
    }
    if !errors.is_empty() {
        eprintln!("  failed requests: {errors:?}");
    }
    Ok(r)
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.1}"))
}

fn med_opt(v: &[Option<f64>]) -> String {
    let mut some: Vec<f64> = v.iter().flatten().copied().collect();
    if some.len() < v.len() {
        return format!(
            "{} (in {} of {} rounds)",
            opt_s(Some(median(&mut some)).filter(|m| m.is_finite())),
            some.len(),
            v.len()
        );
    }
    format!("{:.1}", median(&mut some))
}

/// The benchmark; see the module docs.
pub async fn bench(args: AutoscaleArgs) -> Result<()> {
    let built = Command::new("bash").arg("tests/images/build.sh").status()?;
    anyhow::ensure!(built.success(), "tests/images/build.sh failed");
    let t_all = Instant::now();
    let api = raw::connect().await?;
    let engine = raw::engine_version(&api).await?;
    let host = mesh::host_addr().unwrap_or(Ipv4Addr::LOCALHOST);
    let port = std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port();
    let addr = SocketAddr::from((host, port));
    eprintln!("starting a single-node stackd cluster on the main engine");
    let node = stackd::Node::start().await?;

    // Calibration: one replica without a policy, saturated.
    let plain = node.dir().join("plain.yml");
    std::fs::write(&plain, stack_yaml(port, None))?;
    deploy(&node, &plain.display().to_string(), addr).await?;
    let (per_request, answered) = cost(&api, addr, args.burn, CALIBRATION_RATE, args.calibrate).await?;
    remove(&node).await?;
    let cores: f64 = CPUS.parse()?;
    let unit = cores * f64::from(TARGET) / 100.0 / per_request;
    eprintln!(
        "a request costs {:.1} ms of CPU ({answered} answered): one replica is at its target at 1× = {unit:.2} requests/s",
        per_request * 1000.0
    );

    let period = args.period.map(|p| format!("      period: {p}s\n")).unwrap_or_default();
    let policy = format!("      min: 1\n      max: {}\n      target: {{cpu: {TARGET}%}}\n{period}", args.max);
    let file = node.dir().join("autoscaled.yml");
    std::fs::write(&file, stack_yaml(port, Some(&policy)))?;
    let file = file.display().to_string();
    let mut rounds = Vec::new();
    let period_s = args.period.unwrap_or(15);
    // The step falls at another moment of the autoscaler's period in each
    // round (its decisions are `period` apart from the service's creation):
    // warm + k × period / rounds.
    let warms: Vec<Duration> = (0..args.rounds.max(1))
        .map(|k| Duration::from_secs(args.warm) + Duration::from_secs(period_s) * k as u32 / args.rounds.max(1) as u32)
        .collect();
    for (k, warm) in warms.iter().enumerate() {
        eprintln!("round {}/{}: {:.1} s at 1×", k + 1, args.rounds, warm.as_secs_f64());
        let r = round(&api, &node, &file, addr, &args, unit, *warm).await?;
        eprintln!(
            "  decisions {:?}; first extra replica serving {} s, all {} s; {} requests until then, {} failed, {} slower than 1 s",
            r.decisions,
            opt_s(r.first_extra),
            opt_s(r.all),
            r.requests,
            r.failed,
            r.slow
        );
        rounds.push(r);
    }
    drop(node);

    let col = |f: &dyn Fn(&Round) -> Option<f64>| rounds.iter().map(f).collect::<Vec<_>>();
    let all_s = |f: &dyn Fn(&Round) -> Option<f64>| rounds.iter().map(|r| opt_s(f(r))).collect::<Vec<_>>().join(", ");
    let decided = col(&|r| r.decided);
    let first = col(&|r| r.first_extra);
    let all = col(&|r| r.all);
    let decisions: Vec<String> = rounds
        .iter()
        .map(|r| {
            r.decisions.iter().map(|(at, from, to)| format!("{from}→{to} at {at:.1} s")).collect::<Vec<_>>().join(", ")
        })
        .collect();
    let counts_text: Vec<String> =
        rounds.iter().map(|r| format!("{} → {}/{}", r.before, r.after.1, r.after.0)).collect();
    let measured: Vec<String> =
        rounds.iter().map(|r| r.measured_at_step.map_or("–".into(), |m| format!("{m:.0} %"))).collect();
    let traffic: Vec<String> = rounds
        .iter()
        .map(|r| {
            format!(
                "{} requests, {} failed, {} > 1 s (p50 {:.0} ms, max {:.0} ms; at 1×: p50 {:.0} ms); whole step: {} requests, {} failed, {} > 1 s",
                r.requests, r.failed, r.slow, r.p50_ms, r.max_ms, r.base_p50_ms, r.step_requests, r.step_failed, r.step_slow
            )
        })
        .collect();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut body = format!(
        "Command: `bash bench/run.sh autoscale` (`stackd-bench autoscale --rounds {rounds_n} --step {step} --burn {burn}{period_flag}`), release build, \
         {cpus} cores, Docker {engine}, one node (manager and agent) on the main engine. The service: `stackd-test/burn:1`, whose \
         `GET /cgi-bin/burn?n={burn}` burns a shell loop of {burn} iterations and answers its hostname, `cpus: {CPUS}`, a health check (`nc` to its port every 1 s; unhealthy after 10 failures, so that a saturated replica is not replaced), \
         published through the mesh; `x-stackd-autoscale: {{min: 1, max: {max}, target: {{cpu: {TARGET}%}}}}`, period {period_s} s{period_note}, \
         the other settings their defaults (no scale-up window, 5 min scale-down window). \
         Calibration: one replica without a policy, {CALIBRATION_RATE} requests/s for {cal} s; its container's CPU time over the \
         requests answered (the engine's stats, as the agent reads them): {ms:.1} ms per request, so it is at its target \
         ({tcores:.2} core) at **1× = {unit:.2} requests/s**. Each round deploys the stack (1 replica), \
         sends an open loop of 1× for {warm} s (so that the step falls at another moment of the period in each round), then at t0 **steps to {step}× ({rate5:.1} requests/s)** for {step_secs} s, and removes the stack. \
         A request counts from its scheduled time and fails without an answer within 10 s.\n\n\
         | from the step (t0) to | median (s) | rounds (s) |\n|---|---|---|\n\
         | the first scale-up decision | {m_decided} | {a_decided} |\n\
         | **the first extra replica serving** (its first answer through the mesh) | **{m_first}** | {a_first} |\n\
         | **every replica it ends with serving** | **{m_all}** | {a_all} |\n\n\
         | round | replicas at t0 → running/desired at the end | the replica's CPU over the 10 s before t0 (% of its limit; target 50 %) | decisions after t0 | requests from t0 until every replica served |\n|---|---|---|---|---|\n",
        rounds_n = args.rounds,
        step = args.step,
        burn = args.burn,
        period_flag = args.period.map(|p| format!(" --period {p}")).unwrap_or_default(),
        max = args.max,
        period_note = if args.period.is_none() { " (the default, as the HPA's sync period)" } else { "" },
        cal = args.calibrate,
        ms = per_request * 1000.0,
        tcores = cores * f64::from(TARGET) / 100.0,
        rate5 = unit * args.step,
        warm = warms.iter().map(|w| format!("{:.0}", w.as_secs_f64())).collect::<Vec<_>>().join(", "),
        step_secs = args.step_secs,
        m_decided = med_opt(&decided),
        a_decided = all_s(&|r| r.decided),
        m_first = med_opt(&first),
        a_first = all_s(&|r| r.first_extra),
        m_all = med_opt(&all),
        a_all = all_s(&|r| r.all),
    );
    for i in 0..rounds.len() {
        body.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            i + 1,
            counts_text[i],
            measured[i],
            decisions[i],
            traffic[i]
        ));
    }
    body.push_str(&format!(
        "\nAnchor, cited, not measured here (Kubernetes cannot run on this machine): the HorizontalPodAutoscaler with its \
         defaults decides every 15 s (kube-controller-manager `--horizontal-pod-autoscaler-sync-period`), from metrics-server \
         readings taken every 15 s (`--metric-resolution`), scales up with no stabilisation window and down with a 300 s \
         window, by the same proportional rule and 10 % tolerance \
         (<https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/>). ({:.0} s in all.)",
        t_all.elapsed().as_secs_f64()
    ));
    println!("{body}");
    if args.out.as_os_str() != "-" {
        write_section(&args.out, "autoscale", &body)?;
        eprintln!("wrote {}", args.out.display());
    }
    Ok(())
}
