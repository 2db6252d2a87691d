//! The scale benchmark: **hollow nodes**, as Kubernetes' kubemark has them.
//!
//! ```text
//!  3 managers (cluster.rs, `--no-agent`)
//!  N hollow nodes in this process: each joins with the worker token (its own
//!    key, CSR and certificate), opens a dispatcher session over TLS with that
//!    certificate, heartbeats at the period the manager asks, answers image
//!    resolutions (`ReportImage`: a tag, no registry) and reports every task it
//!    is given `running` (and `shutdown` when told to stop), in batches, as the
//!    agent does — but starts no container
//!  deploy S services × R replicas (`network_mode: none`) with `stackctl deploy`
//!  poll ListServices until S × R tasks run; meanwhile sample the managers' CPU
//!    and RSS (/proc) and every node's state (ListNodes: none may be down)
//!  then: one more service (R' replicas) deployed while the others run
//! ```
//!
//! Interrupted, the benchmark stops its managers (see `main`).
//!
//! The hollow nodes share this machine's cores with the managers, so the
//! figure is a bound on what one machine does with both sides, not a
//! manager's limit. Services use `network_mode: none`: with an overlay
//! network, every node's view carries every endpoint of the network (and a
//! /24 holds 254 addresses); the benchmark measures placement, dispatch and
//! status, the manager's side of 100,000 tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use stackd_proto::v1;
use stackd_proto::v1::dispatcher_client::DispatcherClient;
use tonic::transport::Channel;

use crate::cluster::{Cluster, RPC_TIMEOUT};

/// Counters shared by the hollow nodes.
#[derive(Default)]
pub struct Stats {
    /// Sessions opened (the first of each node included).
    pub sessions: AtomicU64,
    /// Sessions that ended or failed to open.
    pub session_errors: AtomicU64,
    /// Status reports sent and acknowledged.
    pub reports: AtomicU64,
    /// `UpdateTaskStatus` calls acknowledged.
    pub report_calls: AtomicU64,
    /// Heartbeats acknowledged.
    pub heartbeats: AtomicU64,
    /// Heartbeats refused or failed.
    pub heartbeat_errors: AtomicU64,
    /// Task assignments received (a task counted each time it is sent).
    pub assigned: AtomicU64,
}

/// A joined hollow node: its identity and TLS config.
struct Identity {
    node_id: String,
    name: String,
    tls: Arc<rustls::ClientConfig>,
}

/// Joins `n` hollow nodes with `token`, `concurrency` at a time.
async fn join_all(cluster: &Cluster, token: &str, n: usize, concurrency: usize) -> Result<Vec<Identity>> {
    let ca = cluster.ca.clone();
    let joins = futures_util::stream::iter(0..n).map(|i| {
        let ca = ca.clone();
        let client = cluster.client(i % cluster.managers.len());
        let token = token.to_string();
        async move {
            let mut client = client?;
            let key = stackd_tls::NodeKey::generate().context("node key")?;
            let name = format!("hollow-{i:04}");
            let req = v1::JoinClusterRequest {
                token,
                csr_der: key.csr_der().context("CSR")?,
                name: name.clone(),
                addr: String::new(),
                resources: None,
                labels: Default::default(),
                no_agent: false,
            };
            let resp = tokio::time::timeout(RPC_TIMEOUT, client.join_cluster(req))
                .await
                .context("JoinCluster timed out")?
                .map_err(|s| anyhow::anyhow!("JoinCluster of {name}: {}", s.message()))?
                .into_inner();
            let creds = stackd_tls::Credentials::from_pem(&resp.cert_pem, &key.to_pem(), &resp.ca_pem)
                .context("the node's credentials")?;
            let tls = stackd_tls::client_config(&ca, Some(&creds)).context("TLS config")?;
            Ok::<_, anyhow::Error>(Identity { node_id: resp.node_id, name, tls })
        }
    });
    let mut out = Vec::with_capacity(n);
    let mut joins = joins.buffer_unordered(concurrency);
    while let Some(r) = joins.next().await {
        out.push(r?);
        if out.len() % 100 == 0 {
            eprintln!("  {} hollow nodes joined", out.len());
        }
    }
    Ok(out)
}

/// What a hollow node does with a task it is sent: the state to report, if any.
fn answer(t: &v1::Task) -> Option<v1::TaskState> {
    let state = t.status.as_ref().map_or(v1::TaskState::New, |s| s.state());
    let terminal = state >= v1::TaskState::Complete;
    match t.desired_state() {
        v1::DesiredState::Running if state < v1::TaskState::Running => Some(v1::TaskState::Running),
        v1::DesiredState::Shutdown if !terminal => Some(v1::TaskState::Shutdown),
        _ => None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Most reports per call, as the agent sends them.
const BATCH_MAX: usize = 64;
/// How long reports are collected before they are sent, as the agent does.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// One session of a hollow node, until it fails.
async fn session(id: &Identity, addr: &str, stats: &Stats) -> Result<(), tonic::Status> {
    let ch = stackd_tls::lazy_channel(addr, id.tls.clone()).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client: DispatcherClient<Channel> = DispatcherClient::new(ch);
    let desc = v1::NodeDescription {
        node_id: id.node_id.clone(),
        name: id.name.clone(),
        addr: String::new(),
        resources: Some(v1::Resources { nano_cpus: 64_000_000_000, memory_bytes: 256 << 30, ..Default::default() }),
        engine_version: "hollow".into(),
        role: v1::NodeRole::Worker.into(),
        ..Default::default()
    };
    let mut stream = client.session(v1::SessionRequest { description: Some(desc) }).await?.into_inner();
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    let mut session_id = String::new();
    let mut period = Duration::from_secs(1);
    let mut next_beat = tokio::time::Instant::now() + period;
    let mut pending: HashMap<String, v1::TaskState> = HashMap::new();
    let mut flush = tokio::time::interval(BATCH_WINDOW);
    let mut answered_images = std::collections::HashSet::new();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(msg) = msg? else { return Err(tonic::Status::unavailable("session ended")) };
                session_id = msg.session_id.clone();
                if msg.heartbeat_period_ms > 0 {
                    period = Duration::from_millis(msg.heartbeat_period_ms);
                }
                if let Some(a) = msg.assignments {
                    if a.full {
                        pending.clear();
                    }
                    stats.assigned.fetch_add(a.tasks.len() as u64, Ordering::Relaxed);
                    for t in &a.tasks {
                        if let Some(s) = answer(t) {
                            pending.insert(t.id.clone(), s);
                        }
                    }
                    for r in &a.removed {
                        pending.remove(r);
                    }
                }
                for img in msg.resolve_images {
                    if !answered_images.insert((img.service_id.clone(), img.revision)) {
                        continue;
                    }
                    let pin = v1::ImagePin {
                        kind: v1::ImagePinKind::Tag.into(),
                        reference: String::new(),
                        reason: "hollow node: no registry".into(),
                    };
                    let req = v1::ReportImageRequest {
                        node_id: id.node_id.clone(),
                        session_id: session_id.clone(),
                        service_id: img.service_id,
                        revision: img.revision,
                        pin: Some(pin),
                    };
                    client.report_image(req).await?;
                }
            }
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat = tokio::time::Instant::now() + period;
                let req = v1::HeartbeatRequest { node_id: id.node_id.clone(), session_id: session_id.clone() };
                match tokio::time::timeout(Duration::from_secs(5), client.heartbeat(req)).await {
                    Ok(Ok(_)) => { stats.heartbeats.fetch_add(1, Ordering::Relaxed); }
                    Ok(Err(s)) => { stats.heartbeat_errors.fetch_add(1, Ordering::Relaxed); return Err(s); }
                    Err(_) => { stats.heartbeat_errors.fetch_add(1, Ordering::Relaxed); }
                }
            }
            _ = flush.tick(), if !pending.is_empty() => {
                let ids: Vec<String> = pending.keys().take(BATCH_MAX).cloned().collect();
                let updates: Vec<v1::TaskStatusReport> = ids
                    .iter()
                    .map(|tid| v1::TaskStatusReport {
                        task_id: tid.clone(),
                        status: Some(v1::TaskStatus {
                            state: pending[tid].into(),
                            timestamp: now_ms(),
                            message: "hollow".into(),
                            container_id: format!("hollow-{tid}"),
                            ..Default::default()
                        }),
                    })
                    .collect();
                let n = updates.len() as u64;
                let req = v1::UpdateTaskStatusRequest { node_id: id.node_id.clone(), session_id: session_id.clone(), updates };
                client.update_task_status(req).await?;
                for tid in ids {
                    pending.remove(&tid);
                }
                stats.reports.fetch_add(n, Ordering::Relaxed);
                stats.report_calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A hollow node: sessions, one after the other, at the leader.
async fn hollow_node(id: Identity, leader: Arc<Mutex<String>>, stats: Arc<Stats>) {
    loop {
        let addr = leader.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let err = match session(&id, &addr, &stats).await {
            Ok(()) => continue,
            Err(s) => s,
        };
        stats.session_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = err.metadata().get(stackd_proto::metadata::LEADER).and_then(|v| v.to_str().ok()) {
            *leader.lock().unwrap_or_else(|p| p.into_inner()) = l.to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a node is one of the hollow nodes (not a manager).
fn is_hollow(n: &v1::Node) -> bool {
    n.name.starts_with("hollow-")
}

/// CPU seconds (user + system) and resident KiB of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, rss))
}

/// The stack file of `services` services of `replicas` replicas each.
fn stack_file(prefix: &str, services: usize, replicas: u64) -> String {
    let mut s = String::from("services:\n");
    for i in 0..services {
        s.push_str(&format!(
            "  {prefix}{i:03}:\n    image: busybox:1\n    network_mode: none\n    deploy:\n      replicas: {replicas}\n"
        ));
    }
    s
}

/// Running and desired task counts of a stack's services.
async fn progress(client: &mut crate::cluster::Client, stack: &str) -> Option<(u64, u64)> {
    let req = v1::ListServicesRequest { stack: stack.into(), stale: true };
    let r = tokio::time::timeout(RPC_TIMEOUT, client.list_services(req)).await.ok()?.ok()?.into_inner();
    Some(r.services.iter().fold((0, 0), |(run, want), s| (run + s.running, want + s.desired)))
}

/// Deploys `file` as `stack` and waits until `want` tasks run; the seconds
/// from the deploy command to that.
async fn deploy_and_wait(
    cluster: &Cluster,
    client: &mut crate::cluster::Client,
    stack: &str,
    file: &str,
    want: u64,
    timeout: Duration,
    mut sample: impl FnMut(),
) -> Result<f64> {
    let path = cluster.dir().join(format!("{stack}.yml"));
    std::fs::write(&path, file)?;
    let start = Instant::now();
    let o = cluster.stackctl(&["deploy", "-c", &path.display().to_string(), stack])?;
    if !o.status.success() {
        bail!("stackctl deploy {stack}: {}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!("  deploy of {stack} accepted after {:.2} s", start.elapsed().as_secs_f64());
    let mut last_print = Instant::now();
    loop {
        sample();
        if let Some((run, desired)) = progress(client, stack).await {
            if run >= want && desired == want {
                return Ok(start.elapsed().as_secs_f64());
            }
            if last_print.elapsed() > Duration::from_secs(2) {
                eprintln!("  {:6.1} s: {run}/{want} running", start.elapsed().as_secs_f64());
                last_print = Instant::now();
            }
        }
        if start.elapsed() > timeout {
            bail!("{stack}: not {want} tasks running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What one run measured.
pub struct Report {
    pub nodes: usize,
    pub services: usize,
    pub replicas: u64,
    pub join_secs: f64,
    pub place_secs: f64,
    pub one_secs: f64,
    pub one_replicas: u64,
    /// Per manager: CPU seconds over the placement, peak RSS in MiB, RSS at the end in MiB.
    pub managers: Vec<(f64, f64, f64)>,
    pub entries_per_sec: f64,
    pub entries: u64,
    pub down_seen: usize,
    pub session_errors: u64,
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
    pub report_calls: u64,
    /// With `--snapshot`: the cluster snapshot of that state.
    pub snapshot: Option<SnapshotFigures>,
}

/// Save, inspect and restore of the state with every task running.
pub struct SnapshotFigures {
    /// The file's size.
    pub bytes: u64,
    /// `stackctl snapshot save FILE`, whole command.
    pub save_secs: f64,
    /// `stackctl snapshot inspect FILE --key-file KEY`, whole command.
    pub inspect_secs: f64,
    /// From `stackd restore` starting to `stackctl ps SERVICE` answering.
    pub restore_secs: f64,
}

/// Times a `stackctl` command that must succeed.
fn timed(cluster: &Cluster, args: &[&str]) -> Result<f64> {
    let t = Instant::now();
    let out = cluster.stackctl(args)?;
    anyhow::ensure!(out.status.success(), "stackctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(t.elapsed().as_secs_f64())
}

/// Save, inspect, then restore (every manager killed first).
async fn snapshot_figures(cluster: &mut Cluster) -> Result<SnapshotFigures> {
    let file = cluster.dir().join("state.snap");
    let path = file.to_string_lossy().into_owned();
    eprintln!("saving a snapshot");
    let save_secs = timed(cluster, &["snapshot", "save", &path])?;
    let bytes = std::fs::metadata(&file)?.len();
    eprintln!("  {bytes} bytes in {save_secs:.2} s; inspecting it with the key");
    let key = cluster.recovery_key().to_string_lossy().into_owned();
    let inspect_secs = timed(cluster, &["snapshot", "inspect", &path, "--key-file", &key])?;
    eprintln!("  {inspect_secs:.2} s; killing the managers and restoring");
    let restore_secs = cluster.restore(&file, "scale_s000", Duration::from_secs(300)).await?.as_secs_f64();
    eprintln!("  the restored manager serves `stackctl ps` after {restore_secs:.2} s");
    Ok(SnapshotFigures { bytes, save_secs, inspect_secs, restore_secs })
}

/// The benchmark: see the module docs.
pub async fn run(
    nodes: usize,
    services: usize,
    replicas: u64,
    one_replicas: u64,
    timeout: Duration,
    snapshot: bool,
) -> Result<Report> {
    eprintln!("starting 3 stackd managers");
    let mut cluster = Cluster::start(3).await?;
    let leader_ix = cluster.wait_voters(3, Duration::from_secs(30)).await?;
    let mut client = cluster.client(leader_ix)?;
    let token = client
        .get_join_token(v1::GetJoinTokenRequest { role: v1::NodeRole::Worker.into(), rotate: false })
        .await
        .context("GetJoinToken")?
        .into_inner()
        .token;
    eprintln!("joining {nodes} hollow nodes");
    let t = Instant::now();
    let ids = join_all(&cluster, &token, nodes, 16).await?;
    let join_secs = t.elapsed().as_secs_f64();
    eprintln!("  joined in {join_secs:.1} s");
    let leader = Arc::new(Mutex::new(cluster.managers[leader_ix].addr.clone()));
    let stats = Arc::new(Stats::default());
    let handles: Vec<_> =
        ids.into_iter().map(|id| tokio::spawn(hollow_node(id, leader.clone(), stats.clone()))).collect();
    // Every node ready.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client.list_nodes(v1::ListNodesRequest::default()).await.context("ListNodes")?.into_inner();
        let ready = r.nodes.iter().filter(|n| is_hollow(n) && n.state() == v1::NodeState::Ready).count();
        if ready >= nodes {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {nodes} hollow nodes ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("all {nodes} hollow nodes ready ({} sessions)", stats.sessions.load(Ordering::Relaxed));

    // A watcher of node states: any hollow node seen down counts.
    let down_seen = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (down_seen, watching, mut c) = (down_seen.clone(), watching.clone(), cluster.client(leader_ix)?);
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                if let Ok(Ok(r)) =
                    tokio::time::timeout(RPC_TIMEOUT, c.list_nodes(v1::ListNodesRequest::default())).await
                {
                    let mut seen = down_seen.lock().unwrap_or_else(|p| p.into_inner());
                    for n in r.into_inner().nodes.iter().filter(|n| is_hollow(n) && n.state() != v1::NodeState::Ready) {
                        seen.insert(n.name.clone());
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let pids = cluster.pids();
    let before: Vec<(f64, u64)> = pids.iter().map(|p| proc_usage(*p).unwrap_or_default()).collect();
    let mut peak: Vec<u64> = before.iter().map(|b| b.1).collect();
    let index_before = cluster.status(leader_ix, true).await.map_or(0, |s| s.last_log_index);
    let want = services as u64 * replicas;
    eprintln!("deploying {services} services × {replicas} replicas");
    let place_secs =
        deploy_and_wait(&cluster, &mut client, "scale", &stack_file("s", services, replicas), want, timeout, || {
            for (i, p) in pids.iter().enumerate() {
                if let Some((_, rss)) = proc_usage(*p) {
                    peak[i] = peak[i].max(rss);
                }
            }
        })
        .await?;
    let after: Vec<(f64, u64)> = pids.iter().map(|p| proc_usage(*p).unwrap_or_default()).collect();
    let index_after = cluster.status(leader_ix, true).await.map_or(0, |s| s.last_log_index);
    eprintln!("{want} tasks running after {place_secs:.2} s");
    let entries = index_after.saturating_sub(index_before);

    eprintln!("deploying one more service ({one_replicas} replicas) while they run");
    let one_secs = deploy_and_wait(
        &cluster,
        &mut client,
        "one",
        &stack_file("o", 1, one_replicas),
        one_replicas,
        Duration::from_secs(120),
        || {},
    )
    .await?;
    eprintln!("  running after {one_secs:.2} s");
    // A few more heartbeat periods under the full load.
    tokio::time::sleep(Duration::from_secs(5)).await;
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;
    let r = client.list_nodes(v1::ListNodesRequest::default()).await.context("ListNodes")?.into_inner();
    let mut down = down_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    down.extend(r.nodes.iter().filter(|n| is_hollow(n) && n.state() != v1::NodeState::Ready).map(|n| n.name.clone()));
    let managers: Vec<(f64, f64, f64)> = pids
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let end = proc_usage(*p).unwrap_or_default();
            (after[i].0 - before[i].0, peak[i] as f64 / 1024.0, end.1 as f64 / 1024.0)
        })
        .collect();
    // The session figures of the run itself: the snapshot phase kills the managers.
    let (session_errors, heartbeats, heartbeat_errors, report_calls) = (
        stats.session_errors.load(Ordering::Relaxed),
        stats.heartbeats.load(Ordering::Relaxed),
        stats.heartbeat_errors.load(Ordering::Relaxed),
        stats.report_calls.load(Ordering::Relaxed),
    );
    let snapshot = if snapshot { Some(snapshot_figures(&mut cluster).await?) } else { None };
    for h in handles {
        h.abort();
    }
    Ok(Report {
        nodes,
        services,
        replicas,
        join_secs,
        place_secs,
        one_secs,
        one_replicas,
        managers,
        entries_per_sec: entries as f64 / place_secs,
        entries,
        down_seen: down.len(),
        session_errors,
        heartbeats,
        heartbeat_errors,
        report_calls,
        snapshot,
    })
}
