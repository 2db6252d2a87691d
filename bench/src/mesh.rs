//! The networking benchmark of issue 14: HTTP through the routing mesh of a
//! 3-node cluster (one Docker engine per node, [`stackd_tests::engines`])
//! side by side with the same requests straight to the containers, Docker
//! Swarm's ingress on the main engine where it runs, and container-to-
//! container throughput across nodes against the same pair on one node.
//!
//! ```text
//!  host (load generator, crate::load)          test LAN 10.231.k.0/24 (bridge stkbr<pid>)
//!   ├─ direct: 10.192.x.y:8080 ── host route /32 via node i ──▶ node i ─forward─▶ web on node i
//!   ├─ mesh:   node i:18080 ──▶ node i: DNAT to a web task (here: keeps the client's address;
//!   │                              on node j: through node j's LAN address, SNAT to node i)
//!   └─ swarm:  127.0.0.1:18081 / host address:18081 on the main engine (ingress, IPVS)
//!  phase 1: web 3 replicas, max 1 per node (a task on every node)
//!  phase 2: web 2 replicas (one node has none: every request it takes is forwarded)
//!  throughput: dd | nc, 200 MiB, client on node 0 → sink on node 1, and → sink on node 0
//! ```
//!
//! **The direct path.** The host reaches a container's address through a
//! /32 route via the LAN address of the container's node (the route goes
//! with the harness's bridge). The request enters the node exactly as a
//! mesh request does — same veth, same forwarding into the stack network's
//! bridge, same reply path — but without the DNAT rule: the limit of the
//! mesh on the same hops. The node's `DOCKER-USER` accepts it through
//! stackd's rule for its published task (`STACKD-FWD -d <task> --dport
//! 8080`). The load generator runs in this process, on the host, for every
//! contender alike.
//!
//! **What a request is.** A new TCP connection per request (`GET /`,
//! `Connection: close`): busybox httpd answers one request per connection
//! and closes (it has no keep-alive), and a new connection is what walks
//! the mesh's DNAT (and conntrack) each time.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stackd_tests::Opts;
use stackd_tests::engines::Engines;

use crate::load::{self, Stats, quantile_ms};
use crate::{MeshArgs, median, swarm, write_section};

/// The stack's name; its network is `mesh_default`.
const STACK: &str = "mesh";
/// The port web publishes through the mesh.
const MESH_PORT: u16 = 18080;
/// The port Swarm's throwaway service publishes on the main engine.
const SWARM_PORT: u16 = 18081;

fn stack_yaml(replicas: usize) -> String {
    format!(
        "services:
  web:
    image: stackd-test/web:1
    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"{MESH_PORT}:8080\"]
    deploy:
      replicas: {replicas}
      placement:
        max_replicas_per_node: 1
  client:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      mode: global
  sink:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      mode: global
"
    )
}

/// The harness finds stackd and stackctl next to the directory of the
/// running binary (`target/debug/deps/<test>` → `target/debug`); bench's
/// binary is `target/release/stackd-bench`, one level up. Runs this binary
/// again from a hard link in `target/release/mesh-bench/`, so that the
/// harness finds the release binaries in `target/release`.
pub fn exec_where_the_harness_looks() -> Result<()> {
    if stackd_tests::bin_dir().join("stackd").exists() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("current exe")?;
    let dir = exe.parent().context("the binary's dir")?;
    anyhow::ensure!(
        dir.join("stackd").exists() && dir.join("stackctl").exists(),
        "no stackd and stackctl next to {}: build them (bash bench/run.sh mesh does)",
        exe.display()
    );
    let sub = dir.join("mesh-bench");
    std::fs::create_dir_all(&sub)?;
    let link = sub.join("stackd-bench");
    let _ = std::fs::remove_file(&link);
    if std::fs::hard_link(&exe, &link).is_err() {
        std::fs::copy(&exe, &link).context("copying the bench binary")?;
    }
    let err = Command::new(&link).args(std::env::args_os().skip(1)).exec();
    Err(err).with_context(|| format!("exec {}", link.display()))
}

/// Output of a command: (success, stdout, stderr).
fn run(mut c: Command) -> (bool, String, String) {
    match c.stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

/// The running container of `service` (full name) on node `i`, with its
/// address on the stack's network; `None` if there is none.
fn container(c: &Engines, i: usize, service: &str) -> Option<(String, Ipv4Addr)> {
    let mut d = c.docker(i);
    d.args(["ps", "-q", "--filter", &format!("label=io.stackd.service={service}")]);
    let (ok, out, _) = run(d);
    let id = out.lines().next()?.trim().to_string();
    if !ok || id.is_empty() {
        return None;
    }
    let mut d = c.docker(i);
    let net = format!("{STACK}_default");
    d.args(["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"), &id]);
    let (ok, out, _) = run(d);
    let ip = out.trim().parse().ok().filter(|_| ok)?;
    Some((id, ip))
}

fn wait_container(c: &Engines, i: usize, service: &str) -> Result<(String, Ipv4Addr)> {
    let start = Instant::now();
    loop {
        if let Some(v) = container(c, i, service) {
            return Ok(v);
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{service} not running on node {i} after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Host routes to container addresses (via their node), removed on drop.
#[derive(Default)]
struct Routes(Vec<Ipv4Addr>);

impl Routes {
    fn add(&mut self, to: Ipv4Addr, via: Ipv4Addr) -> Result<()> {
        let mut c = Command::new("ip");
        c.args(["route", "replace", &format!("{to}/32"), "via", &via.to_string()]);
        let (ok, _, err) = run(c);
        anyhow::ensure!(ok, "ip route replace {to}/32 via {via}: {err}");
        self.0.push(to);
        Ok(())
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        for to in &self.0 {
            let mut c = Command::new("ip");
            c.args(["route", "del", &format!("{to}/32")]).stderr(Stdio::null());
            let _ = c.status();
        }
    }
}

/// Waits until every address of `targets` answers `n` requests in a row.
async fn wait_serving(targets: &[SocketAddr], n: usize, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    for addr in targets {
        let mut row = 0;
        while row < n {
            match load::request(*addr).await {
                Ok(()) => row += 1,
                Err(e) => {
                    row = 0;
                    if start.elapsed() > timeout {
                        bail!("{addr} does not answer after {timeout:?}: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    Ok(())
}

/// One side of the comparison.
struct Contender {
    name: String,
    what: String,
    targets: Vec<SocketAddr>,
    /// Labels of the targets, for the per-target breakdown.
    labels: Vec<String>,
    /// Direct and mesh requests interleaved in one open loop (no closed
    /// loop): both paths see the same moments of this noisy machine.
    interleaved: bool,
}

/// An interleaved contender: a direct target, then a mesh target, in turn.
fn interleaved(direct: &[SocketAddr], mesh: &[(SocketAddr, String)]) -> Contender {
    let mut targets = Vec::new();
    let mut labels = Vec::new();
    for k in 0..direct.len().max(mesh.len()) {
        let (addr, label) = &mesh[k % mesh.len()];
        targets.extend([direct[k % direct.len()], *addr]);
        labels.extend(["direct".to_string(), label.clone()]);
    }
    let names: Vec<&str> = mesh.iter().map(|(_, l)| l.as_str()).collect();
    Contender {
        name: "interleaved".into(),
        what: format!("every other request direct, the others to {}", names.join(", ")),
        targets,
        labels,
        interleaved: true,
    }
}

/// Of an interleaved contender: per round, (direct p50, p99, mesh p50, p99),
/// all mesh targets together.
fn interleaved_rounds(c: &Contender, v: &[Sample]) -> Vec<[f64; 4]> {
    v.iter()
        .map(|s| {
            let (mut d, mut m) = (Vec::new(), Vec::new());
            for (t, label) in c.labels.iter().enumerate() {
                if label == "direct" { &mut d } else { &mut m }.extend_from_slice(&s.open.per_target[t]);
            }
            [quantile_ms(&d, 0.5), quantile_ms(&d, 0.99), quantile_ms(&m, 0.5), quantile_ms(&m, 0.99)]
        })
        .collect()
}

/// One round's results of a contender.
struct Sample {
    open: Stats,
    sat: Stats,
}

/// Runs `contenders` for `args.rounds` rounds, each round starting with the
/// next contender; each run: 0.5 s warm-up, the open loop, the closed loop.
async fn rounds(contenders: &[Contender], args: &MeshArgs, phase: &str) -> Vec<Vec<Sample>> {
    let mut samples: Vec<Vec<Sample>> = contenders.iter().map(|_| Vec::new()).collect();
    let n = contenders.len();
    for round in 1..=args.rounds.max(1) {
        for ci in (0..n).map(|k| (k + round - 1) % n) {
            let c = &contenders[ci];
            let _ = load::open_loop(&c.targets, args.rate, Duration::from_millis(500)).await;
            let open = load::open_loop(&c.targets, args.rate, Duration::from_secs(args.secs)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let sat = if c.interleaved {
                Stats::default()
            } else {
                load::closed_loop(&c.targets, args.conns, Duration::from_secs(args.sat_secs)).await
            };
            eprintln!(
                "{phase} round {round}: {:<28} open {:.0}/s: p50 {:.2} p99 {:.2} max {:.2} ms, errors {}, lag p99 {:.2} ms | \
                 closed {}: {:.0} req/s, p50 {:.2} p99 {:.2} ms, errors {} | conntrack {}",
                c.name,
                args.rate,
                quantile_ms(&open.ok, 0.5),
                quantile_ms(&open.ok, 0.99),
                quantile_ms(&open.ok, 1.0),
                open.errors_text(),
                quantile_ms(&open.send_lag, 0.99),
                args.conns,
                sat.rate(),
                quantile_ms(&sat.ok, 0.5),
                quantile_ms(&sat.ok, 0.99),
                sat.errors_text(),
                conntrack_count(),
            );
            samples[ci].push(Sample { open, sat });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    samples
}

/// The host's conntrack entries (the host namespace's table), for the log.
fn conntrack_count() -> String {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Medians over the rounds of one contender.
struct Summary {
    p50: f64,
    p99: f64,
    max: f64,
    p99s: Vec<f64>,
    errors: usize,
    error_kinds: String,
    sent: usize,
    sat_rate: f64,
    sat_rates: Vec<f64>,
    sat_p50: f64,
    sat_p99: f64,
    sat_errors: usize,
    lag_p99: f64,
}

fn summarize(v: &[Sample]) -> Summary {
    let med = |f: &dyn Fn(&Sample) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for s in v {
        for (k, n) in s.open.errors.iter().chain(s.sat.errors.iter()) {
            *kinds.entry(k.clone()).or_default() += n;
        }
    }
    Summary {
        p50: med(&|s| quantile_ms(&s.open.ok, 0.5)),
        p99: med(&|s| quantile_ms(&s.open.ok, 0.99)),
        max: v.iter().map(|s| quantile_ms(&s.open.ok, 1.0)).fold(0.0, f64::max),
        p99s: v.iter().map(|s| quantile_ms(&s.open.ok, 0.99)).collect(),
        errors: v.iter().map(|s| s.open.error_count()).sum(),
        error_kinds: kinds.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "),
        sent: v.iter().map(|s| s.open.sent).sum(),
        sat_rate: med(&|s| s.sat.rate()),
        sat_rates: v.iter().map(|s| s.sat.rate()).collect(),
        sat_p50: med(&|s| quantile_ms(&s.sat.ok, 0.5)),
        sat_p99: med(&|s| quantile_ms(&s.sat.ok, 0.99)),
        sat_errors: v.iter().map(|s| s.sat.error_count()).sum(),
        lag_p99: med(&|s| quantile_ms(&s.open.send_lag, 0.99)),
    }
}

fn join(v: &[f64], prec: usize) -> String {
    v.iter().map(|x| format!("{x:.prec$}")).collect::<Vec<_>>().join(", ")
}

/// The table of one phase, and the summaries (same order as `contenders`).
fn table(contenders: &[Contender], samples: &[Vec<Sample>], args: &MeshArgs) -> (String, Vec<Summary>) {
    let sums: Vec<Summary> = samples.iter().map(|v| summarize(v)).collect();
    let direct_p99 = sums.first().map_or(f64::NAN, |s| s.p99);
    let mut t = format!(
        "| path | target | p50 (ms) | p99 (ms) | p99 / direct | max (ms) | errors | p99 of each round (ms) | \
         saturation, {} conns (req/s) | sat. p50 / p99 (ms) | sat. errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        args.conns
    );
    for (c, s) in contenders.iter().zip(&sums) {
        if c.interleaved {
            continue;
        }
        let errors = if s.errors + s.sat_errors == 0 { "0".to_string() } else { format!("{} of {}", s.errors, s.sent) };
        t.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2}× | {:.2} | {errors} | {} | {:.0} ({}) | {:.2} / {:.2} | {} |\n",
            c.name,
            c.what,
            s.p50,
            s.p99,
            s.p99 / direct_p99,
            s.max,
            join(&s.p99s, 2),
            s.sat_rate,
            join(&s.sat_rates, 0),
            s.sat_p50,
            s.sat_p99,
            s.sat_errors,
        ));
    }
    let kinds: Vec<String> = contenders
        .iter()
        .zip(&sums)
        .filter(|(_, s)| !s.error_kinds.is_empty())
        .map(|(c, s)| format!("{}: {}", c.name, s.error_kinds))
        .collect();
    if !kinds.is_empty() {
        t.push_str(&format!("\nErrors by kind (open and closed loop together): {}.\n", kinds.join("; ")));
    }
    // Interleaved: direct and mesh in the same open loop.
    for ((c, v), s) in contenders.iter().zip(samples).zip(&sums) {
        if !c.interleaved {
            continue;
        }
        let r = interleaved_rounds(c, v);
        let col = |k: usize| median(&mut r.iter().map(|x| x[k]).collect::<Vec<_>>());
        let ratios: Vec<f64> = r.iter().map(|x| x[3] / x[1]).collect();
        t.push_str(&format!(
            "\n**Interleaved** ({}; {} req/s in all, so half of it on each path; errors {}): direct p50 {:.2} / p99 {:.2} ms, \
             mesh p50 {:.2} / p99 {:.2} ms; **mesh p99 / direct p99 {:.2}×** (median of the rounds' ratios; rounds: {}), \
             p50 {:.2}×.\n",
            c.what,
            args.rate,
            if s.errors == 0 { "0".to_string() } else { format!("{} of {}", s.errors, s.sent) },
            col(0),
            col(1),
            col(2),
            col(3),
            median(&mut ratios.clone()),
            join(&ratios, 2),
            col(2) / col(0),
        ));
    }
    // Per-target breakdown of the contenders with several targets.
    for (c, v) in contenders.iter().zip(samples) {
        if c.targets.len() < 2 || c.interleaved {
            continue;
        }
        let parts: Vec<String> = c
            .labels
            .iter()
            .enumerate()
            .map(|(t, label)| {
                let p50 = median(&mut v.iter().map(|s| quantile_ms(&s.open.per_target[t], 0.5)).collect::<Vec<_>>());
                let p99 = median(&mut v.iter().map(|s| quantile_ms(&s.open.per_target[t], 0.99)).collect::<Vec<_>>());
                format!("{label} p50 {p50:.2} / p99 {p99:.2} ms")
            })
            .collect();
        t.push_str(&format!(
            "\n{}, per node address (open loop, median of the rounds): {}.\n",
            c.name,
            parts.join("; ")
        ));
    }
    (t, sums)
}

/// Docker Swarm on the main engine with a service published through its
/// ingress; everything it made goes on drop (the service here, the rest
/// when the swarm is left: [`swarm::Swarm`]'s drop).
struct SwarmRun {
    swarm: Option<swarm::Swarm>,
}

fn main_docker(args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new("docker");
    c.args(args);
    run(c)
}

impl SwarmRun {
    fn start() -> Result<SwarmRun> {
        let swarm = swarm::Swarm::init()?;
        let mut run = SwarmRun { swarm: Some(swarm) };
        let (ok, _, err) = main_docker(&[
            "service",
            "create",
            "--quiet",
            "--detach=false",
            "--name",
            "bench-mesh",
            "--publish",
            &format!("published={SWARM_PORT},target=8080"),
            "stackd-test/web:1",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ]);
        if !ok {
            run.stop();
            bail!("docker service create: {}", err.trim());
        }
        Ok(run)
    }

    fn stop(&mut self) {
        let Some(swarm) = self.swarm.take() else { return };
        let _ = main_docker(&["service", "rm", "bench-mesh"]);
        drop(swarm); // docker swarm leave --force, and what it leaves behind
    }
}

impl Drop for SwarmRun {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The host's first global IPv4 address (not the harness's bridge).
pub(crate) fn host_addr() -> Option<Ipv4Addr> {
    let (_, out, _) = run({
        let mut c = Command::new("ip");
        c.args(["-o", "-4", "addr", "show", "scope", "global"]);
        c
    });
    out.lines()
        .filter(|l| !l.contains("docker") && !l.contains("stkbr") && !l.contains(" br-"))
        .find_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
}

/// What the Swarm probe found.
struct SwarmOutcome {
    /// The Swarm contender, if its ingress answers.
    run: Option<(SwarmRun, Contender)>,
    /// What happened, for the report.
    note: String,
}

async fn probe_swarm() -> SwarmOutcome {
    let sw = match SwarmRun::start() {
        Ok(r) => r,
        Err(e) => return SwarmOutcome { run: None, note: format!("Swarm did not start: {e:#}.") },
    };
    let (_, ps, _) = main_docker(&["service", "ps", "bench-mesh", "--format", "{{.CurrentState}}"]);
    let mut targets = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, SWARM_PORT))];
    if let Some(a) = host_addr() {
        targets.push(SocketAddr::from((a, SWARM_PORT)));
    }
    // The ingress needs a moment after the task starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut results = Vec::new();
    let mut all_ok = true;
    for t in &targets {
        let mut ok = 0;
        let mut errs = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..10 {
            match load::request(*t).await {
                Ok(()) => ok += 1,
                Err(e) => *errs.entry(e).or_default() += 1,
            }
        }
        all_ok &= ok == 10;
        let errs: Vec<String> = errs.iter().map(|(k, n)| format!("{n} {k}")).collect();
        results.push(format!(
            "`{t}`: {ok} of 10 answered{}",
            if errs.is_empty() { String::new() } else { format!(" ({})", errs.join(", ")) }
        ));
    }
    let chain = {
        let mut c = Command::new("iptables");
        c.args(["-w", "-t", "nat", "-S", "DOCKER-INGRESS"]);
        match run(c) {
            (true, out, _) => format!("lists {} rules", out.lines().filter(|l| l.starts_with("-A")).count()),
            (false, _, err) => {
                let e = err.lines().rfind(|l| !l.starts_with('#')).unwrap_or("fails").trim().to_string();
                format!("fails: “{e}”")
            }
        }
    };
    let ipvs = std::fs::read_to_string("/var/log/dockerd.log")
        .ok()
        .and_then(|log| log.lines().rev().find(|l| l.contains("ipvs")).map(String::from))
        .and_then(|l| l.split("msg=\"").nth(1).map(|m| m.split('"').next().unwrap_or(m).to_string()));
    let mut note = format!(
        "`docker swarm init` on the main engine and `docker service create --publish published={SWARM_PORT},target=8080 \
         stackd-test/web:1` (task state: {}): {}. `iptables -t nat -S DOCKER-INGRESS` {chain}",
        ps.lines().next().unwrap_or("?").trim(),
        results.join("; "),
    );
    if let Some(m) = ipvs {
        note.push_str(&format!("; dockerd logs “{m}”"));
    }
    note.push('.');
    if all_ok {
        let contender = Contender {
            name: "Docker Swarm ingress".into(),
            what: format!("main engine, `{}` (1 replica)", targets[targets.len() - 1]),
            targets: vec![targets[targets.len() - 1]],
            labels: vec!["swarm".into()],
            interleaved: false,
        };
        SwarmOutcome { run: Some((sw, contender)), note }
    } else {
        drop(sw);
        note.push_str(" Swarm's routing mesh does not run on this kernel (no IPVS), so it is not in the tables.");
        SwarmOutcome { run: None, note }
    }
}

/// One `dd | nc` transfer of `mb` MiB from node `from`'s client to the
/// sink `to` (node, container id, address); MB/s (10^6 bytes/s).
fn transfer(c: &Engines, from: usize, client: &str, to: (usize, &str, Ipv4Addr), mb: usize, port: u16) -> Result<f64> {
    let (node, sink, ip) = to;
    let got = format!("/tmp/got-{port}");
    let mut d = c.docker(node);
    d.args(["exec", "-d", sink, "sh", "-c", &format!("sleep 120 | nc -l -p {port} | wc -c > {got}")]);
    let (ok, _, err) = run(d);
    anyhow::ensure!(ok, "starting the listener: {err}");
    let start = Instant::now();
    loop {
        let mut d = c.docker(node);
        d.args(["exec", sink, "sh", "-c", &format!("netstat -ltn | grep -q ':{port} '")]);
        if run(d).0 {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "the listener on :{port} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut d = c.docker(from);
    d.args([
        "exec",
        client,
        "sh",
        "-c",
        &format!("time sh -c 'dd if=/dev/zero bs=1048576 count={mb} 2>/dev/null | nc {ip} {port}'"),
    ]);
    let (ok, _, err) = run(d);
    anyhow::ensure!(ok, "the sender failed: {err}");
    let real = err.lines().find_map(|l| l.trim().strip_prefix("real")).context(format!("no time in {err:?}"))?;
    let secs = parse_time(real).with_context(|| format!("parsing {real:?}"))?;
    let start = Instant::now();
    let bytes = loop {
        let mut d = c.docker(node);
        d.args(["exec", sink, "cat", &got]);
        let (ok, out, _) = run(d);
        if let Ok(n) = out.trim().parse::<u64>()
            && ok
        {
            break n;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "the listener did not report a count");
        std::thread::sleep(Duration::from_millis(100));
    };
    let want = mb as u64 * 1_048_576;
    anyhow::ensure!(bytes == want, "{bytes} bytes arrived of {want}");
    Ok(want as f64 / 1e6 / secs)
}

/// busybox time's `0m 1.23s` → seconds.
fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let (m, rest) = s.split_once('m')?;
    let secs: f64 = rest.trim().trim_end_matches('s').parse().ok()?;
    Some(m.trim().parse::<f64>().ok()? * 60.0 + secs)
}

/// A container's pid (in the host's pid namespace: the nodes' engines share it).
fn pid_of(c: &Engines, node: usize, id: &str) -> Result<String> {
    let mut d = c.docker(node);
    d.args(["inspect", "-f", "{{.State.Pid}}", id]);
    let (ok, out, err) = run(d);
    anyhow::ensure!(ok, "inspect {id}: {err}");
    Ok(out.trim().to_string())
}

/// The same transfer with the host's python3 run inside the two
/// containers' network namespaces (`nsenter -n`), 1 MiB per send and
/// receive: what the path carries when the tools are not the limit. The
/// receiver times from its first byte to EOF; MB/s (10^6 bytes/s).
fn transfer_py(from_pid: &str, to_pid: &str, ip: Ipv4Addr, mb: usize, port: u16) -> Result<f64> {
    use std::io::BufRead;
    let recv = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{port}))\ns.listen(1)\nprint('ready',flush=True)\nc,_=s.accept()\n\
         b=bytearray(1<<20)\nn=0\nt=None\nwhile True:\n k=c.recv_into(b)\n if t is None: t=time.monotonic()\n \
         if not k: break\n n+=k\nprint(n,time.monotonic()-t,flush=True)\n"
    );
    let send = format!(
        "import socket\ns=socket.create_connection(('{ip}',{port}))\nb=bytes(1<<20)\n\
         for _ in range({mb}): s.sendall(b)\ns.close()\n"
    );
    let mut rx = Command::new("nsenter")
        .args(["-t", to_pid, "-n", "python3", "-c", &recv])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 receiver")?;
    let mut lines = std::io::BufReader::new(rx.stdout.take().context("receiver stdout")?).lines();
    let ready = lines.next().transpose()?.unwrap_or_default();
    if ready.trim() != "ready" {
        let _ = rx.kill();
        let _ = rx.wait();
        bail!("the python3 receiver did not start: {ready:?}");
    }
    let mut tx = Command::new("nsenter");
    tx.args(["-t", from_pid, "-n", "python3", "-c", &send]);
    let (ok, _, err) = run(tx);
    if !ok {
        let _ = rx.kill();
        let _ = rx.wait();
        bail!("the python3 sender failed: {err}");
    }
    let result = lines.next().transpose()?.unwrap_or_default();
    let _ = rx.wait();
    let mut it = result.split_whitespace();
    let (n, secs): (u64, f64) = match (it.next().and_then(|x| x.parse().ok()), it.next().and_then(|x| x.parse().ok())) {
        (Some(n), Some(t)) => (n, t),
        _ => bail!("the receiver reported {result:?}"),
    };
    let want = mb as u64 * 1_048_576;
    anyhow::ensure!(n == want, "{n} bytes arrived of {want}");
    Ok(want as f64 / 1e6 / secs)
}

/// The benchmark; see the module docs.
pub async fn bench(args: MeshArgs) -> Result<()> {
    anyhow::ensure!(stackd_tests::netns::require_root(), "the mesh benchmark needs root (network namespaces)");
    anyhow::ensure!(stackd_tests::require_docker(), "the mesh benchmark needs the Docker engine");
    let t_all = Instant::now();

    // Swarm first, on the main engine: kept as a contender only if its ingress answers.
    let swarm = if args.no_swarm {
        SwarmOutcome { run: None, note: "Swarm skipped (`--no-swarm`).".into() }
    } else {
        eprintln!("probing Docker Swarm's ingress on the main engine");
        probe_swarm().await
    };
    eprintln!("swarm: {}", swarm.note);

    eprintln!("starting 3 nodes, each with its own engine");
    let c = Engines::start(3, 1, &Opts::default())?;
    let m = c.node(0);
    let file = m.write_stack("mesh.yml", &stack_yaml(3));
    m.stackctl(&["deploy", "-c", &file, STACK, "--wait", "--timeout", "120s"]);
    let web: Vec<(String, Ipv4Addr)> =
        (0..3).map(|i| wait_container(&c, i, &format!("{STACK}_web"))).collect::<Result<_>>()?;
    let node_addr = |i: usize| SocketAddr::from((c.net.addr(i), MESH_PORT));
    let mut routes = Routes::default();
    for (i, w) in web.iter().enumerate() {
        routes.add(w.1, c.net.addr(i))?;
    }
    let direct: Vec<SocketAddr> = web.iter().map(|w| SocketAddr::from((w.1, 8080))).collect();
    let mesh: Vec<SocketAddr> = (0..3).map(node_addr).collect();
    eprintln!(
        "web on {:?}; waiting until the mesh and the direct path answer",
        web.iter().map(|w| w.1).collect::<Vec<_>>()
    );
    wait_serving(&[direct.as_slice(), &mesh].concat(), 20, Duration::from_secs(60)).await?;

    let mut phase1 = vec![
        Contender {
            name: "direct".into(),
            what: "each web container's own address `:8080` in turn (host routes via their nodes)".into(),
            targets: direct.clone(),
            labels: (1..=3).map(|i| format!("web on node {i}")).collect(),
            interleaved: false,
        },
        Contender {
            name: "stackd mesh".into(),
            what: format!("`:{MESH_PORT}` of node 1, 2, 3 in turn (3 replicas, one per node)"),
            targets: mesh.clone(),
            labels: (1..=3).map(|i| format!("node {i}")).collect(),
            interleaved: false,
        },
        interleaved(&direct, &(0..3).map(|i| (node_addr(i), format!("mesh at node {}", i + 1))).collect::<Vec<_>>()),
    ];
    let mut swarm_run = None;
    if let Some((r, contender)) = swarm.run {
        phase1.push(contender);
        swarm_run = Some(r);
    }
    eprintln!("phase 1: 3 replicas");
    let s1 = rounds(&phase1, &args, "3 replicas").await;
    drop(swarm_run);

    // Phase 2: 2 replicas; one node has none.
    let mut phase2 = Vec::new();
    let mut s2 = Vec::new();
    if !args.no_two_replicas {
        let file = m.write_stack("mesh2.yml", &stack_yaml(2));
        m.stackctl(&["deploy", "-c", &file, STACK, "--wait", "--timeout", "120s"]);
        let start = Instant::now();
        let (empty, with) = loop {
            let have: Vec<Option<(String, Ipv4Addr)>> =
                (0..3).map(|i| container(&c, i, &format!("{STACK}_web"))).collect();
            let empty: Vec<usize> = (0..3).filter(|&i| have[i].is_none()).collect();
            if empty.len() == 1 {
                let with: Vec<(usize, Ipv4Addr)> =
                    have.iter().enumerate().filter_map(|(i, h)| h.as_ref().map(|h| (i, h.1))).collect();
                break (empty[0], with);
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "web did not go down to 2 replicas");
            std::thread::sleep(Duration::from_millis(200));
        };
        let wn = with[0].0;
        for &(n, ip) in &with {
            routes.add(ip, c.net.addr(n))?;
        }
        let direct: Vec<SocketAddr> = with.iter().map(|&(_, ip)| SocketAddr::from((ip, 8080))).collect();
        // The removed task's endpoint must have left every node's rules: 50 in a row at each.
        let all = [direct.as_slice(), &[node_addr(empty), node_addr(wn)]].concat();
        wait_serving(&all, 50, Duration::from_secs(60)).await?;
        phase2 = vec![
            Contender {
                name: "direct".into(),
                what: "each web container's own address `:8080` in turn (host routes via their nodes)".into(),
                targets: direct.clone(),
                labels: with.iter().map(|(n, _)| format!("web on node {}", n + 1)).collect(),
                interleaved: false,
            },
            Contender {
                name: "stackd mesh, node without web".into(),
                what: format!("`{}` (node {}: every request forwarded to another node)", node_addr(empty), empty + 1),
                targets: vec![node_addr(empty)],
                labels: vec![format!("node {}", empty + 1)],
                interleaved: false,
            },
            Contender {
                name: "stackd mesh, node with web".into(),
                what: format!("`{}` (node {}: half local, half forwarded)", node_addr(wn), wn + 1),
                targets: vec![node_addr(wn)],
                labels: vec![format!("node {}", wn + 1)],
                interleaved: false,
            },
            interleaved(
                &direct,
                &[
                    (node_addr(empty), format!("mesh at node {} (no web)", empty + 1)),
                    (node_addr(wn), format!("mesh at node {} (web)", wn + 1)),
                ],
            ),
        ];
        eprintln!("phase 2: 2 replicas, node {} has none", empty + 1);
        s2 = rounds(&phase2, &args, "2 replicas").await;
    }

    // Throughput: node 0's client to node 1's sink, and to node 0's sink.
    eprintln!("throughput: {} MiB, {} transfers each way", args.mb, args.transfers);
    let client0 = wait_container(&c, 0, &format!("{STACK}_client"))?;
    let sink0 = wait_container(&c, 0, &format!("{STACK}_sink"))?;
    let sink1 = wait_container(&c, 1, &format!("{STACK}_sink"))?;
    let (mut cross, mut same) = (Vec::new(), Vec::new());
    let (mut cross_py, mut same_py) = (Vec::new(), Vec::new());
    let client_pid = pid_of(&c, 0, &client0.0)?;
    let sink_pids = [pid_of(&c, 0, &sink0.0)?, pid_of(&c, 1, &sink1.0)?];
    let mut port = 9000;
    for k in 0..args.transfers {
        for which in if k % 2 == 0 { [0, 1] } else { [1, 0] } {
            port += 1;
            let (to, v, v_py, pid) = if which == 0 {
                ((1, sink1.0.as_str(), sink1.1), &mut cross, &mut cross_py, &sink_pids[1])
            } else {
                ((0, sink0.0.as_str(), sink0.1), &mut same, &mut same_py, &sink_pids[0])
            };
            let r = transfer(&c, 0, &client0.0, to, args.mb, port)?;
            port += 1;
            let r_py = transfer_py(&client_pid, pid, to.2, args.mb, port)?;
            eprintln!(
                "  {}: dd | nc {r:.0} MB/s, python3 {r_py:.0} MB/s",
                if which == 0 { "across nodes" } else { "same node" }
            );
            v.push(r);
            v_py.push(r_py);
        }
    }
    let engine = {
        let (_, v, _) = run({
            let mut d = c.docker(0);
            d.args(["version", "--format", "{{.Server.Version}}"]);
            d
        });
        v.trim().to_string()
    };
    drop(routes);
    drop(c);

    // The report.
    let (t1, sums1) = table(&phase1, &s1, &args);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut body = format!(
        "Command: `bash bench/run.sh mesh` (`stackd-bench mesh --rate {} --secs {} --conns {} --sat-secs {} --rounds {} --mb {} \
         --transfers {}`), release build, {cpus} cores shared by the load generator, the 3 engines (Docker {engine}), \
         their containers and the 3 stackd nodes: noisy, read medians and ratios. Three nodes of the multi-engine harness \
         (`stackd_tests::engines`: a network namespace, a dockerd and a stackd each, on a test LAN bridge); stack `{STACK}`: \
         `web` (`stackd-test/web:1`, busybox httpd, `max_replicas_per_node: 1`) published `{MESH_PORT}:8080` in ingress mode. \
         The load generator (bench/src/load.rs) runs on the host, outside the nodes: **one new TCP connection per request** \
         (`GET /`, busybox httpd has no keep-alive), so every request walks the mesh's DNAT and conntrack; open loop at \
         {} req/s for {} s, each latency taken from the request's scheduled send time (no coordinated omission; the \
         scheduler's own lateness, p99 {:.2} ms, is in every figure alike), after a 0.5 s warm-up; then a closed loop of {} \
         connections for {} s (saturation). The contenders alternate, {} rounds, each round starting with the next one; \
         medians of the rounds. **Direct** is the limit: the same requests to the web containers' own addresses, in turn \
         (so each busybox httpd takes the same share as through the mesh), each reached by a host route via its node's \
         LAN address: they enter the node on the same link and are forwarded into the same bridge as the mesh's, \
         without the DNAT (accepted by stackd's `DOCKER-USER` rule for the node's published task).\n\n\
         **3 replicas on 3 nodes** (the mesh's DNAT picks one of the 3 tasks at random on every node: a third stay on the \
         entry node with the client's address, two thirds go on to another node through its LAN address, with source \
         translation):\n\n{t1}",
        args.rate,
        args.secs,
        args.conns,
        args.sat_secs,
        args.rounds,
        args.mb,
        args.transfers,
        args.rate,
        args.secs,
        sums1.iter().map(|s| s.lag_p99).fold(0.0, f64::max),
        args.conns,
        args.sat_secs,
        args.rounds,
    );
    let interleaved_ratio = |cs: &[Contender], ss: &[Vec<Sample>]| {
        cs.iter().zip(ss).find(|(c, _)| c.interleaved).map_or(f64::NAN, |(c, v)| {
            median(&mut interleaved_rounds(c, v).iter().map(|x| x[3] / x[1]).collect::<Vec<_>>())
        })
    };
    let ratio1 = sums1[1].p99 / sums1[0].p99;
    let mut goal = format!(
        "interleaved in one open loop, mesh p99 / direct p99 = {:.2}× with 3 replicas{}; in separate runs \
         {ratio1:.2}× with 3 replicas (p50 {:.2}×, saturation {:.2}× of direct's req/s)",
        interleaved_ratio(&phase1, &s1),
        if phase2.is_empty() {
            String::new()
        } else {
            format!(
                ", {:.2}× with 2 (half of the mesh's requests at the node without web)",
                interleaved_ratio(&phase2, &s2)
            )
        },
        sums1[1].p50 / sums1[0].p50,
        sums1[1].sat_rate / sums1[0].sat_rate
    );
    if !phase2.is_empty() {
        let (t2, sums2) = table(&phase2, &s2, &args);
        body.push_str(&format!(
            "\n**2 replicas on 3 nodes** (the same stack redeployed with `replicas: 2`; one node runs no task of web):\n\n{t2}"
        ));
        goal.push_str(&format!(
            "; at the node without a replica {:.2}× (p50 {:.2}×), at a node with one {:.2}×",
            sums2[1].p99 / sums2[0].p99,
            sums2[1].p50 / sums2[0].p50,
            sums2[2].p99 / sums2[0].p99
        ));
    }
    let (mc, ms) = (median(&mut cross.clone()), median(&mut same.clone()));
    let (mcp, msp) = (median(&mut cross_py.clone()), median(&mut same_py.clone()));
    body.push_str(&format!(
        "\n**Container to container** (`dd if=/dev/zero bs=1M count={mb} | nc` from a busybox container on node 1 to one \
         on node 2, across the stack network's VXLAN, against the same client to a container on its own node, through \
         the bridge; `nc -l | wc -c` on the receiving side checks every byte arrived; time from busybox's `time` around \
         the sender, 10 ms grain; MB = 10^6 bytes; alternating, median of {n}). busybox's `nc` copies in small \
         reads and writes, so the same pairs were also measured with the host's python3 run inside the two containers' \
         network namespaces (`nsenter -t PID -n`, 1 MiB per `sendall`/`recv_into`, timed by the receiver from its first \
         byte to EOF):\n\n\
         | pair | `dd \\| nc` MB/s (median) | transfers | python3 MB/s (median) | transfers |\n|---|---|---|---|---|\n\
         | across nodes (VXLAN) | {mc:.0} | {} | {mcp:.0} | {} |\n| same node (bridge) | {ms:.0} | {} | {msp:.0} | {} |\n\n\
         Across nodes / same node: {:.2}× with `dd | nc`, {:.2}× with python3.\n",
        join(&cross, 0),
        join(&cross_py, 0),
        join(&same, 0),
        join(&same_py, 0),
        mc / ms,
        mcp / msp,
        mb = args.mb,
        n = args.transfers,
    ));
    body.push_str(&format!("\n**Docker Swarm.** {}\n", swarm.note));
    body.push_str(&format!("\nGoal: the mesh within 1.3× of the direct path's p99. This run: {goal}."));
    println!("{body}");
    write_section(&args.out, "mesh", &body)?;
    eprintln!("wrote {} ({:.0} s in all)", args.out.display(), t_all.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_time() {
        assert_eq!(parse_time("\t0m 0.25s"), Some(0.25));
        assert_eq!(parse_time(" 1m 2.50s"), Some(62.5));
        assert_eq!(parse_time("soon"), None);
    }
}
