//! `logs`: `stackctl logs -f` throughput, from a chatty task's log to the
//! client, against `docker logs -f` of the same container (the limit: the
//! engine's own reader, with nothing between it and the client).
//!
//! The task prints `--lines` lines at once, then sleeps; once the engine
//! holds them all, each round times a client that follows the log from the
//! start until it has received every line: `docker logs -f CONTAINER` and
//! `stackctl logs -f SERVICE`, alternating. With stackd, the lines go
//! engine → agent (bollard) → leader (PublishLogs, a connection of its own)
//! → client (Logs), in batches.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::bin;
use crate::stackd::Node;

/// What the benchmark measured: seconds per round, for each client.
pub struct Report {
    pub lines: usize,
    pub docker: Vec<f64>,
    pub stackd: Vec<f64>,
}

/// Runs `cmd` until `lines` newlines came on its stdout; the seconds taken.
fn follow(mut cmd: Command, lines: usize) -> Result<f64> {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("start the client")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = 0usize;
    while seen < lines {
        let n = out.read(&mut buf)?;
        if n == 0 {
            let _ = child.kill();
            bail!("the client stopped after {seen} of {lines} lines");
        }
        seen += buf[..n].iter().filter(|b| **b == b'\n').count();
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            bail!("{seen} of {lines} lines after 5 minutes");
        }
    }
    let took = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Ok(took)
}

/// Deploys the chatty task on a fresh node, waits until the engine holds
/// its `lines` lines, then runs `rounds` rounds of both clients.
pub async fn bench(lines: usize, rounds: usize) -> Result<Report> {
    let node = Node::start().await?;
    let file = node.dir().join("chatty.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  chatty:\n    image: stackd-test/busybox:1\n    command: [\"sh\", \"-c\", \"seq 1 {lines}; sleep 3600\"]\n"
        ),
    )?;
    let path = file.display().to_string();
    let o = node.stackctl(&["deploy", "-c", &path, "bench", "--wait", "--timeout", "2m"])?;
    if !o.status.success() {
        bail!("stackctl deploy failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let ps = Command::new("docker")
        .args(["ps", "-q", "--filter", "label=io.stackd.service=bench_chatty"])
        .output()
        .context("docker ps")?;
    let id = String::from_utf8_lossy(&ps.stdout).split_whitespace().next().context("the chatty container")?.to_string();
    // The engine holds every line once the last one is in the log.
    let want = lines.to_string();
    let started = Instant::now();
    loop {
        let o = Command::new("docker").args(["logs", "--tail", "1", &id]).output()?;
        if String::from_utf8_lossy(&o.stdout).trim() == want {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the chatty task did not print its {lines} lines in 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let env = node.stackctl_env()?;
    let mut report = Report { lines, docker: Vec::new(), stackd: Vec::new() };
    for round in 0..rounds {
        let docker = || {
            let mut c = Command::new("docker");
            c.args(["logs", "-f", &id]);
            c
        };
        let stackd = || {
            let mut c = Command::new(bin("stackctl"));
            c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).args(["logs", "-f", "bench_chatty"]);
            c
        };
        // Alternate which goes first.
        let order: [(bool, Command); 2] =
            if round % 2 == 0 { [(true, docker()), (false, stackd())] } else { [(false, stackd()), (true, docker())] };
        for (is_docker, cmd) in order {
            let took = tokio::task::spawn_blocking(move || follow(cmd, lines)).await??;
            if is_docker { report.docker.push(took) } else { report.stackd.push(took) }
        }
    }
    node.remove_stack("bench").await?;
    Ok(report)
}
