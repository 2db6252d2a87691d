//! The rollout benchmark of issue 15: the time to roll 10 replicas of web
//! from v1 to v2 (`parallelism: 2`, `delay: 0s`, `monitor: 1s`,
//! `order: start-first`, a health check), with clients counting the
//! requests that fail meanwhile — stackd and Docker Swarm on the same
//! engine, in turn, in one run.
//!
//! ```text
//!  stackd (single node on the main engine)     Docker Swarm (docker swarm init, same engine)
//!   bench process ─ GET ─▶ host address:PORT     (ingress and VIPs: IPVS, absent here)
//!     (the mesh's DNAT to a healthy task)
//!   client container ─ nc web:8080 ─▶ VIP        client container ─ nc web:8080 ─▶ DNS round robin
//!     (stack network, stackd's DNS and VIP)        (overlay network, endpoint_mode: dnsrr)
//!
//!  each round, each contender: deploy v1 and wait for it; start the clients;
//!  1 s; t0 = deploy v2; t1 = the update completed; 1 s; read the counts;
//!  remove the stack
//! ```
//!
//! **What is timed.** From the deploy command of v2 to the update being
//! completed: stackd's `stackctl deploy --wait` (it returns when every slot
//! runs v2 and has for `monitor`); for Swarm, `docker stack deploy` and then
//! the service's `UpdateStatus.State` read through the API every 50 ms until
//! it is `completed` (Swarm completes after its last batch plus `monitor`).
//! Both wait for a new task to be healthy before stopping the old one
//! (stackd's rollout counts a task as started when it is up: running and
//! healthy; Swarm's executor reports a task with a health check running
//! only once it is healthy).
//!
//! **The clients.** Through stackd's routing mesh, the bench process sends
//! `GET /` on a new connection at a fixed rate to the published port on the
//! host's address (an open loop: each request in its own task, so a slow
//! one does not hold back the next). From inside, a busybox container of
//! the stack runs the same shell loop for both contenders: `nc web 8080`,
//! the answer's last line must be `web 1` or `web 2`, every 10 ms; the
//! counts are read from its file before t0 and after t1 + 1 s. Swarm's
//! published ports and virtual IPs need IPVS, which this kernel lacks, so
//! its web is `endpoint_mode: dnsrr` (Docker's DNS answers the addresses of
//! the tasks) and has no published port: Swarm has no mesh figure.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::ServiceUpdateStatusStateEnum as UpdateState;

use crate::{RolloutArgs, fmt_s, load, median, mesh, raw, stackd, swarm, write_section};

/// The stack's name, for both contenders.
const STACK: &str = "rollbench";

/// The shell loop of the client container: one request to `web:8080` every
/// 10 ms, counts in `/tmp/count` (`ok failed v1 v2`, replaced whole),
/// failures in `/tmp/fails`; stops when `/tmp/stop` exists.
const CLIENT_LOOP: &str = r#"printf 'GET / HTTP/1.0\r\n\r\n' > /tmp/req
ok=0; fail=0; v1=0; v2=0
while [ ! -f /tmp/stop ]; do
  r=$(nc -w 3 web 8080 < /tmp/req 2>&1 | tail -n 1)
  case "$r" in
    'web 1') ok=$((ok+1)); v1=$((v1+1));;
    'web 2') ok=$((ok+1)); v2=$((v2+1));;
    *) fail=$((fail+1)); echo "$(date +%s) $r" >> /tmp/fails;;
  esac
  echo "$ok $fail $v1 $v2" > /tmp/count.new && mv /tmp/count.new /tmp/count
  usleep 10000
done"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Stackd,
    Swarm,
}

/// The stack file of web `version` for `kind`. The same file but for how
/// web is reached: stackd publishes `port` through its mesh (and gives web
/// a VIP); Swarm's web is `dnsrr` without a published port (both need IPVS
/// in Swarm).
fn stack_yaml(kind: Kind, version: u8, replicas: usize, port: u16) -> String {
    let (ports, endpoint) = match kind {
        Kind::Stackd => (format!("    ports: [\"{port}:8080\"]\n"), ""),
        Kind::Swarm => (String::new(), "      endpoint_mode: dnsrr\n"),
    };
    format!(
        "version: \"3.8\"
services:
  web:
    image: stackd-test/web:{version}
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
{ports}    healthcheck:
      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]
      interval: 1s
      timeout: 1s
      retries: 3
    deploy:
      replicas: {replicas}
{endpoint}      update_config:
        parallelism: 2
        delay: 0s
        monitor: 1s
        order: start-first
  client:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"86400\"]
"
    )
}

/// Runs the docker CLI; (success, stdout, stderr).
fn docker(args: &[&str]) -> (bool, String, String) {
    match Command::new("docker").args(args).stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

/// The ids of the containers with `label` (running or not).
fn containers(label: &str, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "-q", "--filter"];
    let filter = format!("label={label}");
    args.push(&filter);
    if all {
        args.push("-a");
    }
    docker(&args).1.split_whitespace().map(String::from).collect()
}

/// Waits until the containers with `label` are gone, then removes what is
/// left (`docker rm -f`).
fn wait_containers_gone(label: &str, timeout: Duration) {
    let start = Instant::now();
    while !containers(label, true).is_empty() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in containers(label, true) {
        let _ = docker(&["rm", "-f", &id]);
    }
}

/// Counts of the container client: successful, failed, answers of v1, of v2.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    ok: u64,
    failed: u64,
    v1: u64,
    v2: u64,
}

impl Counts {
    fn since(self, before: Counts) -> Counts {
        Counts {
            ok: self.ok.saturating_sub(before.ok),
            failed: self.failed.saturating_sub(before.failed),
            v1: self.v1.saturating_sub(before.v1),
            v2: self.v2.saturating_sub(before.v2),
        }
    }
}

fn read_counts(id: &str) -> Result<Counts> {
    let (ok, out, err) = docker(&["exec", id, "cat", "/tmp/count"]);
    anyhow::ensure!(ok, "reading the client's counts: {}", err.trim());
    let v: Vec<u64> = out.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    anyhow::ensure!(v.len() == 4, "the client's counts are {out:?}");
    Ok(Counts { ok: v[0], failed: v[1], v1: v[2], v2: v[3] })
}

/// Starts the shell loop in the client container and waits until it has
/// 10 answers.
async fn start_client_loop(id: &str) -> Result<()> {
    let (ok, _, err) = docker(&["exec", "-d", id, "sh", "-c", CLIENT_LOOP]);
    anyhow::ensure!(ok, "starting the client loop: {}", err.trim());
    let start = Instant::now();
    loop {
        if let Ok(c) = read_counts(id)
            && c.ok >= 10
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            let (_, fails, _) = docker(&["exec", id, "sh", "-c", "tail -n 3 /tmp/fails"]);
            bail!("the client in {id} has not had 10 answers after 60 s: {}", fails.trim());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the mesh client saw.
#[derive(Clone, Debug, Default)]
struct MeshStats {
    sent: usize,
    failed: usize,
    kinds: BTreeMap<String, usize>,
    v1: usize,
    v2: usize,
    /// The slowest successful request (from its send), ms.
    max_ms: f64,
}

/// An open loop of `GET /` at `rate` per second to `addr`, until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<MeshStats>,
}

impl Poller {
    fn start(addr: SocketAddr, rate: f64) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Result<Vec<u8>, String>, Duration)>();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // An open loop: requests missed while the runtime was busy go out at once.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stopped.load(Ordering::Relaxed) {
                tick.tick().await;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let at = Instant::now();
                    let r = load::get(addr).await;
                    let _ = tx.send((r, at.elapsed()));
                });
            }
            drop(tx);
            let mut s = MeshStats::default();
            while let Some((r, took)) = rx.recv().await {
                s.sent += 1;
                match r {
                    Ok(answer) => match last_line(&answer) {
                        "web 1" => s.v1 += 1,
                        "web 2" => s.v2 += 1,
                        other => {
                            s.failed += 1;
                            *s.kinds.entry(format!("answered {other:?}")).or_default() += 1;
                        }
                    },
                    Err(e) => {
                        s.failed += 1;
                        *s.kinds.entry(e).or_default() += 1;
                    }
                }
                s.max_ms = s.max_ms.max(took.as_secs_f64() * 1000.0);
            }
            s
        });
        Poller { stop, task }
    }

    async fn stop(self) -> MeshStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The last non-empty line of an HTTP answer (busybox httpd's body is
/// `web N\n`).
fn last_line(answer: &[u8]) -> &str {
    std::str::from_utf8(answer).unwrap_or("").lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

/// stackd: a single-node cluster on the main engine (`stackd init`).
struct StackdSide {
    node: Option<stackd::Node>,
    /// The published port, and where the mesh client sends.
    port: u16,
    addr: SocketAddr,
}

impl StackdSide {
    fn node(&self) -> &stackd::Node {
        self.node.as_ref().expect("the node runs until drop")
    }

    fn file(&self, version: u8, replicas: usize) -> Result<String> {
        let path = self.node().dir().join(format!("v{version}.yml"));
        std::fs::write(&path, stack_yaml(Kind::Stackd, version, replicas, self.port))?;
        Ok(path.display().to_string())
    }

    /// `stackctl stack rm`, then waits until its containers and its Docker
    /// network are gone (Swarm's overlay of the same name comes next).
    async fn remove(&self) -> Result<()> {
        self.node().remove_stack(STACK).await?;
        let net = format!("{STACK}_default");
        let start = Instant::now();
        while docker(&["network", "inspect", &net]).0 {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("stackd's network {net} is still there 60 s after stack rm");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    fn deploy(&self, file: &str) -> Result<f64> {
        let start = Instant::now();
        let o = self.node().stackctl(&["deploy", "-c", file, STACK, "--wait", "--timeout", "5m"])?;
        let took = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            o.status.success(),
            "stackctl deploy --wait exited {:?}: {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(took)
    }
}

impl Drop for StackdSide {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else { return };
        let _ = node.stackctl(&["stack", "rm", STACK]);
        wait_containers_gone(&format!("io.stackd.stack={STACK}"), Duration::from_secs(60));
        node.stop();
        // The stack's network, if the agent had no time to remove it.
        let net = format!("{STACK}_default");
        if docker(&["network", "inspect", &net]).0 {
            let _ = docker(&["network", "rm", &net]);
        }
    }
}

/// Docker Swarm: `docker swarm init` on the main engine, left on drop.
struct SwarmSide {
    swarm: Option<swarm::Swarm>,
    api: Docker,
    dir: tempfile::TempDir,
}

impl SwarmSide {
    fn file(&self, version: u8, replicas: usize) -> Result<String> {
        let path = self.dir.path().join(format!("v{version}.yml"));
        std::fs::write(&path, stack_yaml(Kind::Swarm, version, replicas, 0))?;
        Ok(path.display().to_string())
    }

    fn stack_deploy(file: &str) -> Result<()> {
        let (ok, _, err) = docker(&["stack", "deploy", "--resolve-image", "never", "-c", file, STACK]);
        anyhow::ensure!(ok, "docker stack deploy: {}", err.trim());
        Ok(())
    }

    /// Waits until `n` tasks of `service` run (with a health check: are healthy).
    async fn wait_running(service: &str, n: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let (_, out, _) = docker(&[
                "service",
                "ps",
                service,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ]);
            if out.lines().filter(|l| l.starts_with("Running")).count() == n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("{service}: not {n} tasks running after {timeout:?}: {}", out.trim());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `docker stack deploy` of `file`, then the service's update state every
    /// 50 ms until `completed`; the seconds from the command to that.
    async fn roll(&self, file: &str) -> Result<f64> {
        let start = Instant::now();
        Self::stack_deploy(file)?;
        let service = format!("{STACK}_web");
        loop {
            let s = self.api.inspect_service(&service, None).await?;
            match s.update_status.as_ref().and_then(|u| u.state) {
                Some(UpdateState::COMPLETED) => return Ok(start.elapsed().as_secs_f64()),
                Some(
                    st @ (UpdateState::PAUSED
                    | UpdateState::ROLLBACK_STARTED
                    | UpdateState::ROLLBACK_PAUSED
                    | UpdateState::ROLLBACK_COMPLETED),
                ) => {
                    let msg = s.update_status.and_then(|u| u.message).unwrap_or_default();
                    bail!("Swarm's update ended {st}: {msg}");
                }
                _ => {}
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("Swarm's update not completed after 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `docker stack rm`, then waits until its containers and its network are gone.
    async fn remove(&self) -> Result<()> {
        let (ok, _, err) = docker(&["stack", "rm", STACK]);
        anyhow::ensure!(ok, "docker stack rm: {}", err.trim());
        let label = format!("com.docker.stack.namespace={STACK}");
        let net = format!("{STACK}_default");
        let start = Instant::now();
        loop {
            let left = containers(&label, true);
            // `stack rm` gives up on a network still in use by a stopping task.
            let net_left = docker(&["network", "inspect", &net]).0;
            if left.is_empty() && !net_left {
                return Ok(());
            }
            if left.is_empty() {
                let _ = docker(&["network", "rm", &net]);
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the Swarm stack is not gone after 2 minutes ({} containers; network left: {net_left})",
                    left.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for SwarmSide {
    fn drop(&mut self) {
        let Some(swarm) = self.swarm.take() else { return };
        let _ = docker(&["stack", "rm", STACK]);
        wait_containers_gone(&format!("com.docker.stack.namespace={STACK}"), Duration::from_secs(60));
        drop(swarm); // docker swarm leave --force, and what it leaves behind
    }
}

/// One contender's round.
struct Sample {
    secs: f64,
    inside: Counts,
    mesh: Option<MeshStats>,
}

/// A client container of the stack: its id, once it runs.
async fn client_container(label: &str) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Some(id) = containers(label, false).into_iter().next() {
            return Ok(id);
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("no running container with {label} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stackd_round(s: &StackdSide, replicas: usize, rate: f64) -> Result<Sample> {
    let (v1, v2) = (s.file(1, replicas)?, s.file(2, replicas)?);
    // Another cluster on this engine (a test run beside this one) may hold a
    // Docker network with the subnet this cluster gives its network next
    // (every cluster allocates from the same default pool): the tasks are
    // then rejected. Removed and deployed again, the network gets the next
    // subnet of the pool.
    let mut tries = 0;
    while let Err(e) = s.deploy(&v1) {
        tries += 1;
        if tries == 5 || !format!("{e:#}").contains("Pool overlaps") {
            return Err(e);
        }
        eprintln!("  v1 rejected: its subnet is taken on this engine by another network; deploying again");
        s.remove().await?;
    }
    load::wait_serving(s.addr, 20).await?;
    let id = client_container(&format!("io.stackd.service={STACK}_client")).await?;
    start_client_loop(&id).await?;
    let poller = (rate > 0.0).then(|| Poller::start(s.addr, rate));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = read_counts(&id)?;
    let secs = s.deploy(&v2)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = read_counts(&id)?;
    let mesh = match poller {
        Some(p) => Some(p.stop().await),
        None => None,
    };
    log_failures(&id, after.since(before));
    let _ = docker(&["exec", &id, "touch", "/tmp/stop"]);
    s.remove().await?;
    Ok(Sample { secs, inside: after.since(before), mesh })
}

async fn swarm_round(s: &SwarmSide, replicas: usize) -> Result<Sample> {
    let (v1, v2) = (s.file(1, replicas)?, s.file(2, replicas)?);
    SwarmSide::stack_deploy(&v1)?;
    SwarmSide::wait_running(&format!("{STACK}_web"), replicas, Duration::from_secs(180)).await?;
    SwarmSide::wait_running(&format!("{STACK}_client"), 1, Duration::from_secs(60)).await?;
    let id = client_container(&format!("com.docker.swarm.service.name={STACK}_client")).await?;
    start_client_loop(&id).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = read_counts(&id)?;
    let secs = s.roll(&v2).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = read_counts(&id)?;
    log_failures(&id, after.since(before));
    let _ = docker(&["exec", &id, "touch", "/tmp/stop"]);
    s.remove().await?;
    Ok(Sample { secs, inside: after.since(before), mesh: None })
}

/// The client container's last failures, on stderr, when there were any.
fn log_failures(id: &str, c: Counts) {
    if c.failed > 0 {
        let (_, out, _) = docker(&["exec", id, "sh", "-c", "tail -n 5 /tmp/fails"]);
        eprintln!("    the client's last failures: {}", out.trim().replace('\n', " | "));
    }
}

/// Why Swarm has no figure through a published port: the table's cell and
/// the reason.
fn swarm_mesh_note() -> (&'static str, &'static str) {
    if Path::new("/proc/net/ip_vs").exists() {
        ("not measured", "Swarm's web is `dnsrr`, which Swarm does not publish in ingress mode")
    } else {
        (
            "not measurable (no IPVS)",
            "Swarm's routing mesh (its ingress network) and its virtual IPs are IPVS load balancers, and this kernel \
             has no IPVS (`/proc/net/ip_vs` is absent; dockerd logs that native load balancing will not work, and the \
             mesh benchmark's probe of Swarm's ingress above found every connection refused)",
        )
    }
}

/// The benchmark; see the module docs.
pub async fn bench(args: RolloutArgs) -> Result<()> {
    anyhow::ensure!(args.replicas >= 2, "--replicas: at least 2");
    let status = Command::new("bash").arg("tests/images/build.sh").status()?;
    anyhow::ensure!(status.success(), "tests/images/build.sh failed");
    let t_all = Instant::now();
    let api = raw::connect().await?;
    let engine = raw::engine_version(&api).await?;
    let host = mesh::host_addr().unwrap_or(Ipv4Addr::LOCALHOST);
    let port = std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port();

    eprintln!("starting a single-node stackd cluster on the main engine");
    let stackd_side =
        StackdSide { node: Some(stackd::Node::start().await?), port, addr: SocketAddr::from((host, port)) };
    let (swarm_side, swarm_note) = if args.no_swarm {
        (None, "Swarm skipped (`--no-swarm`).".to_string())
    } else {
        match swarm::Swarm::init() {
            Ok(sw) => (
                Some(SwarmSide {
                    swarm: Some(sw),
                    api: api.clone(),
                    dir: tempfile::Builder::new().prefix("stackd-bench-swarm-").tempdir()?,
                }),
                String::new(),
            ),
            Err(e) => (None, format!("Swarm did not start: {e:#}.")),
        }
    };

    let mut kinds = vec![Kind::Stackd];
    if swarm_side.is_some() {
        kinds.push(Kind::Swarm);
    }
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    let name = |k: Kind| if k == Kind::Stackd { "stackd" } else { "swarm" };
    for round in 1..=args.rounds.max(1) {
        let n = kinds.len();
        for k in (0..n).map(|i| kinds[(i + round - 1) % n]) {
            eprintln!("round {round}/{}: {}", args.rounds, name(k));
            let s = match (k, &swarm_side) {
                (Kind::Stackd, _) => stackd_round(&stackd_side, args.replicas, args.rate).await,
                (Kind::Swarm, Some(sw)) => swarm_round(sw, args.replicas).await,
                (Kind::Swarm, None) => continue,
            }
            .with_context(|| format!("round {round}, {}", name(k)))?;
            eprintln!(
                "  rollout {:.2} s; container client: {} failed of {} (v1 {}, v2 {}){}",
                s.secs,
                s.inside.failed,
                s.inside.ok + s.inside.failed,
                s.inside.v1,
                s.inside.v2,
                s.mesh
                    .as_ref()
                    .map(|m| format!(
                        "; mesh client: {} failed of {} (v1 {}, v2 {}, slowest {:.0} ms){}",
                        m.failed,
                        m.sent,
                        m.v1,
                        m.v2,
                        m.max_ms,
                        if m.kinds.is_empty() { String::new() } else { format!(" {:?}", m.kinds) }
                    ))
                    .unwrap_or_default()
            );
            samples.entry(name(k)).or_default().push(s);
        }
    }
    drop(swarm_side);
    drop(stackd_side);

    // The report.
    let times = |k: &str| samples.get(k).map(|v| v.iter().map(|s| s.secs).collect::<Vec<_>>()).unwrap_or_default();
    let inside = |k: &str| {
        let v = samples.get(k).map(Vec::as_slice).unwrap_or_default();
        let failed: u64 = v.iter().map(|s| s.inside.failed).sum();
        let total: u64 = v.iter().map(|s| s.inside.ok + s.inside.failed).sum();
        let per: Vec<String> = v.iter().map(|s| s.inside.failed.to_string()).collect();
        format!("{failed} of {total} (rounds: {})", per.join(", "))
    };
    let (t_stackd, t_swarm) = (times("stackd"), times("swarm"));
    let (m_stackd, m_swarm) = (median(&mut t_stackd.clone()), median(&mut t_swarm.clone()));
    let mesh_all: Vec<&MeshStats> =
        samples.get("stackd").into_iter().flatten().filter_map(|s| s.mesh.as_ref()).collect();
    let mesh_failed: usize = mesh_all.iter().map(|m| m.failed).sum();
    let mesh_sent: usize = mesh_all.iter().map(|m| m.sent).sum();
    let mut mesh_kinds = BTreeMap::<String, usize>::new();
    for m in &mesh_all {
        for (k, n) in &m.kinds {
            *mesh_kinds.entry(k.clone()).or_default() += n;
        }
    }
    let mesh_text = if mesh_all.is_empty() {
        "not run (`--rate 0`)".to_string()
    } else {
        format!(
            "{mesh_failed} of {mesh_sent} (rounds: {}){}",
            mesh_all.iter().map(|m| m.failed.to_string()).collect::<Vec<_>>().join(", "),
            if mesh_kinds.is_empty() {
                String::new()
            } else {
                format!("; {}", mesh_kinds.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "))
            }
        )
    };
    let slowest = mesh_all.iter().map(|m| m.max_ms).fold(0.0, f64::max);
    let inside_stackd: u64 = samples.get("stackd").into_iter().flatten().map(|s| s.inside.failed).sum();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let (n, rounds, rate) = (args.replicas, args.rounds, args.rate);
    let mut body = format!(
        "Command: `bash bench/run.sh rollout` (`stackd-bench rollout --replicas {n} --rounds {rounds} --rate {rate}`), \
         release build, {cpus} cores, Docker {engine}, one engine for both contenders: stackd as a single-node cluster \
         (`stackd init`, manager and agent in one process) and Docker Swarm (`docker swarm init`, left with \
         `docker swarm leave --force` at the end). Each round, each contender in turn (each round starting with the \
         next one): deploy v1 of the stack below and wait until every replica runs and is healthy; start the clients; \
         1 s; **deploy v2 (web's image `stackd-test/web:1` → `:2`) and time it until the update is completed**: \
         `stackctl deploy --wait` for stackd (it returns once every slot runs v2 and has for `monitor`), \
         `docker stack deploy --resolve-image never` and then the service's `UpdateStatus.State` through the API every \
         50 ms until `completed` for Swarm (which completes after its last batch and `monitor`); 1 s more for the \
         clients; remove the stack. Both stop an old task only once its new one is healthy: stackd's rollout counts a \
         task started when it is up (running and healthy), Swarm's executor reports a task with a health check running \
         once it is healthy. Medians of the rounds.\n\n\
         **Clients.** *Through the mesh*: the bench process sends `GET /` on a new connection {rate} times a second \
         (open loop, each request in its own task, 3 s timeout) to the published port on the host's address `{host}`, \
         from 1 s before the deploy of v2 to 1 s after it completed; a request fails unless it is answered 200 with \
         `web 1` or `web 2`. It runs in stackd's rounds only (Swarm's web has no published port here), so its load \
         (a connection, a fork of busybox httpd and a log line per request) falls on stackd's side alone. *From a container on the stack's network, by service name*: a busybox container of the \
         stack (`client`) runs the same shell loop for both, `nc -w 3 web 8080` every 10 ms, and counts an answer whose \
         last line is not `web 1` or `web 2` as failed; counted from just before the deploy of v2 to 1 s after it \
         completed. stackd's `web` is reached there through its VIP (stackd's DNS, DNAT to a healthy task); Swarm's \
         through Docker's DNS round robin (`endpoint_mode: dnsrr`).\n\n\
         | contender | what is timed | rollout, median (s) | ratio to Swarm | rounds (s) | failed requests through the mesh | failed requests from a container, by name |\n\
         |---|---|---|---|---|---|---|\n\
         | stackd | `stackctl deploy -c v2.yml {STACK} --wait` | {m_stackd:.2} | {} | {} | {mesh_text} | {} (VIP) |\n",
        if t_swarm.is_empty() { "–".to_string() } else { format!("{:.2}", m_stackd / m_swarm) },
        fmt_s(&t_stackd),
        inside("stackd"),
    );
    let (swarm_cell, swarm_why) = swarm_mesh_note();
    if !t_swarm.is_empty() {
        body.push_str(&format!(
            "| Docker Swarm | `docker stack deploy -c v2.yml {STACK}` until `completed` | {m_swarm:.2} | 1.00 | {} | {} | {} (dnsrr) |\n",
            fmt_s(&t_swarm),
            swarm_cell,
            inside("swarm"),
        ));
    }
    body.push_str(&format!(
        "\nThe stack, v1, as stackd deploys it (v2: `stackd-test/web:2`); Swarm's file is the same but for `ports` \
         (none) and `deploy.endpoint_mode: dnsrr`:\n\n```yaml\n{}```\n",
        stack_yaml(Kind::Stackd, 1, n, 18090).replace("18090", "PORT")
    ));
    body.push_str(&format!(
        "\n**Not measurable: Swarm's failed requests through a published port.** {swarm_why}. Swarm's failed \
         requests are therefore counted from a container on its overlay network through Docker's DNS round robin \
         (`endpoint_mode: dnsrr`), the path that works here, and stackd's both through its mesh and from a container \
         through its VIP.\n",
    ));
    if !swarm_note.is_empty() {
        body.push_str(&format!("\n{swarm_note}\n"));
    }
    let goal = if t_swarm.is_empty() {
        format!("stackd {m_stackd:.2} s (no Swarm figure)")
    } else {
        format!("stackd/Swarm = {:.2}× ({m_stackd:.2} s against {m_swarm:.2} s)", m_stackd / m_swarm)
    };
    let through_mesh = if mesh_all.is_empty() {
        "none sent through the mesh".to_string()
    } else {
        format!("{mesh_failed} of {mesh_sent} through the mesh (slowest answer {slowest:.0} ms)")
    };
    body.push_str(&format!(
        "\nGoal: no slower than Swarm, and no failed request for stackd. This run: {goal}; stackd's failed requests \
         {through_mesh} and {inside_stackd} from the container. ({:.0} s in all.)",
        t_all.elapsed().as_secs_f64()
    ));
    println!("{body}");
    write_section(&args.out, "rollout", &body)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_of_an_answer() {
        assert_eq!(last_line(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nweb 2\n"), "web 2");
        assert_eq!(last_line(b""), "");
    }

    #[test]
    fn the_files_differ_in_how_web_is_reached_only() {
        let a = stack_yaml(Kind::Stackd, 1, 10, 18090);
        let b = stack_yaml(Kind::Swarm, 1, 10, 18090);
        fn only<'a>(x: &'a str, y: &str) -> Vec<&'a str> {
            x.lines().filter(|l| !y.lines().any(|m| m == *l)).collect()
        }
        assert_eq!(only(&a, &b), ["    ports: [\"18090:8080\"]"]);
        assert_eq!(only(&b, &a), ["      endpoint_mode: dnsrr"]);
    }
}
