//! A cluster of real hosts on one machine: one Docker engine per node, each
//! in its node's network namespace of a [`Netns`], with the node's `stackd`
//! in the same namespace and on that engine.
//!
//! ```text
//!   host: bridge stkbr<pid> 10.231.<k>.254/24          main engine (untouched)
//!     ├── namespace stk<pid>n0, 10.231.<k>.1
//!     │     dockerd  --bip 10.232.<b>.1/24    state in $TMP/stackd-engine-<pid>-0/
//!     │     stackd init --listen 10.231.<k>.1:4280   DOCKER_HOST=unix://…-0/docker.sock
//!     ├── namespace stk<pid>n1, 10.231.<k>.2
//!     │     dockerd  --bip 10.232.<b+1>.1/24  state in $TMP/stackd-engine-<pid>-1/
//!     │     stackd join 10.231.<k>.1:4280 --listen 10.231.<k>.2:4280 (worker or manager)
//!     └── …
//!   $TMP/stackd-engine-<pid>-<i>/: daemon.json docker.sock docker.pid dockerd.log root/ exec/
//! ```
//!
//! Each engine is started with `nsenter --net=/var/run/netns/<ns>` (not
//! `ip netns exec`, which remounts `/sys` and hides the cgroup mounts:
//! dockerd fails with "Devices cgroup isn't mounted"), with a config file of
//! its own (the host's `/etc/docker/daemon.json` sets `data-root`) that
//! carries the main engine's storage driver, its own data-root, exec-root
//! (and so its own containerd), socket and pidfile, and a `--bip` of its
//! own: node `i` gets `10.232.<b+i>.1/24`, `b` the first octet from which
//! the nodes' /24s hold no host address. The engines start in parallel and
//! each loads the test images (`docker save` of the main engine, once per
//! harness, into `$TMP/stackd-engine-<pid>-images/`, deleted once loaded;
//! nothing is cached across runs).
//!
//! A test drives the nodes through [`Engines`]: stop, start or SIGKILL a
//! node's `stackd`; stop, start or SIGKILL its engine; cut and heal its link;
//! `docker -H` against its engine ([`Engines::docker`]).
//!
//! # Cleanup
//!
//! Dropping the [`Engines`] (panics included) stops every `stackd`, removes
//! every container of each engine, stops each engine (SIGTERM) and waits
//! until no process refers to its dir any more (its containerd, shims and
//! fuse-overlayfs mounts), kills what still does after 30 s (and the
//! processes in the cgroups of its containers), unmounts whatever is still
//! mounted under the dir (`/proc/self/mountinfo`) and deletes it; then the
//! namespaces go. Creating one first does the same for the dirs of
//! harnesses whose process is gone (a crashed run): an engine whose pidfile
//! names a live dockerd of that dir is stopped properly, a dead or foreign
//! pid is left alone and only the dir's own processes are killed.
//! After a run, `pgrep -a dockerd` shows the main engine only.
//!
//! Everything needs root and Docker ([`crate::netns::require_root`],
//! [`crate::require_docker`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::{Cluster, Opts, text};
use crate::netns::Netns;
use crate::{Node, build_images};

/// The images every node's engine gets.
pub const TEST_IMAGES: [&str; 5] = [
    "stackd-test/web:1",
    "stackd-test/web:2",
    "stackd-test/busybox:1",
    "stackd-test/web-health:1",
    "stackd-test/burn:1",
];

/// The prefix of an engine's dir in the temp dir: `stackd-engine-<pid>-<i>`
/// (and `stackd-engine-<pid>-images` for the images' archive).
const DIR_PREFIX: &str = "stackd-engine-";

/// How long an engine may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an engine and its containerd may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One node's Docker engine; see the module docs.
pub struct Engine {
    /// The node's namespace.
    pub ns: String,
    /// Its dir: config, socket, pidfile, log, data-root and exec-root.
    pub dir: PathBuf,
    /// Its `--bip` (`10.232.<b+i>.1/24`).
    pub bip: String,
    /// The storage driver (the main engine's).
    driver: String,
    /// The dockerd process (`nsenter` execs it), while the harness runs it.
    child: Option<Child>,
}

impl Engine {
    /// `unix://<dir>/docker.sock`: `DOCKER_HOST` for the node's stackd and `-H` for docker.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// A `docker -H <this engine>` command; add arguments.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(self.host()).stdin(Stdio::null());
        c
    }

    /// Whether the engine answers.
    pub fn answers(&self) -> bool {
        self.docker()
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The tail of its log, for messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Starts dockerd in the namespace (on the existing dir, if any) and
    /// waits until it answers.
    pub fn start(&mut self) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "engine in {} already started", self.ns);
        std::fs::create_dir_all(&self.dir)?;
        let config = self.dir.join("daemon.json");
        // An engine label naming the namespace: what `engine.labels.stackd-test.ns` constraints match.
        let labels = [format!("stackd-test.ns={}", self.ns)];
        std::fs::write(&config, serde_json::json!({ "storage-driver": self.driver, "labels": labels }).to_string())?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dockerd.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(self.dir.join("root"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("-H")
            .arg(self.host())
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--bip", &self.bip])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn nsenter dockerd")?;
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                bail!("engine in {} exited ({status}); log:\n{}", self.ns, self.log_tail());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!("engine in {} not answering after {START_TIMEOUT:?}; log:\n{}", self.ns, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Loads the images of `archive` (a `docker save` file).
    fn load(&self, archive: &Path) -> Result<()> {
        let o = self.docker().args(["load", "-q", "-i"]).arg(archive).output()?;
        anyhow::ensure!(o.status.success(), "docker load into the engine in {} failed: {}", self.ns, text(&o));
        Ok(())
    }

    /// Removes every container, stops the engine (SIGTERM) and waits until
    /// no process refers to its dir (containerd, shims); kills what remains
    /// after [`STOP_TIMEOUT`]. The dir stays: [`Engine::start`] again.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            // Killed or never started: nothing stops by itself (shims keep running).
            reap(&self.dir);
            return;
        };
        {
            if matches!(child.try_wait(), Ok(None)) {
                remove_containers(&self.docker());
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                let start = Instant::now();
                while matches!(child.try_wait(), Ok(None)) && start.elapsed() < STOP_TIMEOUT {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        wait_released(&self.dir, STOP_TIMEOUT);
        reap(&self.dir);
    }

    /// SIGKILLs dockerd: its containerd exits with it, the containers keep
    /// running (their shims stay) until the engine is started again or the
    /// harness drops.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the harness runs it (started, not stopped or killed).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Engine {
    /// Stops the engine, kills what is left of it, unmounts and deletes its dir.
    fn drop(&mut self) {
        self.stop();
        remove_dir(&self.dir);
    }
}

/// `docker rm -f` of every container `docker` (a `docker -H …` command) lists.
fn remove_containers(docker: &Command) {
    let with = |args: &[&str]| {
        let mut c = Command::new(docker.get_program());
        c.args(docker.get_args()).args(args).stdin(Stdio::null()).stderr(Stdio::null());
        c
    };
    let Ok(o) = with(&["ps", "-aq"]).output() else { return };
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect();
    if !ids.is_empty() {
        let _ = with(&["rm", "-f"]).args(&ids).stdout(Stdio::null()).status();
    }
}

/// The pids of the processes whose command line mentions `dir`.
fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle))
        })
        .collect()
}

/// Waits (at most `timeout`) until no process mentions `dir`.
fn wait_released(dir: &Path, timeout: Duration) {
    let start = Instant::now();
    while !processes_of(dir).is_empty() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ids of the containers an engine with data-root `<dir>/root` has.
fn container_ids(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("root").join("containers"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.len() == 64).collect())
        .unwrap_or_default()
}

/// SIGKILLs the processes in the cgroups of `dir`'s containers, then every
/// process that mentions `dir` (dockerd, containerd, shims, fuse-overlayfs):
/// for an engine that is dead or did not stop.
fn reap(dir: &Path) {
    let ids = container_ids(dir);
    if !ids.is_empty()
        && let Ok(entries) = std::fs::read_dir("/proc")
    {
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if ids.iter().any(|id| cgroup.contains(id.as_str())) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
    }
    for pid in processes_of(dir) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
    }
    wait_released(dir, Duration::from_secs(5));
}

/// The mount points under `dir`, deepest first (`/proc/self/mountinfo`).
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mount)
        .filter(|p| p.starts_with(&prefix) || *p == prefix.trim_end_matches('/'))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Unmounts what is still mounted under `dir` and deletes it.
fn remove_dir(dir: &Path) {
    for point in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&point).stderr(Stdio::null()).status();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The pid in an engine dir's name (`stackd-engine-<pid>-<i>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(DIR_PREFIX)?;
    let (pid, i) = rest.split_once('-')?;
    if pid.is_empty() || i.is_empty() || !(i == "images" || i.chars().all(|c| c.is_ascii_digit())) {
        return None;
    }
    pid.parse().ok()
}

/// SIGKILLs the stackd processes whose `DOCKER_HOST` is the engine of
/// `dir` and deletes their data dirs (`--data-dir`).
fn kill_stackds_of(dir: &Path) {
    let needle = format!("DOCKER_HOST=unix://{}/", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if !String::from_utf8_lossy(&environ).split('\0').any(|v| v.starts_with(&needle)) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = String::from_utf8_lossy(&cmdline).split('\0').map(String::from).collect();
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        let data = args.iter().position(|a| a == "--data-dir").and_then(|i| args.get(i + 1));
        if let Some(data) = data.filter(|d| d.starts_with(&std::env::temp_dir().display().to_string())) {
            let data = PathBuf::from(data);
            let start = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            remove_dir(&data);
        }
    }
}

/// Stops and removes the engines of harnesses whose process is gone (and
/// the stackd processes on them, with their data dirs).
fn clean_leftovers() {
    let me = std::process::id();
    let mut dead = Vec::new();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else { continue };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        kill_stackds_of(&dir);
        // A live dockerd of this dir: stop it properly; a dead or foreign pid: leave it alone.
        let engine = std::fs::read_to_string(dir.join("docker.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(epid) = engine {
            let cmdline = std::fs::read(format!("/proc/{epid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("dockerd") && cmdline.contains(&dir.display().to_string()) {
                let mut docker = Command::new("docker");
                docker.arg("-H").arg(format!("unix://{}", dir.join("docker.sock").display()));
                remove_containers(&docker);
                let _ = Command::new("kill").args(["-TERM", &epid.to_string()]).status();
                wait_released(&dir, STOP_TIMEOUT);
            }
        }
        reap(&dir);
        remove_dir(&dir);
        dead.push(format!("{}/", dir.display()));
    }
    // Data dirs of that harness's stackd processes that were already gone at
    // the crash: their log names the engine (`docker=unix://<dir>/docker.sock`).
    if dead.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("stackd-test-") || !e.path().is_dir() {
            continue;
        }
        let log = std::fs::read_to_string(e.path().join("stackd.log")).unwrap_or_default();
        if dead.iter().any(|d| log.contains(d.as_str())) {
            remove_dir(&e.path());
        }
    }
}

/// The main engine's storage driver (`docker info`).
fn storage_driver() -> Result<String> {
    let o = Command::new("docker").args(["info", "--format", "{{.Driver}}"]).output()?;
    anyhow::ensure!(o.status.success(), "docker info failed: {}", text(&o));
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The first `b` such that `10.232.<b>.0/24` … `10.232.<b+n-1>.0/24` hold no host address.
fn free_bips(n: usize) -> Result<u8> {
    let o = Command::new("ip").args(["-o", "-4", "addr", "show"]).output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    (1..=(255 - n) as u8)
        .find(|b| (0..n).all(|i| !text.contains(&format!(" 10.232.{}.", *b as usize + i))))
        .context("no free 10.232.<b>.0/24 range for the engines' bridges")
}

/// A cluster of `stackd` nodes, each with its own engine in its own
/// namespace; see the module docs. Node `i` is `cluster.nodes[i]`, in
/// namespace `i`, on engine `i`.
pub struct Engines {
    /// The nodes' stackd processes (dropped first).
    pub cluster: Cluster,
    /// One engine per node (stopped in parallel on drop, before the namespaces go).
    engines: Vec<Engine>,
    /// The test LAN (dropped last).
    pub net: Netns,
    /// The options the nodes were started with (for [`Engines::join_worker`]).
    opts: Opts,
}

impl Engines {
    /// `nodes` namespaces, each with an engine (started in parallel) that
    /// has the test images; node 0 inits the cluster (manager with agent),
    /// nodes `1..managers` join as managers, the rest as workers, each
    /// with `opts` plus `DOCKER_HOST` = its engine. Needs root and Docker.
    pub fn start(nodes: usize, managers: usize, opts: &Opts) -> Result<Engines> {
        Engines::start_joined(nodes, managers, nodes, opts)
    }

    /// [`Engines::start`], but only the first `joined` nodes join (at
    /// least the managers): the engines of the others run, their nodes
    /// join later, one at a time, with [`Engines::join_worker`].
    pub fn start_joined(nodes: usize, managers: usize, joined: usize, opts: &Opts) -> Result<Engines> {
        anyhow::ensure!(nodes >= 1 && managers >= 1 && managers <= nodes, "{nodes} nodes, {managers} managers");
        anyhow::ensure!((managers..=nodes).contains(&joined), "{joined} of {nodes} nodes joined, {managers} managers");
        anyhow::ensure!(!opts.no_agent, "every node of an engine cluster runs an agent");
        let net = Netns::new(nodes)?;
        clean_leftovers();
        build_images();
        let pid = std::process::id();
        let images = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-images"));
        remove_dir(&images);
        std::fs::create_dir_all(&images)?;
        let archive = images.join("images.tar");
        let saved = Command::new("docker").arg("save").arg("-o").arg(&archive).args(TEST_IMAGES).output();
        let saved = saved.map_err(anyhow::Error::from).and_then(|o| {
            anyhow::ensure!(o.status.success(), "docker save failed: {}", text(&o));
            Ok(())
        });
        let (driver, b) = match saved.and_then(|()| Ok((storage_driver()?, free_bips(nodes)?))) {
            Ok(v) => v,
            Err(e) => {
                remove_dir(&images);
                return Err(e);
            }
        };
        let mut engines: Vec<Engine> = net
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| Engine {
                ns: n.ns.clone(),
                dir: std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{i}")),
                bip: format!("10.232.{}.1/24", b as usize + i),
                driver: driver.clone(),
                child: None,
            })
            .collect();
        // Engines drop (stop) if anything below fails.
        let started: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = engines
                .iter_mut()
                .map(|e| {
                    let archive = &archive;
                    s.spawn(move || {
                        remove_dir(&e.dir);
                        e.start()?;
                        e.load(archive)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))).collect()
        });
        remove_dir(&images);
        if let Some(err) = started.into_iter().find_map(Result::err) {
            stop_all(&mut engines);
            return Err(err);
        }
        let node_opts = |e: &Engine| opts.clone().env("DOCKER_HOST", &e.host());
        let cluster = (|| {
            let mut cluster = Cluster::init_netns(&net, "n1", &node_opts(&engines[0]))?;
            for (i, e) in engines.iter().enumerate().take(joined).skip(1) {
                let name = format!("n{}", i + 1);
                if i < managers {
                    cluster.add_manager(&name, &node_opts(e))?;
                } else {
                    cluster.add_worker_with(&name, &node_opts(e))?;
                }
            }
            if managers > 1 {
                cluster.wait_voters(managers, Duration::from_secs(60))?;
            }
            Ok::<_, anyhow::Error>(cluster)
        })();
        let cluster = match cluster {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut engines);
                return Err(e);
            }
        };
        Ok(Engines { cluster, engines, net, opts: opts.clone() })
    }

    /// Joins the first node that has not joined yet (see
    /// [`Engines::start_joined`]) as a worker, `n<i+1>` on engine `i`, and
    /// waits until `node ls` shows it ready; its index `i`.
    pub fn join_worker(&mut self) -> Result<usize> {
        let i = self.cluster.nodes.len();
        anyhow::ensure!(i < self.engines.len(), "every node has joined");
        let opts = self.opts.clone().env("DOCKER_HOST", &self.engines[i].host());
        self.cluster.add_worker_with(&format!("n{}", i + 1), &opts)
    }

    /// Node `i`'s stackd.
    pub fn node(&self, i: usize) -> &Node {
        &self.cluster.nodes[i]
    }

    /// Node `i`'s engine.
    pub fn engine(&self, i: usize) -> &Engine {
        &self.engines[i]
    }

    /// A `docker -H <node i's engine>` command; add arguments.
    pub fn docker(&self, i: usize) -> Command {
        self.engines[i].docker()
    }

    /// Stops node `i`'s stackd (SIGTERM, SIGKILL after 10 s); its containers keep running.
    pub fn stop_stackd(&mut self, i: usize) {
        self.cluster.nodes[i].stop(Duration::from_secs(10));
    }

    /// SIGKILLs node `i`'s stackd.
    pub fn kill_stackd(&mut self, i: usize) {
        self.cluster.nodes[i].kill9();
    }

    /// Starts node `i`'s stackd again from its data dir (`stackd run`),
    /// without waiting for it.
    pub fn start_stackd(&mut self, i: usize) -> Result<()> {
        self.cluster.nodes[i].start()
    }

    /// Stops node `i`'s engine: its containers are removed, dockerd and its
    /// containerd exit; the engine's data stays for [`Engines::start_engine`].
    pub fn stop_engine(&mut self, i: usize) {
        self.engines[i].stop();
    }

    /// SIGKILLs node `i`'s engine (its containers keep running).
    pub fn kill_engine(&mut self, i: usize) {
        self.engines[i].kill9();
    }

    /// Starts node `i`'s engine again (after a stop or a kill: whatever is
    /// left of the previous one is killed first) and waits until it answers.
    pub fn start_engine(&mut self, i: usize) -> Result<()> {
        let e = &mut self.engines[i];
        e.stop();
        e.start()
    }

    /// Cuts node `i`'s link to the LAN.
    pub fn cut(&self, i: usize) -> Result<()> {
        self.net.cut(i)
    }

    /// Heals node `i`'s link.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.net.heal(i)
    }

    /// The names of the running containers carrying `label` (`key=value`)
    /// on node `i`'s engine.
    pub fn running(&self, i: usize, label: &str) -> Result<Vec<String>> {
        let o =
            self.docker(i).args(["ps", "--format", "{{.Names}}", "--filter"]).arg(format!("label={label}")).output()?;
        anyhow::ensure!(o.status.success(), "docker ps on node {i}'s engine failed: {}", text(&o));
        Ok(String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect())
    }

    /// The dirs of this harness's engines (for checks after a drop).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.engines.iter().map(|e| e.dir.clone()).collect()
    }
}

/// Stops and removes every engine, in parallel.
fn stop_all(engines: &mut Vec<Engine>) {
    std::thread::scope(|s| {
        for e in engines.drain(..) {
            s.spawn(move || drop(e));
        }
    });
}

impl Drop for Engines {
    fn drop(&mut self) {
        for n in &mut self.cluster.nodes {
            n.stop(Duration::from_secs(5));
        }
        stop_all(&mut self.engines);
    }
}

/// The dockerd processes whose command line mentions an engine dir of this
/// harness (`stackd-engine-`): none should be left after a drop.
pub fn harness_dockerds() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            (c.contains(DIR_PREFIX) && (c.contains("dockerd") || c.contains("containerd")))
                .then(|| format!("{pid} {c}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_of_engine_dirs() {
        assert_eq!(owner_pid("stackd-engine-1234-0"), Some(1234));
        assert_eq!(owner_pid("stackd-engine-1234-12"), Some(1234));
        assert_eq!(owner_pid("stackd-engine-1234-images"), Some(1234));
        assert_eq!(owner_pid("stackd-engine-1234"), None);
        assert_eq!(owner_pid("stackd-engine--0"), None);
        assert_eq!(owner_pid("stackd-engine-12a-0"), None);
        assert_eq!(owner_pid("stackd-test-abc"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/tmp/ab"), "/tmp/ab");
    }
}
