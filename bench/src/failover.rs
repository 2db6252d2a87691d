//! The failover benchmark: how long after `kill -9` of the leader the
//! cluster acknowledges a write again.
//!
//! ```text
//!  3 managers ── writer: every 20 ms a CreateObject (config f<run>-<n>) to the next
//!                address (round-robin over all three), each write in its own task
//!  t0 = kill -9 the leader
//!  failover = first acknowledgement of a write sent after t0, minus t0
//!  restart the old leader (stackd run), wait for 3 voters, next run
//! ```
//!
//! Writes sent after t0 to the dead manager fail at once (connection
//! refused); writes to the survivors wait for (or are refused until) a new
//! leader. Writes sent before t0 are not counted, whatever answers them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::{self, Cluster};

/// The writer's period.
const PERIOD: Duration = Duration::from_millis(20);
/// How long after the kill a run may take before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run measured.
pub struct Run {
    /// The killed leader's index.
    pub killed: usize,
    /// From the kill to the first acknowledged write sent after it.
    pub failover: Duration,
    /// The new leader's index, once known.
    pub new_leader: Option<usize>,
}

/// Writes every [`PERIOD`] until `stop`; the times writes sent after `t0`
/// (once set) were acknowledged go into `acks`.
struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    t0: Arc<Mutex<Option<Instant>>>,
    acks: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(cluster: &Cluster, run: usize) -> Result<Writer> {
        let clients = cluster.clients()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t0: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, t, a) = (stop.clone(), t0.clone(), acks.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0usize;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let mut client = clients[n % clients.len()].clone();
                let sent = Instant::now();
                let after_kill = t.lock().ok().and_then(|g| *g).is_some_and(|t0| sent >= t0);
                let a = a.clone();
                tokio::spawn(async move {
                    let r = cluster::create_config(&mut client, format!("f{run}-{n}"), vec![b'x'; 128]).await;
                    if r.is_ok()
                        && after_kill
                        && let Ok(mut acks) = a.lock()
                    {
                        acks.push(Instant::now());
                    }
                });
            }
        });
        Ok(Writer { stop, t0, acks, task })
    }

    fn first_ack(&self) -> Option<Instant> {
        self.acks.lock().ok().and_then(|a| a.iter().min().copied())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}

/// One run: kill the leader under the writer, time the first acknowledged
/// write after the kill, restart the old leader and wait for 3 voters.
pub async fn run_once(cluster: &mut Cluster, run: usize) -> Result<Run> {
    let leader = cluster.wait_voters(3, Duration::from_secs(60)).await?;
    let writer = Writer::start(cluster, run)?;
    // The writer is acknowledged before the kill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    *writer.t0.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))? = Some(t0);
    cluster.managers[leader].kill9();
    let first = loop {
        if let Some(t) = writer.first_ack() {
            break t;
        }
        if t0.elapsed() > RUN_TIMEOUT {
            bail!("run {run}: no write acknowledged within {RUN_TIMEOUT:?} of killing the leader");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    drop(writer);
    let failover = first.saturating_duration_since(t0);
    let mut new_leader = None;
    for i in (0..cluster.managers.len()).filter(|&i| i != leader) {
        if let Some(s) = cluster.status(i, true).await {
            new_leader = cluster.managers.iter().position(|m| m.node_id == s.leader_id);
            break;
        }
    }
    cluster.managers[leader].start().context("restarting the old leader")?;
    cluster.wait_voters(3, Duration::from_secs(60)).await?;
    // Let the restarted manager settle (its lease) before the next kill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Run { killed: leader, failover, new_leader })
}
