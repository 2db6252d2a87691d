//! A small HTTP/1.1 load generator: one new TCP connection per request
//! (`GET /`, `Connection: close`, read to EOF), open loop at a fixed rate or
//! closed loop with N concurrent connections.
//!
//! ```text
//!  open loop:   scheduler thread ── at t_k = t_0 + k/rate ──▶ spawn request k (tokio)
//!               latency_k = end_k − t_k   (from the scheduled time: a late send,
//!                                          a stalled runtime count against the path)
//!  closed loop: N tasks, each: connect, request, read to EOF, again, until the deadline
//! ```
//!
//! The schedule runs on an OS thread of its own (`std::thread::sleep` wakes
//! within tens of µs; tokio's timer has a 1 ms grain), which hands each
//! request to the runtime when it is due; how late that hand-over was is
//! reported too ([`Stats::send_lag`]), so a busy generator shows. Requests
//! go to the targets in turn (`k mod n`), and each target's latencies are
//! kept apart as well as together.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take (connect to EOF) before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests sent.
    pub sent: usize,
    /// Latencies of the successful requests, in order of completion.
    pub ok: Vec<Duration>,
    /// Latencies of the successful requests, per target (index into the targets).
    pub per_target: Vec<Vec<Duration>>,
    /// Failed requests by kind (`refused`, `reset`, `timeout`, `status`, …).
    pub errors: std::collections::BTreeMap<String, usize>,
    /// How late the scheduler handed requests to the runtime (open loop).
    pub send_lag: Vec<Duration>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
}

impl Stats {
    /// The failed requests.
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// Successful requests per second over the run.
    pub fn rate(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The errors as `kind×n, …`, or `0`.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".to_string();
        }
        self.errors.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    }
}

/// The `q` quantile (0..=1) of `v`, in milliseconds (nearest rank).
pub fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s: Vec<Duration> = v.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1].as_secs_f64() * 1000.0
}

/// One request on a new connection; `Err(kind)` on failure.
pub async fn request(addr: SocketAddr) -> Result<(), String> {
    get(addr).await.map(drop)
}

/// One request on a new connection: the whole answer (status line,
/// headers, body) when its status is 200; `Err(kind)` on failure.
pub async fn get(addr: SocketAddr) -> Result<Vec<u8>, String> {
    let io = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| kind("connect", &e))?;
        s.set_nodelay(true).map_err(|e| kind("connect", &e))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: stackd-bench\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| kind("write", &e))?;
        let mut buf = Vec::with_capacity(512);
        s.read_to_end(&mut buf).await.map_err(|e| kind("read", &e))?;
        if buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200") {
            Ok(buf)
        } else if buf.is_empty() {
            Err("empty answer".to_string())
        } else {
            Err("not 200".to_string())
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, io).await {
        Ok(r) => r,
        Err(_) => Err("timeout".to_string()),
    }
}

fn kind(step: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let what = match e.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset => "reset",
        K::TimedOut => "timed out",
        K::AddrNotAvailable => "no local address",
        K::HostUnreachable | K::NetworkUnreachable => "unreachable",
        _ => return format!("{step}: {e}"),
    };
    format!("{step} {what}")
}

/// Open loop: `rate` requests per second for `duration`, over `targets` in
/// turn; latency from each request's scheduled time.
pub async fn open_loop(targets: &[SocketAddr], rate: f64, duration: Duration) -> Stats {
    let n = (rate * duration.as_secs_f64()).round() as usize;
    let handle = tokio::runtime::Handle::current();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Result<Duration, String>)>();
    let targets_owned = targets.to_vec();
    let t0 = Instant::now() + Duration::from_millis(20);
    let scheduler = std::thread::spawn(move || {
        let mut lag = Vec::with_capacity(n);
        for k in 0..n {
            let at = t0 + Duration::from_secs_f64(k as f64 / rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            lag.push(Instant::now().saturating_duration_since(at));
            let t = k % targets_owned.len();
            let addr = targets_owned[t];
            let tx = tx.clone();
            handle.spawn(async move {
                let r = request(addr).await.map(|()| Instant::now().saturating_duration_since(at));
                let _ = tx.send((t, r));
            });
        }
        lag
    });
    let mut stats = Stats { sent: n, per_target: vec![Vec::new(); targets.len()], ..Stats::default() };
    let mut last = t0;
    for _ in 0..n {
        let Some((t, r)) = rx.recv().await else { break };
        last = Instant::now();
        match r {
            Ok(d) => {
                stats.ok.push(d);
                stats.per_target[t].push(d);
            }
            Err(e) => *stats.errors.entry(e).or_default() += 1,
        }
    }
    stats.send_lag =
        tokio::task::spawn_blocking(move || scheduler.join().unwrap_or_default()).await.unwrap_or_default();
    stats.elapsed = last.saturating_duration_since(t0);
    stats
}

/// Closed loop: `conns` tasks, each sending its next request when the last
/// one is answered, over `targets` in turn, for `duration`.
pub async fn closed_loop(targets: &[SocketAddr], conns: usize, duration: Duration) -> Stats {
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let targets = targets.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(usize, Result<Duration, String>)> = Vec::new();
            let mut k = c;
            while Instant::now() < deadline {
                let t = k % targets.len();
                k += conns;
                let start = Instant::now();
                let r = request(targets[t]).await.map(|()| start.elapsed());
                if r.is_err() {
                    // Do not spin on a refusing target.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                out.push((t, r));
            }
            out
        }));
    }
    let mut stats = Stats { per_target: vec![Vec::new(); targets.len()], ..Stats::default() };
    for task in tasks {
        for (t, r) in task.await.unwrap_or_default() {
            stats.sent += 1;
            match r {
                Ok(d) => {
                    stats.ok.push(d);
                    stats.per_target[t].push(d);
                }
                Err(e) => *stats.errors.entry(e).or_default() += 1,
            }
        }
    }
    stats.elapsed = t0.elapsed();
    stats
}

/// Waits until `addr` answers `n` requests in a row.
pub async fn wait_serving(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut row = 0;
    while row < n {
        match get(addr).await {
            Ok(_) => row += 1,
            Err(e) => {
                row = 0;
                if start.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!("{addr} does not answer after 60 s: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}
