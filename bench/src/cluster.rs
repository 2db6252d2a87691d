//! Three stackd managers (release build, `--no-agent`) as processes on
//! 127.0.0.1, and gRPC clients to them over TLS with the admin token: the
//! stackd contender of the Raft benchmark and the subject of the failover
//! benchmark.
//!
//! ```text
//!  m1: stackd init --listen 127.0.0.1:P1 --no-agent   → stackctl.env (CA, admin token)
//!  m2, m3: stackd join 127.0.0.1:P1 --token <manager token> --no-agent
//!  wait: ClusterStatus shows 3 voters and a leader
//!  clients: one ControlClient per manager (lazy TLS channel, Bearer token)
//! ```
//!
//! Processes are killed and data dirs removed when the [`Cluster`] drops.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stackd_proto::v1;
use stackd_proto::v1::control_client::ControlClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A control client whose calls carry the admin token.
pub type Client = ControlClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub(crate) MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// How long one RPC of the benchmarks may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// The release binary `name` that bench/run.sh built (honours `CARGO_TARGET_DIR`).
pub(crate) fn bin(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    format!("{target}/release/{name}")
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// One manager process.
pub struct Manager {
    /// Its address (127.0.0.1:PORT).
    pub addr: String,
    /// Its node id (from its node.json, once it has one).
    pub node_id: String,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Manager {
    /// Its log, beside its data dir (a restore needs an empty data dir).
    fn log_path(&self) -> std::path::PathBuf {
        self.dir.with_extension("log")
    }

    fn spawn(&mut self, args: &[&str]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the manager's log")?;
        let child = Command::new(bin("stackd"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--no-agent")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (bench/run.sh builds it)", bin("stackd")))?;
        self.child = Some(child);
        Ok(())
    }

    fn read_node_id(&mut self) {
        let text = std::fs::read_to_string(self.dir.join("node.json")).unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(id) = v["node_id"].as_str()
        {
            self.node_id = id.to_string();
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `stackd run` from its data dir (without waiting).
    pub fn start(&mut self) -> Result<()> {
        self.kill9();
        self.spawn(&["run"])
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Three managers and a client to each; see the module docs.
pub struct Cluster {
    /// The managers, `managers[0]` the one that ran `init`.
    pub managers: Vec<Manager>,
    tls: Arc<rustls::ClientConfig>,
    bearer: Bearer,
    /// The cluster's CA certificate.
    pub ca: rustls::pki_types::CertificateDer<'static>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The process ids of the managers that run.
    pub fn pids(&self) -> Vec<u32> {
        self.managers.iter().filter_map(|m| m.child.as_ref().map(Child::id)).collect()
    }

    /// Starts `n` managers and waits until all are voters under a leader.
    pub async fn start(n: usize) -> Result<Cluster> {
        stackd_tls::install_default_provider();
        let dir = tempfile::Builder::new().prefix("stackd-bench-ha").tempdir().context("temp dir")?;
        let mut first = Manager {
            addr: format!("127.0.0.1:{}", free_port()?),
            node_id: String::new(),
            dir: dir.path().join("m1"),
            child: None,
        };
        std::fs::create_dir_all(&first.dir)?;
        let addr = first.addr.clone();
        first.spawn(&["init", "--listen", &addr, "--name", "m1"])?;
        let env_path = first.dir.join("stackctl.env");
        let deadline = Instant::now() + Duration::from_secs(30);
        let env = loop {
            if let Ok(text) = std::fs::read_to_string(&env_path)
                && text.contains("STACKCTL_TOKEN")
            {
                break text;
            }
            if Instant::now() > deadline {
                bail!("stackd init wrote no stackctl.env in 30 s:\n{}", first.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let get = |key: &str| -> Result<String> {
            env.lines()
                .filter_map(|l| l.trim().split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('\'').to_string())
                .with_context(|| format!("no {key} in stackctl.env"))
        };
        let ca = stackd_tls::read_ca(&get("STACKCTL_CA")?).context("the cluster CA")?;
        let tls = stackd_tls::client_config(&ca, None).context("TLS client config")?;
        let mut header: MetadataValue<Ascii> =
            format!("Bearer {}", get("STACKCTL_TOKEN")?).parse().context("the token is not ASCII")?;
        header.set_sensitive(true);
        first.read_node_id();
        let mut cluster = Cluster { managers: vec![first], tls, bearer: Bearer(header), ca, dir };
        cluster.wait_voters(1, Duration::from_secs(30)).await?;

        let token = {
            let mut c = cluster.client(0)?;
            let req = v1::GetJoinTokenRequest { role: v1::NodeRole::Manager.into(), rotate: false };
            c.get_join_token(req).await.context("GetJoinToken")?.into_inner().token
        };
        for i in 1..n {
            let name = format!("m{}", i + 1);
            let mut m = Manager {
                addr: format!("127.0.0.1:{}", free_port()?),
                node_id: String::new(),
                dir: cluster.dir.path().join(&name),
                child: None,
            };
            std::fs::create_dir_all(&m.dir)?;
            let (via, addr) = (cluster.managers[0].addr.clone(), m.addr.clone());
            m.spawn(&["join", &via, "--token", &token, "--listen", &addr, "--name", &name])?;
            cluster.managers.push(m);
        }
        cluster.wait_voters(n, Duration::from_secs(60)).await?;
        for m in &mut cluster.managers {
            m.read_node_id();
        }
        Ok(cluster)
    }

    /// Runs `stackctl` against the first manager with the admin settings of its `stackctl.env`.
    pub fn stackctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let path = self.managers[0].dir.join("stackctl.env");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut cmd = Command::new(bin("stackctl"));
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                cmd.env(k.trim(), v.trim().trim_matches('\''));
            }
        }
        cmd.args(args).output().context("running stackctl")
    }

    /// The cluster's recovery key (written by `stackd init` on the first manager).
    pub fn recovery_key(&self) -> std::path::PathBuf {
        self.managers[0].dir.join("recovery.key")
    }

    /// Kills every manager and starts `stackd restore --from FILE` on the
    /// first one's address, in a new data dir; returns how long until
    /// `stackctl ps SERVICE` answers (its settings: the first manager's,
    /// whose token and CA the restored cluster keeps).
    pub async fn restore(&mut self, file: &std::path::Path, service: &str, timeout: Duration) -> Result<Duration> {
        for m in &mut self.managers {
            m.kill9();
        }
        let mut m = Manager {
            addr: self.managers[0].addr.clone(),
            node_id: String::new(),
            dir: self.dir.path().join("restored"),
            child: None,
        };
        let (file, key) = (file.to_string_lossy().into_owned(), self.recovery_key().to_string_lossy().into_owned());
        let addr = m.addr.clone();
        let start = Instant::now();
        m.spawn(&["restore", "--from", &file, "--key-file", &key, "--listen", &addr, "--name", "restored"])?;
        loop {
            let out = self.stackctl(&["ps", service, "-o", "json"])?;
            if out.status.success() && !out.stdout.is_empty() {
                break;
            }
            if start.elapsed() > timeout {
                bail!("the restored manager does not serve `stackctl ps` after {timeout:?}:\n{}", m.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = start.elapsed();
        self.managers.push(m);
        Ok(took)
    }

    /// A data directory of the benchmark, for its files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A client to manager `i` (lazy: it connects on first use, reconnects after a failure).
    pub fn client(&self, i: usize) -> Result<Client> {
        let ch = stackd_tls::lazy_channel(&self.managers[i].addr, self.tls.clone()).context("channel")?;
        Ok(ControlClient::with_interceptor(ch, self.bearer.clone()))
    }

    /// A client to each manager, in order.
    pub fn clients(&self) -> Result<Vec<Client>> {
        (0..self.managers.len()).map(|i| self.client(i)).collect()
    }

    /// Manager `i`'s `ClusterStatus` (`stale`: its local view), bounded by 2 s.
    pub async fn status(&self, i: usize, stale: bool) -> Option<v1::ClusterStatusResponse> {
        let mut c = self.client(i).ok()?;
        let call = c.cluster_status(v1::ClusterStatusRequest { stale });
        tokio::time::timeout(Duration::from_secs(2), call).await.ok()?.ok().map(|r| r.into_inner())
    }

    /// Waits until a manager's status (through the leader) shows `n`
    /// reachable voters and a leader with a quorum; the leader's index.
    pub async fn wait_voters(&mut self, n: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for m in &mut self.managers {
                m.read_node_id();
            }
            for i in 0..self.managers.len() {
                if self.managers[i].child.is_none() {
                    continue;
                }
                let Some(s) = self.status(i, false).await else { continue };
                let voters = s.managers.iter().filter(|m| m.voter && m.reachable).count();
                if voters == n
                    && s.has_quorum
                    && let Some(l) =
                        self.managers.iter().position(|m| !m.node_id.is_empty() && m.node_id == s.leader_id)
                {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                let tails: Vec<String> =
                    self.managers.iter().map(|m| format!("--- {}:\n{}", m.addr, m.log_tail())).collect();
                bail!("not {n} voters and a leader after {timeout:?}\n{}", tails.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One `CreateObject` of config `name` with `data`, bounded by [`RPC_TIMEOUT`].
pub async fn create_config(client: &mut Client, name: String, data: Vec<u8>) -> Result<()> {
    let req = v1::CreateObjectRequest { kind: v1::DataKind::Config.into(), name, data, labels: Default::default() };
    tokio::time::timeout(RPC_TIMEOUT, client.create_object(req))
        .await
        .context("CreateObject timed out")?
        .map_err(|s| anyhow::anyhow!("CreateObject: {:?}: {}", s.code(), s.message()))?;
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.managers {
            m.kill9();
        }
        // `dir` goes after this.
    }
}
