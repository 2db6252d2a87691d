//! Cluster test harness: real `stackd` processes against the real Docker
//! engine. Docker is never mocked here.
//!
//! # Layout
//!
//! - [`Node`]: one `stackd` process with its own data dir and address; kill
//!   it with SIGKILL, start it again from its data dir.
//! - [`docker`]: what the engine sees (containers and networks by label),
//!   and commands run inside a container.
//! - [`require_docker`] / [`build_images`]: preconditions. With `CI=true` a
//!   missing engine fails the test instead of skipping it.
//! - [`netns`]: a bridge and one network namespace per node, to run
//!   processes on their own addresses and cut a node off the network and
//!   heal it (partition tests; root only).
//! - [`cluster`]: several managers as separate processes ([`Opts`],
//!   [`Node::init_opts`], [`Node::join`]), their Raft status, the leader,
//!   and stackctl against all of them.
//! - [`engines`]: one Docker engine per node, each in its node's network
//!   namespace, with the node's `stackd` on it (multi-host tests; root only).
//! - [`mesh_client`]: a client of such a cluster's routing mesh that polls
//!   published ports while tasks move, and what to print when a request
//!   fails (the nodes' kernels while it hung, their logs around it).
//! - [`task_rows`]: the fields of the task rows `stackctl ps -o json` prints.
//! - [`browser`]: headless chromium through chromedriver (WebDriver), trusting
//!   the cluster's CA: the status page as a browser sees it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod browser;
pub mod cluster;
pub mod engines;
pub mod mesh_client;
pub mod netns;
pub mod task_rows;

pub use cluster::{Cluster, Opts};

/// The directory of the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// The path of a workspace binary, which must be built (`cargo build --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} is not built: run `cargo build --workspace` first (scripts/test.sh does)", p.display());
    p
}

/// Whether the Docker engine answers. With `CI=true` a missing engine panics:
/// CI must run the Docker tests, not skip them.
pub fn require_docker() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the Docker engine is not reachable: the Docker tests must run in CI");
        }
        eprintln!("SKIPPED: the Docker engine is not reachable");
    }
    ok
}

/// Builds the test images once per test binary (tests/images/build.sh is idempotent).
pub fn build_images() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/build.sh");
        let out = Command::new("bash").arg(&script).output().expect("run tests/images/build.sh");
        assert!(
            out.status.success(),
            "tests/images/build.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET path` over plain HTTP/1.0 at `addr` (`127.0.0.1:9280`): the status
/// code and the body; `None` until something answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The `KEY=value` lines of a `stackctl.env` file (comments and blank lines
/// skipped; single quotes around a value removed).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map_or(v.to_string(), |v| v.replace("'\\''", "'"));
            (k.trim().to_string(), v)
        })
        .collect()
}

/// One stackd node (manager + agent) as a real process.
pub struct Node {
    /// Its data dir (deleted on drop), which also holds its log.
    pub dir: tempfile::TempDir,
    /// The `--data-dir` it runs with: `dir`, or a directory in it (a
    /// restored node, whose data dir must start empty).
    pub(crate) data: PathBuf,
    /// The address it listens on.
    pub addr: String,
    /// Its name.
    pub name: String,
    child: Option<Child>,
    /// How it runs (agent or not, Raft flags), on every start.
    pub(crate) opts: Opts,
    /// The network namespace it runs in (`ip netns exec`), if any; its
    /// stackctl runs there too.
    pub(crate) netns: Option<String>,
    /// stackctl's settings for a node that has no `stackctl.env` of its own
    /// (a joined node): the CA as PEM text and a token; `STACKCTL_ADDR` is
    /// the node's own address.
    pub(crate) client_env: Option<Vec<(String, String)>>,
}

impl Node {
    /// `stackd init` a new single-node cluster and wait until it serves.
    pub fn init(name: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("stackd-test-").tempdir()?;
        let addr = format!("127.0.0.1:{}", free_port());
        let mut node = Node::new(dir, addr, name, Opts::default(), None);
        node.spawn(&["init", "--listen", &node.addr.clone(), "--name", name])?;
        node.wait_ready()?;
        record_test_cluster(&node.cluster_id());
        Ok(node)
    }

    pub(crate) fn new(dir: tempfile::TempDir, addr: String, name: &str, opts: Opts, netns: Option<String>) -> Node {
        let data = dir.path().to_path_buf();
        Node { dir, data, addr, name: name.to_string(), child: None, opts, netns, client_env: None }
    }

    /// A command for `program`, inside the node's namespace if it has one.
    pub(crate) fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    pub(crate) fn spawn(&mut self, args: &[&str]) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("stackd.log"))?;
        let child = self
            .command(&bin("stackd"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .args(self.opts.flags())
            .env("RUST_LOG", "info,stackd_agent=debug,openraft=warn")
            // Nodes without an engine of their own share the machine's one:
            // their networks stay local (see `stackd --shared-engine`).
            .env(
                "STACKD_SHARED_ENGINE",
                if self.opts.env.iter().any(|(k, _)| k == "DOCKER_HOST") { "false" } else { "true" },
            )
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn stackd")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the node's agent is registered and ready; a node without
    /// an agent, until its manager serves and knows a leader.
    pub fn wait_ready(&self) -> Result<()> {
        if self.opts.no_agent {
            return self.wait_serving(Duration::from_secs(30));
        }
        let start = Instant::now();
        loop {
            if let Ok(o) = self.stackctl_output(&["node", "ls", "-o", "json"])
                && o.status.success()
            {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
                if v.as_array().is_some_and(|a| a.iter().any(|n| n["state"] == "ready")) {
                    return Ok(());
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("node {} not ready after 30 s; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stackd.log")).unwrap_or_default()
    }

    /// The cluster id from the node's identity file.
    pub fn cluster_id(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("node.json")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["cluster_id"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Runs stackctl against this node.
    pub fn stackctl_output(&self, args: &[&str]) -> Result<Output> {
        self.stackctl_output_env(args, &[])
    }

    /// Runs stackctl against this node with extra environment variables.
    pub fn stackctl_output_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        self.stackctl_output_unset(args, &[], env)
    }

    /// The variables of the node's `stackctl.env` (`STACKCTL_ADDR`,
    /// `STACKCTL_CA`, `STACKCTL_TOKEN`), as `stackd init` wrote them once the
    /// cluster was initialised.
    pub fn stackctl_env(&self) -> Result<Vec<(String, String)>> {
        if let Some(env) = &self.client_env {
            let mut env = env.clone();
            env.retain(|(k, _)| k != "STACKCTL_ADDR");
            env.push(("STACKCTL_ADDR".to_string(), format!("https://{}", self.addr)));
            return Ok(env);
        }
        let path = self.dir.path().join("stackctl.env");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(parse_env_file(&text))
    }

    /// Runs stackctl with the node's `stackctl.env`, less the variables
    /// named in `unset`, plus `env` (which wins). Nothing of the test
    /// process's own `STACKCTL_*` leaks in.
    pub fn stackctl_output_unset(&self, args: &[&str], unset: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        Ok(self.stackctl_cmd(args, unset, env)?.output()?)
    }

    /// Starts stackctl (as [`Node::stackctl_output`] runs it) with its
    /// stdout and stderr piped: for commands that follow (`logs -f`).
    pub fn stackctl_spawn(&self, args: &[&str]) -> Result<std::process::Child> {
        let mut cmd = self.stackctl_cmd(args, &[], &[])?;
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        Ok(cmd.spawn()?)
    }

    fn stackctl_cmd(&self, args: &[&str], unset: &[&str], env: &[(&str, &str)]) -> Result<Command> {
        let mut cmd = self.command(&bin("stackctl"));
        for key in ["STACKCTL_ADDR", "STACKCTL_CA", "STACKCTL_TOKEN"] {
            cmd.env_remove(key);
        }
        for (k, v) in self.stackctl_env()? {
            if !unset.contains(&k.as_str()) {
                cmd.env(k, v);
            }
        }
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// Runs stackctl and requires success; returns stdout.
    pub fn stackctl(&self, args: &[&str]) -> String {
        let o = self.stackctl_output(args).expect("run stackctl");
        assert!(
            o.status.success(),
            "stackctl {args:?} failed ({}):\n{}{}\nnode log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs stackctl with `-o json` and parses its output.
    pub fn stackctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.stackctl(&a)).expect("stackctl printed JSON")
    }

    /// Writes a stack file into the node's dir; returns its path.
    pub fn write_stack(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("write stack file");
        p.display().to_string()
    }

    /// SIGKILLs the process (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it (SIGKILL after
    /// `grace`); its containers keep running, as after a kill.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process runs (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the node again from its data dir (`stackd run`) without
    /// waiting for it (after a kill: the process must be gone).
    pub fn start(&mut self) -> Result<()> {
        self.kill9();
        self.spawn(&["run"])
    }

    /// Starts the node again from its data dir (`stackd run`) and waits
    /// until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.start()?;
        self.wait_ready()
    }
}

/// The file that lists the ids of the clusters the tests created on this machine.
fn test_clusters_file() -> PathBuf {
    std::env::temp_dir().join("stackd-test-clusters")
}

/// The ids of the clusters the tests created on this machine.
fn test_clusters() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(test_clusters_file()).unwrap_or_default().lines().map(String::from).collect()
}

/// Records `cluster` as a test cluster, so that other test clusters may clean up its networks.
fn record_test_cluster(cluster: &str) {
    use std::io::Write;
    let file = std::fs::OpenOptions::new().create(true).append(true).open(test_clusters_file());
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{cluster}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let cluster = self.cluster_id();
        self.kill9();
        if !cluster.is_empty() {
            let label = format!("io.stackd.cluster={cluster}");
            for c in docker::containers(&label) {
                let _ = Command::new("docker").args(["rm", "-f", &c.id]).output();
            }
            // Networks another cluster's containers still use stay (the engine
            // refuses); so do those of clusters that still have containers.
            // Concurrent test clusters share the networks of same-named stacks:
            // the last one's drop removes them. Networks of clusters that are
            // not test clusters (a quickstart cluster on the same engine) are
            // never touched.
            let tests = test_clusters();
            for n in docker::networks("io.stackd.network") {
                let owner = n.labels.get("io.stackd.cluster").cloned().unwrap_or_default();
                let test_owner = tests.contains(&owner);
                if owner == cluster
                    || (test_owner && docker::containers(&format!("io.stackd.cluster={owner}")).is_empty())
                {
                    let _ = Command::new("docker").args(["network", "rm", &n.id]).output();
                }
            }
        }
        // The agent mounts a tmpfs for secrets in the data dir; leave no mount behind.
        let secrets = self.dir.path().join("task-files").join("secrets");
        let _ = Command::new("umount").arg("-l").arg(&secrets).output();
    }
}

/// What the Docker engine sees.
pub mod docker {
    use std::collections::BTreeMap;
    use std::process::Command;

    /// A container as `docker inspect` shows it.
    #[derive(Clone, Debug)]
    pub struct Container {
        /// Full id.
        pub id: String,
        /// Name without the leading slash.
        pub name: String,
        /// Whether it runs.
        pub running: bool,
        /// Labels.
        pub labels: BTreeMap<String, String>,
        /// Exit code, once exited.
        pub exit_code: i64,
    }

    /// Containers (running or not) carrying `label` (`key=value`).
    pub fn containers(label: &str) -> Vec<Container> {
        let Ok(o) =
            Command::new("docker").args(["ps", "-aq", "--no-trunc", "--filter", &format!("label={label}")]).output()
        else {
            return Vec::new();
        };
        let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let Ok(o) = Command::new("docker").arg("inspect").args(&ids).output() else { return Vec::new() };
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| Container {
                        id: c["Id"].as_str().unwrap_or_default().to_string(),
                        name: c["Name"].as_str().unwrap_or_default().trim_start_matches('/').to_string(),
                        running: c["State"]["Running"].as_bool().unwrap_or(false),
                        labels: c["Config"]["Labels"]
                            .as_object()
                            .map(|m| {
                                m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                            })
                            .unwrap_or_default(),
                        exit_code: c["State"]["ExitCode"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Running containers carrying `label`.
    pub fn running(label: &str) -> Vec<Container> {
        containers(label).into_iter().filter(|c| c.running).collect()
    }

    /// A network as `docker network inspect` shows it.
    #[derive(Clone, Debug)]
    pub struct Network {
        /// Full id.
        pub id: String,
        /// Name.
        pub name: String,
        /// Driver.
        pub driver: String,
        /// Whether it is internal.
        pub internal: bool,
        /// Labels.
        pub labels: BTreeMap<String, String>,
        /// Ids of the containers attached to it that run.
        pub containers: Vec<String>,
    }

    /// Networks carrying `label` (`key=value`, or `key` for any value).
    pub fn networks(label: &str) -> Vec<Network> {
        let Ok(o) =
            Command::new("docker").args(["network", "ls", "-q", "--filter", &format!("label={label}")]).output()
        else {
            return Vec::new();
        };
        let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let Ok(o) = Command::new("docker").args(["network", "inspect"]).args(&ids).output() else { return Vec::new() };
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|n| Network {
                        id: text(&n["Id"]),
                        name: text(&n["Name"]),
                        driver: text(&n["Driver"]),
                        internal: n["Internal"].as_bool().unwrap_or(false),
                        labels: n["Labels"]
                            .as_object()
                            .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                            .unwrap_or_default(),
                        containers: n["Containers"]
                            .as_object()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `sh -c script` in a container: its standard output when it
    /// succeeds, else its output and errors.
    pub fn exec(container: &str, script: &str) -> Result<String, String> {
        let o = Command::new("docker")
            .args(["exec", container, "sh", "-c", script])
            .output()
            .map_err(|e| format!("cannot run docker exec: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "exit {}: {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// The IP address of a container on a network.
    pub fn ip_on(container: &str, network: &str) -> Option<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let o = Command::new("docker").args(["inspect", "--format", &format, container]).output().ok()?;
        let ip = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !ip.is_empty()).then_some(ip)
    }
}
