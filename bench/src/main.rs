//! Benchmarks of stackd side by side with its anchors, in one run.
//!
//! `deploy`: time from deploy to N running replicas — stackd (`stackctl
//! deploy --wait` against a fresh single-node cluster), the raw Docker API
//! (N concurrent create + start calls, the floor), and Docker Swarm on the
//! same engine (`docker service create --detach=false`) — plus the resident
//! memory of the stackd process idle and with N tasks. Rounds alternate the
//! contenders; the report gives medians and ratios, and is written between
//! markers in docs/benchmarks.md with the command that produced it.
//!
//! `raft`: replicated writes per second and their latency (p50, p99) with 1
//! and 64 concurrent clients, round-robin over three members — etcd 3.4 and
//! stackd's three managers in the same run (see [`raft::Contender`]).
//!
//! `failover`: time from `kill -9` of the stackd leader to the first
//! acknowledged write, under a writer that writes every 20 ms; 10 runs.
//!
//! `mesh`: HTTP through the routing mesh of a 3-node cluster with an engine
//! per node, against the same requests straight to a container (and
//! Docker Swarm's ingress where it runs), and container-to-container
//! throughput across nodes against one node (issue 14).
//!
//! `rollout`: the time to roll 10 replicas from v1 to v2 (start-first,
//! health-checked) and the requests that fail meanwhile, stackd against
//! Docker Swarm on the same engine (issue 15).
//!
//! `autoscale`: the time from a step of a CPU-bound service's load (1× to
//! 5× what one replica holds at its target) to its extra replicas serving
//! through the mesh, and the requests that failed or waited meanwhile; a
//! single node on the main engine (issue 19).
//!
//! `node-death`: the time from a worker's death (its link cut and its
//! stackd killed with SIGKILL) to its tasks running on the other nodes, on
//! the multi-engine harness; 10 runs, split into detection and the rest
//! (issue 16).
//!
//! # Layout
//!
//! - `main.rs`: arguments (one subcommand per benchmark), the rounds, the
//!   reports and the sections of docs/benchmarks.md.
//! - `raw.rs`: the raw Docker API contender (bollard).
//! - `stackd.rs`: a stackd node as a process, and its memory.
//! - `swarm.rs`: Docker Swarm on the same engine.
//! - `raft.rs`: the write-load harness ([`raft::run_load`]) and the
//!   [`raft::Contender`]s of the Raft benchmark.
//! - `etcd.rs`: three etcd members as processes, and a minimal `KV.Put`
//!   client generated from `bench/proto/etcd.proto` (build.rs, protox).
//! - `cluster.rs`: three stackd managers (`--no-agent`) and TLS clients.
//! - `failover.rs`: one failover run.
//! - `mesh.rs`: the networking benchmark on the multi-engine harness of
//!   `stackd-tests`; `load.rs`: its HTTP load generator.
//! - `rollout.rs`: the rollout benchmark.
//! - `logs.rs`: `stackctl logs -f` throughput against `docker logs -f` of
//!   the same container.
//! - `metrics.rs`: the cost of `/metrics` on a node with 100 tasks, beside
//!   `docker stats` of the same containers.
//! - `autoscale.rs`: the autoscaling benchmark.
//! - `node_death.rs`: the node-death benchmark, on the multi-engine harness
//!   (re-executed like `mesh`, see [`mesh::exec_where_the_harness_looks`]).

mod autoscale;
mod cluster;
mod etcd;
mod failover;
mod hollow;
mod load;
mod logs;
mod mesh;
mod metrics;
mod node_death;
mod raft;
mod raw;
mod rollout;
mod stackd;
mod swarm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Benchmarks stackd against its anchors.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Deploy time against the raw Docker API and Docker Swarm.
    Deploy(DeployArgs),
    /// Replicated write throughput and latency against etcd.
    Raft(RaftArgs),
    /// Time from kill -9 of the leader to the first acknowledged write.
    Failover(FailoverArgs),
    /// HTTP through the routing mesh against the direct path; throughput across nodes.
    Mesh(MeshArgs),
    /// Rolling replicas from v1 to v2 against Docker Swarm, with failed requests counted.
    Rollout(RolloutArgs),
    /// Time from a worker's death (link cut + kill -9) to its tasks running elsewhere.
    NodeDeath(NodeDeathArgs),
    /// 1,000 hollow nodes and 100,000 tasks against three managers.
    Hollow(HollowArgs),
    /// The cost of /metrics on a node with 100 tasks, beside `docker stats`.
    Metrics(MetricsArgs),
    /// `stackctl logs -f` throughput against `docker logs -f` of the same container.
    Logs(LogsArgs),
    /// Time from a load step (1× to 5× one replica's target) to the extra replicas serving.
    Autoscale(AutoscaleArgs),
}

/// Options of `autoscale`.
#[derive(clap::Args)]
struct AutoscaleArgs {
    /// Rounds (each deploys the service, steps the load, removes it).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The step, in multiples of the load one replica holds at its target.
    #[arg(long, default_value_t = 5.0)]
    step: f64,
    /// Iterations of the CGI's shell loop per request.
    #[arg(long, default_value_t = 10_000)]
    burn: u32,
    /// The policy's period in seconds (default: the policy's own, 15 s).
    #[arg(long)]
    period: Option<u64>,
    /// The policy's most replicas.
    #[arg(long, default_value_t = 8)]
    max: u64,
    /// Seconds of the calibration (the CPU time of a request).
    #[arg(long, default_value_t = 10)]
    calibrate: u64,
    /// Seconds at 1× before the step in the first round (the others add
    /// a share of the period each).
    #[arg(long, default_value_t = 15)]
    warm: u64,
    /// Seconds of the step.
    #[arg(long, default_value_t = 60)]
    step_secs: u64,
    /// Where to write the report (between its markers); `-`: print only.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `logs`.
#[derive(clap::Args)]
struct LogsArgs {
    /// Lines the chatty task prints.
    #[arg(long, default_value_t = 200_000)]
    lines: usize,
    /// Rounds (each client once per round, alternating which goes first).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where to write the report (between its markers); `-`: print only.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `metrics`.
#[derive(clap::Args)]
struct MetricsArgs {
    /// Tasks on the node.
    #[arg(long, default_value_t = 100)]
    tasks: usize,
    /// Scrapes, one after the other.
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// Runs of `docker stats --no-stream` over the same containers.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where to write the report (between its markers); `-`: print only.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `node-death`.
#[derive(clap::Args)]
struct NodeDeathArgs {
    /// Runs (one worker killed in each, n2 and n3 in turn).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Replicas of the service (spread evenly over the 3 nodes).
    #[arg(long, default_value_t = 6)]
    replicas: usize,
    /// Where to write the report (between its markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `hollow`.
#[derive(clap::Args)]
struct HollowArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Services.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Replicas of each service.
    #[arg(long, default_value_t = 1000)]
    replicas: u64,
    /// Replicas of the one service deployed while the others run.
    #[arg(long, default_value_t = 100)]
    one_replicas: u64,
    /// Seconds allowed for all tasks to run.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Then save, inspect and restore a cluster snapshot of that state
    /// (`bash bench/run.sh snapshot`); the report goes to its own section.
    #[arg(long)]
    snapshot: bool,
    /// Where to write the report (between its markers); `-`: print only.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `rollout`.
#[derive(clap::Args)]
struct RolloutArgs {
    /// Replicas of web.
    #[arg(long, default_value_t = 10)]
    replicas: usize,
    /// Rounds; each rolls out once with every contender, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests per second of the client through stackd's mesh (0: none).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Skip Docker Swarm.
    #[arg(long)]
    no_swarm: bool,
    /// Where to write the report (between its markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `mesh`.
#[derive(clap::Args)]
struct MeshArgs {
    /// Open-loop request rate (requests per second, below saturation).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Seconds of each open-loop run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent connections of the closed-loop (saturation) run.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Seconds of each closed-loop run.
    #[arg(long, default_value_t = 5)]
    sat_secs: u64,
    /// Rounds; each runs every contender, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB per container-to-container transfer.
    #[arg(long, default_value_t = 200)]
    mb: usize,
    /// Transfers each way (across nodes, same node).
    #[arg(long, default_value_t = 3)]
    transfers: usize,
    /// Skip Docker Swarm.
    #[arg(long)]
    no_swarm: bool,
    /// Skip the 2-replica phase (a node without a task of web).
    #[arg(long)]
    no_two_replicas: bool,
    /// Where to write the report (between its markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `failover`.
#[derive(clap::Args)]
struct FailoverArgs {
    /// Runs (one leader killed in each).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Where to write the report (between its markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `deploy`.
#[derive(clap::Args)]
struct DeployArgs {
    /// Replicas to deploy.
    #[arg(long, default_value_t = 30)]
    replicas: usize,
    /// Rounds per contender.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Skip Docker Swarm.
    #[arg(long)]
    no_swarm: bool,
    /// Where to write the report (between its markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// Options of `raft`.
#[derive(clap::Args)]
struct RaftArgs {
    /// Concurrent client counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Measured writes per run.
    #[arg(long, default_value_t = 3000)]
    ops: usize,
    /// Unmeasured writes before each run.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 128)]
    value_len: usize,
    /// Where to write the report (between its markers).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Run one contender only (`etcd`, `etcd-tls` or `stackd`), for
    /// profiling; the report is then printed, not written.
    #[arg(long)]
    only: Option<String>,
    /// Keep the contenders running after the runs until Enter is pressed
    /// (to attach a profiler or read their logs).
    #[arg(long)]
    hold: bool,
    /// Rounds; each runs every contender at every client count, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn fmt_s(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.
fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let section = format!("{start}\n{body}\n{end}");
    let new = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &text[..a], section, &text[b + end.len()..]),
        _ => format!("{}\n{}\n", text.trim_end(), section),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    let run = async move {
        match cli.cmd {
            Cmd::Deploy(args) => deploy_bench(args).await,
            Cmd::Raft(args) => raft_bench(args).await,
            Cmd::Failover(args) => failover_bench(args).await,
            Cmd::Mesh(args) => {
                mesh::exec_where_the_harness_looks()?;
                mesh::bench(args).await
            }
            Cmd::Rollout(args) => rollout::bench(args).await,
            Cmd::Autoscale(args) => autoscale::bench(args).await,
            Cmd::NodeDeath(args) => {
                mesh::exec_where_the_harness_looks()?;
                node_death::bench(args).await
            }
            Cmd::Hollow(args) => hollow_bench(args).await,
            Cmd::Metrics(args) => metrics_bench(args).await,
            Cmd::Logs(args) => logs_bench(args).await,
        }
    };
    // Interrupted (Ctrl-C, or `timeout`'s SIGTERM): the benchmark's future is
    // dropped, and with it the stackd processes, engines and namespaces it
    // started (their Drop), instead of being left running.
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: stopped what the benchmark started"),
        _ = term.recv() => anyhow::bail!("terminated: stopped what the benchmark started"),
    }
}

/// `stackctl logs -f` against `docker logs -f`.
async fn logs_bench(args: LogsArgs) -> Result<()> {
    let r = logs::bench(args.lines, args.rounds).await?;
    let rate = |secs: &[f64]| -> Vec<f64> { secs.iter().map(|s| r.lines as f64 / s).collect() };
    let (mut docker, mut stackd) = (rate(&r.docker), rate(&r.stackd));
    let (d, s) = (median(&mut docker), median(&mut stackd));
    let body = format!(
        "Command: `bash bench/run.sh logs` (`stackd-bench logs --lines {lines} --rounds {rounds}`), release build, one \
         node (manager and agent) on this machine's engine. A task prints {lines} lines (`seq`) and sleeps; once the \
         engine holds them all, each round times a client that follows the log from its start until it received \
         every line, the two clients alternating.\n\n\
         | client | median | runs | ratio to the limit |\n|---|---|---|---|\n\
         | `docker logs -f CONTAINER` (the limit) | {d:.0} lines/s | {druns} | 1.00 |\n\
         | `stackctl logs -f SERVICE` | {s:.0} lines/s | {sruns} | {ratio:.2} |\n\n\
         stackd's lines go engine → agent → leader (on a connection of their own, in batches of up to 512 lines) → \
         client, each named by its task and node. Both read the same engine API (`GET /containers/ID/logs?follow=1`); \
         stackd can come out ahead of the `docker` CLI because it writes its output in batches, where the CLI writes \
         each frame as it comes.",
        lines = r.lines,
        rounds = args.rounds,
        druns = docker.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", "),
        sruns = stackd.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", "),
        ratio = s / d,
    );
    println!("{body}");
    if args.out.as_os_str() != "-" {
        write_section(&args.out, "logs", &body)?;
        println!("wrote {}", args.out.display());
    }
    Ok(())
}

/// The cost of `/metrics`.
async fn metrics_bench(args: MetricsArgs) -> Result<()> {
    let r = metrics::bench(args.tasks, args.scrapes, args.rounds).await?;
    let mut scrapes_ms: Vec<f64> = r.scrapes.iter().map(|s| s * 1000.0).collect();
    let p50 = median(&mut scrapes_ms);
    let p90 = scrapes_ms[(scrapes_ms.len() * 9 / 10).min(scrapes_ms.len() - 1)];
    let mut stats_ms: Vec<f64> = r.docker_stats.iter().map(|s| s * 1000.0).collect();
    let stats = median(&mut stats_ms);
    let body = format!(
        "Command: `bash bench/run.sh metrics` (`stackd-bench metrics --tasks {tasks} --scrapes {n} --rounds {rounds}`), \
         release build, one node (manager and agent) on this machine's engine with `--metrics-addr`, {tasks} running \
         tasks of `stackd-test/web:1`; {n} scrapes of `/metrics` one after the other (the classic text format), once \
         the agent's usage figures counted every task and were read once more.\n\n\
         | what | median | p90 | size |\n|---|---|---|---|\n\
         | `GET /metrics` | {p50:.2} ms | {p90:.2} ms | {bytes} bytes, {series} series |\n\
         | `docker stats --no-stream` of the same {tasks} containers (the limit the usage figures come from) | {stats:.0} ms ({stats_runs}) | | |\n\n\
         The node's CPU per scrape (user + system, from `/proc/PID/stat` over the {n} scrapes): {cpu:.2} ms. \
         The agent reads the engine's stats in the background every 10 s (8 containers at a time), so a scrape never \
         waits for the engine; its figures counted all {tasks} tasks {usage:.1} s after the deploy returned.",
        tasks = r.tasks,
        n = r.scrapes.len(),
        rounds = args.rounds,
        bytes = r.bytes,
        series = r.series,
        cpu = r.cpu_ms_per_scrape,
        usage = r.usage_after,
        stats_runs = fmt_s(&stats_ms.iter().map(|m| m / 1000.0).collect::<Vec<_>>()) + " s",
    );
    println!("{body}");
    if args.out.as_os_str() != "-" {
        write_section(&args.out, "metrics", &body)?;
        println!("wrote {}", args.out.display());
    }
    Ok(())
}

/// The Raft benchmark: every contender at every client count, one table.
async fn raft_bench(args: RaftArgs) -> Result<()> {
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    const NAMES: [&str; 3] = ["etcd", "etcd-tls", "stackd"];
    if let Some(o) = args.only.as_deref()
        && !NAMES.contains(&o)
    {
        anyhow::bail!("--only takes one of {NAMES:?}, not {o:?}");
    }
    let etcd_version = if wanted("etcd") || wanted("etcd-tls") { etcd::version()? } else { String::new() };
    let mut contenders = Vec::new();
    for (name, transport) in [("etcd", etcd::Transport::Plain), ("etcd-tls", etcd::Transport::Tls)] {
        if wanted(name) {
            eprintln!("starting 3 etcd members ({transport:?})");
            contenders.push(raft::Contender::Etcd(etcd::Cluster::start(3, transport).await?, transport));
        }
    }
    if wanted("stackd") {
        eprintln!("starting 3 stackd managers");
        contenders.push(raft::Contender::Stackd(cluster::Cluster::start(3).await?));
    }

    // Rounds interleave the contenders, so that a slow moment of this
    // machine does not fall on one of them only; the table has medians.
    // Each round starts with the next contender: with as many rounds as
    // contenders, each runs once in every place of the order (the run
    // before leaves its writeback and its warm caches to the one after).
    let mut samples: Vec<(usize, usize, Vec<raft::LoadResult>)> = Vec::new();
    let mut run = 0;
    for round in 1..=args.rounds.max(1) {
        for &clients in &args.clients {
            let n = contenders.len();
            for ci in (0..n).map(|k| (k + round - 1) % n) {
                let c = &contenders[ci];
                run += 1;
                eprintln!(
                    "round {round}: {}: {clients} client(s), {} writes after {} warm-up",
                    c.name(),
                    args.ops,
                    args.warmup
                );
                let op = c.op(run, args.value_len)?;
                let r = raft::run_load(move |i| op(i), clients, args.ops, args.warmup, &c.pids()).await;
                eprintln!(
                    "  {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, server CPU {}",
                    r.ops_per_sec,
                    ms(r.p50),
                    ms(r.p99),
                    r.errors,
                    r.cpu_ms_per_op(args.ops).map(|c| format!("{c:.3} ms/write")).unwrap_or_else(|| "unknown".into())
                );
                match samples.iter_mut().find(|(i, n, _)| *i == ci && *n == clients) {
                    Some((_, _, v)) => v.push(r),
                    None => samples.push((ci, clients, vec![r])),
                }
            }
        }
    }
    if args.hold {
        eprintln!("holding the contenders; press Enter to stop them");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    // Medians per contender and client count: (name, clients, writes/s, p50 ms, p99 ms, errors).
    let mut results: Vec<(&str, usize, f64, f64, f64, usize)> = Vec::new();
    let mut rows = String::new();
    for (ci, c) in contenders.iter().enumerate() {
        for &clients in &args.clients {
            let Some((_, _, v)) = samples.iter().find(|(i, n, _)| *i == ci && *n == clients) else { continue };
            let med = |f: &dyn Fn(&raft::LoadResult) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
            let (ops, p50, p99) = (med(&|r| r.ops_per_sec), med(&|r| ms(r.p50)), med(&|r| ms(r.p99)));
            let cpu = v.iter().all(|r| r.server_cpu.is_some()).then(|| {
                let per_op = med(&|r| r.cpu_ms_per_op(args.ops).unwrap_or(0.0));
                format!("{per_op:.3}")
            });
            let errors: usize = v.iter().map(|r| r.errors).sum();
            let all: Vec<String> = v.iter().map(|r| format!("{:.0}", r.ops_per_sec)).collect();
            rows.push_str(&format!(
                "| {} | {} | {clients} | {ops:.0} ({}) | {p50:.2} | {p99:.2} | {} | {errors} |\n",
                c.name(),
                c.op_description(),
                all.join(", "),
                cpu.as_deref().unwrap_or("–")
            ));
            results.push((c.name(), clients, ops, p50, p99, errors));
        }
    }
    drop(contenders);
    if args.only.is_some() {
        println!("{rows}");
        return Ok(());
    }
    let mut ratios = Vec::new();
    for &clients in &args.clients {
        let find = |name: &str| results.iter().find(|r| r.0 == name && r.1 == clients);
        for etcd in ["etcd (TLS)", "etcd"] {
            if let (Some(e), Some(s)) = (find(etcd), find("stackd")) {
                ratios.push(format!(
                    "{clients} client(s) against {etcd}: {:.2}× its writes/s, p50 {:.2}×, p99 {:.2}×",
                    s.2 / e.2,
                    s.3 / e.3,
                    s.4 / e.4
                ));
            }
        }
    }

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let clients: Vec<String> = args.clients.iter().map(|c| c.to_string()).collect();
    let body = format!(
        "Command: `bash bench/run.sh raft` (`stackd-bench raft --clients {} --ops {} --warmup {} --value-len {}`), release build, \
         {cpus} cores, one machine, every member on 127.0.0.1 with its data dir in the temp dir. \
         Each run: {} unmeasured writes, then {} measured writes of a {}-byte value under a fresh key, \
         from N concurrent clients, round-robin over the 3 members (writes to a follower are forwarded to the leader). \
         All contenders run in the same invocation, in {} rounds that take them in turn, each round starting with the next contender; the table gives the \
         median of the rounds (writes/s of each round in brackets). Server CPU: the user and system time of the \
         three members (all their threads) over the measured writes, from `/proc/PID/stat`, per write.\n\n\
         | contender | write | clients | writes/s | p50 (ms) | p99 (ms) | server CPU (ms/write) | errors |\n|---|---|---|---|---|---|---|---|\n\
         {rows}\n\
         etcd {etcd_version} (Debian's etcd-server), 3 members, its defaults (fsync per commit); `etcd (TLS)` has \
         TLS on client and peer URLs (peers with client certificates), as stackd always has. \
         stackd: 3 managers `stackd --no-agent` (release build, default Raft settings), each write a \
         `CreateObject` of a config named `b<run>-<i>` over TLS with the admin token, round-robin over the managers. \
         Goal: stackd at least etcd's throughput at no worse latency. stackd in this run: {}.",
        clients.join(","),
        args.ops,
        args.warmup,
        args.value_len,
        args.warmup,
        args.ops,
        args.value_len,
        args.rounds.max(1),
        ratios.join("; "),
    );
    println!("{body}");
    write_section(&args.out, "raft", &body)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The failover benchmark: `args.runs` kills of the leader.
async fn failover_bench(args: FailoverArgs) -> Result<()> {
    eprintln!("starting 3 stackd managers");
    let mut c = cluster::Cluster::start(3).await?;
    let mut times = Vec::new();
    let mut lines = Vec::new();
    for run in 1..=args.runs {
        let r = failover::run_once(&mut c, run).await?;
        let t = r.failover.as_secs_f64();
        eprintln!(
            "run {run}/{}: killed m{}, first write acknowledged after {t:.3} s (new leader m{})",
            args.runs,
            r.killed + 1,
            r.new_leader.map_or("?".to_string(), |l| (l + 1).to_string())
        );
        lines.push(format!("{t:.2}"));
        times.push(t);
    }
    drop(c);
    let med = median(&mut times.clone());
    let (min, max) = times.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let body = format!(
        "Command: `bash bench/run.sh failover` (`stackd-bench failover --runs {runs}`), release build, {cpus} cores, \
         3 managers `stackd --no-agent` on 127.0.0.1, default Raft timing (heartbeat 250 ms, election timeout \
         500–1000 ms after the leader's lease). A writer sends a `CreateObject` (a 128-byte config) every 20 ms, \
         round-robin over all three managers, each write in its own task. Each run kills the leader with \
         SIGKILL at t0 and measures the time to the first acknowledged write sent after t0; then the old leader \
         restarts (`stackd run`) and the next run waits until all three are reachable voters.\n\n\
         | runs | median (s) | min (s) | max (s) | all runs (s) |\n|---|---|---|---|---|\n\
         | {runs} | {med:.2} | {min:.2} | {max:.2} | {} |\n\n\
         Goal: median ≤ 2 s. Anchors, cited, not measured here: Docker Swarm's manager election alone takes \
         ~10 s; k3s with embedded etcd ~5 s.",
        lines.join(", "),
        runs = args.runs,
    );
    println!("{body}");
    write_section(&args.out, "failover", &body)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The hollow-node benchmark: one run.
async fn hollow_bench(args: HollowArgs) -> Result<()> {
    let r = hollow::run(
        args.nodes,
        args.services,
        args.replicas,
        args.one_replicas,
        Duration::from_secs(args.timeout),
        args.snapshot,
    )
    .await?;
    if let Some(s) = &r.snapshot {
        let tasks = r.services as u64 * r.replicas + r.one_replicas;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let body = format!(
            "Command: `bash bench/run.sh snapshot` (`stackd-bench hollow --snapshot`), release build, {cpus} cores: the \
             state of a hollow benchmark run (the setup of the Scale section; {tasks} tasks on {nodes} nodes, all running), in a 3-manager cluster.\n\n\
             | what | figure | goal |\n|---|---|---|\n\
             | `stackctl snapshot save FILE` (whole command: TLS, read barrier, encode, encrypt, stream, write) | {save:.2} s | ≤ 1 s |\n\
             | the file | {mib:.1} MiB ({per:.0} bytes per task) | |\n\
             | `stackctl snapshot inspect FILE --key-file KEY` (decrypt, decode, summarise) | {inspect:.2} s | |\n\
             | `stackd restore` (every manager killed) until `stackctl ps SERVICE` answers | {restore:.2} s | ≤ 5 s |\n",
            nodes = r.nodes,
            save = s.save_secs,
            mib = s.bytes as f64 / (1024.0 * 1024.0),
            per = s.bytes as f64 / tasks as f64,
            inspect = s.inspect_secs,
            restore = s.restore_secs,
        );
        println!("{body}");
        if args.out.as_os_str() != "-" {
            write_section(&args.out, "snapshot", &body)?;
        }
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let tasks = r.services as u64 * r.replicas;
    let rows: Vec<String> = r
        .managers
        .iter()
        .enumerate()
        .map(|(i, (cpu, peak, end))| {
            format!("| m{} | {cpu:.1} | {:.0} % | {peak:.0} | {end:.0} |", i + 1, 100.0 * cpu / r.place_secs)
        })
        .collect();
    let body = format!(
        "Command: `bash bench/run.sh hollow` (`stackd-bench hollow --nodes {nodes} --services {services} --replicas {replicas} \
         --one-replicas {one}`), release build, {cpus} cores, one machine: 3 managers `stackd --no-agent` on 127.0.0.1 and \
         {nodes} hollow nodes in the benchmark's process. A hollow node joins with the worker token (its own key and \
         certificate), holds a dispatcher session over TLS with that certificate, heartbeats at the period the manager \
         asks, and reports each task it is given `running`, in batches of up to 64 every 20 ms as the agent does, without \
         Docker. The services use `network_mode: none` (placement, dispatch and status; no overlay addresses).\n\n\
         | what | figure |\n|---|---|\n\
         | join of {nodes} nodes (16 at a time) | {join:.1} s |\n\
         | **{tasks} tasks ({services} services × {replicas}) placed and running** | **{place:.1} s** ({rate:.0} tasks/s) |\n\
         | one more service of {one} replicas, while they run | {one_secs:.2} s |\n\
         | Raft entries during the placement | {entries} ({eps:.0}/s) |\n\
         | hollow nodes ever seen down (ListNodes every second) | {down} |\n\
         | session losses / heartbeats acknowledged / failed | {serr} / {hb} / {hberr} |\n\
         | `UpdateTaskStatus` calls | {calls} |\n\n\
         | manager | CPU during placement (s) | of one core | peak RSS (MiB) | RSS at the end (MiB) |\n|---|---|---|---|---|\n\
         {rows}\n\n\
         Goal: 100,000 tasks on 1,000 nodes placed and running in ≤ 30 s, no node declared down. Anchors, cited, not \
         measured here: Nomad's C1M placed ~3,750 containers/s on 5,000 hosts; Kubernetes aims at 100 pods/s.",
        nodes = r.nodes,
        services = r.services,
        replicas = r.replicas,
        one = r.one_replicas,
        join = r.join_secs,
        place = r.place_secs,
        rate = tasks as f64 / r.place_secs,
        one_secs = r.one_secs,
        entries = r.entries,
        eps = r.entries_per_sec,
        down = r.down_seen,
        serr = r.session_errors,
        hb = r.heartbeats,
        hberr = r.heartbeat_errors,
        calls = r.report_calls,
        rows = rows.join("\n"),
    );
    println!("{body}");
    if args.out.as_os_str() != "-" {
        write_section(&args.out, "hollow", &body)?;
        eprintln!("wrote {}", args.out.display());
    }
    anyhow::ensure!(r.down_seen == 0, "{} hollow node(s) were declared down during the run", r.down_seen);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The deploy benchmark.
async fn deploy_bench(args: DeployArgs) -> Result<()> {
    let status = std::process::Command::new("bash").arg("tests/images/build.sh").status()?;
    anyhow::ensure!(status.success(), "tests/images/build.sh failed");
    let image = "stackd-test/web:1";
    let n = args.replicas;

    let docker = raw::connect().await?;
    let engine = raw::engine_version(&docker).await?;
    let node = stackd::Node::start().await?;
    let idle_rss = {
        tokio::time::sleep(Duration::from_secs(2)).await;
        node.rss_kib()?
    };
    let swarm = if args.no_swarm { None } else { swarm::Swarm::init().ok() };

    let (mut t_raw, mut t_stackd, mut t_swarm, mut loaded_rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut t_raw_net = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        let t = raw::deploy(&docker, image, n).await?;
        eprintln!("  raw docker API: {t:.2}s");
        t_raw.push(t);
        let t = raw::deploy_on(&docker, image, n, Some(raw::NETWORK)).await?;
        eprintln!("  raw, own network: {t:.2}s");
        t_raw_net.push(t);

        let t = node.deploy(image, n).await?;
        eprintln!("  stackd:         {t:.2}s");
        t_stackd.push(t);
        tokio::time::sleep(Duration::from_secs(2)).await;
        loaded_rss.push(node.rss_kib()? as f64);
        node.remove().await?;

        if let Some(s) = &swarm {
            match s.deploy(image, n) {
                Ok(t) => {
                    eprintln!("  docker swarm:   {t:.2}s");
                    t_swarm.push(t);
                }
                Err(e) => eprintln!("  docker swarm failed: {e:#}"),
            }
        }
    }
    drop(swarm);
    node.stop();

    let (m_raw, m_stackd) = (median(&mut t_raw.clone()), median(&mut t_stackd.clone()));
    let m_swarm = median(&mut t_swarm.clone());
    let m_raw_net = median(&mut t_raw_net.clone());
    let m_rss = median(&mut loaded_rss.clone()) / 1024.0;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut body = format!(
        "Command: `bash bench/run.sh deploy` (`stackd-bench deploy --replicas {n} --rounds {}`), release build, \
         {cpus} cores, Docker {engine}, image `{image}`. Each round deploys {n} replicas and removes them; \
         the contenders alternate within a round.\n\n\
         | contender | what is timed | median (s) | ratio to raw | rounds (s) |\n|---|---|---|---|---|\n\
         | raw Docker API | {n} concurrent create + start calls | {m_raw:.2} | 1.00 | {} |\n\
         | raw Docker API, own network | the same on a user-defined bridge network (a stack's containers have one) | {m_raw_net:.2} | {:.2} | {} |\n\
         | stackd | `stackctl deploy --wait` until {n} tasks run | {m_stackd:.2} | {:.2} | {} |\n",
        args.rounds,
        fmt_s(&t_raw),
        m_raw_net / m_raw,
        fmt_s(&t_raw_net),
        m_stackd / m_raw,
        fmt_s(&t_stackd),
    );
    if !t_swarm.is_empty() {
        body.push_str(&format!(
            "| Docker Swarm | `docker service create --replicas {n} --detach=false` | {m_swarm:.2} | {:.2} | {} |\n",
            m_swarm / m_raw,
            fmt_s(&t_swarm)
        ));
    }
    if !t_swarm.is_empty() {
        body.push_str(
            "\nSwarm's figure includes the docker CLI's check that the tasks stay up for 5 s after they start \
             (`verify: Waiting 5 seconds…`); stackd's `--wait` here uses `monitor: 0s`, so subtract about 5 s \
             from Swarm's median for the scheduling-and-start time alone.\n",
        );
    }
    body.push_str(&format!(
        "\nResident memory of the stackd process (manager + agent in one): idle {:.1} MiB; with {n} tasks running \
         (median) {m_rss:.1} MiB. Goal: ≤ 30 MiB (k3s' server uses ~1.5 GB).\n\n\
         Goal for the deploy time: stackd ≤ 1.15 × the raw calls on a network of their own (issue 16); in this run \
         {:.2}×. The second row is the same raw calls with each container on a user-defined bridge network, as a \
         stack's containers are (an address on the stack's network, Docker's embedded DNS): what the network \
         itself costs Docker, measured in the same run, and the limit any orchestrator with per-stack networks \
         meets. Against the default bridge (first row) the goal would lie below that cost.",
        idle_rss as f64 / 1024.0,
        m_stackd / m_raw_net,
    ));
    println!("{body}");
    write_section(&args.out, "deploy", &body)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
