//! A stackd node (release build) as a process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::bin;

/// Removes what stackd clusters of earlier runs left on the engine: their
/// containers and networks (a network of a dead cluster holds its subnet,
/// and the new cluster's first deploy would fail with `Pool overlaps`).
/// The benchmark runs no other cluster on the engine.
fn remove_dead_clusters() -> Result<()> {
    let ids = |args: &[&str]| -> Result<Vec<String>> {
        let o = Command::new("docker").args(args).output().context("running docker")?;
        Ok(String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
    };
    let containers = ids(&["ps", "-aq", "--filter", "label=io.stackd.cluster"])?;
    if !containers.is_empty() {
        Command::new("docker").args(["rm", "-f"]).args(&containers).output()?;
    }
    let networks = ids(&["network", "ls", "-q", "--filter", "label=io.stackd.cluster"])?;
    if !networks.is_empty() {
        Command::new("docker").args(["network", "rm"]).args(&networks).output()?;
    }
    Ok(())
}

/// A running single-node cluster.
pub struct Node {
    child: Child,
    dir: tempfile::TempDir,
}

impl Node {
    /// `stackd init` in a temp dir; waits until the node is ready.
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`start`](Self::start) with more flags for `stackd init`.
    pub async fn start_with(extra: &[&str]) -> Result<Self> {
        remove_dead_clusters()?;
        let dir = tempfile::Builder::new().prefix("stackd-bench-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("stackd.log"))?;
        let child = Command::new(bin("stackd"))
            .args(["init", "--listen", &addr, "--name", "bench", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start the release stackd (run bench/run.sh, which builds it)")?;
        let node = Node { child, dir };
        let start = Instant::now();
        loop {
            // stackctl.env appears once the cluster is initialised.
            if let Ok(o) = node.stackctl(&["node", "ls", "-o", "json"])
                && o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("\"ready\"")
            {
                return Ok(node);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("stackd did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs stackctl with the settings of the node's `stackctl.env`
    /// (address, CA, admin token).
    pub(crate) fn stackctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = Command::new(bin("stackctl"));
        cmd.envs(self.stackctl_env()?);
        Ok(cmd.args(args).output()?)
    }

    /// The variables of the node's `stackctl.env` (address, CA, admin token).
    pub(crate) fn stackctl_env(&self) -> Result<Vec<(String, String)>> {
        let path = self.dir.path().join("stackctl.env");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect())
    }

    /// Deploys `n` replicas and waits until they run; returns the seconds taken.
    pub async fn deploy(&self, image: &str, n: usize) -> Result<f64> {
        let file = self.dir.path().join("bench.yml");
        // monitor 0s: --wait returns when the tasks run, as the raw timing does.
        std::fs::write(
            &file,
            format!(
                "services:\n  web:\n    image: {image}\n    deploy:\n      replicas: {n}\n      update_config:\n        monitor: 0s\n"
            ),
        )?;
        let path = file.display().to_string();
        let start = Instant::now();
        let o = self.stackctl(&["deploy", "-c", &path, "bench", "--wait", "--timeout", "5m"])?;
        let took = start.elapsed().as_secs_f64();
        if !o.status.success() {
            bail!("stackctl deploy failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(took)
    }

    /// The node's data dir (stack files go there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Removes the stack and waits until its containers are gone.
    pub async fn remove(&self) -> Result<()> {
        self.remove_stack("bench").await
    }

    /// Removes the stack `name` and waits until its containers are gone.
    pub async fn remove_stack(&self, name: &str) -> Result<()> {
        let o = self.stackctl(&["stack", "rm", name])?;
        if !o.status.success() {
            bail!("stack rm failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let start = Instant::now();
        loop {
            let o = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=io.stackd.stack={name}")])
                .output()?;
            if o.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("containers of the {name} stack are still there after 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The stackd process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the stackd process, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }

    /// Stops the node.
    pub fn stop(self) {
        // See Drop.
    }
}

/// A benchmark that fails half-way leaves no stackd behind (its containers
/// would be a stale cluster's, in the way of the next run).
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
