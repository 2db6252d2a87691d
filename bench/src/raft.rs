//! The Raft write benchmark: the same load against each contender — N
//! concurrent clients, a fixed number of writes after a warm-up, round-robin
//! over the three members — reporting throughput and latency percentiles.
//!
//! Contenders: etcd 3.4 (three members, `Put`, plaintext and TLS), and stackd
//! (three managers `--no-agent`, `CreateObject` of a config, over TLS with
//! the admin token).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{cluster, etcd};

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Successful operations per second over the measured phase.
    pub ops_per_sec: f64,
    /// Median latency of the successful operations.
    pub p50: Duration,
    /// 99th percentile latency of the successful operations.
    pub p99: Duration,
    /// Operations that failed (measured phase only).
    pub errors: usize,
    /// CPU time (user and system) the servers used during the measured
    /// phase, when it could be read.
    pub server_cpu: Option<Duration>,
}

impl LoadResult {
    /// Server CPU time per successful write, in milliseconds.
    pub fn cpu_ms_per_op(&self, ops: usize) -> Option<f64> {
        self.server_cpu.filter(|_| ops > 0).map(|c| c.as_secs_f64() * 1000.0 / ops as f64)
    }
}

/// CPU time (user and system, all threads) that processes `pids` used so
/// far, from `/proc/PID/stat` (in clock ticks of 1/100 s, Linux's USER_HZ);
/// `None` when one cannot be read.
pub fn cpu_time(pids: &[u32]) -> Option<Duration> {
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces: the fields follow its ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_millis(ticks * 10))
}

/// Runs `warmup` then `ops` calls of `op(i)` (`i` counts from 0 over both
/// phases, so every call gets its own index) with `clients` concurrent
/// callers; only the second phase is measured, and the CPU time of the
/// server processes `pids` over it.
pub async fn run_load<F, Fut>(op: F, clients: usize, ops: usize, warmup: usize, pids: &[u32]) -> LoadResult
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let clients = clients.max(1);
    phase(op.clone(), clients, 0, warmup).await;
    let cpu_before = cpu_time(pids);
    let start = Instant::now();
    let (mut lat, errors) = phase(op, clients, warmup, ops).await;
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = cpu_before.zip(cpu_time(pids)).map(|(a, b)| b.saturating_sub(a));
    lat.sort();
    LoadResult {
        ops_per_sec: if elapsed > 0.0 { lat.len() as f64 / elapsed } else { 0.0 },
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        errors,
        server_cpu,
    }
}

/// Calls `op(first..first + count)` from `clients` tasks that each take the
/// next index; returns the latencies of the successes and the error count.
async fn phase<F, Fut>(op: F, clients: usize, first: usize, count: usize) -> (Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut first_error) = (Vec::new(), 0usize, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let (mut lat, mut errors) = (Vec::with_capacity(count), 0);
    for t in tasks {
        match t.await {
            Ok((l, e, first_error)) => {
                lat.extend(l);
                errors += e;
                if let Some(err) = first_error {
                    eprintln!("    a client saw {e} error(s), the first: {err:#}");
                }
            }
            Err(join) => {
                eprintln!("    a client task failed: {join}");
                errors += 1;
            }
        }
    }
    (lat, errors)
}

/// The `q` quantile of sorted latencies (nearest rank); zero when empty.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A boxed write operation: `op(i)` writes the i-th value.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A write operation shared by all clients of a run.
pub type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

/// A replicated store under test: three members that each accept writes.
pub enum Contender {
    /// etcd 3.4, `KV.Put` over gRPC, plaintext or TLS.
    Etcd(etcd::Cluster, etcd::Transport),
    /// stackd's managers, `CreateObject` (a config) over TLS.
    Stackd(cluster::Cluster),
}

impl Contender {
    /// The name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Contender::Etcd(_, etcd::Transport::Plain) => "etcd",
            Contender::Etcd(_, etcd::Transport::Tls) => "etcd (TLS)",
            Contender::Stackd(_) => "stackd",
        }
    }

    /// The server processes, whose CPU time a run measures.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Contender::Etcd(cluster, _) => cluster.pids(),
            Contender::Stackd(cluster) => cluster.pids(),
        }
    }

    /// What one operation is, for the report.
    pub fn op_description(&self) -> &'static str {
        match self {
            Contender::Etcd(_, etcd::Transport::Plain) => "`KV.Put` (plaintext gRPC)",
            Contender::Etcd(_, etcd::Transport::Tls) => "`KV.Put` (gRPC over TLS)",
            Contender::Stackd(_) => "`CreateObject` config (gRPC over TLS)",
        }
    }

    /// The write of run `run`: `op(i)` writes key `b<run>-<i>` with a value of
    /// `value_len` bytes through member `i % members`.
    pub fn op(&self, run: usize, value_len: usize) -> Result<Op> {
        let value = vec![b'x'; value_len];
        Ok(match self {
            Contender::Etcd(cluster, _) => {
                let clients = cluster.clients();
                Arc::new(move |i: usize| -> OpFuture {
                    let mut client = clients[i % clients.len()].clone();
                    let (key, value) = (format!("b{run}-{i}").into_bytes(), value.clone());
                    Box::pin(async move { etcd::put(&mut client, key, value).await })
                })
            }
            Contender::Stackd(cluster) => {
                let clients = cluster.clients()?;
                Arc::new(move |i: usize| -> OpFuture {
                    let mut client = clients[i % clients.len()].clone();
                    let (name, value) = (format!("b{run}-{i}"), value.clone());
                    Box::pin(async move { cluster::create_config(&mut client, name, value).await })
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[tokio::test]
    async fn run_load_counts_every_index_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let r = run_load(
            move |i| {
                let s = s.clone();
                async move {
                    s.lock().expect("lock").push(i);
                    if i % 10 == 0 { anyhow::bail!("every tenth fails") } else { Ok(()) }
                }
            },
            8,
            100,
            20,
            &[std::process::id()],
        )
        .await;
        let mut seen = seen.lock().expect("lock").clone();
        seen.sort();
        assert_eq!(seen, (0..120).collect::<Vec<_>>());
        assert_eq!(r.errors, 10);
        assert!(r.ops_per_sec > 0.0);
        assert!(r.server_cpu.is_some(), "this process's CPU time could not be read");
    }

    #[test]
    fn cpu_time_reads_proc_and_misses_a_process_that_is_gone() {
        let me = cpu_time(&[std::process::id()]).expect("this process");
        // Burn some CPU: the count moves (ticks are 10 ms).
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time(&[std::process::id()]).expect("again") > me);
        assert_eq!(cpu_time(&[u32::MAX]), None);
    }
}
