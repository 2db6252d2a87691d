//! Several managers as separate `stackd` processes on their own addresses:
//! starting them (`init` + `join` with the manager token), their Raft status
//! (`stackctl cluster status`), the leader, killing and restarting them, and
//! stackctl against all of them at once.
//!
//! ```text
//!  Cluster::managers(3, &Opts::manager())
//!    m1: stackd init --listen 127.0.0.1:P1 --no-agent      (writes stackctl.env)
//!    m2: stackd join 127.0.0.1:P1 --token STK-1-… --listen 127.0.0.1:P2 --no-agent
//!    m3: …                                                  (learner → voter)
//!    wait: `cluster status` shows 3 voters and a leader
//!  cluster.stackctl(…)  STACKCTL_ADDR=https://P1,https://P2,https://P3
//!  cluster.nodes[i].stackctl(…)  that manager alone
//! ```
//!
//! Joined nodes write no `stackctl.env`: they use the first node's CA (as PEM
//! text, so it outlives the first node's dir) and admin token, with their own
//! address. Every process and data dir goes away when the [`Cluster`] (its
//! [`Node`]s) drops, panics included. With a [`Netns`] each manager runs in
//! its own namespace on `10.231.<k>.<i+1>:4280`, and its stackctl runs there
//! too.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::Netns;
use crate::{Node, bin, free_port, record_test_cluster};

/// How a node runs, on every start (`init`, `join`, `run`).
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// `--no-agent`: the manager role only (no Docker needed).
    pub no_agent: bool,
    /// Extra flags, such as `--raft-snapshot-every 50`.
    pub flags: Vec<String>,
    /// Extra environment variables, such as `DOCKER_HOST` (the node's own
    /// engine, see [`crate::engines`]).
    pub env: Vec<(String, String)>,
}

impl Opts {
    /// A manager without an agent, default Raft settings.
    pub fn manager() -> Opts {
        Opts { no_agent: true, ..Opts::default() }
    }

    /// Sets the environment variable `key` to `value` for the node's process.
    pub fn env(mut self, key: &str, value: &str) -> Opts {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds `--flag value`.
    pub fn flag(mut self, flag: &str, value: &str) -> Opts {
        self.flags.push(flag.to_string());
        self.flags.push(value.to_string());
        self
    }

    /// The command-line flags.
    pub(crate) fn flags(&self) -> Vec<String> {
        let mut f = self.flags.clone();
        if self.no_agent {
            f.push("--no-agent".to_string());
        }
        f
    }
}

/// Runs `cmd` (stdin from `input`), killing it after `timeout`; its output
/// (a killed process has no exit code) and how long it ran.
pub fn run_timeout(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Result<(Output, Duration)> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn")?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(data);
    }
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok((Output { status, stdout, stderr }, took))
}

/// How long one stackctl call may take in these tests.
pub const STACKCTL_TIMEOUT: Duration = Duration::from_secs(20);

/// stdout and stderr of an output, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

impl Node {
    /// `stackd init` a new cluster on a free 127.0.0.1 port with `opts`, and
    /// wait until it serves.
    pub fn init_opts(name: &str, opts: &Opts) -> Result<Node> {
        Node::init_at(name, opts, &format!("127.0.0.1:{}", free_port()), None)
    }

    /// `stackd init` listening on `addr`, inside namespace `netns` if given.
    pub fn init_at(name: &str, opts: &Opts, addr: &str, netns: Option<&str>) -> Result<Node> {
        Node::init_with(name, opts, &[], addr, netns)
    }

    /// `stackd init` with `extra` flags of `init` alone (`--autolock`).
    pub fn init_with(name: &str, opts: &Opts, extra: &[&str], addr: &str, netns: Option<&str>) -> Result<Node> {
        let dir = tempfile::Builder::new().prefix("stackd-test-").tempdir()?;
        let mut node = Node::new(dir, addr.to_string(), name, opts.clone(), netns.map(String::from));
        let mut args = vec!["init", "--listen", addr, "--name", name];
        args.extend_from_slice(extra);
        node.spawn(&args)?;
        node.wait_ready()?;
        record_test_cluster(&node.cluster_id());
        Ok(node)
    }

    /// Sets (or, with `None`, removes) an environment variable of the
    /// node's process from its next start on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.opts.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.opts.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Runs `stackd ARGS --data-dir DIR` for this node (not the node
    /// itself: `stackd unlock`), `input` on stdin, killed after 30 s.
    pub fn stackd_command(&self, args: &[&str], input: Option<&[u8]>) -> Result<Output> {
        let mut cmd = self.command(&bin("stackd"));
        cmd.args(args).arg("--data-dir").arg(&self.data);
        Ok(run_timeout(cmd, input, Duration::from_secs(30))?.0)
    }

    /// The node's `--data-dir`.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data
    }

    /// `stackd join` the cluster of `via` with `token` on a free 127.0.0.1
    /// port, and wait until the new node serves (not until it is a voter).
    pub fn join(via: &Node, token: &str, name: &str, opts: &Opts) -> Result<Node> {
        Node::join_at(via, token, name, opts, &format!("127.0.0.1:{}", free_port()), None)
    }

    /// `stackd join` listening on `addr`, inside namespace `netns` if given.
    pub fn join_at(via: &Node, token: &str, name: &str, opts: &Opts, addr: &str, netns: Option<&str>) -> Result<Node> {
        let dir = tempfile::Builder::new().prefix("stackd-test-").tempdir()?;
        let mut node = Node::new(dir, addr.to_string(), name, opts.clone(), netns.map(String::from));
        node.client_env = Some(portable_env(via)?);
        node.spawn(&["join", &via.addr, "--token", token, "--listen", addr, "--name", name])?;
        node.wait_ready()?;
        Ok(node)
    }

    /// Runs `stackd join` to `manager_addr` with `token` in a fresh dir and
    /// waits (at most 30 s) for it to exit: for joins that must fail. The
    /// node (its dir) and the exit status; the log is `node.log()`.
    pub fn join_expect_exit(manager_addr: &str, token: &str, name: &str, opts: &Opts) -> Result<(Node, ExitStatus)> {
        let dir = tempfile::Builder::new().prefix("stackd-test-").tempdir()?;
        let addr = format!("127.0.0.1:{}", free_port());
        let mut node = Node::new(dir, addr.clone(), name, opts.clone(), None);
        node.spawn(&["join", manager_addr, "--token", token, "--listen", &addr, "--name", name])?;
        let start = Instant::now();
        loop {
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                node.child = None;
                return Ok((node, status));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let log = node.log();
                node.kill9();
                bail!("stackd join did not exit within 30 s; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the manager answers `cluster status --stale` and knows a leader.
    pub(crate) fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status(true)
                && s["leader_id"].as_str().is_some_and(|l| !l.is_empty())
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("manager {} not serving with a leader after {timeout:?}; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node id from the node's identity file (empty before it has one).
    pub fn node_id(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("node.json")).unwrap_or_default();
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["node_id"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Whether the process was started and not killed by the harness.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// stackctl against this node alone, with `input` on stdin, killed after
    /// `timeout`.
    pub fn stackctl_timeout(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(Output, Duration)> {
        let mut cmd = self.command(&bin("stackctl"));
        client_env(&mut cmd, &self.stackctl_env()?);
        cmd.args(args);
        run_timeout(cmd, input, timeout)
    }

    /// This manager's `cluster status -o json` (`--stale`: its local view,
    /// else through the leader); `None` if it does not answer.
    pub fn status(&self, stale: bool) -> Option<Value> {
        let mut args = vec!["cluster", "status", "-o", "json"];
        if stale {
            args.push("--stale");
        }
        let (o, _) = self.stackctl_timeout(&args, None, Duration::from_secs(10)).ok()?;
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }
}

impl Node {
    /// This node's stackctl settings with the CA as PEM text: they keep
    /// working after its data dir is gone (a restored cluster has the same
    /// CA and tokens).
    pub fn portable_settings(&self) -> Result<Vec<(String, String)>> {
        portable_env(self)
    }

    /// `stackd restore --from FILE --key-file KEY` into a new data dir,
    /// listening on `addr`; stackctl reaches it with `settings` (a token of
    /// the saved cluster). Waits until it serves with a leader.
    pub fn restore_at(
        name: &str,
        opts: &Opts,
        addr: &str,
        from: &Path,
        key: &Path,
        settings: Vec<(String, String)>,
    ) -> Result<Node> {
        Node::restore_at_with(name, opts, addr, &from.to_string_lossy(), key, &[], settings, None)
    }

    /// The network namespace the node runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// [`Node::restore_at`] from `from` (a file or `s3://…`), with `extra`
    /// flags, inside namespace `netns` if given.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_at_with(
        name: &str,
        opts: &Opts,
        addr: &str,
        from: &str,
        key: &Path,
        extra: &[&str],
        settings: Vec<(String, String)>,
        netns: Option<&str>,
    ) -> Result<Node> {
        let dir = tempfile::Builder::new().prefix("stackd-test-").tempdir()?;
        let mut node = Node::new(dir, addr.to_string(), name, opts.clone(), netns.map(String::from));
        node.data = node.dir.path().join("data");
        node.client_env = Some(settings);
        let key = key.to_string_lossy().into_owned();
        let mut args = vec!["restore", "--from", from, "--key-file", &key, "--listen", addr, "--name", name];
        args.extend_from_slice(extra);
        node.spawn(&args)?;
        node.wait_serving(Duration::from_secs(60))?;
        Ok(node)
    }
}

/// Sets stackctl's variables on `cmd` (and nothing of the test process's own).
fn client_env(cmd: &mut Command, env: &[(String, String)]) {
    for key in ["STACKCTL_ADDR", "STACKCTL_CA", "STACKCTL_TOKEN"] {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// `via`'s stackctl settings with the CA as PEM text (valid after `via`'s dir is gone).
fn portable_env(via: &Node) -> Result<Vec<(String, String)>> {
    let mut env = via.stackctl_env()?;
    for (k, v) in env.iter_mut() {
        if k == "STACKCTL_CA" && Path::new(v.as_str()).exists() {
            *v = std::fs::read_to_string(&*v).with_context(|| format!("reading {v}"))?;
        }
    }
    Ok(env)
}

/// Managers of one cluster, each a separate process; see the module docs.
pub struct Cluster {
    /// The managers, in the order they were started (`nodes[0]` ran `init`).
    pub nodes: Vec<Node>,
    /// Namespaces of the nodes, by index, when they run in a [`Netns`].
    netns: Vec<String>,
    /// Node addresses in a [`Netns`] (`10.231.<k>.<i+1>`), by index.
    ns_addrs: Vec<String>,
}

impl Cluster {
    /// `n` managers with `opts` on 127.0.0.1: the first inits, the others
    /// join with the manager token; waits until all are voters under a leader.
    pub fn managers(n: usize, opts: &Opts) -> Result<Cluster> {
        let first = Node::init_opts("m1", opts)?;
        let mut c = Cluster { nodes: vec![first], netns: Vec::new(), ns_addrs: Vec::new() };
        for i in 1..n {
            c.add_manager(&format!("m{}", i + 1), opts)?;
        }
        c.wait_voters(n, Duration::from_secs(60))?;
        Ok(c)
    }

    /// `n` managers with `opts`, manager `i` in namespace `i` of `net` on
    /// `<its address>:4280`. `net` must outlive the cluster (declare it first).
    pub fn managers_netns(net: &Netns, n: usize, opts: &Opts) -> Result<Cluster> {
        anyhow::ensure!(net.nodes().len() >= n, "the Netns has {} namespaces, {n} needed", net.nodes().len());
        let mut c = Cluster::init_netns(net, "m1", opts)?;
        for i in 1..n {
            c.add_manager(&format!("m{}", i + 1), opts)?;
        }
        c.wait_voters(n, Duration::from_secs(60))?;
        Ok(c)
    }

    /// One node named `name` with `opts` in namespace 0 of `net` on
    /// `<its address>:4280` that inits a cluster and is ready; join more
    /// with [`Cluster::add_manager`] and [`Cluster::add_worker_with`] (the
    /// next namespaces). `net` must outlive the cluster (declare it first).
    pub fn init_netns(net: &Netns, name: &str, opts: &Opts) -> Result<Cluster> {
        let netns: Vec<String> = net.nodes().iter().map(|x| x.ns.clone()).collect();
        let ns_addrs: Vec<String> = net.nodes().iter().map(|x| format!("{}:4280", x.addr)).collect();
        anyhow::ensure!(!netns.is_empty(), "the Netns has no namespace");
        let first = Node::init_at(name, opts, &ns_addrs[0], Some(&netns[0]))?;
        Ok(Cluster { nodes: vec![first], netns, ns_addrs })
    }

    /// Joins one more manager (the next namespace, in a [`Netns`] cluster)
    /// and waits until it serves (not until it is a voter); its index.
    pub fn add_manager(&mut self, name: &str, opts: &Opts) -> Result<usize> {
        let token = self.join_token("manager")?;
        let i = self.nodes.len();
        let via = self.live_node().context("no live manager to join")?;
        let node = if self.netns.is_empty() {
            Node::join(via, &token, name, opts)?
        } else {
            anyhow::ensure!(i < self.netns.len(), "no namespace left for a manager");
            Node::join_at(via, &token, name, opts, &self.ns_addrs[i], Some(&self.netns[i]))?
        };
        self.nodes.push(node);
        Ok(i)
    }

    /// Joins a worker (with its agent: Docker needed) on its own address and
    /// waits until `node ls` shows it ready; its index. Its stackctl
    /// settings point at itself, which serves no control API until it is
    /// promoted.
    pub fn add_worker(&mut self, name: &str) -> Result<usize> {
        self.add_worker_with(name, &Opts::default())
    }

    /// [`Cluster::add_worker`] with `opts`; in a [`Netns`] cluster, in the
    /// next namespace on `<its address>:4280`.
    pub fn add_worker_with(&mut self, name: &str, opts: &Opts) -> Result<usize> {
        let token = self.join_token("worker")?;
        let via = self.live_node().context("no live manager to join")?;
        let dir = tempfile::Builder::new().prefix("stackd-test-").tempdir()?;
        let i = self.nodes.len();
        let (addr, netns) = if self.netns.is_empty() {
            (format!("127.0.0.1:{}", free_port()), None)
        } else {
            anyhow::ensure!(i < self.netns.len(), "no namespace left for a worker");
            (self.ns_addrs[i].clone(), Some(self.netns[i].clone()))
        };
        let mut node = Node::new(dir, addr.clone(), name, opts.clone(), netns);
        node.client_env = Some(portable_env(via)?);
        node.spawn(&["join", &via.addr, "--token", &token, "--listen", &addr, "--name", name])?;
        let start = Instant::now();
        loop {
            let o = self.stackctl_output(&["node", "ls", "-o", "json"], None)?;
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            if v.as_array().is_some_and(|a| a.iter().any(|n| n["name"] == name && n["state"] == "ready")) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("worker {name} not ready after 30 s; log:\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// `stackctl cluster join-token manager|worker`.
    pub fn join_token(&self, role: &str) -> Result<String> {
        let o = self.stackctl_output(&["cluster", "join-token", role], None)?;
        anyhow::ensure!(o.status.success(), "join-token failed: {}", text(&o));
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// The first node the harness has not killed.
    fn live_node(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.is_started())
    }

    /// Every manager's address, as `STACKCTL_ADDR` lists them.
    pub fn addrs(&self) -> String {
        self.nodes.iter().map(|n| format!("https://{}", n.addr)).collect::<Vec<_>>().join(",")
    }

    /// stackctl's settings with `STACKCTL_ADDR` = every manager.
    pub fn client_env(&self) -> Result<Vec<(String, String)>> {
        let mut env = portable_env(&self.nodes[0])?;
        env.retain(|(k, _)| k != "STACKCTL_ADDR");
        env.push(("STACKCTL_ADDR".to_string(), self.addrs()));
        Ok(env)
    }

    /// A stackctl command (run on the host) with [`Cluster::client_env`].
    pub fn stackctl_command(&self) -> Result<Command> {
        let mut cmd = Command::new(bin("stackctl"));
        client_env(&mut cmd, &self.client_env()?);
        Ok(cmd)
    }

    /// stackctl with every manager's address, `input` on stdin, killed
    /// after [`STACKCTL_TIMEOUT`].
    pub fn stackctl_output(&self, args: &[&str], input: Option<&[u8]>) -> Result<Output> {
        let mut cmd = self.stackctl_command()?;
        cmd.args(args);
        Ok(run_timeout(cmd, input, STACKCTL_TIMEOUT)?.0)
    }

    /// stackctl with every manager's address; must succeed; its stdout.
    pub fn stackctl(&self, args: &[&str]) -> String {
        let o = self.stackctl_output(args, None).expect("run stackctl");
        assert!(o.status.success(), "stackctl {args:?} failed ({}):\n{}\n{}", o.status, text(&o), self.logs());
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The index of the node with node id `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| !id.is_empty() && n.node_id() == id)
    }

    /// The leader as the running managers see it: a manager whose own
    /// `cluster status --stale` names itself leader with a quorum (the
    /// highest term if several do).
    pub fn leader(&self) -> Option<usize> {
        // All at once: a follower's status may wait for an unreachable leader.
        let statuses: Vec<Option<Value>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .map(|n| s.spawn(move || if n.is_started() { n.status(true) } else { None }))
                .collect();
            handles.into_iter().map(|h| h.join().ok().flatten()).collect()
        });
        let mut best: Option<(u64, usize)> = None;
        for (i, s) in statuses.iter().enumerate() {
            let Some(s) = s else { continue };
            let me = s["node_id"].as_str().unwrap_or_default();
            if !me.is_empty() && s["leader_id"].as_str() == Some(me) && s["has_quorum"] == true {
                let term = s["term"].as_u64().unwrap_or(0);
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits for a leader other than `not` (`None`: any). Every running
    /// manager is polled on its own thread, so that one slow to answer
    /// delays nothing.
    pub fn wait_leader(&self, not: Option<usize>, timeout: Duration) -> Result<usize> {
        let found: std::sync::Mutex<Option<(u64, usize)>> = std::sync::Mutex::new(None);
        let done = std::sync::atomic::AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| {
            for (i, n) in self.nodes.iter().enumerate().filter(|(i, n)| n.is_started() && Some(*i) != not) {
                let (found, done) = (&found, &done);
                s.spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::SeqCst) && start.elapsed() < timeout {
                        if let Some(st) = n.status(true) {
                            let me = st["node_id"].as_str().unwrap_or_default();
                            if !me.is_empty() && st["leader_id"].as_str() == Some(me) && st["has_quorum"] == true {
                                let term = st["term"].as_u64().unwrap_or(0);
                                let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                                if f.is_none_or(|(t, _)| term > t) {
                                    *f = Some((term, i));
                                }
                                done.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        match *found.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, i)) => Ok(i),
            None => bail!("no leader (other than {not:?}) after {timeout:?}\n{}", self.logs()),
        }
    }

    /// Waits until a running manager's `cluster status` (through the leader)
    /// shows `n` voters, all reachable, and a leader; the leader's index.
    pub fn wait_voters(&self, n: usize, timeout: Duration) -> Result<usize> {
        let start = Instant::now();
        let mut last = Value::Null;
        loop {
            for node in self.nodes.iter().filter(|x| x.is_started()) {
                let Some(s) = node.status(false) else { continue };
                let voters = s["managers"]
                    .as_array()
                    .map_or(0, |m| m.iter().filter(|m| m["voter"] == true && m["reachable"] == true).count());
                let leader = s["leader_id"].as_str().unwrap_or_default().to_string();
                if voters == n
                    && let Some(i) = self.index_of(&leader)
                {
                    return Ok(i);
                }
                last = s;
            }
            if start.elapsed() > timeout {
                bail!("not {n} voters and a leader after {timeout:?}; last status: {last}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Each running manager's `(state_hash, last_applied)` from its local view
    /// (`cluster status --stale`); `None` for one that does not answer.
    pub fn state_hashes(&self) -> Vec<Option<(String, u64)>> {
        self.nodes
            .iter()
            .filter(|n| n.is_started())
            .map(|n| {
                let s = n.status(true)?;
                Some((s["state_hash"].as_str()?.to_string(), s["last_applied"].as_u64()?))
            })
            .collect()
    }

    /// Waits until every running manager answers with the same state hash
    /// at the same applied index; that hash.
    pub fn wait_converged(&self, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            let hashes = self.state_hashes();
            if let Some(Some(first)) = hashes.first()
                && !first.0.is_empty()
                && hashes.iter().all(|h| h.as_ref() == Some(first))
            {
                return Ok(first.0.clone());
            }
            if start.elapsed() > timeout {
                bail!("managers did not converge after {timeout:?}: {hashes:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The config names manager `i` alone lists (`configs ls -o json`,
    /// linearizable through the leader unless `stale`).
    pub fn config_names(&self, i: usize, stale: bool) -> Result<Vec<String>> {
        let mut args = vec!["configs", "ls", "-o", "json"];
        if stale {
            args.push("--stale");
        }
        let (o, _) = self.nodes[i].stackctl_timeout(&args, None, STACKCTL_TIMEOUT)?;
        anyhow::ensure!(o.status.success(), "configs ls on {} failed: {}", self.nodes[i].name, text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).context("configs ls printed JSON")?;
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
            .unwrap_or_default())
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!("--- {} ({}, id {}) log tail:\n{}\n", n.name, n.addr, n.node_id(), tail.join("\n")));
        }
        out
    }
}
