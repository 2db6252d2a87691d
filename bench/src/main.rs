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
//! and 64 concurrent clients, round-robin over three members — etcd 3.4 today,
//! stackd's three managers once they form a cluster (see [`raft::Contender`]).
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

mod etcd;
mod raft;
mod raw;
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
    match cli.cmd {
        Cmd::Deploy(args) => deploy_bench(args).await,
        Cmd::Raft(args) => raft_bench(args).await,
    }
}

/// The Raft benchmark: every contender at every client count, one table.
async fn raft_bench(args: RaftArgs) -> Result<()> {
    let etcd_version = etcd::version()?;
    let mut contenders = Vec::new();
    eprintln!("starting 3 etcd members");
    contenders.push(raft::Contender::Etcd(etcd::Cluster::start(3).await?));
    // The stackd contender (3 managers, CreateObject) joins `contenders` here.

    let mut rows = String::new();
    let mut run = 0;
    for c in &contenders {
        for &clients in &args.clients {
            run += 1;
            eprintln!("{}: {clients} client(s), {} writes after {} warm-up", c.name(), args.ops, args.warmup);
            let op = c.op(run, args.value_len);
            let r = raft::run_load(move |i| op(i), clients, args.ops, args.warmup).await;
            eprintln!(
                "  {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                r.ops_per_sec,
                ms(r.p50),
                ms(r.p99),
                r.errors
            );
            rows.push_str(&format!(
                "| {} | {} | {clients} | {:.0} | {:.2} | {:.2} | {} |\n",
                c.name(),
                c.op_description(),
                r.ops_per_sec,
                ms(r.p50),
                ms(r.p99),
                r.errors
            ));
        }
    }
    drop(contenders);

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let clients: Vec<String> = args.clients.iter().map(|c| c.to_string()).collect();
    let body = format!(
        "Command: `bash bench/run.sh raft` (`stackd-bench raft --clients {} --ops {} --warmup {} --value-len {}`), release build, \
         {cpus} cores, one machine, every member on 127.0.0.1 with its data dir in the temp dir. \
         Each run: {} unmeasured writes, then {} measured writes of a {}-byte value under a fresh key, \
         from N concurrent clients, round-robin over the 3 members (writes to a follower are forwarded to the leader). \
         Contenders run in the same invocation, one after the other.\n\n\
         | contender | write | clients | writes/s | p50 (ms) | p99 (ms) | errors |\n|---|---|---|---|---|---|---|\n\
         {rows}\n\
         etcd {etcd_version} (Debian's etcd-server), 3 members, its defaults (fsync per commit), plaintext. \
         stackd: not measured yet — its contender (3 managers `--no-agent`, `CreateObject` over TLS) plugs in \
         once managers form a cluster (issue 4).",
        clients.join(","),
        args.ops,
        args.warmup,
        args.value_len,
        args.warmup,
        args.ops,
        args.value_len,
    );
    println!("{body}");
    write_section(&args.out, "raft", &body)?;
    eprintln!("wrote {}", args.out.display());
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
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        let t = raw::deploy(&docker, image, n).await?;
        eprintln!("  raw docker API: {t:.2}s");
        t_raw.push(t);

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
    let m_rss = median(&mut loaded_rss.clone()) / 1024.0;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut body = format!(
        "Command: `bash bench/run.sh deploy` (`stackd-bench deploy --replicas {n} --rounds {}`), release build, \
         {cpus} cores, Docker {engine}, image `{image}`. Each round deploys {n} replicas and removes them; \
         the contenders alternate within a round.\n\n\
         | contender | what is timed | median (s) | ratio to raw | rounds (s) |\n|---|---|---|---|---|\n\
         | raw Docker API | {n} concurrent create + start calls | {m_raw:.2} | 1.00 | {} |\n\
         | stackd | `stackctl deploy --wait` until {n} tasks run | {m_stackd:.2} | {:.2} | {} |\n",
        args.rounds,
        fmt_s(&t_raw),
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
         (median) {m_rss:.1} MiB. Goal: ≤ 30 MiB (k3s' server uses ~1.5 GB).\n\nGoal for the deploy time: stackd ≤ 1.3 × raw.",
        idle_rss as f64 / 1024.0
    ));
    println!("{body}");
    write_section(&args.out, "deploy", &body)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
