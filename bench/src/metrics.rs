//! `metrics`: the cost of `/metrics` on a node running 100 tasks: the time
//! and bytes of a scrape, and the node's CPU per scrape; beside it, the
//! limit the agent's own figures come from: `docker stats --no-stream` of
//! the same containers (the agent reads them in the background, every
//! 10 s, so a scrape never waits for the engine).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::stackd::Node;

/// One scrape: seconds and bytes.
fn scrape(addr: &str) -> Result<(f64, usize)> {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).context("connecting to /metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let took = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&body);
    let (head, payload) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("/metrics answered {head}");
    }
    Ok((took, payload.len()))
}

/// CPU seconds (user + system) of a process.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

/// What the benchmark measured.
pub struct Report {
    pub tasks: usize,
    pub scrapes: Vec<f64>,
    pub bytes: usize,
    pub series: usize,
    pub cpu_ms_per_scrape: f64,
    pub docker_stats: Vec<f64>,
    /// Seconds from the deploy's end to usage figures that count every task.
    pub usage_after: f64,
}

/// Deploys `tasks` replicas on a fresh node with `--metrics-addr`, waits for
/// the agent's usage figures, then scrapes `scrapes` times in a row and
/// times `docker stats --no-stream` `rounds` times.
pub async fn bench(tasks: usize, scrapes: usize, rounds: usize) -> Result<Report> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let node = Node::start_with(&["--metrics-addr", &addr]).await?;
    node.deploy("stackd-test/web:1", tasks).await?;
    // The agent's usage figures count every task (read every 10 s), then one
    // more read (a CPU rate needs two).
    let deployed = Instant::now();
    let want = format!("stackd_task_running{{stack=\"bench\",service=\"web\",node=\"bench\"}} {tasks}");
    loop {
        let mut text = Vec::new();
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        s.read_to_end(&mut text)?;
        if String::from_utf8_lossy(&text).contains(&want) {
            break;
        }
        if deployed.elapsed() > Duration::from_secs(180) {
            bail!("the agent's figures do not count {tasks} running tasks after 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let usage_after = deployed.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_, bytes) = scrape(&addr)?;
    let mut text = Vec::new();
    {
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        s.read_to_end(&mut text)?;
    }
    let text = String::from_utf8_lossy(&text);
    let series = text.lines().filter(|l| !l.starts_with('#') && l.starts_with("stackd_")).count();

    let cpu_before = cpu_secs(node.pid()).context("reading the node's CPU")?;
    let mut times = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        times.push(scrape(&addr)?.0);
    }
    let cpu_after = cpu_secs(node.pid()).context("reading the node's CPU")?;
    let cpu_ms_per_scrape = (cpu_after - cpu_before) * 1000.0 / scrapes as f64;
    let mut docker_stats = Vec::new();
    let ids = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", "label=io.stackd.stack=bench"])
        .output()
        .context("docker ps")?;
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect();
    for _ in 0..rounds {
        let started = Instant::now();
        let o = std::process::Command::new("docker")
            .args(["stats", "--no-stream", "--format", "{{.ID}} {{.CPUPerc}} {{.MemUsage}}"])
            .args(&ids)
            .output()
            .context("docker stats")?;
        if !o.status.success() {
            bail!("docker stats failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        docker_stats.push(started.elapsed().as_secs_f64());
    }
    node.remove().await?;
    Ok(Report { tasks, scrapes: times, bytes, series, cpu_ms_per_scrape, docker_stats, usage_after })
}
